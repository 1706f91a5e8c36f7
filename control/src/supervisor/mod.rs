//! The app supervisor: starts catalog apps under sequential ids, keeps their recent output and
//! feeds their input, restarts `daemon: true` apps with back-off, reaps every child, shuts apps
//! down (signal, then SIGTERM, then SIGKILL), and measures them from /proc and over the signal
//! protocol. It owns the signal server and no thread: the control thread's mio loop drives it.

mod backoff;
mod launch;
pub mod output;
pub mod usage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::catalog::{Catalog, ProgramError};
use crate::signal::{AppId, RequestHandle, SignalError, SignalReply, SignalServer, TokenRange};
pub use backoff::Backoff;
pub use output::{OutputLine, Stream};

/// Tokens per app: stdin, stdout, stderr.
const TOKENS_PER_APP: usize = 3;
/// Bytes read from one pipe per wake-up before the loop looks at its other work.
const PIPE_READ_BUDGET: usize = 64 * 1024;
/// Input bytes waiting for an app to read them.
const MAX_INPUT: usize = 64 * 1024;
/// After SIGKILL, how often a process that still has not exited is complained about.
const KILL_WAIT: Duration = Duration::from_secs(5);

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

impl fmt::Display for AttachId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attach #{}", self.0)
    }
}

/// Where an app is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    /// Its process runs.
    Running,
    /// It is being shut down.
    Stopping,
    /// A daemon app that exited, waiting for its restart.
    Restarting,
    /// It has exited and will not come back.
    Exited,
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AppState::Running => "running",
            AppState::Stopping => "stopping",
            AppState::Restarting => "waiting to restart",
            AppState::Exited => "exited",
        })
    }
}

/// Answers [`Supervisor::start`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    /// The new app's id.
    pub id: AppId,
    /// Its catalog name.
    pub name: String,
    /// Its process.
    pub pid: u32,
    /// The program run and its arguments.
    pub command_line: Vec<String>,
}

/// One app, as `list_apps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppStatus {
    /// Its id.
    pub id: AppId,
    /// Its catalog name.
    pub name: String,
    /// Where it is in its life.
    pub state: AppState,
    /// Its process, while there is one.
    pub pid: Option<u32>,
    /// Whether it is restarted when it exits.
    pub daemon: bool,
    /// Whether it has a signal connection.
    pub registered: bool,
    /// Times it was restarted.
    pub restarts: u32,
    /// Seconds since its process started, while there is one.
    pub uptime_secs: Option<f64>,
    /// The program run and its arguments.
    pub command_line: Vec<String>,
    /// How its last process ended.
    pub last_exit: Option<String>,
    /// Why its last restart failed, if it did.
    pub last_error: Option<String>,
}

/// An app's resource usage: what /proc says, and what the app reports over the signal protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceUsage {
    /// The app's id.
    pub id: AppId,
    /// Its catalog name.
    pub name: String,
    /// Its process.
    pub pid: u32,
    /// CPU use since the previous measurement (or since it started), in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// Seconds since its process started.
    pub uptime_secs: f64,
    /// Times it was restarted.
    pub restarts: u32,
    /// What the app reported, if it answered.
    pub reported: Option<serde_json::Value>,
    /// Why it did not, if it did not.
    pub report_error: Option<String>,
}

/// What finally stopped an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopHow {
    /// It exited after the signal shutdown request (or by itself).
    Signal,
    /// It exited after SIGTERM.
    Sigterm,
    /// It was killed with SIGKILL.
    Sigkill,
    /// It was waiting for a restart, which was cancelled.
    Cancelled,
}

/// Answers [`Supervisor::shutdown`] once the app's process is reaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopReport {
    /// The app's id.
    pub id: AppId,
    /// Its catalog name.
    pub name: String,
    /// Its last process.
    pub pid: Option<u32>,
    /// What stopped it.
    pub how: StopHow,
    /// How the process ended, as the system tells it.
    pub status: String,
}

/// The answer to a request to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppReply {
    /// Answers [`Supervisor::ping`].
    Pong {
        /// The app.
        id: AppId,
        /// The signal round trip, in milliseconds.
        rtt_ms: f64,
    },
    /// Answers [`Supervisor::resource_usage`].
    ResourceUsage(ResourceUsage),
    /// Answers [`Supervisor::shutdown`].
    Stopped(StopReport),
}

