//! The transports over an in-memory network: handshakes on demand, exchange both ways, refusal
//! of unknown keys, roaming, cookies, and a flood of garbage counted reason by reason.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skywire_dataplane::index::IndexAllocator;
use skywire_dataplane::{
    DropCounters, NeighbourConfig, NodeKey, Outbox, SecretKey, SendError, TransportId, Transports,
    MAX_DATAGRAM, MAX_MESH_PACKET, SEALED_HEADER_LEN, SEALED_HEADER_TYPE,
};

/// Next header of an end-to-end session message: what the test packets pretend to be.
const NEXT_HEADER_SESSION: u8 = 254;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A 127.0.0.1 address as a dual-stack socket reports it.
fn mapped(port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv4Addr::new(127, 0, 0, 1)
            .to_ipv6_mapped()
            .into(),
        port,
    )
}

/// An IPv6 mesh packet carrying `payload`.
fn mesh_packet(from: &NodeKey, to: &NodeKey, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(&[NEXT_HEADER_SESSION, 64]);
    packet.extend_from_slice(&from.mesh_address().octets());
    packet.extend_from_slice(&to.mesh_address().octets());
    packet.extend_from_slice(payload);
    packet
}

/// xorshift64*: deterministic garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, limit: usize) -> usize {
        (self.next() % limit as u64) as usize
    }

    fn range(&mut self, low: usize, high_inclusive: usize) -> usize {
        low + self.below(high_inclusive - low + 1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Between `low` and `high_inclusive` random bytes.
    fn some_bytes(&mut self, low: usize, high_inclusive: usize) -> Vec<u8> {
        let len = self.range(low, high_inclusive);
        self.bytes(len)
    }
}

/// One node: its transports, outbox and what it received.
struct Node {
    secret: SecretKey,
    transports: Transports,
    indexes: IndexAllocator,
    outbox: Outbox,
    /// Where its datagrams appear to come from.
    send_from: SocketAddr,
    /// The addresses delivered to it.
    listen: Vec<SocketAddr>,
    received: Vec<(TransportId, Vec<u8>)>,
}

impl Node {
    fn new(seed: u8, port: u16) -> Node {
        let secret = SecretKey::from([seed; 32]);
        Node {
            transports: Transports::new(&secret),
            secret,
            indexes: IndexAllocator::default(),
            outbox: Outbox::default(),
            send_from: addr(port),
            listen: vec![addr(port)],
            received: Vec::new(),
        }
    }

    fn key(&self) -> NodeKey {
        self.secret.public()
    }

    /// Adds `other` as a neighbour, at `endpoint`.
    fn add(&mut self, other: &Node, endpoint: Option<SocketAddr>) -> TransportId {
        let config = NeighbourConfig {
            key: other.key(),
            endpoint,
            keepalive: None,
        };
        self.transports.add(config, &mut self.indexes).unwrap()
    }

    fn send(&mut self, id: TransportId, packet: &[u8]) -> Result<(), SendError> {
        self.transports
            .send(id, packet, &mut self.outbox)
            .map(|_| ())
    }

    /// Hands it one datagram; returns whether a packet came out.
    fn deliver(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        let mut buf = [0u8; MAX_DATAGRAM];
        match self
            .transports
            .receive(now, from, datagram, &mut buf, &mut self.outbox)
        {
            Some((id, packet)) => {
                self.received.push((id, packet.to_vec()));
                true
            }
            None => false,
        }
    }

    /// Takes everything waiting in its outbox.
    fn drain(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut datagrams = Vec::new();
        while let Some(datagram) = self.outbox.pop() {
            datagrams.push((datagram.to, datagram.bytes().to_vec()));
            self.outbox.recycle(datagram);
        }
        datagrams
    }

    fn drops(&self) -> DropCounters {
        self.transports.drops()
    }
}

/// A datagram that crossed the network.
#[derive(Debug, Clone)]
struct Wire {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Wire {
    fn message_type(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
}

/// Nodes on an in-memory network with a lossless, instant link between any two addresses.
struct Net {
    nodes: Vec<Node>,
    now: Instant,
    /// Every datagram delivered to a node, in order.
    delivered: Vec<Wire>,
    /// Datagrams to addresses nobody listens on.
    lost: Vec<Wire>,
}

impl Net {
    fn new(nodes: Vec<Node>) -> Net {
        Net {
            nodes,
            now: Instant::now(),
            delivered: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// Delivers datagrams until no outbox holds any; returns how many were delivered.
    fn pump(&mut self) -> usize {
        let start = self.delivered.len();
        for _round in 0..1000 {
            let mut in_flight = Vec::new();
            for node in &mut self.nodes {
                let from = node.send_from;
                for (to, bytes) in node.drain() {
                    in_flight.push(Wire { from, to, bytes });
                }
            }
            if in_flight.is_empty() {
                return self.delivered.len() - start;
            }
            for wire in in_flight {
                let target = self
                    .nodes
                    .iter()
                    .position(|node| node.listen.contains(&wire.to));
                match target {
                    Some(index) => {
                        self.nodes[index].deliver(self.now, wire.from, &wire.bytes);
                        self.delivered.push(wire);
                    }
                    None => self.lost.push(wire),
                }
            }
        }
        panic!("the network did not settle");
    }
}

/// A and B, each configured with the other's endpoint.
fn pair() -> (Net, TransportId, TransportId) {
    let mut a = Node::new(1, 1001);
    let mut b = Node::new(2, 1002);
    let b_at_a = a.add(&b, Some(addr(1002)));
    let a_at_b = b.add(&a, Some(addr(1001)));
    (Net::new(vec![a, b]), b_at_a, a_at_b)
}

/// A and B with a session up.
fn connected_pair() -> (Net, TransportId, TransportId) {
    let (mut net, b_at_a, a_at_b) = pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    net.nodes[0]
        .send(b_at_a, &mesh_packet(&a_key, &b_key, b"hello"))
        .unwrap();
    net.pump();
    net.nodes[1]
        .send(a_at_b, &mesh_packet(&b_key, &a_key, b"hello back"))
        .unwrap();
    net.pump();
    assert_eq!(net.nodes[1].received.len(), 1);
    assert_eq!(net.nodes[0].received.len(), 1);
    (net, b_at_a, a_at_b)
}

/// Sends one packet each way over an existing session and checks both arrive intact.
fn exchange(net: &mut Net, b_at_a: TransportId, a_at_b: TransportId, tag: &[u8]) {
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    let to_b = mesh_packet(&a_key, &b_key, tag);
    let to_a = mesh_packet(&b_key, &a_key, tag);
    net.nodes[0].send(b_at_a, &to_b).unwrap();
    net.nodes[1].send(a_at_b, &to_a).unwrap();
    net.pump();
    assert_eq!(net.nodes[1].received.last(), Some(&(a_at_b, to_b)));
    assert_eq!(net.nodes[0].received.last(), Some(&(b_at_a, to_a)));
}

/// The same mesh packet with another next header.
fn with_next_header(mut packet: Vec<u8>, next_header: u8) -> Vec<u8> {
    packet[6] = next_header;
    packet
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn a_route_session_message_crosses_with_only_its_mesh_header_sealed() {
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    let packet = mesh_packet(
        &a_key,
        &b_key,
        b"an end-to-end sealed route-session message",
    );
    net.nodes[0].send(b_at_a, &packet).unwrap();
    let datagrams = net.nodes[0].drain();
    let [(to, datagram)] = &datagrams[..] else {
        panic!("one datagram expected: {datagrams:?}");
    };
    assert_eq!(*to, addr(1002));
    // No second pass over the message: it follows the sealed header as it is.
    assert_eq!(datagram[0], SEALED_HEADER_TYPE);
    assert_eq!(datagram.len(), packet.len() + 32);
    assert_eq!(datagram[SEALED_HEADER_LEN..], packet[40..]);
    // The header is sealed: neither end's mesh address is on the wire.
    for key in [&a_key, &b_key] {
        assert!(!contains(datagram, &key.mesh_address().octets()));
    }
    assert!(net.nodes[1].deliver(net.now, addr(1001), datagram));
    assert_eq!(net.nodes[1].received.last(), Some(&(a_at_b, packet)));
    // Its header is taken once: a replay is refused.
    assert!(!net.nodes[1].deliver(net.now, addr(1001), datagram));
    assert_eq!(net.nodes[1].drops().decrypt_failed, 1);
}

#[test]
fn only_route_session_messages_cross_with_a_sealed_header() {
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    // Control messages and direct inner packets are the hop's to authenticate: sealed whole.
    for next_header in [252, 253] {
        let packet = with_next_header(mesh_packet(&a_key, &b_key, b"sealed whole"), next_header);
        net.nodes[0].send(b_at_a, &packet).unwrap();
        let datagrams = net.nodes[0].drain();
        assert_eq!(datagrams[0].1[0], 4, "next header {next_header}");
        assert!(!contains(&datagrams[0].1, b"sealed whole"));
        assert!(net.nodes[1].deliver(net.now, addr(1001), &datagrams[0].1));
        assert_eq!(net.nodes[1].received.last(), Some(&(a_at_b, packet)));
    }
    // A whole data message relabelled as a sealed header does not open as one: its first 72
    // bytes are no message of their own, so nothing after them is taken unauthenticated.
    let packet = with_next_header(mesh_packet(&a_key, &b_key, &[7; 100]), 253);
    net.nodes[0].send(b_at_a, &packet).unwrap();
    let mut datagram = net.nodes[0].drain().remove(0).1;
    datagram[0] = SEALED_HEADER_TYPE;
    let before = net.nodes[1].received.len();
    assert!(!net.nodes[1].deliver(net.now, addr(1001), &datagram));
    assert_eq!(net.nodes[1].received.len(), before);
}

#[test]
fn a_hop_passes_a_changed_message_on_for_its_far_end_to_refuse() {
    // What follows a sealed header is the route session's to authenticate, end to end: a hop
    // that takes the header from its neighbour delivers the rest as it came.
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    let packet = mesh_packet(&a_key, &b_key, b"end to end");
    net.nodes[0].send(b_at_a, &packet).unwrap();
    let mut datagram = net.nodes[0].drain().remove(0).1;
    let last = datagram.len() - 1;
    datagram[last] ^= 1;
    assert!(net.nodes[1].deliver(net.now, addr(1001), &datagram));
    let (id, delivered) = net.nodes[1].received.last().unwrap();
    assert_eq!(*id, a_at_b);
    assert_eq!(delivered[..delivered.len() - 1], packet[..packet.len() - 1]);
    assert_ne!(delivered.last(), packet.last());
}

#[test]
fn handshake_on_demand_then_packets_both_ways() {
    let (mut net, b_at_a, a_at_b) = pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    assert_eq!(net.nodes[0].transports.key_of(b_at_a), Some(b_key));
    assert_eq!(net.nodes[1].transports.id_of(&a_key), Some(a_at_b));

    // No session yet: the packet waits in boringtun and an initiation goes out.
    let first = mesh_packet(&a_key, &b_key, b"first");
    net.nodes[0].send(b_at_a, &first).unwrap();
    assert_eq!(net.nodes[0].outbox.len(), 1);
    net.pump();
    let types: Vec<u8> = net.delivered.iter().map(Wire::message_type).collect();
    assert_eq!(&types[..2], &[1, 2], "initiation, then response");
    assert!(types[2..].iter().all(|&kind| kind == 4), "{types:?}");
    assert_eq!(net.nodes[1].received, vec![(a_at_b, first)]);

    // Both ways, every size up to the largest mesh packet.
    let mut rng = Rng(7);
    for round in 0..50 {
        let len = if round == 0 {
            MAX_MESH_PACKET - 40
        } else {
            rng.range(0, MAX_MESH_PACKET - 40)
        };
        let payload = rng.bytes(len);
        let to_b = mesh_packet(&a_key, &b_key, &payload);
        let to_a = mesh_packet(&b_key, &a_key, &payload);
        net.nodes[0].send(b_at_a, &to_b).unwrap();
        net.nodes[1].send(a_at_b, &to_a).unwrap();
        net.pump();
        assert_eq!(net.nodes[1].received.last(), Some(&(a_at_b, to_b)));
        assert_eq!(net.nodes[0].received.last(), Some(&(b_at_a, to_a)));
    }
    assert_eq!(net.nodes[0].received.len(), 50);
    assert_eq!(net.nodes[1].received.len(), 51);
    assert!(net.lost.is_empty());

    net.nodes[0]
        .transports
        .record_rtt(b_at_a, Duration::from_millis(3));
    let info: Vec<_> = net.nodes[0].transports.info().collect();
    assert_eq!(info.len(), 1);
    let info = &info[0];
    assert_eq!(info.id, b_at_a);
    assert_eq!(info.key, b_key);
    assert_eq!(info.endpoint, Some(addr(1002)));
    assert!(info.last_handshake.is_some());
    assert_eq!(info.last_received, Some(net.now));
    assert_eq!(info.rtt, Some(Duration::from_millis(3)));
    // Initiation, keepalive, 51 packets out; response and 50 packets in.
    assert_eq!(info.tx_packets, 53);
    assert_eq!(info.rx_packets, 51);
    assert!(info.tx_bytes > 50 * 40 && info.rx_bytes > 50 * 40);
    assert_eq!(net.nodes[0].drops(), DropCounters::default());
    assert_eq!(net.nodes[1].drops(), DropCounters::default());
}

#[test]
fn handshake_from_unknown_key_is_refused_even_from_a_neighbours_address() {
    let mut a = Node::new(1, 1001);
    let b = Node::new(2, 1002);
    let mut stranger = Node::new(3, 1003);
    let b_at_a = a.add(&b, Some(addr(1002)));
    let a_at_stranger = stranger.add(&a, Some(addr(1001)));
    let now = Instant::now();

    let packet = mesh_packet(&stranger.key(), &a.key(), b"let me in");
    stranger.send(a_at_stranger, &packet).unwrap();
    let initiation = stranger.drain().remove(0).1;

    assert!(!a.deliver(now, addr(1003), &initiation));
    assert_eq!(a.drops().unknown_key, 1);
    assert!(a.outbox.is_empty(), "nothing answered");

    // From the address a real neighbour uses, it is still a stranger's key.
    assert!(!a.deliver(now, addr(1002), &initiation));
    assert!(!a.deliver(now, mapped(1002), &initiation));
    assert_eq!(a.drops().unknown_key, 3);
    assert_eq!(a.drops().total(), 3);
    assert!(a.outbox.is_empty(), "nothing answered");
    assert_eq!(a.transports.endpoint_of(b_at_a), Some(addr(1002)));
    assert_eq!(a.transports.info().next().unwrap().rx_packets, 0);
}

#[test]
fn known_key_roams_but_a_forged_cookie_reply_does_not_move_it() {
    let mut a = Node::new(1, 1001);
    let mut b = Node::new(2, 1002);
    // A does not know where B is: B must come to it, through a dual-stack socket.
    let b_at_a = a.add(&b, None);
    let a_at_b = b.add(&a, Some(addr(1001)));
    b.send_from = mapped(1002);
    let mut net = Net::new(vec![a, b]);
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    assert_eq!(
        net.nodes[0]
            .send(b_at_a, &mesh_packet(&a_key, &b_key, b"x"))
            .unwrap_err(),
        SendError::NoEndpoint
    );

    net.nodes[1]
        .send(a_at_b, &mesh_packet(&b_key, &a_key, b"hi"))
        .unwrap();
    net.pump();
    assert_eq!(net.nodes[0].received.len(), 1);
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1002)),
        "learnt, IPv4-mapped address normalised"
    );
    exchange(&mut net, b_at_a, a_at_b, b"learnt");

    // B's address changes (NAT rebinding): its next data packet moves the endpoint.
    net.nodes[1].send_from = addr(1003);
    net.nodes[1].listen.push(addr(1003));
    net.nodes[1]
        .send(a_at_b, &mesh_packet(&b_key, &a_key, b"moved"))
        .unwrap();
    net.pump();
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1003))
    );
    assert!(net
        .delivered
        .last()
        .is_some_and(|wire| wire.from == addr(1003)));

    // B restarts elsewhere: a fresh handshake from its key is accepted at the new address.
    let mut restarted = Node::new(2, 1004);
    let a_at_restarted = restarted.add(&net.nodes[0], Some(addr(1001)));
    net.nodes[1] = restarted;
    net.nodes[1]
        .send(a_at_restarted, &mesh_packet(&b_key, &a_key, b"again"))
        .unwrap();
    net.pump();
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1004))
    );
    assert_eq!(net.nodes[0].received.len(), 4);
    exchange(&mut net, b_at_a, a_at_restarted, b"after restart");

    // A cookie reply naming the live session, from an address that is not B's.
    let live_index = net
        .delivered
        .iter()
        .rev()
        .find(|wire| wire.to == addr(1001) && wire.message_type() == 4)
        .map(|wire| wire.bytes[4..8].to_vec())
        .unwrap();
    let mut forged = vec![3, 0, 0, 0];
    forged.extend_from_slice(&live_index);
    forged.extend_from_slice(&Rng(3).bytes(56));
    assert_eq!(forged.len(), 64);
    let drops_before = net.nodes[0].drops().total();
    let now = net.now;
    assert!(!net.nodes[0].deliver(now, addr(6666), &forged));
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1004))
    );
    assert_eq!(net.nodes[0].drops().total(), drops_before + 1);
    assert!(net.nodes[0].outbox.is_empty());
    exchange(&mut net, b_at_a, a_at_restarted, b"still there");
}

