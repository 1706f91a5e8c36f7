//! What neighbours send a node, as wire formats: mesh packets and the control messages they
//! carry, and the sorting of what a route session decrypted. (The node that takes them is
//! `node`'s target; the adverts' own checks are `advert`'s.)

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use skywire_dataplane::session::{classify, Destination};
use skywire_dataplane::wire::control::emit_control_packet;
use skywire_dataplane::wire::mesh::{relay_in_place, route_id_of, HEADER_LEN};
use skywire_dataplane::wire::{ControlMessage, MeshHeader, MeshPacket, NextHeader};
use skywire_dataplane::{NodeKey, RouteId, MAX_DATAGRAM};

use crate::{advert, key, Seed, NODE_SECRET, PEER_SECRET};

/// A control message, as neighbours exchange it: parsing never panics, and every message it
/// accepts re-emits to exactly the bytes it came from.
pub fn control_message(data: &[u8]) -> bool {
    let Ok(message) = ControlMessage::parse(data) else {
        return false;
    };
    assert_eq!(message.buffer_len(), data.len());
    let mut again = vec![0u8; message.buffer_len()];
    assert_eq!(message.emit(&mut again), Ok(data.len()));
    assert_eq!(again, data);
    true
}

/// A mesh packet: the relay's peek and rewrite, the checked view and its getters never panic,
/// and every packet the view accepts re-emits to the same bytes.
pub fn mesh_packet(data: &[u8]) -> bool {
    let _ = route_id_of(data);
    let mut relayed = data.to_vec();
    let next = RouteId::new(0x5a5a5).expect("fits 20 bits");
    if relay_in_place(&mut relayed, next).is_ok() {
        assert_eq!(relayed.get(8..), data.get(8..));
        assert_eq!(route_id_of(&relayed), Some(next));
    }

    let Ok(packet) = MeshPacket::new_checked(data) else {
        return false;
    };
    let header = MeshHeader::parse(&packet);
    assert_eq!(packet.total_len(), data.len());
    assert_eq!(packet.payload().len(), header.payload_len);
    let _ = (packet.traffic_class(), packet.src_addr(), packet.dst_addr());

    let mut again = vec![0u8; header.buffer_len()];
    header
        .emit(&mut again)
        .expect("an accepted header re-emits");
    again[HEADER_LEN..].copy_from_slice(packet.payload());
    // The representation leaves the traffic class out: nodes emit 0.
    let mut expected = data.to_vec();
    expected[0] &= 0xf0;
    expected[1] &= 0x0f;
    assert_eq!(again, expected);

    if header.next_header == NextHeader::Control {
        let _ = ControlMessage::parse(packet.payload());
    }
    true
}

/// What a route session decrypted, sorted by its addresses: a packet goes to the node's mesh
/// stack only when it comes from the peer's mesh address to the node's own, and an IPv6 packet
/// to a tunnel is a whole header addressed elsewhere. Accepted when it is not dropped.
pub fn session_classify(data: &[u8]) -> bool {
    // Derived once: a key's mesh address costs more than the classification.
    static ADDRESSES: LazyLock<(Ipv6Addr, Ipv6Addr)> = LazyLock::new(|| {
        (
            key(PEER_SECRET).mesh_address(),
            key(NODE_SECRET).mesh_address(),
        )
    });
    let (peer, own) = *ADDRESSES;
    let destination = classify(data, peer, own);
    match destination {
        Destination::MeshStack => {
            assert_eq!(data.get(8..24), Some(&peer.octets()[..]));
            assert_eq!(data.get(24..40), Some(&own.octets()[..]));
        }
        Destination::Tunnel if data[0] >> 4 == 6 => {
            assert!(data.len() >= 40);
            assert_ne!(data.get(24..40), Some(&own.octets()[..]));
        }
        Destination::Tunnel | Destination::Drop => {}
    }
    destination != Destination::Drop
}

// ----- seeds -----

/// Control messages of every type.
pub fn control_message_seeds() -> Vec<Seed> {
    sample_messages()
        .into_iter()
        .map(|(name, message)| {
            let mut bytes = vec![0u8; message.buffer_len()];
            message.emit(&mut bytes).expect("a valid message");
            Seed::new(format!("{name}.bin"), bytes)
        })
        .collect()
}

