//! The VPN client's undo file.
//! Its body is `skywire_fuzzing::files::vpn_undo_file`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::files::vpn_undo_file(data);
});
