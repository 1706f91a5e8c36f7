//! The node's own IP stack on its mesh address: smoltcp, fed with the inner packets that route
//! sessions decrypted, and handing back the packets it wants carried. It answers pings
//! (ICMPv6 echo) and sends this node's own; sans-IO like the rest of the core.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::icmp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, Ipv6Address};

use crate::node::INNER_MTU;

/// Packets waiting either way; beyond this the stack drops (a peer cannot make it hoard).
const QUEUE_LIMIT: usize = 256;
/// The ICMP socket's buffers: room for a burst of echo replies.
const ICMP_BUFFER: usize = 16 * 1024;
const ICMP_PACKETS: usize = 32;
/// The data an echo request carries.
const PING_PAYLOAD: &[u8] = b"skywire mesh ping";

/// A device that is two queues: what sessions delivered, and what the stack sends.
#[derive(Debug, Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        if self.0.len() < QUEUE_LIMIT {
            self.0.push_back(packet);
        }
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = INNER_MTU;
        capabilities
    }
}

/// The mesh stack.
pub struct MeshStack {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    icmp: SocketHandle,
    ident: u16,
    epoch: Instant,
}

impl std::fmt::Debug for MeshStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshStack").finish_non_exhaustive()
    }
}

impl MeshStack {
    /// A stack on `address`. `ident` tells this node's echo requests from others'.
    pub fn new(address: Ipv6Addr, ident: u16, now: Instant) -> MeshStack {
        let mut device = QueueDevice::default();
        let epoch = now;
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            SmolInstant::ZERO,
        );
        iface.update_ip_addrs(|addrs| {
            // The /8 covers every mesh address, so smoltcp needs no routes or neighbours.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(address), 8));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; ICMP_PACKETS],
                vec![0; ICMP_BUFFER],
            ),
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; ICMP_PACKETS],
                vec![0; ICMP_BUFFER],
            ),
        );
        // Binding by ident takes only replies to this node's own requests; smoltcp answers
        // others' requests itself (auto-icmp-echo-reply).
        let _ = socket.bind(icmp::Endpoint::Ident(ident));
        let icmp = sockets.add(socket);
        MeshStack {
            iface,
            device,
            sockets,
            icmp,
            ident,
            epoch,
        }
    }

    fn timestamp(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// Takes a packet a session decrypted (already checked to come from the peer to this
    /// node). Only TCP and ICMPv6 go in: smoltcp would answer anything else with an error.
    pub fn receive(&mut self, packet: Vec<u8>) -> bool {
        let wanted = matches!(packet.get(6), Some(6) | Some(58));
        if wanted && self.device.rx.len() < QUEUE_LIMIT {
            self.device.rx.push_back(packet);
            true
        } else {
            false
        }
    }

    /// Lets smoltcp process what arrived and what its sockets want sent.
    pub fn poll(&mut self, now: Instant) {
        let timestamp = self.timestamp(now);
        self.iface
            .poll(timestamp, &mut self.device, &mut self.sockets);
    }

    /// How soon smoltcp wants [`MeshStack::poll`] again.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let timestamp = self.timestamp(now);
        self.iface
            .poll_delay(timestamp, &self.sockets)
            .map(|delay| Duration::from_micros(delay.total_micros()))
    }

    /// The next packet the stack wants carried, and its destination.
    pub fn poll_transmit(&mut self) -> Option<(Ipv6Addr, Vec<u8>)> {
        loop {
            let packet = self.device.tx.pop_front()?;
            let Some(dst) = packet.get(24..40) else {
                continue;
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(dst);
            return Some((Ipv6Addr::from(octets), packet));
        }
    }

    /// Queues an ICMPv6 echo request to `to` with sequence number `seq`.
    pub fn send_ping(&mut self, to: Ipv6Addr, seq: u16) -> bool {
        let checksum = self.device.capabilities().checksum;
        let repr = Icmpv6Repr::EchoRequest {
            ident: self.ident,
            seq_no: seq,
            data: PING_PAYLOAD,
        };
        let own = self.iface.ipv6_addr().unwrap_or(Ipv6Address::UNSPECIFIED);
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        match socket.send(repr.buffer_len(), IpAddress::Ipv6(to)) {
            Ok(buffer) => {
                let mut packet = Icmpv6Packet::new_unchecked(buffer);
                repr.emit(&own, &to, &mut packet, &checksum);
                true
            }
            Err(_) => false,
        }
    }

    /// The next echo reply received: who answered and the sequence number.
    pub fn poll_pong(&mut self) -> Option<(Ipv6Addr, u16)> {
        let checksum = self.device.capabilities().checksum;
        let own = self.iface.ipv6_addr().unwrap_or(Ipv6Address::UNSPECIFIED);
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while socket.can_recv() {
            let Ok((payload, IpAddress::Ipv6(from))) = socket.recv() else {
                continue;
            };
            let Ok(packet) = Icmpv6Packet::new_checked(payload) else {
                continue;
            };
            if let Ok(Icmpv6Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv6Repr::parse(&from, &own, &packet, &checksum)
            {
                if ident == self.ident {
                    return Some((from, seq_no));
                }
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn two_stacks_ping_each_other() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        assert!(a.send_ping(b_addr, 1));
        a.poll(now);
        let (dst, request) = a.poll_transmit().unwrap();
        assert_eq!(dst, b_addr);
        assert!(b.receive(request));
        b.poll(now);
        let (dst, reply) = b.poll_transmit().unwrap();
        assert_eq!(dst, a_addr);
        assert!(a.receive(reply));
        a.poll(now);
        assert_eq!(a.poll_pong(), Some((b_addr, 1)));
        assert_eq!(a.poll_pong(), None);
    }

    #[test]
    fn only_tcp_and_icmpv6_go_in() {
        let mut stack = MeshStack::new("fd00::a".parse().unwrap(), 1, Instant::now());
        let mut udp = vec![0u8; 48];
        udp[0] = 0x60;
        udp[6] = 17;
        assert!(!stack.receive(udp));
        assert!(!stack.receive(vec![1, 2]));
    }
}
