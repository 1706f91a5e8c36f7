//! One app's life apart from its process: running, stopping (a signal shutdown, then SIGTERM,
//! then SIGKILL, each after its grace), waiting to restart (a daemon app, after a delay that
//! grows), or exited. It decides what is due and when; the supervisor does it, sending the
//! signals and launching the process.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::backoff::Backoff;
use super::{AppState, RequestId, StopHow};

/// After SIGKILL, how often a process that still has not exited is complained about.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long each step of a stop waits for the app to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Graces {
    /// After a signal shutdown, before SIGTERM.
    pub(super) shutdown: Duration,
    /// After SIGTERM, before SIGKILL.
    pub(super) term: Duration,
}

/// The step a stop has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopPhase {
    /// The app was asked over the signal protocol.
    Signal,
    /// It got SIGTERM.
    Term,
    /// It got SIGKILL.
    Kill,
}

#[derive(Debug)]
enum Stage {
    Running,
    Stopping {
        phase: StopPhase,
        deadline: Instant,
        /// The `shutdown` requests that wait for the app's end.
        requests: Vec<RequestId>,
    },
    Restarting {
        at: Instant,
    },
    Exited {
        at: Instant,
    },
}

/// One app's life. See the module docs.
#[derive(Debug)]
pub(super) struct Lifecycle {
    stage: Stage,
    daemon: bool,
    backoff: Backoff,
}

/// What the end of an app's process means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exit {
    /// A daemon app: it starts again after `delay`.
    Restart {
        /// How long it waits.
        delay: Duration,
    },
    /// It ended by itself and stays ended.
    Ended,
    /// A stop ended it.
    Stopped {
        /// What ended it.
        how: StopHow,
        /// The `shutdown` requests that wait for the report.
        requests: Vec<RequestId>,
    },
}

/// What a request to stop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopStep {
    /// The app was asked to shut down over the signal protocol; SIGTERM follows if it does not.
    Asked,
    /// The app is to get SIGTERM now.
    Terminate,
    /// A stop is under way already; the request waits for its end.
    Joined,
    /// Its restart was cancelled: it has exited.
    Cancelled,
    /// It has exited already.
    NotRunning,
}

/// What is due at a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Start the app again.
    Restart,
    /// Send this signal to the app's process group.
    Signal(Signal),
    /// It got SIGKILL and still has not exited.
    Stuck,
}

impl Lifecycle {
    /// The life of a process that has just started; a daemon app restarts after `backoff`.
    pub(super) fn running(daemon: bool, backoff: Backoff) -> Lifecycle {
        Lifecycle {
            stage: Stage::Running,
            daemon,
            backoff,
        }
    }

    // ----- getters -----

    /// Where the app is, as `list_apps` says it.
    pub(super) fn state(&self) -> AppState {
        match self.stage {
            Stage::Running => AppState::Running,
            Stage::Stopping { .. } => AppState::Stopping,
            Stage::Restarting { .. } => AppState::Restarting,
            Stage::Exited { .. } => AppState::Exited,
        }
    }

    /// When the app exited for good, if it has.
    pub(super) fn exited_at(&self) -> Option<Instant> {
        match self.stage {
            Stage::Exited { at } => Some(at),
            _ => None,
        }
    }

    /// When [`Lifecycle::handle_timeout`] is next due; restarts are not while every app stops.
    pub(super) fn poll_timeout(&self, stopping_all: bool) -> Option<Instant> {
        match self.stage {
            Stage::Restarting { at } if !stopping_all => Some(at),
            Stage::Stopping { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    // ----- input -----

    /// The app's process has ended after running for `uptime`. `None` when it had none.
    pub(super) fn handle_exit(
        &mut self,
        now: Instant,
        uptime: Duration,
        stopping_all: bool,
    ) -> Option<Exit> {
        let exit = match std::mem::replace(&mut self.stage, Stage::Exited { at: now }) {
            Stage::Running if self.daemon && !stopping_all => {
                let delay = self.backoff.delay(uptime);
                self.stage = Stage::Restarting { at: now + delay };
                Exit::Restart { delay }
            }
            Stage::Running => Exit::Ended,
            Stage::Stopping {
                phase, requests, ..
            } => Exit::Stopped {
                how: match phase {
                    StopPhase::Signal => StopHow::Signal,
                    StopPhase::Term => StopHow::Sigterm,
                    StopPhase::Kill => StopHow::Sigkill,
                },
                requests,
            },
            other => {
                self.stage = other;
                return None;
            }
        };
        Some(exit)
    }

    /// Does what is due by `now`, and says what the supervisor must do for it.
    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        graces: Graces,
        stopping_all: bool,
    ) -> Option<Due> {
        match &mut self.stage {
            Stage::Restarting { at } if *at <= now && !stopping_all => Some(Due::Restart),
            Stage::Stopping {
                phase, deadline, ..
            } if *deadline <= now => Some(match phase {
                StopPhase::Signal => {
                    *phase = StopPhase::Term;
                    *deadline = now + graces.term;
                    Due::Signal(Signal::SIGTERM)
                }
                StopPhase::Term => {
                    *phase = StopPhase::Kill;
                    *deadline = now + KILL_WAIT;
                    Due::Signal(Signal::SIGKILL)
                }
                StopPhase::Kill => {
                    *deadline = now + KILL_WAIT;
                    Due::Stuck
                }
            }),
            _ => None,
        }
    }

    // ----- commands -----

    /// Stops the app; `request` waits for its end. `ask` asks it over the signal protocol and
    /// says whether that was sent; it is called only when the app is running.
    pub(super) fn stop(
        &mut self,
        request: Option<RequestId>,
        ask: impl FnOnce() -> bool,
        now: Instant,
        graces: Graces,
    ) -> StopStep {
        match &mut self.stage {
            Stage::Stopping { requests, .. } => {
                requests.extend(request);
                StopStep::Joined
            }
            Stage::Restarting { .. } => {
                self.stage = Stage::Exited { at: now };
                StopStep::Cancelled
            }
            Stage::Exited { .. } => StopStep::NotRunning,
            Stage::Running => {
                let (phase, grace, step) = if ask() {
                    (StopPhase::Signal, graces.shutdown, StopStep::Asked)
                } else {
                    (StopPhase::Term, graces.term, StopStep::Terminate)
                };
                self.stage = Stage::Stopping {
                    phase,
                    deadline: now + grace,
                    requests: request.into_iter().collect(),
                };
                step
            }
        }
    }

    /// The app was started again after [`Due::Restart`].
    pub(super) fn restarted(&mut self) {
        if let Stage::Restarting { .. } = self.stage {
            self.stage = Stage::Running;
        }
    }

    /// Starting the app again failed: it tries again after the delay returned.
    pub(super) fn restart_failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.failed_start();
        self.stage = Stage::Restarting { at: now + delay };
        delay
    }

    /// The supervisor killed the process itself (the daemon is going): a stop under way ends
    /// as SIGKILL's, and a pending restart is given up.
    pub(super) fn killed(&mut self, now: Instant) {
        match &mut self.stage {
            Stage::Stopping { phase, .. } => *phase = StopPhase::Kill,
            Stage::Restarting { .. } => self.stage = Stage::Exited { at: now },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
