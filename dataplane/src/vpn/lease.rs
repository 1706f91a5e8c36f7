//! The lease protocol between a VPN client and server, over a mesh TCP connection (the route
//! session authenticates both ends, so the server knows the client's key from its mesh
//! address). The client asks; the server grants addresses, prefix lengths and the MTU, or
//! refuses with a code. Every message is an 8-byte header (magic `SKYV`, version, kind, body
//! length) and a fixed-size body; anything else is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Prefix;
use crate::service::InterfaceAddress;

/// The mesh TCP port the server listens on unless configured otherwise.
pub const DEFAULT_PORT: u16 = 7001;
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// The header's length.
pub const HEADER_LEN: usize = 8;
/// No message is longer than this.
pub const MAX_MESSAGE: usize = HEADER_LEN + GRANT_BODY;

const MAGIC: &[u8; 4] = b"SKYV";
const KIND_REQUEST: u8 = 1;
const KIND_GRANT: u8 = 2;
const KIND_REFUSAL: u8 = 3;
/// flags(1) ipv4(4) len4(1) ipv6(16) len6(1) mtu(2)
const GRANT_BODY: usize = 25;
const FLAG_IPV4: u8 = 1;
const FLAG_IPV6: u8 = 2;

/// What the server grants a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The client's IPv4 address and the pool's prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The client's IPv6 address and the pool's prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// The MTU of the tunnel.
    pub mtu: u16,
}

/// Why a client does not use what a server granted: the granted subnet goes into the host's
/// routing table through the tunnel, so a hostile server could otherwise take the host's
/// traffic (a `/0`) or its LAN (an address inside it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnusableGrant {
    /// The granted subnet is a whole address family.
    #[error("the server granted {0}, a default route: a grant is the tunnel's own subnet, never everything")]
    DefaultRoute(Prefix),
    /// The granted subnet lies outside every route the client asked for.
    #[error("the server granted {granted}, which no route in vpn.client.routes ({asked}) covers: if that is the server's subnet you expect, add it to routes")]
    NotAsked {
        /// The granted address with its prefix length.
        granted: Prefix,
        /// The client's routes, as configured.
        asked: String,
    },
    /// The granted address lies in a prefix that another interface of this host reaches
    /// directly.
    #[error("the server granted {address}, inside {on_link}, which is on-link on {interface}: ask the server's administrator for a pool that does not overlap this host's networks")]
    OnLink {
        /// The granted address.
        address: IpAddr,
        /// The prefix it falls in.
        on_link: Prefix,
        /// The interface that prefix is on.
        interface: String,
    },
}

impl Grant {
    /// The granted subnets: each address with its prefix length.
    fn subnets(&self) -> impl Iterator<Item = Prefix> {
        let v4 = self
            .ipv4
            .and_then(|(address, len)| Prefix::new(IpAddr::V4(address), len).ok());
        let v6 = self
            .ipv6
            .and_then(|(address, len)| Prefix::new(IpAddr::V6(address), len).ok());
        v4.into_iter().chain(v6)
    }

