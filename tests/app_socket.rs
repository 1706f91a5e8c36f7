//! Launched apps use the mesh through their node's app socket, end to end: four `skywired`
//! processes on 127.0.0.1 in a line A–B–C–D, no paths given anywhere. The example app at D
//! listens as a named service, `services` at B lists it, and the example app at A dials it with
//! two streams open at once; the Python client (written from the README) listens at D and
//! dials from A, its own listener and the example's; a process the node did not launch is
//! refused, and so are apps that listen on a built-in app's port or dial one. D runs the
//! messenger, which B lists among D's services and whose port no app at D may take.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::machine::require;
use common::{wait_until, Daemon, Neighbour, TempDir, SKYWIRED};
use serde_json::Value;
use skywire_dataplane::{NodeKey, SecretKey};

const WAIT: Duration = Duration::from_secs(30);

/// The example app, a binary of the control crate, built beside skywired by
/// `cargo test --workspace`.
fn mesh_echo() -> PathBuf {
    let path = Path::new(SKYWIRED).with_file_name("skywire-mesh-echo");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p skywire-control --bin skywire-mesh-echo` (`cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// The Python app socket client.
fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/app_client.py")
}

/// Every node's catalog: the example app as `echo` and the Python client as `py`.
fn catalog() -> String {
    format!(
        "apps:\n  echo:\n    path: {}\n    args: free\n  py:\n    path: {}\n    args: free\n",
        mesh_echo().display(),
        python_client().display()
    )
}

/// Starts A–B–C–D: each node knows its neighbours' keys, the later ones their endpoints; D
/// runs the messenger.
fn four_nodes(dir: &TempDir) -> [Daemon; 4] {
    let secrets: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    let caller = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let extra = catalog();
    let d = Daemon::start_with(
        dir,
        "d",
        &secrets[3],
        &[caller(keys[2])],
        &format!("{extra}messenger: {{}}\n"),
    );
    let c = Daemon::start_with(
        dir,
        "c",
        &secrets[2],
        &[caller(keys[1]), d.as_neighbour(true)],
        &extra,
    );
    let b = Daemon::start_with(
        dir,
        "b",
        &secrets[1],
        &[caller(keys[0]), c.as_neighbour(true)],
        &extra,
    );
    let a = Daemon::start_with(dir, "a", &secrets[0], &[b.as_neighbour(true)], &extra);
    for relay in [&b, &c] {
        wait_until(&format!("{}'s links to come up", relay.name), WAIT, || {
            relay.ask(&["status"])["result"]["links_up"] == 2
        });
    }
    [a, b, c, d]
}

/// Starts a catalog app with `args`; its id.
fn start(daemon: &Daemon, args: &[&str]) -> u64 {
    let mut all = vec!["start"];
    all.extend_from_slice(args);
    daemon.ask(&all)["result"]["started"]["id"]
        .as_u64()
        .unwrap()
}

