//! A node's datagram path, end to end: what its two neighbours send it through their
//! transports, into liveness, the adverts and the topology, route setup (with its
//! retransmissions and remembered answers), relaying, route control, and route sessions whose
//! proof adopts a route, and direct routes whose inner packets travel in the transport alone
//! (next header 252). The harness plays the neighbours as real ones behave where the input
//! cannot (answering probes, holding their end of a route session); the rest is the input's.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use skywire_dataplane::index::IndexAllocator;
use skywire_dataplane::node::{Event, Node, NodeOptions};
use skywire_dataplane::outbox::Outbox;
use skywire_dataplane::session::{RouteSession, SessionResult};
use skywire_dataplane::sim::SplitMix;
use skywire_dataplane::wire::advert::AdvertLink;
use skywire_dataplane::wire::{ControlMessage, DownReason, MeshPacket, NextHeader};
use skywire_dataplane::{
    NeighbourConfig, NodeKey, RouteId, SecretKey, TransportId, Transports, MAX_DATAGRAM,
};

use crate::mesh::{carrying, control_packet, route, setup_request};
use crate::{advert, key, records, Seed, NEXT_SECRET, NODE_SECRET, PEER_SECRET};

/// Neighbour 0 (the peer) or 1 (the next) seals the record as a mesh packet in its transport.
const SEAL: u8 = 0;
/// A raw datagram from the peer's address.
const RAW: u8 = 2;
/// As many milliseconds as the record's first two bytes say pass with the neighbours
/// answering as they do: the clock steps from one of the node's deadlines to the next.
const WAIT: u8 = 3;
/// Neighbour 0 or 1 sends the record as an IP packet through its route session with the node,
/// over the newest route between them.
const SESSION: u8 = 4;
/// The node is told to build a route to the peer, the next or the far node behind the peer
/// (`byte & 3`: 0, 1, else 2), along the path of it alone, or, when `byte & 4`, over the path
/// it chooses itself.
const BUILD: u8 = 6;
/// The neighbours fall silent for as many milliseconds as the record's first two bytes say:
/// the clock jumps, the node's timers run (its links die when the silence is long enough), and
/// the neighbours answer what the node then sends.
const SILENCE: u8 = 7;
/// Neighbour 0 or 1 sends the record as the inner packet of a direct route (next header 252)
/// over the newest route between them.
const DIRECT: u8 = 8;
/// Record kinds are read modulo this.
const KINDS: u8 = 10;

/// The shortest step of the clock while time passes, so that it always moves on.
const MIN_STEP: Duration = Duration::from_millis(1);
/// How much time one input may let pass with the clock stepping through the node's deadlines
/// (each 65 s costs a few milliseconds); [`WAIT`]s beyond it jump as a [`SILENCE`] does, so
/// that no input runs long.
const STEPPED_TIME: Duration = Duration::from_secs(600);

const NODE_ENDPOINT: SocketAddr = endpoint(7001);

const fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The node's datagram path, fed records (see [`records`]; the kinds are the constants of
/// this module). Accepted when a record reached the node and it counted no drop for it.
pub fn node_datagram(data: &[u8]) -> bool {
    let mut mesh = Neighbourhood::new();
    let mut accepted = false;
    for (kind, bytes) in records::split(data) {
        accepted |= mesh.apply(kind, bytes);
    }
    accepted
}

/// The node under test and the far ends of its transports to two neighbours.
struct Neighbourhood {
    node: Node,
    neighbours: [Neighbour; 2],
    now: Instant,
    /// The time [`WAIT`]s let pass so far.
    waited: Duration,
    buf: Vec<u8>,
    /// What the node told its driver.
    events: Vec<Event>,
}

/// A neighbour's end of its transport to the node, and of its route session with it.
struct Neighbour {
    secret: SecretKey,
    key: NodeKey,
    transports: Transports,
    to_node: TransportId,
    endpoint: SocketAddr,
    outbox: Outbox,
    /// Mesh packets the node sent this neighbour, decrypted.
    received: Vec<Vec<u8>>,
    /// Made when first used: most inputs never need one.
    session: Option<RouteSession>,
    /// Routes between this neighbour and the node, oldest first.
    routes: Vec<SessionRoute>,
    /// Setups this neighbour asked the node for: the route id it gave for the way back.
    asked: HashMap<u64, RouteId>,
    /// Setups the node asked this neighbour for: the route id the node gave for the way back.
    asked_by_node: HashMap<u64, RouteId>,
}

