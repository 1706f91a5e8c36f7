//! The mesh packet: a plain IPv6 header whose flow label carries the route id of the current hop,
//! followed by a control message (next header 253), a route session message (254) or, on a direct
//! route, the inner packet itself (252). Owns the checked view, its `MeshHeader` representation
//! and the relay's in-place label rewrite.

use std::net::Ipv6Addr;

use super::{RouteId, WireError};

/// Length of the IPv6 header that starts every mesh packet.
pub const HEADER_LEN: usize = 40;

/// The hop limit an origin puts on the packets it sends.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// What a mesh packet carries: the only next headers that travel between nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum NextHeader {
    /// An inner packet on a direct route, not encrypted again: the hop's transport between the
    /// route's two ends already does that. Relays never forward it.
    Direct = 252,
    /// The nodes' own versioned control messages (RFC 3692 experimental value).
    Control = 253,
    /// An end-to-end route session message, which relays forward without looking inside.
    Session = 254,
}

impl NextHeader {
    /// The next header for an IPv6 next-header value, if nodes exchange it.
    pub const fn from_u8(value: u8) -> Option<NextHeader> {
        match value {
            252 => Some(NextHeader::Direct),
            253 => Some(NextHeader::Control),
            254 => Some(NextHeader::Session),
            _ => None,
        }
    }

    /// The IPv6 next-header value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

mod field {
    pub type Field = core::ops::Range<usize>;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// The low 20 bits of the first header word.
const FLOW_LABEL_MASK: u32 = RouteId::MAX;

/// What a header of a too-short unchecked buffer reads as, so that no accessor can panic: version
/// 0, hop limit 0 and payload length 0, which no relay forwards and no parser accepts.
static ZERO_HEADER: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// A zero-copy view of a mesh packet in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MeshPacket<T> {
    /// A view without any check, for buffers this node filled itself. Accessors never panic, but
    /// on a buffer shorter than [`HEADER_LEN`] they read an all-zero header and setters do nothing.
    pub const fn new_unchecked(buffer: T) -> MeshPacket<T> {
        MeshPacket { buffer }
    }

