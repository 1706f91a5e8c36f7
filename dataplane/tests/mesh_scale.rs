//! Adverts at scale: a random mesh of 500 nodes with an average of four links each, in the
//! simulator with the real transports and real signatures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use skywire_dataplane::sim::{Sim, SplitMix};
use skywire_dataplane::wire::control::ADVERT_TYPE;
use skywire_dataplane::wire::mesh::{MeshPacket, NextHeader};

const NODES: usize = 500;
/// How often each advert (origin, sequence) crossed each link (its two ends, in order).
type Crossings = HashMap<(usize, u64, usize, usize), u8>;
const LINKS: usize = NODES * 4 / 2;

/// A connected random graph: a random tree, then random extra links up to `LINKS`, each
/// with a one-way delay of 1 to 20 ms.
fn random_mesh(rng: &mut SplitMix) -> Vec<(usize, usize, u64)> {
    let mut links = Vec::new();
    let mut present = std::collections::HashSet::new();
    for node in 1..NODES {
        let other = (rng.next_u64() % node as u64) as usize;
        present.insert((other, node));
        links.push((other, node, 1 + rng.next_u64() % 20));
    }
    while links.len() < LINKS {
        let a = (rng.next_u64() % NODES as u64) as usize;
        let b = (rng.next_u64() % NODES as u64) as usize;
        let key = (a.min(b), a.max(b));
        if a != b && present.insert(key) {
            links.push((key.0, key.1, 1 + rng.next_u64() % 20));
        }
    }
    links
}

/// The lowest costs from `from` (twice the one-way delays, as the nodes measure them).
fn costs_from(from: usize, links: &[(usize, usize, u64)]) -> Vec<u64> {
    let mut adjacent = vec![Vec::new(); NODES];
    for (a, b, delay) in links {
        adjacent[*a].push((*b, 2 * delay));
        adjacent[*b].push((*a, 2 * delay));
    }
    let mut cost = vec![u64::MAX; NODES];
    let mut queue = BinaryHeap::new();
    cost[from] = 0;
    queue.push(Reverse((0, from)));
    while let Some(Reverse((at_cost, at))) = queue.pop() {
        if at_cost > cost[at] {
            continue;
        }
        for (next, link) in &adjacent[at] {
            if at_cost + link < cost[*next] {
                cost[*next] = at_cost + link;
                queue.push(Reverse((cost[*next], *next)));
            }
        }
    }
    cost
}

/// Convergence within K = 1 advert interval (60 s).
///
/// Why one is enough: a link comes up within a few round trips of the start (a handshake and
/// a probe; the end with the lower key starts, so the two handshakes do not collide), and a
/// node advertises 250 ms after its links change, so every node advertises its links within
/// about 300 ms; an advert crosses the mesh in its diameter (about a dozen hops here) times a
/// hop's delay (at most 20 ms), well under a second; and a neighbour whose link comes up late
/// gets every advert held at once. No step waits for the periodic advert. (It converges
/// within a second or two of virtual time here; the interval leaves room for a handshake that
/// boringtun retries after 5 s of its own wall clock, which this run stretches.)
///
/// The byte bound: every advert crosses each link at most twice, so a node sends each one at
/// most once on each of its links. A node's advert is 110 + 36 × (its links) bytes, so all
/// the nodes' adverts together are 110 × NODES + 72 × LINKS bytes; in its first minute a node
/// advertises at most `ORIGINATIONS` times (when its links come up; again only if one comes
/// up late), and after that once an interval. So node `i` sends at most
/// degree(i) × ORIGINATIONS × (110 × NODES + 72 × LINKS) advert bytes in the first minute:
/// 1.5 MB for a node with four links here, and a third of that each minute after.
const ORIGINATIONS: u64 = 3;

