//! Route setup along an explicit path: the initiator's request, each relay's reverse rule and
//! onward request, the destination's answer, the forward rules on the way back, and rejections
//! that name the hop.

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
        let reject = |node: &mut Node, reason| {
            let message = ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            };
            let _ = node.send_control(
                ingress,
                RouteId::CONTROL,
                neighbour.mesh_address(),
                &message,
            );
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
            self.accept_route_as_destination(now, ingress, setup_id, reverse_id, mtu, path);
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
        let own_reverse_id = match self
            .table
            .allocate(now, self.rng.as_mut(), next_transport, back)
        {
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
        self.relayed.insert(
            (next_transport, setup_id),
            RelayedSetup {
                previous: ingress,
                hop_index,
                reverse_id: own_reverse_id,
                deadline: now + self.options.setup_hop_timeout * remaining,
            },
        );
    }

    pub(super) fn accept_route_as_destination(
        &mut self,
        now: Instant,
        ingress: TransportId,
        setup_id: SetupId,
        reverse_id: RouteId,
        mtu: u16,
        path: Vec<NodeKey>,
    ) {
        let Some(initiator) = path.first().copied() else {
            return;
        };
        let Some(neighbour) = self.transports.key_of(ingress) else {
            return;
        };
        let hop_index = u8::try_from(path.len() - 1).unwrap_or(u8::MAX);
        let in_id = match self.table.allocate(
            now,
            self.rng.as_mut(),
            ingress,
            Rule::Consume { peer: initiator },
        ) {
            Ok(id) => id,
            Err(_) => {
                let reject = ControlMessage::SetupReject {
                    setup_id,
                    hop_index,
                    reason: RejectReason::RouteLimit,
                };
                let _ =
                    self.send_control(ingress, RouteId::CONTROL, neighbour.mesh_address(), &reject);
                return;
            }
        };
        let accept = ControlMessage::SetupAccept {
            setup_id,
            forward_id: in_id,
            mtu,
        };
        let _ = self.send_control(ingress, RouteId::CONTROL, neighbour.mesh_address(), &accept);
        self.ensure_session(initiator);
        let route = EndRoute {
            setup: setup_id,
            path,
            initiator: false,
            transport: ingress,
            out_id: reverse_id,
            in_id,
            ready: self
                .sessions
                .get(&initiator)
                .is_some_and(RouteSession::is_established),
            next_refresh: now,
        };
        if let Some(old) = self.routes.insert(initiator, route) {
            self.table.remove(now, old.in_id);
        }
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
            let Some(previous) = self.transports.key_of(relayed.previous) else {
                self.table.remove(now, relayed.reverse_id);
                return;
            };
            match self
                .table
                .allocate(now, self.rng.as_mut(), relayed.previous, onward)
            {
                Ok(own_forward_id) => {
                    self.table.pair(own_forward_id, relayed.reverse_id);
                    let accept = ControlMessage::SetupAccept {
                        setup_id,
                        forward_id: own_forward_id,
                        mtu,
                    };
                    let _ = self.send_control(
                        relayed.previous,
                        RouteId::CONTROL,
                        previous.mesh_address(),
                        &accept,
                    );
                }
                Err(_) => {
                    self.table.remove(now, relayed.reverse_id);
                    let reject = ControlMessage::SetupReject {
                        setup_id,
                        hop_index: relayed.hop_index,
                        reason: RejectReason::RouteLimit,
                    };
                    let _ = self.send_control(
                        relayed.previous,
                        RouteId::CONTROL,
                        previous.mesh_address(),
                        &reject,
                    );
                }
            }
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
            self.send_route_control(
                old.transport,
                old.out_id,
                peer.mesh_address(),
                &ControlMessage::Teardown,
            );
            self.table.remove(now, old.in_id);
        }
        self.ensure_session(peer);
        let established = self
            .sessions
            .get(&peer)
            .is_some_and(RouteSession::is_established);
        self.routes.insert(
            peer,
            EndRoute {
                setup: setup_id,
                path: pending.path,
                initiator: true,
                transport: pending.transport,
                out_id: forward_id,
                in_id: pending.in_id,
                ready: established,
                next_refresh: now + self.options.refresh_interval,
            },
        );
        if established {
            self.events.push_back(Event::RouteReady { peer });
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
            if let Some(previous) = self.transports.key_of(relayed.previous) {
                let reject = ControlMessage::SetupReject {
                    setup_id,
                    hop_index,
                    reason,
                };
                let _ = self.send_control(
                    relayed.previous,
                    RouteId::CONTROL,
                    previous.mesh_address(),
                    &reject,
                );
            }
            return;
        }
        match self.pending.remove(&setup_id) {
            Some(pending) if pending.transport == ingress => {
                self.table.remove(now, pending.in_id);
                let error = rejection(&pending.path, hop_index, reason);
                self.fail_setup(setup_id, &pending.path, error);
            }
            Some(pending) => {
                self.pending.insert(setup_id, pending);
                self.drops.bad_control += 1;
            }
            None => self.drops.bad_control += 1,
        }
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
