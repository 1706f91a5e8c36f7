//! The client app on the entry node: a local TCP port that speaks SOCKS5 (RFC 1928, no
//! authentication) to local programs and carries each CONNECT as a mesh TCP stream to the exit,
//! over a route it builds and rebuilds. Each connection goes greeting → request → route →
//! mesh stream → exit's status → relay, and every failure is answered with a complete reply.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use smoltcp::socket::tcp;

use super::mesh::{self, STATUS_LEN};
use super::relay::{Progress, Relay};
use super::wire::{self, ReplyCode, Target};
use super::{
    bury, smol_duration, ClientOptions, Io, Slab, Totals, CLIENT_LISTENER, CONNECTION_TOKENS,
    MESH_TIMEOUT,
};
use crate::api::socks::ClientStatus;
use crate::node::{Event, SetupId};
use crate::stack::TcpHandle;

/// Mesh streams opening at once; more connections wait their turn, so that a burst reaches
/// the exit as a few SYNs at a time.
const MAX_OPENING: usize = 32;
/// Connections accepted per loop turn.
const ACCEPT_BUDGET: usize = 64;
/// How long an answered connection waits for the client to close before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// The first and the longest wait before building the route again.
const REBUILD_FIRST: Duration = Duration::from_millis(500);
const REBUILD_MAX: Duration = Duration::from_secs(15);
/// What a connection reads of the handshake at most: a greeting and a request.
const HANDSHAKE_BUFFER: usize = wire::MAX_GREETING_LEN + wire::MAX_REQUEST_LEN;

/// Where one local connection stands.
#[derive(Debug)]
enum Phase {
    /// Reading the method greeting.
    Greeting,
    /// Reading the request.
    Request,
    /// The route to the exit is not ready yet.
    WaitRoute(Target),
    /// The mesh stream is opening; the request goes out once it is open.
    Opening { handle: TcpHandle, request: Vec<u8> },
    /// Waiting for the exit's status.
    AwaitStatus { handle: TcpHandle, status: Vec<u8> },
    /// Carrying bytes both ways.
    Relay { handle: TcpHandle, relay: Relay },
    /// Answered (a failure): the reply goes out, then a FIN, then whatever the client still
    /// sends is read and dropped until it closes or the linger time ends.
    Linger { shut: bool },
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    phase: Phase,
    readable: bool,
    writable: bool,
    /// Handshake bytes read and not yet parsed; after the request, bytes for the exit.
    input: Vec<u8>,
    /// Bytes for the client not yet written (a method selection or a failure reply).
    output: Vec<u8>,
    deadline: Instant,
}

/// The route to the exit, as the app sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteState {
    /// A setup is under way.
    Building(SetupId),
    /// No route; the next build is due at this time.
    Down(Instant),
    /// The route is up: nothing is due until it goes down.
    Ready,
}

/// The client app.
#[derive(Debug)]
pub(super) struct Client {
    options: ClientOptions,
    /// The exit's mesh address and port (a hash of its key: computed once).
    exit_address: SocketAddrV6,
    listener: Option<(TcpListener, SocketAddr)>,
    listener_ready: bool,
    connections: Slab<Connection>,
    route: RouteState,
    backoff: Duration,
    totals: Totals,
}

/// What happened to a connection in one step.
enum Outcome {
    Keep,
    /// Closed after a relay that ended well.
    Finished,
    /// Closed after a failure.
    Failed,
}

