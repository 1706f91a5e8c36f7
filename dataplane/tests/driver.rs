//! The dataplane thread over real UDP sockets on loopback: three nodes A–B–C, a route built
//! through B and pinged, driven through the same request channel the control thread uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use skywire_dataplane::api::{
    self, Reply, Request, RequestError, RequestId, RequestSender, Response,
};
use skywire_dataplane::driver::{Dataplane, DriverOptions};
use skywire_dataplane::node::NodeOptions;
use skywire_dataplane::{NeighbourConfig, SecretKey};

struct Running {
    requests: RequestSender,
    replies: Receiver<(RequestId, Response)>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    // Keeps the control side's waker registered for the test's lifetime.
    _control_poll: Poll,
    next_id: RequestId,
}

impl Running {
    fn start(
        secret: SecretKey,
        neighbours: Vec<NeighbourConfig>,
    ) -> (Running, std::net::SocketAddr) {
        let mut node = NodeOptions::new(secret);
        node.neighbours = neighbours;
        node.probe_interval = Duration::from_millis(200);
        node.dead_after = Duration::from_secs(5);
        let dataplane = Dataplane::bind(DriverOptions {
            node,
            listen: "127.0.0.1:0".parse().unwrap(),
            vpn: Default::default(),
            socks: Default::default(),
        })
        .unwrap();
        let local = dataplane.local_addr();
        let control_poll = Poll::new().unwrap();
        let control_waker = Arc::new(Waker::new(control_poll.registry(), Token(0)).unwrap());
        let (requests, replies, end) = api::channels(dataplane.waker(), control_waker);
        let thread = std::thread::spawn(move || dataplane.run(end));
        (
            Running {
                requests,
                replies,
                thread: Some(thread),
                _control_poll: control_poll,
                next_id: 1,
            },
            local,
        )
    }

    fn ask(&mut self, request: Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.requests.send(id, request).unwrap();
        let (reply_id, reply) = self.replies.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(reply_id, id);
        reply
    }

    fn stop(mut self) {
        let stopped = self.ask(Request::Shutdown);
        assert!(matches!(stopped, Ok(Reply::Stopped)), "{stopped:?}");
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_dataplanes_build_a_route_and_ping_through_the_relay() {
    let (a_secret, b_secret, c_secret) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let (a_key, b_key, c_key) = (a_secret.public(), b_secret.public(), c_secret.public());
    let neighbour = |key, endpoint| NeighbourConfig {
        key,
        endpoint,
        keepalive: None,
    };
    // Only the side that calls needs the other's endpoint: the callee learns it.
    let (c, c_addr) = Running::start(c_secret, vec![neighbour(b_key, None)]);
    let (mut b, b_addr) = Running::start(
        b_secret,
        vec![neighbour(a_key, None), neighbour(c_key, Some(c_addr))],
    );
    let (mut a, _) = Running::start(a_secret, vec![neighbour(b_key, Some(b_addr))]);

    wait_for(
        "links up",
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
        || matches!(b.ask(Request::ListRoutes), Ok(Reply::Routes(r)) if r.rules.is_empty()),
    );
    b.stop();
    c.stop();
}
