//! Datagrams from neighbours through a node's transports, liveness, adverts, route setup and
//! route sessions.
//! Its body is `skywire_fuzzing::node::node_datagram`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::node::node_datagram(data);
});
