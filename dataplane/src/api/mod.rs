//! What the control thread asks the dataplane thread and what it answers: typed requests with
//! ids through a channel and a `mio::Waker`, replies the same way back, whenever they are ready
//! (a route setup or a ping takes round trips). Neither thread ever blocks on the other.
//!
//! These types depend on no app module's state: the apps depend on them (`vpn`, `socks`), and
//! so does the control crate; only a reloaded configuration carries the apps' option types. A
//! reply serializes as its data alone, with no tag naming its kind.

pub mod app_socket;
pub mod messenger;
pub mod services;
pub mod socks;
pub mod topology;
pub mod vpn;

use std::error::Error;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::identity::NodeKey;
use crate::node::{NodeSettings, RouteDownReason, RouteError};
pub use crate::outbox::OutboxStats;
pub use crate::stack::SynRefusals;
use crate::transport::{NeighbourConfig, TransportError};
use crate::wire::ServiceName;
use app_socket::AppConnection;
use messenger::{MessengerReply, MessengerRequest};
use services::ServicesReply;
use socks::{SocksApp, SocksStatus};
use topology::{FoundRoute, NodesReply};
use vpn::{VpnApp, VpnStatus};

/// Pairs a reply with its request.
pub type RequestId = u64;

/// A request to the dataplane.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// The node's identity, bound port, uptime and counts.
    Status,
    /// Every transport with its state and counters.
    ListTransports,
    /// The routes this node is an end of, and its routing table.
    ListRoutes,
    /// Sets up a route along `path`: this node first (added when missing), the destination
    /// last. Answered once the route is ready or has failed.
    BuildRoute {
        /// The nodes, by key.
        path: Vec<NodeKey>,
    },
    /// Sets up a route to `peer` over the lowest-cost path known, which the node rebuilds
    /// over another path when it breaks. Answered once the route is ready or has failed; a
    /// route to `peer` that exists already answers at once.
    BuildRouteTo {
        /// The route's destination.
        peer: NodeKey,
    },
    /// The path a route to `peer` would take now, and its cost, without building it.
    FindRoute {
        /// The node to find a path to.
        peer: NodeKey,
    },
    /// The known graph: every node that advertises, its links and their costs, and the
    /// adverts sent and dropped.
    ListNodes,
    /// Tears down the route to `peer`.
    RemoveRoute {
        /// The route's other end.
        peer: NodeKey,
    },
    /// Sends `count` ICMPv6 echo requests to `peer` over its route (built first over the
    /// lowest-cost path when there is none, as [`Request::BuildRouteTo`] does); answered when
    /// all came back or the last one timed out.
    PingNode {
        /// The node to ping.
        peer: NodeKey,
        /// How many echo requests.
        count: u32,
    },
    /// Starts a VPN app as configured; answered with [`Reply::Vpn`].
    VpnStart {
        /// Which one.
        app: VpnApp,
    },
    /// Stops a VPN app, removing its TUN device and routes; answered with [`Reply::Vpn`].
    VpnStop {
        /// Which one.
        app: VpnApp,
    },
    /// The VPN apps' state, addresses and counters.
    VpnStatus,
    /// Starts a SOCKS app, or every configured one (`None`); answered with their status.
    SocksStart {
        /// The app, or every configured one.
        app: Option<SocksApp>,
    },
    /// Stops a SOCKS app, or both (`None`), closing its connections; answered with their
    /// status.
    SocksStop {
        /// The app, or both.
        app: Option<SocksApp>,
    },
    /// The SOCKS apps' state, connections and byte counts.
    SocksStatus,
    /// Adds a transport to a neighbour (`add_neighbour`, a reloaded config); answered with
    /// [`Reply::Neighbour`].
    AddNeighbour(NeighbourConfig),
    /// Sets a neighbour's endpoint (when one is given) and keepalive (a reloaded config);
    /// answered with [`Reply::Neighbour`].
    UpdateNeighbour(NeighbourConfig),
    /// Removes the transport to a neighbour (`rm_neighbour`, a reloaded config): what ran over
    /// it goes as when its link dies. Answered with [`Reply::Neighbour`].
    RemoveNeighbour {
        /// The neighbour.
        key: NodeKey,
    },
    /// Puts link liveness and route settings in force (a reloaded config); answered with
    /// [`Reply::Settings`].
    SetNodeSettings(NodeSettings),
    /// Replaces one built-in app's configuration (a reloaded config); answered with
    /// [`Reply::AppConfigured`] once the app has stopped and started as it must.
    ConfigureApp(Box<AppConfig>),
    /// A request to the messenger; answered with [`Reply::Messenger`].
    Messenger(MessengerRequest),
    /// The services the mesh's adverts list (those named `name`, when given), who offers
    /// them and what the path there costs; answered with [`Reply::Services`].
    Services {
        /// Only this service.
        name: Option<ServiceName>,
    },
    /// A launched app's connection to the app socket, for the dataplane to own and serve
    /// from now on. Not answered: the app hears on the connection itself.
    AppConnection(AppConnection),
    /// Tears down routes, removes what the dataplane made, and stops its thread.
    Shutdown,
}

