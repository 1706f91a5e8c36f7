//! The control thread, in rooms: the socket's file (`socket`), who is on the other end of a
//! connection and what it may do (`peer`), the process's Unix signals (`signals`), the loop
//! that serves (`event_loop`) and one connection's protocol, without its socket
//! (`connection`); the app commands run against the supervisor in `apps`; the app socket,
//! whose connections go to the dataplane, in `app_socket`.

mod app_socket;
mod apps;
pub(crate) mod connection;
mod event_loop;
mod peer;
mod signals;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};
use nix::errno::Errno;
use nix::unistd::Pid;
use skywire_dataplane::api::{RequestId, RequestSender, Response};

use crate::catalog::Catalog;
use crate::reload::ConfigSource;
use crate::signal::{
    ListenerState, SignalServer, SignalServerError, SignalServerOptions, TokenRange, DEFAULT_PORT,
};
use crate::supervisor::{Supervisor, SupervisorOptions};
use app_socket::AppSocket;
use peer::Policy;
pub use signals::block_signals;
use signals::{Children, Signals};
use socket::SocketFile;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
const APP_SOCKET: Token = Token(3);
/// The signal server's listener and its connections (64, as many as it serves at once).
const SIGNAL_TOKENS: TokenRange = TokenRange::new(Token(16), 65);
/// Apps with a process at once.
const MAX_APPS: usize = 64;
/// The supervisor's tokens: three pipes per app.
const APP_TOKENS: TokenRange = TokenRange::new(Token(128), 3 * MAX_APPS);
/// Client tokens count up from here and are never reused, so that a late reply cannot reach a
/// newer client.
const FIRST_CLIENT: usize = 1024;

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
    /// The socket's mode could not be set.
    #[error("cannot set the mode of the control socket {}: {source}; check who owns its folder, or set control.socket in the config", .path.display())]
    Permissions {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A group the config names does not exist.
    #[error("control.{key} names the group `{group}`, which does not exist: create it (groupadd {group}) or name another")]
    UnknownGroup {
        /// The group's name.
        group: String,
        /// The config key that names it.
        key: &'static str,
    },
    /// The group database could not be read.
    #[error("cannot look up the group `{group}`: {source}; check /etc/group (or NSS)")]
    GroupLookup {
        /// The group's name.
        group: String,
        /// What the system said.
        source: io::Error,
    },
    /// TERM, INT, HUP and CHLD could not be blocked or read through a signalfd.
    #[error("cannot set up the handling of TERM, INT, HUP and CHLD: {0}")]
    Signals(Errno),
    /// The signal server could not be made (a port that is taken is not this: the server
    /// tries it again while the node runs).
    #[error("{0}")]
    Signal(SignalServerError),
    /// The event loop could not be made or failed.
    #[error("the control thread's event loop failed: {0}; the process may be out of file descriptors (raise LimitNOFILE or ulimit -n)")]
    EventLoop(io::Error),
    /// The app socket could not be made.
    #[error("cannot create the app socket {}: {source}; check that the state folder can be written (node.state_dir; a socket's path has at most 107 bytes)", .path.display())]
    AppSocket {
        /// The socket.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A running skywired answers on the app socket: it uses the same state folder.
    #[error("another skywired answers on the app socket {}: it uses the same state folder; give each node a node.state_dir of its own", .path.display())]
    AppSocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// The dataplane thread went away while the control thread was serving.
    #[error("the dataplane thread stopped unexpectedly: the reason is in the log above; restart skywired")]
    DataplaneStopped,
}

/// Where the control socket goes and who may use it, and the apps the control thread launches.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The socket's path (`control.socket`).
    pub socket: PathBuf,
    /// A group whose members may run every command (`control.admin_group`), beside root and
    /// skywired's own user.
    pub admin_group: Option<String>,
    /// A group whose members may run the read-only commands (`control.socket_group`), as
    /// launched apps may.
    pub socket_group: Option<String>,
    /// The signal server's TCP port on 127.0.0.1 (`control.signal_port`); 0 picks a free one.
    pub signal_port: u16,
    /// The apps `start` launches (`apps:`).
    pub apps: Catalog,
    /// Where to bind the app socket, through which launched apps use the mesh (skywired puts
    /// it in the state folder); without it, apps are given none.
    pub app_socket: Option<PathBuf>,
    /// How apps are run; its `base_dir` (the config folder) anchors relative app paths.
    pub supervisor: SupervisorOptions,
}

