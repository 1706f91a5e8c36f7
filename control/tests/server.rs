//! The control server on a socket of its own, with a fake dataplane thread that answers the
//! requests: the line protocol, its limits, the socket file's life, and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/control.rs"]
mod control;
#[path = "../../tests/common/temp.rs"]
mod temp;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use skywire_control::{ControlError, ControlOptions, ControlServer, Limits, Stopper};
use skywire_dataplane::api::{
    self, DataplaneEnd, PingReply, Reply, Request, RequestError, Response, RouteRow, RoutesReply,
    StatusReply, TransportRow, TransportsReply,
};
use skywire_dataplane::NodeKey;

use control::ControlSocket;
use temp::TempDir;

/// How long any one wait in these tests may last.
const DEADLINE: Duration = Duration::from_secs(20);

fn node(byte: u8) -> NodeKey {
    NodeKey::from([byte; 32])
}

fn key(byte: u8) -> String {
    node(byte).to_string()
}

/// How the fake dataplane behaves.
#[derive(Debug, Clone, Copy, Default)]
struct Fake {
    /// Answer BuildRoute and BuildRouteTo only when the test says so (through
    /// `Daemon::release`).
    hold_build_route: bool,
    /// On Status, stop the thread without answering, as a crashing dataplane would.
    die_on_status: bool,
}

