//! The control thread: one mio loop that owns the control socket and its clients, the process's
//! Unix signals (read through a signalfd), the replies coming back from the dataplane, and the
//! app supervisor with its signal server. It answers `help` and argument errors itself, runs the
//! app commands through the supervisor (`attach` turns the connection into a stream), and
//! forwards every other command to the dataplane as a request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
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

use crate::apps::{self, DetachReason};
use crate::catalog::Catalog;
use crate::command::{self, Command, CommandSpec, COMMANDS};
use crate::protocol::{failure_line, success_line, MAX_LINE};
use crate::render;
use crate::signal::{
    AppId, SignalEvent, SignalServer, SignalServerError, SignalServerOptions, TokenRange,
    DEFAULT_PORT,
};
use crate::supervisor::{self, AttachEvent, AttachId, Supervisor, SupervisorOptions};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
/// The signal server's listener and its connections (64, as many as it serves at once).
const SIGNAL_TOKENS: TokenRange = TokenRange::new(Token(16), 65);
/// Apps with a process at once.
const MAX_APPS: usize = 64;
/// The supervisor's tokens: three pipes per app.
const APP_TOKENS: TokenRange = TokenRange::new(Token(128), 3 * MAX_APPS);
/// Client tokens count up from here and are never reused, so that a late reply cannot reach a
/// newer client.
const FIRST_CLIENT: usize = 1024;
/// After the apps' shutdown escalation (signal, SIGTERM, SIGKILL), how long a stop still waits
/// for their exit before it kills and reaps what is left itself.
const APPS_STOP_MARGIN: Duration = Duration::from_secs(1);

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
    /// The signal server could not listen (its port is taken, most likely).
    #[error("{0}")]
    Signal(SignalServerError),
    /// The event loop could not be made or failed.
    #[error("the control thread's event loop failed: {0}; the process may be out of file descriptors (raise LimitNOFILE or ulimit -n)")]
    EventLoop(io::Error),
    /// The dataplane thread went away while the control thread was serving.
    #[error("the dataplane thread stopped unexpectedly: the reason is in the log above; restart skywired")]
    DataplaneStopped,
}

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

/// Where the control socket goes and who may use it, and the apps the control thread launches.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The socket's path (`control.socket`).
    pub socket: PathBuf,
    /// A group that should own the socket, so that its members may connect; `None` keeps the
    /// process's group.
    pub socket_group: Option<String>,
    /// The signal server's TCP port on 127.0.0.1 (`control.signal_port`); 0 picks a free one.
    pub signal_port: u16,
    /// The apps `start` launches (`apps:`).
    pub apps: Catalog,
    /// How apps are run; its `base_dir` (the config folder) anchors relative app paths.
    pub supervisor: SupervisorOptions,
}

impl ControlOptions {
    /// The socket `socket`, no group, the default signal port, no apps, apps run in `base_dir`.
    pub fn new(socket: impl Into<PathBuf>, base_dir: impl Into<PathBuf>) -> ControlOptions {
        ControlOptions {
            socket: socket.into(),
            socket_group: None,
            signal_port: DEFAULT_PORT,
            apps: Catalog::default(),
            supervisor: SupervisorOptions::new(base_dir),
        }
    }
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
    /// How long a new connection may take to send its first line, and any connection to
    /// finish a line it has begun; then it gets an error and is closed.
    pub line_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 256,
            max_queued_lines: 64,
            max_pending_output: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            line_timeout: Duration::from_secs(10),
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
    supervisor: Supervisor,
}

