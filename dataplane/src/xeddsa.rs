//! XEdDSA: signatures made with a node's X25519 key, as Signal specifies them
//! (<https://signal.org/docs/specifications/xeddsa/>, revision 1, over Curve25519 with SHA-512).
//! Owns signing and verification; the adverts use it so that a node needs no second key.
//!
//! Built on curve25519-dalek (already in the tree under x25519-dalek) and sha2, step by step
//! as the specification writes it. One check is stricter than the specification: `s` must be
//! reduced below the group order (the specification refuses only `s >= 2^253`). A signer that
//! follows the specification never emits anything else, so only a malleated signature is
//! refused, as libsodium's Ed25519 verification also does.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use sha2::{Digest, Sha512};

use crate::identity::{NodeKey, SecretKey};

/// The length of a signature: `R ‖ s`.
pub const SIGNATURE_LEN: usize = 64;
/// The length of the random input `Z` of a signature.
pub const NONCE_LEN: usize = 64;

/// A signature of `message` by `secret`, with `nonce` (64 random bytes: `Z` in the
/// specification) mixed into the per-signature secret `r`.
pub fn sign(secret: &SecretKey, message: &[u8], nonce: &[u8; NONCE_LEN]) -> [u8; SIGNATURE_LEN] {
    let (public, private) = calculate_key_pair(secret);
    // r = hash1(a ‖ M ‖ Z) (mod q), hash1(X) = SHA-512((2^256 − 1 − 1) ‖ X).
    let mut prefix = [0xff_u8; 32];
    prefix[0] = 0xfe;
    let r = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(prefix)
            .chain_update(private.as_bytes())
            .chain_update(message)
            .chain_update(nonce)
            .finalize()
            .into(),
    );
    let big_r = EdwardsPoint::mul_base(&r).compress();
    let h = challenge(&big_r, &public, message);
    let s = r + h * private;
    let mut signature = [0u8; SIGNATURE_LEN];
    signature[..32].copy_from_slice(big_r.as_bytes());
    signature[32..].copy_from_slice(s.as_bytes());
    signature
}

/// Whether `signature` is `key`'s signature of `message`.
pub fn verify(key: &NodeKey, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    VerifyingKey::new(key).is_some_and(|key| key.verify(message, signature))
}

/// A node key turned into the Edwards point that checks its signatures, for a caller that
/// checks many signatures of one key (the conversion costs a third of a verification).
#[derive(Debug, Clone, Copy)]
pub struct VerifyingKey {
    point: EdwardsPoint,
    compressed: CompressedEdwardsY,
}

impl VerifyingKey {
    /// convert_mont(u): the Edwards point with y = (u − 1)/(u + 1) and sign bit 0; `None` for
    /// a key that no valid signature can come from (u ≥ p, or not on the curve).
    pub fn new(key: &NodeKey) -> Option<VerifyingKey> {
        let u = key.as_bytes();
        if !is_below_field_prime(u) {
            return None;
        }
        let point = MontgomeryPoint(*u).to_edwards(0)?;
        Some(VerifyingKey {
            point,
            compressed: point.compress(),
        })
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        verify_point(&self.point, &self.compressed, message, signature)
    }
}

fn verify_point(
    public: &EdwardsPoint,
    compressed: &CompressedEdwardsY,
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let (r_bytes, s_bytes) = signature.split_at(32);
    let (Ok(r_bytes), Ok(s_bytes)) = (<[u8; 32]>::try_from(r_bytes), <[u8; 32]>::try_from(s_bytes))
    else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let big_r = CompressedEdwardsY(r_bytes);
    let h = challenge(&big_r, compressed, message);
    // R_check = sB − hA
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-h, public, &s);
    check.compress().as_bytes() == &r_bytes
}

