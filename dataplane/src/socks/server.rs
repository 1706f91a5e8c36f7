//! The server app on the exit node: it accepts mesh TCP streams on its port, takes each from a
//! node it knows by its route session (a stream's source mesh address names the node) and
//! serves only the keys it allows. It reads the target, has a name resolved, has the driver
//! dial the addresses its dial policy permits, answers the entry one status byte, and relays.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use smoltcp::socket::tcp;

use super::mesh::{self, MAX_MESH_REQUEST_LEN};
use super::relay::{KernelIo, Progress, Relay};
use super::wire::{ReplyCode, Target};
use super::{bury, watch_peer, DialPolicy, Outcome, ServerOptions, Slab, Totals, MESH_TIMEOUT};
use crate::api::socks::ServerStatus;
use crate::identity::NodeKey;
use crate::node::Event;
use crate::service::sockets::{Owner, Sockets};
use crate::service::{Context, Lookup, LookupId, SocketEvent, SocketId, SocketOp};
use crate::stack::{Admission, MeshStack, TcpHandle};

/// Listening sockets kept ready on the port (the stack makes one more for each SYN that arrives).
const BACKLOG: usize = 4;
/// How long a stream may take to send its request, and to close after a failure status.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Names being resolved at most; more are answered "general failure".
const MAX_LOOKUPS: usize = 256;
/// Addresses tried per name, in turn.
const MAX_ADDRESSES: usize = 4;

/// Where one stream stands.
#[derive(Debug)]
enum Phase {
    /// Reading the entry's request.
    Request { input: Vec<u8> },
    /// A name is being resolved.
    Resolving { rest: Vec<u8> },
    /// Dialing the target through `socket`; `candidates` are the addresses still to try
    /// after this one, and `outcome` how the dial went, once the driver has said.
    Dialing {
        socket: SocketId,
        candidates: Vec<SocketAddr>,
        rest: Vec<u8>,
        outcome: Option<io::Result<()>>,
    },
    /// A failure status waits for the stream to open before it is sent.
    Answer(ReplyCode),
    /// The status went out and the stream was closed: wait for the close to complete.
    Closing,
    /// Carrying bytes both ways.
    Relay { socket: SocketId, relay: Relay },
}

#[derive(Debug)]
struct Connection {
    handle: TcpHandle,
    peer: Option<NodeKey>,
    serial: u64,
    phase: Phase,
    deadline: Instant,
}

/// The server app.
#[derive(Debug)]
pub(super) struct Server {
    options: ServerOptions,
    running: bool,
    connections: Slab<Connection>,
    dialer: Dialer,
    next_serial: u64,
    totals: Totals,
}

impl Server {
    pub fn new(options: ServerOptions) -> Server {
        Server {
            options,
            running: false,
            connections: Slab::default(),
            dialer: Dialer::default(),
            next_serial: 0,
            totals: Totals::default(),
        }
    }

    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The addresses of the host's interfaces, as they are now.
    pub fn set_own_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.dialer.own_addresses = addresses;
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Sets whether it starts with the node; nothing else of a running app changes.
    pub fn set_enabled(&mut self, enabled: bool) {
        self.options.enabled = enabled;
    }

    pub fn start(&mut self, cx: &mut Context<'_>) -> Result<(), super::SocksError> {
        if self.running {
            return Ok(());
        }
        let port = self.options.port;
        let admission = Admission::keys(&self.options.allow).limit(
            self.options.max_connections,
            self.options.max_connections_per_key,
        );
        cx.stack
            .listen(port, BACKLOG, admission)
            .map_err(|why| super::SocksError::Listen { port, why })?;
        self.running = true;
        log::info!(
            "SOCKS server on mesh port {port}, {} client key(s) allowed",
            self.options.allow.len()
        );
        Ok(())
    }

    pub fn stop(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        if !self.running {
            return;
        }
        self.running = false;
        cx.stack.unlisten(self.options.port);
        for index in 0..self.connections.slots() {
            self.remove(cx, sockets, index, graveyard, true);
        }
        self.dialer.resolving.clear();
        self.dialer.lookups.clear();
        log::info!("SOCKS server on mesh port {} stopped", self.options.port);
    }

