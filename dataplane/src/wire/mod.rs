//! Wire formats as zero-copy checked views: mesh packets (IPv6 with the route id in the flow
//! label) and the nodes' versioned control messages. Nothing an outsider sends can panic them.

pub mod control;
pub mod mesh;

use std::fmt;


/// Why bytes from outside were not a valid packet or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header or than its own length fields say.
    #[error("truncated")]
    Truncated,
    /// A length field disagrees with the bytes present.
    #[error("length field disagrees with the packet's size")]
    BadLength,
    /// Not an IPv6 packet.
    #[error("not IPv6")]
    NotIpv6,
    /// A next header that nodes do not exchange.
    #[error("unexpected next header")]
    BadNextHeader,
    /// A route id that does not fit 20 bits, or zero where zero is not allowed.
    #[error("bad route id")]
    BadRouteId,
    /// A control message version this node does not speak.
    #[error("unsupported control message version")]
    UnsupportedVersion,
    /// A control message type this node does not know.
    #[error("unknown control message type")]
    UnknownType,
    /// A field holds a value outside its range (path length, hop index, reason code).
    #[error("field out of range")]
    BadField,
}

/// A route id: the 20-bit label a packet carries on one hop, chosen by the node receiving it.
/// Zero is the neighbour control channel, never a route.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RouteId(u32);

impl RouteId {
    /// The neighbour control channel (liveness probes, route setup).
    pub const CONTROL: RouteId = RouteId(0);
    /// The largest route id.
    pub const MAX: u32 = (1 << 20) - 1;

    /// A route id, if `value` fits 20 bits.
    pub const fn new(value: u32) -> Option<RouteId> {
        if value <= Self::MAX {
            Some(RouteId(value))
        } else {
            None
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether this is the neighbour control channel.
    pub const fn is_control(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
