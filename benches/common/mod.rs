//! What more than one bench needs: WireGuard sessions ready to carry data.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use skywire_dataplane::MAX_DATAGRAM;

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
