//! RFC 1928 (SOCKS5) as the entry's local clients speak it: the method greeting, the CONNECT
//! request and the reply, parsed from whatever prefix of the bytes has arrived (`Ok(None)`:
//! wait for more) and emitted into small arrays. Nothing here can panic on what a client sends.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte of every SOCKS5 message.
pub const VERSION: u8 = 5;
/// The "no authentication required" method.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// The "no acceptable methods" answer.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
/// A greeting at its longest: version, count, 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// A request at its longest: version, command, reserved, type, length, 255-byte name, port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// A reply as this proxy emits it (IPv4 bound address).
pub const REPLY_LEN: usize = 10;

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
const CMD_CONNECT: u8 = 0x01;

/// The reply codes of RFC 1928 section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplyCode {
    /// The connection is made.
    Succeeded = 0x00,
    /// General SOCKS server failure: the exit or the route to it is down.
    GeneralFailure = 0x01,
    /// Connection not allowed by ruleset: the exit does not take this node's key.
    NotAllowed = 0x02,
    /// Network unreachable: no path to the exit is known, or the exit has no route to the
    /// target's network.
    NetworkUnreachable = 0x03,
    /// Host unreachable: the name did not resolve, or the target did not answer.
    HostUnreachable = 0x04,
    /// Connection refused by the target.
    ConnectionRefused = 0x05,
    /// TTL expired.
    TtlExpired = 0x06,
    /// Command not supported (BIND, UDP ASSOCIATE).
    CommandNotSupported = 0x07,
    /// Address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl ReplyCode {
    /// The code for a byte read off the wire; unknown values are a general failure.
    pub fn from_byte(byte: u8) -> ReplyCode {
        match byte {
            0x00 => ReplyCode::Succeeded,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            _ => ReplyCode::GeneralFailure,
        }
    }
}

/// Where a CONNECT goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A name to resolve at the exit (1 to 255 bytes of UTF-8, no NUL) and a port.
    Domain(String, u16),
}

