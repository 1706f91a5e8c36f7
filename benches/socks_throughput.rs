//! SOCKS throughput as a user sees it: one large download with curl through the SOCKS5 port of
//! `skywired` processes on 127.0.0.1 — entry → relay → exit (A → B → C) and entry → exit
//! (A → C) — against `ssh -D` dynamic forwarding on loopback (a throwaway `sshd`), and a
//! download with no proxy for scale, all in the same run and interleaved. The figures that
//! matter are the ratios to ssh, printed at the end.
//!
//! `cargo bench --bench socks_throughput` (release daemons). `SOCKS_BENCH_MIB` sets the
//! download's size (default 1024), `SOCKS_BENCH_ROUNDS` the rounds (default 3; medians are
//! reported, and the median of each round's ratios). Needs curl and OpenSSH's client and server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use common::http::HttpServer;
use common::machine::require;
use common::{wait_until, Daemon, Guard, Neighbour, TempDir};
use skywire_dataplane::node::INNER_MTU;
use skywire_dataplane::{NodeKey, SecretKey, MAX_DATAGRAM};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
const SSHD: &str = "/usr/sbin/sshd";
/// The daemons log as a service would by default.
const LOG: &str = "log_level: info\n";

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("socks_throughput: run it with `cargo bench --bench socks_throughput`");
        return;
    }
    let missing = ["curl", "ssh", "ssh-keygen", SSHD]
        .into_iter()
        .filter(|program| !require(program, "socks_throughput"))
        .count();
    if missing > 0 {
        return;
    }
    let mib: u64 = env_number("SOCKS_BENCH_MIB", 1024);
    let rounds = env_number("SOCKS_BENCH_ROUNDS", 3).max(1) as usize;
    let size = mib << 20;

    let http = HttpServer::start();
    let dir = TempDir::new("socks-bench");
    let mesh = Mesh::start(&dir);
    let ssh_dir = TempDir::new("socks-bench-ssh");
    let ssh = SshProxy::start(&ssh_dir);

    let url = http.url(&format!("/bytes/{size}/1"));
    let ways: [(&str, Option<SocketAddr>); 4] = [
        ("no proxy", None),
        ("ssh -D", Some(ssh.proxy)),
        ("skywire A → C", Some(mesh.direct_proxy)),
        ("skywire A → B → C", Some(mesh.relay_proxy)),
    ];
    let mut speeds = vec![Vec::new(); ways.len()];
    let mut busy_cores = vec![Vec::new(); ways.len()];
    for round in 0..rounds {
        for (index, (name, proxy)) in ways.iter().enumerate() {
            let before = CpuTimes::read();
            let daemons_before = mesh.cpu_ticks();
            let started = Instant::now();
            let speed = download(*proxy, &url, size);
            let seconds = started.elapsed().as_secs_f64();
            let busy = CpuTimes::read().busy_cores_since(&before);
            let daemons: Vec<String> = mesh
                .cpu_ticks()
                .iter()
                .zip(&daemons_before)
                // A tick or two is the idle daemons' timers.
                .filter(|((_, after), (_, before))| *after > *before + 2)
                .map(|((name, after), (_, before))| {
                    format!(
                        "{name} {:.2}",
                        (after - before) as f64 / TICKS_PER_SECOND / seconds
                    )
                })
                .collect();
            println!(
                "round {}: {name:<18} {:>7.1} MB/s, {busy:.2} cores busy ({})",
                round + 1,
                speed / 1e6,
                daemons.join(", ")
            );
            speeds[index].push(speed);
            busy_cores[index].push(busy);
        }
    }
    let medians: Vec<f64> = speeds
        .iter()
        .map(|speeds| median(&mut speeds.clone()))
        .collect();
    println!();
    println!(
        "{mib} MiB with curl on loopback, median of {rounds} ({}, {} cores):",
        ssh.version,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for ((name, _), speed) in ways.iter().zip(&medians) {
        println!("  {name:<18} {:>7.1} MB/s", speed / 1e6);
    }
    // Each round's ratio compares downloads made moments apart: steadier than a ratio of
    // medians on a machine that is doing other things too.
    let ratio = |way: usize| {
        let mut ratios: Vec<f64> = speeds[way]
            .iter()
            .zip(&speeds[1])
            .map(|(skywire, ssh)| skywire / ssh)
            .collect();
        median(&mut ratios)
    };
    println!("skywire A → C:     {:.2} × ssh -D", ratio(2));
    println!("skywire A → B → C: {:.2} × ssh -D (target ≥ 1)", ratio(3));

    // What the work that no implementation of this design can skip allows on these cores:
    // every byte goes through ChaCha20-Poly1305 twice at each end (route session and hop) and
    // twice more at a relay, and through two loopback TCP legs (target to exit, entry to curl),
    // each costing what the proxy-less download cost. Copies, syscalls and the stacks come on
    // top, so real throughput stays below this.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let crypto = crypto_seconds_per_byte();
    let tcp_leg = median(&mut busy_cores[0].clone()) / medians[0];
    println!();
    println!(
        "per byte here: a ChaCha20-Poly1305 pass {:.2} ns (boringtun, one core), a loopback TCP \
         leg {:.2} ns (the download with no proxy)",
        crypto * 1e9,
        tcp_leg * 1e9
    );
    for (name, passes) in [("A → C", 4.0), ("A → B → C", 6.0)] {
        let ceiling = cores / (passes * crypto + 2.0 * tcp_leg);
        println!(
            "ceiling of skywire {name:<9} on {cores} cores ({passes} passes, 2 TCP legs): \
             {:>6.1} MB/s = {:.2} × ssh -D",
            ceiling / 1e6,
            ceiling / medians[1]
        );
    }
    drop(ssh);
    mesh.stop();
}

