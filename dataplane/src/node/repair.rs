//! What happens when a route breaks, and how a new one takes over: the initiator of an
//! automatic route rebuilds it over another path (the session carries on, so no handshake);
//! the far end keeps quiet meanwhile, and adopts a new route only on proof from its initiator.
//! Apps ask for a route through [`Node::want_route`], which has one set up only when none is
//! under way, so that they wait out a build or a repair instead of racing it with their own.

use super::*;

/// Where the route to a peer stands, as an app that uses it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteStatus {
    /// Up and proven end to end: data flows.
    Ready,
    /// Being set up, or awaiting its proof: its outcome comes as [`Event::RouteReady`] (for
    /// a command that asked), [`Event::RouteFailed`] or [`Event::RouteDown`].
    Building,
    /// Broken and being rebuilt over another path, by this node or by the route's initiator:
    /// data flows again once it is ready, and [`Event::RouteDown`] says when it cannot be.
    Repairing,
    /// No route, and none under way.
    Absent,
}

/// What [`Node::want_route`] found, or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWait {
    /// The route is up and proven end to end: data can flow.
    Ready,
    /// A route is being set up or repaired, by this node or by the peer: the app waits until
    /// it is ready, or until it is gone ([`Event::RouteFailed`], [`Event::RouteDown`]) and
    /// the app asks again.
    Underway,
    /// There was none: this setup was started, and [`Event::RouteFailed`] for it says when
    /// it fails.
    Started(SetupId),
}

impl Node {
    /// The route to `peer` for an app that needs it. A ready one serves; one being set up or
    /// repaired (by this node, or by the peer while this node awaits its repair) is waited
    /// for, so that no second setup starts beside it; only when there is none is one set up,
    /// along `path` (this node first, `peer` last), or without one over the lowest-cost path
    /// known, and then rebuilt over another path when it breaks.
    pub fn want_route(
        &mut self,
        now: Instant,
        peer: &NodeKey,
        path: Option<&[NodeKey]>,
    ) -> Result<RouteWait, RouteError> {
        match self.route_status(peer) {
            RouteStatus::Ready => Ok(RouteWait::Ready),
            RouteStatus::Building | RouteStatus::Repairing => Ok(RouteWait::Underway),
            RouteStatus::Absent => match path {
                Some(path) => self.build_route(now, path),
                None => self.build_route_to(now, peer),
            }
            .map(RouteWait::Started),
        }
    }

    /// Where the route to `peer` stands.
    pub fn route_status(&self, peer: &NodeKey) -> RouteStatus {
        if let Some(route) = self.routes.get(peer) {
            return if route.ready {
                RouteStatus::Ready
            } else if self.repairs.contains_key(peer) {
                RouteStatus::Repairing
            } else {
                RouteStatus::Building
            };
        }
        if self.repairs.contains_key(peer) || self.awaiting_repair.contains_key(peer) {
            return RouteStatus::Repairing;
        }
        let building = self
            .pending
            .values()
            .any(|pending| pending.path.last() == Some(peer))
            || self
                .yielded
                .values()
                .any(|yielded| yielded.path.last() == Some(peer))
            || self
                .candidates
                .values()
                .any(|candidate| candidate.peer == *peer);
        if building {
            RouteStatus::Building
        } else {
            RouteStatus::Absent
        }
    }

    /// A number that changes whenever a path may have appeared or gone (an advert, a link of
    /// this node's that came up or died): an app that found no path looks again when it
    /// changes.
    pub fn graph_version(&self) -> u64 {
        self.topology.version()
    }

