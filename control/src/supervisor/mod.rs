//! The app supervisor: starts catalog apps under sequential ids, keeps their recent output and
//! feeds their input, restarts `daemon: true` apps with back-off, reaps every child, shuts apps
//! down (signal, then SIGTERM, then SIGKILL), and measures them from /proc and over the signal
//! protocol. It owns the signal server and no thread: the control thread's mio loop drives it.

mod ancestry;
mod answers;
mod backoff;
mod launch;
mod lifecycle;
pub mod output;
mod signal_requests;
mod streams;
pub mod usage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Registry, Token};
use nix::sys::signal::Signal;

use crate::catalog::{Catalog, ProgramError};
use crate::signal::{owner, AppId, RequestHandle, SignalServer, TokenRange};
pub use ancestry::Ancestry;
pub use answers::{
    AppReply, AppState, AppStatus, AttachEvent, ResourceUsage, Started, StopHow, StopReport,
    SupervisorError,
};
pub use backoff::Backoff;
use lifecycle::{Due, Exit, Graces, Lifecycle, StopStep};
pub use output::{OutputLine, Stream};
use streams::{Listener, Pipes};

/// Tokens per app: stdin, stdout, stderr.
const TOKENS_PER_APP: usize = 3;
/// Bytes read from one pipe per wake-up before the loop looks at its other work.
const PIPE_READ_BUDGET: usize = 64 * 1024;
/// Input bytes waiting for an app to read them.
const MAX_INPUT: usize = 64 * 1024;

/// How the supervisor runs apps.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The config folder: relative app paths are resolved against it and apps run in it.
    pub base_dir: PathBuf,
    /// Output lines kept per app for `logs`.
    pub log_lines: usize,
    /// Longest output line kept; longer ones are cut.
    pub max_line_len: usize,
    /// Lines queued for one attached listener before lines are skipped for it.
    pub attach_queue: usize,
    /// After a signal shutdown, how long an app has to exit before SIGTERM (longer than the
    /// 10 s Viscript's library waits).
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub term_grace: Duration,
    /// First restart delay of a daemon app.
    pub restart_initial: Duration,
    /// Longest restart delay.
    pub restart_max: Duration,
    /// A daemon app up this long starts over from the first delay.
    pub restart_reset_after: Duration,
    /// How often children are reaped even without SIGCHLD.
    pub reap_interval: Duration,
    /// Exited apps kept for `list_apps` and `logs`; the oldest are forgotten.
    pub max_exited: usize,
    /// The app socket named in each app's environment (`SKYWIRE_APP_SOCKET`), if there is one.
    pub app_socket: Option<PathBuf>,
}

impl SupervisorOptions {
    /// The defaults, with `base_dir` the config folder.
    pub fn new(base_dir: impl Into<PathBuf>) -> SupervisorOptions {
        SupervisorOptions {
            base_dir: base_dir.into(),
            log_lines: 1000,
            max_line_len: 4096,
            attach_queue: 1024,
            shutdown_grace: Duration::from_secs(12),
            term_grace: Duration::from_secs(3),
            restart_initial: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
            restart_reset_after: Duration::from_secs(60),
            reap_interval: Duration::from_secs(1),
            max_exited: 32,
            app_socket: None,
        }
    }
}

/// Names a request to the supervisor; its result comes out of [`Supervisor::poll_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Names one attached listener of an app's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachId(u64);

impl AttachId {
    /// The listener numbered `raw`, as tests and the fuzzing harness name one.
    pub(crate) const fn from_raw(raw: u64) -> AttachId {
        AttachId(raw)
    }
}

impl fmt::Display for AttachId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attach #{}", self.0)
    }
}

#[derive(Debug)]
struct Process {
    child: Child,
    pid: u32,
    started: Instant,
    cpu_mark: Option<(Instant, u64)>,
}

