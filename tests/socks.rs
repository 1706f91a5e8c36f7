//! The SOCKS apps end to end: three `skywired` processes on 127.0.0.1 — entry A (the SOCKS5
//! port), relay B, exit C (serving A's key only) — with a local HTTP server as the target.
//! curl downloads through A's port checked by SHA-256, failures through the real port, the
//! `socks` commands through `visctl`, A's resident memory with many open connections and
//! with a reader that stops, and the exit's dial policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::curl::{download, finish};
use common::http::{self, HttpServer};
use common::machine::require;
use common::socks::{closed_within, connect_request, greet, socks_connect, target_ip, target_name};
use common::{three_nodes_with, wait_until, Daemon, Keys, TempDir};
use skywire_dataplane::stack::{TCP_BUFFER, TCP_MEMORY};

/// A's handshake timeout in these tests (the default is 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What open connections may add to the entry's resident memory: their mesh streams' buffers
/// (two of at most `TCP_BUFFER` each, all together at most `TCP_MEMORY`), and each connection's
/// own state (socket structs, the handshake buffer) well within 16 KiB. The README states
/// this bound.
fn connections_memory(connections: u64) -> u64 {
    (connections * 2 * TCP_BUFFER as u64).min(TCP_MEMORY as u64) + connections * (16 << 10)
}
/// What the allocator and the threads may add on top, whatever the number of connections.
const SLACK: u64 = 16 << 20;

/// C's section: it serves A, and may dial this host's loopback address (the test's targets)
/// only when `allow_local`.
fn exit_config(keys: &Keys, allow_local: bool) -> String {
    let mut text = format!("socks:\n  server:\n    allow: [{}]\n", keys.a);
    if allow_local {
        text.push_str(ALLOW_LOCAL);
    }
    text
}

/// The opt-in that lets an exit reach the local targets of these tests.
const ALLOW_LOCAL: &str = "    allow_targets: [\"127.0.0.1/32\"]\n";

/// The `socks` sections: C serves A and may reach local targets; A's port leaves from C
/// through B. With `b_client`, B also has a client app whose exit is C, which does not serve B.
fn socks_config(name: &str, keys: &Keys, b_client: bool) -> String {
    let client = |exit: &skywire_dataplane::NodeKey, path: &str| {
        format!(
            "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {exit}\n    path: [{path}]\n    \
             handshake_timeout_ms: {}\n    connect_timeout_ms: 15000\n",
            HANDSHAKE_TIMEOUT.as_millis()
        )
    };
    match name {
        "a" => client(&keys.c, &keys.b.to_string()),
        "b" if b_client => client(&keys.c, &keys.c.to_string()),
        "c" => exit_config(keys, true),
        _ => String::new(),
    }
}

/// A, B and C with their SOCKS apps; returns once A's route to the exit is ready.
fn socks_nodes(dir: &TempDir, b_client: bool) -> (Daemon, Daemon, Daemon) {
    socks_nodes_with(dir, |name, keys| socks_config(name, keys, b_client))
}

/// As [`socks_nodes`], with the sections of `config`.
fn socks_nodes_with(
    dir: &TempDir,
    config: impl Fn(&str, &Keys) -> String,
) -> (Daemon, Daemon, Daemon) {
    let nodes = three_nodes_with(dir, config);
    wait_until("A's route to the exit", Duration::from_secs(20), || {
        client_status(&nodes.0)["route"] == "ready"
    });
    nodes
}

/// The client app's part of `socks status`.
fn client_status(daemon: &Daemon) -> serde_json::Value {
    daemon.ask(&["socks", "status"])["result"]["client"].clone()
}

fn server_status(daemon: &Daemon) -> serde_json::Value {
    daemon.ask(&["socks", "status"])["result"]["server"].clone()
}

