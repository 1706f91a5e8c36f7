//! skywired as a system service: `systemd/install.sh` into a temporary DESTDIR lays out every
//! file it promises with the right modes and its uninstall removes them, keeping a changed
//! config; its sysusers.d and tmpfiles.d entries make the user and its state folder; the unit
//! passes `systemd-analyze verify` and scores at most 1.5 with
//! `systemd-analyze security`; and the daemon works with what the unit leaves it — as a user of
//! its own with CAP_NET_ADMIN alone (ambient), no new privileges, a read-only file system but for
//! its folder, and a /proc that shows only its own processes and no system files — carrying a
//! full-tunnel VPN between two namespaces, managing a signal app, launching apps with no
//! capabilities but those their entry names, and reloading its config through the unit's
//! `ExecReload` with the VPN and the apps left running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::machine::{require, require_root};
use common::netns::{in_netns, ip, snapshot, Namespaces};
use common::users::{copy_program, programs_for_everyone, TestUser};
use common::{visctl_json, wait_until, TempDir, SKYWIRED, VISCTL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skywire_dataplane::{NodeKey, SecretKey};

const WAIT: Duration = Duration::from_secs(20);
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NET_ADMIN: u64 = 1 << 12;

fn install_script() -> PathBuf {
    Path::new(REPO).join("systemd/install.sh")
}

/// The folder of the built `skywired` and `visctl`, which the script installs.
fn bin_dir() -> PathBuf {
    Path::new(SKYWIRED).parent().unwrap().to_path_buf()
}

/// Runs `systemd/install.sh ARGS` with `DESTDIR=destdir`.
fn run_script(destdir: &Path, args: &[&str]) -> Output {
    Command::new(install_script())
        .args(args)
        .env("DESTDIR", destdir)
        .output()
        .unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file under `root`, by its path inside it, with its permission bits.
fn files(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, u32>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, found);
            } else {
                let inside = Path::new("/").join(path.strip_prefix(root).unwrap());
                found.insert(
                    inside.display().to_string(),
                    meta.permissions().mode() & 0o7777,
                );
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(root, root, &mut found);
    found
}

#[test]
fn install_lays_out_every_file_and_uninstall_removes_them() {
    let dir = TempDir::new("install");
    let destdir = dir.path("root");
    let installed = run_script(&destdir, &["--bin-dir", bin_dir().to_str().unwrap()]);
    assert!(installed.status.success(), "{}", show(&installed));

    let config = "/etc/skywire/config.yaml";
    let promised: BTreeMap<String, u32> = [
        ("/usr/local/bin/skywired", 0o755),
        ("/usr/local/bin/visctl", 0o755),
        ("/usr/local/lib/systemd/system/skywired.service", 0o644),
        ("/usr/local/lib/sysusers.d/skywire.conf", 0o644),
        ("/usr/local/lib/tmpfiles.d/skywire.conf", 0o644),
        (config, 0o644),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_owned(), mode))
    .collect();
    assert_eq!(files(&destdir), promised, "{}", show(&installed));
    for (source, target) in [
        (SKYWIRED.to_owned(), "/usr/local/bin/skywired"),
        (VISCTL.to_owned(), "/usr/local/bin/visctl"),
        (
            format!("{REPO}/systemd/skywired.service"),
            "/usr/local/lib/systemd/system/skywired.service",
        ),
        (
            format!("{REPO}/systemd/sysusers.conf"),
            "/usr/local/lib/sysusers.d/skywire.conf",
        ),
        (
            format!("{REPO}/systemd/tmpfiles.conf"),
            "/usr/local/lib/tmpfiles.d/skywire.conf",
        ),
        (format!("{REPO}/systemd/config.yaml"), config),
    ] {
        assert!(
            fs::read(&source).unwrap() == fs::read(destdir.join(&target[1..])).unwrap(),
            "{target} is not a copy of {source}"
        );
    }
    // The skywire user reads the config through its folder.
    let config_dir = fs::metadata(destdir.join("etc/skywire")).unwrap();
    assert_eq!(config_dir.permissions().mode() & 0o7777, 0o755);
    let text = String::from_utf8_lossy(&installed.stdout);
    assert!(text.contains(&format!("installed {config}")), "{text}");

    // A second install keeps a config that was changed.
    let installed_config = destdir.join(&config[1..]);
    let mut changed = fs::read_to_string(&installed_config).unwrap();
    changed.push_str("log_level: debug\n");
    fs::write(&installed_config, &changed).unwrap();
    let again = run_script(&destdir, &["--bin-dir", bin_dir().to_str().unwrap()]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(
        show(&again).contains(&format!("kept {config}")),
        "{}",
        show(&again)
    );
    assert_eq!(fs::read_to_string(&installed_config).unwrap(), changed);

    // Uninstall removes what it installed and keeps the changed config.
    let removed = run_script(&destdir, &["uninstall"]);
    assert!(removed.status.success(), "{}", show(&removed));
    let left = files(&destdir);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        [config],
        "{}",
        show(&removed)
    );
    assert!(show(&removed).contains("kept /etc/skywire/config.yaml: it differs"));
    assert_eq!(fs::read_to_string(&installed_config).unwrap(), changed);

    // An unchanged config goes too, with its folder.
    fs::copy(format!("{REPO}/systemd/config.yaml"), &installed_config).unwrap();
    let removed = run_script(&destdir, &["uninstall"]);
    assert!(removed.status.success(), "{}", show(&removed));
    assert!(files(&destdir).is_empty(), "{}", show(&removed));
    assert!(!destdir.join("etc/skywire").exists());

    // Binaries that are not there are named, and nothing is installed.
    let missing = run_script(&destdir, &["--bin-dir", "/nonexistent-skywire"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        show(&missing).contains("/nonexistent-skywire/skywired is missing"),
        "{}",
        show(&missing)
    );
    assert!(files(&destdir).is_empty());
}

#[test]
fn the_sysusers_and_tmpfiles_entries_make_the_user_and_its_state_folder() {
    const TEST: &str = "the_sysusers_and_tmpfiles_entries_make_the_user_and_its_state_folder";
    if !require_root(TEST)
        || !require("systemd-sysusers", TEST)
        || !require("systemd-tmpfiles", TEST)
    {
        return;
    }
    let dir = TempDir::new("entries");
    let root = dir.path("root");
    let installed = run_script(&root, &["--bin-dir", bin_dir().to_str().unwrap()]);
    assert!(installed.status.success(), "{}", show(&installed));
    // Inside the temporary root, as a live install runs them.
    fs::create_dir_all(root.join("etc")).unwrap();
    // A key left by root before the unit ran: it becomes the user's.
    let key = dir.write("root/var/lib/skywire/node.key", "a key\n");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let sysusers = root.join("usr/local/lib/sysusers.d/skywire.conf");
    let tmpfiles = root.join("usr/local/lib/tmpfiles.d/skywire.conf");
    for (tool, args) in [
        ("systemd-sysusers", vec![sysusers.as_os_str()]),
        (
            "systemd-tmpfiles",
            vec!["--create".as_ref(), tmpfiles.as_os_str()],
        ),
    ] {
        let output = Command::new(tool)
            .arg(format!("--root={}", root.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{tool}: {}", show(&output));
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|line| line.starts_with("skywire:"))
        .unwrap_or_else(|| panic!("no skywire user: {passwd}"));
    let fields: Vec<&str> = line.split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(uid != 0 && uid < 1000, "a system user: {line}");
    assert_eq!(fields[5], "/var/lib/skywire", "{line}");
    let group = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group
        .lines()
        .any(|line| line.starts_with(&format!("skywire:x:{gid}:"))));
    for (path, mode) in [(root.join("var/lib/skywire"), 0o700), (key, 0o600)] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (uid, gid, mode),
            "{}",
            path.display()
        );
    }
}

