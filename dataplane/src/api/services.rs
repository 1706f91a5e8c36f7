//! What `services` answers: the services the mesh's adverts list, who offers each, and what
//! the path there costs.

use serde::Serialize;

use crate::identity::NodeKey;
use crate::wire::ServiceName;

/// The services known, in the order of their names, then of their cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicesReply {
    /// The name asked for, if one was.
    pub name: Option<ServiceName>,
    /// One row per node and service.
    pub services: Vec<ServiceRow>,
}

/// One service of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceRow {
    /// Its name.
    pub service: ServiceName,
    /// The node that offers it.
    pub node: NodeKey,
    /// The mesh TCP port it is offered on.
    pub port: u16,
    /// Whether it is a built-in app's.
    pub builtin: bool,
    /// Whether the node is this one.
    pub own: bool,
    /// What the lowest-cost path there costs (the sum of its links' round-trip times), in
    /// milliseconds; none when no path is known; 0 for this node.
    pub cost_ms: Option<f64>,
    /// The path's hops; 0 for this node.
    pub hops: Option<usize>,
}
