//! Starting one app process: its program and arguments, a clean environment (the
//! signal-protocol variables, a minimal `PATH` and its entry's `env`), the config folder as
//! working directory, a process group of its own (a terminal's Ctrl-C reaches only skywired,
//! which then stops its apps in order), the signal mask and SIGPIPE as a fresh process has them,
//! only the capabilities its entry asks for, death with skywired, and non-blocking pipes for its
//! streams, which the supervisor watches.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use mio::unix::pipe::{Receiver, Sender};
use mio::Interest;
use nix::libc;
use nix::sys::prctl;
use nix::sys::signal::{kill, killpg, SigHandler, SigSet, Signal};
use nix::unistd::{getppid, Pid};

use super::{App, Pipes, Process, Supervisor, SupervisorError, TOKENS_PER_APP};
use crate::capability::{self, CapabilitySet, ChildCapabilities};
use crate::catalog::AppSpec;
use crate::signal::{AppId, ENV_CLIENT, ENV_CLIENT_ID, ENV_SERVER_ADDRESS};

/// The `PATH` an app gets unless its entry's `env` sets one: the one systemd gives services.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an app's process starts with beyond its command line, from its catalog entry: taken
/// when the app is started, so that a daemon app's restarts keep it whatever a reloaded catalog
/// says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The capabilities it keeps.
    pub capabilities: CapabilitySet,
    /// The variables its entry sets.
    pub env: BTreeMap<String, String>,
}

impl ProcessSpec {
    /// What `spec` asks for.
    pub fn of(spec: &AppSpec) -> ProcessSpec {
        ProcessSpec {
            capabilities: spec.capability_set(),
            env: spec.env.clone(),
        }
    }
}

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

/// Starts `program` with `args` as app `id`, a client of the signal server at `server`, as
/// `process` says. Call it from the thread that reaps the app: the app dies with that thread.
pub fn spawn(
    program: &Path,
    args: &[String],
    dir: &Path,
    id: AppId,
    server: SocketAddr,
    process: &ProcessSpec,
) -> io::Result<Spawned> {
    let capabilities = ChildCapabilities::new(process.capabilities).map_err(io::Error::other)?;
    if capability::runs_as_root() && !capabilities.clears_bounding() {
        log::warn!(
            "app {id} runs as root with every capability of skywired's bounding set: skywired \
             lacks CAP_SETPCAP to clear it; run skywired as a user of its own, as the systemd \
             unit does"
        );
    }
    let parent = Pid::this();
    let mut command = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec. It touches no memory of the
    // parent but its own copies (`capabilities`, `parent`: plain values), allocates nothing, and
    // calls only pthread_sigmask, signal, prctl, getppid and capset, which are
    // async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // skywired blocks TERM, INT, HUP and CHLD in every thread (they are read through a
            // signalfd), and a child inherits the mask across exec: without this, an app could
            // not be stopped with SIGTERM at all.
            SigSet::empty().thread_set_mask()?;
            nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl)?;
            // Killed when the forking thread (skywired's control thread, its main thread) ends,
            // however it ends. The kernel forgets this at an exec that gains privileges (a
            // set-user-ID program, file capabilities); the unit's NoNewPrivileges rules that out.
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // skywired may have died before the line above: then nobody would kill this child.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            capabilities.apply()
        });
    }
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&process.env)
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

impl Supervisor {
    /// Starts `app`'s process in `slot`, with its pipes watched under the slot's tokens.
    pub(super) fn launch(
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
        let spawned = spawn(
            program.as_ref(),
            args,
            &self.options.base_dir,
            app.id,
            self.signal.local_addr(),
            &app.process_spec,
        )
        .map_err(|err| spawn_error(err.to_string()))?;
        let Spawned {
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
}
