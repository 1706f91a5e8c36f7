//! A service entry of an advert: a name and the mesh TCP port it is offered on. An advert
//! carries its entries as opaque byte strings (`wire::advert`); this is what they mean.
//!
//! ```text
//! port   2   the mesh TCP port, big-endian
//! name   n   1 to MAX_NAME_LEN bytes: ASCII letters, digits, `-`, `_` or `.`
//! ```
//!
//! An entry that does not read as one (a later version's) is carried and relayed all the same,
//! and left out of what the node shows.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::advert::MAX_SERVICE_LEN;

/// The longest service name: an entry is the port and the name.
pub const MAX_NAME_LEN: usize = MAX_SERVICE_LEN - 2;

/// The built-in apps' services. Their names are reserved: no launched app may announce one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinService {
    /// The SOCKS exit (`socks.server`).
    SocksServer,
    /// The VPN server (`vpn.server`).
    VpnServer,
    /// The messenger.
    Messenger,
}

impl BuiltinService {
    /// Every built-in service.
    pub const ALL: [BuiltinService; 3] = [
        BuiltinService::SocksServer,
        BuiltinService::VpnServer,
        BuiltinService::Messenger,
    ];

    /// Its name in adverts and in `services`.
    pub const fn name(self) -> &'static str {
        match self {
            BuiltinService::SocksServer => "socks-server",
            BuiltinService::VpnServer => "vpn-server",
            BuiltinService::Messenger => "messenger",
        }
    }

    /// The built-in service called `name`, if one is.
    pub fn named(name: &str) -> Option<BuiltinService> {
        BuiltinService::ALL
            .into_iter()
            .find(|builtin| builtin.name() == name)
    }
}

impl fmt::Display for BuiltinService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a word is not a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    /// Empty, or longer than [`MAX_NAME_LEN`].
    #[error("a service name has 1 to {MAX_NAME_LEN} characters")]
    Length,
    /// A character other than ASCII letters, digits, `-`, `_` and `.`.
    #[error("a service name has only ASCII letters, digits, `-`, `_` and `.`")]
    Character,
}

/// A service's name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_` or `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The built-in service of this name, if it is one's.
    pub fn builtin(&self) -> Option<BuiltinService> {
        BuiltinService::named(&self.0)
    }

    fn check(bytes: &[u8]) -> Result<(), ServiceNameError> {
        if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
            return Err(ServiceNameError::Length);
        }
        let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || b"-_.".contains(byte);
        if !bytes.iter().all(allowed) {
            return Err(ServiceNameError::Character);
        }
        Ok(())
    }
}

impl From<BuiltinService> for ServiceName {
    fn from(builtin: BuiltinService) -> ServiceName {
        ServiceName(builtin.name().to_owned())
    }
}

impl FromStr for ServiceName {
    type Err = ServiceNameError;

    fn from_str(text: &str) -> Result<ServiceName, ServiceNameError> {
        ServiceName::check(text.as_bytes())?;
        Ok(ServiceName(text.to_owned()))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ServiceName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One service a node offers: its name and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceEntry {
    /// What it is called.
    pub name: ServiceName,
    /// The mesh TCP port it listens on.
    pub port: u16,
}

impl ServiceEntry {
    /// Reads an advert's entry; `None` when it is not one (a later version's, or malformed).
    pub fn parse(bytes: &[u8]) -> Option<ServiceEntry> {
        let (port, name) = bytes.split_first_chunk::<2>()?;
        ServiceName::check(name).ok()?;
        let name = std::str::from_utf8(name).ok()?;
        Some(ServiceEntry {
            name: ServiceName(name.to_owned()),
            port: u16::from_be_bytes(*port),
        })
    }

    /// The entry as an advert carries it (at most [`MAX_SERVICE_LEN`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(2 + self.name.0.len());
        bytes.extend_from_slice(&self.port.to_be_bytes());
        bytes.extend_from_slice(self.name.0.as_bytes());
        bytes
    }

    /// Whether `bytes` is this entry as encoded, without allocating.
    pub fn is_encoded_as(&self, bytes: &[u8]) -> bool {
        bytes.split_first_chunk::<2>() == Some((&self.port.to_be_bytes(), self.name.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entries_round_trip_and_fit_an_advert() {
        let longest = "x".repeat(MAX_NAME_LEN);
        for (name, port) in [("echo", 5000), ("a", 1), (longest.as_str(), 65535)] {
            let entry = ServiceEntry {
                name: name.parse().unwrap(),
                port,
            };
            let bytes = entry.to_bytes();
            assert!(bytes.len() <= MAX_SERVICE_LEN);
            assert_eq!(&bytes[..2], port.to_be_bytes());
            assert_eq!(ServiceEntry::parse(&bytes), Some(entry.clone()));
            assert!(entry.is_encoded_as(&bytes));
            assert!(!entry.is_encoded_as(&bytes[..bytes.len() - 1]));
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            "".parse::<ServiceName>(),
            Err(ServiceNameError::Length),
            "empty"
        );
        assert_eq!(
            "x".repeat(MAX_NAME_LEN + 1).parse::<ServiceName>(),
            Err(ServiceNameError::Length)
        );
        for bad in ["a b", "é", "a/b", "a\n", "a:b"] {
            assert_eq!(
                bad.parse::<ServiceName>(),
                Err(ServiceNameError::Character),
                "{bad:?}"
            );
        }
        assert!("chat-2_v1.0".parse::<ServiceName>().is_ok());
    }

    #[test]
    fn entries_that_are_not_services_read_as_none() {
        assert_eq!(ServiceEntry::parse(&[]), None);
        assert_eq!(ServiceEntry::parse(&[0, 80]), None, "no name");
        assert_eq!(ServiceEntry::parse(&[0, 80, b' ']), None);
        assert_eq!(ServiceEntry::parse(&[0, 80, 0xff]), None);
    }

    #[test]
    fn builtin_names_are_known() {
        for builtin in BuiltinService::ALL {
            let name = ServiceName::from(builtin);
            assert_eq!(name.builtin(), Some(builtin));
        }
        assert_eq!("echo".parse::<ServiceName>().unwrap().builtin(), None);
    }
}
