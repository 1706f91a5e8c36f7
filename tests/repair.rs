//! Repair end to end, with the daemon's default liveness: four `skywired` processes on
//! 127.0.0.1 with two disjoint paths between A and D (A–B–D and A–C–D). A's SOCKS client exits
//! at D with no `path` key, so A's node chooses the path; a curl download of 256 MiB runs
//! through it, the relay on the path in use is killed with SIGKILL in the middle, and the
//! download completes intact over the other path. `find_route` and `list_nodes` through
//! `visctl` show the graph before and after. And a SOCKS client whose exit restarts (SIGKILL,
//! then the same config again) gets new connections through once more, with neither a
//! reconnect nor a reload on the client's side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::time::{Duration, Instant};

use common::curl::{download, finish};
use common::http::{self, HttpServer};
use common::machine::require;
use common::socks::{connect_request, greet, target_ip};
use common::{wait_until, Daemon, Launch, Neighbour, TempDir, TEST_LIVENESS};
use serde_json::Value;
use skywire_dataplane::{NodeKey, SecretKey};

/// A, B, C and D, indexed in that order.
const A: usize = 0;
const D: usize = 3;

/// Starts the four nodes (D first: the others call it), with the daemon's default liveness;
/// `extra(index, keys)` is appended to each config.
fn diamond(dir: &TempDir, extra: impl Fn(usize, &[NodeKey]) -> String) -> Vec<Daemon> {
    let secrets: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    let called = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let start = |index: usize, name: &str, neighbours: &[Neighbour]| {
        let extra = extra(index, &keys);
        let launch = Launch {
            extra: &extra,
            liveness: "",
            ..Launch::default()
        };
        Daemon::launch(dir, name, &secrets[index], neighbours, &launch)
    };
    let d = start(D, "d", &[called(keys[1]), called(keys[2])]);
    let b = start(1, "b", &[called(keys[A]), d.as_neighbour(true)]);
    let c = start(2, "c", &[called(keys[A]), d.as_neighbour(true)]);
    let a = start(A, "a", &[b.as_neighbour(true), c.as_neighbour(true)]);
    vec![a, b, c, d]
}

/// A's SOCKS client exits at D and names no path; D serves A.
fn socks_sections(index: usize, keys: &[NodeKey]) -> String {
    match index {
        A => format!(
            "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n",
            keys[D]
        ),
        D => format!(
            "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
            keys[A]
        ),
        _ => String::new(),
    }
}

fn keys_of(path: &Value) -> Vec<String> {
    path.as_array()
        .unwrap_or_else(|| panic!("not a path: {path}"))
        .iter()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect()
}

/// The path of A's route to D, once it is ready.
fn route_in_use(a: &Daemon, d: &Daemon) -> Option<Vec<String>> {
    let reply = a.ask(&["list_routes"]);
    reply["result"]["routes"]
        .as_array()?
        .iter()
        .find(|route| route["peer"] == d.key.to_string() && route["ready"] == true)
        .map(|route| keys_of(&route["path"]))
}

/// What `visctl find_route D` on A answers: the path and the path of the route in use.
fn find_route(a: &Daemon, d: &Daemon) -> (Vec<String>, Option<Vec<String>>, f64) {
    let reply = a.ask(&["find_route", &d.key.to_string()]);
    let result = &reply["result"];
    let in_use = (!result["route_in_use"].is_null()).then(|| keys_of(&result["route_in_use"]));
    (
        keys_of(&result["path"]),
        in_use,
        result["cost_ms"].as_f64().unwrap(),
    )
}

/// The links of `list_nodes` on A, each as advertised by one end: (from, to, cost).
fn advertised_links(a: &Daemon) -> Vec<(String, String, Option<f64>)> {
    let reply = a.ask(&["list_nodes"]);
    let mut links = Vec::new();
    for node in reply["result"]["nodes"].as_array().unwrap() {
        let from = node["key"].as_str().unwrap().to_owned();
        for link in node["links"].as_array().unwrap() {
            let to = link["neighbour"].as_str().unwrap().to_owned();
            links.push((from.clone(), to, link["cost_ms"].as_f64()));
        }
    }
    links
}