/// App `id`'s output lines so far.
fn output(daemon: &Daemon, id: u64) -> Vec<String> {
    daemon.ask(&["logs", &id.to_string(), "1000"])["result"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["line"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until app `id` has written a line that contains `text`; that line.
fn wait_for_line(daemon: &Daemon, id: u64, text: &str) -> String {
    let mut found = None;
    wait_until(
        &format!("{}'s app {id} to write {text:?}", daemon.name),
        WAIT,
        || {
            found = output(daemon, id)
                .into_iter()
                .find(|line| line.contains(text));
            found.is_some()
        },
    );
    found.unwrap()
}

/// The rows of `services` at `daemon` for `name`.
fn service_rows(daemon: &Daemon, name: &str) -> Vec<Value> {
    daemon.ask(&["services", name])["result"]["services"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn launched_apps_talk_over_the_mesh_through_the_app_socket() {
    let dir = TempDir::new("app-socket");
    let [a, b, _c, mut d] = four_nodes(&dir);
    let d_key = d.key.to_string();
    let a_key = a.key.to_string();

    // The example app at D listens as a service, which the other nodes see in D's advert.
    let listener = start(&d, &["echo", "listen", "5000", "echo-test"]);
    wait_for_line(&d, listener, "listening on port 5000 as `echo-test`");
    wait_until("B to list D's echo-test", WAIT, || {
        service_rows(&b, "echo-test")
            .iter()
            .any(|row| row["node"] == d_key.as_str() && row["port"] == 5000 && row["hops"] == 2)
    });
    let text = String::from_utf8(b.visctl(&["services"]).stdout).unwrap();
    assert!(
        text.contains("echo-test") && text.contains(&d_key),
        "{text}"
    );
    // D's messenger is a built-in service of D's on its port.
    let messenger = service_rows(&b, "messenger");
    assert!(
        messenger.iter().any(|row| row["node"] == d_key.as_str()
            && row["port"] == 100
            && row["builtin"] == true),
        "{messenger:?}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("messenger (built-in)") && line.contains(&d_key)),
        "{text}"
    );
    // `list_nodes` shows the same services on D's line, and has them in its JSON.
    let nodes = b.ask(&["list_nodes"]);
    let d_row = nodes["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["key"] == d_key.as_str())
        .unwrap_or_else(|| panic!("D in B's list_nodes: {nodes}"))
        .clone();
    let services = d_row["services"].as_array().unwrap();
    for (name, port) in [("echo-test", 5000), ("messenger", 100)] {
        assert!(
            services
                .iter()
                .any(|service| service["name"] == name && service["port"] == port),
            "{d_row}"
        );
    }
    let text = String::from_utf8(b.visctl(&["list_nodes"]).stdout).unwrap();
    let d_line = text
        .lines()
        .find(|line| line.starts_with(&d_key))
        .unwrap_or_else(|| panic!("D's line in\n{text}"));
    assert!(
        d_line.contains("echo-test:5000") && d_line.contains("messenger:100"),
        "{text}"
    );
    wait_until("A to know a path to D's echo-test", WAIT, || {
        service_rows(&a, "echo-test")
            .iter()
            .any(|row| row["node"] == d_key.as_str() && row["hops"] == 3)
    });

    // The example app at A dials it with two streams open at once; A has no route to D yet.
    let dialer = start(&a, &["echo", "dial", &d_key, "5000", "2"]);
    let done = wait_for_line(&a, dialer, "echoed at once");
    assert!(done.starts_with("2 stream(s) to "), "{done}");
    let lines = output(&a, dialer);
    for number in [1, 2] {
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with(&format!("stream {number}: "))
                    && line.ends_with("echoed intact")),
            "{lines:?}"
        );
    }
    wait_until("D's listener to see both streams end", WAIT, || {
        output(&d, listener)
            .iter()
            .filter(|line| line.contains(&format!("from {a_key}")) && line.contains("echoed"))
            .count()
            == 2
    });
    let routes = a.ask(&["list_routes"]);
    assert!(
        routes["result"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|route| route["peer"] == d_key.as_str()
                && route["path"].as_array().unwrap().len() == 4),
        "A built its route to D over a path of its own choice: {routes}"
    );

    if require(
        "python3",
        "launched_apps_talk_over_the_mesh_through_the_app_socket",
    ) {
        // The Python client listens at D and dials from A: its own listener, then the example.
        let py_listener = start(&d, &["py", "listen", "5001", "py-echo"]);
        wait_for_line(&d, py_listener, "listening");
        let py_dialer = start(&a, &["py", "dial", &d_key, "5001", "hello from python"]);
        wait_for_line(&a, py_dialer, "reply: HELLO FROM PYTHON");
        let incoming = wait_for_line(&d, py_listener, "incoming ");
        assert!(incoming.contains(&a_key), "the caller's key: {incoming}");
        wait_for_line(&d, py_listener, "served ");
        let to_rust = start(&a, &["py", "dial", &d_key, "5000", "python to rust"]);
        wait_for_line(&a, to_rust, "reply: python to rust");

        // Apps may not listen on a built-in app's port nor dial one.
        for (request, refusal) in [
            ("listen 1080", "answer: error port reserved: port 1080"),
            ("listen 7001 vpn", "answer: error port reserved: port 7001"),
            (
                &format!("dial {d_key} 1080") as &str,
                "answer: error port reserved: port 1080",
            ),
            (
                &format!("dial {d_key} 22"),
                "answer: error port reserved: port 22",
            ),
            (
                "listen 5002 socks-server",
                "answer: error not allowed: `socks-server`",
            ),
        ] {
            let asker = start(&a, &["py", "ask", request]);
            wait_for_line(&a, asker, refusal);
        }
    }
    let refused = start(&a, &["echo", "listen", "1080"]);
    let line = wait_for_line(&a, refused, "cannot listen on port 1080");
    assert!(line.contains("port reserved"), "{line}");
    // Nor on the messenger's, at a node where it runs.
    let refused = start(&d, &["echo", "listen", "100"]);
    let line = wait_for_line(&d, refused, "cannot listen on port 100");
    assert!(line.contains("port reserved"), "{line}");

    // A process that the node did not launch gets one refusal line, and nothing more.
    let mut stranger = UnixStream::connect(d.dir.join("state/apps.sock")).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stranger.write_all(format!("dial {a_key} 5000\n").as_bytes());
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    // The end: end of file, or a reset when the node closed with the request unread.
    while let Ok(read @ 1..) = stranger.read(&mut buf) {
        answer.extend_from_slice(&buf[..read]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("error not allowed: only the apps that skywired launched"),
        "{answer}"
    );
    assert_eq!(answer.matches('\n').count(), 1, "{answer}");

    for node in [&a, &b, &d] {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
    // A node that stops takes its app socket along.
    assert!(d.terminate().success());
    assert!(
        !d.dir.join("state/apps.sock").exists(),
        "D left its app socket"
    );
}