/// Answers requests as a dataplane would: Status at once, the route builds and PingNode after a
/// delay (or when released), RemoveRoute with an error, Shutdown with Stopped, anything else
/// with an error. Returns every request it saw.
fn fake_dataplane(
    end: DataplaneEnd,
    release: Receiver<()>,
    observed: Sender<String>,
    fake: Fake,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut delayed: Vec<(Option<Instant>, u64, Response)> = Vec::new();
    loop {
        match end.requests.recv_timeout(Duration::from_millis(5)) {
            Ok((id, request)) => {
                seen.push(format!("{request:?}"));
                let _ = observed.send(format!("{request:?}"));
                let now = Instant::now();
                match request {
                    Request::Status if fake.die_on_status => return seen,
                    Request::Status => end.replies.send(id, Ok(Reply::Status(status()))),
                    Request::ListTransports => end.replies.send(
                        id,
                        Ok(Reply::Transports(TransportsReply {
                            transports: vec![TransportRow {
                                key: node(2),
                                endpoint: Some("127.0.0.1:7778".parse().unwrap()),
                                link: "up",
                                handshake_secs_ago: Some(3.0),
                                last_seen_secs_ago: Some(0.2),
                                rtt_ms: Some(0.5),
                                tx_bytes: 10,
                                rx_bytes: 20,
                                tx_packets: 1,
                                rx_packets: 2,
                            }],
                        })),
                    ),
                    Request::ListRoutes => end.replies.send(
                        id,
                        Ok(Reply::Routes(RoutesReply {
                            routes: vec![],
                            rules: vec![],
                        })),
                    ),
                    Request::BuildRoute { .. } | Request::BuildRouteTo { .. } => {
                        let path = match request {
                            Request::BuildRoute { path } => path,
                            Request::BuildRouteTo { peer } => vec![node(1), peer],
                            _ => unreachable!("matched above"),
                        };
                        let when =
                            (!fake.hold_build_route).then(|| now + Duration::from_millis(100));
                        let reply = Ok(Reply::RouteBuilt(RouteRow {
                            peer: *path.last().unwrap(),
                            path,
                            initiator: true,
                            ready: true,
                            out_id: 11,
                            in_id: 22,
                        }));
                        delayed.push((when, id, reply));
                    }
                    Request::RemoveRoute { peer } => {
                        end.replies.send(id, Err(RequestError::NoRoute { peer }));
                    }
                    Request::PingNode { peer, count } => delayed.push((
                        Some(now + Duration::from_millis(150)),
                        id,
                        Ok(Reply::Ping(PingReply {
                            peer,
                            address: peer.mesh_address(),
                            sent: count,
                            rtt_ms: vec![1.5; count as usize],
                        })),
                    )),
                    Request::Shutdown => {
                        end.replies.send(id, Ok(Reply::Stopped));
                        return seen;
                    }
                    other => end.replies.send(
                        id,
                        Err(RequestError::app(std::io::Error::other(format!(
                            "this test's dataplane does not answer {other:?}"
                        )))),
                    ),
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return seen,
        }
        let released = release.try_recv().is_ok();
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = delayed
            .into_iter()
            .partition(|(when, _, _)| when.map_or(released, |when| when <= now));
        delayed = later;
        for (_, id, reply) in due {
            end.replies.send(id, reply);
        }
    }
}

fn status() -> StatusReply {
    StatusReply {
        key: node(1),
        mesh_address: node(1).mesh_address(),
        listen: "127.0.0.1:7777".parse().unwrap(),
        uptime_secs: 42,
        transports: 1,
        links_up: 1,
        routes: 0,
        rules: 0,
        mesh_tcp: Default::default(),
        outbox: Default::default(),
    }
}

/// A control server and a fake dataplane, each in its own thread.
struct Daemon {
    _dir: TempDir,
    socket: PathBuf,
    stopper: Stopper,
    release: Sender<()>,
    /// The requests the dataplane received, as they debug-print.
    observed: Receiver<String>,
    server: Option<JoinHandle<Result<(), ControlError>>>,
    /// The dataplane's thread, which returns the requests it received as they debug-print.
    dataplane: Option<JoinHandle<Vec<String>>>,
    _poll: mio::Poll,
}

impl Daemon {
    fn start() -> Daemon {
        Daemon::start_with(Limits::default(), Fake::default())
    }

    /// A daemon whose dataplane answers no route build until told through `release`.
    fn holding_routes() -> Daemon {
        let fake = Fake {
            hold_build_route: true,
            ..Fake::default()
        };
        Daemon::start_with(Limits::default(), fake)
    }

    fn start_with(limits: Limits, fake: Fake) -> Daemon {
        let dir = TempDir::new("control");
        let socket = dir.path("visctl.sock");
        let mut server = ControlServer::bind(options(&socket)).unwrap();
        server.set_limits(limits);
        let poll = mio::Poll::new().unwrap();
        let dataplane_waker =
            std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (requests, replies, end) = api::channels(dataplane_waker, server.waker());
        let (release, released) = mpsc::channel();
        let (observe, observed) = mpsc::channel();
        let dataplane = thread::spawn(move || fake_dataplane(end, released, observe, fake));
        let stopper = server.stopper();
        let server = thread::spawn(move || server.run(requests, replies));
        Daemon {
            _dir: dir,
            socket,
            stopper,
            release,
            observed,
            server: Some(server),
            dataplane: Some(dataplane),
            _poll: poll,
        }
    }

    fn connect(&self) -> ControlSocket {
        ControlSocket::connect(&self.socket)
    }

    /// Waits until the dataplane has received a request whose debug form `wanted` accepts.
    fn wait_for_request(&self, wanted: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = self
                .observed
                .recv_timeout(left)
                .expect("the request never reached the dataplane");
            if wanted(&request) {
                return;
            }
        }
    }

    /// Stops the server as SIGTERM would; returns what `run` returned and the requests the
    /// dataplane saw.
    fn stop(mut self) -> (Result<(), ControlError>, Vec<String>) {
        self.stopper.stop();
        self.join()
    }

    fn join(&mut self) -> (Result<(), ControlError>, Vec<String>) {
        let server = self.server.take().unwrap();
        let deadline = Instant::now() + DEADLINE;
        while !server.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop");
            thread::sleep(Duration::from_millis(10));
        }
        let outcome = server.join().unwrap();
        let seen = self.dataplane.take().unwrap().join().unwrap();
        (outcome, seen)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.stopper.stop();
            let _ = server.join();
        }
        if let Some(dataplane) = self.dataplane.take() {
            let _ = dataplane.join();
        }
    }
}

