//! Datagrams from neighbours through a node's transports, routing table and route setup.
//! Its body is `skywire_fuzzing::mesh::node_datagram`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::mesh::node_datagram(data);
});
