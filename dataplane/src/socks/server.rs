//! The server app on the exit node: it accepts mesh TCP streams on its port, takes each from a
//! node it knows by its route (a stream's source mesh address is the key of a route's other
//! end) and serves only the keys it allows. It reads the target, resolves a name off the event
//! loop, dials with a non-blocking kernel socket, answers the entry one status byte, and relays.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token, Waker};
use nix::errno::Errno;
use smoltcp::socket::tcp;

use super::mesh::{self, MAX_MESH_REQUEST_LEN};
use super::relay::{Progress, Relay};
use super::resolver::{Job, Resolver};
use super::wire::{ReplyCode, Target};
use super::{
    bury, smol_duration, Io, ServerOptions, Slab, Totals, CONNECTION_TOKENS, MESH_TIMEOUT,
};
use crate::api::socks::ServerStatus;
use crate::identity::NodeKey;
use crate::node::Event;
use crate::stack::TcpHandle;

/// Listening sockets kept ready on the port (the stack makes one more for each SYN that arrives).
const BACKLOG: usize = 4;
/// How long a stream may take to send its request, and to close after a failure status.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one stream stands.
#[derive(Debug)]
enum Phase {
    /// Reading the entry's request.
    Request { input: Vec<u8> },
    /// A name is being resolved.
    Resolving { rest: Vec<u8> },
    /// Dialing the target; `candidates` are the addresses still to try after this one.
    Dialing {
        stream: TcpStream,
        candidates: Vec<SocketAddr>,
        rest: Vec<u8>,
    },
    /// A failure status waits for the stream to open before it is sent.
    Answer(ReplyCode),
    /// The status went out and the stream was closed: wait for the close to complete.
    Closing,
    /// Carrying bytes both ways.
    Relay { stream: TcpStream, relay: Relay },
}

#[derive(Debug)]
struct Connection {
    handle: TcpHandle,
    peer: Option<NodeKey>,
    serial: u64,
    phase: Phase,
    writable: bool,
    readable: bool,
    deadline: Instant,
}

/// The server app.
#[derive(Debug)]
pub(super) struct Server {
    options: ServerOptions,
    waker: Arc<Waker>,
    running: bool,
    connections: Slab<Connection>,
    resolver: Option<Resolver>,
    next_serial: u64,
    totals: Totals,
}

enum Outcome {
    Keep,
    Finished,
    Failed,
}

impl Server {
    pub fn new(options: ServerOptions, waker: Arc<Waker>) -> Server {
        Server {
            options,
            waker,
            running: false,
            connections: Slab::default(),
            resolver: None,
            next_serial: 0,
            totals: Totals::default(),
        }
    }

    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    pub fn start(&mut self, io: &mut Io<'_>) -> Result<(), super::SocksError> {
        if self.running {
            return Ok(());
        }
        let port = self.options.port;
        if self.resolver.is_none() {
            let resolver =
                Resolver::new(self.waker.clone()).map_err(super::SocksError::Resolver)?;
            self.resolver = Some(resolver);
        }
        io.stack
            .listen(port, BACKLOG)
            .map_err(|why| super::SocksError::Listen { port, why })?;
        self.running = true;
        log::info!(
            "SOCKS server on mesh port {port}, {} client key(s) allowed",
            self.options.allow.len()
        );
        Ok(())
    }

    pub fn stop(&mut self, io: &mut Io<'_>, graveyard: &mut Vec<TcpHandle>) {
        if !self.running {
            return;
        }
        self.running = false;
        io.stack.unlisten(self.options.port);
        for index in 0..self.connections.slots() {
            self.remove(io, index, graveyard, true);
        }
        self.resolver = None;
        log::info!("SOCKS server on mesh port {} stopped", self.options.port);
    }

    pub fn status(&self, io: &mut Io<'_>) -> ServerStatus {
        let mut totals = self.totals;
        let mut buffered = 0;
        for connection in self.connections.iter() {
            let socket = io.stack.tcp(connection.handle);
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
            refused: totals.refused,
            failed: totals.failed,
            bytes_up: totals.bytes_up,
            bytes_down: totals.bytes_down,
            buffered_bytes: buffered,
        }
    }

    pub fn connection_ready(&mut self, index: usize, readable: bool, writable: bool) {
        if let Some(connection) = self.connections.get_mut(index) {
            connection.readable |= readable;
            connection.writable |= writable;
        }
    }