/// Mesh packets carrying control messages, a session message, and an inner packet on a
/// direct route.
pub fn mesh_packet_seeds() -> Vec<Seed> {
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    let mut seeds: Vec<Seed> = sample_messages()
        .into_iter()
        .map(|(name, message)| {
            let bytes = control_packet(RouteId::CONTROL, peer, node, &message);
            Seed::new(format!("{name}.bin"), bytes)
        })
        .collect();
    seeds.push(Seed::new(
        "session.bin",
        carrying(
            NextHeader::Session,
            route(0x1234),
            peer,
            node,
            b"a route session's message",
        ),
    ));
    let inner = skywire_dataplane::sim::ipv6_packet(
        peer.mesh_address(),
        node.mesh_address(),
        b"over a direct route",
    );
    seeds.push(Seed::new(
        "direct.bin",
        carrying(NextHeader::Direct, route(0x1234), peer, node, &inner),
    ));
    seeds
}

/// Decrypted packets from the peer to the node, and IPv6 and IPv4 ones to a tunnel.
pub fn session_classify_seeds() -> Vec<Seed> {
    let (peer, own) = (
        key(PEER_SECRET).mesh_address(),
        key(NODE_SECRET).mesh_address(),
    );
    let other: Ipv6Addr = "2001:db8::1".parse().expect("an address");
    vec![
        Seed::new(
            "mesh_stack.bin",
            skywire_dataplane::sim::ipv6_packet(peer, own, b"tcp"),
        ),
        Seed::new(
            "tunnel.bin",
            skywire_dataplane::sim::ipv6_packet(other, other, b"vpn"),
        ),
        Seed::new("tunnel_ipv4.bin", crate::vpn::udp4_packet(b"vpn")),
    ]
}

pub(crate) fn route(id: u32) -> RouteId {
    RouteId::new(id).expect("fits 20 bits")
}

pub(crate) fn setup_request(setup_id: u64, path: Vec<NodeKey>) -> ControlMessage {
    ControlMessage::SetupRequest {
        setup_id,
        hop_index: 1,
        mtu: 1420,
        reverse_id: route(0x42),
        path,
    }
}

pub(crate) fn control_packet(
    id: RouteId,
    from: NodeKey,
    to: NodeKey,
    message: &ControlMessage,
) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (src, dst) = (from.mesh_address(), to.mesh_address());
    let len = emit_control_packet(id, src, dst, message, &mut buf).expect("a valid message");
    buf.truncate(len);
    buf
}

/// A mesh packet from `from` to `to` on route id `id` that carries `payload`: a route
/// session's message ([`NextHeader::Session`]) or an inner packet on a direct route
/// ([`NextHeader::Direct`]).
pub(crate) fn carrying(
    next_header: NextHeader,
    id: RouteId,
    from: NodeKey,
    to: NodeKey,
    payload: &[u8],
) -> Vec<u8> {
    let header = MeshHeader {
        route_id: id,
        next_header,
        hop_limit: 64,
        src: from.mesh_address(),
        dst: to.mesh_address(),
        payload_len: payload.len(),
    };
    let mut packet = vec![0u8; header.buffer_len()];
    header.emit(&mut packet).expect("a short payload");
    packet[HEADER_LEN..].copy_from_slice(payload);
    packet
}

fn sample_messages() -> Vec<(&'static str, ControlMessage)> {
    use skywire_dataplane::wire::{DownReason, RejectReason};
    let (peer, node) = (key(PEER_SECRET), key(NODE_SECRET));
    vec![
        ("probe", ControlMessage::Probe { nonce: 1 }),
        ("probe_reply", ControlMessage::ProbeReply { nonce: 1 }),
        ("setup_request", setup_request(5, vec![peer, node])),
        (
            "setup_accept",
            ControlMessage::SetupAccept {
                setup_id: 5,
                forward_id: route(9),
                mtu: 1420,
            },
        ),
        (
            "setup_reject",
            ControlMessage::SetupReject {
                setup_id: 5,
                hop_index: 1,
                reason: RejectReason::MtuTooSmall { mtu: 1300 },
            },
        ),
        ("refresh", ControlMessage::Refresh),
        ("teardown", ControlMessage::Teardown),
        ("advert", ControlMessage::Advert(advert::sample())),
        (
            "route_down",
            ControlMessage::RouteDown {
                reporter: peer,
                reason: DownReason::LinkDead,
            },
        ),
        (
            "route_down_forgotten",
            ControlMessage::RouteDown {
                reporter: peer,
                reason: DownReason::Forgotten,
            },
        ),
        (
            "unknown_route",
            ControlMessage::UnknownRoute { route_id: route(9) },
        ),
    ]
}
