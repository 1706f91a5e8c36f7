//! What neighbours send a node: mesh packets and the control messages they carry, whole
//! datagrams through a node's transports into its routing table, route setup and route
//! sessions, and the sorting of what a route session decrypted.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use skywire_dataplane::index::IndexAllocator;
use skywire_dataplane::node::{Node, NodeOptions};
use skywire_dataplane::outbox::Outbox;
use skywire_dataplane::session::{classify, Destination, RouteSession, SessionResult};
use skywire_dataplane::sim::SplitMix;
use skywire_dataplane::wire::control::emit_control_packet;
use skywire_dataplane::wire::mesh::{relay_in_place, route_id_of, HEADER_LEN};
use skywire_dataplane::wire::{ControlMessage, MeshHeader, MeshPacket, NextHeader};
use skywire_dataplane::{
    NeighbourConfig, NodeKey, RouteId, SecretKey, TransportId, Transports, MAX_DATAGRAM,
};

use crate::{records, Seed};

/// A control message, as neighbours exchange it: parsing never panics, and every message it
/// accepts re-emits to exactly the bytes it came from.
pub fn control_message(data: &[u8]) -> bool {
    let Ok(message) = ControlMessage::parse(data) else {
        return false;
    };
    assert_eq!(message.buffer_len(), data.len());
    let mut again = vec![0u8; message.buffer_len()];
    assert_eq!(message.emit(&mut again), Ok(data.len()));
    assert_eq!(again, data);
    true
}

/// A mesh packet: the relay's peek and rewrite, the checked view and its getters never panic,
/// and every packet the view accepts re-emits to the same bytes.
pub fn mesh_packet(data: &[u8]) -> bool {
    let _ = route_id_of(data);
    let mut relayed = data.to_vec();
    let next = RouteId::new(0x5a5a5).expect("fits 20 bits");
    if relay_in_place(&mut relayed, next).is_ok() {
        assert_eq!(relayed.get(8..), data.get(8..));
        assert_eq!(route_id_of(&relayed), Some(next));
    }

    let Ok(packet) = MeshPacket::new_checked(data) else {
        return false;
    };
    let header = MeshHeader::parse(&packet);
    assert_eq!(packet.total_len(), data.len());
    assert_eq!(packet.payload().len(), header.payload_len);
    let _ = (packet.traffic_class(), packet.src_addr(), packet.dst_addr());

    let mut again = vec![0u8; header.buffer_len()];
    header
        .emit(&mut again)
        .expect("an accepted header re-emits");
    again[HEADER_LEN..].copy_from_slice(packet.payload());
    // The representation leaves the traffic class out: nodes emit 0.
    let mut expected = data.to_vec();
    expected[0] &= 0xf0;
    expected[1] &= 0x0f;
    assert_eq!(again, expected);

    if header.next_header == NextHeader::Control {
        let _ = ControlMessage::parse(packet.payload());
    }
    true
}

/// A node's datagram path, from its UDP socket through its transports into route setup,
/// relaying, route control and route sessions. The input is records (see [`records`]): a mesh
/// packet that neighbour 0 (kind 0) or neighbour 1 (kind 1) seals in its transport to the
/// node, a raw datagram from neighbour 0's address (kind 2), or a wait of as many
/// milliseconds as the record's first two bytes say, after which the node's timers run
/// (kind 3). Accepted when the node took a sealed packet without counting a drop.
pub fn node_datagram(data: &[u8]) -> bool {
    let mut mesh = Neighbourhood::new();
    let mut accepted = false;
    for (kind, bytes) in records::split(data) {
        match kind % 4 {
            0 | 1 => accepted |= mesh.seal_and_deliver(usize::from(kind % 4), bytes),
            2 => mesh.deliver_raw(bytes),
            _ => mesh.wait(bytes),
        }
    }
    accepted
}

/// What a route session decrypted, sorted by its addresses: a packet goes to the node's mesh
/// stack only when it comes from the peer's mesh address to the node's own. Accepted when it
/// is not dropped.
pub fn session_classify(data: &[u8]) -> bool {
    // Derived once: a key's mesh address costs more than the classification.
    static ADDRESSES: LazyLock<(Ipv6Addr, Ipv6Addr)> = LazyLock::new(|| {
        (
            key(PEER_SECRET).mesh_address(),
            key(NODE_SECRET).mesh_address(),
        )
    });
    let (peer, own) = *ADDRESSES;
    let destination = classify(data, peer, own);
    if destination == Destination::MeshStack {
        assert_eq!(data.get(8..24), Some(&peer.octets()[..]));
        assert_eq!(data.get(24..40), Some(&own.octets()[..]));
    }
    destination != Destination::Drop
}

