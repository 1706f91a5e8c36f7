//! The signal server with real clients: the Rust example app and a Python client written from
//! the protocol description, launched by the supervisor in a test-owned mio loop; registrations
//! that must be refused; clients that send garbage or stall.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/machine.rs"]
mod machine;
mod signal_harness;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use machine::require;
use mio::{Events, Poll, Token};
use serde_json::json;
use signal_harness::{python_client, zombies_among, Harness, EXAMPLE_APP};
use skywire_control::signal::{
    Frame, ListenerState, SignalEvent, SignalServer, SignalServerOptions, TokenRange,
};
use skywire_control::supervisor::{AppReply, AppState, AttachEvent, StopHow};

const WAIT: Duration = Duration::from_secs(20);

fn example_catalog() -> String {
    format!("example:\n  desc: the example app\n  path: {EXAMPLE_APP}\n")
}

/// The Python client as `py` (it needs `python3`: ask `require` first).
fn python_catalog() -> String {
    format!(
        "py:\n  desc: the Python client\n  path: python3\n  default_args: [{:?}]\n",
        python_client().display().to_string()
    )
}

#[test]
fn example_app_answers_ping_resource_usage_and_shutdown() {
    let mut h = Harness::new(&example_catalog(), |_| {});
    let id = h.start("example", None);
    assert_eq!(id, 1);
    h.registered(id);

    let ping = h.supervisor.ping(id, Instant::now()).unwrap();
    match h.result(ping, WAIT).unwrap() {
        AppReply::Pong { id: pinged, rtt_ms } => {
            assert_eq!(pinged, id);
            assert!((0.0..5000.0).contains(&rtt_ms), "{rtt_ms}");
        }
        other => panic!("{other:?}"),
    }

    // Input is echoed, and counted in what the app reports.
    h.supervisor.send_input(id, "hello there").unwrap();
    h.output_line(id, "echo: hello there");
    let usage = h.supervisor.resource_usage(id, Instant::now()).unwrap();
    let AppReply::ResourceUsage(usage) = h.result(usage, WAIT).unwrap() else {
        panic!("not a resource usage");
    };
    assert_eq!(usage.pid, h.status(id).pid.unwrap());
    assert!(usage.rss_bytes > 0);
    assert!(usage.threads >= 2, "{usage:?}");
    assert!(usage.open_files >= 3, "{usage:?}");
    assert_eq!(usage.restarts, 0);
    assert_eq!(usage.report_error, None);
    assert_eq!(usage.reported.as_ref().unwrap()["Requests"], json!(1));

    // An attached listener sees the ticks.
    let attach = h.supervisor.attach(id).unwrap();
    h.until("a tick for the listener", WAIT, |h| {
        match h.supervisor.poll_attached() {
            Some((got, AttachEvent::Output(line)))
                if got == attach && line.line.starts_with("tick") =>
            {
                Some(())
            }
            _ => None,
        }
    });

    let pid = h.status(id).pid.unwrap();
    let stop = h.supervisor.shutdown(id, Instant::now()).unwrap();
    let AppReply::Stopped(report) = h.result(stop, WAIT).unwrap() else {
        panic!("not stopped");
    };
    assert_eq!(report.how, StopHow::Signal);
    assert_eq!(report.pid, Some(pid));
    assert!(
        report.status.contains("exit status: 0"),
        "{}",
        report.status
    );
    assert_eq!(h.status(id).state, AppState::Exited);
    h.output_line(id, "shutting down");
    // The listener hears the end, then is gone.
    let restarting = h.until("the listener's last event", WAIT, |h| {
        match h.supervisor.poll_attached() {
            Some((_, AttachEvent::Exited { restarting, .. })) => Some(restarting),
            _ => None,
        }
    });
    assert!(!restarting);
    assert!(h.supervisor.attached_app(attach).is_err());
    assert!(zombies_among(&h.launched).is_empty());
}

