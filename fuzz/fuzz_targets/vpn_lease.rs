//! A VPN lease message from the other end of a mesh stream.
//! Its body is `skywire_fuzzing::vpn::vpn_lease`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::vpn::vpn_lease(data);
});
