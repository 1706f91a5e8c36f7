//! What the VPN apps answer: which app a request names, and their state and counters.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::identity::NodeKey;

/// Which VPN app a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VpnApp {
    /// The server app.
    Server,
    /// The client app.
    Client,
}

impl fmt::Display for VpnApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VpnApp::Server => "server",
            VpnApp::Client => "client",
        })
    }
}

/// Packets and bytes one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Traffic {
    /// Counts one packet of `len` bytes.
    pub fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// Both VPN apps at a glance (`vpn status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VpnStatus {
    /// The server app, when configured.
    pub server: Option<ServerStatus>,
    /// The client app, when configured.
    pub client: Option<ClientStatus>,
}

/// The server app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerStatus {
    /// `stopped`, `running`, or `failed: why`.
    pub state: String,
    /// Its TUN device.
    pub tun: String,
    /// Its own addresses in the tunnel.
    pub ipv4: Option<Ipv4Addr>,
    /// Its own IPv6 address in the tunnel.
    pub ipv6: Option<Ipv6Addr>,
    /// The clients connected in this run.
    pub clients: Vec<ServerClientRow>,
    /// Packets dropped, by reason.
    pub drops: DropCounts,
}

/// One client of the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerClientRow {
    /// Its key.
    pub key: NodeKey,
    /// Its IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// What it sent through the server.
    pub rx: Traffic,
    /// What the server sent it.
    pub tx: Traffic,
}

/// The client app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientStatus {
    /// `stopped`, `connecting`, `leasing`, `up`, `refused: why`, or `failed: why`.
    pub state: String,
    /// The server's key.
    pub server: NodeKey,
    /// Its TUN device.
    pub tun: String,
    /// The IPv4 address the server gave, with the pool's prefix length.
    pub ipv4: Option<String>,
    /// The IPv6 address the server gave, with the pool's prefix length.
    pub ipv6: Option<String>,
    /// The tunnel's MTU.
    pub mtu: Option<u16>,
    /// What is routed through the tunnel.
    pub routes: Vec<String>,
    /// How often the route to the server was rebuilt after it went down.
    pub reconnects: u64,
    /// What went into the tunnel.
    pub tx: Traffic,
    /// What came out of it.
    pub rx: Traffic,
    /// Packets dropped, by reason.
    pub drops: DropCounts,
}

/// Packets the VPN dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// Not a whole IPv4 or IPv6 packet.
    pub not_ip: u64,
    /// From a peer that holds no lease.
    pub no_lease: u64,
    /// With a source that is not the sender's lease.
    pub forged_source: u64,
    /// To an address no connected client holds.
    pub no_client: u64,
    /// From a node that is not the client's server.
    pub not_server: u64,
    /// To an address that is not the client's.
    pub not_for_us: u64,
}
