//! Repair as a user sees it: from the SIGKILL of the relay a route goes through, how long until
//! the route is ready again over another path, and how long until bytes flow again through a
//! SOCKS stream that was using it. Four release-built `skywired` on 127.0.0.1 with their
//! default liveness and two disjoint paths, A–B–D and A–C–D; A's SOCKS client exits at D with no
//! `path` key. A ticker behind D sends a timestamp every 2 ms through A's SOCKS port, the relay
//! on A's route is killed, and A's route is asked for on its control socket every 2 ms. Bytes
//! flow again when the first timestamp sent after the kill arrives (TCP delivers in order, so
//! whatever was lost with the relay has come again by then).
//!
//! `cargo bench --bench repair`. `SKYWIRE_BENCH_RUNS` sets the number of runs (default 7; a
//! value that is not a whole number stops the bench, naming the variable and its value); each
//! starts four fresh nodes, and the medians are reported. What it starts and the folders it
//! makes go at the end, on a panic, and on SIGINT, SIGTERM or SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;
// Its `with_signals` is for benches that start programs of their own; the daemons here read
// their signals through a signalfd whatever their mask.
#[allow(dead_code)]
#[path = "common/signals.rs"]
mod signals;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bench_common::env_number;
use common::control::ControlSocket;
use common::socks::{connect_request, greet, target_ip};
use common::{wait_until, Daemon, Launch, Neighbour, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signals::clean_up_on_signal;
use skywire_dataplane::{NodeKey, SecretKey};

/// Time between two ticks of the ticker.
const TICK: Duration = Duration::from_millis(2);
/// A tick on the wire: its number and when it was sent, in nanoseconds since [`epoch`].
const TICK_LEN: usize = 16;
/// How long anything in a run may take before the run fails.
const LIMIT: Duration = Duration::from_secs(30);

/// The daemons and folders of the run under way, for [`cleanup`] on a signal.
static STARTED: Mutex<Vec<(Pid, PathBuf)>> = Mutex::new(Vec::new());

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("repair: run it with `cargo bench --bench repair`");
        return;
    }
    let runs: usize = env_number("SKYWIRE_BENCH_RUNS", 7).max(1);
    clean_up_on_signal(cleanup);
    let (mut ready, mut flowing) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let outcome = measure();
        println!(
            "run {run}: relay {} killed; route ready over the other relay after {:.3} s, bytes flowing again after {:.3} s (longest silence {:.3} s)",
            outcome.relay,
            outcome.ready.as_secs_f64(),
            outcome.flowing.as_secs_f64(),
            outcome.silence.as_secs_f64()
        );
        ready.push(outcome.ready);
        flowing.push(outcome.flowing);
    }
    println!();
    println!(
        "repair after a relay's SIGKILL, default liveness, median of {runs} ({} cores):",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "  new route ready       {:.3} s",
        median(&mut ready).as_secs_f64()
    );
    println!(
        "  first byte again      {:.3} s (target < 3 s, the mark to beat < 1 s)",
        median(&mut flowing).as_secs_f64()
    );
}

/// What one run measured.
struct Outcome {
    relay: &'static str,
    ready: Duration,
    flowing: Duration,
    silence: Duration,
}

