//! The soak: five `skywired` on 127.0.0.1 with the daemon's default liveness and no `path` key
//! anywhere (the nodes find their paths). A reaches D (its SOCKS exit, and a messenger) and E
//! (a messenger) over two relays in parallel, B and C, each linked to A, D and E:
//!
//! ```text
//!       ┌─ B ─┐
//!   A ──┤     ├── D, E
//!       └─ C ─┘
//! ```
//!
//! For [`LOAD`], all at once: curl downloads through A's SOCKS port to a local HTTP server
//! behind D, [`DOWNLOADS_AT_ONCE`] at a time; `visctl msg send` from A to D and E in turn;
//! and every [`KILL_EVERY`] a relay, B and C in turn, killed with SIGKILL and restarted (same
//! config, same key, its state folder kept) once its neighbours found it dead. One relay is
//! always up, so there is always a path. A download that fails is started again (and
//! counted); every one that completes must match its SHA-256. Every message that `msg send`
//! acknowledged must be in its recipient's inbox, once.
//!
//! Each daemon's resident memory (VmRSS) and open descriptors (/proc/PID/fd) are taken after a
//! warm-up (the same load for [`WARM_UP`]). Once the load stops they must come back within
//! [`RSS_MARGIN_PERCENT`] % plus [`RSS_MARGIN_BYTES`], and [`FD_MARGIN`] descriptors, of those
//! figures, waited for up to [`SETTLE_LIMIT`] (a relay's process then is held to the figures
//! of its process at the end of the warm-up). At the end every node stops with SIGTERM and
//! nothing of theirs is left: no process, no control or app socket, no Unix socket under the
//! test's folder, no UDP or signal-server port. The test makes no namespace.
//!
//! It takes about two minutes, so it is `#[ignore]`d in the default run and `.ci/run` runs
//! it alone: `cargo test --test soak -- --ignored`. It prints its figures to standard error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::curl::download_within;
use common::http::{self, HttpServer};
use common::machine::require;
use common::{wait_until, Daemon, Guard, Launch, Neighbour, TempDir};
use skywire_dataplane::{NodeKey, SecretKey};

/// How long downloads, messages and relay kills run: first to warm up, then to measure.
const WARM_UP: Duration = Duration::from_secs(15);
const LOAD: Duration = Duration::from_secs(90);
/// A relay is killed this often (B and C in turn).
const KILL_EVERY: Duration = Duration::from_secs(5);
/// A message is sent this often (to D and E in turn).
const MESSAGE_EVERY: Duration = Duration::from_millis(200);
/// Downloads running at once, each of this size.
const DOWNLOADS_AT_ONCE: usize = 2;
const DOWNLOAD_SIZE: u64 = 16 << 20;
/// How long one download may take before curl gives up on it (and it is started again).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(30);
/// What the load must at least get through.
const MIN_DOWNLOADS: usize = 20;
const MIN_MESSAGES: usize = 40;
/// How far a daemon's resident memory may stay above its figure after the warm-up: this share
/// of it, plus this much. Under this load a daemon holds up to about 5 MiB more than when idle
/// (measured here), and gives most of it back once idle, though not always at once: the margin
/// covers that, so what stays above it grew with the load.
const RSS_MARGIN_PERCENT: u64 = 20;
const RSS_MARGIN_BYTES: u64 = 6 << 20;
/// How many more open descriptors a daemon may have than after the warm-up.
const FD_MARGIN: usize = 2;
/// How long the figures have to come back once the load stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The nodes, indexed in this order.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The links (each both ways).
const LINKS: [(usize, usize); 6] = [(A, B), (A, C), (B, D), (C, D), (B, E), (C, E)];

/// The five nodes, and how to start (or restart) each.
struct Mesh<'a> {
    dir: &'a TempDir,
    secrets: Vec<SecretKey>,
    keys: Vec<NodeKey>,
    nodes: Vec<Daemon>,
}

