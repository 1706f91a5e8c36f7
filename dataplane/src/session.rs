//! Route sessions: the end-to-end WireGuard session between two nodes that talk over the mesh,
//! so that relays carry what the ends send without being able to read it. One session per
//! remote node, used by whichever route to it is active.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use smoltcp::wire::Ipv6Packet;

use crate::identity::{NodeKey, SecretKey};

/// The type field of a WireGuard data message (4, little endian).
const DATA_MESSAGE: [u8; 4] = [4, 0, 0, 0];
/// The first bytes of WireGuard's handshake initiation and response.
const HANDSHAKE_INITIATION: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
/// How often a session that carries no data of its own (its peer's route is direct) makes new
/// keys: boringtun lets keys that no data renews expire after 180 s, and a repair onto a
/// relayed path must find the session established.
pub const REHANDSHAKE_INTERVAL: Duration = Duration::from_secs(120);

/// What a session operation produced, at the start of the caller's buffer.
#[derive(Debug)]
pub enum SessionResult {
    /// A WireGuard message of this many bytes to carry to the peer over the route.
    Send(usize),
    /// A decrypted IP packet of this many bytes, from the peer (see [`classify`]).
    Deliver(usize),
    /// An authenticated keepalive: a data message (type 4) with nothing in it.
    Keepalive,
    /// Nothing to do.
    Nothing,
    /// The message was refused.
    Refused(WireGuardError),
}

/// One end-to-end session with a remote node.
pub struct RouteSession {
    tunn: Tunn,
    index: u32,
    peer_address: Ipv6Addr,
    /// When a handshake message of this session last went out or came in, by the node's clock.
    last_handshake: Option<Instant>,
    /// Handshake initiations this end sent.
    initiations: u64,
}

impl std::fmt::Debug for RouteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSession")
            .field("index", &self.index)
            .field("peer_address", &self.peer_address)
            .finish()
    }
}

impl RouteSession {
    /// A session with `peer`. `index` comes from the node's one index allocator; the rate
    /// limiter is shared by route sessions only, never with the transports.
    pub fn new(
        secret: &SecretKey,
        peer: NodeKey,
        index: u32,
        rate_limiter: Arc<RateLimiter>,
    ) -> RouteSession {
        RouteSession {
            tunn: Tunn::new(
                secret.to_x25519(),
                peer.to_x25519(),
                None,
                None,
                index,
                Some(rate_limiter),
            ),
            index,
            // The rate limiter keys cookies by address; the peer's mesh address stands in
            // for the UDP source a transport would use.
            peer_address: peer.mesh_address(),
            last_handshake: None,
            initiations: 0,
        }
    }

    /// Handshake initiations this end has sent.
    pub fn initiations(&self) -> u64 {
        self.initiations
    }

    /// Whether this end should make new keys now, on behalf of a route that carries nothing
    /// through the session: no handshake message has passed for [`REHANDSHAKE_INTERVAL`].
    pub fn rehandshake_due(&self, now: Instant) -> bool {
        self.last_handshake
            .is_none_or(|at| now.saturating_duration_since(at) >= REHANDSHAKE_INTERVAL)
    }

    /// Notes that a handshake message passed at `now` (see [`RouteSession::rehandshake_due`]).
    pub fn note_handshake(&mut self, now: Instant) {
        self.last_handshake = Some(now);
    }

    /// The peer's mesh address, derived once (a BLAKE2s hash per packet would cost).
    pub fn peer_address(&self) -> Ipv6Addr {
        self.peer_address
    }

    /// The boringtun index this session holds.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether a handshake has completed and data can flow.
    pub fn is_established(&self) -> bool {
        self.tunn.stats().0.is_some()
    }

    /// Encrypts an IP packet for the peer; without a session it is queued and a handshake
    /// initiation comes out instead.
    pub fn encapsulate(&mut self, packet: &[u8], dst: &mut [u8]) -> SessionResult {
        let result = self.tunn.encapsulate(packet, dst);
        Self::convert(&mut self.initiations, result)
    }

    /// Starts a new handshake now, even while one is under way (a new route is up, or the peer
    /// seems to have lost the session).
    pub fn initiate(&mut self, dst: &mut [u8]) -> SessionResult {
        let result = self.tunn.format_handshake_initiation(dst, true);
        Self::convert(&mut self.initiations, result)
    }

