//! The control thread: one mio loop that owns the control socket and its clients, the process's
//! Unix signals (read through a signalfd) and the replies coming back from the dataplane. It
//! answers `help` and argument errors itself and forwards every other command as a request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use skywire_dataplane::api::{Reply, Request, RequestId, RequestSender};

use crate::command::{self, Command, CommandSpec, COMMANDS};
use crate::protocol::{failure_line, success_line, MAX_LINE};
use crate::render;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// Client tokens count up from here and are never reused, so that a late reply cannot reach a
/// newer client.
const FIRST_CLIENT: usize = 3;

/// The signals the control thread handles; every thread must block them.
const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
];

/// The socket's mode: owner and group may connect.
const SOCKET_MODE: u32 = 0o660;
/// The mode of the socket's folder when it has to be created.
const SOCKET_DIR_MODE: u32 = 0o755;

/// Bytes read from a client at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Reads from one client per wake-up, so that a busy client cannot starve the others.
const READS_PER_WAKE: usize = 16;
/// Pending output above which a client's replies are written at once rather than at the end of
/// the wake-up.
const EARLY_FLUSH: usize = 64 * 1024;
/// How often the loop wakes up when nothing happens, to notice a dataplane that has gone.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const EVENTS_CAPACITY: usize = 256;

/// Why the control thread could not start or had to stop. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another process answers on the socket.
    #[error("another skywired is already listening on {}: stop it first, or set control.socket to another path", .path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The socket's path is taken by something that is not a socket.
    #[error("{} exists and is not a socket: move it away, or set control.socket to another path", .path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// This user may not create the socket there (or its folder).
    #[error("cannot create {}: permission denied: run as root or set control.socket in the config", .path.display())]
    PermissionDenied {
        /// The socket, or the folder that could not be created.
        path: PathBuf,
    },
    /// The socket could not be created for another reason.
    #[error("cannot create the control socket {}: {source}; check that its folder exists and can be written, or set control.socket in the config", .path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A socket file that nobody answers on could not be checked or removed.
    #[error("cannot replace the stale control socket {}: {source}; remove it yourself", .path.display())]
    Stale {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The socket's mode or group could not be set.
    #[error("cannot set the mode or group of the control socket {}: {source}; check who owns its folder, or set control.socket in the config", .path.display())]
    Permissions {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The group the socket should belong to does not exist.
    #[error("the control socket's group `{group}` does not exist: create it (groupadd {group}) or name another")]
    UnknownGroup {
        /// The group's name.
        group: String,
    },
    /// TERM, INT, HUP and CHLD could not be blocked or read through a signalfd.
    #[error("cannot set up the handling of TERM, INT, HUP and CHLD: {0}")]
    Signals(Errno),
    /// The event loop could not be made or failed.
    #[error("the control thread's event loop failed: {0}; the process may be out of file descriptors (raise LimitNOFILE or ulimit -n)")]
    EventLoop(io::Error),
    /// The dataplane thread went away while the control thread was serving.
    #[error("the dataplane thread stopped unexpectedly: the reason is in the log above; restart skywired")]
    DataplaneStopped,
}

/// Blocks TERM, INT, HUP and CHLD in the calling thread, so that they reach the control thread's
/// signalfd. Call it in `main` before any thread is spawned: threads inherit the mask (programs
/// started with `std::process::Command` do not: it clears the mask in the child).
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

/// Where the control socket goes and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlOptions {
    /// The socket's path (`control.socket`).
    pub socket: PathBuf,
    /// A group that should own the socket, so that its members may connect; `None` keeps the
    /// process's group.
    pub socket_group: Option<String>,
}

