//! The process's Unix signals: TERM, INT, HUP and CHLD are blocked in every thread and read
//! here through a signalfd, and the children the control thread was asked to reap.

use std::collections::HashSet;
use std::os::fd::{AsRawFd as _, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::ControlError;

/// The signals the control thread handles; every thread must block them.
const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
];

/// Blocks TERM, INT, HUP and CHLD in the calling thread, so that they reach the control thread's
/// signalfd. Call it in `main` before any thread is spawned: threads inherit the mask, and so do
/// programs started with `std::process::Command` (the supervisor unblocks them in its apps).
pub fn block_signals() -> Result<(), ControlError> {
    handled_signals()
        .thread_block()
        .map_err(ControlError::Signals)
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED_SIGNALS {
        set.add(signal);
    }
    set
}

/// What a signal asks of the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// TERM or INT: stop.
    Stop(Signal),
    /// HUP: reload the configuration.
    Reload,
    /// CHLD: a child process has exited.
    Child,
}

/// The signalfd.
#[derive(Debug)]
pub(super) struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Reads the handled signals, which the caller has blocked with [`block_signals`].
    pub(super) fn new() -> Result<Signals, ControlError> {
        let fd = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(ControlError::Signals)?;
        Ok(Signals { fd })
    }

    /// The descriptor to watch for readability.
    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next signal waiting, if any.
    pub(super) fn poll(&mut self) -> Option<Received> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(-1);
                    match Signal::try_from(number) {
                        Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => {
                            return Some(Received::Stop(signal))
                        }
                        Ok(Signal::SIGHUP) => return Some(Received::Reload),
                        Ok(Signal::SIGCHLD) => return Some(Received::Child),
                        _ => log::debug!("signal {number} received and ignored"),
                    }
                }
                Ok(None) => return None,
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    log::error!("cannot read signals: {errno}");
                    return None;
                }
            }
        }
    }
}

/// The child processes the control thread reaps. Only these: `waitpid(-1)` would also take the
/// exit status of children that other threads wait for themselves (a `std::process::Command`
/// anywhere in the process would fail with ECHILD).
#[derive(Debug, Default)]
pub(super) struct Children {
    pids: HashSet<Pid>,
}

impl Children {
    /// Reaps `pid` once it has exited.
    pub(super) fn add(&mut self, pid: Pid) {
        self.pids.insert(pid);
    }

    /// Reaps every registered child that has exited, so that none stays a zombie.
    pub(super) fn reap(&mut self) {
        self.pids.retain(|&pid| loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(status) => {
                    log::info!("child process {pid} ended: {status:?}");
                    return false;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return false,
                Err(errno) => {
                    log::warn!("cannot reap child process {pid}: {errno}");
                    return true;
                }
            }
        });
    }
}
