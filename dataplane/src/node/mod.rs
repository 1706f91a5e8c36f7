//! The node: transports, the routing table, link liveness, the topology, route setup and repair,
//! and route sessions tied into one sans-IO state machine. A driver (the mio loop, or the
//! simulator) feeds it datagrams and time, and drains datagrams, events and the next deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use rand_core::RngCore;

use crate::identity::{NodeKey, SecretKey};
use crate::index::IndexAllocator;
use crate::outbox::{Datagram, Outbox, OutboxStats, MAX_DATAGRAM};
use crate::routing::{Lookup, RoutingTable, Rule, TableLimits};
use crate::session::{classify, Destination, RouteSession, SessionResult};
use crate::topology::{AdvertDrop, AdvertDrops, KnownNode, PathChoice, Topology};
use crate::transport::{NeighbourConfig, SendError, Sent, TransportError, TransportId, Transports};
use crate::wire::advert::{Advert, AdvertLink, MAX_ADVERT_LEN};
use crate::wire::control::{ADVERT_TYPE, MAX_PATH_LEN};
use crate::wire::mesh::{relay_in_place, DEFAULT_HOP_LIMIT as HOP_LIMIT, HEADER_LEN};
use crate::wire::{
    ControlMessage, DownReason, MeshHeader, MeshPacket, NextHeader, RejectReason, RouteId,
};

mod adverts;
mod direct;
mod lifecycle;
mod liveness;
mod repair;
mod runtime;
mod sessions;
mod setup;

pub use repair::{RouteStatus, RouteWait};
pub use runtime::NodeSettings;

use setup::{check_path, rejection, SetupRequest};

/// The largest mesh packet: a 1500-byte underlay less IPv6 + UDP (48) and the hop's
/// WireGuard (32).
pub const MESH_MTU: u16 = 1420;
/// The largest packet an app sends through a route: the mesh MTU less the outer IPv6 header
/// (40) and the route session's WireGuard (32).
pub const INNER_MTU: usize = 1348;
// The largest advert, behind the control preamble, fits one mesh packet.
const _: () = assert!(HEADER_LEN + 2 + MAX_ADVERT_LEN <= MESH_MTU as usize);

/// What a route session adds to an inner packet.
const ROUTE_OVERHEAD: u16 = (HEADER_LEN + 32) as u16;
/// Buffers of delivered packets kept for reuse: a wake-up's worth.
const MAX_POOLED_PACKETS: usize = 1024;
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
/// How long a destination waits for proof that a new route comes from the node it names
/// before removing it, whatever its refreshes; the initiator gives up on it as long.
const PROOF_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an initiator repeats its proof (a keepalive) until the destination confirms, at
/// most: twice the round trip that the setup took, at least 100 ms.
const PROOF_RETRY: Duration = Duration::from_millis(500);
/// Keepalives an initiator sends as proof before it starts a new handshake instead (the
/// destination may have lost the session: a restart).
const PROOF_KEEPALIVES: u8 = 2;
/// Routes to this node that one peer may have awaiting proof; a newer one replaces the oldest.
const MAX_CANDIDATES_PER_PEER: usize = 4;
/// How long an initiator, while it knows no path, waits for one to appear before it reports
/// a broken route down (a node that was silent for a moment comes back, and its links with it).
const REPAIR_WAIT: Duration = Duration::from_secs(3);
/// How long the far end of a broken route waits for its initiator's repair: longer than
/// [`REPAIR_WAIT`], since it may learn of the break first and the repair's setup still has to
/// travel to it. A repaired route that reached it in time keeps it waiting for the route's proof.
const FAR_END_REPAIR_WAIT: Duration = Duration::from_secs(5);
/// New paths an initiator tries for one broken route before it reports the route down.
const REPAIR_ATTEMPTS: u8 = 3;
/// Times a hop sends a route setup request to the next hop before it only waits.
const SETUP_TRIES: u8 = 4;
/// How long a hop remembers its answer to a setup, to repeat it when the request comes again.
const ANSWER_MEMORY: Duration = Duration::from_secs(10);
/// Answers remembered at most.
const MAX_ANSWERS: usize = 16_384;
/// How long a node waits after a link change before advertising, so that changes coalesce.
const ADVERT_DELAY: Duration = Duration::from_millis(250);
/// The least time between two adverts of one node.
const ADVERT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// An advert's lifetime, in advert intervals: three can be lost before it expires.
const ADVERT_LIFETIME_INTERVALS: u32 = 4;
/// Reports of unknown route ids a node sends one neighbour per rate-limit window (a second), at
/// most: enough for the first packets of many forgotten routes, never more than the packets
/// that neighbour sent.
const UNKNOWN_ROUTE_REPORTS: u8 = 32;
/// Reports of unknown route ids a node takes from one neighbour per window: twice what an
/// honest one sends, since the two nodes' windows do not line up.
const UNKNOWN_ROUTE_REPORTS_TAKEN: u8 = 2 * UNKNOWN_ROUTE_REPORTS;

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
    /// Route rules that one neighbour's setups may hold on this node (a route relayed for it
    /// takes two, one that ends here one).
    pub max_routes_per_neighbour: usize,
    /// How long a rule lives without a refresh.
    pub rule_lifetime: Duration,
    /// How often the initiator of a route refreshes it.
    pub refresh_interval: Duration,
    /// How long each remaining hop may take to answer a route setup.
    pub setup_hop_timeout: Duration,
    /// How often the node advertises its links when nothing changes (a change is advertised
    /// within a second). Adverts live four intervals.
    pub advert_interval: Duration,
    /// The first advert sequence number: from the wall clock (milliseconds since the Unix
    /// epoch), so that a restarted node's adverts are newer than those it sent before. The
    /// node counts on from it with its own clock.
    pub advert_sequence_start: u64,
}