impl ControlOptions {
    /// The socket `socket`, no groups, the default signal port, no apps and no app socket,
    /// apps run in `base_dir`.
    pub fn new(socket: impl Into<PathBuf>, base_dir: impl Into<PathBuf>) -> ControlOptions {
        ControlOptions {
            socket: socket.into(),
            admin_group: None,
            socket_group: None,
            signal_port: DEFAULT_PORT,
            apps: Catalog::default(),
            app_socket: None,
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
    /// Bytes buffered for all clients together, their input and their replies; beyond that
    /// the client holding the most is disconnected, and counted in `status`.
    pub max_buffered_total: usize,
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
            max_buffered_total: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            line_timeout: Duration::from_secs(10),
        }
    }
}

/// What the control socket holds for its clients, as `status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientBuffers {
    /// Clients connected now.
    pub clients: usize,
    /// Bytes buffered for them now, input and replies.
    pub buffered_bytes: usize,
    /// The most that may be buffered for all of them ([`Limits::max_buffered_total`]).
    pub limit: usize,
    /// Clients disconnected because the total reached the limit.
    pub dropped: u64,
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
    app_socket: Option<AppSocket>,
    signals: Signals,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    socket: SocketFile,
    policy: Policy,
    limits: Limits,
    children: Children,
    supervisor: Supervisor,
    config: Option<Box<dyn ConfigSource>>,
}

impl ControlServer {
    /// Looks up the configured groups, binds the socket (mode 0666: each client's credentials
    /// decide what it may do; refuses with a clear error if another daemon answers on it;
    /// replaces a stale socket file only when connecting to it is refused), creates the
    /// signalfd for TERM, INT, HUP and CHLD, which the caller has blocked with
    /// [`block_signals`] in every thread, binds the signal server on 127.0.0.1, and binds the
    /// app socket (mode 0600) when one is configured.
    pub fn bind(mut options: ControlOptions) -> Result<ControlServer, ControlError> {
        let policy = Policy::new(
            options.admin_group.as_deref(),
            options.socket_group.as_deref(),
        )?;
        let (mut listener, socket) = socket::bind(&options.socket)?;
        let poll = Poll::new().map_err(ControlError::EventLoop)?;
        let signals = Signals::new()?;
        let registry = poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ControlError::EventLoop)?;
        registry
            .register(
                &mut SourceFd(&signals.raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(ControlError::EventLoop)?;
        let waker = Arc::new(Waker::new(registry, WAKER).map_err(ControlError::EventLoop)?);
        let mut app_socket = options
            .app_socket
            .as_deref()
            .map(AppSocket::bind)
            .transpose()?;
        if let Some(app_socket) = app_socket.as_mut() {
            registry
                .register(app_socket.listener(), APP_SOCKET, Interest::READABLE)
                .map_err(ControlError::EventLoop)?;
        }
        options.supervisor.app_socket = options.app_socket.clone();
        let now = Instant::now();
        let signal = SignalServer::new(
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
        let signal_state = match supervisor.signal().listener_state(now) {
            ListenerState::Listening { address } => format!("signal server on {address}"),
            ListenerState::Retrying { address, .. } => {
                format!("signal server not listening on {address} yet (see above)")
            }
        };
        log::info!(
            "control socket {}; {signal_state}; {} app(s) in the catalog",
            socket.path().display(),
            supervisor.catalog().len()
        );
        Ok(ControlServer {
            poll,
            listener,
            app_socket,
            signals,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            socket,
            policy,
            limits: Limits::default(),
            children: Children::default(),
            supervisor,
            config: None,
        })
    }

    /// Where launched apps reach the signal server (`SIGNAL_SERVER_ADDRESS`): with the real
    /// port once it listens, the configured one while the port is taken.
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

    /// The configuration file that SIGHUP and `reload` read again; without one, a reload is
    /// refused.
    pub fn set_config_source(&mut self, config: Box<dyn ConfigSource>) {
        self.config = Some(config);
    }

    /// Has the control thread reap the child process `pid` once it exits (on SIGCHLD). Only
    /// children registered here are reaped: the exit status of any other child stays for the
    /// thread that waits for it (`std::process::Child::wait`).
    pub fn reap_child(&mut self, pid: u32) {
        match i32::try_from(pid) {
            Ok(pid) => self.children.add(Pid::from_raw(pid)),
            Err(_) => log::warn!("{pid} is no process id: not reaping it"),
        }
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        self.socket.path()
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
        replies: Receiver<(RequestId, Response)>,
    ) -> Result<(), ControlError> {
        let ControlServer {
            poll,
            listener,
            app_socket,
            signals,
            waker,
            stop,
            socket,
            policy,
            limits,
            children,
            supervisor,
            config,
        } = self;
        let control = event_loop::Control::new(event_loop::Parts {
            poll,
            listener,
            app_socket,
            signals,
            waker,
            stop,
            policy,
            limits,
            children,
            supervisor,
            requests,
            config,
        });
        let outcome = control.run(&replies);
        drop(socket);
        outcome
    }
}