/// What an attached listener receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachEvent {
    /// A line the app wrote.
    Output(OutputLine),
    /// Lines skipped because the listener did not keep up.
    Missed(u64),
    /// The app's process ended; unless it is restarting, this is the listener's last event.
    Exited {
        /// How it ended.
        status: String,
        /// Whether a daemon app will be started again (the listener stays attached).
        restarting: bool,
    },
}

/// Why a supervisor request failed; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The catalog has no such app, or its program cannot be found.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The program was found but would not start.
    #[error("app {app}: cannot start {program}: {problem}")]
    Spawn {
        /// The app's name.
        app: String,
        /// The program.
        program: String,
        /// What the system said.
        problem: String,
    },
    /// No app has this id.
    #[error("no app with id {0}: `list_apps` shows the running apps and their ids")]
    NoSuchId(AppId),
    /// The app has no process now.
    #[error("app {id} is not running ({state}); start it again with `start`")]
    NotRunning {
        /// The app.
        id: AppId,
        /// Its state.
        state: AppState,
    },
    /// All tokens are in use.
    #[error(
        "{0} apps are running already, the most this daemon runs at once; shut one down first"
    )]
    TooManyApps(usize),
    /// The daemon is stopping.
    #[error("skywired is stopping; apps cannot be started now")]
    Stopping,
    /// The signal server could not ask the app.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// /proc could not be read.
    #[error("cannot read /proc/{pid} of app {id}: {problem}")]
    Proc {
        /// The app.
        id: AppId,
        /// Its process.
        pid: u32,
        /// What the system said.
        problem: String,
    },
    /// The app's standard input is closed.
    #[error("app {0} has closed its standard input")]
    InputClosed(AppId),
    /// The app does not read its input.
    #[error("app {0} is not reading its input (64 KiB are waiting); try again later")]
    InputFull(AppId),
    /// The attached listener is gone.
    #[error("{0} is not attached (any more)")]
    NotAttached(AttachId),
}

#[derive(Debug)]
struct Process {
    child: Child,
    pid: u32,
    started: Instant,
    cpu_mark: Option<(Instant, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Signal,
    Term,
    Kill,
}

#[derive(Debug)]
struct Stop {
    phase: Phase,
    deadline: Instant,
    requests: Vec<RequestId>,
}

#[derive(Debug)]
enum Life {
    Running(Process),
    Stopping(Process, Stop),
    Restarting { at: Instant },
    Exited { at: Instant },
}

#[derive(Debug, Default)]
struct Pipes {
    stdin: Option<Sender>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    input: Vec<u8>,
    read_pending: [bool; 2],
}

#[derive(Debug)]
struct App {
    id: AppId,
    name: String,
    daemon: bool,
    command_line: Vec<String>,
    process: launch::ProcessSpec,
    slot: Option<usize>,
    life: Life,
    restarts: u32,
    backoff: Backoff,
    last_exit: Option<String>,
    last_error: Option<String>,
    last_pid: Option<u32>,
    output: output::OutputRing,
    splitters: [output::LineSplitter; 2],
    pipes: Pipes,
}

impl App {
    fn state(&self) -> AppState {
        match self.life {
            Life::Running(_) => AppState::Running,
            Life::Stopping(..) => AppState::Stopping,
            Life::Restarting { .. } => AppState::Restarting,
            Life::Exited { .. } => AppState::Exited,
        }
    }

    fn process(&self) -> Option<&Process> {
        match &self.life {
            Life::Running(process) | Life::Stopping(process, _) => Some(process),
            _ => None,
        }
    }

    fn process_mut(&mut self) -> Option<&mut Process> {
        match &mut self.life {
            Life::Running(process) | Life::Stopping(process, _) => Some(process),
            _ => None,
        }
    }

