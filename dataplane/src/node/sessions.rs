//! The node's side of route sessions: one per remote node, created when a route to it is set
//! up, carried by whichever route is active, checked at the end that decrypts.

use super::*;

impl Node {
    /// Drops the sessions whose peer has had no route for [`SESSION_LINGER`], and the oldest
    /// beyond [`MAX_LINGERING_SESSIONS`].
    pub(super) fn retire_sessions(&mut self, now: Instant) {
        let sessions = &self.sessions;
        self.lingering.retain(|peer, _| sessions.contains_key(peer));
        self.session_peers
            .retain(|_, peer| sessions.contains_key(peer));
        let pending: Vec<NodeKey> = self
            .pending
            .values()
            .filter_map(|setup| setup.path.last().copied())
            .collect();
        for peer in self.sessions.keys() {
            if self.routes.contains_key(peer) || pending.contains(peer) {
                self.lingering.remove(peer);
            } else {
                self.lingering.entry(*peer).or_insert(now);
            }
        }
        let mut lingering: Vec<(Instant, NodeKey)> = self
            .lingering
            .iter()
            .map(|(peer, since)| (*since, *peer))
            .collect();
        lingering.sort();
        let excess = lingering.len().saturating_sub(MAX_LINGERING_SESSIONS);
        for (index, (since, peer)) in lingering.into_iter().enumerate() {
            if index < excess || now.saturating_duration_since(since) >= SESSION_LINGER {
                self.lingering.remove(&peer);
                if let Some(session) = self.sessions.remove(&peer) {
                    self.indexes.release(session.index());
                }
            }
        }
    }

    pub(super) fn ensure_session(&mut self, peer: NodeKey) {
        if !self.sessions.contains_key(&peer) {
            let index = self.indexes.allocate();
            let session = RouteSession::new(
                &self.options.secret,
                peer,
                index,
                self.session_limiter.clone(),
            );
            self.session_peers.insert(session.peer_address(), peer);
            self.sessions.insert(peer, session);
        }
    }

    pub(super) fn handle_session_message(&mut self, peer: NodeKey, message: &[u8]) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            self.drops.session += 1;
            return;
        };
        let peer_address = session.peer_address();
        let mut buf = std::mem::take(&mut self.session_buf);
        let result = session.decapsulate(message, &mut buf[HEADER_LEN..]);
        match result {
            SessionResult::Send(len) => self.transmit_session_message(&peer, &mut buf, len),
            SessionResult::Deliver(len) => {
                let packet = &buf[HEADER_LEN..HEADER_LEN + len];
                match classify(packet, peer_address, self.address) {
                    Destination::MeshStack => self.events.push_back(Event::Packet {
                        peer,
                        packet: packet.to_vec(),
                    }),
                    Destination::Tunnel => self.events.push_back(Event::TunnelPacket {
                        peer,
                        packet: packet.to_vec(),
                    }),
                    Destination::Drop => self.drops.source_check += 1,
                }
            }
            SessionResult::Nothing => {}
            SessionResult::Refused(error) => {
                log::debug!("route session with {peer} refused a message: {error:?}");
                self.drops.session += 1;
            }
        }
        self.session_buf = buf;
        // Packets queued while the handshake was under way (boringtun hands them out one by
        // one once a session exists).
        while self.session_transmit(&peer, RouteSession::flush) {}
        self.check_ready(&peer);
    }

    pub(super) fn check_ready(&mut self, peer: &NodeKey) {
        let established = self
            .sessions
            .get(peer)
            .is_some_and(RouteSession::is_established);
        if let Some(route) = self.routes.get_mut(peer) {
            if established && !route.ready {
                route.ready = true;
                self.events.push_back(Event::RouteReady { peer: *peer });
            }
        }
    }

    /// Runs one session operation and carries what it produced to the peer. Returns whether
    /// it produced a message.
    pub(super) fn session_transmit(
        &mut self,
        peer: &NodeKey,
        operation: impl FnOnce(&mut RouteSession, &mut [u8]) -> SessionResult,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(peer) else {
            return false;
        };
        let mut buf = std::mem::take(&mut self.session_buf);
        let sent = match operation(session, &mut buf[HEADER_LEN..]) {
            SessionResult::Send(len) => {
                self.transmit_session_message(peer, &mut buf, len);
                true
            }
            _ => false,
        };
        self.session_buf = buf;
        sent
    }

    /// Sends the session message at `buf[HEADER_LEN..HEADER_LEN + len]` over the route to
    /// `peer`, writing the mesh header in front of it.
    pub(super) fn transmit_session_message(&mut self, peer: &NodeKey, buf: &mut [u8], len: usize) {
        let (Some(route), Some(session)) = (self.routes.get(peer), self.sessions.get(peer)) else {
            self.drops.unsendable += 1;
            return;
        };
        let header = MeshHeader {
            route_id: route.out_id,
            next_header: NextHeader::Session,
            hop_limit: HOP_LIMIT,
            src: self.address,
            dst: session.peer_address(),
            payload_len: len,
        };
        let transport = route.transport;
        let Some(packet) = buf.get_mut(..HEADER_LEN + len) else {
            return;
        };
        if header.emit(packet).is_err()
            || self
                .transports
                .send(transport, packet, &mut self.outbox)
                .is_err()
        {
            self.drops.unsendable += 1;
        }
    }

    pub(super) fn drive_session_timers(&mut self) {
        let peers: Vec<NodeKey> = self.sessions.keys().copied().collect();
        for peer in peers {
            if self.routes.contains_key(&peer) {
                while self.session_transmit(&peer, RouteSession::update_timers) {}
            }
        }
    }
}
