//! What the signal server reports: an app's answer, why a request to an app failed, why the
//! server could not start, and what happened on its port.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::server::MAX_OUTSTANDING;
use super::AppId;

/// An app's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalReply {
    /// Answers a ping: the time from sending the request to reading the answer.
    Pong {
        /// The round trip.
        rtt: Duration,
    },
    /// Answers a resource usage request: what the app reports about itself (a JSON object
    /// for well-behaved apps, any JSON value accepted).
    ResourceUsage(serde_json::Value),
    /// Answers a shutdown request: the app is exiting.
    ShuttingDown {
        /// The pid the app gave, if it gave one.
        pid: Option<u32>,
    },
}

/// Why a request to an app failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// No app with this id is running under this daemon.
    #[error("app {0} is not running under this daemon; `list_apps` shows the running ones")]
    NotLaunched(AppId),
    /// The app runs but has no signal connection.
    #[error("app {0} has not registered with the signal server: it is not a signal client or has not connected yet (a Go client retries every 30 s)")]
    NotRegistered(AppId),
    /// Too many requests of this kind are unanswered.
    #[error("app {app} has {MAX_OUTSTANDING} {request} requests unanswered; it is not answering, try `shutdown`")]
    Busy {
        /// The app.
        app: AppId,
        /// What was asked.
        request: &'static str,
    },
    /// No answer in time.
    #[error("app {app} did not answer the {request} request within {} s", .after.as_secs_f64())]
    Timeout {
        /// The app.
        app: AppId,
        /// What was asked.
        request: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The connection closed first.
    #[error("app {app} disconnected before answering the {request} request")]
    Disconnected {
        /// The app.
        app: AppId,
        /// What was asked.
        request: &'static str,
    },
    /// The answer's JSON is not what the protocol says.
    #[error("app {app} answered the {request} request with bad JSON: {problem}")]
    BadReply {
        /// The app.
        app: AppId,
        /// What was asked.
        request: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SignalServerError {
    /// The token range has no room for the listener and a connection.
    #[error("the signal server needs at least 2 mio tokens, got {0}")]
    Tokens(usize),
    /// The event loop could not be shared with the server.
    #[error("cannot share the event loop with the signal server: {0}")]
    Poll(#[from] io::Error),
}

/// Something that happened on the signal port, for logs and for whoever waits on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalEvent {
    /// An app registered.
    Registered {
        /// The app.
        app: AppId,
        /// Whether it replaced an earlier connection of the same app.
        replaced: bool,
    },
    /// A registered app's connection closed.
    Disconnected {
        /// The app.
        app: AppId,
    },
    /// A registration was refused and its connection closed.
    Refused {
        /// The id it claimed, if it sent a readable one.
        claimed: Option<u64>,
        /// Where it came from.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}