    pub fn status(&self, cx: &mut Context<'_>) -> ServerStatus {
        let mut totals = self.totals;
        let mut buffered = 0;
        for connection in self.connections.iter() {
            let socket = cx.stack.tcp(connection.handle);
            buffered += socket.recv_queue() + socket.send_queue();
            if let Phase::Relay { relay, .. } = &connection.phase {
                totals.bytes_up += relay.to_kernel_bytes;
                totals.bytes_down += relay.to_mesh_bytes;
            }
        }
        ServerStatus {
            state: if self.running { "running" } else { "stopped" },
            port: self.options.port,
            allowed: self.options.allow.len(),
            connections: self.connections.len(),
            accepted: totals.accepted,
            refused: totals.refused + cx.stack.syn_refusals_on(self.options.port).total(),
            denied: self.dialer.denied,
            failed: totals.failed,
            bytes_up: totals.bytes_up,
            bytes_down: totals.bytes_down,
            buffered_bytes: buffered,
        }
    }

    pub fn handle_event(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        event: &Event,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        let Event::RouteDown { peer, .. } = event else {
            return;
        };
        for index in 0..self.connections.slots() {
            if self
                .connections
                .get_mut(index)
                .is_some_and(|c| c.peer.as_ref() == Some(peer))
            {
                self.remove(cx, sockets, index, graveyard, true);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connections
            .iter()
            .map(|connection| match &connection.phase {
                Phase::Relay { relay, .. } => relay.idle_deadline(self.options.idle_timeout),
                _ => connection.deadline,
            })
            .min()
    }

    /// The next name to resolve.
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.dialer.lookups.pop_front()
    }

    /// Forgets a connection, resetting its mesh stream unless it ended well, and closing its
    /// kernel socket.
    fn remove(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        index: usize,
        graveyard: &mut Vec<TcpHandle>,
        failed: bool,
    ) {
        let Some(connection) = self.connections.remove(index) else {
            return;
        };
        bury(cx.stack, connection.handle, graveyard);
        if failed {
            self.totals.failed += 1;
        }
        match connection.phase {
            Phase::Relay { socket, relay } => {
                self.totals.bytes_up += relay.to_kernel_bytes;
                self.totals.bytes_down += relay.to_mesh_bytes;
                sockets.close(socket);
            }
            Phase::Dialing { socket, .. } => sockets.close(socket),
            Phase::Resolving { .. } => {
                self.dialer.resolving.remove(&LookupId(connection.serial));
            }
            _ => {}
        }
    }

    pub fn pump(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
    ) {
        // Only this app's port: other apps (the VPN server) accept on theirs.
        while let Some((handle, remote)) = cx.stack.poll_accept_on(self.options.port) {
            if !self.running {
                cx.stack.tcp(handle).abort();
                graveyard.push(handle);
                continue;
            }
            self.accept(cx, handle, remote);
        }
        for index in 0..self.connections.slots() {
            self.step(cx, sockets, graveyard, index);
        }
    }

    /// Advances connection `index` and queues its kernel socket for the I/O that may be due.
    fn step(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
        index: usize,
    ) {
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        match connection.step(cx, sockets, &mut self.dialer, index, &self.options) {
            Outcome::Keep => {
                if let Some(socket) = connection.socket() {
                    sockets.wake(socket);
                }
            }
            Outcome::Finished => self.remove(cx, sockets, index, graveyard, false),
            Outcome::Failed => self.remove(cx, sockets, index, graveyard, true),
        }
    }

    /// What happened on the kernel socket of connection `index`.
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
        match &mut connection.phase {
            Phase::Dialing { outcome, .. } => {
                if let SocketEvent::Connected(result) = event {
                    *outcome = Some(result);
                }
            }
            Phase::Relay { relay, .. } => {
                relay.handle(cx.now, event, cx.stack.tcp(connection.handle))
            }
            _ => return,
        }
        self.step(cx, sockets, graveyard, index);
    }

