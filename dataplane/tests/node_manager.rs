//! The node manager in the in-memory mesh: adverts and path choice, repair, and route setup
//! that only proof can take over. Seeded, on a virtual clock, with the real WireGuard
//! sessions and real signatures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skywire_dataplane::node::{Event, RouteDownReason, RouteError, RouteStatus};
use skywire_dataplane::sim::Sim;
use skywire_dataplane::wire::control::ControlMessage;
use skywire_dataplane::wire::mesh::{MeshHeader, MeshPacket, NextHeader};
use skywire_dataplane::wire::{Advert, AdvertLink, RouteId};
use skywire_dataplane::NodeKey;

/// A ring of six with two chords, and each link's one-way delay in milliseconds (its cost is
/// the round trip, twice that).
const RING: [(usize, usize, u64); 8] = [
    (0, 1, 4),
    (1, 2, 3),
    (2, 3, 6),
    (3, 4, 2),
    (4, 5, 5),
    (5, 0, 7),
    (0, 3, 9),
    (1, 4, 8),
];

/// Virtual-time limits, generous: met early, they cost nothing.
const LIMIT: Duration = Duration::from_secs(30);

fn ring(seed: u64) -> Sim {
    let links: Vec<(usize, usize)> = RING.iter().map(|(a, b, _)| (*a, *b)).collect();
    let mut sim = Sim::new(seed, 6, &links, |_, _| {});
    for (a, b, delay) in RING {
        sim.link(a, b).delay = Duration::from_millis(delay);
    }
    sim
}

/// Every node knows every other's advert and a path to it.
fn converged(sim: &Sim) -> bool {
    (0..sim.nodes.len()).all(|i| {
        (0..sim.nodes.len()).all(|j| i == j || sim.nodes[i].node.find_route(&sim.key(j)).is_some())
    })
}

/// The lowest costs between all pairs over `links` (Floyd–Warshall): the truth to compare with.
fn lowest_costs(count: usize, links: &[(usize, usize, u64)]) -> Vec<Vec<u64>> {
    let mut cost = vec![vec![u64::MAX / 4; count]; count];
    for (i, row) in cost.iter_mut().enumerate() {
        row[i] = 0;
    }
    for (a, b, delay) in links {
        cost[*a][*b] = 2 * delay;
        cost[*b][*a] = 2 * delay;
    }
    for k in 0..count {
        for i in 0..count {
            for j in 0..count {
                let through = cost[i][k] + cost[k][j];
                if through < cost[i][j] {
                    cost[i][j] = through;
                }
            }
        }
    }
    cost
}

fn wait_ready(sim: &mut Sim, from: usize, to: usize) {
    let peer = sim.key(to);
    let ready = sim.run_until(LIMIT, |sim| {
        sim.has_event(
            from,
            |e| matches!(e, Event::RouteReady { peer: p } if *p == peer),
        )
    });
    let failures: Vec<&Event> = sim.nodes[from]
        .events
        .iter()
        .filter(|e| matches!(e, Event::RouteFailed { .. } | Event::RouteDown { .. }))
        .collect();
    assert!(ready, "route {from} -> {to} not ready: {failures:?}");
}

fn build_to(sim: &mut Sim, from: usize, to: usize) {
    let now = sim.now;
    let peer = sim.key(to);
    sim.nodes[from].node.build_route_to(now, &peer).unwrap();
    wait_ready(sim, from, to);
}

fn path_of(sim: &Sim, at: usize, to: usize) -> Vec<NodeKey> {
    let peer = sim.key(to);
    sim.nodes[at]
        .node
        .routes()
        .find(|(key, _)| **key == peer)
        .map(|(_, route)| route.path.clone())
        .unwrap_or_default()
}

/// Sends `payload` from `from` to `to` and waits until it arrives.
fn carries(sim: &mut Sim, from: usize, to: usize, payload: &[u8]) -> bool {
    sim.send(from, to, payload);
    let from_key = sim.key(from);
    sim.run_until(LIMIT, |sim| {
        sim.nodes[to].events.iter().any(|e| {
            matches!(e, Event::Packet { peer, packet } if *peer == from_key && packet.ends_with(payload))
        })
    })
}

fn route_down(sim: &Sim, at: usize, peer: usize) -> Option<RouteDownReason> {
    let peer = sim.key(peer);
    sim.nodes[at].events.iter().find_map(|e| match e {
        Event::RouteDown { peer: p, reason } if *p == peer => Some(*reason),
        _ => None,
    })
}