impl NodeOptions {
    /// Defaults for everything but the key.
    pub fn new(secret: SecretKey) -> NodeOptions {
        NodeOptions {
            secret,
            neighbours: Vec::new(),
            probe_interval: Duration::from_millis(250),
            dead_after: Duration::from_millis(750),
            max_routes_per_neighbour: 1024,
            rule_lifetime: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(10),
            setup_hop_timeout: Duration::from_secs(2),
            advert_interval: Duration::from_secs(60),
            advert_sequence_start: 0,
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
    /// A route to `peer` is set up and proven end to end (the initiator has heard from the
    /// destination over it, the destination has had the initiator's proof): data can flow.
    /// A repaired route is not announced again: it never went down.
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
    /// The route to `peer` is gone and not coming back by itself: it broke and could not be
    /// repaired (or was not this node's to repair), or an end tore it down.
    RouteDown {
        /// The route's other end.
        peer: NodeKey,
        /// Why.
        reason: RouteDownReason,
    },
    /// An IPv6 packet arrived from `peer`'s mesh address over its route, addressed to this
    /// node's: for the mesh stack. Give the buffer back with [`Node::recycle_packet`].
    Packet {
        /// The sender.
        peer: NodeKey,
        /// The packet.
        packet: Vec<u8>,
    },
    /// An IP packet arrived from `peer` over its route, not addressed to this node's mesh
    /// address: for a tunnel app, which checks its source. Give the buffer back with
    /// [`Node::recycle_packet`].
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
    /// The route broke and no other path to the node is known: every path is down, or the
    /// node has stopped advertising.
    NoPath,
    /// The node after `reporter` on the path no longer knows the route: it restarted.
    Forgotten {
        /// The node before the one that forgot on the path (this node, when the one that
        /// forgot is its neighbour on the route).
        reporter: NodeKey,
    },
}

impl fmt::Display for RouteDownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteDownReason::LinkDead { reporter } => {
                write!(f, "a link on the path died (reported by {reporter})")
            }
            RouteDownReason::Expired => f.write_str("the route was not refreshed in time"),
            RouteDownReason::TornDown => f.write_str("torn down"),
            RouteDownReason::NoPath => f.write_str(
                "the route broke and no other path to the node is known (its links are down, or it stopped advertising)",
            ),
            RouteDownReason::Forgotten { reporter } => write!(
                f,
                "the node after {reporter} on the path no longer knows the route (it restarted)"
            ),
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
    /// No path to the node is known: it has not advertised, or no live links lead there.
    #[error("no path to {0} is known: it has not advertised, or none of its links is up")]
    NoPath(NodeKey),
    /// The destination took the setup but never confirmed the route: its end of the route
    /// session did not answer.
    #[error("{0} did not confirm the route within {secs} s", secs = PROOF_TIMEOUT.as_secs())]
    Unconfirmed(NodeKey),
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
        RejectReason::Crossed => format!(
            "{at} is setting up a route to this node at the same moment, and its route wins"
        ),
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
    /// The route broke and is being rebuilt: the packet is dropped (TCP sends it again).
    #[error("the route to that node is being repaired")]
    Repairing,
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
    /// Longer than the route agreed on at setup.
    pub oversized: u64,
    /// An inner packet without a route session (next header 252) that did not come from the
    /// neighbour at the other end of a direct route: on a relayed route's rule, or with
    /// another outer source.
    pub direct_refused: u64,
    /// An inner packet without a route session on a rule that forwards: relays never pass
    /// those on.
    pub direct_in_transit: u64,
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
    /// Whether data can flow: the initiator has heard from the destination over it, the
    /// destination has had its proof.
    pub ready: bool,
    /// Whether this node chose the path and rebuilds the route over another when it breaks.
    pub automatic: bool,
    next_refresh: Instant,
    /// Whether [`Event::RouteReady`] is due when the route is confirmed (a command built it).
    announce: bool,
    /// The initiator's proof, until the destination confirms.
    proof: Option<Proof>,
}

impl EndRoute {
    /// Whether the route has no relays: its two ends are neighbours, and what it carries goes in
    /// their transport alone, without the route session.
    pub fn is_direct(&self) -> bool {
        self.path.len() == 2
    }
}

/// An initiator's proof that it built a route: keepalives, then a handshake.
#[derive(Debug, Clone, Copy)]
struct Proof {
    sent: u8,
    next: Instant,
    retry: Duration,
    deadline: Instant,
}

/// A route to this node awaiting proof that it comes from the node it names.
#[derive(Debug, Clone)]
struct Candidate {
    peer: NodeKey,
    route: EndRoute,
    deadline: Instant,
}

/// A setup this node started and waits on.
#[derive(Debug, Clone)]
struct PendingSetup {
    path: Vec<NodeKey>,
    transport: TransportId,
    in_id: RouteId,
    deadline: Instant,
    automatic: bool,
    /// A command asked for it (else it repairs a route).
    announce: bool,
    request: ControlMessage,
    tries: u8,
    next_try: Instant,
    started: Instant,
}

/// A setup passing through this node, waiting on the next hop's answer.
#[derive(Debug, Clone)]
struct RelayedSetup {
    previous: TransportId,
    hop_index: u8,
    reverse_id: RouteId,
    deadline: Instant,
    request: ControlMessage,
    tries: u8,
    next_try: Instant,
}

/// A setup this node gave way to the peer's crossing one; it succeeds when the peer's route
/// is adopted.
#[derive(Debug, Clone)]
struct Yielded {
    path: Vec<NodeKey>,
    deadline: Instant,
}

/// The last answer to a setup request, repeated when the request comes again.
#[derive(Debug, Clone)]
struct Answer {
    message: ControlMessage,
    until: Instant,
}

/// A broken route that its initiator (this node) is rebuilding.
#[derive(Debug, Clone, Copy)]
struct Repair {
    attempts: u8,
    reason: RouteDownReason,
    /// The setup of the attempt under way.
    setup: Option<SetupId>,
    /// Whether [`Event::RouteReady`] is due when the repair succeeds (a command waits on it).
    announce: bool,
    /// Whether the route broke because its far end forgot it (it restarted): its end of the
    /// route session is gone too, so the new route is proven with a new handshake at once.
    far_end_restarted: bool,
    /// When the route is reported down if no path to the peer is known by then.
    deadline: Instant,
    /// No path was known as of this version of the graph: the next attempt starts when it
    /// changes.
    awaiting_path: Option<u64>,
}

/// This node's adverts.
#[derive(Debug, Clone, Copy)]
struct Advertising {
    sequence: u64,
    started: Instant,
    next_periodic: Instant,
    triggered: Option<Instant>,
    last: Option<Instant>,
    sent: u64,
    sent_bytes: u64,
}

/// Adverts this node sent: its own and those it passed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvertCounters {
    /// Adverts sent to neighbours.
    pub sent: u64,
    /// Their bytes (control messages, without the mesh header and the transport's WireGuard).
    pub sent_bytes: u64,
}

