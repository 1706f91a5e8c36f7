//! The VPN through real `skywired` processes in network namespaces they share with nothing
//! else (needs root and `ip`; `ping` for the pings): a client in A reaches a host behind
//! the server in C through relay B, over IPv4 and IPv6, with a 100 MiB transfer checked end to
//! end; its addresses survive a restart of its daemon; a full-tunnel client killed with SIGKILL
//! leaves rules behind that its next start removes; a hostile undo file gets only the client's
//! own entries removed, and none of it run; a grant inside the client's LAN is refused with
//! nothing put on the host; and every namespace ends as it began.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::machine::require;
use common::netns::{
    can_make_namespaces, in_netns, ip, reaches, snapshot, transfer, Namespaces, TRANSFER,
};
use common::{socks, visctl_json, wait_until, TempDir, SKYWIRED, TEST_LIVENESS, VISCTL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skywire_dataplane::{NodeKey, SecretKey};

const HOST4: &str = "10.99.0.1";
const HOST6: &str = "fd99::1";
/// A `skywired` in a namespace, its folder holding config, key, state and log.
struct Node {
    ns: String,
    dir: TempDir,
    child: Option<Child>,
}

impl Node {
    /// Writes the config (`extra` is YAML appended to it) and starts the daemon, with the
    /// tests' liveness.
    fn start(
        ns: &str,
        secret: &SecretKey,
        neighbours: &[(NodeKey, Option<&str>)],
        extra: &str,
    ) -> Node {
        Node::launch(ns, secret, neighbours, TEST_LIVENESS, extra)
    }

    /// As [`Node::start`], with `liveness` as the config's `liveness:` section (empty: the
    /// daemon's defaults).
    fn launch(
        ns: &str,
        secret: &SecretKey,
        neighbours: &[(NodeKey, Option<&str>)],
        liveness: &str,
        extra: &str,
    ) -> Node {
        let mut node = Node::new(ns, secret, neighbours, liveness, extra);
        node.spawn();
        node
    }

    /// Writes the config (`liveness` as its `liveness:` section, `extra` as YAML appended to
    /// it), without starting the daemon.
    fn new(
        ns: &str,
        secret: &SecretKey,
        neighbours: &[(NodeKey, Option<&str>)],
        liveness: &str,
        extra: &str,
    ) -> Node {
        let dir = TempDir::new("vpnd");
        dir.write("node.key", &format!("{}\n", secret.to_base64()));
        let mut config = format!(
            "node:\n  key_file: node.key\n  state_dir: state\nlisten: \"[::]:7777\"\n\
             control:\n  socket: visctl.sock\n{liveness}log_level: debug\nneighbours:\n",
        );
        for (key, endpoint) in neighbours {
            config.push_str(&format!("  - key: {key}\n"));
            if let Some(endpoint) = endpoint {
                config.push_str(&format!("    endpoint: \"{endpoint}\"\n"));
            }
        }
        config.push_str(extra);
        dir.write("config.yaml", &config);
        Node {
            ns: ns.to_owned(),
            dir,
            child: None,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path("skywired.log"))
            .unwrap();
        let config = self.dir.path("config.yaml");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, SKYWIRED, "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until("skywired answering", Duration::from_secs(20), || {
            self.visctl(&["status"]).is_some()
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("skywired.log")).unwrap_or_default()
    }

    /// `visctl --json ARGS`: the reply, or `None` when the command failed.
    fn visctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        visctl_json(&self.dir.path("visctl.sock"), args)
    }

    fn vpn_client(&self) -> serde_json::Value {
        let reply = self.visctl(&["vpn", "status"]).unwrap_or_default();
        reply["result"]["client"].clone()
    }

    /// Waits for the client up; returns its IPv4 and IPv6 addresses.
    fn client_up(&self) -> (String, String) {
        let mut last = serde_json::Value::Null;
        let up = (0..600).any(|_| {
            last = self.vpn_client();
            let up = last["state"] == "up";
            if !up {
                std::thread::sleep(Duration::from_millis(50));
            }
            up
        });
        assert!(
            up,
            "the client is not up: {last}\n--- log ---\n{}",
            self.log()
        );
        (
            last["ipv4"].as_str().unwrap().to_owned(),
            last["ipv6"].as_str().unwrap().to_owned(),
        )
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "skywired exited with {status}:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL: no chance to clean up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path("state")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// The VPN server's section, serving `client`.
fn server_section(client: &NodeKey) -> String {
    format!("vpn:\n  server:\n    enabled: true\n    tun: skysrv\n    pool4: 10.77.0.0/24\n    pool6: \"fd77::/64\"\n    allow:\n      - {client}\n")
}

/// A SOCKS5 CONNECT through `proxy` to `target`: what the target sends, to its end, or the
/// reply code that refused it.
fn socks_fetch(proxy: SocketAddr, target: SocketAddr) -> Result<String, u8> {
    let mut stream = socks::greet(proxy);
    match socks::connect_request(&mut stream, &socks::target_ip(target)) {
        0 => {
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            Ok(text)
        }
        code => Err(code),
    }
}

/// The VPN client's section: to `server` through the relays of `path`, the server alone when
/// it has none, or over a path the node chooses when there is no `path`.
fn client_section(server: &NodeKey, path: Option<&[NodeKey]>, routes: &str) -> String {
    let mut text = format!("vpn:\n  client:\n    enabled: true\n    tun: skycli\n    server: {server}\n    routes: {routes}\n");
    if let Some(relays) = path {
        text.push_str("    path:\n");
        for key in relays.iter().chain([server]) {
            text.push_str(&format!("      - {key}\n"));
        }
    }
    text
}

/// A VPN server in namespace `c_ns`, and in `a_ns` a full-tunnel client of it that reaches it
/// at `c_endpoint`: the client's node and the server's.
fn full_tunnel(a_ns: &str, c_ns: &str, c_endpoint: &str) -> (Node, Node) {
    let (a, c) = (SecretKey::generate(), SecretKey::generate());
    let c_node = Node::start(
        c_ns,
        &c,
        &[(a.public(), None)],
        &server_section(&a.public()),
    );
    let client = client_section(&c.public(), Some(&[]), "[\"0.0.0.0/0\", \"::/0\"]");
    let a_node = Node::start(a_ns, &a, &[(c.public(), Some(c_endpoint))], &client);
    (a_node, c_node)
}

#[test]
fn skywired_carries_the_vpn_through_a_relay_and_leaves_nothing() {
    const TEST: &str = "skywired_carries_the_vpn_through_a_relay_and_leaves_nothing";
    if !can_make_namespaces(TEST) {
        return;
    }
    let with_ping = require("ping", TEST);
    let ns = Namespaces::new("skyvpnd", 3);
    let (a_ns, b_ns, c_ns) = (ns.name(0), ns.name(1), ns.name(2));
    ns.link(0, "10.203.1.1", 1, "10.203.1.2");
    ns.link(1, "10.203.2.1", 2, "10.203.2.2");
    ns.add_host(2, HOST4);
    ns.add_host(2, HOST6);
    let before: Vec<String> = [&a_ns, &b_ns, &c_ns].map(|ns| snapshot(ns)).to_vec();

    let (a, b, c) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let server = server_section(&a.public())
        + &format!(
            "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"{HOST4}/32\"]\n",
            a.public()
        );
    let mut c_node = Node::start(&c_ns, &c, &[(b.public(), None)], &server);
    let mut b_node = Node::start(
        &b_ns,
        &b,
        &[(a.public(), None), (c.public(), Some("10.203.2.2:7777"))],
        "",
    );
    let client = client_section(
        &c.public(),
        Some(&[b.public()]),
        "[\"10.99.0.0/24\", \"fd99::/64\", \"10.77.0.0/24\", \"fd77::/64\"]",
    ) + &format!(
        "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n    path: [{}]\n",
        c.public(),
        b.public()
    );
    let mut a_node = Node::start(&a_ns, &a, &[(b.public(), Some("10.203.1.2:7777"))], &client);

    let addresses = a_node.client_up();
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping over IPv4");
        assert!(reaches(&a_ns, HOST6), "ping over IPv6");
    }
    let (sent, received) = transfer(&a_ns, &c_ns, format!("{HOST4}:5301").parse().unwrap());
    assert_eq!(sent.0, TRANSFER);
    assert_eq!(sent, received, "100 MiB arrived intact over IPv4");
    let (sent, received) = transfer(&a_ns, &c_ns, format!("[{HOST6}]:5302").parse().unwrap());
    assert_eq!(sent, received, "100 MiB arrived intact over IPv6");
    let text = Command::new(VISCTL)
        .arg("--socket")
        .arg(a_node.dir.path("visctl.sock"))
        .args(["vpn", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("vpn client   up on skycli"), "{text}");

    // A restarted daemon gets the same addresses.
    a_node.stop();
    assert_eq!(
        snapshot(&a_ns),
        before[0],
        "A is as it was after a clean stop"
    );
    a_node.spawn();
    assert_eq!(a_node.client_up(), addresses);
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping after the restart");
    }

    // The SOCKS client shares the route to C: stopping the VPN client leaves it as it is.
    let route_to_c = || {
        let reply = a_node.visctl(&["list_routes"]).unwrap_or_default();
        let routes = reply["result"]["routes"].as_array().cloned();
        let routes = routes.unwrap_or_default();
        routes
            .into_iter()
            .find(|route| route["peer"] == c.public().to_string())
    };
    let route = route_to_c().expect("A has a route to C");
    assert!(a_node.visctl(&["vpn", "stop", "client"]).is_some());
    assert_eq!(route_to_c(), Some(route), "the route to C is untouched");
    let socks = a_node.visctl(&["socks", "status"]).unwrap();
    let proxy: SocketAddr = socks["result"]["client"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let target: SocketAddr = format!("{HOST4}:5303").parse().unwrap();
    let listening = in_netns(&c_ns, move || {
        let listener = TcpListener::bind(target).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"through the shared route").unwrap();
    });
    let greeting = in_netns(&a_ns, move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match socks_fetch(proxy, target) {
                Ok(text) => return text,
                Err(code) if std::time::Instant::now() < deadline => {
                    eprintln!("SOCKS through A: reply code {code:#04x}; again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(code) => panic!("SOCKS through A: reply code {code:#04x}"),
            }
        }
    })
    .join()
    .unwrap();
    listening.join().unwrap();
    assert_eq!(greeting, "through the shared route");

    a_node.stop();
    b_node.stop();
    c_node.stop();
    for (ns, before) in [&a_ns, &b_ns, &c_ns].iter().zip(&before) {
        assert_eq!(&snapshot(ns), before, "{ns} is as it was");
    }
}

#[test]
fn a_killed_full_tunnel_client_is_cleaned_up_at_its_next_start() {
    const TEST: &str = "a_killed_full_tunnel_client_is_cleaned_up_at_its_next_start";
    if !can_make_namespaces(TEST) {
        return;
    }
    let with_ping = require("ping", TEST);
    let ns = Namespaces::new("skyvpnd", 2);
    let (a_ns, c_ns) = (ns.name(0), ns.name(1));
    ns.link(0, "10.204.1.1", 1, "10.204.1.2");
    ns.add_host(1, HOST4);
    ip(&["-n", &a_ns, "route", "add", "default", "via", "10.204.1.2"]);
    let before = snapshot(&a_ns);

    let (mut a_node, _c_node) = full_tunnel(&a_ns, &c_ns, "10.204.1.2:7777");
    a_node.client_up();
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping through the full tunnel");
    }
    let route = ip(&["-n", &a_ns, "route", "get", "192.0.2.1"]);
    assert!(
        route.contains("dev skycli"),
        "everything goes into the tunnel: {route}"
    );

    a_node.kill();
    let leftovers = snapshot(&a_ns);
    assert!(leftovers.contains("not from all fwmark"), "{leftovers}");
    assert!(Path::new(&a_node.state_dir())
        .join("vpn-client-routes.yaml")
        .exists());

    a_node.spawn();
    a_node.client_up();
    if with_ping {
        assert!(reaches(&a_ns, HOST4), "ping after the next start");
    }
    a_node.stop();
    assert_eq!(snapshot(&a_ns), before, "A is exactly as it was");
}

