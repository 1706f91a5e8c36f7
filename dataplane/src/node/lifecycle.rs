//! A route's life after setup: refresh, teardown and route down as every hop processes them,
//! routes over a dead link, routes that a restarted neighbour forgot, expiry of rules and of
//! setups that got no answer.
//!
//! A node that restarts forgets its routes while its links come back at once, so the routes
//! through it look alive to everyone else. It answers a packet on a route id it has no rule
//! for with a report of that id to the neighbour that sent it (route id 0: the neighbour
//! channel, authenticated by their transport). That neighbour, and only if the id is the one
//! its own rule stamps on what it sends there, removes the route and reports it down along the
//! route's other half (reason: forgotten), as it would for a dead link; the initiator rebuilds
//! it, proving the route with a new handshake once the far end's session turns out forgotten
//! too. So a route whose relay or far end restarted is noticed with the first packet sent on it
//! after the restart (at the latest its next refresh), and only the neighbour the route leads to
//! can break it this way, which it could anyway by dropping the route's packets. A report goes
//! only to the neighbour whose packet prompted it, over their transport, so no one can aim
//! reports elsewhere; they are rate-limited each way per neighbour.

use super::*;

impl Node {
    // ----- route control: refresh, teardown, route down -----

    pub(super) fn handle_route_control_in_transit(
        &mut self,
        now: Instant,
        id: RouteId,
        payload: &[u8],
    ) {
        match ControlMessage::parse(payload) {
            Ok(ControlMessage::Refresh) => self.table.refresh(now, id),
            Ok(ControlMessage::Teardown) | Ok(ControlMessage::RouteDown { .. }) => {
                // The message is relayed first (by the caller, from the lookup it already
                // made); the rules go now.
                self.table.remove_with_pair(now, id);
            }
            _ => self.drops.bad_control += 1,
        }
    }

    pub(super) fn handle_route_control_at_end(
        &mut self,
        now: Instant,
        peer: NodeKey,
        id: RouteId,
        payload: &[u8],
    ) {
        let is_current = self.routes.get(&peer).is_some_and(|r| r.in_id == id);
        match ControlMessage::parse(payload) {
            Ok(ControlMessage::Refresh) => self.table.refresh(now, id),
            Ok(ControlMessage::Teardown) => {
                self.table.remove(now, id);
                self.candidates.remove(&id);
                if is_current {
                    let confirmed = self.routes.get(&peer).is_some_and(|route| route.ready);
                    let replaced = self.candidates.values().any(|c| c.peer == peer);
                    if confirmed && replaced {
                        // The initiator built a new route and let the old one go: the new
                        // one awaits its proof, and only its failure would bring the peer down.
                        self.routes.remove(&peer);
                        self.awaiting_repair
                            .insert(peer, (now + PROOF_TIMEOUT, RouteDownReason::TornDown));
                        self.route_work_started(now);
                    } else if confirmed {
                        self.routes.remove(&peer);
                        self.repairs.remove(&peer);
                        self.events.push_back(Event::RouteDown {
                            peer,
                            reason: RouteDownReason::TornDown,
                        });
                    } else {
                        // The destination gave up waiting for this node's proof.
                        self.unconfirmed(now, peer);
                    }
                }
            }
            Ok(ControlMessage::RouteDown { reporter, reason }) => {
                self.table.remove(now, id);
                self.candidates.remove(&id);
                let reason = match reason {
                    DownReason::LinkDead => RouteDownReason::LinkDead { reporter },
                    DownReason::Expired => RouteDownReason::Expired,
                    DownReason::Forgotten => RouteDownReason::Forgotten { reporter },
                };
                if is_current {
                    self.route_broke(now, peer, reason);
                }
                self.fail_pending_with_in_id(now, id, reporter);
            }
            _ => self.drops.bad_control += 1,
        }
    }

    /// A route down that reached a setup still waiting for its answer.
    pub(super) fn fail_pending_with_in_id(&mut self, now: Instant, id: RouteId, reporter: NodeKey) {
        let Some(setup) = self
            .pending
            .iter()
            .find(|(_, pending)| pending.in_id == id)
            .map(|(setup, _)| *setup)
        else {
            return;
        };
        if let Some(pending) = self.pending.remove(&setup) {
            let hop_index = pending
                .path
                .iter()
                .position(|key| *key == reporter)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(0);
            let error = rejection(&pending.path, hop_index, RejectReason::NextHopUnreachable);
            self.setup_failed(now, setup, &pending, error);
        }
    }

