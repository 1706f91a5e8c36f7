//! The signal server: a TCP listener on 127.0.0.1 that launched apps connect to, registration
//! by app id (accepted only from a socket held by that app's process tree), and requests to a
//! registered app (ping, resource usage, shutdown) answered asynchronously. A port that is
//! taken does not stop the node: the server runs without a listener and tries the port again
//! every few seconds. It owns no thread: the control thread's mio loop drives it through
//! `handle_event`, `handle_timeout` and `poll_*`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use serde::Serialize;

use super::events::{SignalError, SignalEvent, SignalReply, SignalServerError};
use super::frame::{encode_data, Decoder, Frame, MAX_BODY};
use super::message::{split_body, Register, Request, OP_REGISTER, REPLY};
use super::{owner, AppId, TokenRange, DEFAULT_PORT};

/// Bytes read from one connection per wake-up before the loop looks at its other work.
const READ_BUDGET: usize = 256 * 1024;
/// Connections accepted per wake-up.
const ACCEPT_BUDGET: usize = 32;
/// Unsent bytes a connection may hold; a client that lets more pile up is not reading and
/// is dropped.
const MAX_UNSENT: usize = 256 * 1024;
/// Requests of one kind waiting for an answer from one app (timed-out ones included, as
/// their late answers must still be matched).
pub(super) const MAX_OUTSTANDING: usize = 8;
/// Events kept for [`SignalServer::poll_event`]; older ones are dropped.
const MAX_EVENTS: usize = 1024;
/// Full scans of the process table allowed per second for registrations whose socket the
/// app's own process does not hold (a hostile client could otherwise make us scan forever).
const FAMILY_SCANS_PER_SECOND: u32 = 16;

/// How the signal server is set up.
#[derive(Debug, Clone)]
pub struct SignalServerOptions {
    /// TCP port on 127.0.0.1; 0 picks a free one ([`SignalServer::local_addr`] tells which).
    pub port: u16,
    /// How long an app has to answer a request.
    pub request_timeout: Duration,
    /// How long a new connection has to register before it is closed.
    pub register_timeout: Duration,
    /// Most connections at once (registered or not); at most the token range's size minus one.
    pub max_connections: usize,
    /// While the port cannot be bound, how long between tries.
    pub bind_retry: Duration,
}

impl Default for SignalServerOptions {
    fn default() -> SignalServerOptions {
        SignalServerOptions {
            port: DEFAULT_PORT,
            request_timeout: Duration::from_secs(10),
            register_timeout: Duration::from_secs(10),
            max_connections: 64,
            bind_retry: Duration::from_secs(5),
        }
    }
}

/// Whether the server listens, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ListenerState {
    /// Apps can connect.
    Listening {
        /// Where.
        address: SocketAddr,
    },
    /// The port could not be bound; it is tried again.
    Retrying {
        /// The address asked for.
        address: SocketAddr,
        /// Why the last try failed.
        error: String,
        /// When the next try is, from now.
        retry_in_ms: u64,
    },
}

/// The listening socket, or why there is none yet.
#[derive(Debug)]
enum Listening {
    Bound(TcpListener),
    Retrying {
        error: io::Error,
        next_attempt: Instant,
        /// Tries that failed so far.
        failures: u32,
    },
}

/// Names one request to an app; its result comes out of [`SignalServer::poll_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle(u64);

impl fmt::Display for RequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An app this daemon launched: allowed to register.
#[derive(Debug)]
struct Launched {
    pid: u32,
    conn: Option<usize>,
}

/// A request on the wire; `handle` is `None` once it timed out (its late answer is still
/// matched to it, and then dropped).
#[derive(Debug)]
struct Waiting {
    handle: Option<RequestHandle>,
    sent: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: Decoder,
    unsent: Vec<u8>,
    sent: usize,
    app: Option<AppId>,
    register_deadline: Instant,
    next_seq: u32,
    waiting: [VecDeque<Waiting>; 3],
    read_pending: bool,
}

impl Conn {
    fn queue(&mut self, frame: &Frame) {
        // Frames built here are within the limits.
        let _ = frame.encode(&mut self.unsent);
    }
}

