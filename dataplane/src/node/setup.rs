//! Route setup along a path: the initiator's request, each relay's reverse rule and onward
//! request, the destination's answer, the forward rules on the way back, and rejections that
//! name the hop. Each hop sends its request again while no answer comes (a few times) and
//! repeats its answer when a request comes again; the destination only offers the route as a
//! candidate, which proof from its initiator makes active.

use super::*;

impl Node {
    pub(super) fn handle_setup_request(
        &mut self,
        now: Instant,
        ingress: TransportId,
        neighbour: NodeKey,
        request: SetupRequest,
    ) {
        let SetupRequest {
            setup_id,
            hop_index,
            mtu,
            reverse_id,
            path,
        } = request;
        // The request again: its answer was lost, or the next hop has not answered yet.
        if let Some(answer) = self.answers.get(&(ingress, setup_id)) {
            let message = answer.message.clone();
            let _ = self.send_control(
                ingress,
                RouteId::CONTROL,
                neighbour.mesh_address(),
                &message,
            );
            return;
        }
        if self
            .relayed
            .iter()
            .any(|((_, id), relayed)| *id == setup_id && relayed.previous == ingress)
        {
            return;
        }
        let reject = |node: &mut Node, reason| {
            let message = ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            };
            node.answer(now, ingress, setup_id, message);
        };
        let index = usize::from(hop_index);
        let consistent = check_path(&path).is_ok()
            && path.get(index) == Some(&self.key)
            && index.checked_sub(1).and_then(|i| path.get(i)) == Some(&neighbour);
        if !consistent {
            reject(self, RejectReason::BadPath);
            return;
        }
        let mtu = mtu.min(MESH_MTU);
        if usize::from(mtu) < INNER_MTU + usize::from(ROUTE_OVERHEAD) {
            reject(self, RejectReason::MtuTooSmall { mtu });
            return;
        }
        let Some(next) = path.get(index + 1).copied() else {
            self.accept_route_as_destination(
                now,
                ingress,
                SetupRequest {
                    setup_id,
                    hop_index,
                    mtu,
                    reverse_id,
                    path,
                },
            );
            return;
        };
        let Some(next_transport) = self.transports.id_of(&next) else {
            reject(self, RejectReason::UnknownNextHop);
            return;
        };
        if self.link_is_dead(next_transport) {
            reject(self, RejectReason::NextHopUnreachable);
            return;
        }
        let back = Rule::Forward {
            transport: ingress,
            next_id: reverse_id,
        };
        // The rule expects packets from the next hop, but the request came from `ingress`:
        // it is that neighbour's quota that pays.
        let own_reverse_id = match self.table.allocate(
            now,
            self.rng.as_mut(),
            next_transport,
            Some(ingress),
            back,
            mtu,
        ) {
            Ok(id) => id,
            Err(_) => {
                reject(self, RejectReason::RouteLimit);
                return;
            }
        };
        let remaining = u32::try_from(path.len() - 1 - index).unwrap_or(1);
        let onward = ControlMessage::SetupRequest {
            setup_id,
            hop_index: hop_index.saturating_add(1),
            mtu,
            reverse_id: own_reverse_id,
            path,
        };
        if self
            .send_control(
                next_transport,
                RouteId::CONTROL,
                next.mesh_address(),
                &onward,
            )
            .is_err()
        {
            self.table.remove(now, own_reverse_id);
            reject(self, RejectReason::NextHopUnreachable);
            return;
        }
        let next_try = now + self.setup_retry(next_transport);
        self.relayed.insert(
            (next_transport, setup_id),
            RelayedSetup {
                previous: ingress,
                hop_index,
                reverse_id: own_reverse_id,
                deadline: now + self.options.setup_hop_timeout * remaining,
                request: onward,
                tries: 1,
                next_try,
            },
        );
        self.route_work_started(now);
    }

    /// The last hop: the route becomes a candidate, which only proof from the initiator it
    /// names makes active (see [`Node::adopt`]).
    fn accept_route_as_destination(
        &mut self,
        now: Instant,
        ingress: TransportId,
        request: SetupRequest,
    ) {
        let SetupRequest {
            setup_id,
            hop_index,
            mtu,
            reverse_id,
            path,
        } = request;
        let Some(initiator) = path.first().copied() else {
            return;
        };
        let reject = |node: &mut Node, reason| {
            let message = ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            };
            node.answer(now, ingress, setup_id, message);
        };
        // Two setups crossing: the one started by the lower key wins, and serves both ends.
        let building = self
            .pending
            .values()
            .any(|pending| pending.path.last() == Some(&initiator))
            || self
                .routes
                .get(&initiator)
                .is_some_and(|route| route.initiator);
        if building && self.key < initiator {
            reject(self, RejectReason::Crossed);
            return;
        }
        // A route of one hop is direct: its initiator is the neighbour the request came from.
        let direct = path.len() == 2;
        let in_id = match self.table.allocate(
            now,
            self.rng.as_mut(),
            ingress,
            Some(ingress),
            Rule::Consume {
                peer: initiator,
                direct,
            },
            mtu,
        ) {
            Ok(id) => id,
            Err(_) => {
                reject(self, RejectReason::RouteLimit);
                return;
            }
        };
        let accept = ControlMessage::SetupAccept {
            setup_id,
            forward_id: in_id,
            mtu,
        };
        self.answer(now, ingress, setup_id, accept);
        self.ensure_session(initiator);
        let mut waiting: Vec<(Instant, RouteId)> = self
            .candidates
            .iter()
            .filter(|(_, candidate)| candidate.peer == initiator)
            .map(|(id, candidate)| (candidate.deadline, *id))
            .collect();
        waiting.sort();
        let excess = (waiting.len() + 1).saturating_sub(MAX_CANDIDATES_PER_PEER);
        for (_, id) in waiting.into_iter().take(excess) {
            self.drop_candidate(now, id);
        }
        log::debug!(
            "route from {initiator} offered over {} hops: awaiting proof",
            path.len() - 1
        );
        self.candidates.insert(
            in_id,
            Candidate {
                peer: initiator,
                route: EndRoute {
                    setup: setup_id,
                    path,
                    initiator: false,
                    transport: ingress,
                    out_id: reverse_id,
                    in_id,
                    ready: false,
                    automatic: false,
                    next_refresh: now,
                    announce: false,
                    proof: None,
                },
                deadline: now + PROOF_TIMEOUT,
            },
        );
        self.route_work_started(now);
    }

    pub(super) fn handle_setup_accept(
        &mut self,
        now: Instant,
        ingress: TransportId,
        setup_id: SetupId,
        forward_id: RouteId,
        mtu: u16,
    ) {
        if let Some(relayed) = self.relayed.remove(&(ingress, setup_id)) {
            let onward = Rule::Forward {
                transport: ingress,
                next_id: forward_id,
            };
            let answer = match self.table.allocate(
                now,
                self.rng.as_mut(),
                relayed.previous,
                Some(relayed.previous),
                onward,
                mtu.min(MESH_MTU),
            ) {
                Ok(own_forward_id) => {
                    self.table.pair(own_forward_id, relayed.reverse_id);
                    ControlMessage::SetupAccept {
                        setup_id,
                        forward_id: own_forward_id,
                        mtu,
                    }
                }
                Err(_) => {
                    self.table.remove(now, relayed.reverse_id);
                    ControlMessage::SetupReject {
                        setup_id,
                        hop_index: relayed.hop_index,
                        reason: RejectReason::RouteLimit,
                    }
                }
            };
            self.answer(now, relayed.previous, setup_id, answer);
            return;
        }
        let Some(pending) = self.pending.remove(&setup_id) else {
            self.drops.bad_control += 1;
            return;
        };
        if pending.transport != ingress {
            self.pending.insert(setup_id, pending);
            self.drops.bad_control += 1;
            return;
        }
        let Some(peer) = pending.path.last().copied() else {
            return;
        };
        if let Some(old) = self.routes.remove(&peer) {
            self.tear_down(now, &peer, &old);
        }
        self.ensure_session(peer);
        self.routes.insert(
            peer,
            EndRoute {
                setup: setup_id,
                path: pending.path,
                initiator: true,
                transport: pending.transport,
                out_id: forward_id,
                in_id: pending.in_id,
                ready: false,
                automatic: pending.automatic,
                next_refresh: now + self.options.refresh_interval,
                announce: pending.announce,
                proof: Some(Proof {
                    sent: 0,
                    next: now,
                    retry: (now.saturating_duration_since(pending.started) * 2)
                        .clamp(Duration::from_millis(100), PROOF_RETRY),
                    deadline: now + PROOF_TIMEOUT,
                }),
            },
        );
        self.send_proof(now, peer);
        self.route_work_started(now);
    }

    /// Proves to the destination that this node built the route: a keepalive over it (a
    /// handshake first when the session needs one), then, if the destination stays silent, a
    /// new handshake, whose keepalive proves it as well.
    pub(super) fn send_proof(&mut self, now: Instant, peer: NodeKey) {
        let Some(proof) = self
            .routes
            .get_mut(&peer)
            .and_then(|route| route.proof.as_mut())
        else {
            return;
        };
        let keepalive = proof.sent < PROOF_KEEPALIVES;
        proof.sent = proof.sent.saturating_add(1);
        proof.next = now + proof.retry;
        if keepalive {
            self.session_transmit(&peer, |session, buf| session.encapsulate(&[], buf));
        } else {
            self.session_transmit(&peer, RouteSession::initiate);
        }
    }

    pub(super) fn handle_setup_reject(
        &mut self,
        now: Instant,
        ingress: TransportId,
        setup_id: SetupId,
        hop_index: u8,
        reason: RejectReason,
    ) {
        if let Some(relayed) = self.relayed.remove(&(ingress, setup_id)) {
            self.table.remove(now, relayed.reverse_id);
            let reject = ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            };
            self.answer(now, relayed.previous, setup_id, reject);
            return;
        }
        match self.pending.remove(&setup_id) {
            Some(pending) if pending.transport == ingress => {
                self.table.remove(now, pending.in_id);
                if reason == RejectReason::Crossed {
                    self.give_way(now, setup_id, pending);
                    return;
                }
                let error = rejection(&pending.path, hop_index, reason);
                self.setup_failed(now, setup_id, &pending, error);
            }
            Some(pending) => {
                self.pending.insert(setup_id, pending);
                self.drops.bad_control += 1;
            }
            None => self.drops.bad_control += 1,
        }
    }

    /// The destination's own setup to this node crossed this one and wins: its route serves.
    fn give_way(&mut self, now: Instant, setup: SetupId, pending: PendingSetup) {
        let Some(peer) = pending.path.last().copied() else {
            return;
        };
        if let Some(route) = self.routes.get_mut(&peer) {
            if route.ready {
                if pending.announce {
                    self.events.push_back(Event::RouteReady { peer });
                }
            } else {
                route.announce |= pending.announce;
            }
            return;
        }
        self.yielded.insert(
            setup,
            Yielded {
                path: pending.path,
                deadline: pending.deadline.max(now + PROOF_TIMEOUT),
            },
        );
        self.route_work_started(now);
    }

    /// Sends an answer to a setup request and remembers it, to repeat it when the request
    /// comes again.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        to: TransportId,
        setup_id: SetupId,
        message: ControlMessage,
    ) {
        if let Some(address) = self.transports.address_of(to) {
            let _ = self.send_control(to, RouteId::CONTROL, address, &message);
        }
        if self.answers.len() >= MAX_ANSWERS {
            // A flood of requests: a repeated one is handled afresh instead.
            return;
        }
        self.answers.insert(
            (to, setup_id),
            Answer {
                message,
                until: now + ANSWER_MEMORY,
            },
        );
    }

    /// How long a hop waits for an answer before it sends a request again: a few round trips.
    pub(super) fn setup_retry(&self, transport: TransportId) -> Duration {
        let rtt = self
            .transports
            .info()
            .find(|info| info.id == transport)
            .and_then(|info| info.rtt)
            .unwrap_or(Duration::from_millis(100));
        (rtt * 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// A setup this node started failed: a command hears of it; a repair tries another path.
    pub(super) fn setup_failed(
        &mut self,
        now: Instant,
        setup: SetupId,
        pending: &PendingSetup,
        error: RouteError,
    ) {
        let Some(peer) = pending.path.last().copied() else {
            return;
        };
        if let RouteError::Rejected {
            hop,
            next: Some(next),
            reason,
            ..
        } = &error
        {
            // The link to the next hop is dead, silent or unknown to the hop: leave it out of
            // the next path.
            if matches!(
                reason,
                RejectReason::NextHopUnreachable
                    | RejectReason::Timeout
                    | RejectReason::UnknownNextHop
            ) {
                self.topology.suspect_link(*hop, *next);
            }
        }
        if self
            .repairs
            .get(&peer)
            .is_some_and(|repair| repair.setup == Some(setup))
        {
            log::info!("repair of the route to {peer} failed: {error}");
            self.repair(now, peer);
            return;
        }
        self.fail_setup(setup, &pending.path, error);
    }

    pub(super) fn fail_setup(&mut self, setup: SetupId, path: &[NodeKey], error: RouteError) {
        if let Some(peer) = path.last().copied() {
            log::info!("route to {peer} failed: {error}");
            self.events
                .push_back(Event::RouteFailed { setup, peer, error });
        }
    }
}

/// A route setup request's fields.
pub(super) struct SetupRequest {
    pub(super) setup_id: SetupId,
    pub(super) hop_index: u8,
    pub(super) mtu: u16,
    pub(super) reverse_id: RouteId,
    pub(super) path: Vec<NodeKey>,
}

pub(super) fn check_path(path: &[NodeKey]) -> Result<(), RouteError> {
    if path.len() < 2 {
        return Err(RouteError::BadPath("a path needs at least two nodes"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(RouteError::BadPath("a path has at most 16 nodes"));
    }
    let mut sorted = path.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != path.len() {
        return Err(RouteError::BadPath("a path visits each node at most once"));
    }
    Ok(())
}

pub(super) fn rejection(path: &[NodeKey], hop_index: u8, reason: RejectReason) -> RouteError {
    let index = usize::from(hop_index);
    RouteError::Rejected {
        hop_index,
        hop: path
            .get(index)
            .or(path.first())
            .copied()
            .unwrap_or(NodeKey::from([0; 32])),
        next: path.get(index + 1).copied(),
        reason,
    }
}