#[test]
fn a_ring_with_two_chords_converges_to_the_lowest_cost_routes() {
    let mut sim = ring(21);
    assert!(sim.run_until(LIMIT, converged), "no convergence");
    let truth = lowest_costs(6, &RING);
    for (i, costs) in truth.iter().enumerate() {
        for (j, cost) in costs.iter().enumerate() {
            if i == j {
                continue;
            }
            let choice = sim.nodes[i].node.find_route(&sim.key(j)).unwrap();
            assert_eq!(
                choice.cost,
                Duration::from_millis(*cost),
                "{i} -> {j}: {:?}",
                choice.path
            );
            assert_eq!(choice.path.first(), Some(&sim.key(i)));
            assert_eq!(choice.path.last(), Some(&sim.key(j)));
        }
    }
    // Every node sees the whole graph: six nodes, each link listed by both ends with its cost.
    let nodes = sim.nodes[2].node.known_nodes(sim.now);
    assert_eq!(nodes.len(), 6);
    let listed: usize = nodes.iter().map(|node| node.links.len()).sum();
    assert_eq!(listed, 2 * RING.len());
    assert!(nodes
        .iter()
        .flat_map(|node| &node.links)
        .all(|link| link.cost == Some(link.rtt)));
    // Routes built with automatic paths take them.
    for (from, to) in [(0, 2), (5, 3), (2, 5)] {
        build_to(&mut sim, from, to);
        let expected = sim.nodes[from].node.find_route(&sim.key(to)).unwrap();
        assert_eq!(path_of(&sim, from, to), expected.path, "{from} -> {to}");
        assert!(carries(&mut sim, from, to, b"lowest cost"));
    }
}

#[test]
fn cutting_a_link_reroutes_every_route_that_used_it() {
    let mut sim = ring(22);
    assert!(sim.run_until(LIMIT, converged));
    for to in 1..6 {
        build_to(&mut sim, 0, to);
    }
    // The link 0–1 carries the routes to 1 and 2 (and maybe more).
    let (a, b) = (sim.key(0), sim.key(1));
    let uses = |path: &[NodeKey]| path.windows(2).any(|w| w == [a, b] || w == [b, a]);
    let using: Vec<usize> = (1..6).filter(|to| uses(&path_of(&sim, 0, *to))).collect();
    assert!(using.len() >= 2, "{using:?}");
    sim.link(0, 1).alive = false;
    let rerouted = sim.run_until(LIMIT, |sim| {
        using.iter().all(|to| {
            let path = path_of(sim, 0, *to);
            !path.is_empty()
                && !uses(&path)
                && sim.nodes[0]
                    .node
                    .routes()
                    .any(|(key, route)| *key == sim.key(*to) && route.ready)
        })
    });
    assert!(rerouted, "not every route left the dead link");
    let truth = lowest_costs(
        6,
        &RING
            .iter()
            .copied()
            .filter(|(x, y, _)| (*x, *y) != (0, 1))
            .collect::<Vec<_>>(),
    );
    for to in 1..6 {
        // Nobody heard of a route down: the repair was silent at both ends.
        assert_eq!(route_down(&sim, 0, to), None, "0 -> {to}");
        assert_eq!(route_down(&sim, to, 0), None, "{to} -> 0");
        assert!(carries(&mut sim, 0, to, b"after the cut"), "0 -> {to}");
        assert!(carries(&mut sim, to, 0, b"and back"), "{to} -> 0");
    }
    // The far ends adopted the new routes too, and the paths are now the lowest-cost ones.
    for to in &using {
        let path = path_of(&sim, *to, 0);
        assert_eq!(path, path_of(&sim, 0, *to), "{to} holds another route");
        let cost: u64 = path
            .windows(2)
            .map(|w| {
                let index = |key: &NodeKey| (0..6).find(|i| sim.key(*i) == *key).unwrap();
                let (x, y) = (index(&w[0]), index(&w[1]));
                RING.iter()
                    .find(|(p, q, _)| (*p, *q) == (x, y) || (*p, *q) == (y, x))
                    .map(|(_, _, delay)| 2 * delay)
                    .unwrap()
            })
            .sum();
        assert_eq!(
            cost,
            truth[0][*to],
            "0 -> {to} over {} hops",
            path.len() - 1
        );
    }
}

#[test]
fn a_partitioned_nodes_routes_fail_with_a_clear_error() {
    let mut sim = ring(23);
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, 0, 5);
    build_to(&mut sim, 2, 5);
    // Node 5's two links die: nothing leads there any more.
    sim.link(4, 5).alive = false;
    sim.link(5, 0).alive = false;
    assert!(sim.run_until(LIMIT, |sim| {
        route_down(sim, 0, 5).is_some() && route_down(sim, 2, 5).is_some()
    }));
    assert_eq!(route_down(&sim, 0, 5), Some(RouteDownReason::NoPath));
    assert_eq!(route_down(&sim, 2, 5), Some(RouteDownReason::NoPath));
    let text = RouteDownReason::NoPath.to_string();
    assert!(text.contains("no other path"), "{text}");
    // And a new route is refused at once, naming the node.
    let peer = sim.key(5);
    let now = sim.now;
    let error = sim.nodes[0].node.build_route_to(now, &peer).unwrap_err();
    assert_eq!(error, RouteError::NoPath(peer));
    assert!(error.to_string().contains(&peer.to_string()));
    assert_eq!(
        sim.nodes[0].node.send_to(&peer, &[0x60; 40]).unwrap_err(),
        skywire_dataplane::node::SendToError::NoRoute
    );
}

