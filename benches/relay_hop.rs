//! One relay hop of a route-session message — open its sealed mesh header, look up the route id,
//! rewrite the label, seal the header for the next hop — through the public `Node` API the
//! daemon drives (`handle_datagram`, then `poll_transmit` and `recycle`), against raw boringtun
//! in the same run: `Tunn::decapsulate` of the whole packet's datagram on one session and
//! `Tunn::encapsulate` of its payload on another, the work of a hop that seals every byte. The
//! figure that matters is the ratio, printed at the end.
//!
//! Every packet is fresh (a replayed datagram would stop at boringtun's counter check and time
//! the error path): datagrams are encrypted in chunks outside the timed loop, and every chunk is
//! checked to have gone all the way through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use common::established_pair;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use skywire_dataplane::index::IndexAllocator;
use skywire_dataplane::node::{Node, NodeOptions, MESH_MTU};
use skywire_dataplane::sim::SplitMix;
use skywire_dataplane::wire::control::emit_control_packet;
use skywire_dataplane::wire::{ControlMessage, MeshHeader, MeshPacket, NextHeader, RouteId};
use skywire_dataplane::{
    NeighbourConfig, NodeKey, Outbox, SecretKey, TransportId, Transports, MAX_DATAGRAM,
};

/// Mesh packet sizes: tiny, and the full mesh MTU.
const SIZES: [usize; 2] = [64, MESH_MTU as usize];

/// Datagrams encrypted ahead of each timed loop.
const CHUNK: usize = 256;

/// What the hop's WireGuard adds to a mesh packet.
const WIREGUARD_OVERHEAD: usize = 32;

/// Rounds of the final summary, each timing one chunk on each side: a chunk takes well under a
/// millisecond, so that what else the machine runs spoils few of them.
const SUMMARY_ROUNDS: usize = 801;

/// One side of the comparison: relays `packets` fresh packets and returns the time it took,
/// datagram generation and checks excluded.
trait Hop {
    fn relay(&mut self, packets: u64) -> Duration;
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// A mesh packet of `size` bytes: an IPv6 header and a payload the relay never reads.
fn mesh_packet(route_id: RouteId, src: NodeKey, dst: NodeKey, size: usize) -> Vec<u8> {
    let mut packet = vec![0xa5u8; size];
    MeshHeader {
        route_id,
        next_header: NextHeader::Session,
        hop_limit: 64,
        src: src.mesh_address(),
        dst: dst.mesh_address(),
        payload_len: size - 40,
    }
    .emit(&mut packet)
    .unwrap();
    packet
}

/// Buffers for one chunk of datagrams, reused from chunk to chunk.
struct Chunk {
    datagrams: Vec<Vec<u8>>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            datagrams: (0..CHUNK)
                .map(|_| Vec::with_capacity(MAX_DATAGRAM))
                .collect(),
        }
    }

    /// Refills the first `count` buffers, each with what `encrypt` writes.
    fn fill(&mut self, count: usize, mut encrypt: impl FnMut(&mut Vec<u8>)) -> &[Vec<u8>] {
        for datagram in &mut self.datagrams[..count] {
            datagram.clear();
            encrypt(datagram);
        }
        &self.datagrams[..count]
    }
}

// ----- skywire: node A sends over a real route A → B → C; node B is timed -----

/// A route A → B → C set up by the nodes' own protocol. B and C are `Node`s; A is a bare
/// `Transports` on the real A–B WireGuard session, so that it can send mesh packets of any size
/// on the route (a route session's smallest message makes a 72-byte mesh packet).
struct SkywireHop {
    now: Instant,
    a: Transports,
    a_outbox: Outbox,
    a_to_b: TransportId,
    b: Node,
    /// The mesh packet A sends; B's forward id is in its label.
    packet: Vec<u8>,
    chunk: Chunk,
}

const PORT_A: u16 = 10_000;
const PORT_B: u16 = 10_001;
const PORT_C: u16 = 10_002;

