//! The nodes' versioned control messages, the payload of next header 253: liveness probes,
//! route setup and link-state adverts between neighbours (route id 0), and route control that
//! every hop of a route processes. Owns their byte encoding `[version][type][body]`, big-endian throughout.

use std::fmt;
use std::net::Ipv6Addr;

use super::advert::Advert;
use super::mesh::{MeshHeader, NextHeader, DEFAULT_HOP_LIMIT, HEADER_LEN};
use super::{RouteId, WireError};
use crate::identity::NodeKey;

/// The control message version this node speaks.
pub const CONTROL_VERSION: u8 = 1;

/// The most keys a route setup path may name, both ends included.
pub const MAX_PATH_LEN: usize = 16;

const KEY_LEN: usize = 32;

mod kind {
    pub const PROBE: u8 = 1;
    pub const PROBE_REPLY: u8 = 2;
    pub const SETUP_REQUEST: u8 = 3;
    pub const SETUP_ACCEPT: u8 = 4;
    pub const SETUP_REJECT: u8 = 5;
    pub const REFRESH: u8 = 6;
    pub const TEARDOWN: u8 = 7;
    pub const ROUTE_DOWN: u8 = 8;
    pub const ADVERT: u8 = 9;
}

/// The type byte of an advert ([`ControlMessage::Advert`]).
pub use kind::ADVERT as ADVERT_TYPE;

/// Version and type bytes.
const PREAMBLE_LEN: usize = 2;
/// Body of a setup request before its keys: setup id, hop index, MTU, reverse id, path count.
const SETUP_REQUEST_FIXED_LEN: usize = 8 + 1 + 2 + 4 + 1;

/// A control message between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Liveness and round-trip probe to a neighbour (route id 0).
    Probe {
        /// Echoed by the reply, to match it.
        nonce: u64,
    },
    /// The answer to a [`ControlMessage::Probe`] (route id 0).
    ProbeReply {
        /// The probe's nonce.
        nonce: u64,
    },
    /// Asks the neighbour at `path[hop_index]` to join a route (route id 0).
    SetupRequest {
        /// The initiator's id for this setup, echoed by the answers.
        setup_id: u64,
        /// Which key of `path` the receiver is: at least 1, below the path's length.
        hop_index: u8,
        /// The smallest MTU on the path so far.
        mtu: u16,
        /// The route id the sender chose for packets coming back to it on this route.
        reverse_id: RouteId,
        /// The route from initiator to destination, 2 to [`MAX_PATH_LEN`] keys.
        path: Vec<NodeKey>,
    },
    /// The route is set up from the sender onwards (route id 0).
    SetupAccept {
        /// The setup this answers.
        setup_id: u64,
        /// The route id the sender chose for packets going forward through it.
        forward_id: RouteId,
        /// The smallest MTU on the path.
        mtu: u16,
    },
    /// The route could not be set up (route id 0).
    SetupReject {
        /// The setup this answers.
        setup_id: u64,
        /// The path index of the hop that refused.
        hop_index: u8,
        /// Why it refused.
        reason: RejectReason,
    },
    /// Keeps the route's rules alive at every hop (on the route).
    Refresh,
    /// Removes the route's rules at every hop (on the route).
    Teardown,
    /// A hop found the route broken and tells both ends (on the route).
    RouteDown {
        /// The hop that noticed.
        reporter: NodeKey,
        /// What happened.
        reason: DownReason,
    },
    /// A node's signed link-state advert, flooded between neighbours (route id 0).
    Advert(Advert),
}

