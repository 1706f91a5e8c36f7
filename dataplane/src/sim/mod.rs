//! An in-memory mesh for tests and benchmarks: several nodes, a virtual clock that drives the
//! nodes' own timers, and links that drop, delay or die, all from one seed. The WireGuard
//! sessions are the real ones (boringtun reads the wall clock for its own timers, which short
//! scenarios never reach). [`Sim`] runs bare nodes; [`AppSim`] runs whole services, apps
//! included, with their kernel sockets, TUN devices and host in memory. It panics on misuse:
//! it is a test harness, not part of a node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apps;
mod network;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::identity::{NodeKey, SecretKey};
use crate::node::{Event, Node, NodeOptions};
use crate::service::InterfaceAddress;
use crate::transport::NeighbourConfig;
use network::Network;
use rand_core::RngCore;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};

pub use apps::{AppNode, AppSim, StreamId};

/// A small seeded generator (SplitMix64): the simulator's and the nodes' only randomness.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// How a link between two nodes behaves, the same both ways.
#[derive(Debug, Clone, Copy)]
pub struct LinkModel {
    /// One-way delay.
    pub delay: Duration,
    /// Chance in a million that a datagram is lost.
    pub loss_ppm: u32,
    /// A dead link loses everything.
    pub alive: bool,
    /// This many next datagrams are lost (either way), then the link behaves again.
    pub lose_next: u32,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            delay: Duration::from_millis(5),
            loss_ppm: 0,
            alive: true,
            lose_next: 0,
        }
    }
}

/// Every datagram a node received or sent, and every decrypted mesh packet it saw.
#[derive(Debug, Default)]
pub struct Capture {
    pub datagrams: Vec<Vec<u8>>,
    pub decrypted: Vec<Vec<u8>>,
}

impl Capture {
    /// Whether `needle` occurs in anything captured.
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.datagrams
            .iter()
            .chain(self.decrypted.iter())
            .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub node: Node,
    pub key: NodeKey,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    pub capture: Option<Arc<Mutex<Capture>>>,
    /// The options it was made with (a restart makes it anew from them).
    pub options: NodeOptions,
}

/// The simulated wall clock at the start, in milliseconds since the Unix epoch: what a node's
/// first advert sequence number is taken from.
const WALL_CLOCK_START_MS: u64 = 1_800_000_000_000;

/// The simulated mesh.
#[derive(Debug)]
pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub nodes: Vec<SimNode>,
    network: Network,
    /// Datagrams lost to link models.
    pub lost: u64,
    by_addr: HashMap<SocketAddr, usize>,
    /// Each node's next deadline as last asked, and the same in a queue (entries that no
    /// longer match are stale).
    deadlines: Vec<Option<Instant>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
}

/// `count` secret keys drawn from `rng`.
fn secrets(rng: &mut SplitMix, count: usize) -> Vec<SecretKey> {
    (0..count)
        .map(|_| {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            SecretKey::from(bytes)
        })
        .collect()
}

/// The UDP address of node `i`.
fn node_address(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10_000 + i as u16))
}

/// Node `i`'s options: its key, a transport to each node `links` joins it to, and its first
/// advert sequence number taken from the simulated wall clock.
fn node_options(i: usize, secrets: &[SecretKey], links: &[(usize, usize)]) -> NodeOptions {
    let mut options = NodeOptions::new(secrets[i].clone());
    options.advert_sequence_start = WALL_CLOCK_START_MS;
    for (a, b) in links {
        let other = if *a == i {
            *b
        } else if *b == i {
            *a
        } else {
            continue;
        };
        options.neighbours.push(NeighbourConfig {
            key: secrets[other].public(),
            endpoint: Some(node_address(other)),
            keepalive: None,
        });
    }
    options
}