impl Mesh<'_> {
    /// Starts D, E and A, which know their relays by key alone, then the relays, which call
    /// them; returns once every link is up and A knows them all.
    fn start(dir: &TempDir) -> Mesh<'_> {
        let secrets: Vec<SecretKey> = (0..5).map(|_| SecretKey::generate()).collect();
        let keys = secrets.iter().map(SecretKey::public).collect();
        let mut mesh = Mesh {
            dir,
            secrets,
            keys,
            nodes: Vec::new(),
        };
        let mut endpoints = [None; 5];
        let mut nodes: Vec<Option<Daemon>> = (0..5).map(|_| None).collect();
        for index in [D, E, A, B, C] {
            let node = mesh.launch(index, &endpoints);
            endpoints[index] = Some(node.endpoint());
            nodes[index] = Some(node);
        }
        mesh.nodes = nodes.into_iter().map(Option::unwrap).collect();
        mesh.wait_until_whole(Duration::from_secs(30));
        mesh
    }

    /// Starts node `index`: a relay calls its neighbours at their `endpoints`; the others
    /// wait for their relays to call.
    fn launch(&self, index: usize, endpoints: &[Option<SocketAddr>]) -> Daemon {
        let neighbours: Vec<Neighbour> = neighbours_of(index)
            .map(|other| Neighbour {
                key: self.keys[other],
                endpoint: endpoints[other].filter(|_| is_relay(index)),
            })
            .collect();
        let extra = self.sections(index);
        let launch = Launch {
            extra: &extra,
            liveness: "",
            ..Launch::default()
        };
        Daemon::launch(
            self.dir,
            NAMES[index],
            &self.secrets[index],
            &neighbours,
            &launch,
        )
    }

    /// A's SOCKS client exits at D; A sends messages, D and E take many a minute from it.
    fn sections(&self, index: usize) -> String {
        let recipient = format!(
            "messenger:\n  allow: [{}]\n  per_sender_per_minute: 6000\n",
            self.keys[A]
        );
        let body = match index {
            A => format!(
                "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\nmessenger: {{}}\n",
                self.keys[D]
            ),
            D => format!(
                "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n{recipient}",
                self.keys[A]
            ),
            E => recipient,
            _ => String::new(),
        };
        format!("log_level: info\n{body}")
    }

    /// Kills relay `index` with SIGKILL, waits until its neighbours find it dead, and starts
    /// it again as it was; returns whether A's route to D went through it.
    fn kill_and_restart(&mut self, index: usize) -> bool {
        let relay = self.keys[index].to_string();
        let on_route =
            route_to(&self.nodes[A], &self.keys[D]).is_some_and(|path| path.contains(&relay));
        self.nodes[index].kill();
        for other in neighbours_of(index) {
            let node = &self.nodes[other];
            let links = neighbours_of(other).count() - 1;
            wait_until(
                &format!("{} to find {} dead", node.name, NAMES[index]),
                Duration::from_secs(10),
                || node.ask(&["status"])["result"]["links_up"] == links,
            );
        }
        let endpoints: Vec<Option<SocketAddr>> = self
            .nodes
            .iter()
            .map(|node| Some(node.endpoint()))
            .collect();
        self.nodes[index] = self.launch(index, &endpoints);
        on_route
    }

    /// Waits until every link is up and A has both ends' adverts of each, with a cost.
    fn wait_until_whole(&self, limit: Duration) {
        wait_until("every link up, and known to A", limit, || {
            let links_up = (0..5).all(|index| {
                self.nodes[index].ask(&["status"])["result"]["links_up"]
                    == neighbours_of(index).count()
            });
            links_up && costed_links(&self.nodes[A]) == 2 * LINKS.len()
        });
    }
}

fn is_relay(index: usize) -> bool {
    index == B || index == C
}

fn neighbours_of(index: usize) -> impl Iterator<Item = usize> {
    LINKS.iter().filter_map(move |&(one, other)| {
        if one == index {
            Some(other)
        } else if other == index {
            Some(one)
        } else {
            None
        }
    })
}

/// The path of `node`'s ready route to `peer`, if it has one.
fn route_to(node: &Daemon, peer: &NodeKey) -> Option<Vec<String>> {
    let reply = node.ask(&["list_routes"]);
    let route = reply["result"]["routes"]
        .as_array()?
        .iter()
        .find(|route| route["peer"] == peer.to_string() && route["ready"] == true)?;
    let path = route["path"].as_array()?;
    Some(
        path.iter()
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect(),
    )
}

/// How many links `list_nodes` on `node` shows with a cost, counted at each end that
/// advertises it.
fn costed_links(node: &Daemon) -> usize {
    let reply = node.ask(&["list_nodes"]);
    reply["result"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|node| node["links"].as_array().unwrap())
        .filter(|link| link["cost_ms"].as_f64().is_some())
        .count()
}

/// Sets its flag when dropped, a panic included, so that the other threads of the load stop.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the downloads got through.
#[derive(Debug, Default)]
struct Downloads {
    /// Downloads that completed, each with a matching SHA-256.
    completed: usize,
    /// Attempts that failed and were started again, and what curl said of each.
    retries: Vec<String>,
}