/// Why a hop refused a route setup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RejectReason {
    /// The hop has no transport configured to the next key in the path.
    UnknownNextHop,
    /// The hop has a transport to the next key, but its link is down or has no endpoint.
    NextHopUnreachable,
    /// The hop's route limit for that neighbour is reached.
    RouteLimit,
    /// The path's MTU cannot carry the inner MTU.
    MtuTooSmall {
        /// The path's MTU as far as the hop that refused.
        mtu: u16,
    },
    /// The path visits a node twice, or the hop is not where the path says.
    BadPath,
    /// The next hop did not answer in time.
    Timeout,
    /// The destination is setting up a route to the initiator at the same moment, and the
    /// destination's key is the lower: its route wins and serves both.
    Crossed,
}

/// Why a route went down.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum DownReason {
    /// A link on the route died.
    LinkDead = 1,
    /// The route's rules expired at the reporting hop (not refreshed in time).
    Expired = 2,
}

impl RejectReason {
    /// The reason code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            RejectReason::UnknownNextHop => 1,
            RejectReason::NextHopUnreachable => 2,
            RejectReason::RouteLimit => 3,
            RejectReason::MtuTooSmall { .. } => 4,
            RejectReason::BadPath => 5,
            RejectReason::Timeout => 6,
            RejectReason::Crossed => 7,
        }
    }

    /// The detail field on the wire: the MTU for `MtuTooSmall`, else 0.
    pub const fn detail(self) -> u16 {
        match self {
            RejectReason::MtuTooSmall { mtu } => mtu,
            _ => 0,
        }
    }

    /// The reason for a code and detail, if the code is known. Reasons without a detail demand
    /// a zero one, so that every accepted message has exactly one encoding.
    pub const fn from_code(code: u8, detail: u16) -> Option<RejectReason> {
        let reason = match code {
            1 => RejectReason::UnknownNextHop,
            2 => RejectReason::NextHopUnreachable,
            3 => RejectReason::RouteLimit,
            4 => return Some(RejectReason::MtuTooSmall { mtu: detail }),
            5 => RejectReason::BadPath,
            6 => RejectReason::Timeout,
            7 => RejectReason::Crossed,
            _ => return None,
        };
        if detail == 0 {
            Some(reason)
        } else {
            None
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::UnknownNextHop => {
                f.write_str("the hop has no transport to the next node in the path")
            }
            RejectReason::NextHopUnreachable => {
                f.write_str("the hop's link to the next node is down or has no endpoint")
            }
            RejectReason::RouteLimit => {
                f.write_str("the hop has reached its route limit for that neighbour")
            }
            RejectReason::MtuTooSmall { mtu } => {
                write!(f, "the path's MTU ({mtu} bytes) cannot carry the inner MTU")
            }
            RejectReason::BadPath => f.write_str(
                "bad path: it visits a node twice, or the hop is not where the path says",
            ),
            RejectReason::Timeout => f.write_str("the next hop did not answer in time"),
            RejectReason::Crossed => f.write_str(
                "the destination is setting up a route to this node at the same moment, and its wins",
            ),
        }
    }
}

impl DownReason {
    /// The reason for a code, if known.
    pub const fn from_u8(code: u8) -> Option<DownReason> {
        match code {
            1 => Some(DownReason::LinkDead),
            2 => Some(DownReason::Expired),
            _ => None,
        }
    }

    /// The code on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DownReason::LinkDead => "a link on the route died",
            DownReason::Expired => "the route expired at a hop (not refreshed in time)",
        })
    }
}

