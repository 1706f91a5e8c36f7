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
use crate::session::{is_from_peer_to_us, RouteSession, SessionResult};
use crate::transport::{NeighbourConfig, SendError, TransportError, TransportId, Transports};
use crate::wire::control::MAX_PATH_LEN;
use crate::wire::mesh::{relay_in_place, DEFAULT_HOP_LIMIT as HOP_LIMIT, HEADER_LEN};
use crate::wire::{
    ControlMessage, DownReason, MeshHeader, MeshPacket, NextHeader, RejectReason, RouteId,
};

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
    /// An IPv6 packet arrived from `peer` over its route session, addressed to this node.
    Packet {
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

    fn handle_setup_request(
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

    fn accept_route_as_destination(
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

    fn handle_setup_accept(
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

    fn handle_setup_reject(
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

    fn fail_setup(&mut self, setup: SetupId, path: &[NodeKey], error: RouteError) {
        if let Some(peer) = path.last().copied() {
            log::info!("route to {peer} failed: {error}");
            self.events
                .push_back(Event::RouteFailed { setup, peer, error });
        }
    }

    // ----- route control: refresh, teardown, route down -----

    fn handle_route_control_in_transit(&mut self, now: Instant, id: RouteId, payload: &[u8]) {
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

    fn handle_route_control_at_end(
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
                if is_current {
                    self.routes.remove(&peer);
                    self.events.push_back(Event::RouteDown {
                        peer,
                        reason: RouteDownReason::TornDown,
                    });
                }
            }
            Ok(ControlMessage::RouteDown { reporter, reason }) => {
                self.table.remove(now, id);
                let reason = match reason {
                    DownReason::LinkDead => RouteDownReason::LinkDead { reporter },
                    DownReason::Expired => RouteDownReason::Expired,
                };
                if is_current {
                    self.routes.remove(&peer);
                    self.events.push_back(Event::RouteDown { peer, reason });
                }
                self.fail_pending_with_in_id(id, reporter);
            }
            _ => self.drops.bad_control += 1,
        }
    }

    /// A route down that reached a setup still waiting for its answer.
    fn fail_pending_with_in_id(&mut self, id: RouteId, reporter: NodeKey) {
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
            self.fail_setup(setup, &pending.path, error);
        }
    }

    // ----- route sessions -----

    fn ensure_session(&mut self, peer: NodeKey) {
        if !self.sessions.contains_key(&peer) {
            let index = self.indexes.allocate();
            let session = RouteSession::new(
                &self.options.secret,
                peer,
                index,
                self.session_limiter.clone(),
            );
            self.sessions.insert(peer, session);
        }
    }

    fn handle_session_message(&mut self, peer: NodeKey, message: &[u8]) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            self.drops.session += 1;
            return;
        };
        let mut buf = std::mem::take(&mut self.session_buf);
        let result = session.decapsulate(message, &mut buf[HEADER_LEN..]);
        match result {
            SessionResult::Send(len) => self.transmit_session_message(&peer, &mut buf, len),
            SessionResult::DeliverV6(len) => {
                let packet = &buf[HEADER_LEN..HEADER_LEN + len];
                if is_from_peer_to_us(packet, peer.mesh_address(), self.address) {
                    self.events.push_back(Event::Packet {
                        peer,
                        packet: packet.to_vec(),
                    });
                } else {
                    self.drops.source_check += 1;
                }
            }
            SessionResult::DeliverV4(_) => self.drops.source_check += 1,
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

    fn check_ready(&mut self, peer: &NodeKey) {
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
    fn session_transmit(
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
    fn transmit_session_message(&mut self, peer: &NodeKey, buf: &mut [u8], len: usize) {
        let Some(route) = self.routes.get(peer) else {
            self.drops.unsendable += 1;
            return;
        };
        let header = MeshHeader {
            route_id: route.out_id,
            next_header: NextHeader::Session,
            hop_limit: HOP_LIMIT,
            src: self.address,
            dst: peer.mesh_address(),
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

    fn drive_session_timers(&mut self) {
        let peers: Vec<NodeKey> = self.sessions.keys().copied().collect();
        for peer in peers {
            if self.routes.contains_key(&peer) {
                while self.session_transmit(&peer, RouteSession::update_timers) {}
            }
        }
    }

    // ----- liveness -----

    /// Whether a link went silent after it had been up. A link never heard from is not dead:
    /// the first packet sent over it starts the handshake.
    fn link_is_dead(&self, transport: TransportId) -> bool {
        self.links
            .get(&transport)
            .is_some_and(|link| link.state == LinkState::Down)
    }

    fn mark_alive(&mut self, transport: TransportId, neighbour: NodeKey) {
        if let Some(link) = self.links.get_mut(&transport) {
            if link.state != LinkState::Up {
                link.state = LinkState::Up;
                log::info!("link to {neighbour} is up");
                self.events.push_back(Event::LinkUp { neighbour });
            }
        }
    }

    fn check_links(&mut self, now: Instant) {
        let interval = self.options.probe_interval;
        let dead_after = self.options.dead_after;
        let mut died = Vec::new();
        let mut due = Vec::new();
        for info in self.transports.info() {
            let Some(link) = self.links.get_mut(&info.id) else {
                continue;
            };
            let silent = info
                .last_received
                .map_or(dead_after, |at| now.saturating_duration_since(at));
            if link.state == LinkState::Up && silent >= dead_after {
                link.state = LinkState::Down;
                died.push((info.id, info.key));
            }
            if now >= link.next_probe && info.endpoint.is_some() {
                link.next_probe = now + interval;
                due.push((info.id, info.key));
            }
        }
        for (transport, key) in due {
            let nonce = self.rng.next_u64();
            if let Some(link) = self.links.get_mut(&transport) {
                link.probe = Some((nonce, now));
            }
            let probe = ControlMessage::Probe { nonce };
            let _ = self.send_control(transport, RouteId::CONTROL, key.mesh_address(), &probe);
        }
        for (transport, key) in died {
            log::warn!("link to {key} is dead: silent for {dead_after:?}");
            self.events.push_back(Event::LinkDown { neighbour: key });
            self.routes_over_dead_link(now, transport);
        }
        let next = self
            .links
            .values()
            .map(|link| link.next_probe)
            .min()
            .unwrap_or(now + interval);
        self.timers.liveness = next
            .min(now + interval / 4)
            .max(now + Duration::from_millis(10));
    }

    /// Removes every rule through a dead link and tells each route's end that can still be
    /// reached.
    fn routes_over_dead_link(&mut self, now: Instant, dead: TransportId) {
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
                Rule::Consume { peer } => {
                    if self.routes.get(&peer).is_some_and(|r| r.in_id == id) {
                        self.routes.remove(&peer);
                        self.events.push_back(Event::RouteDown {
                            peer,
                            reason: RouteDownReason::LinkDead { reporter: self.key },
                        });
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
                let error = rejection(&pending.path, 0, RejectReason::NextHopUnreachable);
                self.fail_setup(setup, &pending.path, error);
            }
        }
    }

    // ----- route maintenance: refresh, expiry, setup timeouts -----

    fn maintain_routes(&mut self, now: Instant) {
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
            if let Rule::Consume { peer } = entry.rule {
                if self.routes.get(&peer).is_some_and(|r| r.in_id == id) {
                    self.routes.remove(&peer);
                    self.events.push_back(Event::RouteDown {
                        peer,
                        reason: RouteDownReason::Expired,
                    });
                }
            }
        }

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
            if let Some(previous) = self.transports.key_of(relayed.previous) {
                let reject = ControlMessage::SetupReject {
                    setup_id: key.1,
                    hop_index: relayed.hop_index,
                    reason: RejectReason::Timeout,
                };
                let _ = self.send_control(
                    relayed.previous,
                    RouteId::CONTROL,
                    previous.mesh_address(),
                    &reject,
                );
            }
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
                self.fail_setup(setup, &pending.path, error);
            }
        }
        self.timers.routes = now + Duration::from_millis(100);
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

/// A route setup request's fields.
struct SetupRequest {
    setup_id: SetupId,
    hop_index: u8,
    mtu: u16,
    reverse_id: RouteId,
    path: Vec<NodeKey>,
}

impl Link {
    fn new(now: Instant) -> Link {
        Link {
            state: LinkState::Unknown,
            probe: None,
            next_probe: now,
        }
    }
}

fn check_path(path: &[NodeKey]) -> Result<(), RouteError> {
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

fn rejection(path: &[NodeKey], hop_index: u8, reason: RejectReason) -> RouteError {
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
