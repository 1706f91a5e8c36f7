//! Who may send what through the VPN. The server admits an inner packet from a client only
//! when its source is the address leased to that client's key, and sends each packet its TUN
//! gives back to the client whose lease holds the destination; the client accepts packets
//! only from its server, to its own addresses.

use std::collections::HashMap;
use std::net::IpAddr;

use smoltcp::wire::{Ipv4Packet, Ipv6Packet};

use super::pool::Lease;
use crate::api::vpn::DropCounts;
use crate::identity::NodeKey;

/// The addresses of an IP packet, read after checking that its header is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Its source.
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
}

/// Reads the source and destination of an IPv4 or IPv6 packet; `None` when it is not a whole
/// one (its header, and as many bytes as the header says).
pub fn addresses(packet: &[u8]) -> Option<Addresses> {
    match packet.first()? >> 4 {
        4 => {
            let header = Ipv4Packet::new_checked(packet).ok()?;
            Some(Addresses {
                src: IpAddr::V4(header.src_addr()),
                dst: IpAddr::V4(header.dst_addr()),
            })
        }
        6 => {
            let header = Ipv6Packet::new_checked(packet).ok()?;
            Some(Addresses {
                src: IpAddr::V6(header.src_addr()),
                dst: IpAddr::V6(header.dst_addr()),
            })
        }
        _ => None,
    }
}

/// Why the VPN dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not a whole IPv4 or IPv6 packet.
    NotIp,
    /// From a peer that holds no lease (not allowed, or never asked).
    NoLease,
    /// A source address that is not the sender's lease.
    ForgedSource,
    /// To an address no connected client holds.
    NoClient,
    /// From a node that is not this client's server.
    NotServer,
    /// To an address that is not this client's.
    NotForUs,
}

impl DropCounts {
    /// Counts one drop.
    pub fn count(&mut self, drop: Drop) {
        let counter = match drop {
            Drop::NotIp => &mut self.not_ip,
            Drop::NoLease => &mut self.no_lease,
            Drop::ForgedSource => &mut self.forged_source,
            Drop::NoClient => &mut self.no_client,
            Drop::NotServer => &mut self.not_server,
            Drop::NotForUs => &mut self.not_for_us,
        };
        *counter += 1;
    }
}

/// The server's view: the clients connected in this run and their leases.
#[derive(Debug, Default)]
pub struct ServerFilter {
    by_peer: HashMap<NodeKey, Lease>,
    by_address: HashMap<IpAddr, NodeKey>,
}

impl ServerFilter {
    /// Lets `peer` send from, and receive at, the addresses of `lease`.
    pub fn admit(&mut self, peer: NodeKey, lease: Lease) {
        self.remove(&peer);
        for address in lease_addresses(&lease) {
            self.by_address.insert(address, peer);
        }
        self.by_peer.insert(peer, lease);
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &NodeKey) {
        if let Some(lease) = self.by_peer.remove(peer) {
            for address in lease_addresses(&lease) {
                self.by_address.remove(&address);
            }
        }
    }

    /// The clients admitted.
    pub fn clients(&self) -> impl Iterator<Item = (&NodeKey, &Lease)> {
        self.by_peer.iter()
    }

    /// Checks a packet that arrived from `peer` before it goes to the TUN.
    pub fn check_from_client(&self, peer: &NodeKey, packet: &[u8]) -> Result<(), Drop> {
        let addresses = addresses(packet).ok_or(Drop::NotIp)?;
        let lease = self.by_peer.get(peer).ok_or(Drop::NoLease)?;
        if lease.holds(addresses.src) {
            Ok(())
        } else {
            Err(Drop::ForgedSource)
        }
    }

    /// The client a packet from the TUN goes to.
    pub fn client_for(&self, packet: &[u8]) -> Result<NodeKey, Drop> {
        let addresses = addresses(packet).ok_or(Drop::NotIp)?;
        self.by_address
            .get(&addresses.dst)
            .copied()
            .ok_or(Drop::NoClient)
    }
}

fn lease_addresses(lease: &Lease) -> impl Iterator<Item = IpAddr> {
    lease
        .ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(lease.ipv6.map(IpAddr::V6))
}

