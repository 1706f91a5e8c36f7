//! The node: transports, the routing table, link liveness, route setup and route sessions tied
//! into one sans-IO state machine. A driver (the mio loop, or the simulator) feeds it datagrams
//! and time, and drains datagrams, events and the next deadline.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use rand_core::RngCore;

use crate::identity::{NodeKey, SecretKey};
use crate::index::IndexAllocator;
use crate::outbox::{Datagram, Outbox, MAX_DATAGRAM};
use crate::routing::{Lookup, RoutingTable, Rule, TableLimits};
use crate::session::{classify, Destination, RouteSession, SessionResult};
use crate::transport::{NeighbourConfig, SendError, TransportError, TransportId, Transports};
use crate::wire::control::MAX_PATH_LEN;
use crate::wire::mesh::{relay_in_place, DEFAULT_HOP_LIMIT as HOP_LIMIT, HEADER_LEN};
use crate::wire::{
    ControlMessage, DownReason, MeshHeader, MeshPacket, NextHeader, RejectReason, RouteId,
};

mod lifecycle;
mod liveness;
mod runtime;
mod sessions;
mod setup;

pub use runtime::NodeSettings;

use setup::{check_path, rejection, SetupRequest};

/// The largest mesh packet: a 1500-byte underlay less IPv6 + UDP (48) and the hop's
/// WireGuard (32).
pub const MESH_MTU: u16 = 1420;
/// The largest packet an app sends through a route: the mesh MTU less the outer IPv6 header
/// (40) and the route session's WireGuard (32).
pub const INNER_MTU: usize = 1348;
/// What a route session adds to an inner packet.
const ROUTE_OVERHEAD: u16 = (HEADER_LEN + 32) as u16;
/// boringtun wants its timers driven about this often.
const WIREGUARD_TICK: Duration = Duration::from_millis(250);
/// How often the shared session rate limiter forgets its counts.
const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(1);
/// How long a route session outlives the last route to its peer, so that a rebuilt route needs
/// no new handshake. boringtun rejects a session's keys after 180 s anyway.
const SESSION_LINGER: Duration = Duration::from_secs(180);
/// Route sessions without a route kept at most: a neighbour that churns route setups with
/// made-up initiator keys must not make the node hoard sessions.
const MAX_LINGERING_SESSIONS: usize = 1024;
/// Handshakes per second the route sessions accept before asking for cookies.
const SESSION_HANDSHAKE_LIMIT: u64 = 100;

/// An identifier of one route setup, chosen at random by its initiator.
pub type SetupId = u64;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's private key.
    pub secret: SecretKey,
    /// The neighbours it holds transports with.
    pub neighbours: Vec<NeighbourConfig>,
    /// How often each link is probed.
    pub probe_interval: Duration,
    /// Silence after which a link is declared dead.
    pub dead_after: Duration,
    /// Routes one neighbour may hold through this node.
    pub max_routes_per_neighbour: usize,
    /// How long a rule lives without a refresh.
    pub rule_lifetime: Duration,
    /// How often the initiator of a route refreshes it.
    pub refresh_interval: Duration,
    /// How long each remaining hop may take to answer a route setup.
    pub setup_hop_timeout: Duration,
}

impl NodeOptions {
    /// Defaults for everything but the key.
    pub fn new(secret: SecretKey) -> NodeOptions {
        NodeOptions {
            secret,
            neighbours: Vec::new(),
            probe_interval: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
            max_routes_per_neighbour: 1024,
            rule_lifetime: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(10),
            setup_hop_timeout: Duration::from_secs(2),
        }
    }
}

