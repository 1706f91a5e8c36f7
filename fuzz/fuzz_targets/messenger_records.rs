//! The records of the messenger's logs, with their CRCs made right.
//! Its body is `skywire_fuzzing::messenger::messenger_records`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::messenger::messenger_records(data);
});
