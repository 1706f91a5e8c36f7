//! Packets and TUN frames for the VPN's checks, coalescer and segmenter.
//! Its body is `skywire_fuzzing::vpn::vpn_packets`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::vpn::vpn_packets(data);
});