/// A built-in app's section of a reloaded configuration; `None` when the section is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppConfig {
    /// `socks.client`.
    SocksClient(Option<crate::socks::ClientOptions>),
    /// `socks.server`.
    SocksServer(Option<crate::socks::ServerOptions>),
    /// `vpn.client`.
    VpnClient(Option<crate::vpn::ClientOptions>),
    /// `vpn.server`.
    VpnServer(Option<crate::vpn::ServerOptions>),
    /// `messenger`.
    Messenger(Option<crate::messenger::Settings>),
}

impl AppConfig {
    /// The app it configures.
    pub fn app(&self) -> BuiltinApp {
        match self {
            AppConfig::SocksClient(_) => BuiltinApp::Socks(SocksApp::Client),
            AppConfig::SocksServer(_) => BuiltinApp::Socks(SocksApp::Server),
            AppConfig::VpnClient(_) => BuiltinApp::Vpn(VpnApp::Client),
            AppConfig::VpnServer(_) => BuiltinApp::Vpn(VpnApp::Server),
            AppConfig::Messenger(_) => BuiltinApp::Messenger,
        }
    }
}

/// One of the dataplane's own apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinApp {
    /// A SOCKS app.
    Socks(SocksApp),
    /// A VPN app.
    Vpn(VpnApp),
    /// The messenger.
    Messenger,
}

impl std::fmt::Display for BuiltinApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuiltinApp::Socks(SocksApp::Client) => f.write_str("the SOCKS client"),
            BuiltinApp::Socks(SocksApp::Server) => f.write_str("the SOCKS server"),
            BuiltinApp::Vpn(app) => write!(f, "the VPN {app}"),
            BuiltinApp::Messenger => f.write_str("the messenger"),
        }
    }
}

/// What a new configuration did to a built-in app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppChange {
    /// It was stopped and started again with the new options.
    Restarted,
    /// It did not run and was started (it is enabled now).
    Started,
    /// Its section is gone: it was stopped if it ran, and is no longer configured.
    Removed,
    /// Its options were replaced; it did not run and is not enabled, so it was not started.
    Configured,
    /// Only `enabled` changed, which says what happens at the node's start: a running app
    /// runs on.
    Unchanged,
    /// Its new options are in force and it ran on: the messenger's limits and allow list
    /// apply from its next stream on.
    Updated,
}

/// The dataplane's answer to one request: its data, or why it failed.
pub type Response = Result<Reply, RequestError>;

/// What a request that succeeded answers. It serializes as the data it holds, untagged:
/// `Status` as the status's fields. More replies come as the node learns more commands, so
/// other crates must expect ones they do not know.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Reply {
    /// Answers [`Request::Status`].
    Status(StatusReply),
    /// Answers [`Request::ListTransports`].
    Transports(TransportsReply),
    /// Answers [`Request::ListRoutes`].
    Routes(RoutesReply),
    /// Answers [`Request::BuildRoute`] once the route is ready.
    RouteBuilt(RouteRow),
    /// Answers [`Request::FindRoute`].
    RouteFound(FoundRoute),
    /// Answers [`Request::ListNodes`].
    Nodes(NodesReply),
    /// Answers [`Request::RemoveRoute`].
    RouteRemoved {
        /// The route's other end.
        peer: NodeKey,
    },
    /// Answers [`Request::PingNode`].
    Ping(PingReply),
    /// Answers the VPN requests: both apps' state after the request.
    Vpn(Box<VpnStatus>),
    /// Answers [`Request::SocksStart`], [`Request::SocksStop`] and [`Request::SocksStatus`].
    Socks(SocksStatus),
    /// Answers [`Request::AddNeighbour`], [`Request::UpdateNeighbour`] and
    /// [`Request::RemoveNeighbour`].
    Neighbour(NeighbourReply),
    /// Answers [`Request::SetNodeSettings`]: the settings now in force.
    Settings(SettingsReply),
    /// Answers [`Request::Services`].
    Services(ServicesReply),
    /// Answers [`Request::ConfigureApp`].
    AppConfigured {
        /// The app.
        app: BuiltinApp,
        /// What became of it.
        change: AppChange,
    },
    /// Answers [`Request::Messenger`].
    Messenger(MessengerReply),
    /// Answers [`Request::Shutdown`]: the dataplane has stopped.
    Stopped,
}

