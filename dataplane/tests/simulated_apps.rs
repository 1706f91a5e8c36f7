//! The apps in the in-memory mesh, each scenario under a fixed seed: SOCKS streams through a
//! relay with an in-memory kernel at both ends, VPN frames across a relay with the source
//! checks, mesh ping (and a ping that waits out a repair), a route rebuilt over another path
//! while a stream keeps its bytes, packets for a node whose route was removed, a node that
//! stops with its VPN up, and what a reloaded configuration changes while the node runs
//! (neighbours removed and added, an app's new section, an automatic route repaired when the
//! neighbour it ran through is removed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use skywire_dataplane::api::socks::SocksApp;
use skywire_dataplane::api::socks::{ClientStatus, ServerStatus};
use skywire_dataplane::api::vpn::{VpnApp, VpnStatus};
use skywire_dataplane::api::{
    AppChange, AppConfig, BuiltinApp, NeighbourChange, NeighbourReply, Reply, Request,
    RequestError, Response,
};
use skywire_dataplane::sim::{interface_address, ipv4_packet, ipv6_packet, AppSim, StreamId};
use skywire_dataplane::socks::{self, SocksOptions};
use skywire_dataplane::vpn;
use skywire_dataplane::{NeighbourConfig, NodeKey};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

/// Two paths from A to C: through B and through D.
const TWO_PATHS: [(usize, usize); 4] = [(A, B), (B, C), (A, D), (D, C)];

/// Virtual-time limits: generous, and free when met early.
const LIMIT: Duration = Duration::from_secs(30);
/// How often the test's programs look at their streams, in virtual time.
const SLICE: Duration = Duration::from_millis(5);

fn proxy() -> SocketAddr {
    "127.0.0.1:1080".parse().unwrap()
}

fn target() -> SocketAddr {
    "10.0.0.1:80".parse().unwrap()
}

/// The exit's dial policy with the targets' private network allowed.
fn target_allowed() -> socks::DialPolicy {
    socks::DialPolicy {
        allow_targets: vec!["10.0.0.0/24".parse().unwrap()],
        ..socks::DialPolicy::default()
    }
}

/// A's SOCKS client (exit C through `path`, or over a path its node chooses) and C's server
/// (serving A).
fn socks_apps(
    path: Option<&[usize]>,
) -> impl Fn(usize, &[NodeKey], &mut skywire_dataplane::service::ServiceOptions) + '_ {
    move |i, keys, options| match i {
        A => {
            let mut client = socks::ClientOptions::new(keys[C]);
            client.listen = proxy();
            client.path = path.map(|path| path.iter().map(|node| keys[*node]).collect());
            options.socks = SocksOptions {
                client: Some(client),
                server: None,
            };
        }
        C => {
            options.socks = SocksOptions {
                client: None,
                server: Some(socks::ServerOptions {
                    allow: vec![keys[A]],
                    dial_policy: target_allowed(),
                    ..socks::ServerOptions::default()
                }),
            };
        }
        _ => {}
    }
}

fn route_ready(sim: &AppSim, from: usize, to: usize) -> bool {
    sim.route(from, to).is_some_and(|route| route.ready)
}

/// Runs until A's route to the exit, C, is ready.
fn wait_for_exit_route(sim: &mut AppSim) {
    run_with(sim, "A's route to the exit", |sim| route_ready(sim, A, C));
}

/// Runs in slices, giving `step` the mesh between them, until it says done; panics after
/// `limit` of virtual time.
fn run_with(sim: &mut AppSim, what: &str, mut step: impl FnMut(&mut AppSim) -> bool) {
    let deadline = sim.elapsed() + LIMIT;
    while !step(sim) {
        assert!(sim.elapsed() < deadline, "timed out: {what}");
        sim.run_for(SLICE);
    }
}

/// Reads from `stream` until `len` bytes have come.
fn read_exactly(sim: &mut AppSim, stream: StreamId, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    run_with(sim, "bytes from the stream", |sim| {
        got.extend(sim.read(stream));
        got.len() >= len
    });
    got
}

/// A SOCKS5 CONNECT through A's port to `target` (an address, or a name and port); the
/// stream and the reply code.
fn socks_connect(sim: &mut AppSim, target: &[u8]) -> (StreamId, u8) {
    let stream = sim.connect(A, proxy()).expect("A's SOCKS port accepts");
    sim.write(stream, &[5, 1, 0]);
    assert_eq!(read_exactly(sim, stream, 2), [5, 0], "no authentication");
    let mut request = vec![5, 1, 0];
    request.extend_from_slice(target);
    sim.write(stream, &request);
    let reply = read_exactly(sim, stream, 10);
    assert_eq!(reply[0], 5);
    (stream, reply[1])
}

/// A SOCKS stream through A's port to the target behind C, which the exit dialed: the local
/// program's end and the target's.
fn open_stream(sim: &mut AppSim) -> (StreamId, StreamId) {
    let (client, code) = socks_connect(sim, &address_target(target()));
    assert_eq!(code, 0, "succeeded");
    let server = sim.accept(C, target()).expect("the exit dialed the target");
    (client, server)
}

fn address_target(address: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = address else {
        panic!("IPv4 targets only here");
    };
    let mut bytes = vec![1];
    bytes.extend_from_slice(&v4.ip().octets());
    bytes.extend_from_slice(&v4.port().to_be_bytes());
    bytes
}

fn name_target(name: &str, port: u16) -> Vec<u8> {
    let mut bytes = vec![3, name.len() as u8];
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
}

/// `len` bytes that tell their position apart.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn socks_status(sim: &mut AppSim, node: usize) -> (Option<ClientStatus>, Option<ServerStatus>) {
    match sim.ask(node, Request::SocksStatus, LIMIT) {
        Ok(Reply::Socks(status)) => (status.client, status.server),
        other => panic!("not a SOCKS status: {other:?}"),
    }
}

/// A frame from A's VPN client to `host` arrives at C's server device, and A's client is up
/// and never reconnected.
fn frame_crosses_the_new_route(sim: &mut AppSim, client_v4: Ipv4Addr, host: Ipv4Addr, text: &[u8]) {
    let frame = ipv4_packet(client_v4, host, text);
    sim.tun_send(A, VpnApp::Client, &frame);
    let mut at_c = Vec::new();
    run_with(sim, "the frame at C over the new route", |sim| {
        at_c.extend(sim.tun_received(C, VpnApp::Server));
        at_c.contains(&frame)
    });
    let vpn = vpn_status(sim, A).client.unwrap();
    assert_eq!((vpn.state.as_str(), vpn.reconnects), ("up", 0), "{vpn:?}");
}

