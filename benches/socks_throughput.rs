//! SOCKS throughput as a user sees it: one large download with curl through the SOCKS5 port of
//! `skywired` processes on 127.0.0.1 — entry → relay → exit (A → B → C) and entry → exit
//! (A → C) — against OpenSSH's dynamic forwarding on loopback over the same shapes (`ssh -D`
//! to a throwaway `sshd`, and `ssh -J B -D` through a second one as the jump host), and a
//! download with no proxy for scale, all in the same run and interleaved. The figures that
//! matter are the ratios to ssh, printed at the end.
//!
//! `cargo bench --bench socks_throughput` (release daemons). `SOCKS_BENCH_MIB` sets the
//! download's size (default 1024), `SOCKS_BENCH_ROUNDS` the rounds (default 3; medians are
//! reported, and the median of each round's ratios); a value that is not a whole number stops the
//! bench before it starts anything, naming the variable and its value. Needs curl and OpenSSH's
//! client and server.
//! What it starts and the folders it makes go at the end, on a panic, and on SIGINT, SIGTERM or
//! SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/median.rs"]
mod median;
#[path = "common/signals.rs"]
mod signals;

use bench_common::env_number;
use median::median;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::http::HttpServer;
use common::machine::require;
use common::{wait_until, Daemon, Guard, Neighbour, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signals::{clean_up_on_signal, with_signals};
use skywire_dataplane::{NodeKey, SecretKey};

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
    let mib: u64 = env_number("SOCKS_BENCH_MIB", 1024);
    let rounds: usize = env_number("SOCKS_BENCH_ROUNDS", 3).max(1);
    let missing = ["curl", "ssh", "ssh-keygen", SSHD]
        .into_iter()
        .filter(|program| !require(program, "socks_throughput"))
        .count();
    if missing > 0 {
        return;
    }
    let size = mib << 20;

    clean_up_on_signal(cleanup);

    let http = HttpServer::start();
    let dir = temp_dir("socks-bench");
    let mesh = making(|_| Mesh::start(&dir));
    let ssh_dir = temp_dir("socks-bench-ssh");
    let ssh = OpenSsh::new(&ssh_dir);
    let (server_c, server_b) = making(|_| (ssh.server("c"), ssh.server("b")));
    let (ssh_direct, ssh_jump) = making(|_| {
        (
            ssh.proxy(&server_c, None),
            ssh.proxy(&server_c, Some(&server_b)),
        )
    });

    let url = http.url(&format!("/bytes/{size}/1"));
    let ways: [(&str, Option<SocketAddr>); 5] = [
        ("no proxy", None),
        ("ssh -D", Some(ssh_direct.address)),
        ("ssh -J B -D", Some(ssh_jump.address)),
        ("skywire A → C", Some(mesh.direct_proxy)),
        ("skywire A → B → C", Some(mesh.relay_proxy)),
    ];
    // Where each way is in `ways`.
    let [no_proxy, ssh_d, ssh_j, sky_direct, sky_relayed] = [0, 1, 2, 3, 4];
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
        OpenSsh::version(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for ((name, _), speed) in ways.iter().zip(&medians) {
        println!("  {name:<18} {:>7.1} MB/s", speed / 1e6);
    }
    // Each round's ratio compares downloads made moments apart: steadier than a ratio of
    // medians on a machine that is doing other things too.
    let ratio = |way: usize, anchor: usize| {
        let mut ratios: Vec<f64> = speeds[way]
            .iter()
            .zip(&speeds[anchor])
            .map(|(way, anchor)| way / anchor)
            .collect();
        median(&mut ratios)
    };
    println!(
        "skywire A → C:     {:.2} × ssh -D (target ≥ 1, aim 1.3)",
        ratio(sky_direct, ssh_d)
    );
    println!(
        "skywire A → B → C: {:.2} × ssh -D",
        ratio(sky_relayed, ssh_d)
    );
    println!(
        "skywire A → B → C: {:.2} × ssh -J B -D (target ≥ 1.2)",
        ratio(sky_relayed, ssh_j)
    );

    // What the work that no implementation of this design can skip allows on these cores:
    // every byte goes through ChaCha20-Poly1305 once at each end of the route (the hop's
    // transport on a direct route, the route session on a relayed one, whose two legs each
    // seal and open a mesh header per packet), and through two loopback TCP legs (target to
    // exit, entry to curl), each costing what the proxy-less download cost. Copies, syscalls
    // and the stacks come on top, so real throughput stays below this.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let crypto = bench_common::crypto_seconds_per_byte();
    let header = bench_common::sealed_header_seconds_per_byte();
    let tcp_leg = median(&mut busy_cores[no_proxy].clone()) / medians[no_proxy];
    println!();
    println!(
        "per byte here: a ChaCha20-Poly1305 pass {:.2} ns, a relayed leg's sealed header {:.2} ns \
         (boringtun, one core), a loopback TCP leg {:.2} ns (the download with no proxy)",
        crypto * 1e9,
        header * 1e9,
        tcp_leg * 1e9
    );
    for (name, legs, anchor) in [("A → C", 0.0, ssh_d), ("A → B → C", 2.0, ssh_j)] {
        let ceiling = cores / (2.0 * crypto + legs * header + 2.0 * tcp_leg);
        println!(
            "ceiling of skywire {name:<9} on {cores} cores (2 passes, {legs} sealed headers, 2 TCP \
             legs): {:>6.1} MB/s = {:.2} × {}",
            ceiling / 1e6,
            ceiling / medians[anchor],
            ways[anchor].0
        );
    }
    drop((ssh_direct, ssh_jump));
    drop((server_c, server_b));
    mesh.stop();
}

/// The folders the run made, for [`cleanup`], which a signal runs in place of the owners' drops.
/// Folders are made and processes started while holding this lock (see [`making`]).
static FOLDERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Runs `make`, which makes folders or starts processes, holding the lock that [`cleanup`]
/// keeps to the exit: so nothing is made that the cleanup could miss.
fn making<T>(make: impl FnOnce(&mut Vec<PathBuf>) -> T) -> T {
    make(
        &mut FOLDERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// A temporary folder that [`cleanup`] removes too.
fn temp_dir(label: &str) -> TempDir {
    making(|folders| {
        let dir = TempDir::new(label);
        folders.push(dir.root().to_owned());
        dir
    })
}

/// Kills this process's children and removes the folders that the run made. The lock stays held
/// until the process exits, so that nothing new is made in between.
fn cleanup() {
    let folders = FOLDERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for child in children() {
        let _ = kill(child, Signal::SIGKILL);
    }
    for dir in folders.iter() {
        let _ = fs::remove_dir_all(dir);
    }
    std::mem::forget(folders);
}

/// This process's children, from `/proc`: the daemons, the ssh programs and curl.
fn children() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the parenthesised name: the state, then the parent's id.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (parent == me).then(|| Pid::from_raw(pid))
        })
        .collect()
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
    with_signals(&mut command).args([
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
    let curl = making(|_| {
        command
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    let output = curl.wait_with_output().unwrap();
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
                "{LOG}socks:\n  server:\n    allow: [{}, {}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
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
            &client(c.public().to_string()),
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

/// OpenSSH on loopback: throwaway `sshd`s that let in a key made for the run, and `ssh -N -D`
/// SOCKS proxies through them, all with keys and configs in a folder of their own.
struct OpenSsh<'a> {
    dir: &'a TempDir,
    /// The client's config, which `ssh -J` hands on to the `ssh -W` it runs for the jump host.
    config: PathBuf,
}

/// An `sshd` on a loopback port; killed when dropped.
struct Sshd {
    port: u16,
    log: PathBuf,
    _process: Guard,
}

/// `ssh -N -D`: a SOCKS proxy on a loopback address; killed when dropped.
struct SshProxy {
    address: SocketAddr,
    _process: Guard,
}

impl<'a> OpenSsh<'a> {
    /// Makes a host key, a client key that the servers accept, and the client's config.
    fn new(dir: &'a TempDir) -> OpenSsh<'a> {
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
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .expect("the current user has no name")
            .name;
        // With its own config, ssh reads nothing of the user's own.
        let config = dir.write(
            "ssh_config",
            &format!(
                "Host *\n  User {user}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n  \
                 ExitOnForwardFailure yes\n  LogLevel ERROR\n",
                dir.path("client_key").display()
            ),
        );
        OpenSsh { dir, config }
    }

    /// Starts `sshd` `name` on a free loopback port; returns once it listens.
    fn server(&self, name: &str) -> Sshd {
        let port = free_port();
        let config = self.dir.write(
            &format!("sshd_{name}_config"),
            &format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding yes\nLogLevel ERROR\n",
                self.dir.path("host_key").display(),
                self.dir.path("authorized_keys").display(),
                self.dir.path(&format!("sshd_{name}.pid")).display(),
            ),
        );
        let log = self.dir.path(&format!("sshd_{name}.log"));
        let mut process = Guard(
            with_signals(&mut Command::new(SSHD))
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_until(
            &format!("sshd {name} to listen"),
            Duration::from_secs(10),
            || {
                if let Some(status) = process.0.try_wait().unwrap() {
                    panic!(
                        "sshd {name} exited with {status}: {}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
        );
        Sshd {
            port,
            log,
            _process: process,
        }
    }

    /// `ssh -N -D` to `server`, through `jump` (`-J`) when given; returns once its SOCKS port
    /// listens.
    fn proxy(&self, server: &Sshd, jump: Option<&Sshd>) -> SshProxy {
        let port = free_port();
        let name = format!("ssh_{port}");
        let log = self.dir.path(&format!("{name}.log"));
        let mut command = Command::new("ssh");
        with_signals(&mut command)
            .arg("-F")
            .arg(&self.config)
            .arg("-N")
            .arg("-D")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-p")
            .arg(server.port.to_string());
        if let Some(jump) = jump {
            command.arg("-J").arg(format!("127.0.0.1:{}", jump.port));
        }
        let mut process = Guard(
            command
                .arg("127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_until(
            &format!("{name} to listen"),
            Duration::from_secs(15),
            || {
                if let Some(status) = process.0.try_wait().unwrap() {
                    let sshd_logs: String = [Some(server), jump]
                        .into_iter()
                        .flatten()
                        .map(|sshd| fs::read_to_string(&sshd.log).unwrap_or_default())
                        .collect();
                    panic!(
                        "ssh exited with {status}: {}\nsshd: {sshd_logs}",
                        fs::read_to_string(&log).unwrap_or_default(),
                    );
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
        );
        SshProxy {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }

    /// OpenSSH's version, as `ssh -V` gives it.
    fn version() -> String {
        let version = Command::new("ssh").arg("-V").output().unwrap();
        String::from_utf8_lossy(&version.stderr)
            .split(',')
            .next()
            .unwrap_or("ssh")
            .trim()
            .to_owned()
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