#[test]
fn a_real_cookie_reply_relayed_from_elsewhere_does_not_move_the_endpoint() {
    let mut a = Node::new(1, 1001);
    let mut b = Node::new(2, 1002);
    let mut stranger = Node::new(3, 1003);
    let b_at_a = a.add(&b, Some(addr(1002)));
    b.add(&a, Some(addr(1001)));
    let b_at_stranger = stranger.add(&b, Some(addr(1002)));
    let now = Instant::now();

    // A stranger's initiations (valid mac1, unknown key) put B's handshake rate over its limit.
    stranger
        .send(b_at_stranger, &mesh_packet(&stranger.key(), &b.key(), b"x"))
        .unwrap();
    let initiation = stranger.drain().remove(0).1;
    const FLOOD: u64 = 300;
    for _ in 0..FLOOD {
        assert!(!b.deliver(now, addr(1003), &initiation));
    }
    let drops = b.drops();
    assert!(drops.unknown_key > 0 && drops.rate_limited > 0, "{drops:?}");
    assert_eq!(drops.unknown_key + drops.rate_limited, FLOOD);
    let cookies = b.drain();
    assert_eq!(cookies.len() as u64, drops.rate_limited);
    assert!(cookies
        .iter()
        .all(|(to, bytes)| *to == addr(1003) && bytes.len() == 64 && bytes[0] == 3));

    // Under load, B answers A's initiation with a cookie instead of a response.
    a.send(b_at_a, &mesh_packet(&a.key(), &b.key(), b"queued"))
        .unwrap();
    let initiation = a.drain().remove(0).1;
    assert!(!b.deliver(now, addr(1001), &initiation));
    let answer = b.drain();
    assert_eq!(answer.len(), 1);
    let (to, cookie) = &answer[0];
    assert_eq!((*to, cookie.len(), cookie[0]), (addr(1001), 64, 3));

    // A genuine cookie reply, but replayed from elsewhere: accepted, yet no reason to roam.
    assert!(!a.deliver(now, addr(6666), cookie));
    assert_eq!(
        a.drops(),
        DropCounters::default(),
        "a valid cookie is no drop"
    );
    assert_eq!(a.transports.endpoint_of(b_at_a), Some(addr(1002)));
    assert_eq!(a.transports.info().next().unwrap().last_received, None);
    assert!(a.outbox.is_empty());
}