impl Client {
    pub fn new(options: ClientOptions) -> Client {
        Client {
            exit_address: SocketAddrV6::new(options.exit.mesh_address(), options.exit_port, 0, 0),
            options,
            listener: None,
            listener_ready: false,
            connections: Slab::default(),
            route: RouteState::Down(Instant::now()),
            backoff: REBUILD_FIRST,
            totals: Totals::default(),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub fn start(&mut self, io: &mut Io<'_>) -> Result<(), super::SocksError> {
        if self.listener.is_some() {
            return Ok(());
        }
        let listen = self.options.listen;
        let mut listener = TcpListener::bind(listen)
            .map_err(|source| super::SocksError::Bind { listen, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| super::SocksError::Bind { listen, source })?;
        io.registry
            .register(&mut listener, CLIENT_LISTENER, Interest::READABLE)
            .map_err(super::SocksError::Register)?;
        log::info!(
            "SOCKS client on {local}, exit {} port {}",
            self.options.exit,
            self.options.exit_port
        );
        self.listener = Some((listener, local));
        self.listener_ready = true;
        self.route = RouteState::Down(io.now);
        self.backoff = REBUILD_FIRST;
        Ok(())
    }

    /// Whether the client runs with its exit at `peer`.
    pub fn exits_at(&self, peer: &crate::identity::NodeKey) -> bool {
        self.listener.is_some() && self.options.exit == *peer
    }

    pub fn stop(&mut self, io: &mut Io<'_>, graveyard: &mut Vec<TcpHandle>) {
        if let Some((mut listener, local)) = self.listener.take() {
            let _ = io.registry.deregister(&mut listener);
            log::info!("SOCKS client on {local} stopped");
        }
        for index in 0..self.connections.slots() {
            if let Some(handle) = self.connections.get_mut(index).and_then(|c| c.handle()) {
                bury(io.stack, handle, graveyard);
            }
            self.remove(io, index, true);
        }
    }

    /// Forgets a connection, counting what it carried.
    fn remove(&mut self, io: &mut Io<'_>, index: usize, failed: bool) {
        if let Some(connection) = self.connections.remove(index) {
            if let Phase::Relay { relay, .. } = &connection.phase {
                self.totals.bytes_up += relay.to_mesh_bytes;
                self.totals.bytes_down += relay.to_kernel_bytes;
            }
            if failed {
                self.totals.failed += 1;
            }
            let mut stream = connection.stream;
            let _ = io.registry.deregister(&mut stream);
        }
    }

    pub fn status(&self, io: &mut Io<'_>) -> ClientStatus {
        let mut totals = self.totals;
        let mut buffered = 0;
        for connection in self.connections.iter() {
            if let Some(handle) = connection.handle() {
                let socket = io.stack.tcp(handle);
                buffered += socket.recv_queue() + socket.send_queue();
            }
            if let Phase::Relay { relay, .. } = &connection.phase {
                totals.bytes_up += relay.to_mesh_bytes;
                totals.bytes_down += relay.to_kernel_bytes;
            }
        }
        let running = self.listener.is_some();
        ClientStatus {
            state: if running { "running" } else { "stopped" },
            listen: self.listener.as_ref().map(|(_, local)| *local),
            exit: self.options.exit,
            route: if io.route_ready(&self.options.exit) {
                "ready"
            } else if matches!(self.route, RouteState::Building(_)) && running {
                "building"
            } else {
                "down"
            },
            connections: self.connections.len(),
            accepted: totals.accepted,
            failed: totals.failed,
            bytes_up: totals.bytes_up,
            bytes_down: totals.bytes_down,
            buffered_bytes: buffered,
        }
    }

    pub fn listener_ready(&mut self) {
        self.listener_ready = true;
    }

    pub fn connection_ready(&mut self, index: usize, readable: bool, writable: bool) {
        if let Some(connection) = self.connections.get_mut(index) {
            connection.readable |= readable;
            connection.writable |= writable;
        }
    }

    pub fn handle_event(&mut self, io: &mut Io<'_>, event: &Event, graveyard: &mut Vec<TcpHandle>) {
        let exit = self.options.exit;
        match event {
            Event::RouteFailed { setup, error, .. }
                if self.route == RouteState::Building(*setup) =>
            {
                log::warn!("SOCKS client: route to the exit {exit} failed: {error}");
                self.schedule_rebuild(io.now);
                self.fail_waiting(io, graveyard, false);
            }
            Event::RouteDown { peer, reason } if *peer == exit => {
                log::warn!("SOCKS client: route to the exit {exit} is down: {reason}");
                if !matches!(self.route, RouteState::Building(_)) {
                    self.schedule_rebuild(io.now);
                }
                self.fail_waiting(io, graveyard, true);
            }
            Event::LinkUp { .. } => {
                // A new link may be the path's first hop: try again now.
                if matches!(self.route, RouteState::Down(_)) {
                    self.backoff = REBUILD_FIRST;
                    self.route = RouteState::Down(io.now);
                }
            }
            Event::RouteReady { peer } if *peer == exit => {
                self.backoff = REBUILD_FIRST;
                self.route = RouteState::Ready;
            }
            _ => {}
        }
    }

    fn schedule_rebuild(&mut self, now: Instant) {
        self.route = RouteState::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(REBUILD_MAX);
    }

    /// Answers the connections waiting on the route (and, when it went down, those on a mesh
    /// stream through it) with a general failure; relayed ones are reset.
    fn fail_waiting(&mut self, io: &mut Io<'_>, graveyard: &mut Vec<TcpHandle>, streams: bool) {
        for index in 0..self.connections.slots() {
            let Some(connection) = self.connections.get_mut(index) else {
                continue;
            };
            match &connection.phase {
                Phase::WaitRoute(_) => {}
                Phase::Opening { handle, .. } | Phase::AwaitStatus { handle, .. } if streams => {
                    bury(io.stack, *handle, graveyard);
                }
                Phase::Relay { handle, .. } if streams => {
                    // The relay sees the reset at its next pump and ends.
                    io.stack.tcp(*handle).abort();
                    continue;
                }
                _ => continue,
            }
            connection.phase = connection.answer(io.now, ReplyCode::GeneralFailure);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.listener.as_ref()?;
        // Only a due rebuild is a deadline: a route that is up (or being built) reports its
        // changes as events.
        let mut next = match self.route {
            RouteState::Down(at) => Some(at),
            RouteState::Building(_) | RouteState::Ready => None,
        };
        for connection in self.connections.iter() {
            let at = match &connection.phase {
                Phase::Relay { relay, .. } => relay.idle_deadline(self.options.idle_timeout),
                _ => connection.deadline,
            };
            next = Some(next.map_or(at, |next: Instant| next.min(at)));
        }
        next
    }

    pub fn pump(&mut self, io: &mut Io<'_>, graveyard: &mut Vec<TcpHandle>) {
        if self.listener.is_none() {
            return;
        }
        self.maintain_route(io);
        self.accept(io);
        let ready = io.route_ready(&self.options.exit);
        let mut opening = self
            .connections
            .iter()
            .filter(|c| matches!(c.phase, Phase::Opening { .. }))
            .count();
        let exit = self.exit_address;
        for index in 0..self.connections.slots() {
            let Some(connection) = self.connections.get_mut(index) else {
                continue;
            };
            let outcome = connection.step(io, graveyard, &self.options, ready, exit, &mut opening);
            match outcome {
                Outcome::Keep => {}
                Outcome::Finished => self.remove(io, index, false),
                Outcome::Failed => self.remove(io, index, true),
            }
        }
    }

    fn maintain_route(&mut self, io: &mut Io<'_>) {
        let ready = io.route_ready(&self.options.exit);
        match self.route {
            RouteState::Building(_) => return,
            // A route built by hand (`build_route`) serves as well.
            _ if ready => {
                self.route = RouteState::Ready;
                return;
            }
            RouteState::Down(at) if io.now < at => return,
            // Down, or gone without an event: build it now.
            RouteState::Down(_) | RouteState::Ready => {}
        }
        let mut path = vec![io.node.key()];
        path.extend(self.options.route_path());
        match io.node.build_route(io.now, &path) {
            Ok(setup) => self.route = RouteState::Building(setup),
            Err(error) => {
                log::debug!(
                    "SOCKS client: cannot build a route to the exit {}: {error}",
                    self.options.exit
                );
                self.schedule_rebuild(io.now);
            }
        }
    }

    fn accept(&mut self, io: &mut Io<'_>) {
        if !self.listener_ready {
            return;
        }
        let Some((listener, _)) = self.listener.as_ref() else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors and the like: try again on the next turn.
                    log::warn!("SOCKS client: accept: {error}");
                    return;
                }
            };
            if self.connections.len() >= self.options.max_connections {
                log::warn!(
                    "SOCKS client: connection from {from} closed: {} connections open already",
                    self.options.max_connections
                );
                continue;
            }
            let token = Token(CONNECTION_TOKENS + 2 * self.connections.vacant());
            if let Err(error) =
                io.registry
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("SOCKS client: cannot register a connection: {error}");
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.totals.accepted += 1;
            self.connections.insert(Connection {
                stream,
                phase: Phase::Greeting,
                readable: true,
                writable: true,
                input: Vec::with_capacity(HANDSHAKE_BUFFER),
                output: Vec::new(),
                deadline: io.now + self.options.handshake_timeout,
            });
        }
    }
}

impl Connection {
    fn handle(&self) -> Option<TcpHandle> {
        match &self.phase {
            Phase::Opening { handle, .. }
            | Phase::AwaitStatus { handle, .. }
            | Phase::Relay { handle, .. } => Some(*handle),
            _ => None,
        }
    }

