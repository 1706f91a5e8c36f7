//! A process's /proc stat and status, and a TCP socket table.
//! Its body is `skywire_fuzzing::proc::proc_files`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::proc::proc_files(data);
});
