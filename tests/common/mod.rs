//! What the end-to-end tests share: running `skywired` processes with configs of their own
//! (port 0), `visctl` against them, and waiting with deadlines; and the helpers every crate's
//! tests include from this folder, each a file of its own: a temporary folder (`temp`), a raw
//! control-socket client (`control`), the HTTP target (`http`), curl downloads through a SOCKS
//! port (`curl`), the SOCKS5 client (`socks`), network namespaces (`netns`) and what the
//! machine has (`machine`); and, for the dataplane crate's tests alone, a dataplane on a thread
//! of the test (`dataplane`).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skywire_dataplane::{NodeKey, SecretKey};

pub mod control;
pub mod curl;
pub mod http;
pub mod machine;
pub mod netns;
pub mod socks;
pub mod temp;
pub mod users;

pub use temp::TempDir;

pub const SKYWIRED: &str = env!("CARGO_BIN_EXE_skywired");
/// The `liveness:` section of the tests' configs: quick probes, and a long silence before a
/// link is dead, so that a busy machine running many tests at once does not cut links. Tests
/// of repair use the daemon's defaults instead.
pub const TEST_LIVENESS: &str = "liveness:\n  probe_interval_ms: 200\n  dead_after_ms: 5000\n";
pub const VISCTL: &str = env!("CARGO_BIN_EXE_visctl");

/// Waits until `condition` holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A neighbour entry for a node's config.
#[derive(Debug, Clone, Copy)]
pub struct Neighbour {
    pub key: NodeKey,
    pub endpoint: Option<SocketAddr>,
}

/// How [`Daemon::launch`] runs a node, beyond its key and neighbours.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The lines of the config's `control:` section after its `socket:`.
    pub control: &'a str,
    /// Top-level YAML sections appended to the config (`apps:`, `socks:`, a `log_level:`).
    pub extra: &'a str,
    /// Variables added to its environment (which otherwise has no `RUST_LOG` and no
    /// `NOTIFY_SOCKET`).
    pub env: &'a [(&'a str, &'a str)],
    /// The `skywired` to run (the built one unless given).
    pub program: Option<&'a Path>,
    /// The user it runs as, who is given its folder (this process's unless given).
    pub user: Option<&'a users::TestUser>,
    /// The config's `liveness:` section: [`TEST_LIVENESS`] unless given; empty for the
    /// daemon's defaults.
    pub liveness: &'a str,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            control: "  signal_port: 0\n",
            extra: "",
            env: &[],
            program: None,
            user: None,
            liveness: TEST_LIVENESS,
        }
    }
}