#[test]
fn a_route_whose_far_end_falls_silent_for_a_moment_is_repaired_not_reported_down() {
    let mut sim = ring(24);
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, 0, 5);
    // Node 5 falls silent for a second (starved of CPU, say): every link to it dies, and for a
    // while no path leads there.
    sim.link(4, 5).alive = false;
    sim.link(5, 0).alive = false;
    let peer = sim.key(5);
    assert!(sim.run_until(LIMIT, |sim| {
        sim.nodes[0].node.route_status(&peer) == RouteStatus::Repairing
            && sim.nodes[0].node.find_route(&peer).is_none()
    }));
    sim.run_for(Duration::from_millis(500));
    sim.link(4, 5).alive = true;
    sim.link(5, 0).alive = true;
    // Its links come back within the repair's wait: the route is rebuilt, and neither end
    // ever hears of it going down.
    assert!(sim.run_until(LIMIT, |sim| {
        sim.nodes[0].node.route_status(&peer) == RouteStatus::Ready
    }));
    assert!(carries(&mut sim, 0, 5, b"after the silence"));
    assert!(carries(&mut sim, 5, 0, b"and back"));
    assert_eq!(route_down(&sim, 0, 5), None);
    assert_eq!(route_down(&sim, 5, 0), None);
}

#[test]
fn both_ends_of_a_broken_route_agree_on_whether_it_was_repaired() {
    // However long node 5 stays silent, the far end (5) must not report the route down while
    // its initiator (0) goes on to repair it, nor wait on once the initiator gave up. The
    // silences span the initiator's own wait, so that both outcomes happen.
    let mut outcomes = HashSet::new();
    for tenths in 30..=40 {
        let silence = Duration::from_millis(100 * tenths);
        let mut sim = ring(26);
        assert!(sim.run_until(LIMIT, converged));
        build_to(&mut sim, 0, 5);
        sim.link(4, 5).alive = false;
        sim.link(5, 0).alive = false;
        sim.run_for(silence);
        sim.link(4, 5).alive = true;
        sim.link(5, 0).alive = true;
        let peer = sim.key(5);
        assert!(sim.run_until(LIMIT, |sim| {
            matches!(
                sim.nodes[0].node.route_status(&peer),
                RouteStatus::Ready | RouteStatus::Absent
            )
        }));
        sim.run_for(Duration::from_secs(10));
        let repaired = sim.nodes[0].node.route_status(&peer) == RouteStatus::Ready;
        outcomes.insert(repaired);
        let (initiator_down, far_end_down) = (route_down(&sim, 0, 5), route_down(&sim, 5, 0));
        assert_eq!(
            (initiator_down.is_some(), far_end_down.is_some()),
            (!repaired, !repaired),
            "silent for {silence:?}: repaired {repaired}, down at 0: {initiator_down:?}, at 5: {far_end_down:?}"
        );
    }
    assert_eq!(
        outcomes.len(),
        2,
        "the silences no longer span the repair's wait"
    );
}

#[test]
fn a_link_whose_datagrams_wait_unread_in_the_socket_is_not_dead() {
    let mut sim = Sim::new(25, 2, &[(0, 1)], |_, _| {});
    let up = |sim: &Sim| sim.has_event(0, |e| matches!(e, Event::LinkUp { .. }));
    assert!(sim.run_until(LIMIT, up));
    sim.run_for(Duration::from_millis(300));
    let dead_after = sim.nodes[0].options.dead_after;
    let (start, node) = (sim.now, &mut sim.nodes[0].node);
    let link_down = |node: &mut skywire_dataplane::node::Node| {
        std::iter::from_fn(|| node.poll_event())
            .any(|event| matches!(event, Event::LinkDown { .. }))
    };
    // Node 0 stalls for longer than the silence that kills a link, then reads a full batch of
    // its socket, which holds more: node 1's datagrams of that time wait there.
    node.set_input_read_until(start);
    node.handle_timeout(start + dead_after + Duration::from_millis(250));
    assert!(!link_down(node), "a link whose datagrams wait unread died");
    // A socket that never empties lets a link die all the same, a `dead_after` later.
    node.handle_timeout(start + dead_after * 2 + Duration::from_millis(100));
    assert!(link_down(node), "a silent link lived on behind a backlog");
}

/// The adverts a node received, as its tap saw them decrypted.
fn tap_adverts(sim: &mut Sim, at: usize) -> std::sync::Arc<std::sync::Mutex<Vec<Advert>>> {
    tap_control(sim, at, |message| match message {
        ControlMessage::Advert(advert) => Some(advert),
        _ => None,
    })
}

/// What `pick` takes from the control messages that node `at` receives, from now on.
fn tap_control<T: Send + 'static>(
    sim: &mut Sim,
    at: usize,
    pick: impl Fn(ControlMessage) -> Option<T> + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<T>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tap_seen = seen.clone();
    sim.nodes[at].node.set_tap(Box::new(move |_, packet| {
        let Ok(mesh) = MeshPacket::new_checked(packet) else {
            return;
        };
        if mesh.next_header() != NextHeader::Control {
            return;
        }
        if let Some(picked) = ControlMessage::parse(mesh.payload()).ok().and_then(&pick) {
            tap_seen.lock().unwrap().push(picked);
        }
    }));
    seen
}

