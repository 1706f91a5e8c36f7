//! IP prefixes as written in the configuration (`10.77.0.0/24`, `fd77::/64`): parsed, checked
//! and turned into host addresses by offset.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix: an address and how many of its leading bits are the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    address: IpAddr,
    len: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/` or an address that does not parse.
    #[error("{0:?} is not an address and prefix length: write it like 10.77.0.0/24 or fd77::/64")]
    Syntax(String),
    /// The length is longer than the address.
    #[error("prefix length {len} is too long for {address}: at most {max}")]
    TooLong {
        /// The address written.
        address: IpAddr,
        /// The length written.
        len: u8,
        /// The largest allowed.
        max: u8,
    },
}

impl Prefix {
    /// A prefix; fails when `len` is longer than the address.
    pub fn new(address: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let max = max_len(address);
        if len > max {
            return Err(PrefixError::TooLong { address, len, max });
        }
        Ok(Prefix { address, len })
    }

    /// A prefix written in the code; a length longer than the address fails the build.
    pub(crate) const fn known(address: IpAddr, len: u8) -> Prefix {
        let max = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        assert!(len <= max, "prefix length longer than the address");
        Prefix { address, len }
    }

    /// The address as written (not masked).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this prefix is the whole address family (`/0`).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    /// The network address: the address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(address) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(address) & mask32(self.len)))
            }
            IpAddr::V6(address) => {
                IpAddr::V6(Ipv6Addr::from(u128::from(address) & mask128(self.len)))
            }
        }
    }

    /// How many host bits the prefix leaves.
    pub fn host_bits(&self) -> u8 {
        max_len(self.address) - self.len
    }

    /// Whether `address` lies inside the prefix.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(own), IpAddr::V4(other)) => {
                let mask = mask32(self.len);
                u32::from(own) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(other)) => {
                let mask = mask128(self.len);
                u128::from(own) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of `other` lies inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(other.network())
    }

    /// The address `offset` places after the network address, if it lies inside the prefix.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        let bits = self.host_bits();
        if bits < 128 && offset >> bits != 0 {
            return None;
        }
        match self.network() {
            IpAddr::V4(network) => {
                let offset = u32::try_from(offset).ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(u32::from(network) | offset)))
            }
            IpAddr::V6(network) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(network) | offset))),
        }
    }

    /// The position of `address` after the network address, if it lies inside the prefix.
    pub fn offset_of(&self, address: IpAddr) -> Option<u128> {
        if !self.contains(address) {
            return None;
        }
        Some(match (self.network(), address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                u128::from(u32::from(address) - u32::from(network))
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => u128::from(address) - u128::from(network),
            _ => return None,
        })
    }
}

fn max_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Prefix, PrefixError> {
        let syntax = || PrefixError::Syntax(text.to_owned());
        let (address, len) = text.trim().split_once('/').ok_or_else(syntax)?;
        let address: IpAddr = address.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().map_err(|_| syntax())?;
        Prefix::new(address, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_counts() {
        let v4: Prefix = "10.77.0.9/24".parse().unwrap();
        assert_eq!(v4.network(), "10.77.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(v4.nth(1), Some("10.77.0.1".parse().unwrap()));
        assert_eq!(v4.nth(256), None);
        assert!(v4.contains("10.77.0.200".parse().unwrap()));
        assert!(!v4.contains("10.77.1.1".parse().unwrap()));
        assert_eq!(v4.offset_of("10.77.0.7".parse().unwrap()), Some(7));
        let v6: Prefix = "fd77::/64".parse().unwrap();
        assert_eq!(v6.nth(2), Some("fd77::2".parse().unwrap()));
        assert_eq!(v6.host_bits(), 64);
        let all: Prefix = "::/0".parse().unwrap();
        assert!(all.is_default() && all.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(
            all.nth(u128::MAX),
            Some(IpAddr::V6(Ipv6Addr::from(u128::MAX)))
        );
        let wide: Prefix = "10.77.0.0/16".parse().unwrap();
        assert!(wide.covers(&v4) && v4.covers(&v4) && !v4.covers(&wide));
        assert!(all.covers(&v6) && !all.covers(&wide), "families differ");
        let zero4: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(zero4.contains("192.0.2.1".parse().unwrap()));
        assert!(!zero4.contains("::1".parse().unwrap()));
    }

    #[test]
    fn refuses_nonsense() {
        assert!(matches!(
            "10.0.0.0".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::TooLong { .. })
        ));
        assert!(matches!(
            "fd::/129".parse::<Prefix>(),
            Err(PrefixError::TooLong { .. })
        ));
        assert!(matches!(
            "x/1".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/-1".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
    }
}
