//! The bodies of the fuzz targets in `fuzz/`, as plain functions, and the seeds they start from.
//!
//! Each body hands its input to a parser of outside bytes through the entry the daemon uses,
//! checks what must hold of whatever the parser accepts, and says whether it accepted anything.
//! The libFuzzer binaries in `fuzz/fuzz_targets/` call the bodies with what the fuzzer makes;
//! `tests/corpus.rs` calls them with every seed in `fuzz/corpus/`, so that a target whose seeds
//! all stop at the parser's first check fails the ordinary test run. `examples/seed_corpus.rs`
//! writes the seeds, which the project's own encoders make.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod advert;
pub mod app_socket;
pub mod control;
pub mod files;
pub mod mesh;
pub mod messenger;
pub mod node;
pub mod proc;
pub mod records;
pub mod signal;
pub mod socks;
pub mod vpn;

use std::sync::LazyLock;

use skywire_dataplane::{NodeKey, SecretKey};

/// The private key of the node that the node's targets feed.
const NODE_SECRET: [u8; 32] = [1; 32];
/// The private key of that node's first neighbour, the peer.
const PEER_SECRET: [u8; 32] = [2; 32];
/// The private key of that node's second neighbour, the next.
const NEXT_SECRET: [u8; 32] = [3; 32];

/// The public key of a node whose private key is `secret`. Those of the node that the node's
/// targets feed and of the nodes around it are derived once: a derivation costs as much as a
/// short run of a target.
fn key(secret: [u8; 32]) -> NodeKey {
    static KNOWN: LazyLock<Vec<([u8; 32], NodeKey)>> = LazyLock::new(|| {
        [NODE_SECRET, PEER_SECRET, NEXT_SECRET, advert::FAR_SECRET]
            .into_iter()
            .map(|secret| (secret, SecretKey::from(secret).public()))
            .collect()
    });
    KNOWN
        .iter()
        .find(|(known, _)| *known == secret)
        .map_or_else(|| SecretKey::from(secret).public(), |(_, key)| *key)
}

/// One fuzz target: its name (the binary in `fuzz/` and the folder in `fuzz/corpus/`), its body,
/// and its seeds.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The libFuzzer binary's name and the seed folder's.
    pub name: &'static str,
    /// The body: true when the parser accepted (some of) the input.
    pub run: fn(&[u8]) -> bool,
    /// Small valid inputs to start from, with a file name each.
    pub seeds: fn() -> Vec<Seed>,
}

/// A seed input and the file name it is kept under (with an extension, which tells it apart
/// from the inputs a fuzzer adds, named by their SHA-1).
#[derive(Debug, Clone)]
pub struct Seed {
    /// The file name in the target's corpus folder.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

impl Seed {
    /// A seed named `name`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Seed {
        Seed {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

/// The folder of target `name`'s corpus in the repository: `fuzz/corpus/NAME`.
pub fn corpus_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

/// Whether a file of a corpus folder is a seed (named with an extension) rather than an input
/// a fuzzer added (named by its SHA-1, which the repository leaves out).
pub fn is_seed(file_name: &str) -> bool {
    file_name.contains('.')
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "control_message",
        run: mesh::control_message,
        seeds: mesh::control_message_seeds,
    },
    Target {
        name: "mesh_packet",
        run: mesh::mesh_packet,
        seeds: mesh::mesh_packet_seeds,
    },
    Target {
        name: "node_datagram",
        run: node::node_datagram,
        seeds: node::node_datagram_seeds,
    },
    Target {
        name: "advert",
        run: advert::advert,
        seeds: advert::advert_seeds,
    },
    Target {
        name: "session_classify",
        run: mesh::session_classify,
        seeds: mesh::session_classify_seeds,
    },
    Target {
        name: "app_socket_request",
        run: app_socket::app_socket_request,
        seeds: app_socket::app_socket_request_seeds,
    },
    Target {
        name: "app_socket_session",
        run: app_socket::app_socket_session,
        seeds: app_socket::app_socket_session_seeds,
    },
    Target {
        name: "messenger_stream",
        run: messenger::messenger_stream,
        seeds: messenger::messenger_stream_seeds,
    },
    Target {
        name: "messenger_records",
        run: messenger::messenger_records,
        seeds: messenger::messenger_records_seeds,
    },
    Target {
        name: "messenger_store_file",
        run: messenger::messenger_store_file,
        seeds: messenger::messenger_store_file_seeds,
    },
    Target {
        name: "vpn_lease",
        run: vpn::vpn_lease,
        seeds: vpn::vpn_lease_seeds,
    },
    Target {
        name: "vpn_packets",
        run: vpn::vpn_packets,
        seeds: vpn::vpn_packets_seeds,
    },
    Target {
        name: "socks_local",
        run: socks::socks_local,
        seeds: socks::socks_local_seeds,
    },
    Target {
        name: "socks_mesh",
        run: socks::socks_mesh,
        seeds: socks::socks_mesh_seeds,
    },
    Target {
        name: "signal_frames",
        run: signal::signal_frames,
        seeds: signal::signal_frames_seeds,
    },
    Target {
        name: "control_lines",
        run: control::control_lines,
        seeds: control::control_lines_seeds,
    },
    Target {
        name: "viscript",
        run: control::viscript,
        seeds: control::viscript_seeds,
    },
    Target {
        name: "proc_files",
        run: proc::proc_files,
        seeds: proc::proc_files_seeds,
    },
    Target {
        name: "config_file",
        run: files::config_file,
        seeds: files::config_file_seeds,
    },
    Target {
        name: "key_file",
        run: files::key_file,
        seeds: files::key_file_seeds,
    },
    Target {
        name: "vpn_lease_file",
        run: files::vpn_lease_file,
        seeds: files::vpn_lease_file_seeds,
    },
    Target {
        name: "vpn_undo_file",
        run: files::vpn_undo_file,
        seeds: files::vpn_undo_file_seeds,
    },
];