#[test]
fn forged_and_replayed_adverts_change_nothing() {
    let mut sim = ring(24);
    // Node 1 (neighbour of 0 and 2) turns liar; node 3's adverts are what it plays with.
    let seen = tap_adverts(&mut sim, 1);
    assert!(sim.run_until(LIMIT, converged));
    let old = seen
        .lock()
        .unwrap()
        .iter()
        .find(|advert| advert.origin == sim.key(3))
        .cloned()
        .unwrap();
    // Node 3's links change (its link to 4 dies), so it advertises anew.
    sim.link(3, 4).alive = false;
    let key3 = sim.key(3);
    assert!(sim.run_until(LIMIT, |sim| {
        (0..6).all(|i| {
            i == 3
                || sim.nodes[i]
                    .node
                    .known_nodes(sim.now)
                    .iter()
                    .any(|n| n.key == key3 && n.links.len() == 2)
        })
    }));
    let before: Vec<_> = (0..6)
        .map(|j| sim.nodes[0].node.find_route(&sim.key(j)))
        .collect();
    let drops_before = sim.nodes[0].node.advert_drops();
    let victim = sim.key(0);
    let liar = 1;
    // A replay of 3's older advert (which still lists the dead link).
    let replay = ControlMessage::Advert(old.clone());
    // The same advert with a link made cheap and one added to the liar: the signature breaks.
    let mut bent = old.clone();
    bent.sequence += 1_000_000;
    for link in &mut bent.links {
        link.rtt_micros = 1;
    }
    // An advert for 3 signed by the liar's own key.
    let liar_secret = sim.nodes[liar].options.secret.clone();
    let mut impostor = Advert::signed(
        &liar_secret,
        old.sequence + 2_000_000,
        240,
        vec![AdvertLink {
            neighbour: sim.key(0),
            rtt_micros: 1,
        }],
        Vec::new(),
        &[9; 64],
    )
    .unwrap();
    impostor.origin = key3;
    for message in [
        replay,
        ControlMessage::Advert(bent),
        ControlMessage::Advert(impostor),
    ] {
        sim.nodes[liar]
            .node
            .send_control_to(&victim, RouteId::CONTROL, &message)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(2));
    let drops = sim.nodes[0].node.advert_drops();
    assert_eq!(drops.stale, drops_before.stale + 1, "{drops:?}");
    assert_eq!(drops.forged, drops_before.forged + 2, "{drops:?}");
    let after: Vec<_> = (0..6)
        .map(|j| sim.nodes[0].node.find_route(&sim.key(j)))
        .collect();
    assert_eq!(before, after, "the liar changed node 0's view");
}

#[test]
fn a_restarted_node_is_reachable_again_within_one_advert_interval() {
    let mut sim = ring(25);
    assert!(sim.run_until(LIMIT, converged));
    let key = sim.key(3);
    let old_sequence = sim.nodes[3].node.advert_sequence();
    sim.run_for(Duration::from_secs(5));
    sim.restart(3);
    let restarted = sim.now;
    let interval = sim.nodes[3].options.advert_interval;
    // Everyone holds an advert of the new node (a newer sequence), and node 0 finds it.
    let reachable = sim.run_until(interval, |sim| {
        (0..6).all(|i| {
            i == 3
                || sim.nodes[i]
                    .node
                    .known_nodes(sim.now)
                    .iter()
                    .any(|n| n.key == key && n.sequence > old_sequence && !n.links.is_empty())
        }) && sim.nodes[0].node.find_route(&key).is_some()
    });
    assert!(reachable, "not reachable within {interval:?}");
    // A route to it can be built within the interval too (once its links are up at its end:
    // the others still hold sessions that it has forgotten).
    let neighbours: Vec<NodeKey> = [2, 4, 0].iter().map(|i| sim.key(*i)).collect();
    assert!(sim.run_until(interval, |sim| {
        neighbours
            .iter()
            .all(|key| sim.nodes[3].node.is_link_alive(key))
    }));
    build_to(&mut sim, 0, 3);
    assert!(sim.now - restarted < interval);
    assert!(carries(&mut sim, 0, 3, b"welcome back"));
    assert!(carries(&mut sim, 3, 0, b"thanks"));
}

/// A line X–R–D with a second path X–S–D, and M, a neighbour of D that lies.
const FORGERY: [(usize, usize); 5] = [(0, 1), (1, 2), (0, 3), (3, 2), (4, 2)];
const X: usize = 0;
const R: usize = 1;
const D: usize = 2;
const S: usize = 3;
const M: usize = 4;

