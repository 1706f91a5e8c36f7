//! TUN device names and what can go wrong with a device. The devices themselves are the
//! driver's: created by name when a VPN app starts, configured (addresses, MTU, link up,
//! routes) off the dataplane thread, and gone when closed.

use std::fmt;
use std::io;
use std::str::FromStr;

/// The longest interface name Linux takes (IFNAMSIZ less the terminating NUL).
pub const MAX_NAME_LEN: usize = 15;

/// A checked interface name: 1 to 15 bytes, none of `/`, whitespace or `%`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunName(String);

/// Why a TUN device name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than 15 bytes.
    #[error("{0:?} is {len} bytes long: a network interface name has 1 to {MAX_NAME_LEN} bytes", len = .0.len())]
    Length(String),
    /// Holds a character Linux refuses in interface names.
    #[error("{0:?} holds a character not allowed in an interface name (`/`, `%`, `:`, whitespace or a control character), or is `.` or `..`")]
    Character(String),
}

impl FromStr for TunName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<TunName, NameError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(NameError::Length(name.to_owned()));
        }
        let bad = |c: char| c == '/' || c == '%' || c == ':' || c.is_whitespace() || c.is_control();
        if name.chars().any(bad) || name == "." || name == ".." {
            return Err(NameError::Character(name.to_owned()));
        }
        Ok(TunName(name.to_owned()))
    }
}

impl TunName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a TUN device could not be made or set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The process may not create network devices.
    #[error("cannot create TUN device {name}: permission denied. The VPN needs CAP_NET_ADMIN: run skywired as root or give it CAP_NET_ADMIN (the systemd unit does); the rest of the node keeps running")]
    Permission {
        /// The device name.
        name: String,
    },
    /// The name is taken by another device or process.
    #[error("cannot create TUN device {name}: the name is in use (another skywired, or another device of that name): choose another `tun` name in the config")]
    Busy {
        /// The device name.
        name: String,
    },
    /// Creating the device failed otherwise.
    #[error("cannot create TUN device {name}: {source} (is /dev/net/tun there? `modprobe tun` loads it)")]
    Create {
        /// The device name.
        name: String,
        /// What the system said.
        source: io::Error,
    },
    /// The event loop would not watch the device.
    #[error("cannot watch TUN device {name}: {source}")]
    Register {
        /// The device name.
        name: String,
        /// What the system said.
        source: io::Error,
    },
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {problem}")]
    Command {
        /// Its arguments.
        args: String,
        /// What it said, or why it did not run.
        problem: String,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!("skyvpn0".parse::<TunName>().unwrap().as_str(), "skyvpn0");
        assert!("a23456789012345".parse::<TunName>().is_ok());
        assert!(matches!(
            "a234567890123456".parse::<TunName>(),
            Err(NameError::Length(_))
        ));
        assert!(matches!("".parse::<TunName>(), Err(NameError::Length(_))));
        for bad in ["a/b", "a b", "..", "x%d", "a:1", "tab\t"] {
            assert!(
                matches!(bad.parse::<TunName>(), Err(NameError::Character(_))),
                "{bad:?}"
            );
        }
    }
}
