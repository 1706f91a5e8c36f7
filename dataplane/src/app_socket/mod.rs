//! The app socket's dataplane side: the connections that launched apps opened to the node's
//! app socket (`SKYWIRE_APP_SOCKET`), which the control thread checked and handed over. A
//! connection's first line asks for a stream to a port of another node (`dial`), for a
//! listener on a port of this node (`listen`), or for a stream that arrived on one (`accept`);
//! it is answered with one line, and then carries the stream's bytes (relayed to a mesh TCP
//! stream as the SOCKS apps relay theirs) or, as a listener, one line for each stream that
//! arrives. The connections are the driver's kernel sockets: this module names them by id and
//! asks for their I/O. `protocol` owns the lines.

pub mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use crate::api::app_socket::AppId;
use crate::identity::NodeKey;
use crate::local_stream::{LocalStream, Want};
use crate::node::{Event, RouteWait, SetupId};
use crate::service::sockets::{Owner, Sockets};
use crate::service::{Context, SocketEvent, SocketId, SocketOp};
use crate::socks::relay::{KernelIo, KernelOp, Progress, Relay};
use crate::socks::{bury, watch_peer, MESH_TIMEOUT};
use crate::stack::{Admission, MeshStack, TcpHandle};
use crate::wire::advert::MAX_SERVICES;
use crate::wire::{BuiltinService, ServiceEntry, ServiceName};
use protocol::{
    incoming_line, parse_request, AppRequest, BadRequest, Limit, NoRoute, NotAllowed, Refusal,
    MAX_LINE, OK,
};

/// Listening mesh sockets kept ready on a listener's port (one more is made for each SYN).
const BACKLOG: usize = 4;
/// A stream that carries nothing either way for this long is closed. A peer that is gone is
/// found long before, by the mesh stream's keep-alives.
const STREAM_IDLE: Duration = Duration::from_secs(24 * 3600);
/// Lines waiting for a listener that does not read them, beyond which it is closed.
const MAX_LISTENER_OUTPUT: usize = 64 * 1024;
/// Named services the apps may advertise: the advert keeps room for every built-in one.
pub const MAX_APP_SERVICES: usize = MAX_SERVICES - BuiltinService::ALL.len();

/// The app socket's limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSocketOptions {
    /// Connections and streams one app may hold at once: its connections in any state, and
    /// the streams that arrived on its listeners and wait to be accepted.
    pub max_per_app: usize,
    /// Connections of every app together.
    pub max_connections: usize,
    /// How long a new connection may take to send its request.
    pub request_timeout: Duration,
    /// How long a dial may take: the route, and the stream's opening.
    pub dial_timeout: Duration,
    /// How long a stream that arrived on a listener waits to be accepted before it is reset.
    pub accept_timeout: Duration,
}

impl Default for AppSocketOptions {
    fn default() -> AppSocketOptions {
        AppSocketOptions {
            max_per_app: 256,
            max_connections: 1024,
            request_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(20),
            accept_timeout: Duration::from_secs(10),
        }
    }
}

/// Where one connection stands.
#[derive(Debug)]
enum Phase {
    /// Reading its request.
    Request,
    /// A dial waiting for its route to be ready; `setup` is the one it started, if any.
    Route {
        peer: NodeKey,
        port: u16,
        setup: Option<SetupId>,
    },
    /// A dial whose mesh stream is opening.
    Opening {
        peer: NodeKey,
        port: u16,
        handle: TcpHandle,
    },
    /// A listener on a port.
    Listening { port: u16 },
    /// Carrying a stream's bytes both ways.
    Stream {
        peer: NodeKey,
        handle: TcpHandle,
        relay: Relay,
    },
    /// Answered for the last time (a refusal): the line goes out, then a FIN, then whatever
    /// the app still sends is read and dropped until it closes (so that it reads the end of
    /// the stream, not a reset) or the linger time ends.
    Closing,
}

#[derive(Debug)]
struct Connection {
    app: AppId,
    /// The local stream: its input holds the request read so far, and after its line the
    /// stream's first bytes; its output the lines for the app (a reply, `incoming` lines); its
    /// deadline is when the request, the dial or the refusal's linger runs out.
    stream: LocalStream,
    phase: Phase,
}