    /// Authenticates and decrypts a message from the peer. After a `Send`, call [`flush`]
    /// until it gives `Nothing`: packets queued during the handshake come out.
    ///
    /// [`flush`]: RouteSession::flush
    pub fn decapsulate(&mut self, message: &[u8], dst: &mut [u8]) -> SessionResult {
        // boringtun panics when dst is shorter than the message minus 16 bytes.
        if message.is_empty() || dst.len() < message.len() {
            return SessionResult::Refused(WireGuardError::DestinationBufferTooSmall);
        }
        let result = self
            .tunn
            .decapsulate(Some(IpAddr::V6(self.peer_address)), message, dst);
        // boringtun answers `Done` both for a keepalive and for a cookie reply (which anyone
        // can forge): only a data message's `Done` is a keepalive.
        match result {
            TunnResult::Done if message.get(..4) == Some(&DATA_MESSAGE) => SessionResult::Keepalive,
            result => Self::convert(&mut self.initiations, result),
        }
    }

    /// Whether `message` is a handshake initiation or response (what [`RouteSession::note_handshake`]
    /// is told of once the session took it).
    pub fn is_handshake(message: &[u8]) -> bool {
        matches!(
            message.first(),
            Some(&HANDSHAKE_INITIATION | &HANDSHAKE_RESPONSE)
        )
    }

    /// The next packet queued while the handshake was under way.
    pub fn flush(&mut self, dst: &mut [u8]) -> SessionResult {
        let result = self.tunn.decapsulate(None, &[], dst);
        Self::convert(&mut self.initiations, result)
    }

    /// Drives boringtun's timers: handshake retries, keepalives, rekeying.
    pub fn update_timers(&mut self, dst: &mut [u8]) -> SessionResult {
        let result = self.tunn.update_timers(dst);
        Self::convert(&mut self.initiations, result)
    }

    fn convert(initiations: &mut u64, result: TunnResult<'_>) -> SessionResult {
        match result {
            TunnResult::Done => SessionResult::Nothing,
            TunnResult::Err(WireGuardError::ConnectionExpired) => SessionResult::Nothing,
            TunnResult::Err(error) => SessionResult::Refused(error),
            TunnResult::WriteToNetwork(bytes) => {
                if bytes.first() == Some(&HANDSHAKE_INITIATION) {
                    *initiations += 1;
                }
                SessionResult::Send(bytes.len())
            }
            TunnResult::WriteToTunnelV6(bytes, _) | TunnResult::WriteToTunnelV4(bytes, _) => {
                SessionResult::Deliver(bytes.len())
            }
        }
    }
}

/// Where a packet that a route session decrypted goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To this node's mesh stack: from the peer's mesh address to ours.
    MeshStack,
    /// To a tunnel app (the VPN), which checks the source against what the peer may use.
    Tunnel,
    /// Addressed to this node's mesh address but not from the peer's: a forgery.
    Drop,
}

/// Sorts a decrypted packet: boringtun does not check sources, so the end that decrypts must.
pub fn classify(packet: &[u8], peer: Ipv6Addr, own: Ipv6Addr) -> Destination {
    match packet.first().map(|byte| byte >> 4) {
        Some(6) => {
            let Ok(header) = Ipv6Packet::new_checked(packet) else {
                return Destination::Drop;
            };
            if header.dst_addr() != own {
                Destination::Tunnel
            } else if header.src_addr() == peer {
                Destination::MeshStack
            } else {
                Destination::Drop
            }
        }
        Some(4) => Destination::Tunnel,
        _ => Destination::Drop,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v6(src: &str, dst: &str) -> Vec<u8> {
        let mut packet = vec![0u8; 40];
        packet[0] = 0x60;
        packet[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        packet[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        packet
    }

    #[test]
    fn decrypted_packets_are_sorted_by_addresses() {
        let peer: Ipv6Addr = "fd01::1".parse().unwrap();
        let own: Ipv6Addr = "fd02::2".parse().unwrap();
        let classify = |packet: &[u8]| classify(packet, peer, own);
        assert_eq!(classify(&v6("fd01::1", "fd02::2")), Destination::MeshStack);
        assert_eq!(classify(&v6("fd03::3", "fd02::2")), Destination::Drop);
        assert_eq!(
            classify(&v6("2001:db8::1", "2001:db8::2")),
            Destination::Tunnel
        );
        assert_eq!(classify(&[0x45; 20]), Destination::Tunnel);
        assert_eq!(classify(&[0x60; 20]), Destination::Drop);
        assert_eq!(classify(&[]), Destination::Drop);
    }
}
