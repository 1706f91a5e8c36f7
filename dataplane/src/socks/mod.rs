//! The SOCKS apps, built on the node's mesh stack (smoltcp): the client app on the entry node
//! offers a local SOCKS5 port and carries each connection as a mesh TCP stream, inside the
//! route session, to the server app on an exit node, which dials the target. The kernel
//! sockets on both ends are the driver's: the apps name them by id (in the service's table of
//! kernel sockets) and ask for their I/O. This module owns both apps' options, status and
//! connections; `wire` and `mesh` are their sans-IO message formats and `relay` the byte pump
//! between the two kinds of stream (which the app socket's streams use too).

mod client;
pub mod mesh;
mod policy;
pub mod relay;
mod server;
pub mod wire;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::api::socks::{SocksApp, SocksStatus};
use crate::identity::NodeKey;
use crate::node::Event;
use crate::service::sockets::{Owner, Sockets};
use crate::service::{Context, Lookup, LookupId, SocketEvent, SocketId, SocketOp};
use crate::stack::{MeshStack, TcpHandle};

use client::Client;
pub use policy::{Denial, DenyReason, DialPolicy};
use relay::KernelIo;
use server::Server;

/// The mesh TCP port the server app listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 1080;
/// The client app's local address unless configured otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// The client app (entry node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Started with the dataplane, or only by `socks start`.
    pub enabled: bool,
    /// The local TCP address SOCKS5 clients connect to.
    pub listen: SocketAddr,
    /// The exit node.
    pub exit: NodeKey,
    /// The mesh TCP port of the exit's server app.
    pub exit_port: u16,
    /// The nodes the route to the exit goes through after this one, the exit last or left
    /// out; `None` for a path the node chooses itself and rebuilds over another when it
    /// breaks. A route to the exit built by other means (`build_route`) serves as well.
    pub path: Option<Vec<NodeKey>>,
    /// How long a local client may take to send its greeting and request.
    pub handshake_timeout: Duration,
    /// How long the route, the mesh stream and the exit's dial may take together.
    pub connect_timeout: Duration,
    /// A relayed connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections at most; more are closed at once.
    pub max_connections: usize,
}

impl ClientOptions {
    /// Defaults for everything but the exit.
    pub fn new(exit: NodeKey) -> ClientOptions {
        ClientOptions {
            enabled: true,
            listen: DEFAULT_LISTEN,
            exit,
            exit_port: DEFAULT_PORT,
            path: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(600),
            max_connections: 512,
        }
    }

    /// The configured path after this node, ending with the exit; `None` when the node
    /// chooses it.
    pub fn route_path(&self) -> Option<Vec<NodeKey>> {
        let mut path = self.path.clone()?;
        if path.last() != Some(&self.exit) {
            path.push(self.exit);
        }
        Some(path)
    }
}

/// The server app (exit node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Started with the dataplane, or only by `socks start`.
    pub enabled: bool,
    /// The mesh TCP port it listens on.
    pub port: u16,
    /// The client nodes it serves; nobody else.
    pub allow: Vec<NodeKey>,
    /// Which target addresses it dials.
    pub dial_policy: DialPolicy,
    /// How long dialing a target may take (each resolved address in turn).
    pub dial_timeout: Duration,
    /// A relayed connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections at most, streams still opening included; more are reset at their SYN.
    pub max_connections: usize,
    /// Connections one client node may have at most, streams still opening included; more
    /// are reset at their SYN.
    pub max_connections_per_key: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            enabled: true,
            port: DEFAULT_PORT,
            allow: Vec::new(),
            dial_policy: DialPolicy::default(),
            dial_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_connections: 512,
            max_connections_per_key: 512,
        }
    }
}

/// Which SOCKS apps this node has: none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocksOptions {
    /// The client app, if this node is an entry.
    pub client: Option<ClientOptions>,
    /// The server app, if this node is an exit.
    pub server: Option<ServerOptions>,
}

