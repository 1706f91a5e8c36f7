//! A mesh stream to the messenger: a sender's message, or a recipient's answer.
//! Its body is `skywire_fuzzing::messenger::messenger_stream`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::messenger::messenger_stream(data);
});
