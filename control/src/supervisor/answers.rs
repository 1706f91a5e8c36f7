//! What the supervisor answers, and why it refuses.

use std::fmt;

use serde::Serialize;

use super::{AttachId, OutputLine};
use crate::catalog::ProgramError;
use crate::signal::{AppId, SignalError};

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

/// Answers [`Supervisor::start`](super::Supervisor::start).
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

/// Answers [`Supervisor::shutdown`](super::Supervisor::shutdown) once the app's process is reaped.
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

/// The answer to a request to the supervisor. It serializes as the data it holds, untagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AppReply {
    /// Answers [`Supervisor::ping`](super::Supervisor::ping).
    Pong {
        /// The app.
        id: AppId,
        /// The signal round trip, in milliseconds.
        rtt_ms: f64,
    },
    /// Answers [`Supervisor::resource_usage`](super::Supervisor::resource_usage).
    ResourceUsage(ResourceUsage),
    /// Answers [`Supervisor::shutdown`](super::Supervisor::shutdown).
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
    /// Arguments were given to an app whose entry allows only its `default_args`.
    #[error("app {app} runs only with its default arguments ({}): its catalog entry does not say `args: free`; start it without arguments", if .default_args.is_empty() { "none".to_owned() } else { crate::command::join_words(.default_args) })]
    FixedArgs {
        /// The app's name.
        app: String,
        /// What it runs with.
        default_args: Vec<String>,
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