/// A curl download under way.
struct Running {
    curl: Guard,
    out: PathBuf,
    seed: u64,
}

impl Running {
    fn start(
        proxy: SocketAddr,
        http: &HttpServer,
        dir: &Path,
        seed: u64,
        attempt: usize,
    ) -> Running {
        let out = dir.join(format!("download-{seed}-{attempt}.bin"));
        let url = http.url(&format!("/bytes/{DOWNLOAD_SIZE}/{seed}"));
        let curl = download_within(proxy, &url, &out, DOWNLOAD_LIMIT);
        Running { curl, out, seed }
    }
}

/// Runs downloads through `proxy`, [`DOWNLOADS_AT_ONCE`] at a time, starting new ones while
/// `more()` says so, and each that fails again until it completes; checks the SHA-256
/// of every one that completes.
fn download(
    proxy: SocketAddr,
    http: &HttpServer,
    dir: &Path,
    more: impl Fn() -> bool,
) -> Downloads {
    /// Contents cycle through this many seeds, so that each SHA-256 is computed once.
    const SEEDS: u64 = 8;
    /// More failed attempts than this end the test: the mesh is not healing.
    const MAX_RETRIES: usize = 30;
    let mut expected = HashMap::new();
    let mut figures = Downloads::default();
    let mut running: Vec<Running> = Vec::new();
    let mut started = 0;
    let mut attempts = 0;
    loop {
        while running.len() < DOWNLOADS_AT_ONCE && more() {
            running.push(Running::start(
                proxy,
                http,
                dir,
                started as u64 % SEEDS,
                attempts,
            ));
            started += 1;
            attempts += 1;
        }
        if running.is_empty() {
            return figures;
        }
        let mut index = 0;
        while index < running.len() {
            let Some(status) = running[index].curl.0.try_wait().unwrap() else {
                index += 1;
                continue;
            };
            let mut done = running.swap_remove(index);
            if status.success() {
                let sha = *expected
                    .entry(done.seed)
                    .or_insert_with(|| http::content_sha256(done.seed, DOWNLOAD_SIZE));
                assert_eq!(
                    http::file_sha256(&done.out),
                    (sha, DOWNLOAD_SIZE),
                    "download {} differs",
                    done.out.display()
                );
                figures.completed += 1;
            } else {
                let mut said = String::new();
                if let Some(pipe) = done.curl.0.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(pipe, &mut said);
                }
                figures
                    .retries
                    .push(format!("curl {status}: {}", said.trim()));
                assert!(
                    figures.retries.len() <= MAX_RETRIES,
                    "downloads keep failing: {:#?}",
                    figures.retries
                );
                running.push(Running::start(proxy, http, dir, done.seed, attempts));
                attempts += 1;
            }
            let _ = fs::remove_file(&done.out);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the messages got through.
#[derive(Debug, Default)]
struct Messages {
    /// (recipient, text) of each message that `msg send` acknowledged.
    acknowledged: Vec<(usize, String)>,
    /// What `msg send` said of each message it could not deliver.
    failures: Vec<String>,
}

impl Messages {
    /// How many were sent, acknowledged or not.
    fn sent(&self) -> usize {
        self.acknowledged.len() + self.failures.len()
    }
}

/// Sends messages from the node of `socket` to D and E in turn, numbered from `first`, while
/// `more()` says so.
fn send_messages(
    socket: &Path,
    keys: &[NodeKey],
    first: usize,
    more: impl Fn() -> bool,
) -> Messages {
    let mut figures = Messages::default();
    let mut number = first;
    while more() {
        let next = Instant::now() + MESSAGE_EVERY;
        let to = if number % 2 == 0 { D } else { E };
        let text = format!("soak message {number} to {}", NAMES[to]);
        let output = Command::new(common::VISCTL)
            .arg("--socket")
            .arg(socket)
            .args(["msg", "send", &keys[to].to_string(), &text])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if output.status.success() {
            figures.acknowledged.push((to, text));
        } else {
            figures
                .failures
                .push(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        number += 1;
        // The pace of the messages.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    figures
}

/// The texts in `node`'s inbox, all of them.
fn inbox(node: &Daemon) -> Vec<String> {
    let reply = node.ask(&["msg", "inbox"]);
    let texts: Vec<String> = reply["result"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no messages in {reply}", node.name))
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reply["result"]["total"],
        texts.len(),
        "{}: some are not listed",
        node.name
    );
    texts
}

/// A daemon's resident memory and open descriptors.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss: u64,
    fds: usize,
}

impl Usage {
    fn of(node: &Daemon) -> Usage {
        Usage {
            rss: node.rss_bytes(),
            fds: node.open_fds(),
        }
    }

    /// Whether this is back within the margins of `before`.
    fn within(self, before: Usage) -> bool {
        self.rss <= before.rss + before.rss * RSS_MARGIN_PERCENT / 100 + RSS_MARGIN_BYTES
            && self.fds <= before.fds + FD_MARGIN
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB, {} fds",
            self.rss as f64 / f64::from(1 << 20),
            self.fds
        )
    }
}

/// What one stretch of load got through.
struct Round {
    took: Duration,
    kills: usize,
    /// Kills of the relay that A's route to D went through.
    kills_on_route: usize,
    downloads: Downloads,
    messages: Messages,
}

impl Round {
    /// Runs downloads through `proxy` and messages from A (numbered from `first_message`)
    /// for `duration`, while relays B and C in turn are killed and restarted every
    /// [`KILL_EVERY`]; returns once the downloads under way completed.
    fn run(
        mesh: &mut Mesh<'_>,
        http: &HttpServer,
        proxy: SocketAddr,
        duration: Duration,
        first_message: usize,
    ) -> Round {
        let stop = AtomicBool::new(false);
        let began = Instant::now();
        let keys = mesh.keys.clone();
        let a_socket = mesh.nodes[A].socket.clone();
        let dir = mesh.dir.root().to_owned();
        std::thread::scope(|scope| {
            let messages = scope.spawn(|| {
                let _stop = StopOnDrop(&stop);
                send_messages(&a_socket, &keys, first_message, || {
                    !stop.load(Ordering::SeqCst)
                })
            });
            let downloads = scope.spawn(|| {
                let _stop = StopOnDrop(&stop);
                download(proxy, http, &dir, || !stop.load(Ordering::SeqCst))
            });
            let _stop = StopOnDrop(&stop);
            let mut kills = 0;
            let mut kills_on_route = 0;
            let mut relay = B;
            while began.elapsed() < duration && !stop.load(Ordering::SeqCst) {
                let next = Instant::now() + KILL_EVERY;
                kills_on_route += usize::from(mesh.kill_and_restart(relay));
                kills += 1;
                mesh.wait_until_whole(Duration::from_secs(30));
                relay = if relay == B { C } else { B };
                // The pace of the kills.
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            stop.store(true, Ordering::SeqCst);
            let downloads = downloads.join().unwrap();
            let messages = messages.join().unwrap();
            Round {
                took: began.elapsed(),
                kills,
                kills_on_route,
                downloads,
                messages,
            }
        })
    }

    /// Prints the figures to standard error, each retry and undelivered message on a line.
    fn report(&self, name: &str) {
        eprintln!("{name}: {self}");
        for retry in &self.downloads.retries {
            eprintln!("  retried: {retry}");
        }
        for failure in &self.messages.failures {
            eprintln!("  not delivered: {failure}");
        }
    }
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1?}, {} relays killed and restarted ({} on A's route to D); {} downloads of \
             {} MiB completed with matching SHA-256, {} retried; {} messages acknowledged, \
             {} not",
            self.took,
            self.kills,
            self.kills_on_route,
            self.downloads.completed,
            DOWNLOAD_SIZE >> 20,
            self.downloads.retries.len(),
            self.messages.acknowledged.len(),
            self.messages.failures.len()
        )
    }
}

#[test]
#[ignore = "takes minutes: .ci/run runs it alone (cargo test --test soak -- --ignored)"]
fn downloads_and_messages_survive_relays_killed_and_nothing_leaks() {
    if !require(
        "curl",
        "downloads_and_messages_survive_relays_killed_and_nothing_leaks",
    ) {
        return;
    }
    let began = Instant::now();
    let dir = TempDir::new("soak");
    let http = HttpServer::start();
    let mut mesh = Mesh::start(&dir);
    wait_until("A's SOCKS route to D", Duration::from_secs(30), || {
        mesh.nodes[A].ask(&["socks", "status"])["result"]["client"]["route"] == "ready"
    });
    let proxy: SocketAddr = mesh.nodes[A].ask(&["socks", "status"])["result"]["client"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("five nodes up after {:.1?}", began.elapsed());

    // The warm-up: the load for a short while, then each daemon's figures.
    let warm_up = Round::run(&mut mesh, &http, proxy, WARM_UP, 0);
    warm_up.report("warm-up");
    mesh.wait_until_whole(Duration::from_secs(30));
    let before: Vec<Usage> = mesh.nodes.iter().map(Usage::of).collect();

    let load = Round::run(&mut mesh, &http, proxy, LOAD, warm_up.messages.sent());
    load.report("load");
    assert!(
        load.kills_on_route > 0,
        "no relay was killed under A's route to D"
    );
    assert!(
        load.downloads.completed >= MIN_DOWNLOADS,
        "only {} downloads completed",
        load.downloads.completed
    );
    assert!(
        load.messages.acknowledged.len() >= MIN_MESSAGES,
        "only {} messages were acknowledged",
        load.messages.acknowledged.len()
    );

    // Every acknowledged message is in its recipient's inbox, once.
    mesh.wait_until_whole(Duration::from_secs(30));
    let acknowledged: Vec<&(usize, String)> = warm_up
        .messages
        .acknowledged
        .iter()
        .chain(&load.messages.acknowledged)
        .collect();
    for recipient in [D, E] {
        let inbox = inbox(&mesh.nodes[recipient]);
        for (_, text) in acknowledged.iter().filter(|(to, _)| *to == recipient) {
            let copies = inbox.iter().filter(|held| *held == text).count();
            assert_eq!(copies, 1, "{text:?} in {}'s inbox", NAMES[recipient]);
        }
    }

    // Each daemon's memory and descriptors come back within the margins.
    for (node, before) in mesh.nodes.iter().zip(&before) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let after = loop {
            let now = Usage::of(node);
            if now.within(*before) || Instant::now() > deadline {
                break now;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!(
            "{}: {before} after the warm-up, {after} after the load",
            node.name
        );
        assert!(
            after.within(*before),
            "{}: {after} after the load and {SETTLE_LIMIT:?} to settle, against {before} \
             after the warm-up (margins: {RSS_MARGIN_PERCENT} % + {} MiB, {FD_MARGIN} fds)",
            node.name,
            RSS_MARGIN_BYTES >> 20
        );
    }

    // Nothing is left once they stop.
    let ports: Vec<(u16, u16)> = mesh
        .nodes
        .iter()
        .map(|node| {
            let status = node.ask(&["status"]);
            let signal: SocketAddr = status["result"]["signal_server"]["address"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (node.port, signal.port())
        })
        .collect();
    for node in &mut mesh.nodes {
        assert!(app_socket(node).exists(), "{} has no app socket", node.name);
        let status = node.terminate();
        assert!(status.success(), "{} stopped with {status}", node.name);
    }
    assert_nothing_left(dir.root(), &mesh.nodes, &ports);
    eprintln!("done after {:.1?}", began.elapsed());
}

/// Fails unless nothing of the stopped `nodes` is left: no process that names `root` on its
/// command line (the daemons, and the curl and visctl the test ran), no control or app
/// socket, no Unix socket under `root`, and none of the UDP and signal-server `ports`.
fn assert_nothing_left(root: &Path, nodes: &[Daemon], ports: &[(u16, u16)]) {
    let root_text = root.to_str().unwrap();
    for entry in fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(root_text),
            "process {:?} is left: {cmdline}",
            entry.file_name()
        );
    }
    for node in nodes {
        for socket in [node.socket.clone(), app_socket(node)] {
            assert!(
                !socket.exists(),
                "{}'s socket {} is left",
                node.name,
                socket.display()
            );
        }
    }
    let unix = fs::read_to_string("/proc/net/unix").unwrap();
    let left: Vec<&str> = unix
        .lines()
        .filter(|line| line.contains(root_text))
        .collect();
    assert!(left.is_empty(), "Unix sockets are left: {left:#?}");
    for (udp, signal) in ports {
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            assert!(
                !bound(table, *udp),
                "UDP port {udp} is still bound ({table})"
            );
        }
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            assert!(
                !bound(table, *signal),
                "TCP port {signal} is still bound ({table})"
            );
        }
    }
}

/// Where `node`'s app socket is: `apps.sock` in its state folder.
fn app_socket(node: &Daemon) -> PathBuf {
    node.dir.join("state/apps.sock")
}

/// Whether a socket in `table` (a /proc/net table) has `port` as its local port.
fn bound(table: &str, port: u16) -> bool {
    let local = format!(":{port:04X}");
    fs::read_to_string(table)
        .unwrap()
        .lines()
        .skip(1)
        .any(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|address| address.ends_with(&local))
        })
}