impl Target {
    /// The address part as RFC 1928 encodes it (type, address, port): what the encoded
    /// form takes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Target::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            Target::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            Target::Domain(name, _) => 1 + 1 + name.len() + 2,
        }
    }

    /// Appends the type, address and port.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Target::Ip(SocketAddr::V4(v4)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&v4.ip().octets());
                out.extend_from_slice(&v4.port().to_be_bytes());
            }
            Target::Ip(SocketAddr::V6(v6)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&v6.ip().octets());
                out.extend_from_slice(&v6.port().to_be_bytes());
            }
            Target::Domain(name, port) => {
                out.push(ATYP_DOMAIN);
                // Parsing bounds names to 255 bytes; a longer one is cut rather than mis-framed.
                let name = name.as_bytes().get(..255).unwrap_or(name.as_bytes());
                out.push(name.len() as u8);
                out.extend_from_slice(name);
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
    }

    /// Parses type, address and port from the start of `bytes`: the target and the bytes
    /// it took, `Ok(None)` when more are needed.
    pub fn parse(bytes: &[u8]) -> Result<Option<(Target, usize)>, WireError> {
        let Some(&atyp) = bytes.first() else {
            return Ok(None);
        };
        let (address_len, offset) = match atyp {
            ATYP_IPV4 => (4, 1),
            ATYP_IPV6 => (16, 1),
            ATYP_DOMAIN => match bytes.get(1) {
                None => return Ok(None),
                Some(0) => return Err(WireError::BadDomain),
                Some(&len) => (usize::from(len), 2),
            },
            other => return Err(WireError::UnsupportedAddressType(other)),
        };
        let end = offset + address_len + 2;
        let Some(field) = bytes.get(offset..end) else {
            return Ok(None);
        };
        let (address, port) = field.split_at(address_len);
        let port: [u8; 2] = port.try_into().map_err(|_| WireError::BadDomain)?;
        let port = u16::from_be_bytes(port);
        let target = match atyp {
            ATYP_IPV4 => {
                let octets: [u8; 4] = address.try_into().map_err(|_| WireError::BadDomain)?;
                Target::Ip(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
            }
            ATYP_IPV6 => {
                let octets: [u8; 16] = address.try_into().map_err(|_| WireError::BadDomain)?;
                Target::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(address).map_err(|_| WireError::BadDomain)?;
                if name.contains('\0') {
                    return Err(WireError::BadDomain);
                }
                Target::Domain(name.to_owned(), port)
            }
        };
        Ok(Some((target, end)))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(address) => write!(f, "{address}"),
            Target::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// What is wrong with a client's or a peer's bytes. Small and `Copy`: the hot path's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The version byte is not 5 (or, on the mesh, not this protocol's version).
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// The greeting lists no methods.
    #[error("the greeting offers no method")]
    NoMethods,
    /// A command other than CONNECT.
    #[error("unsupported command {0:#04x}: only CONNECT is served")]
    UnsupportedCommand(u8),
    /// An address type other than IPv4, domain name or IPv6.
    #[error("unsupported address type {0:#04x}")]
    UnsupportedAddressType(u8),
    /// An empty domain name, or one that is not UTF-8 text.
    #[error("the domain name is empty or not text")]
    BadDomain,
    /// The reserved byte is not zero.
    #[error("the reserved byte is not zero")]
    BadReserved,
}

impl WireError {
    /// The reply that answers a request with this error.
    pub fn reply_code(self) -> ReplyCode {
        match self {
            WireError::UnsupportedCommand(_) => ReplyCode::CommandNotSupported,
            WireError::UnsupportedAddressType(_) => ReplyCode::AddressTypeNotSupported,
            WireError::BadDomain => ReplyCode::HostUnreachable,
            WireError::BadVersion(_) | WireError::NoMethods | WireError::BadReserved => {
                ReplyCode::GeneralFailure
            }
        }
    }
}

/// Parses the method greeting: whether it offers "no authentication", and its length;
/// `Ok(None)` when more bytes are needed.
pub fn parse_greeting(bytes: &[u8]) -> Result<Option<(bool, usize)>, WireError> {
    let Some(&version) = bytes.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let Some(&count) = bytes.get(1) else {
        return Ok(None);
    };
    if count == 0 {
        return Err(WireError::NoMethods);
    }
    let end = 2 + usize::from(count);
    let Some(methods) = bytes.get(2..end) else {
        return Ok(None);
    };
    Ok(Some((methods.contains(&METHOD_NO_AUTH), end)))
}

/// The method selection message: "no authentication", or "no acceptable methods".
pub fn method_selection(no_auth: bool) -> [u8; 2] {
    [
        VERSION,
        if no_auth {
            METHOD_NO_AUTH
        } else {
            METHOD_NONE_ACCEPTABLE
        },
    ]
}

/// Parses a request: a CONNECT's target and the request's length; `Ok(None)` when more bytes
/// are needed. An unsupported command is reported as soon as its byte has arrived.
pub fn parse_request(bytes: &[u8]) -> Result<Option<(Target, usize)>, WireError> {
    let Some(&version) = bytes.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let Some(&command) = bytes.get(1) else {
        return Ok(None);
    };
    if command != CMD_CONNECT {
        return Err(WireError::UnsupportedCommand(command));
    }
    let Some(&reserved) = bytes.get(2) else {
        return Ok(None);
    };
    if reserved != 0 {
        return Err(WireError::BadReserved);
    }
    let rest = bytes.get(3..).unwrap_or_default();
    Ok(Target::parse(rest)?.map(|(target, len)| (target, 3 + len)))
}

/// A reply with `code`; the bound address is left unspecified (0.0.0.0:0), which clients
/// accept and which tells nothing about the exit.
pub fn reply(code: ReplyCode) -> [u8; REPLY_LEN] {
    [VERSION, code as u8, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn greetings_parse_from_any_prefix() {
        let full = [5, 2, 2, 0];
        for len in 0..full.len() {
            assert_eq!(parse_greeting(&full[..len]), Ok(None), "prefix {len}");
        }
        assert_eq!(parse_greeting(&full), Ok(Some((true, 4))));
        assert_eq!(parse_greeting(&[5, 1, 0, 9, 9]), Ok(Some((true, 3))));
        assert_eq!(parse_greeting(&[5, 1, 2]), Ok(Some((false, 3))));
        let all: Vec<u8> = [5, 255].into_iter().chain(1..=255).collect();
        assert_eq!(parse_greeting(&all), Ok(Some((false, 257))));
    }

    #[test]
    fn malformed_greetings_are_refused() {
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(WireError::BadVersion(4)));
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1"),
            Err(WireError::BadVersion(b'G'))
        );
        assert_eq!(parse_greeting(&[5, 0]), Err(WireError::NoMethods));
    }

    #[test]
    fn method_selection_says_no_auth_or_none() {
        assert_eq!(method_selection(true), [5, 0]);
        assert_eq!(method_selection(false), [5, 0xff]);
    }

    #[test]
    fn requests_parse_every_address_type() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        assert_eq!(
            parse_request(&v4),
            Ok(Some((Target::Ip("127.0.0.1:8080".parse().unwrap()), 10)))
        );
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&v6),
            Ok(Some((Target::Ip("[::1]:80".parse().unwrap()), 22)))
        );
        let mut name = vec![5, 1, 0, 3, 9];
        name.extend_from_slice(b"localhost");
        name.extend_from_slice(&[1, 187]);
        assert_eq!(
            parse_request(&name),
            Ok(Some((Target::Domain("localhost".into(), 443), 16)))
        );
        for request in [&v4[..], &v6, &name] {
            for len in 0..request.len() {
                assert_eq!(
                    parse_request(&request[..len]),
                    Ok(None),
                    "{request:?} {len}"
                );
            }
        }
    }

    #[test]
    fn malformed_requests_name_their_reply() {
        let cases: &[(&[u8], WireError, ReplyCode)] = &[
            (
                &[4, 1, 0, 1],
                WireError::BadVersion(4),
                ReplyCode::GeneralFailure,
            ),
            (
                &[5, 2],
                WireError::UnsupportedCommand(2),
                ReplyCode::CommandNotSupported,
            ),
            (
                &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0],
                WireError::UnsupportedCommand(3),
                ReplyCode::CommandNotSupported,
            ),
            (
                &[5, 1, 1, 1],
                WireError::BadReserved,
                ReplyCode::GeneralFailure,
            ),
            (
                &[5, 1, 0, 5, 1, 2],
                WireError::UnsupportedAddressType(5),
                ReplyCode::AddressTypeNotSupported,
            ),
            (
                &[5, 1, 0, 0],
                WireError::UnsupportedAddressType(0),
                ReplyCode::AddressTypeNotSupported,
            ),
            (
                &[5, 1, 0, 3, 0, 0, 80],
                WireError::BadDomain,
                ReplyCode::HostUnreachable,
            ),
            (
                &[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80],
                WireError::BadDomain,
                ReplyCode::HostUnreachable,
            ),
            (
                &[5, 1, 0, 3, 2, b'a', 0, 0, 80],
                WireError::BadDomain,
                ReplyCode::HostUnreachable,
            ),
        ];
        for (bytes, error, code) in cases {
            assert_eq!(parse_request(bytes), Err(*error), "{bytes:?}");
            assert_eq!(error.reply_code(), *code);
        }
    }

    #[test]
    fn targets_round_trip() {
        for target in [
            Target::Ip("192.0.2.1:1".parse().unwrap()),
            Target::Ip("[2001:db8::1]:65535".parse().unwrap()),
            Target::Domain("example.com".into(), 80),
            Target::Domain("x".repeat(255), 8080),
        ] {
            let mut out = Vec::new();
            target.emit(&mut out);
            assert_eq!(out.len(), target.encoded_len());
            assert_eq!(Target::parse(&out), Ok(Some((target, out.len()))));
        }
    }

    #[test]
    fn replies_are_complete() {
        assert_eq!(reply(ReplyCode::Succeeded), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(reply(ReplyCode::AddressTypeNotSupported)[1], 8);
        for byte in 0..=255u8 {
            let code = ReplyCode::from_byte(byte);
            if byte <= 8 {
                assert_eq!(code as u8, byte);
            } else {
                assert_eq!(code, ReplyCode::GeneralFailure);
            }
        }
    }
}