/// Writes `up` into the stream's client end and `down` into its target's end, lets `meanwhile`
/// act on the mesh, then reads both ends until all has come (`what` names that wait) and
/// checks that the bytes arrived intact.
fn carry_across(
    sim: &mut AppSim,
    (client, server): (StreamId, StreamId),
    (up, down): (&[u8], &[u8]),
    what: &str,
    meanwhile: impl FnOnce(&mut AppSim),
) {
    sim.write(client, up);
    sim.write(server, down);
    meanwhile(sim);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    run_with(sim, what, |sim| {
        got_up.extend(sim.read(server));
        got_down.extend(sim.read(client));
        got_up.len() >= up.len() && got_down.len() >= down.len()
    });
    assert!(got_up == up, "the bytes to the target arrived intact");
    assert!(got_down == down, "the bytes to the client arrived intact");
}

/// Carries `up` from the client to the target and `down` back through an open relay, then
/// half-closes both ways and waits until both sides are closed.
fn carry_both_ways(sim: &mut AppSim, client: StreamId, server: StreamId, up: &[u8], down: &[u8]) {
    carry_across(sim, (client, server), (up, down), "both directions", |_| {});
    sim.shutdown(client);
    run_with(sim, "the client's FIN at the target", |sim| {
        sim.read(server).is_empty() && sim.is_finished(server)
    });
    sim.shutdown(server);
    run_with(sim, "the target's FIN at the client", |sim| {
        sim.read(client).is_empty() && sim.is_finished(client)
    });
    run_with(sim, "both connections closed", |sim| {
        sim.is_closed_by_service(client) && sim.is_closed_by_service(server)
    });
}