/// Checks a packet that arrived from `peer` at a client whose server is `server` and whose
/// addresses are `own` (none before the lease).
pub fn check_at_client(
    server: &NodeKey,
    own: Option<&Lease>,
    peer: &NodeKey,
    packet: &[u8],
) -> Result<(), Drop> {
    if peer != server {
        return Err(Drop::NotServer);
    }
    let addresses = addresses(packet).ok_or(Drop::NotIp)?;
    match own {
        Some(lease) if lease.holds(addresses.dst) => Ok(()),
        _ => Err(Drop::NotForUs),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::SecretKey;

    /// A minimal IPv4 or IPv6 packet from `src` to `dst` with `payload` bytes after the header.
    pub(crate) fn packet(src: &str, dst: &str, payload: usize) -> Vec<u8> {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut p = vec![0u8; 20 + payload];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
                p[9] = 17;
                p[12..16].copy_from_slice(&src.octets());
                p[16..20].copy_from_slice(&dst.octets());
                p
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut p = vec![0u8; 40 + payload];
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
                p[6] = 17;
                p[8..24].copy_from_slice(&src.octets());
                p[24..40].copy_from_slice(&dst.octets());
                p
            }
            _ => panic!("mixed families"),
        }
    }

    fn lease(v4: &str, v6: &str) -> Lease {
        Lease {
            ipv4: Some(v4.parse().unwrap()),
            ipv6: Some(v6.parse().unwrap()),
        }
    }

    #[test]
    fn addresses_need_whole_headers() {
        let v4 = packet("10.0.0.1", "10.0.0.2", 8);
        assert_eq!(
            addresses(&v4).unwrap().dst,
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(addresses(&v4[..27]), None, "total length beyond the packet");
        let v6 = packet("fd::1", "fd::2", 4);
        assert_eq!(
            addresses(&v6).unwrap().src,
            "fd::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(addresses(&v6[..42]), None);
        assert_eq!(addresses(&[0x45]), None);
        assert_eq!(addresses(&[]), None);
        assert_eq!(addresses(&[0x20; 60]), None);
    }

    #[test]
    fn server_admits_only_leased_sources_and_routes_back_by_destination() {
        let (a, b, stranger) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let mut filter = ServerFilter::default();
        filter.admit(a, lease("10.77.0.2", "fd77::2"));
        filter.admit(b, lease("10.77.0.3", "fd77::3"));
        assert_eq!(
            filter.check_from_client(&a, &packet("10.77.0.2", "10.99.0.1", 0)),
            Ok(())
        );
        assert_eq!(
            filter.check_from_client(&a, &packet("fd77::2", "fd99::1", 0)),
            Ok(())
        );
        assert_eq!(
            filter.check_from_client(&a, &packet("10.77.0.3", "10.99.0.1", 0)),
            Err(Drop::ForgedSource),
            "a client may not use another's address"
        );
        assert_eq!(
            filter.check_from_client(&stranger, &packet("10.77.0.9", "10.99.0.1", 0)),
            Err(Drop::NoLease)
        );
        assert_eq!(filter.check_from_client(&a, &[0x45, 0]), Err(Drop::NotIp));
        assert_eq!(
            filter.client_for(&packet("10.99.0.1", "10.77.0.3", 0)),
            Ok(b)
        );
        assert_eq!(filter.client_for(&packet("fd99::1", "fd77::2", 0)), Ok(a));
        assert_eq!(
            filter.client_for(&packet("fd99::1", "ff02::2", 0)),
            Err(Drop::NoClient)
        );
        filter.remove(&b);
        assert_eq!(
            filter.client_for(&packet("10.99.0.1", "10.77.0.3", 0)),
            Err(Drop::NoClient)
        );
        assert_eq!(
            filter.check_from_client(&b, &packet("10.77.0.3", "10.99.0.1", 0)),
            Err(Drop::NoLease)
        );
    }

    #[test]
    fn client_accepts_only_its_server_to_its_addresses() {
        let (server, other) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let own = lease("10.77.0.2", "fd77::2");
        let to_us = packet("10.99.0.1", "10.77.0.2", 0);
        assert_eq!(
            check_at_client(&server, Some(&own), &server, &to_us),
            Ok(())
        );
        assert_eq!(
            check_at_client(&server, Some(&own), &other, &to_us),
            Err(Drop::NotServer)
        );
        assert_eq!(
            check_at_client(&server, None, &server, &to_us),
            Err(Drop::NotForUs)
        );
        let elsewhere = packet("10.99.0.1", "10.77.0.3", 0);
        assert_eq!(
            check_at_client(&server, Some(&own), &server, &elsewhere),
            Err(Drop::NotForUs)
        );
    }
}