/// Why a SOCKS app could not start.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// The app is not in the configuration.
    #[error("no socks.{0} section in the config: add one (see config.yaml) and reload")]
    NotConfigured(&'static str),
    /// The client's local port could not be bound.
    #[error("cannot listen on {listen} for SOCKS clients: {source} (is the port taken? set socks.client.listen)")]
    Bind {
        /// The address asked for.
        listen: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// The mesh stack would not listen on the server's port.
    #[error("cannot listen on mesh port {port}: {why}")]
    Listen {
        /// The port.
        port: u16,
        /// What the stack said.
        why: crate::stack::StackError,
    },
}

/// Both apps.
#[derive(Debug)]
pub struct Socks {
    client: Option<Client>,
    server: Option<Server>,
    /// The addresses of the host's interfaces, which the server app does not dial.
    host_addresses: Vec<IpAddr>,
    /// Mesh sockets aborted or closed during the last pump: released at the next, once the
    /// stack has been polled and has sent their reset.
    graveyard: Vec<TcpHandle>,
}

impl Socks {
    /// The apps as configured; none runs until [`Socks::start`].
    pub fn new(options: SocksOptions, now: Instant) -> Socks {
        Socks {
            client: options.client.map(|options| Client::new(options, now)),
            server: options.server.map(Server::new),
            host_addresses: Vec::new(),
            graveyard: Vec::new(),
        }
    }

    /// The addresses of the host's interfaces, as they are now: the server app never dials
    /// them unless its dial policy allows them explicitly.
    pub fn set_host_addresses(&mut self, addresses: Vec<IpAddr>) {
        if let Some(server) = self.server.as_mut() {
            server.set_own_addresses(addresses.clone());
        }
        self.host_addresses = addresses;
    }

    /// Starts the apps whose `enabled` is set. The client runs once the driver has bound its
    /// port: [`Socks::take_start_error`] tells whether it could not.
    pub(crate) fn start_enabled(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
    ) -> Result<(), SocksError> {
        if let Some(server) = self.server.as_mut().filter(|s| s.options().enabled) {
            server.start(cx)?;
        }
        if let Some(client) = self.client.as_mut().filter(|c| c.options().enabled) {
            client.start(cx, sockets);
        }
        Ok(())
    }

    /// Starts `app`, or every configured app; one already running goes on. The client runs
    /// once the driver has bound its port.
    pub(crate) fn start(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        app: Option<SocksApp>,
    ) -> Result<(), SocksError> {
        let mut started = false;
        if matches!(app, None | Some(SocksApp::Server)) {
            if let Some(server) = self.server.as_mut() {
                server.start(cx)?;
                started = true;
            } else if app.is_some() {
                return Err(SocksError::NotConfigured("server"));
            }
        }
        if matches!(app, None | Some(SocksApp::Client)) {
            if let Some(client) = self.client.as_mut() {
                client.start(cx, sockets);
                started = true;
            } else if app.is_some() {
                return Err(SocksError::NotConfigured("client"));
            }
        }
        if started {
            Ok(())
        } else {
            Err(SocksError::NotConfigured("client or socks.server"))
        }
    }

    /// Whether no app waits for the driver to start.
    pub fn is_settled(&self) -> bool {
        !self.client.as_ref().is_some_and(Client::is_starting)
    }

    /// Why the client's last start failed, once.
    pub fn take_start_error(&mut self) -> Option<SocksError> {
        self.client.as_mut().and_then(Client::take_start_error)
    }

    /// Stops `app`, or both, closing their connections.
    pub(crate) fn stop(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        app: Option<SocksApp>,
    ) -> Result<(), SocksError> {
        match app {
            Some(SocksApp::Client) if self.client.is_none() => {
                return Err(SocksError::NotConfigured("client"))
            }
            Some(SocksApp::Server) if self.server.is_none() => {
                return Err(SocksError::NotConfigured("server"))
            }
            _ => {}
        }
        if matches!(app, None | Some(SocksApp::Client)) {
            if let Some(client) = self.client.as_mut() {
                client.stop(cx, sockets, &mut self.graveyard);
            }
        }
        if matches!(app, None | Some(SocksApp::Server)) {
            if let Some(server) = self.server.as_mut() {
                server.stop(cx, sockets, &mut self.graveyard);
            }
        }
        Ok(())
    }

    /// The client app's options and whether it runs (or is starting), if it is configured.
    pub fn client(&self) -> Option<(&ClientOptions, bool)> {
        self.client
            .as_ref()
            .map(|client| (client.options(), client.is_active()))
    }

    /// The server app's options and whether it runs, if it is configured.
    pub fn server(&self) -> Option<(&ServerOptions, bool)> {
        self.server
            .as_ref()
            .map(|server| (server.options(), server.is_running()))
    }

    /// Replaces the client app's options (a reloaded config). A running client keeps running
    /// and takes only `enabled`: stop it first to change the rest.
    pub fn set_client_options(&mut self, now: Instant, options: Option<ClientOptions>) {
        match (self.client.as_mut(), options) {
            (Some(client), Some(options)) if client.is_active() => {
                client.set_enabled(options.enabled);
            }
            (Some(client), None) if client.is_active() => {
                log::warn!("the SOCKS client runs: stop it before its section goes");
            }
            (_, options) => self.client = options.map(|options| Client::new(options, now)),
        }
    }

    /// Replaces the server app's options (a reloaded config). A running server keeps running
    /// and takes only `enabled`: stop it first to change the rest.
    pub fn set_server_options(&mut self, options: Option<ServerOptions>) {
        match (self.server.as_mut(), options) {
            (Some(server), Some(options)) if server.is_running() => {
                server.set_enabled(options.enabled);
            }
            (Some(server), None) if server.is_running() => {
                log::warn!("the SOCKS server runs: stop it before its section goes");
            }
            (_, options) => {
                self.server = options.map(|options| {
                    let mut server = Server::new(options);
                    server.set_own_addresses(self.host_addresses.clone());
                    server
                });
            }
        }
    }

    /// Whether the client app runs with its exit at `peer`: another app that stops must leave
    /// the route there up.
    pub fn uses_route(&self, peer: &NodeKey) -> bool {
        self.client
            .as_ref()
            .is_some_and(|client| client.exits_at(peer))
    }

    /// Both apps' state and counters.
    pub fn status(&self, cx: &mut Context<'_>) -> SocksStatus {
        SocksStatus {
            client: self.client.as_ref().map(|client| client.status(cx)),
            server: self.server.as_ref().map(|server| server.status(cx)),
        }
    }

    /// Routes coming and going.
    pub(crate) fn handle_event(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        event: &Event,
    ) {
        if let Some(client) = self.client.as_mut() {
            client.handle_event(cx, sockets, event, &mut self.graveyard);
        }
        if let Some(server) = self.server.as_mut() {
            server.handle_event(cx, sockets, event, &mut self.graveyard);
        }
    }

    /// Does every app's work: call after the stack was polled, and poll it again afterwards so
    /// that what the apps wrote is sent.
    pub(crate) fn pump(&mut self, cx: &mut Context<'_>, sockets: &mut Sockets) {
        for handle in self.graveyard.drain(..) {
            cx.stack.release(handle);
        }
        if let Some(server) = self.server.as_mut() {
            server.pump(cx, sockets, &mut self.graveyard);
        }
        if let Some(client) = self.client.as_mut() {
            client.pump(cx, sockets, &mut self.graveyard);
        }
    }

    /// When the apps want [`Socks::pump`] called at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let client = self.client.as_ref().and_then(Client::poll_timeout);
        let server = self.server.as_ref().and_then(Server::poll_timeout);
        match (client, server) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- the kernel side -----

    /// A connection arrived on `listener` from `from`: its socket's id, or `None` when it is
    /// to be closed at once.
    pub(crate) fn handle_accepted(
        &mut self,
        now: Instant,
        sockets: &mut Sockets,
        listener: SocketId,
        from: SocketAddr,
    ) -> Option<SocketId> {
        match sockets.owner(listener)? {
            Owner::ClientListener => self.client.as_mut()?.accept(now, sockets, from),
            Owner::Client(_) | Owner::Server(_) | Owner::App(_) => None,
        }
    }

    /// What happened on `socket`, one of the apps' (`owner`).
    pub(crate) fn handle_socket(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        socket: SocketId,
        owner: Owner,
        event: SocketEvent,
    ) {
        match owner {
            Owner::ClientListener => {
                if let (Some(client), SocketEvent::Listening(result)) =
                    (self.client.as_mut(), event)
                {
                    client.handle_listening(sockets, socket, result);
                }
            }
            Owner::Client(index) => {
                if let Some(client) = self.client.as_mut() {
                    client.handle_socket(cx, sockets, &mut self.graveyard, index, event);
                }
            }
            Owner::Server(index) => {
                if let Some(server) = self.server.as_mut() {
                    server.handle_socket(cx, sockets, &mut self.graveyard, index, event);
                }
            }
            Owner::App(_) => {}
        }
    }

    /// The kernel operation due next on one of the apps' sockets (`owner`), if any.
    pub(crate) fn next_io(&mut self, stack: &mut MeshStack, owner: Owner) -> Option<KernelIo> {
        match owner {
            Owner::Client(index) => self.client.as_mut()?.next_io(stack, index),
            Owner::Server(index) => self.server.as_mut()?.next_io(stack, index),
            Owner::ClientListener | Owner::App(_) => None,
        }
    }

    /// Operation `io` (from [`Socks::next_io`] just before) with its buffer.
    pub(crate) fn lend<'a>(
        &'a mut self,
        stack: &'a mut MeshStack,
        owner: Owner,
        io: KernelIo,
    ) -> Option<SocketOp<'a>> {
        match owner {
            Owner::Client(index) => self.client.as_mut()?.lend(stack, index, io),
            Owner::Server(index) => self.server.as_mut()?.lend(stack, index, io),
            Owner::ClientListener | Owner::App(_) => None,
        }
    }

    /// The next name the server app needs resolved.
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.server.as_mut()?.poll_lookup()
    }

    /// A name was resolved (to nothing, when it did not resolve).
    pub(crate) fn handle_resolved(
        &mut self,
        cx: &mut Context<'_>,
        sockets: &mut Sockets,
        lookup: LookupId,
        addresses: Vec<SocketAddr>,
    ) {
        if let Some(server) = self.server.as_mut() {
            server.handle_resolved(cx, sockets, &mut self.graveyard, lookup, addresses);
        }
    }
}