/// Something the node tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A neighbour answered a liveness probe after silence (or for the first time).
    LinkUp {
        /// The neighbour.
        neighbour: NodeKey,
    },
    /// A neighbour has been silent for longer than `dead_after`.
    LinkDown {
        /// The neighbour.
        neighbour: NodeKey,
    },
    /// A route to `peer` is set up and its session's handshake is done: data can flow.
    RouteReady {
        /// The route's other end.
        peer: NodeKey,
    },
    /// A route setup this node started failed.
    RouteFailed {
        /// The setup that failed.
        setup: SetupId,
        /// Where it was going.
        peer: NodeKey,
        /// What happened, naming the hop.
        error: RouteError,
    },
    /// The active route to `peer` is gone.
    RouteDown {
        /// The route's other end.
        peer: NodeKey,
        /// Why.
        reason: RouteDownReason,
    },
    /// An IPv6 packet arrived from `peer`'s mesh address over its route session, addressed to
    /// this node's: for the mesh stack.
    Packet {
        /// The sender.
        peer: NodeKey,
        /// The packet.
        packet: Vec<u8>,
    },
    /// An IP packet arrived from `peer` over its route session, not addressed to this node's
    /// mesh address: for a tunnel app, which checks its source.
    TunnelPacket {
        /// The sender.
        peer: NodeKey,
        /// The packet.
        packet: Vec<u8>,
    },
}

/// Why a route went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDownReason {
    /// A link on the path died; `reporter` is the node that saw it.
    LinkDead {
        /// The node next to the dead link.
        reporter: NodeKey,
    },
    /// The route was not refreshed in time.
    Expired,
    /// An end tore it down.
    TornDown,
}

impl fmt::Display for RouteDownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteDownReason::LinkDead { reporter } => {
                write!(f, "a link on the path died (reported by {reporter})")
            }
            RouteDownReason::Expired => f.write_str("the route was not refreshed in time"),
            RouteDownReason::TornDown => f.write_str("torn down"),
        }
    }
}

/// Why a route could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is not this node followed by up to 15 other distinct nodes.
    #[error("bad path: {0}")]
    BadPath(&'static str),
    /// A hop refused the route or could not pass it on.
    #[error("{}", describe_rejection(*.hop_index, .hop, .next.as_ref(), *.reason))]
    Rejected {
        /// The position in the path of the hop that reported it (0 is this node).
        hop_index: u8,
        /// That hop's key.
        hop: NodeKey,
        /// The next hop in the path, when there is one.
        next: Option<NodeKey>,
        /// What happened.
        reason: RejectReason,
    },
}

fn describe_rejection(
    hop_index: u8,
    hop: &NodeKey,
    next: Option<&NodeKey>,
    reason: RejectReason,
) -> String {
    let at = format!("hop {hop_index} ({hop})");
    let next = |index: u8| match next {
        Some(key) => format!("hop {index} ({key})"),
        None => "the next hop".to_string(),
    };
    let next_index = hop_index.saturating_add(1);
    match reason {
        RejectReason::UnknownNextHop => {
            format!("{at} has no transport to {}", next(next_index))
        }
        RejectReason::NextHopUnreachable => {
            format!("{at} cannot reach {}: the link is down", next(next_index))
        }
        RejectReason::RouteLimit => format!("{at} refused the route: route limit reached"),
        RejectReason::MtuTooSmall { mtu } => format!(
            "{at} refused the route: the path carries only {mtu}-byte mesh packets, {} needed",
            INNER_MTU + usize::from(ROUTE_OVERHEAD)
        ),
        RejectReason::BadPath => format!("{at} refused the route: the path is inconsistent"),
        RejectReason::Timeout => format!("{at} got no answer from {}", next(next_index)),
    }
}

/// Why a packet could not be sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendToError {
    /// There is no route to the peer: build one first.
    #[error("no route to that node: build one first")]
    NoRoute,
    /// The packet is larger than the inner MTU.
    #[error("packet larger than the inner MTU of {INNER_MTU} bytes")]
    TooLarge,
}

/// Packets the node itself dropped (the transports count their own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeDrops {
    /// Decrypted but not a valid mesh packet.
    pub malformed: u64,
    /// Carried a route id with no rule.
    pub unknown_route: u64,
    /// Carried a route id whose rule expects another neighbour.
    pub wrong_ingress: u64,
    /// Hop limit exhausted.
    pub hop_limit: u64,
    /// A control message that did not parse or made no sense where it arrived.
    pub bad_control: u64,
    /// A route session refused the message.
    pub session: u64,
    /// A decrypted packet not from the peer's address to ours.
    pub source_check: u64,
    /// Could not be passed to the next neighbour.
    pub unsendable: u64,
}

