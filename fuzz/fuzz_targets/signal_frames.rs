//! Signal protocol frames from a launched app.
//! Its body is `skywire_fuzzing::signal::signal_frames`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::signal::signal_frames(data);
});