#[test]
fn a_grant_inside_the_clients_lan_is_refused_and_nothing_is_put_on_the_host() {
    const TEST: &str = "a_grant_inside_the_clients_lan_is_refused_and_nothing_is_put_on_the_host";
    if !can_make_namespaces(TEST) {
        return;
    }
    let ns = Namespaces::new("skyvpnl", 3);
    let (a_ns, c_ns) = (ns.name(0), ns.name(1));
    ns.link(0, "10.207.1.1", 1, "10.207.1.2");
    // A's LAN (its link v02 to the third namespace) is the server's pool, 10.77.0.0/24: the
    // grant would take it into the tunnel.
    ns.link(0, "10.77.0.50", 2, "10.77.0.51");
    let before = snapshot(&a_ns);

    let (mut a_node, mut c_node) = full_tunnel(&a_ns, &c_ns, "10.207.1.2:7777");
    let mut state = String::new();
    wait_until(
        "A's client refusing its grant",
        Duration::from_secs(30),
        || {
            state = a_node.vpn_client()["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            state.starts_with("grant refused")
        },
    );
    assert!(
        state.contains("10.77.0.2, inside 10.77.0.0/24, which is on-link on v02"),
        "{state}"
    );
    let addresses = ip(&["-n", &a_ns, "address", "show", "dev", "skycli"]);
    assert!(
        !addresses.contains("10.77.0.2") && !addresses.contains("fd77"),
        "{addresses}"
    );
    let rules = ip(&["-n", &a_ns, "rule", "show"]);
    assert!(!rules.contains("29541"), "{rules}");
    assert!(
        !Path::new(&a_node.state_dir())
            .join("vpn-client-routes.yaml")
            .exists(),
        "no route was listed for undoing"
    );
    assert!(
        a_node.log().contains("refused the grant"),
        "{}",
        a_node.log()
    );

    a_node.stop();
    c_node.stop();
    assert_eq!(snapshot(&a_ns), before, "A is exactly as it was");
}

/// Sends `len` bytes of the tests' HTTP content (`seed`) from namespace `from` to `addr` in
/// namespace `to`, calling `midway` once a quarter of them is sent; returns the SHA-256 of what
/// arrived and how many bytes did.
fn transfer_across(
    from: &str,
    to: &str,
    addr: SocketAddr,
    seed: u64,
    len: u64,
    midway: impl FnOnce(),
) -> ([u8; 32], u64) {
    use sha2::{Digest, Sha256};
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to, move || {
        let listener = TcpListener::bind(addr).unwrap();
        bound_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (mut hash, mut buf, mut total) = (Sha256::new(), vec![0u8; 1 << 16], 0u64);
        loop {
            let read = stream.read(&mut buf).unwrap();
            if read == 0 {
                break;
            }
            hash.update(&buf[..read]);
            total += read as u64;
        }
        (hash.finalize().into(), total)
    });
    bound_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (quarter_tx, quarter_rx) = std::sync::mpsc::channel();
    let sender = in_netns(from, move || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut sent = 0u64;
        common::http::for_each_chunk(seed, len, |chunk| {
            stream.write_all(chunk).unwrap();
            sent += chunk.len() as u64;
            if sent >= len / 4 {
                let _ = quarter_tx.send(());
            }
        });
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    });
    quarter_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    midway();
    sender.join().unwrap();
    receiver.join().unwrap()
}