#[derive(Debug)]
struct ScanBudget {
    window: Instant,
    used: u32,
}

/// Binds `addr` and registers the listener under `token`.
fn listen(
    registry: &Registry,
    addr: SocketAddr,
    token: Token,
) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let mut listener = TcpListener::from_std(listener);
    registry.register(&mut listener, token, Interest::READABLE)?;
    Ok((listener, local_addr))
}

/// The signal server. See the module docs.
#[derive(Debug)]
pub struct SignalServer {
    registry: Registry,
    listening: Listening,
    local_addr: SocketAddr,
    tokens: TokenRange,
    options: SignalServerOptions,
    conns: Vec<Option<Conn>>,
    apps: HashMap<AppId, Launched>,
    next_handle: u64,
    results: VecDeque<(RequestHandle, Result<SignalReply, SignalError>)>,
    events: VecDeque<SignalEvent>,
    accept_pending: bool,
    last_now: Instant,
    scans: ScanBudget,
}

impl SignalServer {
    /// Listens on 127.0.0.1:`options.port` and registers the listener with `registry` under
    /// the first token of `tokens`; connections take the others. When the port cannot be
    /// bound (another process holds it), the server runs without a listener, says so in the
    /// log and in [`SignalServer::listener_state`], and tries again every
    /// `options.bind_retry` from [`SignalServer::handle_timeout`].
    pub fn new(
        options: SignalServerOptions,
        registry: &Registry,
        tokens: TokenRange,
        now: Instant,
    ) -> Result<SignalServer, SignalServerError> {
        let Some(listener_token) = tokens.get(0).filter(|_| tokens.len() >= 2) else {
            return Err(SignalServerError::Tokens(tokens.len()));
        };
        let registry = registry.try_clone()?;
        let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port));
        let (listening, local_addr) = match listen(&registry, requested, listener_token) {
            Ok((listener, local_addr)) => (Listening::Bound(listener), local_addr),
            Err(error) => {
                log::warn!(
                    "cannot listen for signal clients on {requested}: {error}; running without the signal server, so launched apps cannot register, and trying again every {} s (is another skywired using the port? set control.signal_port to another port, or 0 for any free one)",
                    options.bind_retry.as_secs_f64()
                );
                let retrying = Listening::Retrying {
                    error,
                    next_attempt: now + options.bind_retry,
                    failures: 1,
                };
                (retrying, requested)
            }
        };
        let slots = (tokens.len() - 1).min(options.max_connections.max(1));
        Ok(SignalServer {
            registry,
            listening,
            local_addr,
            tokens,
            options,
            conns: (0..slots).map(|_| None).collect(),
            apps: HashMap::new(),
            next_handle: 1,
            results: VecDeque::new(),
            events: VecDeque::new(),
            accept_pending: false,
            last_now: now,
            scans: ScanBudget {
                window: now,
                used: 0,
            },
        })
    }

    /// Tries the port again when a try is due.
    fn retry_listen(&mut self, now: Instant) {
        let Listening::Retrying {
            next_attempt,
            failures,
            ..
        } = self.listening
        else {
            return;
        };
        if next_attempt > now {
            return;
        }
        let Some(token) = self.tokens.get(0) else {
            return;
        };
        match listen(&self.registry, self.local_addr, token) {
            Ok((listener, local_addr)) => {
                log::info!(
                    "signal server: listening on {local_addr} at last, after {failures} failed tries"
                );
                self.local_addr = local_addr;
                self.listening = Listening::Bound(listener);
            }
            Err(error) => {
                log::debug!(
                    "signal server: {} still cannot be bound: {error}",
                    self.local_addr
                );
                self.listening = Listening::Retrying {
                    error,
                    next_attempt: now + self.options.bind_retry,
                    failures: failures.saturating_add(1),
                };
            }
        }
    }

    /// The address apps connect to (`SIGNAL_SERVER_ADDRESS`): with the real port once
    /// listening, the configured one before.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the server listens, and if not, why and when it tries again.
    pub fn listener_state(&self, now: Instant) -> ListenerState {
        match &self.listening {
            Listening::Bound(_) => ListenerState::Listening {
                address: self.local_addr,
            },
            Listening::Retrying {
                error,
                next_attempt,
                ..
            } => ListenerState::Retrying {
                address: self.local_addr,
                error: error.to_string(),
                retry_in_ms: u64::try_from(next_attempt.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
            },
        }
    }

    /// Whether `token` is one of the server's.
    pub fn owns(&self, token: Token) -> bool {
        self.tokens.contains(token)
    }

    /// Lets app `app`, running as process `pid`, register. Called when the app is launched or
    /// relaunched; an earlier connection of the app is closed.
    pub fn allow(&mut self, app: AppId, pid: u32) {
        self.forget(app);
        self.apps.insert(app, Launched { pid, conn: None });
    }

    /// The app has exited: its connection is closed and its unanswered requests fail.
    pub fn forget(&mut self, app: AppId) {
        if let Some(launched) = self.apps.remove(&app) {
            if let Some(index) = launched.conn {
                self.close(index, "the app exited");
            }
        }
    }

    /// Whether app `app` has a registered connection.
    pub fn is_registered(&self, app: AppId) -> bool {
        self.apps
            .get(&app)
            .is_some_and(|launched| launched.conn.is_some())
    }

    /// Connections open now, registered or not.
    pub fn connection_count(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Asks app `app` for a ping.
    pub fn request_ping(&mut self, app: AppId, now: Instant) -> Result<RequestHandle, SignalError> {
        self.request(app, Request::Ping, now)
    }

    /// Asks app `app` what it reports about itself.
    pub fn request_resource_usage(
        &mut self,
        app: AppId,
        now: Instant,
    ) -> Result<RequestHandle, SignalError> {
        self.request(app, Request::ResourceUsage, now)
    }

    /// Asks app `app` to shut down (it answers, then exits; watching that it does is the
    /// supervisor's).
    pub fn request_shutdown(
        &mut self,
        app: AppId,
        now: Instant,
    ) -> Result<RequestHandle, SignalError> {
        self.request(app, Request::Shutdown, now)
    }

    /// Sends request `kind` to app `app`.
    pub fn request(
        &mut self,
        app: AppId,
        kind: Request,
        now: Instant,
    ) -> Result<RequestHandle, SignalError> {
        self.last_now = now;
        let launched = self.apps.get(&app).ok_or(SignalError::NotLaunched(app))?;
        let index = launched.conn.ok_or(SignalError::NotRegistered(app))?;
        let handle = RequestHandle(self.next_handle);
        let deadline = now + self.options.request_timeout;
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return Err(SignalError::NotRegistered(app));
        };
        if conn.waiting[kind.index()].len() >= MAX_OUTSTANDING {
            return Err(SignalError::Busy {
                app,
                request: kind.name(),
            });
        }
        self.next_handle += 1;
        let seq = conn.next_seq;
        conn.next_seq = conn.next_seq.wrapping_add(1);
        // An op and `null` are far within the body limit.
        let _ = encode_data(seq, &[&[kind.op()], b"null"], &mut conn.unsent);
        conn.waiting[kind.index()].push_back(Waiting {
            handle: Some(handle),
            sent: now,
            deadline,
        });
        self.flush(index);
        Ok(handle)
    }

    /// Handles a readiness event for one of the server's tokens (others are ignored).
    pub fn handle_event(&mut self, event: &Event, now: Instant) {
        self.handle_token(event.token(), now);
    }

    /// Handles readiness of `token`, whatever it was (spurious wake-ups are harmless).
    pub fn handle_token(&mut self, token: Token, now: Instant) {
        self.last_now = now;
        match self.tokens.index_of(token) {
            Some(0) => self.accept(now),
            Some(slot) => {
                let index = slot - 1;
                self.flush(index);
                self.read(index, now);
            }
            None => {}
        }
    }

    /// Does what is due by `now`: request timeouts, connections that did not register in
    /// time, reading that was cut short to let other work run.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        self.retry_listen(now);
        if self.accept_pending {
            self.accept(now);
        }
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if conn.app.is_none() && conn.register_deadline <= now {
                let peer = conn.peer;
                log::info!(
                    "signal: closing the connection from {peer}: it did not register in time"
                );
                self.close(index, "registration timed out");
                continue;
            }
            let app = conn.app.unwrap_or_default();
            for kind in Request::ALL {
                for waiting in conn.waiting[kind.index()].iter_mut() {
                    if waiting.deadline <= now {
                        if let Some(handle) = waiting.handle.take() {
                            self.results.push_back((
                                handle,
                                Err(SignalError::Timeout {
                                    app,
                                    request: kind.name(),
                                    after: self.options.request_timeout,
                                }),
                            ));
                        }
                    }
                }
            }
            if conn.read_pending {
                self.read(index, now);
            }
        }
    }

    /// When [`SignalServer::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |next| next.min(at)));
        if let Listening::Retrying { next_attempt, .. } = self.listening {
            consider(next_attempt);
        }
        if self.accept_pending {
            consider(self.last_now);
        }
        for conn in self.conns.iter().flatten() {
            if conn.read_pending {
                consider(self.last_now);
            }
            if conn.app.is_none() {
                consider(conn.register_deadline);
            }
            conn.waiting
                .iter()
                .flatten()
                .filter(|waiting| waiting.handle.is_some())
                .for_each(|waiting| consider(waiting.deadline));
        }
        next
    }

    /// The next finished request.
    pub fn poll_result(&mut self) -> Option<(RequestHandle, Result<SignalReply, SignalError>)> {
        self.results.pop_front()
    }

    /// The next thing that happened on the signal port.
    pub fn poll_event(&mut self) -> Option<SignalEvent> {
        self.events.pop_front()
    }

    fn conn_mut(&mut self, index: usize) -> Option<&mut Conn> {
        self.conns.get_mut(index).and_then(Option::as_mut)
    }

    fn push_event(&mut self, event: SignalEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn accept(&mut self, now: Instant) {
        self.accept_pending = false;
        for _ in 0..ACCEPT_BUDGET {
            let Listening::Bound(listener) = &self.listening else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // EMFILE and the like: leave the rest queued and try again soon.
                    log::warn!("signal: cannot accept a connection: {err}");
                    self.accept_pending = true;
                    return;
                }
            };
            let Some(index) = self.free_slot() else {
                log::warn!(
                    "signal: refusing the connection from {peer}: {} apps are connected",
                    self.conns.len()
                );
                continue;
            };
            let Some(token) = self.tokens.get(index + 1) else {
                continue;
            };
            if let Err(err) =
                self.registry
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("signal: cannot watch the connection from {peer}: {err}");
                continue;
            }
            log::debug!("signal: connection from {peer}");
            self.conns[index] = Some(Conn {
                stream,
                peer,
                decoder: Decoder::new(),
                unsent: Vec::new(),
                sent: 0,
                app: None,
                register_deadline: now + self.options.register_timeout,
                next_seq: 1,
                waiting: Default::default(),
                read_pending: false,
            });
        }
        self.accept_pending = true;
    }

    /// A free connection slot; when all are taken, the one of the connection that has waited
    /// longest without registering, so that idle connections cannot lock apps out.
    fn free_slot(&mut self) -> Option<usize> {
        if let Some(index) = self.conns.iter().position(Option::is_none) {
            return Some(index);
        }
        let (index, _) = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(index, conn)| {
                let conn = conn.as_ref()?;
                conn.app
                    .is_none()
                    .then_some((index, conn.register_deadline))
            })
            .min_by_key(|(_, deadline)| *deadline)?;
        log::warn!("signal: too many connections; closing the oldest that has not registered");
        self.close(index, "evicted: too many connections waiting to register");
        Some(index)
    }

    fn read(&mut self, index: usize, now: Instant) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(conn) = self.conn_mut(index) else {
                return;
            };
            conn.read_pending = false;
            let space = conn.decoder.space();
            match conn.decoder.read_from(&mut conn.stream) {
                Ok(0) if space > 0 => {
                    self.close(index, "closed by the client");
                    return;
                }
                Ok(got) => budget = budget.saturating_sub(got),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.take_frames(index, now);
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.close(index, &format!("read error: {err}"));
                    return;
                }
            }
            if !self.take_frames(index, now) {
                return;
            }
            if budget == 0 {
                if let Some(conn) = self.conn_mut(index) {
                    conn.read_pending = true;
                }
                return;
            }
        }
    }

    /// Handles every complete frame; false once the connection is gone.
    fn take_frames(&mut self, index: usize, now: Instant) -> bool {
        loop {
            let Some(conn) = self.conn_mut(index) else {
                return false;
            };
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => self.handle_frame(index, frame, now),
                Ok(None) => break,
                Err(err) => {
                    self.close(index, &format!("protocol error: {err}"));
                    return false;
                }
            }
        }
        self.flush(index);
        self.conn_mut(index).is_some()
    }

    fn handle_frame(&mut self, index: usize, frame: Frame, now: Instant) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        match frame {
            Frame::Ping { ms } => conn.queue(&Frame::Pong { ms }),
            Frame::Ack { .. } | Frame::Pong { .. } => {}
            Frame::Data { seq, body } => {
                conn.queue(&Frame::Ack { seq });
                match split_body(&body) {
                    Some((OP_REGISTER, json)) => self.register(index, json),
                    Some((op, json)) if op & REPLY != 0 => {
                        self.reply(index, op & !REPLY, json, now)
                    }
                    Some((op, _)) => {
                        log::debug!("signal: ignoring op {op:#04x} from {}", conn.peer);
                    }
                    None => log::debug!("signal: ignoring an empty message from {}", conn.peer),
                }
            }
        }
    }

    fn register(&mut self, index: usize, json: &[u8]) {
        let Some(conn) = self.conns.get(index).and_then(Option::as_ref) else {
            return;
        };
        let peer = conn.peer;
        let current = conn.app;
        let claimed = match serde_json::from_slice::<Register>(json) {
            Ok(register) => register.id,
            Err(err) => {
                self.refuse(
                    index,
                    None,
                    format!("not a registration ({{\"Id\":N}}): {err}"),
                );
                return;
            }
        };
        if let Some(current) = current {
            if current == claimed {
                self.echo_registration(index, claimed);
            } else {
                self.refuse(
                    index,
                    Some(claimed),
                    format!("this connection is already registered as app {current}"),
                );
            }
            return;
        }
        let Some(pid) = self.apps.get(&claimed).map(|launched| launched.pid) else {
            self.refuse(
                index,
                Some(claimed),
                format!("no app with id {claimed} was launched by this daemon (or it has exited)"),
            );
            return;
        };
        match self.owned_by(pid, peer) {
            Ok(true) => {}
            Ok(false) => {
                self.refuse(
                    index,
                    Some(claimed),
                    format!(
                        "the connection is not held by app {claimed}'s process {pid} or its children"
                    ),
                );
                return;
            }
            Err(why) => {
                self.refuse(index, Some(claimed), why);
                return;
            }
        }
        let previous = self
            .apps
            .get_mut(&claimed)
            .and_then(|launched| launched.conn.replace(index));
        let replaced = previous.is_some_and(|previous| previous != index);
        if let Some(previous) = previous.filter(|previous| *previous != index) {
            self.close(previous, "the app registered again on a new connection");
        }
        if let Some(conn) = self.conn_mut(index) {
            conn.app = Some(claimed);
        }
        log::info!("signal: app {claimed} registered from {peer}");
        self.echo_registration(index, claimed);
        self.push_event(SignalEvent::Registered {
            app: claimed,
            replaced,
        });
    }

    fn owned_by(&mut self, pid: u32, peer: SocketAddr) -> Result<bool, String> {
        let inode = owner::client_socket_inode(peer, self.local_addr).map_err(|err| {
            format!("cannot read /proc/self/net/tcp to check the connection: {err}")
        })?;
        let Some(inode) = inode else {
            return Ok(false);
        };
        if owner::holds_socket(pid, inode) {
            return Ok(true);
        }
        let now = self.last_now;
        if now.saturating_duration_since(self.scans.window) >= Duration::from_secs(1) {
            self.scans = ScanBudget {
                window: now,
                used: 0,
            };
        }
        if self.scans.used >= FAMILY_SCANS_PER_SECOND {
            return Err("too many registrations to check; the client should retry".to_owned());
        }
        self.scans.used += 1;
        Ok(owner::family(pid)
            .into_iter()
            .any(|member| owner::holds_socket(member, inode)))
    }

    fn echo_registration(&mut self, index: usize, id: AppId) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        let json = serde_json::to_vec(&Register { id }).unwrap_or_default();
        let seq = conn.next_seq;
        conn.next_seq = conn.next_seq.wrapping_add(1);
        let _ = encode_data(seq, &[&[OP_REGISTER | REPLY], &json], &mut conn.unsent);
    }

    fn refuse(&mut self, index: usize, claimed: Option<u64>, reason: String) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        let peer = conn.peer;
        log::warn!("signal: refused a registration from {peer}: {reason}");
        // Best effort: let the client read its ACK before the connection closes.
        let _ = conn.stream.write(&conn.unsent[conn.sent..]);
        self.close(index, "registration refused");
        self.push_event(SignalEvent::Refused {
            claimed,
            peer,
            reason,
        });
    }

    fn reply(&mut self, index: usize, op: u8, json: &[u8], now: Instant) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        let (Some(app), Some(kind)) = (conn.app, Request::from_op(op)) else {
            log::debug!(
                "signal: ignoring an answer with op {:#04x} from {}",
                op | REPLY,
                conn.peer
            );
            return;
        };
        let Some(waiting) = conn.waiting[kind.index()].pop_front() else {
            log::debug!(
                "signal: app {app} answered a {} request that was never sent",
                kind.name()
            );
            return;
        };
        let Some(handle) = waiting.handle else {
            log::debug!(
                "signal: app {app} answered a {} request too late",
                kind.name()
            );
            return;
        };
        let request = kind.name();
        let bad = |problem: String| SignalError::BadReply {
            app,
            request,
            problem,
        };
        let value = serde_json::from_slice::<serde_json::Value>(json);
        let outcome = match (kind, value) {
            (_, Err(err)) => Err(bad(err.to_string())),
            (Request::Ping, Ok(_)) => Ok(SignalReply::Pong {
                rtt: now.saturating_duration_since(waiting.sent),
            }),
            (Request::ResourceUsage, Ok(value)) => Ok(SignalReply::ResourceUsage(value)),
            (Request::Shutdown, Ok(value)) => Ok(SignalReply::ShuttingDown {
                pid: value
                    .get("Pid")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|pid| u32::try_from(pid).ok()),
            }),
        };
        self.results.push_back((handle, outcome));
    }

    fn flush(&mut self, index: usize) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        while conn.sent < conn.unsent.len() {
            match conn.stream.write(&conn.unsent[conn.sent..]) {
                Ok(0) => {
                    self.close(index, "the client stopped reading");
                    return;
                }
                Ok(wrote) => conn.sent += wrote,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.close(index, &format!("write error: {err}"));
                    return;
                }
            }
        }
        if conn.sent == conn.unsent.len() {
            conn.unsent.clear();
            conn.sent = 0;
        } else if conn.unsent.len() - conn.sent > MAX_UNSENT {
            self.close(index, "it does not read what is sent to it");
        } else if conn.sent > MAX_BODY {
            conn.unsent.drain(..conn.sent);
            conn.sent = 0;
        }
    }

    fn close(&mut self, index: usize, why: &str) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.registry.deregister(&mut conn.stream);
        let Some(app) = conn.app else {
            log::debug!("signal: closed the connection from {}: {why}", conn.peer);
            return;
        };
        log::info!("signal: app {app}'s connection closed: {why}");
        if let Some(launched) = self.apps.get_mut(&app) {
            if launched.conn == Some(index) {
                launched.conn = None;
            }
        }
        for kind in Request::ALL {
            for waiting in conn.waiting[kind.index()].drain(..) {
                if let Some(handle) = waiting.handle {
                    self.results.push_back((
                        handle,
                        Err(SignalError::Disconnected {
                            app,
                            request: kind.name(),
                        }),
                    ));
                }
            }
        }
        self.push_event(SignalEvent::Disconnected { app });
    }
}