/// A route this node is an end of.
#[derive(Debug, Clone)]
pub struct EndRoute {
    /// The setup that built it.
    pub setup: SetupId,
    /// The nodes it goes through, initiator first.
    pub path: Vec<NodeKey>,
    /// Whether this node built it.
    pub initiator: bool,
    /// The first hop out.
    pub transport: TransportId,
    /// The id stamped on everything sent to the peer.
    pub out_id: RouteId,
    /// The id packets from the peer arrive with.
    pub in_id: RouteId,
    /// Whether the session's handshake is done.
    pub ready: bool,
    next_refresh: Instant,
}

/// A setup this node started and waits on.
#[derive(Debug, Clone)]
struct PendingSetup {
    path: Vec<NodeKey>,
    transport: TransportId,
    in_id: RouteId,
    deadline: Instant,
}

/// A setup passing through this node, waiting on the next hop's answer.
#[derive(Debug, Clone, Copy)]
struct RelayedSetup {
    previous: TransportId,
    hop_index: u8,
    reverse_id: RouteId,
    deadline: Instant,
}

/// A link's liveness.
#[derive(Debug, Clone, Copy)]
struct Link {
    state: LinkState,
    probe: Option<(u64, Instant)>,
    next_probe: Instant,
}

/// What is known of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Never heard from.
    Unknown,
    /// Answering probes.
    Up,
    /// Silent for longer than `dead_after` after being up.
    Down,
}

/// The node's named deadlines; the next wake-up is the earliest.
#[derive(Debug, Clone, Copy)]
struct Timers {
    wireguard: Instant,
    rate_limit: Instant,
    liveness: Instant,
    routes: Instant,
}

/// A mesh node.
pub struct Node {
    key: NodeKey,
    address: Ipv6Addr,
    options: NodeOptions,
    rng: Box<dyn RngCore + Send>,
    indexes: IndexAllocator,
    transports: Transports,
    links: HashMap<TransportId, Link>,
    table: RoutingTable,
    routes: HashMap<NodeKey, EndRoute>,
    pending: HashMap<SetupId, PendingSetup>,
    relayed: HashMap<(TransportId, SetupId), RelayedSetup>,
    sessions: HashMap<NodeKey, RouteSession>,
    /// The peers of the sessions, by mesh address (entries whose session went are pruned by
    /// `retire_sessions`, and ignored until then).
    session_peers: HashMap<Ipv6Addr, NodeKey>,
    /// Sessions whose peer has no route, and since when.
    lingering: HashMap<NodeKey, Instant>,
    session_limiter: Arc<RateLimiter>,
    outbox: Outbox,
    events: VecDeque<Event>,
    timers: Timers,
    drops: NodeDrops,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    session_buf: Vec<u8>,
    tap: Option<Tap>,
}

/// A debugging tap: sees every decrypted mesh packet as it arrives, before anything else.
pub type Tap = Box<dyn FnMut(TransportId, &[u8]) + Send>;

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("key", &self.key).finish()
    }
}