#[test]
fn a_forged_setup_naming_x_cannot_take_over_xs_route() {
    let mut sim = Sim::new(26, 5, &FORGERY, |_, _| {});
    let at_m = sim.capture(M);
    assert!(sim.run_until(LIMIT, converged));
    let (x_key, d_key, m_key) = (sim.key(X), sim.key(D), sim.key(M));
    let path = sim.path(&[X, R, D]);
    let now = sim.now;
    sim.nodes[X].node.build_route(now, &path).unwrap();
    wait_ready(&mut sim, X, D);
    // M sends D a setup that names X as its initiator, and refreshes the forged route.
    let forged_reverse = RouteId::new(777).unwrap();
    let forged = ControlMessage::SetupRequest {
        setup_id: 0x5eed,
        hop_index: 2,
        mtu: 1420,
        reverse_id: forged_reverse,
        path: vec![x_key, m_key, d_key],
    };
    sim.nodes[M]
        .node
        .send_control_to(&d_key, RouteId::CONTROL, &forged)
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    let forged_in = sim.nodes[D]
        .node
        .table()
        .iter()
        .find(|(_, rule)| {
            rule.charged_to.is_some()
                && matches!(rule.rule, skywire_dataplane::routing::Rule::Consume { .. })
                && sim.nodes[D].node.transports().key_of(rule.ingress) == Some(m_key)
        })
        .map(|(id, _)| id)
        .expect("D offered the forged route as a candidate");
    for round in 0..20u8 {
        sim.nodes[M]
            .node
            .send_control_to(&d_key, forged_in, &ControlMessage::Refresh)
            .unwrap();
        // The real route keeps carrying packets both ways.
        assert!(carries(&mut sim, X, D, &[b'x', round]), "round {round}");
        assert!(carries(&mut sim, D, X, &[b'd', round]), "round {round}");
        sim.run_for(Duration::from_millis(500));
    }
    assert_eq!(path_of(&sim, D, X), path);
    assert_eq!(route_down(&sim, D, X), None);
    assert_eq!(route_down(&sim, X, D), None);
    // D never sent anything to X over the forged route: M saw at most the teardown of the
    // unproven route, never a session message on it.
    let capture = at_m.lock().unwrap();
    let on_forged: Vec<NextHeader> = capture
        .decrypted
        .iter()
        .filter_map(|packet| MeshPacket::new_checked(&packet[..]).ok())
        .filter(|mesh| mesh.route_id() == forged_reverse)
        .map(|mesh| mesh.next_header())
        .collect();
    assert!(
        on_forged
            .iter()
            .all(|header| *header == NextHeader::Control),
        "{on_forged:?}"
    );
    // The forged candidate is gone.
    assert!(sim.nodes[D].node.table().get(forged_in).is_none());
}

#[test]
fn a_genuine_repair_by_x_is_adopted() {
    let mut sim = Sim::new(27, 5, &FORGERY, |_, _| {});
    sim.link(X, S).delay = Duration::from_millis(20);
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, X, D);
    assert_eq!(path_of(&sim, X, D), sim.path(&[X, R, D]));
    assert_eq!(path_of(&sim, D, X), sim.path(&[X, R, D]));
    sim.link(R, D).alive = false;
    let repaired = sim.run_until(LIMIT, |sim| {
        path_of(sim, D, X) == sim.path(&[X, S, D]) && path_of(sim, X, D) == sim.path(&[X, S, D])
    });
    assert!(repaired);
    assert_eq!(route_down(&sim, D, X), None);
    assert_eq!(route_down(&sim, X, D), None);
    assert!(carries(&mut sim, X, D, b"over S"));
    assert!(carries(&mut sim, D, X, b"back over S"));
}

#[test]
fn lost_setup_messages_are_retried() {
    let mut sim = ring(28);
    assert!(sim.run_until(LIMIT, converged));
    // The request's first hop and the answer's last hop each lose their first datagram.
    let path = sim.path(&[0, 1, 2]);
    sim.link(0, 1).lose_next = 1;
    let now = sim.now;
    sim.nodes[0].node.build_route(now, &path).unwrap();
    let started = sim.now;
    wait_ready(&mut sim, 0, 2);
    // Without a retry the setup would have timed out (4 s for two hops) and failed.
    assert!(sim.now - started < Duration::from_secs(2));
    assert!(!sim.has_event(0, |e| matches!(e, Event::RouteFailed { .. })));
    // Over lossy links every setup still gets through.
    for (a, b, _) in RING {
        sim.link(a, b).loss_ppm = 100_000;
    }
    for to in [3, 4, 5] {
        build_to(&mut sim, 1, to);
    }
}

#[test]
fn crossing_setups_end_in_one_route_started_by_the_lower_key() {
    let mut sim = ring(29);
    assert!(sim.run_until(LIMIT, converged));
    let (a, b) = (0, 3);
    let now = sim.now;
    let (a_key, b_key) = (sim.key(a), sim.key(b));
    sim.nodes[a].node.build_route_to(now, &b_key).unwrap();
    sim.nodes[b].node.build_route_to(now, &a_key).unwrap();
    wait_ready(&mut sim, a, b);
    wait_ready(&mut sim, b, a);
    sim.run_for(Duration::from_secs(5));
    let lower = if a_key < b_key { a } else { b };
    let route = |at: usize, peer: NodeKey| {
        sim.nodes[at]
            .node
            .routes()
            .find(|(key, _)| **key == peer)
            .map(|(_, route)| (route.initiator, route.path.clone()))
            .unwrap()
    };
    let (a_initiator, a_path) = route(a, b_key);
    let (b_initiator, b_path) = route(b, a_key);
    assert_eq!(a_path, b_path, "one route, not two");
    assert_eq!(a_initiator, lower == a);
    assert_eq!(b_initiator, lower == b);
    assert!(carries(&mut sim, a, b, b"one"));
    assert!(carries(&mut sim, b, a, b"route"));
    let failures: HashMap<usize, usize> = [a, b]
        .iter()
        .map(|i| {
            (
                *i,
                sim.nodes[*i]
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::RouteFailed { .. }))
                    .count(),
            )
        })
        .collect();
    assert!(failures.values().all(|n| *n == 0), "{failures:?}");
}

