//! What a launched app writes to the node's app socket: its request line.
//! Its body is `skywire_fuzzing::app_socket::app_socket_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::app_socket::app_socket_request(data);
});