/// The exposure `systemd-analyze security` must not exceed, in its tenths.
const EXPOSURE_TARGET: u32 = 15;

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_1_5() {
    const TEST: &str = "the_unit_verifies_and_its_exposure_is_at_most_1_5";
    if !require("systemd-analyze", TEST) {
        return;
    }
    // The unit as installed, with its programs there: `verify` checks that they exist. Only
    // their folder is rewritten, to the temporary root's.
    let dir = TempDir::new("unit");
    let destdir = dir.path("root");
    let installed = run_script(&destdir, &["--bin-dir", bin_dir().to_str().unwrap()]);
    assert!(installed.status.success(), "{}", show(&installed));
    let unit = destdir.join("usr/local/lib/systemd/system/skywired.service");
    let text = fs::read_to_string(&unit).unwrap();
    let programs = destdir.join("usr/local/bin");
    let rewritten = text.replace("/usr/local/bin/", &format!("{}/", programs.display()));
    assert_ne!(rewritten, text);
    let copy = dir.write("verify/skywired.service", &rewritten);
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        show(&verify)
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--threshold={EXPOSURE_TARGET}"))
        .arg(&unit)
        .output()
        .unwrap();
    let report = show(&security);
    let marker = "Overall exposure level for skywired.service: ";
    let at = report.find(marker).unwrap_or_else(|| panic!("{report}")) + marker.len();
    let level = report[at..].split_whitespace().next().unwrap();
    let (whole, tenths) = level.split_once('.').unwrap();
    let tenths: u32 = whole.parse::<u32>().unwrap() * 10 + tenths.parse::<u32>().unwrap();
    println!("systemd-analyze security: exposure {level}");
    assert!(
        tenths <= EXPOSURE_TARGET && security.status.success(),
        "the unit's exposure is {level}, above the target of 1.5:\n{report}"
    );
}

