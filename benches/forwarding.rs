//! The forwarding-throughput benchmark: how fast skywire's VPN carries TCP through network
//! namespaces, one hop (A–C) and two (A→B→C, B only relaying), against two userspace
//! WireGuards over the same hops — wireguard-go, and boringtun-cli with one thread — and plain
//! kernel routing as the ceiling, all in one run, with `skywired` processes (one per
//! namespace) as the nodes. Needs root, iproute2, iperf3, wireguard-go and wg
//! (wireguard-tools); without boringtun-cli (`cargo install boringtun-cli --locked`) its rows
//! are skipped. Prints a table of Gbit/s and the ratios, and the ceiling the machine leaves.
//!
//! Everything it makes (namespaces `skybench-PID-…`, processes, key files, control sockets)
//! goes at the end, on SIGINT/SIGTERM, and on a panic; namespaces left by a run that was killed
//! outright are removed at the next start. `SKYWIRE_BENCH_SECS` sets each measurement's length
//! (default 5), `SKYWIRE_BENCH_ROUNDS` how many times every scenario is measured (default 3;
//! the table gives medians); `SKYWIRE_BENCH_ONLY=sky1,wg1` runs only the scenarios named, once
//! (kernel, wg1, wg2, bt1, bt2, sky1, sky2). A number setting that is not a whole number stops
//! the bench before it makes anything, naming the variable and its value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/median.rs"]
mod median;
#[path = "common/signals.rs"]
mod signals;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bench_common::env_number;
use common::machine::{installed, output_with_input, require, Machine};
use common::netns::{can_make_namespaces, ip};
use common::{visctl_json, SKYWIRED};
use median::median;
use signals::{clean_up_on_signal, with_signals};
use skywire_dataplane::{NodeKey, SecretKey};

const PREFIX: &str = "skybench-";
const HOST: &str = "10.99.0.1";
const IPERF_PORT: &str = "5201";

/// What the run made, for the cleanup. Everything is made while holding its lock (see
/// [`cleanup`]).
struct Made {
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Folders and files.
    dirs: Vec<PathBuf>,
}

static MADE: Mutex<Made> = Mutex::new(Made {
    namespaces: Vec::new(),
    children: Vec::new(),
    dirs: Vec::new(),
});