impl ControlMessage {
    /// Reads a whole message: its length must match exactly.
    pub fn parse(bytes: &[u8]) -> Result<ControlMessage, WireError> {
        let mut reader = Reader { rest: bytes };
        if reader.u8()? != CONTROL_VERSION {
            return Err(WireError::UnsupportedVersion);
        }
        let message = match reader.u8()? {
            kind::PROBE => ControlMessage::Probe {
                nonce: reader.u64()?,
            },
            kind::PROBE_REPLY => ControlMessage::ProbeReply {
                nonce: reader.u64()?,
            },
            kind::SETUP_REQUEST => parse_setup_request(&mut reader)?,
            kind::SETUP_ACCEPT => ControlMessage::SetupAccept {
                setup_id: reader.u64()?,
                forward_id: route_id_from_wire(reader.u32()?)?,
                mtu: reader.u16()?,
            },
            kind::SETUP_REJECT => {
                let setup_id = reader.u64()?;
                let hop_index = reader.u8()?;
                let code = reader.u8()?;
                let detail = reader.u16()?;
                ControlMessage::SetupReject {
                    setup_id,
                    hop_index,
                    reason: RejectReason::from_code(code, detail).ok_or(WireError::BadField)?,
                }
            }
            kind::REFRESH => ControlMessage::Refresh,
            kind::TEARDOWN => ControlMessage::Teardown,
            kind::ROUTE_DOWN => ControlMessage::RouteDown {
                reporter: NodeKey::from(reader.array::<KEY_LEN>()?),
                reason: DownReason::from_u8(reader.u8()?).ok_or(WireError::BadField)?,
            },
            kind::ADVERT => {
                let advert = Advert::parse(reader.rest)?;
                reader.rest = &[];
                ControlMessage::Advert(advert)
            }
            _ => return Err(WireError::UnknownType),
        };
        if !reader.rest.is_empty() {
            return Err(WireError::BadLength);
        }
        Ok(message)
    }

    /// The type byte on the wire.
    pub fn type_code(&self) -> u8 {
        match self {
            ControlMessage::Probe { .. } => kind::PROBE,
            ControlMessage::ProbeReply { .. } => kind::PROBE_REPLY,
            ControlMessage::SetupRequest { .. } => kind::SETUP_REQUEST,
            ControlMessage::SetupAccept { .. } => kind::SETUP_ACCEPT,
            ControlMessage::SetupReject { .. } => kind::SETUP_REJECT,
            ControlMessage::Refresh => kind::REFRESH,
            ControlMessage::Teardown => kind::TEARDOWN,
            ControlMessage::RouteDown { .. } => kind::ROUTE_DOWN,
            ControlMessage::Advert(_) => kind::ADVERT,
        }
    }

    /// Whether the message travels on a route (processed by every hop) rather than between
    /// neighbours on route id 0.
    pub fn is_route_control(&self) -> bool {
        matches!(
            self,
            ControlMessage::Refresh | ControlMessage::Teardown | ControlMessage::RouteDown { .. }
        )
    }

    /// The length of the encoded message.
    pub fn buffer_len(&self) -> usize {
        PREAMBLE_LEN
            + match self {
                ControlMessage::Probe { .. } | ControlMessage::ProbeReply { .. } => 8,
                ControlMessage::SetupRequest { path, .. } => {
                    SETUP_REQUEST_FIXED_LEN + path.len() * KEY_LEN
                }
                ControlMessage::SetupAccept { .. } => 8 + 4 + 2,
                ControlMessage::SetupReject { .. } => 8 + 1 + 1 + 2,
                ControlMessage::Refresh | ControlMessage::Teardown => 0,
                ControlMessage::RouteDown { .. } => KEY_LEN + 1,
                ControlMessage::Advert(advert) => advert.buffer_len(),
            }
    }

