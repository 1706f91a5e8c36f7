//! What the SOCKS apps answer: which app a request names, and their state and counters.

use std::net::SocketAddr;

use serde::Serialize;

use crate::identity::NodeKey;

/// One of the two apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SocksApp {
    /// The entry's local SOCKS5 port.
    Client,
    /// The exit's mesh port.
    Server,
}

/// Both apps at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocksStatus {
    /// The client app, if configured.
    pub client: Option<ClientStatus>,
    /// The server app, if configured.
    pub server: Option<ServerStatus>,
}

/// The client app at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientStatus {
    /// `running` or `stopped`.
    pub state: &'static str,
    /// The local address as bound (the real port when the config said 0).
    pub listen: Option<SocketAddr>,
    /// The exit's key.
    pub exit: NodeKey,
    /// The route to the exit: `ready`, `building` or `down`.
    pub route: &'static str,
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted since the start of the dataplane.
    pub accepted: u64,
    /// Connections answered with a failure or cut off.
    pub failed: u64,
    /// Bytes from local clients to the exit.
    pub bytes_up: u64,
    /// Bytes from the exit to local clients.
    pub bytes_down: u64,
    /// Bytes held in the open connections' mesh buffers (bounded per connection).
    pub buffered_bytes: usize,
}

/// The server app at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerStatus {
    /// `running` or `stopped`.
    pub state: &'static str,
    /// The mesh port.
    pub port: u16,
    /// How many client keys may use it.
    pub allowed: usize,
    /// Connections open now.
    pub connections: usize,
    /// Mesh streams accepted since the start of the dataplane.
    pub accepted: u64,
    /// Streams refused: their node is not allowed, or holds as many streams as it may.
    pub refused: u64,
    /// Requests answered "not allowed" because the dial policy denies every address of their
    /// target (`socks.server.deny`, `allow_private`, `allow_targets`).
    pub denied: u64,
    /// Streams answered with another failure or cut off.
    pub failed: u64,
    /// Bytes from clients to targets.
    pub bytes_up: u64,
    /// Bytes from targets to clients.
    pub bytes_down: u64,
    /// Bytes held in the open connections' mesh buffers (bounded per connection).
    pub buffered_bytes: usize,
}
