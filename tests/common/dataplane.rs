//! A dataplane on a thread of the test, driven through the same request channel the control
//! thread uses, and waiting with deadlines: for the dataplane crate's tests over real sockets,
//! which include this file.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use skywire_dataplane::api::{self, Reply, Request, RequestId, RequestSender, Response};
use skywire_dataplane::driver::{Dataplane, DriverOptions};
use skywire_dataplane::node::NodeOptions;
use skywire_dataplane::{NeighbourConfig, NodeKey, SecretKey};

/// What a dataplane's thread runs, handed to the function that starts that thread.
pub type Body = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// A dataplane running on a thread of its own; shut down when dropped.
pub struct Running {
    requests: RequestSender,
    replies: Receiver<(RequestId, Response)>,
    thread: Option<JoinHandle<io::Result<()>>>,
    // Keeps the control side's waker registered for the test's lifetime.
    _control_poll: Poll,
    next_id: RequestId,
}

impl Running {
    /// Binds a dataplane with `options` and runs it on a new thread; returns it and the UDP
    /// address it bound.
    pub fn start(options: DriverOptions) -> (Running, SocketAddr) {
        Running::start_on(options, std::thread::spawn)
    }

    /// As [`Running::start`], on the thread that `spawn` starts to run the dataplane's body
    /// (inside a network namespace, say).
    pub fn start_on(
        options: DriverOptions,
        spawn: impl FnOnce(Body) -> JoinHandle<io::Result<()>>,
    ) -> (Running, SocketAddr) {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel();
        let thread = spawn(Box::new(move || {
            let dataplane = Dataplane::bind(options).unwrap();
            ready_tx
                .send((dataplane.waker(), dataplane.local_addr()))
                .unwrap();
            dataplane.run(end_rx.recv().unwrap())
        }));
        let (waker, local) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the dataplane did not bind its socket");
        let control_poll = Poll::new().unwrap();
        let control_waker = Arc::new(Waker::new(control_poll.registry(), Token(0)).unwrap());
        let (requests, replies, end) = api::channels(waker, control_waker);
        end_tx.send(end).unwrap();
        let running = Running {
            requests,
            replies,
            thread: Some(thread),
            _control_poll: control_poll,
            next_id: 1,
        };
        (running, local)
    }

    /// Sends `request` and waits for its reply.
    pub fn ask(&mut self, request: Request) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.requests.send(id, request).unwrap();
        let (reply_id, reply) = self.replies.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(reply_id, id);
        reply
    }

    /// Shuts the dataplane down and checks that its thread ended well.
    pub fn stop(mut self) {
        let stopped = self.ask(Request::Shutdown);
        assert!(matches!(stopped, Ok(Reply::Stopped)), "{stopped:?}");
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.requests.send(0, Request::Shutdown);
            let _ = thread.join();
        }
    }
}

/// A dataplane's options on loopback (port 0) with `neighbours`, probing every 200 ms and
/// declaring a link dead after 5 s of silence, and no apps.
pub fn driver_options(secret: SecretKey, neighbours: Vec<NeighbourConfig>) -> DriverOptions {
    let mut node = NodeOptions::new(secret);
    node.neighbours = neighbours;
    node.probe_interval = Duration::from_millis(200);
    node.dead_after = Duration::from_secs(5);
    DriverOptions {
        node,
        listen: "127.0.0.1:0".parse().unwrap(),
        vpn: Default::default(),
        socks: Default::default(),
        messenger: Default::default(),
    }
}

/// A neighbour with no keepalive: `endpoint` is needed only by the side that calls.
pub fn neighbour(key: NodeKey, endpoint: Option<SocketAddr>) -> NeighbourConfig {
    NeighbourConfig {
        key,
        endpoint,
        keepalive: None,
    }
}

/// Waits until `condition` holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