/// The client app's SOCKS5 port as bound.
fn proxy_of(daemon: &Daemon) -> SocketAddr {
    client_status(daemon)["listen"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no SOCKS port", daemon.name))
        .parse()
        .unwrap()
}

fn number(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

// ----- the tests -----

#[test]
fn curl_downloads_256_mib_and_200_files_at_once_through_a_relay() {
    if !require(
        "curl",
        "curl_downloads_256_mib_and_200_files_at_once_through_a_relay",
    ) {
        return;
    }
    let dir = TempDir::new("socks-curl");
    let http = HttpServer::start();
    let (a, _b, c) = socks_nodes(&dir, false);
    let proxy = proxy_of(&a);

    // One large download; the name `localhost` is resolved at the exit.
    let size: u64 = 256 << 20;
    let expected = std::thread::spawn(move || http::content_sha256(1, size));
    let out = dir.path("big.bin");
    let started = Instant::now();
    finish(
        download(proxy, &http.url(&format!("/bytes/{size}/1")), &out),
        "the 256 MiB download",
    );
    let elapsed = started.elapsed().as_secs_f64();
    let (sha, len) = http::file_sha256(&out);
    assert_eq!(len, size);
    assert!(
        sha == expected.join().unwrap(),
        "the 256 MiB download differs"
    );
    std::fs::remove_file(&out).unwrap();
    eprintln!(
        "256 MiB through A → B → C (debug daemons) in {elapsed:.1} s, {:.0} Mbit/s",
        size as f64 * 8.0 / elapsed / 1e6
    );

    // 200 downloads at once, each of other content.
    let each: u64 = 1 << 20;
    let curls: Vec<_> = (0..200u64)
        .map(|i| {
            let url = http.url(&format!("/bytes/{each}/{}", 100 + i));
            download(proxy, &url, &dir.path(&format!("file{i}.bin")))
        })
        .collect();
    for (i, curl) in curls.into_iter().enumerate() {
        finish(curl, &format!("download {i} of 200"));
    }
    for i in 0..200u64 {
        let path = dir.path(&format!("file{i}.bin"));
        let (sha, len) = http::file_sha256(&path);
        assert_eq!(len, each, "download {i}");
        assert!(
            sha == http::content_sha256(100 + i, each),
            "download {i} differs"
        );
        std::fs::remove_file(path).unwrap();
    }

    // Both apps counted it all.
    wait_until("A's connections to close", Duration::from_secs(20), || {
        client_status(&a)["connections"] == 0
    });
    let client = client_status(&a);
    assert_eq!(client["state"], "running", "{client}");
    assert!(number(&client["accepted"]) >= 201, "{client}");
    let closed = |node: &Daemon| -> String {
        let log = node.log();
        let lines = log
            .lines()
            .filter(|line| line.contains("closed") || line.contains("WARN"));
        lines.collect::<Vec<_>>().join("\n")
    };
    assert_eq!(
        number(&client["failed"]),
        0,
        "{client}\nA:\n{}\nC:\n{}",
        closed(&a),
        closed(&c)
    );
    assert!(
        number(&client["bytes_down"]) >= size + 200 * each,
        "{client}"
    );
    assert!(number(&client["bytes_up"]) > 0, "{client}");
    let server = server_status(&c);
    assert!(number(&server["accepted"]) >= 201, "{server}");
    assert_eq!(number(&server["refused"]), 0, "{server}");
    assert!(
        number(&server["bytes_down"]) >= size + 200 * each,
        "{server}"
    );
    let text = String::from_utf8(a.visctl(&["socks", "status"]).stdout).unwrap();
    assert!(
        text.contains(&format!("client  running on {proxy}")),
        "{text}"
    );
}

#[test]
fn failures_and_the_socks_commands_through_real_daemons() {
    let with_curl = require(
        "curl",
        "failures_and_the_socks_commands_through_real_daemons",
    );
    let dir = TempDir::new("socks-fail");
    let http = HttpServer::start();
    let (a, b, mut c) = socks_nodes(&dir, true);
    let proxy = proxy_of(&a);

    // No acceptable method: 0xFF, then the proxy closes.
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.write_all(&[5, 1, 2]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xff]);
    assert!(closed_within(&mut stream, Duration::from_secs(5)));

    // A target that refuses: 05, and curl reports it.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut stream = greet(proxy);
    assert_eq!(connect_request(&mut stream, &target_ip(closed)), 0x05);
    if with_curl {
        let output = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "30"])
            .arg("--socks5-hostname")
            .arg(proxy.to_string())
            .arg(format!("http://localhost:{}/", closed.port()))
            .output()
            .unwrap();
        // curl's "proxy handshake failed", with the reply code.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(97), "{stderr}");
        assert!(stderr.contains("(5)"), "{stderr}");
    }

    // Half a greeting, then nothing: cut off by the handshake timeout, not before.
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.write_all(&[5, 2, 0]).unwrap();
    assert!(closed_within(
        &mut stream,
        HANDSHAKE_TIMEOUT + Duration::from_secs(5)
    ));
    let waited = started.elapsed();
    assert!(waited >= HANDSHAKE_TIMEOUT, "cut off after {waited:?}");

    // The exit refuses B, whose key it does not list: 02, through B's own port.
    let b_proxy = {
        wait_until("B's route to the exit", Duration::from_secs(20), || {
            client_status(&b)["route"] == "ready"
        });
        proxy_of(&b)
    };
    let mut stream = greet(b_proxy);
    assert_eq!(connect_request(&mut stream, &target_ip(http.address)), 0x02);
    let server = server_status(&c);
    assert_eq!(number(&server["refused"]), 1, "{server}");

    // `socks stop|start|status` through visctl: the port closes and opens again.
    let stopped = a.ask(&["socks", "stop", "client"]);
    let client = &stopped["result"]["client"];
    assert_eq!(client["state"], "stopped", "{stopped}");
    assert!(client["listen"].is_null(), "{stopped}");
    assert!(TcpStream::connect(proxy).is_err(), "the port stayed open");
    let text = String::from_utf8(a.visctl(&["socks", "status"]).stdout).unwrap();
    assert!(text.contains("client  stopped"), "{text}");
    let output = a.visctl(&["socks", "stop", "server"]);
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("socks.server"), "{message}");
    let started = a.ask(&["socks", "start", "client"]);
    assert_eq!(started["result"]["client"]["state"], "running");
    let proxy = proxy_of(&a);
    wait_until(
        "A's route after the restart",
        Duration::from_secs(20),
        || client_status(&a)["route"] == "ready",
    );
    let mut stream = socks_connect(proxy, &target_ip(http.address));
    write!(stream, "GET /bytes/5000/7 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    http::read_head(&mut stream);
    http::read_content(&mut stream, 7, 5000);
    drop(stream);

    // The route goes down between the greeting and the request (the exit dies): the request
    // is answered once B's liveness gives up on C (5 s of silence in these tests) and the
    // route down reaches A, a few seconds.
    let mut stream = greet(proxy);
    c.kill();
    let started = Instant::now();
    let code = connect_request(&mut stream, &target_ip(http.address));
    let waited = started.elapsed();
    assert!(code == 0x01 || code == 0x04, "reply {code:#04x}");
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    eprintln!("a request after the exit died was answered {code:#04x} after {waited:?}");
    wait_until("A's route down", Duration::from_secs(10), || {
        client_status(&a)["route"] != "ready"
    });
    assert!(!a.log().contains("panicked"), "{}", a.log());
}

