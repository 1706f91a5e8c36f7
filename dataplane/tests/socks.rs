//! The SOCKS apps through real dataplanes on loopback: an entry A, a relay B and an exit C
//! (and a second entry D that C does not serve), the tests' local HTTP server as the target, and
//! their SOCKS5 client. Downloads are checked byte for byte; every failure reply is checked
//! through the real port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/dataplane.rs"]
mod dataplane;
#[path = "../../tests/common/http.rs"]
mod http;
#[path = "../../tests/common/socks.rs"]
mod socks;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::{driver_options, neighbour, wait_for, Running};
use skywire_dataplane::api::socks::{ClientStatus, ServerStatus};
use skywire_dataplane::api::{Reply, Request};
use skywire_dataplane::socks::{ClientOptions, DialPolicy, ServerOptions, SocksOptions};
use skywire_dataplane::stack::TCP_BUFFER;
use skywire_dataplane::{NeighbourConfig, NodeKey, SecretKey};

use http::{http_get, read_content_to_end, read_head, HttpServer};
use socks::{closed_within, greet, request, socks_connect, target_ip, target_name, CONNECT};

// ----- the dataplanes -----

impl Running {
    fn client(&mut self) -> ClientStatus {
        match self.ask(Request::SocksStatus) {
            Ok(Reply::Socks(status)) => status.client.unwrap(),
            other => panic!("not a SOCKS status: {other:?}"),
        }
    }

    fn server(&mut self) -> ServerStatus {
        match self.ask(Request::SocksStatus) {
            Ok(Reply::Socks(status)) => status.server.unwrap(),
            other => panic!("not a SOCKS status: {other:?}"),
        }
    }
}

/// A dataplane on loopback with `neighbours` and the SOCKS apps of `socks`, whose links die
/// after 3 s of silence.
fn start(
    secret: SecretKey,
    neighbours: Vec<NeighbourConfig>,
    socks: SocksOptions,
) -> (Running, SocketAddr) {
    let mut options = driver_options(secret, neighbours);
    options.node.dead_after = Duration::from_secs(3);
    options.socks = socks;
    Running::start(options)
}

/// A (entry) – B (relay) – C (exit), and D (an entry C does not serve) also behind B.
struct Mesh {
    a: Running,
    b: Running,
    c: Option<Running>,
    d: Running,
    keys: [NodeKey; 4],
    /// A's and D's SOCKS ports.
    a_proxy: SocketAddr,
    d_proxy: SocketAddr,
}

fn client_options(exit: NodeKey, relay: NodeKey) -> ClientOptions {
    let mut options = ClientOptions::new(exit);
    options.listen = "127.0.0.1:0".parse().unwrap();
    options.path = Some(vec![relay, exit]);
    options.handshake_timeout = Duration::from_millis(800);
    options.connect_timeout = Duration::from_secs(10);
    options
}

impl Mesh {
    /// A → B → C, C's exit giving up a dial after `dial_timeout`.
    fn start(dial_timeout: Duration) -> Mesh {
        let _ = env_logger::builder().is_test(true).try_init();
        let secrets = [(); 4].map(|()| SecretKey::generate());
        let keys = [0, 1, 2, 3].map(|i| secrets[i].public());
        let [a_key, b_key, c_key, d_key] = keys;
        let [a_secret, b_secret, c_secret, d_secret] = secrets;
        let server = ServerOptions {
            allow: vec![a_key],
            // The targets are this host's, which an exit reaches only when allowed.
            dial_policy: DialPolicy {
                allow_targets: vec!["127.0.0.1/32".parse().unwrap()],
                ..DialPolicy::default()
            },
            dial_timeout,
            ..ServerOptions::default()
        };
        let (c, c_addr) = start(
            c_secret,
            vec![neighbour(b_key, None)],
            SocksOptions {
                client: None,
                server: Some(server),
            },
        );
        let (b, b_addr) = start(
            b_secret,
            vec![
                neighbour(a_key, None),
                neighbour(c_key, Some(c_addr)),
                neighbour(d_key, None),
            ],
            SocksOptions::default(),
        );
        let entry = |secret| {
            start(
                secret,
                vec![neighbour(b_key, Some(b_addr))],
                SocksOptions {
                    client: Some(client_options(c_key, b_key)),
                    server: None,
                },
            )
            .0
        };
        let (mut a, mut d) = (entry(a_secret), entry(d_secret));
        wait_for("A's route to the exit", Duration::from_secs(20), || {
            a.client().route == "ready"
        });
        wait_for("D's route to the exit", Duration::from_secs(20), || {
            d.client().route == "ready"
        });
        let a_proxy = a.client().listen.unwrap();
        let d_proxy = d.client().listen.unwrap();
        Mesh {
            a,
            b,
            c: Some(c),
            d,
            keys,
            a_proxy,
            d_proxy,
        }
    }

