//! The host's interface addresses: read with `getifaddrs`, and read again whenever the kernel
//! announces an address or link change on a netlink socket the loop watches.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrStorage,
};

use crate::service::InterfaceAddress;

/// The netlink groups of link and address changes (`RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`,
/// `RTMGRP_IPV6_IFADDR`).
const GROUPS: u32 = 0x1 | 0x10 | 0x100;

/// Every address of every interface, with the length of its on-link prefix.
pub(super) fn read() -> io::Result<Vec<InterfaceAddress>> {
    let mut addresses = Vec::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        let Some(address) = entry.address.as_ref().and_then(ip_of) else {
            continue;
        };
        let prefix_len = entry
            .netmask
            .as_ref()
            .and_then(ip_of)
            .map_or(max_len(address), mask_len);
        addresses.push(InterfaceAddress {
            interface: entry.interface_name,
            address,
            prefix_len,
        });
    }
    Ok(addresses)
}

fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

fn max_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The prefix length of a netmask: its leading ones.
fn mask_len(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(mask) => u32::from(mask).leading_ones(),
        IpAddr::V6(mask) => u128::from(mask).leading_ones(),
    };
    ones as u8
}

/// A netlink socket that becomes readable when an address or link changes.
#[derive(Debug)]
pub(super) struct AddressWatch {
    fd: OwnedFd,
}

impl AddressWatch {
    /// Subscribes to the changes and registers with the loop under `token`.
    pub(super) fn open(registry: &Registry, token: Token) -> io::Result<AddressWatch> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(AddressWatch { fd })
    }

    /// Reads every announcement that is waiting (their contents do not matter: the addresses
    /// are read again whole).
    pub(super) fn drain(&self) {
        let mut buf = [0u8; 8192];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) | Err(Errno::EAGAIN) => return,
                Ok(_) | Err(Errno::EINTR) => {}
                // ENOBUFS: announcements were lost; the read that follows catches up.
                Err(error) => {
                    log::debug!("interface address changes: {error}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_become_prefix_lengths() {
        assert_eq!(mask_len("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(mask_len("255.255.240.0".parse().unwrap()), 20);
        assert_eq!(mask_len("0.0.0.0".parse().unwrap()), 0);
        assert_eq!(mask_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
        assert_eq!(
            mask_len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            128
        );
    }

    #[test]
    fn the_loopback_interface_is_read_with_its_prefix() {
        let addresses = read().unwrap();
        assert!(
            addresses.iter().any(|entry| entry.address
                == IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                && entry.prefix_len == 8),
            "{addresses:?}"
        );
    }
}
