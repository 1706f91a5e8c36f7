//! One line of viscript.
//! Its body is `skywire_fuzzing::control::viscript`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::control::viscript(data);
});