#[test]
fn the_exit_dials_no_local_address_unless_its_config_allows_it() {
    let dir = TempDir::new("socks-policy");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (a, _b, c) = socks_nodes_with(&dir, |name, keys| match name {
        "c" => exit_config(keys, false),
        _ => socks_config(name, keys, false),
    });
    let proxy = proxy_of(&a);
    let at = |ip: &str| target_ip(SocketAddr::new(ip.parse().unwrap(), port));
    let targets = [
        ("127.0.0.1", at("127.0.0.1")),
        ("169.254.169.254", at("169.254.169.254")),
        ("0.0.0.0", at("0.0.0.0")),
        ("::ffff:127.0.0.1", at("::ffff:127.0.0.1")),
        ("localhost", target_name("localhost", port)),
    ];

    // The default: each is answered 02, counted, logged, and nothing reaches the target.
    for (name, target) in &targets {
        let mut stream = greet(proxy);
        assert_eq!(connect_request(&mut stream, target), 0x02, "{name}");
    }
    let server = server_status(&c);
    assert_eq!(number(&server["denied"]), targets.len() as u64, "{server}");
    assert_eq!(number(&server["refused"]), 0, "{server}");
    assert_eq!(
        listener.accept().map_err(|error| error.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "a denied target was dialled"
    );
    let log = c.log();
    assert!(log.contains("127.0.0.1:"), "{log}");
    assert!(log.contains("is loopback (127.0.0.0/8)"), "{log}");
    assert!(log.contains("is link-local (169.254.0.0/16)"), "{log}");
    let text = String::from_utf8(c.visctl(&["socks", "status"]).stdout).unwrap();
    assert!(text.contains("5 denied by the dial policy"), "{text}");

    // With 127.0.0.1/32 allowed explicitly (a reload), the local target is reached, and only it.
    let config = std::fs::read_to_string(&c.config).unwrap();
    let section = "  server:\n";
    assert!(config.contains(section), "{config}");
    std::fs::write(
        &c.config,
        config.replacen(section, &format!("{section}{ALLOW_LOCAL}"), 1),
    )
    .unwrap();
    let reloaded = c.ask(&["reload"]);
    assert!(reloaded["error"].is_null(), "{reloaded}");
    wait_until("C's server running again", Duration::from_secs(10), || {
        server_status(&c)["state"] == "running"
    });
    wait_until("A's route to the exit", Duration::from_secs(20), || {
        client_status(&a)["route"] == "ready"
    });
    for (name, target) in &targets {
        let mut stream = greet(proxy);
        let expected = if *name == "169.254.169.254" || *name == "0.0.0.0" {
            0x02
        } else {
            0x00
        };
        assert_eq!(connect_request(&mut stream, target), expected, "{name}");
        if expected == 0x00 {
            let mut accepted = None;
            wait_until("the target's connection", Duration::from_secs(10), || {
                accepted = listener.accept().ok();
                accepted.is_some()
            });
            let (mut from_exit, _) = accepted.unwrap();
            from_exit.set_nonblocking(false).unwrap();
            from_exit.write_all(name.as_bytes()).unwrap();
            let mut echoed = vec![0u8; name.len()];
            stream.read_exact(&mut echoed).unwrap();
            assert_eq!(echoed, name.as_bytes());
        }
    }
    assert!(!c.log().contains("panicked"), "{}", c.log());
}

#[test]
fn a_strangers_syn_flood_makes_no_exit_socket_while_allowed_downloads_complete() {
    if !require(
        "curl",
        "a_strangers_syn_flood_makes_no_exit_socket_while_allowed_downloads_complete",
    ) {
        return;
    }
    const DOWNLOADS: u64 = 4;
    const SIZE: u64 = 16 << 20;
    const FLOODERS: usize = 8;
    const ATTEMPTS_EACH: usize = 50;
    let dir = TempDir::new("socks-flood");
    let http = HttpServer::start();
    let (a, b, c) = socks_nodes(&dir, true);
    wait_until("B's route to the exit", Duration::from_secs(20), || {
        client_status(&b)["route"] == "ready"
    });
    let (proxy, stranger) = (proxy_of(&a), proxy_of(&b));
    let before = c.ask(&["status"])["result"]["mesh_tcp"].clone();

    // A's downloads run while B, whose key C does not allow, opens streams to C as fast as
    // its SOCKS port takes requests: each is one SYN.
    let curls: Vec<_> = (0..DOWNLOADS)
        .map(|i| {
            let url = http.url(&format!("/bytes/{SIZE}/{}", 300 + i));
            download(proxy, &url, &dir.path(&format!("flood{i}.bin")))
        })
        .collect();
    let target = target_ip(http.address);
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                (0..ATTEMPTS_EACH)
                    .map(|_| connect_request(&mut greet(stranger), &target))
                    .collect::<Vec<u8>>()
            })
        })
        .collect();
    let codes: Vec<u8> = flooders
        .into_iter()
        .flat_map(|flooder| flooder.join().unwrap())
        .collect();
    let flood_time = started.elapsed();
    let attempts = (FLOODERS * ATTEMPTS_EACH) as u64;
    assert!(codes.iter().all(|code| *code == 0x02), "{codes:?}");
    for (i, curl) in curls.into_iter().enumerate() {
        finish(curl, &format!("download {i}"));
        let (sha, len) = http::file_sha256(&dir.path(&format!("flood{i}.bin")));
        assert_eq!(len, SIZE);
        assert!(
            sha == http::content_sha256(300 + i as u64, SIZE),
            "download {i} differs"
        );
    }
    eprintln!(
        "{attempts} stranger SYNs in {flood_time:?} ({:.0}/s) beside {DOWNLOADS} downloads of {} MiB",
        attempts as f64 / flood_time.as_secs_f64(),
        SIZE >> 20
    );

    // Every SYN of B's was refused and counted, and none made a socket: the exit accepted
    // only A's streams, and its sockets never went beyond its listeners and A's streams.
    let status = c.ask(&["status"]);
    let mesh = &status["result"]["mesh_tcp"];
    let refused = &mesh["syns_refused"];
    assert_eq!(
        number(&refused["not_admitted"]) - number(&before["syns_refused"]["not_admitted"]),
        attempts,
        "{status}"
    );
    let server = server_status(&c);
    assert_eq!(number(&server["accepted"]), DOWNLOADS, "{server}");
    assert_eq!(number(&server["refused"]), attempts, "{server}");
    // Four listening sockets, a download's stream and a listener made for its SYN each.
    let bound = 4 + 2 * DOWNLOADS;
    assert!(number(&mesh["sockets_peak"]) <= bound, "{status}");
    let text = c.ask(&["status"])["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains(&format!(
            "SYNs refused  {attempts} ({attempts} not admitted"
        )),
        "{text}"
    );
}

