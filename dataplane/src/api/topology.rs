//! What the node answers about the mesh as its adverts tell it: the path it would choose to a
//! node (`find_route`) and the known graph (`list_nodes`). Times are in milliseconds and
//! seconds, as the other replies give them.

use serde::Serialize;

use crate::identity::NodeKey;
use crate::topology::AdvertDrops;
use crate::wire::ServiceEntry;

/// The path the node would choose to a node, without building it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundRoute {
    /// The node asked for.
    pub peer: NodeKey,
    /// The nodes on the path, this one first, the peer last.
    pub path: Vec<NodeKey>,
    /// The sum of its links' costs, in milliseconds.
    pub cost_ms: f64,
    /// Each link's cost in path order, in milliseconds: `hop_costs_ms[i]` is the link from
    /// `path[i]` to `path[i + 1]`.
    pub hop_costs_ms: Vec<f64>,
    /// The path of the route to the peer in use now, if there is one (it may differ: a route
    /// keeps its path until it breaks).
    pub route_in_use: Option<Vec<NodeKey>>,
}

/// The known graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodesReply {
    /// Every node whose advert is held (this one included once it has advertised), by key.
    pub nodes: Vec<NodeRow>,
    /// The adverts this node sent and dropped.
    pub adverts: AdvertCounts,
}

/// One node, as its advert tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    /// Its key.
    pub key: NodeKey,
    /// Whether it is this node.
    pub this_node: bool,
    /// Its advert's sequence number.
    pub sequence: u64,
    /// Seconds since its advert arrived.
    pub advert_age_secs: f64,
    /// Seconds until its advert expires unless a newer one comes.
    pub expires_in_secs: f64,
    /// The links it advertises.
    pub links: Vec<LinkRow>,
    /// The services it advertises, as far as they read as services (`services` shows who
    /// offers one and what the path there costs).
    pub services: Vec<ServiceEntry>,
}

/// One advertised link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRow {
    /// The node at the other end.
    pub neighbour: NodeKey,
    /// The round-trip time the advertising node measured, in milliseconds.
    pub rtt_ms: f64,
    /// What path choice charges for it, in milliseconds: the larger of the two ends' times;
    /// `None` while the other end does not advertise it (the link is not used).
    pub cost_ms: Option<f64>,
}

/// Adverts sent and dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdvertCounts {
    /// Adverts sent to neighbours: this node's own and those it passed on.
    pub sent: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Adverts dropped, by reason.
    pub dropped: AdvertDrops,
}