#[test]
fn python_client_registers_and_answers() {
    if !require("python3", "python_client_registers_and_answers") {
        return;
    }
    let mut h = Harness::new(&python_catalog(), |_| {});
    let id = h.start("py", None);
    h.registered(id);
    h.output_line(id, &format!("registered {id}"));
    // The server answered its keepalive PING with the same 8 bytes.
    h.output_line(id, "pong ok");

    let ping = h.supervisor.ping(id, Instant::now()).unwrap();
    assert!(matches!(
        h.result(ping, WAIT).unwrap(),
        AppReply::Pong { .. }
    ));
    h.output_line(id, "ping");

    let usage = h.supervisor.resource_usage(id, Instant::now()).unwrap();
    let AppReply::ResourceUsage(usage) = h.result(usage, WAIT).unwrap() else {
        panic!("not a resource usage");
    };
    assert_eq!(
        usage.reported,
        Some(json!({"Client": "python", "Answered": 2}))
    );
    assert!(usage.rss_bytes > 0);

    let stop = h.supervisor.shutdown(id, Instant::now()).unwrap();
    let AppReply::Stopped(report) = h.result(stop, WAIT).unwrap() else {
        panic!("not stopped");
    };
    assert_eq!(report.how, StopHow::Signal);
    assert!(
        report.status.contains("exit status: 0"),
        "{}",
        report.status
    );
    h.output_line(id, "shutdown");
    // It never saw a protocol error.
    let logs = h.supervisor.logs(id, 1000).unwrap();
    assert!(
        logs.iter()
            .all(|line| !line.line.contains("protocol error")),
        "{logs:?}"
    );
    assert!(zombies_among(&h.launched).is_empty());
}

#[test]
fn reregistration_replaces_the_connection() {
    if !require("python3", "reregistration_replaces_the_connection") {
        return;
    }
    let catalog = format!(
        "py:\n  path: python3\n  default_args: [{:?}, --reconnect-once]\n",
        python_client().display().to_string()
    );
    let mut h = Harness::new(&catalog, |_| {});
    let id = h.start("py", None);
    h.output_line(id, &format!("registered again {id}"));
    h.until("the replacing registration", WAIT, |h| {
        h.signal_events
            .contains(&SignalEvent::Registered {
                app: id,
                replaced: true,
            })
            .then_some(())
    });
    let ping = h.supervisor.ping(id, Instant::now()).unwrap();
    assert!(matches!(
        h.result(ping, WAIT).unwrap(),
        AppReply::Pong { .. }
    ));
    assert_eq!(h.supervisor.signal().connection_count(), 1);
}