#[derive(Debug)]
struct App {
    id: AppId,
    name: String,
    daemon: bool,
    command_line: Vec<String>,
    /// What its process starts with beyond its command line.
    process_spec: launch::ProcessSpec,
    slot: Option<usize>,
    /// Its process, while it runs or stops.
    process: Option<Process>,
    life: Lifecycle,
    restarts: u32,
    last_exit: Option<String>,
    last_error: Option<String>,
    last_pid: Option<u32>,
    output: output::OutputRing,
    splitters: [output::LineSplitter; 2],
    pipes: Pipes,
}

impl App {
    fn state(&self) -> AppState {
        self.life.state()
    }

    fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    fn process_mut(&mut self) -> Option<&mut Process> {
        self.process.as_mut()
    }

    fn not_running(&self) -> SupervisorError {
        SupervisorError::NotRunning {
            id: self.id,
            state: self.state(),
        }
    }
}

/// The supervisor. See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    catalog: Catalog,
    options: SupervisorOptions,
    signal: SignalServer,
    registry: Registry,
    tokens: TokenRange,
    slots: Vec<Option<AppId>>,
    apps: BTreeMap<AppId, App>,
    next_id: AppId,
    next_request: u64,
    next_attach: u64,
    results: VecDeque<(RequestId, Result<AppReply, SupervisorError>)>,
    /// Pings on the wire, and the requests that wait for each (requests to an app that is
    /// being pinged already share that ping, so that many clients cannot flood it).
    pings: HashMap<RequestHandle, (Vec<RequestId>, AppId)>,
    /// Resource usage requests on the wire, shared in the same way (each with its own /proc
    /// figures).
    usages: HashMap<RequestHandle, Vec<(RequestId, ResourceUsage)>>,
    shutdowns: HashMap<RequestHandle, AppId>,
    listeners: BTreeMap<AttachId, Listener>,
    stopping_all: bool,
    next_reap: Instant,
    last_now: Instant,
    ticks_per_second: u64,
}

impl Supervisor {
    /// A supervisor of `catalog`'s apps that uses `signal` (already bound) and registers app
    /// pipes with `registry` under `tokens` (three per app: at most `tokens.len() / 3` apps
    /// have a process at once).
    pub fn new(
        catalog: Catalog,
        options: SupervisorOptions,
        signal: SignalServer,
        registry: &Registry,
        tokens: TokenRange,
        now: Instant,
    ) -> io::Result<Supervisor> {
        Ok(Supervisor {
            catalog,
            next_reap: now + options.reap_interval,
            options,
            signal,
            registry: registry.try_clone()?,
            tokens,
            slots: vec![None; tokens.len() / TOKENS_PER_APP],
            apps: BTreeMap::new(),
            next_id: 1,
            next_request: 1,
            next_attach: 1,
            results: VecDeque::new(),
            pings: HashMap::new(),
            usages: HashMap::new(),
            shutdowns: HashMap::new(),
            listeners: BTreeMap::new(),
            stopping_all: false,
            last_now: now,
            ticks_per_second: usage::ticks_per_second(),
        })
    }

    /// How apps are run.
    pub fn options(&self) -> &SupervisorOptions {
        &self.options
    }

