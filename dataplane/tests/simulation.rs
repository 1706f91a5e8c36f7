//! Routing, route setup and route repair in the in-memory mesh: five or more nodes, a virtual
//! clock, links that drop, delay and die, and the real WireGuard sessions; and direct routes,
//! which carry inner packets in the hop transport alone, and the rule that accepts those.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use skywire_dataplane::node::{Event, RouteDownReason, RouteError};
use skywire_dataplane::routing::Rule;
use skywire_dataplane::sim::{self, ipv6_packet, Sim};
use skywire_dataplane::wire::mesh::HEADER_LEN;
use skywire_dataplane::wire::{MeshHeader, MeshPacket, NextHeader, RejectReason, RouteId};
use skywire_dataplane::{SEALED_HEADER_LEN, SEALED_HEADER_TYPE};

/// A line A–B–C–D–E plus a shortcut A–E: five nodes, routes of up to four hops.
const LINE: [(usize, usize); 5] = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;

/// Generous virtual-time limits: the clock is virtual, so they cost nothing when met early.
const SETUP_LIMIT: Duration = Duration::from_secs(20);

fn five_nodes(seed: u64) -> Sim {
    Sim::new(seed, 5, &LINE, |_, _| {})
}

fn build_and_wait_ready(sim: &mut Sim, nodes: &[usize]) {
    let path = sim.path(nodes);
    let from = nodes[0];
    let to = sim.key(*nodes.last().unwrap());
    let now = sim.now;
    sim.nodes[from].node.build_route(now, &path).unwrap();
    let ready = sim.run_until(SETUP_LIMIT, |sim| {
        sim.has_event(
            from,
            |e| matches!(e, Event::RouteReady { peer } if *peer == to),
        )
    });
    let failures: Vec<_> = sim.nodes[from]
        .events
        .iter()
        .filter(|e| matches!(e, Event::RouteFailed { .. }))
        .collect();
    assert!(ready, "route {nodes:?} not ready; failures: {failures:?}");
}

fn payloads_received(sim: &mut Sim, at: usize, from: usize) -> Vec<Vec<u8>> {
    let from_key = sim.key(from);
    sim.take_packets(at, from_key)
        .into_iter()
        .map(|packet| packet[40..].to_vec())
        .collect()
}

/// How many packets node `at` has delivered.
fn packets_delivered(sim: &Sim, at: usize) -> usize {
    sim.nodes[at]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Packet { .. }))
        .count()
}

/// Runs until node `at` delivers a packet; fails the test after [`SETUP_LIMIT`].
fn wait_for_packet(sim: &mut Sim, at: usize) {
    let delivered = sim.run_until(SETUP_LIMIT, |sim| packets_delivered(sim, at) > 0);
    assert!(delivered, "node {at} delivered no packet");
}

/// Whether node `at` was told that its route to node `peer` went down.
fn route_down(sim: &Sim, at: usize, peer: usize) -> bool {
    let peer = sim.key(peer);
    sim.has_event(
        at,
        |e| matches!(e, Event::RouteDown { peer: down, .. } if *down == peer),
    )
}

/// Checks that none of `nodes` kept a rule.
fn assert_no_rules(sim: &Sim, nodes: &[usize]) {
    for node in nodes {
        assert!(
            sim.nodes[*node].node.table().is_empty(),
            "node {node} kept rules"
        );
    }
}

/// The id that node `at`'s route to node `to` sends its packets with.
fn route_out_id(sim: &Sim, at: usize, to: usize) -> RouteId {
    let peer = sim.key(to);
    sim.nodes[at]
        .node
        .routes()
        .find(|(key, _)| **key == peer)
        .map(|(_, route)| route.out_id)
        .unwrap()
}