    /// Writes the message at the start of `buf` and returns its length. A message that
    /// [`ControlMessage::parse`] would refuse is refused here too (`BadRouteId`, `BadField`), so a
    /// node never sends what its peers drop; `Truncated` if `buf` is too small.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(WireError::Truncated)?;
        let mut writer = Writer { rest: out };
        writer.put(&[CONTROL_VERSION, self.type_code()])?;
        match self {
            ControlMessage::Probe { nonce } | ControlMessage::ProbeReply { nonce } => {
                writer.put(&nonce.to_be_bytes())?;
            }
            ControlMessage::SetupRequest {
                setup_id,
                hop_index,
                mtu,
                reverse_id,
                path,
            } => {
                writer.put(&setup_id.to_be_bytes())?;
                writer.put(&[*hop_index])?;
                writer.put(&mtu.to_be_bytes())?;
                writer.put(&reverse_id.get().to_be_bytes())?;
                // validate() bounded the path to MAX_PATH_LEN.
                let count = u8::try_from(path.len()).map_err(|_| WireError::BadField)?;
                writer.put(&[count])?;
                for key in path {
                    writer.put(key.as_bytes())?;
                }
            }
            ControlMessage::SetupAccept {
                setup_id,
                forward_id,
                mtu,
            } => {
                writer.put(&setup_id.to_be_bytes())?;
                writer.put(&forward_id.get().to_be_bytes())?;
                writer.put(&mtu.to_be_bytes())?;
            }
            ControlMessage::SetupReject {
                setup_id,
                hop_index,
                reason,
            } => {
                writer.put(&setup_id.to_be_bytes())?;
                writer.put(&[*hop_index, reason.code()])?;
                writer.put(&reason.detail().to_be_bytes())?;
            }
            ControlMessage::Refresh | ControlMessage::Teardown => {}
            ControlMessage::RouteDown { reporter, reason } => {
                writer.put(reporter.as_bytes())?;
                writer.put(&[reason.as_u8()])?;
            }
            ControlMessage::Advert(advert) => {
                advert.emit(std::mem::take(&mut writer.rest))?;
            }
        }
        Ok(len)
    }

    /// The field rules of [`ControlMessage::parse`], for messages built here.
    fn validate(&self) -> Result<(), WireError> {
        match self {
            ControlMessage::SetupRequest {
                hop_index,
                reverse_id,
                path,
                ..
            } => {
                if reverse_id.is_control() {
                    return Err(WireError::BadRouteId);
                }
                check_path(*hop_index, path.len())
            }
            ControlMessage::SetupAccept { forward_id, .. } if forward_id.is_control() => {
                Err(WireError::BadRouteId)
            }
            _ => Ok(()),
        }
    }
}

/// Writes a whole mesh packet carrying `message` (next header 253, hop limit
/// [`DEFAULT_HOP_LIMIT`]) at the start of `buf` and returns its length.
pub fn emit_control_packet(
    route_id: RouteId,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    message: &ControlMessage,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let header = MeshHeader {
        route_id,
        next_header: NextHeader::Control,
        hop_limit: DEFAULT_HOP_LIMIT,
        src,
        dst,
        payload_len: message.buffer_len(),
    };
    let len = header.buffer_len();
    let packet = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    header.emit(packet)?;
    let payload = packet.get_mut(HEADER_LEN..).ok_or(WireError::Truncated)?;
    message.emit(payload)?;
    Ok(len)
}

