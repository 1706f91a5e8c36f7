//! A packet a route session decrypted.
//! Its body is `skywire_fuzzing::mesh::session_classify`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::mesh::session_classify(data);
});