    /// Whether a client that asked to route `asked` through the tunnel can use the grant, on
    /// a host whose other interfaces have `on_link` addresses (the client's own device left
    /// out): each granted subnet lies inside an asked route and is not a default route, and
    /// no granted address falls in a prefix on-link elsewhere.
    pub fn check(
        &self,
        asked: &[Prefix],
        on_link: &[InterfaceAddress],
    ) -> Result<(), UnusableGrant> {
        for granted in self.subnets() {
            if granted.is_default() {
                return Err(UnusableGrant::DefaultRoute(granted));
            }
            if !asked.iter().any(|route| route.covers(&granted)) {
                let asked = asked
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(UnusableGrant::NotAsked {
                    granted,
                    asked: if asked.is_empty() {
                        "none".to_owned()
                    } else {
                        asked
                    },
                });
            }
            let address = granted.address();
            for entry in on_link {
                let Ok(prefix) = Prefix::new(entry.address, entry.prefix_len) else {
                    continue;
                };
                if prefix.contains(address) {
                    return Err(UnusableGrant::OnLink {
                        address,
                        on_link: Prefix::new(prefix.network(), entry.prefix_len).unwrap_or(prefix),
                        interface: entry.interface.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why a server refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client's key is not in the server's allow list.
    #[error("the server does not allow this node's key: ask its administrator to add it to vpn.server.allow")]
    NotAllowed,
    /// The server's pool has no free address.
    #[error("the server's address pool is full: ask its administrator to widen it")]
    PoolExhausted,
    /// The server speaks another version.
    #[error(
        "the server speaks another version of the VPN lease protocol: update skywired on one side"
    )]
    Version,
    /// The server failed for a reason of its own (its log says which).
    #[error("the server could not lease addresses (its log says why)")]
    ServerError,
    /// A code this build does not know.
    #[error("the server refused with code {0}")]
    Other(u8),
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::NotAllowed => 1,
            Refusal::PoolExhausted => 2,
            Refusal::Version => 3,
            Refusal::ServerError => 4,
            Refusal::Other(code) => code,
        }
    }

    fn from_code(code: u8) -> Refusal {
        match code {
            1 => Refusal::NotAllowed,
            2 => Refusal::PoolExhausted,
            3 => Refusal::Version,
            4 => Refusal::ServerError,
            other => Refusal::Other(other),
        }
    }
}

/// One message of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The client asks for its lease.
    Request,
    /// The server's answer: the lease.
    Grant(Grant),
    /// The server's answer: no lease.
    Refusal(Refusal),
}

/// Why bytes are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed.
    #[error("incomplete message")]
    Incomplete,
    /// Not this protocol.
    #[error("not a skywire VPN lease message")]
    BadMagic,
    /// Another version of the protocol.
    #[error("lease protocol version {0}, this build speaks {VERSION}")]
    Version(u8),
    /// A kind or body length that makes no sense.
    #[error("malformed lease message")]
    Malformed,
}

