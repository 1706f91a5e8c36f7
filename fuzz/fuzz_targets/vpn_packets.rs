//! What peers and the kernel hand the VPN: inner packets for the source and destination
//! checks and the coalescer, and TUN frames for the segmenter. Nothing panics, nothing comes
//! out larger than allowed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skywire_dataplane::vpn::filter;
use skywire_dataplane::vpn::offload::{split, Coalescer};

fuzz_target!(|data: &[u8]| {
    let _ = filter::addresses(data);
    let mut coalescer = Coalescer::default();
    for packet in data.chunks(1348) {
        coalescer.push(packet);
    }
    coalescer.finish();
    while let Some(frame) = coalescer.next_frame() {
        assert!(frame.len() <= 65_535 + 10);
    }
    let mut frame = data.to_vec();
    let mut scratch = vec![0u8; 1348];
    let _ = split(&mut frame, &mut scratch, 1348, |packet| assert!(packet.len() <= 1348 || packet.len() == data.len().saturating_sub(10)));
});