#[test]
fn a_vpn_transfer_over_an_automatic_path_survives_the_sigkill_of_its_relay() {
    const TEST: &str = "a_vpn_transfer_over_an_automatic_path_survives_the_sigkill_of_its_relay";
    if !can_make_namespaces(TEST) {
        return;
    }
    // A–B–D and A–C–D: two disjoint paths from the client A to the server D.
    let ns = Namespaces::new("skyrepair", 4);
    let names: Vec<String> = (0..4).map(|index| ns.name(index)).collect();
    ns.link(0, "10.205.1.1", 1, "10.205.1.2");
    ns.link(1, "10.205.2.1", 3, "10.205.2.2");
    ns.link(0, "10.205.3.1", 2, "10.205.3.2");
    ns.link(2, "10.205.4.1", 3, "10.205.4.2");
    ns.add_host(3, HOST4);
    let secrets: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    // Every node with the daemon's default liveness.
    let server = server_section(&keys[0]);
    let _d = Node::launch(
        &names[3],
        &secrets[3],
        &[(keys[1], None), (keys[2], None)],
        "",
        &server,
    );
    let mut relays = [
        Node::launch(
            &names[1],
            &secrets[1],
            &[(keys[0], None), (keys[3], Some("10.205.2.2:7777"))],
            "",
            "",
        ),
        Node::launch(
            &names[2],
            &secrets[2],
            &[(keys[0], None), (keys[3], Some("10.205.4.2:7777"))],
            "",
            "",
        ),
    ];
    let client = client_section(
        &keys[3],
        None,
        "[\"10.99.0.0/24\", \"10.77.0.0/24\", \"fd77::/64\"]",
    );
    let a = Node::launch(
        &names[0],
        &secrets[0],
        &[
            (keys[1], Some("10.205.1.2:7777")),
            (keys[2], Some("10.205.3.2:7777")),
        ],
        "",
        &client,
    );
    a.client_up();
    let route_to_d = || {
        let reply = a.visctl(&["list_routes"]).unwrap_or_default();
        reply["result"]["routes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|route| route["peer"] == keys[3].to_string() && route["ready"] == true)
            .map(|route| route["path"][1].as_str().unwrap_or_default().to_owned())
    };
    let relay_in_use = route_to_d().expect("A has a route to D");
    let index = usize::from(relay_in_use != keys[1].to_string());
    let other = keys[2 - index].to_string();

    let size: u64 = 100 << 20;
    let expected = std::thread::spawn(move || common::http::content_sha256(11, size));
    let target: SocketAddr = format!("{HOST4}:5304").parse().unwrap();
    let (sha, received) = transfer_across(&names[0], &names[3], target, 11, size, || {
        relays[index].kill();
    });
    assert_eq!(received, size);
    assert!(
        sha == expected.join().unwrap(),
        "the 100 MiB differ after the relay died"
    );
    assert_eq!(
        route_to_d(),
        Some(other),
        "A's route goes over the other relay"
    );
    let vpn = a.vpn_client();
    assert_eq!(vpn["state"], "up", "{vpn}");
    assert_eq!(vpn["reconnects"], 0, "the VPN never went down: {vpn}");
}

/// The undo file a killed client leaves is data: at the next start, only the client's own
/// entries (routes through its device in its table, its two rules) are removed. Entries naming
/// another device, another table or priority, and strings that look like shell commands are
/// left alone and never run.
#[test]
fn a_hostile_undo_file_gets_only_the_clients_own_entries_removed() {
    const TEST: &str = "a_hostile_undo_file_gets_only_the_clients_own_entries_removed";
    if !can_make_namespaces(TEST) {
        return;
    }
    let ns = Namespaces::new("skyundo", 1);
    let a_ns = ns.name(0);
    // What the file names that is not the client's: another device, in the client's table and
    // in another; another table's rule.
    ip(&[
        "-n", &a_ns, "link", "add", "other0", "type", "veth", "peer", "name", "other1",
    ]);
    for device in ["other0", "other1"] {
        ip(&["-n", &a_ns, "link", "set", device, "up"]);
    }
    for table in ["29547", "100"] {
        ip(&[
            "-n",
            &a_ns,
            "route",
            "add",
            "10.55.0.0/16",
            "dev",
            "other0",
            "table",
            table,
        ]);
    }
    ip(&[
        "-n", &a_ns, "rule", "add", "priority", "100", "table", "100",
    ]);
    // What a killed client leaves: its tunnel rule.
    ip(&[
        "-n", &a_ns, "rule", "add", "priority", "29541", "not", "fwmark", "0x736b", "table",
        "29547",
    ]);
    let planted = snapshot(&a_ns);
    assert!(planted.contains("29541:"), "{planted}");

    let a = SecretKey::generate();
    let server = SecretKey::generate().public();
    let mut client = client_section(&server, Some(&[]), "[\"10.99.0.0/24\"]");
    client = client.replace("enabled: true", "enabled: false");
    let mut node = Node::new(&a_ns, &a, &[], TEST_LIVENESS, &client);
    let marker = node.dir.path("pwned");
    let undo = format!(
        "version: 2\nroutes:\n\
         - {{prefix: 10.55.0.0/16, device: other0, table: 29547}}\n\
         - {{prefix: 10.55.0.0/16, device: other0, table: 100}}\n\
         - {{prefix: 10.55.0.0/16, device: \"$(touch {m})\", table: 29547}}\n\
         - {{prefix: \"10.0.0.0/8; touch {m}\", device: skycli, table: 29547}}\n\
         rules:\n\
         - {{family: ipv4, priority: 100, table: 100}}\n\
         - {{family: ipv4, priority: 29541, table: 29547}}\n",
        m = marker.display()
    );
    node.dir.write("state/vpn-client-routes.yaml", &undo);
    node.spawn();
    let undo_file = node.state_dir().join("vpn-client-routes.yaml");
    wait_until(
        "the undo file read and removed",
        Duration::from_secs(20),
        || !undo_file.exists(),
    );
    let after = snapshot(&a_ns);
    assert!(
        !after.contains("29541:"),
        "the client's own rule is gone:\n{after}"
    );
    assert!(after.contains("100:\tfrom all lookup 100"), "{after}");
    assert!(
        after.contains("10.55.0.0/16 dev other0 table 29547"),
        "{after}"
    );
    assert!(
        after.contains("10.55.0.0/16 dev other0 table 100"),
        "{after}"
    );
    assert_eq!(
        after,
        planted.replace("29541:\tnot from all fwmark 0x736b lookup 29547\n", ""),
        "nothing else changed"
    );
    assert!(!marker.exists(), "nothing of the file was run");
    let log = node.log();
    assert!(
        log.contains("left alone: route \"10.55.0.0/16\" dev \"other0\" table 100"),
        "{log}"
    );
    node.stop();
}

/// A node the server does not allow opens streams to its lease port as fast as it can (its
/// SOCKS client, pointed at the lease port, opens one per request) while the allowed client
/// starts: every stream is refused at its SYN, so none holds a lease slot or a socket, and
/// the allowed client gets its addresses.
#[test]
fn a_strangers_lease_streams_do_not_keep_an_allowed_client_from_its_addresses() {
    const TEST: &str = "a_strangers_lease_streams_do_not_keep_an_allowed_client_from_its_addresses";
    const FLOODERS: usize = 8;
    const ATTEMPTS_EACH: usize = 40;
    if !can_make_namespaces(TEST) {
        return;
    }
    let ns = Namespaces::new("skyvpnf", 3);
    let (a_ns, c_ns, s_ns) = (ns.name(0), ns.name(1), ns.name(2));
    ns.link(0, "10.205.1.1", 1, "10.205.1.2");
    ns.link(2, "10.205.2.1", 1, "10.205.2.2");
    let (a, c, s) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let server = server_section(&a.public());
    let c_node = Node::start(
        &c_ns,
        &c,
        &[(a.public(), None), (s.public(), None)],
        &server,
    );
    let stranger = format!(
        "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n    exit_port: {}\n    path: [{}]\n",
        c.public(),
        skywire_dataplane::vpn::DEFAULT_LEASE_PORT,
        c.public()
    );
    let s_node = Node::start(
        &s_ns,
        &s,
        &[(c.public(), Some("10.205.2.2:7777"))],
        &stranger,
    );
    let socks_client = |node: &Node| {
        node.visctl(&["socks", "status"]).unwrap_or_default()["result"]["client"].clone()
    };
    wait_until("the stranger's route to C", Duration::from_secs(20), || {
        socks_client(&s_node)["route"] == "ready"
    });
    let proxy: SocketAddr = socks_client(&s_node)["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let target = socks::target_ip("127.0.0.1:9".parse().unwrap());
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let target = target.clone();
            in_netns(&s_ns, move || {
                (0..ATTEMPTS_EACH)
                    .map(|_| socks::connect_request(&mut socks::greet(proxy), &target))
                    .collect::<Vec<u8>>()
            })
        })
        .collect();
    let client = client_section(
        &c.public(),
        Some(&[]),
        "[\"10.99.0.0/24\", \"10.77.0.0/24\", \"fd77::/64\"]",
    );
    let a_node = Node::start(&a_ns, &a, &[(c.public(), Some("10.205.1.2:7777"))], &client);
    let (ipv4, _) = a_node.client_up();
    assert!(ipv4.starts_with("10.77.0."), "{ipv4}");
    let codes: Vec<u8> = flooders
        .into_iter()
        .flat_map(|flooder| flooder.join().unwrap())
        .collect();
    assert!(codes.iter().all(|code| *code == 0x02), "{codes:?}");

    let status = c_node.visctl(&["status"]).unwrap();
    let refused = &status["result"]["mesh_tcp"]["syns_refused"];
    assert_eq!(
        refused["not_admitted"],
        (FLOODERS * ATTEMPTS_EACH) as u64,
        "{status}"
    );
    let server = c_node.visctl(&["vpn", "status"]).unwrap();
    let clients = server["result"]["server"]["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{server}");
    assert_eq!(clients[0]["key"], a.public().to_string(), "{server}");
}