impl Message {
    /// Parses the message at the start of `bytes`; returns it and how many bytes it took.
    pub fn parse(bytes: &[u8]) -> Result<(Message, usize), ParseError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            // A partial header is checked as far as it goes, so garbage fails early.
            let seen = bytes.len().min(MAGIC.len());
            if bytes.get(..seen) != MAGIC.get(..seen) {
                return Err(ParseError::BadMagic);
            }
            return Err(ParseError::Incomplete);
        };
        if &header[..4] != MAGIC {
            return Err(ParseError::BadMagic);
        }
        if header[4] != VERSION {
            return Err(ParseError::Version(header[4]));
        }
        let kind = header[5];
        let body_len = usize::from(u16::from_be_bytes([header[6], header[7]]));
        let expected = match kind {
            KIND_REQUEST => 0,
            KIND_GRANT => GRANT_BODY,
            KIND_REFUSAL => 1,
            _ => return Err(ParseError::Malformed),
        };
        if body_len != expected {
            return Err(ParseError::Malformed);
        }
        let body = bytes
            .get(HEADER_LEN..HEADER_LEN + body_len)
            .ok_or(ParseError::Incomplete)?;
        let message = match kind {
            KIND_REQUEST => Message::Request,
            KIND_REFUSAL => Message::Refusal(Refusal::from_code(body[0])),
            _ => Message::Grant(parse_grant(body)?),
        };
        Ok((message, HEADER_LEN + body_len))
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (kind, body) = match self {
            Message::Request => (KIND_REQUEST, Vec::new()),
            Message::Refusal(refusal) => (KIND_REFUSAL, vec![refusal.code()]),
            Message::Grant(grant) => (KIND_GRANT, emit_grant(grant)),
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.push(kind);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// Whether more of a message may still arrive on `socket`: it is being opened, or open for
/// receiving.
pub fn may_still_receive(socket: &smoltcp::socket::tcp::Socket<'_>) -> bool {
    use smoltcp::socket::tcp::State;
    matches!(socket.state(), State::SynSent | State::SynReceived) || socket.may_recv()
}

fn parse_grant(body: &[u8]) -> Result<Grant, ParseError> {
    let body: &[u8; GRANT_BODY] = body.try_into().map_err(|_| ParseError::Malformed)?;
    let flags = body[0];
    if flags & !(FLAG_IPV4 | FLAG_IPV6) != 0 || flags == 0 {
        return Err(ParseError::Malformed);
    }
    let mut v4 = [0u8; 4];
    v4.copy_from_slice(&body[1..5]);
    let mut v6 = [0u8; 16];
    v6.copy_from_slice(&body[6..22]);
    let (len4, len6) = (body[5], body[22]);
    let mtu = u16::from_be_bytes([body[23], body[24]]);
    if len4 > 32 || len6 > 128 || mtu < 576 {
        return Err(ParseError::Malformed);
    }
    // A family the grant leaves out has its fields zero: one grant, one encoding.
    let unused4 = flags & FLAG_IPV4 == 0 && body[1..6].iter().any(|&byte| byte != 0);
    let unused6 = flags & FLAG_IPV6 == 0 && body[6..23].iter().any(|&byte| byte != 0);
    if unused4 || unused6 {
        return Err(ParseError::Malformed);
    }
    Ok(Grant {
        ipv4: (flags & FLAG_IPV4 != 0).then_some((Ipv4Addr::from(v4), len4)),
        ipv6: (flags & FLAG_IPV6 != 0).then_some((Ipv6Addr::from(v6), len6)),
        mtu,
    })
}

fn emit_grant(grant: &Grant) -> Vec<u8> {
    let mut body = vec![0u8; GRANT_BODY];
    if let Some((address, len)) = grant.ipv4 {
        body[0] |= FLAG_IPV4;
        body[1..5].copy_from_slice(&address.octets());
        body[5] = len;
    }
    if let Some((address, len)) = grant.ipv6 {
        body[0] |= FLAG_IPV6;
        body[6..22].copy_from_slice(&address.octets());
        body[22] = len;
    }
    body[23..25].copy_from_slice(&grant.mtu.to_be_bytes());
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::interface_address;

    #[test]
    fn messages_round_trip() {
        let grant = Grant {
            ipv4: Some(("10.77.0.2".parse().unwrap(), 24)),
            ipv6: Some(("fd77::2".parse().unwrap(), 64)),
            mtu: 1348,
        };
        for message in [
            Message::Request,
            Message::Grant(grant),
            Message::Grant(Grant {
                ipv4: None,
                ..grant
            }),
            Message::Refusal(Refusal::NotAllowed),
            Message::Refusal(Refusal::Other(99)),
        ] {
            let mut bytes = message.to_bytes();
            assert!(bytes.len() <= MAX_MESSAGE);
            for cut in 0..bytes.len() {
                assert_eq!(Message::parse(&bytes[..cut]), Err(ParseError::Incomplete));
            }
            bytes.extend_from_slice(b"next");
            assert_eq!(Message::parse(&bytes), Ok((message, bytes.len() - 4)));
        }
    }

    fn grant(ipv4: Option<&str>, ipv6: Option<&str>) -> Grant {
        let split = |text: &str| {
            let (address, len) = text.split_once('/').unwrap();
            (address.parse().unwrap(), len.parse().unwrap())
        };
        let ipv4 = ipv4.map(|text| {
            let (address, len) = split(text);
            let IpAddr::V4(address) = address else {
                panic!("{text}")
            };
            (address, len)
        });
        let ipv6 = ipv6.map(|text| {
            let (address, len) = split(text);
            let IpAddr::V6(address) = address else {
                panic!("{text}")
            };
            (address, len)
        });
        Grant {
            ipv4,
            ipv6,
            mtu: 1348,
        }
    }

    fn prefixes(texts: &[&str]) -> Vec<Prefix> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn a_grant_inside_the_routes_asked_for_is_used() {
        let asked = prefixes(&["10.77.0.0/24", "fd77::/64", "10.99.0.0/16"]);
        let host = [
            interface_address("eth0", "192.168.1.20/24"),
            interface_address("lo", "127.0.0.1/8"),
        ];
        let good = grant(Some("10.77.0.2/24"), Some("fd77::2/64"));
        assert_eq!(good.check(&asked, &host), Ok(()));
        assert_eq!(
            grant(Some("10.99.3.2/24"), None).check(&asked, &host),
            Ok(())
        );
        let everything = prefixes(&["0.0.0.0/0", "::/0"]);
        assert_eq!(good.check(&everything, &host), Ok(()), "a full tunnel");
    }

    #[test]
    fn a_grant_wider_than_asked_or_not_asked_for_is_refused() {
        let asked = prefixes(&["10.77.0.0/24", "fd77::/64"]);
        let host = [interface_address("eth0", "192.168.1.20/24")];
        let wider = grant(Some("10.77.0.2/16"), None).check(&asked, &host);
        assert!(
            matches!(&wider, Err(UnusableGrant::NotAsked { granted, .. }) if granted.prefix_len() == 16),
            "{wider:?}"
        );
        let elsewhere = grant(Some("10.77.0.2/24"), Some("fd99::2/64")).check(&asked, &host);
        assert!(
            matches!(elsewhere, Err(UnusableGrant::NotAsked { .. })),
            "{elsewhere:?}"
        );
        let text = elsewhere.unwrap_err().to_string();
        assert!(
            text.contains("fd99::2/64") && text.contains("10.77.0.0/24, fd77::/64"),
            "{text}"
        );
        let nothing_asked = grant(Some("10.77.0.2/24"), None).check(&[], &host);
        assert!(nothing_asked.unwrap_err().to_string().contains("(none)"));
        // A default route, even to a client that sends everything through the tunnel.
        let everything = prefixes(&["0.0.0.0/0", "::/0"]);
        for hostile in [
            grant(Some("10.77.0.2/0"), None),
            grant(None, Some("fd77::2/0")),
        ] {
            let result = hostile.check(&everything, &host);
            assert!(
                matches!(result, Err(UnusableGrant::DefaultRoute(_))),
                "{result:?}"
            );
            let result = hostile.check(&asked, &host);
            assert!(
                matches!(result, Err(UnusableGrant::DefaultRoute(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn an_address_inside_a_network_of_another_interface_is_refused() {
        let everything = prefixes(&["0.0.0.0/0", "::/0"]);
        let host = [
            interface_address("eth0", "192.168.1.20/24"),
            interface_address("eth0", "2001:db8:1::20/64"),
            interface_address("wg0", "10.8.0.1/32"),
        ];
        let lan = grant(Some("192.168.1.77/24"), None).check(&everything, &host);
        assert_eq!(
            lan,
            Err(UnusableGrant::OnLink {
                address: "192.168.1.77".parse().unwrap(),
                on_link: "192.168.1.0/24".parse().unwrap(),
                interface: "eth0".to_owned(),
            })
        );
        let text = lan.unwrap_err().to_string();
        assert!(text.contains("on-link on eth0"), "{text}");
        let lan6 = grant(None, Some("2001:db8:1::99/64")).check(&everything, &host);
        assert!(
            matches!(lan6, Err(UnusableGrant::OnLink { .. })),
            "{lan6:?}"
        );
        let taken = grant(Some("10.8.0.1/24"), None).check(&everything, &host);
        assert!(
            matches!(taken, Err(UnusableGrant::OnLink { .. })),
            "{taken:?}"
        );
        let beside = grant(Some("192.168.2.7/24"), Some("2001:db8:2::7/64"));
        assert_eq!(beside.check(&everything, &host), Ok(()));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Message::parse(b"GET / HTTP/1.1"), Err(ParseError::BadMagic));
        assert_eq!(Message::parse(b"SKX"), Err(ParseError::BadMagic));
        assert_eq!(
            Message::parse(b"SKYV\x02\x01\x00\x00"),
            Err(ParseError::Version(2))
        );
        assert_eq!(
            Message::parse(b"SKYV\x01\x09\x00\x00"),
            Err(ParseError::Malformed)
        );
        assert_eq!(
            Message::parse(b"SKYV\x01\x01\x00\x05"),
            Err(ParseError::Malformed)
        );
        let mut grant = Message::Grant(Grant {
            ipv4: Some(("10.0.0.2".parse().unwrap(), 24)),
            ipv6: None,
            mtu: 1348,
        })
        .to_bytes();
        grant[HEADER_LEN + 5] = 33;
        assert_eq!(Message::parse(&grant), Err(ParseError::Malformed));
        grant[HEADER_LEN + 5] = 24;
        grant[HEADER_LEN] = 0;
        assert_eq!(Message::parse(&grant), Err(ParseError::Malformed));
    }

    #[test]
    fn a_family_left_out_of_a_grant_has_zero_fields() {
        // Found by fuzzing: an IPv6-only grant with IPv4 bytes set parsed, and re-emitted
        // differently.
        let grant = Message::Grant(Grant {
            ipv4: None,
            ipv6: Some(("fd77:736b::2".parse().unwrap(), 64)),
            mtu: 1348,
        })
        .to_bytes();
        assert!(Message::parse(&grant).is_ok());
        for at in 1..6 {
            let mut bytes = grant.clone();
            bytes[HEADER_LEN + at] = 0x21;
            assert_eq!(Message::parse(&bytes), Err(ParseError::Malformed), "{at}");
        }
        let mut ipv4_only = Message::Grant(Grant {
            ipv4: Some(("10.77.0.2".parse().unwrap(), 24)),
            ipv6: None,
            mtu: 1348,
        })
        .to_bytes();
        ipv4_only[HEADER_LEN + 22] = 64;
        assert_eq!(Message::parse(&ipv4_only), Err(ParseError::Malformed));
    }
}
