//! Launched apps' sessions on two neighbouring nodes' app sockets.
//! Its body is `skywire_fuzzing::app_socket::app_socket_session`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::app_socket::app_socket_session(data);
});