    /// The active route to `peer` broke (its rules are gone here). An initiator repairs an
    /// automatic route and reports any other down; the far end waits for the repair.
    pub(super) fn route_broke(&mut self, now: Instant, peer: NodeKey, reason: RouteDownReason) {
        let Some(route) = self.routes.remove(&peer) else {
            return;
        };
        self.table.remove(now, route.in_id);
        if !route.initiator {
            self.awaiting_repair
                .insert(peer, (now + FAR_END_REPAIR_WAIT, reason));
            self.route_work_started(now);
            return;
        }
        if let RouteDownReason::LinkDead { reporter } = reason {
            // The report comes from the hop before the dead link, seen from this end.
            if let Some(at) = route.path.iter().position(|key| *key == reporter) {
                if let Some(next) = route.path.get(at + 1) {
                    self.topology.suspect_link(reporter, *next);
                }
            }
        }
        if route.automatic {
            log::info!("route to {peer} broke ({reason}): repairing");
            let far_end_restarted = matches!(
                reason,
                RouteDownReason::Forgotten { reporter }
                    if route.path.iter().rev().nth(1) == Some(&reporter)
            );
            self.repairs.entry(peer).or_insert(Repair {
                attempts: 0,
                reason,
                setup: None,
                announce: route.announce,
                far_end_restarted,
                deadline: now + REPAIR_WAIT,
                awaiting_path: None,
            });
            self.repair(now, peer);
        } else if !route.ready && route.announce {
            let hop_index = match reason {
                RouteDownReason::LinkDead { reporter } => route
                    .path
                    .iter()
                    .position(|key| *key == reporter)
                    .and_then(|at| u8::try_from(at).ok())
                    .unwrap_or(0),
                _ => 0,
            };
            let error = rejection(&route.path, hop_index, RejectReason::NextHopUnreachable);
            self.fail_setup(route.setup, &route.path, error);
        } else {
            self.events.push_back(Event::RouteDown { peer, reason });
        }
    }

    /// Starts the next attempt at rebuilding the route to `peer` over the lowest-cost path
    /// left, or reports the route down when the attempts are spent. While no path is known the
    /// repair waits for the graph to change, until its deadline: links that died because a
    /// node fell silent for a moment (starved of CPU, say) come back within it, and the
    /// streams inside the route with them.
    pub(super) fn repair(&mut self, now: Instant, peer: NodeKey) {
        let Some(repair) = self.repairs.get(&peer) else {
            return;
        };
        let (reason, announce, deadline) = (repair.reason, repair.announce, repair.deadline);
        if repair.attempts >= REPAIR_ATTEMPTS {
            self.repairs.remove(&peer);
            log::warn!("route to {peer} is down: {REPAIR_ATTEMPTS} repairs failed");
            self.events.push_back(Event::RouteDown { peer, reason });
            return;
        }
        let choice = self.find_route(&peer);
        let graph = self.topology.version();
        let Some(repair) = self.repairs.get_mut(&peer) else {
            return;
        };
        repair.setup = None;
        let Some(choice) = choice else {
            if now < deadline {
                if repair.awaiting_path.is_none() {
                    log::info!("route to {peer}: no other path is known yet; waiting for one");
                }
                repair.awaiting_path = Some(graph);
                self.route_work_started(now);
                return;
            }
            self.repairs.remove(&peer);
            log::warn!("route to {peer} is down: no other path is known");
            self.events.push_back(Event::RouteDown {
                peer,
                reason: RouteDownReason::NoPath,
            });
            return;
        };
        repair.attempts += 1;
        repair.awaiting_path = None;
        match self.start_setup(now, &choice.path, true, announce) {
            Ok(setup) => {
                if let Some(repair) = self.repairs.get_mut(&peer) {
                    repair.setup = Some(setup);
                }
            }
            Err(error) => {
                log::info!("repair of the route to {peer} could not start: {error}");
                self.repair(now, peer);
            }
        }
    }