impl ControlServer {
    /// Binds the socket (mode 0660; refuses with a clear error if another daemon answers on it;
    /// replaces a stale socket file only when connecting to it is refused), creates the
    /// signalfd for TERM, INT, HUP and CHLD, which the caller has blocked with
    /// [`block_signals`] in every thread, and binds the signal server on 127.0.0.1.
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
        let now = Instant::now();
        let signal = SignalServer::bind(
            SignalServerOptions {
                port: options.signal_port,
                ..SignalServerOptions::default()
            },
            registry,
            SIGNAL_TOKENS,
            now,
        )
        .map_err(ControlError::Signal)?;
        let supervisor = Supervisor::new(
            options.apps,
            options.supervisor,
            signal,
            registry,
            APP_TOKENS,
            now,
        )
        .map_err(ControlError::EventLoop)?;
        log::info!(
            "control socket {}; signal server on {}; {} app(s) in the catalog",
            path.display(),
            supervisor.signal().local_addr(),
            supervisor.catalog().len()
        );
        Ok(ControlServer {
            poll,
            listener,
            signals,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            socket,
            limits: Limits::default(),
            children: Children::default(),
            supervisor,
        })
    }

    /// Where launched apps reach the signal server (`SIGNAL_SERVER_ADDRESS`), with the real port.
    pub fn signal_addr(&self) -> SocketAddr {
        self.supervisor.signal().local_addr()
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

    /// Serves until SIGTERM or SIGINT (or [`Stopper::stop`]): then shuts the apps down (signal,
    /// SIGTERM, SIGKILL, as `shutdown` does) and sends `Request::Shutdown` to the dataplane,
    /// waits for `Reply::Stopped` (or the channel closing, or the shutdown timeout) and for the
    /// apps' exit (killing and reaping what is left after their escalation), removes the socket
    /// file and returns. Fails if the dataplane goes away while serving (the apps are stopped
    /// all the same).
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
            supervisor,
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
            dataplane_stopped: false,
            children,
            apps: AppHost {
                supervisor,
                in_flight: HashMap::new(),
                attached: HashMap::new(),
            },
        };
        let outcome = control.serve(&replies);
        control.stop_apps();
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
    /// Waiting for the dataplane to stop (at most until `dataplane_deadline`) and for the
    /// apps to exit (at most until `apps_deadline`).
    Stopping {
        dataplane_deadline: Instant,
        apps_deadline: Instant,
    },
    /// Done: return, with an error if the dataplane went away on its own.
    Finished { dataplane_failed: bool },
}

/// A request the dataplane or the supervisor has not answered yet.
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

/// The control thread's side of the supervisor: who waits for which of its answers, and which
/// connection each attached stream goes to.
#[derive(Debug)]
struct AppHost {
    supervisor: Supervisor,
    in_flight: HashMap<supervisor::RequestId, Waiting>,
    attached: HashMap<AttachId, Token>,
}