const NODE_SECRET: [u8; 32] = [1; 32];
const PEER_SECRET: [u8; 32] = [2; 32];
const NEXT_SECRET: [u8; 32] = [3; 32];
const NODE_ENDPOINT: SocketAddr = endpoint(7001);

const fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn key(secret: [u8; 32]) -> NodeKey {
    SecretKey::from(secret).public()
}

/// The node under test and the far ends of its transports to two neighbours, which this
/// harness holds: it seals what the input says in a neighbour's transport, delivers it, and
/// carries the answers back until both sides are quiet.
struct Neighbourhood {
    node: Node,
    neighbours: [Neighbour; 2],
    now: Instant,
    buf: Vec<u8>,
}

/// A neighbour's end of its transport to the node.
struct Neighbour {
    transports: Transports,
    to_node: TransportId,
    endpoint: SocketAddr,
    outbox: Outbox,
    /// Mesh packets the node sent this neighbour, decrypted.
    received: Vec<Vec<u8>>,
}

impl Neighbour {
    fn new(secret: [u8; 32], endpoint: SocketAddr) -> Neighbour {
        let mut transports = Transports::new(&SecretKey::from(secret));
        let to_node = transports
            .add(
                config(NODE_SECRET, NODE_ENDPOINT),
                &mut IndexAllocator::default(),
            )
            .expect("the node is another key");
        Neighbour {
            transports,
            to_node,
            endpoint,
            outbox: Outbox::default(),
            received: Vec::new(),
        }
    }
}

fn config(secret: [u8; 32], endpoint: SocketAddr) -> NeighbourConfig {
    NeighbourConfig {
        key: key(secret),
        endpoint: Some(endpoint),
        keepalive: None,
    }
}

impl Neighbourhood {
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
        let node = Node::new(options, now, Box::new(SplitMix(1))).expect("two neighbours");
        Neighbourhood {
            node,
            neighbours,
            now,
            buf: vec![0; MAX_DATAGRAM],
        }
    }

    /// Neighbour `from` seals `packet` and the node gets it (after their handshake, the first
    /// time); true when the node counted no drop.
    fn seal_and_deliver(&mut self, from: usize, packet: &[u8]) -> bool {
        let before = (self.node.drops(), self.node.transports().drops());
        let neighbour = &mut self.neighbours[from];
        let sent = neighbour
            .transports
            .send(neighbour.to_node, packet, &mut neighbour.outbox);
        self.exchange();
        sent.is_ok() && before == (self.node.drops(), self.node.transports().drops())
    }

    fn deliver_raw(&mut self, datagram: &[u8]) {
        let from = self.neighbours[0].endpoint;
        self.node.handle_datagram(self.now, from, datagram);
        self.exchange();
    }

    fn wait(&mut self, bytes: &[u8]) {
        let millis = bytes.first_chunk().map_or(0, |ms| u16::from_be_bytes(*ms));
        self.now += Duration::from_millis(millis.into());
        self.node.handle_timeout(self.now);
        self.exchange();
    }

    /// Carries datagrams both ways until neither side sends more; a handshake and the packets
    /// queued behind it take three rounds.
    fn exchange(&mut self) {
        for _ in 0..8 {
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
                    let bytes = datagram.bytes();
                    let outbox = &mut neighbour.outbox;
                    let now = self.now;
                    let from = NODE_ENDPOINT;
                    if let Some((_, packet)) =
                        neighbour
                            .transports
                            .receive(now, from, bytes, &mut self.buf, outbox)
                    {
                        neighbour.received.push(packet.to_vec());
                    }
                }
                self.node.recycle(datagram);
            }
            while self.node.poll_event().is_some() {}
            if quiet {
                break;
            }
        }
    }
}

// ----- seeds -----

