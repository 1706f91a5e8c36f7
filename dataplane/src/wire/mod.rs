//! Wire formats as zero-copy checked views: mesh packets (IPv6 with the route id in the flow
//! label) and the nodes' versioned control messages. Nothing an outsider sends can panic them.

pub mod advert;
pub mod control;
pub mod mesh;

pub use advert::{Advert, AdvertLink};
pub use control::{ControlMessage, DownReason, RejectReason};
pub use mesh::{MeshHeader, MeshPacket, NextHeader};

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
    /// A relay would forward the packet with hop limit 0: it is dropped (a loop, or a path too long).
    #[error("hop limit exceeded")]
    HopLimitExceeded,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::Ipv6Addr;

    use super::mesh::{relay_in_place, route_id_of, HEADER_LEN};
    use super::*;
    use crate::identity::NodeKey;

    /// xorshift64: deterministic, so a failure reproduces on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.byte()).collect()
        }
    }

    fn seed_messages() -> Vec<ControlMessage> {
        let key = |byte: u8| NodeKey::from([byte; 32]);
        let id = |value: u32| RouteId::new(value).unwrap();
        vec![
            ControlMessage::Probe { nonce: 1 },
            ControlMessage::ProbeReply { nonce: 2 },
            ControlMessage::SetupRequest {
                setup_id: 3,
                hop_index: 1,
                mtu: 1420,
                reverse_id: id(77),
                path: vec![key(1), key(2), key(3)],
            },
            ControlMessage::SetupAccept {
                setup_id: 4,
                forward_id: id(RouteId::MAX),
                mtu: 1400,
            },
            ControlMessage::SetupReject {
                setup_id: 5,
                hop_index: 2,
                reason: RejectReason::MtuTooSmall { mtu: 1300 },
            },
            ControlMessage::SetupReject {
                setup_id: 6,
                hop_index: 1,
                reason: RejectReason::BadPath,
            },
            ControlMessage::Refresh,
            ControlMessage::Teardown,
            ControlMessage::RouteDown {
                reporter: key(9),
                reason: DownReason::LinkDead,
            },
            ControlMessage::Advert(
                Advert::signed(
                    &crate::identity::SecretKey::from([4; 32]),
                    7,
                    60,
                    vec![AdvertLink {
                        neighbour: key(5),
                        rtt_micros: 900,
                    }],
                    vec![b"svc".to_vec()],
                    &[1; 64],
                )
                .unwrap(),
            ),
        ]
    }

    fn seed_packets(messages: &[ControlMessage]) -> Vec<Vec<u8>> {
        let src: Ipv6Addr = "fd01::1".parse().unwrap();
        let dst: Ipv6Addr = "fd02::2".parse().unwrap();
        let mut packets: Vec<Vec<u8>> = messages
            .iter()
            .map(|message| {
                let mut buf = vec![0u8; 1024];
                let route_id = RouteId::new(0x5a5a5).unwrap();
                let len =
                    control::emit_control_packet(route_id, src, dst, message, &mut buf).unwrap();
                buf.truncate(len);
                buf
            })
            .collect();
        let session = MeshHeader {
            route_id: RouteId::new(3).unwrap(),
            next_header: NextHeader::Session,
            hop_limit: 2,
            src,
            dst,
            payload_len: 60,
        };
        let mut buf = vec![0xab; session.buffer_len()];
        session.emit(&mut buf).unwrap();
        packets.push(buf);
        packets
    }

    /// Flips a few bytes, and sometimes cuts or extends the end.
    fn mutate(rng: &mut Rng, seed: &[u8], hot_prefix: usize) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            // Most damage goes to the headers, where the checks are.
            let span = if rng.below(4) == 0 {
                bytes.len()
            } else {
                hot_prefix.min(bytes.len())
            };
            let at = rng.below(span);
            bytes[at] = rng.byte();
        }
        match rng.below(8) {
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                let extra = 1 + rng.below(4);
                bytes.extend(rng.bytes(extra));
            }
            _ => {}
        }
        bytes
    }

    fn check_message(bytes: &[u8], accepted: &mut usize) {
        if let Ok(message) = ControlMessage::parse(bytes) {
            *accepted += 1;
            assert_eq!(message.buffer_len(), bytes.len(), "{message:?}");
            let mut again = vec![0u8; message.buffer_len()];
            assert_eq!(message.emit(&mut again), Ok(bytes.len()));
            assert_eq!(again, bytes, "{message:?}");
        }
    }

    fn check_packet(bytes: &[u8], accepted: &mut usize) {
        // The relay's peek and rewrite see everything, checked or not.
        let _ = route_id_of(bytes);
        let mut relayed = bytes.to_vec();
        if relay_in_place(&mut relayed, RouteId::new(9).unwrap()).is_ok() {
            assert_eq!(relayed[8..], bytes[8..]);
            assert_eq!(route_id_of(&relayed), RouteId::new(9));
        }
        let unchecked = MeshPacket::new_unchecked(bytes);
        let _ = (unchecked.payload(), MeshHeader::parse(&unchecked));

        let Ok(packet) = MeshPacket::new_checked(bytes) else {
            return;
        };
        *accepted += 1;
        let header = MeshHeader::parse(&packet);
        assert_eq!(header.route_id, packet.route_id());
        assert_eq!(route_id_of(bytes), Some(packet.route_id()));
        assert_eq!(header.hop_limit, packet.hop_limit());
        assert_eq!(header.next_header, packet.next_header());
        assert_eq!(
            (header.src, header.dst),
            (packet.src_addr(), packet.dst_addr())
        );
        assert_eq!(packet.total_len(), bytes.len());
        assert_eq!(packet.payload().len(), header.payload_len);

        let mut again = vec![0u8; header.buffer_len()];
        header.emit(&mut again).unwrap();
        again[HEADER_LEN..].copy_from_slice(packet.payload());
        // The representation leaves the traffic class out: nodes emit 0.
        let mut expected = bytes.to_vec();
        expected[0] &= 0xf0;
        expected[1] &= 0x0f;
        assert_eq!(again, expected);

        if header.next_header == NextHeader::Control {
            let mut ignored = 0;
            check_message(packet.payload(), &mut ignored);
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics_and_what_parses_re_emits() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let messages = seed_messages();
        let message_seeds: Vec<Vec<u8>> = messages
            .iter()
            .map(|message| {
                let mut buf = vec![0u8; message.buffer_len()];
                message.emit(&mut buf).unwrap();
                buf
            })
            .collect();
        let packet_seeds = seed_packets(&messages);
        let (mut messages_accepted, mut packets_accepted) = (0, 0);

        for round in 0..100_000 {
            match round % 4 {
                0 => {
                    let len = rng.below(160);
                    let bytes = rng.bytes(len);
                    check_message(&bytes, &mut messages_accepted);
                    check_packet(&bytes, &mut packets_accepted);
                }
                1 => {
                    let seed = &message_seeds[rng.below(message_seeds.len())];
                    let bytes = mutate(&mut rng, seed, 20);
                    check_message(&bytes, &mut messages_accepted);
                }
                2 => {
                    let seed = &packet_seeds[rng.below(packet_seeds.len())];
                    let bytes = mutate(&mut rng, seed, HEADER_LEN + 20);
                    check_packet(&bytes, &mut packets_accepted);
                }
                _ => {
                    // A valid preamble, so the bodies' checks see random bytes.
                    let len = rng.below(40 + 16 * 32);
                    let mut bytes = vec![control::CONTROL_VERSION, 1 + rng.below(10) as u8];
                    bytes.extend(rng.bytes(len));
                    check_message(&bytes, &mut messages_accepted);
                }
            }
        }
        // The mutations keep many inputs valid, so the re-emit checks really ran.
        assert!(messages_accepted > 5_000, "{messages_accepted}");
        assert!(packets_accepted > 5_000, "{packets_accepted}");
    }
}