/// A link's liveness, and what the neighbour and this node said of unknown route ids this
/// rate-limit window.
#[derive(Debug, Clone, Copy)]
struct Link {
    state: LinkState,
    probe: Option<Probe>,
    next_probe: Instant,
    /// Reports of unknown route ids sent to the neighbour.
    reports_sent: u8,
    /// Reports of unknown route ids taken from the neighbour.
    reports_taken: u8,
}

/// A liveness probe waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Probe {
    nonce: u64,
    sent: Instant,
    /// Whether it left at once: else it waited for a handshake, and its round trip says
    /// nothing of the link's.
    timed: bool,
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
    adverts: Instant,
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
    /// Every datagram that reached the UDP socket before this instant has been handled (`None`:
    /// as of now). See [`Node::set_input_read_until`].
    input_read_until: Option<Instant>,
    table: RoutingTable,
    routes: HashMap<NodeKey, EndRoute>,
    pending: HashMap<SetupId, PendingSetup>,
    relayed: HashMap<(TransportId, SetupId), RelayedSetup>,
    answers: HashMap<(TransportId, SetupId), Answer>,
    candidates: HashMap<RouteId, Candidate>,
    yielded: HashMap<SetupId, Yielded>,
    repairs: HashMap<NodeKey, Repair>,
    /// Routes to this node that broke, waiting for their initiator's repair until a deadline.
    awaiting_repair: HashMap<NodeKey, (Instant, RouteDownReason)>,
    topology: Topology,
    advertising: Advertising,
    /// The service entries this node advertises, as encoded (`Node::set_services`).
    offered: Vec<Vec<u8>>,
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
    /// Route setups this node started.
    setups_started: u64,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    session_buf: Vec<u8>,
    /// Buffers of delivered packets, given back by whoever took them.
    packet_pool: Vec<Vec<u8>>,
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
            links.insert(
                id,
                Link::new(now, &key, &neighbour.key, options.probe_interval),
            );
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
                adverts: now + ADVERT_DELAY,
            },
            topology: Topology::new(key),
            advertising: Advertising {
                sequence: options.advert_sequence_start,
                started: now,
                next_periodic: now + options.advert_interval,
                // The first advert follows the first link that comes up.
                triggered: None,
                last: None,
                sent: 0,
                sent_bytes: 0,
            },
            offered: Vec::new(),
            answers: HashMap::new(),
            candidates: HashMap::new(),
            yielded: HashMap::new(),
            repairs: HashMap::new(),
            awaiting_repair: HashMap::new(),
            options,
            rng,
            indexes,
            transports,
            links,
            input_read_until: None,
            routes: HashMap::new(),
            pending: HashMap::new(),
            relayed: HashMap::new(),
            sessions: HashMap::new(),
            session_peers: HashMap::new(),
            lingering: HashMap::new(),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            drops: NodeDrops::default(),
            setups_started: 0,
            rx_buf: vec![0; MAX_DATAGRAM],
            tx_buf: vec![0; MAX_DATAGRAM],
            session_buf: vec![0; MAX_DATAGRAM],
            packet_pool: Vec::new(),
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

    /// How many handshake initiations this node's route session with `peer` has sent, while
    /// it has one.
    pub fn session_initiations(&self, peer: &NodeKey) -> Option<u64> {
        self.sessions.get(peer).map(RouteSession::initiations)
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

    /// How full the queue of datagrams to send has been.
    pub fn outbox_stats(&self) -> OutboxStats {
        self.outbox.stats()
    }

    /// The lowest-cost path to `peer` over the links that are alive, and its cost (what
    /// `find_route` shows), without building it.
    pub fn find_route(&self, peer: &NodeKey) -> Option<PathChoice> {
        self.topology.path_to(&self.live_links(), peer)
    }

    /// The known graph (what `list_nodes` shows): every node that advertises, its links with
    /// their round-trip times and costs, and its advert's age.
    pub fn known_nodes(&self, now: Instant) -> Vec<KnownNode> {
        self.topology.nodes(now)
    }

    /// Adverts dropped, by reason.
    pub fn advert_drops(&self) -> AdvertDrops {
        self.topology.drops()
    }

    /// Adverts sent.
    pub fn advert_counters(&self) -> AdvertCounters {
        AdvertCounters {
            sent: self.advertising.sent,
            sent_bytes: self.advertising.sent_bytes,
        }
    }

    /// Route setups this node started: for its apps and commands, and its repairs' attempts.
    pub fn setups_started(&self) -> u64 {
        self.setups_started
    }

    /// The sequence number of the advert held for `origin`.
    pub fn advert_sequence_of(&self, origin: &NodeKey) -> Option<u64> {
        self.topology.advert(origin).map(|advert| advert.sequence)
    }

    /// The sequence number of this node's latest advert (0 before the first).
    pub fn advert_sequence(&self) -> u64 {
        self.topology
            .advert(&self.key)
            .map_or(0, |advert| advert.sequence)
    }

    /// Installs a tap that sees every decrypted mesh packet (what this node learns of the
    /// traffic it carries).
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    // ----- input -----

    /// Tells how far the UDP socket has been read: every datagram that reached it before `at`
    /// has been handled, and later ones may still wait there. A node that fell behind its
    /// socket (starved of CPU, or under a burst) would otherwise take a neighbour whose
    /// datagrams wait there for silent, and cut a live link (see `check_links`).
    pub fn set_input_read_until(&mut self, at: Instant) {
        self.input_read_until = Some(at);
    }

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
            for link in self.links.values_mut() {
                link.reports_sent = 0;
                link.reports_taken = 0;
            }
        }
        if now >= self.timers.liveness {
            self.check_links(now);
        }
        if now >= self.timers.routes {
            self.maintain_routes(now);
        }
        if now >= self.timers.adverts {
            self.maintain_adverts(now);
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

    /// Returns the buffer of a packet delivered in [`Event::Packet`] or
    /// [`Event::TunnelPacket`] for reuse, so that delivering packets allocates nothing.
    pub fn recycle_packet(&mut self, packet: Vec<u8>) {
        if self.packet_pool.len() < MAX_POOLED_PACKETS {
            self.packet_pool.push(packet);
        }
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
            (self.timers.adverts, "adverts"),
        ];
        timers
            .into_iter()
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.timers.wireguard, "wireguard timers"))
    }

    // ----- commands -----

    /// Starts setting up a route along `path` (this node first, the destination last). The
    /// outcome arrives as [`Event::RouteReady`] or [`Event::RouteFailed`]. The route keeps
    /// its path: when it breaks it is reported down.
    pub fn build_route(&mut self, now: Instant, path: &[NodeKey]) -> Result<SetupId, RouteError> {
        self.start_setup(now, path, false, true)
    }

    /// Starts setting up a route to `peer` over the lowest-cost path known. The outcome arrives
    /// as [`Event::RouteReady`] or [`Event::RouteFailed`]; a route to `peer` that exists
    /// already (built by either end) serves at once. When it breaks, the node rebuilds it over
    /// another path without a new handshake, and reports it down only when no path is left
    /// or none appears within [`REPAIR_WAIT`].
    pub fn build_route_to(&mut self, now: Instant, peer: &NodeKey) -> Result<SetupId, RouteError> {
        if *peer == self.key {
            return Err(RouteError::BadPath("a route needs another node"));
        }
        if let Some(repair) = self.repairs.get_mut(peer) {
            // Its next attempts announce their success too.
            repair.announce = true;
        }
        if let Some(route) = self.routes.get_mut(peer) {
            let setup = route.setup;
            if route.ready {
                self.events.push_back(Event::RouteReady { peer: *peer });
            } else {
                route.announce = true;
            }
            return Ok(setup);
        }
        if let Some((setup, pending)) = self
            .pending
            .iter_mut()
            .find(|(_, pending)| pending.path.last() == Some(peer))
        {
            pending.announce = true;
            return Ok(*setup);
        }
        if self.candidates.values().any(|c| c.peer == *peer) {
            // The peer is building a route to this node right now: it will serve both.
            let setup = self.rng.next_u64();
            self.yielded.insert(
                setup,
                Yielded {
                    path: vec![self.key, *peer],
                    deadline: now + PROOF_TIMEOUT,
                },
            );
            self.route_work_started(now);
            return Ok(setup);
        }
        let choice = self.find_route(peer).ok_or(RouteError::NoPath(*peer))?;
        self.start_setup(now, &choice.path, true, true)
    }

    /// Sends the first request of a route setup along `path`.
    fn start_setup(
        &mut self,
        now: Instant,
        path: &[NodeKey],
        automatic: bool,
        announce: bool,
    ) -> Result<SetupId, RouteError> {
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
                None,
                Rule::Consume {
                    peer: destination,
                    direct: path.len() == 2,
                },
                MESH_MTU,
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
        let next_try = now + self.setup_retry(transport);
        self.pending.insert(
            setup,
            PendingSetup {
                path: path.to_vec(),
                transport,
                in_id,
                deadline: now + self.options.setup_hop_timeout * hops,
                automatic,
                announce,
                request,
                tries: 1,
                next_try,
                started: now,
            },
        );
        self.setups_started += 1;
        self.route_work_started(now);
        Ok(setup)
    }

    /// Tears down the route to `peer`, if there is one. The route session stays for a while
    /// (it belongs to the peer, not the route), so that a new route needs no new handshake.
    pub fn remove_route(&mut self, now: Instant, peer: &NodeKey) -> bool {
        self.repairs.remove(peer);
        self.awaiting_repair.remove(peer);
        let Some(route) = self.routes.remove(peer) else {
            return false;
        };
        self.tear_down(now, peer, &route);
        true
    }

    /// Sends a control message to a neighbour as it is, on `route_id` (0 is the neighbour
    /// channel). A node sends its own messages through its other commands; this one lets
    /// tests and tools play a neighbour that misbehaves.
    pub fn send_control_to(
        &mut self,
        neighbour: &NodeKey,
        route_id: RouteId,
        message: &ControlMessage,
    ) -> Result<(), SendError> {
        let transport = self
            .transports
            .id_of(neighbour)
            .ok_or(SendError::UnknownTransport)?;
        self.send_control(transport, route_id, neighbour.mesh_address(), message)
            .map(|_| ())
    }

    /// Sends a mesh packet to a neighbour as it is. A node sends its own packets through its
    /// other commands; this one lets tests and tools play a neighbour that misbehaves.
    pub fn send_mesh_packet_to(
        &mut self,
        neighbour: &NodeKey,
        packet: &[u8],
    ) -> Result<Sent, SendError> {
        let transport = self
            .transports
            .id_of(neighbour)
            .ok_or(SendError::UnknownTransport)?;
        self.transports.send(transport, packet, &mut self.outbox)
    }

    /// Sends an IP packet to `peer`: over a relayed route through the route session, over a
    /// direct route as it is (the transport to `peer` encrypts it).
    pub fn send_to(&mut self, peer: &NodeKey, packet: &[u8]) -> Result<(), SendToError> {
        if packet.len() > INNER_MTU {
            return Err(SendToError::TooLarge);
        }
        let Some(route) = self.routes.get(peer) else {
            if self.repairs.contains_key(peer) || self.awaiting_repair.contains_key(peer) {
                return Err(SendToError::Repairing);
            }
            return Err(SendToError::NoRoute);
        };
        if route.is_direct() {
            let (transport, out_id) = (route.transport, route.out_id);
            self.send_direct(transport, out_id, packet);
        } else {
            self.session_transmit(peer, |session, buf| session.encapsulate(packet, buf));
        }
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
            Lookup::Forward { transport, next_id } => match next_header {
                NextHeader::Direct => self.drops.direct_in_transit += 1,
                NextHeader::Control => {
                    self.handle_route_control_in_transit(now, id, &packet[HEADER_LEN..]);
                    self.relay(transport, next_id, packet);
                }
                NextHeader::Session => self.relay(transport, next_id, packet),
            },
            Lookup::Consume { peer, direct } => match next_header {
                NextHeader::Session => {
                    self.handle_session_message(now, peer, id, &packet[HEADER_LEN..]);
                }
                NextHeader::Control => {
                    self.handle_route_control_at_end(now, peer, id, &packet[HEADER_LEN..]);
                }
                NextHeader::Direct => {
                    self.handle_direct_packet(now, ingress, id, peer, direct, packet);
                }
            },
            Lookup::UnknownRoute => {
                self.drops.unknown_route += 1;
                self.report_unknown_route(ingress, id);
            }
            Lookup::WrongIngress => self.drops.wrong_ingress += 1,
            Lookup::TooLarge => self.drops.oversized += 1,
        }
    }

    /// Hands an inner packet from `peer` (whose mesh address is `peer_address`) to whoever
    /// takes it, after the source check that boringtun and the transports leave to the end, in
    /// a buffer from the pool (nothing is allocated once the pool has grown).
    fn deliver(&mut self, peer: NodeKey, peer_address: Ipv6Addr, packet: &[u8]) {
        let tunnel = match classify(packet, peer_address, self.address) {
            Destination::MeshStack => false,
            Destination::Tunnel => true,
            Destination::Drop => {
                self.drops.source_check += 1;
                return;
            }
        };
        let mut buffer = self
            .packet_pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_DATAGRAM));
        buffer.clear();
        buffer.extend_from_slice(packet);
        self.events.push_back(if tunnel {
            Event::TunnelPacket {
                peer,
                packet: buffer,
            }
        } else {
            Event::Packet {
                peer,
                packet: buffer,
            }
        });
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
        let (Some(neighbour), Some(address)) = (
            self.transports.key_of(ingress),
            self.transports.address_of(ingress),
        ) else {
            return;
        };
        if src != address {
            self.drops.bad_control += 1;
            return;
        }
        if let Some((origin, sequence)) = payload
            .get(2..)
            .filter(|_| payload.get(1) == Some(&ADVERT_TYPE))
            .and_then(Advert::peek)
        {
            if origin != self.key && self.topology.drop_if_known(&origin, sequence) {
                return;
            }
        }
        let message = match ControlMessage::parse(payload) {
            Ok(message) => message,
            Err(_) if payload.get(1) == Some(&ADVERT_TYPE) => {
                let reason = if payload.len() > 2 + MAX_ADVERT_LEN {
                    AdvertDrop::Oversized
                } else {
                    AdvertDrop::Malformed
                };
                self.topology.count_drop(reason);
                return;
            }
            Err(_) => {
                self.drops.bad_control += 1;
                return;
            }
        };
        match message {
            ControlMessage::Probe { nonce } => {
                self.mark_alive(now, ingress, neighbour);
                let reply = ControlMessage::ProbeReply { nonce };
                let _ = self.send_control(ingress, RouteId::CONTROL, src, &reply);
            }
            ControlMessage::ProbeReply { nonce } => {
                let Some(link) = self.links.get_mut(&ingress) else {
                    return;
                };
                if let Some(probe) = link.probe.filter(|probe| probe.nonce == nonce) {
                    link.probe = None;
                    if probe.timed {
                        let first = self
                            .transports
                            .info()
                            .any(|info| info.id == ingress && info.rtt.is_none());
                        self.transports
                            .record_rtt(ingress, now.saturating_duration_since(probe.sent));
                        if first {
                            // The link can be advertised now that it has a cost.
                            self.schedule_advert(now);
                        }
                    } else {
                        // This probe waited for the handshake: measure again at once.
                        link.next_probe = now;
                        self.timers.liveness = now;
                    }
                }
                self.mark_alive(now, ingress, neighbour);
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
            ControlMessage::Advert(advert) => self.handle_advert(now, ingress, neighbour, advert),
            ControlMessage::UnknownRoute { route_id } => {
                self.handle_unknown_route(now, ingress, route_id);
            }
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
    ) -> Result<Sent, SendError> {
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