#[test]
fn a_replacement_route_brings_nothing_down_while_it_awaits_proof() {
    let mut sim = Sim::new(30, 5, &FORGERY, |_, _| {});
    assert!(sim.run_until(LIMIT, converged));
    let over_r = sim.path(&[X, R, D]);
    let over_s = sim.path(&[X, S, D]);
    let now = sim.now;
    sim.nodes[X].node.build_route(now, &over_r).unwrap();
    wait_ready(&mut sim, X, D);
    sim.nodes[X].events.clear();
    // X builds a route over S in place of the one over R, which it tears down at once.
    let now = sim.now;
    sim.nodes[X].node.build_route(now, &over_s).unwrap();
    wait_ready(&mut sim, X, D);
    assert!(sim.run_until(LIMIT, |sim| path_of(sim, D, X) == over_s));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(route_down(&sim, D, X), None);
    assert_eq!(route_down(&sim, X, D), None);
    assert!(carries(&mut sim, D, X, b"over the new route"));
    // R holds nothing of the old route any more.
    assert!(sim.nodes[R].node.table().is_empty());
}

/// The proof rule's message-type check: boringtun answers `Done` both for a keepalive and for
/// a cookie reply, and a cookie reply can be made by anyone who saw the handshake it answers.
#[test]
fn a_keepalive_proves_a_route_and_a_cookie_reply_does_not() {
    use std::sync::Arc;

    use boringtun::noise::rate_limiter::RateLimiter;
    use boringtun::noise::TunnResult;
    use skywire_dataplane::session::{RouteSession, SessionResult};
    use skywire_dataplane::SecretKey;

    let (x, d) = (SecretKey::from([7; 32]), SecretKey::from([8; 32]));
    let limiter = |key: &SecretKey| Arc::new(RateLimiter::new(&key.public().to_x25519(), 100));
    let mut at_x = RouteSession::new(&x, d.public(), 1, limiter(&x));
    let mut at_d = RouteSession::new(&d, x.public(), 2, limiter(&d));
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let SessionResult::Send(len) = at_x.initiate(&mut buf) else {
        panic!("no initiation");
    };
    let initiation = buf[..len].to_vec();
    // A limiter under load answers the initiation with a cookie reply, as a forger could.
    let overloaded = RateLimiter::new(&d.public().to_x25519(), 0);
    let address = std::net::IpAddr::V6(d.public().mesh_address());
    let cookie = match overloaded.verify_packet(Some(address), &initiation, &mut out) {
        Err(TunnResult::WriteToNetwork(cookie)) => cookie.to_vec(),
        _ => panic!("no cookie reply"),
    };
    assert_eq!(cookie[0], 3);
    assert!(matches!(
        at_x.decapsulate(&cookie, &mut out),
        SessionResult::Nothing
    ));
    // The real handshake, then X's keepalive: that one is proof.
    let SessionResult::Send(len) = at_d.decapsulate(&initiation, &mut out) else {
        panic!("no response");
    };
    let response = out[..len].to_vec();
    let SessionResult::Send(len) = at_x.decapsulate(&response, &mut out) else {
        panic!("no keepalive after the response");
    };
    let keepalive = out[..len].to_vec();
    assert_eq!(keepalive[0], 4);
    assert!(matches!(
        at_d.decapsulate(&keepalive, &mut buf),
        SessionResult::Keepalive
    ));
    // Replayed, it fails WireGuard's counter.
    assert!(matches!(
        at_d.decapsulate(&keepalive, &mut buf),
        SessionResult::Refused(_)
    ));
}