/// A running `skywired` with a config, key and socket in a folder of its own.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub key: NodeKey,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Daemon {
    /// Writes a config for node `name` under `dir` and starts it; returns once `visctl status`
    /// answers.
    pub fn start(
        dir: &TempDir,
        name: &str,
        secret: &SecretKey,
        neighbours: &[Neighbour],
    ) -> Daemon {
        Daemon::start_with(dir, name, secret, neighbours, "")
    }

    /// As [`Daemon::start`], with `extra` (top-level YAML sections, such as `apps:` or
    /// `socks:`, or a `log_level:` in place of the default `debug`) appended to the config.
    /// The signal server always takes a free port.
    pub fn start_with(
        dir: &TempDir,
        name: &str,
        secret: &SecretKey,
        neighbours: &[Neighbour],
        extra: &str,
    ) -> Daemon {
        Daemon::launch(
            dir,
            name,
            secret,
            neighbours,
            &Launch {
                extra,
                ..Launch::default()
            },
        )
    }

    /// A node named `node` under `dir` with a key of its own and no neighbours, started as
    /// `launch` says.
    pub fn launch_alone(dir: &TempDir, launch: &Launch<'_>) -> Daemon {
        Daemon::launch(dir, "node", &SecretKey::generate(), &[], launch)
    }

    /// Writes a config for node `name` under `dir` and starts it as `launch` says; returns once
    /// `visctl status` (run by this process) answers.
    pub fn launch(
        dir: &TempDir,
        name: &str,
        secret: &SecretKey,
        neighbours: &[Neighbour],
        launch: &Launch<'_>,
    ) -> Daemon {
        let mut yaml = format!(
            "node:\n  key_file: node.key\n  state_dir: state\nlisten: \"[::]:0\"\n\
             control:\n  socket: visctl.sock\n{}{}neighbours:\n",
            launch.control, launch.liveness
        );
        // Debug logs unless `extra` sets its own level.
        if !launch
            .extra
            .lines()
            .any(|line| line.starts_with("log_level:"))
        {
            yaml.insert_str(0, "log_level: debug\n");
        }
        for neighbour in neighbours {
            yaml.push_str(&format!("  - key: {}\n", neighbour.key));
            if let Some(endpoint) = neighbour.endpoint {
                yaml.push_str(&format!("    endpoint: \"{endpoint}\"\n"));
            }
        }
        if neighbours.is_empty() {
            yaml.push_str("  []\n");
        }
        yaml.push_str(launch.extra);
        let config = dir.write(&format!("{name}/config.yaml"), &yaml);
        let key_file = dir.write(
            &format!("{name}/node.key"),
            &format!("{}\n", secret.to_base64()),
        );
        let node_dir = dir.path(name);
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
        // Reachable by every user: the socket is there, and skywired decides who may use it.
        fs::set_permissions(&node_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let log = fs::File::create(node_dir.join("skywired.log")).unwrap();
        let mut command = Command::new(launch.program.unwrap_or(Path::new(SKYWIRED)));
        command
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(user) = launch.user {
            for path in [&node_dir, &config, &key_file] {
                user.own(path);
            }
            user.run(&mut command);
        }
        let mut daemon = Daemon {
            name: name.to_string(),
            socket: node_dir.join("visctl.sock"),
            dir: node_dir,
            key: secret.public(),
            config,
            port: 0,
            child: None,
        };
        daemon.run(command);
        daemon
    }

    /// Spawns `command` as this daemon's process and waits until `visctl status` answers; notes
    /// the UDP port it bound.
    fn run(&mut self, mut command: Command) {
        self.child = Some(command.spawn().unwrap());
        let mut status = None;
        wait_until(
            &format!("{} to answer", self.name),
            Duration::from_secs(20),
            || {
                self.assert_running();
                let output = self.visctl(&["--json", "status"]);
                if output.status.success() {
                    status = Some(json(&output));
                }
                status.is_some()
            },
        );
        let status = status.unwrap();
        let listen: SocketAddr = status["result"]["listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        self.port = listen.port();
    }

    /// Kills the process with SIGKILL and starts the built `skywired` again from the same
    /// config and folder, as this process's user and without extra environment: the same key
    /// and settings, nothing else kept in memory, and a new UDP port (neighbours that call it
    /// learn it from its first handshake). Returns once `visctl status` answers; the log goes
    /// on in the same file.
    pub fn restart(&mut self) {
        self.kill();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("skywired.log"))
            .unwrap();
        let mut command = Command::new(SKYWIRED);
        command
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.run(command);
    }

    /// The node's UDP address on loopback.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// As a neighbour entry, with or without its endpoint.
    pub fn as_neighbour(&self, with_endpoint: bool) -> Neighbour {
        Neighbour {
            key: self.key,
            endpoint: with_endpoint.then(|| self.endpoint()),
        }
    }

    /// Runs `visctl --socket SOCKET ARGS…`.
    pub fn visctl(&self, args: &[&str]) -> Output {
        Command::new(VISCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a `visctl --json` command that must succeed and returns its reply.
    pub fn ask(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.visctl(&all);
        assert!(
            output.status.success(),
            "{}: visctl {args:?} failed: {}{}\n--- log ---\n{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        json(&output)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("skywired.log")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
        }
    }

    /// The process's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid()));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("unreadable {line:?}"));
        kib * 1024
    }

    /// How many descriptors the process has open.
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The CPU time the process has used so far, user and system (10 ms resolution).
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After the command name in parentheses: the state (field 3 of proc(5)) first, so
        // utime and stime (fields 14 and 15) are at 11 and 12.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // /proc counts in USER_HZ, 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Kills the process outright (no clean stop: its neighbours find out by silence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 20 s of SIGTERM:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `visctl --socket SOCKET --json ARGS…`: the reply, or `None` when the command failed.
pub fn visctl_json(socket: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let output = Command::new(VISCTL)
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// The JSON reply on a visctl `--json` output.
pub fn json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Starts A–B–C on loopback: B has transports to both, A and C only to B. Only the callers
/// know endpoints (C is started first and learns B's address when B calls).
pub fn three_nodes(dir: &TempDir) -> (Daemon, Daemon, Daemon) {
    three_nodes_with(dir, |_, _| String::new())
}

/// The three nodes' public keys, A's first.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub a: NodeKey,
    pub b: NodeKey,
    pub c: NodeKey,
}

/// As [`three_nodes`], with config sections of each node's own: `extra(name, keys)` is appended
/// to the config of node `name` ("a", "b" or "c").
pub fn three_nodes_with(
    dir: &TempDir,
    extra: impl Fn(&str, &Keys) -> String,
) -> (Daemon, Daemon, Daemon) {
    let (a, b, c) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let keys = Keys {
        a: a.public(),
        b: b.public(),
        c: c.public(),
    };
    let neighbour = |key: NodeKey| Neighbour {
        key,
        endpoint: None,
    };
    let node_c = Daemon::start_with(dir, "c", &c, &[neighbour(b.public())], &extra("c", &keys));
    let node_b = Daemon::start_with(
        dir,
        "b",
        &b,
        &[neighbour(a.public()), node_c.as_neighbour(true)],
        &extra("b", &keys),
    );
    let node_a = Daemon::start_with(
        dir,
        "a",
        &a,
        &[node_b.as_neighbour(true)],
        &extra("a", &keys),
    );
    wait_until("B's links to come up", Duration::from_secs(20), || {
        node_b.ask(&["status"])["result"]["links_up"] == 2
    });
    (node_a, node_b, node_c)
}

/// A path for messages.
pub fn show(path: &Path) -> String {
    path.display().to_string()
}

/// A child process that is killed (and reaped) when this is dropped, panics included.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Guard {
    /// Waits for the exit status, killing the process after `limit`.
    pub fn wait_for(&mut self, what: &str, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                panic!("{what} did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
