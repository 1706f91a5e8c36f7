//! The node's side of route sessions: one per remote node, created when a route to it is set
//! up, carried by whichever route is active, checked at the end that decrypts. A session
//! belongs to its peer, not to a route: it outlives routes for a while, and what it
//! authenticates is the proof that adopts a new route.

use super::*;

impl Node {
    /// Drops the sessions whose peer has had no route for [`SESSION_LINGER`], and the oldest
    /// beyond [`MAX_LINGERING_SESSIONS`].
    pub(super) fn retire_sessions(&mut self, now: Instant) {
        let sessions = &self.sessions;
        self.lingering.retain(|peer, _| sessions.contains_key(peer));
        self.session_peers
            .retain(|_, peer| sessions.contains_key(peer));
        let mut wanted: HashSet<NodeKey> = self
            .pending
            .values()
            .filter_map(|setup| setup.path.last().copied())
            .collect();
        wanted.extend(self.candidates.values().map(|candidate| candidate.peer));
        wanted.extend(self.repairs.keys().copied());
        wanted.extend(self.awaiting_repair.keys().copied());
        for peer in self.sessions.keys() {
            if self.routes.contains_key(peer) || wanted.contains(peer) {
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

    /// A session message that came in on route id `id` (the Consume rule of an active or a
    /// candidate route). What the session answers goes back the way the message came.
    pub(super) fn handle_session_message(
        &mut self,
        now: Instant,
        peer: NodeKey,
        id: RouteId,
        message: &[u8],
    ) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            self.drops.session += 1;
            return;
        };
        let peer_address = session.peer_address();
        let mut buf = std::mem::take(&mut self.session_buf);
        let result = session.decapsulate(message, &mut buf[HEADER_LEN..]);
        if RouteSession::is_handshake(message) && !matches!(result, SessionResult::Refused(_)) {
            session.note_handshake(now);
        }
        let reply_path = self.path_of(&peer, id);
        // Proof: a data message, a keepalive included, that the peer's session authenticated
        // and that came in through this route's Consume rule.
        let proven = matches!(result, SessionResult::Deliver(_) | SessionResult::Keepalive);
        let keepalive = matches!(result, SessionResult::Keepalive);
        match result {
            SessionResult::Send(len) => {
                if let Some((transport, out_id)) = reply_path {
                    self.transmit_session_message_on(
                        transport,
                        out_id,
                        peer_address,
                        &mut buf,
                        len,
                    );
                }
            }
            SessionResult::Deliver(len) => {
                self.deliver(peer, peer_address, &buf[HEADER_LEN..HEADER_LEN + len]);
            }
            SessionResult::Keepalive | SessionResult::Nothing => {}
            SessionResult::Refused(error) => {
                log::debug!("route session with {peer} refused a message: {error:?}");
                self.drops.session += 1;
            }
        }
        self.session_buf = buf;
        if proven {
            self.route_proven(now, peer, id, keepalive);
        }
        // Packets queued while the handshake was under way (boringtun hands them out one by
        // one once a session exists).
        while self.session_transmit(&peer, RouteSession::flush) {}
    }

    /// Where to answer a message that came in on `id` from `peer`: back along that route.
    fn path_of(&self, peer: &NodeKey, id: RouteId) -> Option<(TransportId, RouteId)> {
        if let Some(route) = self.routes.get(peer).filter(|route| route.in_id == id) {
            return Some((route.transport, route.out_id));
        }
        if let Some(candidate) = self.candidates.get(&id) {
            return Some((candidate.route.transport, candidate.route.out_id));
        }
        self.routes
            .get(peer)
            .map(|route| (route.transport, route.out_id))
    }

    /// A message from `peer` proved the route it came in on: a candidate is adopted, and an
    /// initiator's new route is confirmed. The far end answers each keepalive of the
    /// initiator's with one (the initiator proves with keepalives until it hears back; it never
    /// answers them, so they do not echo).
    pub(super) fn route_proven(
        &mut self,
        now: Instant,
        peer: NodeKey,
        id: RouteId,
        keepalive: bool,
    ) {
        if self.candidates.contains_key(&id) {
            self.adopt(now, id);
            return;
        }
        let Some(route) = self.routes.get_mut(&peer) else {
            return;
        };
        if route.in_id != id {
            return;
        }
        if !route.initiator {
            if keepalive {
                self.session_transmit(&peer, |session, buf| session.encapsulate(&[], buf));
            }
            return;
        }
        if route.ready {
            return;
        }
        route.ready = true;
        route.proof = None;
        let announce = std::mem::take(&mut route.announce);
        let hops = route.path.len().saturating_sub(1);
        if self.repairs.remove(&peer).is_some() {
            log::info!("route to {peer} repaired over {hops} hops");
        }
        if announce {
            self.events.push_back(Event::RouteReady { peer });
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
        let (transport, out_id, dst) = (route.transport, route.out_id, session.peer_address());
        self.transmit_session_message_on(transport, out_id, dst, buf, len);
    }

    /// Sends the session message at `buf[HEADER_LEN..HEADER_LEN + len]` to `transport` with
    /// route id `out_id`.
    fn transmit_session_message_on(
        &mut self,
        transport: TransportId,
        out_id: RouteId,
        dst: Ipv6Addr,
        buf: &mut [u8],
        len: usize,
    ) {
        let header = MeshHeader {
            route_id: out_id,
            next_header: NextHeader::Session,
            hop_limit: HOP_LIMIT,
            src: self.address,
            dst,
            payload_len: len,
        };
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
