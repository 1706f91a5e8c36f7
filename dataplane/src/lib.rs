//! skywire's dataplane: identity, wire formats, transports, routing, route sessions, the mesh
//! stack and the built-in apps as sans-IO state machines (bytes and `now` in; datagrams,
//! events and deadlines out), tied together by the `service`, and the mio `driver` that does
//! the service's I/O.

pub mod api;
pub mod app_socket;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod index;
mod local_stream;
pub mod messenger;
pub mod node;
pub mod outbox;
pub mod routing;
pub mod service;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod socks;
pub mod stack;
pub mod topology;
pub mod transport;
pub mod vpn;
pub mod wire;
pub mod xeddsa;

pub use identity::{KeyError, NodeKey, SecretKey};
pub use outbox::{Datagram, Outbox, MAX_DATAGRAM};
pub use transport::{
    DropCounters, NeighbourConfig, SendError, Sent, TransportError, TransportId, TransportInfo,
    Transports, MAX_MESH_PACKET, SEALED_HEADER_LEN, SEALED_HEADER_TYPE,
};
pub use wire::RouteId;
