//! The dataplane thread: one mio loop that owns the UDP socket, drives the node core and the
//! mesh stack with the clock, and answers the control thread's requests. Everything else in
//! this crate is sans-IO; this is where the syscalls are.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};

use crate::api::socks::SocksApp;
use crate::api::{
    DataplaneEnd, PingReply, Reply, Request, RequestError, RequestId, Response, RouteRow,
    RoutesReply, RuleRow, StatusReply, TransportRow, TransportsReply,
};
use crate::identity::NodeKey;
use crate::node::{Event, Node, NodeOptions};
use crate::outbox::Datagram;
use crate::routing::Rule;
use crate::socks::{Io as SocksIo, Socks, SocksError, SocksOptions};
use crate::stack::MeshStack;
use crate::transport::TransportError;
use crate::vpn::VpnOptions;

mod batch;
mod tunnel;

use batch::{RecvBatch, SendBatch, BATCH};

use tunnel::{VpnApps, TUN_CLIENT, TUN_SERVER};

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
// Tokens 8 and 9 are the VPN apps' TUN devices (`tunnel::TUN_SERVER`, `tunnel::TUN_CLIENT`); 2 and
// from 16 on belong to the SOCKS apps (`socks::CLIENT_LISTENER`, `socks::CONNECTION_TOKENS`).