#[test]
fn three_hop_route_carries_packets_both_ways() {
    let mut sim = five_nodes(1);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    // D learns of the route from its setup; its session is ready after the handshake.
    assert!(sim.nodes[D]
        .node
        .routes()
        .any(|(peer, _)| *peer == sim.key(A)));

    for i in 0..20u8 {
        sim.send(A, D, &[b'a', i]);
    }
    assert!(sim.run_until(SETUP_LIMIT, |sim| packets_delivered(sim, D) == 20));
    let received = payloads_received(&mut sim, D, A);
    assert_eq!(
        received,
        (0..20u8).map(|i| vec![b'a', i]).collect::<Vec<_>>()
    );

    for i in 0..20u8 {
        sim.send(D, A, &[b'd', i]);
    }
    assert!(sim.run_until(SETUP_LIMIT, |sim| packets_delivered(sim, A) == 20));
    let received = payloads_received(&mut sim, A, D);
    assert_eq!(
        received,
        (0..20u8).map(|i| vec![b'd', i]).collect::<Vec<_>>()
    );

    // The relays forwarded: B and C hold a rule each way, with counters.
    for relay in [B, C] {
        let table = sim.nodes[relay].node.table();
        assert_eq!(table.len(), 2, "relay {relay} rules");
        assert!(table.iter().all(|(_, rule)| rule.packets >= 20));
    }
}

#[test]
fn relays_never_see_what_the_ends_carry() {
    let mut sim = five_nodes(2);
    let relay_b = sim.capture(B);
    let relay_c = sim.capture(C);
    let end_d = sim.capture(D);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    let marker = b"MARKER-7f3a9c-the-relays-must-not-read-this";
    for _ in 0..5 {
        sim.send(A, D, marker);
        sim.send(D, A, marker);
    }
    wait_for_packet(&mut sim, D);
    wait_for_packet(&mut sim, A);
    // The check can fail: the destination does see the marker once its session decrypts.
    assert_eq!(payloads_received(&mut sim, D, A)[0], marker.to_vec());
    assert!(!end_d.lock().unwrap().datagrams.is_empty());
    for (name, capture) in [("B", relay_b), ("C", relay_c)] {
        let capture = capture.lock().unwrap();
        assert!(
            capture.decrypted.len() >= 10 && capture.datagrams.len() >= 20,
            "relay {name} handled the traffic"
        );
        assert!(!capture.contains(marker), "relay {name} saw the marker");
    }
}

#[test]
fn a_relay_passes_route_session_messages_on_as_they_came_behind_a_header_sealed_per_leg() {
    let mut sim = five_nodes(2);
    let relay_b = sim.capture(B);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    for i in 0..10u8 {
        sim.send(A, D, &[b'r', i]);
    }
    assert!(sim.run_until(SETUP_LIMIT, |sim| packets_delivered(sim, D) == 10));
    let capture = relay_b.lock().unwrap();
    let sealed: Vec<&Vec<u8>> = capture
        .datagrams
        .iter()
        .filter(|datagram| datagram.first() == Some(&SEALED_HEADER_TYPE))
        .collect();
    assert!(sealed.len() >= 20, "{} sealed headers at B", sealed.len());
    // Every route-session message B took in went out again unchanged (one pass of crypto over
    // the header each way, none over the message), behind a header sealed for the next leg.
    for datagram in &sealed {
        let same: Vec<&&Vec<u8>> = sealed
            .iter()
            .filter(|other| other[SEALED_HEADER_LEN..] == datagram[SEALED_HEADER_LEN..])
            .collect();
        assert_eq!(same.len(), 2, "a message crossed B other than in and out");
        assert_ne!(same[0][..SEALED_HEADER_LEN], same[1][..SEALED_HEADER_LEN]);
    }
    // No leg shows who the route's ends are.
    for end in [A, D] {
        let address = sim.nodes[end].node.address().octets();
        assert!(
            !capture
                .datagrams
                .iter()
                .any(|datagram| datagram.windows(16).any(|window| window == address)),
            "node {end}'s mesh address on the wire"
        );
    }
}