impl Sim {
    /// `count` nodes joined by `links` (index pairs), each node's options adjusted by `tune`.
    pub fn new(
        seed: u64,
        count: usize,
        links: &[(usize, usize)],
        tune: impl Fn(usize, &mut NodeOptions),
    ) -> Sim {
        let start = Instant::now();
        let mut rng = SplitMix(seed);
        let secrets = secrets(&mut rng, count);
        let mut nodes = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            let mut options = node_options(i, &secrets, links);
            tune(i, &mut options);
            let node =
                Node::new(options.clone(), start, Box::new(SplitMix(rng.next_u64()))).unwrap();
            nodes.push(SimNode {
                key: secret.public(),
                node,
                addr: node_address(i),
                events: Vec::new(),
                capture: None,
                options,
            });
        }
        let by_addr = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.addr, i))
            .collect();
        Sim {
            now: start,
            start,
            nodes,
            network: Network::new(links, rng),
            lost: 0,
            by_addr,
            deadlines: vec![None; count],
            timers: BinaryHeap::new(),
        }
    }

    /// Restarts node `i`: a new node with the same key and options and nothing else (no
    /// routes, sessions or adverts), whose advert sequence starts from the simulated wall clock.
    pub fn restart(&mut self, i: usize) {
        let mut options = self.nodes[i].options.clone();
        options.advert_sequence_start =
            WALL_CLOCK_START_MS + u64::try_from(self.elapsed().as_millis()).unwrap();
        let rng = Box::new(SplitMix(self.network.seed()));
        self.nodes[i].node = Node::new(options, self.now, rng).unwrap();
        self.nodes[i].events.clear();
        self.nodes[i].capture = None;
    }

    /// The key of node `i`.
    pub fn key(&self, i: usize) -> NodeKey {
        self.nodes[i].key
    }

    /// The keys of the nodes listed.
    pub fn path(&self, nodes: &[usize]) -> Vec<NodeKey> {
        nodes.iter().map(|i| self.key(*i)).collect()
    }

    /// Changes how the link between `a` and `b` behaves.
    pub fn link(&mut self, a: usize, b: usize) -> &mut LinkModel {
        self.network.link(a, b)
    }

    /// Records everything node `i` handles from now on.
    pub fn capture(&mut self, i: usize) -> Arc<Mutex<Capture>> {
        let capture = Arc::new(Mutex::new(Capture::default()));
        let tap_capture = capture.clone();
        self.nodes[i].node.set_tap(Box::new(move |_, packet| {
            tap_capture.lock().unwrap().decrypted.push(packet.to_vec());
        }));
        self.nodes[i].capture = Some(capture.clone());
        capture
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves every node's outgoing datagrams onto the links and collects events.
    fn collect_outputs(&mut self) {
        for from in 0..self.nodes.len() {
            self.collect_outputs_of(from);
        }
    }

    /// Moves node `from`'s outgoing datagrams onto the links, collects its events and notes
    /// its next deadline.
    fn collect_outputs_of(&mut self, from: usize) {
        while let Some(datagram) = self.nodes[from].node.poll_transmit() {
            let to = self.by_addr.get(&datagram.to).copied();
            if let Some(capture) = &self.nodes[from].capture {
                capture
                    .lock()
                    .unwrap()
                    .datagrams
                    .push(datagram.bytes().to_vec());
            }
            let sent = self.network.send(self.now, from, to, datagram.bytes());
            if to.is_some() && !sent {
                self.lost += 1;
            }
            self.nodes[from].node.recycle(datagram);
        }
        while let Some(event) = self.nodes[from].node.poll_event() {
            self.nodes[from].events.push(event);
        }
        let (at, _) = self.nodes[from].node.poll_timeout();
        if Some(at) != self.deadlines[from] {
            self.deadlines[from] = Some(at);
            self.timers.push(Reverse((at, from)));
        }
    }

    /// The earliest node deadline, dropping queue entries that no longer hold.
    fn next_deadline(&mut self) -> Option<(Instant, usize)> {
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if self.deadlines[i] == Some(at) {
                return Some((at, i));
            }
            self.timers.pop();
        }
        None
    }

    /// Delivers a datagram from outside the mesh (an attacker) to node `to`.
    pub fn inject(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.nodes[to].node.handle_datagram(now, from, bytes);
        self.collect_outputs_of(to);
    }

    /// Runs the mesh until `done` holds or `limit` of virtual time has passed; says which.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        // Commands given to nodes between runs leave outputs and deadlines: take every node's.
        for i in 0..self.nodes.len() {
            let (at, _) = self.nodes[i].node.poll_timeout();
            self.deadlines[i] = Some(at);
            self.timers.push(Reverse((at, i)));
        }
        self.collect_outputs();
        loop {
            if done(self) {
                return true;
            }
            let next_delivery = self.network.next_arrival();
            let next_timer = self.next_deadline().map(|(at, _)| at);
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(deadline),
            };
            if next > deadline {
                self.now = deadline;
                return false;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(flight) = self.network.pop_arrived(now) {
                let from = self.nodes[flight.from].addr;
                if let Some(capture) = &self.nodes[flight.to].capture {
                    capture.lock().unwrap().datagrams.push(flight.bytes.clone());
                }
                self.nodes[flight.to]
                    .node
                    .handle_datagram(now, from, &flight.bytes);
                self.collect_outputs_of(flight.to);
            }
            while let Some((at, i)) = self.next_deadline() {
                if at > now {
                    break;
                }
                self.timers.pop();
                self.nodes[i].node.handle_timeout(now);
                self.deadlines[i] = None;
                self.collect_outputs_of(i);
            }
        }
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Whether node `i` has logged an event matching `matches`.
    pub fn has_event(&self, i: usize, matches: impl Fn(&Event) -> bool) -> bool {
        self.nodes[i].events.iter().any(matches)
    }

    /// Node `from` sends `payload` to node `to` over its route, in an IPv6 packet from its mesh
    /// address to `to`'s, and returns that packet; panics when it has no route to send it on.
    pub fn send(&mut self, from: usize, to: usize, payload: &[u8]) -> Vec<u8> {
        let packet = ipv6_packet(
            self.nodes[from].node.address(),
            self.nodes[to].node.address(),
            payload,
        );
        let peer = self.key(to);
        self.nodes[from].node.send_to(&peer, &packet).unwrap();
        packet
    }

    /// Takes node `i`'s packets received from `peer`, in order.
    pub fn take_packets(&mut self, i: usize, from: NodeKey) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        self.nodes[i].events.retain(|event| match event {
            Event::Packet { peer, packet } if *peer == from => {
                packets.push(packet.clone());
                false
            }
            _ => true,
        });
        packets
    }
}

/// An address of a host's network interface: `interface` has `cidr` ("address/len") on-link.
pub fn interface_address(interface: &str, cidr: &str) -> InterfaceAddress {
    let (address, len) = cidr.split_once('/').unwrap();
    InterfaceAddress {
        interface: interface.to_owned(),
        address: address.parse().unwrap(),
        prefix_len: len.parse().unwrap(),
    }
}

/// An IPv6 packet from `src` to `dst` with no next header (59) carrying `payload`.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Ipv6NoNxt,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0u8; repr.buffer_len() + payload.len()];
    let mut view = Ipv6Packet::new_unchecked(&mut packet);
    repr.emit(&mut view);
    view.payload_mut().copy_from_slice(payload);
    packet
}

/// An IPv4 packet from `src` to `dst` of an experimental protocol (253) carrying `payload`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Unknown(253),
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0u8; repr.buffer_len() + payload.len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet);
    repr.emit(&mut view, &ChecksumCapabilities::default());
    view.payload_mut().copy_from_slice(payload);
    packet
}