/// Datagrams read per wake-up before the loop looks at its other work.
const RECEIVE_BUDGET: usize = 1024;
/// Socket buffer size asked for: bursts at line rate fit without loss.
const SOCKET_BUFFER: usize = 8 << 20;
/// How long a route may take from setup request to completed session handshake.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15);
/// Time between the echo requests of one ping.
const PING_INTERVAL: Duration = Duration::from_millis(200);
/// How long the last echo reply may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds of polling the mesh stack per loop turn when its send queue keeps filling up.
const STACK_ROUNDS: usize = 64;

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The UDP socket could not be made or bound.
    #[error("cannot listen on UDP {listen}: {source} (is another skywired using the port? set `listen` in the config)")]
    Bind {
        /// The address asked for.
        listen: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The neighbours in the configuration are not usable.
    #[error("bad neighbour list: {0}")]
    Neighbours(#[from] TransportError),
    /// The event loop could not be set up or failed.
    #[error("event loop: {0}")]
    Poll(#[from] io::Error),
    /// A SOCKS app could not start.
    #[error("{0}")]
    Socks(#[from] SocksError),
}

/// What the dataplane needs to start.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The node core's options.
    pub node: NodeOptions,
    /// The UDP address to bind.
    pub listen: SocketAddr,
    /// The VPN apps (none by default).
    pub vpn: VpnOptions,
    /// The SOCKS apps (none by default).
    pub socks: SocksOptions,
}

/// A route build waiting for its route to be ready.
#[derive(Debug)]
struct PendingBuild {
    request: RequestId,
    setup: u64,
    peer: NodeKey,
    deadline: Instant,
}

/// A ping in progress.
#[derive(Debug)]
struct Ping {
    request: RequestId,
    peer: NodeKey,
    address: Ipv6Addr,
    count: u32,
    first_seq: u16,
    sent_at: Vec<Instant>,
    rtt_ms: Vec<f64>,
    next_send: Instant,
    deadline: Instant,
}

/// The dataplane: its socket, its node and its stack.
#[derive(Debug)]
pub struct Dataplane {
    poll: Poll,
    waker: Arc<Waker>,
    socket: UdpSocket,
    local: SocketAddr,
    node: Node,
    stack: MeshStack,
    started: Instant,
    builds: Vec<PendingBuild>,
    pings: Vec<Ping>,
    next_seq: u16,
    peers_by_address: HashMap<Ipv6Addr, NodeKey>,
    /// Datagrams taken from the node and not yet sent (the socket was full).
    pending: Vec<Datagram>,
    recv_batch: RecvBatch,
    send_batch: SendBatch,
    vpn: VpnApps,
    socks: Socks,
}

impl Dataplane {
    /// Binds the socket and builds the node; nothing runs until [`Dataplane::run`].
    pub fn bind(options: DriverOptions) -> Result<Dataplane, DriverError> {
        let now = Instant::now();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let std_socket = bind_udp(options.listen).map_err(|source| DriverError::Bind {
            listen: options.listen,
            source,
        })?;
        let local = std_socket.local_addr()?;
        if !RecvBatch::enable_gro(std_socket.as_raw_fd()) {
            log::debug!("UDP GRO is not available: datagrams arrive one by one");
        }
        let mut socket = UdpSocket::from_std(std_socket);
        poll.registry()
            .register(&mut socket, UDP, Interest::READABLE | Interest::WRITABLE)?;
        let key = options.node.secret.public();
        let node = Node::new(options.node, now, Box::new(rand_core::OsRng))?;
        let ident = u16::from_be_bytes([key.as_bytes()[0], key.as_bytes()[1]]);
        let mut stack = MeshStack::new(key.mesh_address(), ident, now);
        let mut node = node;
        let mut socks = Socks::new(options.socks, waker.clone());
        socks.start_enabled(&mut SocksIo {
            now,
            registry: poll.registry(),
            stack: &mut stack,
            node: &mut node,
        })?;
        Ok(Dataplane {
            poll,
            waker,
            socket,
            local,
            stack,
            node,
            socks,
            started: now,
            builds: Vec::new(),
            pings: Vec::new(),
            next_seq: 1,
            peers_by_address: HashMap::new(),
            pending: Vec::with_capacity(BATCH),
            recv_batch: RecvBatch::new(),
            send_batch: SendBatch::new(),
            vpn: VpnApps::new(options.vpn),
        })
    }

    /// The waker the control thread uses to signal requests.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs the loop until a [`Request::Shutdown`] arrives or the control thread goes away.
    pub fn run(mut self, end: DataplaneEnd) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        log::info!(
            "dataplane up: node {} at {}, UDP {}",
            self.node.key(),
            self.node.address(),
            self.local
        );
        self.vpn_autostart(Instant::now());
        let mut backlog = false;
        let mut tun_backlog = (false, false);
        loop {
            let now = Instant::now();
            let timeout = if backlog || tun_backlog.0 || tun_backlog.1 {
                Duration::ZERO
            } else {
                self.next_deadline(now).saturating_duration_since(now)
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let mut readable = backlog;
            let (mut tun_server, mut tun_client) = tun_backlog;
            let mut shutdown = None;
            for event in events.iter() {
                match event.token() {
                    UDP => readable |= event.is_readable(),
                    TUN_SERVER => tun_server |= event.is_readable(),
                    TUN_CLIENT => tun_client |= event.is_readable(),
                    WAKER => loop {
                        match end.requests.try_recv() {
                            Ok((id, Request::Shutdown)) => shutdown = Some(id),
                            Ok((id, request)) => {
                                let now = Instant::now();
                                if let Some(reply) = self.handle_request(now, id, request) {
                                    end.replies.send(id, reply);
                                }
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                shutdown = Some(0);
                                break;
                            }
                        }
                    },
                    token => {
                        let readable = event.is_readable() || event.is_read_closed();
                        let writable = event.is_writable() || event.is_write_closed();
                        let error = event.is_error();
                        self.socks
                            .handle_ready(token, readable || error, writable || error);
                    }
                }
            }
            backlog = readable && self.receive(RECEIVE_BUDGET)?;
            tun_backlog = (
                tun_server && self.vpn_read(true, false),
                tun_client && self.vpn_read(false, true),
            );
            if tun_server || tun_client {
                self.flush()?;
            }
            self.step(Instant::now(), &end);
            if let Some(id) = shutdown {
                self.shutdown(Instant::now());
                end.replies.send(id, Ok(Reply::Stopped));
                return Ok(());
            }
        }
    }

    /// Reads datagrams, a batch per syscall, until the socket is empty or the budget is
    /// spent; says whether more may be waiting.
    fn receive(&mut self, budget: usize) -> io::Result<bool> {
        let fd = self.socket.as_raw_fd();
        let mut received = 0;
        while received < budget {
            match self.recv_batch.recv(fd) {
                Ok(count) => {
                    let now = Instant::now();
                    for index in 0..count {
                        if let Some((from, datagrams)) = self.recv_batch.get(index) {
                            for datagram in datagrams {
                                self.node.handle_datagram(now, from, datagram);
                            }
                        }
                    }
                    self.flush()?;
                    received += count.max(1);
                    // A short batch emptied the socket; anything newer raises a new event.
                    if count < BATCH {
                        return Ok(false);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                    log::debug!("UDP receive: {error}");
                    received += 1;
                }
            }
        }
        Ok(true)
    }

    /// Timers, events, the stack, and everything waiting to be sent.
    fn step(&mut self, now: Instant, end: &DataplaneEnd) {
        if self.node.poll_timeout().0 <= now {
            self.node.handle_timeout(now);
        }
        while let Some(event) = self.node.poll_event() {
            self.handle_event(now, event, end);
        }
        self.vpn_flush();
        self.drive_pings(now);
        self.expire_builds(now, end);
        self.service_stack(now);
        self.socks.pump(&mut SocksIo {
            now,
            registry: self.poll.registry(),
            stack: &mut self.stack,
            node: &mut self.node,
        });
        self.vpn_poll(now);
        self.service_stack(now);
        while let Some((from, seq)) = self.stack.poll_pong() {
            self.record_pong(now, from, seq);
        }
        self.finish_pings(now, end);
        if let Err(error) = self.flush() {
            log::warn!("UDP send: {error}");
        }
    }

    /// Polls the mesh stack and carries what it sends, again while its send queue fills up.
    fn service_stack(&mut self, now: Instant) {
        for _ in 0..STACK_ROUNDS {
            let full = self.stack.poll(now);
            while let Some((dst, packet)) = self.stack.poll_transmit() {
                match self.peer_by_address(dst) {
                    Some(peer) => {
                        if let Err(error) = self.node.send_to(&peer, &packet) {
                            log::debug!("mesh stack packet to {dst} not sent: {error}");
                        }
                    }
                    None => log::debug!("mesh stack packet to {dst}: no route"),
                }
            }
            if let Err(error) = self.flush() {
                log::warn!("UDP send: {error}");
            }
            if !full {
                return;
            }
        }
    }

    fn next_deadline(&mut self, now: Instant) -> Instant {
        let mut next = self.node.poll_timeout().0;
        if let Some(at) = self.socks.poll_timeout() {
            next = next.min(at);
        }
        if let Some(delay) = self.stack.poll_delay(now) {
            next = next.min(now + delay);
        }
        for ping in &self.pings {
            next = next.min(ping.deadline);
            if ping.sent_at.len() < ping.count as usize {
                next = next.min(ping.next_send);
            }
        }
        for build in &self.builds {
            next = next.min(build.deadline);
        }
        if let Some(vpn) = self.vpn_next_deadline() {
            next = next.min(vpn);
        }
        next
    }

    /// Sends what the node queued, a batch per syscall, until the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let local = self.local;
        loop {
            while self.pending.len() < BATCH {
                match self.node.poll_transmit() {
                    Some(datagram) => self.pending.push(datagram),
                    None => break,
                }
            }
            if self.pending.is_empty() {
                return Ok(());
            }
            match self
                .send_batch
                .send(fd, &self.pending, |to| socket_address(local, to))
            {
                Ok(0) => return Ok(()),
                Ok(sent) => {
                    for datagram in self.pending.drain(..sent.min(self.pending.len())) {
                        self.node.recycle(datagram);
                    }
                }
                // Writable readiness brings the loop back.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // The first datagram was refused (an unreachable endpoint): drop it.
                    let datagram = self.pending.remove(0);
                    log::debug!("UDP send to {}: {error}", datagram.to);
                    self.node.recycle(datagram);
                }
            }
        }
    }

    fn peer_by_address(&mut self, address: Ipv6Addr) -> Option<NodeKey> {
        if let Some(peer) = self.peers_by_address.get(&address) {
            return Some(*peer);
        }
        let peer = self
            .node
            .routes()
            .map(|(peer, _)| *peer)
            .find(|peer| peer.mesh_address() == address)?;
        self.peers_by_address.insert(address, peer);
        Some(peer)
    }

    fn handle_event(&mut self, now: Instant, event: Event, end: &DataplaneEnd) {
        if !matches!(event, Event::Packet { .. } | Event::TunnelPacket { .. }) {
            self.socks.handle_event(
                &mut SocksIo {
                    now,
                    registry: self.poll.registry(),
                    stack: &mut self.stack,
                    node: &mut self.node,
                },
                &event,
            );
        }
        match event {
            Event::Packet { packet, .. } => {
                if !self.stack.can_receive() {
                    self.service_stack(now);
                }
                self.stack.receive(packet);
            }
            Event::TunnelPacket { peer, packet } => self.vpn_tunnel_packet(peer, &packet),
            Event::RouteReady { peer } => {
                log::info!("route to {peer} is ready");
                self.peers_by_address.insert(peer.mesh_address(), peer);
                self.vpn_route_ready(&peer);
                let row = self
                    .node
                    .routes()
                    .find(|(key, _)| **key == peer)
                    .map(|(key, route)| route_row(key, route));
                let (done, waiting): (Vec<_>, Vec<_>) =
                    self.builds.drain(..).partition(|build| build.peer == peer);
                self.builds = waiting;
                for build in done {
                    let reply = match &row {
                        Some(row) => Ok(Reply::RouteBuilt(row.clone())),
                        None => Err(RequestError::RouteWentDown { peer }),
                    };
                    end.replies.send(build.request, reply);
                }
            }
            Event::RouteFailed { setup, peer, error } => {
                self.vpn_route_failed(now, setup, &error.to_string());
                let (done, waiting): (Vec<_>, Vec<_>) = self
                    .builds
                    .drain(..)
                    .partition(|build| build.setup == setup);
                self.builds = waiting;
                for build in done {
                    end.replies.send(
                        build.request,
                        Err(RequestError::RouteFailed {
                            peer,
                            error: error.clone(),
                        }),
                    );
                }
            }
            Event::RouteDown { peer, reason } => {
                log::info!("route to {peer} is down: {reason}");
                self.peers_by_address.remove(&peer.mesh_address());
                self.vpn_route_down(now, &peer);
                for ping in self.pings.iter_mut().filter(|ping| ping.peer == peer) {
                    ping.deadline = now;
                }
            }
            Event::LinkUp { neighbour } => log::info!("link to {neighbour} is up"),
            Event::LinkDown { neighbour } => log::warn!("link to {neighbour} is down"),
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        id: RequestId,
        request: Request,
    ) -> Option<Response> {
        match request {
            Request::Status => Some(Ok(Reply::Status(self.status(now)))),
            Request::ListTransports => Some(Ok(Reply::Transports(TransportsReply {
                transports: self.transport_rows(now),
            }))),
            Request::ListRoutes => Some(Ok(Reply::Routes(self.routes_reply(now)))),
            Request::BuildRoute { mut path } => {
                let own = self.node.key();
                if path.first() != Some(&own) {
                    path.insert(0, own);
                }
                let peer = *path.last()?;
                match self.node.build_route(now, &path) {
                    Ok(setup) => {
                        self.builds.push(PendingBuild {
                            request: id,
                            setup,
                            peer,
                            deadline: now + BUILD_TIMEOUT,
                        });
                        None
                    }
                    Err(error) => Some(Err(RequestError::RouteFailed { peer, error })),
                }
            }
            Request::RemoveRoute { peer } => Some(if self.node.remove_route(now, &peer) {
                Ok(Reply::RouteRemoved { peer })
            } else {
                Err(RequestError::NoRoute { peer })
            }),
            Request::PingNode { peer, count } => {
                if !self
                    .node
                    .routes()
                    .any(|(key, route)| *key == peer && route.ready)
                {
                    return Some(Err(RequestError::NoReadyRoute { peer }));
                }
                let first_seq = self.next_seq;
                self.next_seq = self
                    .next_seq
                    .wrapping_add(count.min(u32::from(u16::MAX)) as u16);
                self.pings.push(Ping {
                    request: id,
                    peer,
                    address: peer.mesh_address(),
                    count,
                    first_seq,
                    sent_at: Vec::new(),
                    rtt_ms: Vec::new(),
                    next_send: now,
                    deadline: now + PING_INTERVAL * count + PING_TIMEOUT,
                });
                None
            }
            Request::VpnStart { app } => Some(match self.vpn_start(now, app) {
                Ok(()) => Ok(Reply::Vpn(Box::new(self.vpn_status()))),
                Err(error) => Err(RequestError::app(error)),
            }),
            Request::VpnStop { app } => Some(if self.vpn_stop(now, app) {
                Ok(Reply::Vpn(Box::new(self.vpn_status())))
            } else {
                Err(RequestError::VpnNotRunning(app))
            }),
            Request::VpnStatus => Some(Ok(Reply::Vpn(Box::new(self.vpn_status())))),
            Request::SocksStart { app } => Some(self.socks_request(now, Some(app), true)),
            Request::SocksStop { app } => Some(self.socks_request(now, Some(app), false)),
            Request::SocksStatus => Some(self.socks_request(now, None, false)),
            Request::Shutdown => Some(Ok(Reply::Stopped)),
        }
    }

    /// Starts or stops SOCKS apps (`change`: the apps, and whether to start), then tells
    /// their status.
    fn socks_request(
        &mut self,
        now: Instant,
        change: Option<Option<SocksApp>>,
        start: bool,
    ) -> Response {
        let mut io = SocksIo {
            now,
            registry: self.poll.registry(),
            stack: &mut self.stack,
            node: &mut self.node,
        };
        let outcome = match change {
            Some(app) if start => self.socks.start(&mut io, app),
            Some(app) => self.socks.stop(&mut io, app),
            None => Ok(()),
        };
        match outcome {
            Ok(()) => Ok(Reply::Socks(self.socks.status(&mut io))),
            Err(error) => Err(RequestError::app(error)),
        }
    }

    fn drive_pings(&mut self, now: Instant) {
        for ping in &mut self.pings {
            if ping.sent_at.len() < ping.count as usize && now >= ping.next_send {
                let seq = ping.first_seq.wrapping_add(ping.sent_at.len() as u16);
                if self.stack.send_ping(ping.address, seq) {
                    ping.sent_at.push(now);
                    ping.next_send = now + PING_INTERVAL;
                    if ping.sent_at.len() == ping.count as usize {
                        ping.deadline = now + PING_TIMEOUT;
                    }
                }
            }
        }
    }

    fn record_pong(&mut self, now: Instant, from: Ipv6Addr, seq: u16) {
        for ping in self.pings.iter_mut().filter(|ping| ping.address == from) {
            let index = usize::from(seq.wrapping_sub(ping.first_seq));
            if let Some(sent) = ping.sent_at.get(index) {
                ping.rtt_ms
                    .push(now.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            }
        }
    }

    fn finish_pings(&mut self, now: Instant, end: &DataplaneEnd) {
        let (done, running): (Vec<_>, Vec<_>) = self
            .pings
            .drain(..)
            .partition(|ping| now >= ping.deadline || ping.rtt_ms.len() >= ping.count as usize);
        self.pings = running;
        for ping in done {
            end.replies.send(
                ping.request,
                Ok(Reply::Ping(PingReply {
                    peer: ping.peer,
                    address: ping.address,
                    sent: ping.sent_at.len() as u32,
                    rtt_ms: ping.rtt_ms,
                })),
            );
        }
    }

    fn expire_builds(&mut self, now: Instant, end: &DataplaneEnd) {
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .builds
            .drain(..)
            .partition(|build| now >= build.deadline);
        self.builds = waiting;
        for build in done {
            end.replies.send(
                build.request,
                Err(RequestError::HandshakeTimeout {
                    peer: build.peer,
                    after: BUILD_TIMEOUT,
                }),
            );
        }
    }

    /// Tears down every route this node built and sends the teardowns.
    fn shutdown(&mut self, now: Instant) {
        self.vpn_shutdown(now);
        let _ = self.socks.stop(
            &mut SocksIo {
                now,
                registry: self.poll.registry(),
                stack: &mut self.stack,
                node: &mut self.node,
            },
            None,
        );
        self.service_stack(now);
        let peers: Vec<NodeKey> = self
            .node
            .routes()
            .filter(|(_, route)| route.initiator)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in peers {
            self.node.remove_route(now, &peer);
        }
        if let Err(error) = self.flush() {
            log::warn!("UDP send during shutdown: {error}");
        }
        log::info!("dataplane stopped");
    }

    fn status(&self, now: Instant) -> StatusReply {
        let transports = self.node.transports();
        StatusReply {
            key: self.node.key(),
            mesh_address: self.node.address(),
            listen: self.local,
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            transports: transports.len(),
            links_up: transports
                .info()
                .filter(|info| self.node.link_state(info.id) == "up")
                .count(),
            routes: self.node.routes().count(),
            rules: self.node.table().len(),
        }
    }

    fn transport_rows(&self, now: Instant) -> Vec<TransportRow> {
        self.node
            .transports()
            .info()
            .map(|info| TransportRow {
                key: info.key,
                endpoint: info.endpoint,
                link: self.node.link_state(info.id),
                handshake_secs_ago: info.last_handshake.map(|age| age.as_secs_f64()),
                last_seen_secs_ago: info
                    .last_received
                    .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                rtt_ms: info.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                tx_bytes: info.tx_bytes,
                rx_bytes: info.rx_bytes,
                tx_packets: info.tx_packets,
                rx_packets: info.rx_packets,
            })
            .collect()
    }

    fn routes_reply(&self, now: Instant) -> RoutesReply {
        let transports = self.node.transports();
        let name = |id| transports.key_of(id);
        let mut routes: Vec<RouteRow> = self
            .node
            .routes()
            .map(|(peer, route)| route_row(peer, route))
            .collect();
        // In the order users read keys: by their text.
        routes.sort_by_cached_key(|route| route.peer.to_string());
        let rules = self
            .node
            .table()
            .iter()
            .map(|(id, entry)| {
                let (action, to, next_id) = match entry.rule {
                    Rule::Forward { transport, next_id } => {
                        ("forward", name(transport), Some(next_id.get()))
                    }
                    Rule::Consume { peer } => ("consume", Some(peer), None),
                };
                RuleRow {
                    id: id.get(),
                    action,
                    from: name(entry.ingress),
                    to,
                    next_id,
                    packets: entry.packets,
                    bytes: entry.bytes,
                    expires_in_secs: entry
                        .expires_at
                        .saturating_duration_since(now)
                        .as_secs_f64(),
                }
            })
            .collect();
        RoutesReply { routes, rules }
    }
}

/// An IPv4 endpoint reached through a dual-stack IPv6 socket is IPv4-mapped.
fn socket_address(local: SocketAddr, to: SocketAddr) -> SocketAddr {
    match (local, to) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        _ => to,
    }
}

fn route_row(peer: &NodeKey, route: &crate::node::EndRoute) -> RouteRow {
    RouteRow {
        peer: *peer,
        path: route.path.clone(),
        initiator: route.initiator,
        ready: route.ready,
        out_id: route.out_id.get(),
        in_id: route.in_id.get(),
    }
}

/// A non-blocking UDP socket on `listen`; an IPv6 wildcard also takes IPv4 (dual stack).
/// The buffers are raised as far as allowed: past `net.core.rmem_max` only with CAP_NET_ADMIN.
fn bind_udp(listen: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = match listen {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match listen {
        SocketAddr::V6(v6) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
        SocketAddr::V4(v4) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
    }
    raise_buffer(&fd, sockopt::RcvBufForce, sockopt::RcvBuf, "receive");
    raise_buffer(&fd, sockopt::SndBufForce, sockopt::SndBuf, "send");
    Ok(std::net::UdpSocket::from(fd))
}

fn raise_buffer<F, P>(fd: &OwnedFd, forced: F, plain: P, which: &str)
where
    F: socket::SetSockOpt<Val = usize>,
    P: socket::SetSockOpt<Val = usize> + socket::GetSockOpt<Val = usize> + Copy,
{
    if socket::setsockopt(fd, forced, &SOCKET_BUFFER).is_ok() {
        return;
    }
    let _ = socket::setsockopt(fd, plain, &SOCKET_BUFFER);
    // The kernel reports double what it keeps for bookkeeping.
    let got = socket::getsockopt(fd, plain).unwrap_or(0) / 2;
    log::info!(
        "UDP {which} buffer is {} KiB (wanted {} KiB; raising net.core.{}mem_max or CAP_NET_ADMIN allows more)",
        got / 1024,
        SOCKET_BUFFER / 1024,
        if which == "receive" { "r" } else { "w" }
    );
}
