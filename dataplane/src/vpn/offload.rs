//! TUN offload: the kernel hands a TUN device opened with `IFF_VNET_HDR` and TSO on one large
//! TCP segment (up to 64 KiB, a `virtio_net_hdr` in front) where it would have sent dozens of
//! MTU-sized packets; this module cuts it into those packets (IP and TCP headers rewritten,
//! checksums computed), and completes the checksum of packets that the kernel left partial.
//! The other way, [`Coalescer`] joins consecutive segments of one TCP flow into one large
//! segment for the kernel to take in one write (what GRO does for a network card).

use std::collections::VecDeque;

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, TcpSeqNumber};

/// The `virtio_net_hdr` in front of every packet read from or written to the device.
pub const VNET_HDR_LEN: usize = 10;

const FLAG_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// Where the checksum sits in a TCP header, for the device's checksum offload.
const TCP_CHECKSUM_OFFSET: u16 = 16;

/// Why a frame from the device was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than its headers say, or headers that make no sense.
    Malformed,
    /// A kind of segmentation this module does not do (UDP).
    Unsupported,
}

/// The parts of a `virtio_net_hdr` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VnetHeader {
    flags: u8,
    gso_type: u8,
    header_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHeader {
    fn parse(bytes: &[u8]) -> Option<VnetHeader> {
        let bytes: &[u8; VNET_HDR_LEN] = bytes.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let word = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Some(VnetHeader {
            flags: bytes[0],
            gso_type: bytes[1],
            header_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    fn emit(&self, bytes: &mut [u8; VNET_HDR_LEN]) {
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.header_len.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// Splits one frame read from the device (`virtio_net_hdr` and packet) into IP packets of at
/// most `mtu` bytes, handing each to `deliver`. `frame` is worked on in place; `scratch`
/// holds each segment while it is built and must be at least `mtu` long.
pub fn split(
    frame: &mut [u8],
    scratch: &mut [u8],
    mtu: usize,
    mut deliver: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let header = VnetHeader::parse(frame).ok_or(OffloadError::Malformed)?;
    let packet = &mut frame[VNET_HDR_LEN..];
    match header.gso_type & !GSO_ECN {
        GSO_NONE => {
            if header.flags & FLAG_NEEDS_CSUM != 0 {
                complete_checksum(
                    packet,
                    usize::from(header.csum_start),
                    usize::from(header.csum_offset),
                )?;
            }
            deliver(packet);
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(packet, header.gso_size, scratch, mtu, deliver),
        _ => Err(OffloadError::Unsupported),
    }
}

/// Finishes a partial checksum: the field at `start + offset` holds the pseudo-header sum;
/// the sum over everything from `start` on, complemented, goes there. (The device names the
/// field by offsets, whatever the protocol.)
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if field + 2 > packet.len() || start > packet.len() {
        return Err(OffloadError::Malformed);
    }
    let sum = fold(sum_bytes(&packet[start..], 0));
    // UDP reads 0 as "no checksum"; 0xffff is the same sum in one's complement.
    let checksum = match !sum {
        0 => 0xffff,
        checksum => checksum,
    };
    packet[field..field + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

/// Where the headers of a TCP/IP packet are, read through checked views: after [`layout`],
/// views over the packet's first `total` bytes cannot panic.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    /// The packet's length as its IP header gives it.
    total: usize,
}

fn layout(packet: &[u8]) -> Result<Layout, OffloadError> {
    let malformed = OffloadError::Malformed;
    let (v6, ip_len, total) = match packet.first().ok_or(malformed)? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| malformed)?;
            if ip.next_header() != IpProtocol::Tcp {
                return Err(malformed);
            }
            (
                false,
                usize::from(ip.header_len()),
                usize::from(ip.total_len()),
            )
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| malformed)?;
            // Extension headers would need walking; the kernel does not segment such packets
            // for a TUN device in practice, so they are refused.
            if ip.next_header() != IpProtocol::Tcp {
                return Err(malformed);
            }
            (true, ip.header_len(), ip.total_len())
        }
        _ => return Err(malformed),
    };
    let tcp = packet.get(ip_len..total).ok_or(malformed)?;
    let tcp = TcpPacket::new_checked(tcp).map_err(|_| malformed)?;
    Ok(Layout {
        v6,
        ip_len,
        tcp_len: usize::from(tcp.header_len()),
        total,
    })
}

/// The TCP pseudo-header sum of a packet whose layout is checked, for `tcp_bytes` of TCP.
fn pseudo_header_sum(packet: &[u8], v6: bool, tcp_bytes: usize) -> u64 {
    let initial = u64::from(u8::from(IpProtocol::Tcp)) + tcp_bytes as u64;
    if v6 {
        let ip = Ipv6Packet::new_unchecked(packet);
        sum_bytes(
            &ip.src_addr().octets(),
            sum_bytes(&ip.dst_addr().octets(), initial),
        )
    } else {
        let ip = Ipv4Packet::new_unchecked(packet);
        sum_bytes(
            &ip.src_addr().octets(),
            sum_bytes(&ip.dst_addr().octets(), initial),
        )
    }
}

fn segment_tcp(
    packet: &[u8],
    gso_size: u16,
    scratch: &mut [u8],
    mtu: usize,
    mut deliver: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let layout = layout(packet)?;
    let packet = &packet[..layout.total];
    let headers = layout.ip_len + layout.tcp_len;
    let mss = usize::from(gso_size);
    if mss == 0 || headers + mss > mtu || scratch.len() < headers + mss {
        return Err(OffloadError::Malformed);
    }
    let payload = &packet[headers..];
    let first = TcpPacket::new_unchecked(&packet[layout.ip_len..]);
    let seq = first.seq_number();
    let (fin, psh) = (first.fin(), first.psh());
    let ip_id = (!layout.v6).then(|| Ipv4Packet::new_unchecked(packet).ident());
    let count = payload.len().div_ceil(mss).max(1);
    for index in 0..count {
        let start = index * mss;
        let chunk = &payload[start.min(payload.len())..(start + mss).min(payload.len())];
        let len = headers + chunk.len();
        let segment = &mut scratch[..len];
        segment[..headers].copy_from_slice(&packet[..headers]);
        segment[headers..].copy_from_slice(chunk);
        match ip_id {
            None => Ipv6Packet::new_unchecked(&mut *segment).set_payload_len((len - 40) as u16),
            Some(ip_id) => {
                let mut ip = Ipv4Packet::new_unchecked(&mut *segment);
                ip.set_total_len(len as u16);
                ip.set_ident(ip_id.wrapping_add(index as u16));
                ip.fill_checksum();
            }
        }
        let last = index + 1 == count;
        let mut tcp = TcpPacket::new_unchecked(&mut segment[layout.ip_len..]);
        tcp.set_seq_number(seq + start);
        tcp.set_fin(fin && last);
        tcp.set_psh(psh && last);
        if index > 0 {
            tcp.set_cwr(false);
        }
        tcp.set_checksum(0);
        let tcp_bytes = len - layout.ip_len;
        let pseudo = pseudo_header_sum(segment, layout.v6, tcp_bytes);
        let checksum = !fold(sum_bytes(&segment[layout.ip_len..], pseudo));
        TcpPacket::new_unchecked(&mut segment[layout.ip_len..]).set_checksum(checksum);
        deliver(segment);
    }
    Ok(())
}

/// Most segments joined into one write.
const MAX_COALESCED: usize = 64;
/// Most bytes of one joined write (IP packet).
const MAX_COALESCED_LEN: usize = 65_535;
/// Flows kept open for joining at once; more are written out first.
const MAX_OPEN: usize = 64;
/// Frame buffers kept for reuse at most.
const MAX_FREE: usize = 2 * MAX_OPEN;

/// One write being built: a packet, perhaps with segments of the same flow joined to it.
#[derive(Debug)]
struct Entry {
    /// The `virtio_net_hdr` space, then the packet.
    buf: Vec<u8>,
    /// Whether more segments may join.
    open: bool,
    /// The layout of the first segment; `None` for a packet that joins nothing.
    layout: Option<Layout>,
    /// The payload size of each joined segment (the last may be shorter).
    segment: usize,
    count: usize,
    next_seq: TcpSeqNumber,
}

/// Joins consecutive TCP segments of one flow into large segments, written with a
/// `virtio_net_hdr` that asks the kernel to take them as one (GSO) packet. Other packets pass
/// as they are; order within a flow is kept. Frames come out of [`Coalescer::next_frame`] in
/// buffers that are reused.
#[derive(Debug, Default)]
pub struct Coalescer {
    entries: Vec<Entry>,
    /// Finished frames waiting to be written, oldest first.
    ready: VecDeque<Vec<u8>>,
    /// The frame [`Coalescer::next_frame`] lent last.
    lent: Option<Vec<u8>>,
    free: Vec<Vec<u8>>,
}

impl Coalescer {
    /// Takes a packet for the device; entries are finished early when too many flows are
    /// open.
    pub fn push(&mut self, packet: &[u8]) {
        let segment = Segment::parse(packet);
        if let Some(segment) = &segment {
            let joined = self
                .entries
                .iter_mut()
                .rev()
                .find(|entry| entry.same_flow(packet, segment))
                .is_some_and(|entry| entry.join(packet, segment));
            if joined {
                return;
            }
            // An entry of this flow that could not take it must not take later ones either.
            for entry in self.entries.iter_mut() {
                if entry.same_flow(packet, segment) {
                    entry.open = false;
                }
            }
        }
        if self.entries.len() >= MAX_OPEN {
            self.finish();
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&[0; VNET_HDR_LEN]);
        buf.extend_from_slice(packet);
        let entry = match segment {
            Some(segment) => Entry {
                buf,
                open: !segment.psh,
                layout: Some(segment.layout),
                segment: segment.payload_len,
                count: 1,
                next_seq: segment.seq + segment.payload_len,
            },
            None => Entry {
                buf,
                open: false,
                layout: None,
                segment: 0,
                count: 1,
                next_seq: TcpSeqNumber::default(),
            },
        };
        self.entries.push(entry);
    }

    /// Finishes every entry, in the order they came: their frames wait for
    /// [`Coalescer::next_frame`].
    pub fn finish(&mut self) {
        for mut entry in self.entries.drain(..) {
            entry.finish();
            self.ready.push_back(entry.buf);
        }
    }

    /// The next finished frame (a `virtio_net_hdr` and a packet), lent until the next call.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        if let Some(written) = self.lent.take() {
            if self.free.len() < MAX_FREE {
                self.free.push(written);
            }
        }
        let frame = self.ready.pop_front()?;
        Some(self.lent.insert(frame).as_slice())
    }

    /// Whether nothing waits, finished or not.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.ready.is_empty()
    }
}