/// The packets the reader of TUN device `tun` in this thread's namespace has taken from it
/// (its transmit count in `/proc/thread-self/net/dev`).
fn tun_packets_read(tun: &str) -> u64 {
    let table = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    table
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{tun}:")))
        .and_then(|counters| counters.split_whitespace().nth(9)?.parse().ok())
        .unwrap_or_else(|| panic!("no {tun} in\n{table}"))
}

/// The relay's resident memory at its peak so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A client floods its route with UDP through the tunnel while the relay's next hop is a
/// 40 Mbit/s link: the relay's socket fills, its outbox reaches its limit and drops (counted
/// in `status`), and its peak resident memory grows by no more than the outbox's buffers
/// (4096 datagrams of 2 KiB) and 8 MiB of slack.
#[test]
fn a_flood_behind_a_slow_next_hop_leaves_the_relays_memory_bounded() {
    const TEST: &str = "a_flood_behind_a_slow_next_hop_leaves_the_relays_memory_bounded";
    /// Datagrams the client sends, 1200 bytes each: about 72 MB.
    const DATAGRAMS: usize = 60_000;
    const BOUND: u64 = (4096 * 2048) + (8 << 20);
    if !can_make_namespaces(TEST) || !require("tc", TEST) {
        return;
    }
    let ns = Namespaces::new("skyvpnm", 3);
    let (a_ns, r_ns, c_ns) = (ns.name(0), ns.name(1), ns.name(2));
    ns.link(0, "10.206.1.1", 1, "10.206.1.2");
    ns.link(1, "10.206.2.1", 2, "10.206.2.2");
    ns.add_host(2, HOST4);
    // R's side of the link to C: slow, with a queue deep enough that R's socket buffer
    // fills before the queue drops.
    let tc = Command::new("tc")
        .args(["-n", &r_ns, "qdisc", "add", "dev", "v12", "root", "tbf"])
        .args(["rate", "40mbit", "burst", "64kb", "limit", "64mb"])
        .status()
        .unwrap();
    assert!(tc.success(), "tc: {tc}");

    let (a, r, c) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let server = server_section(&a.public());
    let _c_node = Node::start(&c_ns, &c, &[(r.public(), None)], &server);
    let r_node = Node::start(
        &r_ns,
        &r,
        &[(a.public(), None), (c.public(), Some("10.206.2.2:7777"))],
        "",
    );
    let client = client_section(
        &c.public(),
        Some(&[r.public()]),
        "[\"10.99.0.0/24\", \"10.77.0.0/24\", \"fd77::/64\"]",
    );
    let a_node = Node::start(&a_ns, &a, &[(r.public(), Some("10.206.1.2:7777"))], &client);
    a_node.client_up();
    let relay = r_node.child.as_ref().unwrap().id();
    let before = peak_rss(relay);

    let flood = in_netns(&a_ns, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let payload = [0x5a; 1200];
        // At most this many datagrams wait for A to read them from its TUN device, whose
        // queue drops beyond 500: the flood goes at the pace A takes it, all of it reaching A.
        const IN_FLIGHT: u64 = 256;
        let deadline = Instant::now() + Duration::from_secs(120);
        let start = tun_packets_read("skycli");
        let mut sent = 0;
        while sent < DATAGRAMS as u64 && Instant::now() < deadline {
            // The device carries a few packets of the host's own too: never negative.
            let read = tun_packets_read("skycli").saturating_sub(start);
            if sent.saturating_sub(read) < IN_FLIGHT {
                socket.send_to(&payload, (HOST4, 9)).unwrap();
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        sent
    });
    assert_eq!(flood.join().unwrap(), DATAGRAMS as u64);
    let mut status = serde_json::Value::Null;
    wait_until(
        "the relay's outbox limit hit",
        Duration::from_secs(20),
        || {
            status = r_node.visctl(&["status"]).unwrap_or_default();
            status["result"]["outbox"]["dropped"].as_u64().unwrap_or(0) > 0
        },
    );
    let outbox = &status["result"]["outbox"];
    assert_eq!(outbox["queued_peak"], outbox["limit"], "{status}");
    let grown = peak_rss(relay).saturating_sub(before);
    eprintln!(
        "the relay's peak RSS grew by {:.1} MiB; its outbox dropped {}",
        grown as f64 / f64::from(1 << 20),
        outbox["dropped"]
    );
    assert!(grown <= BOUND, "the relay grew by {grown} bytes: {status}");
    let text = r_node.visctl(&["status"]).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("outbox full"), "{text}");
}