/// Bounds that keep one client from hurting the others or the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones get an error line and are closed.
    pub max_clients: usize,
    /// Lines one client may have waiting behind a command in progress; one more gets an error
    /// and the connection is closed.
    pub max_queued_lines: usize,
    /// Reply bytes waiting for a client that does not read them; beyond that it is disconnected.
    pub max_pending_output: usize,
    /// How long a stop waits for the dataplane to say it has stopped.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 256,
            max_queued_lines: 64,
            max_pending_output: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Stops a running [`ControlServer`] from another thread, as SIGTERM does.
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the server to shut the dataplane down and return from [`ControlServer::run`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(err) = self.waker.wake() {
            log::warn!("cannot wake the control thread to stop it: {err}");
        }
    }
}

/// The control thread's state before it runs: the bound socket, the signalfd, its own poll.
#[derive(Debug)]
pub struct ControlServer {
    poll: Poll,
    listener: UnixListener,
    signals: SignalFd,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    socket: SocketFile,
    limits: Limits,
    children: Children,
}

impl ControlServer {
    /// Binds the socket (mode 0660; refuses with a clear error if another daemon answers on it;
    /// replaces a stale socket file only when connecting to it is refused) and creates the
    /// signalfd for TERM, INT, HUP and CHLD, which the caller has blocked with
    /// [`block_signals`] in every thread.
    pub fn bind(options: ControlOptions) -> Result<ControlServer, ControlError> {
        let path = options.socket;
        prepare_socket_path(&path)?;
        let mut listener = UnixListener::bind(&path).map_err(|source| bind_error(&path, source))?;
        let socket = SocketFile::new(path.clone());
        fs::set_permissions(&path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
            ControlError::Permissions {
                path: path.clone(),
                source,
            }
        })?;
        if let Some(group) = &options.socket_group {
            set_group(&path, group)?;
        }

        let poll = Poll::new().map_err(ControlError::EventLoop)?;
        let signals = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(ControlError::Signals)?;
        let registry = poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ControlError::EventLoop)?;
        registry
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(ControlError::EventLoop)?;
        let waker = Arc::new(Waker::new(registry, WAKER).map_err(ControlError::EventLoop)?);
        log::info!("control socket {}", path.display());
        Ok(ControlServer {
            poll,
            listener,
            signals,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            socket,
            limits: Limits::default(),
            children: Children::default(),
        })
    }

    /// The waker of this server's poll: the control side of `api::channels`.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// A handle that stops [`ControlServer::run`] as SIGTERM does.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Replaces the default [`Limits`].
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Has the control thread reap the child process `pid` once it exits (on SIGCHLD). Only
    /// children registered here are reaped: the exit status of any other child stays for the
    /// thread that waits for it (`std::process::Child::wait`).
    pub fn reap_child(&mut self, pid: u32) {
        match i32::try_from(pid) {
            Ok(pid) => {
                self.children.pids.insert(Pid::from_raw(pid));
            }
            Err(_) => log::warn!("{pid} is no process id: not reaping it"),
        }
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves until SIGTERM or SIGINT (or [`Stopper::stop`]): then sends `Request::Shutdown` to
    /// the dataplane, waits for `Reply::Stopped` (or the channel closing, or the shutdown
    /// timeout), removes the socket file and returns. Fails if the dataplane goes away while
    /// serving.
    pub fn run(
        self,
        requests: RequestSender,
        replies: Receiver<(RequestId, Reply)>,
    ) -> Result<(), ControlError> {
        let ControlServer {
            poll,
            listener,
            signals,
            waker,
            stop,
            socket,
            limits,
            children,
        } = self;
        let mut control = Control {
            poll,
            listener: Some(listener),
            signals,
            _waker: waker,
            stop,
            limits,
            clients: HashMap::new(),
            next_token: FIRST_CLIENT,
            dataplane: Dataplane {
                requests,
                in_flight: HashMap::new(),
                next_id: 1,
                shutdown_id: None,
                accepting: true,
            },
            phase: Phase::Serving,
            children,
        };
        let outcome = control.serve(&replies);
        control.finish();
        drop(control);
        drop(socket);
        outcome
    }
}