/// What joining needs to know of a TCP segment, read from a packet that passed the checks
/// that make it joinable.
#[derive(Debug)]
struct Segment {
    layout: Layout,
    payload_len: usize,
    seq: TcpSeqNumber,
    psh: bool,
}

impl Segment {
    /// A TCP segment with data and only ACK (and perhaps PSH) set, no IP options or
    /// fragments, a whole header and a correct checksum; `None` for anything else.
    fn parse(packet: &[u8]) -> Option<Segment> {
        let layout = layout(packet).ok()?;
        if layout.total != packet.len() {
            return None;
        }
        if !layout.v6 {
            let ip = Ipv4Packet::new_unchecked(packet);
            if layout.ip_len != 20 || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
        }
        let tcp = TcpPacket::new_unchecked(&packet[layout.ip_len..]);
        let only_ack = tcp.ack()
            && !(tcp.syn() || tcp.fin() || tcp.rst() || tcp.urg() || tcp.ece() || tcp.cwr());
        let payload_len = packet.len() - layout.ip_len - layout.tcp_len;
        if !only_ack || payload_len == 0 {
            return None;
        }
        let tcp_bytes = packet.len() - layout.ip_len;
        let pseudo = pseudo_header_sum(packet, layout.v6, tcp_bytes);
        if fold(sum_bytes(&packet[layout.ip_len..], pseudo)) != 0xffff {
            return None;
        }
        Some(Segment {
            layout,
            payload_len,
            seq: tcp.seq_number(),
            psh: tcp.psh(),
        })
    }
}