/// A neighbour added, changed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeighbourReply {
    /// Its key.
    pub key: NodeKey,
    /// What became of it.
    pub change: NeighbourChange,
    /// Where its packets go now (none known, or removed).
    pub endpoint: Option<SocketAddr>,
    /// Its persistent keepalive, in seconds.
    pub keepalive: Option<u16>,
    /// Routes this node was an end of that went down with it (removed only); one over a path of
    /// the node's is rebuilt over another path when there is one.
    pub routes_down: usize,
}

/// What became of a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighbourChange {
    /// Its transport was added.
    Added,
    /// Its endpoint or keepalive changed.
    Updated,
    /// Its transport was removed.
    Removed,
}

/// Link liveness and route settings, as in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsReply {
    /// Time between probes on each link.
    pub probe_interval_ms: u128,
    /// Silence after which a link is dead.
    pub dead_after_ms: u128,
    /// Routes one neighbour may hold through this node.
    pub max_routes_per_neighbour: usize,
    /// How long a rule lives without a refresh.
    pub rule_lifetime_ms: u128,
    /// How often a route's initiator refreshes it.
    pub refresh_interval_ms: u128,
}

impl From<NodeSettings> for SettingsReply {
    fn from(settings: NodeSettings) -> SettingsReply {
        SettingsReply {
            probe_interval_ms: settings.probe_interval.as_millis(),
            dead_after_ms: settings.dead_after.as_millis(),
            max_routes_per_neighbour: settings.max_routes_per_neighbour,
            rule_lifetime_ms: settings.rule_lifetime.as_millis(),
            refresh_interval_ms: settings.refresh_interval.as_millis(),
        }
    }
}

/// Why a request failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A route could not be set up; the error names the hop.
    #[error("route to {peer} failed: {error}")]
    RouteFailed {
        /// The route's destination.
        peer: NodeKey,
        /// What happened.
        error: RouteError,
    },
    /// The route was set up and went down before it could be answered.
    #[error("the route to {peer} went down at once")]
    RouteWentDown {
        /// The route's destination.
        peer: NodeKey,
    },
    /// The route broke before it was ready, and could not be rebuilt.
    #[error("the route to {peer} went down before it was ready: {reason}")]
    RouteDown {
        /// The route's destination.
        peer: NodeKey,
        /// Why.
        reason: RouteDownReason,
    },
    /// No path to the node is known.
    #[error("no path to {peer} is known: it has not advertised, or none of its links is up (`list_nodes` shows the known graph)")]
    NoPath {
        /// The node named.
        peer: NodeKey,
    },
    /// The route was set up but its end-to-end session did not complete its handshake.
    #[error("route to {peer} was set up but its session handshake did not complete in {} s", .after.as_secs())]
    HandshakeTimeout {
        /// The route's destination.
        peer: NodeKey,
        /// How long it was given.
        after: Duration,
    },
    /// There is no route to the node to tear down.
    #[error("no route to {peer}: `list_routes` shows the routes")]
    NoRoute {
        /// The node named.
        peer: NodeKey,
    },
    /// The key named is not a neighbour.
    #[error("{key} is not a neighbour of this node: `list_transports` shows them")]
    NoNeighbour {
        /// The key named.
        key: NodeKey,
    },
    /// The key named is a neighbour already.
    #[error("{key} is a neighbour already: `rm_neighbour {key}` first to add it anew, or change its entry in the config file and reload")]
    NeighbourExists {
        /// The key named.
        key: NodeKey,
    },
    /// A neighbour could not be added.
    #[error("cannot add neighbour {key}: {error}")]
    Neighbour {
        /// The neighbour.
        key: NodeKey,
        /// Why not.
        error: TransportError,
    },
    /// The VPN app asked to stop is not running.
    #[error("the VPN {0} is not running")]
    VpnNotRunning(VpnApp),
    /// The node is stopping and takes no more requests.
    #[error("the node is stopping")]
    Stopping,
    /// A VPN or SOCKS app refused the request; its own error says why.
    #[error(transparent)]
    App(Box<dyn Error + Send + Sync>),
}

impl RequestError {
    /// An app's error.
    pub fn app(error: impl Error + Send + Sync + 'static) -> RequestError {
        RequestError::App(Box::new(error))
    }
}

/// The node at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReply {
    /// The node's public key.
    pub key: NodeKey,
    /// Its mesh address.
    pub mesh_address: Ipv6Addr,
    /// The UDP socket's address as bound (the real port when the config said 0).
    pub listen: SocketAddr,
    /// Seconds since the dataplane started.
    pub uptime_secs: u64,
    /// Configured neighbours.
    pub transports: usize,
    /// Neighbours whose link is up.
    pub links_up: usize,
    /// Routes this node is an end of.
    pub routes: usize,
    /// Rules in the routing table.
    pub rules: usize,
    /// The mesh stack's TCP sockets, and the SYNs its listening ports refused.
    pub mesh_tcp: MeshTcpStatus,
    /// The queue of datagrams to send: the most at once, its limit, and the drops at it.
    pub outbox: OutboxStats,
}