/// What a client's commands act on.
struct Services<'a> {
    dataplane: &'a mut Dataplane,
    apps: &'a mut AppHost,
    limits: &'a Limits,
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
    /// The dataplane answered the shutdown (or went away).
    dataplane_stopped: bool,
    children: Children,
    apps: AppHost,
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
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNALS => self.read_signals(),
                    // The stop flag and the replies are looked at below, on every round.
                    WAKER => {}
                    token if self.apps.supervisor.owns(token) => {
                        self.apps.supervisor.handle_event(event, now);
                    }
                    token => self.client_event(token),
                }
            }
            self.resume_reads();
            self.receive_replies(replies);
            self.drive_apps();
            self.expire_lines(Instant::now());
            if self.stop.swap(false, Ordering::SeqCst) {
                log::info!("stop requested");
                self.begin_shutdown();
            }
            match self.phase {
                Phase::Serving => {}
                Phase::Stopping {
                    dataplane_deadline,
                    apps_deadline,
                } => {
                    let now = Instant::now();
                    let dataplane_done = self.dataplane_stopped || now >= dataplane_deadline;
                    let apps_done = self.apps.supervisor.all_stopped() || now >= apps_deadline;
                    if dataplane_done && apps_done {
                        if !self.dataplane_stopped {
                            log::warn!(
                                "the dataplane did not stop within {} s: exiting without it",
                                self.limits.shutdown_timeout.as_secs()
                            );
                        }
                        self.phase = Phase::Finished {
                            dataplane_failed: false,
                        };
                    }
                }
                Phase::Finished { .. } => {}
            }
            if let Phase::Finished { dataplane_failed } = self.phase {
                return if dataplane_failed {
                    Err(ControlError::DataplaneStopped)
                } else {
                    Ok(())
                };
            }
        }
    }

    /// How long the next poll may sleep: not past the shutdown deadlines, a client's line
    /// deadline or the supervisor's next timer, not at all while a client has unread input,
    /// and never long, so that a dataplane that went away is noticed.
    fn next_wakeup(&self, now: Instant) -> Duration {
        if self.clients.values().any(|client| client.unread) {
            return Duration::ZERO;
        }
        let mut wakeup = now + HOUSEKEEPING;
        if let Phase::Stopping {
            dataplane_deadline,
            apps_deadline,
        } = self.phase
        {
            if !self.dataplane_stopped {
                wakeup = wakeup.min(dataplane_deadline);
            }
            wakeup = wakeup.min(apps_deadline);
        }
        if let Some(at) = self.apps.supervisor.poll_timeout() {
            wakeup = wakeup.min(at);
        }
        if let Some(at) = self
            .clients
            .values()
            .filter_map(|client| client.line_deadline)
            .min()
        {
            wakeup = wakeup.min(at);
        }
        wakeup.saturating_duration_since(now)
    }

    fn accept(&mut self, now: Instant) {
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
                    let deadline = now + self.limits.line_timeout;
                    self.clients.insert(token, Client::new(stream, deadline));
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
                        Ok(Signal::SIGCHLD) => {
                            self.children.reap();
                            self.apps.supervisor.reap(Instant::now());
                        }
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

    /// Stops serving: shuts the apps down and tells the dataplane to stop, both at once.
    fn begin_shutdown(&mut self) {
        if self.phase != Phase::Serving {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = Instant::now();
        self.apps.supervisor.shutdown_all(now);
        let apps_deadline = now + self.apps_stop_time();
        self.dataplane.accepting = false;
        let id = self.dataplane.next_id();
        match self.dataplane.requests.send(id, Request::Shutdown) {
            Ok(()) => self.dataplane.shutdown_id = Some(id),
            Err(_) => {
                log::info!("the dataplane has stopped already");
                self.dataplane_stopped = true;
            }
        }
        self.phase = Phase::Stopping {
            dataplane_deadline: now + self.limits.shutdown_timeout,
            apps_deadline,
        };
    }

    /// How long the apps' shutdown escalation takes at most: the signal shutdown's grace, then
    /// SIGTERM's, then a moment for SIGKILL.
    fn apps_stop_time(&self) -> Duration {
        let options = self.apps.supervisor.options();
        options.shutdown_grace + options.term_grace + APPS_STOP_MARGIN
    }

    /// Makes sure no app outlives the loop: waits for what a stop did not wait for (after the
    /// dataplane failed), then kills and reaps whatever is left.
    fn stop_apps(&mut self) {
        let now = Instant::now();
        let deadline = match self.phase {
            Phase::Finished {
                dataplane_failed: true,
            } => now + self.apps_stop_time(),
            _ => now,
        };
        if let Err(err) = self
            .apps
            .supervisor
            .finish_shutdown(&mut self.poll, deadline)
        {
            log::error!("cannot wait for the apps to stop: {err}; killing them");
        }
        self.drive_apps();
    }

    fn receive_replies(&mut self, replies: &Receiver<(RequestId, Reply)>) {
        loop {
            match replies.try_recv() {
                Ok((id, reply)) => self.deliver(id, reply),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.dataplane.accepting = false;
                    self.dataplane_stopped = true;
                    if self.phase == Phase::Serving {
                        log::error!("the dataplane thread has gone: stopping");
                        self.phase = Phase::Finished {
                            dataplane_failed: true,
                        };
                    }
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
            self.dataplane_stopped = true;
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
        if client.waiting == Some(Pending::Dataplane(id)) {
            client.waiting = None;
        }
        client.answer(reply_line(waiting.command, &reply), &self.limits);
        let mut services = Services {
            dataplane: &mut self.dataplane,
            apps: &mut self.apps,
            limits: &self.limits,
        };
        client.advance(waiting.client, &mut services);
        self.settle(waiting.client);
    }

    /// Runs the supervisor's timers and hands out what it produced: finished requests to the
    /// clients waiting for them, attached streams to their connections, signal events to the log.
    fn drive_apps(&mut self) {
        let now = Instant::now();
        if self
            .apps
            .supervisor
            .poll_timeout()
            .is_some_and(|at| at <= now)
        {
            self.apps.supervisor.handle_timeout(now);
        }
        let mut touched = Vec::new();
        while let Some((id, result)) = self.apps.supervisor.poll_result() {
            let Some(waiting) = self.apps.in_flight.remove(&id) else {
                log::debug!("dropping the supervisor's answer {id}: nobody waits for it");
                continue;
            };
            let Some(client) = self.clients.get_mut(&waiting.client) else {
                log::debug!("dropping the supervisor's answer {id}: its client has gone");
                continue;
            };
            if client.waiting == Some(Pending::App(id)) {
                client.waiting = None;
            }
            client.answer(apps::result_line(waiting.command, &result), &self.limits);
            let mut services = Services {
                dataplane: &mut self.dataplane,
                apps: &mut self.apps,
                limits: &self.limits,
            };
            client.advance(waiting.client, &mut services);
            touched.push(waiting.client);
        }
        while let Some((attach, event)) = self.apps.supervisor.poll_attached() {
            let Some(&token) = self.apps.attached.get(&attach) else {
                continue;
            };
            let Some(client) = self.clients.get_mut(&token) else {
                self.apps.attached.remove(&attach);
                self.apps.supervisor.detach(attach);
                continue;
            };
            let Some(attachment) = client.attached.filter(|held| held.attach == attach) else {
                continue;
            };
            client.answer(apps::stream_line(attachment.app, &event), &self.limits);
            if let AttachEvent::Exited {
                restarting: false, ..
            } = event
            {
                client.answer(
                    apps::detached_line(attachment.app, DetachReason::Exited),
                    &self.limits,
                );
                client.attached = None;
                self.apps.attached.remove(&attach);
                let mut services = Services {
                    dataplane: &mut self.dataplane,
                    apps: &mut self.apps,
                    limits: &self.limits,
                };
                client.advance(token, &mut services);
            }
            touched.push(token);
        }
        while let Some(event) = self.apps.supervisor.signal_mut().poll_event() {
            match event {
                SignalEvent::Registered { app, replaced } => log::info!(
                    "app {app} registered with the signal server{}",
                    if replaced { " again" } else { "" }
                ),
                SignalEvent::Disconnected { app } => {
                    log::info!("app {app} disconnected from the signal server");
                }
                SignalEvent::Refused {
                    claimed,
                    peer,
                    reason,
                } => log::warn!(
                    "signal server: refused a registration from {peer} (id {}): {reason}",
                    claimed.map_or_else(|| "unreadable".to_owned(), |id| id.to_string())
                ),
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            self.settle(token);
        }
    }

    /// Closes connections that did not send their first line, or finish a line, in time.
    fn expire_lines(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, client)| client.line_deadline.is_some_and(|at| at <= now))
            .map(|(token, _)| *token)
            .collect();
        let seconds = self.limits.line_timeout.as_secs_f64();
        for token in expired {
            let Some(client) = self.clients.get_mut(&token) else {
                continue;
            };
            client.line_deadline = None;
            let message = if client.splitter.in_line() {
                format!(
                    "a line was not finished within {seconds} s: closing the connection; end every command with a new line"
                )
            } else {
                format!(
                    "no command within {seconds} s of connecting: closing the connection; send one command a line"
                )
            };
            log::debug!("control client: {message}");
            client.answer(failure_line(None, &message), &self.limits);
            client.closing = true;
            self.settle(token);
        }
    }

    fn client_event(&mut self, token: Token) {
        // An event for a client closed earlier in this round is spurious.
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let mut services = Services {
            dataplane: &mut self.dataplane,
            apps: &mut self.apps,
            limits: &self.limits,
        };
        client.read(token, &mut services);
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
                if let Some(attachment) = client.attached.take() {
                    self.apps.supervisor.detach(attachment.attach);
                    self.apps.attached.remove(&attachment.attach);
                }
                let _ = self.poll.registry().deregister(&mut client.stream);
            }
        }
    }

    /// Tells clients still waiting that no answer is coming and attached ones that their
    /// stream ends, writes what can be written without blocking, and closes every connection.
    fn finish(&mut self) {
        for (_, mut client) in self.clients.drain() {
            if let Some(pending) = client.waiting.take() {
                let command = match pending {
                    Pending::Dataplane(id) => self
                        .dataplane
                        .in_flight
                        .get(&id)
                        .map(|waiting| waiting.command),
                    Pending::App(id) => self.apps.in_flight.get(&id).map(|waiting| waiting.command),
                };
                client.answer(
                    failure_line(command, "skywired stopped before answering this command"),
                    &self.limits,
                );
            }
            if let Some(attachment) = client.attached.take() {
                self.apps.supervisor.detach(attachment.attach);
                client.answer(
                    apps::detached_line(attachment.app, DetachReason::Stopping),
                    &self.limits,
                );
            }
            if !client.dead {
                let _ = client.flush();
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
        self.apps.attached.clear();
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
pub(crate) enum Piece {
    Line(Vec<u8>),
    TooLong,
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes; a longer line becomes
/// [`Piece::TooLong`] and is skipped up to its new line.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    /// Whether a line has begun and not ended (bytes kept, or a long line being skipped).
    fn in_line(&self) -> bool {
        self.discarding || !self.partial.is_empty()
    }

    pub(crate) fn feed(&mut self, mut bytes: &[u8], pieces: &mut Vec<Piece>) {
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

/// What a client's next line waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A dataplane request.
    Dataplane(RequestId),
    /// A supervisor request.
    App(supervisor::RequestId),
}

/// The app whose stream a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attachment {
    attach: AttachId,
    app: AppId,
}

/// One connection to the control socket.
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    splitter: LineSplitter,
    /// Lines waiting behind the command in progress.
    queue: VecDeque<Piece>,
    /// The request in progress: the client's next line waits for its reply.
    waiting: Option<Pending>,
    /// Attached to an app: lines are its input, and its output streams here.
    attached: Option<Attachment>,
    output: Vec<u8>,
    written: usize,
    /// When the connection is closed unless a line arrives (the first, or the end of one begun).
    line_deadline: Option<Instant>,
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
    fn new(stream: UnixStream, first_line_deadline: Instant) -> Client {
        Client {
            stream,
            splitter: LineSplitter::default(),
            queue: VecDeque::new(),
            waiting: None,
            attached: None,
            output: Vec::new(),
            written: 0,
            line_deadline: Some(first_line_deadline),
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
    fn read(&mut self, token: Token, services: &mut Services<'_>) {
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
                    self.line_deadline = None;
                    // The end of input detaches: what was sent before it still goes in.
                    if self.attached.is_some() {
                        self.enqueue(Piece::Line(command::DETACH_LINE.into()), services.limits);
                        self.advance(token, services);
                    }
                    return;
                }
                Ok(count) => {
                    self.splitter.feed(&buffer[..count], &mut pieces);
                    if !pieces.is_empty() {
                        self.line_deadline = None;
                    }
                    if self.splitter.in_line() && self.line_deadline.is_none() {
                        self.line_deadline = Some(Instant::now() + services.limits.line_timeout);
                    }
                    for piece in pieces.drain(..) {
                        self.enqueue(piece, services.limits);
                        self.advance(token, services);
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

    /// Answers queued lines in order until one has to wait for the dataplane or the
    /// supervisor; while attached, lines are the app's input.
    fn advance(&mut self, token: Token, services: &mut Services<'_>) {
        let limits = services.limits;
        while self.waiting.is_none() && !self.closing && !self.dead {
            let Some(piece) = self.queue.pop_front() else {
                return;
            };
            let command = self.attached.map(|_| "attach");
            let bytes = match piece {
                Piece::Line(bytes) => bytes,
                Piece::TooLong => {
                    self.answer(
                        failure_line(
                            command,
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
                        command,
                        "the line is not valid UTF-8: send commands as UTF-8 text",
                    ),
                    limits,
                );
                continue;
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(attachment) = self.attached {
                self.input(line, attachment, services);
                continue;
            }
            match command::parse(line) {
                Ok(None) => {}
                Err(err) => self.answer(failure_line(err.command(), &err.to_string()), limits),
                Ok(Some(command)) => self.run(&command, token, services),
            }
        }
    }

    /// Runs one command: `help` here, app commands through the supervisor, the others in the
    /// dataplane.
    fn run(&mut self, command: &Command, token: Token, services: &mut Services<'_>) {
        let limits = services.limits;
        if let Some(request) = command.request() {
            self.forward(command.name(), request, token, services.dataplane, limits);
            return;
        }
        if !command.is_app_command() {
            self.answer(local_line(command), limits);
            return;
        }
        let apps = &mut *services.apps;
        match apps::run(command, &mut apps.supervisor, Instant::now()) {
            apps::Outcome::Reply(line) => self.answer(line, limits),
            apps::Outcome::Later(id) => {
                apps.in_flight.insert(
                    id,
                    Waiting {
                        client: token,
                        command: command.name(),
                    },
                );
                self.waiting = Some(Pending::App(id));
            }
            apps::Outcome::Attached { line, attach, app } => {
                self.answer(line, limits);
                apps.attached.insert(attach, token);
                self.attached = Some(Attachment { attach, app });
            }
        }
    }

    /// A line from an attached client: `.detach`, or input for the app.
    fn input(&mut self, line: &str, attachment: Attachment, services: &mut Services<'_>) {
        let apps = &mut *services.apps;
        if line.trim() == command::DETACH_LINE {
            apps.supervisor.detach(attachment.attach);
            apps.attached.remove(&attachment.attach);
            self.attached = None;
            self.answer(
                apps::detached_line(attachment.app, DetachReason::Asked),
                services.limits,
            );
            return;
        }
        if let Err(err) = apps.supervisor.send_input(attachment.app, line) {
            self.answer(
                failure_line(Some("attach"), &err.to_string()),
                services.limits,
            );
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
                self.waiting = Some(Pending::Dataplane(id));
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