/// What a flood of garbage sent, per expected outcome.
#[derive(Debug, Default)]
struct Flood {
    sent: u64,
    oversized: u64,
    malformed: u64,
    bad_mac: u64,
    unknown_index: u64,
    decrypt_failed: u64,
    /// Unknown-key initiations: refused for their key or, past the rate limit, with a cookie.
    unknown_key_or_rate_limited: u64,
}

/// Throws a few thousand bad datagrams at node 0 (A), whose session with node 1 (B) is up.
fn flood_with_garbage(net: &mut Net, seed: u64) -> Flood {
    let mut rng = Rng(seed);
    let now = net.now;
    let a_key = net.nodes[0].key();

    // Material: real messages seen on the wire (the data messages whole, and those that seal a
    // mesh header alone), and a stranger's initiation.
    let sealed_to_a: Vec<Vec<u8>> = net
        .delivered
        .iter()
        .filter(|wire| wire.to == addr(1001) && wire.message_type() == SEALED_HEADER_TYPE)
        .map(|wire| wire.bytes.clone())
        .collect();
    let data_to_a: Vec<Vec<u8>> = net
        .delivered
        .iter()
        .filter(|wire| wire.to == addr(1001) && wire.message_type() == 4)
        .map(|wire| wire.bytes.clone())
        .chain(sealed_to_a.iter().map(|sealed| {
            let mut message = sealed[..SEALED_HEADER_LEN].to_vec();
            message[0] = 4;
            message
        }))
        .collect();
    assert!(!sealed_to_a.is_empty() && !data_to_a.is_empty());
    let response_to_a = net
        .delivered
        .iter()
        .find(|wire| wire.to == addr(1001) && wire.message_type() == 2)
        .map(|wire| wire.bytes.clone())
        .unwrap();
    let initiation_to_b = net
        .delivered
        .iter()
        .find(|wire| wire.to == addr(1002) && wire.message_type() == 1)
        .map(|wire| wire.bytes.clone())
        .unwrap();
    let live_index: [u8; 4] = data_to_a[0][4..8].try_into().unwrap();
    let live = u32::from_le_bytes(live_index);
    let mut stranger = Node::new(9, 1009);
    let a_at_stranger = stranger.add(&net.nodes[0], Some(addr(1001)));
    stranger
        .send(a_at_stranger, &mesh_packet(&stranger.key(), &a_key, b"x"))
        .unwrap();
    let stranger_initiation = stranger.drain().remove(0).1;
    // A message of type `kind` with random contents but for `index`: the receiver index of a
    // response, cookie reply or data message, the sender index of an initiation.
    let message = |rng: &mut Rng, kind: u8, index: u32, len: usize| {
        let mut bytes = vec![kind, 0, 0, 0];
        bytes.extend(rng.bytes(len - 4));
        let at = if kind == 2 { 8 } else { 4 };
        bytes[at..at + 4].copy_from_slice(&index.to_le_bytes());
        bytes
    };

    let mut flood = Flood::default();
    for _ in 0..3000 {
        let from = addr(rng.range(1000, 1010) as u16);
        let (datagram, counter): (Vec<u8>, &mut u64) = match rng.below(18) {
            // Longer than any datagram the node accepts, some naming the live session.
            0 => (rng.some_bytes(MAX_DATAGRAM + 1, 6000), &mut flood.oversized),
            1 => {
                let len = if rng.below(2) == 0 {
                    4000
                } else {
                    MAX_DATAGRAM + 1
                };
                (message(&mut rng, 4, live, len), &mut flood.oversized)
            }
            // Random bytes that are no WireGuard message type.
            2 => {
                let mut bytes = rng.some_bytes(0, MAX_DATAGRAM);
                if let Some(first) = bytes.first_mut() {
                    *first = rng.range(usize::from(SEALED_HEADER_TYPE) + 1, 255) as u8;
                }
                (bytes, &mut flood.malformed)
            }
            // Truncated messages.
            3 => {
                let len = rng.range(0, stranger_initiation.len() - 1);
                (stranger_initiation[..len].to_vec(), &mut flood.malformed)
            }
            4 => {
                let len = rng.range(0, response_to_a.len() - 1);
                (response_to_a[..len].to_vec(), &mut flood.malformed)
            }
            5 => {
                let data = &data_to_a[rng.below(data_to_a.len())];
                let len = rng.range(0, 31.min(data.len() - 1));
                (data[..len].to_vec(), &mut flood.malformed)
            }
            // Handshake messages whose mac1 is not for A's key.
            6 => {
                let sender = rng.next() as u32;
                (message(&mut rng, 1, sender, 148), &mut flood.bad_mac)
            }
            7 => (initiation_to_b.clone(), &mut flood.bad_mac),
            8 => {
                let mut bytes = stranger_initiation.clone();
                let at = rng.below(bytes.len() - 40) + 8;
                bytes[at] ^= 1 << rng.below(8);
                (bytes, &mut flood.bad_mac)
            }
            9 => (message(&mut rng, 2, live, 92), &mut flood.bad_mac),
            // Messages for sessions that do not exist.
            10 => {
                let index = (rng.range(100, 1 << 20) as u32) << 8 | rng.below(256) as u32;
                let (kind, len) = match rng.below(3) {
                    0 => (2, 92),
                    1 => (3, 64),
                    _ => (4, rng.range(32, MAX_DATAGRAM)),
                };
                (
                    message(&mut rng, kind, index, len),
                    &mut flood.unknown_index,
                )
            }
            // Data for the live session that does not authenticate, or is replayed.
            11 => {
                let len = rng.range(32, MAX_DATAGRAM);
                (message(&mut rng, 4, live, len), &mut flood.decrypt_failed)
            }
            12 => (
                data_to_a[rng.below(data_to_a.len())].clone(),
                &mut flood.decrypt_failed,
            ),
            // Sealed headers: cut short, for no session, forged or replayed for the live one.
            13 => {
                let sealed = &sealed_to_a[rng.below(sealed_to_a.len())];
                let len = rng.range(0, SEALED_HEADER_LEN - 1);
                (sealed[..len].to_vec(), &mut flood.malformed)
            }
            14 => {
                let index = (rng.range(100, 1 << 20) as u32) << 8 | rng.below(256) as u32;
                let len = rng.range(SEALED_HEADER_LEN, MAX_DATAGRAM);
                (
                    message(&mut rng, SEALED_HEADER_TYPE, index, len),
                    &mut flood.unknown_index,
                )
            }
            15 => {
                let len = rng.range(SEALED_HEADER_LEN, MAX_DATAGRAM);
                (
                    message(&mut rng, SEALED_HEADER_TYPE, live, len),
                    &mut flood.decrypt_failed,
                )
            }
            16 => (
                sealed_to_a[rng.below(sealed_to_a.len())].clone(),
                &mut flood.decrypt_failed,
            ),
            // A stranger's initiation, again and again.
            _ => (
                stranger_initiation.clone(),
                &mut flood.unknown_key_or_rate_limited,
            ),
        };
        *counter += 1;
        flood.sent += 1;
        assert!(
            !net.nodes[0].deliver(now, from, &datagram),
            "garbage delivered"
        );
    }
    flood
}