    /// A candidate route proved to come from its initiator: it becomes the route to that
    /// peer, the old one and the other candidates go, and the initiator hears of it (a
    /// keepalive back over the new route).
    pub(super) fn adopt(&mut self, now: Instant, id: RouteId) {
        let Some(candidate) = self.candidates.remove(&id) else {
            return;
        };
        let peer = candidate.peer;
        let mut route = candidate.route;
        route.ready = true;
        log::info!(
            "route from {peer} over {} hops proven and adopted",
            route.path.len().saturating_sub(1)
        );
        let others: Vec<RouteId> = self
            .candidates
            .iter()
            .filter(|(_, candidate)| candidate.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for other in others {
            self.drop_candidate(now, other);
        }
        let was_awaiting = self.awaiting_repair.remove(&peer).is_some();
        self.repairs.remove(&peer);
        let old = self.routes.insert(peer, route);
        if let Some(old) = &old {
            self.tear_down(now, &peer, old);
        }
        // The peer's setup won over this node's own to it, if there were any.
        let mut announce = false;
        if peer < self.key {
            let own: Vec<SetupId> = self
                .pending
                .iter()
                .filter(|(_, pending)| pending.path.last() == Some(&peer))
                .map(|(setup, _)| *setup)
                .collect();
            for setup in own {
                if let Some(pending) = self.pending.remove(&setup) {
                    self.table.remove(now, pending.in_id);
                    announce |= pending.announce;
                }
            }
        }
        let before = self.yielded.len();
        self.yielded
            .retain(|_, yielded| yielded.path.last() != Some(&peer));
        announce |= self.yielded.len() != before;
        if announce || (old.is_none() && !was_awaiting) {
            self.events.push_back(Event::RouteReady { peer });
        }
        self.session_transmit(&peer, |session, buf| session.encapsulate(&[], buf));
    }

    /// Removes a candidate route and its rules along the way.
    pub(super) fn drop_candidate(&mut self, now: Instant, id: RouteId) {
        if let Some(candidate) = self.candidates.remove(&id) {
            self.tear_down(now, &candidate.peer, &candidate.route);
        }
    }

    /// Sends a teardown along a route and removes this end's rule.
    pub(super) fn tear_down(&mut self, now: Instant, peer: &NodeKey, route: &EndRoute) {
        self.send_route_control(
            route.transport,
            route.out_id,
            peer.mesh_address(),
            &ControlMessage::Teardown,
        );
        self.table.remove(now, route.in_id);
    }

    /// The initiator's proofs, the candidates' deadlines, crossed setups and routes that
    /// wait for a repair.
    pub(super) fn maintain_proofs(&mut self, now: Instant) {
        let proving: Vec<(NodeKey, Proof)> = self
            .routes
            .iter()
            .filter_map(|(peer, route)| route.proof.map(|proof| (*peer, proof)))
            .collect();
        for (peer, proof) in proving {
            if now >= proof.deadline {
                self.unconfirmed(now, peer);
            } else if now >= proof.next {
                self.send_proof(now, peer);
            }
        }
        let expired: Vec<RouteId> = self
            .candidates
            .iter()
            .filter(|(_, candidate)| now >= candidate.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::debug!("route offered over {id} was never proven: removed");
            self.drop_candidate(now, id);
        }
        let given_up: Vec<SetupId> = self
            .yielded
            .iter()
            .filter(|(_, yielded)| now >= yielded.deadline)
            .map(|(setup, _)| *setup)
            .collect();
        for setup in given_up {
            if let Some(yielded) = self.yielded.remove(&setup) {
                let last = u8::try_from(yielded.path.len().saturating_sub(1)).unwrap_or(0);
                let error = rejection(&yielded.path, last, RejectReason::Crossed);
                self.fail_setup(setup, &yielded.path, error);
            }
        }
        // Repairs that wait for a path: the graph changed, or their time is up.
        let graph = self.topology.version();
        let due: Vec<NodeKey> = self
            .repairs
            .iter()
            .filter(|(_, repair)| {
                repair
                    .awaiting_path
                    .is_some_and(|seen| seen != graph || now >= repair.deadline)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.repair(now, peer);
        }
        let down: Vec<(NodeKey, RouteDownReason)> = self
            .awaiting_repair
            .iter()
            .filter(|(peer, (deadline, _))| {
                now >= *deadline && !self.candidates.values().any(|c| c.peer == **peer)
            })
            .map(|(peer, (_, reason))| (*peer, *reason))
            .collect();
        for (peer, reason) in down {
            self.awaiting_repair.remove(&peer);
            if !self.routes.contains_key(&peer) {
                self.events.push_back(Event::RouteDown { peer, reason });
            }
        }
        self.answers.retain(|_, answer| answer.until > now);
    }

    /// The destination never confirmed the route this node built to `peer`.
    pub(super) fn unconfirmed(&mut self, now: Instant, peer: NodeKey) {
        let Some(route) = self.routes.remove(&peer) else {
            return;
        };
        self.tear_down(now, &peer, &route);
        let error = RouteError::Unconfirmed(peer);
        if self.repairs.contains_key(&peer) {
            log::info!("repair of the route to {peer} failed: {error}");
            self.repair(now, peer);
        } else if route.announce {
            self.fail_setup(route.setup, &route.path, error);
        } else {
            self.events.push_back(Event::RouteDown {
                peer,
                reason: RouteDownReason::TornDown,
            });
        }
    }
}