impl Entry {
    fn packet(&self) -> &[u8] {
        &self.buf[VNET_HDR_LEN..]
    }

    /// Whether `packet` belongs to this entry's flow: same addresses, ports, and the IP and
    /// TCP header fields that joining keeps from the first segment.
    fn same_flow(&self, packet: &[u8], segment: &Segment) -> bool {
        let Some(layout) = self.layout else {
            return false;
        };
        if segment.layout.v6 != layout.v6 || segment.layout.tcp_len != layout.tcp_len {
            return false;
        }
        // Both packets passed `Segment::parse`: the views cannot panic.
        let first = self.packet();
        let ip_same = if layout.v6 {
            let (a, b) = (
                Ipv6Packet::new_unchecked(first),
                Ipv6Packet::new_unchecked(packet),
            );
            a.traffic_class() == b.traffic_class()
                && a.flow_label() == b.flow_label()
                && a.hop_limit() == b.hop_limit()
                && a.src_addr() == b.src_addr()
                && a.dst_addr() == b.dst_addr()
        } else {
            let (a, b) = (
                Ipv4Packet::new_unchecked(first),
                Ipv4Packet::new_unchecked(packet),
            );
            a.dscp() == b.dscp()
                && a.ecn() == b.ecn()
                && a.hop_limit() == b.hop_limit()
                && a.src_addr() == b.src_addr()
                && a.dst_addr() == b.dst_addr()
        };
        let a = TcpPacket::new_unchecked(&first[layout.ip_len..]);
        let b = TcpPacket::new_unchecked(&packet[layout.ip_len..]);
        ip_same
            && a.src_port() == b.src_port()
            && a.dst_port() == b.dst_port()
            && a.ack_number() == b.ack_number()
            && a.options() == b.options()
    }

