//! Network namespaces for the VPN tests (root only): made uniquely named, joined by veth pairs,
//! inspected, and removed on drop. The dataplane's own namespace test and the forwarding bench
//! include this file too, beside `machine.rs` as a sibling module.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blake2::{Blake2s256, Digest};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::machine::{installed, package, require, require_root};

/// Whether `test` can make namespaces here (as root, with `ip`); skips it when not.
pub fn can_make_namespaces(test: &str) -> bool {
    require_root(test) && require("ip", test)
}

/// What [`transfer`] sends.
pub const TRANSFER: usize = 100 << 20;

/// Runs `ip ARGS` and insists that it worked.
pub fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run ip (apt-get install iproute2): {error}"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command in a namespace; returns whether it succeeded. The program must be installed:
/// its absence would look like a failure of the network.
pub fn ns_run(ns: &str, args: &[&str]) -> bool {
    let program = args.first().copied().unwrap_or_default();
    assert!(
        installed(program),
        "{program} is not installed (apt-get install {}): a test asks \
         `require(\"{program}\", test)` before it runs it",
        package(program)
    );
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Whether `host` answers a ping from `ns` within about 15 s (a busy machine may lose one).
/// Needs `ping`: ask `require("ping", test)` first.
pub fn reaches(ns: &str, host: &str) -> bool {
    let family = if host.contains(':') { "-6" } else { "-4" };
    (0..15).any(|_| ns_run(ns, &["ping", family, "-c", "1", "-W", "1", host]))
}

/// Namespaces made by a test, removed on drop (panics included) with whatever still runs in
/// them.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// `count` namespaces named `PREFIX-PID-RUN-INDEX`, each with its loopback up.
    pub fn new(prefix: &str, count: usize) -> Namespaces {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let run = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut namespaces = Namespaces(Vec::new());
        for index in 0..count {
            let name = format!("{prefix}-{}-{run}-{index}", std::process::id());
            ip(&["netns", "add", &name]);
            namespaces.0.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        namespaces
    }

    pub fn name(&self, index: usize) -> String {
        self.0[index].clone()
    }

    /// `address` as a host of its own in namespace `index`: a /32 (IPv4) or a /128 (IPv6) on
    /// its loopback.
    pub fn add_host(&self, index: usize, address: &str) {
        let name = self.name(index);
        let len = if address.contains(':') { 128 } else { 32 };
        ip(&[
            "-n",
            &name,
            "address",
            "add",
            &format!("{address}/{len}"),
            "dev",
            "lo",
        ]);
    }

    /// A veth pair between two namespaces with an IPv4 /24 on each end.
    pub fn link(&self, a: usize, a_addr: &str, b: usize, b_addr: &str) {
        let (a_dev, b_dev) = (format!("v{a}{b}"), format!("v{b}{a}"));
        let (a_ns, b_ns) = (self.name(a), self.name(b));
        ip(&[
            "-n", &a_ns, "link", "add", &a_dev, "type", "veth", "peer", "name", &b_dev, "netns",
            &b_ns,
        ]);
        for (ns, addr, dev) in [(&a_ns, a_addr, &a_dev), (&b_ns, b_addr, &b_dev)] {
            ip(&[
                "-n",
                ns,
                "address",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Ok(output) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Everything `ip` shows of a namespace's links, addresses, routes and rules, once no IPv6
/// address is still tentative (link-local addresses appear a moment after a link comes up).
pub fn snapshot(ns: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = String::new();
        for args in [
            &["link", "show"][..],
            &["address", "show"],
            &["-4", "route", "show", "table", "all"],
            &["-6", "route", "show", "table", "all"],
            &["-4", "rule", "show"],
            &["-6", "rule", "show"],
        ] {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            all.push_str(&ip(&full));
        }
        if !all.contains("tentative") {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{ns} still has tentative addresses:\n{all}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
}

/// Moves the calling thread into namespace `ns`.
pub fn enter_netns(ns: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// Sends [`TRANSFER`] bytes from namespace `from` to `addr` in namespace `to`; returns both
/// sides' byte counts and BLAKE2s digests.
pub fn transfer(from: &str, to: &str, addr: SocketAddr) -> ((usize, Vec<u8>), (usize, Vec<u8>)) {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to, move || {
        let listener = TcpListener::bind(addr).unwrap();
        bound_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (mut hash, mut buf, mut total) = (Blake2s256::new(), vec![0u8; 1 << 16], 0);
        loop {
            let read = stream.read(&mut buf).unwrap();
            if read == 0 {
                break;
            }
            hash.update(&buf[..read]);
            total += read;
        }
        (total, hash.finalize().to_vec())
    });
    bound_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let sender = in_netns(from, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (mut hash, mut state, mut sent) = (Blake2s256::new(), 0x2545_f491_4f6c_dd1du64, 0);
        let mut chunk = vec![0u8; 1 << 16];
        while sent < TRANSFER {
            for word in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
            let len = chunk.len().min(TRANSFER - sent);
            stream.write_all(&chunk[..len]).unwrap();
            hash.update(&chunk[..len]);
            sent += len;
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        (sent, hash.finalize().to_vec())
    });
    (sender.join().unwrap(), receiver.join().unwrap())
}
