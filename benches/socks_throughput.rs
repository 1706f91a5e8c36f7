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

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::HttpServer;
use common::{installed, wait_until, Daemon, Guard, Neighbour, TempDir};
use skywire_dataplane::{NodeKey, SecretKey};

const SSHD: &str = "/usr/sbin/sshd";
/// The daemons log as a service would by default.
const LOG: &str = "log_level: info\n";

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("socks_throughput: run it with `cargo bench --bench socks_throughput`");
        return;
    }
    let missing: Vec<_> = [
        ("curl", "curl"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        (SSHD, "openssh-server"),
    ]
    .into_iter()
    .filter(|(program, _)| !installed(program))
    .collect();
    if !missing.is_empty() {
        let packages: Vec<_> = missing.iter().map(|(_, package)| *package).collect();
        eprintln!(
            "socks_throughput needs {}: `apt-get install {}`",
            missing
                .iter()
                .map(|(program, _)| *program)
                .collect::<Vec<_>>()
                .join(", "),
            packages.join(" ")
        );
        std::process::exit(1);
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
    for round in 0..rounds {
        for (index, (name, proxy)) in ways.iter().enumerate() {
            let speed = download(*proxy, &url, size);
            println!("round {}: {name:<18} {:>7.1} MB/s", round + 1, speed / 1e6);
            speeds[index].push(speed);
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
    drop(ssh);
    mesh.stop();
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
                    let client = &entry.ask(&["socks", "status"])["result"]["socks"]["client"];
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
