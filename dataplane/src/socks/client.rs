//! The client app on the entry node: a local TCP port that speaks SOCKS5 (RFC 1928, no
//! authentication) to local programs and carries each CONNECT as a mesh TCP stream to the exit,
//! over a route it has the node build (over a path the node chooses and repairs, or along the
//! configured one) and follows through the node's route status, so that it waits out a
//! repair. Each connection goes greeting → request → route → mesh stream → exit's status →
//! relay, and every failure is answered with a complete reply. The listening socket and the
//! connections are the driver's; the app asks for their I/O.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use super::mesh::{self, STATUS_LEN};
use super::relay::{KernelIo, KernelOp, Progress, Relay};
use super::wire::{self, ReplyCode, Target};
use super::{bury, watch_peer, ClientOptions, Outcome, Slab, SocksError, Totals, MESH_TIMEOUT};
use crate::api::socks::ClientStatus;
use crate::local_stream::{LocalStream, Want};
use crate::node::{Event, RouteDownReason, RouteError, RouteStatus, RouteWait, SetupId};
use crate::service::sockets::{Owner, Sockets};
use crate::service::{Context, SocketEvent, SocketId, SocketOp};
use crate::stack::{MeshStack, TcpHandle};

/// Mesh streams opening at once; more connections wait their turn, so that a burst reaches
/// the exit as a few SYNs at a time.
const MAX_OPENING: usize = 32;
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
    Linger,
}

#[derive(Debug)]
struct Connection {
    /// The local stream; after the request, its input holds bytes for the exit.
    stream: LocalStream,
    phase: Phase,
}

/// The client app's listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Stopped,
    /// The driver was asked to listen and has not answered.
    Starting(SocketId),
    Running(SocketId, SocketAddr),
}

/// What the app has done about the route to the exit. Whether the route is there, being set
/// up or repaired is the node's to say ([`Node::route_status`](crate::node::Node::route_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteState {
    /// A setup this app asked for is under way.
    Building(SetupId),
    /// No route; the next build is due at this time.
    Down(Instant),
    /// No path to the exit is known, as of this version of the node's graph
    /// ([`Node::graph_version`](crate::node::Node::graph_version)): connections are answered
    /// at once, and a build is tried again when the graph changes.
    NoPath(u64),
    /// The node holds a route to the exit (whoever asked for it), ready or not: nothing is due
    /// until it goes.
    Held,
}

/// Whether a connection can use the route to the exit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteView {
    /// It is ready.
    Ready,
    /// It is being built or repaired.
    Wait,
    /// No path to the exit is known.
    Unreachable,
}

/// The client app.
#[derive(Debug)]
pub(super) struct Client {
    options: ClientOptions,
    /// The exit's mesh address and port (a hash of its key: computed once).
    exit_address: SocketAddrV6,
    listener: Listener,
    /// Why the last start failed, until it is asked for.
    start_error: Option<SocksError>,
    connections: Slab<Connection>,
    route: RouteState,
    backoff: Duration,
    /// Connections whose mesh stream is opening.
    opening: usize,
    totals: Totals,
}

