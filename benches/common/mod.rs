//! What more than one bench needs: its settings from the environment, WireGuard sessions ready
//! to carry data, and what one ChaCha20-Poly1305 pass and one sealed mesh header cost on this
//! machine.

#![allow(dead_code)]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::env::VarError;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Instant;

use skywire_dataplane::node::INNER_MTU;
use skywire_dataplane::wire::mesh::HEADER_LEN;
use skywire_dataplane::MAX_DATAGRAM;

/// The whole number in the environment variable `name`, or `default` when it is not set. Any
/// other value stops the bench before it starts anything, with a message that names the
/// variable and the value it could not read: a typo must not quietly measure something else.
pub fn env_number<T: FromStr + Display>(name: &str, default: T) -> T {
    let text = match std::env::var(name) {
        Err(VarError::NotPresent) => return default,
        Err(VarError::NotUnicode(raw)) => raw.to_string_lossy().into_owned(),
        Ok(text) => match text.parse() {
            Ok(number) => return number,
            Err(_) => text,
        },
    };
    eprintln!(
        "{name}={text:?} is not a whole number: set it to one, or unset it for the default ({default})"
    );
    std::process::exit(2);
}

/// An initiator and a responder with a completed handshake.
pub fn established_pair(initiator: u8, responder: u8) -> (Tunn, Tunn) {
    let secret = |byte| StaticSecret::from([byte; 32]);
    let (i_secret, r_secret) = (secret(initiator), secret(responder));
    let (i_public, r_public) = (PublicKey::from(&i_secret), PublicKey::from(&r_secret));
    let mut i = Tunn::new(i_secret, r_public, None, None, u32::from(initiator), None);
    let mut r = Tunn::new(r_secret, i_public, None, None, u32::from(responder), None);
    let (mut i_buf, mut r_buf) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
    let TunnResult::WriteToNetwork(init) = i.format_handshake_initiation(&mut i_buf, false) else {
        panic!("no handshake initiation");
    };
    let TunnResult::WriteToNetwork(response) = r.decapsulate(None, init, &mut r_buf) else {
        panic!("no handshake response");
    };
    let TunnResult::WriteToNetwork(keepalive) = i.decapsulate(None, response, &mut i_buf) else {
        panic!("no keepalive after the response");
    };
    assert!(matches!(
        r.decapsulate(None, keepalive, &mut r_buf),
        TunnResult::Done
    ));
    (i, r)
}

/// One ChaCha20-Poly1305 pass over a byte, in seconds: boringtun sealing and opening packets of
/// the route sessions' size on one core.
pub fn crypto_seconds_per_byte() -> f64 {
    seal_and_open_seconds(INNER_MTU) / (2.0 * INNER_MTU as f64)
}

/// One relayed leg's sealed mesh header, per byte of the full-size packet it heads, in seconds:
/// boringtun sealing and opening a 40-byte header on one core, over the packet's inner bytes.
pub fn sealed_header_seconds_per_byte() -> f64 {
    seal_and_open_seconds(HEADER_LEN) / INNER_MTU as f64
}

/// What sealing and then opening one IP packet of `len` bytes costs, in seconds.
fn seal_and_open_seconds(len: usize) -> f64 {
    let (mut sender, mut receiver) = established_pair(1, 2);
    // An IPv6 header (boringtun checks that it opened an IP packet) and no next header.
    let mut packet = vec![0u8; len];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
    packet[6] = 59;
    let (mut sealed, mut opened) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
    let packets = 50_000;
    let started = Instant::now();
    for _ in 0..packets {
        let TunnResult::WriteToNetwork(datagram) = sender.encapsulate(&packet, &mut sealed) else {
            panic!("boringtun did not seal");
        };
        let TunnResult::WriteToTunnelV6(..) = receiver.decapsulate(None, datagram, &mut opened)
        else {
            panic!("boringtun did not open");
        };
    }
    started.elapsed().as_secs_f64() / packets as f64
}
