//! A signed link-state advert from a neighbour.
//! Its body is `skywire_fuzzing::advert::advert`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::advert::advert(data);
});
