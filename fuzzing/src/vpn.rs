//! What the VPN apps read from outside: the lease protocol's messages from the other end of a
//! mesh stream, and the packets that peers and the kernel hand the tunnel.

use skywire_dataplane::vpn::filter;
use skywire_dataplane::vpn::lease::{Grant, Message, Refusal};
use skywire_dataplane::vpn::offload::{split, Coalescer, VNET_HDR_LEN};

use crate::{records, Seed};

/// The inner MTU: the largest packet a route carries.
const MTU: usize = 1348;
/// A record of [`vpn_packets`] that holds an inner packet (and so does every even kind).
const PACKET: u8 = 0;
/// A record of [`vpn_packets`] that holds a TUN frame (and so does every odd kind).
const FRAME: u8 = 1;

/// A lease message: parsing never panics, and every message it accepts re-emits to exactly the
/// bytes it took.
pub fn vpn_lease(data: &[u8]) -> bool {
    let Ok((message, used)) = Message::parse(data) else {
        return false;
    };
    assert_eq!(message.to_bytes(), data[..used]);
    true
}

/// What peers and the kernel hand the VPN, as records (see [`records`]): inner packets (even
/// kinds) for the source and destination checks and the coalescer, which joins a flow's
/// consecutive TCP segments into one frame for the TUN device; and frames read from a TUN
/// device with offload (odd kinds) for the segmenter. Nothing panics, nothing comes out larger
/// than allowed. Accepted when the checks read a packet's addresses or the segmenter took a
/// frame.
pub fn vpn_packets(data: &[u8]) -> bool {
    let largest_frame = VNET_HDR_LEN + usize::from(u16::MAX);
    let mut coalescer = Coalescer::default();
    let mut scratch = vec![0u8; MTU];
    let mut accepted = false;
    for (kind, bytes) in records::split(data) {
        if kind % 2 == PACKET {
            // A route carries no larger packet.
            let packet = bytes.get(..MTU).unwrap_or(bytes);
            accepted |= filter::addresses(packet).is_some();
            coalescer.push(packet);
            while let Some(frame) = coalescer.next_frame() {
                assert!(frame.len() <= largest_frame);
            }
        } else {
            let mut frame = bytes.to_vec();
            let unsegmented = bytes.len().saturating_sub(VNET_HDR_LEN);
            let split = split(&mut frame, &mut scratch, MTU, |packet| {
                assert!(packet.len() <= MTU || packet.len() == unsegmented)
            });
            accepted |= split.is_ok();
        }
    }
    coalescer.finish();
    while let Some(frame) = coalescer.next_frame() {
        assert!(frame.len() <= largest_frame);
    }
    accepted
}

/// Every kind of lease message.
pub fn vpn_lease_seeds() -> Vec<Seed> {
    let grant = Grant {
        ipv4: Some(("10.77.0.2".parse().expect("an address"), 24)),
        ipv6: Some(("fd77:736b::2".parse().expect("an address"), 64)),
        mtu: 1348,
    };
    [
        ("request", Message::Request),
        ("grant", Message::Grant(grant)),
        (
            "grant_ipv6",
            Message::Grant(Grant {
                ipv4: None,
                ..grant
            }),
        ),
        ("refusal", Message::Refusal(Refusal::NotAllowed)),
    ]
    .into_iter()
    .map(|(name, message)| Seed::new(format!("{name}.bin"), message.to_bytes()))
    .collect()
}

/// Runs of a flow's TCP segments over IPv4 and IPv6, a UDP packet, and the frames the coalescer
/// makes of those runs (what the segmenter reads from a TUN device with offload).
pub fn vpn_packets_seeds() -> Vec<Seed> {
    let mut seeds = vec![Seed::new("udp6.rec", record(PACKET, &udp6_packet(b"data")))];
    for (family, v6) in [(4, false), (6, true)] {
        let segments: Vec<Vec<u8>> = (0..4u8)
            .map(|index| {
                let seq = 1_000 + u32::from(index) * 1200;
                tcp_packet(v6, seq, &[index; 1200])
            })
            .collect();
        let mut coalescer = Coalescer::default();
        let mut frames = Vec::new();
        let mut run = Vec::new();
        for packet in &segments {
            records::push(&mut run, PACKET, packet);
            coalescer.push(packet);
        }
        coalescer.finish();
        while let Some(frame) = coalescer.next_frame() {
            frames.push(frame.to_vec());
        }
        seeds.push(Seed::new(format!("tcp{family}.rec"), run));
        for (index, frame) in frames.iter().enumerate() {
            let name = format!("gso_frame{family}_{index}.rec");
            seeds.push(Seed::new(name, record(FRAME, frame)));
        }
    }
    seeds
}

fn record(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    records::push(&mut out, kind, bytes);
    out
}

fn tcp_packet(v6: bool, seq: u32, payload: &[u8]) -> Vec<u8> {
    let builder = if v6 {
        let src = "fd77:736b::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("an address");
        let dst = "fd99::1".parse::<std::net::Ipv6Addr>().expect("an address");
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
    } else {
        etherparse::PacketBuilder::ipv4([10, 77, 0, 2], [10, 99, 0, 1], 64)
    };
    let builder = builder.tcp(40_000, 5201, seq, 64_000).ack(77);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).expect("a small packet");
    packet
}

fn udp6_packet(payload: &[u8]) -> Vec<u8> {
    let src = "fd77:736b::2"
        .parse::<std::net::Ipv6Addr>()
        .expect("an address");
    let dst = "fd99::1".parse::<std::net::Ipv6Addr>().expect("an address");
    let builder = etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(5353, 53);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).expect("a small packet");
    packet
}

/// A UDP packet from a VPN client's IPv4 address.
pub(crate) fn udp4_packet(payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4([10, 77, 0, 2], [10, 99, 0, 1], 64).udp(5353, 53);
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut packet, payload).expect("a small packet");
    packet
}