    /// Queues a failure reply for the client; the phase that follows is [`Phase::Linger`].
    fn answer(&mut self, now: Instant, code: ReplyCode) -> Phase {
        log::debug!("SOCKS client: answering {code:?}");
        self.output.extend_from_slice(&wire::reply(code));
        self.deadline = now + LINGER;
        Phase::Linger { shut: false }
    }

    /// Writes pending output; false when the stream failed.
    fn flush(&mut self) -> bool {
        while self.writable && !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(written) => {
                    self.output.drain(..written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads handshake bytes; false when the client closed or the stream failed.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; HANDSHAKE_BUFFER];
        while self.readable && self.input.len() < HANDSHAKE_BUFFER {
            let room = HANDSHAKE_BUFFER - self.input.len();
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return false,
                Ok(read) => self.input.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Advances the connection as far as it goes now.
    fn step(
        &mut self,
        io: &mut Io<'_>,
        graveyard: &mut Vec<TcpHandle>,
        options: &ClientOptions,
        route_ready: bool,
        exit: SocketAddrV6,
        opening: &mut usize,
    ) -> Outcome {
        loop {
            if !self.flush() {
                if let Some(handle) = self.handle() {
                    bury(io.stack, handle, graveyard);
                }
                return Outcome::Failed;
            }
            let phase = std::mem::replace(&mut self.phase, Phase::Linger { shut: true });
            let before = std::mem::discriminant(&phase);
            let next = match self.advance(phase, io, graveyard, options, route_ready, exit, opening)
            {
                Ok(next) => next,
                Err(outcome) => return outcome,
            };
            let changed = std::mem::discriminant(&next) != before;
            self.phase = next;
            if !changed {
                return Outcome::Keep;
            }
        }
    }

    /// One phase's work: the phase that follows, or how the connection ended.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &mut self,
        phase: Phase,
        io: &mut Io<'_>,
        graveyard: &mut Vec<TcpHandle>,
        options: &ClientOptions,
        route_ready: bool,
        exit: SocketAddrV6,
        opening: &mut usize,
    ) -> Result<Phase, Outcome> {
        let now = io.now;
        Ok(match phase {
            Phase::Greeting => {
                let open = self.fill();
                match wire::parse_greeting(&self.input) {
                    Ok(Some((no_auth, len))) => {
                        self.input.drain(..len);
                        self.output
                            .extend_from_slice(&wire::method_selection(no_auth));
                        if no_auth {
                            Phase::Request
                        } else {
                            log::debug!("SOCKS client: no acceptable method offered");
                            self.deadline = now + LINGER;
                            Phase::Linger { shut: false }
                        }
                    }
                    Ok(None) if open && now < self.deadline => Phase::Greeting,
                    Ok(None) => return Err(Outcome::Failed),
                    Err(error) => {
                        log::debug!("SOCKS client: bad greeting: {error}");
                        return Err(Outcome::Failed);
                    }
                }
            }
            Phase::Request => {
                let open = self.fill();
                match wire::parse_request(&self.input) {
                    Ok(Some((target, len))) => {
                        self.input.drain(..len);
                        log::debug!("SOCKS client: CONNECT {target}");
                        self.deadline = now + options.connect_timeout;
                        Phase::WaitRoute(target)
                    }
                    Ok(None) if open && now < self.deadline => Phase::Request,
                    Ok(None) => return Err(Outcome::Failed),
                    Err(error) => {
                        log::debug!("SOCKS client: bad request: {error}");
                        self.answer(now, error.reply_code())
                    }
                }
            }
            Phase::WaitRoute(target) => {
                if now >= self.deadline {
                    self.answer(now, ReplyCode::GeneralFailure)
                } else if route_ready && *opening < MAX_OPENING {
                    match io.stack.connect(exit) {
                        Ok(handle) => {
                            io.stack.tcp(handle).set_timeout(Some(smol_duration(
                                MESH_TIMEOUT.min(options.connect_timeout),
                            )));
                            *opening += 1;
                            Phase::Opening {
                                handle,
                                request: mesh::emit_request(&target),
                            }
                        }
                        Err(error) => {
                            log::warn!("SOCKS client: no mesh stream to the exit: {error}");
                            self.answer(now, ReplyCode::GeneralFailure)
                        }
                    }
                } else {
                    Phase::WaitRoute(target)
                }
            }
            Phase::Opening { handle, request } => {
                let socket = io.stack.tcp(handle);
                if socket.may_send() {
                    *opening = opening.saturating_sub(1);
                    // The send buffer is empty and far larger than a request.
                    let _ = socket.send_slice(&request);
                    Phase::AwaitStatus {
                        handle,
                        status: Vec::with_capacity(STATUS_LEN),
                    }
                } else if socket.state() == tcp::State::Closed || now >= self.deadline {
                    *opening = opening.saturating_sub(1);
                    log::debug!(
                        "SOCKS client: the exit did not take the mesh stream ({})",
                        socket.state()
                    );
                    bury(io.stack, handle, graveyard);
                    self.answer(now, ReplyCode::GeneralFailure)
                } else {
                    Phase::Opening { handle, request }
                }
            }
            Phase::AwaitStatus { handle, mut status } => {
                let socket = io.stack.tcp(handle);
                let mut buf = [0u8; STATUS_LEN];
                let want = STATUS_LEN.saturating_sub(status.len());
                if let Ok(read) = socket.recv_slice(&mut buf[..want]) {
                    status.extend_from_slice(&buf[..read]);
                }
                let may_recv = socket.may_recv();
                match mesh::parse_status(&status) {
                    Ok(Some(ReplyCode::Succeeded)) => {
                        let mut to_kernel = std::mem::take(&mut self.output);
                        to_kernel.extend_from_slice(&wire::reply(ReplyCode::Succeeded));
                        let to_mesh = std::mem::take(&mut self.input);
                        Phase::Relay {
                            handle,
                            relay: Relay::new(now, to_kernel, to_mesh),
                        }
                    }
                    Ok(None) if may_recv && now < self.deadline => {
                        Phase::AwaitStatus { handle, status }
                    }
                    answer => {
                        let code = match answer {
                            Ok(Some(code)) => code,
                            _ => ReplyCode::GeneralFailure,
                        };
                        bury(io.stack, handle, graveyard);
                        self.answer(now, code)
                    }
                }
            }
            Phase::Relay { handle, mut relay } => {
                if self.readable {
                    relay.set_readable();
                }
                if self.writable {
                    relay.set_writable();
                }
                self.readable = false;
                self.writable = false;
                let progress = relay.pump(
                    now,
                    options.idle_timeout,
                    &mut self.stream,
                    io.stack.tcp(handle),
                );
                match progress {
                    Progress::Open => Phase::Relay { handle, relay },
                    Progress::Done => {
                        io.stack.release(handle);
                        self.phase = Phase::Relay { handle, relay };
                        return Err(Outcome::Finished);
                    }
                    Progress::Failed(reason) => {
                        log::debug!("SOCKS client: connection closed: {reason}");
                        bury(io.stack, handle, graveyard);
                        self.phase = Phase::Relay { handle, relay };
                        return Err(Outcome::Failed);
                    }
                }
            }
            Phase::Linger { mut shut } => {
                if !self.output.is_empty() {
                    if now >= self.deadline {
                        return Err(Outcome::Failed);
                    }
                    return Ok(Phase::Linger { shut });
                }
                if !shut {
                    shut = true;
                    let _ = self.stream.shutdown(Shutdown::Write);
                }
                self.input.clear();
                if !self.fill() || now >= self.deadline {
                    return Err(Outcome::Failed);
                }
                Phase::Linger { shut }
            }
        })
    }
}