    /// The catalog apps are started from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Replaces the catalog (a reloaded config); running apps keep running.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
    }

    /// The signal server.
    pub fn signal(&self) -> &SignalServer {
        &self.signal
    }

    /// The signal server, to read its events ([`SignalServer::poll_event`]). Ask apps
    /// through the supervisor: it takes the server's results.
    pub fn signal_mut(&mut self) -> &mut SignalServer {
        &mut self.signal
    }

    /// Whether `token` is the supervisor's or its signal server's.
    pub fn owns(&self, token: Token) -> bool {
        self.tokens.contains(token) || self.signal.owns(token)
    }

    /// Starts catalog app `name` with `args` (its `default_args` when `None`) under a new id.
    /// Other arguments than its `default_args` are refused unless its entry says `args: free`.
    pub fn start(
        &mut self,
        name: &str,
        args: Option<Vec<String>>,
        now: Instant,
    ) -> Result<Started, SupervisorError> {
        if self.stopping_all {
            return Err(SupervisorError::Stopping);
        }
        let spec = self
            .catalog
            .get(name)
            .ok_or_else(|| ProgramError::UnknownApp(name.to_owned()))?;
        if let Some(args) = args.as_deref().filter(|args| !spec.allows_args(args)) {
            log::info!(
                "app {name}: refused to start with other arguments than its default ones: {args:?}"
            );
            return Err(SupervisorError::FixedArgs {
                app: name.to_owned(),
                default_args: spec.default_args.clone(),
            });
        }
        let daemon = spec.daemon;
        let process_spec = launch::ProcessSpec::of(spec);
        let args = args.unwrap_or_else(|| spec.default_args.clone());
        let program = self.catalog.program(name, &self.options.base_dir)?;
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(SupervisorError::TooManyApps(self.slots.len()))?;
        let id = self.next_id;
        let mut command_line = vec![program.display().to_string()];
        command_line.extend(args.iter().cloned());
        let mut app = App {
            id,
            name: name.to_owned(),
            daemon,
            command_line,
            process_spec,
            slot: Some(slot),
            process: None,
            life: Lifecycle::running(
                daemon,
                Backoff::new(
                    self.options.restart_initial,
                    self.options.restart_max,
                    self.options.restart_reset_after,
                ),
            ),
            restarts: 0,
            last_exit: None,
            last_error: None,
            last_pid: None,
            output: output::OutputRing::new(self.options.log_lines),
            splitters: [
                output::LineSplitter::new(self.options.max_line_len),
                output::LineSplitter::new(self.options.max_line_len),
            ],
            pipes: Pipes::default(),
        };
        let process = self.launch(&mut app, slot, now)?;
        let pid = process.pid;
        app.process = Some(process);
        self.next_id += 1;
        self.slots[slot] = Some(id);
        log::info!(
            "app {id} ({name}) started: pid {pid}: {:?}",
            app.command_line
        );
        let started = Started {
            id,
            name: name.to_owned(),
            pid,
            command_line: app.command_line.clone(),
        };
        self.apps.insert(id, app);
        Ok(started)
    }

    /// Where process `pid` (a control client's, say) stands in the trees of the apps' running
    /// processes.
    pub fn ancestry(&self, pid: Option<u32>) -> Ancestry {
        let running: HashMap<u32, AppId> = self
            .apps
            .values()
            .filter_map(|app| Some((app.process()?.pid, app.id)))
            .collect();
        ancestry::trace(pid, |pid| running.get(&pid).copied(), owner::parent_of)
    }

    /// Every app this daemon started that it still remembers, by id.
    pub fn list(&self, now: Instant) -> Vec<AppStatus> {
        self.apps
            .values()
            .map(|app| self.status_of(app, now))
            .collect()
    }

    /// App `id` as `list_apps` shows it.
    pub fn status(&self, id: AppId, now: Instant) -> Result<AppStatus, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        Ok(self.status_of(app, now))
    }

    fn status_of(&self, app: &App, now: Instant) -> AppStatus {
        let process = app.process();
        AppStatus {
            id: app.id,
            name: app.name.clone(),
            state: app.state(),
            pid: process.map(|process| process.pid),
            daemon: app.daemon,
            registered: self.signal.is_registered(app.id),
            restarts: app.restarts,
            uptime_secs: process
                .map(|process| now.saturating_duration_since(process.started).as_secs_f64()),
            command_line: app.command_line.clone(),
            last_exit: app.last_exit.clone(),
            last_error: app.last_error.clone(),
        }
    }

    fn next_request(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn running_app(&self, id: AppId) -> Result<&App, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        match app.process() {
            Some(_) => Ok(app),
            None => Err(app.not_running()),
        }
    }

    /// Shuts app `id` down: a signal shutdown if it registered, SIGTERM after
    /// [`SupervisorOptions::shutdown_grace`] (at once if it did not), SIGKILL after
    /// [`SupervisorOptions::term_grace`]; answered with [`AppReply::Stopped`] once reaped.
    pub fn shutdown(&mut self, id: AppId, now: Instant) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        if app.state() == AppState::Exited {
            return Err(app.not_running());
        }
        let request = self.next_request();
        self.stop(id, Some(request), now);
        Ok(request)
    }

    /// Starts shutting down every app and cancels pending restarts; no app starts after
    /// this. Keep driving the loop until [`Supervisor::all_stopped`], or use
    /// [`Supervisor::finish_shutdown`].
    pub fn shutdown_all(&mut self, now: Instant) {
        self.last_now = now;
        self.stopping_all = true;
        let ids: Vec<AppId> = self.apps.keys().copied().collect();
        for id in ids {
            self.stop(id, None, now);
        }
    }

    /// Whether no app has a process or a pending restart.
    pub fn all_stopped(&self) -> bool {
        self.apps
            .values()
            .all(|app| app.state() == AppState::Exited)
    }

    /// Shuts every app down and drives `poll` until all are reaped or `deadline` passes;
    /// then kills and reaps what is left, so that no child outlives the daemon. Other sources
    /// registered with `poll` get no attention meanwhile: call it when the daemon stops.
    pub fn finish_shutdown(&mut self, poll: &mut Poll, deadline: Instant) -> io::Result<()> {
        self.shutdown_all(Instant::now());
        let mut events = Events::with_capacity(64);
        while !self.all_stopped() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wake = self
                .poll_timeout()
                .unwrap_or(deadline)
                .min(deadline)
                .min(now + Duration::from_millis(100));
            match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            let now = Instant::now();
            for event in events.iter() {
                self.handle_event(event, now);
            }
            self.reap(now);
            self.handle_timeout(now);
        }
        self.kill_remaining();
        Ok(())
    }

    fn stop(&mut self, id: AppId, request: Option<RequestId>, now: Instant) {
        let graces = self.graces();
        let registered = self.signal.is_registered(id);
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let (signal, shutdowns) = (&mut self.signal, &mut self.shutdowns);
        let ask = || {
            registered
                .then(|| signal.request_shutdown(id, now).ok())
                .flatten()
                .map(|handle| shutdowns.insert(handle, id))
                .is_some()
        };
        match app.life.stop(request, ask, now, graces) {
            StopStep::Asked => log::info!("app {id}: asked to shut down over the signal protocol"),
            StopStep::Terminate => {
                let why = if registered {
                    "the signal shutdown could not be sent"
                } else {
                    "it is not a signal client"
                };
                log::info!("app {id}: sending SIGTERM ({why})");
                if let Some(process) = &app.process {
                    launch::signal_group(process.pid, Signal::SIGTERM);
                }
            }
            StopStep::Cancelled => {
                log::info!("app {id} ({}): restart cancelled", app.name);
                let report = StopReport {
                    id,
                    name: app.name.clone(),
                    pid: app.last_pid,
                    how: StopHow::Cancelled,
                    status: app.last_exit.clone().unwrap_or_default(),
                };
                let slot = app.slot.take();
                self.free_slot(slot);
                if let Some(request) = request {
                    self.results
                        .push_back((request, Ok(AppReply::Stopped(report))));
                }
                self.end_listeners(id, "stopped".to_owned(), false);
            }
            StopStep::Joined | StopStep::NotRunning => {}
        }
    }

    fn graces(&self) -> Graces {
        Graces {
            shutdown: self.options.shutdown_grace,
            term: self.options.term_grace,
        }
    }

    fn free_slot(&mut self, slot: Option<usize>) {
        if let Some(entry) = slot.and_then(|slot| self.slots.get_mut(slot)) {
            *entry = None;
        }
    }

    /// Reaps every app process that has exited (`waitpid(pid, WNOHANG)` on each): call it when
    /// SIGCHLD arrives; [`Supervisor::handle_timeout`] also calls it now and then.
    pub fn reap(&mut self, now: Instant) {
        self.last_now = now;
        let ids: Vec<AppId> = self
            .apps
            .values()
            .filter(|app| app.process().is_some())
            .map(|app| app.id)
            .collect();
        for id in ids {
            let Some(process) = self.apps.get_mut(&id).and_then(App::process_mut) else {
                continue;
            };
            let status = match process.child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                // ECHILD: someone else reaped it; it is gone all the same.
                Err(err) => format!("reaped elsewhere ({err})"),
            };
            self.exited(id, status, now);
        }
    }

    fn exited(&mut self, id: AppId, status: String, now: Instant) {
        // What it wrote before exiting is still in the pipes.
        self.read_pipe(id, Stream::Stdout);
        self.read_pipe(id, Stream::Stderr);
        self.signal.forget(id);
        let stopping_all = self.stopping_all;
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let Some(process) = app.process.take() else {
            return;
        };
        for pipe in [app.pipes.stdout.take(), app.pipes.stderr.take()]
            .into_iter()
            .flatten()
        {
            let mut pipe = pipe;
            let _ = self.registry.deregister(&mut pipe);
        }
        if let Some(mut stdin) = app.pipes.stdin.take() {
            let _ = self.registry.deregister(&mut stdin);
        }
        app.pipes = Pipes::default();
        app.last_exit = Some(status.clone());
        app.last_pid = Some(process.pid);
        let uptime = now.saturating_duration_since(process.started);
        let restarting = match app.life.handle_exit(now, uptime, stopping_all) {
            Some(Exit::Restart { delay }) => {
                log::warn!(
                    "app {id} ({}) exited ({status}) after {:.1} s; restarting in {} s",
                    app.name,
                    uptime.as_secs_f64(),
                    delay.as_secs_f64()
                );
                true
            }
            Some(Exit::Ended) | None => {
                log::info!("app {id} ({}) exited: {status}", app.name);
                false
            }
            Some(Exit::Stopped { how, requests }) => {
                log::info!("app {id} ({}) stopped ({how:?}): {status}", app.name);
                let report = StopReport {
                    id,
                    name: app.name.clone(),
                    pid: Some(process.pid),
                    how,
                    status: status.clone(),
                };
                for request in requests {
                    self.results
                        .push_back((request, Ok(AppReply::Stopped(report.clone()))));
                }
                false
            }
        };
        if !restarting {
            let slot = app.slot.take();
            self.free_slot(slot);
        }
        self.end_listeners(id, status, restarting);
        self.forget_old_exited();
    }

    fn forget_old_exited(&mut self) {
        let mut exited: Vec<(Instant, AppId)> = self
            .apps
            .values()
            .filter_map(|app| app.life.exited_at().map(|at| (at, app.id)))
            .collect();
        if exited.len() <= self.options.max_exited {
            return;
        }
        exited.sort();
        let excess = exited.len() - self.options.max_exited;
        for (_, id) in exited.into_iter().take(excess) {
            self.apps.remove(&id);
            self.listeners.retain(|_, listener| listener.app != id);
        }
    }

    fn restart(&mut self, id: AppId, now: Instant) {
        let Some(mut app) = self.apps.remove(&id) else {
            return;
        };
        let Some(slot) = app.slot else {
            app.life.killed(now);
            self.apps.insert(id, app);
            return;
        };
        match self.launch(&mut app, slot, now) {
            Ok(process) => {
                app.restarts += 1;
                app.last_error = None;
                log::info!(
                    "app {id} ({}) restarted (restart {}): pid {}",
                    app.name,
                    app.restarts,
                    process.pid
                );
                app.process = Some(process);
                app.life.restarted();
            }
            Err(err) => {
                let delay = app.life.restart_failed(now);
                log::warn!(
                    "app {id}: restart failed: {err}; trying again in {} s",
                    delay.as_secs_f64()
                );
                app.last_error = Some(err.to_string());
            }
        }
        self.apps.insert(id, app);
    }

    /// Handles a readiness event for one of the supervisor's or its signal server's tokens
    /// (others are ignored).
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        self.handle_token(event.token(), now);
    }

    /// Handles readiness of `token`, whatever it was (spurious wake-ups are harmless).
    pub fn handle_token(&mut self, token: Token, now: Instant) {
        self.last_now = now;
        if self.signal.owns(token) {
            self.signal.handle_token(token, now);
            self.take_signal_results();
            return;
        }
        let Some(index) = self.tokens.index_of(token) else {
            return;
        };
        let Some(id) = self.slots.get(index / TOKENS_PER_APP).copied().flatten() else {
            return;
        };
        match index % TOKENS_PER_APP {
            0 => self.flush_input(id),
            1 => self.read_pipe(id, Stream::Stdout),
            _ => self.read_pipe(id, Stream::Stderr),
        }
    }

    /// Does what is due by `now`: the signal server's timeouts, the next step of shutdowns,
    /// restarts, the periodic reap, reading that was cut short.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.signal.handle_timeout(now);
        self.take_signal_results();
        if now >= self.next_reap {
            self.next_reap = now + self.options.reap_interval;
            self.reap(now);
        }
        let graces = self.graces();
        let ids: Vec<AppId> = self.apps.keys().copied().collect();
        for id in ids {
            let pending = self
                .apps
                .get(&id)
                .map_or([false; 2], |app| app.pipes.read_pending);
            for (stream, pending) in [Stream::Stdout, Stream::Stderr].into_iter().zip(pending) {
                if pending {
                    self.read_pipe(id, stream);
                }
            }
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            let pid = app.process.as_ref().map(|process| process.pid);
            match app.life.handle_timeout(now, graces, self.stopping_all) {
                Some(Due::Restart) => self.restart(id, now),
                Some(Due::Signal(signal)) => {
                    match signal {
                        Signal::SIGTERM => log::warn!(
                            "app {id}: still running {} s after the signal shutdown; sending SIGTERM",
                            graces.shutdown.as_secs_f64()
                        ),
                        _ => log::warn!("app {id}: still running after SIGTERM; sending {signal}"),
                    }
                    if let Some(pid) = pid {
                        launch::signal_group(pid, signal);
                    }
                }
                Some(Due::Stuck) => log::error!(
                    "app {id}: pid {} has not exited after SIGKILL (stuck in the kernel?)",
                    pid.unwrap_or_default()
                ),
                None => {}
            }
        }
    }

    /// When [`Supervisor::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_reap;
        if let Some(at) = self.signal.poll_timeout() {
            next = next.min(at);
        }
        for app in self.apps.values() {
            if app.pipes.read_pending.iter().any(|pending| *pending) {
                next = next.min(self.last_now);
            }
            if let Some(at) = app.life.poll_timeout(self.stopping_all) {
                next = next.min(at);
            }
        }
        Some(next)
    }

    /// The next finished request.
    pub fn poll_result(&mut self) -> Option<(RequestId, Result<AppReply, SupervisorError>)> {
        self.take_signal_results();
        self.results.pop_front()
    }

    fn kill_remaining(&mut self) {
        let now = Instant::now();
        let ids: Vec<AppId> = self.apps.keys().copied().collect();
        for id in ids {
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            let Some(process) = app.process.as_mut() else {
                app.life.killed(now);
                continue;
            };
            let pid = process.pid;
            let status = match process.child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                _ => {
                    log::warn!("app {id}: killing pid {pid}");
                    launch::signal_group(pid, Signal::SIGKILL);
                    let status = match process.child.wait() {
                        Ok(status) => status.to_string(),
                        Err(err) => format!("reaped elsewhere ({err})"),
                    };
                    app.life.killed(now);
                    status
                }
            };
            self.exited(id, status, now);
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stopping_all = true;
        self.kill_remaining();
    }
}