/// A route between a neighbour and the node, as the neighbour knows it.
#[derive(Debug, Clone, Copy)]
struct SessionRoute {
    /// What the node stamps on what it sends the neighbour.
    to_neighbour: RouteId,
    /// What the neighbour stamps on what it sends the node.
    to_node: RouteId,
    /// The node built it: the neighbour answers its keepalives (the proof) with one.
    node_built: bool,
}

fn config(secret: [u8; 32], endpoint: SocketAddr) -> NeighbourConfig {
    NeighbourConfig {
        key: key(secret),
        endpoint: Some(endpoint),
        keepalive: None,
    }
}

impl Neighbour {
    fn new(secret: [u8; 32], endpoint: SocketAddr) -> Neighbour {
        let key = key(secret);
        let secret = SecretKey::from(secret);
        let mut transports = Transports::new(&secret);
        let to_node = transports
            .add(
                config(NODE_SECRET, NODE_ENDPOINT),
                &mut IndexAllocator::default(),
            )
            .expect("the node is another key");
        Neighbour {
            secret,
            key,
            transports,
            to_node,
            endpoint,
            outbox: Outbox::default(),
            received: Vec::new(),
            session: None,
            routes: Vec::new(),
            asked: HashMap::new(),
            asked_by_node: HashMap::new(),
        }
    }

    fn key(&self) -> NodeKey {
        self.key
    }

    /// Seals a mesh packet for the node; true when the transport took it. A route setup in it
    /// is noted, so that the neighbour knows the routes it makes.
    fn seal(&mut self, packet: &[u8]) -> bool {
        if let Some(message) = control_message_in(packet) {
            match message {
                ControlMessage::SetupRequest {
                    setup_id,
                    reverse_id,
                    path,
                    ..
                } if path.last() == Some(&key(NODE_SECRET)) => {
                    self.asked.insert(setup_id, reverse_id);
                }
                ControlMessage::SetupAccept {
                    setup_id,
                    forward_id,
                    ..
                } => {
                    if let Some(to_node) = self.asked_by_node.remove(&setup_id) {
                        self.routes.push(SessionRoute {
                            to_neighbour: forward_id,
                            to_node,
                            node_built: true,
                        });
                    }
                }
                _ => {}
            }
        }
        self.transports
            .send(self.to_node, packet, &mut self.outbox)
            .is_ok()
    }

    /// Takes a mesh packet the node sent, as a neighbour does: answers a probe, notes a route
    /// setup, and hands a session message to its end of the route session.
    fn take(&mut self, packet: &[u8]) {
        self.received.push(packet.to_vec());
        let Ok(mesh) = MeshPacket::new_checked(packet) else {
            return;
        };
        let id = mesh.route_id();
        if mesh.next_header() == NextHeader::Session {
            self.take_session_message(id, mesh.payload());
            return;
        }
        let Some(message) = control_message_in(packet) else {
            return;
        };
        let node = key(NODE_SECRET);
        match message {
            ControlMessage::Probe { nonce } if id.is_control() => {
                let reply = ControlMessage::ProbeReply { nonce };
                self.seal(&control_packet(RouteId::CONTROL, self.key(), node, &reply));
            }
            ControlMessage::SetupRequest {
                setup_id,
                reverse_id,
                path,
                ..
            } if path.last() == Some(&self.key()) => {
                self.asked_by_node.insert(setup_id, reverse_id);
            }
            ControlMessage::SetupAccept {
                setup_id,
                forward_id,
                ..
            } => {
                if let Some(to_neighbour) = self.asked.remove(&setup_id) {
                    self.routes.push(SessionRoute {
                        to_neighbour,
                        to_node: forward_id,
                        node_built: false,
                    });
                }
            }
            _ => {}
        }
    }

