//! Starting one app process: its program and arguments, the signal-protocol variables, the
//! config folder as working directory, a process group of its own (a terminal's Ctrl-C reaches
//! only skywired, which then stops its apps in order), the signal mask and SIGPIPE as a fresh
//! process has them, and non-blocking pipes for its streams.

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use mio::unix::pipe::{Receiver, Sender};
use nix::sys::signal::{kill, killpg, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use crate::signal::{AppId, ENV_CLIENT, ENV_CLIENT_ID, ENV_SERVER_ADDRESS};

/// A started process and its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The child, for `try_wait`.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// Its standard input.
    pub stdin: Sender,
    /// Its standard output.
    pub stdout: Receiver,
    /// Its standard error.
    pub stderr: Receiver,
}

/// Starts `program` with `args` as app `id`, a client of the signal server at `server`.
pub fn spawn(
    program: &Path,
    args: &[String],
    dir: &Path,
    id: AppId,
    server: SocketAddr,
) -> io::Result<Spawned> {
    let mut command = Command::new(program);
    // skywired blocks TERM, INT, HUP and CHLD in every thread (they are read through a
    // signalfd), and a child inherits the mask across exec: without this, an app could not be
    // stopped with SIGTERM at all.
    // SAFETY: the closure runs in the child between fork and exec, touches no memory of the
    // parent and calls only pthread_sigmask and signal, which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            SigSet::empty().thread_set_mask()?;
            nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
            Ok(())
        });
    }
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env(ENV_CLIENT, "true")
        .env(ENV_CLIENT_ID, id.to_string())
        .env(ENV_SERVER_ADDRESS, server.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    match pipes(&mut child) {
        Ok((stdin, stdout, stderr)) => Ok(Spawned {
            child,
            pid,
            stdin,
            stdout,
            stderr,
        }),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

fn pipes(child: &mut Child) -> io::Result<(Sender, Receiver, Receiver)> {
    let missing = || io::Error::other("the child's pipes are missing");
    let stdin = Sender::from(child.stdin.take().ok_or_else(missing)?);
    let stdout = Receiver::from(child.stdout.take().ok_or_else(missing)?);
    let stderr = Receiver::from(child.stderr.take().ok_or_else(missing)?);
    stdin.set_nonblocking(true)?;
    stdout.set_nonblocking(true)?;
    stderr.set_nonblocking(true)?;
    Ok((stdin, stdout, stderr))
}

/// Sends `signal` to the process group that app process `pid` leads, so that what it started
/// stops too; to the process alone if the group is gone. Call it only before `pid` is reaped.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if killpg(Pid::from_raw(raw), signal).is_err() {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}