    fn stop(self) {
        self.a.stop();
        self.d.stop();
        if let Some(c) = self.c {
            c.stop();
        }
        self.b.stop();
    }
}

// ----- the tests -----

#[test]
fn downloads_half_close_backpressure_and_200_connections_through_a_relay() {
    let http = HttpServer::start();
    let mut mesh = Mesh::start(ServerOptions::default().dial_timeout);
    let proxy = mesh.a_proxy;

    // One large download, the target named by a domain name resolved at the exit.
    let size: u64 = 64 << 20;
    let started = Instant::now();
    let mut stream = socks_connect(proxy, &target_name("localhost", http.address.port()));
    http_get(&mut stream, &format!("/bytes/{size}"));
    let head = read_head(&mut stream);
    assert!(head.contains(&format!("Content-Length: {size}")), "{head}");
    assert_eq!(read_content_to_end(&mut stream, 0), size);
    drop(stream);
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "64 MiB through A → B → C in {elapsed:.2} s ({:.0} Mbit/s)",
        size as f64 * 8.0 / elapsed / 1e6
    );

    // Half-close: the client's FIN reaches the target, whose answer still comes back whole.
    let mut stream = socks_connect(proxy, &target_ip(http.address));
    write!(stream, "POST /count/3000000 HTTP/1.1\r\n\r\n").unwrap();
    stream.write_all(&vec![1u8; 100_000]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let head = read_head(&mut stream);
    assert!(head.contains("X-Received: 100000"), "{head}");
    assert_eq!(read_content_to_end(&mut stream, 0), 3_000_000);

    // Backpressure: a client that stops reading holds the target back; A buffers a bounded
    // amount, and the target's sending stops.
    let mut stream = socks_connect(proxy, &target_ip(http.address));
    http_get(&mut stream, "/endless");
    let mut buf = vec![0u8; 1 << 20];
    stream.read_exact(&mut buf).unwrap();
    let mut last = 0;
    let mut stable_since = Instant::now();
    wait_for(
        "the target to be held back",
        Duration::from_secs(20),
        || {
            let sent = http.endless_sent.load(Ordering::Relaxed);
            if sent != last {
                last = sent;
                stable_since = Instant::now();
            }
            stable_since.elapsed() > Duration::from_millis(700)
        },
    );
    let client = mesh.a.client();
    assert!(
        client.buffered_bytes <= 2 * TCP_BUFFER,
        "A buffers {} bytes for one connection",
        client.buffered_bytes
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        http.endless_sent.load(Ordering::Relaxed),
        last,
        "the target kept sending"
    );
    assert!(mesh.a.client().buffered_bytes <= 2 * TCP_BUFFER);
    drop(stream);

    // 200 connections at once, each downloading and checked.
    let per_connection: u64 = 512 * 1024;
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let target = target_ip(http.address);
            std::thread::spawn(move || {
                let mut stream = socks_connect(proxy, &target);
                http_get(&mut stream, &format!("/bytes/{per_connection}"));
                read_head(&mut stream);
                read_content_to_end(&mut stream, 0)
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), per_connection);
    }
    wait_for("A's connections to close", Duration::from_secs(10), || {
        mesh.a.client().connections == 0
    });
    let client = mesh.a.client();
    assert!(client.accepted >= 203, "{client:?}");
    assert!(
        client.bytes_down >= size + 200 * per_connection,
        "{client:?}"
    );
    let server = mesh.c.as_mut().unwrap().server();
    assert!(
        server.bytes_down >= size + 200 * per_connection,
        "{server:?}"
    );
    mesh.stop();
}