/// calculate_key_pair(k): the Edwards public key `A` with its sign bit cleared, and the private
/// scalar `a` that goes with it (`k` or `−k`).
fn calculate_key_pair(secret: &SecretKey) -> (CompressedEdwardsY, Scalar) {
    let k = Scalar::from_bytes_mod_order(clamp_integer(secret.to_x25519().to_bytes()));
    let mut public = EdwardsPoint::mul_base(&k).compress().to_bytes();
    let negative = public[31] & 0x80 != 0;
    public[31] &= 0x7f;
    let private = if negative { -k } else { k };
    (CompressedEdwardsY(public), private)
}

/// h = SHA-512(R ‖ A ‖ M) (mod q).
fn challenge(big_r: &CompressedEdwardsY, public: &CompressedEdwardsY, message: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(public.as_bytes())
            .chain_update(message)
            .finalize()
            .into(),
    )
}

/// Whether the little-endian number `u` is below p = 2^255 − 19 (the specification refuses
/// `u >= p`).
fn is_below_field_prime(u: &[u8; 32]) -> bool {
    let mut prime = [0xff_u8; 32];
    prime[0] = 0xed;
    prime[31] = 0x7f;
    for (byte, limit) in u.iter().rev().zip(prime.iter().rev()) {
        if byte != limit {
            return byte < limit;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secret(byte: u8) -> SecretKey {
        SecretKey::from([byte; 32])
    }

    #[test]
    fn a_signature_verifies_and_nothing_else_does() {
        let key = secret(7);
        let message = b"skywire advert v1 and some fields";
        let signature = sign(&key, message, &[3; NONCE_LEN]);
        assert!(verify(&key.public(), message, &signature));
        assert!(!verify(&secret(8).public(), message, &signature));
        assert!(!verify(&key.public(), b"another message", &signature));
        for at in [0, 31, 32, 63] {
            let mut bent = signature;
            bent[at] ^= 1;
            assert!(!verify(&key.public(), message, &bent), "byte {at}");
        }
    }

    #[test]
    fn the_nonce_changes_the_signature_not_its_validity() {
        let key = secret(9);
        let one = sign(&key, b"m", &[1; NONCE_LEN]);
        let two = sign(&key, b"m", &[2; NONCE_LEN]);
        assert_ne!(one, two);
        assert_eq!(one, sign(&key, b"m", &[1; NONCE_LEN]));
        assert!(verify(&key.public(), b"m", &one) && verify(&key.public(), b"m", &two));
    }

    #[test]
    fn keys_whose_edwards_sign_bit_is_set_sign_too() {
        // calculate_key_pair negates the scalar for about half of all keys: cover both kinds.
        let mut negated = 0;
        for byte in 1..=16u8 {
            let key = secret(byte);
            let k = Scalar::from_bytes_mod_order(clamp_integer([byte; 32]));
            if EdwardsPoint::mul_base(&k).compress().as_bytes()[31] & 0x80 != 0 {
                negated += 1;
            }
            let signature = sign(&key, &[byte], &[byte; NONCE_LEN]);
            assert!(verify(&key.public(), &[byte], &signature), "key {byte}");
        }
        assert!((1..16).contains(&negated), "{negated} of 16 negated");
    }

    #[test]
    fn out_of_range_keys_and_scalars_are_refused() {
        let key = secret(5);
        let signature = sign(&key, b"m", &[0; NONCE_LEN]);
        // u >= p, and u with the top bit set (its low 255 bits would be a valid key).
        let mut prime = [0xff_u8; 32];
        prime[0] = 0xed;
        prime[31] = 0x7f;
        assert!(!is_below_field_prime(&prime));
        let mut below = prime;
        below[0] = 0xec;
        assert!(is_below_field_prime(&below));
        assert!(!verify(&NodeKey::from(prime), b"m", &signature));
        let mut high = *key.public().as_bytes();
        high[31] |= 0x80;
        assert!(!verify(&NodeKey::from(high), b"m", &signature));
        // s + q: the same point, but not reduced.
        let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap();
        let order: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        let mut malleated = signature;
        for i in 0..32 {
            let sum = u16::from(s.as_bytes()[i]) + u16::from(order[i]) + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_ne!(malleated, signature);
        assert!(!verify(&key.public(), b"m", &malleated));
    }
}
