//! The key file.
//! Its body is `skywire_fuzzing::files::key_file`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::files::key_file(data);
});