/// One ChaCha20-Poly1305 pass over a byte, in seconds: boringtun sealing and opening packets of
/// the route sessions' size on one core.
fn crypto_seconds_per_byte() -> f64 {
    let (mut sender, mut receiver) = bench_common::established_pair(1, 2);
    // An IPv6 header (boringtun checks that it opened an IP packet) and no next header.
    let mut packet = vec![0u8; INNER_MTU];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&((INNER_MTU - 40) as u16).to_be_bytes());
    packet[6] = 59;
    let (mut sealed, mut opened) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
    let packets = 50_000;
    let started = Instant::now();
    for _ in 0..packets {
        let TunnResult::WriteToNetwork(datagram) = sender.encapsulate(&packet, &mut sealed) else {
            panic!("boringtun did not seal");
        };
        let TunnResult::WriteToTunnelV6(..) = receiver.decapsulate(None, datagram, &mut opened)
        else {
            panic!("boringtun did not open");
        };
    }
    started.elapsed().as_secs_f64() / (2.0 * packets as f64 * INNER_MTU as f64)
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The machine's CPU time so far, from `/proc/stat`: how busy the cores were during a download
/// tells whether it was bound by CPU or by waiting.
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> CpuTimes {
        let stat = fs::read_to_string("/proc/stat").unwrap();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap())
            .collect();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        CpuTimes {
            busy: total - ticks[3] - ticks[4],
            total,
        }
    }

    fn busy_cores_since(&self, before: &CpuTimes) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let total = (self.total - before.total).max(1) as f64;
        cores * (self.busy - before.busy) as f64 / total
    }
}

/// Downloads `url` with curl (through `proxy`, names resolved there), checks the size, and
/// returns bytes per second.
fn download(proxy: Option<SocketAddr>, url: &str, size: u64) -> f64 {
    let mut command = Command::new("curl");
    command.args([
        "--silent",
        "--show-error",
        "--fail",
        "--max-time",
        "600",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
    ]);
    if let Some(proxy) = proxy {
        command.arg("--socks5-hostname").arg(proxy.to_string());
    }
    let started = Instant::now();
    let output = command.arg(url).stdin(Stdio::null()).output().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "curl through {proxy:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        got, size,
        "curl through {proxy:?} got {got} of {size} bytes"
    );
    size as f64 / elapsed
}

/// Four nodes: the exit C, the relay B, an entry whose route goes through B, and an entry
/// with a transport straight to C.
struct Mesh {
    daemons: Vec<Daemon>,
    relay_proxy: SocketAddr,
    direct_proxy: SocketAddr,
}