    fn not_running(&self) -> SupervisorError {
        SupervisorError::NotRunning {
            id: self.id,
            state: self.state(),
        }
    }
}

#[derive(Debug)]
struct Listener {
    app: AppId,
    queue: VecDeque<AttachEvent>,
    missed: u64,
    ending: bool,
}

impl Listener {
    fn deliver(&mut self, event: AttachEvent, capacity: usize) {
        if self.queue.len() >= capacity.max(2) {
            self.missed += 1;
            return;
        }
        if self.missed > 0 {
            self.queue
                .push_back(AttachEvent::Missed(std::mem::take(&mut self.missed)));
        }
        self.queue.push_back(event);
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
        let daemon = spec.daemon;
        let process = launch::ProcessSpec::of(spec);
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
            process,
            slot: Some(slot),
            life: Life::Exited { at: now },
            restarts: 0,
            backoff: Backoff::new(
                self.options.restart_initial,
                self.options.restart_max,
                self.options.restart_reset_after,
            ),
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
        app.life = Life::Running(process);
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

    fn launch(
        &mut self,
        app: &mut App,
        slot: usize,
        now: Instant,
    ) -> Result<Process, SupervisorError> {
        let spawn_error = |problem: String| SupervisorError::Spawn {
            app: app.name.clone(),
            program: app.command_line.first().cloned().unwrap_or_default(),
            problem,
        };
        let (program, args) = app
            .command_line
            .split_first()
            .ok_or_else(|| spawn_error("empty command line".to_owned()))?;
        let spawned = launch::spawn(
            program.as_ref(),
            args,
            &self.options.base_dir,
            app.id,
            self.signal.local_addr(),
            &app.process,
        )
        .map_err(|err| spawn_error(err.to_string()))?;
        let launch::Spawned {
            mut child,
            pid,
            mut stdin,
            mut stdout,
            mut stderr,
        } = spawned;
        let token = |kind: usize| self.tokens.get(slot * TOKENS_PER_APP + kind);
        let registered = match (token(0), token(1), token(2)) {
            (Some(t0), Some(t1), Some(t2)) => self
                .registry
                .register(&mut stdin, t0, Interest::WRITABLE)
                .and_then(|()| self.registry.register(&mut stdout, t1, Interest::READABLE))
                .and_then(|()| self.registry.register(&mut stderr, t2, Interest::READABLE)),
            _ => Err(io::Error::other("no tokens left")),
        };
        if let Err(err) = registered {
            let _ = self.registry.deregister(&mut stdin);
            let _ = self.registry.deregister(&mut stdout);
            let _ = self.registry.deregister(&mut stderr);
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(format!("cannot watch its pipes: {err}")));
        }
        app.pipes = Pipes {
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            input: Vec::new(),
            read_pending: [false; 2],
        };
        app.last_pid = Some(pid);
        self.signal.allow(app.id, pid);
        Ok(Process {
            child,
            pid,
            started: now,
            cpu_mark: None,
        })
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

    /// Pings app `id` over the signal protocol; answered with [`AppReply::Pong`]. While a
    /// ping to the app is on the wire, the request shares its answer.
    pub fn ping(&mut self, id: AppId, now: Instant) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        self.running_app(id)?;
        let request = self.next_request();
        if let Some((requests, _)) = self.pings.values_mut().find(|(_, app)| *app == id) {
            requests.push(request);
            return Ok(request);
        }
        let handle = self.signal.request_ping(id, now)?;
        self.pings.insert(handle, (vec![request], id));
        Ok(request)
    }

    /// Measures app `id` from /proc now and asks it what it reports; answered with
    /// [`AppReply::ResourceUsage`] (at once if it is not a signal client). While such a
    /// question to the app is on the wire, the request shares its answer.
    pub fn resource_usage(
        &mut self,
        id: AppId,
        now: Instant,
    ) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        self.running_app(id)?;
        let ticks_per_second = self.ticks_per_second;
        let Some(app) = self.apps.get_mut(&id) else {
            return Err(SupervisorError::NoSuchId(id));
        };
        let (name, restarts) = (app.name.clone(), app.restarts);
        let Some(process) = app.process_mut() else {
            return Err(SupervisorError::NoSuchId(id));
        };
        let pid = process.pid;
        let sample = usage::sample(pid).map_err(|err| SupervisorError::Proc {
            id,
            pid,
            problem: err.to_string(),
        })?;
        let (since, ticks_before) = process.cpu_mark.unwrap_or((process.started, 0));
        let cpu_percent = usage::cpu_percent(
            sample.cpu_ticks.saturating_sub(ticks_before),
            now.saturating_duration_since(since),
            ticks_per_second,
        );
        process.cpu_mark = Some((now, sample.cpu_ticks));
        let mut usage = ResourceUsage {
            id,
            name,
            pid,
            cpu_percent,
            rss_bytes: sample.rss_bytes,
            threads: sample.threads,
            open_files: sample.open_files,
            uptime_secs: now.saturating_duration_since(process.started).as_secs_f64(),
            restarts,
            reported: None,
            report_error: None,
        };
        let request = self.next_request();
        if let Some(waiting) = self
            .usages
            .values_mut()
            .find(|waiting| waiting.first().is_some_and(|(_, usage)| usage.id == id))
        {
            waiting.push((request, usage));
            return Ok(request);
        }
        match self.signal.request_resource_usage(id, now) {
            Ok(handle) => {
                self.usages.insert(handle, vec![(request, usage)]);
            }
            Err(err) => {
                usage.report_error = Some(err.to_string());
                self.results
                    .push_back((request, Ok(AppReply::ResourceUsage(usage))));
            }
        }
        Ok(request)
    }

