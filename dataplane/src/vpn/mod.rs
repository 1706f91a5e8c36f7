//! The VPN apps: a server that hands each allowed client key stable addresses from its pools
//! and forwards their packets through its TUN device, and a client that sends its machine's
//! traffic (some subnets, or everything) through a TUN device to a server over a route
//! session. This module owns their state; the devices, their addresses and routes, and the
//! lease file are the driver's, changed as the apps ask ([`HostOp`]).

mod apps;
mod client;
pub mod filter;
pub mod lease;
pub mod offload;
pub mod pool;
pub mod prefix;
mod server;
pub mod tun;

use std::collections::VecDeque;
use std::path::PathBuf;

pub use apps::VpnApps;
pub use client::VpnClient;
pub use prefix::{Prefix, PrefixError};
pub use server::VpnServer;
pub use tun::{TunError, TunName};

use crate::api::vpn::VpnApp;
use crate::identity::NodeKey;
use crate::service::{HostOp, HostResult};

/// The server's TUN device unless configured otherwise.
pub const DEFAULT_SERVER_TUN: &str = "skyvpn-srv";
/// The client's TUN device unless configured otherwise.
pub const DEFAULT_CLIENT_TUN: &str = "skyvpn0";
/// The server's IPv4 pool unless configured otherwise.
pub const DEFAULT_POOL4: &str = "10.77.0.0/24";
/// The server's IPv6 pool unless configured otherwise.
pub const DEFAULT_POOL6: &str = "fd77:736b::/64";
pub use lease::DEFAULT_PORT as DEFAULT_LEASE_PORT;

/// The TUN device's MTU: the inner MTU of a route session (ARCHITECTURE.md's budget).
pub const TUN_MTU: u16 = crate::node::INNER_MTU as u16;
/// The firewall mark of the node's own datagrams while a VPN client routes through the tunnel:
/// policy routing sends everything without it into the tunnel.
pub const FWMARK: u32 = 0x736b;

/// The VPN apps' configuration.
#[derive(Debug, Clone)]
pub struct VpnOptions {
    /// Where the server keeps its leases and the client the undo list of its routes.
    pub state_dir: PathBuf,
    /// The server app, when configured.
    pub server: Option<ServerOptions>,
    /// The client app, when configured.
    pub client: Option<ClientOptions>,
}

impl Default for VpnOptions {
    fn default() -> VpnOptions {
        VpnOptions {
            state_dir: PathBuf::from("."),
            server: None,
            client: None,
        }
    }
}

/// The VPN server app's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Whether it starts with the dataplane (else `vpn start server` starts it).
    pub start: bool,
    /// Its TUN device's name.
    pub tun: TunName,
    /// The IPv4 pool; the server takes its first address.
    pub pool4: Option<Prefix>,
    /// The IPv6 pool; the server takes its first address.
    pub pool6: Option<Prefix>,
    /// The client keys that may connect.
    pub allow: Vec<NodeKey>,
    /// The mesh TCP port of the lease exchange.
    pub port: u16,
}

/// The VPN client app's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Whether it starts with the dataplane (else `vpn start client` starts it).
    pub start: bool,
    /// Its TUN device's name.
    pub tun: TunName,
    /// The server's key.
    pub server: NodeKey,
    /// The nodes between this one and the server, in order (the server last or left out);
    /// `None` for a path the node chooses itself and rebuilds over another when it breaks.
    pub path: Option<Vec<NodeKey>>,
    /// What to send through the tunnel; `0.0.0.0/0` and `::/0` mean everything.
    pub routes: Vec<Prefix>,
    /// The server's mesh TCP port of the lease exchange.
    pub port: u16,
}

/// Why a VPN app could not start, or a request about it failed.
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    /// The app has no section in the configuration.
    #[error("the VPN {0} is not configured: add a vpn.{0} section to the config file")]
    NotConfigured(&'static str),
    /// The app runs already.
    #[error("the VPN {0} runs already (`vpn stop {0}` stops it)")]
    Running(&'static str),
    /// The TUN device or its configuration failed.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The address pool could not be opened.
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    /// The mesh stack could not listen on the lease port.
    #[error("cannot listen on mesh TCP port {port} for VPN leases: {source}")]
    Listen {
        /// The port.
        port: u16,
        /// What the stack said.
        source: crate::stack::StackError,
    },
    /// The app's last stop is not complete.
    #[error("the VPN {0} is still stopping: try again in a moment")]
    Stopping(&'static str),
}

/// The host changes the VPN apps asked for and the driver has not taken yet, and how many
/// answers each app waits for.
#[derive(Debug, Default)]
pub struct HostOps {
    queue: VecDeque<HostOp>,
    /// Answers awaited: the server's, then the client's.
    awaited: [usize; 2],
}

impl HostOps {
    /// Asks for a change.
    pub fn push(&mut self, op: HostOp) {
        if op.is_answered() {
            self.awaited[slot(op.app())] += 1;
        }
        self.queue.push_back(op);
    }

    /// The next change for the driver.
    pub fn pop(&mut self) -> Option<HostOp> {
        self.queue.pop_front()
    }

    /// Counts an answer.
    fn answered(&mut self, result: &HostResult) {
        let awaited = &mut self.awaited[slot(result.app())];
        *awaited = awaited.saturating_sub(1);
    }

    /// Whether `app` waits for no answer.
    fn settled(&self, app: VpnApp) -> bool {
        self.awaited[slot(app)] == 0
    }
}

fn slot(app: VpnApp) -> usize {
    match app {
        VpnApp::Server => 0,
        VpnApp::Client => 1,
    }
}