/// A slab of connections: stable indexes, reused once free.
#[derive(Debug)]
struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                if let Some(slot) = self.entries.get_mut(index) {
                    *slot = Some(value);
                }
                index
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.entries.get_mut(index)?.take()?;
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.entries.get_mut(index)?.as_mut()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }

    /// One past the highest index in use: iterate `0..slots()` to visit every entry.
    fn slots(&self) -> usize {
        self.entries.len()
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// What happened to a connection of either app in one step.
enum Outcome {
    /// It goes on.
    Keep,
    /// Closed after a relay that ended well.
    Finished,
    /// Closed after a failure.
    Failed,
}

/// Counters an app keeps across its connections.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    accepted: u64,
    failed: u64,
    refused: u64,
    bytes_up: u64,
    bytes_down: u64,
}

/// What the apps do with a mesh socket whose connection ended: a reset if it was still
/// open, released after the stack's next poll.
pub(crate) fn bury(stack: &mut MeshStack, handle: TcpHandle, graveyard: &mut Vec<TcpHandle>) {
    let socket = stack.tcp(handle);
    if !matches!(
        socket.state(),
        smoltcp::socket::tcp::State::Closed | smoltcp::socket::tcp::State::TimeWait
    ) {
        socket.abort();
    }
    graveyard.push(handle);
}

/// How long a mesh stream's peer may stay silent before the stream is aborted.
pub(crate) const MESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Aborts `handle`'s stream once its peer has been silent for `timeout`. smoltcp counts
/// silence whether or not anything waits for an answer, so an idle stream sends keep-alives
/// well within the timeout, which a live peer answers: only a peer that is gone falls silent.
pub(crate) fn watch_peer(stack: &mut MeshStack, handle: TcpHandle, timeout: Duration) {
    let socket = stack.tcp(handle);
    socket.set_timeout(Some(smol_duration(timeout)));
    socket.set_keep_alive(Some(smol_duration(timeout / 3)));
}

/// A std duration as smoltcp's.
fn smol_duration(duration: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}