    /// Appends `segment`'s payload if it continues this entry; says whether it did.
    fn join(&mut self, packet: &[u8], segment: &Segment) -> bool {
        let Some(layout) = self.layout else {
            return false;
        };
        let fits = self.count < MAX_COALESCED
            && self.buf.len() - VNET_HDR_LEN + segment.payload_len <= MAX_COALESCED_LEN;
        if !self.open || !fits || segment.seq != self.next_seq || segment.payload_len > self.segment
        {
            return false;
        }
        let incoming = TcpPacket::new_unchecked(&packet[segment.layout.ip_len..]);
        let window = incoming.window_len();
        self.buf.extend_from_slice(incoming.payload());
        self.count += 1;
        self.next_seq += segment.payload_len;
        // The window and PSH of the latest segment are the ones that count.
        let mut tcp = TcpPacket::new_unchecked(&mut self.buf[VNET_HDR_LEN + layout.ip_len..]);
        if segment.psh {
            tcp.set_psh(true);
        }
        tcp.set_window_len(window);
        if segment.payload_len < self.segment || segment.psh {
            self.open = false;
        }
        true
    }

    /// Rewrites the headers of a joined entry and fills in the `virtio_net_hdr`.
    fn finish(&mut self) {
        let Some(layout) = self.layout.filter(|_| self.count >= 2) else {
            return;
        };
        let len = self.buf.len() - VNET_HDR_LEN;
        let (header, packet) = self.buf.split_at_mut(VNET_HDR_LEN);
        if layout.v6 {
            Ipv6Packet::new_unchecked(&mut *packet).set_payload_len((len - 40) as u16);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
            ip.set_total_len(len as u16);
            ip.fill_checksum();
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel does the rest.
        let pseudo = fold(pseudo_header_sum(packet, layout.v6, len - layout.ip_len));
        TcpPacket::new_unchecked(&mut packet[layout.ip_len..]).set_checksum(pseudo);
        let vnet = VnetHeader {
            flags: FLAG_NEEDS_CSUM,
            gso_type: if layout.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            header_len: (layout.ip_len + layout.tcp_len) as u16,
            gso_size: self.segment as u16,
            csum_start: layout.ip_len as u16,
            csum_offset: TCP_CHECKSUM_OFFSET,
        };
        if let Ok(bytes) = <&mut [u8; VNET_HDR_LEN]>::try_from(header) {
            vnet.emit(bytes);
        }
    }
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words, added to `initial`,
/// not yet folded. The sum does not depend on byte order (RFC 1071), so the bulk is added as
/// 32-bit words in the machine's order, which the compiler vectorises, and only the folded
/// result is turned into network order.
fn sum_bytes(bytes: &[u8], initial: u64) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let native: u64 = (&mut words)
        .map(|word| u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]])))
        .sum();
    let mut sum = initial + u64::from(u16::from_be(fold(native)));
    let mut rest = words.remainder().chunks_exact(2);
    for pair in &mut rest {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, Ipv4Header, Ipv6Header, PacketHeaders, TcpHeader, TransportHeader,
    };

    const TCP_FIN: u8 = 0x01;
    const TCP_PSH: u8 = 0x08;
    const TCP_CWR: u8 = 0x80;

    /// Everything the coalescer holds, finished, as frames.
    fn drain(coalescer: &mut Coalescer) -> Vec<Vec<u8>> {
        coalescer.finish();
        std::iter::from_fn(|| coalescer.next_frame().map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn sums_match_the_word_by_word_definition() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 167 + 13) as u8).collect();
        for start in 0..4 {
            for end in start..bytes.len() {
                let slice = &bytes[start..end];
                let mut expected = 0xfffe_u64;
                for pair in slice.chunks(2) {
                    expected +=
                        u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
                }
                assert_eq!(
                    fold(sum_bytes(slice, 0xfffe)),
                    fold(expected),
                    "{start}..{end}"
                );
            }
        }
    }

    /// A TCP/IP packet with `payload` bytes (0, 1, 2, … mod 251) and the given flags; the TCP
    /// checksum holds only the pseudo-header sum, as the kernel leaves it.
    fn big_packet(v6: bool, payload: usize, flags: u8) -> Vec<u8> {
        let mut tcp = TcpHeader::new(40000, 5201, 1_000_000, 64000);
        tcp.fin = flags & TCP_FIN != 0;
        tcp.psh = flags & TCP_PSH != 0;
        tcp.cwr = flags & TCP_CWR != 0;
        tcp.ack = true;
        tcp.acknowledgment_number = 77;
        let data: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
        let tcp_len = tcp.header_len() + payload;
        let mut packet = Vec::new();
        if v6 {
            let ip = Ipv6Header {
                payload_length: tcp_len as u16,
                next_header: etherparse::IpNumber::TCP,
                hop_limit: 64,
                source: "fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                destination: "fd99::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                ..Default::default()
            };
            ip.write(&mut packet).unwrap();
        } else {
            let mut ip = Ipv4Header::new(
                tcp_len as u16,
                64,
                etherparse::IpNumber::TCP,
                [10, 77, 0, 2],
                [10, 99, 0, 1],
            )
            .unwrap();
            ip.identification = 500;
            ip.header_checksum = ip.calc_header_checksum();
            ip.write(&mut packet).unwrap();
        }
        tcp.write(&mut packet).unwrap();
        packet.extend_from_slice(&data);
        // The pseudo-header sum, not complemented, as with CHECKSUM_PARTIAL.
        let ip_len = if v6 { 40 } else { 20 };
        let pseudo = if v6 {
            sum_bytes(&packet[8..40], 6 + tcp_len as u64)
        } else {
            sum_bytes(&packet[12..20], 6 + tcp_len as u64)
        };
        packet[ip_len + 16..ip_len + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        packet
    }

    fn frame(gso_type: u8, gso_size: u16, packet: &[u8], ip_len: usize) -> Vec<u8> {
        let mut frame = vec![FLAG_NEEDS_CSUM, gso_type, 0, 0];
        frame.extend_from_slice(&gso_size.to_le_bytes());
        frame.extend_from_slice(&(ip_len as u16).to_le_bytes());
        frame.extend_from_slice(&16u16.to_le_bytes());
        frame.extend_from_slice(packet);
        frame
    }

    /// Checks every segment with etherparse and returns (seq, flags, payload) of each.
    fn check(segments: &[Vec<u8>], v6: bool) -> Vec<(u32, bool, bool, Vec<u8>)> {
        segments
            .iter()
            .map(|segment| {
                let parsed = PacketHeaders::from_ip_slice(segment).unwrap();
                let Some(TransportHeader::Tcp(tcp)) = parsed.transport else {
                    panic!("not TCP");
                };
                let payload = parsed.payload.slice().to_vec();
                let expected = match parsed.net.unwrap() {
                    etherparse::NetHeaders::Ipv4(ip, _) => {
                        assert!(!v6);
                        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                        assert_eq!(usize::from(ip.total_len), segment.len());
                        tcp.calc_checksum_ipv4(&ip, &payload).unwrap()
                    }
                    etherparse::NetHeaders::Ipv6(ip, _) => {
                        assert!(v6);
                        assert_eq!(usize::from(ip.payload_length) + 40, segment.len());
                        tcp.calc_checksum_ipv6(&ip, &payload).unwrap()
                    }
                    other => panic!("not IP: {other:?}"),
                };
                assert_eq!(tcp.checksum, expected, "TCP checksum");
                (tcp.sequence_number, tcp.fin, tcp.psh, payload)
            })
            .collect()
    }

    #[test]
    fn large_segments_are_cut_at_the_mss_with_headers_and_checksums_right() {
        for v6 in [false, true] {
            let ip_len = if v6 { 40 } else { 20 };
            let packet = big_packet(v6, 3000, TCP_FIN | TCP_PSH | TCP_CWR);
            let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
            let mut frame = frame(gso, 1288, &packet, ip_len);
            let mut scratch = vec![0u8; 1348];
            let mut segments = Vec::new();
            split(&mut frame, &mut scratch, 1348, |s| {
                segments.push(s.to_vec())
            })
            .unwrap();
            let checked = check(&segments, v6);
            assert_eq!(checked.len(), 3);
            let sizes: Vec<usize> = checked.iter().map(|c| c.3.len()).collect();
            assert_eq!(sizes, [1288, 1288, 424]);
            assert_eq!(
                checked.iter().map(|c| c.0).collect::<Vec<_>>(),
                [1_000_000, 1_001_288, 1_002_576]
            );
            assert_eq!(
                checked.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
                [(false, false), (false, false), (true, true)],
                "FIN and PSH only on the last"
            );
            let joined: Vec<u8> = checked.iter().flat_map(|c| c.3.clone()).collect();
            assert_eq!(joined, packet[ip_len + 20..]);
            if !v6 {
                let ids: Vec<u16> = segments
                    .iter()
                    .map(|s| u16::from_be_bytes([s[4], s[5]]))
                    .collect();
                assert_eq!(ids, [500, 501, 502]);
            }
        }
    }

    #[test]
    fn partial_checksums_are_completed() {
        for v6 in [false, true] {
            let ip_len = if v6 { 40 } else { 20 };
            let packet = big_packet(v6, 100, TCP_PSH);
            let mut frame = frame(GSO_NONE, 0, &packet, ip_len);
            let mut scratch = vec![0u8; 1348];
            let mut segments = Vec::new();
            split(&mut frame, &mut scratch, 1348, |s| {
                segments.push(s.to_vec())
            })
            .unwrap();
            assert_eq!(check(&segments, v6).len(), 1);
        }
    }

    /// Cuts `packet` (a big segment from `big_packet`) into segments of `mss` with correct
    /// checksums, as a sender would have sent them.
    fn segments_of(packet: &[u8], v6: bool, mss: u16) -> Vec<Vec<u8>> {
        let ip_len = if v6 { 40 } else { 20 };
        let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        let mut frame = frame(gso, mss, packet, ip_len);
        let mut scratch = vec![0u8; 1500];
        let mut segments = Vec::new();
        split(&mut frame, &mut scratch, 1500, |s| {
            segments.push(s.to_vec())
        })
        .unwrap();
        segments
    }

    #[test]
    fn consecutive_segments_are_joined_and_cut_back_into_the_same() {
        for v6 in [false, true] {
            let ip_len = if v6 { 40 } else { 20 };
            let packet = big_packet(v6, 5000, TCP_PSH);
            let segments = segments_of(&packet, v6, 1200);
            assert_eq!(segments.len(), 5);
            let mut coalescer = Coalescer::default();
            for segment in &segments {
                coalescer.push(segment);
            }
            let frames = drain(&mut coalescer);
            assert_eq!(frames.len(), 1, "one write for the whole run");
            let header = VnetHeader::parse(&frames[0]).unwrap();
            assert_eq!(header.gso_size, 1200);
            assert_eq!(header.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            // What the kernel would do with it: cut it again, and get the same segments.
            let mut again = frames[0].clone();
            let mut scratch = vec![0u8; 1500];
            let mut resegmented = Vec::new();
            split(&mut again, &mut scratch, 1500, |s| {
                resegmented.push(s.to_vec())
            })
            .unwrap();
            let checked = check(&resegmented, v6);
            let original = check(&segments, v6);
            assert_eq!(checked, original);
            assert_eq!(resegmented.len(), 5);
            let _ = ip_len;
        }
    }

    #[test]
    fn gaps_other_flows_and_odd_packets_keep_their_order() {
        let packet = big_packet(false, 4800, 0);
        let segments = segments_of(&packet, false, 1200);
        let other = segments_of(&big_packet(true, 2400, 0), true, 1200);
        let mut bad = segments[3].clone();
        bad[30] ^= 0xff; // a payload byte: the checksum no longer matches
        let udp = super::super::filter::tests::packet("10.77.0.2", "10.99.0.1", 10);
        // 0 1 | other0 | 3 (a gap after 1) | udp | bad 3 | other1 (joins other0)
        let input = [
            &segments[0],
            &segments[1],
            &other[0],
            &segments[3],
            &udp,
            &bad,
            &other[1],
        ];
        let mut coalescer = Coalescer::default();
        for packet in input {
            coalescer.push(packet);
        }
        assert!(!coalescer.is_empty());
        let frames = drain(&mut coalescer);
        assert!(coalescer.is_empty());
        let counts: Vec<usize> = frames
            .iter()
            .map(|f| {
                let header = VnetHeader::parse(f).unwrap();
                if header.gso_size == 0 {
                    1
                } else {
                    (f.len() - VNET_HDR_LEN - 40 - 32).div_ceil(1200).max(1)
                }
            })
            .collect();
        assert_eq!(frames.len(), 5, "{counts:?}");
        assert_eq!(&frames[2][VNET_HDR_LEN..], segments[3].as_slice());
        assert_eq!(&frames[3][VNET_HDR_LEN..], udp.as_slice());
        assert_eq!(&frames[4][VNET_HDR_LEN..], bad.as_slice());
        assert_eq!(
            VnetHeader::parse(&frames[0]).unwrap().gso_size,
            1200,
            "0 and 1 joined"
        );
        assert_eq!(
            VnetHeader::parse(&frames[1]).unwrap().gso_size,
            1200,
            "other 0 and 1 joined"
        );
    }

    #[test]
    fn mangled_frames_and_packets_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good: Vec<Vec<u8>> = [false, true]
            .iter()
            .flat_map(|v6| {
                let packet = big_packet(*v6, 3000, TCP_PSH);
                let gso = if *v6 { GSO_TCPV6 } else { GSO_TCPV4 };
                [frame(gso, 1200, &packet, if *v6 { 40 } else { 20 }), packet]
            })
            .collect();
        let mut scratch = vec![0u8; 1348];
        let mut coalescer = Coalescer::default();
        for round in 0..20_000 {
            let mut bytes = good[round % good.len()].clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1));
            let _ = split(&mut bytes.clone(), &mut scratch, 1348, |p| {
                assert!(p.len() <= bytes.len());
            });
            coalescer.push(&bytes);
            if round % 7 == 0 {
                for frame in drain(&mut coalescer) {
                    assert!(frame.len() <= MAX_COALESCED_LEN + VNET_HDR_LEN);
                }
            }
        }
    }

    #[test]
    fn nonsense_is_refused() {
        let mut scratch = vec![0u8; 1348];
        let mut nothing = |_: &[u8]| panic!("nothing should come out");
        assert_eq!(
            split(&mut [0; 5], &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Malformed)
        );
        let packet = big_packet(false, 3000, 0);
        let mut too_big = frame(GSO_TCPV4, 1400, &packet, 20);
        assert_eq!(
            split(&mut too_big, &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Malformed)
        );
        let mut zero = frame(GSO_TCPV4, 0, &packet, 20);
        assert_eq!(
            split(&mut zero, &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Malformed)
        );
        let mut udp = frame(3, 1000, &packet, 20);
        assert_eq!(
            split(&mut udp, &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Unsupported)
        );
        let mut truncated = frame(GSO_TCPV4, 1000, &packet[..30], 20);
        assert_eq!(
            split(&mut truncated, &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Malformed)
        );
        let mut bad_csum = frame(GSO_NONE, 0, &packet[..40], 20);
        bad_csum[8..10].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(
            split(&mut bad_csum, &mut scratch, 1348, &mut nothing),
            Err(OffloadError::Malformed)
        );
        let _ = IpHeaders::from_slice(&packet);
    }
}
