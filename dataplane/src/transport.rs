//! The transports: one WireGuard session (a boringtun `Tunn`) per configured neighbour, all on the
//! node's one UDP socket. Owns the neighbour table, datagram dispatch by receiver index or static
//! key, endpoint roaming and the per-reason drop counters; the socket belongs to the driver.
//!
//! A route-session message (next header 254) is already encrypted and authenticated end to end,
//! so its transport seals only the mesh header: the datagram is a WireGuard data message of the
//! header, marked as [`SEALED_HEADER_TYPE`], followed by the message as it is. Each hop still
//! hides the route id and the two ends from the wire and takes the header only from its
//! neighbour, once; the bytes after it are the far end's to authenticate.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::identity::{NodeKey, SecretKey};
use crate::index::IndexAllocator;
use crate::outbox::{Outbox, MAX_DATAGRAM};
use crate::wire::mesh::{MeshPacket, NextHeader, HEADER_LEN};

/// What WireGuard adds to a packet it encrypts (header, counter and tag).
const WIREGUARD_OVERHEAD: usize = 32;

/// Largest mesh packet [`Transports::send`] accepts: its datagram must fit [`MAX_DATAGRAM`].
pub const MAX_MESH_PACKET: usize = MAX_DATAGRAM - WIREGUARD_OVERHEAD;

/// How often boringtun's timers want driving.
const TIMER_TICK: Duration = Duration::from_millis(250);

/// Handshake messages per second before the node asks for cookies (boringtun's device uses 100).
/// An accepted initiation counts twice: once in our check before the Diffie-Hellman that finds
/// its key, once in the `Tunn`'s own check.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// The first byte of a WireGuard cookie reply (message type 3, little endian).
const COOKIE_REPLY_TYPE: u8 = 3;

/// The first byte of a WireGuard data message (message type 4, little endian).
const DATA_MESSAGE_TYPE: u8 = 4;

/// The first byte of a datagram that seals only its mesh header: a WireGuard data message of
/// [`SEALED_HEADER_LEN`] bytes (with this in place of its type) followed by the rest of the
/// mesh packet, a route-session message.
pub const SEALED_HEADER_TYPE: u8 = 5;

/// The WireGuard data message that carries a sealed mesh header (with a payload length of 0).
pub const SEALED_HEADER_LEN: usize = HEADER_LEN + WIREGUARD_OVERHEAD;

/// Size of a cookie reply, the rate limiter's answer to an initiation under load.
const COOKIE_REPLY_LEN: usize = 64;

/// boringtun keeps up to 256 packets while a handshake is pending; one more call sees `Done`.
const MAX_FLUSH: usize = 257;

/// A transport's slot number, stable while its neighbour is configured; a removed neighbour's
/// number may be given to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(u16);

impl TransportId {
    /// The id of slot `slot`.
    pub const fn new(slot: u16) -> TransportId {
        TransportId(slot)
    }

    /// The slot number.
    pub const fn slot(self) -> u16 {
        self.0
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A neighbour to hold a transport with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Its node key; only configured keys may complete a handshake.
    pub key: NodeKey,
    /// Where to reach it first; without one it must contact us before we can send.
    pub endpoint: Option<SocketAddr>,
    /// WireGuard persistent keepalive in seconds (keeps NAT mappings open).
    pub keepalive: Option<u16>,
}

/// Datagrams dropped, by reason. Every datagram [`Transports::receive`] neither delivers nor
/// accepts as a handshake message, keepalive or cookie is counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Longer than [`MAX_DATAGRAM`].
    pub oversized: u64,
    /// Not a WireGuard message, or a decrypted payload that is no IP packet.
    pub malformed: u64,
    /// A receiver index that names no session of a transport.
    pub unknown_index: u64,
    /// A handshake initiation from a key that is not a configured neighbour.
    pub unknown_key: u64,
    /// A handshake message whose mac1 is wrong.
    pub bad_mac: u64,
    /// A handshake message refused (or answered with a cookie) because of the handshake rate.
    pub rate_limited: u64,
    /// Authentication failed, or a replayed or too old counter.
    pub decrypt_failed: u64,
    /// Decrypted, but IPv4: neighbours only exchange IPv6 mesh packets.
    pub not_ipv6: u64,
    /// Anything else boringtun refused (a replayed initiation, an unexpected message).
    pub other: u64,
}