#[test]
fn every_failure_gets_its_reply_through_the_real_port() {
    let http = HttpServer::start();
    let mesh = Mesh::start(Duration::from_secs(1));
    let proxy = mesh.a_proxy;

    // No acceptable method.
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&[5, 1, 2]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xff]);
    assert!(closed_within(&mut stream, Duration::from_secs(5)));

    // BIND and UDP ASSOCIATE are not supported.
    for command in [2, 3] {
        let mut stream = greet(proxy);
        assert_eq!(
            request(&mut stream, command, &target_ip(http.address)),
            0x07
        );
    }
    // An address type that does not exist.
    let mut stream = greet(proxy);
    assert_eq!(request(&mut stream, CONNECT, &[9, 1, 2, 3, 4, 0, 80]), 0x08);

    // A target that refuses: a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut stream = greet(proxy);
    assert_eq!(request(&mut stream, CONNECT, &target_ip(closed)), 0x05);

    // A target that never answers: a listener whose accept queue is full drops SYNs.
    let full = TcpListener::bind("127.0.0.1:0").unwrap();
    nix::sys::socket::listen(&full, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let full_address = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    while let Ok(filler) = TcpStream::connect_timeout(&full_address, Duration::from_millis(300)) {
        fillers.push(filler);
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let mut stream = greet(proxy);
    let started = Instant::now();
    assert_eq!(
        request(&mut stream, CONNECT, &target_ip(full_address)),
        0x04
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A client that sends half a greeting and stalls is cut off by the handshake timeout.
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.write_all(&[5, 2, 0]).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(700));
    // So is one that stalls halfway through its request.
    let mut stream = greet(proxy);
    stream.write_all(&[5, 1, 0, 1, 127]).unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)));

    // The exit refuses a node it does not list.
    let mut stream = greet(mesh.d_proxy);
    assert_eq!(
        request(&mut stream, CONNECT, &target_ip(http.address)),
        0x02
    );
    let mut c = mesh.c.unwrap();
    let server = c.server();
    assert_eq!(server.refused, 1, "{server:?}");

    // Everything still works after all that.
    let mut stream = socks_connect(proxy, &target_ip(http.address));
    http_get(&mut stream, "/bytes/1000");
    read_head(&mut stream);
    assert_eq!(read_content_to_end(&mut stream, 0), 1000);
    drop(fillers);
    Mesh { c: Some(c), ..mesh }.stop();
}

#[test]
fn a_route_that_goes_down_mid_handshake_is_answered_promptly() {
    let http = HttpServer::start();
    let mut mesh = Mesh::start(ServerOptions::default().dial_timeout);
    let proxy = mesh.a_proxy;
    let mut stream = greet(proxy);
    // The exit goes away between the greeting and the request.
    mesh.c.take().unwrap().stop();
    let started = Instant::now();
    let code = request(&mut stream, CONNECT, &target_ip(http.address));
    assert!(code == 0x01 || code == 0x04, "reply {code:#04x}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // With the route down, a new request is answered at once.
    wait_for("A's route down", Duration::from_secs(10), || {
        mesh.a.client().route != "ready"
    });
    let mut stream = greet(proxy);
    let started = Instant::now();
    let code = request(&mut stream, CONNECT, &target_ip(http.address));
    assert!(code == 0x01 || code == 0x04, "reply {code:#04x}");
    assert!(started.elapsed() < Duration::from_secs(12));
    let _ = mesh.keys;
    mesh.stop();
}
