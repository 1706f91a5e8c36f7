//! Launched apps end to end: real `skywired` processes with an `apps:` catalog, driven through
//! `visctl`. The example signal app is started, listed, pinged, measured, attached to and shut
//! down; a SIGKILLed daemon app comes back; a second skywired started from the catalog answers
//! as a signal client; the Python signal client (written from the protocol's description)
//! answers too; scripts run with `-f`; bad input of every kind gets a clear error while 50
//! clients keep being answered; a stopped skywired leaves no app behind, and neither does a
//! SIGKILLed one; and apps start with no capabilities (or only those their entry names) and a
//! clean environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::control::ControlSocket;
use common::machine::{is_root, require};
use common::{json, wait_until, Daemon, Launch, TempDir, SKYWIRED, VISCTL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use skywire_dataplane::SecretKey;

const WAIT: Duration = Duration::from_secs(20);

/// The example signal app, a binary of the control crate, built beside skywired by
/// `cargo test --workspace`.
fn example_app() -> PathBuf {
    let path = Path::new(SKYWIRED).with_file_name("skywire-signal-example");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p skywire-control --bin skywire-signal-example` (`cargo test --workspace` builds it)",
        path.display()
    );
    path
}

/// The Python signal client (it runs with `python3`: ask `require` first).
fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signal_client.py")
}

/// An `apps:` section with the example app as `example` (whose arguments are free) and as the
/// daemon `ex-daemon`, the Python client as `py`, and `more` appended.
fn catalog(more: &str) -> String {
    let example = example_app();
    format!(
        "apps:\n  example:\n    desc: the example signal app\n    path: {example}\n    \
         args: free\n    help: |\n      Prints a tick every second and echoes its input.\n  \
         ex-daemon:\n    daemon: true\n    desc: the example app, restarted when it exits\n    \
         path: {example}\n  py:\n    desc: the Python signal client\n    path: {python}\n{more}",
        example = example.display(),
        python = python_client().display(),
    )
}

fn start_daemon(dir: &TempDir, name: &str, more_apps: &str) -> Daemon {
    Daemon::start_with(dir, name, &SecretKey::generate(), &[], &catalog(more_apps))
}

/// Runs `visctl --json ARGS…`, which must fail, and returns its reply and standard error.
fn ask_fails(daemon: &Daemon, args: &[&str]) -> (Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = daemon.visctl(&all);
    assert_eq!(
        output.status.code(),
        Some(1),
        "visctl {args:?} should fail: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        json(&output),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts catalog app `name`; returns its id and pid.
fn start_app(daemon: &Daemon, args: &[&str]) -> (u64, u32) {
    let mut all = vec!["start"];
    all.extend_from_slice(args);
    let reply = daemon.ask(&all);
    let started = &reply["result"]["started"];
    (
        started["id"].as_u64().unwrap(),
        u32::try_from(started["pid"].as_u64().unwrap()).unwrap(),
    )
}

/// App `id` as `list_apps -f` shows it.
fn app_row(daemon: &Daemon, id: u64) -> Value {
    let reply = daemon.ask(&["list_apps", "-f"]);
    reply["result"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|app| app["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("app {id} is not listed: {reply}"))
}

fn wait_registered(daemon: &Daemon, id: u64) {
    wait_until(&format!("app {id} to register"), WAIT, || {
        app_row(daemon, id)["registered"] == true
    });
}

/// Starts catalog app `name` and waits until it has registered with the signal server; returns
/// its id and pid.
fn start_registered(daemon: &Daemon, name: &str) -> (u64, u32) {
    let (id, pid) = start_app(daemon, &[name]);
    wait_registered(daemon, id);
    (id, pid)
}

/// The state letter of process `pid` in /proc (`Z` for a zombie), or `None` once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

fn is_gone(pid: u32) -> bool {
    proc_state(pid).is_none()
}

/// The signal server's address, from the daemon's log.
fn signal_addr(daemon: &Daemon) -> SocketAddr {
    let log = daemon.log();
    let marker = "signal server on ";
    let at = log.find(marker).expect("the log names the signal server") + marker.len();
    let end = log[at..].find(';').unwrap() + at;
    log[at..end].parse().unwrap()
}

/// A `visctl` whose standard input and output the test holds.
struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Interactive {
    fn spawn(daemon: &Daemon, args: &[&str]) -> Interactive {
        let mut child = Command::new(VISCTL)
            .arg("--socket")
            .arg(&daemon.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Interactive {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for an output line containing `text`.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Closes standard input and waits (with a deadline) for visctl's exit code.
    fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("visctl did not exit; saw {:?}", self.seen);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn example_app_starts_lists_pings_measures_and_shuts_down() {
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");

    let apps = daemon.ask(&["apps"]);
    let names: Vec<&str> = apps["result"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ex-daemon", "example", "py"]);
    let text = String::from_utf8(daemon.visctl(&["apps"]).stdout).unwrap();
    assert!(text.contains("the example signal app"), "{text}");
    let help = String::from_utf8(daemon.visctl(&["help", "example"]).stdout).unwrap();
    assert!(help.contains("echoes its input"), "{help}");
    assert!(help.contains("usage: start [-a] example"), "{help}");

    // The first id is 1, the command line is the catalog's path with the given arguments.
    let reply = daemon.ask(&["start", "example", "--some", "two words"]);
    let started = &reply["result"]["started"];
    assert_eq!(started["id"], 1, "{reply}");
    let example = example_app();
    assert_eq!(
        started["command_line"],
        serde_json::json!([example.display().to_string(), "--some", "two words"])
    );
    let text = reply["text"].as_str().unwrap();
    assert!(text.starts_with("started app 1 (example), pid "), "{text}");
    // Other arguments than its default ones only for an entry that says `args: free`.
    let (reply, _) = ask_fails(&daemon, &["start", "py", "--id", "1"]);
    assert_eq!(
        reply["error"],
        "app py runs only with its default arguments (none): its catalog entry does not say \
         `args: free`; start it without arguments"
    );
    let help = String::from_utf8(daemon.visctl(&["help", "py"]).stdout).unwrap();
    assert!(help.contains("usage: start [-a] py\n"), "{help}");
    let pid = u32::try_from(started["pid"].as_u64().unwrap()).unwrap();
    wait_registered(&daemon, 1);

    let list = daemon.ask(&["la"]);
    let row = &list["result"]["apps"][0];
    assert_eq!(
        (&row["id"], &row["name"], &row["state"], &row["pid"]),
        (
            &Value::from(1),
            &Value::from("example"),
            &Value::from("running"),
            &Value::from(pid)
        )
    );

    let pong = daemon.ask(&["ping", "1"]);
    let rtt = pong["result"]["rtt_ms"].as_f64().unwrap();
    assert!((0.0..5_000.0).contains(&rtt), "{pong}");

    wait_until("a tick", WAIT, || {
        daemon.ask(&["logs", "1"])["result"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["line"] == "tick 1")
    });
    let usage = daemon.ask(&["ru", "1"]);
    let usage = &usage["result"];
    assert_eq!(usage["pid"], pid);
    assert!(usage["rss_bytes"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["threads"].as_u64().unwrap() >= 2, "{usage}");
    assert!(usage["open_files"].as_u64().unwrap() >= 3, "{usage}");
    assert!(usage["cpu_percent"].as_f64().unwrap() >= 0.0, "{usage}");
    assert!(usage["uptime_secs"].as_f64().unwrap() > 0.0, "{usage}");
    assert_eq!(usage["restarts"], 0);
    assert!(usage["reported"]["Ticks"].as_u64().unwrap() >= 1, "{usage}");
    let text = String::from_utf8(daemon.visctl(&["res_usage", "1"]).stdout).unwrap();
    assert!(text.contains("memory") && text.contains("Ticks"), "{text}");

    let stopped = daemon.ask(&["sd", "1"]);
    let report = &stopped["result"];
    assert_eq!(report["how"], "signal", "{stopped}");
    assert_eq!(report["pid"], pid);
    wait_until("the app's process to go", WAIT, || is_gone(pid));

    // Gone from the list, kept by -f; its id is not reused.
    let list = daemon.ask(&["la"]);
    assert_eq!(list["result"]["apps"], serde_json::json!([]), "{list}");
    assert_eq!(app_row(&daemon, 1)["state"], "exited");
    let (reply, _) = ask_fails(&daemon, &["ping", "1"]);
    assert!(
        reply["error"].as_str().unwrap().contains("not running"),
        "{reply}"
    );
    assert_eq!(start_app(&daemon, &["example"]).0, 2);
    let (reply, stderr) = ask_fails(&daemon, &["sd", "7"]);
    assert_eq!(
        reply["error"],
        "no app with id 7: `list_apps` shows the running apps and their ids"
    );
    assert!(stderr.is_empty(), "{stderr}");
    let output = daemon.visctl(&["ru", "7"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("visctl: res_usage: no app with id 7"));
}

#[test]
fn attach_streams_output_and_sends_input() {
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");
    let (id, _) = start_app(&daemon, &["example"]);

    let mut attached = Interactive::spawn(&daemon, &["attach", &id.to_string()]);
    attached.expect("tick");
    attached.send("hello app");
    attached.expect("echo: hello app");
    attached.send("'quotes' and \"more\"");
    attached.expect("echo: 'quotes' and \"more\"");
    // The end of input detaches; the app keeps running.
    assert_eq!(attached.finish(), Some(0));
    assert_eq!(app_row(&daemon, id)["state"], "running");

    // `.detach` in a session on standard input, then commands again.
    let mut session = Interactive::spawn(&daemon, &[]);
    session.send(&format!("attach {id}"));
    session.expect("tick");
    session.send("from the session");
    session.expect("echo: from the session");
    session.send(".detach");
    session.send("apps");
    session.expect("the example signal app");
    assert_eq!(session.finish(), Some(0));

    // `start -a` attaches at once; the app's exit ends the stream.
    let mut started = Interactive::spawn(&daemon, &["--json", "start", "-a", "example"]);
    let first: Value = serde_json::from_str(&started.expect("\"started\"")).unwrap();
    assert_eq!(first["result"]["attached"]["name"], "example", "{first}");
    let new_id = first["result"]["started"]["id"].as_u64().unwrap();
    started.expect("\"output\"");
    daemon.ask(&["sd", &new_id.to_string()]);
    started.expect("\"exited\"");
    let last: Value = serde_json::from_str(&started.expect("\"detached\"")).unwrap();
    assert_eq!(last["result"]["detached"]["reason"], "exited", "{last}");
    assert_eq!(started.finish(), Some(0));

    // Its output stays in the logs.
    let logs = daemon.ask(&["logs", &new_id.to_string(), "1000"]);
    let lines = logs["result"]["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|line| line["line"] == "shutting down"),
        "{logs}"
    );
    let text = String::from_utf8(daemon.visctl(&["logs", &id.to_string(), "1000"]).stdout).unwrap();
    assert!(text.contains("echo: from the session"), "{text}");
}

#[test]
fn a_killed_daemon_app_comes_back_with_a_new_pid() {
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");
    let (id, first) = start_registered(&daemon, "ex-daemon");
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let mut second = 0;
    wait_until("the restart", WAIT, || {
        let row = app_row(&daemon, id);
        if row["state"] == "running" && row["pid"] != first && row["restarts"] == 1 {
            second = u32::try_from(row["pid"].as_u64().unwrap()).unwrap();
            true
        } else {
            false
        }
    });
    assert_ne!(second, first);
    assert!(app_row(&daemon, id)["last_exit"]
        .as_str()
        .unwrap()
        .contains("SIGKILL"));
    // The old process was reaped: no zombie left.
    wait_until("the killed process to be reaped", WAIT, || is_gone(first));
    wait_registered(&daemon, id);
    let usage = daemon.ask(&["ru", &id.to_string()]);
    assert_eq!(usage["result"]["pid"], second);
    assert_eq!(usage["result"]["restarts"], 1);
    daemon.ask(&["ping", &id.to_string()]);
    // A shutdown is final: no restart after it.
    let stopped = daemon.ask(&["sd", &id.to_string()]);
    assert_eq!(stopped["result"]["how"], "signal");
    wait_until("the daemon app to go", WAIT, || is_gone(second));
    assert_eq!(app_row(&daemon, id)["state"], "exited");
}

#[test]
fn a_second_skywired_from_the_catalog_answers_ping_and_shutdown() {
    let dir = TempDir::new("apps");
    let second_dir = dir.path("second");
    let second_socket = second_dir.join("visctl.sock");
    let second_config = dir.write(
        "second/config.yaml",
        "node:\n  key_file: node.key\n  state_dir: state\nlisten: \"[::]:0\"\n\
         control:\n  socket: visctl.sock\n  signal_port: 0\nlog_level: debug\n",
    );
    let entry = format!(
        "  second-node:\n    desc: a second node on this host\n    path: {}\n    \
         default_args: [\"--config\", \"{}\"]\n",
        SKYWIRED,
        second_config.display()
    );
    let daemon = start_daemon(&dir, "node", &entry);
    let (id, pid) = start_registered(&daemon, "second-node");

    let pong = daemon.ask(&["ping", &id.to_string()]);
    assert!(pong["result"]["rtt_ms"].as_f64().is_some(), "{pong}");
    let usage = daemon.ask(&["ru", &id.to_string()]);
    let reported = &usage["result"]["reported"];
    assert_eq!(reported["Pid"], pid, "{usage}");
    let node_key = reported["Node"].as_str().unwrap().to_owned();

    // It is a node of its own, with its own socket.
    let status = Command::new(VISCTL)
        .args(["--json", "--socket"])
        .arg(&second_socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(status.status.success());
    assert_eq!(json(&status)["result"]["key"], node_key.as_str());

    let stopped = daemon.ask(&["sd", &id.to_string()]);
    let report = &stopped["result"];
    assert_eq!(report["how"], "signal", "{stopped}");
    assert_eq!(report["status"], "exit status: 0", "{stopped}");
    wait_until("the second node to go", WAIT, || is_gone(pid));
    assert!(
        !second_socket.exists(),
        "the second node left its socket behind"
    );
    let logs = daemon.ask(&["logs", &id.to_string(), "1000"]);
    let text = logs.to_string();
    assert!(text.contains("asked this node to shut down"), "{text}");
    assert!(text.contains("stopped"), "{text}");
}

#[test]
fn the_python_signal_client_answers_and_strangers_are_refused() {
    if !require(
        "python3",
        "the_python_signal_client_answers_and_strangers_are_refused",
    ) {
        return;
    }
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");
    let (id, pid) = start_registered(&daemon, "py");
    let pong = daemon.ask(&["ping", &id.to_string()]);
    assert!(pong["result"]["rtt_ms"].as_f64().is_some(), "{pong}");
    let usage = daemon.ask(&["ru", &id.to_string()]);
    assert_eq!(usage["result"]["reported"]["Client"], "python", "{usage}");

    // An id this daemon did not launch is refused, end to end.
    let refused = Command::new(python_client())
        .args(["--id", "999", "--address"])
        .arg(signal_addr(&daemon).to_string())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "refused\n");
    // So is the id of a running app from a process that is not it.
    let refused = Command::new(python_client())
        .args(["--id", &id.to_string(), "--address"])
        .arg(signal_addr(&daemon).to_string())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");

    let stopped = daemon.ask(&["sd", &id.to_string()]);
    assert_eq!(stopped["result"]["how"], "signal", "{stopped}");
    assert_eq!(stopped["result"]["status"], "exit status: 0");
    wait_until("the Python client to go", WAIT, || is_gone(pid));
    let logs = daemon.ask(&["logs", &id.to_string()]).to_string();
    for event in ["registered", "ping", "resource usage", "shutdown"] {
        assert!(logs.contains(event), "{event} missing: {logs}");
    }
}

#[test]
fn scripts_run_with_f_and_stop_at_the_first_failing_line() {
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");
    let good = dir.write(
        "good.vis",
        "# start an app and look at it\napps\n\nstart example 'an argument'  # a comment\n\
         la -f\nhelp example\n",
    );
    let output = daemon.visctl(&["-f", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("started app 1 (example)"), "{stdout}");
    assert!(stdout.contains("\"an argument\""), "{stdout}");
    assert!(stdout.contains("usage: start [-a] example"), "{stdout}");

    let bad = dir.write("bad.vis", "la\n# fine so far\nping 42\nstart example\n");
    let output = daemon.visctl(&["-f", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: ping 42: no app with id 42", bad.display())),
        "{stderr}"
    );
    // It stopped there: the last line did not run.
    let list = daemon.ask(&["la"]);
    assert_eq!(
        list["result"]["apps"].as_array().unwrap().len(),
        1,
        "{list}"
    );

    // A script may attach: the lines after it are the app's input, up to `.detach`.
    let attach = dir.write(
        "attach.vis",
        "attach 1\nfrom the script\n.detach\nlogs 1 1000\n",
    );
    let output = daemon.visctl(&["-f", attach.to_str().unwrap()]);
    assert!(output.status.success());
    wait_until("the script's input to be echoed", WAIT, || {
        daemon
            .ask(&["logs", "1", "1000"])
            .to_string()
            .contains("echo: from the script")
    });
}

#[test]
fn bad_input_gets_clear_errors_while_50_clients_keep_getting_answers() {
    let dir = TempDir::new("apps");
    let daemon = start_daemon(&dir, "node", "");
    let (id, _) = start_registered(&daemon, "example");
    let socket = daemon.socket.clone();

    // 50 clients, each asking in turn, for as long as the bad input goes on.
    let (done_sender, done) = mpsc::channel::<()>();
    let done = std::sync::Arc::new(std::sync::Mutex::new(done));
    let clients: Vec<_> = (0..50)
        .map(|index| {
            let socket = socket.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut client = ControlSocket::connect(&socket);
                let mut answered = 0;
                let commands = ["la", "apps", "status", "ping 1"];
                loop {
                    let command = commands[(index + answered) % commands.len()];
                    let reply = client.command(command);
                    assert_eq!(reply["ok"], true, "{command}: {reply}");
                    answered += 1;
                    let stop = done.lock().unwrap().try_recv();
                    if answered >= 5 && stop != Err(mpsc::TryRecvError::Empty) {
                        return answered;
                    }
                }
            })
        })
        .collect();

    // A silent client and one that never ends its line: both are closed with an error, and
    // nobody waits for them meanwhile.
    let mut silent = ControlSocket::connect(&daemon.socket);
    let mut partial = ControlSocket::connect(&daemon.socket);
    partial.send(b"status");
    let hostile_signal = TcpStream::connect(signal_addr(&daemon)).unwrap();

    let cases: [(&[u8], Option<&str>, &str); 6] = [
        (
            b"frobnicate\n",
            None,
            "unknown command `frobnicate`: run `help`",
        ),
        (b"start\n", Some("start"), "needs the name of an app"),
        (b"ping one\n", Some("ping"), "`one` is not an app id"),
        (b"ping 7\n", Some("ping"), "no app with id 7"),
        (b"la \xff\xfe\n", None, "not valid UTF-8"),
        (
            b"start nothing-like-it\n",
            Some("start"),
            "no app named \"nothing-like-it\"",
        ),
    ];
    for (bytes, command, message) in cases {
        let mut client = ControlSocket::connect(&daemon.socket);
        client.send(bytes);
        let reply = client.answer();
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["command"].as_str(), command, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(message),
            "{message}: {reply}"
        );
    }
    let mut long = vec![b'x'; 70 * 1024];
    long.extend_from_slice(b"\nla\n");
    let mut client = ControlSocket::connect(&daemon.socket);
    client.send(&long);
    let reply = client.answer();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("line too long: at most 65536 bytes"),
        "{reply}"
    );
    // The connection goes on after it.
    assert_eq!(client.answer()["command"], "list_apps");

    // Through visctl too: exit status 1 and the error on standard error, 2 for bad usage.
    let output = daemon.visctl(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown command `frobnicate`"));
    let output = daemon.visctl(&["attach"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: attach ID"));
    let output = Command::new(VISCTL)
        .args(["--socket", "/nonexistent/visctl.sock", "la"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));

    let reply = silent.answer();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("no command within 10 s of connecting"),
        "{reply}"
    );
    assert_eq!(silent.lines_until_closed(), 0, "the connection is closed");
    let reply = partial.answer();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("a line was not finished within 10 s"),
        "{reply}"
    );

    // The signal port's silent client did not stall the apps either.
    daemon.ask(&["ping", &id.to_string()]);
    drop(hostile_signal);
    drop(done_sender);
    for client in clients {
        assert!(client.join().unwrap() >= 5);
    }
}

#[test]
fn a_stopped_skywired_leaves_no_app_behind() {
    let with_python = require("python3", "a_stopped_skywired_leaves_no_app_behind");
    let dir = TempDir::new("apps");
    let stubborn = "  stubborn:\n    desc: ignores SIGTERM\n    path: /bin/sh\n    \
                    default_args: [\"-c\", \"trap '' TERM; echo ready; while :; do sleep 1; done\"]\n  \
                    deaf:\n    desc: the Python client, deaf to the signal shutdown\n    \
                    path: PYTHON\n    default_args: [\"--ignore-shutdown\"]\n";
    let stubborn = stubborn.replace("PYTHON", &python_client().display().to_string());
    let mut daemon = start_daemon(&dir, "node", &stubborn);
    // The apps by name: signal clients, then one that is not.
    let mut signal_clients = vec!["example", "ex-daemon"];
    if with_python {
        signal_clients.extend(["py", "deaf"]);
    }
    let mut started = Vec::new();
    for app in signal_clients.iter().chain(&["stubborn"]) {
        let (id, pid) = start_app(&daemon, &[*app]);
        started.push((*app, id, pid));
    }
    let id_of = |name: &str| started.iter().find(|(app, ..)| *app == name).unwrap().1;
    for app in &signal_clients {
        wait_registered(&daemon, id_of(app));
    }
    let stubborn_id = id_of("stubborn").to_string();
    wait_until("the stubborn app to start", WAIT, || {
        daemon
            .ask(&["logs", &stubborn_id])
            .to_string()
            .contains("ready")
    });

    let stopping = Instant::now();
    let status = daemon.terminate();
    let took = stopping.elapsed();
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(took < Duration::from_secs(20), "the stop took {took:?}");
    for (app, _, pid) in &started {
        assert!(
            is_gone(*pid),
            "{app}'s process {pid} is still there: {:?}",
            proc_state(*pid)
        );
    }
    let log = daemon.log();
    let mut endings = vec![("stubborn", "Sigkill"), ("example", "Signal")];
    if with_python {
        endings.push(("deaf", "Sigterm"));
    }
    for (app, how) in endings {
        let line = format!("app {} ({app}) stopped ({how})", id_of(app));
        assert!(log.contains(&line), "{line} missing:\n{log}");
    }
    assert!(!daemon.socket.exists());
}

#[test]
fn a_sigkilled_skywired_leaves_no_app_behind() {
    let dir = TempDir::new("apps");
    let stubborn = "  stubborn:\n    desc: ignores SIGTERM\n    path: /bin/sh\n    \
                    default_args: [\"-c\", \"trap '' TERM; echo ready; while :; do sleep 1; done\"]\n";
    let mut daemon = start_daemon(&dir, "node", stubborn);
    let mut started = Vec::new();
    for app in ["example", "ex-daemon", "stubborn"] {
        let (id, pid) = start_app(&daemon, &[app]);
        started.push((app, id, pid));
    }
    for (app, id, _) in &started {
        if *app != "stubborn" {
            wait_registered(&daemon, *id);
        }
    }

    daemon.kill();
    // Gone, or a zombie that only waits for whoever adopted it to reap it.
    let stopped = |pid: u32| proc_state(pid).is_none_or(|state| state == 'Z');
    for (app, _, pid) in &started {
        wait_until(
            &format!("{app} (pid {pid}) to die with skywired"),
            Duration::from_secs(30),
            || stopped(*pid),
        );
    }
}

/// The capability sets of process `pid`, from its status file: `CapInh`, `CapPrm`, `CapEff`,
/// `CapBnd` and `CapAmb`, by name.
fn capabilities(pid: u32) -> Vec<(String, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|line| line.starts_with("Cap"))
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (
                name.to_owned(),
                u64::from_str_radix(value.trim(), 16).unwrap(),
            )
        })
        .collect()
}

/// The environment process `pid` was started with, sorted.
fn environment(pid: u32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut vars: Vec<String> = environ
        .split(|byte| *byte == 0)
        .filter(|var| !var.is_empty())
        .map(|var| String::from_utf8_lossy(var).into_owned())
        .collect();
    vars.sort();
    vars
}

#[test]
fn apps_start_with_no_capabilities_and_a_clean_environment() {
    let dir = TempDir::new("apps");
    let notify_path = dir.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let apps = "  plain:\n    path: sleep\n    default_args: [\"600\"]\n  \
                net-admin:\n    path: sleep\n    default_args: [\"600\"]\n    \
                capabilities: [CAP_NET_ADMIN]\n    \
                env: {GREETING: hello, PATH: /bin, SKYWIRE_APP_SOCKET: /elsewhere}\n";
    let daemon = Daemon::launch_alone(
        &dir,
        &Launch {
            extra: &catalog(apps),
            env: &[
                ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
                ("SKYWIRE_PRIVATE", "not for apps"),
            ],
            ..Launch::default()
        },
    );
    // skywired had NOTIFY_SOCKET, and used it.
    let mut ready = [0; 64];
    let len = notify.recv(&mut ready).unwrap();
    assert!(
        String::from_utf8_lossy(&ready[..len]).contains("READY=1"),
        "{:?}",
        &ready[..len]
    );

    let signal = signal_addr(&daemon);
    let app_socket = daemon.dir.join("state/apps.sock");
    let (id, pid) = start_app(&daemon, &["plain"]);
    for (name, value) in capabilities(pid) {
        // Not root, skywired cannot clear the bounding set, and need not: without file
        // capabilities a program gets nothing from it.
        if name == "CapBnd" && !is_root() {
            continue;
        }
        assert_eq!(value, 0, "app {id}'s {name} is {value:#x}");
    }
    assert_eq!(
        environment(pid),
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            "SIGNAL_CLIENT=true".to_owned(),
            format!("SIGNAL_CLIENT_ID={id}"),
            format!("SIGNAL_SERVER_ADDRESS={signal}"),
            format!("SKYWIRE_APP_SOCKET={}", app_socket.display()),
        ]
    );

    if !is_root() {
        let (reply, _) = ask_fails(&daemon, &["start", "net-admin"]);
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains("it asks for CAP_NET_ADMIN, which skywired does not hold"),
            "{reply}"
        );
        return;
    }
    let (id, pid) = start_app(&daemon, &["net-admin"]);
    let net_admin = 1 << 12;
    for (name, value) in capabilities(pid) {
        assert_eq!(value, net_admin, "app {id}'s {name} is {value:#x}");
    }
    assert_eq!(
        environment(pid),
        [
            "GREETING=hello".to_owned(),
            "PATH=/bin".to_owned(),
            "SIGNAL_CLIENT=true".to_owned(),
            format!("SIGNAL_CLIENT_ID={id}"),
            format!("SIGNAL_SERVER_ADDRESS={signal}"),
            format!("SKYWIRE_APP_SOCKET={}", app_socket.display()),
        ]
    );
}

/// The output of a visctl run, for messages.
#[allow(dead_code)]
fn show(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_taken_signal_port_is_tried_again_until_it_is_free() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = TempDir::new("apps");
    let daemon = Daemon::launch_alone(
        &dir,
        &Launch {
            control: &format!("  signal_port: {}\n", address.port()),
            extra: &catalog(""),
            ..Launch::default()
        },
    );
    // The node runs without its signal server, and says so.
    let status = daemon.ask(&["status"]);
    let signal = &status["result"]["signal_server"];
    assert_eq!(signal["state"], "retrying", "{status}");
    assert_eq!(signal["address"], address.to_string());
    assert!(
        signal["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("in use"),
        "{status}"
    );
    let text = String::from_utf8(daemon.visctl(&["status"]).stdout).unwrap();
    assert!(
        text.contains(&format!(
            "signal server retrying: cannot listen on {address}: "
        )),
        "{text}"
    );
    assert!(
        daemon
            .log()
            .contains(&format!("cannot listen for signal clients on {address}")),
        "{}",
        daemon.log()
    );

    // Once the port is free, the next try takes it, and an app registers.
    drop(taken);
    wait_until("the signal server to listen", WAIT, || {
        daemon.ask(&["status"])["result"]["signal_server"]
            == serde_json::json!({"state": "listening", "address": address.to_string()})
    });
    let text = String::from_utf8(daemon.visctl(&["status"]).stdout).unwrap();
    assert!(
        text.contains(&format!("signal server listening on {address}")),
        "{text}"
    );
    let (id, _) = start_registered(&daemon, "example");
    daemon.ask(&["ping", &id.to_string()]);
}