fn measure() -> Outcome {
    let dir = TempDir::new("repair-bench");
    let mut nodes = diamond(&dir);
    let (a, d) = (&nodes[0], &nodes[3]);
    wait_until("A's SOCKS route to D", LIMIT, || {
        a.ask(&["socks", "status"])["result"]["client"]["route"] == "ready"
    });
    let proxy: SocketAddr = a.ask(&["socks", "status"])["result"]["client"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ticker = Ticker::start();
    let mut stream = greet(proxy);
    assert_eq!(
        connect_request(&mut stream, &target_ip(ticker.address)),
        0,
        "the SOCKS connection to the ticker"
    );
    let arrivals = Arrivals::read(stream);
    wait_until("the ticks to flow", LIMIT, || arrivals.count() >= 200);

    let mut control = ControlSocket::connect(&a.socket);
    let d_key = d.key.to_string();
    let relay = route_relay(&mut control, &d_key).expect("A's route to D");
    let index = if relay == nodes[1].key.to_string() {
        1
    } else {
        2
    };
    let other = nodes[3 - index].key.to_string();
    let killed = Instant::now();
    nodes[index].kill();
    let mut ready = None;
    while ready.is_none() {
        if route_relay(&mut control, &d_key).as_deref() == Some(other.as_str()) {
            ready = Some(killed.elapsed());
        }
        assert!(killed.elapsed() < LIMIT, "no route over the other relay");
        std::thread::sleep(TICK);
    }
    let mut flowing = None;
    while flowing.is_none() {
        flowing = arrivals.first_sent_after(killed);
        assert!(killed.elapsed() < LIMIT, "the ticks did not flow again");
        std::thread::sleep(TICK);
    }
    let silence = arrivals.longest_silence();
    ticker.stop();
    drop(nodes);
    STARTED.lock().unwrap().clear();
    Outcome {
        relay: if index == 1 { "B" } else { "C" },
        ready: ready.unwrap(),
        flowing: flowing.unwrap(),
        silence,
    }
}

/// A, B, C and D, D first (the others call it), with the daemon's default liveness; A's SOCKS
/// client exits at D with no path, D serves A.
fn diamond(dir: &TempDir) -> Vec<Daemon> {
    let secrets: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let keys: Vec<NodeKey> = secrets.iter().map(SecretKey::public).collect();
    let called = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let start = |index: usize, name: &str, neighbours: &[Neighbour], extra: String| {
        let extra = format!("log_level: info\n{extra}");
        let launch = Launch {
            extra: &extra,
            liveness: "",
            ..Launch::default()
        };
        let daemon = Daemon::launch(dir, name, &secrets[index], neighbours, &launch);
        STARTED
            .lock()
            .unwrap()
            .push((daemon.pid(), dir.root().to_owned()));
        daemon
    };
    let d = start(
        3,
        "d",
        &[called(keys[1]), called(keys[2])],
        format!(
            "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
            keys[0]
        ),
    );
    let b = start(
        1,
        "b",
        &[called(keys[0]), d.as_neighbour(true)],
        String::new(),
    );
    let c = start(
        2,
        "c",
        &[called(keys[0]), d.as_neighbour(true)],
        String::new(),
    );
    let a = start(
        0,
        "a",
        &[b.as_neighbour(true), c.as_neighbour(true)],
        format!(
            "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n",
            keys[3]
        ),
    );
    vec![a, b, c, d]
}

/// The middle node of A's ready route to D, asked on A's control socket.
fn route_relay(control: &mut ControlSocket, d_key: &str) -> Option<String> {
    let reply = control.command("list_routes");
    reply["result"]["routes"]
        .as_array()?
        .iter()
        .find(|route| route["peer"] == d_key && route["ready"] == true)
        .and_then(|route| route["path"][1].as_str())
        .map(str::to_owned)
}

/// The instant the ticks' times count from, shared by the ticker and the reader.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A local server that sends a tick every [`TICK`] to the one connection it takes.
struct Ticker {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start() -> Ticker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut number = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let sent = epoch().elapsed().as_nanos() as u64;
                let mut tick = [0u8; TICK_LEN];
                tick[..8].copy_from_slice(&number.to_be_bytes());
                tick[8..].copy_from_slice(&sent.to_be_bytes());
                if stream.write_all(&tick).is_err() {
                    return;
                }
                number += 1;
                std::thread::sleep(TICK);
            }
        });
        Ticker { address, stop }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The ticks read from the SOCKS stream: when each was sent and when it arrived.
#[derive(Clone)]
struct Arrivals(Arc<Mutex<Vec<(Instant, Instant)>>>);

impl Arrivals {
    fn read(mut stream: TcpStream) -> Arrivals {
        let arrivals = Arrivals(Arc::default());
        let list = arrivals.0.clone();
        std::thread::spawn(move || {
            let mut tick = [0u8; TICK_LEN];
            while stream.read_exact(&mut tick).is_ok() {
                let arrived = Instant::now();
                let nanos = u64::from_be_bytes(tick[8..].try_into().unwrap());
                let sent = epoch() + Duration::from_nanos(nanos);
                list.lock().unwrap().push((sent, arrived));
            }
        });
        arrivals
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// How long after `killed` the first tick sent after it arrived.
    fn first_sent_after(&self, killed: Instant) -> Option<Duration> {
        let list = self.0.lock().unwrap();
        list.iter()
            .find(|(sent, _)| *sent >= killed)
            .map(|(_, arrived)| arrived.saturating_duration_since(killed))
    }

    /// The longest time between two arrivals.
    fn longest_silence(&self) -> Duration {
        let list = self.0.lock().unwrap();
        list.windows(2)
            .map(|pair| pair[1].1.saturating_duration_since(pair[0].1))
            .max()
            .unwrap_or_default()
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Kills the daemons of the run under way and removes its folder.
fn cleanup() {
    let started = STARTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (pid, dir) in started.iter() {
        let _ = kill(*pid, Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(dir);
    }
    std::mem::forget(started);
}
