//! The dataplane thread: one mio loop that owns every descriptor (the UDP socket, the TUN
//! The dataplane thread: one mio loop that owns every descriptor (the UDP socket, the TUN
//! devices, the SOCKS apps' kernel sockets, the launched apps' app socket connections, the
//! waker) and every blocking step (the host thread that runs `ip` and writes files, the store
//! thread that keeps the messenger's logs, the resolver threads), feeds the service what comes
//! in with the clock, and does the I/O it asks for. Everything else in this crate is sans-IO;
//! this is where the syscalls are.

use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};

use crate::api::app_socket::AppConnection;
use crate::api::vpn::VpnApp;
use crate::api::{DataplaneEnd, ReplySender, Request};
use crate::app_socket::AppSocketOptions;
use crate::messenger::MessengerOptions;
use crate::node::NodeOptions;
use crate::outbox::Datagram;
use crate::service::{HostOp, HostResult, Service, ServiceOptions, SocketEvent};
use crate::socks::{SocksError, SocksOptions};
use crate::transport::TransportError;
use crate::vpn::VpnOptions;

mod batch;
mod host;
mod interfaces;
mod resolver;
pub(crate) mod routes;
mod sockets;
mod store;
mod tun;
mod wakeups;

use batch::{RecvBatch, SendBatch, BATCH};
use host::HostThread;
use interfaces::AddressWatch;
use resolver::Resolver;
use sockets::KernelSockets;
use store::StoreThread;
use tun::{Tuns, TUN_CLIENT, TUN_SERVER};
use wakeups::{Wake, Wakeups};

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
const INTERFACES: Token = Token(2);
// Tokens 8 and 9 are the TUN devices (`tun::TUN_SERVER`, `tun::TUN_CLIENT`); from 16 on they
// are the kernel sockets (`sockets::KernelSockets`).

/// Datagrams handled per wake-up before the loop looks at its other work (a `recvmmsg` with
/// GRO brings dozens in each of its messages).
const RECEIVE_BUDGET: usize = 1024;
/// Datagrams handled before what they set off goes out: relayed datagrams, and the answers
/// of the mesh stack and the apps (acknowledgements above all). One `recvmmsg` with GRO can
/// bring a whole TCP window (hundreds of datagrams); handled in one piece, the window would
/// cross the chain of nodes as one burst, each node idle until the one before has done all.
const TURN_DATAGRAMS: usize = 32;
/// Socket buffer size asked for: bursts at line rate fit without loss.
const SOCKET_BUFFER: usize = 8 << 20;
/// Rounds of service polls and output draining per wake-up while the service has work due at
/// once (its mesh stack's send queue kept filling up, or socket work was left over).
const STEP_ROUNDS: usize = 16;
/// Kernel-socket operations done per drain, so that one busy socket cannot starve the rest.
const SOCKET_OP_BUDGET: usize = 4096;

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
    /// The host thread (TUN and route changes, the lease file) could not be started.
    #[error("cannot start the host thread: {0} (is the process out of threads?)")]
    HostThread(io::Error),
    /// The store thread (the messenger's logs) could not be started.
    #[error("cannot start the store thread: {0} (is the process out of threads?)")]
    StoreThread(io::Error),
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
    /// The messenger (none by default).
    pub messenger: MessengerOptions,
}

/// The dataplane: its descriptors and threads, and the service they serve.
#[derive(Debug)]
pub struct Dataplane {
    poll: Poll,
    waker: Arc<Waker>,
    socket: UdpSocket,
    local: SocketAddr,
    service: Service,
    /// Datagrams taken from the service and not yet sent (the socket was full).
    pending: Vec<Datagram>,
    recv_batch: RecvBatch,
    send_batch: SendBatch,
    tuns: Tuns,
    sockets: KernelSockets,
    host: HostThread,
    store: StoreThread,
    resolver: Resolver,
    /// Tells of changes to the host's addresses; `None` when it could not be opened.
    address_watch: Option<AddressWatch>,
    /// Where replies go, once the loop runs.
    replies: Option<ReplySender>,
    wakeups: Wakeups,
}