    /// A name was resolved (to nothing, when it did not resolve).
    pub fn handle_resolved(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        graveyard: &mut Vec<TcpHandle>,
        lookup: LookupId,
        mut addresses: Vec<SocketAddr>,
    ) {
        let Some(index) = self.dialer.resolving.remove(&lookup) else {
            return;
        };
        let Some(connection) = self.connections.get_mut(index) else {
            return;
        };
        if let Phase::Resolving { rest } = &mut connection.phase {
            let rest = std::mem::take(rest);
            connection.deadline = cx.now + self.options.dial_timeout;
            connection.phase = if addresses.is_empty() {
                Phase::Answer(ReplyCode::HostUnreachable)
            } else {
                let policy = &self.options.dial_policy;
                addresses = self
                    .dialer
                    .permitted(policy, connection.peer.as_ref(), addresses);
                addresses.truncate(MAX_ADDRESSES);
                dial(sockets, index, addresses, rest)
            };
        }
        self.step(cx, sockets, graveyard, index);
    }

    /// The kernel operation connection `index` wants next, if any.
    pub fn next_io(&mut self, stack: &mut MeshStack, index: usize) -> Option<KernelIo> {
        let connection = self.connections.get_mut(index)?;
        match &mut connection.phase {
            Phase::Relay { relay, .. } => relay.next_io(stack.tcp(connection.handle)),
            _ => None,
        }
    }

    /// Operation `io` of connection `index` with its buffer.
    pub fn lend<'a>(
        &'a mut self,
        stack: &'a mut MeshStack,
        index: usize,
        io: KernelIo,
    ) -> Option<SocketOp<'a>> {
        let connection = self.connections.get_mut(index)?;
        let Phase::Relay { socket, relay } = &mut connection.phase else {
            return None;
        };
        Some(relay.lend(io, stack.tcp(connection.handle)).on(*socket))
    }

    fn accept(&mut self, cx: &mut Context<'_>, handle: TcpHandle, remote: SocketAddrV6) {
        let peer = cx.node.peer_at(*remote.ip());
        self.totals.accepted += 1;
        let phase = match peer {
            _ if remote.ip().is_unspecified() => {
                // A listener that was reset before it was accepted.
                Phase::Closing
            }
            // The stack admitted the stream within max_connections and the key's share.
            Some(peer) if self.options.allow.contains(&peer) => Phase::Request {
                input: Vec::with_capacity(MAX_MESH_REQUEST_LEN),
            },
            _ => {
                self.totals.refused += 1;
                match peer {
                    Some(peer) => log::info!("SOCKS server: {peer} is not allowed"),
                    None => log::info!("SOCKS server: stream from unknown {remote} refused"),
                }
                Phase::Answer(ReplyCode::NotAllowed)
            }
        };
        watch_peer(cx.stack, handle, MESH_TIMEOUT);
        self.next_serial += 1;
        self.connections.insert(Connection {
            handle,
            peer,
            serial: self.next_serial,
            phase,
            deadline: cx.now + REQUEST_TIMEOUT,
        });
    }
}

/// What a connection's step borrows from the server, beside the connections: where it puts
/// the name it needs resolved, and the host's addresses that the dial policy checks targets
/// against.
#[derive(Debug, Default)]
struct Dialer {
    /// Names for the driver to resolve, in turn.
    lookups: VecDeque<Lookup>,
    /// The connections whose name is being resolved, by lookup.
    resolving: HashMap<LookupId, usize>,
    /// The addresses of the host's interfaces, never dialled unless allowed explicitly.
    own_addresses: Vec<IpAddr>,
    /// Requests answered "not allowed" because no address of their target may be dialled.
    denied: u64,
}