/// Runs the Python client outside the supervisor with `id` while the harness loop turns;
/// its exit code and output.
fn run_outside(h: &mut Harness, id: u64) -> (Option<i32>, String) {
    let mut child = Command::new("python3")
        .arg(python_client())
        .args(["--id", &id.to_string()])
        .args(["--address", &h.supervisor.signal().local_addr().to_string()])
        .env_remove("SIGNAL_CLIENT_ID")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = h.until("the outside client to exit", WAIT, |_| {
        child.try_wait().unwrap()
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code(), out)
}

#[test]
fn registration_with_an_id_that_was_not_launched_is_refused() {
    if !require(
        "python3",
        "registration_with_an_id_that_was_not_launched_is_refused",
    ) {
        return;
    }
    let mut h = Harness::new(&python_catalog(), |_| {});
    let (code, out) = run_outside(&mut h, 999);
    assert_eq!(code, Some(3), "{out}");
    assert_eq!(out.trim(), "refused");
    h.until("the refusal event", WAIT, |h| {
        h.signal_events.iter().find_map(|event| match event {
            SignalEvent::Refused {
                claimed, reason, ..
            } => {
                assert_eq!(*claimed, Some(999));
                assert!(reason.contains("no app with id 999"), "{reason}");
                Some(())
            }
            _ => None,
        })
    });
}

#[test]
fn registration_from_a_process_that_was_not_launched_is_refused() {
    if !require(
        "python3",
        "registration_from_a_process_that_was_not_launched_is_refused",
    ) {
        return;
    }
    let mut h = Harness::new(&example_catalog(), |_| {});
    let id = h.start("example", None);
    h.registered(id);
    // Same id, another process: the socket is not the app's.
    let (code, out) = run_outside(&mut h, id);
    assert_eq!(code, Some(3), "{out}");
    h.until("the refusal event", WAIT, |h| {
        h.signal_events.iter().find_map(|event| match event {
            SignalEvent::Refused {
                claimed, reason, ..
            } => {
                assert_eq!(*claimed, Some(id));
                assert!(reason.contains("not held by app"), "{reason}");
                Some(())
            }
            _ => None,
        })
    });
    // The real app keeps its connection.
    assert!(h.supervisor.signal().is_registered(id));
    let ping = h.supervisor.ping(id, Instant::now()).unwrap();
    assert!(matches!(
        h.result(ping, WAIT).unwrap(),
        AppReply::Pong { .. }
    ));
}

#[test]
fn hostile_clients_do_not_stall_others() {
    let mut h = Harness::new(&example_catalog(), |_| {});
    let id = h.start("example", None);
    h.registered(id);
    let addr = h.supervisor.signal().local_addr();

    // Half a frame, then silence.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(&[0x01, 0, 0, 0, 1, 0, 0, 0x10]).unwrap();
    // Garbage.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // A frame over the size limit.
    let mut oversized = TcpStream::connect(addr).unwrap();
    oversized
        .write_all(&[0x01, 0, 0, 0, 1, 0, 0x01, 0x00, 0x01])
        .unwrap();
    // A keepalive from a raw socket is answered with the same bytes.
    let mut pinger = TcpStream::connect(addr).unwrap();
    let mut ping = Vec::new();
    Frame::Ping {
        ms: 0x0102_0304_0506_0708,
    }
    .encode(&mut ping)
    .unwrap();
    pinger.write_all(&ping).unwrap();
    pinger.set_nonblocking(true).unwrap();
    let mut pong = Vec::new();
    h.until("the pong", WAIT, |_| {
        let mut buf = [0u8; 16];
        if let Ok(got) = pinger.read(&mut buf) {
            pong.extend_from_slice(&buf[..got]);
        }
        (pong.len() >= 9).then_some(())
    });
    assert_eq!(
        Frame::decode(&pong).unwrap(),
        Some((
            Frame::Pong {
                ms: 0x0102_0304_0506_0708
            },
            9
        ))
    );

    // The registered app still answers promptly.
    for _ in 0..3 {
        let started = Instant::now();
        let ping = h.supervisor.ping(id, Instant::now()).unwrap();
        assert!(matches!(
            h.result(ping, WAIT).unwrap(),
            AppReply::Pong { .. }
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // The garbage and oversized connections were closed by the server.
    for stream in [&mut garbage, &mut oversized] {
        stream.set_nonblocking(true).unwrap();
    }
    h.until("the bad connections to close", WAIT, |_| {
        let closed = |stream: &mut TcpStream| {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(err) => return err.kind() != std::io::ErrorKind::WouldBlock,
                }
            }
        };
        (closed(&mut garbage) && closed(&mut oversized)).then_some(())
    });
    drop(stalled);
}

#[test]
fn idle_connections_cannot_lock_apps_out() {
    let mut h = Harness::new(&example_catalog(), |_| {});
    let addr = h.supervisor.signal().local_addr();
    // More idle connections than the server keeps.
    let idle: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(addr).unwrap()).collect();
    h.until("the server to be full", WAIT, |h| {
        (h.supervisor.signal().connection_count() == 64).then_some(())
    });
    let id = h.start("example", None);
    h.registered(id);
    let ping = h.supervisor.ping(id, Instant::now()).unwrap();
    assert!(matches!(
        h.result(ping, WAIT).unwrap(),
        AppReply::Pong { .. }
    ));
    drop(idle);
}

#[test]
fn a_taken_port_is_tried_again_until_it_is_free() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let retry = Duration::from_millis(100);
    let mut poll = Poll::new().unwrap();
    let start = Instant::now();
    let mut server = SignalServer::new(
        SignalServerOptions {
            port: address.port(),
            bind_retry: retry,
            ..SignalServerOptions::default()
        },
        poll.registry(),
        TokenRange::new(Token(100), 3),
        start,
    )
    .unwrap();
    let ListenerState::Retrying {
        address: asked,
        error,
        retry_in_ms,
    } = server.listener_state(start)
    else {
        panic!("listening on a taken port");
    };
    assert_eq!((asked, retry_in_ms), (address, 100));
    assert!(error.to_lowercase().contains("in use"), "{error}");
    assert_eq!(server.local_addr(), address);
    assert_eq!(server.poll_timeout(), Some(start + retry));

    // Still taken at the next try: the one after is scheduled.
    server.handle_timeout(start + retry);
    assert!(matches!(
        server.listener_state(start + retry),
        ListenerState::Retrying { .. }
    ));
    assert_eq!(server.poll_timeout(), Some(start + 2 * retry));

    drop(taken);
    server.handle_timeout(start + 2 * retry);
    assert_eq!(
        server.listener_state(start + 2 * retry),
        ListenerState::Listening { address }
    );
    assert_eq!(server.poll_timeout(), None);
    // It accepts connections now.
    let _client = TcpStream::connect(address).unwrap();
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + WAIT;
    while server.connection_count() == 0 {
        assert!(Instant::now() < deadline, "the connection was not accepted");
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for event in events.iter() {
            server.handle_event(event, Instant::now());
        }
    }
}
