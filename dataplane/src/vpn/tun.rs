//! TUN devices: created by name when a VPN app starts, non-blocking so that the mio loop can
//! read them until `WouldBlock`, configured (addresses, MTU, link up, routes) with iproute2's
//! `ip`, and gone when dropped (the kernel removes a TUN device whose last descriptor closes,
//! and its addresses and routes with it, even when the daemon is killed).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::str::FromStr;

use tun_tap::{Iface, Mode};

/// The longest interface name Linux takes (IFNAMSIZ less the terminating NUL).
pub const MAX_NAME_LEN: usize = 15;
/// How much of `ip`'s standard error an error message quotes.
const MAX_STDERR: usize = 512;

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
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {problem}")]
    Command {
        /// Its arguments.
        args: String,
        /// What it said, or why it did not run.
        problem: String,
    },
}

/// Runs `ip ARGS`, returning its standard output, or an error quoting its standard error.
pub fn ip(args: &[&str]) -> Result<String, TunError> {
    let fail = |problem: String| TunError::Command {
        args: args.join(" "),
        problem,
    };
    let output = Command::new("ip").args(args).output().map_err(|error| {
        fail(format!(
            "{error} (iproute2's `ip` must be installed and on PATH)"
        ))
    })?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.len() > MAX_STDERR {
            let mut cut = MAX_STDERR;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
        }
        return Err(fail(format!("{} ({stderr})", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A TUN device of this process.
#[derive(Debug)]
pub struct TunDevice {
    iface: Iface,
    name: TunName,
}

impl TunDevice {
    /// Creates the device (no packet-info header, non-blocking), link down, no address.
    pub fn create(name: &TunName) -> Result<TunDevice, TunError> {
        let iface =
            Iface::without_packet_info(name.as_str(), Mode::Tun).map_err(|source| match source
                .raw_os_error()
            {
                Some(code) if code == nix::libc::EPERM || code == nix::libc::EACCES => {
                    TunError::Permission {
                        name: name.to_string(),
                    }
                }
                Some(code) if code == nix::libc::EBUSY => TunError::Busy {
                    name: name.to_string(),
                },
                _ => TunError::Create {
                    name: name.to_string(),
                    source,
                },
            })?;
        iface
            .set_non_blocking()
            .map_err(|source| TunError::Create {
                name: name.to_string(),
                source,
            })?;
        Ok(TunDevice {
            iface,
            name: name.clone(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &TunName {
        &self.name
    }

    /// Adds `address/len`, sets the MTU and brings the link up.
    pub fn configure(&self, addresses: &[(IpAddr, u8)], mtu: u16) -> Result<(), TunError> {
        let name = self.name.as_str();
        let mtu = mtu.to_string();
        ip(&["link", "set", "dev", name, "mtu", &mtu])?;
        for (address, len) in addresses {
            let cidr = format!("{address}/{len}");
            match address {
                IpAddr::V4(_) => ip(&["-4", "address", "replace", &cidr, "dev", name])?,
                // `nodad`: a tentative address cannot be used for a second or two.
                IpAddr::V6(_) => ip(&["-6", "address", "replace", &cidr, "dev", name, "nodad"])?,
            };
        }
        ip(&["link", "set", "dev", name, "up"])?;
        Ok(())
    }

    /// Removes every address of the device (a lease that changed).
    pub fn flush_addresses(&self) -> Result<(), TunError> {
        ip(&["address", "flush", "dev", self.name.as_str()]).map(drop)
    }

    /// Reads one packet; `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.iface.recv(buf)
    }

    /// Writes one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.iface.send(packet)
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
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

    #[test]
    fn ip_errors_quote_the_command_and_what_it_said() {
        let error = ip(&["link", "show", "dev", "no-such-dev-xyz"]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("ip link show dev no-such-dev-xyz"), "{text}");
    }
}