fn options(socket: &Path) -> ControlOptions {
    ControlOptions {
        signal_port: 0,
        ..ControlOptions::new(socket, std::env::temp_dir())
    }
}

fn assert_ok(answer: &Value, command: &str) {
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["command"], command, "{answer}");
    assert!(answer["text"].is_string(), "{answer}");
    assert!(answer.get("result").is_some(), "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
}

fn assert_error(answer: &Value, containing: &str) {
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains(containing), "{error}");
    assert!(answer.get("text").is_none(), "{answer}");
}

#[test]
fn replies_are_json_lines_with_result_and_text() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    let answer = client.command("status");
    assert_ok(&answer, "status");
    assert_eq!(answer["result"]["key"], key(1));
    assert_eq!(answer["result"]["listen"], "127.0.0.1:7777");
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains(&key(1)), "{text}");
    assert!(text.contains("127.0.0.1:7777"), "{text}");

    let answer = client.command("lt");
    assert_ok(&answer, "list_transports");
    assert_eq!(answer["result"]["transports"][0]["key"], key(2));
    assert!(answer["text"].as_str().unwrap().contains(&key(2)));

    let answer = client.command("help");
    assert_ok(&answer, "help");
    assert_eq!(
        answer["result"]["help"].as_array().unwrap().len(),
        skywire_control::COMMANDS.len()
    );
    let answer = client.command("help pn");
    assert_ok(&answer, "help");
    assert_eq!(answer["result"]["help"][0]["name"], "ping_node");
    assert!(answer["text"]
        .as_str()
        .unwrap()
        .starts_with("usage: ping_node KEY [COUNT]"));

    let answer = client.command(&format!("ping_node {} 3", key(5)));
    assert_ok(&answer, "ping_node");
    assert_eq!(answer["result"]["sent"], 3);
    assert!(answer["text"]
        .as_str()
        .unwrap()
        .contains("3 sent, 3 received, 0% loss"));
}

#[test]
fn commands_on_one_connection_are_answered_in_order() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    let lines = format!(
        "build_route {} {}\r\nstatus\n\n   \n# a comment\nhelp\nlt\nrm_route {}\nnonsense\nlr\nbr nope\n",
        key(1),
        key(2),
        key(3)
    );
    client.send(lines);
    let answer = client.answer();
    assert_ok(&answer, "build_route");
    assert_eq!(answer["result"]["peer"], key(2));
    assert_ok(&client.answer(), "status");
    assert_ok(&client.answer(), "help");
    assert_ok(&client.answer(), "list_transports");
    let answer = client.answer();
    assert_error(&answer, &format!("no route to {}", key(3)));
    assert_eq!(answer["command"], "rm_route");
    let answer = client.answer();
    assert_error(&answer, "unknown command `nonsense`: run `help`");
    assert!(answer.get("command").is_none(), "{answer}");
    assert_ok(&client.answer(), "list_routes");
    let answer = client.answer();
    assert_error(
        &answer,
        "is not a node key: a key is 44 characters of base64",
    );
    assert_eq!(answer["command"], "build_route");
    // Nothing more is on its way: the next answer is the next command's.
    assert_ok(&client.command("status"), "status");
    let (outcome, seen) = daemon.stop();
    outcome.unwrap();
    // Argument errors and help never reach the dataplane.
    assert_eq!(
        seen.iter().filter(|request| *request != "Shutdown").count(),
        6,
        "{seen:?}"
    );
}

#[test]
fn a_command_in_progress_does_not_hold_up_other_clients() {
    let daemon = Daemon::holding_routes();
    let mut waiting = daemon.connect();
    waiting.send(format!("br {}\n", key(9)));
    let mut other = daemon.connect();
    assert_ok(&other.command("status"), "status");
    // The dataplane holds the route until told, so the status came first.
    daemon.release.send(()).unwrap();
    assert_ok(&waiting.answer(), "build_route");
}