impl DropCounters {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.oversized
            + self.malformed
            + self.unknown_index
            + self.unknown_key
            + self.bad_mac
            + self.rate_limited
            + self.decrypt_failed
            + self.not_ipv6
            + self.other
    }

    fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Oversized => &mut self.oversized,
            DropReason::Malformed => &mut self.malformed,
            DropReason::UnknownIndex => &mut self.unknown_index,
            DropReason::UnknownKey => &mut self.unknown_key,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::RateLimited => &mut self.rate_limited,
            DropReason::DecryptFailed => &mut self.decrypt_failed,
            DropReason::NotIpv6 => &mut self.not_ipv6,
            DropReason::Other => &mut self.other,
        };
        *counter += 1;
    }
}

/// One [`DropCounters`] field, for counting and logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    Oversized,
    Malformed,
    UnknownIndex,
    UnknownKey,
    BadMac,
    RateLimited,
    DecryptFailed,
    NotIpv6,
    Other,
}

impl From<&WireGuardError> for DropReason {
    fn from(error: &WireGuardError) -> DropReason {
        match error {
            WireGuardError::InvalidPacket | WireGuardError::IncorrectPacketLength => {
                DropReason::Malformed
            }
            WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => {
                DropReason::UnknownIndex
            }
            WireGuardError::WrongKey => DropReason::UnknownKey,
            WireGuardError::InvalidMac => DropReason::BadMac,
            WireGuardError::UnderLoad => DropReason::RateLimited,
            WireGuardError::InvalidAeadTag
            | WireGuardError::InvalidCounter
            | WireGuardError::DuplicateCounter => DropReason::DecryptFailed,
            _ => DropReason::Other,
        }
    }
}

/// A snapshot of one transport, for status and the node manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    /// The transport.
    pub id: TransportId,
    /// The neighbour's key.
    pub key: NodeKey,
    /// Where its datagrams go: configured, or where its last authenticated packet came from.
    pub endpoint: Option<SocketAddr>,
    /// Age of the current WireGuard session; `None` without one.
    pub last_handshake: Option<Duration>,
    /// When its last authenticated packet arrived.
    pub last_received: Option<Instant>,
    /// Round-trip time last measured by the node's liveness probes.
    pub rtt: Option<Duration>,
    /// Bytes of the datagrams sent to it (handshakes and keepalives included).
    pub tx_bytes: u64,
    /// Bytes of the authenticated datagrams received from it.
    pub rx_bytes: u64,
    /// Datagrams sent to it.
    pub tx_packets: u64,
    /// Authenticated datagrams received from it.
    pub rx_packets: u64,
}

/// What became of a packet given to [`Transports::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It left at once, in a data message.
    Now,
    /// It waits in the session's queue until a handshake completes.
    Queued,
}

/// Why a packet could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No transport has this id (its neighbour was removed).
    #[error("no such transport")]
    UnknownTransport,
    /// The neighbour's endpoint is not known yet: configure one, or wait until it contacts us.
    #[error("neighbour endpoint unknown: configure one or wait for the neighbour to contact us")]
    NoEndpoint,
    /// The packet is longer than [`MAX_MESH_PACKET`].
    #[error("packet too large for a transport datagram")]
    TooLarge,
}

/// Why a neighbour could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The key is already a neighbour: remove it first to change its settings.
    #[error("neighbour {0} is already configured")]
    DuplicateNeighbour(NodeKey),
    /// The key is this node's own.
    #[error("a node cannot be its own neighbour")]
    OwnKey,
    /// Every transport id is in use.
    #[error("too many neighbours")]
    Full,
}

/// Traffic counters of one transport.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    tx_bytes: u64,
    rx_bytes: u64,
    tx_packets: u64,
    rx_packets: u64,
}

/// One configured neighbour and its WireGuard session.
struct Neighbour {
    key: NodeKey,
    /// Its mesh address, derived once (a hash per packet would cost).
    address: Ipv6Addr,
    /// Our boringtun index for this session, from the shared [`IndexAllocator`].
    index: u32,
    // Boxed: a `Tunn` holds a ring of sessions, and the slots vector should stay small.
    tunnel: Box<Tunn>,
    endpoint: Option<SocketAddr>,
    last_received: Option<Instant>,
    rtt: Option<Duration>,
    traffic: Traffic,
}

impl Neighbour {
    /// Notes an authenticated datagram: the neighbour's endpoint roams to where it came from.
    fn authenticated(&mut self, id: TransportId, now: Instant, from: SocketAddr, len: usize) {
        if self.endpoint != Some(from) {
            log::debug!(
                "transport {id} ({}): endpoint {:?} -> {from}",
                self.key.short(),
                self.endpoint
            );
            self.endpoint = Some(from);
        }
        self.last_received = Some(now);
        self.traffic.rx_packets += 1;
        self.traffic.rx_bytes += len as u64;
    }