/// What the test's wrapper does before it runs skywired as the unit would: its own /proc with
/// only the user's processes and no system files (ProtectProc=invisible, ProcSubset=pid), the
/// TUN device as udev makes it (mode 0666), everything read-only but the node's folder
/// (ProtectSystem=strict, StateDirectory=, RuntimeDirectory=), then the user with CAP_NET_ADMIN
/// alone, ambient, and no new privileges. `ip netns exec` gives it a mount namespace of its own
/// whose mounts reach nothing outside.
const SANDBOX: &str = r#"set -e
mount -t proc -o subset=pid,hidepid=invisible proc /proc
mount -t tmpfs -o mode=0755 tmpfs /dev/net
mknod -m 0666 /dev/net/tun c 10 200
mount --bind "$DIR" "$DIR"
mount -o remount,bind,ro /
exec setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups \
    --inh-caps=-all,+net_admin --ambient-caps=-all,+net_admin \
    --bounding-set=-all,+net_admin --no-new-privs "$@"
"#;

/// A `skywired` run as `user` in namespace `ns`, with its config, key, state and socket in a
/// folder of its own.
struct ServiceNode {
    dir: TempDir,
    child: Option<Child>,
}

impl ServiceNode {
    fn start(
        ns: &str,
        user: &TestUser,
        secret: &SecretKey,
        neighbour: (NodeKey, Option<&str>),
        extra: &str,
    ) -> ServiceNode {
        let dir = TempDir::new("service");
        let (key, endpoint) = neighbour;
        let endpoint = endpoint
            .map(|endpoint| format!("    endpoint: \"{endpoint}\"\n"))
            .unwrap_or_default();
        let config = dir.write(
            "config.yaml",
            &format!(
                "node:\n  key_file: node.key\n  state_dir: state\nlisten: \"[::]:7777\"\n\
                 control:\n  socket: visctl.sock\n  signal_port: 0\nliveness:\n  \
                 probe_interval_ms: 200\n  dead_after_ms: 5000\nlog_level: debug\n\
                 neighbours:\n  - key: {key}\n{endpoint}{extra}"
            ),
        );
        let key_file = dir.write("node.key", &format!("{}\n", secret.to_base64()));
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
        for path in [dir.root(), &config, &key_file] {
            user.own(path);
        }
        let log = fs::File::create(dir.path("skywired.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "sh", "-c", SANDBOX, "sandbox", SKYWIRED,
            ])
            .arg("--config")
            .arg(&config)
            .env("DIR", dir.root())
            .env("RUN_UID", user.uid.to_string())
            .env("RUN_GID", user.gid.to_string())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = ServiceNode {
            dir,
            child: Some(child),
        };
        wait_until("skywired answering", WAIT, || {
            node.assert_running();
            node.visctl(&["status"]).is_some()
        });
        node
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path("skywired.log")).unwrap_or_default()
    }

    fn assert_running(&self) {
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        assert!(
            !state.is_empty() && !state.contains(") Z"),
            "skywired exited:\n{}",
            self.log()
        );
    }

    /// `visctl --json ARGS`: the reply, or `None` when the command failed.
    fn visctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        visctl_json(&self.dir.path("visctl.sock"), args)
    }

    fn ask(&self, args: &[&str]) -> serde_json::Value {
        self.visctl(args)
            .unwrap_or_else(|| panic!("visctl {args:?} failed\n--- log ---\n{}", self.log()))
    }

    /// SIGTERM, and a clean exit.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "skywired exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for ServiceNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// The `CapXxx` lines of `/proc/PID/status`, and its `Uid` and `NoNewPrivs`.
fn status_of(pid: u32) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

fn capability_set(status: &BTreeMap<String, String>, key: &str) -> u64 {
    u64::from_str_radix(&status[key], 16).unwrap()
}

const HOST4: &str = "10.99.0.1";

