//! Three `skywired` processes on 127.0.0.1 (port 0; A–B and B–C transports, none between A and
//! C), driven through `visctl`: a route A→B→C, pings across it, B's counters, bad input from
//! every side while the route keeps answering, and a clean stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use common::control::ControlSocket;
use common::{three_nodes, Daemon, TempDir};
use skywire_dataplane::SecretKey;

fn build_route(a: &Daemon, b: &Daemon, c: &Daemon) {
    let (b_key, c_key) = (b.key.to_string(), c.key.to_string());
    let reply = a.ask(&["build_route", &b_key, &c_key]);
    let route = &reply["result"];
    assert_eq!(route["ready"], true, "{reply}");
    assert_eq!(route["path"][2], c_key.as_str());
}

fn ping(a: &Daemon, c: &Daemon, count: u32) -> usize {
    let reply = a.ask(&["ping_node", &c.key.to_string(), &count.to_string()]);
    reply["result"]["rtt_ms"].as_array().unwrap().len()
}

fn stop_cleanly(mut daemon: Daemon) {
    let socket = daemon.socket.clone();
    let status = daemon.terminate();
    assert!(
        status.success(),
        "{} exited with {status}:\n{}",
        daemon.name,
        daemon.log()
    );
    assert!(!socket.exists(), "{} left its socket behind", daemon.name);
}

#[test]
fn route_across_three_nodes_pings_and_stops_cleanly() {
    let dir = TempDir::new("daemon");
    let (a, b, c) = three_nodes(&dir);
    build_route(&a, &b, &c);
    assert_eq!(ping(&a, &c, 4), 4);

    // B forwarded the pings: both of its rules counted them.
    let routes = b.ask(&["list_routes"]);
    let rules = routes["result"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{routes}");
    for rule in rules {
        assert_eq!(rule["action"], "forward");
        assert!(rule["packets"].as_u64().unwrap() >= 4, "{rule}");
    }
    // The human-readable form names the route too.
    let text = String::from_utf8(b.visctl(&["list_routes"]).stdout).unwrap();
    assert!(text.contains("forward"), "{text}");

    let transports = a.ask(&["list_transports"]);
    let row = &transports["result"]["transports"][0];
    assert_eq!(row["link"], "up");
    assert!(row["rtt_ms"].as_f64().is_some(), "{row}");
    assert!(row["tx_packets"].as_u64().unwrap() > 0);

    for daemon in [a, b, c] {
        stop_cleanly(daemon);
    }
}

/// A deterministic stream of bytes for garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A few thousand garbage, truncated and oversized datagrams at `port`, at a bounded rate.
fn flood(port: u16, seed: u64) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = XorShift(seed);
    let mut sent = 0;
    for i in 0..3000usize {
        let len = match i % 6 {
            0 => 0,
            1 => (rng.next() % 40) as usize,
            2 => 148,
            3 => 32 + (rng.next() % 1400) as usize,
            4 => 2000 + (rng.next() % 20_000) as usize,
            _ => 65_000,
        };
        let mut datagram = rng.bytes(len);
        // Valid message types and reserved zeros: these reach boringtun's parsing.
        if len >= 4 && i % 2 == 0 {
            datagram[..4].copy_from_slice(&[1 + (i % 4) as u8, 0, 0, 0]);
        }
        if socket.send_to(&datagram, ("127.0.0.1", port)).is_ok() {
            sent += 1;
        }
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    sent
}

/// A WireGuard handshake initiation from a key nobody configured.
fn stranger_handshake(to: &Daemon) {
    let stranger = SecretKey::generate();
    let mut tunn = Tunn::new(
        stranger.to_x25519(),
        to.key.to_x25519(),
        None,
        None,
        7,
        None,
    );
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(initiation) = tunn.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no initiation");
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(initiation, ("127.0.0.1", to.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answer = [0u8; 256];
    assert!(
        socket.recv(&mut answer).is_err(),
        "a stranger's handshake was answered"
    );
}

#[test]
fn bad_input_from_every_side_leaves_the_route_answering() {
    let dir = TempDir::new("badinput");
    let (a, b, c) = three_nodes(&dir);
    build_route(&a, &b, &c);

    // A client that connects and says nothing, held open throughout.
    let _silent = UnixStream::connect(&b.socket).unwrap();

    for (i, daemon) in [&a, &b, &c].into_iter().enumerate() {
        assert!(flood(daemon.port, 0x5eed + i as u64) > 2500);
        stranger_handshake(daemon);
        assert_eq!(
            ping(&a, &c, 2),
            2,
            "route stopped answering after {}",
            daemon.name
        );
    }

    // visctl lines that are unknown, malformed or too long get errors; the connection and the
    // daemon carry on.
    for (line, expected) in [
        (&b"frobnicate\n"[..], "unknown command"),
        (b"build_route not-a-key\n", "key"),
        (b"ping_node 'unterminated\n", "quote"),
        (b"\xff\xfe\n", "UTF-8"),
    ] {
        let mut client = ControlSocket::connect(&b.socket);
        client.send(line);
        let reply = client.answer();
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(expected),
            "{line:?}: {reply}"
        );
    }
    let mut long = vec![b'x'; 70_000];
    long.push(b'\n');
    long.extend_from_slice(b"status\n");
    let mut client = ControlSocket::connect(&b.socket);
    client.send(&long);
    let reply = client.answer();
    assert!(
        reply["error"].as_str().unwrap().contains("too long"),
        "{reply}"
    );
    let reply = client.answer();
    assert_eq!(reply["ok"], true, "{reply}");

    // Nothing panicked, and the route still answers.
    assert_eq!(ping(&a, &c, 3), 3);
    for daemon in [a, b, c] {
        assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
        stop_cleanly(daemon);
    }
}

#[test]
fn bad_configs_are_refused_with_clear_errors() {
    let dir = TempDir::new("badconfig");
    let run = |config: &str| {
        let path = dir.write("bad/config.yaml", config);
        let output = std::process::Command::new(common::SKYWIRED)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{config}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run("listen: \"[::]:0\"\nlisten_port: 3\n");
    assert!(
        error.contains("listen_port") && error.contains("line 2"),
        "{error}"
    );
    let error = run("node:\n  key_file: missing/folder/node.key\n");
    assert!(error.contains("missing/folder"), "{error}");
    dir.write("bad/node.key", "not a key\n");
    let error = run("node:\n  key_file: node.key\n");
    assert!(
        error.contains("node.key") && error.contains("key"),
        "{error}"
    );
}