#[test]
fn a_500_node_mesh_converges_within_one_advert_interval() {
    let wall = Instant::now();
    let mut rng = SplitMix(0x500);
    let links = random_mesh(&mut rng);
    let pairs: Vec<(usize, usize)> = links.iter().map(|(a, b, _)| (*a, *b)).collect();
    // Adverts are what this test measures, not liveness: probing at 2 s instead of the
    // default keeps the simulated minute short (1000 links' probes are most of its packets).
    let mut sim = Sim::new(0x5ca1e, NODES, &pairs, |_, options| {
        options.probe_interval = Duration::from_secs(2);
        options.dead_after = Duration::from_secs(10);
    });
    for (a, b, delay) in &links {
        sim.link(*a, *b).delay = Duration::from_millis(*delay);
    }
    let interval = sim.nodes[0].options.advert_interval;
    let mut degree = vec![0u64; NODES];
    for (a, b) in &pairs {
        degree[*a] += 1;
        degree[*b] += 1;
    }

    // Every advert every node receives, by (origin, sequence, link): taps see them decrypted.
    let index_of: HashMap<[u8; 32], usize> =
        (0..NODES).map(|i| (*sim.key(i).as_bytes(), i)).collect();
    let index_of = Arc::new(index_of);
    let crossings: Arc<Mutex<Crossings>> = Arc::default();
    for i in 0..NODES {
        let neighbours: HashMap<_, usize> = sim.nodes[i]
            .node
            .transports()
            .info()
            .map(|info| (info.id, index_of[info.key.as_bytes()]))
            .collect();
        let crossings = crossings.clone();
        let index_of = index_of.clone();
        sim.nodes[i].node.set_tap(Box::new(move |ingress, packet| {
            let Ok(mesh) = MeshPacket::new_checked(packet) else {
                return;
            };
            let payload = mesh.payload();
            if mesh.next_header() != NextHeader::Control || payload.get(1) != Some(&ADVERT_TYPE) {
                return;
            }
            let (Some(origin), Some(sequence)) = (payload.get(2..34), payload.get(34..42)) else {
                return;
            };
            let origin = index_of[origin];
            let sequence = u64::from_be_bytes(sequence.try_into().unwrap());
            let neighbour = neighbours[&ingress];
            let link = (i.min(neighbour), i.max(neighbour));
            *crossings
                .lock()
                .unwrap()
                .entry((origin, sequence, link.0, link.1))
                .or_default() += 1;
        }));
    }

    let converged = |sim: &Sim| {
        let latest: Vec<u64> = (0..NODES)
            .map(|j| sim.nodes[j].node.advert_sequence())
            .collect();
        (0..NODES).all(|i| {
            (0..NODES).all(|j| {
                i == j || sim.nodes[i].node.advert_sequence_of(&sim.key(j)) == Some(latest[j])
            })
        })
    };
    let mut converged_at = None;
    while converged_at.is_none() && sim.elapsed() < interval {
        sim.run_for(Duration::from_secs(1));
        if converged(&sim) {
            converged_at = Some(sim.elapsed());
        }
    }
    // The rest of the minute, for the byte count.
    let rest = interval.saturating_sub(sim.elapsed());
    sim.run_for(rest);
    let converged_at = converged_at.expect("no convergence within one advert interval");
    assert!(converged(&sim), "the mesh did not stay converged");

    // Path choice agrees with the truth, between 250 pairs drawn at random.
    for from in [0, 17, 123, 256, 499] {
        let truth = costs_from(from, &links);
        for _ in 0..50 {
            let to = (rng.next_u64() % NODES as u64) as usize;
            if to == from {
                continue;
            }
            let choice = sim.nodes[from].node.find_route(&sim.key(to));
            let choice = choice.unwrap_or_else(|| panic!("{from} has no path to {to}"));
            assert_eq!(
                choice.cost,
                Duration::from_millis(truth[to]),
                "{from} -> {to}"
            );
        }
    }

    let crossings = crossings.lock().unwrap();
    let most = crossings.values().copied().max().unwrap();
    assert!(most <= 2, "an advert crossed a link {most} times");
    let adverts: std::collections::HashSet<(usize, u64)> = crossings
        .keys()
        .map(|(origin, sequence, _, _)| (*origin, *sequence))
        .collect();
    let mut per_origin = vec![0u64; NODES];
    for (origin, _) in &adverts {
        per_origin[*origin] += 1;
    }
    let most_originated = per_origin.iter().copied().max().unwrap();
    assert!(
        most_originated <= ORIGINATIONS,
        "a node advertised {most_originated} times"
    );
    // The sum over all nodes of their adverts' sizes, ORIGINATIONS times.
    let all_adverts = ORIGINATIONS * (110 * NODES as u64 + 36 * 2 * LINKS as u64);
    for (i, links_of) in degree.iter().enumerate() {
        let sent = sim.nodes[i].node.advert_counters().sent_bytes;
        let bound = links_of * all_adverts;
        assert!(
            sent <= bound,
            "node {i} sent {sent} advert bytes in a minute, bound {bound}"
        );
    }
    let total: u64 = (0..NODES)
        .map(|i| sim.nodes[i].node.advert_counters().sent_bytes)
        .sum();
    eprintln!(
        "{} adverts, {} crossings, at most {most} per link; {} advert bytes per node per minute on average; converged at {converged_at:?}; wall time {:?}",
        adverts.len(),
        crossings.values().map(|n| u64::from(*n)).sum::<u64>(),
        total / NODES as u64,
        wall.elapsed()
    );
}
