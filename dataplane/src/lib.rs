//! skywire's mesh core: identity, wire formats, transports, routing and route sessions as
//! sans-IO state machines (bytes and `now` in; datagrams, events and deadlines out).

pub mod api;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod index;
pub mod node;
pub mod outbox;
pub mod routing;
pub mod session;
pub mod sim;
pub mod socks;
pub mod stack;
pub mod transport;
pub mod vpn;
pub mod wire;

pub use identity::{KeyError, NodeKey, SecretKey};
pub use outbox::{Datagram, Outbox, MAX_DATAGRAM};
pub use transport::{
    DropCounters, NeighbourConfig, SendError, TransportError, TransportId, TransportInfo,
    Transports, MAX_MESH_PACKET,
};
pub use wire::RouteId;