#[test]
fn dead_link_tears_down_routes_and_tells_both_ends() {
    let mut sim = five_nodes(3);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    let (b_key, c_key) = (sim.key(B), sim.key(C));
    sim.link(B, C).alive = false;
    let died_at = sim.elapsed();
    let reported = sim.run_until(Duration::from_secs(60), |sim| {
        route_down(sim, A, D) && route_down(sim, D, A)
    });
    assert!(reported, "route down not reported to both ends");
    // Liveness, not boringtun's 90 s, noticed it: within dead_after plus a probe interval.
    assert!(sim.elapsed() - died_at <= Duration::from_secs(14));
    assert!(sim.has_event(
        B,
        |e| matches!(e, Event::LinkDown { neighbour } if *neighbour == c_key)
    ));
    assert!(sim.has_event(
        C,
        |e| matches!(e, Event::LinkDown { neighbour } if *neighbour == b_key)
    ));
    // Each end names a reporter next to the dead link.
    let reporter = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::RouteDown {
                reason: RouteDownReason::LinkDead { reporter },
                ..
            } => Some(*reporter),
            _ => None,
        })
    };
    assert_eq!(reporter(&sim.nodes[A].events), Some(b_key));
    assert_eq!(reporter(&sim.nodes[D].events), Some(c_key));
    assert_no_rules(&sim, &[A, B, C, D]);
    for node in [A, B, C, D] {
        assert_eq!(sim.nodes[node].node.routes().count(), 0);
    }
    let peer = sim.key(D);
    assert!(sim.nodes[A].node.send_to(&peer, &[0; 40]).is_err());
}

#[test]
fn route_rebuilt_over_another_path_after_a_link_dies() {
    let mut sim = five_nodes(4);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    sim.link(B, C).alive = false;
    assert!(sim.run_until(Duration::from_secs(60), |sim| route_down(sim, A, D)));
    sim.nodes[A].events.clear();
    // The session survives the route: the new route is ready without a new handshake.
    build_and_wait_ready(&mut sim, &[A, E, D]);
    sim.send(A, D, b"over the other side");
    wait_for_packet(&mut sim, D);
    assert_eq!(
        payloads_received(&mut sim, D, A).last().unwrap(),
        b"over the other side"
    );
}

