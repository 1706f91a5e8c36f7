//! Links do not flap on a loaded machine. Three `skywired` on 127.0.0.1 (A–B–C) with the
//! daemon's default liveness (a probe every 250 ms, dead after 750 ms of silence), while four
//! busy-loop processes per core compete for the CPU with the daemons and two curl downloads at a
//! time run through A's SOCKS port to the exit C, for 45 s: no link may be declared dead, and
//! every download must complete.
//!
//! Too timing-dependent for the default test run (it measures the machine as much as the
//! code): `.ci/run` runs it alone, with a time budget of its own:
//! `cargo test --test load -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::curl::{download, finish};
use common::http::HttpServer;
use common::machine::require;
use common::{wait_until, Daemon, Guard, Launch, Neighbour, TempDir};
use skywire_dataplane::{NodeKey, SecretKey};

/// Busy-loop processes per core.
const BUSY_PER_CORE: usize = 4;
/// How long the load lasts.
const LOADED: Duration = Duration::from_secs(45);
/// Downloads running at once, each of this size.
const DOWNLOADS: usize = 2;
const DOWNLOAD_SIZE: u64 = 64 << 20;

#[test]
#[ignore = "timing-dependent: .ci/run runs it alone (cargo test --test load -- --ignored)"]
fn links_do_not_flap_on_a_loaded_machine() {
    if !require("curl", "links_do_not_flap_on_a_loaded_machine") {
        return;
    }
    let dir = TempDir::new("load");
    let http = HttpServer::start();
    let secrets: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    let start = |index: usize, name: &str, neighbours: &[Neighbour], extra: String| {
        let launch = Launch {
            extra: &format!("log_level: info\n{extra}"),
            liveness: "",
            ..Launch::default()
        };
        Daemon::launch(&dir, name, &secrets[index], neighbours, &launch)
    };
    let called = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let c = start(
        2,
        "c",
        &[called(keys[1])],
        format!(
            "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
            keys[0]
        ),
    );
    let b = start(
        1,
        "b",
        &[called(keys[0]), c.as_neighbour(true)],
        String::new(),
    );
    let a = start(
        0,
        "a",
        &[b.as_neighbour(true)],
        format!(
            "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n",
            keys[2]
        ),
    );
    wait_until("A's SOCKS route to C", Duration::from_secs(30), || {
        a.ask(&["socks", "status"])["result"]["client"]["route"] == "ready"
    });
    let proxy = a.ask(&["socks", "status"])["result"]["client"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let busy: Vec<Guard> = (0..BUSY_PER_CORE * cores)
        .map(|_| {
            Guard(
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let url = http.url(&format!("/bytes/{DOWNLOAD_SIZE}/3"));
    let started = Instant::now();
    let mut running: Vec<(Guard, std::path::PathBuf)> = Vec::new();
    let mut done = 0;
    let mut next = 0;
    while started.elapsed() < LOADED || !running.is_empty() {
        while started.elapsed() < LOADED && running.len() < DOWNLOADS {
            let out = dir.path(&format!("download{next}.bin"));
            running.push((download(proxy, &url, &out), out));
            next += 1;
        }
        let mut index = 0;
        while index < running.len() {
            if let Some(status) = running[index].0 .0.try_wait().unwrap() {
                let (curl, out) = running.remove(index);
                assert!(
                    status.success(),
                    "a download failed on the loaded machine; what the nodes warned of:\n{}",
                    warnings(&[&a, &b, &c])
                );
                finish(curl, &format!("a download on the loaded machine ({out:?})"));
                assert_eq!(std::fs::metadata(&out).unwrap().len(), DOWNLOAD_SIZE);
                std::fs::remove_file(&out).unwrap();
                done += 1;
            } else {
                index += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(busy);
    println!(
        "{done} downloads of {} MiB in {:.0?} with {} busy loops on {cores} cores",
        DOWNLOAD_SIZE >> 20,
        started.elapsed(),
        BUSY_PER_CORE * cores
    );
    assert!(done >= DOWNLOADS, "the load left no time for downloads");

    for node in [&a, &b, &c] {
        let log = node.log();
        let died: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("is dead"))
            .collect();
        assert!(
            died.is_empty(),
            "{}: links declared dead under load:\n{}",
            node.name,
            died.join("\n")
        );
        let transports = node.ask(&["list_transports"]);
        for transport in transports["result"]["transports"].as_array().unwrap() {
            assert_eq!(transport["link"], "up", "{}: {transport}", node.name);
        }
    }
    let client = a.ask(&["socks", "status"])["result"]["client"].clone();
    assert_eq!(client["failed"], 0, "{client}");
}

/// The warnings and errors the nodes logged, each line under its node's name.
fn warnings(nodes: &[&Daemon]) -> String {
    let mut text = String::new();
    for node in nodes {
        for line in node.log().lines() {
            if line.contains("WARN") || line.contains("ERROR") {
                text.push_str(&format!("{}: {line}\n", node.name));
            }
        }
    }
    text
}
