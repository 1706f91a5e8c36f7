//! Mesh packets from outside: the relay's peek and rewrite, the checked view and its getters
//! never panic, and every packet the view accepts re-emits to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skywire_dataplane::wire::mesh::{relay_in_place, route_id_of, HEADER_LEN};
use skywire_dataplane::wire::{ControlMessage, MeshHeader, MeshPacket, NextHeader};
use skywire_dataplane::RouteId;

fuzz_target!(|data: &[u8]| {
    let _ = route_id_of(data);
    let mut relayed = data.to_vec();
    if let Some(next) = RouteId::new(0x5a5a5) {
        if relay_in_place(&mut relayed, next).is_ok() {
            assert_eq!(relayed.get(8..), data.get(8..));
            assert_eq!(route_id_of(&relayed), Some(next));
        }
    }

    let Ok(packet) = MeshPacket::new_checked(data) else {
        return;
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
});
