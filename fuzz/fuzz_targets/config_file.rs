//! The config file.
//! Its body is `skywire_fuzzing::files::config_file`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::files::config_file(data);
});
