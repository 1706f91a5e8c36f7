//! A control-socket client's byte stream, cut into lines and parsed.
//! Its body is `skywire_fuzzing::control::control_lines`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::control::control_lines(data);
});