fn made<T>(f: impl FnOnce(&mut Made) -> T) -> T {
    f(&mut MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Removes everything made so far: processes first, then namespaces, then files. The record
/// stays locked until the process exits, so that nothing is made between a signal's cleanup
/// and the exit.
fn cleanup() {
    let mut guard = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for child in &mut guard.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for namespace in &guard.namespaces {
        let _ = Command::new("ip")
            .args(["netns", "del", namespace])
            .status();
    }
    for path in &guard.dirs {
        let _ = std::fs::remove_dir_all(path);
        let _ = std::fs::remove_file(path);
    }
    std::mem::forget(guard);
}

/// Cleans up when dropped, so a panic does too.
struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Namespaces of runs that were killed before they could clean up (their process is gone).
fn remove_stale_namespaces() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            println!("removing namespace {name} left by an interrupted run");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn ns_exec(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    ip(&full)
}

/// Starts a long-running process in a namespace; it is killed at the cleanup. Returns its id.
fn ns_spawn(ns: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
    ns_start(ns, args, env, Stdio::null())
}

/// Starts a process in a namespace with its standard output to `stdout`; it is killed at the
/// cleanup. Returns its id.
fn ns_start(ns: &str, args: &[&str], env: &[(&str, &str)], stdout: impl Into<Stdio>) -> u32 {
    let stderr = log_file(args[0]);
    made(|made| {
        let child = with_signals(Command::new("ip").args(["netns", "exec", ns]))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let id = child.id();
        made.children.push(child);
        id
    })
}

/// Runs a program in a namespace to its end, within `limit`, and returns its standard output.
/// It is killed at the cleanup like the long-running ones.
fn ns_output(ns: &str, args: &[&str], limit: Duration) -> Vec<u8> {
    let out = temp_file(&format!("{}.out", args[0]));
    let id = ns_start(ns, args, &[], std::fs::File::create(&out).unwrap());
    let deadline = Instant::now() + limit;
    let exited = |made: &mut Made| {
        let child = made.children.iter_mut().find(|child| child.id() == id);
        child.is_none_or(|child| child.try_wait().ok().flatten().is_some())
    };
    while !made(exited) {
        assert!(
            Instant::now() < deadline,
            "{} did not finish within {limit:?}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_child(id);
    std::fs::read(&out).unwrap_or_default()
}

/// Stops the process `id` that [`ns_spawn`] started.
fn stop_child(id: u32) {
    let child = made(|made| {
        let index = made.children.iter().position(|child| child.id() == id)?;
        Some(made.children.swap_remove(index))
    });
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Where a started program's standard error goes: `skybench-PID-PROGRAM.log` in the
/// temporary folder, kept for a look after a failure.
fn log_file(program: &str) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(temp_file(&format!("{program}.log")))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// `skybench-PID-NAME` in the temporary folder, made if missing, removed at the cleanup.
fn temp_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{PREFIX}{}-{name}", std::process::id()));
    made(|made| {
        if !made.dirs.contains(&path) {
            made.dirs.push(path.clone());
        }
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
    });
    path
}

/// The three namespaces of one scenario and the links asked for.
struct Topology {
    a: String,
    b: String,
    c: String,
}

impl Topology {
    /// A, B and C; `direct` joins A and C, `relayed` joins A–B and B–C. C holds the host.
    fn new(name: &str, direct: bool, relayed: bool) -> Topology {
        let pid = std::process::id();
        let [a, b, c] = ["a", "b", "c"].map(|end| format!("{PREFIX}{pid}-{name}-{end}"));
        for ns in [&a, &b, &c] {
            made(|made| {
                ip(&["netns", "add", ns]);
                made.namespaces.push(ns.clone());
            });
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &c,
            "address",
            "add",
            &format!("{HOST}/32"),
            "dev",
            "lo",
        ]);
        let topology = Topology { a, b, c };
        if direct {
            topology.link(
                &topology.a,
                "10.201.3.1",
                &topology.c,
                "10.201.3.2",
                "ac",
                "ca",
            );
        }
        if relayed {
            topology.link(
                &topology.a,
                "10.201.1.1",
                &topology.b,
                "10.201.1.2",
                "ab",
                "ba",
            );
            topology.link(
                &topology.b,
                "10.201.2.1",
                &topology.c,
                "10.201.2.2",
                "bc",
                "cb",
            );
        }
        topology
    }

    fn link(&self, x: &str, x_addr: &str, y: &str, y_addr: &str, x_dev: &str, y_dev: &str) {
        ip(&[
            "-n", x, "link", "add", x_dev, "type", "veth", "peer", "name", y_dev, "netns", y,
        ]);
        ip(&[
            "-n",
            x,
            "address",
            "add",
            &format!("{x_addr}/24"),
            "dev",
            x_dev,
        ]);
        ip(&[
            "-n",
            y,
            "address",
            "add",
            &format!("{y_addr}/24"),
            "dev",
            y_dev,
        ]);
        ip(&["-n", x, "link", "set", x_dev, "up"]);
        ip(&["-n", y, "link", "set", y_dev, "up"]);
    }

    /// Datagrams the kernel dropped because a UDP socket's receive buffer was full, in all
    /// three namespaces so far: where a tunnel loses packets before it can read them.
    fn udp_receive_buffer_drops(&self) -> u64 {
        [&self.a, &self.b, &self.c]
            .into_iter()
            .filter_map(|ns| {
                let counters = ns_exec(ns, &["nstat", "-az", "UdpRcvbufErrors"]);
                counters
                    .lines()
                    .find_map(|line| line.strip_prefix("UdpRcvbufErrors"))?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    fn forward(ns: &str) {
        ns_exec(ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    }

    /// Removes the namespaces (and whatever runs in them is stopped by the caller first).
    fn remove(self) {
        for ns in [self.a, self.b, self.c] {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            made(|made| made.namespaces.retain(|other| *other != ns));
        }
    }
}

/// Runs iperf3 from A to the host in C; returns Gbit/s received.
fn iperf(topology: &Topology, streams: u32, seconds: u64) -> f64 {
    let server = ns_spawn(
        &topology.c,
        &["iperf3", "-s", "-B", HOST, "-p", IPERF_PORT],
        &[],
    );
    // The server needs a moment to listen; retry the client while it says it cannot connect.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = ns_output(
            &topology.a,
            &[
                "iperf3",
                "-c",
                HOST,
                "-p",
                IPERF_PORT,
                "-J",
                "-t",
                &seconds.to_string(),
                "-P",
                &streams.to_string(),
                "-O",
                "1",
            ],
            // The measurement, the omitted first second, and time to connect and report.
            Duration::from_secs(seconds + 30),
        );
        let json: serde_json::Value = serde_json::from_slice(&output).unwrap_or_default();
        if let Some(bits) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            stop_child(server);
            return bits / 1e9;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 failed: {}\nA's links:\n{}A's routes:\n{}",
            json["error"].as_str().unwrap_or("no output"),
            ip(&["-n", &topology.a, "address", "show"]),
            ip(&["-n", &topology.a, "route", "show"]),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_children() {
    let children = made(|made| std::mem::take(&mut made.children));
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    made(|made| {
        std::fs::create_dir_all(&dir).unwrap();
        made.dirs.push(dir.clone());
    });
    dir
}

// ----- plain kernel routing -----

fn kernel(seconds: u64) -> [f64; 2] {
    let topology = Topology::new("kernel", false, true);
    Topology::forward(&topology.b);
    ip(&["-n", &topology.a, "route", "add", HOST, "via", "10.201.1.2"]);
    ip(&["-n", &topology.b, "route", "add", HOST, "via", "10.201.2.2"]);
    ip(&[
        "-n",
        &topology.c,
        "route",
        "add",
        "10.201.1.0/24",
        "via",
        "10.201.2.1",
    ]);
    let result = [iperf(&topology, 1, seconds), iperf(&topology, 4, seconds)];
    topology.remove();
    result
}

// ----- skywire -----

/// Starts `skywired` in `ns` with its config, key and state in `dir`; returns the control
/// socket once it answers, and the process id.
fn start_skywired(
    ns: &str,
    dir: &Path,
    secret: &SecretKey,
    neighbours: &[(NodeKey, Option<&str>)],
    vpn: &str,
) -> (PathBuf, u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("node.key"), format!("{}\n", secret.to_base64())).unwrap();
    let mut config = String::from(
        "node:\n  key_file: node.key\n  state_dir: state\nlisten: \"[::]:7777\"\n\
         control:\n  socket: visctl.sock\nlog_level: warn\nneighbours:\n",
    );
    for (key, endpoint) in neighbours {
        config.push_str(&format!("  - key: {key}\n"));
        if let Some(endpoint) = endpoint {
            config.push_str(&format!("    endpoint: \"{endpoint}\"\n"));
        }
    }
    config.push_str(vpn);
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let config_arg = config_path.display().to_string();
    // `ip netns exec` execs the program: the process is the daemon itself.
    let pid = ns_spawn(ns, &[SKYWIRED, "--config", &config_arg], &[]);
    let socket = dir.join("visctl.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while visctl_json(&socket, &["status"]).is_none() {
        assert!(Instant::now() < deadline, "skywired in {ns} did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    (socket, pid)
}

/// Clock ticks per second of `/proc/PID/stat` and `/proc/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time so far, in clock ticks: in its own code (user), and in the kernel for
/// it (system).
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: utime and stime are the 12th and 13th.
    let ticks: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match ticks[..] {
        [user, system] => (user, system),
        _ => (0, 0),
    }
}

/// The machine's busy and total CPU time so far, in clock ticks, from `/proc/stat` (idle and
/// iowait are not busy).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// An iperf3 run with what the machine's cores did meanwhile.
struct Measured {
    gbits: f64,
    /// How much of a core each named daemon used, and how many cores were busy, for the log.
    figures: String,
    /// Cores busy, on average.
    busy_cores: f64,
    /// Cores spent in the daemons' own code (not in the kernel for them), on average.
    daemon_user_cores: f64,
}

/// Runs iperf3 as [`iperf`] does and says, beside the result, how much of a core each named
/// daemon used meanwhile and how many of the machine's cores were busy.
fn iperf_with_cpu(
    topology: &Topology,
    streams: u32,
    seconds: u64,
    daemons: &[(&str, u32)],
) -> Measured {
    let before: Vec<(u64, u64)> = daemons.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let (busy_before, total_before) = machine_ticks();
    let started = Instant::now();
    let gbits = iperf(topology, streams, seconds);
    let elapsed = started.elapsed().as_secs_f64();
    let (busy, total) = machine_ticks();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let busy_cores = cores * (busy - busy_before) as f64 / (total - total_before).max(1) as f64;
    let used: Vec<(u64, u64)> = daemons
        .iter()
        .zip(before)
        .map(|((_, pid), (user, system))| {
            let (user_now, system_now) = cpu_ticks(*pid);
            (user_now - user, system_now - system)
        })
        .collect();
    let cores_of = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / elapsed;
    let each: Vec<String> = daemons
        .iter()
        .zip(&used)
        .map(|((name, _), (user, system))| format!("{name} {:.2}", cores_of(user + system)))
        .collect();
    let figures = format!(
        "{streams} stream{}: {}, {busy_cores:.2} cores busy",
        if streams == 1 { "" } else { "s" },
        each.join(", ")
    );
    Measured {
        gbits,
        figures,
        busy_cores,
        daemon_user_cores: cores_of(used.iter().map(|(user, _)| user).sum()),
    }
}

/// A skywire scenario's result.
struct SkywireRun {
    /// Gbit/s with 1 and 4 streams.
    gbits: [f64; 2],
    /// With one stream, the core time per byte spent outside the daemons' own code: the
    /// kernel's TCP, UDP and TUN work and iperf3.
    outside_seconds_per_byte: f64,
}

fn skywire(two_hops: bool, seconds: u64) -> SkywireRun {
    let name = if two_hops { "sky2" } else { "sky1" };
    let topology = Topology::new(name, !two_hops, two_hops);
    let [a, b, c] = [
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    ];
    let (a_key, b_key, c_key) = (a.public(), b.public(), c.public());
    let state = temp_dir(name);
    let (c_neighbour, a_neighbour) = if two_hops {
        ((b_key, None), (b_key, Some("10.201.1.2:7777")))
    } else {
        ((a_key, None), (c_key, Some("10.201.3.2:7777")))
    };
    let server = format!(
        "vpn:\n  server:\n    enabled: true\n    tun: skysrv\n    pool4: 10.77.0.0/24\n    pool6: \"off\"\n    allow: [{a_key}]\n"
    );
    let (c_socket, c_pid) =
        start_skywired(&topology.c, &state.join("c"), &c, &[c_neighbour], &server);
    let mut daemons = vec![("c", c_pid)];
    if two_hops {
        let b_neighbours = [(a_key, None), (c_key, Some("10.201.2.2:7777"))];
        let (_, b_pid) = start_skywired(&topology.b, &state.join("b"), &b, &b_neighbours, "");
        daemons.push(("b", b_pid));
    }
    // The path is kept as given: through B, or straight to C.
    let path = if two_hops {
        format!("[{b_key}]")
    } else {
        format!("[{c_key}]")
    };
    let client = format!(
        "vpn:\n  client:\n    enabled: true\n    tun: skycli\n    server: {c_key}\n    path: {path}\n    routes: [\"{HOST}/32\", \"10.77.0.0/24\"]\n"
    );
    let (a_socket, a_pid) =
        start_skywired(&topology.a, &state.join("a"), &a, &[a_neighbour], &client);
    daemons.insert(0, ("a", a_pid));
    let deadline = Instant::now() + Duration::from_secs(30);
    while visctl_json(&a_socket, &["vpn", "status"])
        .is_none_or(|reply| reply["result"]["client"]["state"] != "up")
    {
        assert!(Instant::now() < deadline, "the skywire VPN did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let one = iperf_with_cpu(&topology, 1, seconds, &daemons);
    let four = iperf_with_cpu(&topology, 4, seconds, &daemons);
    println!(
        "    ({name}, cores used by each skywired: {}; {})",
        one.figures, four.figures
    );
    let result = SkywireRun {
        gbits: [one.gbits, four.gbits],
        outside_seconds_per_byte: (one.busy_cores - one.daemon_user_cores)
            / (one.gbits * 1e9 / 8.0).max(1.0),
    };
    // What was lost on the way, for a look when a figure is off.
    let sent = visctl_json(&a_socket, &["vpn", "status"])
        .and_then(|reply| reply["result"]["client"]["tx"]["packets"].as_u64())
        .unwrap_or(0);
    let arrived = visctl_json(&c_socket, &["vpn", "status"])
        .and_then(|reply| reply["result"]["server"]["clients"][0]["rx"]["packets"].as_u64())
        .unwrap_or(0);
    println!(
        "    ({name}: {sent} packets into the tunnel, {arrived} out at the server, {} UDP receive-buffer drops)",
        topology.udp_receive_buffer_drops()
    );
    stop_children();
    topology.remove();
    result
}

// ----- userspace WireGuard: wireguard-go and boringtun-cli -----

/// A userspace WireGuard that makes its own TUN device and takes its configuration from `wg`
/// over the UAPI socket `/var/run/wireguard/DEV.sock`.
#[derive(Clone, Copy)]
enum Userspace {
    /// wireguard-go (Debian's package).
    WireguardGo,
    /// boringtun-cli with one thread.
    Boringtun,
}

impl Userspace {
    fn program(self) -> &'static str {
        match self {
            Userspace::WireguardGo => "wireguard-go",
            Userspace::Boringtun => "boringtun-cli",
        }
    }

    /// The scenario's name: `wg1`, `wg2`, `bt1`, `bt2`.
    fn scenario(self, two_hops: bool) -> &'static str {
        match (self, two_hops) {
            (Userspace::WireguardGo, false) => "wg1",
            (Userspace::WireguardGo, true) => "wg2",
            (Userspace::Boringtun, false) => "bt1",
            (Userspace::Boringtun, true) => "bt2",
        }
    }

    /// Starts the program in `ns`, serving the device `dev` in the foreground.
    fn spawn(self, ns: &str, dev: &str) {
        match self {
            Userspace::WireguardGo => ns_spawn(
                ns,
                &[self.program(), "-f", dev],
                &[("LOG_LEVEL", "error"), ("WG_PROCESS_FOREGROUND", "1")],
            ),
            // It would otherwise give up root for the `sudo` user's ids, and with them the
            // right to set up its device.
            Userspace::Boringtun => ns_spawn(
                ns,
                &[
                    self.program(),
                    "--foreground",
                    "--threads",
                    "1",
                    "--disable-drop-privileges",
                    "--verbosity",
                    "error",
                    dev,
                ],
                &[],
            ),
        };
    }
}

/// Whether boringtun-cli is here; when not, says how to get it (the bench goes on without it).
fn boringtun_installed() -> bool {
    if installed(Userspace::Boringtun.program()) {
        return true;
    }
    Machine::current().skip(
        "forwarding (boringtun-cli rows)",
        "boringtun-cli (cargo install boringtun-cli --locked)",
        &mut std::io::stderr(),
    );
    false
}

fn wg_keys() -> (String, String) {
    let private = Command::new("wg").arg("genkey").output().unwrap();
    assert!(
        private.status.success(),
        "wg genkey failed: is wireguard-tools installed?"
    );
    let private = String::from_utf8_lossy(&private.stdout).trim().to_owned();
    let public = output_with_input(Command::new("wg").arg("pubkey"), &private);
    (
        private,
        String::from_utf8_lossy(&public.stdout).trim().to_owned(),
    )
}

/// A WireGuard interface `dev` of `userspace` in `ns` with `address`, listening on `port`,
/// one peer.
#[allow(clippy::too_many_arguments)]
fn wg_interface(
    userspace: Userspace,
    ns: &str,
    dev: &str,
    address: &str,
    port: u16,
    private: &str,
    dir: &Path,
    peer: &str,
    peer_endpoint: Option<&str>,
    allowed: &str,
) {
    // The control socket is not per namespace, and a killed program leaves it behind.
    let socket = PathBuf::from(format!("/var/run/wireguard/{dev}.sock"));
    made(|made| made.dirs.push(socket.clone()));
    userspace.spawn(ns, dev);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists()
        || !Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    {
        assert!(
            Instant::now() < deadline,
            "{} did not make {dev}",
            userspace.program()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let key_file = dir.join(format!("{ns}-{dev}.key"));
    std::fs::write(&key_file, private).unwrap();
    let port = port.to_string();
    let key_path = key_file.display().to_string();
    let mut args = vec![
        "wg",
        "set",
        dev,
        "private-key",
        &key_path,
        "listen-port",
        &port,
        "peer",
        peer,
        "allowed-ips",
        allowed,
    ];
    if let Some(endpoint) = peer_endpoint {
        args.extend_from_slice(&["endpoint", endpoint]);
    }
    ns_exec(ns, &args);
    ip(&["-n", ns, "address", "add", address, "dev", dev]);
    ip(&["-n", ns, "link", "set", dev, "mtu", "1420", "up"]);
}

/// `userspace` over one hop (A–C) or two (A → B → C: two tunnels, B decrypting and
/// re-encrypting).
fn wireguard(userspace: Userspace, two_hops: bool, seconds: u64) -> [f64; 2] {
    let name = userspace.scenario(two_hops);
    let topology = Topology::new(name, !two_hops, two_hops);
    let dir = temp_dir(name);
    let (a_private, a_public) = wg_keys();
    let (c_private, c_public) = wg_keys();
    let (a, c) = (&topology.a, &topology.c);
    let host = format!("{HOST}/32");
    // The control sockets (/var/run/wireguard/NAME.sock) are not per namespace: names unique
    // to the run and the scenario.
    let pid = std::process::id();
    let [dev_a, dev_ba, dev_bc, dev_c] =
        ["a", "ba", "bc", "c"].map(|end| format!("{name}-{pid}{end}"));
    if two_hops {
        let (ba_private, ba_public) = wg_keys();
        let (bc_private, bc_public) = wg_keys();
        let b = &topology.b;
        wg_interface(
            userspace,
            a,
            &dev_a,
            "10.88.0.1/24",
            51820,
            &a_private,
            &dir,
            &ba_public,
            Some("10.201.1.2:51820"),
            &format!("10.88.0.0/24,{host}"),
        );
        wg_interface(
            userspace,
            b,
            &dev_ba,
            "10.88.0.2/24",
            51820,
            &ba_private,
            &dir,
            &a_public,
            None,
            "10.88.0.1/32",
        );
        wg_interface(
            userspace,
            b,
            &dev_bc,
            "10.89.0.1/24",
            51821,
            &bc_private,
            &dir,
            &c_public,
            Some("10.201.2.2:51820"),
            &format!("10.89.0.0/24,{host}"),
        );
        wg_interface(
            userspace,
            c,
            &dev_c,
            "10.89.0.2/24",
            51820,
            &c_private,
            &dir,
            &bc_public,
            None,
            "10.88.0.0/24,10.89.0.0/24",
        );
        Topology::forward(b);
        ip(&["-n", b, "route", "add", HOST, "dev", &dev_bc]);
        ip(&["-n", c, "route", "add", "10.88.0.0/24", "dev", &dev_c]);
    } else {
        wg_interface(
            userspace,
            a,
            &dev_a,
            "10.88.0.1/24",
            51820,
            &a_private,
            &dir,
            &c_public,
            Some("10.201.3.2:51820"),
            &format!("10.88.0.0/24,{host}"),
        );
        wg_interface(
            userspace,
            c,
            &dev_c,
            "10.88.0.2/24",
            51820,
            &c_private,
            &dir,
            &a_public,
            None,
            "10.88.0.1/32",
        );
    }
    ip(&["-n", a, "route", "add", HOST, "dev", &dev_a]);
    let result = [iperf(&topology, 1, seconds), iperf(&topology, 4, seconds)];
    println!(
        "    ({name}: {} UDP receive-buffer drops)",
        topology.udp_receive_buffer_drops()
    );
    stop_children();
    topology.remove();
    result
}

// ----- the run -----

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then. `cargo bench`
    // passes `--bench`; a filter other than this bench's name skips it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("forwarding: run it with `sudo cargo bench --bench forwarding`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args
        .iter()
        .any(|filter| !"forwarding".contains(filter.as_str()))
    {
        return;
    }
    let seconds: u64 = env_number("SKYWIRE_BENCH_SECS", 5);
    let rounds: usize = env_number("SKYWIRE_BENCH_ROUNDS", 3).max(1);
    if !can_make_namespaces("forwarding") {
        return;
    }
    let missing = ["iperf3", "wireguard-go", "wg"]
        .into_iter()
        .filter(|program| !require(program, "forwarding"))
        .count();
    if missing > 0 {
        return;
    }

    clean_up_on_signal(cleanup);
    remove_stale_namespaces();
    let _guard = CleanupGuard;

    println!("forwarding benchmark: iperf3 TCP for {seconds} s each, A → host in C");
    // `SKYWIRE_BENCH_ONLY=sky1,wg1` runs only those scenarios, without the table.
    if let Ok(only) = std::env::var("SKYWIRE_BENCH_ONLY") {
        for name in only.split(',') {
            let result = match name {
                "kernel" => kernel(seconds),
                "wg1" => wireguard(Userspace::WireguardGo, false, seconds),
                "wg2" => wireguard(Userspace::WireguardGo, true, seconds),
                "bt1" | "bt2" if !boringtun_installed() => continue,
                "bt1" => wireguard(Userspace::Boringtun, false, seconds),
                "bt2" => wireguard(Userspace::Boringtun, true, seconds),
                "sky1" => skywire(false, seconds).gbits,
                "sky2" => skywire(true, seconds).gbits,
                other => {
                    println!("  {other}: unknown (kernel, wg1, wg2, bt1, bt2, sky1, sky2)");
                    continue;
                }
            };
            println!("  {name}: {:.2} / {:.2} Gbit/s", result[0], result[1]);
        }
        return;
    }
    // Rounds interleave the scenarios, so a slow spell of the shared machine touches all of
    // them alike; each figure is the median of its rounds, each ratio the median of the rounds'
    // ratios.
    let boringtun = boringtun_installed();
    let mut runs: Vec<Round> = Vec::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}:");
        let measured = |label: &str, result: [f64; 2]| {
            println!("  {label:<26} {:.2} / {:.2} Gbit/s", result[0], result[1]);
            result
        };
        let kernel = measured("kernel routing (2 hops):", kernel(seconds));
        let wg1 = measured(
            "wireguard-go 1 hop:",
            wireguard(Userspace::WireguardGo, false, seconds),
        );
        let wg2 = measured(
            "wireguard-go 2 hops:",
            wireguard(Userspace::WireguardGo, true, seconds),
        );
        let [bt1, bt2] = [false, true].map(|two_hops| {
            boringtun.then(|| {
                let label = if two_hops { "2 hops" } else { "1 hop" };
                measured(
                    &format!("boringtun-cli {label}:"),
                    wireguard(Userspace::Boringtun, two_hops, seconds),
                )
            })
        });
        let sky1_run = skywire(false, seconds);
        let sky1 = measured("skywire 1 hop:", sky1_run.gbits);
        let sky2_run = skywire(true, seconds);
        let sky2 = measured("skywire 2 hops:", sky2_run.gbits);
        runs.push(Round {
            kernel,
            wg1,
            wg2,
            bt1,
            bt2,
            sky1,
            sky2,
            sky1_outside: sky1_run.outside_seconds_per_byte,
            sky2_outside: sky2_run.outside_seconds_per_byte,
        });
    }
    let median_of = |pick: &dyn Fn(&Round) -> Option<[f64; 2]>| -> Option<[f64; 2]> {
        let picked: Vec<[f64; 2]> = runs.iter().filter_map(pick).collect();
        (!picked.is_empty()).then(|| {
            [0, 1].map(|column| {
                median(
                    &mut picked
                        .iter()
                        .map(|result| result[column])
                        .collect::<Vec<_>>(),
                )
            })
        })
    };
    let kernel = median_of(&|round| Some(round.kernel)).unwrap();
    let wg1 = median_of(&|round| Some(round.wg1)).unwrap();
    let wg2 = median_of(&|round| Some(round.wg2)).unwrap();
    let bt1 = median_of(&|round| round.bt1);
    let bt2 = median_of(&|round| round.bt2);
    let sky1 = median_of(&|round| Some(round.sky1)).unwrap();
    let sky2 = median_of(&|round| Some(round.sky2)).unwrap();
    // The median over the rounds of a figure each round gives, such as a ratio of two of its own.
    let over_rounds =
        |pick: &dyn Fn(&Round) -> f64| median(&mut runs.iter().map(pick).collect::<Vec<_>>());

    println!();
    println!("median of {rounds} rounds:");
    println!("| path                 | 1 stream Gbit/s | 4 streams Gbit/s | vs wireguard-go (1 / 4) | vs boringtun-cli (1 / 4) | vs kernel (1 / 4) |");
    println!("|----------------------|-----------------|------------------|-------------------------|--------------------------|-------------------|");
    let row = |name: &str, result: [f64; 2], wg: Option<[f64; 2]>, bt: Option<[f64; 2]>| {
        let versus = |base: Option<[f64; 2]>| {
            base.map_or_else(
                || "-".to_owned(),
                |base| {
                    format!(
                        "{:.2} × / {:.2} ×",
                        result[0] / base[0],
                        result[1] / base[1]
                    )
                },
            )
        };
        println!(
            "| {name:<20} | {:>15.2} | {:>16.2} | {:>23} | {:>24} | {:>17} |",
            result[0],
            result[1],
            versus(wg),
            versus(bt),
            versus(Some(kernel))
        );
    };
    row("kernel routing", kernel, None, None);
    row("wireguard-go 1 hop", wg1, None, None);
    row("wireguard-go 2 hops", wg2, None, None);
    for (name, bt) in [("boringtun-cli 1 hop", bt1), ("boringtun-cli 2 hops", bt2)] {
        if let Some(bt) = bt {
            row(name, bt, None, None);
        }
    }
    row("skywire 1 hop", sky1, Some(wg1), bt1);
    row("skywire 2 hops", sky2, Some(wg2), bt2);
    println!();
    let target = |what: &str, ratio: f64, at_least: f64| {
        let verdict = if ratio >= at_least { "met" } else { "NOT met" };
        println!("  {what}: {ratio:.2} × (target ≥ {at_least}) {verdict}");
    };
    println!("targets, one stream unless said (medians of the rounds' ratios):");
    target(
        "skywire 1 hop / wireguard-go 1 hop",
        over_rounds(&|round| round.sky1[0] / round.wg1[0]),
        7.0,
    );
    target(
        "skywire 2 hops / wireguard-go 2 hops",
        over_rounds(&|round| round.sky2[0] / round.wg2[0]),
        7.0,
    );
    target(
        "skywire 1 hop, 4 streams / 1 stream",
        over_rounds(&|round| round.sky1[1] / round.sky1[0]),
        1.0,
    );
    target(
        "skywire 2 hops, 4 streams / 1 stream",
        over_rounds(&|round| round.sky2[1] / round.sky2[0]),
        1.0,
    );
    target(
        "skywire 1 hop / kernel routing (the mark beyond)",
        over_rounds(&|round| round.sky1[0] / round.kernel[0]),
        0.25,
    );
    println!();
    print_ceilings(
        &[
            (
                "skywire 1 hop ",
                0.0,
                over_rounds(&|round| round.sky1_outside),
                wg1[0],
            ),
            (
                "skywire 2 hops",
                2.0,
                over_rounds(&|round| round.sky2_outside),
                wg2[0],
            ),
        ],
        "wireguard-go",
    );
}

/// What a single stream could reach if the daemons' own code cost nothing beyond the crypto
/// every byte needs and no core were ever idle: the cores over that crypto plus the work per
/// byte that this run measured outside the daemons (the kernel's TCP, UDP and TUN work, iperf3).
/// Every route makes two ChaCha20-Poly1305 passes over each byte (sealed at one end, opened at
/// the other), and each leg of a relayed route seals and opens a mesh header per packet. Each
/// scenario is (name, relayed legs, that work, anchor Gbit/s).
fn print_ceilings(scenarios: &[(&str, f64, f64, f64)], anchor: &str) {
    let crypto = bench_common::crypto_seconds_per_byte();
    let header = bench_common::sealed_header_seconds_per_byte();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!(
        "per byte here: a ChaCha20-Poly1305 pass {:.2} ns, a relayed leg's sealed header {:.2} ns \
         (boringtun, one core)",
        crypto * 1e9,
        header * 1e9
    );
    for &(name, legs, outside, anchor_gbits) in scenarios {
        let ceiling = cores / (2.0 * crypto + legs * header + outside) * 8.0 / 1e9;
        println!(
            "ceiling of {name} on {cores} cores (2 passes, {legs} sealed headers, {:.2} ns of \
             kernel and iperf3 work): {ceiling:.2} Gbit/s = {:.2} × {anchor}",
            outside * 1e9,
            ceiling / anchor_gbits
        );
    }
}

/// One round's figures, each [1 stream, 4 streams] in Gbit/s.
struct Round {
    kernel: [f64; 2],
    wg1: [f64; 2],
    wg2: [f64; 2],
    bt1: Option<[f64; 2]>,
    bt2: Option<[f64; 2]>,
    sky1: [f64; 2],
    sky2: [f64; 2],
    /// [`SkywireRun::outside_seconds_per_byte`] of each.
    sky1_outside: f64,
    sky2_outside: f64,
}
