//! A messenger log file as a start reads it back.
//! Its body is `skywire_fuzzing::messenger::messenger_store_file`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::messenger::messenger_store_file(data);
});
