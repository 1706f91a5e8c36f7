//! The control thread's Unix signals, for real: a test binary of its own (no test harness) so
//! that TERM, INT, HUP and CHLD are blocked in every thread before any is spawned, as skywired
//! does. HUP keeps the server running, CHLD reaps the registered children (and only those),
//! TERM stops the dataplane and the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skywire_control::{block_signals, ControlOptions, ControlServer};
use skywire_dataplane::api::{self, Reply, Request, RequestError};

const DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    block_signals().unwrap();

    let dir = std::env::temp_dir().join(format!("skywire-signals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("visctl.sock");

    let mut server = ControlServer::bind(ControlOptions {
        signal_port: 0,
        ..ControlOptions::new(&socket, &dir)
    })
    .unwrap();
    let adopted = std::process::Command::new("true").spawn().unwrap();
    server.reap_child(adopted.id());
    let poll = mio::Poll::new().unwrap();
    let dataplane_waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (requests, replies, end) = api::channels(dataplane_waker, server.waker());
    let dataplane = thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok((id, request)) = end.requests.recv() {
            seen.push(request.clone());
            match request {
                Request::Shutdown => {
                    end.replies.send(id, Ok(Reply::Stopped));
                    break;
                }
                _ => end.replies.send(
                    id,
                    Err(RequestError::NoRoute {
                        peer: [1; 32].into(),
                    }),
                ),
            }
        }
        seen
    });
    let server = thread::spawn(move || server.run(requests, replies));

    kill(Pid::this(), Signal::SIGHUP).unwrap();
    assert_answers(&socket);
    println!("SIGHUP: still serving");

    // A registered child is reaped on SIGCHLD: its /proc entry stays while it is a zombie.
    let proc_entry = format!("/proc/{}", adopted.id());
    drop(adopted);
    wait_until(
        || !Path::new(&proc_entry).exists(),
        "the exited child was not reaped",
    );
    // Any other child's exit status stays for whoever waits for it.
    let status = std::process::Command::new("true").status().unwrap();
    assert!(status.success());
    let output = std::process::Command::new("sh")
        .args(["-c", "echo spawned"])
        .output()
        .unwrap();
    assert_eq!(output.stdout, b"spawned\n");
    println!("SIGCHLD: registered child reaped, others left to their owners");
    // HUP (signal 1) was read before CHLD (17): the server has seen it and still serves.
    assert_answers(&socket);

    kill(Pid::this(), Signal::SIGTERM).unwrap();
    wait_until(|| server.is_finished(), "SIGTERM did not stop the server");
    server.join().unwrap().unwrap();
    assert_eq!(dataplane.join().unwrap().last(), Some(&Request::Shutdown));
    assert!(!socket.exists(), "the socket is still there");
    println!("SIGTERM: dataplane shut down, socket removed");

    let _ = std::fs::remove_dir_all(&dir);
    drop(poll);
}

/// Checks that the server answers a command (locally: `help`).
fn assert_answers(socket: &Path) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"help\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("{\"ok\":true,\"command\":\"help\""),
        "{line}"
    );
}

fn wait_until(condition: impl Fn() -> bool, failure: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{failure}");
        thread::sleep(Duration::from_millis(10));
    }
}