#[test]
fn a_line_over_64_kib_gets_an_error_and_the_connection_stays() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    let mut bytes = vec![b'a'; 70_000];
    bytes.extend_from_slice(b"\nstatus\n");
    client.send(&bytes);
    assert_error(&client.answer(), "line too long: at most 65536 bytes");
    assert_ok(&client.answer(), "status");
    // A line of exactly the limit is read (and is no command).
    let mut bytes = vec![b'x'; 65_536];
    bytes.push(b'\n');
    client.send(&bytes);
    assert_error(&client.answer(), "unknown command");
}

#[test]
fn invalid_utf8_gets_an_error() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    client.send(b"stat\xff\xfeus\nstatus\n");
    assert_error(&client.answer(), "not valid UTF-8");
    assert_ok(&client.answer(), "status");
}

#[test]
fn unknown_commands_and_syntax_errors_are_answered_locally() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    assert_error(
        &client.command("frobnicate"),
        "run `help` to list the commands",
    );
    assert_error(&client.command("stauts"), "did you mean `status`?");
    assert_error(&client.command("status 'open"), "is not closed");
    let answer = client.command("ping_node");
    assert_error(&answer, "usage: ping_node KEY [COUNT]");
    assert_eq!(answer["command"], "ping_node");
    let (outcome, seen) = daemon.stop();
    outcome.unwrap();
    assert_eq!(seen, ["Shutdown"]);
}

#[test]
fn a_silent_client_does_not_stall_fifty_others() {
    let daemon = Daemon::start();
    let _silent = daemon.connect();
    let mut partial = daemon.connect();
    partial.send("sta");
    let mut slow = daemon.connect();
    slow.send(format!("pn {} 2\n", key(4)));
    let socket = daemon.socket.clone();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut client = ControlSocket::connect(&socket);
                client.command("status")
            })
        })
        .collect();
    for client in clients {
        assert_ok(&client.join().unwrap(), "status");
    }
    assert_ok(&slow.answer(), "ping_node");
    partial.send("tus\n");
    assert_ok(&partial.answer(), "status");
}

#[test]
fn a_client_that_leaves_before_its_reply_harms_no_one() {
    let daemon = Daemon::start();
    let mut leaving = daemon.connect();
    leaving.send(format!("pn {}\nstatus\n", key(4)));
    drop(leaving);
    let mut client = daemon.connect();
    client.send(format!("pn {} 1\n", key(6)));
    let answer = client.answer();
    assert_ok(&answer, "ping_node");
    assert_eq!(answer["result"]["peer"], key(6));
}

#[test]
fn a_client_that_stops_sending_still_gets_its_replies() {
    let daemon = Daemon::start();
    let mut client = daemon.connect();
    client.send(format!("br {}\nstatus\n", key(3)));
    client.shutdown_write();
    assert_ok(&client.answer(), "build_route");
    assert_ok(&client.answer(), "status");
    assert!(client.closed());
}

#[test]
fn too_many_waiting_lines_close_the_connection() {
    let daemon = Daemon::holding_routes();
    let mut client = daemon.connect();
    let mut lines = format!("br {}\n", key(3));
    for _ in 0..65 {
        lines.push_str("status\n");
    }
    client.send(lines);
    assert_error(&client.answer(), "too many commands waiting: at most 64");
    assert!(client.closed());
    // The server is fine.
    assert_ok(&daemon.connect().command("status"), "status");
}