/// Control messages of every type.
pub fn control_message_seeds() -> Vec<Seed> {
    sample_messages()
        .into_iter()
        .map(|(name, message)| {
            let mut bytes = vec![0u8; message.buffer_len()];
            message.emit(&mut bytes).expect("a valid message");
            Seed::new(format!("{name}.bin"), bytes)
        })
        .collect()
}

/// Mesh packets carrying control messages, and a session message.
pub fn mesh_packet_seeds() -> Vec<Seed> {
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    let mut seeds: Vec<Seed> = sample_messages()
        .into_iter()
        .map(|(name, message)| {
            let bytes = control_packet(RouteId::CONTROL, peer, node, &message);
            Seed::new(format!("{name}.bin"), bytes)
        })
        .collect();
    seeds.push(Seed::new(
        "session.bin",
        session_packet(route(0x1234), peer, node, b"a route session's message"),
    ));
    seeds
}

/// Sequences that set up routes to and through the node and use them, each learning the
/// route ids the node chose from a run of the harness.
pub fn node_datagram_seeds() -> Vec<Seed> {
    let (peer, node, next) = (key(PEER_SECRET), key(NODE_SECRET), key(NEXT_SECRET));
    let mut seeds = Vec::new();

    let mut probe = Vec::new();
    let message = ControlMessage::Probe { nonce: 7 };
    records::push(
        &mut probe,
        0,
        &control_packet(RouteId::CONTROL, peer, node, &message),
    );
    records::push(&mut probe, 3, &2000u16.to_be_bytes());
    let reply = ControlMessage::ProbeReply { nonce: 7 };
    records::push(
        &mut probe,
        1,
        &control_packet(RouteId::CONTROL, next, node, &reply),
    );
    seeds.push(Seed::new("probe.rec", probe));

    // A route from the peer that ends at the node: its route control, and a route session's
    // handshake initiation on it.
    let mut to_node = Vec::new();
    let request = setup_request(1, vec![peer, node]);
    records::push(
        &mut to_node,
        0,
        &control_packet(RouteId::CONTROL, peer, node, &request),
    );
    let forward = accepted_route(&to_node, 0, 1);
    let mut session = RouteSession::new(
        &SecretKey::from(PEER_SECRET),
        node,
        1,
        Arc::new(boringtun::noise::rate_limiter::RateLimiter::new(
            &peer.to_x25519(),
            10,
        )),
    );
    let mut initiation = vec![0u8; MAX_DATAGRAM];
    let SessionResult::Send(len) = session.initiate(&mut initiation) else {
        panic!("a new session starts with a handshake initiation");
    };
    let packet = session_packet(forward, peer, node, &initiation[..len]);
    records::push(&mut to_node, 0, &packet);
    let refresh = control_packet(forward, peer, node, &ControlMessage::Refresh);
    records::push(&mut to_node, 0, &refresh);
    records::push(&mut to_node, 3, &15_000u16.to_be_bytes());
    let teardown = control_packet(forward, peer, node, &ControlMessage::Teardown);
    records::push(&mut to_node, 0, &teardown);
    seeds.push(Seed::new("route_to_node.rec", to_node));

    // A route from the peer through the node to the next neighbour, traffic both ways on it,
    // and its end.
    let mut through = Vec::new();
    let request = setup_request(2, vec![peer, node, next]);
    records::push(
        &mut through,
        0,
        &control_packet(RouteId::CONTROL, peer, node, &request),
    );
    let reverse = forwarded_reverse_id(&through);
    let accept = ControlMessage::SetupAccept {
        setup_id: 2,
        forward_id: route(0x777),
        mtu: 1420,
    };
    records::push(
        &mut through,
        1,
        &control_packet(RouteId::CONTROL, next, node, &accept),
    );
    let forward = accepted_route(&through, 0, 2);
    let data = session_packet(forward, peer, next, b"relayed forward");
    records::push(&mut through, 0, &data);
    let back = session_packet(reverse, next, peer, b"relayed back");
    records::push(&mut through, 1, &back);
    let down = ControlMessage::RouteDown {
        reporter: next,
        reason: skywire_dataplane::wire::DownReason::LinkDead,
    };
    records::push(&mut through, 1, &control_packet(reverse, next, peer, &down));
    seeds.push(Seed::new("route_through_node.rec", through));

    // A setup the node must refuse, and a datagram that is no WireGuard message.
    let mut refused = Vec::new();
    let stranger = key([9; 32]);
    let request = setup_request(3, vec![peer, node, stranger]);
    records::push(
        &mut refused,
        0,
        &control_packet(RouteId::CONTROL, peer, node, &request),
    );
    records::push(&mut refused, 2, b"not a WireGuard message");
    seeds.push(Seed::new("refused_setup.rec", refused));
    seeds
}