    /// Shuts app `id` down: a signal shutdown if it registered, SIGTERM after
    /// [`SupervisorOptions::shutdown_grace`] (at once if it did not), SIGKILL after
    /// [`SupervisorOptions::term_grace`]; answered with [`AppReply::Stopped`] once reaped.
    pub fn shutdown(&mut self, id: AppId, now: Instant) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        if let Life::Exited { .. } = app.life {
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
            .all(|app| matches!(app.life, Life::Exited { .. }))
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
        let registered = self.signal.is_registered(id);
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        match &mut app.life {
            Life::Stopping(_, stop) => stop.requests.extend(request),
            Life::Restarting { .. } => {
                log::info!("app {id} ({}): restart cancelled", app.name);
                app.life = Life::Exited { at: now };
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
            Life::Exited { .. } => {}
            Life::Running(_) => {
                let Life::Running(process) =
                    std::mem::replace(&mut app.life, Life::Exited { at: now })
                else {
                    return;
                };
                let pid = process.pid;
                let asked = registered
                    .then(|| self.signal.request_shutdown(id, now).ok())
                    .flatten();
                let (phase, deadline) = match asked {
                    Some(handle) => {
                        self.shutdowns.insert(handle, id);
                        log::info!("app {id}: asked to shut down over the signal protocol");
                        (Phase::Signal, now + self.options.shutdown_grace)
                    }
                    None => {
                        let why = if registered {
                            "the signal shutdown could not be sent"
                        } else {
                            "it is not a signal client"
                        };
                        log::info!("app {id}: sending SIGTERM ({why})");
                        launch::signal_group(pid, Signal::SIGTERM);
                        (Phase::Term, now + self.options.term_grace)
                    }
                };
                if let Some(app) = self.apps.get_mut(&id) {
                    app.life = Life::Stopping(
                        process,
                        Stop {
                            phase,
                            deadline,
                            requests: request.into_iter().collect(),
                        },
                    );
                }
            }
        }
    }

    fn free_slot(&mut self, slot: Option<usize>) {
        if let Some(entry) = slot.and_then(|slot| self.slots.get_mut(slot)) {
            *entry = None;
        }
    }

    /// The last `count` output lines of app `id`, oldest first.
    pub fn logs(&self, id: AppId, count: usize) -> Result<Vec<OutputLine>, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        Ok(app.output.last(count))
    }