impl Client {
    pub fn new(options: ClientOptions, now: Instant) -> Client {
        Client {
            exit_address: SocketAddrV6::new(options.exit.mesh_address(), options.exit_port, 0, 0),
            options,
            listener: Listener::Stopped,
            start_error: None,
            connections: Slab::default(),
            route: RouteState::Down(now),
            backoff: REBUILD_FIRST,
            opening: 0,
            totals: Totals::default(),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Whether it runs or is starting.
    pub fn is_active(&self) -> bool {
        self.listener != Listener::Stopped
    }

    /// Sets whether it starts with the node; nothing else of a running app changes.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.options.enabled = enabled;
    }

    /// Asks for the listening socket; the app runs once the driver has bound it.
    pub fn start(&mut self, cx: &mut Context<'_>, sockets: &mut Sockets) {
        if self.listener != Listener::Stopped {
            return;
        }
        let socket = sockets.listen(Owner::ClientListener, self.options.listen);
        self.listener = Listener::Starting(socket);
        self.start_error = None;
        self.route = RouteState::Down(cx.now);
        self.backoff = REBUILD_FIRST;
    }

    /// Whether a start waits for the driver.
    pub fn is_starting(&self) -> bool {
        matches!(self.listener, Listener::Starting(_))
    }

    /// Why the last start failed, once.
    pub fn take_start_error(&mut self) -> Option<SocksError> {
        self.start_error.take()
    }

    /// The listening socket is bound, or could not be.
    pub fn handle_listening(
        &mut self,
        sockets: &mut Sockets,
        socket: SocketId,
        result: io::Result<SocketAddr>,
    ) {
        if self.listener != Listener::Starting(socket) {
            return;
        }
        match result {
            Ok(local) => {
                log::info!(
                    "SOCKS client on {local}, exit {} port {}",
                    self.options.exit,
                    self.options.exit_port
                );
                self.listener = Listener::Running(socket, local);
            }
            Err(source) => {
                sockets.forget(socket);
                self.listener = Listener::Stopped;
                self.start_error = Some(SocksError::Bind {
                    listen: self.options.listen,
                    source,
                });
            }
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.listener, Listener::Running(..))
    }

    /// Whether the client runs with its exit at `peer`.
    pub fn exits_at(&self, peer: &crate::identity::NodeKey) -> bool {
        self.is_running() && self.options.exit == *peer
    }

    pub fn stop(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        match std::mem::replace(&mut self.listener, Listener::Stopped) {
            Listener::Stopped => {}
            Listener::Starting(socket) => sockets.close(socket),
            Listener::Running(socket, local) => {
                sockets.close(socket);
                log::info!("SOCKS client on {local} stopped");
            }
        }
        for index in 0..self.connections.slots() {
            if let Some(handle) = self
                .connections
                .get_mut(index)
                .and_then(|c| c.mesh_handle())
            {
                bury(cx.stack, handle, graveyard);
            }
            self.remove(sockets, index, true);
        }
    }

    /// Forgets a connection, counting what it carried, and closes its socket.
    fn remove(&mut self, sockets: &mut Sockets, index: usize, failed: bool) {
        if let Some(connection) = self.connections.remove(index) {
            if let Phase::Relay { relay, .. } = &connection.phase {
                self.totals.bytes_up += relay.to_mesh_bytes;
                self.totals.bytes_down += relay.to_kernel_bytes;
            }
            if failed {
                self.totals.failed += 1;
            }
            sockets.close(connection.stream.socket());
        }
    }

    pub fn status(&self, cx: &mut Context<'_>) -> ClientStatus {
        let mut totals = self.totals;
        let mut buffered = 0;
        for connection in self.connections.iter() {
            if let Some(handle) = connection.mesh_handle() {
                let socket = cx.stack.tcp(handle);
                buffered += socket.recv_queue() + socket.send_queue();
            }
            if let Phase::Relay { relay, .. } = &connection.phase {
                totals.bytes_up += relay.to_mesh_bytes;
                totals.bytes_down += relay.to_kernel_bytes;
            }
        }
        let running = self.is_running();
        ClientStatus {
            state: if running { "running" } else { "stopped" },
            listen: match self.listener {
                Listener::Running(_, local) => Some(local),
                _ => None,
            },
            exit: self.options.exit,
            route: match (cx.node.route_status(&self.options.exit), self.route) {
                (RouteStatus::Ready, _) => "ready",
                (RouteStatus::Repairing, _) => "repairing",
                (RouteStatus::Building, _) => "building",
                (RouteStatus::Absent, RouteState::NoPath(_)) if running => "unreachable",
                (RouteStatus::Absent, RouteState::Building(_)) if running => "building",
                (RouteStatus::Absent, _) => "down",
            },
            connections: self.connections.len(),
            accepted: totals.accepted,
            failed: totals.failed,
            bytes_up: totals.bytes_up,
            bytes_down: totals.bytes_down,
            buffered_bytes: buffered,
        }
    }

    /// A local program connected; the connection's socket id, or `None` to close it.
    pub fn accept(
        &mut self,
        now: Instant,
        sockets: &mut Sockets,
        from: SocketAddr,
    ) -> Option<SocketId> {
        if !self.is_running() {
            return None;
        }
        if self.connections.len() >= self.options.max_connections {
            log::warn!(
                "SOCKS client: connection from {from} closed: {} connections open already",
                self.options.max_connections
            );
            return None;
        }
        let socket = sockets.open(Owner::Client(self.connections.vacant()));
        self.totals.accepted += 1;
        self.connections.insert(Connection {
            stream: LocalStream::new(
                socket,
                HANDSHAKE_BUFFER,
                now + self.options.handshake_timeout,
            ),
            phase: Phase::Greeting,
        });
        sockets.wake(socket);
        Some(socket)
    }

    pub fn handle_event(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        event: &Event,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        let exit = self.options.exit;
        match event {
            Event::RouteFailed { setup, error, .. }
                if self.route == RouteState::Building(*setup) =>
            {
                log::warn!("SOCKS client: route to the exit {exit} failed: {error}");
                self.schedule_rebuild(cx.now);
                if self.options.path.is_some() {
                    // The configured path is what failed: no use waiting for it. Over a path
                    // of the node's, the next build avoids the link that failed.
                    self.fail_waiting(cx, sockets, graveyard, ReplyCode::GeneralFailure, false);
                }
            }
            Event::RouteDown { peer, reason } if *peer == exit => {
                log::warn!("SOCKS client: route to the exit {exit} is down: {reason}");
                let code = if *reason == RouteDownReason::NoPath {
                    self.route = RouteState::NoPath(cx.node.graph_version());
                    ReplyCode::NetworkUnreachable
                } else {
                    if !matches!(self.route, RouteState::Building(_)) {
                        self.schedule_rebuild(cx.now);
                    }
                    ReplyCode::GeneralFailure
                };
                self.fail_waiting(cx, sockets, graveyard, code, true);
            }
            Event::LinkUp { .. } => {
                // A new link may be the path's first hop: try again now.
                if matches!(self.route, RouteState::Down(_)) {
                    self.backoff = REBUILD_FIRST;
                    self.route = RouteState::Down(cx.now);
                }
            }
            Event::RouteReady { peer } if *peer == exit => {
                self.backoff = REBUILD_FIRST;
                self.route = RouteState::Held;
            }
            _ => {}
        }
    }

    /// The node holds a route to the exit, or one is under way: a setup of this app's own
    /// is still followed by its id.
    fn hold_route(&mut self) {
        if !matches!(self.route, RouteState::Building(_)) {
            self.route = RouteState::Held;
        }
    }

    fn schedule_rebuild(&mut self, now: Instant) {
        self.route = RouteState::Down(now + self.backoff);
        self.backoff = (self.backoff * 2).min(REBUILD_MAX);
    }

    /// Answers the connections waiting on the route (and, when it went down, those on a mesh
    /// stream through it) with `code`; relayed ones are reset.
    fn fail_waiting(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
        code: ReplyCode,
        streams: bool,
    ) {
        for index in 0..self.connections.slots() {
            let Some(connection) = self.connections.get_mut(index) else {
                continue;
            };
            match &connection.phase {
                Phase::WaitRoute(_) => {}
                Phase::Opening { handle, .. } | Phase::AwaitStatus { handle, .. } if streams => {
                    bury(cx.stack, *handle, graveyard);
                }
                Phase::Relay { handle, .. } if streams => {
                    // The relay sees the reset at its next step and ends.
                    cx.stack.tcp(*handle).abort();
                    continue;
                }
                _ => continue,
            }
            connection.phase = connection.answer(cx.now, code);
            sockets.wake(connection.stream.socket());
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_running() {
            return None;
        }
        // Only a due rebuild is a deadline: a route that is up (or being built) reports its
        // changes as events, and a path that appears comes with the advert that tells of it.
        let mut next = match self.route {
            RouteState::Down(at) => Some(at),
            RouteState::Building(_) | RouteState::NoPath(_) | RouteState::Held => None,
        };
        for connection in self.connections.iter() {
            let at = match &connection.phase {
                Phase::Relay { relay, .. } => relay.idle_deadline(self.options.idle_timeout),
                _ => connection.stream.deadline,
            };
            next = Some(next.map_or(at, |next: Instant| next.min(at)));
        }
        next
    }

    /// Moves every connection on; call after the stack was polled.
    pub fn pump(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        if !self.is_running() {
            return;
        }
        self.maintain_route(cx);
        self.opening = self
            .connections
            .iter()
            .filter(|c| matches!(c.phase, Phase::Opening { .. }))
            .count();
        for index in 0..self.connections.slots() {
            self.step(cx, sockets, graveyard, index);
        }
    }

    /// Advances connection `index` and queues its socket for the I/O that may be due.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
        index: usize,
    ) {
        let view = self.route_view(cx);
        let exit = self.exit_address;
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        let opening = &mut self.opening;
        match connection.step(cx, graveyard, &self.options, view, exit, opening) {
            Outcome::Keep => sockets.wake(connection.stream.socket()),
            Outcome::Finished => self.remove(sockets, index, false),
            Outcome::Failed => self.remove(sockets, index, true),
        }
    }

    /// What happened on connection `index`'s socket.
    pub fn handle_socket(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
        index: usize,
        event: SocketEvent,
    ) {
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        connection.handle(cx, event);
        self.step(cx, sockets, graveyard, index);
    }

    /// The kernel operation connection `index` wants next, if any.
    pub fn next_io(&mut self, stack: &mut MeshStack, index: usize) -> Option<KernelIo> {
        self.connections.get_mut(index)?.next_io(stack)
    }

    /// Operation `io` of connection `index` with its buffer.
    pub fn lend<'a>(
        &'a mut self,
        stack: &'a mut MeshStack,
        index: usize,
        io: KernelIo,
    ) -> Option<SocketOp<'a>> {
        let connection = self.connections.get_mut(index)?;
        let socket = connection.stream.socket();
        Some(connection.lend(stack, io).on(socket))
    }

    /// Whether connections can use the route to the exit now.
    fn route_view(&self, cx: &Context<'_>) -> RouteView {
        match (cx.node.route_status(&self.options.exit), self.route) {
            (RouteStatus::Ready, _) => RouteView::Ready,
            (RouteStatus::Absent, RouteState::NoPath(_)) => RouteView::Unreachable,
            _ => RouteView::Wait,
        }
    }

    /// Follows the node's route to the exit, and has one built when there is none: after a
    /// back-off when the last one failed or went down, as soon as the node's graph changes
    /// when no path was known.
    fn maintain_route(&mut self, cx: &mut Context<'_>) {
        let exit = self.options.exit;
        if cx.node.route_status(&exit) != RouteStatus::Absent {
            // Ready, or being built or repaired: nothing is due until it goes.
            self.hold_route();
            return;
        }
        match self.route {
            RouteState::Down(at) if cx.now < at => return,
            RouteState::NoPath(graph) if cx.node.graph_version() == graph => return,
            // Gone without an event (removed by hand; a setup whose outcome went astray):
            // build it after the first back-off, unless one comes up meanwhile, so that a route
            // rebuilt by hand is not raced.
            RouteState::Held | RouteState::Building(_) => {
                self.schedule_rebuild(cx.now);
                return;
            }
            RouteState::Down(_) | RouteState::NoPath(_) => {}
        }
        let path = self.options.route_path().map(|relays| {
            let mut full = vec![cx.node.key()];
            full.extend(relays);
            full
        });
        match cx.node.want_route(cx.now, &exit, path.as_deref()) {
            Ok(RouteWait::Started(setup)) => self.route = RouteState::Building(setup),
            Ok(RouteWait::Ready | RouteWait::Underway) => self.hold_route(),
            Err(RouteError::NoPath(_)) => {
                log::debug!("SOCKS client: no path to the exit {exit} is known");
                self.route = RouteState::NoPath(cx.node.graph_version());
            }
            Err(error) => {
                log::debug!("SOCKS client: cannot build a route to the exit {exit}: {error}");
                self.schedule_rebuild(cx.now);
            }
        }
    }
}

