//! The link-state advert: the body of control message type 9, flooded between neighbours on
//! route id 0. Owns its byte encoding and its XEdDSA signature; what a node does with one is
//! the topology's business.
//!
//! ```text
//! origin        32   the node whose links these are (its X25519 key)
//! sequence       8   larger is newer; survives restarts (see NodeOptions::advert_sequence_start)
//! lifetime       2   seconds the advert stays valid without a newer one
//! link count     1   at most MAX_LINKS
//! links          n × (key 32, round-trip time in microseconds 4)
//! service count  1   at most MAX_SERVICES
//! services       n × (length 1, at most MAX_SERVICE_LEN bytes)
//! signature     64   XEdDSA by the origin over "skywire advert v1" ‖ every field above
//! ```
//!
//! How it fits a packet: a mesh packet carries 1420 − 40 = 1380 bytes of control payload, less
//! the 2-byte control preamble. The fixed fields and the signature take 108, 24 links 864 and
//! 12 services of 32 bytes 396: 1368 in all. A node with more live links advertises its 24
//! fastest; the rest still carry routes that name them, but are not offered to path choice.

use super::WireError;
use crate::identity::{NodeKey, SecretKey};
use crate::xeddsa::{self, VerifyingKey, NONCE_LEN, SIGNATURE_LEN};

/// The most links one advert lists.
pub const MAX_LINKS: usize = 24;
/// The most service entries one advert lists.
pub const MAX_SERVICES: usize = 12;
/// The longest service entry.
pub const MAX_SERVICE_LEN: usize = 32;
/// The longest advert body.
pub const MAX_ADVERT_LEN: usize =
    FIXED_LEN + MAX_LINKS * LINK_LEN + MAX_SERVICES * (1 + MAX_SERVICE_LEN);

/// What the signature covers before the fields: the domain and its version.
const SIGNING_CONTEXT: &[u8] = b"skywire advert v1";
const KEY_LEN: usize = 32;
const LINK_LEN: usize = KEY_LEN + 4;
/// Origin, sequence, lifetime, the two counts and the signature.
const FIXED_LEN: usize = KEY_LEN + 8 + 2 + 1 + 1 + SIGNATURE_LEN;

/// One link an advert lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertLink {
    /// The neighbour at the other end.
    pub neighbour: NodeKey,
    /// The round-trip time the origin measured, in microseconds.
    pub rtt_micros: u32,
}