#[test]
fn garbage_is_dropped_and_counted_by_reason() {
    let (mut net, b_at_a, _) = connected_pair();
    let flood = flood_with_garbage(&mut net, 0x5eed_cafe_f00d_0001);
    let drops = net.nodes[0].drops();
    assert_eq!(drops.total(), flood.sent, "{drops:?} {flood:?}");
    assert!(flood.sent >= 3000);
    assert_eq!(drops.oversized, flood.oversized);
    assert_eq!(drops.malformed, flood.malformed);
    assert_eq!(drops.bad_mac, flood.bad_mac);
    assert_eq!(drops.unknown_index, flood.unknown_index);
    assert_eq!(drops.decrypt_failed, flood.decrypt_failed);
    assert_eq!(
        drops.unknown_key + drops.rate_limited,
        flood.unknown_key_or_rate_limited
    );
    assert!(drops.unknown_key > 0);
    assert_eq!((drops.not_ipv6, drops.other), (0, 0));
    // Nothing was answered but, past the rate limit, cookie replies to whoever sent initiations.
    let answers = net.nodes[0].drain();
    assert_eq!(answers.len() as u64, drops.rate_limited);
    assert!(answers
        .iter()
        .all(|(_, bytes)| bytes.len() == 64 && bytes[0] == 3));
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1002))
    );
}