/// A port an app listens on.
#[derive(Debug)]
struct Listener {
    /// The listening connection.
    connection: usize,
    app: AppId,
    service: Option<ServiceName>,
}

/// A stream that arrived on a listener and waits for its app's `accept`.
#[derive(Debug)]
struct Incoming {
    handle: TcpHandle,
    /// The listener's port.
    port: u16,
    app: AppId,
    peer: NodeKey,
    deadline: Instant,
}

/// What a step did to a connection.
enum Step {
    Keep,
    /// It is over: its mesh stream is released already, its socket is to be closed.
    Close,
}

/// The app socket's connections, listeners and incoming streams.
#[derive(Debug)]
pub struct AppSocket {
    options: AppSocketOptions,
    connections: HashMap<usize, Connection>,
    next_connection: usize,
    listeners: BTreeMap<u16, Listener>,
    incoming: BTreeMap<u64, Incoming>,
    next_incoming: u64,
    /// Counts the changes of the listeners' services.
    services_version: u64,
    /// Mesh sockets aborted or closed during the last pump: released at the next, once the
    /// stack has been polled and has sent their reset.
    graveyard: Vec<TcpHandle>,
}

impl AppSocket {
    /// No connections yet.
    pub fn new(options: AppSocketOptions) -> AppSocket {
        AppSocket {
            options,
            connections: HashMap::new(),
            next_connection: 0,
            listeners: BTreeMap::new(),
            incoming: BTreeMap::new(),
            next_incoming: 1,
            services_version: 0,
            graveyard: Vec::new(),
        }
    }

    // ----- getters -----

