//! The exit's dial policy: which addresses the SOCKS server may dial for its clients. Loopback,
//! link-local, unspecified addresses and the exit host's own addresses are never dialled, nor
//! private ranges unless the operator allows them, nor the ranges the operator denies; ranges
//! the operator allows explicitly override all of these. IPv4-mapped IPv6 addresses are judged
//! as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::vpn::Prefix;

/// Why a range is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// This host itself.
    Loopback,
    /// Link-local: the exit's own link (cloud metadata services live here).
    LinkLocal,
    /// An unspecified address, which reaches this host.
    Unspecified,
    /// A private network (RFC 1918, shared address space, unique local).
    Private,
    /// Listed in `socks.server.deny`.
    Configured,
}

/// The ranges never dialled unless allowed explicitly.
const BUILT_IN: [(Prefix, DenyReason); 6] = [
    (v4([127, 0, 0, 0], 8), DenyReason::Loopback),
    (v6(Ipv6Addr::LOCALHOST, 128), DenyReason::Loopback),
    (v4([169, 254, 0, 0], 16), DenyReason::LinkLocal),
    (
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        DenyReason::LinkLocal,
    ),
    (v4([0, 0, 0, 0], 8), DenyReason::Unspecified),
    (v6(Ipv6Addr::UNSPECIFIED, 128), DenyReason::Unspecified),
];

/// The private ranges, denied unless `allow_private`.
const PRIVATE: [Prefix; 5] = [
    v4([10, 0, 0, 0], 8),
    v4([172, 16, 0, 0], 12),
    v4([192, 168, 0, 0], 16),
    // Shared address space (carrier-grade NAT): the provider's side of the exit's network.
    v4([100, 64, 0, 0], 10),
    v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
];

const fn v4(octets: [u8; 4], len: u8) -> Prefix {
    Prefix::known(
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        len,
    )
}

const fn v6(address: Ipv6Addr, len: u8) -> Prefix {
    Prefix::known(IpAddr::V6(address), len)
}

/// Which target addresses the SOCKS server may dial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialPolicy {
    /// Ranges denied besides the built-in ones (`socks.server.deny`).
    pub deny: Vec<Prefix>,
    /// Whether private ranges may be dialled (`socks.server.allow_private`).
    pub allow_private: bool,
    /// Ranges that may be dialled whatever else says no (`socks.server.allow_targets`).
    pub allow_targets: Vec<Prefix>,
}

/// Why an address may not be dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// It lies in a denied range.
    Range(Prefix, DenyReason),
    /// It is an address of one of the exit host's interfaces.
    Own,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Range(prefix, DenyReason::Loopback) => write!(f, "loopback ({prefix})"),
            Denial::Range(prefix, DenyReason::LinkLocal) => write!(f, "link-local ({prefix})"),
            Denial::Range(prefix, DenyReason::Unspecified) => {
                write!(f, "unspecified ({prefix})")
            }
            Denial::Range(prefix, DenyReason::Private) => write!(
                f,
                "private ({prefix}; socks.server.allow_private allows these)"
            ),
            Denial::Range(prefix, DenyReason::Configured) => {
                write!(f, "in socks.server.deny ({prefix})")
            }
            Denial::Own => f.write_str("an address of this host"),
        }
    }
}

