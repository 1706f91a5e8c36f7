//! TUN offload: the kernel hands a TUN device opened with `IFF_VNET_HDR` and TSO on one large
//! TCP segment (up to 64 KiB, a `virtio_net_hdr` in front) where it would have sent dozens of
//! MTU-sized packets; this module cuts it into those packets (IP and TCP headers rewritten,
//! checksums computed), and completes the checksum of packets that the kernel left partial.
//! The other way, [`Coalescer`] joins consecutive segments of one TCP flow into one large
//! segment for the kernel to take in one write (what GRO does for a network card).

/// The `virtio_net_hdr` in front of every packet read from or written to the device.
pub const VNET_HDR_LEN: usize = 10;

const FLAG_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

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
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
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
/// the sum over everything from `start` on, complemented, goes there.
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

/// Where the headers of a TCP/IP packet are.
struct Layout {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
}

fn layout(packet: &[u8]) -> Result<Layout, OffloadError> {
    let malformed = OffloadError::Malformed;
    let version = packet.first().ok_or(malformed)? >> 4;
    let (v6, ip_len, protocol) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            (false, ihl, *packet.get(9).ok_or(malformed)?)
        }
        // Extension headers would need walking; the kernel does not segment such packets
        // for a TUN device in practice, so they are refused.
        6 => (true, 40, *packet.get(6).ok_or(malformed)?),
        _ => return Err(malformed),
    };
    if protocol != 6 || ip_len < 20 {
        return Err(malformed);
    }
    let offset_byte = *packet.get(ip_len + 12).ok_or(malformed)?;
    let tcp_len = usize::from(offset_byte >> 4) * 4;
    if tcp_len < 20 || ip_len + tcp_len > packet.len() {
        return Err(malformed);
    }
    Ok(Layout {
        v6,
        ip_len,
        tcp_len,
    })
}

