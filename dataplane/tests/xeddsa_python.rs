//! XEdDSA checked against an independent implementation: the `xeddsa` package for Python (a
//! binding of libxeddsa, on libsodium). Each side verifies the other's signatures and refuses
//! bent ones. (The two derive the secret per-signature scalar `r` from the nonce differently,
//! which no verifier can see, so the signatures themselves differ.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/machine.rs"]
mod machine;

use std::process::Command;

use machine::{output_with_input, require, Machine};
use skywire_dataplane::sim::SplitMix;
use skywire_dataplane::xeddsa::{self, NONCE_LEN};
use skywire_dataplane::SecretKey;

use rand_core::RngCore;

const SCRIPT: &str = r#"
import sys
import xeddsa
for line in sys.stdin:
    priv, public, message, nonce, signature = (bytes.fromhex(f) for f in line.rstrip("\n").split(" "))
    assert xeddsa.priv_to_curve25519_pub(priv) == public, "public keys differ"
    edwards = xeddsa.curve25519_pub_to_ed25519_pub(public, False)
    ours = xeddsa.ed25519_verify(signature, edwards, message)
    bent = bytearray(signature)
    bent[5] ^= 1
    bent_ok = xeddsa.ed25519_verify(bytes(bent), edwards, message)
    # XEdDSA's calculate_key_pair: the scalar whose Edwards public key has sign bit 0.
    theirs = xeddsa.ed25519_priv_sign(xeddsa.priv_force_sign(priv, False), message, nonce)
    print(int(ours), int(bent_ok), theirs.hex())
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn signatures_agree_with_pythons_xeddsa_both_ways() {
    const TEST: &str = "signatures_agree_with_pythons_xeddsa_both_ways";
    if !require("python3", TEST) {
        return;
    }
    let has_xeddsa = Command::new("python3")
        .args(["-c", "import xeddsa"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_xeddsa {
        let needs = "the xeddsa package for python3 (pip install xeddsa)";
        Machine::current().skip(TEST, needs, &mut std::io::stderr());
        return;
    }
    let mut rng = SplitMix(0x5eed);
    let mut cases = Vec::new();
    for round in 0..32usize {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut message = vec![0u8; round * 7];
        rng.fill_bytes(&mut message);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let key = SecretKey::from(secret);
        let signature = xeddsa::sign(&key, &message, &nonce);
        cases.push((key, message, nonce, signature));
    }
    // One line a case, fields separated by one space (an empty message is an empty field).
    let mut input = String::new();
    for (key, message, nonce, signature) in &cases {
        // libxeddsa takes the clamped scalar as the private key.
        let private = curve25519_dalek::scalar::clamp_integer(key.to_x25519().to_bytes());
        input += &format!(
            "{} {} {} {} {}\n",
            hex(&private),
            hex(key.public().as_bytes()),
            hex(message),
            hex(nonce),
            hex(signature)
        );
    }
    let output = output_with_input(Command::new("python3").args(["-c", SCRIPT]), &input);
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), cases.len());
    for ((key, message, _, _), line) in cases.iter().zip(&lines) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], "1", "python refused our signature");
        assert_eq!(fields[1], "0", "python accepted a bent signature");
        let theirs: [u8; 64] = unhex(fields[2]).try_into().unwrap();
        assert!(
            xeddsa::verify(&key.public(), message, &theirs),
            "we refused python's signature"
        );
        let mut bent = theirs;
        bent[40] ^= 1;
        assert!(!xeddsa::verify(&key.public(), message, &bent));
    }
}