impl Connection {
    /// The mesh stream, once there is one.
    fn mesh_handle(&self) -> Option<TcpHandle> {
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
        self.stream.finish(now, &wire::reply(code));
        Phase::Linger
    }

    /// What the phase wants of the local stream.
    fn want(&self) -> Want {
        match self.phase {
            Phase::Greeting | Phase::Request => Want::Handshake,
            Phase::Linger => Want::Finish,
            _ => Want::Output,
        }
    }

    /// The kernel operation due next.
    fn next_io(&mut self, stack: &mut MeshStack) -> Option<KernelIo> {
        if let Phase::Relay { handle, relay } = &mut self.phase {
            return relay.next_io(stack.tcp(*handle));
        }
        self.stream.next_io(self.want())
    }

    fn lend<'a>(&'a mut self, stack: &'a mut MeshStack, io: KernelIo) -> KernelOp<'a> {
        let want = self.want();
        match &mut self.phase {
            Phase::Relay { handle, relay } => relay.lend(io, stack.tcp(*handle)),
            _ => self.stream.lend(io, want),
        }
    }

    /// What happened on the socket.
    fn handle(&mut self, cx: &mut Context<'_>, event: SocketEvent) {
        match &mut self.phase {
            Phase::Relay { handle, relay } => relay.handle(cx.now, event, cx.stack.tcp(*handle)),
            _ => self.stream.handle(event),
        }
    }