    /// The services the listeners announce, by port.
    pub fn services(&self) -> impl Iterator<Item = ServiceEntry> + '_ {
        self.listeners.iter().filter_map(|(port, listener)| {
            Some(ServiceEntry {
                name: listener.service.clone()?,
                port: *port,
            })
        })
    }

    /// A number that changes whenever [`AppSocket::services`] does.
    pub fn services_version(&self) -> u64 {
        self.services_version
    }

    /// Connections and streams `app` holds.
    fn held_by(&self, app: AppId) -> usize {
        let connections = self.connections.values().filter(|c| c.app == app).count();
        let incoming = self.incoming.values().filter(|i| i.app == app).count();
        connections + incoming
    }

    /// When [`AppSocket::pump`] is due at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connections =
            self.connections
                .values()
                .filter_map(|connection| match &connection.phase {
                    Phase::Stream { relay, .. } => Some(relay.idle_deadline(STREAM_IDLE)),
                    Phase::Listening { .. } => None,
                    Phase::Request
                    | Phase::Route { .. }
                    | Phase::Opening { .. }
                    | Phase::Closing => Some(connection.stream.deadline),
                });
        let incoming = self.incoming.values().map(|incoming| incoming.deadline);
        connections.chain(incoming).min()
    }

    // ----- input -----

    /// A connection of launched app `app` was handed over: the id of its kernel socket. One
    /// over a limit is refused at once.
    pub(crate) fn handle_connection(
        &mut self,
        now: Instant,
        sockets: &mut Sockets,
        app: AppId,
    ) -> SocketId {
        let number = self.next_connection;
        self.next_connection = self.next_connection.wrapping_add(1);
        let socket = sockets.open(Owner::App(number));
        let mut connection = Connection::new(app, socket, now + self.options.request_timeout);
        let limit = if self.connections.len() >= self.options.max_connections {
            Some(Limit::Node(self.options.max_connections))
        } else if self.held_by(app) >= self.options.max_per_app {
            Some(Limit::App(self.options.max_per_app))
        } else {
            None
        };
        if let Some(limit) = limit {
            log::warn!("app {app}: a connection to the app socket refused: {limit}");
            connection.refuse(now, &Refusal::LimitReached(limit));
        }
        self.connections.insert(number, connection);
        sockets.wake(socket);
        socket
    }

    /// What happened on connection `number`'s socket.
    pub(crate) fn handle_socket(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        number: usize,
        event: SocketEvent,
        own_port: &dyn Fn(u16) -> bool,
    ) {
        let Some(connection) = self.connections.get_mut(&number) else {
            return;
        };
        connection.handle(cx, event);
        self.step(cx, sockets, number, own_port);
    }

    /// Routes coming and going: dials waiting on a setup that failed are refused; the streams
    /// over a route that went down are reset, and so are the streams from there that wait.
    pub(crate) fn handle_event(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        event: &Event,
    ) {
        match event {
            Event::RouteFailed { setup, error, .. } => {
                for connection in self.connections.values_mut() {
                    if let Phase::Route { peer, setup: s, .. } = connection.phase {
                        if s == Some(*setup) {
                            let why = NoRoute::Failed(error.clone());
                            connection.refuse(cx.now, &Refusal::NoRoute { peer, why });
                            sockets.wake(connection.stream.socket());
                        }
                    }
                }
            }
            Event::RouteDown { peer, .. } => {
                for connection in self.connections.values_mut() {
                    match connection.phase {
                        // The relay sees the reset at its next step and ends.
                        Phase::Stream {
                            peer: p, handle, ..
                        } if p == *peer => {
                            cx.stack.tcp(handle).abort();
                        }
                        Phase::Opening {
                            peer: p, handle, ..
                        } if p == *peer => {
                            bury(cx.stack, handle, &mut self.graveyard);
                            let why = NoRoute::WentDown;
                            connection.refuse(cx.now, &Refusal::NoRoute { peer: p, why });
                        }
                        _ => continue,
                    }
                    sockets.wake(connection.stream.socket());
                }
                let gone: Vec<u64> = self
                    .incoming
                    .iter()
                    .filter(|(_, incoming)| incoming.peer == *peer)
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    if let Some(incoming) = self.incoming.remove(&id) {
                        bury(cx.stack, incoming.handle, &mut self.graveyard);
                    }
                }
            }
            _ => {}
        }
    }

    // ----- work -----

    /// Takes the streams that arrived on the listeners, resets those that waited too long,
    /// and moves every connection on; call after the stack was polled, and poll it again
    /// afterwards so that what was written is sent.
    pub(crate) fn pump(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        own_port: &dyn Fn(u16) -> bool,
    ) {
        for handle in self.graveyard.drain(..) {
            cx.stack.release(handle);
        }
        if self.connections.is_empty() {
            return;
        }
        self.take_incoming(cx, sockets);
        self.expire_incoming(cx);
        let numbers: Vec<usize> = self.connections.keys().copied().collect();
        for number in numbers {
            self.step(cx, sockets, number, own_port);
        }
    }

    /// Closes every connection and resets every stream (the node stops).
    pub(crate) fn close_all(&mut self, cx: &mut Context<'_>, sockets: &mut Sockets) {
        let numbers: Vec<usize> = self.connections.keys().copied().collect();
        for number in numbers {
            if let Some(connection) = self.connections.remove(&number) {
                self.close(cx, sockets, connection);
            }
        }
        for (_, incoming) in std::mem::take(&mut self.incoming) {
            bury(cx.stack, incoming.handle, &mut self.graveyard);
        }
    }

    /// The streams that arrived on each listener's port: announced to the listener, or reset
    /// when its app holds all it may.
    fn take_incoming(&mut self, cx: &mut Context<'_>, sockets: &mut Sockets) {
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            while let Some((handle, remote)) = cx.stack.poll_accept_on(port) {
                let Some(listener) = self.listeners.get(&port) else {
                    bury(cx.stack, handle, &mut self.graveyard);
                    continue;
                };
                let (app, listening) = (listener.app, listener.connection);
                let peer = cx.node.peer_at(*remote.ip());
                let full = self.held_by(app) >= self.options.max_per_app;
                let Some(peer) = peer.filter(|_| !full) else {
                    log::debug!(
                        "app {app}: a stream from {remote} to port {port} reset ({})",
                        if full {
                            "the app holds all it may"
                        } else {
                            "no route session names its source"
                        }
                    );
                    bury(cx.stack, handle, &mut self.graveyard);
                    continue;
                };
                watch_peer(cx.stack, handle, MESH_TIMEOUT);
                let id = self.next_incoming;
                self.next_incoming += 1;
                self.incoming.insert(
                    id,
                    Incoming {
                        handle,
                        port,
                        app,
                        peer,
                        deadline: cx.now + self.options.accept_timeout,
                    },
                );
                if let Some(connection) = self.connections.get_mut(&listening) {
                    let line = incoming_line(id, &peer, remote.port());
                    connection.stream.queue(line.as_bytes());
                    sockets.wake(connection.stream.socket());
                }
            }
        }
    }

    /// Resets the incoming streams that were not accepted in time.
    fn expire_incoming(&mut self, cx: &mut Context<'_>) {
        let now = cx.now;
        let expired: Vec<u64> = self
            .incoming
            .iter()
            .filter(|(_, incoming)| incoming.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(incoming) = self.incoming.remove(&id) {
                log::debug!(
                    "app {}: incoming stream {id} from {} reset: not accepted within {} s",
                    incoming.app,
                    incoming.peer,
                    self.options.accept_timeout.as_secs()
                );
                bury(cx.stack, incoming.handle, &mut self.graveyard);
            }
        }
    }

    /// Advances connection `number` as far as it goes now, and queues its socket for the I/O
    /// that may be due, or closes it.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        number: usize,
        own_port: &dyn Fn(u16) -> bool,
    ) {
        let Some(mut connection) = self.connections.remove(&number) else {
            return;
        };
        loop {
            let before = std::mem::discriminant(&connection.phase);
            match self.advance(cx, number, &mut connection, own_port) {
                Step::Keep => {}
                Step::Close => {
                    self.close(cx, sockets, connection);
                    return;
                }
            }
            if std::mem::discriminant(&connection.phase) == before {
                break;
            }
        }
        sockets.wake(connection.stream.socket());
        self.connections.insert(number, connection);
    }

    /// One phase's work.
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        number: usize,
        connection: &mut Connection,
        own_port: &dyn Fn(u16) -> bool,
    ) -> Step {
        let now = cx.now;
        match &mut connection.phase {
            Phase::Request => {
                if connection.stream.is_broken() {
                    return Step::Close;
                }
                match parse_request(connection.stream.filled()) {
                    None if connection.stream.is_read_closed() => return Step::Close,
                    None if now >= connection.stream.deadline => {
                        let silent = BadRequest::Silent(self.options.request_timeout);
                        connection.refuse(now, &Refusal::BadRequest(silent));
                    }
                    None => {}
                    Some((Err(refusal), _)) => connection.refuse(now, &refusal),
                    Some((Ok(request), used)) => {
                        connection.stream.consume(used);
                        log::debug!("app {}: {request:?}", connection.app);
                        if let Err(refusal) =
                            self.handle_request(cx, number, connection, request, own_port)
                        {
                            log::debug!("app {}: refused: {refusal}", connection.app);
                            connection.refuse(now, &refusal);
                        }
                    }
                }
            }
            Phase::Route { peer, port, setup } => {
                let (peer, port) = (*peer, *port);
                match cx.node.want_route(now, &peer, None) {
                    Ok(RouteWait::Ready) => {
                        if let Err(refusal) = self.open(cx, connection, peer, port) {
                            connection.refuse(now, &refusal);
                        }
                    }
                    Ok(RouteWait::Started(started)) => *setup = Some(started),
                    Ok(RouteWait::Underway) if now >= connection.stream.deadline => {
                        let why = NoRoute::TimedOut(self.options.dial_timeout);
                        connection.refuse(now, &Refusal::NoRoute { peer, why });
                    }
                    Ok(RouteWait::Underway) => {}
                    Err(error) => {
                        let why = NoRoute::Failed(error);
                        connection.refuse(now, &Refusal::NoRoute { peer, why });
                    }
                }
            }
            Phase::Opening { peer, port, handle } => {
                let (peer, port, handle) = (*peer, *port, *handle);
                let socket = cx.stack.tcp(handle);
                if socket.may_send() {
                    connection.phase = Phase::Stream {
                        peer,
                        handle,
                        relay: connection.stream.relay(now, OK),
                    };
                } else if socket.state() == tcp::State::Closed {
                    bury(cx.stack, handle, &mut self.graveyard);
                    connection.refuse(now, &Refusal::NobodyListening { peer, port });
                } else if now >= connection.stream.deadline {
                    bury(cx.stack, handle, &mut self.graveyard);
                    let after = self.options.dial_timeout;
                    connection.refuse(now, &Refusal::TimedOut { peer, port, after });
                }
            }
            Phase::Listening { .. } => {
                let stream = &connection.stream;
                if !stream.is_open() || stream.output_len() > MAX_LISTENER_OUTPUT {
                    return Step::Close;
                }
            }
            Phase::Stream { handle, relay, .. } => {
                let handle = *handle;
                match relay.progress(now, STREAM_IDLE, cx.stack.tcp(handle)) {
                    Progress::Open => {}
                    Progress::Done => {
                        cx.stack.release(handle);
                        connection.phase = Phase::Closing;
                        return Step::Close;
                    }
                    Progress::Failed(reason) => {
                        log::debug!("app {}: stream closed: {reason}", connection.app);
                        bury(cx.stack, handle, &mut self.graveyard);
                        connection.phase = Phase::Closing;
                        return Step::Close;
                    }
                }
            }
            Phase::Closing => {
                if connection.stream.is_finished(now) {
                    return Step::Close;
                }
            }
        }
        Step::Keep
    }

    /// Answers a request: the connection's next phase is set, or the refusal is returned.
    fn handle_request(
        &mut self,
        cx: &mut Context<'_>,
        number: usize,
        connection: &mut Connection,
        request: AppRequest,
        own_port: &dyn Fn(u16) -> bool,
    ) -> Result<(), Refusal> {
        match request {
            AppRequest::Dial { peer, port } => {
                let builtin_there = cx
                    .node
                    .services_of(&peer)
                    .iter()
                    .any(|entry| entry.port == port && entry.name.builtin().is_some());
                if own_port(port) || builtin_there {
                    return Err(Refusal::PortReserved(port));
                }
                if peer == cx.node.key() {
                    let why = NoRoute::OwnKey;
                    return Err(Refusal::NoRoute { peer, why });
                }
                connection.stream.deadline = cx.now + self.options.dial_timeout;
                connection.phase = Phase::Route {
                    peer,
                    port,
                    setup: None,
                };
                Ok(())
            }
            AppRequest::Listen { port, service } => {
                if own_port(port) {
                    return Err(Refusal::PortReserved(port));
                }
                if self.listeners.contains_key(&port) {
                    return Err(Refusal::PortInUse(port));
                }
                if let Some(service) = &service {
                    if let Some(builtin) = service.builtin() {
                        return Err(Refusal::NotAllowed(NotAllowed::BuiltinService(builtin)));
                    }
                    if self.services().count() >= MAX_APP_SERVICES {
                        return Err(Refusal::LimitReached(Limit::Services(MAX_SERVICES)));
                    }
                }
                // Any node may open streams to an app's port, within what the app may hold;
                // one node, a quarter of it.
                let admission = Admission::any().limit(
                    self.options.max_per_app,
                    self.options.max_per_app.div_ceil(4),
                );
                cx.stack
                    .listen(port, BACKLOG, admission)
                    .map_err(|_| Refusal::LimitReached(Limit::Stack))?;
                if service.is_some() {
                    self.services_version += 1;
                }
                log::info!(
                    "app {} listens on mesh port {port}{}",
                    connection.app,
                    service
                        .as_ref()
                        .map_or_else(String::new, |name| format!(" as service `{name}`"))
                );
                self.listeners.insert(
                    port,
                    Listener {
                        connection: number,
                        app: connection.app,
                        service,
                    },
                );
                connection.stream.queue(OK);
                connection.phase = Phase::Listening { port };
                Ok(())
            }
            AppRequest::Accept { id } => {
                match self.incoming.get(&id) {
                    None => return Err(Refusal::BadRequest(BadRequest::NoIncoming(id))),
                    Some(incoming) if incoming.app != connection.app => {
                        return Err(Refusal::NotAllowed(NotAllowed::OtherAppsStream(id)));
                    }
                    Some(_) => {}
                }
                let Some(incoming) = self.incoming.remove(&id) else {
                    return Err(Refusal::BadRequest(BadRequest::NoIncoming(id)));
                };
                connection.phase = Phase::Stream {
                    peer: incoming.peer,
                    handle: incoming.handle,
                    relay: connection.stream.relay(cx.now, OK),
                };
                Ok(())
            }
        }
    }

    /// Opens a dial's mesh stream; the route to `peer` is ready.
    fn open(
        &mut self,
        cx: &mut Context<'_>,
        connection: &mut Connection,
        peer: NodeKey,
        port: u16,
    ) -> Result<(), Refusal> {
        // The stack refuses only when it is full: the address is a mesh address, the port
        // is not 0.
        let handle = cx
            .stack
            .connect(SocketAddrV6::new(peer.mesh_address(), port, 0, 0))
            .map_err(|_| Refusal::LimitReached(Limit::Stack))?;
        watch_peer(cx.stack, handle, MESH_TIMEOUT);
        connection.phase = Phase::Opening { peer, port, handle };
        Ok(())
    }

    /// Forgets a connection: its mesh stream or listener goes, and its socket is closed.
    fn close(&mut self, cx: &mut Context<'_>, sockets: &mut Sockets, connection: Connection) {
        match connection.phase {
            Phase::Opening { handle, .. } | Phase::Stream { handle, .. } => {
                bury(cx.stack, handle, &mut self.graveyard);
            }
            Phase::Listening { port } => self.stop_listening(cx, port),
            Phase::Request | Phase::Route { .. } | Phase::Closing => {}
        }
        sockets.close(connection.stream.socket());
    }

    /// Stops listening on `port`: the streams that arrived there and wait are reset.
    fn stop_listening(&mut self, cx: &mut Context<'_>, port: u16) {
        let Some(listener) = self.listeners.remove(&port) else {
            return;
        };
        if listener.service.is_some() {
            self.services_version += 1;
        }
        log::info!("app {} stopped listening on mesh port {port}", listener.app);
        while let Some((handle, _)) = cx.stack.poll_accept_on(port) {
            bury(cx.stack, handle, &mut self.graveyard);
        }
        cx.stack.unlisten(port);
        let waiting: Vec<u64> = self
            .incoming
            .iter()
            .filter(|(_, incoming)| incoming.port == port)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(incoming) = self.incoming.remove(&id) {
                bury(cx.stack, incoming.handle, &mut self.graveyard);
            }
        }
    }

    // ----- output -----

    /// The kernel operation connection `number` wants next, if any.
    pub fn next_io(&mut self, stack: &mut MeshStack, number: usize) -> Option<KernelIo> {
        self.connections.get_mut(&number)?.next_io(stack)
    }

    /// Operation `io` (from [`AppSocket::next_io`] just before) of connection `number`, with
    /// its buffer.
    pub fn lend<'a>(
        &'a mut self,
        stack: &'a mut MeshStack,
        number: usize,
        io: KernelIo,
    ) -> Option<SocketOp<'a>> {
        let connection = self.connections.get_mut(&number)?;
        let socket = connection.stream.socket();
        Some(connection.lend(stack, io).on(socket))
    }
}