fn text(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.visctl(args);
    assert!(output.status.success(), "visctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_socks_download_over_an_automatic_path_survives_the_sigkill_of_its_relay() {
    const TEST: &str = "a_socks_download_over_an_automatic_path_survives_the_sigkill_of_its_relay";
    if !require("curl", TEST) {
        return;
    }
    let dir = TempDir::new("repair-socks");
    let http = HttpServer::start();
    let mut nodes = diamond(&dir, socks_sections);
    let keys: Vec<String> = nodes.iter().map(|node| node.key.to_string()).collect();
    let key = |index: usize| keys[index].clone();
    let (a, d) = (&nodes[A], &nodes[D]);

    // Before: every node knows the whole graph, each link costed from both ends, and A's
    // route to D follows the path find_route shows.
    wait_until(
        "A's SOCKS route to D and the whole graph",
        Duration::from_secs(30),
        || {
            let costed = advertised_links(a)
                .iter()
                .filter(|(_, _, cost)| cost.is_some())
                .count();
            costed == 8 && route_in_use(a, d).is_some()
        },
    );
    // Both paths cost about the same here: the route keeps the one chosen when it was built,
    // whichever find_route prefers now.
    let (path, in_use, cost) = find_route(a, d);
    let relays = [key(1), key(2)];
    assert!(path.len() == 3 && relays.contains(&path[1]), "{path:?}");
    assert!(cost > 0.0, "{cost}");
    let in_use = in_use.expect("find_route shows the route in use");
    assert!(
        in_use.len() == 3 && relays.contains(&in_use[1]),
        "{in_use:?}"
    );
    let relay = (1..3).find(|index| key(*index) == in_use[1]).unwrap();
    let other = 3 - relay;
    let shown = text(a, &["find_route", &key(D)]);
    assert!(
        shown.contains(&format!("path to {}: 2 hops", key(D))),
        "{shown}"
    );
    assert!(shown.contains("route in use: over "), "{shown}");
    println!("A's find_route before the kill:\n{shown}");
    let shown = text(a, &["list_nodes"]);
    assert!(shown.starts_with("nodes: 4\n"), "{shown}");
    assert!(
        shown.contains(&format!("{} (this node)", key(A))),
        "{shown}"
    );
    assert!(shown.contains("\nlinks: 4 "), "{shown}");
    println!("A before the kill:\n{shown}");

    // A 256 MiB download through A's SOCKS port; the relay in use dies a quarter of the way.
    let size: u64 = 256 << 20;
    let expected = std::thread::spawn(move || http::content_sha256(7, size));
    let proxy = a.ask(&["socks", "status"])["result"]["client"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let out = dir.path("big.bin");
    let curl = download(proxy, &http.url(&format!("/bytes/{size}/7")), &out);
    wait_until(
        "a quarter of the download",
        Duration::from_secs(120),
        || std::fs::metadata(&out).is_ok_and(|meta| meta.len() >= size / 4),
    );
    let killed = Instant::now();
    nodes[relay].kill();
    let (a, d) = (&nodes[A], &nodes[D]);
    wait_until(
        "A's route over the other relay",
        Duration::from_secs(30),
        || route_in_use(a, d).is_some_and(|path| path[1] == key(other)),
    );
    println!("route over the other relay after {:?}", killed.elapsed());
    finish(curl, "the 256 MiB download across the kill");
    let (sha, len) = http::file_sha256(&out);
    assert_eq!(len, size);
    assert!(sha == expected.join().unwrap(), "the download differs");

    // After: find_route shows the other path, which the route follows; A and D no longer
    // advertise their links to the dead relay, so those links have no cost.
    let (path, in_use, _) = find_route(a, d);
    assert_eq!(path, [key(A), key(other), key(D)]);
    assert_eq!(in_use, Some(path));
    wait_until(
        "the dead relay's links without a cost",
        Duration::from_secs(10),
        || {
            advertised_links(a)
                .iter()
                .filter(|(from, to, _)| *from == key(relay) || *to == key(relay))
                .all(|(_, _, cost)| cost.is_none())
        },
    );
    let links = advertised_links(a);
    assert!(
        !links
            .iter()
            .any(|(from, to, _)| *from == key(A) && *to == key(relay)),
        "A no longer advertises its link to the dead relay: {links:?}"
    );
    println!(
        "A's find_route after the kill:\n{}",
        text(a, &["find_route", &key(D)])
    );
    println!("A after the kill:\n{}", text(a, &["list_nodes"]));
    let client = a.ask(&["socks", "status"])["result"]["client"].clone();
    assert_eq!(client["failed"], 0, "{client}");
    assert_eq!(client["route"], "ready", "{client}");
    assert!(
        !a.log().contains("route to the exit"),
        "the SOCKS client never saw its route go down:\n{}",
        a.log()
    );
}

/// Fetches `/bytes/5000/7` through `proxy`: whether the exit connected and the content came
/// back whole (a reply other than `00` is a failure; a broken stream fails the test).
fn fetch_through(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> bool {
    let mut stream = greet(proxy);
    if connect_request(&mut stream, &target_ip(target)) != 0 {
        return false;
    }
    http::http_get(&mut stream, "/bytes/5000/7");
    http::read_head(&mut stream);
    http::read_content(&mut stream, 7, 5000);
    true
}

#[test]
fn a_socks_client_gets_through_again_once_its_exit_restarted() {
    let dir = TempDir::new("repair-restart");
    let http = HttpServer::start();
    // A–B–C, A's SOCKS client exiting at C with no `path` key. A and C call B; B's links are
    // slow to die (the tests' liveness: 5 s of silence), so B never finds C gone: the restarted
    // C itself must tell that it forgot the route.
    let secrets: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    let called = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let start = |index: usize, name: &str, neighbours: &[Neighbour], extra: &str| {
        let launch = Launch {
            extra,
            liveness: TEST_LIVENESS,
            ..Launch::default()
        };
        Daemon::launch(&dir, name, &secrets[index], neighbours, &launch)
    };
    let b = start(1, "b", &[called(keys[0]), called(keys[2])], "");
    let server = format!(
        "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
        keys[0]
    );
    let mut c = start(2, "c", &[b.as_neighbour(true)], &server);
    let client = format!(
        "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n",
        keys[2]
    );
    let a = start(0, "a", &[b.as_neighbour(true)], &client);
    let client_status = || a.ask(&["socks", "status"])["result"]["client"].clone();
    wait_until("A's route to the exit", Duration::from_secs(30), || {
        client_status()["route"] == "ready"
    });
    let proxy = client_status()["listen"].as_str().unwrap().parse().unwrap();
    assert!(
        fetch_through(proxy, http.address),
        "no fetch before the restart"
    );

    let killed = Instant::now();
    c.restart();
    println!("C answered again {:?} after the SIGKILL", killed.elapsed());
    let restarted = Instant::now();
    wait_until(
        "a fetch through A's SOCKS port after C restarted",
        Duration::from_secs(30),
        || fetch_through(proxy, http.address),
    );
    println!(
        "a new connection got through {:?} after C was back",
        restarted.elapsed()
    );
    // A noticed that C forgot the route and rebuilt it; B never found C silent.
    let log = a.log();
    assert!(
        log.contains("no longer knows the route (it restarted)): repairing"),
        "{log}"
    );
    let log = b.log();
    assert!(!log.contains("is dead"), "{log}");
    let status = client_status();
    assert_eq!(status["route"], "ready", "{status}");
    assert_eq!(status["listen"], proxy.to_string(), "{status}");
}
