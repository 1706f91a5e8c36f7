//! The kernel TCP sockets the service asked for (the SOCKS apps' listener, their local
//! connections and their connections to targets), held under the service's ids, with a mio
//! token each. This is where their system calls are: the service's operations are done here,
//! and what happens on the sockets goes back to it as events.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::service::{Service, SocketEvent, SocketId, SocketOp};

/// Tokens from here on are the sockets, by id.
const SOCKET_TOKENS: usize = 16;
/// Connections accepted per wake-up and listener before the loop looks at its other work.
const ACCEPT_BUDGET: usize = 64;

#[derive(Debug)]
enum Socket {
    Listener(TcpListener),
    /// A connection being made: its first writable or error event says how it went.
    Connecting(TcpStream),
    Stream(TcpStream),
}

/// The sockets, by id.
#[derive(Debug, Default)]
pub(super) struct KernelSockets {
    sockets: Vec<Option<Socket>>,
    /// Listeners that had connections left when their budget ran out.
    accept_backlog: Vec<SocketId>,
}

impl KernelSockets {
    /// The socket id of an event's token, when the token is a socket's.
    pub(super) fn socket_of(token: Token) -> Option<SocketId> {
        let index = token.0.checked_sub(SOCKET_TOKENS)?;
        Some(SocketId(u32::try_from(index).ok()?))
    }

    fn token(socket: SocketId) -> Token {
        Token(SOCKET_TOKENS + socket.index())
    }

    fn insert(&mut self, socket: SocketId, entry: Socket) {
        let index = socket.index();
        if self.sockets.len() <= index {
            self.sockets.resize_with(index + 1, || None);
        }
        self.sockets[index] = Some(entry);
    }

    fn get_mut(&mut self, socket: SocketId) -> Option<&mut Socket> {
        self.sockets.get_mut(socket.index())?.as_mut()
    }

    /// Whether a listener has connections left to accept.
    pub(super) fn has_backlog(&self) -> bool {
        !self.accept_backlog.is_empty()
    }

    /// Does `op`; returns its answer, `None` for a close, and for a connect until the
    /// connection is made or fails.
    pub(super) fn execute(
        &mut self,
        registry: &Registry,
        op: SocketOp<'_>,
    ) -> Option<(SocketId, SocketEvent)> {
        match op {
            SocketOp::Listen { socket, address } => Some((
                socket,
                SocketEvent::Listening(self.listen(registry, socket, address)),
            )),
            SocketOp::Connect { socket, address } => self
                .connect(registry, socket, address)
                .err()
                .map(|error| (socket, SocketEvent::Connected(Err(error)))),
            SocketOp::Read { socket, buf } => {
                let result = match self.get_mut(socket) {
                    Some(Socket::Stream(stream)) => retry(|| stream.read(buf)),
                    _ => Err(not_connected()),
                };
                Some((socket, SocketEvent::Read(result)))
            }
            SocketOp::Write { socket, bytes } => {
                let result = match self.get_mut(socket) {
                    Some(Socket::Stream(stream)) => retry(|| stream.write(bytes)),
                    _ => Err(not_connected()),
                };
                Some((socket, SocketEvent::Written(result)))
            }
            SocketOp::Shutdown { socket } => {
                let result = match self.get_mut(socket) {
                    Some(Socket::Stream(stream)) => stream.shutdown(Shutdown::Write),
                    _ => Err(not_connected()),
                };
                Some((socket, SocketEvent::Shut(result)))
            }
            SocketOp::Close { socket } => {
                self.close(registry, socket);
                None
            }
        }
    }

    fn listen(
        &mut self,
        registry: &Registry,
        socket: SocketId,
        address: SocketAddr,
    ) -> io::Result<SocketAddr> {
        let mut listener = TcpListener::bind(address)?;
        let local = listener.local_addr()?;
        registry.register(&mut listener, Self::token(socket), Interest::READABLE)?;
        self.insert(socket, Socket::Listener(listener));
        Ok(local)
    }

    fn connect(
        &mut self,
        registry: &Registry,
        socket: SocketId,
        address: SocketAddr,
    ) -> io::Result<()> {
        let mut stream = TcpStream::connect(address)?;
        registry.register(
            &mut stream,
            Self::token(socket),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.insert(socket, Socket::Connecting(stream));
        Ok(())
    }

    fn close(&mut self, registry: &Registry, socket: SocketId) {
        let Some(entry) = self.sockets.get_mut(socket.index()).and_then(Option::take) else {
            return;
        };
        let _ = match entry {
            Socket::Listener(mut listener) => registry.deregister(&mut listener),
            Socket::Connecting(mut stream) | Socket::Stream(mut stream) => {
                registry.deregister(&mut stream)
            }
        };
        self.accept_backlog.retain(|listener| *listener != socket);
    }

    /// What a mio event on `socket` means for the service.
    pub(super) fn handle_event(
        &mut self,
        service: &mut Service,
        now: Instant,
        socket: SocketId,
        event: &Event,
    ) {
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match self
            .sockets
            .get_mut(socket.index())
            .and_then(Option::as_mut)
        {
            Some(Socket::Listener(_)) if !self.accept_backlog.contains(&socket) => {
                self.accept_backlog.push(socket);
            }
            Some(Socket::Listener(_)) => {}
            Some(Socket::Connecting(stream)) => {
                let Some(result) = connect_result(stream) else {
                    return;
                };
                if result.is_ok() {
                    let _ = stream.set_nodelay(true);
                    if let Some(entry) = self.sockets.get_mut(socket.index()) {
                        if let Some(Socket::Connecting(stream)) = entry.take() {
                            *entry = Some(Socket::Stream(stream));
                        }
                    }
                }
                service.handle_socket(now, socket, SocketEvent::Connected(result));
            }
            Some(Socket::Stream(_)) => {
                if readable {
                    service.handle_socket(now, socket, SocketEvent::Readable);
                }
                if writable {
                    service.handle_socket(now, socket, SocketEvent::Writable);
                }
            }
            // An event for a socket closed in this wake-up.
            None => {}
        }
    }

    /// Accepts what waits on the listeners, up to a budget each.
    pub(super) fn accept(&mut self, registry: &Registry, service: &mut Service, now: Instant) {
        let listeners = std::mem::take(&mut self.accept_backlog);
        for listener in listeners {
            if self.accept_from(registry, service, now, listener) {
                self.accept_backlog.push(listener);
            }
        }
    }

    /// Accepts up to [`ACCEPT_BUDGET`] connections on `listener`; says whether more may wait.
    fn accept_from(
        &mut self,
        registry: &Registry,
        service: &mut Service,
        now: Instant,
        listener: SocketId,
    ) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(Socket::Listener(socket)) = self.get_mut(listener) else {
                return false;
            };
            let (mut stream, from) = match socket.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors and the like: try again at the next event.
                    log::warn!("accept: {error}");
                    return false;
                }
            };
            let Some(id) = service.handle_accepted(now, listener, from) else {
                continue;
            };
            if let Err(error) = registry.register(
                &mut stream,
                Self::token(id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("cannot watch an accepted connection: {error}");
                service.handle_socket(now, id, SocketEvent::Read(Err(error)));
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.insert(id, Socket::Stream(stream));
        }
        true
    }
}

/// How a connection being made went, once it has: `None` while it is still being made.
fn connect_result(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(error)) | Err(error) => return Some(Err(error)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => None,
        Err(error) => Some(Err(error)),
    }
}

/// Runs a read or a write again when a signal interrupted it.
fn retry(mut call: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

fn not_connected() -> io::Error {
    io::ErrorKind::NotConnected.into()
}
