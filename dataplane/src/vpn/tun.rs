//! TUN devices: created by name when a VPN app starts (`TUNSETIFF` by hand, for the offload
//! that tun-tap cannot ask for), non-blocking so that the mio loop can read them until
//! `WouldBlock`, configured (addresses, MTU, link up, routes) with iproute2's `ip`, and gone
//! when dropped (the kernel removes a TUN device whose last descriptor closes, and its
//! addresses and routes with it, even when the daemon is killed).
//!
//! The device carries a `virtio_net_hdr` in front of every packet (`IFF_VNET_HDR`) and takes
//! TCP segmentation offload, so the kernel hands over one large TCP segment where it would
//! have sent dozens of packets; [`super::offload`] cuts it up.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::str::FromStr;

use nix::libc;

use super::offload::VNET_HDR_LEN;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

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
    file: File,
    name: TunName,
}

impl TunDevice {
    /// Creates the device (no packet-info header, a `virtio_net_hdr` instead, TCP
    /// segmentation offload on, non-blocking), link down, no address.
    pub fn create(name: &TunName) -> Result<TunDevice, TunError> {
        let create_error = |source: io::Error| match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => TunError::Permission {
                name: name.to_string(),
            },
            Some(libc::EBUSY) => TunError::Busy {
                name: name.to_string(),
            },
            _ => TunError::Create {
                name: name.to_string(),
                source,
            },
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(create_error)?;
        let mut request = IfReq {
            name: [0; 16],
            flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR,
            _rest: [0; 22],
        };
        // TunName guarantees at most 15 bytes: the name stays NUL-terminated.
        request.name[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
            return Err(create_error(io::Error::last_os_error()));
        }
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, offloads) } < 0 {
            // Frames still carry the header, with nothing to undo.
            log::info!(
                "TUN {name}: no segmentation offload ({}), packets come one by one",
                io::Error::last_os_error()
            );
        }
        Ok(TunDevice {
            file,
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

    /// Reads one frame (a `virtio_net_hdr` and a packet, perhaps a large TCP segment for
    /// [`super::offload::split`]); `WouldBlock` when none is waiting.
    pub fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.file, buf)
    }

    /// Reads up to `budget` frames, cutting each into packets of at most `mtu` bytes for
    /// `deliver` ([`super::offload::split`], with `scratch` for the segments). Returns whether
    /// more may be waiting, and how many frames were not IP. `app` names the reader in logs.
    pub fn read_packets(
        &self,
        app: &str,
        buf: &mut [u8],
        scratch: &mut [u8],
        mtu: usize,
        budget: usize,
        mut deliver: impl FnMut(&[u8]),
    ) -> (bool, u64) {
        let mut not_ip = 0;
        for _ in 0..budget {
            let len = match self.recv_frame(buf) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return (false, not_ip),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("{app} TUN read: {error}");
                    return (false, not_ip);
                }
            };
            if super::offload::split(&mut buf[..len], scratch, mtu, &mut deliver).is_err() {
                not_ip += 1;
            }
        }
        (true, not_ip)
    }

    /// Writes one frame: a `virtio_net_hdr` and a packet, as [`super::offload::Coalescer`]
    /// makes them.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.file, frame)
    }

    /// Writes one packet, behind a header that asks for nothing.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        let header = [0u8; VNET_HDR_LEN];
        let parts = [io::IoSlice::new(&header), io::IoSlice::new(packet)];
        io::Write::write_vectored(&mut &self.file, &parts)
    }
}

/// Writes a frame to `tun`; a full or failing device drops it, as a network card would.
pub(crate) fn write_frame(tun: &TunDevice, frame: &[u8]) {
    if let Err(error) = tun.send_frame(frame) {
        log::debug!("TUN {} write: {error}", tun.name());
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
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