impl DialPolicy {
    /// Whether `target` may be dialled, when the exit host's interfaces have `own` addresses.
    pub fn check(&self, target: IpAddr, own: &[IpAddr]) -> Result<(), Denial> {
        let target = target.to_canonical();
        if self
            .allow_targets
            .iter()
            .any(|prefix| prefix.contains(target))
        {
            return Ok(());
        }
        if let Some((prefix, reason)) = BUILT_IN.iter().find(|(prefix, _)| prefix.contains(target))
        {
            return Err(Denial::Range(*prefix, *reason));
        }
        if own.iter().any(|address| address.to_canonical() == target) {
            return Err(Denial::Own);
        }
        if !self.allow_private {
            if let Some(prefix) = PRIVATE.iter().find(|prefix| prefix.contains(target)) {
                return Err(Denial::Range(*prefix, DenyReason::Private));
            }
        }
        match self.deny.iter().find(|prefix| prefix.contains(target)) {
            Some(prefix) => Err(Denial::Range(*prefix, DenyReason::Configured)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn reason(result: Result<(), Denial>) -> Option<DenyReason> {
        match result {
            Err(Denial::Range(_, reason)) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn the_default_denies_this_host_its_links_and_private_networks() {
        let policy = DialPolicy::default();
        let own = [ip("192.0.2.10"), ip("2001:db8::10")];
        for (target, expected) in [
            ("127.0.0.1", DenyReason::Loopback),
            ("127.255.1.2", DenyReason::Loopback),
            ("::1", DenyReason::Loopback),
            ("::ffff:127.0.0.1", DenyReason::Loopback),
            ("169.254.169.254", DenyReason::LinkLocal),
            ("::ffff:169.254.169.254", DenyReason::LinkLocal),
            ("fe80::1", DenyReason::LinkLocal),
            ("0.0.0.0", DenyReason::Unspecified),
            ("::", DenyReason::Unspecified),
            ("10.1.2.3", DenyReason::Private),
            ("172.16.0.1", DenyReason::Private),
            ("172.31.255.255", DenyReason::Private),
            ("192.168.1.1", DenyReason::Private),
            ("::ffff:192.168.1.1", DenyReason::Private),
            ("100.64.0.1", DenyReason::Private),
            ("fd00::1", DenyReason::Private),
            ("fc00::1", DenyReason::Private),
        ] {
            assert_eq!(
                reason(policy.check(ip(target), &own)),
                Some(expected),
                "{target}"
            );
        }
        assert_eq!(policy.check(ip("192.0.2.10"), &own), Err(Denial::Own));
        assert_eq!(
            policy.check(ip("::ffff:192.0.2.10"), &own),
            Err(Denial::Own)
        );
        assert_eq!(policy.check(ip("2001:db8::10"), &own), Err(Denial::Own));
        for target in [
            "192.0.2.11",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::11",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(policy.check(ip(target), &own), Ok(()), "{target}");
        }
    }

    #[test]
    fn private_networks_open_with_allow_private_and_the_rest_stays_shut() {
        let policy = DialPolicy {
            allow_private: true,
            ..DialPolicy::default()
        };
        let own = [ip("10.0.0.5")];
        assert_eq!(policy.check(ip("10.0.0.6"), &own), Ok(()));
        assert_eq!(policy.check(ip("fd12::1"), &own), Ok(()));
        assert_eq!(policy.check(ip("10.0.0.5"), &own), Err(Denial::Own));
        assert_eq!(
            reason(policy.check(ip("127.0.0.1"), &own)),
            Some(DenyReason::Loopback)
        );
    }

    #[test]
    fn deny_adds_ranges_and_allow_targets_overrides_everything() {
        let policy = DialPolicy {
            deny: vec!["203.0.113.0/24".parse().unwrap()],
            allow_private: false,
            allow_targets: vec![
                "127.0.0.1/32".parse().unwrap(),
                "203.0.113.7/32".parse().unwrap(),
                "10.9.0.0/16".parse().unwrap(),
            ],
        };
        let own = [ip("10.9.0.1")];
        assert_eq!(
            reason(policy.check(ip("203.0.113.8"), &own)),
            Some(DenyReason::Configured)
        );
        assert_eq!(
            reason(policy.check(ip("127.0.0.2"), &own)),
            Some(DenyReason::Loopback),
            "only the range allowed opens"
        );
        for target in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "203.0.113.7",
            "10.9.3.3",
            "10.9.0.1",
        ] {
            assert_eq!(policy.check(ip(target), &own), Ok(()), "{target}");
        }
        assert_eq!(
            reason(policy.check(ip("10.8.0.1"), &own)),
            Some(DenyReason::Private)
        );
    }

    #[test]
    fn denials_say_what_the_range_is() {
        let policy = DialPolicy::default();
        let text = policy
            .check(ip("169.254.169.254"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(text, "link-local (169.254.0.0/16)");
        let text = policy.check(ip("10.0.0.1"), &[]).unwrap_err().to_string();
        assert!(text.contains("allow_private"), "{text}");
    }
}