fn setup_error(sim: &mut Sim, from: usize, nodes: &[usize]) -> RouteError {
    let path = sim.path(nodes);
    let now = sim.now;
    if let Err(error) = sim.nodes[from].node.build_route(now, &path) {
        return error;
    }
    assert!(sim.run_until(Duration::from_secs(30), |sim| {
        sim.has_event(from, |e| matches!(e, Event::RouteFailed { .. }))
    }));
    sim.nodes[from]
        .events
        .iter()
        .find_map(|e| match e {
            Event::RouteFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn setup_through_a_missing_hop_names_it() {
    let mut sim = five_nodes(5);
    // B has no transport to D.
    let error = setup_error(&mut sim, A, &[A, B, D]);
    let b_key = sim.key(B);
    let d_key = sim.key(D);
    assert_eq!(
        error,
        RouteError::Rejected {
            hop_index: 1,
            hop: b_key,
            next: Some(d_key),
            reason: RejectReason::UnknownNextHop,
        }
    );
    let text = error.to_string();
    assert!(
        text.contains(&b_key.to_string()) && text.contains(&d_key.to_string()),
        "{text}"
    );
    // Nothing is left behind at A or B.
    sim.run_for(Duration::from_secs(1));
    assert!(sim.nodes[A].node.table().is_empty());
    assert!(sim.nodes[B].node.table().is_empty());
}

#[test]
fn setup_through_a_refusing_hop_names_it() {
    // C accepts no routes from anyone.
    let mut sim = Sim::new(6, 5, &LINE, |i, options| {
        if i == C {
            options.max_routes_per_neighbour = 0;
        }
    });
    let error = setup_error(&mut sim, A, &[A, B, C, D]);
    assert_eq!(
        error,
        RouteError::Rejected {
            hop_index: 2,
            hop: sim.key(C),
            next: Some(sim.key(D)),
            reason: RejectReason::RouteLimit,
        }
    );
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.nodes[B].node.table().is_empty(),
        "B kept its half-built rule"
    );
}

#[test]
fn setup_through_a_silent_hop_times_out_naming_it() {
    let mut sim = five_nodes(7);
    // C–D loses everything but is not yet declared dead (no traffic ever crossed it).
    sim.link(C, D).alive = false;
    let error = setup_error(&mut sim, A, &[A, B, C, D]);
    assert_eq!(
        error,
        RouteError::Rejected {
            hop_index: 2,
            hop: sim.key(C),
            next: Some(sim.key(D)),
            reason: RejectReason::Timeout,
        }
    );
}

#[test]
fn local_errors_are_immediate() {
    let mut sim = five_nodes(8);
    let now = sim.now;
    let path = sim.path(&[A, C]);
    assert_eq!(
        sim.nodes[A].node.build_route(now, &path),
        Err(RouteError::Rejected {
            hop_index: 0,
            hop: sim.key(A),
            next: Some(sim.key(C)),
            reason: RejectReason::UnknownNextHop,
        })
    );
    let looping = sim.path(&[A, B, A]);
    assert!(matches!(
        sim.nodes[A].node.build_route(now, &looping),
        Err(RouteError::BadPath(_))
    ));
    let not_mine = sim.path(&[B, C]);
    assert!(matches!(
        sim.nodes[A].node.build_route(now, &not_mine),
        Err(RouteError::BadPath(_))
    ));
}

#[test]
fn routes_survive_loss_and_delay() {
    let mut sim = five_nodes(9);
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    for (a, b) in [(A, B), (B, C), (C, D)] {
        let link = sim.link(a, b);
        link.loss_ppm = 100_000; // 10 %
        link.delay = Duration::from_millis(30);
    }
    for i in 0..200u16 {
        sim.send(A, D, &i.to_be_bytes());
    }
    sim.run_for(Duration::from_secs(2));
    let received = payloads_received(&mut sim, D, A);
    // Three lossy hops deliver about 73 %, in order, none duplicated or invented.
    assert!(
        (100..200).contains(&received.len()),
        "received {} of 200",
        received.len()
    );
    let numbers: Vec<u16> = received
        .iter()
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    // Refreshes keep the route up well past a rule lifetime (30 s), despite the loss.
    sim.run_for(Duration::from_secs(45));
    assert_eq!(sim.nodes[B].node.table().len(), 2);
    assert!(!route_down(&sim, A, D));
}

#[test]
fn unrefreshed_routes_expire_everywhere() {
    // A refreshes far less often than rules live.
    let mut sim = Sim::new(12, 5, &LINE, |i, options| {
        if i == A {
            options.refresh_interval = Duration::from_secs(100);
        }
    });
    build_and_wait_ready(&mut sim, &[A, B, C, D]);
    let (a_key, d_key) = (sim.key(A), sim.key(D));
    let expired = |peer| move |e: &Event| matches!(e, Event::RouteDown { peer: p, reason: RouteDownReason::Expired } if *p == peer);
    assert!(sim.run_until(Duration::from_secs(40), |sim| {
        sim.has_event(A, expired(d_key)) && sim.has_event(D, expired(a_key))
    }));
    assert_no_rules(&sim, &[A, B, C, D]);
}

#[test]
fn teardown_removes_every_rule_and_tells_the_destination() {
    let mut sim = five_nodes(10);
    build_and_wait_ready(&mut sim, &[A, E, D, C]);
    let now = sim.now;
    let c_key = sim.key(C);
    assert!(sim.nodes[A].node.remove_route(now, &c_key));
    let a_key = sim.key(A);
    assert!(sim.run_until(SETUP_LIMIT, |sim| {
        sim.has_event(C, |e| {
            matches!(e, Event::RouteDown { peer, reason: RouteDownReason::TornDown } if *peer == a_key)
        })
    }));
    assert_no_rules(&sim, &[A, E, D, C]);
}

#[test]
fn garbage_from_outside_is_dropped() {
    let mut sim = five_nodes(11);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    let stranger = "127.0.0.9:9999".parse().unwrap();
    let before = sim.nodes[B].node.transports().drops().total();
    let mut rng = sim::SplitMix(99);
    for len in [0usize, 1, 3, 4, 31, 32, 92, 148, 1000, 1500, 4000, 70_000] {
        let mut bytes = vec![0u8; len];
        rand_core::RngCore::fill_bytes(&mut rng, &mut bytes);
        for first in [1u8, 2, 3, 4] {
            if let Some(b) = bytes.first_mut() {
                *b = first;
            }
            sim.inject(B, stranger, &bytes);
        }
    }
    let drops = sim.nodes[B].node.transports().drops();
    assert_eq!(drops.total() - before, 48, "{drops:?}");
    // The route still works.
    sim.send(A, C, b"still here");
    wait_for_packet(&mut sim, C);
}

#[test]
fn ends_check_the_source_of_what_a_session_decrypts() {
    let mut sim = five_nodes(13);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    let c_key = sim.key(C);
    let c_address = sim.nodes[C].node.address();
    // From A's session, but claiming to come from E's mesh address.
    let forged = ipv6_packet(sim.nodes[E].node.address(), c_address, b"forged");
    sim.nodes[A].node.send_to(&c_key, &forged).unwrap();
    // Not for C's mesh address at all: a tunnel app's business, handed over as such.
    let tunnelled = ipv6_packet(
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
        b"tunnel",
    );
    sim.nodes[A].node.send_to(&c_key, &tunnelled).unwrap();
    let a_key = sim.key(A);
    assert!(sim.run_until(SETUP_LIMIT, |sim| {
        sim.has_event(
            C,
            |e| matches!(e, Event::TunnelPacket { peer, .. } if *peer == a_key),
        )
    }));
    assert_eq!(sim.nodes[C].node.drops().source_check, 1);
    assert!(!sim.has_event(C, |e| matches!(e, Event::Packet { .. })));
}

#[test]
fn sessions_outlive_their_route_for_a_while_then_go() {
    let mut sim = five_nodes(14);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    assert_eq!(sim.nodes[C].node.session_count(), 1);
    let now = sim.now;
    let c_key = sim.key(C);
    assert!(sim.nodes[A].node.remove_route(now, &c_key));
    assert!(sim.run_until(SETUP_LIMIT, |sim| route_down(sim, C, A)));
    // Kept for a while, so that a rebuilt route needs no new handshake...
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.nodes[C].node.session_count(), 1);
    // ...then dropped: boringtun would reject its keys after 180 s anyway.
    sim.run_for(Duration::from_secs(130));
    assert_eq!(sim.nodes[C].node.session_count(), 0);
}

/// A mesh packet from `src` to `dst` on `route_id` with next header 252: `inner` as it is, as a
/// direct route carries it.
fn direct_packet(
    route_id: RouteId,
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    inner: &[u8],
) -> Vec<u8> {
    let header = MeshHeader {
        route_id,
        next_header: NextHeader::Direct,
        hop_limit: 64,
        src,
        dst,
        payload_len: inner.len(),
    };
    let mut packet = vec![0u8; header.buffer_len()];
    header.emit(&mut packet).unwrap();
    packet[HEADER_LEN..].copy_from_slice(inner);
    packet
}

/// The id that node `at` relabels the packets of its route towards `next` with: the id the next
/// hop chose for that route.
fn next_hop_id(sim: &Sim, at: usize, next: usize) -> RouteId {
    let node = &sim.nodes[at].node;
    let transport = node.transports().id_of(&sim.key(next)).unwrap();
    node.table()
        .iter()
        .find_map(|(_, entry)| match entry.rule {
            Rule::Forward {
                transport: to,
                next_id,
            } if to == transport => Some(next_id),
            _ => None,
        })
        .expect("a rule forwards to the next hop")
}

#[test]
fn a_direct_route_carries_inner_packets_without_the_route_session() {
    let mut sim = five_nodes(15);
    let at_b = sim.capture(B);
    build_and_wait_ready(&mut sim, &[A, B]);
    let a_key = sim.key(A);
    let route = sim.nodes[A]
        .node
        .routes()
        .find(|(peer, _)| **peer == sim.key(B))
        .map(|(_, route)| route.clone())
        .unwrap();
    assert!(route.is_direct());
    at_b.lock().unwrap().datagrams.clear();
    at_b.lock().unwrap().decrypted.clear();

    let marker = b"MARKER-direct-in-the-hop-transport-alone";
    let inner = sim.send(A, B, marker);
    assert!(sim.run_until(SETUP_LIMIT, |sim| {
        sim.has_event(
            B,
            |e| matches!(e, Event::Packet { peer, .. } if *peer == a_key),
        )
    }));
    assert_eq!(payloads_received(&mut sim, B, A), vec![marker.to_vec()]);

    // What B's transport decrypted is the inner packet behind the outer header, next header
    // 252: no route session's WireGuard in between.
    let capture = at_b.lock().unwrap();
    let carried: Vec<&Vec<u8>> = capture
        .decrypted
        .iter()
        .filter(|packet| packet.ends_with(marker))
        .collect();
    assert_eq!(carried.len(), 1, "one mesh packet carried the marker");
    let mesh = MeshPacket::new_checked(&carried[0][..]).unwrap();
    assert_eq!(mesh.next_header(), NextHeader::Direct);
    assert_eq!(mesh.route_id(), route.out_id);
    assert_eq!(mesh.payload(), &inner[..]);
    // On the wire: the inner packet, the outer header and one WireGuard (32 bytes), once.
    let sizes: Vec<usize> = capture.datagrams.iter().map(Vec::len).collect();
    assert!(
        sizes.contains(&(inner.len() + HEADER_LEN + 32)),
        "no datagram of one encryption's size among {sizes:?}"
    );
    assert!(
        !sizes.contains(&(inner.len() + 2 * HEADER_LEN + 2 * 32)),
        "a datagram of two encryptions' size among {sizes:?}"
    );
}

#[test]
fn a_relay_cannot_pass_its_packets_off_as_direct() {
    // The route A → B → C: B, the relay, knows the id C chose for it and is C's neighbour.
    let mut sim = five_nodes(16);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    let c_consumes = next_hop_id(&sim, B, C);
    let (a_address, b_address, c_address) = (
        sim.nodes[A].node.address(),
        sim.nodes[B].node.address(),
        sim.nodes[C].node.address(),
    );
    let before = sim.nodes[C].node.drops();
    // With its own outer source, and with A's; the inner packet claims to be A's.
    let c_key = sim.key(C);
    for outer_src in [b_address, a_address] {
        let inner = ipv6_packet(a_address, c_address, b"from B, posing as A");
        let forged = direct_packet(c_consumes, outer_src, c_address, &inner);
        sim.nodes[B]
            .node
            .send_mesh_packet_to(&c_key, &forged)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    assert!(
        !sim.has_event(C, |e| matches!(
            e,
            Event::Packet { .. } | Event::TunnelPacket { .. }
        )),
        "C delivered nothing"
    );
    assert_eq!(
        sim.nodes[C].node.drops().direct_refused - before.direct_refused,
        2
    );
    // The route itself is untouched.
    sim.send(A, C, b"the real thing");
    wait_for_packet(&mut sim, C);
    assert_eq!(
        payloads_received(&mut sim, C, A),
        vec![b"the real thing".to_vec()]
    );
}

#[test]
fn a_direct_packet_is_taken_only_from_its_neighbour_and_with_its_inner_source() {
    let mut sim = five_nodes(17);
    build_and_wait_ready(&mut sim, &[A, B]);
    let (a_address, b_address, e_address) = (
        sim.nodes[A].node.address(),
        sim.nodes[B].node.address(),
        sim.nodes[E].node.address(),
    );
    // From A over its direct route, but claiming E's mesh address inside.
    let b_key = sim.key(B);
    let forged = ipv6_packet(e_address, b_address, b"claims to be E");
    sim.nodes[A].node.send_to(&b_key, &forged).unwrap();
    // On A's route id and A's transport, but with another outer source.
    let route_id = route_out_id(&sim, A, B);
    let inner = ipv6_packet(a_address, b_address, b"outer source E");
    let wrong_outer = direct_packet(route_id, e_address, b_address, &inner);
    sim.nodes[A]
        .node
        .send_mesh_packet_to(&b_key, &wrong_outer)
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.has_event(B, |e| matches!(e, Event::Packet { .. })));
    let drops = sim.nodes[B].node.drops();
    assert_eq!((drops.source_check, drops.direct_refused), (1, 1));
    // A packet for B's tunnel apps is handed over as such, its source for them to check.
    let tunnelled = ipv6_packet(
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
        b"tunnel",
    );
    sim.nodes[A].node.send_to(&b_key, &tunnelled).unwrap();
    let a_key = sim.key(A);
    assert!(sim.run_until(SETUP_LIMIT, |sim| {
        sim.has_event(
            B,
            |e| matches!(e, Event::TunnelPacket { peer, packet } if *peer == a_key && *packet == tunnelled),
        )
    }));
}

#[test]
fn relays_never_forward_direct_packets() {
    let mut sim = five_nodes(18);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    let (a_address, c_address) = (sim.nodes[A].node.address(), sim.nodes[C].node.address());
    let route_id = route_out_id(&sim, A, C);
    let c_rule = next_hop_id(&sim, B, C);
    let c_packets = |sim: &Sim| sim.nodes[C].node.table().get(c_rule).unwrap().packets;
    let c_before = c_packets(&sim);
    let inner = ipv6_packet(a_address, c_address, b"not for relays");
    let packet = direct_packet(route_id, a_address, c_address, &inner);
    let b_key = sim.key(B);
    sim.nodes[A]
        .node
        .send_mesh_packet_to(&b_key, &packet)
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.nodes[B].node.drops().direct_in_transit, 1);
    assert!(!sim.has_event(C, |e| matches!(
        e,
        Event::Packet { .. } | Event::TunnelPacket { .. }
    )));
    assert_eq!(
        c_packets(&sim),
        c_before,
        "nothing reached C's end of the route"
    );
}

