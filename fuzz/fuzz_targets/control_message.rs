//! A control message from a neighbour.
//! Its body is `skywire_fuzzing::mesh::control_message`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::mesh::control_message(data);
});