impl Connection {
    fn new(app: AppId, socket: SocketId, deadline: Instant) -> Connection {
        Connection {
            app,
            stream: LocalStream::new(socket, MAX_LINE, deadline),
            phase: Phase::Request,
        }
    }

    /// Answers with `refusal`; the connection closes once the line is out.
    fn refuse(&mut self, now: Instant, refusal: &Refusal) {
        self.stream.finish(now, &refusal.line());
        self.phase = Phase::Closing;
    }

    /// What the phase wants of the local stream. A listener's input is read only to see it
    /// end.
    fn want(&self) -> Want {
        match self.phase {
            Phase::Request => Want::Handshake,
            Phase::Listening { .. } => Want::Drain,
            Phase::Closing => Want::Finish,
            Phase::Route { .. } | Phase::Opening { .. } | Phase::Stream { .. } => Want::Output,
        }
    }

    /// What happened on the socket.
    fn handle(&mut self, cx: &mut Context<'_>, event: SocketEvent) {
        match &mut self.phase {
            Phase::Stream { handle, relay, .. } => {
                relay.handle(cx.now, event, cx.stack.tcp(*handle))
            }
            _ => self.stream.handle(event),
        }
    }

    /// The kernel operation due next.
    fn next_io(&mut self, stack: &mut MeshStack) -> Option<KernelIo> {
        match &mut self.phase {
            Phase::Stream { handle, relay, .. } => relay.next_io(stack.tcp(*handle)),
            _ => self.stream.next_io(self.want()),
        }
    }

    fn lend<'a>(&'a mut self, stack: &'a mut MeshStack, io: KernelIo) -> KernelOp<'a> {
        let want = self.want();
        match &mut self.phase {
            Phase::Stream { handle, relay, .. } => relay.lend(io, stack.tcp(*handle)),
            _ => self.stream.lend(io, want),
        }
    }
}
