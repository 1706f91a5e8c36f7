//! What the entry and the exit say to each other at the start of each mesh TCP stream, before
//! the relayed bytes: the entry sends the target (a version byte, then RFC 1928's type, address
//! and port), the exit answers a version byte and one status byte, an RFC 1928 reply code.
//! Both are tiny, versioned and checked.

use super::wire::{ReplyCode, Target, WireError};

/// This protocol's version; a peer speaking another is refused.
pub const MESH_VERSION: u8 = 1;
/// The longest request: version and the longest target.
pub const MAX_MESH_REQUEST_LEN: usize = 1 + 1 + 1 + 255 + 2;
/// The status message's length.
pub const STATUS_LEN: usize = 2;

/// The entry's request for `target`.
pub fn emit_request(target: &Target) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + target.encoded_len());
    out.push(MESH_VERSION);
    target.emit(&mut out);
    out
}

/// Parses the entry's request from what has arrived: the target and the bytes it took,
/// `Ok(None)` when more are needed.
pub fn parse_request(bytes: &[u8]) -> Result<Option<(Target, usize)>, WireError> {
    let Some(&version) = bytes.first() else {
        return Ok(None);
    };
    if version != MESH_VERSION {
        return Err(WireError::BadVersion(version));
    }
    let rest = bytes.get(1..).unwrap_or_default();
    Ok(Target::parse(rest)?.map(|(target, len)| (target, 1 + len)))
}

/// The exit's answer.
pub fn emit_status(code: ReplyCode) -> [u8; STATUS_LEN] {
    [MESH_VERSION, code as u8]
}

/// Parses the exit's answer: `Ok(None)` when more bytes are needed.
pub fn parse_status(bytes: &[u8]) -> Result<Option<ReplyCode>, WireError> {
    match bytes {
        [] | [MESH_VERSION] => Ok(None),
        [MESH_VERSION, status, ..] => Ok(Some(ReplyCode::from_byte(*status))),
        [version, ..] => Err(WireError::BadVersion(*version)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_from_any_prefix() {
        for target in [
            Target::Ip("10.1.2.3:80".parse().unwrap()),
            Target::Ip("[::1]:443".parse().unwrap()),
            Target::Domain("a.example".into(), 8080),
        ] {
            let bytes = emit_request(&target);
            assert!(bytes.len() <= MAX_MESH_REQUEST_LEN);
            for len in 0..bytes.len() {
                assert_eq!(parse_request(&bytes[..len]), Ok(None));
            }
            assert_eq!(parse_request(&bytes), Ok(Some((target, bytes.len()))));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(parse_request(&[2, 1]), Err(WireError::BadVersion(2)));
        assert_eq!(
            parse_request(&[1, 9, 0]),
            Err(WireError::UnsupportedAddressType(9))
        );
        assert_eq!(parse_request(&[1, 3, 0, 0, 1]), Err(WireError::BadDomain));
    }

    #[test]
    fn statuses_round_trip() {
        for code in [
            ReplyCode::Succeeded,
            ReplyCode::NotAllowed,
            ReplyCode::ConnectionRefused,
        ] {
            let bytes = emit_status(code);
            assert_eq!(parse_status(&bytes[..1]), Ok(None));
            assert_eq!(parse_status(&bytes), Ok(Some(code)));
        }
        assert_eq!(parse_status(&[]), Ok(None));
        assert_eq!(parse_status(&[7, 0]), Err(WireError::BadVersion(7)));
        assert_eq!(parse_status(&[1, 200]), Ok(Some(ReplyCode::GeneralFailure)));
    }
}