/// The mesh stack's TCP sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MeshTcpStatus {
    /// Open now, listening ones included.
    pub sockets: usize,
    /// The most open at once so far.
    pub sockets_peak: usize,
    /// The most that may be open at once.
    pub sockets_limit: usize,
    /// SYNs answered with a reset before any socket was made for them, by reason.
    pub syns_refused: SynRefusals,
}

/// Every transport.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransportsReply {
    /// One row per configured neighbour.
    pub transports: Vec<TransportRow>,
}

/// One transport.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransportRow {
    /// The neighbour's key.
    pub key: NodeKey,
    /// Where its packets go (and last came from).
    pub endpoint: Option<SocketAddr>,
    /// `up`, `down` or `unknown` (never heard from).
    pub link: &'static str,
    /// Seconds since the last completed WireGuard handshake.
    pub handshake_secs_ago: Option<f64>,
    /// Seconds since the last authenticated packet.
    pub last_seen_secs_ago: Option<f64>,
    /// Round-trip time of the last liveness probe, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets received.
    pub rx_packets: u64,
}

/// A route this node is an end of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteRow {
    /// The other end.
    pub peer: NodeKey,
    /// Every node on it, initiator first.
    pub path: Vec<NodeKey>,
    /// Whether this node set it up.
    pub initiator: bool,
    /// Whether its session's handshake is done.
    pub ready: bool,
    /// The id stamped on what this node sends.
    pub out_id: u32,
    /// The id what it receives carries.
    pub in_id: u32,
}

/// One rule of the routing table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRow {
    /// The route id it matches.
    pub id: u32,
    /// `forward` or `consume`.
    pub action: &'static str,
    /// The neighbour packets must come from (`None`: its transport is gone).
    pub from: Option<NodeKey>,
    /// Where they go: the next neighbour, or the peer whose session consumes them (`None`:
    /// the next neighbour's transport is gone).
    pub to: Option<NodeKey>,
    /// The id they leave with (forward rules).
    pub next_id: Option<u32>,
    /// Packets that used it.
    pub packets: u64,
    /// Bytes that used it.
    pub bytes: u64,
    /// Seconds until it expires unless refreshed.
    pub expires_in_secs: f64,
}

/// Routes and rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutesReply {
    /// Routes this node is an end of.
    pub routes: Vec<RouteRow>,
    /// The routing table.
    pub rules: Vec<RuleRow>,
}

/// The outcome of a ping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingReply {
    /// The node pinged.
    pub peer: NodeKey,
    /// Its mesh address.
    pub address: Ipv6Addr,
    /// Echo requests sent.
    pub sent: u32,
    /// Round-trip times of the replies received, in milliseconds, in order.
    pub rtt_ms: Vec<f64>,
}

/// The dataplane's side of the channel pair: where its requests come from, and how to
/// answer.
#[derive(Debug)]
pub struct DataplaneEnd {
    /// Requests from the control thread.
    pub requests: Receiver<(RequestId, Request)>,
    /// Where replies go.
    pub replies: ReplySender,
}

/// Sends requests to the dataplane and wakes it.
#[derive(Debug, Clone)]
pub struct RequestSender {
    sender: Sender<(RequestId, Request)>,
    waker: Arc<mio::Waker>,
}

/// Sends replies to the control thread and wakes it.
#[derive(Debug, Clone)]
pub struct ReplySender {
    sender: Sender<(RequestId, Response)>,
    waker: Arc<mio::Waker>,
}

impl RequestSender {
    /// Queues a request; fails only when the dataplane thread has gone.
    pub fn send(&self, id: RequestId, request: Request) -> io::Result<()> {
        self.sender
            .send((id, request))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the dataplane has stopped"))?;
        self.waker.wake()
    }
}

impl ReplySender {
    /// Queues a reply; a control thread that has gone is not an error here.
    pub fn send(&self, id: RequestId, reply: Response) {
        if self.sender.send((id, reply)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Makes the two channels: `dataplane_waker` wakes the dataplane's poll, `control_waker` the
/// control thread's. Returns the control side's sender and receiver and the dataplane's end.
pub fn channels(
    dataplane_waker: Arc<mio::Waker>,
    control_waker: Arc<mio::Waker>,
) -> (RequestSender, Receiver<(RequestId, Response)>, DataplaneEnd) {
    let (request_tx, request_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    (
        RequestSender {
            sender: request_tx,
            waker: dataplane_waker,
        },
        reply_rx,
        DataplaneEnd {
            requests: request_rx,
            replies: ReplySender {
                sender: reply_tx,
                waker: control_waker,
            },
        },
    )
}