#[test]
fn relays_drop_packets_beyond_the_mtu_agreed_at_setup() {
    let mut sim = five_nodes(19);
    build_and_wait_ready(&mut sim, &[A, B, C]);
    let route_id = route_out_id(&sim, A, C);
    let mtu = sim.nodes[B].node.table().get(route_id).unwrap().mtu;
    assert_eq!(mtu, skywire_dataplane::node::MESH_MTU);
    let (a_address, c_address) = (sim.nodes[A].node.address(), sim.nodes[C].node.address());
    let b_key = sim.key(B);
    let refused_before = sim.nodes[C].node.drops().session;
    // Session messages that are nothing of the kind: C's session refuses what reaches it.
    for len in [usize::from(mtu), usize::from(mtu) + 1, 2000] {
        let header = MeshHeader {
            route_id,
            next_header: NextHeader::Session,
            hop_limit: 64,
            src: a_address,
            dst: c_address,
            payload_len: len - HEADER_LEN,
        };
        let mut packet = vec![0x04; len];
        header.emit(&mut packet).unwrap();
        sim.nodes[A]
            .node
            .send_mesh_packet_to(&b_key, &packet)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.nodes[B].node.drops().oversized,
        2,
        "both oversized ones"
    );
    assert_eq!(
        sim.nodes[C].node.drops().session - refused_before,
        1,
        "the one that fits went on"
    );
}