    fn take_session_message(&mut self, id: RouteId, message: &[u8]) {
        let Some(route) = self
            .routes
            .iter()
            .rev()
            .find(|route| route.to_neighbour == id)
            .copied()
        else {
            return;
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let result = self.session().decapsulate(message, &mut buf);
        match result {
            SessionResult::Send(len) => {
                self.send_session_message(route, &buf[..len]);
            }
            SessionResult::Keepalive if route.node_built => {
                if let SessionResult::Send(len) = self.session().encapsulate(&[], &mut buf) {
                    self.send_session_message(route, &buf[..len]);
                }
            }
            _ => {}
        }
        // What waited for the handshake.
        while let SessionResult::Send(len) = self.session().flush(&mut buf) {
            self.send_session_message(route, &buf[..len]);
        }
    }

    /// Sends `packet` as the inner packet of a direct route over the newest route, as an end
    /// of a direct route sends what it carries; true when it went.
    fn send_direct(&mut self, packet: &[u8]) -> bool {
        let Some(route) = self.routes.last().copied() else {
            return false;
        };
        let mesh = carrying(
            NextHeader::Direct,
            route.to_node,
            self.key(),
            key(NODE_SECRET),
            packet,
        );
        self.seal(&mesh)
    }

    /// Sends `packet` through the route session over the newest route; true when it went.
    fn send_in_session(&mut self, packet: &[u8]) -> bool {
        let Some(route) = self.routes.last().copied() else {
            return false;
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match self.session().encapsulate(packet, &mut buf) {
            SessionResult::Send(len) => self.send_session_message(route, &buf[..len]),
            _ => false,
        }
    }

    fn send_session_message(&mut self, route: SessionRoute, message: &[u8]) -> bool {
        let packet = carrying(
            NextHeader::Session,
            route.to_node,
            self.key(),
            key(NODE_SECRET),
            message,
        );
        self.seal(&packet)
    }

    fn session(&mut self) -> &mut RouteSession {
        let (secret, own) = (&self.secret, self.key);
        self.session.get_or_insert_with(|| {
            let limiter = RateLimiter::new(&own.to_x25519(), 100);
            RouteSession::new(secret, key(NODE_SECRET), 1, Arc::new(limiter))
        })
    }
}

/// The control message a mesh packet carries, if it is one.
fn control_message_in(packet: &[u8]) -> Option<ControlMessage> {
    let mesh = MeshPacket::new_checked(packet).ok()?;
    if mesh.next_header() != NextHeader::Control {
        return None;
    }
    ControlMessage::parse(mesh.payload()).ok()
}

impl Neighbourhood {
    /// The node with both links up: its first probes (which it spreads over a probe interval)
    /// went out and were answered.
    fn new() -> Neighbourhood {
        let now = Instant::now();
        let neighbours = [
            Neighbour::new(PEER_SECRET, endpoint(7002)),
            Neighbour::new(NEXT_SECRET, endpoint(7003)),
        ];
        let mut options = NodeOptions::new(SecretKey::from(NODE_SECRET));
        options.neighbours = vec![
            config(PEER_SECRET, neighbours[0].endpoint),
            config(NEXT_SECRET, neighbours[1].endpoint),
        ];
        let probe_interval = options.probe_interval;
        let node = Node::new(options, now, Box::new(SplitMix(1))).expect("two neighbours");
        let mut mesh = Neighbourhood {
            node,
            neighbours,
            now,
            waited: Duration::ZERO,
            buf: vec![0; MAX_DATAGRAM],
            events: Vec::new(),
        };
        mesh.wait(probe_interval);
        let up = |neighbour: &Neighbour| mesh.node.is_link_alive(&neighbour.key());
        assert!(mesh.neighbours.iter().all(up), "both links are up");
        mesh
    }

    /// Applies one record of `kind` (the constants of this module); true when it reached the
    /// node and the node counted no drop for it.
    fn apply(&mut self, kind: u8, bytes: &[u8]) -> bool {
        match kind % KINDS {
            kind @ (SEAL | 1) => self.seal_and_deliver(usize::from(kind - SEAL), bytes),
            RAW => self.deliver_raw(bytes),
            WAIT => self.wait(millis(bytes)),
            kind @ (SESSION | 5) => self.send_in_session(usize::from(kind - SESSION), bytes),
            BUILD => self.build_route(bytes.first().copied().unwrap_or(0)),
            SILENCE => self.fall_silent(millis(bytes)),
            kind => self.send_direct(usize::from(kind - DIRECT), bytes),
        }
    }

    /// Runs `step` and carries what it made; true when the node counted no drop meanwhile.
    fn counting_drops(&mut self, step: impl FnOnce(&mut Neighbourhood) -> bool) -> bool {
        let before = (self.node.drops(), self.node.transports().drops());
        let done = step(self);
        self.exchange();
        done && before == (self.node.drops(), self.node.transports().drops())
    }

    fn seal_and_deliver(&mut self, from: usize, packet: &[u8]) -> bool {
        self.counting_drops(|mesh| mesh.neighbours[from].seal(packet))
    }

    fn send_in_session(&mut self, from: usize, packet: &[u8]) -> bool {
        self.counting_drops(|mesh| mesh.neighbours[from].send_in_session(packet))
    }

    fn send_direct(&mut self, from: usize, packet: &[u8]) -> bool {
        self.counting_drops(|mesh| mesh.neighbours[from].send_direct(packet))
    }

    fn deliver_raw(&mut self, datagram: &[u8]) -> bool {
        let from = self.neighbours[0].endpoint;
        self.counting_drops(|mesh| {
            mesh.node.handle_datagram(mesh.now, from, datagram);
            true
        })
    }

    /// Lets `time` pass as a driver does: the node's timers run at each of its deadlines, and
    /// what it sends meanwhile is answered (up to [`STEPPED_TIME`] in all).
    fn wait(&mut self, time: Duration) -> bool {
        self.waited += time;
        if self.waited > STEPPED_TIME {
            return self.fall_silent(time);
        }
        let end = self.now + time;
        loop {
            self.node.handle_timeout(self.now);
            self.exchange();
            if self.now >= end {
                return false;
            }
            let (deadline, _) = self.node.poll_timeout();
            self.now = deadline.max(self.now + MIN_STEP).min(end);
        }
    }

    /// Lets `time` pass with nothing carried until its end.
    fn fall_silent(&mut self, time: Duration) -> bool {
        self.now += time;
        self.node.handle_timeout(self.now);
        self.exchange();
        false
    }

    fn build_route(&mut self, byte: u8) -> bool {
        let to = match byte & 3 {
            0 => key(PEER_SECRET),
            1 => key(NEXT_SECRET),
            _ => key(advert::FAR_SECRET),
        };
        let now = self.now;
        self.counting_drops(|mesh| {
            let started = if byte & 4 == 0 {
                mesh.node.build_route(now, &[key(NODE_SECRET), to])
            } else {
                mesh.node.build_route_to(now, &to)
            };
            started.is_ok()
        })
    }

    /// Carries datagrams both ways until neither side sends more; a handshake, the packets
    /// queued behind it and the answers to those take a few rounds.
    fn exchange(&mut self) {
        for _ in 0..16 {
            let mut quiet = true;
            for neighbour in &mut self.neighbours {
                while let Some(datagram) = neighbour.outbox.pop() {
                    quiet = false;
                    self.node
                        .handle_datagram(self.now, neighbour.endpoint, datagram.bytes());
                    neighbour.outbox.recycle(datagram);
                }
            }
            while let Some(datagram) = self.node.poll_transmit() {
                if let Some(neighbour) = self
                    .neighbours
                    .iter_mut()
                    .find(|neighbour| neighbour.endpoint == datagram.to)
                {
                    quiet = false;
                    let outbox = &mut neighbour.outbox;
                    let received = neighbour.transports.receive(
                        self.now,
                        NODE_ENDPOINT,
                        datagram.bytes(),
                        &mut self.buf,
                        outbox,
                    );
                    if let Some((_, packet)) = received {
                        let packet = packet.to_vec();
                        neighbour.take(&packet);
                    }
                }
                self.node.recycle(datagram);
            }
            self.events
                .extend(std::iter::from_fn(|| self.node.poll_event()));
            if quiet {
                break;
            }
        }
    }
}

/// The time a [`WAIT`] or [`SILENCE`] record says.
fn millis(bytes: &[u8]) -> Duration {
    let millis = bytes.first_chunk().map_or(0, |ms| u16::from_be_bytes(*ms));
    Duration::from_millis(millis.into())
}

// ----- seeds -----

/// Sequences that exercise each part of the node, learning the route and setup ids the node
/// chose from runs of the harness (its random numbers come from a fixed seed).
pub fn node_datagram_seeds() -> Vec<Seed> {
    vec![
        Seed::new("probe.rec", probe_seed()),
        Seed::new("adverts.rec", adverts_seed()),
        Seed::new("route_to_node.rec", route_to_node_seed()),
        Seed::new("direct_route_to_node.rec", direct_route_to_node_seed()),
        Seed::new("route_through_node.rec", route_through_node_seed()),
        Seed::new("route_from_node.rec", route_from_node_seed()),
        Seed::new("refused_setup.rec", refused_setup_seed()),
        Seed::new("forgotten_route.rec", forgotten_route_seed()),
    ]
}

fn wait(records: &mut Vec<u8>, millis: u16) {
    records::push(records, WAIT, &millis.to_be_bytes());
}

fn fall_silent(records: &mut Vec<u8>, millis: u16) {
    records::push(records, SILENCE, &millis.to_be_bytes());
}

fn seal(records: &mut Vec<u8>, from: usize, id: RouteId, message: &ControlMessage) {
    let (secret, kind) = [(PEER_SECRET, SEAL), (NEXT_SECRET, SEAL + 1)][from];
    let packet = control_packet(id, key(secret), key(NODE_SECRET), message);
    records::push(records, kind, &packet);
}

/// An IPv6 packet from `from`'s mesh address to `to`'s, as an app sends it over a route.
fn inner_packet(from: NodeKey, to: NodeKey, payload: &[u8]) -> Vec<u8> {
    skywire_dataplane::sim::ipv6_packet(from.mesh_address(), to.mesh_address(), payload)
}

/// Probes from the peer, a silence in which the links die (they come back when the
/// neighbours answer again), an answer from the next to a probe the node never sent, and a
/// while in which the neighbours answer the node's probes.
fn probe_seed() -> Vec<u8> {
    let mut records = Vec::new();
    seal(
        &mut records,
        0,
        RouteId::CONTROL,
        &ControlMessage::Probe { nonce: 7 },
    );
    fall_silent(&mut records, 2000);
    let reply = ControlMessage::ProbeReply { nonce: 7 };
    seal(&mut records, 1, RouteId::CONTROL, &reply);
    wait(&mut records, 3000);
    records
}

/// The neighbours' adverts and a far node's that the peer passes on (a link counts when both
/// ends advertise it), one passed on again, the node's own advert coming back; the node's own
/// adverts after a while, and a route over the path it chooses to the far node, which the
/// peer never passes on, so that the node sends its request again and gives up.
fn adverts_seed() -> Vec<u8> {
    let (node, peer, next, far) = (
        key(NODE_SECRET),
        key(PEER_SECRET),
        key(NEXT_SECRET),
        key(advert::FAR_SECRET),
    );
    let link = |neighbour, rtt_micros| AdvertLink {
        neighbour,
        rtt_micros,
    };
    let mut records = Vec::new();
    let adverts = [
        (0, PEER_SECRET, vec![link(node, 900), link(far, 1500)]),
        (1, NEXT_SECRET, vec![link(node, 700)]),
        (0, advert::FAR_SECRET, vec![link(peer, 1400)]),
        (1, advert::FAR_SECRET, vec![link(peer, 1400)]),
        (0, NODE_SECRET, vec![link(next, 650)]),
    ];
    for (from, origin, links) in adverts {
        let message = ControlMessage::Advert(advert::signed(origin, 5, links, Vec::new()));
        seal(&mut records, from, RouteId::CONTROL, &message);
    }
    wait(&mut records, 1500);
    records::push(&mut records, BUILD, &[2 | 4]);
    wait(&mut records, 5000);
    records
}

/// A route from the peer that ends at the node: an IP packet through the route session over
/// it (whose handshake and data prove the route), its refresh, a while, and its teardown.
fn route_to_node_seed() -> Vec<u8> {
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    let mut records = Vec::new();
    seal(
        &mut records,
        0,
        RouteId::CONTROL,
        &setup_request(1, vec![peer, node]),
    );
    let forward = accepted_route(&records, 0, 1);
    let packet = inner_packet(peer, node, b"to the mesh stack");
    records::push(&mut records, SESSION, &packet);
    seal(&mut records, 0, forward, &ControlMessage::Refresh);
    wait(&mut records, 15_000);
    seal(&mut records, 0, forward, &ControlMessage::Teardown);
    records
}

/// A direct route from the peer to the node, which its first inner packet in the transport
/// alone (next header 252) proves; then what the node must refuse on it: such a packet from
/// the next, one whose outer source is not the peer, and one whose inner source is not the
/// peer; then a refresh, a while, and its teardown.
fn direct_route_to_node_seed() -> Vec<u8> {
    let (peer, node, next) = (key(PEER_SECRET), key(NODE_SECRET), key(NEXT_SECRET));
    let mut records = Vec::new();
    seal(
        &mut records,
        0,
        RouteId::CONTROL,
        &setup_request(4, vec![peer, node]),
    );
    let forward = accepted_route(&records, 0, 4);
    let inner = inner_packet(peer, node, b"direct to the mesh stack");
    records::push(&mut records, DIRECT, &inner);
    // The same from the next, and from the peer with the next's address as its outer source.
    let from_next = carrying(NextHeader::Direct, forward, next, node, &inner);
    records::push(&mut records, SEAL + 1, &from_next);
    records::push(&mut records, SEAL, &from_next);
    let spoofed = inner_packet(next, node, b"not from the peer");
    records::push(&mut records, DIRECT, &spoofed);
    seal(&mut records, 0, forward, &ControlMessage::Refresh);
    wait(&mut records, 2000);
    seal(&mut records, 0, forward, &ControlMessage::Teardown);
    records
}

/// A route from the peer through the node to the next: the node sends the request on again
/// while the next is silent, the peer asks again (the node is still waiting, then answers from
/// memory), traffic both ways on the route, an inner packet without a route session that a
/// relay must not pass on, and the route's end.
fn route_through_node_seed() -> Vec<u8> {
    let (peer, node, next) = (key(PEER_SECRET), key(NODE_SECRET), key(NEXT_SECRET));
    let mut records = Vec::new();
    let request = setup_request(2, vec![peer, node, next]);
    seal(&mut records, 0, RouteId::CONTROL, &request);
    wait(&mut records, 400);
    seal(&mut records, 0, RouteId::CONTROL, &request);
    let reverse = forwarded_reverse_id(&records);
    let accept = ControlMessage::SetupAccept {
        setup_id: 2,
        forward_id: route(0x777),
        mtu: 1420,
    };
    seal(&mut records, 1, RouteId::CONTROL, &accept);
    seal(&mut records, 0, RouteId::CONTROL, &request);
    let forward = accepted_route(&records, 0, 2);
    let data = carrying(NextHeader::Session, forward, peer, next, b"relayed forward");
    records::push(&mut records, SEAL, &data);
    let back = carrying(NextHeader::Session, reverse, next, peer, b"relayed back");
    records::push(&mut records, SEAL + 1, &back);
    let inner = inner_packet(peer, next, b"not for a relay");
    let direct = carrying(NextHeader::Direct, forward, peer, next, &inner);
    records::push(&mut records, SEAL, &direct);
    let down = ControlMessage::RouteDown {
        reporter: next,
        reason: DownReason::LinkDead,
    };
    seal(&mut records, 1, reverse, &down);
    records
}

/// A route the node builds to the peer, direct since they are neighbours: the peer accepts
/// it, the node proves it over its route session (a handshake, then a keepalive the peer
/// answers), an IP packet from the peer through the session and one in the transport alone,
/// and the node's refreshes and new session keys for as long as it keeps the route.
fn route_from_node_seed() -> Vec<u8> {
    let mut records = Vec::new();
    records::push(&mut records, BUILD, &[0]);
    let setup_id = run(&records, 0)
        .into_iter()
        .find_map(|message| match message {
            ControlMessage::SetupRequest { setup_id, .. } => Some(setup_id),
            _ => None,
        })
        .expect("the node asked the peer for a route");
    let accept = ControlMessage::SetupAccept {
        setup_id,
        forward_id: route(0x99),
        mtu: 1420,
    };
    seal(&mut records, 0, RouteId::CONTROL, &accept);
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    let packet = inner_packet(peer, node, b"over the node's route");
    records::push(&mut records, SESSION, &packet);
    let packet = inner_packet(peer, node, b"over the node's direct route");
    records::push(&mut records, DIRECT, &packet);
    // Past the interval after which the initiator of a direct route makes new session keys.
    for _ in 0..3 {
        wait(&mut records, 45_000);
    }
    records
}

/// A setup the node must refuse (its next hop is no neighbour), and a datagram that is no
/// WireGuard message.
fn refused_setup_seed() -> Vec<u8> {
    let mut records = Vec::new();
    let path = vec![key(PEER_SECRET), key(NODE_SECRET), key([9; 32])];
    seal(&mut records, 0, RouteId::CONTROL, &setup_request(3, path));
    records::push(&mut records, RAW, b"not a WireGuard message");
    records
}

/// Routes a neighbour forgot, as after its restart: a packet from the peer on a route id the
/// node never gave (the node reports it unknown), a route from the peer through the node to
/// the next that the next then reports unknown (the node reports it down towards the peer, as
/// forgotten), and the same report once more, of a route already gone.
fn forgotten_route_seed() -> Vec<u8> {
    let (peer, node, next) = (key(PEER_SECRET), key(NODE_SECRET), key(NEXT_SECRET));
    let mut records = Vec::new();
    let stray = carrying(NextHeader::Session, route(0x4242), peer, node, b"stray");
    records::push(&mut records, SEAL, &stray);
    let request = setup_request(6, vec![peer, node, next]);
    seal(&mut records, 0, RouteId::CONTROL, &request);
    let next_id = route(0x555);
    let accept = ControlMessage::SetupAccept {
        setup_id: 6,
        forward_id: next_id,
        mtu: 1420,
    };
    seal(&mut records, 1, RouteId::CONTROL, &accept);
    let forgotten = ControlMessage::UnknownRoute { route_id: next_id };
    seal(&mut records, 1, RouteId::CONTROL, &forgotten);
    seal(&mut records, 1, RouteId::CONTROL, &forgotten);
    records
}

/// Runs `records` through the harness.
fn replay(records: &[u8]) -> Neighbourhood {
    let mut mesh = Neighbourhood::new();
    for (kind, bytes) in records::split(records) {
        mesh.apply(kind, bytes);
    }
    mesh
}

/// Runs `records` through the harness and returns the control messages the node sent
/// neighbour `to`.
fn run(records: &[u8], to: usize) -> Vec<ControlMessage> {
    control_messages(&replay(records).neighbours[to])
}

/// The control messages the node sent `neighbour`.
fn control_messages(neighbour: &Neighbour) -> Vec<ControlMessage> {
    neighbour
        .received
        .iter()
        .filter_map(|packet| control_message_in(packet))
        .collect()
}

/// The route id the node gave neighbour `to` for setup `setup` after `records`.
fn accepted_route(records: &[u8], to: usize, setup: u64) -> RouteId {
    run(records, to)
        .into_iter()
        .find_map(|message| match message {
            ControlMessage::SetupAccept {
                setup_id,
                forward_id,
                ..
            } if setup_id == setup => Some(forward_id),
            _ => None,
        })
        .expect("the node accepted the route")
}

/// The reverse route id in the setup request the node passed on to the next.
fn forwarded_reverse_id(records: &[u8]) -> RouteId {
    run(records, 1)
        .into_iter()
        .find_map(|message| match message {
            ControlMessage::SetupRequest { reverse_id, .. } => Some(reverse_id),
            _ => None,
        })
        .expect("the node passed the setup on")
}

#[cfg(test)]
mod tests {
    use skywire_dataplane::node::NodeDrops;

    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        node_datagram_seeds()
            .into_iter()
            .find(|seed| seed.name == name)
            .unwrap()
            .bytes
    }

    fn no_drops(mesh: &Neighbourhood) {
        assert_eq!(mesh.node.drops(), NodeDrops::default());
        assert_eq!(mesh.node.transports().drops(), Default::default());
    }

    /// Whether the node delivered, from `peer`, a packet that ends with `payload`.
    fn delivered(mesh: &Neighbourhood, peer: NodeKey, payload: &[u8]) -> bool {
        mesh.events.iter().any(|event| {
            matches!(event, Event::Packet { peer: from, packet }
                if *from == peer && packet.ends_with(payload))
        })
    }

    #[test]
    fn a_route_to_the_node_is_adopted_on_proof_and_torn_down() {
        let mesh = replay(&seed("route_to_node.rec"));
        let peer = key(PEER_SECRET);
        assert!(mesh.events.contains(&Event::RouteReady { peer }));
        assert!(delivered(&mesh, peer, b"to the mesh stack"));
        assert_eq!(mesh.node.routes().count(), 0, "torn down");
        no_drops(&mesh);
    }

    #[test]
    fn a_direct_route_to_the_node_takes_inner_packets_from_its_other_end_alone() {
        let mesh = replay(&seed("direct_route_to_node.rec"));
        let peer = key(PEER_SECRET);
        assert!(mesh.events.contains(&Event::RouteReady { peer }));
        assert!(delivered(&mesh, peer, b"direct to the mesh stack"));
        let delivered_count = mesh
            .events
            .iter()
            .filter(|event| matches!(event, Event::Packet { .. } | Event::TunnelPacket { .. }))
            .count();
        assert_eq!(delivered_count, 1, "only the peer's own packet");
        let expected = NodeDrops {
            wrong_ingress: 1,
            direct_refused: 1,
            source_check: 1,
            ..NodeDrops::default()
        };
        assert_eq!(mesh.node.drops(), expected);
        assert_eq!(mesh.node.routes().count(), 0, "torn down");
    }

    #[test]
    fn a_route_the_node_builds_is_proven_and_carries_packets() {
        let mesh = replay(&seed("route_from_node.rec"));
        let peer = key(PEER_SECRET);
        assert!(mesh.events.contains(&Event::RouteReady { peer }));
        assert!(delivered(&mesh, peer, b"over the node's route"));
        assert!(delivered(&mesh, peer, b"over the node's direct route"));
        let (_, route) = mesh.node.routes().next().unwrap();
        assert!(route.initiator && route.ready && route.is_direct());
        let refreshes = control_messages(&mesh.neighbours[0])
            .into_iter()
            .filter(|message| *message == ControlMessage::Refresh)
            .count();
        assert!(refreshes >= 13, "the node refreshes its route: {refreshes}");
        let initiations = mesh.node.session_initiations(&peer).unwrap();
        assert!(initiations >= 2, "new keys for the direct route");
        no_drops(&mesh);
    }

    #[test]
    fn a_relayed_setup_is_sent_again_and_its_answer_repeated() {
        let mesh = replay(&seed("route_through_node.rec"));
        let requests = control_messages(&mesh.neighbours[1])
            .into_iter()
            .filter(|message| matches!(message, ControlMessage::SetupRequest { setup_id: 2, .. }))
            .count();
        assert!(requests >= 2, "sent again while the next is silent");
        let answers = control_messages(&mesh.neighbours[0])
            .into_iter()
            .filter(|message| matches!(message, ControlMessage::SetupAccept { setup_id: 2, .. }))
            .count();
        assert_eq!(answers, 2, "the answer repeated from memory");
        assert!(control_messages(&mesh.neighbours[0])
            .iter()
            .any(|message| matches!(message, ControlMessage::RouteDown { .. })));
        let relayed_direct = mesh.neighbours[1].received.iter().any(|packet| {
            MeshPacket::new_checked(&packet[..])
                .is_ok_and(|mesh| mesh.next_header() == NextHeader::Direct)
        });
        assert!(!relayed_direct, "a relay never passes on an inner packet");
        let expected = NodeDrops {
            direct_in_transit: 1,
            ..NodeDrops::default()
        };
        assert_eq!(mesh.node.drops(), expected);
        assert_eq!(mesh.node.transports().drops(), Default::default());
    }

    #[test]
    fn adverts_are_held_and_passed_on_and_a_chosen_path_is_tried_again() {
        let mesh = replay(&seed("adverts.rec"));
        let far = key(advert::FAR_SECRET);
        assert_eq!(mesh.node.known_nodes(mesh.now).len(), 4);
        let passed_on = control_messages(&mesh.neighbours[1]).into_iter().any(
            |message| matches!(message, ControlMessage::Advert(advert) if advert.origin == far),
        );
        assert!(passed_on, "the far node's advert reached the next");
        let drops = mesh.node.advert_drops();
        assert_eq!((drops.duplicate, drops.own), (1, 1));
        let own = control_messages(&mesh.neighbours[0])
            .into_iter()
            .any(|message| matches!(message, ControlMessage::Advert(advert) if advert.origin == key(NODE_SECRET)));
        assert!(own, "the node advertises itself");
        let tries = control_messages(&mesh.neighbours[0])
            .into_iter()
            .filter(|message| matches!(message, ControlMessage::SetupRequest { path, .. } if path.last() == Some(&far)))
            .count();
        assert!(tries >= 2, "the request to the far node is sent again");
        assert!(mesh
            .events
            .iter()
            .any(|event| matches!(event, Event::RouteFailed { peer, .. } if *peer == far)));
    }

    #[test]
    fn an_unknown_route_is_reported_and_a_forgotten_one_reported_down() {
        let mesh = replay(&seed("forgotten_route.rec"));
        let to_peer = control_messages(&mesh.neighbours[0]);
        assert!(
            to_peer.contains(&ControlMessage::UnknownRoute {
                route_id: route(0x4242)
            }),
            "{to_peer:?}"
        );
        let forgotten = ControlMessage::RouteDown {
            reporter: key(NODE_SECRET),
            reason: DownReason::Forgotten,
        };
        assert_eq!(
            to_peer
                .iter()
                .filter(|message| **message == forgotten)
                .count(),
            1,
            "{to_peer:?}"
        );
        assert_eq!(mesh.node.routes().count(), 0, "the relayed route is gone");
        assert_eq!(mesh.node.drops().unknown_route, 1);
    }

    #[test]
    fn links_die_in_a_silence_and_live_while_time_passes() {
        let mesh = replay(&seed("probe.rec"));
        let downs = |events: &[Event]| {
            events
                .iter()
                .filter(|event| matches!(event, Event::LinkDown { .. }))
                .count()
        };
        assert_eq!(downs(&mesh.events), 2, "both links died in the silence");
        assert!(mesh.node.is_link_alive(&key(PEER_SECRET)));
        assert!(mesh.node.is_link_alive(&key(NEXT_SECRET)));
    }
}