    pub fn handle_event(&mut self, io: &mut Io<'_>, event: &Event, graveyard: &mut Vec<TcpHandle>) {
        let Event::RouteDown { peer, .. } = event else {
            return;
        };
        for index in 0..self.connections.slots() {
            if self
                .connections
                .get_mut(index)
                .is_some_and(|c| c.peer.as_ref() == Some(peer))
            {
                self.remove(io, index, graveyard, true);
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

    /// Forgets a connection, resetting its mesh stream unless it ended well.
    fn remove(
        &mut self,
        io: &mut Io<'_>,
        index: usize,
        graveyard: &mut Vec<TcpHandle>,
        failed: bool,
    ) {
        let Some(connection) = self.connections.remove(index) else {
            return;
        };
        bury(io.stack, connection.handle, graveyard);
        if failed {
            self.totals.failed += 1;
        }
        match connection.phase {
            Phase::Relay { mut stream, relay } => {
                self.totals.bytes_up += relay.to_kernel_bytes;
                self.totals.bytes_down += relay.to_mesh_bytes;
                let _ = io.registry.deregister(&mut stream);
            }
            Phase::Dialing { mut stream, .. } => {
                let _ = io.registry.deregister(&mut stream);
            }
            _ => {}
        }
    }

    pub fn pump(&mut self, io: &mut Io<'_>, graveyard: &mut Vec<TcpHandle>) {
        // Only this app's port: other apps (the VPN server) accept on theirs.
        while let Some((handle, remote)) = io.stack.poll_accept_on(self.options.port) {
            if !self.running {
                io.stack.tcp(handle).abort();
                graveyard.push(handle);
                continue;
            }
            self.accept(io, handle, remote);
        }
        if let Some(resolver) = &self.resolver {
            let mut answers = Vec::new();
            while let Some(answer) = resolver.poll_answer() {
                answers.push(answer);
            }
            for answer in answers {
                let Some(connection) = self.connections.get_mut(answer.conn) else {
                    continue;
                };
                if connection.serial != answer.serial {
                    continue;
                }
                if let Phase::Resolving { rest } = &mut connection.phase {
                    let rest = std::mem::take(rest);
                    connection.phase = dial(io, answer.conn, answer.addresses, rest);
                    connection.deadline = io.now + self.options.dial_timeout;
                }
            }
        }
        for index in 0..self.connections.slots() {
            let Some(connection) = self.connections.get_mut(index) else {
                continue;
            };
            let outcome = connection.step(io, index, &self.options, self.resolver.as_ref());
            match outcome {
                Outcome::Keep => {}
                Outcome::Finished => self.remove(io, index, graveyard, false),
                Outcome::Failed => self.remove(io, index, graveyard, true),
            }
        }
    }

    fn accept(&mut self, io: &mut Io<'_>, handle: TcpHandle, remote: std::net::SocketAddrV6) {
        let peer = io.peer_at(*remote.ip());
        self.totals.accepted += 1;
        let phase = match peer {
            _ if remote.ip().is_unspecified() => {
                // A listener that was reset before it was accepted.
                Phase::Closing
            }
            Some(peer) if self.options.allow.contains(&peer) => {
                if self.connections.len() >= self.options.max_connections {
                    log::warn!(
                        "SOCKS server: stream from {peer} refused: {} connections open already",
                        self.options.max_connections
                    );
                    Phase::Answer(ReplyCode::GeneralFailure)
                } else {
                    Phase::Request {
                        input: Vec::with_capacity(MAX_MESH_REQUEST_LEN),
                    }
                }
            }
            _ => {
                self.totals.refused += 1;
                match peer {
                    Some(peer) => log::info!("SOCKS server: {peer} is not allowed"),
                    None => log::info!("SOCKS server: stream from unknown {remote} refused"),
                }
                Phase::Answer(ReplyCode::NotAllowed)
            }
        };
        io.stack
            .tcp(handle)
            .set_timeout(Some(smol_duration(MESH_TIMEOUT)));
        self.next_serial += 1;
        self.connections.insert(Connection {
            handle,
            peer,
            serial: self.next_serial,
            phase,
            writable: true,
            readable: true,
            deadline: io.now + REQUEST_TIMEOUT,
        });
    }
}

/// Starts dialing the first of `addresses`; the phase that follows.
fn dial(io: &mut Io<'_>, index: usize, mut addresses: Vec<SocketAddr>, rest: Vec<u8>) -> Phase {
    let mut code = ReplyCode::HostUnreachable;
    addresses.reverse();
    while let Some(address) = addresses.pop() {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                let token = Token(CONNECTION_TOKENS + 2 * index + 1);
                if let Err(error) = io.registry.register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::warn!("SOCKS server: cannot register a connection: {error}");
                    return Phase::Answer(ReplyCode::GeneralFailure);
                }
                addresses.reverse();
                return Phase::Dialing {
                    stream,
                    candidates: addresses,
                    rest,
                };
            }
            Err(error) => {
                log::debug!("SOCKS server: dialing {address}: {error}");
                code = dial_error(&error);
            }
        }
    }
    Phase::Answer(code)
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
    fn step(
        &mut self,
        io: &mut Io<'_>,
        index: usize,
        options: &ServerOptions,
        resolver: Option<&Resolver>,
    ) -> Outcome {
        loop {
            let phase = std::mem::replace(&mut self.phase, Phase::Closing);
            let before = std::mem::discriminant(&phase);
            match self.advance(phase, io, index, options, resolver) {
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
        io: &mut Io<'_>,
        index: usize,
        options: &ServerOptions,
        resolver: Option<&Resolver>,
    ) -> Result<Phase, Outcome> {
        let now = io.now;
        Ok(match phase {
            Phase::Request { mut input } => {
                let socket = io.stack.tcp(self.handle);
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
                        match target {
                            Target::Ip(address) => {
                                self.deadline = now + options.dial_timeout;
                                dial(io, index, vec![address], rest)
                            }
                            Target::Domain(name, port) => {
                                self.deadline = now + options.dial_timeout;
                                match resolver {
                                    Some(resolver) => {
                                        let job = Job {
                                            conn: index,
                                            serial: self.serial,
                                            name,
                                            port,
                                        };
                                        if resolver.submit(job) {
                                            Phase::Resolving { rest }
                                        } else {
                                            log::warn!("SOCKS server: the resolver is busy");
                                            Phase::Answer(ReplyCode::GeneralFailure)
                                        }
                                    }
                                    None => Phase::Answer(ReplyCode::GeneralFailure),
                                }
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
                    Phase::Answer(ReplyCode::HostUnreachable)
                } else {
                    Phase::Resolving { rest }
                }
            }
            Phase::Dialing {
                mut stream,
                candidates,
                rest,
            } => {
                let failed = match stream.take_error() {
                    Ok(Some(error)) | Err(error) => Some(error),
                    Ok(None) => None,
                };
                let timed_out = now >= self.deadline;
                if failed.is_none() && !timed_out {
                    match stream.peer_addr() {
                        Ok(_) => {
                            let socket = io.stack.tcp(self.handle);
                            if socket
                                .send_slice(&mesh::emit_status(ReplyCode::Succeeded))
                                .is_err()
                            {
                                let _ = io.registry.deregister(&mut stream);
                                return Err(Outcome::Failed);
                            }
                            let _ = stream.set_nodelay(true);
                            return Ok(Phase::Relay {
                                stream,
                                relay: Relay::new(now, rest, Vec::new()),
                            });
                        }
                        Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                            return Ok(Phase::Dialing {
                                stream,
                                candidates,
                                rest,
                            });
                        }
                        Err(error) => {
                            let _ = io.registry.deregister(&mut stream);
                            return Ok(self.redial(io, index, candidates, rest, options, &error));
                        }
                    }
                }
                let _ = io.registry.deregister(&mut stream);
                let error = failed.unwrap_or_else(|| io::Error::from(io::ErrorKind::TimedOut));
                let error = if timed_out {
                    io::Error::from_raw_os_error(Errno::ETIMEDOUT as i32)
                } else {
                    error
                };
                self.redial(io, index, candidates, rest, options, &error)
            }
            Phase::Answer(code) => {
                let socket = io.stack.tcp(self.handle);
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
                let socket = io.stack.tcp(self.handle);
                // Whatever the entry still sends is dropped.
                while socket.can_recv() && socket.recv(|buf| (buf.len(), ())).is_ok() {}
                if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
                    || now >= self.deadline
                {
                    return Err(Outcome::Failed);
                }
                Phase::Closing
            }
            Phase::Relay {
                mut stream,
                mut relay,
            } => {
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
                    &mut stream,
                    io.stack.tcp(self.handle),
                );
                match progress {
                    Progress::Open => Phase::Relay { stream, relay },
                    Progress::Done => {
                        self.phase = Phase::Relay { stream, relay };
                        return Err(Outcome::Finished);
                    }
                    Progress::Failed(reason) => {
                        log::debug!("SOCKS server: connection closed: {reason}");
                        self.phase = Phase::Relay { stream, relay };
                        return Err(Outcome::Failed);
                    }
                }
            }
        })
    }

    /// Tries the next candidate address after a failed dial, or answers with `error`'s code.
    fn redial(
        &mut self,
        io: &mut Io<'_>,
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
        self.deadline = io.now + options.dial_timeout;
        dial(io, index, candidates, rest)
    }
}
