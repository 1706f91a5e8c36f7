//! Signed link-state adverts as nodes make them, for the seeds.

use skywire_dataplane::wire::advert::{Advert, AdvertLink};
use skywire_dataplane::xeddsa::NONCE_LEN;
use skywire_dataplane::SecretKey;

use crate::{key, NEXT_SECRET, NODE_SECRET, PEER_SECRET};

/// A node two hops from the node under test, behind the peer.
pub(crate) const FAR_SECRET: [u8; 32] = [4; 32];

/// An advert by `origin` with these links and services, as a node signs it.
pub(crate) fn signed(
    origin: [u8; 32],
    sequence: u64,
    links: Vec<AdvertLink>,
    services: Vec<Vec<u8>>,
) -> Advert {
    let nonce = [origin[0]; NONCE_LEN];
    Advert::signed(
        &SecretKey::from(origin),
        sequence,
        240,
        links,
        services,
        &nonce,
    )
    .expect("a valid advert")
}

/// The peer's advert of its links to the node and the next.
pub(crate) fn sample() -> Advert {
    signed(
        PEER_SECRET,
        1_700_000_000_000,
        vec![
            AdvertLink {
                neighbour: key(NODE_SECRET),
                rtt_micros: 900,
            },
            AdvertLink {
                neighbour: key(NEXT_SECRET),
                rtt_micros: 2_500,
            },
        ],
        Vec::new(),
    )
}