fn segment_tcp(
    packet: &[u8],
    gso_size: u16,
    scratch: &mut [u8],
    mtu: usize,
    mut deliver: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let layout = layout(packet)?;
    let headers = layout.ip_len + layout.tcp_len;
    let mss = usize::from(gso_size);
    if mss == 0 || headers + mss > mtu || scratch.len() < headers + mss {
        return Err(OffloadError::Malformed);
    }
    let payload = &packet[headers..];
    let seq = u32::from_be_bytes([
        packet[layout.ip_len + 4],
        packet[layout.ip_len + 5],
        packet[layout.ip_len + 6],
        packet[layout.ip_len + 7],
    ]);
    let flags = packet[layout.ip_len + 13];
    let ip_id = u16::from_be_bytes([packet[4], packet[5]]);
    let count = payload.len().div_ceil(mss).max(1);
    for index in 0..count {
        let start = index * mss;
        let chunk = &payload[start.min(payload.len())..(start + mss).min(payload.len())];
        let len = headers + chunk.len();
        let segment = &mut scratch[..len];
        segment[..headers].copy_from_slice(&packet[..headers]);
        segment[headers..].copy_from_slice(chunk);
        if layout.v6 {
            let payload_len = (len - 40) as u16;
            segment[4..6].copy_from_slice(&payload_len.to_be_bytes());
        } else {
            segment[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            segment[4..6].copy_from_slice(&ip_id.wrapping_add(index as u16).to_be_bytes());
            segment[10..12].copy_from_slice(&[0, 0]);
            let checksum = !fold(sum_bytes(&segment[..layout.ip_len], 0));
            segment[10..12].copy_from_slice(&checksum.to_be_bytes());
        }
        let tcp = layout.ip_len;
        let segment_seq = seq.wrapping_add(start as u32);
        segment[tcp + 4..tcp + 8].copy_from_slice(&segment_seq.to_be_bytes());
        let mut segment_flags = flags;
        if index + 1 < count {
            segment_flags &= !(TCP_FIN | TCP_PSH);
        }
        if index > 0 {
            segment_flags &= !TCP_CWR;
        }
        segment[tcp + 13] = segment_flags;
        segment[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let tcp_bytes = (len - tcp) as u64;
        let pseudo = if layout.v6 {
            sum_bytes(&segment[8..40], 6 + tcp_bytes)
        } else {
            sum_bytes(&segment[12..20], 6 + tcp_bytes)
        };
        let checksum = !fold(sum_bytes(&segment[tcp..], pseudo));
        segment[tcp + 16..tcp + 18].copy_from_slice(&checksum.to_be_bytes());
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
const TCP_ACK: u8 = 0x10;

/// One write being built: a packet, perhaps with segments of the same flow joined to it.
#[derive(Debug)]
struct Entry {
    /// The `virtio_net_hdr` space, then the packet.
    buf: Vec<u8>,
    /// Whether more segments may join.
    open: bool,
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    /// The payload size of each joined segment (the last may be shorter).
    segment: usize,
    count: usize,
    next_seq: u32,
}

/// Joins consecutive TCP segments of one flow into large segments, written with a
/// `virtio_net_hdr` that asks the kernel to take them as one (GSO) packet. Other packets pass
/// as they are; order within a flow is kept.
#[derive(Debug, Default)]
pub struct Coalescer {
    entries: Vec<Entry>,
    free: Vec<Vec<u8>>,
}

impl Coalescer {
    /// Takes a packet for the device; `write` gets frames (header and packet) when entries
    /// must make room.
    pub fn push(&mut self, packet: &[u8], mut write: impl FnMut(&[u8])) {
        if let Some(segment) = Segment::parse(packet) {
            let joined = self
                .entries
                .iter_mut()
                .rev()
                .find(|entry| entry.same_flow(packet, &segment))
                .is_some_and(|entry| entry.join(packet, &segment));
            if joined {
                return;
            }
            // An entry of this flow that could not take it must not take later ones either.
            for entry in self.entries.iter_mut() {
                if entry.same_flow(packet, &segment) {
                    entry.open = false;
                }
            }
        }
        if self.entries.len() >= MAX_OPEN {
            self.flush(&mut write);
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&[0; VNET_HDR_LEN]);
        buf.extend_from_slice(packet);
        let entry = match Segment::parse(packet) {
            Some(segment) => Entry {
                buf,
                open: segment.flags & TCP_PSH == 0,
                v6: segment.v6,
                ip_len: segment.ip_len,
                tcp_len: segment.tcp_len,
                segment: segment.payload_len,
                count: 1,
                next_seq: segment.seq.wrapping_add(segment.payload_len as u32),
            },
            None => Entry {
                buf,
                open: false,
                v6: false,
                ip_len: 0,
                tcp_len: 0,
                segment: 0,
                count: 1,
                next_seq: 0,
            },
        };
        self.entries.push(entry);
    }

    /// Writes out everything, in the order it came.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8])) {
        for mut entry in self.entries.drain(..) {
            entry.finish();
            write(&entry.buf);
            self.free.push(entry.buf);
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What joining needs to know of a TCP segment, read from a packet that passed the checks
/// that make it joinable.
#[derive(Debug)]
struct Segment {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    payload_len: usize,
    seq: u32,
    flags: u8,
}

impl Segment {
    /// A TCP segment with data and only ACK (and perhaps PSH) set, no IP options or
    /// fragments, a whole header and a correct checksum; `None` for anything else.
    fn parse(packet: &[u8]) -> Option<Segment> {
        let layout = layout(packet).ok()?;
        let total = if layout.v6 {
            40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]))
        } else {
            if layout.ip_len != 20 || u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
                return None;
            }
            usize::from(u16::from_be_bytes([packet[2], packet[3]]))
        };
        if total != packet.len() {
            return None;
        }
        let tcp = layout.ip_len;
        let flags = packet[tcp + 13];
        let payload_len = packet.len() - tcp - layout.tcp_len;
        if flags & !TCP_PSH != TCP_ACK || payload_len == 0 {
            return None;
        }
        let tcp_bytes = (packet.len() - tcp) as u64;
        let pseudo = if layout.v6 {
            sum_bytes(&packet[8..40], 6 + tcp_bytes)
        } else {
            sum_bytes(&packet[12..20], 6 + tcp_bytes)
        };
        if fold(sum_bytes(&packet[tcp..], pseudo)) != 0xffff {
            return None;
        }
        Some(Segment {
            v6: layout.v6,
            ip_len: layout.ip_len,
            tcp_len: layout.tcp_len,
            payload_len,
            seq: u32::from_be_bytes([
                packet[tcp + 4],
                packet[tcp + 5],
                packet[tcp + 6],
                packet[tcp + 7],
            ]),
            flags,
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
        if self.tcp_len == 0 || segment.v6 != self.v6 || segment.tcp_len != self.tcp_len {
            return false;
        }
        let first = self.packet();
        let (ip, tcp) = (self.ip_len, self.ip_len);
        let ip_same = if self.v6 {
            // Version, traffic class, flow label; hop limit; addresses.
            first[..4] == packet[..4] && first[7] == packet[7] && first[8..40] == packet[8..40]
        } else {
            // TOS, TTL and protocol, addresses.
            first[1] == packet[1]
                && first[8..10] == packet[8..10]
                && first[12..20] == packet[12..20]
        };
        // Ports, then the ack number, then the options.
        ip_same
            && first[tcp..tcp + 4] == packet[tcp..tcp + 4]
            && first[tcp + 8..tcp + 12] == packet[tcp + 8..tcp + 12]
            && first[tcp + 20..ip + self.tcp_len] == packet[tcp + 20..ip + self.tcp_len]
    }

    /// Appends `segment`'s payload if it continues this entry; says whether it did.
    fn join(&mut self, packet: &[u8], segment: &Segment) -> bool {
        let fits = self.count < MAX_COALESCED
            && self.buf.len() - VNET_HDR_LEN + segment.payload_len <= MAX_COALESCED_LEN;
        if !self.open || !fits || segment.seq != self.next_seq || segment.payload_len > self.segment
        {
            return false;
        }
        self.buf
            .extend_from_slice(&packet[segment.ip_len + segment.tcp_len..]);
        self.count += 1;
        self.next_seq = self.next_seq.wrapping_add(segment.payload_len as u32);
        let tcp = VNET_HDR_LEN + self.ip_len;
        // The window and PSH of the latest segment are the ones that count.
        self.buf[tcp + 13] |= segment.flags & TCP_PSH;
        self.buf[tcp + 14..tcp + 16]
            .copy_from_slice(&packet[segment.ip_len + 14..segment.ip_len + 16]);
        if segment.payload_len < self.segment || segment.flags & TCP_PSH != 0 {
            self.open = false;
        }
        true
    }

    /// Rewrites the headers of a joined entry and fills in the `virtio_net_hdr`.
    fn finish(&mut self) {
        if self.count < 2 {
            return;
        }
        let len = self.buf.len() - VNET_HDR_LEN;
        let (ip_len, tcp_len, segment, v6) = (self.ip_len, self.tcp_len, self.segment, self.v6);
        let packet = &mut self.buf[VNET_HDR_LEN..];
        if v6 {
            packet[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            packet[10..12].copy_from_slice(&[0, 0]);
            let checksum = !fold(sum_bytes(&packet[..20], 0));
            packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel does the rest.
        let tcp_bytes = (len - ip_len) as u64;
        let pseudo = if v6 {
            sum_bytes(&packet[8..40], 6 + tcp_bytes)
        } else {
            sum_bytes(&packet[12..20], 6 + tcp_bytes)
        };
        packet[ip_len + 16..ip_len + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        let header = &mut self.buf[..VNET_HDR_LEN];
        header[0] = FLAG_NEEDS_CSUM;
        header[1] = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        header[2..4].copy_from_slice(&((ip_len + tcp_len) as u16).to_le_bytes());
        header[4..6].copy_from_slice(&(segment as u16).to_le_bytes());
        header[6..8].copy_from_slice(&(ip_len as u16).to_le_bytes());
        header[8..10].copy_from_slice(&16u16.to_le_bytes());
    }
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words, added to `initial`,
/// not yet folded.
fn sum_bytes(bytes: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_be_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        sum += (word >> 48) + ((word >> 32) & 0xffff) + ((word >> 16) & 0xffff) + (word & 0xffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
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
            let mut frames = Vec::new();
            for segment in &segments {
                coalescer.push(segment, |f| frames.push(f.to_vec()));
            }
            coalescer.flush(|f| frames.push(f.to_vec()));
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
        let mut frames = Vec::new();
        for packet in input {
            coalescer.push(packet, |f| frames.push(f.to_vec()));
        }
        assert!(!coalescer.is_empty());
        coalescer.flush(|f| frames.push(f.to_vec()));
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
            coalescer.push(&bytes, |frame| {
                assert!(frame.len() <= MAX_COALESCED_LEN + VNET_HDR_LEN)
            });
            if round % 7 == 0 {
                coalescer.flush(|frame| assert!(frame.len() <= MAX_COALESCED_LEN + VNET_HDR_LEN));
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