impl Dialer {
    /// The `candidates` that `policy` permits, in order; a request left with none is counted
    /// as denied.
    fn permitted(
        &mut self,
        policy: &DialPolicy,
        peer: Option<&NodeKey>,
        mut candidates: Vec<SocketAddr>,
    ) -> Vec<SocketAddr> {
        candidates.retain(
            |candidate| match policy.check(candidate.ip(), &self.own_addresses) {
                Ok(()) => true,
                Err(denial) => {
                    log::debug!(
                        "SOCKS server: not dialling {candidate} for {peer:?}: {} is {denial}",
                        candidate.ip()
                    );
                    false
                }
            },
        );
        if candidates.is_empty() {
            self.denied += 1;
        }
        candidates
    }
}

/// Asks for a stream to the first of `addresses`; the phase that follows. With none left (the
/// dial policy denied them all), the answer is "not allowed".
fn dial(
    sockets: &mut Sockets,
    index: usize,
    mut addresses: Vec<SocketAddr>,
    rest: Vec<u8>,
) -> Phase {
    if addresses.is_empty() {
        return Phase::Answer(ReplyCode::NotAllowed);
    }
    let address = addresses.remove(0);
    Phase::Dialing {
        socket: sockets.connect(Owner::Server(index), address),
        candidates: addresses,
        rest,
        outcome: None,
    }
}

/// The reply that tells a client why dialing failed.
fn dial_error(error: &io::Error) -> ReplyCode {
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ECONNREFUSED) => ReplyCode::ConnectionRefused,
        Some(Errno::ENETUNREACH) => ReplyCode::NetworkUnreachable,
        Some(Errno::EHOSTUNREACH | Errno::ETIMEDOUT) => ReplyCode::HostUnreachable,
        Some(Errno::EACCES | Errno::EPERM) => ReplyCode::NotAllowed,
        _ => ReplyCode::GeneralFailure,
    }
}

impl Connection {
    /// The kernel socket the connection holds, if any.
    fn socket(&self) -> Option<SocketId> {
        match &self.phase {
            Phase::Dialing { socket, .. } | Phase::Relay { socket, .. } => Some(*socket),
            _ => None,
        }
    }

    fn step(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        dialer: &mut Dialer,
        index: usize,
        options: &ServerOptions,
    ) -> Outcome {
        loop {
            let phase = std::mem::replace(&mut self.phase, Phase::Closing);
            let before = std::mem::discriminant(&phase);
            match self.advance(phase, cx, sockets, dialer, index, options) {
                Ok(next) => {
                    let changed = std::mem::discriminant(&next) != before;
                    self.phase = next;
                    if !changed {
                        return Outcome::Keep;
                    }
                }
                Err(outcome) => return outcome,
            }
        }
    }

