//! End-to-end tests of the `visctl` binary: against a small fake server that answers canned
//! reply lines, and against the real control server with a fake dataplane. Exit codes, `--json`,
//! socket discovery, standard input and scripts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use skywire_control::command::tokenize;
use skywire_control::{Answer, ControlOptions, ControlServer, Stopper};
use skywire_dataplane::api::{self, Reply, Request, RequestError, StatusReply};
use skywire_dataplane::NodeKey;

use common::machine::output_with_input;
use common::{TempDir, VISCTL};

/// A stand-in for skywired's socket: it records each line and answers from the first word.
/// `status` succeeds with `status from NAME`, `echo` succeeds with its words joined by `|`,
/// `fail` fails, anything else is an unknown command.
struct FakeServer {
    socket: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl FakeServer {
    fn start(socket: PathBuf, name: &'static str) -> FakeServer {
        let listener = UnixListener::bind(&socket).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&lines);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || serve(stream, name, &recorded));
            }
        });
        FakeServer { socket, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn serve(stream: UnixStream, name: &str, recorded: &Mutex<Vec<String>>) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        recorded.lock().unwrap().push(line.clone());
        let words = tokenize(&line).unwrap_or_default();
        let reply = match words.first().map(String::as_str) {
            Some("status") => serde_json::json!({
                "ok": true, "command": "status", "result": {"server": name},
                "text": format!("status from {name}"),
            }),
            Some("echo") => serde_json::json!({
                "ok": true, "command": "echo", "result": null, "text": words[1..].join("|"),
            }),
            Some("fail") => {
                serde_json::json!({"ok": false, "command": "fail", "error": "it failed"})
            }
            _ => serde_json::json!({
                "ok": false, "error": format!("unknown command `{}`: run `help` to list the commands", words.first().cloned().unwrap_or_default()),
            }),
        };
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

/// Runs visctl with `args`, `stdin` on its standard input and no `SKYWIRE_SOCKET` unless given.
fn visctl(args: &[&str], stdin: &str, socket_variable: Option<&Path>) -> Output {
    let mut command = Command::new(VISCTL);
    command.args(args).env_remove("SKYWIRE_SOCKET");
    if let Some(socket) = socket_variable {
        command.env("SKYWIRE_SOCKET", socket);
    }
    output_with_input(&mut command, stdin)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn one_command_prints_its_text_and_exits_0() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let output = visctl(&["--socket", path_str(&server.socket), "status"], "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "status from A\n");
    assert_eq!(stderr(&output), "");
}

#[test]
fn a_failed_command_exits_1_with_its_error() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let output = visctl(&["--socket", path_str(&server.socket), "fail"], "", None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "visctl: fail: it failed\n");
    assert_eq!(stdout(&output), "");
    let output = visctl(&["--socket", path_str(&server.socket), "nope"], "", None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("visctl: unknown command `nope`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let socket = path_str(&server.socket);
    for args in [
        &["--bogus"][..],
        &["--socket"],
        &["--socket", socket, "-f", "script", "status"],
    ] {
        let output = visctl(args, "", None);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let missing = dir.path("missing-script");
    let output = visctl(&["--socket", socket, "-f", path_str(&missing)], "", None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read the script"),
        "{}",
        stderr(&output)
    );
    let config = dir.path("broken.yaml");
    fs::write(&config, "control: [\n").unwrap();
    let output = visctl(&["--config", path_str(&config), "status"], "", None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot take the socket from --config"),
        "{}",
        stderr(&output)
    );
    assert!(server.lines().is_empty());
}

#[test]
fn help_needs_no_daemon() {
    let dir = TempDir::new("visctl");
    let missing = dir.path("missing.sock");
    let socket = path_str(&missing);

    let output = visctl(&["--socket", socket, "help"], "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("commands:\n"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("build_route|br"),
        "{}",
        stdout(&output)
    );

    let output = visctl(&["--socket", socket, "help", "build_route"], "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("usage: build_route [N0 N1 …] KEY\naliases: br\n"),
        "{}",
        stdout(&output)
    );

    let output = visctl(&["--socket", socket, "--json", "h", "lr"], "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let answer = Answer::parse(stdout(&output).trim_end()).unwrap();
    assert_eq!(answer.command.as_deref(), Some("help"));
    assert_eq!(answer.result.unwrap()["help"][0]["name"], "list_routes");

    // Help's own usage errors too; in a session, help lines are answered the same way.
    let output = visctl(&["--socket", socket, "help", "a", "b"], "", None);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("visctl: help: takes 0 to 1 arguments"));
    let output = visctl(&["--socket", socket], "help pn\n# a comment\n?\n", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("usage: ping_node KEY [COUNT]"));
    assert!(stdout(&output).contains("\ncommands:\n"));

    // An app's help is the daemon's: its catalog is there.
    let output = visctl(&["--socket", socket, "help", "some-app"], "", None);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("cannot reach skywired"));
}

#[test]
fn no_daemon_exits_3_naming_the_path() {
    let dir = TempDir::new("visctl");
    let missing = dir.path("missing.sock");
    let output = visctl(&["--socket", path_str(&missing), "status"], "", None);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "cannot reach skywired at {} (given with --socket)",
            missing.display()
        )),
        "{message}"
    );
    assert!(message.contains("is skywired running"), "{message}");

    let stale = dir.path("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let output = visctl(&["status"], "", Some(&stale));
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{} (from $SKYWIRE_SOCKET)", stale.display())),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");

    let locked = dir.path("locked.sock");
    let _listener = UnixListener::bind(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if UnixStream::connect(&locked).is_err() {
        // Not root: the permission check applies.
        let output = visctl(&["--socket", path_str(&locked), "status"], "", None);
        assert_eq!(output.status.code(), Some(3));
        assert!(
            stderr(&output).contains("permission denied: this user may not open the socket"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn json_prints_the_raw_reply_lines() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let socket = path_str(&server.socket);
    let output = visctl(&["--json", "--socket", socket, "status"], "", None);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    let answer = Answer::parse(text.trim_end()).unwrap();
    assert!(answer.ok);
    assert_eq!(answer.result.unwrap()["server"], "A");
    assert_eq!(text.lines().count(), 1);

    let output = visctl(&["--json", "--socket", socket, "fail"], "", None);
    assert_eq!(output.status.code(), Some(1));
    let answer = Answer::parse(stdout(&output).trim_end()).unwrap();
    assert_eq!(answer.error.as_deref(), Some("it failed"));
}

#[test]
fn the_socket_flag_beats_the_variable_which_beats_the_config() {
    let dir = TempDir::new("visctl");
    let a = FakeServer::start(dir.path("a.sock"), "A");
    let b = FakeServer::start(dir.path("b.sock"), "B");
    let _c = FakeServer::start(dir.path("c.sock"), "C");
    // Relative to the config file's folder.
    let config = dir.path("config.yaml");
    fs::write(&config, "control:\n  socket: c.sock\n").unwrap();
    let config = path_str(&config);

    let output = visctl(
        &[
            "--socket",
            path_str(&a.socket),
            "--config",
            config,
            "status",
        ],
        "",
        Some(&b.socket),
    );
    assert_eq!(stdout(&output), "status from A\n", "{}", stderr(&output));
    let output = visctl(&["--config", config, "status"], "", Some(&b.socket));
    assert_eq!(stdout(&output), "status from B\n", "{}", stderr(&output));
    let output = visctl(&["--config", config, "status"], "", None);
    assert_eq!(stdout(&output), "status from C\n", "{}", stderr(&output));
    let output = visctl(&["--config", config, "status"], "", Some(Path::new("")));
    assert_eq!(
        stdout(&output),
        "status from C\n",
        "an empty variable is no socket"
    );

    let missing_config = dir.path("other.yaml");
    fs::write(&missing_config, "control:\n  socket: nobody.sock\n").unwrap();
    let output = visctl(&["--config", path_str(&missing_config), "status"], "", None);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains(&format!(
            "cannot reach skywired at {} (control.socket in {})",
            dir.path("nobody.sock").display(),
            missing_config.display()
        )),
        "{}",
        stderr(&output)
    );

    if !Path::new("/run/skywire/visctl.sock").exists() {
        let output = visctl(&["status"], "", None);
        assert_eq!(output.status.code(), Some(3));
        assert!(
            stderr(&output).contains("cannot reach skywired at /run/skywire/visctl.sock (the default; choose another with --socket, $SKYWIRE_SOCKET or --config)"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn arguments_reach_the_server_as_the_same_words() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let words = [
        "echo",
        "a b",
        "say \"hi\"",
        "",
        "#x",
        "it's",
        "back\\slash",
        "tab\there",
    ];
    let mut args = vec!["--socket", path_str(&server.socket)];
    args.extend(words);
    let output = visctl(&args, "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = server.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(tokenize(&lines[0]).unwrap(), words, "{}", lines[0]);
    assert_eq!(stdout(&output), format!("{}\n", words[1..].join("|")));
}

#[test]
fn standard_input_runs_each_line_in_turn() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let input = "status\n\n# a comment\nfail\r\necho 'a b' c\nnope\nexit\nstatus\n";
    let output = visctl(&["--socket", path_str(&server.socket)], input, None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "status from A\na b|c\n");
    let errors = stderr(&output);
    assert!(errors.contains("visctl: fail: it failed\n"), "{errors}");
    assert!(
        errors.contains("visctl: unknown command `nope`"),
        "{errors}"
    );
    assert_eq!(server.lines(), ["status", "fail", "echo 'a b' c", "nope"]);

    let output = visctl(
        &["--socket", path_str(&server.socket)],
        "status\nstatus",
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "status from A\nstatus from A\n");
    assert!(!stdout(&output).contains("visctl>"), "no prompt on a pipe");

    let output = visctl(
        &["--json", "--socket", path_str(&server.socket)],
        "status\nfail\n",
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output).lines().count(), 2);
}

#[test]
fn a_script_stops_at_its_first_failing_line() {
    let dir = TempDir::new("visctl");
    let server = FakeServer::start(dir.path("a.sock"), "A");
    let script = dir.path("setup.vis");
    fs::write(
        &script,
        "# set up\nstatus\n\necho x   # why\nfail now\nstatus\n",
    )
    .unwrap();
    let output = visctl(
        &[
            "--socket",
            path_str(&server.socket),
            "-f",
            path_str(&script),
        ],
        "",
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "status from A\nx\n");
    assert_eq!(
        stderr(&output),
        format!("{}:5: fail now: it failed\n", script.display())
    );
    assert_eq!(server.lines(), ["status", "echo x   # why", "fail now"]);

    let good = dir.path("good.vis");
    fs::write(&good, "status\necho y\n").unwrap();
    let output = visctl(
        &[
            "--socket",
            path_str(&server.socket),
            "--file",
            path_str(&good),
        ],
        "",
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "status from A\ny\n");
}

/// The real control server with a dataplane that answers Status, fails everything else, and
/// stops on Shutdown.
struct Daemon {
    _dir: TempDir,
    socket: PathBuf,
    stopper: Stopper,
    server: Option<thread::JoinHandle<()>>,
    _poll: mio::Poll,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = TempDir::new("visctl");
        let socket = dir.path("visctl.sock");
        let server = ControlServer::bind(ControlOptions {
            signal_port: 0,
            ..ControlOptions::new(&socket, std::env::temp_dir())
        })
        .unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (requests, replies, end) = api::channels(waker, server.waker());
        thread::spawn(move || {
            while let Ok((id, request)) = end.requests.recv() {
                let reply = match request {
                    Request::Status => Ok(Reply::Status(StatusReply {
                        key: NodeKey::from([1; 32]),
                        mesh_address: NodeKey::from([1; 32]).mesh_address(),
                        listen: "127.0.0.1:40000".parse().unwrap(),
                        uptime_secs: 5,
                        transports: 0,
                        links_up: 0,
                        routes: 0,
                        rules: 0,
                        mesh_tcp: Default::default(),
                        outbox: Default::default(),
                    })),
                    Request::Shutdown => {
                        end.replies.send(id, Ok(Reply::Stopped));
                        return;
                    }
                    _ => Err(RequestError::NoRoute {
                        peer: NodeKey::from([2; 32]),
                    }),
                };
                end.replies.send(id, reply);
            }
        });
        let stopper = server.stopper();
        let server = thread::spawn(move || server.run(requests, replies).unwrap());
        Daemon {
            _dir: dir,
            socket,
            stopper,
            server: Some(server),
            _poll: poll,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

#[test]
fn visctl_talks_to_the_real_control_server() {
    let daemon = Daemon::start();
    let socket = path_str(&daemon.socket);
    let key = NodeKey::from([1; 32]).to_string();

    let output = visctl(&["--socket", socket, "status"], "", None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(&format!("node          {key}\n")),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("127.0.0.1:40000"));

    let output = visctl(&["--socket", socket, "help"], "", None);
    assert_eq!(output.status.code(), Some(0));
    for command in [
        "help|h|?",
        "status",
        "list_transports|lt",
        "list_routes|lr",
        "build_route|br",
        "find_route|fr",
        "list_nodes|ln",
        "rm_route|rr",
        "ping_node|pn",
        "socks",
    ] {
        assert!(
            stdout(&output).contains(command),
            "{command}: {}",
            stdout(&output)
        );
    }

    let output = visctl(&["--socket", socket, "rm_route", &key], "", None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "visctl: rm_route: no route to {}: `list_routes` shows the routes\n",
            NodeKey::from([2; 32])
        )
    );

    let output = visctl(&["--socket", socket, "ping_node", "not-a-key"], "", None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("visctl: ping_node: `not-a-key` is not a node key"),
        "{}",
        stderr(&output)
    );

    let output = visctl(&["--socket", socket], "status\nlr\nhelp rr\n", None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("usage: rm_route KEY"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("visctl: list_routes: no route"),
        "{}",
        stderr(&output)
    );
}
