//! A SOCKS5 greeting and request on the entry's local port.
//! Its body is `skywire_fuzzing::socks::socks_local`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::socks::socks_local(data);
});