    /// A view of bytes from outside: a whole IPv6 packet whose payload length field matches the
    /// buffer exactly and whose next header is one that nodes exchange.
    pub fn new_checked(buffer: T) -> Result<MeshPacket<T>, WireError> {
        let packet = MeshPacket::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// The checks of [`MeshPacket::new_checked`]: a shorter buffer than the header or the payload
    /// length says is `Truncated`, a longer one `BadLength`.
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::NotIpv6);
        }
        let expected = HEADER_LEN + self.payload_len();
        if len < expected {
            return Err(WireError::Truncated);
        }
        if len > expected {
            return Err(WireError::BadLength);
        }
        if NextHeader::from_u8(self.next_header_raw()).is_none() {
            return Err(WireError::BadNextHeader);
        }
        Ok(())
    }

    /// The buffer, given back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn header(&self) -> &[u8; HEADER_LEN] {
        self.buffer.as_ref().first_chunk().unwrap_or(&ZERO_HEADER)
    }

    fn first_word(&self) -> u32 {
        let header = self.header();
        u32::from_be_bytes([header[0], header[1], header[2], header[3]])
    }

    /// The IP version field (6 in every checked packet).
    pub fn version(&self) -> u8 {
        self.header()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class. Nodes send 0 and relays keep whatever arrived.
    pub fn traffic_class(&self) -> u8 {
        // The traffic class spans bits 4..12 of the first word: never more than 8 bits.
        ((self.first_word() >> 20) & 0xff) as u8
    }

    /// The route id of this hop: the 20-bit flow label.
    pub fn route_id(&self) -> RouteId {
        label_to_route_id(self.first_word())
    }

    /// The payload length field.
    pub fn payload_len(&self) -> usize {
        let header = self.header();
        usize::from(u16::from_be_bytes([
            header[field::PAYLOAD_LEN.start],
            header[field::PAYLOAD_LEN.start + 1],
        ]))
    }

    /// The raw next-header value.
    pub fn next_header_raw(&self) -> u8 {
        self.header()[field::NEXT_HEADER]
    }

    /// What the packet carries. On an unchecked packet a value other than 252 and 253 reads as
    /// `Session`: the opaque kind, which nothing but a route session ever interprets.
    pub fn next_header(&self) -> NextHeader {
        NextHeader::from_u8(self.next_header_raw()).unwrap_or(NextHeader::Session)
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.header()[field::HOP_LIMIT]
    }

    /// The origin's mesh address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.header()[field::SRC_ADDR]);
        Ipv6Addr::from(octets)
    }

    /// The destination's mesh address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.header()[field::DST_ADDR]);
        Ipv6Addr::from(octets)
    }

    /// Header plus payload, as the payload length field says.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// The payload: as long as the payload length field says (the buffer may be longer on an
    /// unchecked packet; if it is shorter, the payload is empty).
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.total_len())
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MeshPacket<T> {
    fn header_mut(&mut self) -> Option<&mut [u8; HEADER_LEN]> {
        self.buffer.as_mut().first_chunk_mut()
    }

    /// Puts `route_id` in the flow label, keeping the version and traffic class.
    pub fn set_route_id(&mut self, route_id: RouteId) {
        if let Some(header) = self.header_mut() {
            if let Some(word) = header.first_chunk_mut::<4>() {
                write_flow_label(word, route_id);
            }
        }
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, payload_len: u16) {
        if let Some(header) = self.header_mut() {
            header[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
        }
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        if let Some(header) = self.header_mut() {
            header[field::HOP_LIMIT] = hop_limit;
        }
    }

    /// The payload, to fill in place (same extent as [`MeshPacket::payload`]).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for MeshPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The parsed header of a mesh packet. The traffic class is not kept: nodes emit 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MeshHeader {
    /// The route id of the hop the packet is on.
    pub route_id: RouteId,
    /// What the payload is.
    pub next_header: NextHeader,
    /// Hops left.
    pub hop_limit: u8,
    /// The origin's mesh address.
    pub src: Ipv6Addr,
    /// The destination's mesh address.
    pub dst: Ipv6Addr,
    /// Length of the payload after the 40-byte header.
    pub payload_len: usize,
}

impl MeshHeader {
    /// The header of a packet that [`MeshPacket::new_checked`] accepted (or this node built).
    pub fn parse<T: AsRef<[u8]>>(packet: &MeshPacket<T>) -> MeshHeader {
        MeshHeader {
            route_id: packet.route_id(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            payload_len: packet.payload_len(),
        }
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf` (version 6, traffic class 0);
    /// the payload is the caller's. `BadLength` if the payload length does not fit 16 bits.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| WireError::BadLength)?;
        let header: &mut [u8; HEADER_LEN] = buf.first_chunk_mut().ok_or(WireError::Truncated)?;
        let word = (6u32 << 28) | self.route_id.get();
        header[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        header[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
        header[field::NEXT_HEADER] = self.next_header.as_u8();
        header[field::HOP_LIMIT] = self.hop_limit;
        header[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        header[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// The relay's whole work on a packet: decrements the hop limit and puts the next hop's route id
/// in the flow label, touching only bytes 0..8. A packet that would leave with hop limit 0 is
/// `HopLimitExceeded` (drop it); one shorter than a header `Truncated`; not IPv6 `NotIpv6`.
#[inline]
pub fn relay_in_place(packet: &mut [u8], next: RouteId) -> Result<(), WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let head: &mut [u8; 8] = packet.first_chunk_mut().ok_or(WireError::Truncated)?;
    if head[0] >> 4 != 6 {
        return Err(WireError::NotIpv6);
    }
    let hop_limit = head[field::HOP_LIMIT];
    if hop_limit <= 1 {
        return Err(WireError::HopLimitExceeded);
    }
    head[field::HOP_LIMIT] = hop_limit - 1;
    if let Some(word) = head.first_chunk_mut::<4>() {
        write_flow_label(word, next);
    }
    Ok(())
}

/// The route id of a packet, read before anything else is checked: `None` if `packet` is shorter
/// than a header or not IPv6.
#[inline]
pub fn route_id_of(packet: &[u8]) -> Option<RouteId> {
    if packet.len() < HEADER_LEN {
        return None;
    }
    let word = u32::from_be_bytes(*packet.first_chunk::<4>()?);
    if word >> 28 != 6 {
        return None;
    }
    Some(label_to_route_id(word))
}

fn label_to_route_id(word: u32) -> RouteId {
    // Masked to 20 bits, so `new` always succeeds and the fallback is never taken.
    RouteId::new(word & FLOW_LABEL_MASK).unwrap_or(RouteId::CONTROL)
}

fn write_flow_label(word: &mut [u8; 4], route_id: RouteId) {
    let [_, high, middle, low] = route_id.get().to_be_bytes();
    // The high nibble of byte 1 is the low half of the traffic class.
    word[1] = (word[1] & 0xf0) | (high & 0x0f);
    word[2] = middle;
    word[3] = low;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sample_header(payload_len: usize) -> MeshHeader {
        MeshHeader {
            route_id: RouteId::new(0xabcde).unwrap(),
            next_header: NextHeader::Session,
            hop_limit: 17,
            src: "fd12:3456::1".parse().unwrap(),
            dst: "fdfe:dcba::2".parse().unwrap(),
            payload_len,
        }
    }

    fn sample_packet(payload: &[u8]) -> Vec<u8> {
        let header = sample_header(payload.len());
        let mut buf = vec![0u8; header.buffer_len()];
        header.emit(&mut buf).unwrap();
        buf[HEADER_LEN..].copy_from_slice(payload);
        buf
    }

    #[test]
    fn header_round_trips() {
        let bytes = sample_packet(b"hello mesh");
        let packet = MeshPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(MeshHeader::parse(&packet), sample_header(10));
        assert_eq!(packet.route_id().get(), 0xabcde);
        assert_eq!(packet.hop_limit(), 17);
        assert_eq!(packet.next_header(), NextHeader::Session);
        assert_eq!(packet.payload(), b"hello mesh");
        assert_eq!(packet.total_len(), bytes.len());
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0);
        assert_eq!(route_id_of(&bytes), Some(packet.route_id()));
        assert_eq!(packet.into_inner(), &bytes[..]);
    }

    #[test]
    fn header_emits_the_exact_ipv6_layout() {
        let bytes = sample_packet(&[0xaa; 3]);
        assert_eq!(&bytes[..8], &[0x60, 0x0a, 0xbc, 0xde, 0, 3, 254, 17]);
        assert_eq!(bytes[8], 0xfd);
        assert_eq!(bytes[24], 0xfd);
        assert_eq!(bytes[39], 2);
    }

    #[test]
    fn empty_payload_and_control_next_header_are_accepted() {
        let header = MeshHeader {
            next_header: NextHeader::Control,
            route_id: RouteId::CONTROL,
            ..sample_header(0)
        };
        let mut buf = [0u8; HEADER_LEN];
        header.emit(&mut buf).unwrap();
        let packet = MeshPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(MeshHeader::parse(&packet), header);
        assert!(packet.payload().is_empty());
    }

    #[test]
    fn next_header_values() {
        assert_eq!(NextHeader::from_u8(253), Some(NextHeader::Control));
        assert_eq!(NextHeader::from_u8(254), Some(NextHeader::Session));
        assert_eq!(NextHeader::from_u8(252), Some(NextHeader::Direct));
        for value in [0, 6, 17, 58, 251, 255] {
            assert_eq!(NextHeader::from_u8(value), None);
        }
        assert_eq!(NextHeader::Control.as_u8(), 253);
    }

    #[test]
    fn emit_rejects_small_buffers_and_oversized_payloads() {
        let mut small = [0u8; HEADER_LEN - 1];
        assert_eq!(sample_header(0).emit(&mut small), Err(WireError::Truncated));
        let mut buf = [0u8; HEADER_LEN];
        assert_eq!(
            sample_header(usize::from(u16::MAX) + 1).emit(&mut buf),
            Err(WireError::BadLength)
        );
        assert_eq!(sample_header(usize::from(u16::MAX)).emit(&mut buf), Ok(()));
    }

    #[test]
    fn shorter_than_a_header_is_truncated() {
        let bytes = sample_packet(&[]);
        for len in 0..HEADER_LEN {
            assert_eq!(
                MeshPacket::new_checked(&bytes[..len]),
                Err(WireError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn ipv4_is_rejected() {
        let mut bytes = sample_packet(b"x");
        bytes[0] = 0x45;
        assert_eq!(MeshPacket::new_checked(&bytes[..]), Err(WireError::NotIpv6));
        bytes[0] = 0x00;
        assert_eq!(MeshPacket::new_checked(&bytes[..]), Err(WireError::NotIpv6));
    }

    #[test]
    fn payload_length_too_big_is_truncated() {
        let mut bytes = sample_packet(b"abcd");
        bytes[5] = 5;
        assert_eq!(
            MeshPacket::new_checked(&bytes[..]),
            Err(WireError::Truncated)
        );
        // Cut short in transit: the field says more than arrived.
        let bytes = sample_packet(b"abcd");
        assert_eq!(
            MeshPacket::new_checked(&bytes[..bytes.len() - 1]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn payload_length_too_small_is_bad_length() {
        let mut bytes = sample_packet(b"abcd");
        bytes[5] = 3;
        assert_eq!(
            MeshPacket::new_checked(&bytes[..]),
            Err(WireError::BadLength)
        );
        let mut bytes = sample_packet(b"abcd");
        bytes.push(0);
        assert_eq!(
            MeshPacket::new_checked(&bytes[..]),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn other_next_headers_are_rejected() {
        for value in [6, 17, 58, 251, 255] {
            let mut bytes = sample_packet(b"abcd");
            bytes[6] = value;
            assert_eq!(
                MeshPacket::new_checked(&bytes[..]),
                Err(WireError::BadNextHeader),
                "{value}"
            );
        }
    }

    #[test]
    fn setters_keep_version_and_traffic_class() {
        let mut bytes = sample_packet(b"payload");
        bytes[0] = 0x6a; // traffic class 0xab
        bytes[1] = 0xbc;
        let mut packet = MeshPacket::new_checked(&mut bytes[..]).unwrap();
        packet.set_route_id(RouteId::new(0x12345).unwrap());
        packet.set_hop_limit(3);
        packet.payload_mut().copy_from_slice(b"PAYLOAD");
        assert_eq!(packet.route_id().get(), 0x12345);
        assert_eq!(packet.traffic_class(), 0xab);
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.hop_limit(), 3);
        assert_eq!(packet.payload(), b"PAYLOAD");
    }

    #[test]
    fn unchecked_short_buffers_do_not_panic() {
        for len in 0..HEADER_LEN {
            let mut buf = vec![0x6f; len];
            let mut packet = MeshPacket::new_unchecked(&mut buf[..]);
            assert_eq!(packet.version(), 0);
            assert_eq!(packet.route_id(), RouteId::CONTROL);
            assert_eq!(packet.hop_limit(), 0);
            assert!(packet.payload().is_empty());
            packet.set_route_id(RouteId::new(5).unwrap());
            packet.set_hop_limit(9);
            assert!(packet.payload_mut().is_empty());
            assert!(buf.iter().all(|&byte| byte == 0x6f));
        }
        // A header claiming more payload than the buffer holds.
        let mut bytes = sample_packet(b"abcd");
        bytes.truncate(HEADER_LEN + 2);
        let mut packet = MeshPacket::new_unchecked(&mut bytes[..]);
        assert!(packet.payload().is_empty());
        assert!(packet.payload_mut().is_empty());
    }

    #[test]
    fn relay_rewrites_the_label_and_decrements_the_hop_limit() {
        let mut bytes = sample_packet(b"carried, not read");
        bytes[0] = 0x6a;
        bytes[1] = 0xbc;
        let before = bytes.clone();
        relay_in_place(&mut bytes, RouteId::new(0xf0f0f).unwrap()).unwrap();
        let packet = MeshPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.route_id().get(), 0xf0f0f);
        assert_eq!(packet.hop_limit(), 16);
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xab);
        assert_eq!(&bytes[4..7], &before[4..7]);
        assert_eq!(&bytes[8..], &before[8..]);
    }

    #[test]
    fn relay_drops_hop_limit_zero_and_one() {
        for hop_limit in [0, 1] {
            let mut bytes = sample_packet(b"x");
            bytes[7] = hop_limit;
            let before = bytes.clone();
            assert_eq!(
                relay_in_place(&mut bytes, RouteId::new(7).unwrap()),
                Err(WireError::HopLimitExceeded)
            );
            assert_eq!(bytes, before);
        }
        let mut bytes = sample_packet(b"x");
        bytes[7] = 2;
        relay_in_place(&mut bytes, RouteId::new(7).unwrap()).unwrap();
        assert_eq!(bytes[7], 1);
    }

    #[test]
    fn relay_rejects_short_and_non_ipv6_buffers() {
        let bytes = sample_packet(&[]);
        for len in 0..HEADER_LEN {
            let mut short = bytes[..len].to_vec();
            assert_eq!(
                relay_in_place(&mut short, RouteId::new(7).unwrap()),
                Err(WireError::Truncated),
                "{len}"
            );
            assert_eq!(route_id_of(&short), None);
        }
        let mut ipv4 = sample_packet(b"abc");
        ipv4[0] = 0x45;
        assert_eq!(
            relay_in_place(&mut ipv4, RouteId::new(7).unwrap()),
            Err(WireError::NotIpv6)
        );
        assert_eq!(route_id_of(&ipv4), None);
    }
}