impl Dataplane {
    /// Binds the socket, builds the service and starts the apps the configuration starts;
    /// the loop runs from [`Dataplane::run`].
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
        let client_device = options.vpn.client.as_ref().map(|client| client.tun.clone());
        let host = HostThread::start(options.vpn.state_dir.clone(), client_device, waker.clone())
            .map_err(DriverError::HostThread)?;
        let store = StoreThread::start(waker.clone()).map_err(DriverError::StoreThread)?;
        let service = Service::new(
            ServiceOptions {
                node: options.node,
                vpn: options.vpn,
                socks: options.socks,
                messenger: options.messenger,
                app_socket: AppSocketOptions::default(),
            },
            local,
            now,
            Box::new(rand_core::OsRng),
        )?;
        let address_watch = AddressWatch::open(poll.registry(), INTERFACES)
            .map_err(|error| {
                log::warn!("cannot watch the host's addresses ({error}): the SOCKS server and the VPN client know them as they were at start")
            })
            .ok();
        let mut dataplane = Dataplane {
            resolver: Resolver::new(waker.clone()),
            address_watch,
            poll,
            waker,
            socket,
            local,
            service,
            pending: Vec::with_capacity(BATCH),
            recv_batch: RecvBatch::new(),
            send_batch: SendBatch::new(),
            tuns: Tuns::default(),
            sockets: KernelSockets::default(),
            host,
            store,
            replies: None,
            wakeups: Wakeups::default(),
        };
        dataplane.read_interfaces();
        dataplane.service.start(now)?;
        dataplane.drain(now);
        if let Some(error) = dataplane.service.take_socks_error() {
            return Err(error.into());
        }
        Ok(dataplane)
    }

    /// The waker the control thread uses to signal requests.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs the loop until a shutdown request has been carried out or the control thread goes
    /// away.
    pub fn run(mut self, end: DataplaneEnd) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        log::info!(
            "dataplane up: node {} at {}, UDP {}",
            self.service.node().key(),
            self.service.node().address(),
            self.local
        );
        self.replies = Some(end.replies.clone());
        let mut udp_backlog = false;
        loop {
            let now = Instant::now();
            let (deadline, reason) = self.service.poll_timeout(now);
            let backlog = udp_backlog || self.tuns.has_backlog() || self.sockets.has_backlog();
            let timeout = if backlog {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(now)
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            let mut wake = Wake {
                backlog,
                ..Wake::default()
            };
            let mut udp_readable = udp_backlog;
            for event in events.iter() {
                match event.token() {
                    UDP => {
                        wake.datagrams = true;
                        udp_readable |= event.is_readable();
                    }
                    TUN_SERVER => {
                        wake.tun = true;
                        self.tuns.set_readable(VpnApp::Server);
                    }
                    TUN_CLIENT => {
                        wake.tun = true;
                        self.tuns.set_readable(VpnApp::Client);
                    }
                    WAKER => wake.waker = true,
                    INTERFACES => {
                        if let Some(watch) = &self.address_watch {
                            watch.drain();
                        }
                        self.read_interfaces();
                    }
                    token => {
                        if let Some(socket) = KernelSockets::socket_of(token) {
                            wake.sockets = true;
                            self.sockets
                                .handle_event(&mut self.service, now, socket, event);
                        }
                    }
                }
            }
            if !udp_readable {
                // The socket's readiness is edge-triggered: with no event, nothing has come
                // since a read last found it empty.
                self.service.set_input_read_until(now);
            }
            if events.is_empty() && !backlog {
                wake.timer = Some(reason);
            }
            self.wakeups.count(&wake);
            if wake.waker {
                self.take_requests(now, &end);
            }
            self.take_answers(now);
            self.sockets
                .accept(self.poll.registry(), &mut self.service, now);
            udp_backlog = udp_readable && self.receive(RECEIVE_BUDGET);
            self.tuns.read(now, &mut self.service);
            self.flush();
            self.step(Instant::now());
            if self.service.is_stopped() {
                self.stop();
                return Ok(());
            }
        }
    }

    /// Hands the service the host's interface addresses as they are now.
    fn read_interfaces(&mut self) {
        match interfaces::read() {
            Ok(addresses) => self.service.handle_interfaces(addresses),
            Err(error) => log::warn!("cannot read the host's addresses: {error}"),
        }
    }

    /// Hands the control thread's requests to the service, and takes the app connections it
    /// hands over; a control thread that has gone stops the node.
    fn take_requests(&mut self, now: Instant, end: &DataplaneEnd) {
        loop {
            match end.requests.try_recv() {
                Ok((_, Request::AppConnection(connection))) => {
                    self.adopt_app_connection(now, connection);
                }
                Ok((id, request)) => self.service.handle_request(now, id, request),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.service.shutdown(now);
                    return;
                }
            }
        }
    }

    /// Holds a launched app's connection to the app socket under the id the service gives it,
    /// or closes it when the service takes none.
    fn adopt_app_connection(&mut self, now: Instant, connection: AppConnection) {
        let AppConnection { app, stream } = connection;
        let Some(socket) = self.service.handle_app_connection(now, app) else {
            return;
        };
        if let Err(error) = self.sockets.adopt(self.poll.registry(), socket, stream) {
            log::warn!("app {app}: cannot watch its app socket connection: {error}");
            self.service
                .handle_socket(now, socket, SocketEvent::Read(Err(error)));
        }
    }

    /// Hands the host thread's, the store thread's and the resolver's answers to the service.
    fn take_answers(&mut self, now: Instant) {
        while let Some(answer) = self.host.poll_answer() {
            self.service.handle_host_result(now, answer);
        }
        while let Some(answer) = self.store.poll_answer() {
            self.service.handle_store_result(now, answer);
        }
        while let Some((lookup, addresses)) = self.resolver.poll_answer() {
            self.service.handle_resolved(now, lookup, addresses);
        }
    }

    /// Reads datagrams, a batch per syscall, until the socket is empty or `budget` datagrams
    /// were handled; says whether more may be waiting. What every [`TURN_DATAGRAMS`] of them
    /// set off goes out before the next are handled.
    fn receive(&mut self, budget: usize) -> bool {
        let fd = self.socket.as_raw_fd();
        let mut received = 0;
        while received < budget {
            let reading = Instant::now();
            match self.recv_batch.recv(fd) {
                Ok(count) => {
                    // A short batch emptied the socket: what came before this read is handled
                    // once the batch is.
                    if count < BATCH {
                        self.service.set_input_read_until(reading);
                    }
                    let now = Instant::now();
                    let mut unanswered = 0;
                    for index in 0..count {
                        let mut number = 0;
                        while let Some((from, datagram)) = self.recv_batch.datagram(index, number) {
                            self.service.handle_datagram(now, from, datagram);
                            number += 1;
                            received += 1;
                            unanswered += 1;
                            if unanswered == TURN_DATAGRAMS {
                                self.step(now);
                                unanswered = 0;
                            }
                        }
                    }
                    if unanswered > 0 {
                        self.step(now);
                    }
                    // A short batch emptied the socket; anything newer raises a new event.
                    if count < BATCH {
                        return false;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.service.set_input_read_until(reading);
                    return false;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                    log::debug!("UDP receive: {error}");
                    received += 1;
                }
            }
        }
        true
    }

    /// Lets the service work, and does what it asks, again while it has work due at once.
    fn step(&mut self, now: Instant) {
        for _ in 0..STEP_ROUNDS {
            self.service.poll(now);
            self.drain(now);
            if self.service.poll_timeout(now).0 > now {
                return;
            }
        }
    }

    /// Does everything the service asks for: datagrams, TUN frames, socket operations, name
    /// lookups, host changes, message-store operations, replies.
    fn drain(&mut self, now: Instant) {
        self.flush();
        while let Some((app, frame)) = self.service.poll_tun_write() {
            self.tuns.write(app, frame);
        }
        for _ in 0..SOCKET_OP_BUDGET {
            let Some(op) = self.service.poll_socket_op() else {
                break;
            };
            if let Some((socket, event)) = self.sockets.execute(self.poll.registry(), op) {
                self.service.handle_socket(now, socket, event);
            }
        }
        while let Some(lookup) = self.service.poll_lookup() {
            self.resolver.submit(lookup);
        }
        while let Some(op) = self.service.poll_host_op() {
            if let Some(answer) = self.apply_host_op(op) {
                self.service.handle_host_result(now, answer);
            }
        }
        while let Some(op) = self.service.poll_store_op() {
            if let Some(answer) = self.store.submit(op) {
                self.service.handle_store_result(now, answer);
            }
        }
        if let Some(replies) = &self.replies {
            while let Some((id, reply)) = self.service.poll_reply() {
                replies.send(id, reply);
            }
        }
        self.flush();
    }

    /// Makes a host change: those on descriptors this thread holds at once (the answer comes
    /// back), the rest on the host thread.
    fn apply_host_op(&mut self, op: HostOp) -> Option<HostResult> {
        match op {
            HostOp::OpenTun { app, name } => Some(HostResult::TunOpened {
                app,
                result: self.tuns.open(self.poll.registry(), app, &name),
            }),
            HostOp::CloseTun { app } => {
                self.tuns.close(self.poll.registry(), app);
                None
            }
            HostOp::MarkDatagrams(mark) => {
                if let Err(error) = socket::setsockopt(&self.socket, sockopt::Mark, &mark) {
                    log::warn!("cannot mark the node's UDP datagrams ({error}): the tunnel may carry its own transports");
                }
                None
            }
            op => self.host.submit(op),
        }
    }

    /// Sends what the service queued, a batch per syscall, until the socket is full; what the
    /// socket does not take waits for its writable readiness.
    fn flush(&mut self) {
        let fd = self.socket.as_raw_fd();
        let local = self.local;
        loop {
            while self.pending.len() < BATCH {
                match self.service.poll_transmit() {
                    Some(datagram) => self.pending.push(datagram),
                    None => break,
                }
            }
            if self.pending.is_empty() {
                return;
            }
            match self
                .send_batch
                .send(fd, &self.pending, |to| socket_address(local, to))
            {
                Ok(0) => return,
                Ok(sent) => {
                    for datagram in self.pending.drain(..sent.min(self.pending.len())) {
                        self.service.recycle(datagram);
                    }
                }
                // Writable readiness brings the loop back.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // The first datagram was refused (an unreachable endpoint): drop it.
                    let datagram = self.pending.remove(0);
                    log::debug!("UDP send to {}: {error}", datagram.to);
                    self.service.recycle(datagram);
                }
            }
        }
    }

    /// The service has stopped: the last replies go out once the host thread has finished.
    fn stop(&mut self) {
        self.host.finish();
        self.store.finish();
        if let Some(replies) = &self.replies {
            while let Some((id, reply)) = self.service.poll_reply() {
                replies.send(id, reply);
            }
        }
        log::info!("dataplane stopped after {}", self.wakeups.summary());
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