    /// Removes every rule through a dead link and tells each route's end that can still be
    /// reached.
    pub(super) fn routes_over_dead_link(&mut self, now: Instant, dead: TransportId) {
        let report = ControlMessage::RouteDown {
            reporter: self.key,
            reason: DownReason::LinkDead,
        };
        for id in self.table.ids_touching(dead) {
            let Some(entry) = self.table.remove(now, id) else {
                continue;
            };
            match entry.rule {
                Rule::Forward { transport, next_id } if transport != dead => {
                    self.send_route_control(transport, next_id, Ipv6Addr::UNSPECIFIED, &report);
                }
                Rule::Forward { .. } => {}
                Rule::Consume { peer, .. } => {
                    self.candidates.remove(&id);
                    if self.routes.get(&peer).is_some_and(|r| r.in_id == id) {
                        let reporter = self.key;
                        self.route_broke(now, peer, RouteDownReason::LinkDead { reporter });
                    }
                }
            }
        }
        self.relayed
            .retain(|(next, _), relayed| *next != dead && relayed.previous != dead);
        let failed: Vec<SetupId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.transport == dead)
            .map(|(setup, _)| *setup)
            .collect();
        for setup in failed {
            if let Some(pending) = self.pending.remove(&setup) {
                self.table.remove(now, pending.in_id);
                let error = rejection(&pending.path, 0, RejectReason::NextHopUnreachable);
                self.setup_failed(now, setup, &pending, error);
            }
        }
    }

    // ----- routes a restarted neighbour forgot -----

    /// A packet came in on `ingress` with a route id this node has no rule for: tells that
    /// neighbour, within the window's budget.
    pub(super) fn report_unknown_route(&mut self, ingress: TransportId, id: RouteId) {
        let Some(link) = self.links.get_mut(&ingress) else {
            return;
        };
        if link.reports_sent >= UNKNOWN_ROUTE_REPORTS {
            return;
        }
        link.reports_sent += 1;
        let Some(address) = self.transports.address_of(ingress) else {
            return;
        };
        let report = ControlMessage::UnknownRoute { route_id: id };
        self.send_route_control(ingress, RouteId::CONTROL, address, &report);
    }

    /// The neighbour on `ingress` has no rule for `id`: the route that this node sends it with
    /// that id is broken. A relayed one is removed here and reported down towards its other
    /// end; one this node is an end of breaks as over a dead link. Anything else (a report of
    /// a route already gone) changes nothing.
    pub(super) fn handle_unknown_route(&mut self, now: Instant, ingress: TransportId, id: RouteId) {
        let Some(link) = self.links.get_mut(&ingress) else {
            return;
        };
        if link.reports_taken >= UNKNOWN_ROUTE_REPORTS_TAKEN {
            self.drops.bad_control += 1;
            return;
        }
        link.reports_taken += 1;
        let report = ControlMessage::RouteDown {
            reporter: self.key,
            reason: DownReason::Forgotten,
        };
        if let Some(forward) = self.table.forwarding_to(ingress, id) {
            if let Some(next) = self.transports.key_of(ingress) {
                log::info!("{next} forgot a route relayed here (it restarted): reported down");
            }
            if let (_, Some((_, back))) = self.table.remove_with_pair(now, forward) {
                if let Rule::Forward { transport, next_id } = back.rule {
                    self.send_route_control(transport, next_id, Ipv6Addr::UNSPECIFIED, &report);
                }
            }
            return;
        }
        let is_this_route = |route: &EndRoute| route.transport == ingress && route.out_id == id;
        let candidate = self
            .candidates
            .iter()
            .find(|(_, candidate)| is_this_route(&candidate.route))
            .map(|(in_id, _)| *in_id);
        if let Some(in_id) = candidate {
            if let Some(candidate) = self.candidates.remove(&in_id) {
                self.table.remove(now, candidate.route.in_id);
            }
            return;
        }
        let peer = self
            .routes
            .iter()
            .find(|(_, route)| is_this_route(route))
            .map(|(peer, _)| *peer);
        if let Some(peer) = peer {
            log::info!("route to {peer}: its next hop no longer knows it (it restarted)");
            let reporter = self.key;
            self.route_broke(now, peer, RouteDownReason::Forgotten { reporter });
        }
    }

    // ----- route maintenance: refresh, expiry, setup timeouts -----

    pub(super) fn maintain_routes(&mut self, now: Instant) {
        let due: Vec<NodeKey> = self
            .routes
            .iter()
            .filter(|(_, route)| route.initiator && now >= route.next_refresh)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let Some(route) = self.routes.get_mut(&peer) else {
                continue;
            };
            route.next_refresh = now + self.options.refresh_interval;
            let (transport, out_id, in_id) = (route.transport, route.out_id, route.in_id);
            self.table.refresh(now, in_id);
            self.send_route_control(
                transport,
                out_id,
                peer.mesh_address(),
                &ControlMessage::Refresh,
            );
        }

        for (id, entry) in self.table.expire(now) {
            if let Rule::Consume { peer, .. } = entry.rule {
                self.candidates.remove(&id);
                if self.routes.get(&peer).is_some_and(|r| r.in_id == id) {
                    self.route_broke(now, peer, RouteDownReason::Expired);
                }
            }
        }

        self.retry_setups(now);

        let timed_out: Vec<(TransportId, SetupId)> = self
            .relayed
            .iter()
            .filter(|(_, relayed)| now >= relayed.deadline)
            .map(|(key, _)| *key)
            .collect();
        for key in timed_out {
            let Some(relayed) = self.relayed.remove(&key) else {
                continue;
            };
            self.table.remove(now, relayed.reverse_id);
            let reject = ControlMessage::SetupReject {
                setup_id: key.1,
                hop_index: relayed.hop_index,
                reason: RejectReason::Timeout,
            };
            self.answer(now, relayed.previous, key.1, reject);
        }

        let expired: Vec<SetupId> = self
            .pending
            .iter()
            .filter(|(_, pending)| now >= pending.deadline)
            .map(|(setup, _)| *setup)
            .collect();
        for setup in expired {
            if let Some(pending) = self.pending.remove(&setup) {
                self.table.remove(now, pending.in_id);
                let error = rejection(&pending.path, 0, RejectReason::Timeout);
                self.setup_failed(now, setup, &pending, error);
            }
        }
        self.maintain_proofs(now);
        self.rehandshake_direct_sessions(now);
        self.retire_sessions(now);
        // Setups, proofs and repairs under way want a fine clock (see `route_work_started`);
        // refreshes and expiry do not.
        let busy = !self.pending.is_empty()
            || !self.relayed.is_empty()
            || !self.candidates.is_empty()
            || !self.yielded.is_empty()
            || !self.awaiting_repair.is_empty()
            || self
                .repairs
                .values()
                .any(|repair| repair.awaiting_path.is_some())
            || self.routes.values().any(|route| route.proof.is_some());
        self.timers.routes = now
            + if busy {
                ROUTE_WORK_TICK
            } else {
                Duration::from_secs(1)
            };
    }
}