/// A link-state advert: its fields and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The node whose links these are.
    pub origin: NodeKey,
    /// Larger is newer.
    pub sequence: u64,
    /// Seconds the advert stays valid without a newer one; at least 1.
    pub lifetime_secs: u16,
    /// The origin's live links, distinct, never the origin itself.
    pub links: Vec<AdvertLink>,
    /// Service entries: carried and relayed, their meaning left to a later version.
    pub services: Vec<Vec<u8>>,
    /// XEdDSA by `origin` over [`Advert::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl Advert {
    /// An advert with these fields, signed by `secret` (whose public key becomes the origin).
    /// `nonce` is 64 random bytes.
    pub fn signed(
        secret: &SecretKey,
        sequence: u64,
        lifetime_secs: u16,
        links: Vec<AdvertLink>,
        services: Vec<Vec<u8>>,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Advert, WireError> {
        let mut advert = Advert {
            origin: secret.public(),
            sequence,
            lifetime_secs,
            links,
            services,
            signature: [0; SIGNATURE_LEN],
        };
        advert.validate()?;
        advert.signature = xeddsa::sign(secret, &advert.signed_bytes(), nonce);
        Ok(advert)
    }

    /// Whether the origin signed exactly these fields.
    pub fn verify(&self) -> bool {
        xeddsa::verify(&self.origin, &self.signed_bytes(), &self.signature)
    }

    /// The same with the origin's key converted already (see [`VerifyingKey`]).
    pub fn verify_with(&self, key: &VerifyingKey) -> bool {
        key.verify(&self.signed_bytes(), &self.signature)
    }

    /// What the signature covers: the context, then every field but the signature as encoded.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; self.buffer_len() - SIGNATURE_LEN];
        // The fields were validated when the advert was made or parsed.
        let written = self.emit_fields(&mut bytes).unwrap_or(0);
        bytes.truncate(written);
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        message
    }

    /// The origin and sequence number at the start of an advert body, read without the rest:
    /// enough to drop a flooding echo without parsing it.
    pub fn peek(bytes: &[u8]) -> Option<(NodeKey, u64)> {
        let mut rest = bytes;
        let origin = NodeKey::from(take::<KEY_LEN>(&mut rest).ok()?);
        let sequence = u64::from_be_bytes(take(&mut rest).ok()?);
        Some((origin, sequence))
    }

    /// Reads a whole advert body: its length must match exactly. The signature is not checked
    /// here (see [`Advert::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Advert, WireError> {
        if bytes.len() > MAX_ADVERT_LEN {
            return Err(WireError::BadLength);
        }
        let mut rest = bytes;
        let origin = NodeKey::from(take::<KEY_LEN>(&mut rest)?);
        let sequence = u64::from_be_bytes(take(&mut rest)?);
        let lifetime_secs = u16::from_be_bytes(take(&mut rest)?);
        let [link_count] = take::<1>(&mut rest)?;
        if usize::from(link_count) > MAX_LINKS {
            return Err(WireError::BadField);
        }
        let links = (0..link_count)
            .map(|_| {
                Ok(AdvertLink {
                    neighbour: NodeKey::from(take::<KEY_LEN>(&mut rest)?),
                    rtt_micros: u32::from_be_bytes(take(&mut rest)?),
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let [service_count] = take::<1>(&mut rest)?;
        if usize::from(service_count) > MAX_SERVICES {
            return Err(WireError::BadField);
        }
        let services = (0..service_count)
            .map(|_| {
                let [len] = take::<1>(&mut rest)?;
                let len = usize::from(len);
                if len > MAX_SERVICE_LEN {
                    return Err(WireError::BadField);
                }
                let (entry, after) = rest.split_at_checked(len).ok_or(WireError::Truncated)?;
                rest = after;
                Ok(entry.to_vec())
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let signature = take::<SIGNATURE_LEN>(&mut rest)?;
        if !rest.is_empty() {
            return Err(WireError::BadLength);
        }
        let advert = Advert {
            origin,
            sequence,
            lifetime_secs,
            links,
            services,
            signature,
        };
        advert.validate()?;
        Ok(advert)
    }

    /// The length of the encoded body.
    pub fn buffer_len(&self) -> usize {
        FIXED_LEN
            + self.links.len() * LINK_LEN
            + self
                .services
                .iter()
                .map(|entry| 1 + entry.len())
                .sum::<usize>()
    }

    /// Writes the body at the start of `buf` and returns its length. An advert that
    /// [`Advert::parse`] would refuse is refused here too.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(WireError::Truncated)?;
        let fields = self.emit_fields(out)?;
        out.get_mut(fields..)
            .ok_or(WireError::Truncated)?
            .copy_from_slice(&self.signature);
        Ok(len)
    }

    fn emit_fields(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let mut at = 0;
        let mut put = |bytes: &[u8]| -> Result<(), WireError> {
            out.get_mut(at..at + bytes.len())
                .ok_or(WireError::Truncated)?
                .copy_from_slice(bytes);
            at += bytes.len();
            Ok(())
        };
        put(self.origin.as_bytes())?;
        put(&self.sequence.to_be_bytes())?;
        put(&self.lifetime_secs.to_be_bytes())?;
        put(&[u8::try_from(self.links.len()).map_err(|_| WireError::BadField)?])?;
        for link in &self.links {
            put(link.neighbour.as_bytes())?;
            put(&link.rtt_micros.to_be_bytes())?;
        }
        put(&[u8::try_from(self.services.len()).map_err(|_| WireError::BadField)?])?;
        for entry in &self.services {
            put(&[u8::try_from(entry.len()).map_err(|_| WireError::BadField)?])?;
            put(entry)?;
        }
        Ok(at)
    }

    /// The field rules: counts and lengths within bounds, a lifetime, links distinct and
    /// never to the origin itself.
    fn validate(&self) -> Result<(), WireError> {
        let entries_fit = self
            .services
            .iter()
            .all(|entry| entry.len() <= MAX_SERVICE_LEN);
        if self.links.len() > MAX_LINKS
            || self.services.len() > MAX_SERVICES
            || !entries_fit
            || self.lifetime_secs == 0
        {
            return Err(WireError::BadField);
        }
        for (index, link) in self.links.iter().enumerate() {
            let repeated = self.links[..index]
                .iter()
                .any(|earlier| earlier.neighbour == link.neighbour);
            if link.neighbour == self.origin || repeated {
                return Err(WireError::BadField);
            }
        }
        Ok(())
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], WireError> {
    let (head, tail) = rest.split_first_chunk::<N>().ok_or(WireError::Truncated)?;
    *rest = tail;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(byte: u8) -> NodeKey {
        SecretKey::from([byte; 32]).public()
    }

    fn advert(links: usize, services: usize) -> Advert {
        Advert::signed(
            &SecretKey::from([1; 32]),
            0x0102_0304_0506_0708,
            120,
            (0..links)
                .map(|i| AdvertLink {
                    neighbour: key(10 + i as u8),
                    rtt_micros: 1000 * i as u32,
                })
                .collect(),
            (0..services)
                .map(|i| vec![b'a' + i as u8; MAX_SERVICE_LEN])
                .collect(),
            &[7; NONCE_LEN],
        )
        .unwrap()
    }

    fn encode(advert: &Advert) -> Vec<u8> {
        let mut buf = vec![0u8; advert.buffer_len()];
        assert_eq!(advert.emit(&mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn adverts_round_trip_and_verify() {
        for (links, services) in [(0, 0), (1, 0), (4, 2), (MAX_LINKS, MAX_SERVICES)] {
            let advert = advert(links, services);
            let bytes = encode(&advert);
            assert_eq!(Advert::parse(&bytes), Ok(advert.clone()));
            assert!(advert.verify());
        }
    }

    #[test]
    fn the_largest_advert_fits_a_mesh_packet() {
        // That it fits is checked where the mesh MTU is known (node/mod.rs).
        let largest = encode(&advert(MAX_LINKS, MAX_SERVICES));
        assert_eq!(largest.len(), MAX_ADVERT_LEN);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let advert = advert(1, 1);
        let bytes = encode(&advert);
        assert_eq!(&bytes[..32], advert.origin.as_bytes());
        assert_eq!(&bytes[32..40], 0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&bytes[40..42], 120u16.to_be_bytes());
        assert_eq!(bytes[42], 1);
        assert_eq!(&bytes[43..75], key(10).as_bytes());
        assert_eq!(&bytes[75..79], 0u32.to_be_bytes());
        assert_eq!(bytes[79], 1);
        assert_eq!(usize::from(bytes[80]), MAX_SERVICE_LEN);
        assert_eq!(&bytes[bytes.len() - 64..], advert.signature);
        let signed = advert.signed_bytes();
        assert!(signed.starts_with(b"skywire advert v1"));
        assert_eq!(&signed[17..], &bytes[..bytes.len() - 64]);
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let original = advert(3, 1);
        let bytes = encode(&original);
        for at in 0..bytes.len() {
            let mut bent = bytes.clone();
            bent[at] ^= 0x01;
            if let Ok(parsed) = Advert::parse(&bent) {
                assert!(!parsed.verify(), "byte {at} changed, still verifies");
            }
        }
        let mut other = original.clone();
        other.origin = key(2);
        assert!(!other.verify(), "another origin");
    }

    #[test]
    fn truncated_extended_and_out_of_range_adverts_are_refused() {
        let bytes = encode(&advert(2, 1));
        for len in 0..bytes.len() {
            assert!(Advert::parse(&bytes[..len]).is_err(), "cut to {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Advert::parse(&long), Err(WireError::BadLength));
        assert_eq!(
            Advert::parse(&vec![0u8; MAX_ADVERT_LEN + 1]),
            Err(WireError::BadLength)
        );
        // Too many links, a zero lifetime, a link to itself, a repeated link.
        let mut many = bytes.clone();
        many[42] = MAX_LINKS as u8 + 1;
        assert_eq!(Advert::parse(&many), Err(WireError::BadField));
        let mut zero = bytes.clone();
        zero[40..42].copy_from_slice(&[0, 0]);
        assert_eq!(Advert::parse(&zero), Err(WireError::BadField));
        let mut own = bytes.clone();
        own.copy_within(0..32, 43);
        assert_eq!(Advert::parse(&own), Err(WireError::BadField));
        let mut twice = bytes.clone();
        twice.copy_within(43..75, 79);
        assert_eq!(Advert::parse(&twice), Err(WireError::BadField));
        let mut long_entry = advert(0, 1);
        long_entry.services[0].push(b'x');
        assert_eq!(long_entry.emit(&mut [0u8; 2048]), Err(WireError::BadField));
    }
}