#[test]
fn session_still_works_after_garbage() {
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let before = net.nodes[0].transports.info().next().unwrap();
    flood_with_garbage(&mut net, 0x5eed_cafe_f00d_0002);
    net.nodes[0].drain();
    let after = net.nodes[0].transports.info().next().unwrap();
    assert_eq!(after.rx_packets, before.rx_packets, "garbage authenticated");
    exchange(&mut net, b_at_a, a_at_b, b"after the storm");
    exchange(&mut net, b_at_a, a_at_b, b"and again");
    assert_eq!(net.nodes[1].drops(), DropCounters::default());
}

#[test]
fn removed_neighbour_is_refused_and_its_id_unknown() {
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let b_key = net.nodes[1].key();
    let node = &mut net.nodes[0];
    assert_eq!(
        node.transports.remove(&b_key, &mut node.indexes),
        Some(b_at_a)
    );
    assert_eq!(
        node.send(b_at_a, &[0u8; 40]).unwrap_err(),
        SendError::UnknownTransport
    );
    let a_key = net.nodes[0].key();
    net.nodes[1]
        .send(a_at_b, &mesh_packet(&b_key, &a_key, b"anyone?"))
        .unwrap();
    net.pump();
    assert!(net.nodes[0].received.len() == 1, "nothing new delivered");
    assert_eq!(net.nodes[0].drops().unknown_index, 1);
}

