//! A mesh packet from a neighbour.
//! Its body is `skywire_fuzzing::mesh::mesh_packet`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skywire_fuzzing::mesh::mesh_packet(data);
});