fn parse_setup_request(reader: &mut Reader<'_>) -> Result<ControlMessage, WireError> {
    let setup_id = reader.u64()?;
    let hop_index = reader.u8()?;
    let mtu = reader.u16()?;
    let reverse_id = route_id_from_wire(reader.u32()?)?;
    let count = usize::from(reader.u8()?);
    check_path(hop_index, count)?;
    let path = (0..count)
        .map(|_| reader.array::<KEY_LEN>().map(NodeKey::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ControlMessage::SetupRequest {
        setup_id,
        hop_index,
        mtu,
        reverse_id,
        path,
    })
}

fn check_path(hop_index: u8, count: usize) -> Result<(), WireError> {
    if !(2..=MAX_PATH_LEN).contains(&count) {
        return Err(WireError::BadField);
    }
    // The initiator (index 0) never receives its own request.
    if hop_index == 0 || usize::from(hop_index) >= count {
        return Err(WireError::BadField);
    }
    Ok(())
}

/// A route id in a message body: 20 bits and never the control channel.
fn route_id_from_wire(value: u32) -> Result<RouteId, WireError> {
    match RouteId::new(value) {
        Some(id) if !id.is_control() => Ok(id),
        _ => Err(WireError::BadRouteId),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }
}

struct Writer<'a> {
    rest: &'a mut [u8],
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if self.rest.len() < bytes.len() {
            return Err(WireError::Truncated);
        }
        let (head, rest) = std::mem::take(&mut self.rest).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.rest = rest;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::wire::mesh::{self, MeshPacket};

    fn key(byte: u8) -> NodeKey {
        NodeKey::from([byte; 32])
    }

    fn route_id(value: u32) -> RouteId {
        RouteId::new(value).unwrap()
    }

    fn setup_request(path_len: u8, hop_index: u8) -> ControlMessage {
        ControlMessage::SetupRequest {
            setup_id: 0x0102_0304_0506_0708,
            hop_index,
            mtu: 1420,
            reverse_id: route_id(RouteId::MAX),
            path: (0..path_len).map(key).collect(),
        }
    }

    /// One message of every variant and reason.
    fn every_message() -> Vec<ControlMessage> {
        let mut messages = vec![
            ControlMessage::Probe { nonce: u64::MAX },
            ControlMessage::ProbeReply { nonce: 42 },
            setup_request(2, 1),
            setup_request(16, 15),
            setup_request(5, 3),
            ControlMessage::SetupAccept {
                setup_id: 9,
                forward_id: route_id(1),
                mtu: 1348,
            },
            ControlMessage::Refresh,
            ControlMessage::Teardown,
            ControlMessage::RouteDown {
                reporter: key(0xee),
                reason: DownReason::LinkDead,
            },
            ControlMessage::RouteDown {
                reporter: key(0x11),
                reason: DownReason::Expired,
            },
        ];
        let reasons = [
            RejectReason::UnknownNextHop,
            RejectReason::NextHopUnreachable,
            RejectReason::RouteLimit,
            RejectReason::MtuTooSmall { mtu: 1200 },
            RejectReason::BadPath,
            RejectReason::Timeout,
            RejectReason::Crossed,
        ];
        for (index, reason) in reasons.into_iter().enumerate() {
            messages.push(ControlMessage::SetupReject {
                setup_id: 77,
                hop_index: index as u8,
                reason,
            });
        }
        messages
    }

    fn encode(message: &ControlMessage) -> Vec<u8> {
        let mut buf = vec![0u8; message.buffer_len()];
        assert_eq!(message.emit(&mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn every_message_round_trips() {
        for message in every_message() {
            let bytes = encode(&message);
            assert_eq!(ControlMessage::parse(&bytes), Ok(message.clone()));
            // A larger buffer is fine: only the message's bytes are written.
            let mut big = vec![0xffu8; bytes.len() + 7];
            assert_eq!(message.emit(&mut big), Ok(bytes.len()));
            assert_eq!(&big[..bytes.len()], &bytes[..]);
            assert!(big[bytes.len()..].iter().all(|&byte| byte == 0xff));
        }
    }

    #[test]
    fn encodings_have_the_documented_layout() {
        assert_eq!(
            encode(&ControlMessage::Probe { nonce: 0x0102 }),
            [1, 1, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(encode(&ControlMessage::Refresh), [1, 6]);
        assert_eq!(encode(&ControlMessage::Teardown), [1, 7]);
        let accept = encode(&ControlMessage::SetupAccept {
            setup_id: 3,
            forward_id: route_id(0x12345),
            mtu: 0x0540,
        });
        assert_eq!(
            accept,
            [1, 4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0x23, 0x45, 5, 0x40]
        );
        let reject = encode(&ControlMessage::SetupReject {
            setup_id: 3,
            hop_index: 2,
            reason: RejectReason::MtuTooSmall { mtu: 1000 },
        });
        assert_eq!(reject, [1, 5, 0, 0, 0, 0, 0, 0, 0, 3, 2, 4, 0x03, 0xe8]);
        let request = encode(&setup_request(3, 1));
        assert_eq!(request.len(), 18 + 3 * 32);
        assert_eq!(&request[..2], [1, 3]);
        assert_eq!(request[10], 1);
        assert_eq!(&request[11..13], 1420u16.to_be_bytes());
        assert_eq!(&request[13..17], RouteId::MAX.to_be_bytes());
        assert_eq!(request[17], 3);
        assert_eq!(&request[18..50], [0u8; 32]);
        assert_eq!(&request[82..], [2u8; 32]);
        let down = encode(&ControlMessage::RouteDown {
            reporter: key(9),
            reason: DownReason::Expired,
        });
        assert_eq!(down.len(), 35);
        assert_eq!(down[34], 2);
    }

    #[test]
    fn every_truncation_is_rejected() {
        for message in every_message() {
            let bytes = encode(&message);
            for len in 0..bytes.len() {
                assert_eq!(
                    ControlMessage::parse(&bytes[..len]),
                    Err(WireError::Truncated),
                    "{message:?} cut to {len}"
                );
            }
        }
    }

    #[test]
    fn a_trailing_byte_is_rejected() {
        for message in every_message() {
            let mut bytes = encode(&message);
            bytes.push(0);
            assert_eq!(
                ControlMessage::parse(&bytes),
                Err(WireError::BadLength),
                "{message:?}"
            );
        }
    }

    #[test]
    fn other_versions_are_rejected() {
        for version in [0, 2, 255] {
            let mut bytes = encode(&ControlMessage::Refresh);
            bytes[0] = version;
            assert_eq!(
                ControlMessage::parse(&bytes),
                Err(WireError::UnsupportedVersion)
            );
        }
        assert_eq!(
            ControlMessage::parse(&[2]),
            Err(WireError::UnsupportedVersion)
        );
    }

    #[test]
    fn unknown_types_are_rejected() {
        for kind in [0, 10, 200, 255] {
            assert_eq!(
                ControlMessage::parse(&[CONTROL_VERSION, kind]),
                Err(WireError::UnknownType)
            );
        }
    }

    #[test]
    fn route_id_zero_and_above_20_bits_are_rejected() {
        let request = encode(&setup_request(3, 1));
        let accept = encode(&ControlMessage::SetupAccept {
            setup_id: 1,
            forward_id: route_id(5),
            mtu: 1400,
        });
        // reverse_id at 13..17 in a request, forward_id at 10..14 in an accept.
        for (bytes, at) in [(request, 13), (accept, 10)] {
            for bad in [0u32, 1 << 20, u32::MAX] {
                let mut bytes = bytes.clone();
                bytes[at..at + 4].copy_from_slice(&bad.to_be_bytes());
                assert_eq!(ControlMessage::parse(&bytes), Err(WireError::BadRouteId));
            }
        }
    }

    #[test]
    fn route_id_zero_is_not_emitted() {
        let mut buf = [0u8; 1024];
        let ControlMessage::SetupRequest {
            setup_id,
            hop_index,
            mtu,
            path,
            ..
        } = setup_request(3, 1)
        else {
            unreachable!()
        };
        let request = ControlMessage::SetupRequest {
            setup_id,
            hop_index,
            mtu,
            reverse_id: RouteId::CONTROL,
            path,
        };
        assert_eq!(request.emit(&mut buf), Err(WireError::BadRouteId));
        let accept = ControlMessage::SetupAccept {
            setup_id: 1,
            forward_id: RouteId::CONTROL,
            mtu: 1,
        };
        assert_eq!(accept.emit(&mut buf), Err(WireError::BadRouteId));
    }

    #[test]
    fn path_counts_outside_2_to_16_are_rejected() {
        for count in [0u8, 1, 17, 255] {
            let mut bytes = encode(&setup_request(2, 1));
            bytes[17] = count;
            bytes.resize(18 + usize::from(count) * 32, 0);
            assert_eq!(
                ControlMessage::parse(&bytes),
                Err(WireError::BadField),
                "{count}"
            );
            let mut buf = [0u8; 18 + 255 * 32];
            assert_eq!(
                setup_request(count, 1).emit(&mut buf),
                Err(WireError::BadField),
                "{count}"
            );
        }
    }

    #[test]
    fn hop_index_zero_and_past_the_path_are_rejected() {
        for hop_index in [0u8, 4, 5, 255] {
            let mut bytes = encode(&setup_request(4, 1));
            bytes[10] = hop_index;
            assert_eq!(
                ControlMessage::parse(&bytes),
                Err(WireError::BadField),
                "{hop_index}"
            );
            let mut buf = [0u8; 1024];
            assert_eq!(
                setup_request(4, hop_index).emit(&mut buf),
                Err(WireError::BadField)
            );
        }
    }

    #[test]
    fn unknown_reason_codes_are_rejected() {
        let reject = encode(&ControlMessage::SetupReject {
            setup_id: 1,
            hop_index: 1,
            reason: RejectReason::Timeout,
        });
        for code in [0u8, 8, 255] {
            let mut bytes = reject.clone();
            bytes[11] = code;
            assert_eq!(ControlMessage::parse(&bytes), Err(WireError::BadField));
        }
        // A detail on a reason that has none.
        let mut bytes = reject.clone();
        bytes[13] = 1;
        assert_eq!(ControlMessage::parse(&bytes), Err(WireError::BadField));

        let down = encode(&ControlMessage::RouteDown {
            reporter: key(1),
            reason: DownReason::LinkDead,
        });
        for code in [0u8, 3, 255] {
            let mut bytes = down.clone();
            bytes[34] = code;
            assert_eq!(ControlMessage::parse(&bytes), Err(WireError::BadField));
        }
    }

    #[test]
    fn small_buffers_are_truncated() {
        for message in every_message() {
            let mut buf = vec![0u8; message.buffer_len() - 1];
            assert_eq!(message.emit(&mut buf), Err(WireError::Truncated));
        }
    }

    #[test]
    fn reasons_have_codes_and_texts() {
        assert_eq!(RejectReason::MtuTooSmall { mtu: 9 }.code(), 4);
        assert_eq!(
            RejectReason::from_code(4, 9),
            Some(RejectReason::MtuTooSmall { mtu: 9 })
        );
        assert_eq!(
            RejectReason::from_code(1, 0),
            Some(RejectReason::UnknownNextHop)
        );
        assert_eq!(DownReason::from_u8(2), Some(DownReason::Expired));
        assert!(RejectReason::MtuTooSmall { mtu: 1300 }
            .to_string()
            .contains("1300"));
        assert!(RejectReason::UnknownNextHop
            .to_string()
            .contains("no transport"));
        assert!(DownReason::LinkDead.to_string().contains("link"));
    }

    #[test]
    fn route_control_is_told_apart() {
        assert!(ControlMessage::Refresh.is_route_control());
        assert!(!ControlMessage::Probe { nonce: 1 }.is_route_control());
    }

    #[test]
    fn control_packets_are_whole_mesh_packets() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        let message = setup_request(3, 1);
        let mut buf = [0u8; 512];
        let len = emit_control_packet(RouteId::CONTROL, src, dst, &message, &mut buf).unwrap();
        assert_eq!(len, mesh::HEADER_LEN + message.buffer_len());
        let packet = MeshPacket::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.next_header(), NextHeader::Control);
        assert_eq!(packet.route_id(), RouteId::CONTROL);
        assert_eq!(packet.hop_limit(), DEFAULT_HOP_LIMIT);
        assert_eq!((packet.src_addr(), packet.dst_addr()), (src, dst));
        assert_eq!(ControlMessage::parse(packet.payload()), Ok(message.clone()));

        let mut small = vec![0u8; len - 1];
        assert_eq!(
            emit_control_packet(RouteId::CONTROL, src, dst, &message, &mut small),
            Err(WireError::Truncated)
        );
    }
}