impl SkywireHop {
    fn new(size: usize) -> SkywireHop {
        let now = Instant::now();
        let secret = |byte| SecretKey::from([byte; 32]);
        let (a_secret, b_secret, c_secret) = (secret(1), secret(2), secret(3));
        let (a_key, b_key, c_key) = (a_secret.public(), b_secret.public(), c_secret.public());
        let neighbour = |key, port| NeighbourConfig {
            key,
            endpoint: Some(addr(port)),
            keepalive: None,
        };
        let node = |secret: SecretKey, neighbours, seed| {
            let mut options = NodeOptions::new(secret);
            options.neighbours = neighbours;
            Node::new(options, now, Box::new(SplitMix(seed))).unwrap()
        };
        let mut b = node(
            b_secret,
            vec![neighbour(a_key, PORT_A), neighbour(c_key, PORT_C)],
            2,
        );
        let mut c = node(c_secret, vec![neighbour(b_key, PORT_B)], 3);
        let mut a = Transports::new(&a_secret);
        let a_to_b = a
            .add(neighbour(b_key, PORT_B), &mut IndexAllocator::default())
            .unwrap();
        let mut a_outbox = Outbox::default();

        // A asks for the route; the handshakes A–B and B–C happen on the way.
        let request = ControlMessage::SetupRequest {
            setup_id: 7,
            hop_index: 1,
            mtu: MESH_MTU,
            reverse_id: RouteId::new(1).unwrap(),
            path: vec![a_key, b_key, c_key],
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let len = emit_control_packet(
            RouteId::CONTROL,
            a_key.mesh_address(),
            b_key.mesh_address(),
            &request,
            &mut buf,
        )
        .unwrap();
        a.send(a_to_b, &buf[..len], &mut a_outbox).unwrap();

        let mut forward_id = None;
        for _ in 0..100 {
            let mut moved = false;
            while let Some(datagram) = a_outbox.pop() {
                b.handle_datagram(now, addr(PORT_A), datagram.bytes());
                a_outbox.recycle(datagram);
                moved = true;
            }
            while let Some(datagram) = c.poll_transmit() {
                b.handle_datagram(now, addr(PORT_C), datagram.bytes());
                c.recycle(datagram);
                moved = true;
            }
            while let Some(datagram) = b.poll_transmit() {
                if datagram.to == addr(PORT_C) {
                    c.handle_datagram(now, addr(PORT_B), datagram.bytes());
                } else if let Some((_, packet)) =
                    a.receive(now, addr(PORT_B), datagram.bytes(), &mut buf, &mut a_outbox)
                {
                    let packet = MeshPacket::new_checked(&*packet).unwrap();
                    if let Ok(ControlMessage::SetupAccept {
                        setup_id: 7,
                        forward_id: id,
                        ..
                    }) = ControlMessage::parse(packet.payload())
                    {
                        forward_id = Some(id);
                    }
                }
                b.recycle(datagram);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let forward_id = forward_id.expect("B accepted the route");

        let mut hop = SkywireHop {
            now,
            a,
            a_outbox,
            a_to_b,
            b,
            packet: mesh_packet(forward_id, a_key, c_key, size),
            chunk: Chunk::new(),
        };

        // The route really reaches C: C counts the relayed packets against its own rule.
        let c_rule_packets = |c: &Node| c.table().iter().map(|(_, rule)| rule.packets).sum::<u64>();
        let before = c_rule_packets(&c);
        for _ in 0..4 {
            let datagram = hop.encrypt_one();
            hop.b.handle_datagram(now, addr(PORT_A), &datagram);
            while let Some(out) = hop.b.poll_transmit() {
                c.handle_datagram(now, addr(PORT_B), out.bytes());
                hop.b.recycle(out);
            }
        }
        assert_eq!(c_rule_packets(&c), before + 4, "C got B's relayed packets");
        hop
    }

    fn encrypt_one(&mut self) -> Vec<u8> {
        let mut datagram = Vec::new();
        encrypt_at_a(
            &mut self.a,
            &mut self.a_outbox,
            self.a_to_b,
            &self.packet,
            &mut datagram,
        );
        datagram
    }
}

fn encrypt_at_a(
    a: &mut Transports,
    outbox: &mut Outbox,
    to_b: TransportId,
    packet: &[u8],
    datagram: &mut Vec<u8>,
) {
    a.send(to_b, packet, outbox).unwrap();
    let sent = outbox.pop().expect("A encrypted the packet");
    datagram.extend_from_slice(sent.bytes());
    outbox.recycle(sent);
}

impl Hop for SkywireHop {
    fn relay(&mut self, packets: u64) -> Duration {
        let now = self.now;
        let from = addr(PORT_A);
        let to = addr(PORT_C);
        let expected_len = self.packet.len() + WIREGUARD_OVERHEAD;
        let node_drops = self.b.drops();
        let transport_drops = self.b.transports().drops();
        let mut elapsed = Duration::ZERO;
        let mut left = packets;
        while left > 0 {
            let count = left.min(CHUNK as u64) as usize;
            left -= count as u64;
            let (a, outbox, to_b, packet) =
                (&mut self.a, &mut self.a_outbox, self.a_to_b, &self.packet);
            let datagrams = self.chunk.fill(count, |datagram| {
                encrypt_at_a(a, outbox, to_b, packet, datagram)
            });
            let b = &mut self.b;
            let (mut produced, mut forwarded) = (0usize, 0usize);
            let start = Instant::now();
            for datagram in datagrams {
                b.handle_datagram(now, from, black_box(datagram));
                while let Some(out) = b.poll_transmit() {
                    produced += 1;
                    if out.to == to && out.bytes().len() == expected_len {
                        forwarded += 1;
                    }
                    b.recycle(black_box(out));
                }
            }
            elapsed += start.elapsed();
            assert_eq!(produced, count, "B sent one datagram per datagram from A");
            assert_eq!(forwarded, count, "B forwarded every datagram to C");
        }
        assert_eq!(self.b.drops(), node_drops, "B's node dropped nothing");
        assert_eq!(
            self.b.transports().drops(),
            transport_drops,
            "B's transports dropped nothing"
        );
        elapsed
    }
}

// ----- baseline: raw boringtun, decapsulate from A then encapsulate to C -----

/// Two established `Tunn` pairs: A → B (B decapsulates) and B → C (B encapsulates).
struct BoringtunHop {
    a: Tunn,
    b_from_a: Tunn,
    b_to_c: Tunn,
    packet: Vec<u8>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    chunk: Chunk,
}

impl BoringtunHop {
    fn new(size: usize) -> BoringtunHop {
        let (a, b_from_a) = established_pair(11, 12);
        let (b_to_c, _c) = established_pair(13, 14);
        let key = |byte| SecretKey::from([byte; 32]).public();
        BoringtunHop {
            a,
            b_from_a,
            b_to_c,
            packet: mesh_packet(RouteId::new(1).unwrap(), key(11), key(14), size),
            rx: vec![0u8; MAX_DATAGRAM],
            tx: vec![0u8; MAX_DATAGRAM],
            chunk: Chunk::new(),
        }
    }
}

impl Hop for BoringtunHop {
    fn relay(&mut self, packets: u64) -> Duration {
        let from = Some(addr(PORT_A).ip());
        let expected_len = self.packet.len() + WIREGUARD_OVERHEAD;
        let mut elapsed = Duration::ZERO;
        let mut left = packets;
        while left > 0 {
            let count = left.min(CHUNK as u64) as usize;
            left -= count as u64;
            let (a, packet) = (&mut self.a, &self.packet);
            let datagrams = self.chunk.fill(count, |datagram| {
                let mut buf = [0u8; MAX_DATAGRAM];
                let TunnResult::WriteToNetwork(bytes) = a.encapsulate(packet, &mut buf) else {
                    panic!("A could not encrypt");
                };
                datagram.extend_from_slice(bytes);
            });
            let (b_from_a, b_to_c) = (&mut self.b_from_a, &mut self.b_to_c);
            let (rx, tx) = (&mut self.rx, &mut self.tx);
            let mut forwarded = 0usize;
            let start = Instant::now();
            for datagram in datagrams {
                if let TunnResult::WriteToTunnelV6(packet, _) =
                    b_from_a.decapsulate(from, black_box(datagram), rx)
                {
                    if let TunnResult::WriteToNetwork(out) = b_to_c.encapsulate(packet, tx) {
                        if black_box(out).len() == expected_len {
                            forwarded += 1;
                        }
                    }
                }
            }
            elapsed += start.elapsed();
            assert_eq!(
                forwarded, count,
                "every decapsulate gave a packet and every encapsulate a datagram"
            );
        }
        elapsed
    }
}

// ----- the run -----

fn relay_hop(c: &mut Criterion) {
    let mut ratios = Vec::new();
    for size in SIZES {
        let mut skywire = SkywireHop::new(size);
        let mut boringtun = BoringtunHop::new(size);
        let mut group = c.benchmark_group(format!("relay_hop_{size}B"));
        group
            .throughput(Throughput::Bytes(size as u64))
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        group.bench_function("skywire", |bencher| {
            bencher.iter_custom(|packets| skywire.relay(packets));
        });
        group.bench_function("boringtun", |bencher| {
            bencher.iter_custom(|packets| boringtun.relay(packets));
        });
        group.finish();
        if measuring() {
            ratios.push((size, summary_ratio(&mut skywire, &mut boringtun)));
        }
    }
    if ratios.is_empty() {
        return;
    }
    println!();
    for (size, ratio) in ratios {
        let target = if size == usize::from(MESH_MTU) {
            " (target ≤ 1.10)"
        } else {
            ""
        };
        println!("relay hop {size} B: {ratio:.2} × raw boringtun{target}");
    }
}

/// Whether criterion measures (`cargo bench`), rather than running each bench once as a test
/// (`cargo test --benches`), listing them or profiling: criterion's own reading of its arguments.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| {
        args.iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
    };
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// Times both sides in alternation (each going first in every other round), one chunk of packets
/// each round, and divides their medians: alternation spreads whatever else the machine does
/// over both.
fn summary_ratio(skywire: &mut SkywireHop, boringtun: &mut BoringtunHop) -> f64 {
    let mut times = (Vec::new(), Vec::new());
    for round in 0..SUMMARY_ROUNDS {
        if round % 2 == 0 {
            times.0.push(skywire.relay(CHUNK as u64));
            times.1.push(boringtun.relay(CHUNK as u64));
        } else {
            times.1.push(boringtun.relay(CHUNK as u64));
            times.0.push(skywire.relay(CHUNK as u64));
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64()
    };
    median(&mut times.0) / median(&mut times.1)
}

criterion_group!(benches, relay_hop);
criterion_main!(benches);