#[test]
fn entry_memory_stays_bounded_a_stopped_reader_holds_the_target_and_half_close_works() {
    let dir = TempDir::new("socks-memory");
    let http = HttpServer::start();
    let (a, b, c) = socks_nodes(&dir, false);
    let proxy = proxy_of(&a);
    let baseline = a.rss_bytes();

    // Idle nodes sleep until their next timer instead of spinning (the entry once did, with
    // its route up).
    let nodes = [&a, &b, &c];
    let before: Vec<_> = nodes.iter().map(|node| node.cpu_time()).collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    for (node, before) in nodes.iter().zip(before) {
        let busy = (node.cpu_time() - before).as_secs_f64() / started.elapsed().as_secs_f64();
        eprintln!("idle {} used {:.1} % of a core", node.name, busy * 100.0);
        assert!(
            busy < 0.2,
            "idle {} used {:.0} % of a core",
            node.name,
            busy * 100.0
        );
    }

    // 200 connections, each moving more than a mesh buffer's worth of data, then held open.
    let connections = 200u64;
    let each: u64 = TCP_BUFFER as u64 + (64 << 10);
    let target = http.address;
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = socks_connect(proxy, &target_ip(target));
                write!(stream, "GET /hold/{each}/{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let head = http::read_head(&mut stream);
                assert!(head.contains(&format!("Content-Length: {each}")), "{head}");
                http::read_content(&mut stream, i, each);
                stream
            })
        })
        .collect();
    let streams: Vec<TcpStream> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let client = client_status(&a);
    assert_eq!(number(&client["connections"]), connections, "{client}");
    let rss = a.rss_bytes();
    let bound = baseline + connections_memory(connections) + SLACK;
    eprintln!(
        "A's resident memory: {:.1} MiB at start, {:.1} MiB with {connections} open \
         connections ({:.0} KiB each), bound {:.1} MiB",
        mib(baseline),
        mib(rss),
        (rss.saturating_sub(baseline) / connections) as f64 / 1024.0,
        mib(bound)
    );
    assert!(
        rss <= bound,
        "A uses {:.1} MiB, over its bound of {:.1} MiB",
        mib(rss),
        mib(bound)
    );

    // A reader that stops while its target goes on writing: the target is held back and A's
    // memory stays flat.
    let mut stalled = socks_connect(proxy, &target_ip(target));
    write!(stalled, "GET /endless HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = vec![0u8; 1 << 20];
    stalled.read_exact(&mut first).unwrap();
    let mut last = 0;
    let mut stable_since = Instant::now();
    wait_until(
        "the target to be held back",
        Duration::from_secs(30),
        || {
            let sent = http.endless_sent.load(Ordering::SeqCst);
            if sent != last {
                last = sent;
                stable_since = Instant::now();
            }
            stable_since.elapsed() > Duration::from_millis(700)
        },
    );
    let before = a.rss_bytes();
    let mut samples = vec![before];
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            http.endless_writers.load(Ordering::SeqCst),
            1,
            "the target stopped writing"
        );
        samples.push(a.rss_bytes());
    }
    let sent = http.endless_sent.load(Ordering::SeqCst);
    let growth = samples.iter().max().unwrap() - samples.iter().min().unwrap();
    eprintln!(
        "stopped reader: the target wrote {:.1} MiB and is held back; A's memory moved {} KiB \
         over 2 s",
        mib(sent),
        growth / 1024
    );
    assert!(
        growth <= 1 << 20,
        "A's memory grew by {growth} bytes: {samples:?}"
    );
    let bound = baseline + connections_memory(connections + 1) + SLACK;
    assert!(samples.iter().all(|&rss| rss <= bound));
    let buffered = number(&client_status(&a)["buffered_bytes"]);
    assert!(
        buffered <= 2 * TCP_BUFFER as u64,
        "A buffers {buffered} bytes"
    );
    drop(stalled);

    // A half-close: the client's FIN reaches the target, whose answer still comes back whole.
    let mut stream = socks_connect(proxy, &target_ip(target));
    write!(stream, "POST /count/3000000 HTTP/1.1\r\n\r\n").unwrap();
    stream.write_all(&vec![1u8; 100_000]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let head = http::read_head(&mut stream);
    assert!(head.contains("X-Received: 100000"), "{head}");
    http::read_content(&mut stream, 0, 3_000_000);
    let mut rest = [0u8; 16];
    assert_eq!(stream.read(&mut rest).unwrap(), 0, "the stream did not end");

    drop(streams);
    wait_until("A's connections to close", Duration::from_secs(20), || {
        client_status(&a)["connections"] == 0
    });
}