/// The socket file this server made; removed on drop unless another has taken its place.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: PathBuf) -> SocketFile {
        let identity = fs::symlink_metadata(&path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        SocketFile { path, identity }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = fs::symlink_metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if current.is_some() && current == self.identity {
            if let Err(err) = fs::remove_file(&self.path) {
                log::warn!(
                    "cannot remove the control socket {}: {err}; remove it yourself",
                    self.path.display()
                );
            }
        }
    }
}

/// Makes sure the socket can be bound at `path`: refuses when another daemon answers there or the
/// path is not a socket, removes a socket nobody answers on, creates a missing folder.
fn prepare_socket_path(path: &Path) -> Result<(), ControlError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        }),
        Ok(_) => match UnixStream::connect(path) {
            // Non-blocking: a daemon whose backlog is full answers WouldBlock.
            Ok(_) => Err(ControlError::InUse {
                path: path.to_path_buf(),
            }),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(ControlError::InUse {
                path: path.to_path_buf(),
            }),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!(
                    "removing the stale control socket {} (nothing answers on it)",
                    path.display()
                );
                match fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                        Err(ControlError::PermissionDenied {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(source) => Err(ControlError::Stale {
                        path: path.to_path_buf(),
                        source,
                    }),
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                Err(ControlError::PermissionDenied {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => Err(ControlError::Stale {
                path: path.to_path_buf(),
                source,
            }),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() && !folder.exists() => {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(SOCKET_DIR_MODE)
                        .create(folder)
                        .map_err(|source| bind_error(folder, source))?;
                    log::info!("created the control socket's folder {}", folder.display());
                }
                _ => {}
            }
            Ok(())
        }
        Err(source) => Err(bind_error(path, source)),
    }
}

fn bind_error(path: &Path, source: io::Error) -> ControlError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        ControlError::PermissionDenied {
            path: path.to_path_buf(),
        }
    } else {
        ControlError::Bind {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn set_group(path: &Path, group: &str) -> Result<(), ControlError> {
    let permissions = |source: io::Error| ControlError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    let entry = nix::unistd::Group::from_name(group)
        .map_err(|errno| permissions(io::Error::from(errno)))?
        .ok_or_else(|| ControlError::UnknownGroup {
            group: group.to_owned(),
        })?;
    std::os::unix::fs::chown(path, None, Some(entry.gid.as_raw())).map_err(permissions)
}

/// Where the loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving clients.
    Serving,
    /// Waiting for the dataplane to stop, at most until `deadline`.
    Stopping { deadline: Instant },
    /// Done: return, with an error if the dataplane went away on its own.
    Finished { dataplane_failed: bool },
}

/// A request the dataplane has not answered yet.
#[derive(Debug)]
struct Waiting {
    client: Token,
    command: &'static str,
}

/// The control thread's side of the dataplane: the request channel and what is in flight.
#[derive(Debug)]
struct Dataplane {
    requests: RequestSender,
    in_flight: HashMap<RequestId, Waiting>,
    next_id: RequestId,
    shutdown_id: Option<RequestId>,
    /// False once stopping, or once the dataplane has gone.
    accepting: bool,
}

impl Dataplane {
    fn next_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }
}

/// The running loop.
struct Control {
    poll: Poll,
    listener: Option<UnixListener>,
    signals: SignalFd,
    _waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    limits: Limits,
    clients: HashMap<Token, Client>,
    next_token: usize,
    dataplane: Dataplane,
    phase: Phase,
    children: Children,
}