    /// Advances the connection as far as it goes now.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        graveyard: &mut Vec<TcpHandle>,
        options: &ClientOptions,
        route: RouteView,
        exit: SocketAddrV6,
        opening: &mut usize,
    ) -> Outcome {
        loop {
            if self.stream.is_broken() && !matches!(self.phase, Phase::Relay { .. }) {
                if let Some(handle) = self.mesh_handle() {
                    bury(cx.stack, handle, graveyard);
                }
                return Outcome::Failed;
            }
            let phase = std::mem::replace(&mut self.phase, Phase::Linger);
            let before = std::mem::discriminant(&phase);
            let next = match self.advance(phase, cx, graveyard, options, route, exit, opening) {
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
        cx: &mut Context<'_>,
        graveyard: &mut Vec<TcpHandle>,
        options: &ClientOptions,
        route: RouteView,
        exit: SocketAddrV6,
        opening: &mut usize,
    ) -> Result<Phase, Outcome> {
        let now = cx.now;
        Ok(match phase {
            Phase::Greeting => match wire::parse_greeting(self.stream.filled()) {
                Ok(Some((no_auth, len))) => {
                    self.stream.consume(len);
                    let selection = wire::method_selection(no_auth);
                    if no_auth {
                        self.stream.queue(&selection);
                        Phase::Request
                    } else {
                        log::debug!("SOCKS client: no acceptable method offered");
                        self.stream.finish(now, &selection);
                        Phase::Linger
                    }
                }
                Ok(None) if self.stream.is_open() && now < self.stream.deadline => Phase::Greeting,
                Ok(None) => return Err(Outcome::Failed),
                Err(error) => {
                    log::debug!("SOCKS client: bad greeting: {error}");
                    return Err(Outcome::Failed);
                }
            },
            Phase::Request => match wire::parse_request(self.stream.filled()) {
                Ok(Some((target, len))) => {
                    self.stream.consume(len);
                    log::debug!("SOCKS client: CONNECT {target}");
                    self.stream.deadline = now + options.connect_timeout;
                    Phase::WaitRoute(target)
                }
                Ok(None) if self.stream.is_open() && now < self.stream.deadline => Phase::Request,
                Ok(None) => return Err(Outcome::Failed),
                Err(error) => {
                    log::debug!("SOCKS client: bad request: {error}");
                    self.answer(now, error.reply_code())
                }
            },
            Phase::WaitRoute(target) => {
                if route == RouteView::Unreachable {
                    self.answer(now, ReplyCode::NetworkUnreachable)
                } else if now >= self.stream.deadline {
                    self.answer(now, ReplyCode::GeneralFailure)
                } else if route == RouteView::Ready && *opening < MAX_OPENING {
                    match cx.stack.connect(exit) {
                        Ok(handle) => {
                            watch_peer(cx.stack, handle, MESH_TIMEOUT.min(options.connect_timeout));
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
                let socket = cx.stack.tcp(handle);
                if socket.may_send() {
                    *opening = opening.saturating_sub(1);
                    // The send buffer is empty and far larger than a request.
                    let _ = socket.send_slice(&request);
                    Phase::AwaitStatus {
                        handle,
                        status: Vec::with_capacity(STATUS_LEN),
                    }
                } else if socket.state() == tcp::State::Closed || now >= self.stream.deadline {
                    *opening = opening.saturating_sub(1);
                    log::debug!(
                        "SOCKS client: the exit did not take the mesh stream ({})",
                        socket.state()
                    );
                    // A reset in time is the exit's refusal: its policy does not admit this
                    // node, or this node holds as many streams there as it may.
                    let code = if socket.state() == tcp::State::Closed {
                        ReplyCode::NotAllowed
                    } else {
                        ReplyCode::GeneralFailure
                    };
                    bury(cx.stack, handle, graveyard);
                    self.answer(now, code)
                } else {
                    Phase::Opening { handle, request }
                }
            }
            Phase::AwaitStatus { handle, mut status } => {
                let socket = cx.stack.tcp(handle);
                let mut buf = [0u8; STATUS_LEN];
                let want = STATUS_LEN.saturating_sub(status.len());
                if let Ok(read) = socket.recv_slice(&mut buf[..want]) {
                    status.extend_from_slice(&buf[..read]);
                }
                let may_recv = socket.may_recv();
                match mesh::parse_status(&status) {
                    Ok(Some(ReplyCode::Succeeded)) => Phase::Relay {
                        handle,
                        relay: self.stream.relay(now, &wire::reply(ReplyCode::Succeeded)),
                    },
                    Ok(None) if may_recv && now < self.stream.deadline => {
                        Phase::AwaitStatus { handle, status }
                    }
                    answer => {
                        let code = match answer {
                            Ok(Some(code)) => code,
                            _ => ReplyCode::GeneralFailure,
                        };
                        bury(cx.stack, handle, graveyard);
                        self.answer(now, code)
                    }
                }
            }
            Phase::Relay { handle, mut relay } => {
                let progress = relay.progress(now, options.idle_timeout, cx.stack.tcp(handle));
                match progress {
                    Progress::Open => Phase::Relay { handle, relay },
                    Progress::Done => {
                        cx.stack.release(handle);
                        self.phase = Phase::Relay { handle, relay };
                        return Err(Outcome::Finished);
                    }
                    Progress::Failed(reason) => {
                        log::debug!("SOCKS client: connection closed: {reason}");
                        bury(cx.stack, handle, graveyard);
                        self.phase = Phase::Relay { handle, relay };
                        return Err(Outcome::Failed);
                    }
                }
            }
            Phase::Linger if self.stream.is_finished(now) => return Err(Outcome::Failed),
            Phase::Linger => Phase::Linger,
        })
    }
}