#[test]
fn clients_beyond_the_limit_are_refused_with_an_error() {
    let limits = Limits {
        max_clients: 2,
        ..Limits::default()
    };
    let daemon = Daemon::start_with(limits, Fake::default());
    let mut first = daemon.connect();
    let mut second = daemon.connect();
    assert_ok(&first.command("status"), "status");
    assert_ok(&second.command("status"), "status");
    let mut third = daemon.connect();
    assert_error(
        &third.answer(),
        "too many clients: skywired serves at most 2",
    );
    assert!(third.closed());
    drop(first);
    // The first one's place is given back once the server has seen it close.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = daemon.connect().command("status");
        if answer["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_does_not_read_is_disconnected() {
    // One client at a time: the slot frees once the server has dropped the one that does not
    // read.
    let limits = Limits {
        max_clients: 1,
        max_pending_output: 32 * 1024,
        ..Limits::default()
    };
    let daemon = Daemon::start_with(limits, Fake::default());
    let mut flooding = daemon.connect();
    let lines = "help\n".repeat(5_000);
    // The server may hang up before it has read everything.
    let _ = flooding.try_send(lines);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = daemon.connect().command("status");
        if answer["ok"] == true {
            break;
        }
        assert_error(&answer, "too many clients");
        assert!(
            Instant::now() < deadline,
            "the client that does not read is still served"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let received = flooding.lines_until_closed();
    assert!(received < 5_000, "{received}");
}

#[test]
fn clients_that_do_not_read_are_disconnected_once_all_together_hold_too_much() {
    // Each client alone stays within its own bound; two together pass the total.
    let limits = Limits {
        max_pending_output: 16 * 1024 * 1024,
        max_buffered_total: 512 * 1024,
        ..Limits::default()
    };
    let daemon = Daemon::start_with(limits, Fake::default());
    let mut flooding: Vec<_> = (0..2).map(|_| daemon.connect()).collect();
    let lines = "help\n".repeat(2_000);
    for client in &mut flooding {
        // The server may hang up before it has read everything.
        if client.try_send(lines.clone()).is_ok() {
            client.shutdown_write();
        }
    }
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let answer = daemon.connect().command("status");
        assert_ok(&answer, "status");
        if answer["result"]["control_socket"]["dropped"] != 0 {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "nobody was disconnected: {answer}"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let buffers = &status["result"]["control_socket"];
    assert_eq!(buffers["limit"], 512 * 1024, "{status}");
    assert!(
        buffers["buffered_bytes"].as_u64().unwrap() <= 512 * 1024,
        "{status}"
    );
    assert!(
        status["text"]
            .as_str()
            .unwrap()
            .contains("clients disconnected: all clients together held more than 512.0 KiB"),
        "{status}"
    );
    let closed = flooding
        .iter_mut()
        .map(|client| client.lines_until_closed())
        .filter(|lines| *lines < 2_000)
        .count();
    assert!(closed >= 1, "a client that held the most was closed");
}

#[test]
fn the_socket_is_0666_and_removed_after_run() {
    let daemon = Daemon::start();
    let mode = fs::metadata(&daemon.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "{mode:o}");
    let socket = daemon.socket.clone();
    let (outcome, seen) = daemon.stop();
    outcome.unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("Shutdown"));
    assert!(!socket.exists());
}

#[test]
fn stopping_answers_the_clients_still_waiting() {
    let daemon = Daemon::holding_routes();
    let mut client = daemon.connect();
    client.send(format!("br {}\n", key(3)));
    daemon.wait_for_request(|request| request.starts_with("BuildRouteTo"));
    let (outcome, _) = daemon.stop();
    outcome.unwrap();
    let answer = client.answer();
    assert_error(&answer, "skywired stopped before answering");
    assert_eq!(answer["command"], "build_route");
    assert!(client.closed());
}

#[test]
fn a_dataplane_that_goes_away_stops_the_server_with_an_error() {
    let mut daemon = Daemon::start_with(
        Limits::default(),
        Fake {
            die_on_status: true,
            ..Fake::default()
        },
    );
    let mut client = daemon.connect();
    client.send("status\n");
    let answer = client.answer();
    assert_error(&answer, "skywired stopped before answering");
    let (outcome, seen) = daemon.join();
    let err = outcome.unwrap_err();
    assert!(matches!(err, ControlError::DataplaneStopped), "{err}");
    assert!(err.to_string().contains("restart skywired"), "{err}");
    assert_eq!(seen, ["Status"]);
    assert!(!daemon.socket.exists());
}

#[test]
fn a_second_server_on_a_live_socket_is_refused() {
    let daemon = Daemon::start();
    let err = ControlServer::bind(options(&daemon.socket)).unwrap_err();
    assert!(matches!(err, ControlError::InUse { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "another skywired is already listening on {}: stop it first, or set control.socket to another path",
            daemon.socket.display()
        )
    );
    // The first one still serves.
    assert_ok(&daemon.connect().command("status"), "status");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("control");
    let socket = dir.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let server = ControlServer::bind(options(&socket)).unwrap();
    assert_eq!(server.socket_path(), socket);
    let mut client = ControlSocket::connect(&socket);
    // Nobody runs the server: the connection is accepted by the kernel, nothing answers yet.
    client.send("help\n");
    drop(server);
    assert!(!socket.exists());
}

#[test]
fn a_path_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new("control");
    let path = dir.path("file");
    fs::write(&path, "keep me").unwrap();
    let err = ControlServer::bind(options(&path)).unwrap_err();
    assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
    assert!(
        err.to_string().contains("exists and is not a socket"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn a_missing_folder_is_created() {
    let dir = TempDir::new("control");
    let socket = dir.path("run/skywire/visctl.sock");
    let server = ControlServer::bind(options(&socket)).unwrap();
    assert!(socket.exists());
    drop(server);
    assert!(!socket.exists());
}

#[test]
fn a_folder_this_user_cannot_write_is_a_clear_error() {
    let dir = TempDir::new("control");
    let folder = dir.path("locked");
    fs::create_dir(&folder).unwrap();
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o500)).unwrap();
    if fs::write(folder.join("probe"), "").is_ok() {
        // Root writes anyway: nothing to check.
        return;
    }
    let socket = folder.join("visctl.sock");
    let err = ControlServer::bind(options(&socket)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create {}: permission denied: run as root or set control.socket in the config",
            socket.display()
        )
    );
}

#[test]
fn a_group_that_does_not_exist_is_a_clear_error() {
    let dir = TempDir::new("control");
    let socket = dir.path("group.sock");
    for (key, options) in [
        (
            "admin_group",
            ControlOptions {
                admin_group: Some("no-such-group-skywire".to_owned()),
                ..options(&socket)
            },
        ),
        (
            "socket_group",
            ControlOptions {
                socket_group: Some("no-such-group-skywire".to_owned()),
                ..options(&socket)
            },
        ),
    ] {
        let err = ControlServer::bind(options).unwrap_err();
        assert!(matches!(err, ControlError::UnknownGroup { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "control.{key} names the group `no-such-group-skywire`, which does not exist: \
                 create it (groupadd no-such-group-skywire) or name another"
            )
        );
        assert!(!socket.exists());
    }
    // An existing group is looked up and the socket is made.
    let gid = nix::unistd::getegid();
    let Some(group) = nix::unistd::Group::from_gid(gid).unwrap() else {
        return;
    };
    let server = ControlServer::bind(ControlOptions {
        admin_group: Some(group.name.clone()),
        socket_group: Some(group.name),
        ..options(&socket)
    })
    .unwrap();
    assert!(socket.exists());
    drop(server);
}

#[test]
fn a_taken_signal_port_does_not_stop_the_server() {
    let dir = TempDir::new("control");
    let socket = dir.path("signal.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let server = ControlServer::bind(ControlOptions {
        signal_port: port,
        ..options(&socket)
    })
    .unwrap();
    // Apps are told the configured address, where the server will be once it can.
    assert_eq!(server.signal_addr(), ([127, 0, 0, 1], port).into());
    assert!(socket.exists());
    drop(server);

    let server = ControlServer::bind(options(&socket)).unwrap();
    assert_ne!(server.signal_addr().port(), 0);
    assert!(server.signal_addr().ip().is_loopback());
}