impl Control {
    fn serve(&mut self, replies: &Receiver<(RequestId, Reply)>) -> Result<(), ControlError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.next_wakeup(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ControlError::EventLoop(err));
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.read_signals(),
                    // The stop flag and the replies are looked at below, on every round.
                    WAKER => {}
                    token => self.client_event(token),
                }
            }
            self.resume_reads();
            self.receive_replies(replies);
            if self.stop.swap(false, Ordering::SeqCst) {
                log::info!("stop requested");
                self.begin_shutdown();
            }
            match self.phase {
                Phase::Serving => {}
                Phase::Stopping { deadline } => {
                    if Instant::now() >= deadline {
                        log::warn!(
                            "the dataplane did not stop within {} s: exiting without it",
                            self.limits.shutdown_timeout.as_secs()
                        );
                        self.phase = Phase::Finished {
                            dataplane_failed: false,
                        };
                    }
                }
                Phase::Finished { dataplane_failed } => {
                    return if dataplane_failed {
                        Err(ControlError::DataplaneStopped)
                    } else {
                        Ok(())
                    };
                }
            }
        }
    }

    /// How long the next poll may sleep: not past the shutdown deadline, not at all while a
    /// client has unread input, and never long, so that a dataplane that went away is noticed.
    fn next_wakeup(&self, now: Instant) -> Duration {
        if self.clients.values().any(|client| client.unread) {
            return Duration::ZERO;
        }
        let mut wakeup = now + HOUSEKEEPING;
        if let Phase::Stopping { deadline } = self.phase {
            wakeup = wakeup.min(deadline);
        }
        wakeup.saturating_duration_since(now)
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.clients.len() >= self.limits.max_clients {
                        log::warn!(
                            "refusing a control connection: {} are open already",
                            self.clients.len()
                        );
                        let line = failure_line(
                            None,
                            &format!(
                                "too many clients: skywired serves at most {} control connections at once; close some and retry",
                                self.limits.max_clients
                            ),
                        );
                        // Best effort: a fresh socket's buffer takes one short line.
                        let _ = stream.write(&line);
                        continue;
                    }
                    let token = Token(self.next_token);
                    self.next_token = self.next_token.wrapping_add(1).max(FIRST_CLIENT);
                    if let Err(err) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot watch a control connection: {err}");
                        continue;
                    }
                    self.clients.insert(token, Client::new(stream));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("cannot accept a control connection: {err}");
                    return;
                }
            }
        }
    }

    fn read_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(-1);
                    match Signal::try_from(number) {
                        Ok(signal @ (Signal::SIGTERM | Signal::SIGINT)) => {
                            log::info!("{signal} received: stopping");
                            self.begin_shutdown();
                        }
                        Ok(Signal::SIGHUP) => log::warn!(
                            "SIGHUP received: reloading the configuration is not supported yet; restart skywired to apply changes"
                        ),
                        Ok(Signal::SIGCHLD) => self.children.reap(),
                        _ => log::debug!("signal {number} received and ignored"),
                    }
                }
                Ok(None) => return,
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    log::error!("cannot read signals: {errno}");
                    return;
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.phase != Phase::Serving {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.dataplane.accepting = false;
        let id = self.dataplane.next_id();
        match self.dataplane.requests.send(id, Request::Shutdown) {
            Ok(()) => {
                self.dataplane.shutdown_id = Some(id);
                self.phase = Phase::Stopping {
                    deadline: Instant::now() + self.limits.shutdown_timeout,
                };
            }
            Err(_) => {
                log::info!("the dataplane has stopped already");
                self.phase = Phase::Finished {
                    dataplane_failed: false,
                };
            }
        }
    }

    fn receive_replies(&mut self, replies: &Receiver<(RequestId, Reply)>) {
        loop {
            match replies.try_recv() {
                Ok((id, reply)) => self.deliver(id, reply),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.dataplane.accepting = false;
                    self.phase = match self.phase {
                        Phase::Serving => {
                            log::error!("the dataplane thread has gone: stopping");
                            Phase::Finished {
                                dataplane_failed: true,
                            }
                        }
                        Phase::Stopping { .. } => Phase::Finished {
                            dataplane_failed: false,
                        },
                        finished @ Phase::Finished { .. } => finished,
                    };
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, id: RequestId, reply: Reply) {
        if Some(id) == self.dataplane.shutdown_id {
            if reply != Reply::Stopped {
                log::warn!("the dataplane answered the shutdown with {reply:?}");
            }
            self.phase = Phase::Finished {
                dataplane_failed: false,
            };
            return;
        }
        let Some(waiting) = self.dataplane.in_flight.remove(&id) else {
            log::debug!("dropping the reply to unknown request {id}");
            return;
        };
        let Some(client) = self.clients.get_mut(&waiting.client) else {
            log::debug!("dropping the reply to request {id}: its client has gone");
            return;
        };
        if client.waiting == Some(id) {
            client.waiting = None;
        }
        client.answer(reply_line(waiting.command, &reply), &self.limits);
        client.advance(waiting.client, &mut self.dataplane, &self.limits);
        self.settle(waiting.client);
    }

    fn client_event(&mut self, token: Token) {
        // An event for a client closed earlier in this round is spurious.
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.read(token, &mut self.dataplane, &self.limits);
        self.settle(token);
    }

    /// Continues reading from clients that had more input than one wake-up's share.
    fn resume_reads(&mut self) {
        let unread: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, client)| client.unread)
            .map(|(token, _)| *token)
            .collect();
        for token in unread {
            self.client_event(token);
        }
    }

    /// Writes what a client has pending and closes it when it is done with.
    fn settle(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if !client.dead {
            if let Err(err) = client.flush() {
                log::debug!("control connection closed while writing: {err}");
                client.dead = true;
            }
        }
        if client.finished() {
            if let Some(mut client) = self.clients.remove(&token) {
                let _ = self.poll.registry().deregister(&mut client.stream);
            }
        }
    }

    /// Tells clients still waiting that no answer is coming, writes what can be written without
    /// blocking, and closes every connection.
    fn finish(&mut self) {
        for (_, mut client) in self.clients.drain() {
            if let Some(id) = client.waiting.take() {
                let command = self
                    .dataplane
                    .in_flight
                    .get(&id)
                    .map(|waiting| waiting.command);
                client.answer(
                    failure_line(command, "skywired stopped before answering this command"),
                    &self.limits,
                );
            }
            if !client.dead {
                let _ = client.flush();
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }
}

/// The child processes the control thread reaps. Only these: `waitpid(-1)` would also take the
/// exit status of children that other threads wait for themselves (a `std::process::Command`
/// anywhere in the process would fail with ECHILD).
#[derive(Debug, Default)]
struct Children {
    pids: HashSet<Pid>,
}

impl Children {
    /// Reaps every registered child that has exited, so that none stays a zombie.
    fn reap(&mut self) {
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

/// The reply line for the dataplane's answer to `command`.
fn reply_line(command: &str, reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Error(message) => failure_line(Some(command), message),
        reply => success_line(command, reply, &render::reply(reply)),
    }
}

/// The `result` of `help`: the table entries it shows.
#[derive(Debug, Serialize)]
struct HelpResult<'a> {
    help: Vec<&'a CommandSpec>,
}

/// The reply line of a command the control thread answers itself.
fn local_line(command: &Command) -> Vec<u8> {
    match command {
        Command::Help { topic: None } => success_line(
            "help",
            &HelpResult {
                help: COMMANDS.iter().collect(),
            },
            &command::help_overview(),
        ),
        Command::Help { topic: Some(spec) } => success_line(
            "help",
            &HelpResult { help: vec![spec] },
            &command::help_topic(spec),
        ),
        other => failure_line(
            Some(other.name()),
            "this command has no local answer; this is a bug in skywired",
        ),
    }
}

/// A piece of a client's input: a whole line, or a line that was too long and was skipped.
#[derive(Debug)]
enum Piece {
    Line(Vec<u8>),
    TooLong,
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes; a longer line becomes
/// [`Piece::TooLong`] and is skipped up to its new line.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    fn feed(&mut self, mut bytes: &[u8], pieces: &mut Vec<Piece>) {
        while !bytes.is_empty() {
            let (segment, rest) = match bytes.iter().position(|&byte| byte == b'\n') {
                Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
                None => (bytes, None),
            };
            if self.discarding {
                match rest {
                    Some(rest) => {
                        self.discarding = false;
                        bytes = rest;
                        continue;
                    }
                    None => return,
                }
            }
            if self.partial.len() + segment.len() > MAX_LINE {
                self.partial.clear();
                pieces.push(Piece::TooLong);
                match rest {
                    Some(rest) => bytes = rest,
                    None => {
                        self.discarding = true;
                        return;
                    }
                }
                continue;
            }
            self.partial.extend_from_slice(segment);
            match rest {
                Some(rest) => {
                    pieces.push(Piece::Line(std::mem::take(&mut self.partial)));
                    bytes = rest;
                }
                None => return,
            }
        }
    }
}