impl Node {
    /// Something started that route maintenance must watch closely: a setup, a proof, a
    /// candidate or a wait for a repair.
    pub(super) fn route_work_started(&mut self, now: Instant) {
        self.timers.routes = self.timers.routes.min(now + ROUTE_WORK_TICK);
    }

    /// Sends again the setup requests that got no answer yet, a few times each.
    fn retry_setups(&mut self, now: Instant) {
        let due: Vec<SetupId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.tries < SETUP_TRIES && now >= pending.next_try)
            .map(|(setup, _)| *setup)
            .collect();
        for setup in due {
            let Some(pending) = self.pending.get_mut(&setup) else {
                continue;
            };
            pending.tries += 1;
            let (transport, request) = (pending.transport, pending.request.clone());
            let retry = self.setup_retry(transport);
            if let Some(pending) = self.pending.get_mut(&setup) {
                pending.next_try = now + retry;
            }
            self.resend_request(transport, &request);
        }
        let due: Vec<(TransportId, SetupId)> = self
            .relayed
            .iter()
            .filter(|(_, relayed)| relayed.tries < SETUP_TRIES && now >= relayed.next_try)
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let retry = self.setup_retry(key.0);
            let Some(relayed) = self.relayed.get_mut(&key) else {
                continue;
            };
            relayed.tries += 1;
            relayed.next_try = now + retry;
            let request = relayed.request.clone();
            self.resend_request(key.0, &request);
        }
    }

    fn resend_request(&mut self, transport: TransportId, request: &ControlMessage) {
        let Some(next) = self.transports.key_of(transport) else {
            return;
        };
        log::debug!("route setup request to {next} sent again");
        if self
            .send_control(transport, RouteId::CONTROL, next.mesh_address(), request)
            .is_err()
        {
            self.drops.unsendable += 1;
        }
    }
}

/// How often route maintenance runs while setups, proofs or repairs are under way.
const ROUTE_WORK_TICK: Duration = Duration::from_millis(100);
