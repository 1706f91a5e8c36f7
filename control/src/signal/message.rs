//! The messages inside DATA frames: a body is `[op u8][JSON]` and a reply's op is the request's
//! op | 0x80. A client registers with op 0x00; the server asks for resource usage (0x00), a ping
//! (0x01) or a shutdown (0x02).

use serde::{Deserialize, Serialize};

/// Set in the op of every reply.
pub const REPLY: u8 = 0x80;

/// Client to server: `{"Id":N}`, echoed back with op `0x80` once accepted.
pub const OP_REGISTER: u8 = 0x00;

/// What the server asks a registered client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Request {
    /// `null`, answered with a JSON object of what the app reports about itself.
    ResourceUsage,
    /// `null`, answered with `null`.
    Ping,
    /// `null`, answered with `{"Pid":N}`; then the app exits.
    Shutdown,
}

impl Request {
    /// Every request, in op order.
    pub const ALL: [Request; 3] = [Request::ResourceUsage, Request::Ping, Request::Shutdown];

    /// The op byte of the request; its reply's is this | [`REPLY`].
    pub const fn op(self) -> u8 {
        match self {
            Request::ResourceUsage => 0x00,
            Request::Ping => 0x01,
            Request::Shutdown => 0x02,
        }
    }

    /// The request with that op byte (without [`REPLY`]).
    pub const fn from_op(op: u8) -> Option<Request> {
        match op {
            0x00 => Some(Request::ResourceUsage),
            0x01 => Some(Request::Ping),
            0x02 => Some(Request::Shutdown),
            _ => None,
        }
    }

    /// A short name for logs and errors.
    pub const fn name(self) -> &'static str {
        match self {
            Request::ResourceUsage => "resource usage",
            Request::Ping => "ping",
            Request::Shutdown => "shutdown",
        }
    }

    /// The request's position in [`Request::ALL`].
    pub const fn index(self) -> usize {
        self.op() as usize
    }
}

/// A registration: the app id the client was launched with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The value of `SIGNAL_CLIENT_ID`.
    #[serde(rename = "Id")]
    pub id: u64,
}

/// A client's answer to a shutdown request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAck {
    /// The process that is about to exit.
    #[serde(rename = "Pid")]
    pub pid: u32,
}

/// Splits a DATA body into its op and JSON; an empty body has neither.
pub fn split_body(body: &[u8]) -> Option<(u8, &[u8])> {
    body.split_first().map(|(op, json)| (*op, json))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        for request in Request::ALL {
            assert_eq!(Request::from_op(request.op()), Some(request));
            assert_eq!(Request::ALL[request.index()], request);
        }
        assert_eq!(Request::from_op(0x03), None);
        assert_eq!(Request::from_op(0x81), None);
    }

    #[test]
    fn json_field_names_are_go_style() {
        assert_eq!(
            serde_json::to_string(&Register { id: 4 }).unwrap(),
            r#"{"Id":4}"#
        );
        assert_eq!(
            serde_json::to_string(&ShutdownAck { pid: 9 }).unwrap(),
            r#"{"Pid":9}"#
        );
        let register: Register = serde_json::from_str(r#"{"Id":5,"Extra":true}"#).unwrap();
        assert_eq!(register.id, 5);
    }

    #[test]
    fn empty_body_has_no_op() {
        assert_eq!(split_body(b""), None);
        assert_eq!(split_body(b"\x01null"), Some((1, &b"null"[..])));
    }
}
