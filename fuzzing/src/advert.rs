//! The signed link-state advert (`wire/advert.rs`), as neighbours flood it: its parse, its
//! encoding, its XEdDSA signature, and what a node's topology makes of it.

use std::time::{Duration, Instant};

use skywire_dataplane::topology::{AdvertDrop, Topology};
use skywire_dataplane::wire::advert::{
    Advert, AdvertLink, MAX_LINKS, MAX_SERVICES, MAX_SERVICE_LEN,
};
use skywire_dataplane::wire::ServiceEntry;
use skywire_dataplane::xeddsa::{VerifyingKey, NONCE_LEN, SIGNATURE_LEN};
use skywire_dataplane::SecretKey;

use crate::{key, Seed, NEXT_SECRET, NODE_SECRET, PEER_SECRET};

/// A node two hops from the node under test, behind the peer.
pub(crate) const FAR_SECRET: [u8; 32] = [4; 32];

/// An advert body: it parses or is refused without a panic; what parses has the origin and
/// sequence number that a peek at it reads, re-emits to exactly its bytes, and is signed over
/// those bytes; each of its service entries that reads as one encodes to exactly its bytes;
/// the signature checks the same with the origin's key converted once; and a node's topology,
/// hearing it first from its origin, holds it exactly when it verifies, drops it as a
/// duplicate the second time, and chooses only paths that start at the node, end where asked
/// and visit no node twice. Accepted when it parses.
pub fn advert(data: &[u8]) -> bool {
    let peeked = Advert::peek(data);
    let Ok(advert) = Advert::parse(data) else {
        return false;
    };
    assert_eq!(peeked, Some((advert.origin, advert.sequence)));
    let mut again = vec![0u8; advert.buffer_len()];
    assert_eq!(advert.emit(&mut again), Ok(data.len()));
    assert_eq!(again, data);
    let fields = &data[..data.len() - SIGNATURE_LEN];
    assert!(advert.signed_bytes().ends_with(fields));

    for service in &advert.services {
        if let Some(entry) = ServiceEntry::parse(service) {
            assert_eq!(entry.to_bytes(), *service);
            assert!(entry.is_encoded_as(service));
        }
    }

    let verified = advert.verify();
    let key_once = VerifyingKey::new(&advert.origin);
    assert_eq!(
        key_once.is_some_and(|key| advert.verify_with(&key)),
        verified
    );

    let own = key(NODE_SECRET);
    if advert.origin == own {
        return true;
    }
    let now = Instant::now();
    let mut topology = Topology::new(own);
    let held = topology.handle_advert(now, advert.origin, &advert);
    assert_eq!(held.is_ok(), verified, "{held:?}");
    if verified {
        assert_eq!(
            topology.handle_advert(now, advert.origin, &advert),
            Err(AdvertDrop::Duplicate)
        );
        let own_links = [(advert.origin, Duration::from_millis(1))];
        for link in &advert.links {
            if let Some(choice) = topology.path_to(&own_links, &link.neighbour) {
                assert_eq!(choice.path.first(), Some(&own));
                assert_eq!(choice.path.last(), Some(&link.neighbour));
                let mut visited = choice.path.clone();
                visited.sort();
                visited.dedup();
                assert_eq!(visited.len(), choice.path.len(), "{:?}", choice.path);
            }
        }
        assert_eq!(topology.nodes(now).len(), 1);
    }
    true
}

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

/// Adverts as nodes sign them: none, two and the most links, with services.
pub fn advert_seeds() -> Vec<Seed> {
    let encode = |advert: &Advert| {
        let mut bytes = vec![0u8; advert.buffer_len()];
        advert.emit(&mut bytes).expect("a valid advert");
        bytes
    };
    let largest = signed(
        FAR_SECRET,
        u64::MAX - 1,
        (0..MAX_LINKS)
            .map(|index| AdvertLink {
                neighbour: key([10 + index as u8; 32]),
                rtt_micros: 100 * index as u32,
            })
            .collect(),
        (0..MAX_SERVICES)
            .map(|index| vec![b'a' + index as u8; MAX_SERVICE_LEN])
            .collect(),
    );
    vec![
        Seed::new(
            "no_links.bin",
            encode(&signed(NEXT_SECRET, 1, vec![], vec![])),
        ),
        Seed::new("two_links.bin", encode(&sample())),
        Seed::new(
            "services.bin",
            encode(&signed(
                NEXT_SECRET,
                7,
                vec![AdvertLink {
                    neighbour: key(PEER_SECRET),
                    rtt_micros: 1,
                }],
                [("socks", 1080), ("chat", 5000)]
                    .into_iter()
                    .map(|(name, port)| {
                        let name = name.parse().expect("a service name");
                        ServiceEntry { name, port }.to_bytes()
                    })
                    .collect(),
            )),
        ),
        Seed::new("largest.bin", encode(&largest)),
    ]
}