#[test]
fn a_socks_stream_through_a_relay_carries_its_bytes_intact_both_ways() {
    let mut sim = AppSim::new(11, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    let (up, down) = (pattern(1 << 20, 1), pattern(3 << 19, 2));
    carry_both_ways(&mut sim, client, server, &up, &down);

    let (client_status, _) = socks_status(&mut sim, A);
    let client_status = client_status.unwrap();
    assert_eq!(
        (client_status.accepted, client_status.failed),
        (1, 0),
        "{client_status:?}"
    );
    assert_eq!(client_status.bytes_up, up.len() as u64);
    assert_eq!(client_status.bytes_down, down.len() as u64);
    let (_, server_status) = socks_status(&mut sim, C);
    let server_status = server_status.unwrap();
    assert_eq!(
        (server_status.accepted, server_status.failed),
        (1, 0),
        "{server_status:?}"
    );
    assert_eq!(client_status.connections + server_status.connections, 0);

    // A target that nobody serves: the exit's dial is refused, and the client hears 05.
    let closed: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let (refused, code) = socks_connect(&mut sim, &address_target(closed));
    assert_eq!(code, 5, "connection refused");
    run_with(&mut sim, "the refused connection closed", |sim| {
        sim.is_closed_by_service(refused)
    });
}

#[test]
fn an_exit_refuses_a_strangers_streams_at_their_syn_without_a_socket() {
    // C serves B only: A is a stranger to it.
    let apps =
        |i: usize, keys: &[NodeKey], options: &mut skywire_dataplane::service::ServiceOptions| {
            socks_apps(Some(&[B, C]))(i, keys, options);
            if let Some(server) = options.socks.server.as_mut() {
                server.allow = vec![keys[B]];
            }
        };
    let mut sim = AppSim::new(12, 3, &[(A, B), (B, C)], apps);
    wait_for_exit_route(&mut sim);
    let status = |sim: &mut AppSim| match sim.ask(C, Request::Status, LIMIT) {
        Ok(Reply::Status(status)) => status,
        other => panic!("not a status: {other:?}"),
    };
    let before = status(&mut sim).mesh_tcp;
    for _ in 0..100 {
        let (stream, code) = socks_connect(&mut sim, &address_target(target()));
        assert_eq!(code, 2, "not allowed");
        sim.close(stream);
    }
    let after = status(&mut sim).mesh_tcp;
    assert_eq!(after.syns_refused.not_admitted, 100, "{after:?}");
    assert_eq!(after.syns_refused.total(), 100, "{after:?}");
    assert_eq!(after.sockets, before.sockets, "no socket was made");
    assert_eq!(
        after.sockets_peak, before.sockets_peak,
        "not even for a moment"
    );
    let (_, server) = socks_status(&mut sim, C);
    let server = server.unwrap();
    assert_eq!((server.accepted, server.refused), (0, 100), "{server:?}");
}

#[test]
fn a_name_is_resolved_at_the_exit() {
    let mut sim = AppSim::new(12, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    sim.set_name("target.example", &[target().ip()]);
    wait_for_exit_route(&mut sim);
    let (client, code) = socks_connect(&mut sim, &name_target("target.example", 80));
    assert_eq!(code, 0);
    let server = sim
        .accept(C, target())
        .expect("the exit dialed the resolved address");
    carry_both_ways(&mut sim, client, server, b"GET /", b"HTTP/1.1 200 OK");
    let (_, code) = socks_connect(&mut sim, &name_target("nowhere.example", 80));
    assert_eq!(code, 4, "a name that does not resolve: host unreachable");
}

#[test]
fn only_the_addresses_the_dial_policy_permits_are_dialled() {
    let mut sim = AppSim::new(14, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    let loopback: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
    for served in [loopback, metadata, target()] {
        sim.serve(C, served);
    }
    sim.set_name(
        "mixed.example",
        &[loopback.ip(), metadata.ip(), target().ip()],
    );
    sim.set_name("local.example", &[loopback.ip(), "::1".parse().unwrap()]);
    wait_for_exit_route(&mut sim);

    // A name with denied and permitted addresses: only the permitted one is dialled.
    let (client, code) = socks_connect(&mut sim, &name_target("mixed.example", 80));
    assert_eq!(code, 0);
    let server = sim
        .accept(C, target())
        .expect("the exit dialed the permitted address");
    carry_both_ways(&mut sim, client, server, b"GET /", b"HTTP/1.1 200 OK");

    // Denied targets, by address or by a name with no permitted address: 02, counted.
    for target in [
        address_target(loopback),
        address_target(metadata),
        name_target("local.example", 80),
    ] {
        let (_, code) = socks_connect(&mut sim, &target);
        assert_eq!(code, 2, "not allowed: {target:?}");
    }
    assert!(sim.accept(C, loopback).is_none(), "loopback was dialled");
    assert!(sim.accept(C, metadata).is_none(), "link-local was dialled");
    let (_, server) = socks_status(&mut sim, C);
    let server = server.unwrap();
    assert_eq!((server.denied, server.refused), (3, 0), "{server:?}");
}

/// The local program half-closes after its request and reads nothing until the whole answer
/// and the exit's FIN have reached the entry: the entry's mesh stream closes (LAST-ACK, then
/// CLOSED) before the relay has written the answer out. The download still arrives whole and
/// counts as a success.
#[test]
fn a_download_that_outlives_its_mesh_stream_arrives_whole_and_is_no_failure() {
    let mut sim = AppSim::new(13, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    sim.write(client, b"GET /");
    assert_eq!(read_exactly(&mut sim, server, 5), b"GET /");
    // More than the program's socket holds, less than that and the entry's mesh buffer.
    let answer = pattern(1 << 20, 3);
    sim.write(server, &answer);
    sim.shutdown(server);
    sim.run_for(Duration::from_secs(5));
    sim.shutdown(client);
    sim.run_for(Duration::from_secs(5));
    let mut got = Vec::new();
    run_with(&mut sim, "the whole answer", |sim| {
        got.extend(sim.read(client));
        sim.is_finished(client)
    });
    assert!(got == answer, "{} of {} bytes", got.len(), answer.len());
    run_with(&mut sim, "both connections closed", |sim| {
        sim.is_closed_by_service(client) && sim.is_closed_by_service(server)
    });
    let (client_status, _) = socks_status(&mut sim, A);
    let client_status = client_status.unwrap();
    assert_eq!(client_status.failed, 0, "{client_status:?}");
    assert_eq!(client_status.bytes_down, answer.len() as u64);
}

/// A route rebuilt over another path while a stream runs, as a repair does: the route session
/// carries on over the new route, so the stream keeps every byte, those in flight during the
/// switch included, and the exit never sees the route go down.
#[test]
fn a_stream_keeps_its_bytes_while_its_route_is_rebuilt_over_another_path() {
    let mut sim = AppSim::new(14, 4, &TWO_PATHS, socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    sim.write(client, b"before");
    assert_eq!(read_exactly(&mut sim, server, 6), b"before");

    // Bytes in flight while the route changes: some cross the old route, some the new.
    let (up, down) = (pattern(256 * 1024, 3), pattern(192 * 1024, 4));
    let what = "the bytes sent across the switch";
    carry_across(&mut sim, (client, server), (&up, &down), what, |sim| {
        let reply = sim.rebuild_route(A, &[A, D, C], LIMIT);
        let Ok(Reply::RouteBuilt(row)) = reply else {
            panic!("not built: {reply:?}");
        };
        assert_eq!(row.path, sim.path(&[A, D, C]));
        assert!(row.ready);
    });
    assert_eq!(
        route_path(&sim, C, A),
        Some(sim.path(&[A, D, C])),
        "the exit adopted the new route"
    );

    carry_both_ways(&mut sim, client, server, b"after", b"still here");
    let (client_status, _) = socks_status(&mut sim, A);
    assert_eq!(client_status.unwrap().failed, 0);
    // A new stream goes through the new route as well.
    let (client, server) = open_stream(&mut sim);
    carry_both_ways(&mut sim, client, server, b"again", b"and back");
}

/// How many handshake initiations the route sessions between nodes `a` and `b` have sent,
/// both ends together.
fn initiations(sim: &AppSim, a: usize, b: usize) -> u64 {
    let count = |at: usize, peer: usize| {
        sim.nodes[at]
            .service
            .node()
            .session_initiations(&sim.key(peer))
            .unwrap_or(0)
    };
    count(a, b) + count(b, a)
}

/// The path of node `at`'s route to node `to`, if it has one.
fn route_path(sim: &AppSim, at: usize, to: usize) -> Option<Vec<NodeKey>> {
    sim.route(at, to).map(|route| route.path.clone())
}

/// Writes `up` and `down` into the stream's two ends, rebuilds A's route to C over `path`
/// meanwhile, and checks that every byte arrived.
fn move_route_while_carrying(
    sim: &mut AppSim,
    (client, server): (StreamId, StreamId),
    path: &[usize],
    (up, down): (&[u8], &[u8]),
) {
    let what = "the bytes sent across the move";
    carry_across(sim, (client, server), (up, down), what, |sim| {
        let reply = sim.rebuild_route(A, path, LIMIT);
        assert!(matches!(reply, Ok(Reply::RouteBuilt(_))), "{reply:?}");
    });
    assert_eq!(route_path(sim, C, A), Some(sim.path(path)), "C adopted it");
}

/// A direct route carries no route-session traffic, yet its session stays established: kept
/// for over ten minutes, the route moves onto a relayed path and back while a stream runs,
/// with no new handshake, and the stream keeps every byte.
#[test]
fn a_direct_route_moves_onto_a_relayed_path_and_back_without_a_handshake() {
    let mut sim = AppSim::new(15, 3, &[(A, B), (B, C), (A, C)], socks_apps(Some(&[C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    assert_eq!(route_path(&sim, A, C), Some(sim.path(&[A, C])));
    let (client, server) = open_stream(&mut sim);

    // Eleven minutes of a stream that trickles, over the direct route.
    let handshakes_before = initiations(&sim, A, C);
    for minute in 0..11u8 {
        sim.write(client, &[b'u', minute]);
        sim.write(server, &[b'd', minute]);
        assert_eq!(read_exactly(&mut sim, server, 2), [b'u', minute]);
        assert_eq!(read_exactly(&mut sim, client, 2), [b'd', minute]);
        sim.run_for(Duration::from_secs(60));
    }
    assert_eq!(route_path(&sim, A, C), Some(sim.path(&[A, C])));
    // The session made new keys every two minutes, though the route carried nothing in it.
    let renewed = initiations(&sim, A, C) - handshakes_before;
    assert!(
        (4..=6).contains(&renewed),
        "{renewed} handshakes in 11 minutes"
    );

    // Right after new keys, so that the timer does not make more during the moves.
    let last = initiations(&sim, A, C);
    assert!(
        sim.run_until(Duration::from_secs(150), |sim| initiations(sim, A, C)
            > last),
        "no new keys within 150 s"
    );
    let handshakes = initiations(&sim, A, C);
    move_route_while_carrying(
        &mut sim,
        (client, server),
        &[A, B, C],
        (&pattern(192 * 1024, 5), &pattern(256 * 1024, 6)),
    );
    move_route_while_carrying(
        &mut sim,
        (client, server),
        &[A, C],
        (&pattern(256 * 1024, 7), &pattern(192 * 1024, 8)),
    );
    assert_eq!(
        initiations(&sim, A, C),
        handshakes,
        "the moves needed no handshake"
    );
    carry_both_ways(&mut sim, client, server, b"after", b"both moves");
}

/// A's VPN client (server C, through B), which routes C's network and C's pools through the
/// tunnel, and C's server (serving A).
fn vpn_apps(i: usize, keys: &[NodeKey], options: &mut skywire_dataplane::service::ServiceOptions) {
    vpn_apps_routing(&["10.99.0.0/24", "fd99::/64", "10.77.0.0/24", "fd77::/64"])(i, keys, options);
}

/// As [`vpn_apps`], with A's client routing `routes` through the tunnel.
fn vpn_apps_routing(
    routes: &'static [&'static str],
) -> impl Fn(usize, &[NodeKey], &mut skywire_dataplane::service::ServiceOptions) {
    move |i, keys, options| match i {
        A => {
            options.vpn.client = Some(vpn::ClientOptions {
                start: true,
                tun: "skycli".parse().unwrap(),
                server: keys[C],
                path: Some(vec![keys[B]]),
                routes: routes.iter().map(|route| route.parse().unwrap()).collect(),
                port: vpn::DEFAULT_LEASE_PORT,
            });
        }
        C => options.vpn.server = Some(vpn_server(keys[A])),
        _ => {}
    }
}

/// C's VPN server, serving `client`.
fn vpn_server(client: NodeKey) -> vpn::ServerOptions {
    vpn::ServerOptions {
        start: true,
        tun: "skysrv".parse().unwrap(),
        pool4: Some("10.77.0.0/24".parse().unwrap()),
        pool6: Some("fd77::/64".parse().unwrap()),
        allow: vec![client],
        port: vpn::DEFAULT_LEASE_PORT,
    }
}

fn vpn_status(sim: &mut AppSim, node: usize) -> VpnStatus {
    match sim.ask(node, Request::VpnStatus, LIMIT) {
        Ok(Reply::Vpn(status)) => *status,
        other => panic!("not a VPN status: {other:?}"),
    }
}

/// The state of A's VPN client, as its status says.
fn vpn_client_state(sim: &mut AppSim) -> String {
    vpn_status(sim, A).client.unwrap().state
}

fn vpn_client_up(sim: &mut AppSim) -> bool {
    vpn_client_state(sim) == "up"
}

#[test]
fn a_grant_outside_the_clients_routes_is_refused_and_nothing_is_put_on_the_host() {
    let mut sim = AppSim::new(
        24,
        3,
        &[(A, B), (B, C)],
        vpn_apps_routing(&["10.99.0.0/24", "fd99::/64"]),
    );
    run_with(&mut sim, "A's client refusing its grant", |sim| {
        vpn_client_state(sim).starts_with("grant refused")
    });
    let client = vpn_status(&mut sim, A).client.unwrap();
    assert!(
        client.state.contains("10.77.0.2/24") && client.state.contains("vpn.client.routes"),
        "{}",
        client.state
    );
    assert_eq!((client.ipv4, client.ipv6), (None, None));
    assert_eq!(sim.tun_addresses(A, VpnApp::Client), Some(&[][..]));
    assert_eq!(sim.tun_routes(A), None, "no route was installed");
}

#[test]
fn a_grant_inside_a_network_of_the_clients_host_is_refused_until_that_network_goes() {
    let mut sim = AppSim::new(
        25,
        3,
        &[(A, B), (B, C)],
        vpn_apps_routing(&["0.0.0.0/0", "::/0"]),
    );
    // A's LAN is 10.77.0.0/16: the server's pool lies inside it. The client's own device
    // does not count.
    sim.nodes[A].service.handle_interfaces(vec![
        interface_address("lo", "127.0.0.1/8"),
        interface_address("eth0", "10.77.3.4/16"),
        interface_address("skycli", "10.77.0.2/24"),
    ]);
    run_with(&mut sim, "A's client refusing its grant", |sim| {
        vpn_client_state(sim).starts_with("grant refused")
    });
    let state = vpn_client_state(&mut sim);
    assert!(
        state.contains("10.77.0.2, inside 10.77.0.0/16, which is on-link on eth0"),
        "{state}"
    );
    assert_eq!(sim.tun_addresses(A, VpnApp::Client), Some(&[][..]));
    assert_eq!(sim.tun_routes(A), None, "no route was installed");

    // The LAN goes (the host moved): the next try takes the grant.
    sim.nodes[A]
        .service
        .handle_interfaces(vec![interface_address("lo", "127.0.0.1/8")]);
    assert!(
        sim.run_until(Duration::from_secs(60), |sim| {
            sim.tun_routes(A).is_some_and(|routes| routes.len() == 2)
        }),
        "the client never took its grant"
    );
    run_with(&mut sim, "A's client up", vpn_client_up);
    assert_eq!(sim.tun_addresses(A, VpnApp::Client).unwrap().len(), 2);
}

/// Runs until frames come out of `app`'s device on node `at`; returns them.
fn tun_frames(sim: &mut AppSim, at: usize, app: VpnApp, what: &str) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    run_with(sim, what, |sim| {
        frames.extend(sim.tun_received(at, app));
        !frames.is_empty()
    });
    frames
}

#[test]
fn vpn_frames_cross_a_relay_and_sources_are_checked() {
    let mut sim = AppSim::new(21, 3, &[(A, B), (B, C)], vpn_apps);
    run_with(&mut sim, "A's VPN client up", vpn_client_up);
    let client_v4: Ipv4Addr = "10.77.0.2".parse().unwrap();
    let client_v6: Ipv6Addr = "fd77::2".parse().unwrap();
    assert_eq!(
        sim.tun_addresses(A, VpnApp::Client).unwrap(),
        [(IpAddr::V4(client_v4), 24), (IpAddr::V6(client_v6), 64)]
    );
    assert_eq!(
        sim.tun_routes(A).unwrap().len(),
        4,
        "the routes are in place"
    );
    assert!(
        sim.lease_file(C).unwrap().contains(&sim.key(A).to_string()),
        "the lease was saved"
    );
    let host: Ipv4Addr = "10.99.0.1".parse().unwrap();

    // A frame from A's machine reaches C's TUN device through B; the answer comes back.
    let out = ipv4_packet(client_v4, host, b"ping over the tunnel");
    sim.tun_send(A, VpnApp::Client, &out);
    assert_eq!(
        tun_frames(&mut sim, C, VpnApp::Server, "the frame at C"),
        [out]
    );
    let back = ipv4_packet(host, client_v4, b"pong");
    sim.tun_send(C, VpnApp::Server, &back);
    assert_eq!(
        tun_frames(&mut sim, A, VpnApp::Client, "the answer at A"),
        [back]
    );
    let out6 = ipv6_packet(client_v6, "fd99::1".parse().unwrap(), b"over IPv6");
    sim.tun_send(A, VpnApp::Client, &out6);
    let at_c = tun_frames(&mut sim, C, VpnApp::Server, "the IPv6 frame at C");
    assert_eq!(at_c, [out6]);

    // A forged source is dropped and counted at C; so is a frame for no client.
    let forged = ipv4_packet("10.77.0.9".parse().unwrap(), host, b"forged");
    sim.tun_send(A, VpnApp::Client, &forged);
    sim.tun_send(
        C,
        VpnApp::Server,
        &ipv4_packet(host, "10.77.0.3".parse().unwrap(), b"x"),
    );
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.tun_received(C, VpnApp::Server).is_empty(),
        "nothing forged got out"
    );
    let server = vpn_status(&mut sim, C).server.unwrap();
    assert_eq!(
        (server.drops.forged_source, server.drops.no_client),
        (1, 1),
        "{server:?}"
    );
    assert_eq!(server.clients.len(), 1);
    assert_eq!(server.clients[0].rx.packets, 2, "{server:?}");

    // A packet from A's mesh address to C's that is neither TCP nor ICMPv6 reaches C's mesh
    // stack, which refuses it: counted.
    let to_stack = ipv6_packet(
        sim.key(A).mesh_address(),
        sim.key(C).mesh_address(),
        b"not for the stack",
    );
    sim.tun_send(A, VpnApp::Client, &to_stack);
    run_with(&mut sim, "the refused packet counted", |sim| {
        sim.nodes[C].service.drops().stack_refused == 1
    });

    // Stopping the client removes its routes and closes its device.
    let reply = sim.ask(
        A,
        Request::VpnStop {
            app: VpnApp::Client,
        },
        LIMIT,
    );
    let Ok(Reply::Vpn(status)) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(status.client.unwrap().state, "stopped");
    assert!(sim.tun_addresses(A, VpnApp::Client).is_none());
    assert!(sim.tun_routes(A).is_none());
}

#[test]
fn a_vpn_that_cannot_make_its_device_says_so_and_the_node_runs_on() {
    let mut sim = AppSim::new(22, 3, &[(A, B), (B, C)], vpn_apps);
    sim.deny_tun(A);
    let reply = sim.ask(
        A,
        Request::VpnStop {
            app: VpnApp::Client,
        },
        LIMIT,
    );
    assert!(matches!(reply, Ok(Reply::Vpn(_))), "{reply:?}");
    let reply = sim.ask(
        A,
        Request::VpnStart {
            app: VpnApp::Client,
        },
        LIMIT,
    );
    match reply {
        Err(RequestError::App(error)) => {
            assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}")
        }
        other => panic!("expected the app's error, got {other:?}"),
    }
    let state = vpn_client_state(&mut sim);
    assert!(
        state.starts_with("failed: ") && state.contains("CAP_NET_ADMIN"),
        "{state}"
    );
    let reply = sim.ask(
        A,
        Request::VpnStop {
            app: VpnApp::Client,
        },
        LIMIT,
    );
    assert!(
        matches!(reply, Err(RequestError::VpnNotRunning(VpnApp::Client))),
        "{reply:?}"
    );
    assert!(matches!(
        sim.ask(A, Request::Status, LIMIT),
        Ok(Reply::Status(_))
    ));
}

#[test]
fn a_stopping_node_refuses_requests_and_answers_its_shutdown_once_the_vpn_is_undone() {
    let mut sim = AppSim::new(23, 3, &[(A, B), (B, C)], vpn_apps);
    run_with(&mut sim, "A's VPN client up", vpn_client_up);
    let shutdown = sim.request(A, Request::Shutdown);
    let status = sim.request(A, Request::Status);
    let (mut stopped, mut refused) = (None, None);
    run_with(&mut sim, "both requests answered", |sim| {
        stopped = stopped.take().or_else(|| sim.take_reply(A, shutdown));
        refused = refused.take().or_else(|| sim.take_reply(A, status));
        stopped.is_some() && refused.is_some()
    });
    assert!(
        matches!(refused, Some(Err(RequestError::Stopping))),
        "{refused:?}"
    );
    assert!(matches!(stopped, Some(Ok(Reply::Stopped))), "{stopped:?}");
    assert!(sim.nodes[A].service.is_stopped());
    assert!(sim.tun_addresses(A, VpnApp::Client).is_none());
    assert!(sim.tun_routes(A).is_none());
}

#[test]
fn mesh_ping_crosses_a_relay_over_a_route_it_builds() {
    let mut sim = AppSim::new(31, 3, &[(A, B), (B, C)], |_, _, _| {});
    let peer = sim.key(C);
    // Before any advert has come, no path is known: a clear error at once.
    let reply = sim.ask(A, Request::PingNode { peer, count: 3 }, LIMIT);
    assert!(
        matches!(reply, Err(RequestError::NoPath { peer: named }) if named == peer),
        "{reply:?}"
    );
    run_with(&mut sim, "A to know a path to C", |sim| {
        sim.nodes[A].service.node().find_route(&peer).is_some()
    });
    // The ping has a route built over the path A's node chooses, then pings over it.
    let reply = sim.ask(A, Request::PingNode { peer, count: 3 }, LIMIT);
    let Ok(Reply::Ping(ping)) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(ping.sent, 3);
    assert_eq!(ping.rtt_ms.len(), 3, "{ping:?}");
    // Two links of 5 ms each way.
    assert!(ping.rtt_ms.iter().all(|rtt| *rtt >= 20.0), "{ping:?}");
    assert_eq!(ping.address, peer.mesh_address());
    assert_eq!(
        route_path(&sim, A, C),
        Some(sim.path(&[A, B, C])),
        "the route stays"
    );
}

/// B, the relay of A's route to C, restarts, and C's first ping finds that B forgot the route:
/// C waits for A, the route's initiator, to repair it. A ping from C meanwhile waits for that
/// repair, as a dial or a message does: C starts no setup of its own beside it, and every echo
/// is answered over the route A repaired.
#[test]
fn a_ping_during_a_repair_waits_for_it_and_starts_no_setup_of_its_own() {
    let mut sim = AppSim::new(32, 3, &[(A, B), (B, C)], |_, _, _| {});
    let (a, c) = (sim.key(A), sim.key(C));
    run_with(&mut sim, "A to know a path to C", |sim| {
        sim.nodes[A].service.node().find_route(&c).is_some()
    });
    let ping = |peer: NodeKey, count: u32| Request::PingNode { peer, count };
    // A's ping has A's node build the route: A is its initiator, C its far end.
    let reply = sim.ask(A, ping(c, 1), LIMIT);
    assert!(matches!(reply, Ok(Reply::Ping(_))), "{reply:?}");

    let lost = sim.forget_route_at_relay(B, C, A, ping(a, 1), LIMIT);
    let (setups_at_a, setups_at_c) = (sim.setups_started(A), sim.setups_started(C));

    // While C waits for A's repair, it pings A again.
    let waiting = sim.request(C, ping(a, 3));
    sim.assert_waits_for_repair(C, A, setups_at_c);

    // A's next ping finds the route forgotten too, and A's node repairs it.
    let from_a = sim.request(A, ping(c, 1));
    run_with(&mut sim, "the pings answered", |sim| {
        sim.has_reply(C, lost) && sim.has_reply(C, waiting) && sim.has_reply(A, from_a)
    });
    let reply = sim.take_reply(C, waiting);
    let Some(Ok(Reply::Ping(during))) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(during.sent, 3);
    assert_eq!(during.rtt_ms.len(), 3, "{during:?}");
    sim.assert_repaired_by(A, setups_at_a, C, setups_at_c);
}

/// A removed route's session lingers (it belongs to the peer, so that a new route needs no
/// handshake) but carries nothing by itself: what the mesh stack sends to that node meanwhile
/// is dropped and counted as unroutable.
#[test]
fn packets_for_a_node_whose_route_was_removed_count_as_unroutable() {
    let mut sim = AppSim::new(16, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, _) = open_stream(&mut sim);
    assert_eq!(sim.nodes[A].service.drops().stack_unroutable, 0);
    let peer = sim.key(C);
    let reply = sim.ask(A, Request::RemoveRoute { peer }, LIMIT);
    assert!(matches!(reply, Ok(Reply::RouteRemoved { .. })), "{reply:?}");
    assert_eq!(sim.nodes[A].service.node().session_count(), 1);
    sim.write(client, b"nothing carries these");
    sim.run_for(Duration::from_millis(100));
    assert!(sim.nodes[A].service.drops().stack_unroutable > 0);
}

/// A relayed stream with nothing to say for two minutes stays open (the mesh streams' peers
/// answer each other's keep-alives), and carries bytes afterwards.
#[test]
fn an_idle_stream_stays_open() {
    let mut sim = AppSim::new(15, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    sim.run_for(Duration::from_secs(120));
    assert!(!sim.is_closed_by_service(client) && !sim.is_closed_by_service(server));
    carry_both_ways(&mut sim, client, server, b"still", b"there");
    let (client_status, _) = socks_status(&mut sim, A);
    assert_eq!(client_status.unwrap().failed, 0);
}

// ----- apps over paths their node chooses -----

/// A's SOCKS client and VPN client with no path (the node chooses it, and repairs the route),
/// and C's servers for both, serving A.
fn automatic_apps(
    i: usize,
    keys: &[NodeKey],
    options: &mut skywire_dataplane::service::ServiceOptions,
) {
    socks_apps(None)(i, keys, options);
    vpn_apps(i, keys, options);
    if let Some(client) = options.vpn.client.as_mut() {
        client.path = None;
    }
}

/// Kills node `relay` as SIGKILL would: every link to it goes silent.
fn kill(sim: &mut AppSim, relay: usize, links: &[(usize, usize)]) {
    for (a, b) in links {
        if *a == relay || *b == relay {
            sim.link(*a, *b).alive = false;
        }
    }
}

/// [`automatic_apps`] under `seed` on two paths from A to C, through B and through D, with the
/// target served, run until A's VPN client is up and its SOCKS route ready: the mesh, the relay
/// that route runs through, and the other.
fn automatic_apps_on_two_paths(seed: u64) -> (AppSim, usize, usize) {
    let mut sim = AppSim::new(seed, 4, &TWO_PATHS, automatic_apps);
    sim.serve(C, target());
    run_with(
        &mut sim,
        "A's VPN client up and the SOCKS route ready",
        |sim| vpn_client_up(sim) && route_ready(sim, A, C),
    );
    let before = route_path(&sim, A, C).unwrap();
    assert_eq!(before.len(), 3, "through one relay: {before:?}");
    if before[1] == sim.key(B) {
        (sim, B, D)
    } else {
        (sim, D, B)
    }
}

#[test]
fn a_stream_and_the_vpn_over_automatic_paths_ride_out_the_death_of_their_relay() {
    let (mut sim, relay, other) = automatic_apps_on_two_paths(41);
    let (client, server) = open_stream(&mut sim);
    sim.write(client, b"before");
    assert_eq!(read_exactly(&mut sim, server, 6), b"before");

    // Bytes in flight both ways when the relay dies; VPN frames just before and after.
    let (up, down) = (pattern(256 * 1024, 5), pattern(192 * 1024, 6));
    let (client_v4, host): (Ipv4Addr, Ipv4Addr) =
        ("10.77.0.2".parse().unwrap(), "10.99.0.1".parse().unwrap());
    let what = "the bytes sent across the repair";
    carry_across(&mut sim, (client, server), (&up, &down), what, |sim| {
        sim.tun_send(A, VpnApp::Client, &ipv4_packet(client_v4, host, b"before"));
        sim.run_for(Duration::from_millis(20));
        kill(sim, relay, &TWO_PATHS);
    });

    // A's node rebuilt the route over the other relay, and the exit adopted it.
    assert_eq!(route_path(&sim, A, C), Some(sim.path(&[A, other, C])));
    assert_eq!(route_path(&sim, C, A), Some(sim.path(&[A, other, C])));
    let (client_status, _) = socks_status(&mut sim, A);
    let client_status = client_status.unwrap();
    assert_eq!((client_status.failed, client_status.route), (0, "ready"));
    carry_both_ways(&mut sim, client, server, b"after", b"still here");

    // The VPN never went down: no reconnect, and frames cross the new route.
    frame_crosses_the_new_route(&mut sim, client_v4, host, b"after the repair");
}

#[test]
fn with_no_path_left_socks_answers_03_at_once_and_the_vpn_says_why_until_a_path_returns() {
    let links = [(A, B), (B, C)];
    let mut sim = AppSim::new(42, 3, &links, automatic_apps);
    run_with(
        &mut sim,
        "A's VPN client up and the SOCKS route ready",
        |sim| vpn_client_up(sim) && route_ready(sim, A, C),
    );
    kill(&mut sim, B, &links);
    run_with(&mut sim, "A to find no path to C", |sim| {
        let (client, _) = socks_status(sim, A);
        client.unwrap().route == "unreachable"
    });

    // A new connection is answered 03 (network unreachable) at once, not after
    // connect_timeout_ms (20 s here).
    let asked = sim.elapsed();
    let (_, code) = socks_connect(&mut sim, &address_target(target()));
    assert_eq!(code, 0x03);
    let waited = sim.elapsed() - asked;
    assert!(
        waited < Duration::from_millis(100),
        "answered after {waited:?}"
    );
    let vpn = vpn_status(&mut sim, A).client.unwrap();
    assert!(
        vpn.state
            .starts_with(&format!("unreachable: no path to {} is known", sim.key(C))),
        "{vpn:?}"
    );

    // The relay comes back: both apps have their route again, with no command.
    for (a, b) in links {
        sim.link(a, b).alive = true;
    }
    run_with(
        &mut sim,
        "the VPN up and the SOCKS route ready again",
        |sim| vpn_client_up(sim) && route_ready(sim, A, C),
    );
    sim.serve(C, target());
    let (client, server) = open_stream(&mut sim);
    carry_both_ways(&mut sim, client, server, b"back again", b"yes");
}

// ----- changes while the node runs -----

fn neighbour_reply(reply: Response) -> NeighbourReply {
    match reply {
        Ok(Reply::Neighbour(neighbour)) => neighbour,
        other => panic!("not a neighbour reply: {other:?}"),
    }
}

/// A neighbour's transport removed and added again while a stream runs over another path: the
/// stream carries on, untouched, and the link comes back.
#[test]
fn a_neighbour_removed_and_added_at_runtime_leaves_a_stream_over_another_path_alone() {
    let mut sim = AppSim::new(41, 3, &[(A, B), (B, C), (A, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    sim.write(client, b"before");
    assert_eq!(read_exactly(&mut sim, server, 6), b"before");
    let c = sim.key(C);
    run_with(&mut sim, "A's direct link to C up", |sim| {
        sim.nodes[A].service.node().is_link_alive(&c)
    });

    let removed = neighbour_reply(sim.ask(A, Request::RemoveNeighbour { key: c }, LIMIT));
    assert_eq!(
        (removed.change, removed.routes_down),
        (NeighbourChange::Removed, 0),
        "the route goes through B"
    );
    assert!(sim.nodes[A].service.node().transports().id_of(&c).is_none());
    let again = sim.ask(A, Request::RemoveNeighbour { key: c }, LIMIT);
    assert!(
        matches!(again, Err(RequestError::NoNeighbour { key }) if key == c),
        "{again:?}"
    );
    sim.write(client, b"during");
    assert_eq!(read_exactly(&mut sim, server, 6), b"during");

    let endpoint = sim.nodes[C].addr;
    let neighbour = NeighbourConfig {
        key: c,
        endpoint: Some(endpoint),
        keepalive: None,
    };
    let added = neighbour_reply(sim.ask(A, Request::AddNeighbour(neighbour.clone()), LIMIT));
    assert_eq!(
        (added.change, added.endpoint),
        (NeighbourChange::Added, Some(endpoint))
    );
    let twice = sim.ask(A, Request::AddNeighbour(neighbour), LIMIT);
    assert!(
        matches!(twice, Err(RequestError::NeighbourExists { key }) if key == c),
        "{twice:?}"
    );
    run_with(&mut sim, "A's link to C up again", |sim| {
        sim.nodes[A].service.node().is_link_alive(&c)
    });
    carry_both_ways(&mut sim, client, server, &pattern(1 << 18, 4), b"after");
    let (client_status, _) = socks_status(&mut sim, A);
    assert_eq!(client_status.unwrap().failed, 0, "the stream never broke");
}

/// Removing the neighbour a route runs through takes the route down as a dead link does: the
/// SOCKS client's connection fails, and once the neighbour is back, the client rebuilds its
/// route.
#[test]
fn removing_the_neighbour_a_route_runs_through_takes_the_route_down() {
    let mut sim = AppSim::new(42, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);

    let b = sim.key(B);
    let removed = neighbour_reply(sim.ask(A, Request::RemoveNeighbour { key: b }, LIMIT));
    assert_eq!(removed.routes_down, 1);
    assert!(!route_ready(&sim, A, C));
    run_with(&mut sim, "the connection over the route closed", |sim| {
        sim.is_closed_by_service(client)
    });
    // C hears of it through B, once B's link to A is dead.
    run_with(&mut sim, "the exit's side closed", |sim| {
        sim.is_closed_by_service(server)
    });
    run_with(&mut sim, "B's rules gone", |sim| {
        sim.nodes[B].service.node().table().is_empty()
    });

    let endpoint = sim.nodes[B].addr;
    neighbour_reply(sim.ask(
        A,
        Request::AddNeighbour(NeighbourConfig {
            key: b,
            endpoint: Some(endpoint),
            keepalive: Some(25),
        }),
        LIMIT,
    ));
    run_with(&mut sim, "the SOCKS client's route rebuilt", |sim| {
        route_ready(sim, A, C)
    });
    let (client, server) = open_stream(&mut sim);
    carry_both_ways(&mut sim, client, server, b"up", b"down");
}

/// Removing the neighbour an automatic route runs through goes as that neighbour's death does:
/// A's node rebuilds the route over the other relay, and the stream and the VPN over it carry
/// on, their bytes intact.
#[test]
fn removing_the_neighbour_an_automatic_route_runs_through_repairs_the_route_over_another_path() {
    let (mut sim, relay, other) = automatic_apps_on_two_paths(45);
    let (client, server) = open_stream(&mut sim);

    let (up, down) = (pattern(256 * 1024, 7), pattern(192 * 1024, 8));
    let what = "the bytes sent across the repair";
    carry_across(&mut sim, (client, server), (&up, &down), what, |sim| {
        sim.run_for(Duration::from_millis(20));
        let key = sim.key(relay);
        let removed = neighbour_reply(sim.ask(A, Request::RemoveNeighbour { key }, LIMIT));
        assert_eq!(removed.routes_down, 1, "the route through it broke");
    });

    assert_eq!(route_path(&sim, A, C), Some(sim.path(&[A, other, C])));
    run_with(&mut sim, "the exit on the new route", |sim| {
        route_path(sim, C, A) == Some(sim.path(&[A, other, C]))
    });
    let (client_status, _) = socks_status(&mut sim, A);
    let client_status = client_status.unwrap();
    assert_eq!((client_status.failed, client_status.route), (0, "ready"));
    carry_both_ways(&mut sim, client, server, b"after", b"still here");

    let (client_v4, host): (Ipv4Addr, Ipv4Addr) =
        ("10.77.0.2".parse().unwrap(), "10.99.0.1".parse().unwrap());
    frame_crosses_the_new_route(&mut sim, client_v4, host, b"after the removal");
}

/// A changed endpoint and keepalive keep the transport and the routes over it.
#[test]
fn a_neighbour_changed_at_runtime_keeps_its_routes() {
    let mut sim = AppSim::new(43, 3, &[(A, B), (B, C)], socks_apps(Some(&[B, C])));
    sim.serve(C, target());
    wait_for_exit_route(&mut sim);
    let (client, server) = open_stream(&mut sim);
    let b = sim.key(B);
    let updated = neighbour_reply(sim.ask(
        A,
        Request::UpdateNeighbour(NeighbourConfig {
            key: b,
            endpoint: Some(sim.nodes[B].addr),
            keepalive: Some(15),
        }),
        LIMIT,
    ));
    assert_eq!(
        (updated.change, updated.keepalive),
        (NeighbourChange::Updated, Some(15))
    );
    carry_both_ways(&mut sim, client, server, &pattern(1 << 16, 5), b"ok");
    assert!(route_ready(&sim, A, C));
    let unknown = sim.key(C);
    let reply = sim.ask(
        A,
        Request::UpdateNeighbour(NeighbourConfig {
            key: unknown,
            endpoint: None,
            keepalive: None,
        }),
        LIMIT,
    );
    assert!(
        matches!(reply, Err(RequestError::NoNeighbour { .. })),
        "{reply:?}"
    );
}

/// C runs a VPN server, whose client is A, and a SOCKS server. A new SOCKS section restarts
/// the SOCKS server alone: the VPN server keeps its client, which stays up. A new VPN section
/// restarts the VPN server with it, and a section that is gone stops its app.
#[test]
fn a_new_app_section_restarts_that_app_alone() {
    let mut sim = AppSim::new(44, 3, &[(A, B), (B, C)], |i, keys, options| {
        vpn_apps(i, keys, options);
        if i == C {
            socks_apps(Some(&[B, C]))(i, keys, options);
        }
    });
    run_with(&mut sim, "A's VPN client up", vpn_client_up);
    let a = sim.key(A);
    let socks_server = socks::ServerOptions {
        allow: vec![a, sim.key(B)],
        dial_policy: target_allowed(),
        ..socks::ServerOptions::default()
    };
    assert_eq!(
        sim.configure_app(C, AppConfig::SocksServer(Some(socks_server.clone())), LIMIT),
        (BuiltinApp::Socks(SocksApp::Server), AppChange::Restarted)
    );
    let (_, server) = socks_status(&mut sim, C);
    let server = server.unwrap();
    assert_eq!((server.state, server.allowed), ("running", 2));
    let vpn = vpn_status(&mut sim, C).server.unwrap();
    assert_eq!(vpn.state, "running");
    assert_eq!(vpn.clients.len(), 1, "the VPN server kept its client");
    let client = vpn_status(&mut sim, A).client.unwrap();
    assert_eq!((client.state.as_str(), client.reconnects), ("up", 0));

    // The same section but for `enabled`: nothing restarts.
    let disabled = socks::ServerOptions {
        enabled: false,
        ..socks_server
    };
    let (_, change) = sim.configure_app(C, AppConfig::SocksServer(Some(disabled)), LIMIT);
    assert_eq!(change, AppChange::Unchanged);
    assert_eq!(socks_status(&mut sim, C).1.unwrap().state, "running");

    // A new pool: the VPN server restarts with it, once its old device is gone.
    let mut options = vpn_server(a);
    options.pool4 = Some("10.78.0.0/24".parse().unwrap());
    assert_eq!(
        sim.configure_app(C, AppConfig::VpnServer(Some(options)), LIMIT),
        (BuiltinApp::Vpn(VpnApp::Server), AppChange::Restarted)
    );
    let vpn = vpn_status(&mut sim, C).server.unwrap();
    assert_eq!(
        (vpn.state.as_str(), vpn.ipv4),
        ("running", Some("10.78.0.1".parse().unwrap()))
    );
    assert_eq!(socks_status(&mut sim, C).1.unwrap().state, "running");

    // C's SOCKS section gone: its server stops and is no longer configured.
    let (_, change) = sim.configure_app(C, AppConfig::SocksServer(None), LIMIT);
    assert_eq!(change, AppChange::Removed);
    assert!(socks_status(&mut sim, C).1.is_none());
    assert_eq!(vpn_status(&mut sim, C).server.unwrap().state, "running");
}
