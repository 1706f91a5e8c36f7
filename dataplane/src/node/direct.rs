//! Direct routes: a route without relays carries what its ends send in their transport alone,
//! the inner packet behind the usual outer header with next header 252, and no route-session
//! layer. Owns the rule that accepts such a packet, and the timer that keeps the route session
//! to a direct peer established all the same, so that a repair onto a relayed path needs no
//! handshake.

use super::*;

impl Node {
    /// Sends `packet` over the direct route whose first hop is `transport`, as it is.
    pub(super) fn send_direct(&mut self, transport: TransportId, out_id: RouteId, packet: &[u8]) {
        let Some(dst) = self.transports.address_of(transport) else {
            self.drops.unsendable += 1;
            return;
        };
        let header = MeshHeader {
            route_id: out_id,
            next_header: NextHeader::Direct,
            hop_limit: HOP_LIMIT,
            src: self.address,
            dst,
            payload_len: packet.len(),
        };
        let mut buf = std::mem::take(&mut self.tx_buf);
        let sent = match buf.get_mut(..header.buffer_len()) {
            Some(mesh) => {
                header.emit(mesh).is_ok() && {
                    mesh[HEADER_LEN..].copy_from_slice(packet);
                    self.transports
                        .send(transport, mesh, &mut self.outbox)
                        .is_ok()
                }
            }
            None => false,
        };
        self.tx_buf = buf;
        if !sent {
            self.drops.unsendable += 1;
        }
    }

    /// A mesh packet with next header 252 that came in on `ingress` through the Consume rule
    /// `id` for `peer`. Taken only when that rule belongs to a direct route to `peer`, the
    /// packet arrived on `peer`'s transport and its outer source is `peer`'s mesh address; the
    /// inner packet's source is then checked as a session's would be. Such a packet proves the
    /// route it came in on, as a session's data message does.
    pub(super) fn handle_direct_packet(
        &mut self,
        now: Instant,
        ingress: TransportId,
        id: RouteId,
        peer: NodeKey,
        direct: bool,
        packet: &[u8],
    ) {
        let src = MeshPacket::new_unchecked(packet).src_addr();
        let from_peer = self.transports.key_of(ingress) == Some(peer)
            && self.transports.address_of(ingress) == Some(src);
        if !direct || !from_peer {
            self.drops.direct_refused += 1;
            return;
        }
        self.route_proven(now, peer, id, false);
        self.deliver(peer, src, &packet[HEADER_LEN..]);
    }

    /// Keeps the route session to each peer of a direct route established: the route's
    /// initiator makes new keys when none have been made for
    /// [`REHANDSHAKE_INTERVAL`](crate::session::REHANDSHAKE_INTERVAL), since
    /// nothing else would before boringtun lets the keys expire.
    pub(super) fn rehandshake_direct_sessions(&mut self, now: Instant) {
        let due: Vec<NodeKey> = self
            .routes
            .iter()
            .filter(|(_, route)| route.initiator && route.ready && route.is_direct())
            .filter(|(peer, _)| {
                self.sessions
                    .get(*peer)
                    .is_some_and(|session| session.rehandshake_due(now))
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if let Some(session) = self.sessions.get_mut(&peer) {
                session.note_handshake(now);
            }
            log::debug!("route session with {peer}: new keys for its direct route");
            self.session_transmit(&peer, RouteSession::initiate);
        }
    }
}