    /// Queues the first `len` bytes of `buffer` for the neighbour's endpoint; without one there
    /// is nowhere to send them.
    fn transmit(&mut self, outbox: &mut Outbox, buffer: Box<[u8; MAX_DATAGRAM]>, len: usize) {
        match self.endpoint {
            Some(endpoint) => {
                outbox.push(endpoint, buffer, len);
                self.traffic.tx_packets += 1;
                self.traffic.tx_bytes += len as u64;
            }
            None => outbox.recycle_buffer(buffer),
        }
    }

    /// Sends route-session message `packet` with only its mesh header sealed, if the session
    /// is established; otherwise gives it back, for boringtun to queue whole.
    fn send_sealed_header<'p>(
        &mut self,
        packet: &'p [u8],
        outbox: &mut Outbox,
    ) -> Result<(), &'p [u8]> {
        let (Some(header), Some(rest)) =
            (packet.first_chunk::<HEADER_LEN>(), packet.get(HEADER_LEN..))
        else {
            return Err(packet);
        };
        if self.tunnel.time_since_last_handshake().is_none() {
            return Err(packet);
        }
        let mut header = *header;
        MeshPacket::new_unchecked(&mut header[..]).set_payload_len(0);
        let mut buffer = outbox.buffer();
        match self.tunnel.encapsulate(&header, &mut buffer[..]) {
            TunnResult::WriteToNetwork(message)
                if message.len() == SEALED_HEADER_LEN
                    && message.first() == Some(&DATA_MESSAGE_TYPE) => {}
            other => {
                // With a session, boringtun always seals: nothing else can come back.
                log::debug!("sealing a header: {other:?}");
                outbox.recycle_buffer(buffer);
                return Ok(());
            }
        }
        buffer[0] = SEALED_HEADER_TYPE;
        let len = SEALED_HEADER_LEN + rest.len();
        buffer[SEALED_HEADER_LEN..len].copy_from_slice(rest);
        self.transmit(outbox, buffer, len);
        Ok(())
    }

    /// Queues a copy of `bytes` for the neighbour's endpoint.
    fn transmit_copy(&mut self, outbox: &mut Outbox, bytes: &[u8]) {
        if let Some(endpoint) = self.endpoint {
            outbox.push_copy(endpoint, bytes);
            self.traffic.tx_packets += 1;
            self.traffic.tx_bytes += bytes.len() as u64;
        }
    }

    /// Sends what boringtun queued while it had no session.
    fn flush(&mut self, outbox: &mut Outbox) {
        for _ in 0..MAX_FLUSH {
            let mut buffer = outbox.buffer();
            let len = match self.tunnel.decapsulate(None, &[], &mut buffer[..]) {
                TunnResult::WriteToNetwork(bytes) => bytes.len(),
                _ => {
                    outbox.recycle_buffer(buffer);
                    return;
                }
            };
            self.transmit(outbox, buffer, len);
        }
    }
}

/// The set of transports on the node's UDP socket. Sans-IO: datagrams in through
/// [`receive`](Transports::receive), datagrams out through an [`Outbox`], time passed in.
pub struct Transports {
    secret: StaticSecret,
    public: PublicKey,
    own_key: NodeKey,
    /// Shared by every transport and the unknown-initiator check, so that the handshake rate is
    /// limited for the socket as a whole.
    rate_limiter: Arc<RateLimiter>,
    slots: Vec<Option<Neighbour>>,
    by_key: HashMap<NodeKey, TransportId>,
    by_index: HashMap<u32, TransportId>,
    drops: DropCounters,
    next_tick: Option<Instant>,
}

impl fmt::Debug for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transports")
            .field("own_key", &self.own_key)
            .field("neighbours", &self.by_key.len())
            .field("drops", &self.drops)
            .finish_non_exhaustive()
    }
}

/// `from` with an IPv4-mapped IPv6 address (as a dual-stack socket reports IPv4 peers) turned
/// into plain IPv4, so that one peer has one address.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

impl Transports {
    /// No transports yet, for the node with key `secret`.
    pub fn new(secret: &SecretKey) -> Transports {
        let public = secret.public().to_x25519();
        Transports {
            secret: secret.to_x25519(),
            public,
            own_key: secret.public(),
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            slots: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            drops: DropCounters::default(),
            next_tick: None,
        }
    }