/// Decrypted packets from the peer to the node, to a tunnel, and forged.
pub fn session_classify_seeds() -> Vec<Seed> {
    let (peer, own) = (
        key(PEER_SECRET).mesh_address(),
        key(NODE_SECRET).mesh_address(),
    );
    let other: Ipv6Addr = "2001:db8::1".parse().expect("an address");
    vec![
        Seed::new(
            "mesh_stack.bin",
            skywire_dataplane::sim::ipv6_packet(peer, own, b"tcp"),
        ),
        Seed::new(
            "tunnel.bin",
            skywire_dataplane::sim::ipv6_packet(other, other, b"vpn"),
        ),
    ]
}

fn route(id: u32) -> RouteId {
    RouteId::new(id).expect("fits 20 bits")
}

fn setup_request(setup_id: u64, path: Vec<NodeKey>) -> ControlMessage {
    ControlMessage::SetupRequest {
        setup_id,
        hop_index: 1,
        mtu: 1420,
        reverse_id: route(0x42),
        path,
    }
}

fn control_packet(id: RouteId, from: NodeKey, to: NodeKey, message: &ControlMessage) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (src, dst) = (from.mesh_address(), to.mesh_address());
    let len = emit_control_packet(id, src, dst, message, &mut buf).expect("a valid message");
    buf.truncate(len);
    buf
}

fn session_packet(id: RouteId, from: NodeKey, to: NodeKey, message: &[u8]) -> Vec<u8> {
    let header = MeshHeader {
        route_id: id,
        next_header: NextHeader::Session,
        hop_limit: 64,
        src: from.mesh_address(),
        dst: to.mesh_address(),
        payload_len: message.len(),
    };
    let mut packet = vec![0u8; header.buffer_len()];
    header.emit(&mut packet).expect("a short payload");
    packet[HEADER_LEN..].copy_from_slice(message);
    packet
}

/// Runs `records` through the harness and returns what the node told neighbour `to`.
fn run(records: &[u8], to: usize) -> Vec<ControlMessage> {
    let mut mesh = Neighbourhood::new();
    for (kind, bytes) in records::split(records) {
        assert!(kind < 2, "seed runs seal packets only");
        mesh.seal_and_deliver(usize::from(kind), bytes);
    }
    mesh.neighbours[to]
        .received
        .iter()
        .filter_map(|packet| MeshPacket::new_checked(&packet[..]).ok())
        .filter(|packet| packet.next_header() == NextHeader::Control)
        .filter_map(|packet| ControlMessage::parse(packet.payload()).ok())
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

/// The reverse route id in the setup request the node passed on to neighbour 1.
fn forwarded_reverse_id(records: &[u8]) -> RouteId {
    run(records, 1)
        .into_iter()
        .find_map(|message| match message {
            ControlMessage::SetupRequest { reverse_id, .. } => Some(reverse_id),
            _ => None,
        })
        .expect("the node passed the setup on")
}

fn sample_messages() -> Vec<(&'static str, ControlMessage)> {
    use skywire_dataplane::wire::{DownReason, RejectReason};
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    vec![
        ("probe", ControlMessage::Probe { nonce: 1 }),
        ("probe_reply", ControlMessage::ProbeReply { nonce: 1 }),
        ("setup_request", setup_request(5, vec![peer, node])),
        (
            "setup_accept",
            ControlMessage::SetupAccept {
                setup_id: 5,
                forward_id: route(9),
                mtu: 1420,
            },
        ),
        (
            "setup_reject",
            ControlMessage::SetupReject {
                setup_id: 5,
                hop_index: 1,
                reason: RejectReason::MtuTooSmall { mtu: 1300 },
            },
        ),
        ("refresh", ControlMessage::Refresh),
        ("teardown", ControlMessage::Teardown),
        (
            "route_down",
            ControlMessage::RouteDown {
                reporter: peer,
                reason: DownReason::LinkDead,
            },
        ),
    ]
}