    fn advance(
        &mut self,
        phase: Phase,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        dialer: &mut Dialer,
        index: usize,
        options: &ServerOptions,
    ) -> Result<Phase, Outcome> {
        let now = cx.now;
        Ok(match phase {
            Phase::Request { mut input } => {
                let socket = cx.stack.tcp(self.handle);
                let mut buf = [0u8; MAX_MESH_REQUEST_LEN];
                let room = MAX_MESH_REQUEST_LEN.saturating_sub(input.len());
                if let Ok(read) = socket.recv_slice(&mut buf[..room]) {
                    input.extend_from_slice(&buf[..read]);
                }
                // A stream just accepted is still in SYN-RECEIVED, where smoltcp says it may not
                // receive yet.
                let open = socket.may_recv() || socket.state() == tcp::State::SynReceived;
                match mesh::parse_request(&input) {
                    Ok(Some((target, len))) => {
                        let rest = input.split_off(len);
                        log::debug!("SOCKS server: CONNECT {target} for {:?}", self.peer);
                        self.deadline = now + options.dial_timeout;
                        match target {
                            Target::Ip(address) => {
                                let permitted = dialer.permitted(
                                    &options.dial_policy,
                                    self.peer.as_ref(),
                                    vec![address],
                                );
                                dial(sockets, index, permitted, rest)
                            }
                            Target::Domain(_, _) if dialer.resolving.len() >= MAX_LOOKUPS => {
                                log::warn!("SOCKS server: the resolver is busy");
                                Phase::Answer(ReplyCode::GeneralFailure)
                            }
                            Target::Domain(name, port) => {
                                let id = LookupId(self.serial);
                                dialer.resolving.insert(id, index);
                                dialer.lookups.push_back(Lookup { id, name, port });
                                Phase::Resolving { rest }
                            }
                        }
                    }
                    Ok(None) if open && now < self.deadline => Phase::Request { input },
                    Ok(None) => return Err(Outcome::Failed),
                    Err(error) => {
                        log::debug!("SOCKS server: bad request: {error}");
                        Phase::Answer(error.reply_code())
                    }
                }
            }
            Phase::Resolving { rest } => {
                if now >= self.deadline {
                    dialer.resolving.remove(&LookupId(self.serial));
                    Phase::Answer(ReplyCode::HostUnreachable)
                } else {
                    Phase::Resolving { rest }
                }
            }
            Phase::Dialing {
                socket,
                candidates,
                rest,
                outcome,
            } => match outcome {
                Some(Ok(())) => {
                    let mesh_socket = cx.stack.tcp(self.handle);
                    if mesh_socket
                        .send_slice(&mesh::emit_status(ReplyCode::Succeeded))
                        .is_err()
                    {
                        sockets.close(socket);
                        return Err(Outcome::Failed);
                    }
                    Phase::Relay {
                        socket,
                        relay: Relay::new(now, rest, Vec::new()),
                    }
                }
                Some(Err(error)) => {
                    sockets.close(socket);
                    self.redial(cx, sockets, index, candidates, rest, options, &error)
                }
                None if now >= self.deadline => {
                    sockets.close(socket);
                    let error = io::Error::from_raw_os_error(Errno::ETIMEDOUT as i32);
                    self.redial(cx, sockets, index, candidates, rest, options, &error)
                }
                None => Phase::Dialing {
                    socket,
                    candidates,
                    rest,
                    outcome: None,
                },
            },
            Phase::Answer(code) => {
                let socket = cx.stack.tcp(self.handle);
                if socket.may_send() {
                    let _ = socket.send_slice(&mesh::emit_status(code));
                    socket.close();
                    self.deadline = now + CLOSE_TIMEOUT;
                    Phase::Closing
                } else if socket.state() == tcp::State::Closed || now >= self.deadline {
                    return Err(Outcome::Failed);
                } else {
                    Phase::Answer(code)
                }
            }
            Phase::Closing => {
                let socket = cx.stack.tcp(self.handle);
                // Whatever the entry still sends is dropped.
                while socket.can_recv() && socket.recv(|buf| (buf.len(), ())).is_ok() {}
                if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
                    || now >= self.deadline
                {
                    return Err(Outcome::Failed);
                }
                Phase::Closing
            }
            Phase::Relay { socket, mut relay } => {
                let progress = relay.progress(now, options.idle_timeout, cx.stack.tcp(self.handle));
                match progress {
                    Progress::Open => Phase::Relay { socket, relay },
                    Progress::Done => {
                        self.phase = Phase::Relay { socket, relay };
                        return Err(Outcome::Finished);
                    }
                    Progress::Failed(reason) => {
                        log::debug!("SOCKS server: connection closed: {reason}");
                        self.phase = Phase::Relay { socket, relay };
                        return Err(Outcome::Failed);
                    }
                }
            }
        })
    }

    /// Tries the next candidate address after a failed dial, or answers with `error`'s code.
    #[allow(clippy::too_many_arguments)]
    fn redial(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        index: usize,
        candidates: Vec<SocketAddr>,
        rest: Vec<u8>,
        options: &ServerOptions,
        error: &io::Error,
    ) -> Phase {
        log::debug!("SOCKS server: dial failed: {error}");
        if candidates.is_empty() {
            return Phase::Answer(dial_error(error));
        }
        self.deadline = cx.now + options.dial_timeout;
        dial(sockets, index, candidates, rest)
    }
}
