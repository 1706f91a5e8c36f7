//! The VPN server's lease file.
//! Its body is `skywire_fuzzing::files::vpn_lease_file`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::files::vpn_lease_file(data);
});