#[test]
fn a_relay_charges_routes_to_the_neighbour_that_asked() {
    // A star around B (1), whose neighbours may hold two rules each: one relayed route.
    let star = [(0, 1), (1, 2), (1, 3), (1, 4)];
    let mut sim = Sim::new(31, 5, &star, |i, options| {
        if i == 1 {
            options.max_routes_per_neighbour = 2;
        }
    });
    // Three neighbours each route through B to the same node: none is charged for the others,
    // though all three routes' return rules expect packets from node 2.
    for from in [0, 3, 4] {
        let path = sim.path(&[from, 1, 2]);
        let now = sim.now;
        sim.nodes[from].node.build_route(now, &path).unwrap();
        wait_ready(&mut sim, from, 2);
    }
    // A second route of node 0's through B is over its own quota, and the error says where.
    let path = sim.path(&[0, 1, 4]);
    let now = sim.now;
    sim.nodes[0].node.build_route(now, &path).unwrap();
    assert!(sim.run_until(LIMIT, |sim| {
        sim.has_event(0, |e| matches!(e, Event::RouteFailed { .. }))
    }));
    let error = sim.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            Event::RouteFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(
            error,
            RouteError::Rejected {
                hop_index: 1,
                reason: skywire_dataplane::wire::RejectReason::RouteLimit,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_build_asked_during_a_repair_is_answered_when_the_repair_succeeds() {
    let mut sim = ring(32);
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, 0, 2);
    let peer = sim.key(2);
    assert_eq!(sim.nodes[0].node.route_status(&peer), RouteStatus::Ready);
    let first_hop = path_of(&sim, 0, 2)[1];
    let hop = (0..6).find(|i| sim.key(*i) == first_hop).unwrap();
    sim.nodes[0].events.clear();
    sim.link(0, hop).alive = false;
    let repairing = sim.run_until(LIMIT, |sim| {
        sim.nodes[0].node.route_status(&peer) == RouteStatus::Repairing
    });
    assert!(repairing, "the break was not noticed");
    // An app or a command asks for the route meanwhile: it joins the repair, which answers it.
    let now = sim.now;
    sim.nodes[0].node.build_route_to(now, &peer).unwrap();
    wait_ready(&mut sim, 0, 2);
    assert_eq!(sim.nodes[0].node.route_status(&peer), RouteStatus::Ready);
    assert!(!path_of(&sim, 0, 2).contains(&first_hop));
    assert_eq!(route_down(&sim, 0, 2), None);
}

/// A line A–B–C, with M, a neighbour of A off the route.
const LINE: [(usize, usize); 3] = [(0, 1), (1, 2), (3, 0)];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Node `from` sends a numbered packet to `to` every 10 ms while its route is ready, until
/// `to` delivers one (after a restart, its events start empty) or `limit` passes. Returns how
/// long that took, and whether `from` saw its route repaired on the way.
fn send_until_delivered(
    sim: &mut Sim,
    from: usize,
    to: usize,
    limit: Duration,
) -> (Option<Duration>, bool) {
    let started = sim.now;
    let (from_key, to_key) = (sim.key(from), sim.key(to));
    let mut repairing = false;
    let mut sent = 0u32;
    while sim.now - started < limit {
        match sim.nodes[from].node.route_status(&to_key) {
            RouteStatus::Ready => {
                sim.send(from, to, format!("packet {sent}").as_bytes());
                sent += 1;
            }
            RouteStatus::Repairing => repairing = true,
            RouteStatus::Building | RouteStatus::Absent => {}
        }
        let delivered = sim.run_until(Duration::from_millis(10), |sim| {
            sim.has_event(
                to,
                |e| matches!(e, Event::Packet { peer, .. } if *peer == from_key),
            )
        });
        if delivered {
            return (Some(sim.now - started), repairing);
        }
    }
    (None, repairing)
}

#[test]
fn a_route_whose_far_end_restarted_is_rebuilt_within_the_liveness_window() {
    let mut sim = Sim::new(27, 4, &LINE, |_, _| {});
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, A, C);
    assert_eq!(path_of(&sim, A, C), sim.path(&[A, B, C]));
    assert!(carries(&mut sim, A, C, b"before"));
    // C restarts: same key, nothing else. Its link to B comes back at once (B never finds it
    // silent), so only C itself can tell that it forgot the route and its session.
    let c_key = sim.key(C);
    sim.restart(C);
    let (flowing, repaired) = send_until_delivered(&mut sim, A, C, LIMIT);
    let flowing = flowing.expect("A's packets never reached the restarted C");
    // Within about the liveness window (750 ms by default: what a dead link takes to notice).
    let window = sim.nodes[A].options.dead_after;
    assert!(flowing < window, "flowing again after {flowing:?}");
    eprintln!("A's packets reach the restarted C again {flowing:?} after the restart");
    assert!(repaired, "A never saw its route under repair");
    assert!(
        sim.nodes[B].node.is_link_alive(&c_key),
        "B's link to C died"
    );
    assert!(sim.nodes[C].node.drops().unknown_route > 0);
    // The repair was silent, and the route carries both ways over the same path.
    assert_eq!(route_down(&sim, A, C), None);
    assert_eq!(sim.nodes[A].node.route_status(&c_key), RouteStatus::Ready);
    assert_eq!(path_of(&sim, A, C), sim.path(&[A, B, C]));
    assert_eq!(path_of(&sim, C, A), sim.path(&[A, B, C]));
    assert!(carries(&mut sim, C, A, b"back again"));
    // B holds the new route's two rules and nothing of the old one.
    assert_eq!(sim.nodes[B].node.table().len(), 2);
}

#[test]
fn a_direct_route_whose_far_end_restarted_is_rebuilt_too() {
    let mut sim = Sim::new(30, 2, &[(0, 1)], |_, _| {});
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, 0, 1);
    assert!(sim.nodes[0]
        .node
        .routes()
        .all(|(_, route)| route.is_direct()));
    sim.restart(1);
    let (flowing, repaired) = send_until_delivered(&mut sim, 0, 1, LIMIT);
    let flowing = flowing.expect("0's packets never reached the restarted 1");
    assert!(flowing < sim.nodes[0].options.dead_after, "{flowing:?}");
    assert!(repaired);
    assert!(carries(&mut sim, 1, 0, b"direct again"));
    assert_eq!(route_down(&sim, 0, 1), None);
}