impl Node {
    /// A node with the given options; `rng` draws route ids, setup ids and probe nonces.
    pub fn new(
        options: NodeOptions,
        now: Instant,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Node, TransportError> {
        let key = options.secret.public();
        let mut indexes = IndexAllocator::default();
        let mut transports = Transports::new(&options.secret);
        let mut links = HashMap::new();
        for neighbour in &options.neighbours {
            let id = transports.add(neighbour.clone(), &mut indexes)?;
            links.insert(id, Link::new(now));
        }
        Ok(Node {
            key,
            address: key.mesh_address(),
            table: RoutingTable::new(TableLimits {
                max_per_neighbour: options.max_routes_per_neighbour,
                rule_lifetime: options.rule_lifetime,
            }),
            session_limiter: Arc::new(RateLimiter::new(&key.to_x25519(), SESSION_HANDSHAKE_LIMIT)),
            timers: Timers {
                wireguard: now,
                rate_limit: now + RATE_LIMIT_WINDOW,
                liveness: now,
                routes: now,
            },
            options,
            rng,
            indexes,
            transports,
            links,
            routes: HashMap::new(),
            pending: HashMap::new(),
            relayed: HashMap::new(),
            sessions: HashMap::new(),
            session_peers: HashMap::new(),
            lingering: HashMap::new(),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            drops: NodeDrops::default(),
            rx_buf: vec![0; MAX_DATAGRAM],
            tx_buf: vec![0; MAX_DATAGRAM],
            session_buf: vec![0; MAX_DATAGRAM],
            tap: None,
        })
    }

    // ----- getters -----

    /// This node's public key.
    pub fn key(&self) -> NodeKey {
        self.key
    }

    /// This node's mesh address.
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// The transports.
    pub fn transports(&self) -> &Transports {
        &self.transports
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The routes this node is an end of, by peer.
    pub fn routes(&self) -> impl Iterator<Item = (&NodeKey, &EndRoute)> {
        self.routes.iter()
    }

    /// The node whose mesh address is `address`, among those this node holds a route session
    /// with: who sent a packet that a session delivered, or where the mesh stack's packet to
    /// `address` goes.
    pub fn peer_at(&self, address: Ipv6Addr) -> Option<NodeKey> {
        self.session_peers
            .get(&address)
            .filter(|peer| self.sessions.contains_key(peer))
            .copied()
    }

    /// How many route sessions the node holds (with a route, or lingering after one).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the link to `neighbour` is alive.
    pub fn is_link_alive(&self, neighbour: &NodeKey) -> bool {
        self.transports
            .id_of(neighbour)
            .and_then(|id| self.links.get(&id))
            .is_some_and(|link| link.state == LinkState::Up)
    }

    /// What is known of the link on `transport`: `up`, `down` or `unknown` (never heard from).
    pub fn link_state(&self, transport: TransportId) -> &'static str {
        match self.links.get(&transport).map(|link| link.state) {
            Some(LinkState::Up) => "up",
            Some(LinkState::Down) => "down",
            Some(LinkState::Unknown) | None => "unknown",
        }
    }

    /// Packets the node dropped, by reason.
    pub fn drops(&self) -> NodeDrops {
        self.drops
    }

    /// Installs a tap that sees every decrypted mesh packet (what this node learns of the
    /// traffic it carries).
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    // ----- input -----

    /// Handles one datagram from the UDP socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut buf = std::mem::take(&mut self.rx_buf);
        if let Some((ingress, packet)) =
            self.transports
                .receive(now, from, datagram, &mut buf, &mut self.outbox)
        {
            self.handle_mesh_packet(now, ingress, packet);
        }
        self.rx_buf = buf;
    }