/// One connection to the control socket.
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    splitter: LineSplitter,
    /// Lines waiting behind the command in progress.
    queue: VecDeque<Piece>,
    /// The request in progress: the client's next line waits for its reply.
    waiting: Option<RequestId>,
    output: Vec<u8>,
    written: usize,
    /// The client has sent all it will send.
    eof: bool,
    /// Stopped reading at the per-wake-up bound with input possibly left.
    unread: bool,
    /// Close once the output is written.
    closing: bool,
    /// Close now.
    dead: bool,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client {
            stream,
            splitter: LineSplitter::default(),
            queue: VecDeque::new(),
            waiting: None,
            output: Vec::new(),
            written: 0,
            eof: false,
            unread: false,
            closing: false,
            dead: false,
        }
    }

    fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Whether the connection can be closed.
    fn finished(&self) -> bool {
        self.dead
            || (self.pending() == 0
                && (self.closing || (self.eof && self.queue.is_empty() && self.waiting.is_none())))
    }

    /// Reads what the client sent, up to this wake-up's share, and answers what can be answered.
    fn read(&mut self, token: Token, dataplane: &mut Dataplane, limits: &Limits) {
        self.unread = false;
        let mut buffer = [0u8; READ_CHUNK];
        let mut pieces = Vec::new();
        for _ in 0..READS_PER_WAKE {
            if self.eof || self.closing || self.dead {
                return;
            }
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(count) => {
                    self.splitter.feed(&buffer[..count], &mut pieces);
                    for piece in pieces.drain(..) {
                        self.enqueue(piece, limits);
                        self.advance(token, dataplane, limits);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::debug!("control connection closed while reading: {err}");
                    self.dead = true;
                    return;
                }
            }
        }
        self.unread = true;
    }

    fn enqueue(&mut self, piece: Piece, limits: &Limits) {
        if self.closing || self.dead {
            return;
        }
        if self.queue.len() >= limits.max_queued_lines {
            self.queue.clear();
            self.answer(
                failure_line(
                    None,
                    &format!(
                        "too many commands waiting: at most {} may wait for the reply to an earlier one; send each command after the previous reply (closing the connection)",
                        limits.max_queued_lines
                    ),
                ),
                limits,
            );
            self.closing = true;
            return;
        }
        self.queue.push_back(piece);
    }

    /// Answers queued lines in order until one has to wait for the dataplane.
    fn advance(&mut self, token: Token, dataplane: &mut Dataplane, limits: &Limits) {
        while self.waiting.is_none() && !self.closing && !self.dead {
            let Some(piece) = self.queue.pop_front() else {
                return;
            };
            let bytes = match piece {
                Piece::Line(bytes) => bytes,
                Piece::TooLong => {
                    self.answer(
                        failure_line(
                            None,
                            &format!("line too long: at most {MAX_LINE} bytes; it was skipped"),
                        ),
                        limits,
                    );
                    continue;
                }
            };
            let Ok(line) = String::from_utf8(bytes) else {
                self.answer(
                    failure_line(
                        None,
                        "the line is not valid UTF-8: send commands as UTF-8 text",
                    ),
                    limits,
                );
                continue;
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            match command::parse(line) {
                Ok(None) => {}
                Err(err) => self.answer(failure_line(err.command(), &err.to_string()), limits),
                Ok(Some(command)) => match command.request() {
                    None => self.answer(local_line(&command), limits),
                    Some(request) => {
                        self.forward(command.name(), request, token, dataplane, limits)
                    }
                },
            }
        }
    }

    fn forward(
        &mut self,
        command: &'static str,
        request: Request,
        token: Token,
        dataplane: &mut Dataplane,
        limits: &Limits,
    ) {
        if !dataplane.accepting {
            self.answer(
                failure_line(
                    Some(command),
                    "skywired is stopping: the command was not run",
                ),
                limits,
            );
            return;
        }
        let id = dataplane.next_id();
        match dataplane.requests.send(id, request) {
            Ok(()) => {
                dataplane.in_flight.insert(
                    id,
                    Waiting {
                        client: token,
                        command,
                    },
                );
                self.waiting = Some(id);
            }
            Err(_) => {
                dataplane.accepting = false;
                self.answer(
                    failure_line(
                        Some(command),
                        "the dataplane has stopped, so skywired is stopping: see its log",
                    ),
                    limits,
                );
            }
        }
    }

    /// Queues a reply line. A client that has more than the bound of earlier replies unread is
    /// disconnected instead; one large reply alone never is.
    fn answer(&mut self, line: Vec<u8>, limits: &Limits) {
        if self.dead {
            return;
        }
        if self.pending() > limits.max_pending_output {
            if let Err(err) = self.flush() {
                log::debug!("control connection closed while writing: {err}");
                self.dead = true;
                return;
            }
            if self.pending() > limits.max_pending_output {
                log::warn!(
                    "disconnecting a control client that does not read its replies ({} bytes waiting)",
                    self.pending()
                );
                self.dead = true;
                return;
            }
        }
        self.output.extend_from_slice(&line);
        if self.pending() > EARLY_FLUSH {
            if let Err(err) = self.flush() {
                log::debug!("control connection closed while writing: {err}");
                self.dead = true;
            }
        }
    }

    /// Writes pending output until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => self.written += count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written > self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(splitter: &mut LineSplitter, bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut pieces = Vec::new();
        splitter.feed(bytes, &mut pieces);
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Line(line) => Some(line),
                Piece::TooLong => None,
            })
            .collect()
    }

    #[test]
    fn splitter_cuts_lines_across_reads() {
        let mut splitter = LineSplitter::default();
        assert!(split(&mut splitter, b"sta").is_empty());
        assert_eq!(
            split(&mut splitter, b"tus\nlt\n\nlr"),
            [Some(b"status".to_vec()), Some(b"lt".to_vec()), Some(vec![])]
        );
        assert_eq!(split(&mut splitter, b"\n"), [Some(b"lr".to_vec())]);
    }

    #[test]
    fn splitter_skips_long_lines_to_their_end() {
        let mut splitter = LineSplitter::default();
        let exact = vec![b'a'; MAX_LINE];
        let mut input = exact.clone();
        input.push(b'\n');
        assert_eq!(split(&mut splitter, &input), [Some(exact)]);

        assert_eq!(split(&mut splitter, &vec![b'b'; MAX_LINE]), []);
        assert_eq!(split(&mut splitter, b"bb"), [None]);
        assert!(split(&mut splitter, &vec![b'c'; 3 * MAX_LINE]).is_empty());
        assert_eq!(split(&mut splitter, b"cc\nok\n"), [Some(b"ok".to_vec())]);

        let mut input = vec![b'd'; MAX_LINE + 1];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(split(&mut splitter, &input), [None, Some(b"next".to_vec())]);
    }

    #[test]
    fn error_replies_keep_the_command() {
        let line = reply_line("rm_route", &Reply::Error("no route".to_owned()));
        assert_eq!(
            line,
            b"{\"ok\":false,\"command\":\"rm_route\",\"error\":\"no route\"}\n"
        );
        let line = reply_line("x", &Reply::Stopped);
        assert_eq!(
            line,
            b"{\"ok\":true,\"command\":\"x\",\"result\":\"stopped\",\"text\":\"the dataplane has stopped\"}\n"
        );
    }
}