    /// Attaches a listener to app `id`'s output: what it writes from now on comes out of
    /// [`Supervisor::poll_attached`] until [`Supervisor::detach`] or the app's end.
    pub fn attach(&mut self, id: AppId) -> Result<AttachId, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        if let Life::Exited { .. } = app.life {
            return Err(app.not_running());
        }
        let attach = AttachId(self.next_attach);
        self.next_attach += 1;
        self.listeners.insert(
            attach,
            Listener {
                app: id,
                queue: VecDeque::new(),
                missed: 0,
                ending: false,
            },
        );
        Ok(attach)
    }

    /// Ends a listener.
    pub fn detach(&mut self, attach: AttachId) {
        self.listeners.remove(&attach);
    }

    /// The app a listener is attached to.
    pub fn attached_app(&self, attach: AttachId) -> Result<AppId, SupervisorError> {
        self.listeners
            .get(&attach)
            .map(|listener| listener.app)
            .ok_or(SupervisorError::NotAttached(attach))
    }

    /// The next event for an attached listener.
    pub fn poll_attached(&mut self) -> Option<(AttachId, AttachEvent)> {
        let (&attach, listener) = self
            .listeners
            .iter_mut()
            .find(|(_, listener)| !listener.queue.is_empty())?;
        let event = listener.queue.pop_front()?;
        if listener.ending && listener.queue.is_empty() {
            self.listeners.remove(&attach);
        }
        Some((attach, event))
    }

    /// Writes `line` and a newline to app `id`'s standard input.
    pub fn send_input(&mut self, id: AppId, line: &str) -> Result<(), SupervisorError> {
        let app = self.running_app(id)?;
        if app.pipes.stdin.is_none() {
            return Err(SupervisorError::InputClosed(id));
        }
        if app.pipes.input.len() + line.len() + 1 > MAX_INPUT {
            return Err(SupervisorError::InputFull(id));
        }
        if let Some(app) = self.apps.get_mut(&id) {
            app.pipes.input.extend_from_slice(line.as_bytes());
            app.pipes.input.push(b'\n');
        }
        self.flush_input(id);
        Ok(())
    }

    fn flush_input(&mut self, id: AppId) {
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let Some(stdin) = app.pipes.stdin.as_mut() else {
            app.pipes.input.clear();
            return;
        };
        let mut written = 0;
        let mut closed = false;
        while written < app.pipes.input.len() {
            match stdin.write(&app.pipes.input[written..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::info!("app {id}: its standard input is closed: {err}");
                    closed = true;
                    break;
                }
            }
        }
        app.pipes.input.drain(..written);
        if closed {
            if let Some(mut stdin) = app.pipes.stdin.take() {
                let _ = self.registry.deregister(&mut stdin);
            }
            app.pipes.input.clear();
        }
    }

    fn read_pipe(&mut self, id: AppId, stream: Stream) {
        let index = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let capacity = self.options.attach_queue;
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        app.pipes.read_pending[index] = false;
        let mut buf = [0u8; 8192];
        let mut budget = PIPE_READ_BUDGET;
        let mut lines = Vec::new();
        loop {
            let pipe = match stream {
                Stream::Stdout => app.pipes.stdout.as_mut(),
                Stream::Stderr => app.pipes.stderr.as_mut(),
            };
            let Some(pipe) = pipe else {
                break;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    let _ = self.registry.deregister(pipe);
                    match stream {
                        Stream::Stdout => app.pipes.stdout = None,
                        Stream::Stderr => app.pipes.stderr = None,
                    }
                    lines.extend(app.splitters[index].finish());
                    break;
                }
                Ok(got) => {
                    app.splitters[index].push(&buf[..got], |line| lines.push(line));
                    budget = budget.saturating_sub(got);
                    if budget == 0 {
                        app.pipes.read_pending[index] = true;
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("app {id}: cannot read its {stream:?}: {err}");
                    let _ = self.registry.deregister(pipe);
                    match stream {
                        Stream::Stdout => app.pipes.stdout = None,
                        Stream::Stderr => app.pipes.stderr = None,
                    }
                    break;
                }
            }
        }
        for line in lines {
            let line = OutputLine { stream, line };
            for listener in self.listeners.values_mut() {
                if listener.app == id && !listener.ending {
                    listener.deliver(AttachEvent::Output(line.clone()), capacity);
                }
            }
            app.output.push(line);
        }
    }

    fn end_listeners(&mut self, id: AppId, status: String, restarting: bool) {
        let capacity = self.options.attach_queue;
        for listener in self.listeners.values_mut() {
            if listener.app == id && !listener.ending {
                // The last event always gets through, whatever the queue holds.
                listener.deliver(
                    AttachEvent::Exited {
                        status: status.clone(),
                        restarting,
                    },
                    capacity + 2,
                );
                listener.ending = !restarting;
            }
        }
        self.listeners
            .retain(|_, listener| !(listener.ending && listener.queue.is_empty()));
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
        let life = std::mem::replace(&mut app.life, Life::Exited { at: now });
        let restarting = match life {
            Life::Running(process) if app.daemon && !stopping_all => {
                let uptime = now.saturating_duration_since(process.started);
                let delay = app.backoff.delay(uptime);
                log::warn!(
                    "app {id} ({}) exited ({status}) after {:.1} s; restarting in {} s",
                    app.name,
                    uptime.as_secs_f64(),
                    delay.as_secs_f64()
                );
                app.life = Life::Restarting { at: now + delay };
                true
            }
            Life::Running(process) => {
                log::info!("app {id} ({}) exited: {status}", app.name);
                app.last_pid = Some(process.pid);
                false
            }
            Life::Stopping(process, stop) => {
                let how = match stop.phase {
                    Phase::Signal => StopHow::Signal,
                    Phase::Term => StopHow::Sigterm,
                    Phase::Kill => StopHow::Sigkill,
                };
                log::info!("app {id} ({}) stopped ({how:?}): {status}", app.name);
                let report = StopReport {
                    id,
                    name: app.name.clone(),
                    pid: Some(process.pid),
                    how,
                    status: status.clone(),
                };
                for request in stop.requests {
                    self.results
                        .push_back((request, Ok(AppReply::Stopped(report.clone()))));
                }
                false
            }
            other => {
                app.life = other;
                return;
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
            .filter_map(|app| match app.life {
                Life::Exited { at } => Some((at, app.id)),
                _ => None,
            })
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
            app.life = Life::Exited { at: now };
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
                app.life = Life::Running(process);
            }
            Err(err) => {
                let delay = app.backoff.failed_start();
                log::warn!(
                    "app {id}: restart failed: {err}; trying again in {} s",
                    delay.as_secs_f64()
                );
                app.last_error = Some(err.to_string());
                app.life = Life::Restarting { at: now + delay };
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
            match &mut app.life {
                Life::Restarting { at } if *at <= now && !self.stopping_all => {
                    self.restart(id, now);
                }
                Life::Stopping(process, stop) if stop.deadline <= now => {
                    let pid = process.pid;
                    match stop.phase {
                        Phase::Signal => {
                            log::warn!("app {id}: still running {} s after the signal shutdown; sending SIGTERM", self.options.shutdown_grace.as_secs_f64());
                            launch::signal_group(pid, Signal::SIGTERM);
                            stop.phase = Phase::Term;
                            stop.deadline = now + self.options.term_grace;
                        }
                        Phase::Term => {
                            log::warn!("app {id}: still running after SIGTERM; sending SIGKILL");
                            launch::signal_group(pid, Signal::SIGKILL);
                            stop.phase = Phase::Kill;
                            stop.deadline = now + KILL_WAIT;
                        }
                        Phase::Kill => {
                            log::error!("app {id}: pid {pid} has not exited after SIGKILL (stuck in the kernel?)");
                            stop.deadline = now + KILL_WAIT;
                        }
                    }
                }
                _ => {}
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
            match &app.life {
                Life::Restarting { at } if !self.stopping_all => next = next.min(*at),
                Life::Stopping(_, stop) => next = next.min(stop.deadline),
                _ => {}
            }
        }
        Some(next)
    }

    /// The next finished request.
    pub fn poll_result(&mut self) -> Option<(RequestId, Result<AppReply, SupervisorError>)> {
        self.take_signal_results();
        self.results.pop_front()
    }

    fn take_signal_results(&mut self) {
        while let Some((handle, outcome)) = self.signal.poll_result() {
            if let Some((requests, id)) = self.pings.remove(&handle) {
                let reply = outcome
                    .map_err(SupervisorError::from)
                    .and_then(|reply| match reply {
                        SignalReply::Pong { rtt } => Ok(AppReply::Pong {
                            id,
                            rtt_ms: rtt.as_secs_f64() * 1000.0,
                        }),
                        other => Err(SupervisorError::Signal(SignalError::BadReply {
                            app: id,
                            request: "ping",
                            problem: format!("unexpected answer {other:?}"),
                        })),
                    });
                for request in requests {
                    self.results.push_back((request, reply.clone()));
                }
            } else if let Some(waiting) = self.usages.remove(&handle) {
                let (report, problem) = match outcome {
                    Ok(SignalReply::ResourceUsage(report)) => (Some(report), None),
                    Ok(other) => (None, Some(format!("unexpected answer {other:?}"))),
                    Err(err) => (None, Some(err.to_string())),
                };
                for (request, mut usage) in waiting {
                    usage.reported.clone_from(&report);
                    usage.report_error.clone_from(&problem);
                    self.results
                        .push_back((request, Ok(AppReply::ResourceUsage(usage))));
                }
            } else if let Some(id) = self.shutdowns.remove(&handle) {
                match outcome {
                    Ok(reply) => log::info!("app {id} acknowledged the shutdown: {reply:?}"),
                    Err(err) => log::info!("app {id}: {err}"),
                }
            } else {
                log::debug!("signal: result of request {handle} that the supervisor did not make");
            }
        }
    }

    fn kill_remaining(&mut self) {
        let now = Instant::now();
        let ids: Vec<AppId> = self.apps.keys().copied().collect();
        for id in ids {
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            let Some(process) = app.process_mut() else {
                if let Life::Restarting { .. } = app.life {
                    app.life = Life::Exited { at: now };
                }
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
                    if let Life::Stopping(_, stop) = &mut app.life {
                        stop.phase = Phase::Kill;
                    }
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
