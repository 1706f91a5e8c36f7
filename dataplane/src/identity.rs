//! Node identity: the X25519 key pair (WireGuard base64, as `wg genkey`/`wg pubkey` print it)
//! and the mesh address derived from the public key.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use blake2::{Blake2s256, Digest};
use boringtun::x25519::{PublicKey, StaticSecret};
use serde::{Serialize, Serializer};

/// Domain separator of the mesh address derivation. A permanent wire fact: never change it.
const MESH_ADDRESS_CONTEXT: &[u8] = b"skywire mesh address";

/// A node's public key: its name everywhere (CLI, config, logs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey([u8; 32]);

/// A node's private key.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64, or not 32 bytes once decoded.
    #[error("not a key: expected 44 characters of base64 encoding 32 bytes (as `skywired keygen` or `wg genkey` prints)")]
    Malformed,
}

impl NodeKey {
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as boringtun wants it.
    pub fn to_x25519(self) -> PublicKey {
        PublicKey::from(self.0)
    }

    /// This node's mesh address: `fd` followed by the first 15 bytes of
    /// BLAKE2s-256("skywire mesh address" ‖ public key).
    pub fn mesh_address(&self) -> Ipv6Addr {
        let digest = Blake2s256::new()
            .chain_update(MESH_ADDRESS_CONTEXT)
            .chain_update(self.0)
            .finalize();
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..].copy_from_slice(&digest[..15]);
        Ipv6Addr::from(octets)
    }

    /// A short form for logs: the first 8 characters of the base64 key.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(8);
        text
    }
}

impl From<[u8; 32]> for NodeKey {
    fn from(bytes: [u8; 32]) -> Self {
        NodeKey(bytes)
    }
}

impl From<PublicKey> for NodeKey {
    fn from(key: PublicKey) -> Self {
        NodeKey(key.to_bytes())
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.short())
    }
}

/// A key serializes as its base64 text, as users read and write it.
impl Serialize for NodeKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for NodeKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(NodeKey)
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> SecretKey {
        SecretKey(StaticSecret::random_from_rng(rand_core::OsRng))
    }

    /// The matching public key.
    pub fn public(&self) -> NodeKey {
        NodeKey::from(PublicKey::from(&self.0))
    }

    /// The key as boringtun wants it.
    pub fn to_x25519(&self) -> StaticSecret {
        self.0.clone()
    }

    /// WireGuard base64, as `wg genkey` prints it (without the newline).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }
}

impl From<[u8; 32]> for SecretKey {
    fn from(bytes: [u8; 32]) -> Self {
        SecretKey(StaticSecret::from(bytes))
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    /// Reads WireGuard base64; surrounding white space (a key file's newline) is ignored.
    fn from_str(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(SecretKey::from)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().short())
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn public_key_matches_wireguard_test_vector() {
        // From `wg genkey | tee k | wg pubkey`: a pair computed by wireguard-tools.
        let secret: SecretKey = "qGFrcJgsLX70NBjCCBbdJUd9LeQcjn+zAzGXk5RbtXo="
            .parse()
            .unwrap();
        assert_eq!(
            secret.public().to_string(),
            "I4FR+rr1zIyZWbjd9gOo7X2a7qb5E//mkO91Ziu0RkU="
        );
    }

    #[test]
    fn keys_round_trip_through_base64() {
        let secret = SecretKey::generate();
        let again: SecretKey = format!("{}\n", secret.to_base64()).parse().unwrap();
        assert_eq!(again.public(), secret.public());
        let public: NodeKey = secret.public().to_string().parse().unwrap();
        assert_eq!(public, secret.public());
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for text in [
            "",
            "abc",
            "bXUUn8rnDmS0N1kOIlm7s5rHiYSMQbi/IZ9mu4aaBw==",
            "!!!!",
        ] {
            assert_eq!(
                text.parse::<NodeKey>(),
                Err(KeyError::Malformed),
                "{text:?}"
            );
        }
    }

    #[test]
    fn mesh_address_is_in_fd00_8_and_depends_on_the_key() {
        let a = SecretKey::from([1u8; 32]).public();
        let b = SecretKey::from([2u8; 32]).public();
        assert_eq!(a.mesh_address().octets()[0], 0xfd);
        assert_ne!(a.mesh_address(), b.mesh_address());
        assert_eq!(a.mesh_address(), a.mesh_address());
    }
}
