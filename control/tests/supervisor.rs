//! The supervisor with real children: sequential ids, a SIGKILLed daemon app restarted with a
//! new pid, shutdown escalating to SIGTERM and SIGKILL, a missing program refused with a clear
//! error, and no zombie left after shutting everything down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/machine.rs"]
mod machine;
mod signal_harness;

use std::time::{Duration, Instant};

use machine::require;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_harness::{children_among, python_client, zombies_among, Harness, EXAMPLE_APP};
use skywire_control::supervisor::{AppReply, AppState, StopHow, SupervisorError};

const WAIT: Duration = Duration::from_secs(20);

/// The seed's entry, exactly as written in its `config.yaml`.
const SEED: &str = "\
  meshnet-socks-server:
    daemon: true
    desc: DESCRIPTION GOES HERE
    path: bin/meshnet/meshnet-run-socks-server
    default_args: []
    help: |
        [1] Text name of app, must be unique
";

#[test]
fn missing_program_is_a_clear_error() {
    let mut h = Harness::new(SEED, |_| {});
    let err = h
        .supervisor
        .start("meshnet-socks-server", None, Instant::now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "app meshnet-socks-server: cannot start bin/meshnet/meshnet-run-socks-server: \
             no such file (path is relative to the config folder {})",
            h.dir.root().display()
        )
    );
    let unknown = h
        .supervisor
        .start("nope", None, Instant::now())
        .unwrap_err();
    assert!(
        unknown.to_string().contains("`apps` lists them"),
        "{unknown}"
    );
    assert!(h.supervisor.list(Instant::now()).is_empty());
    h.turn();
}

#[test]
fn killed_daemon_comes_back_with_a_new_pid() {
    let catalog = format!("example:\n  daemon: true\n  path: {EXAMPLE_APP}\n");
    let mut h = Harness::new(&catalog, |_| {});
    let id = h.start("example", None);
    h.registered(id);
    let first = h.status(id).pid.unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let second = h.until("the restart", WAIT, |h| {
        let status = h.status(id);
        (status.state == AppState::Running && status.pid != Some(first))
            .then(|| (status.pid.unwrap(), status.restarts))
    });
    assert_ne!(second.0, first);
    assert_eq!(second.1, 1);
    let status = h.status(id);
    assert!(status.last_exit.unwrap().contains("SIGKILL"));
    // The new process registers with the same id, and the old pid is no zombie.
    h.registered(id);
    assert!(zombies_among(&[first]).is_empty());
    let usage = h.supervisor.resource_usage(id, Instant::now()).unwrap();
    let AppReply::ResourceUsage(usage) = h.result(usage, WAIT).unwrap() else {
        panic!("not a resource usage");
    };
    assert_eq!((usage.pid, usage.restarts), (second.0, 1));
}

#[test]
fn ids_are_sequential_and_never_reused() {
    let catalog = "sleeper:\n  path: sh\n  default_args: [-c, 'exec sleep 60']\n";
    let mut h = Harness::new(catalog, |_| {});
    let ids: Vec<u64> = (0..3).map(|_| h.start("sleeper", None)).collect();
    assert_eq!(ids, [1, 2, 3]);
    let stop = h.supervisor.shutdown(3, Instant::now()).unwrap();
    let AppReply::Stopped(report) = h.result(stop, WAIT).unwrap() else {
        panic!("not stopped");
    };
    // `sleep` is no signal client: it gets SIGTERM at once.
    assert_eq!(report.how, StopHow::Sigterm);
    assert_eq!(h.start("sleeper", None), 4);
    let err = h.supervisor.shutdown(3, Instant::now()).unwrap_err();
    assert!(
        matches!(err, SupervisorError::NotRunning { id: 3, .. }),
        "{err}"
    );
    assert!(matches!(
        h.supervisor.ping(99, Instant::now()),
        Err(SupervisorError::NoSuchId(99))
    ));
}

#[test]
fn shutdown_escalates_to_sigterm_then_sigkill() {
    let with_python = require("python3", "shutdown_escalates_to_sigterm_then_sigkill");
    let catalog = format!(
        "stubborn:\n  path: sh\n  default_args: [-c, 'trap \"\" TERM; echo ready; while :; do sleep 0.1; done']\n\
         deaf:\n  path: python3\n  default_args: [{:?}, --ignore-shutdown]\n",
        python_client().display().to_string()
    );
    let mut h = Harness::new(&catalog, |options| {
        options.shutdown_grace = Duration::from_millis(500);
        options.term_grace = Duration::from_millis(500);
    });
    // Ignores SIGTERM: killed.
    let stubborn = h.start("stubborn", None);
    h.output_line(stubborn, "ready");
    let stop = h.supervisor.shutdown(stubborn, Instant::now()).unwrap();
    let AppReply::Stopped(report) = h.result(stop, WAIT).unwrap() else {
        panic!("not stopped");
    };
    assert_eq!(report.how, StopHow::Sigkill);
    assert!(report.status.contains("SIGKILL"), "{}", report.status);

    // Answers the signal shutdown but stays: SIGTERM after the grace.
    if with_python {
        let deaf = h.start("deaf", None);
        h.registered(deaf);
        let started = Instant::now();
        let stop = h.supervisor.shutdown(deaf, Instant::now()).unwrap();
        let AppReply::Stopped(report) = h.result(stop, WAIT).unwrap() else {
            panic!("not stopped");
        };
        assert_eq!(report.how, StopHow::Sigterm);
        assert!(started.elapsed() >= Duration::from_millis(500));
        h.output_line(deaf, "shutdown");
    }
    assert!(zombies_among(&h.launched).is_empty());
}

#[test]
fn shutdown_all_leaves_no_zombies() {
    let with_python = require("python3", "shutdown_all_leaves_no_zombies");
    let catalog = format!(
        "example:\n  daemon: true\n  path: {EXAMPLE_APP}\n\
         py:\n  path: python3\n  default_args: [{:?}]\n\
         shell:\n  path: sh\n  default_args: [-c, 'sleep 60 & sleep 60; wait']\n\
         quick:\n  daemon: true\n  path: sh\n  default_args: [-c, 'exit 3']\n",
        python_client().display().to_string()
    );
    let mut h = Harness::new(&catalog, |options| {
        options.term_grace = Duration::from_secs(1);
    });
    let example = h.start("example", None);
    let py = with_python.then(|| h.start("py", None));
    h.start("shell", None);
    let quick = h.start("quick", None);
    h.registered(example);
    if let Some(py) = py {
        h.registered(py);
    }
    // The daemon that exits at once is waiting for its restart.
    h.until("the quick app to wait for a restart", WAIT, |h| {
        (h.status(quick).state == AppState::Restarting).then_some(())
    });
    let launched = h.launched.clone();
    assert!(!children_among(&launched).is_empty());

    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    h.supervisor.finish_shutdown(&mut h.poll, deadline).unwrap();
    assert!(h.supervisor.all_stopped());
    assert!(started.elapsed() < Duration::from_secs(15));
    for status in h.supervisor.list(Instant::now()) {
        assert_eq!(status.state, AppState::Exited, "{status:?}");
    }
    assert_eq!(zombies_among(&launched), Vec::<u32>::new());
    assert_eq!(children_among(&launched), Vec::<u32>::new());
    // No app starts once the daemon is stopping.
    assert_eq!(
        h.supervisor.start("example", None, Instant::now()),
        Err(SupervisorError::Stopping)
    );
}