/// Runs the unit's `ExecReload` command line as `user`, as systemd does, with `visctl` (a copy
/// the user can run) and `socket` in place of the installed ones.
fn exec_reload(user: &TestUser, visctl: &Path, socket: &Path) -> Output {
    let unit = fs::read_to_string(Path::new(REPO).join("systemd/skywired.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecReload="))
        .expect("the unit has an ExecReload");
    let mut words = line.split_whitespace().map(|word| match word {
        "/usr/local/bin/visctl" => visctl.display().to_string(),
        "/run/skywire/visctl.sock" => socket.display().to_string(),
        other => other.to_owned(),
    });
    let mut command = Command::new(words.next().unwrap());
    command.args(words).stdin(Stdio::null());
    user.run(&mut command);
    command.output().unwrap()
}

#[test]
fn skywired_works_as_its_own_user_with_cap_net_admin_alone() {
    const TEST: &str = "skywired_works_as_its_own_user_with_cap_net_admin_alone";
    if !require_root(TEST)
        || !require("ip", TEST)
        || !require("setpriv", TEST)
        || !require("useradd", TEST)
    {
        return;
    }
    let user = TestUser::create("svc", &[]);
    let ns = Namespaces::new("skysvc", 2);
    let (a_ns, c_ns) = (ns.name(0), ns.name(1));
    ns.link(0, "10.205.1.1", 1, "10.205.1.2");
    ns.add_host(1, HOST4);
    ip(&["-n", &a_ns, "route", "add", "default", "via", "10.205.1.2"]);
    let before = [snapshot(&a_ns), snapshot(&c_ns)];

    let (a, c) = (SecretKey::generate(), SecretKey::generate());
    let server = format!(
        "vpn:\n  server:\n    enabled: true\n    tun: skysrv\n    pool4: 10.77.0.0/24\n    \
         pool6: \"fd77::/64\"\n    allow: [{}]\n",
        a.public()
    );
    let mut c_node = ServiceNode::start(&c_ns, &user, &c, (a.public(), None), &server);
    // The programs the nodes' user runs itself (the example app, visctl for ExecReload) as
    // copies it can reach: the build's folder may be closed to others.
    let programs = TempDir::new("service-programs");
    let (_, visctl) = programs_for_everyone(&programs);
    let example = programs.path("bin/skywire-signal-example");
    copy_program(
        &Path::new(SKYWIRED).with_file_name("skywire-signal-example"),
        &example,
    );
    let client = format!(
        "vpn:\n  client:\n    enabled: true\n    tun: skycli\n    server: {}\n    \
         routes: [\"0.0.0.0/0\", \"::/0\"]\n\
         apps:\n  example:\n    path: {}\n  plain:\n    path: sleep\n    default_args: [\"600\"]\n  \
         net-admin:\n    path: sleep\n    default_args: [\"600\"]\n    \
         capabilities: [CAP_NET_ADMIN]\n",
        c.public(),
        example.display()
    );
    let mut a_node = ServiceNode::start(
        &a_ns,
        &user,
        &a,
        (c.public(), Some("10.205.1.2:7777")),
        &client,
    );

    // The premise: both run as the user, with CAP_NET_ADMIN alone and no new privileges.
    for node in [&a_node, &c_node] {
        let status = status_of(node.pid());
        let uid = user.uid.to_string();
        assert_eq!(status["Uid"].split_whitespace().next(), Some(uid.as_str()));
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(capability_set(&status, set), NET_ADMIN, "skywired's {set}");
        }
        assert_eq!(status["NoNewPrivs"], "1");
        let mounts = fs::read_to_string(format!("/proc/{}/mountinfo", node.pid())).unwrap();
        let mount_of = |point: &str| {
            mounts
                .lines()
                .rfind(|line| line.split_whitespace().nth(4) == Some(point))
                .unwrap_or_else(|| panic!("no {point} in {mounts}"))
                .to_owned()
        };
        let proc = mount_of("/proc");
        assert!(
            proc.contains("subset=pid") && proc.contains("hidepid=invisible"),
            "{proc}"
        );
        assert!(mount_of("/").contains(" ro,"), "{}", mount_of("/"));
    }

    // The full tunnel comes up: TUN devices, addresses, routes and rules through `ip`, marked
    // datagrams (SO_MARK), forced socket buffers, the client's undo file in its state folder.
    let mut last = serde_json::Value::Null;
    wait_until("the VPN client to come up", WAIT, || {
        last = a_node.ask(&["vpn", "status"])["result"]["client"].clone();
        last["state"] == "up"
    });
    let route = ip(&["-n", &a_ns, "route", "get", "192.0.2.1"]);
    assert!(route.contains("dev skycli"), "{route}");
    assert!(a_node.dir.path("state/vpn-client-routes.yaml").exists());
    for node in [&a_node, &c_node] {
        let log = node.log();
        for refused in ["buffer is", "cannot mark", "failed", "denied"] {
            assert!(!log.contains(refused), "{refused:?} in the log:\n{log}");
        }
    }
    // A TCP exchange with the host behind the server, through the tunnel.
    let target: SocketAddr = format!("{HOST4}:5401").parse().unwrap();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server = in_netns(&c_ns, move || {
        let listener = TcpListener::bind(target).unwrap();
        bound_tx.send(()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(b"hello from C\n").unwrap();
        (peer, line)
    });
    bound_rx.recv_timeout(WAIT).unwrap();
    let answer = in_netns(&a_ns, move || {
        let stream = TcpStream::connect_timeout(&target, WAIT).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        (&stream).write_all(b"hello from A\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        line
    })
    .join()
    .unwrap();
    let (peer, line) = server.join().unwrap();
    assert_eq!(
        (line.as_str(), answer.as_str()),
        ("hello from A\n", "hello from C\n")
    );
    let client_ip = last["ipv4"].as_str().unwrap().split('/').next().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        client_ip,
        "it came through the tunnel"
    );

    // Apps: a signal client registers (its socket found through /proc/self/net/tcp and its own
    // /proc/PID/fd), and apps keep no capability but those their entry names.
    let started = a_node.ask(&["start", "example"]);
    let id = started["result"]["started"]["id"].as_u64().unwrap();
    wait_until("the example app to register", WAIT, || {
        a_node.ask(&["list_apps"])["result"]["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|app| app["id"] == id && app["registered"] == true)
    });
    a_node.ask(&["ping", &id.to_string()]);
    for (app, kept) in [("plain", 0), ("net-admin", NET_ADMIN)] {
        let started = a_node.ask(&["start", app]);
        let pid = u32::try_from(started["result"]["started"]["pid"].as_u64().unwrap()).unwrap();
        let status = status_of(pid);
        for set in ["CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(capability_set(&status, set), kept, "{app}'s {set}");
        }
        // Not root, the daemon leaves these as they are: they give a program nothing unless
        // its file carries capabilities of its own.
        assert_eq!(
            capability_set(&status, "CapInh"),
            NET_ADMIN,
            "{app}'s CapInh"
        );
        assert_eq!(
            capability_set(&status, "CapBnd"),
            NET_ADMIN,
            "{app}'s CapBnd"
        );
    }

    // `systemctl reload`: the unit's ExecReload, run as the user. A new SOCKS section starts
    // the SOCKS server alone: the VPN client keeps its device and its lease, and the launched
    // apps keep their processes.
    let apps_before = a_node.ask(&["list_apps"])["result"]["apps"].clone();
    let device_before = ip(&["-n", &a_ns, "-o", "link", "show", "dev", "skycli"]);
    let config = a_node.dir.path("config.yaml");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("socks:\n  server:\n    allow: [{}]\n", c.public()));
    fs::write(&config, text).unwrap();
    let reloaded = exec_reload(&user, &visctl, &a_node.dir.path("visctl.sock"));
    assert!(
        reloaded.status.success(),
        "{}\n--- log ---\n{}",
        show(&reloaded),
        a_node.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&reloaded.stdout).trim(),
        format!(
            "reloaded {}:\n  the SOCKS server started with its new section",
            config.display()
        )
    );
    assert_eq!(
        a_node.ask(&["socks", "status"])["result"]["server"]["state"],
        "running"
    );
    let vpn = a_node.ask(&["vpn", "status"])["result"]["client"].clone();
    assert_eq!(
        (&vpn["state"], &vpn["reconnects"]),
        (&last["state"], &last["reconnects"])
    );
    assert_eq!(vpn["ipv4"], last["ipv4"]);
    assert_eq!(
        ip(&["-n", &a_ns, "-o", "link", "show", "dev", "skycli"]),
        device_before,
        "the same TUN device (its index) as before"
    );
    assert_eq!(
        a_node.ask(&["list_apps"])["result"]["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|app| (&app["id"], &app["pid"]))
            .collect::<Vec<_>>(),
        apps_before
            .as_array()
            .unwrap()
            .iter()
            .map(|app| (&app["id"], &app["pid"]))
            .collect::<Vec<_>>(),
        "the launched apps run on"
    );

    // A clean stop undoes everything, as the user.
    a_node.stop();
    c_node.stop();
    assert_eq!(snapshot(&a_ns), before[0], "A is as it was");
    assert_eq!(snapshot(&c_ns), before[1], "C is as it was");
}