#[test]
fn first_packets_sent_from_both_sides_at_once_both_arrive() {
    let (mut net, b_at_a, a_at_b) = pair();
    let (a_key, b_key) = (net.nodes[0].key(), net.nodes[1].key());
    let to_b: Vec<_> = (0..3u8)
        .map(|n| mesh_packet(&a_key, &b_key, &[n; 100]))
        .collect();
    let to_a: Vec<_> = (0..3u8)
        .map(|n| mesh_packet(&b_key, &a_key, &[n; 200]))
        .collect();
    for (a_packet, b_packet) in to_b.iter().zip(&to_a) {
        net.nodes[0].send(b_at_a, a_packet).unwrap();
        net.nodes[1].send(a_at_b, b_packet).unwrap();
    }
    net.pump();
    let at_b: Vec<_> = net.nodes[1]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    let at_a: Vec<_> = net.nodes[0]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(at_b, to_b);
    assert_eq!(at_a, to_a);
    // Crossed initiations leave answers to abandoned handshakes: boringtun refuses those.
    for node in &net.nodes {
        let drops = node.drops();
        assert_eq!(drops.total(), drops.other, "{drops:?}");
    }
}

#[test]
fn decrypted_ipv4_is_counted_but_still_authenticates() {
    let (mut net, b_at_a, a_at_b) = connected_pair();
    let mut ipv4 = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    ipv4.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    ipv4.extend_from_slice(&[0; 8]);
    net.nodes[1].send_from = addr(1005);
    net.nodes[1].listen.push(addr(1005));
    net.nodes[1].send(a_at_b, &ipv4).unwrap();
    net.pump();
    assert_eq!(net.nodes[0].received.len(), 1, "not delivered");
    assert_eq!(net.nodes[0].drops().not_ipv6, 1);
    assert_eq!(net.nodes[0].drops().total(), 1);
    assert_eq!(
        net.nodes[0].transports.endpoint_of(b_at_a),
        Some(addr(1005))
    );
}

#[test]
fn timers_run_quietly_on_an_idle_session() {
    let (mut net, _, _) = connected_pair();
    let now = net.now;
    let node = &mut net.nodes[0];
    assert_eq!(
        node.transports.next_timer(),
        None,
        "due at once before the first run"
    );
    node.transports.handle_timeout(now, &mut node.outbox);
    assert_eq!(
        node.transports.next_timer(),
        Some(now + Duration::from_millis(250))
    );
    assert!(node.outbox.is_empty());
}
