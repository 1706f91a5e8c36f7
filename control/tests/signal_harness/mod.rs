//! What the signal and supervisor tests share: a test-owned mio loop around a supervisor and
//! its signal server (port 0), a temporary config folder, the example app and the Python client,
//! and a look at this process's children in /proc.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/temp.rs"]
mod temp;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use skywire_control::catalog::Catalog;
use skywire_control::signal::{AppId, SignalEvent, SignalServer, SignalServerOptions, TokenRange};
use skywire_control::supervisor::{
    AppReply, AppStatus, RequestId, Supervisor, SupervisorError, SupervisorOptions,
};
pub use temp::TempDir;

/// The example app, built as a binary of this package.
pub const EXAMPLE_APP: &str = env!("CARGO_BIN_EXE_skywire-signal-example");

/// The Python signal client.
pub fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/signal_client.py")
}

/// A supervisor driven by a mio loop that the test turns.
pub struct Harness {
    pub poll: Poll,
    events: Events,
    pub supervisor: Supervisor,
    results: Vec<(RequestId, Result<AppReply, SupervisorError>)>,
    pub signal_events: Vec<SignalEvent>,
    pub launched: Vec<u32>,
    pub dir: TempDir,
}

impl Harness {
    /// A supervisor of the apps in `catalog_yaml` (an `apps:` map), with `tune` applied to
    /// its options.
    pub fn new(catalog_yaml: &str, tune: impl FnOnce(&mut SupervisorOptions)) -> Harness {
        let dir = TempDir::new("signal");
        let catalog = Catalog::from_yaml_str(catalog_yaml).unwrap();
        let poll = Poll::new().unwrap();
        let now = Instant::now();
        let signal = SignalServer::new(
            SignalServerOptions {
                port: 0,
                ..SignalServerOptions::default()
            },
            poll.registry(),
            TokenRange::new(Token(100), 65),
            now,
        )
        .unwrap();
        let mut options = SupervisorOptions::new(dir.root());
        tune(&mut options);
        let supervisor = Supervisor::new(
            catalog,
            options,
            signal,
            poll.registry(),
            TokenRange::new(Token(1000), 3 * 32),
            now,
        )
        .unwrap();
        Harness {
            poll,
            events: Events::with_capacity(256),
            supervisor,
            results: Vec::new(),
            signal_events: Vec::new(),
            launched: Vec::new(),
            dir,
        }
    }

    /// One turn of the loop: wait at most 50 ms, handle events and timeouts, reap, collect.
    pub fn turn(&mut self) {
        let now = Instant::now();
        let wake = self
            .supervisor
            .poll_timeout()
            .map_or(Duration::from_millis(50), |at| {
                at.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        self.poll.poll(&mut self.events, Some(wake)).unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            assert!(
                self.supervisor.owns(event.token()),
                "stray token {:?}",
                event.token()
            );
            self.supervisor.handle_event(event, now);
        }
        // No signalfd here: reap every turn, as the control thread does on SIGCHLD.
        self.supervisor.reap(now);
        self.supervisor.handle_timeout(now);
        while let Some(result) = self.supervisor.poll_result() {
            self.results.push(result);
        }
        while let Some(event) = self.supervisor.signal_mut().poll_event() {
            self.signal_events.push(event);
        }
        for status in self.supervisor.list(now) {
            if let Some(pid) = status.pid {
                if !self.launched.contains(&pid) {
                    self.launched.push(pid);
                }
            }
        }
    }

    /// Turns the loop until `check` gives a value; fails the test after `timeout`.
    pub fn until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Harness) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() >= deadline {
                let now = Instant::now();
                panic!(
                    "timed out waiting for {what}; apps: {:#?}; signal events: {:#?}",
                    self.supervisor.list(now),
                    self.signal_events
                );
            }
            self.turn();
        }
    }

    /// Waits for the result of `request`.
    pub fn result(
        &mut self,
        request: RequestId,
        timeout: Duration,
    ) -> Result<AppReply, SupervisorError> {
        self.until(&format!("the result of {request}"), timeout, |h| {
            let index = h.results.iter().position(|(id, _)| *id == request)?;
            Some(h.results.remove(index).1)
        })
    }

    /// Starts catalog app `name`.
    pub fn start(&mut self, name: &str, args: Option<Vec<String>>) -> AppId {
        let started = self.supervisor.start(name, args, Instant::now()).unwrap();
        self.launched.push(started.pid);
        started.id
    }

    pub fn status(&self, id: AppId) -> AppStatus {
        self.supervisor.status(id, Instant::now()).unwrap()
    }

    /// Waits until app `id` has registered with the signal server.
    pub fn registered(&mut self, id: AppId) {
        self.until(
            &format!("app {id} to register"),
            Duration::from_secs(20),
            |h| h.supervisor.signal().is_registered(id).then_some(()),
        );
    }

    /// Waits until a line of app `id`'s output contains `text`.
    pub fn output_line(&mut self, id: AppId, text: &str) -> String {
        self.until(
            &format!("app {id} to print {text:?}"),
            Duration::from_secs(20),
            |h| {
                h.supervisor
                    .logs(id, 1000)
                    .unwrap()
                    .into_iter()
                    .find(|line| line.line.contains(text))
                    .map(|line| line.line)
            },
        )
    }
}

/// Those of `pids` that are zombie children of this process.
pub fn zombies_among(pids: &[u32]) -> Vec<u32> {
    let me = std::process::id();
    pids.iter()
        .copied()
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = after.split_whitespace();
            let state = fields.next();
            let parent: Option<u32> = fields.next().and_then(|p| p.parse().ok());
            state == Some("Z") && parent == Some(me)
        })
        .collect()
}

/// Those of `pids` that are still processes whose parent is this process.
pub fn children_among(pids: &[u32]) -> Vec<u32> {
    let me = std::process::id();
    pids.iter()
        .copied()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}