    /// Adds a transport to `neighbour`, its session index drawn from `indexes`.
    pub fn add(
        &mut self,
        neighbour: NeighbourConfig,
        indexes: &mut IndexAllocator,
    ) -> Result<TransportId, TransportError> {
        if neighbour.key == self.own_key {
            return Err(TransportError::OwnKey);
        }
        if self.by_key.contains_key(&neighbour.key) {
            return Err(TransportError::DuplicateNeighbour(neighbour.key));
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => self.slots.len(),
        };
        let id = TransportId(u16::try_from(slot).map_err(|_| TransportError::Full)?);
        let index = indexes.allocate();
        let tunnel = Tunn::new(
            self.secret.clone(),
            neighbour.key.to_x25519(),
            None,
            neighbour.keepalive,
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        let entry = Neighbour {
            key: neighbour.key,
            address: neighbour.key.mesh_address(),
            index,
            tunnel: Box::new(tunnel),
            endpoint: neighbour.endpoint.map(canonical),
            last_received: None,
            rtt: None,
            traffic: Traffic::default(),
        };
        match self.slots.get_mut(slot) {
            Some(free) => *free = Some(entry),
            None => self.slots.push(Some(entry)),
        }
        self.by_key.insert(neighbour.key, id);
        self.by_index.insert(index, id);
        log::debug!("transport {id}: neighbour {}", neighbour.key.short());
        Ok(id)
    }

    /// Removes the transport to `key`, giving its session index back to `indexes`.
    pub fn remove(&mut self, key: &NodeKey, indexes: &mut IndexAllocator) -> Option<TransportId> {
        let id = self.by_key.remove(key)?;
        let neighbour = self.slots.get_mut(usize::from(id.0))?.take()?;
        self.by_index.remove(&neighbour.index);
        indexes.release(neighbour.index);
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        log::debug!("transport {id}: neighbour {} removed", key.short());
        Some(id)
    }

    /// The transport to `key`.
    pub fn id_of(&self, key: &NodeKey) -> Option<TransportId> {
        self.by_key.get(key).copied()
    }

    /// The neighbour at the other end of `id`.
    pub fn key_of(&self, id: TransportId) -> Option<NodeKey> {
        self.neighbour(id).map(|neighbour| neighbour.key)
    }

    /// The mesh address of the neighbour at the other end of `id`.
    pub fn address_of(&self, id: TransportId) -> Option<Ipv6Addr> {
        self.neighbour(id).map(|neighbour| neighbour.address)
    }

    /// Where `id`'s datagrams go now.
    pub fn endpoint_of(&self, id: TransportId) -> Option<SocketAddr> {
        self.neighbour(id).and_then(|neighbour| neighbour.endpoint)
    }

    /// Sets `id`'s endpoint (a changed configuration); returns false if there is no such transport.
    /// It roams again as soon as the neighbour's authenticated packets come from elsewhere.
    pub fn set_endpoint(&mut self, id: TransportId, endpoint: SocketAddr) -> bool {
        match self.neighbour_mut(id) {
            Some(neighbour) => {
                neighbour.endpoint = Some(canonical(endpoint));
                true
            }
            None => false,
        }
    }

    /// The persistent keepalive of `id`'s session, in seconds.
    pub fn keepalive_of(&self, id: TransportId) -> Option<u16> {
        self.neighbour(id)
            .and_then(|neighbour| neighbour.tunnel.persistent_keepalive())
    }

    /// Sets `id`'s persistent keepalive (a changed configuration); returns false if there is
    /// no such transport. boringtun fixes it when a session is made, so a changed one makes
    /// the session anew under the same index: the next packet sent starts a handshake, and
    /// what the neighbour sends until it completes is lost.
    pub fn set_keepalive(&mut self, id: TransportId, keepalive: Option<u16>) -> bool {
        let secret = self.secret.clone();
        let rate_limiter = Arc::clone(&self.rate_limiter);
        let Some(neighbour) = self.neighbour_mut(id) else {
            return false;
        };
        if neighbour.tunnel.persistent_keepalive() != keepalive {
            *neighbour.tunnel = Tunn::new(
                secret,
                neighbour.key.to_x25519(),
                None,
                keepalive,
                neighbour.index,
                Some(rate_limiter),
            );
        }
        true
    }

    /// How many transports there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// A snapshot of every transport, in id order.
    pub fn info(&self) -> impl Iterator<Item = TransportInfo> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, entry)| {
            let neighbour = entry.as_ref()?;
            let id = TransportId(u16::try_from(slot).ok()?);
            let (last_handshake, ..) = neighbour.tunnel.stats();
            Some(TransportInfo {
                id,
                key: neighbour.key,
                endpoint: neighbour.endpoint,
                last_handshake,
                last_received: neighbour.last_received,
                rtt: neighbour.rtt,
                tx_bytes: neighbour.traffic.tx_bytes,
                rx_bytes: neighbour.traffic.rx_bytes,
                tx_packets: neighbour.traffic.tx_packets,
                rx_packets: neighbour.traffic.rx_packets,
            })
        })
    }

    /// Datagrams dropped so far, by reason.
    pub fn drops(&self) -> DropCounters {
        self.drops
    }

    /// Authenticates and decrypts one datagram. Returns the decrypted IPv6 packet (unchecked bytes,
    /// still to be validated by the caller) and the transport it came on. Handshake answers, cookie
    /// replies and packets boringtun had queued go into `outbox`. `buf` must be at least
    /// [`MAX_DATAGRAM`] bytes.
    pub fn receive<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        buf: &'b mut [u8],
        outbox: &mut Outbox,
    ) -> Option<(TransportId, &'b mut [u8])> {
        let from = canonical(from);
        // boringtun panics, before authenticating anything, when `buf` is shorter than the
        // datagram minus 16 bytes: check both sizes before it sees the datagram.
        if datagram.len() > MAX_DATAGRAM {
            return self.refuse(from, DropReason::Oversized);
        }
        debug_assert!(buf.len() >= MAX_DATAGRAM, "receive buffer too small");
        if buf.len() < MAX_DATAGRAM {
            return self.refuse(from, DropReason::Other);
        }
        if datagram.first() == Some(&SEALED_HEADER_TYPE) {
            return self.receive_sealed_header(now, from, datagram, buf, outbox);
        }
        let (id, kind) = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return self.refuse(from, DropReason::Malformed),
            Ok(Packet::HandshakeInit(_)) => {
                let id = self.initiator(from, datagram, outbox)?;
                (id, Kind::Handshake)
            }
            Ok(Packet::HandshakeResponse(response)) => (
                self.by_receiver(from, response.receiver_idx)?,
                Kind::Handshake,
            ),
            Ok(Packet::PacketCookieReply(cookie)) => {
                (self.by_receiver(from, cookie.receiver_idx)?, Kind::Cookie)
            }
            Ok(Packet::PacketData(data)) => {
                (self.by_receiver(from, data.receiver_idx)?, Kind::Data)
            }
        };
        let Some(neighbour) = self.neighbour_mut(id) else {
            return self.refuse(from, DropReason::UnknownIndex);
        };
        let reason = match neighbour.tunnel.decapsulate(Some(from.ip()), datagram, buf) {
            TunnResult::WriteToTunnelV6(packet, _) => {
                neighbour.authenticated(id, now, from, datagram.len());
                neighbour.flush(outbox);
                return Some((id, packet));
            }
            TunnResult::WriteToNetwork(answer) => {
                if answer.first() == Some(&COOKIE_REPLY_TYPE) && answer.len() == COOKIE_REPLY_LEN {
                    // The `Tunn`'s own rate check found us under load: the handshake was not
                    // processed, only answered with a cookie for the sender's address.
                    outbox.push_copy(from, answer);
                    DropReason::RateLimited
                } else {
                    // A completed handshake: our response to its initiation, or the keepalive
                    // that confirms its response. Either way it proved its key from `from`.
                    neighbour.authenticated(id, now, from, datagram.len());
                    neighbour.transmit_copy(outbox, answer);
                    neighbour.flush(outbox);
                    return None;
                }
            }
            TunnResult::Done => {
                match kind {
                    Kind::Data => {
                        // A keepalive.
                        neighbour.authenticated(id, now, from, datagram.len());
                        neighbour.flush(outbox);
                    }
                    // Accepted, but anyone who saw our initiation can forge one: no roaming.
                    Kind::Cookie => log::debug!("transport {id}: cookie reply from {from}"),
                    Kind::Handshake => {}
                }
                return None;
            }
            TunnResult::WriteToTunnelV4(..) => {
                neighbour.authenticated(id, now, from, datagram.len());
                DropReason::NotIpv6
            }
            TunnResult::Err(error) => {
                log::debug!("transport {id}: datagram from {from} refused: {error:?}");
                self.drops.count(DropReason::from(&error));
                return None;
            }
        };
        self.refuse(from, reason)
    }

    /// Encrypts one IPv6 mesh packet to a neighbour; if no session exists yet boringtun queues it
    /// and a handshake initiation is sent to the endpoint.
    pub fn send(
        &mut self,
        id: TransportId,
        packet: &[u8],
        outbox: &mut Outbox,
    ) -> Result<Sent, SendError> {
        let neighbour = self.neighbour_mut(id).ok_or(SendError::UnknownTransport)?;
        if packet.len() > MAX_MESH_PACKET {
            return Err(SendError::TooLarge);
        }
        if neighbour.endpoint.is_none() {
            return Err(SendError::NoEndpoint);
        }
        let packet =
            if MeshPacket::new_unchecked(packet).next_header_raw() == NextHeader::Session.as_u8() {
                match neighbour.send_sealed_header(packet, outbox) {
                    Ok(()) => return Ok(Sent::Now),
                    Err(packet) => packet,
                }
            } else {
                packet
            };
        let mut buffer = outbox.buffer();
        let sent = match neighbour.tunnel.encapsulate(packet, &mut buffer[..]) {
            TunnResult::WriteToNetwork(bytes) => {
                let len = bytes.len();
                // A data message carries the packet; anything else is the handshake
                // initiation that boringtun sends while it queues the packet.
                let sent = if bytes.first() == Some(&DATA_MESSAGE_TYPE) {
                    Sent::Now
                } else {
                    Sent::Queued
                };
                neighbour.transmit(outbox, buffer, len);
                sent
            }
            // Queued while a handshake is in progress.
            TunnResult::Done => {
                outbox.recycle_buffer(buffer);
                Sent::Queued
            }
            other => {
                log::debug!("transport {id}: encapsulate: {other:?}");
                outbox.recycle_buffer(buffer);
                Sent::Queued
            }
        };
        Ok(sent)
    }

    /// Drives boringtun's timers (call about every 250 ms: [`next_timer`](Transports::next_timer)
    /// says when) and resets the shared rate limiter each second.
    pub fn handle_timeout(&mut self, now: Instant, outbox: &mut Outbox) {
        // boringtun's limiter only resets once a second has passed by its own clock.
        self.rate_limiter.reset_count();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(neighbour) = entry.as_mut() else {
                continue;
            };
            let mut buffer = outbox.buffer();
            match neighbour.tunnel.update_timers(&mut buffer[..]) {
                TunnResult::WriteToNetwork(bytes) => {
                    let len = bytes.len();
                    neighbour.transmit(outbox, buffer, len);
                }
                // Expiry is reported on every tick until a new handshake: nothing to do or log.
                TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {
                    outbox.recycle_buffer(buffer)
                }
                other => {
                    log::debug!("transport t{slot}: timers: {other:?}");
                    outbox.recycle_buffer(buffer);
                }
            }
        }
        self.next_tick = Some(now + TIMER_TICK);
    }

    /// When [`handle_timeout`](Transports::handle_timeout) is next due; `None` until its first
    /// call, which is due at once.
    pub fn next_timer(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Records a round-trip time the node measured on `id`.
    pub fn record_rtt(&mut self, id: TransportId, rtt: Duration) {
        if let Some(neighbour) = self.neighbour_mut(id) {
            neighbour.rtt = Some(rtt);
        }
    }

    fn neighbour(&self, id: TransportId) -> Option<&Neighbour> {
        self.slots.get(usize::from(id.0))?.as_ref()
    }

    fn neighbour_mut(&mut self, id: TransportId) -> Option<&mut Neighbour> {
        self.slots.get_mut(usize::from(id.0))?.as_mut()
    }

    /// A datagram whose mesh header alone is sealed: the header is opened, checked to be a
    /// route-session message's, and put back in front of the rest in `buf`.
    fn receive_sealed_header<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        buf: &'b mut [u8],
        outbox: &mut Outbox,
    ) -> Option<(TransportId, &'b mut [u8])> {
        let (Some(sealed), Some(rest)) = (
            datagram.first_chunk::<SEALED_HEADER_LEN>(),
            datagram.get(SEALED_HEADER_LEN..),
        ) else {
            return self.refuse(from, DropReason::Malformed);
        };
        let mut message = *sealed;
        message[0] = DATA_MESSAGE_TYPE;
        let receiver_idx = match Tunn::parse_incoming_packet(&message) {
            Ok(Packet::PacketData(data)) => data.receiver_idx,
            _ => return self.refuse(from, DropReason::Malformed),
        };
        let id = self.by_receiver(from, receiver_idx)?;
        let Some(neighbour) = self.neighbour_mut(id) else {
            return self.refuse(from, DropReason::UnknownIndex);
        };
        let mut header = [0u8; HEADER_LEN];
        match neighbour.tunnel.decapsulate(Some(from.ip()), &message, buf) {
            TunnResult::WriteToTunnelV6(opened, _) if opened.len() == HEADER_LEN => {
                header.copy_from_slice(opened);
            }
            TunnResult::Err(error) => {
                log::debug!("transport {id}: sealed header from {from} refused: {error:?}");
                self.drops.count(DropReason::from(&error));
                return None;
            }
            _ => return self.refuse(from, DropReason::Malformed),
        }
        neighbour.authenticated(id, now, from, datagram.len());
        neighbour.flush(outbox);
        let sealed_header = MeshPacket::new_unchecked(&header[..]);
        let (Ok(payload_len), true) = (
            u16::try_from(rest.len()),
            sealed_header.next_header_raw() == NextHeader::Session.as_u8()
                && sealed_header.payload_len() == 0,
        ) else {
            return self.refuse(from, DropReason::Malformed);
        };
        let len = HEADER_LEN + rest.len();
        let packet = buf.get_mut(..len)?;
        packet[..HEADER_LEN].copy_from_slice(&header);
        packet[HEADER_LEN..].copy_from_slice(rest);
        MeshPacket::new_unchecked(&mut *packet).set_payload_len(payload_len);
        Some((id, packet))
    }

    /// Counts and logs a dropped datagram.
    fn refuse<T>(&mut self, from: SocketAddr, reason: DropReason) -> Option<T> {
        log::debug!("dropped datagram from {from}: {reason:?}");
        self.drops.count(reason);
        None
    }

    /// The transport a response, cookie reply or data message is addressed to.
    fn by_receiver(&mut self, from: SocketAddr, receiver_index: u32) -> Option<TransportId> {
        match self.by_index.get(&(receiver_index >> 8)) {
            Some(&id) => Some(id),
            None => self.refuse(from, DropReason::UnknownIndex),
        }
    }

    /// The transport whose neighbour sent this handshake initiation, if it is one: checks mac1
    /// and the handshake rate first, since finding the sender's key costs a Diffie-Hellman.
    fn initiator(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        outbox: &mut Outbox,
    ) -> Option<TransportId> {
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie)
        {
            Ok(packet) => packet,
            Err(TunnResult::WriteToNetwork(reply)) => {
                outbox.push_copy(from, reply);
                return self.refuse(from, DropReason::RateLimited);
            }
            Err(TunnResult::Err(error)) => return self.refuse(from, DropReason::from(&error)),
            Err(_) => return self.refuse(from, DropReason::Other),
        };
        let Packet::HandshakeInit(init) = packet else {
            return self.refuse(from, DropReason::Malformed);
        };
        let half = match parse_handshake_anon(&self.secret, &self.public, &init) {
            Ok(half) => half,
            Err(error) => return self.refuse(from, DropReason::from(&error)),
        };
        let key = NodeKey::from(half.peer_static_public);
        match self.by_key.get(&key) {
            Some(&id) => Some(id),
            None => {
                log::debug!(
                    "handshake from unknown key {} at {from} refused",
                    key.short()
                );
                self.drops.count(DropReason::UnknownKey);
                None
            }
        }
    }
}

