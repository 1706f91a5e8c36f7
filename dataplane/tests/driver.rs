//! The dataplane thread over real UDP sockets on loopback: three nodes A–B–C, a route built
//! through B and pinged, driven through the same request channel the control thread uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/dataplane.rs"]
mod dataplane;

use std::time::Duration;

use dataplane::{driver_options, neighbour, wait_for, Running};
use skywire_dataplane::api::{Reply, Request, RequestError};
use skywire_dataplane::SecretKey;

#[test]
fn three_dataplanes_build_a_route_and_ping_through_the_relay() {
    let (a_secret, b_secret, c_secret) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let (a_key, b_key, c_key) = (a_secret.public(), b_secret.public(), c_secret.public());
    // Only the side that calls needs the other's endpoint: the callee learns it.
    let (c, c_addr) = Running::start(driver_options(c_secret, vec![neighbour(b_key, None)]));
    let (mut b, b_addr) = Running::start(driver_options(
        b_secret,
        vec![neighbour(a_key, None), neighbour(c_key, Some(c_addr))],
    ));
    let (mut a, _) = Running::start(driver_options(
        a_secret,
        vec![neighbour(b_key, Some(b_addr))],
    ));

    wait_for(
        "links up",
        Duration::from_secs(20),
        || matches!(b.ask(Request::Status), Ok(Reply::Status(status)) if status.links_up == 2),
    );
    let built = a.ask(Request::BuildRoute {
        path: vec![b_key, c_key],
    });
    let Ok(Reply::RouteBuilt(route)) = built else {
        panic!("route not built: {built:?}");
    };
    assert!(route.ready && route.initiator);
    assert_eq!(route.path, [a_key, b_key, c_key]);

    let reply = a.ask(Request::PingNode {
        peer: c_key,
        count: 3,
    });
    let Ok(Reply::Ping(ping)) = reply else {
        panic!("ping failed: {reply:?}");
    };
    assert_eq!((ping.sent, ping.rtt_ms.len()), (3, 3), "{ping:?}");

    // B relayed them: its two rules counted packets.
    let Ok(Reply::Routes(routes)) = b.ask(Request::ListRoutes) else {
        panic!("no routes reply");
    };
    assert_eq!(routes.rules.len(), 2);
    assert!(
        routes.rules.iter().all(|rule| rule.packets >= 3),
        "{routes:?}"
    );

    // Pinging a node without a route has one built first, over the path A's node chooses:
    // B is its neighbour, so the route is direct.
    let reply = a.ask(Request::PingNode {
        peer: b_key,
        count: 1,
    });
    assert!(
        matches!(&reply, Ok(Reply::Ping(ping)) if ping.rtt_ms.len() == 1),
        "{reply:?}"
    );
    let Ok(Reply::Routes(routes)) = a.ask(Request::ListRoutes) else {
        panic!("no routes reply");
    };
    assert!(
        routes
            .routes
            .iter()
            .any(|route| route.peer == b_key && route.path == [a_key, b_key]),
        "{routes:?}"
    );
    // A node nobody advertises is a clear error, not a hang.
    let stranger = SecretKey::generate().public();
    let reply = a.ask(Request::PingNode {
        peer: stranger,
        count: 1,
    });
    assert!(
        matches!(reply, Err(RequestError::NoPath { peer }) if peer == stranger),
        "{reply:?}"
    );

    a.stop();
    // A tore its route down on the way out: B's rules go.
    wait_for(
        "B's rules torn down",
        Duration::from_secs(20),
        || matches!(b.ask(Request::ListRoutes), Ok(Reply::Routes(r)) if r.rules.is_empty()),
    );
    b.stop();
    c.stop();
}