#[test]
fn a_route_whose_relay_restarted_is_rebuilt_and_an_explicit_one_reported_down() {
    let mut sim = Sim::new(28, 4, &LINE, |_, _| {});
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, A, C);
    // The relay restarts: both ends' next packets find it has forgotten the route.
    sim.restart(B);
    let (flowing, repaired) = send_until_delivered(&mut sim, A, C, LIMIT);
    let flowing = flowing.expect("A's packets never reached C again");
    assert!(flowing < sim.nodes[A].options.dead_after, "{flowing:?}");
    assert!(repaired);
    assert!(carries(&mut sim, C, A, b"and back"));
    assert_eq!(route_down(&sim, A, C), None);
    assert_eq!(route_down(&sim, C, A), None);

    // A route along an explicit path keeps it: it is reported down, naming the hop before the
    // node that forgot it.
    let (b_key, c_key) = (sim.key(B), sim.key(C));
    assert!(sim.nodes[A].node.remove_route(sim.now, &c_key));
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let path = sim.path(&[A, B, C]);
    sim.nodes[A].events.clear();
    sim.nodes[A].node.build_route(now, &path).unwrap();
    wait_ready(&mut sim, A, C);
    sim.restart(C);
    let (flowing, _) = send_until_delivered(&mut sim, A, C, Duration::from_secs(1));
    assert_eq!(flowing, None, "an explicit route was rebuilt");
    let reason = route_down(&sim, A, C).expect("no route down at A");
    assert_eq!(reason, RouteDownReason::Forgotten { reporter: b_key });
    assert!(reason.to_string().contains("restarted"), "{reason}");
    assert_eq!(sim.nodes[A].node.route_status(&c_key), RouteStatus::Absent);
}

/// The route ids named by the reports of unknown routes that a node received, as its tap saw
/// them.
fn tap_reports(sim: &mut Sim, at: usize) -> std::sync::Arc<std::sync::Mutex<Vec<RouteId>>> {
    tap_control(sim, at, |message| match message {
        ControlMessage::UnknownRoute { route_id } => Some(route_id),
        _ => None,
    })
}

#[test]
fn only_a_routes_next_hop_can_report_it_forgotten_and_reports_are_rate_limited() {
    const M: usize = 3;
    let mut sim = Sim::new(29, 4, &LINE, |_, _| {});
    let at_m = tap_reports(&mut sim, M);
    assert!(sim.run_until(LIMIT, converged));
    build_to(&mut sim, A, C);
    let c_key = sim.key(C);
    let (out_id, in_id) = sim.nodes[A]
        .node
        .routes()
        .find(|(peer, _)| **peer == c_key)
        .map(|(_, route)| (route.out_id, route.in_id))
        .unwrap();
    // M, off the route, claims to have forgotten A's route ids: A keeps its route.
    let a_key = sim.key(A);
    for route_id in [out_id, in_id] {
        sim.nodes[M]
            .node
            .send_control_to(
                &a_key,
                RouteId::CONTROL,
                &ControlMessage::UnknownRoute { route_id },
            )
            .unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[A].node.route_status(&c_key), RouteStatus::Ready);
    assert!(carries(&mut sim, A, C, b"still here"));
    assert_eq!(route_down(&sim, A, C), None);

    // M floods A with packets on route ids A does not have: A reports only so many a second,
    // each to M alone.
    let (m_address, a_address) = (sim.nodes[M].node.address(), sim.nodes[A].node.address());
    let drops_before = sim.nodes[A].node.drops().unknown_route;
    for value in 0..1000u32 {
        let route_id = RouteId::new(0x80000 + value).unwrap();
        let header = MeshHeader {
            route_id,
            next_header: NextHeader::Session,
            hop_limit: 64,
            src: m_address,
            dst: a_address,
            payload_len: 32,
        };
        let mut packet = vec![0u8; header.buffer_len()];
        header.emit(&mut packet).unwrap();
        sim.nodes[M]
            .node
            .send_mesh_packet_to(&a_key, &packet)
            .unwrap();
    }
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.nodes[A].node.drops().unknown_route - drops_before, 1000);
    let reports = at_m.lock().unwrap().clone();
    assert!(
        (1..=32).contains(&reports.len()),
        "{} reports",
        reports.len()
    );
    assert!(reports.iter().all(|id| id.get() >= 0x80000), "{reports:?}");
    // A's own route is untouched.
    assert_eq!(sim.nodes[A].node.route_status(&c_key), RouteStatus::Ready);
    assert!(carries(&mut sim, A, C, b"unbothered"));
}