/// What kind of message a datagram was, for what its outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Cookie,
    Data,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn mapped_ipv4_addresses_are_canonical() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().unwrap();
        let plain: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        assert_eq!(canonical(mapped), plain);
        let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn own_and_duplicate_keys_are_refused_and_slots_are_reused() {
        let secret = SecretKey::from([7u8; 32]);
        let mut transports = Transports::new(&secret);
        let mut indexes = IndexAllocator::default();
        let own = NeighbourConfig {
            key: secret.public(),
            endpoint: None,
            keepalive: None,
        };
        assert_eq!(
            transports.add(own, &mut indexes),
            Err(TransportError::OwnKey)
        );
        let config = |byte| NeighbourConfig {
            key: SecretKey::from([byte; 32]).public(),
            endpoint: Some("[::ffff:127.0.0.1]:9".parse().unwrap()),
            keepalive: None,
        };
        let a = transports.add(config(1), &mut indexes).unwrap();
        let b = transports.add(config(2), &mut indexes).unwrap();
        assert_eq!(
            transports.add(config(1), &mut indexes),
            Err(TransportError::DuplicateNeighbour(config(1).key))
        );
        assert_eq!(
            transports.endpoint_of(a),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(transports.remove(&config(1).key, &mut indexes), Some(a));
        assert_eq!(transports.key_of(a), None);
        let c = transports.add(config(3), &mut indexes).unwrap();
        assert_eq!(c, a);
        assert_eq!(transports.key_of(b), Some(config(2).key));
        assert_eq!(transports.len(), 2);
    }

    #[test]
    fn a_sealed_header_opens_only_as_a_route_session_message_header() {
        let (a_secret, b_secret) = (SecretKey::from([1u8; 32]), SecretKey::from([2u8; 32]));
        let (a_at, b_at): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        );
        let mut indexes = IndexAllocator::default();
        let (mut a, mut b) = (Transports::new(&a_secret), Transports::new(&b_secret));
        let neighbour = |secret: &SecretKey, endpoint| NeighbourConfig {
            key: secret.public(),
            endpoint: Some(endpoint),
            keepalive: None,
        };
        let b_at_a = a.add(neighbour(&b_secret, b_at), &mut indexes).unwrap();
        b.add(neighbour(&a_secret, a_at), &mut indexes).unwrap();
        let (mut a_out, mut b_out) = (Outbox::default(), Outbox::default());
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let now = Instant::now();
        // A control message (next header 253) with a payload, sent for a handshake's sake.
        let mut packet = vec![0x60, 0, 0, 0, 0, 8, 253, 64];
        packet.extend_from_slice(&[0xfd; 32]);
        packet.extend_from_slice(&[1; 8]);
        a.send(b_at_a, &packet, &mut a_out).unwrap();
        for _ in 0..4 {
            while let Some(datagram) = a_out.pop() {
                b.receive(now, a_at, datagram.bytes(), &mut buf, &mut b_out);
                a_out.recycle(datagram);
            }
            while let Some(datagram) = b_out.pop() {
                a.receive(now, b_at, datagram.bytes(), &mut buf, &mut a_out);
                b_out.recycle(datagram);
            }
        }
        // Headers sealed by hand, with the payload length 0 that a sealed header carries: a
        // route-session message's opens, a control message's is refused.
        let mut seal = |next_header: u8| {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&packet[..HEADER_LEN]);
            header[6] = next_header;
            MeshPacket::new_unchecked(&mut header[..]).set_payload_len(0);
            let tunnel = &mut a.neighbour_mut(b_at_a).unwrap().tunnel;
            let mut sealed = match tunnel.encapsulate(&header, &mut buf) {
                TunnResult::WriteToNetwork(message) => message.to_vec(),
                other => panic!("no session: {other:?}"),
            };
            assert_eq!(sealed.len(), SEALED_HEADER_LEN);
            sealed[0] = SEALED_HEADER_TYPE;
            sealed.extend_from_slice(&[1; 8]);
            sealed
        };
        let (session, control) = (seal(254), seal(253));
        let opened = b.receive(now, a_at, &session, &mut buf, &mut b_out);
        assert_eq!(opened.map(|(_, packet)| packet.len()), Some(HEADER_LEN + 8));
        let malformed = b.drops().malformed;
        assert!(b
            .receive(now, a_at, &control, &mut buf, &mut b_out)
            .is_none());
        assert_eq!(b.drops().malformed, malformed + 1);
    }

    #[test]
    fn send_checks_size_and_endpoint() {
        let mut transports = Transports::new(&SecretKey::from([7u8; 32]));
        let mut indexes = IndexAllocator::default();
        let mut outbox = Outbox::default();
        let id = transports
            .add(
                NeighbourConfig {
                    key: SecretKey::from([1u8; 32]).public(),
                    endpoint: None,
                    keepalive: None,
                },
                &mut indexes,
            )
            .unwrap();
        let big = vec![0u8; MAX_MESH_PACKET + 1];
        assert_eq!(
            transports.send(id, &big, &mut outbox),
            Err(SendError::TooLarge)
        );
        assert_eq!(
            transports.send(id, &[0u8; 60], &mut outbox),
            Err(SendError::NoEndpoint)
        );
        assert_eq!(
            transports.send(TransportId::new(9), &[0u8; 60], &mut outbox),
            Err(SendError::UnknownTransport)
        );
        assert!(outbox.is_empty());
    }
}