    /// Runs whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.timers.wireguard {
            self.timers.wireguard = now + WIREGUARD_TICK;
            self.transports.handle_timeout(now, &mut self.outbox);
            self.drive_session_timers();
        }
        if now >= self.timers.rate_limit {
            self.timers.rate_limit = now + RATE_LIMIT_WINDOW;
            self.session_limiter.reset_count();
        }
        if now >= self.timers.liveness {
            self.check_links(now);
        }
        if now >= self.timers.routes {
            self.maintain_routes(now);
        }
    }

    // ----- output -----

    /// The next datagram to send. Give it back with [`Node::recycle`] once sent.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.outbox.pop()
    }

    /// Returns a sent datagram's buffer for reuse.
    pub fn recycle(&mut self, datagram: Datagram) {
        self.outbox.recycle(datagram);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must run next, and which timer that is.
    pub fn poll_timeout(&self) -> (Instant, &'static str) {
        let timers = [
            (self.timers.wireguard, "wireguard timers"),
            (self.timers.rate_limit, "rate limiter reset"),
            (self.timers.liveness, "link liveness"),
            (self.timers.routes, "route maintenance"),
        ];
        timers
            .into_iter()
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.timers.wireguard, "wireguard timers"))
    }

    // ----- commands -----

    /// Starts setting up a route along `path` (this node first, the destination last). The
    /// outcome arrives as [`Event::RouteReady`] or [`Event::RouteFailed`].
    pub fn build_route(&mut self, now: Instant, path: &[NodeKey]) -> Result<SetupId, RouteError> {
        check_path(path)?;
        if path.first() != Some(&self.key) {
            return Err(RouteError::BadPath("the path must start with this node"));
        }
        let (first, destination) = match (path.get(1), path.last()) {
            (Some(first), Some(destination)) => (*first, *destination),
            _ => return Err(RouteError::BadPath("a path needs at least two nodes")),
        };
        let reject = |reason| RouteError::Rejected {
            hop_index: 0,
            hop: path[0],
            next: Some(first),
            reason,
        };
        let transport = self
            .transports
            .id_of(&first)
            .ok_or_else(|| reject(RejectReason::UnknownNextHop))?;
        if self.link_is_dead(transport) {
            return Err(reject(RejectReason::NextHopUnreachable));
        }
        let in_id = self
            .table
            .allocate(
                now,
                self.rng.as_mut(),
                transport,
                Rule::Consume { peer: destination },
            )
            .map_err(|_| reject(RejectReason::RouteLimit))?;
        let setup = self.rng.next_u64();
        let request = ControlMessage::SetupRequest {
            setup_id: setup,
            hop_index: 1,
            mtu: MESH_MTU,
            reverse_id: in_id,
            path: path.to_vec(),
        };
        if self
            .send_control(transport, RouteId::CONTROL, first.mesh_address(), &request)
            .is_err()
        {
            self.table.remove(now, in_id);
            return Err(reject(RejectReason::NextHopUnreachable));
        }
        let hops = u32::try_from(path.len() - 1).unwrap_or(1);
        self.pending.insert(
            setup,
            PendingSetup {
                path: path.to_vec(),
                transport,
                in_id,
                deadline: now + self.options.setup_hop_timeout * hops,
            },
        );
        Ok(setup)
    }

    /// Tears down the route to `peer`, if there is one.
    pub fn remove_route(&mut self, now: Instant, peer: &NodeKey) -> bool {
        let Some(route) = self.routes.remove(peer) else {
            return false;
        };
        self.send_route_control(
            route.transport,
            route.out_id,
            peer.mesh_address(),
            &ControlMessage::Teardown,
        );
        self.table.remove(now, route.in_id);
        if let Some(session) = self.sessions.remove(peer) {
            self.indexes.release(session.index());
        }
        true
    }

    /// Sends an IP packet to `peer` through its route session.
    pub fn send_to(&mut self, peer: &NodeKey, packet: &[u8]) -> Result<(), SendToError> {
        if packet.len() > INNER_MTU {
            return Err(SendToError::TooLarge);
        }
        if !self.routes.contains_key(peer) {
            return Err(SendToError::NoRoute);
        }
        self.session_transmit(peer, |session, buf| session.encapsulate(packet, buf));
        Ok(())
    }

    // ----- the packet path -----

    fn handle_mesh_packet(&mut self, now: Instant, ingress: TransportId, packet: &mut [u8]) {
        if let Some(tap) = self.tap.as_mut() {
            tap(ingress, packet);
        }
        let Ok(mesh) = MeshPacket::new_checked(&*packet) else {
            self.drops.malformed += 1;
            return;
        };
        let id = mesh.route_id();
        let next_header = mesh.next_header();
        if id.is_control() {
            if next_header == NextHeader::Control {
                let src = mesh.src_addr();
                self.handle_neighbour_control(now, ingress, src, &packet[HEADER_LEN..]);
            } else {
                self.drops.bad_control += 1;
            }
            return;
        }
        match self.table.lookup(id, ingress, packet.len()) {
            Lookup::Forward { transport, next_id } => {
                if next_header == NextHeader::Control {
                    self.handle_route_control_in_transit(now, id, &packet[HEADER_LEN..]);
                }
                self.relay(transport, next_id, packet);
            }
            Lookup::Consume { peer } => match next_header {
                NextHeader::Session => {
                    self.handle_session_message(peer, &packet[HEADER_LEN..]);
                }
                NextHeader::Control => {
                    self.handle_route_control_at_end(now, peer, id, &packet[HEADER_LEN..]);
                }
            },
            Lookup::UnknownRoute => self.drops.unknown_route += 1,
            Lookup::WrongIngress => self.drops.wrong_ingress += 1,
        }
    }

    /// The relay hop: relabel in place and send on. Allocates nothing.
    fn relay(&mut self, transport: TransportId, next_id: RouteId, packet: &mut [u8]) {
        if relay_in_place(packet, next_id).is_err() {
            self.drops.hop_limit += 1;
            return;
        }
        if self
            .transports
            .send(transport, packet, &mut self.outbox)
            .is_err()
        {
            self.drops.unsendable += 1;
        }
    }

    // ----- neighbour control: liveness and route setup -----

    fn handle_neighbour_control(
        &mut self,
        now: Instant,
        ingress: TransportId,
        src: Ipv6Addr,
        payload: &[u8],
    ) {
        let Some(neighbour) = self.transports.key_of(ingress) else {
            return;
        };
        if src != neighbour.mesh_address() {
            self.drops.bad_control += 1;
            return;
        }
        let Ok(message) = ControlMessage::parse(payload) else {
            self.drops.bad_control += 1;
            return;
        };
        match message {
            ControlMessage::Probe { nonce } => {
                self.mark_alive(ingress, neighbour);
                let reply = ControlMessage::ProbeReply { nonce };
                let _ = self.send_control(ingress, RouteId::CONTROL, src, &reply);
            }
            ControlMessage::ProbeReply { nonce } => {
                let Some(link) = self.links.get_mut(&ingress) else {
                    return;
                };
                if let Some((expected, sent)) = link.probe {
                    if expected == nonce {
                        link.probe = None;
                        self.transports
                            .record_rtt(ingress, now.saturating_duration_since(sent));
                    }
                }
                self.mark_alive(ingress, neighbour);
            }
            ControlMessage::SetupRequest {
                setup_id,
                hop_index,
                mtu,
                reverse_id,
                path,
            } => self.handle_setup_request(
                now,
                ingress,
                neighbour,
                SetupRequest {
                    setup_id,
                    hop_index,
                    mtu,
                    reverse_id,
                    path,
                },
            ),
            ControlMessage::SetupAccept {
                setup_id,
                forward_id,
                mtu,
            } => self.handle_setup_accept(now, ingress, setup_id, forward_id, mtu),
            ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            } => self.handle_setup_reject(now, ingress, setup_id, hop_index, reason),
            ControlMessage::Refresh
            | ControlMessage::Teardown
            | ControlMessage::RouteDown { .. } => self.drops.bad_control += 1,
        }
    }

    // ----- sending control messages -----

    /// Sends a control message to a neighbour (route id 0) or along a route.
    fn send_control(
        &mut self,
        transport: TransportId,
        route_id: RouteId,
        dst: Ipv6Addr,
        message: &ControlMessage,
    ) -> Result<(), SendError> {
        let len = HEADER_LEN + message.buffer_len();
        let mut buf = std::mem::take(&mut self.tx_buf);
        let header = MeshHeader {
            route_id,
            next_header: NextHeader::Control,
            hop_limit: HOP_LIMIT,
            src: self.address,
            dst,
            payload_len: message.buffer_len(),
        };
        let result = match buf.get_mut(..len) {
            Some(packet) => {
                let emitted =
                    header.emit(packet).is_ok() && message.emit(&mut packet[HEADER_LEN..]).is_ok();
                if emitted {
                    self.transports.send(transport, packet, &mut self.outbox)
                } else {
                    Err(SendError::TooLarge)
                }
            }
            None => Err(SendError::TooLarge),
        };
        self.tx_buf = buf;
        result
    }

    fn send_route_control(
        &mut self,
        transport: TransportId,
        route_id: RouteId,
        dst: Ipv6Addr,
        message: &ControlMessage,
    ) {
        if self
            .send_control(transport, route_id, dst, message)
            .is_err()
        {
            self.drops.unsendable += 1;
        }
    }
}