impl Mesh {
    fn start(dir: &TempDir) -> Mesh {
        let [a1, a2, b, c] = [(); 4].map(|()| SecretKey::generate());
        let known = |key: NodeKey| Neighbour {
            key,
            endpoint: None,
        };
        let client = |path: String| {
            format!(
                "{LOG}socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n    path: [{path}]\n",
                c.public()
            )
        };
        let node_c = Daemon::start_with(
            dir,
            "c",
            &c,
            &[known(b.public()), known(a2.public())],
            &format!(
                "{LOG}socks:\n  server:\n    allow: [{}, {}]\n",
                a1.public(),
                a2.public()
            ),
        );
        let node_b = Daemon::start_with(
            dir,
            "b",
            &b,
            &[known(a1.public()), node_c.as_neighbour(true)],
            LOG,
        );
        let relayed = Daemon::start_with(
            dir,
            "a-relayed",
            &a1,
            &[node_b.as_neighbour(true)],
            &client(b.public().to_string()),
        );
        let direct = Daemon::start_with(
            dir,
            "a-direct",
            &a2,
            &[node_c.as_neighbour(true)],
            &client(String::new()),
        );
        let proxy = |entry: &Daemon| {
            let mut listen = None;
            wait_until(
                &format!("{}'s route to the exit", entry.name),
                Duration::from_secs(30),
                || {
                    let client = &entry.ask(&["socks", "status"])["result"]["client"];
                    listen = client["listen"].as_str().map(str::to_owned);
                    client["route"] == "ready"
                },
            );
            listen.unwrap().parse().unwrap()
        };
        let relay_proxy = proxy(&relayed);
        let direct_proxy = proxy(&direct);
        Mesh {
            daemons: vec![relayed, direct, node_b, node_c],
            relay_proxy,
            direct_proxy,
        }
    }

    /// Each daemon's CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> Vec<(String, u64)> {
        self.daemons
            .iter()
            .map(|daemon| {
                let stat =
                    fs::read_to_string(format!("/proc/{}/stat", daemon.pid())).unwrap_or_default();
                // Fields after the parenthesised name: utime and stime are the 12th and 13th.
                let ticks = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| {
                        rest.split_whitespace()
                            .skip(11)
                            .take(2)
                            .filter_map(|field| field.parse::<u64>().ok())
                            .sum()
                    })
                    .unwrap_or(0);
                (daemon.name.clone(), ticks)
            })
            .collect()
    }

    fn stop(self) {
        for mut daemon in self.daemons {
            let status = daemon.terminate();
            assert!(status.success(), "{} exited with {status}", daemon.name);
        }
    }
}

/// A throwaway sshd on a loopback port and `ssh -N -D` to it: OpenSSH's SOCKS proxy.
struct SshProxy {
    proxy: SocketAddr,
    version: String,
    // Dropped in this order: the client first, so the server's session ends with it.
    _client: Guard,
    _server: Guard,
}

impl SshProxy {
    fn start(dir: &TempDir) -> SshProxy {
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path(key))
                .status()
                .unwrap();
            assert!(status.success(), "ssh-keygen failed");
        }
        fs::copy(dir.path("client_key.pub"), dir.path("authorized_keys")).unwrap();
        // sshd run by root wants its privilege separation folder, which the service unit
        // usually makes.
        if nix::unistd::geteuid().is_root() && !Path::new("/run/sshd").exists() {
            fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = free_port();
        let config = dir.write(
            "sshd_config",
            &format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding yes\nLogLevel ERROR\n",
                dir.path("host_key").display(),
                dir.path("authorized_keys").display(),
                dir.path("sshd.pid").display(),
            ),
        );
        let log = fs::File::create(dir.path("sshd.log")).unwrap();
        let mut server = Guard(
            Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let sshd_log = || fs::read_to_string(dir.path("sshd.log")).unwrap_or_default();
        wait_until("sshd to listen", Duration::from_secs(10), || {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("sshd exited with {status}: {}", sshd_log());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .expect("the current user has no name")
            .name;
        let socks_port = free_port();
        let ssh_log = fs::File::create(dir.path("ssh.log")).unwrap();
        let mut client = Guard(
            Command::new("ssh")
                .args(["-N", "-D"])
                .arg(format!("127.0.0.1:{socks_port}"))
                .arg("-p")
                .arg(port.to_string())
                .arg("-i")
                .arg(dir.path("client_key"))
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg(format!("{user}@127.0.0.1"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(ssh_log)
                .spawn()
                .unwrap(),
        );
        wait_until("ssh -D to listen", Duration::from_secs(15), || {
            if let Some(status) = client.0.try_wait().unwrap() {
                panic!(
                    "ssh exited with {status}: {}\nsshd: {}",
                    fs::read_to_string(dir.path("ssh.log")).unwrap_or_default(),
                    sshd_log()
                );
            }
            TcpStream::connect(("127.0.0.1", socks_port)).is_ok()
        });
        let version = Command::new("ssh").arg("-V").output().unwrap();
        let version = String::from_utf8_lossy(&version.stderr)
            .split(',')
            .next()
            .unwrap_or("ssh")
            .trim()
            .to_owned();
        SshProxy {
            proxy: SocketAddr::from(([127, 0, 0, 1], socks_port)),
            version,
            _client: client,
            _server: server,
        }
    }
}

/// A loopback port that was free a moment ago (for programs that cannot report theirs).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
