//! The SOCKS request and status at the start of a mesh stream.
//! Its body is `skywire_fuzzing::socks::socks_mesh`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::socks::socks_mesh(data);
});
