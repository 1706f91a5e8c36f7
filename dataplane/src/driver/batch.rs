//! Batched UDP I/O: `recvmmsg` and `sendmmsg`, so that one syscall moves up to [`BATCH`]
//! datagrams (a syscall costs more than the crypto of a full-size packet here), and UDP GSO
//! (`UDP_SEGMENT`), so that a run of equal-size datagrams to one endpoint goes down the stack
//! as one, and UDP GRO (`UDP_GRO`), so that such a run arrives as one too and is split here.
//! The buffers and headers are allocated once; each call only re-points the headers.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::libc;

use crate::outbox::Datagram;

/// Datagrams moved per syscall at most.
pub(super) const BATCH: usize = 32;
/// Sends made one datagram per message after the kernel refused a GSO message, before GSO is
/// tried again: one refused message (an oversized datagram, a route whose MTU shrank) must not
/// cost GSO for good, and a kernel without it costs one refused call in this many.
const GSO_PAUSE: u32 = 1024;
/// Room per received message: a whole coalesced (GRO) run, or any one datagram (the
/// transports drop those longer than [`crate::outbox::MAX_DATAGRAM`]).
const SLOT: usize = 65_536;

/// Buffers and headers for `recvmmsg`.
pub(super) struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    controls: Vec<Control>,
    /// The GRO segment size of each message of the last call (0: one datagram).
    segments: Vec<usize>,
    count: usize,
}

// SAFETY: the raw pointers in the headers point only into this struct's own heap buffers
// (which do not move with it) and are re-pointed before every call.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish()
    }
}

impl RecvBatch {
    pub(super) fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
            // zero bytes are a valid value.
            addrs: vec![unsafe { mem::zeroed() }; BATCH],
            iovecs: vec![unsafe { mem::zeroed() }; BATCH],
            headers: vec![unsafe { mem::zeroed() }; BATCH],
            controls: vec![[0; 4]; BATCH],
            segments: vec![0; BATCH],
            count: 0,
        }
    }

    /// Asks the kernel to hand runs of datagrams over coalesced; says whether it agreed.
    pub(super) fn enable_gro(fd: RawFd) -> bool {
        let on: libc::c_int = 1;
        // SAFETY: UDP_GRO takes an int, passed by pointer with its size.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_GRO,
                std::ptr::from_ref(&on).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        result == 0
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let base = self.bufs.as_mut_ptr();
        for index in 0..BATCH {
            self.iovecs[index] = libc::iovec {
                // SAFETY: index * SLOT + SLOT <= bufs.len(): the slot is inside the buffer.
                iov_base: unsafe { base.add(index * SLOT) }.cast(),
                iov_len: SLOT,
            };
            let header = &mut self.headers[index].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.addrs[index]).cast();
            header.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = std::ptr::from_mut(&mut self.iovecs[index]);
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::from_mut(&mut self.controls[index]).cast();
            header.msg_controllen = mem::size_of::<Control>() as _;
            header.msg_flags = 0;
            self.headers[index].msg_len = 0;
        }
        // SAFETY: every header points at buffers, addresses and control buffers owned by
        // `self`, which outlive the call; the lengths given are theirs.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        self.count = received as usize;
        for index in 0..self.count {
            self.segments[index] = gro_segment(&self.headers[index].msg_hdr);
        }
        Ok(self.count)
    }

    /// The `index`th message of the last [`RecvBatch::recv`], who sent it (`None` for an
    /// address family other than IPv4 and IPv6), and its datagrams: one, or a coalesced run
    /// split at the segment size the kernel reported.
    pub(super) fn get(&self, index: usize) -> Option<(SocketAddr, std::slice::Chunks<'_, u8>)> {
        if index >= self.count {
            return None;
        }
        let len = (self.headers[index].msg_len as usize).min(SLOT);
        let bytes = self.bufs.get(index * SLOT..index * SLOT + len)?;
        let segment = match self.segments[index] {
            0 => bytes.len().max(1),
            size => size,
        };
        Some((from_storage(&self.addrs[index])?, bytes.chunks(segment)))
    }

    /// Datagram `number` of the `index`th message (see [`RecvBatch::get`]), and who sent it.
    pub(super) fn datagram(&self, index: usize, number: usize) -> Option<(SocketAddr, &[u8])> {
        let (from, mut datagrams) = self.get(index)?;
        Some((from, datagrams.nth(number)?))
    }
}

/// The segment size a `UDP_GRO` control message reports, or 0.
fn gro_segment(header: &libc::msghdr) -> usize {
    // SAFETY: the kernel filled `msg_controllen` bytes of the control buffer the header points
    // at with well-formed control messages, which the CMSG macros walk without leaving it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    0
}

/// Room for one control message carrying a `u16`, aligned as `cmsghdr` wants.
type Control = [u64; 4];

/// Headers and addresses for `sendmmsg`.
pub(super) struct SendBatch {
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    controls: Vec<Control>,
    /// How many datagrams each message of the last call carried.
    group_sizes: Vec<usize>,
    /// Sends left without UDP GSO since the kernel last refused it (0: GSO is used).
    gso_pause: u32,
    /// GSO messages the kernel refused.
    gso_refusals: u64,
}

// SAFETY: as for RecvBatch; the pointers to the datagrams are set and used within one call.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish_non_exhaustive()
    }
}

impl SendBatch {
    pub(super) fn new() -> SendBatch {
        SendBatch {
            // SAFETY: as in RecvBatch::new.
            addrs: vec![unsafe { mem::zeroed() }; BATCH],
            iovecs: vec![unsafe { mem::zeroed() }; BATCH],
            headers: vec![unsafe { mem::zeroed() }; BATCH],
            controls: vec![[0; 4]; BATCH],
            group_sizes: vec![0; BATCH],
            gso_pause: 0,
            gso_refusals: 0,
        }
    }

    /// Sends up to [`BATCH`] of `datagrams`, each to the address `to` maps it to; returns how
    /// many the socket took (an error only when it took none).
    pub(super) fn send(
        &mut self,
        fd: RawFd,
        datagrams: &[Datagram],
        to: impl Fn(SocketAddr) -> SocketAddr,
    ) -> io::Result<usize> {
        let groups = self.prepare(datagrams, &to);
        // SAFETY: the first `groups` headers point at addresses, iovecs and control buffers
        // owned by `self` and at the datagrams' bytes, all alive for the call.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                self.headers.as_mut_ptr(),
                groups as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        self.gso_pause = self.gso_pause.saturating_sub(1);
        if sent < 0 {
            let error = io::Error::last_os_error();
            let refused_gso = matches!(
                error.raw_os_error(),
                Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
            );
            // Only the first message can have failed: the kernel reports a later one's failure
            // as a shorter count, and the caller starts again from it.
            if refused_gso && self.group_sizes[0] > 1 {
                self.gso_refusals += 1;
                if self.gso_refusals == 1 {
                    log::info!("UDP GSO refused ({error}): the next {GSO_PAUSE} sends go one datagram per message");
                } else {
                    log::debug!("UDP GSO refused again ({error})");
                }
                self.gso_pause = GSO_PAUSE;
                return self.send(fd, datagrams, to);
            }
            return Err(error);
        }
        Ok(self.group_sizes[..sent as usize].iter().sum())
    }

    /// Fills the headers: one message per run of datagrams to one endpoint whose sizes are
    /// equal (the last may be shorter), as GSO wants. Returns the number of messages.
    fn prepare(&mut self, datagrams: &[Datagram], to: &impl Fn(SocketAddr) -> SocketAddr) -> usize {
        let datagrams = &datagrams[..datagrams.len().min(BATCH)];
        let mut groups = 0;
        let mut start = 0;
        while start < datagrams.len() {
            let first = &datagrams[start];
            let size = first.bytes().len();
            let mut count = 1;
            if self.gso_pause == 0 && size > 0 {
                while let Some(next) = datagrams.get(start + count) {
                    let len = next.bytes().len();
                    if next.to != first.to || len > size || len == 0 {
                        break;
                    }
                    count += 1;
                    if len < size {
                        break;
                    }
                }
            }
            for (offset, datagram) in datagrams[start..start + count].iter().enumerate() {
                let bytes = datagram.bytes();
                self.iovecs[start + offset] = libc::iovec {
                    // sendmmsg only reads through the pointer.
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
            }
            let addr_len = to_storage(to(first.to), &mut self.addrs[groups]);
            let control = std::ptr::from_mut(&mut self.controls[groups]);
            let header = &mut self.headers[groups].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.addrs[groups]).cast();
            header.msg_namelen = addr_len;
            header.msg_iov = std::ptr::from_mut(&mut self.iovecs[start]);
            header.msg_iovlen = count as _;
            header.msg_flags = 0;
            if count > 1 {
                header.msg_control = control.cast();
                // SAFETY: CMSG_SPACE of a u16 (24 bytes) fits the 32-byte, 8-aligned control
                // buffer, which CMSG_FIRSTHDR and CMSG_DATA address.
                unsafe {
                    header.msg_controllen = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as _;
                    let cmsg = libc::CMSG_FIRSTHDR(header);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
                }
            } else {
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
            }
            self.headers[groups].msg_len = 0;
            self.group_sizes[groups] = count;
            groups += 1;
            start += count;
        }
        groups
    }
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is big
            // enough and aligned for.
            let addr: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(addr.sin6_addr.s6_addr),
                u16::from_be(addr.sin6_port),
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
        libc::AF_INET => {
            // SAFETY: as above, for sockaddr_in.
            let addr: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                u16::from_be(addr.sin_port),
            )))
        }
        _ => None,
    }
}

fn to_storage(address: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match address {
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is big enough and aligned for a sockaddr_in6.
            let addr: &mut libc::sockaddr_in6 = unsafe { &mut *std::ptr::from_mut(storage).cast() };
            addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            addr.sin6_port = v6.port().to_be();
            addr.sin6_flowinfo = v6.flowinfo();
            addr.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            addr.sin6_scope_id = v6.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
        SocketAddr::V4(v4) => {
            // SAFETY: as above, for sockaddr_in.
            let addr: &mut libc::sockaddr_in = unsafe { &mut *std::ptr::from_mut(storage).cast() };
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = v4.port().to_be();
            addr.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            addr.sin_zero = [0; 8];
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_convert_both_ways() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        for text in [
            "192.0.2.1:7777",
            "[2001:db8::1]:65535",
            "[::ffff:192.0.2.1]:1",
        ] {
            let address: SocketAddr = text.parse().unwrap();
            to_storage(address, &mut storage);
            assert_eq!(from_storage(&storage), Some(address));
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_in() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let mut outbox = crate::outbox::Outbox::default();
        for index in 0..5u8 {
            outbox.push_copy(to, &[index; 100]);
        }
        let datagrams: Vec<Datagram> = std::iter::from_fn(|| outbox.pop()).collect();
        let mut send = SendBatch::new();
        assert_eq!(send.send(sender.as_raw_fd(), &datagrams, |a| a).unwrap(), 5);
        let mut recv = RecvBatch::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 5 && std::time::Instant::now() < deadline {
            if let Ok(count) = recv.recv(receiver.as_raw_fd()) {
                for index in 0..count {
                    let (from, datagrams) = recv.get(index).unwrap();
                    assert_eq!(from, sender.local_addr().unwrap());
                    got.extend(datagrams.map(<[u8]>::to_vec));
                }
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
        assert!(recv.get(5).is_none());
    }

    #[test]
    fn runs_of_equal_sizes_share_a_message_and_arrive_as_they_were() {
        for gro in [false, true] {
            runs_arrive(gro);
        }
    }

    fn runs_arrive(gro: bool) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        if gro {
            assert!(RecvBatch::enable_gro(a.as_raw_fd()));
            assert!(RecvBatch::enable_gro(b.as_raw_fd()));
        }
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut outbox = crate::outbox::Outbox::default();
        let plan = [
            (to_a, 1400, 1u8),
            (to_a, 1400, 2),
            (to_a, 600, 3),
            (to_a, 1400, 4),
            (to_b, 1400, 5),
            (to_b, 1500, 6),
        ];
        for (to, len, fill) in plan {
            outbox.push_copy(to, &vec![fill; len]);
        }
        let datagrams: Vec<Datagram> = std::iter::from_fn(|| outbox.pop()).collect();
        let mut send = SendBatch::new();
        assert_eq!(send.prepare(&datagrams, &|a| a), 4, "[1 2 3] [4] [5] [6]");
        assert_eq!(send.send(sender.as_raw_fd(), &datagrams, |a| a).unwrap(), 6);
        assert_eq!(send.gso_refusals, 0, "the kernel took the GSO messages");
        let mut recv = RecvBatch::new();
        for (socket, expected) in [
            (&a, vec![(1400, 1), (1400, 2), (600, 3), (1400, 4)]),
            (&b, vec![(1400, 5), (1500, 6)]),
        ] {
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while got.len() < expected.len() && std::time::Instant::now() < deadline {
                if let Ok(count) = recv.recv(socket.as_raw_fd()) {
                    for index in 0..count {
                        let (_, datagrams) = recv.get(index).unwrap();
                        for bytes in datagrams {
                            got.push((bytes.len(), bytes[0]));
                            assert!(bytes.iter().all(|byte| *byte == bytes[0]));
                        }
                    }
                }
            }
            assert_eq!(got, expected);
        }
    }

    /// Receives what arrives on `socket` until `count` datagrams came or 5 s passed.
    fn receive(socket: &std::net::UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut recv = RecvBatch::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < count && std::time::Instant::now() < deadline {
            if let Ok(received) = recv.recv(socket.as_raw_fd()) {
                for index in 0..received {
                    let (_, datagrams) = recv.get(index).unwrap();
                    got.extend(datagrams.map(<[u8]>::to_vec));
                }
            }
        }
        got
    }

    fn set_no_check(socket: &std::net::UdpSocket, on: bool) {
        let value = libc::c_int::from(on);
        // SAFETY: SO_NO_CHECK takes an int, passed by pointer with its size.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
    }

    /// The kernel refuses GSO on a socket that sends without UDP checksums (SO_NO_CHECK): the
    /// refused batch goes one datagram per message, and GSO comes back after a while.
    #[test]
    fn a_refused_gso_message_is_split_and_gso_comes_back() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let batch = |to: SocketAddr, fill: u8| {
            let mut outbox = crate::outbox::Outbox::default();
            for index in 0..4u8 {
                outbox.push_copy(to, &[fill + index; 1200]);
            }
            std::iter::from_fn(|| outbox.pop()).collect::<Vec<Datagram>>()
        };
        let mut send = SendBatch::new();

        set_no_check(&sender, true);
        let refused = batch(to, 10);
        assert_eq!(send.send(sender.as_raw_fd(), &refused, |a| a).unwrap(), 4);
        assert_eq!(send.gso_refusals, 1, "the kernel refused the GSO message");
        let expected: Vec<Vec<u8>> = (10..14u8).map(|fill| vec![fill; 1200]).collect();
        assert_eq!(receive(&receiver, 4), expected, "sent one by one instead");

        // A while later (the sends in between go elsewhere), GSO is used again.
        set_no_check(&sender, false);
        let single = batch(sink.local_addr().unwrap(), 0);
        for _ in 0..GSO_PAUSE {
            if send.gso_pause == 0 {
                break;
            }
            send.send(sender.as_raw_fd(), &single[..1], |a| a).unwrap();
        }
        assert_eq!(send.gso_pause, 0, "GSO is tried again");
        let grouped = batch(to, 20);
        assert_eq!(send.prepare(&grouped, &|a| a), 1, "one GSO message");
        assert_eq!(send.send(sender.as_raw_fd(), &grouped, |a| a).unwrap(), 4);
        assert_eq!(send.gso_refusals, 1, "and the kernel took it");
        let expected: Vec<Vec<u8>> = (20..24u8).map(|fill| vec![fill; 1200]).collect();
        assert_eq!(receive(&receiver, 4), expected);
    }
}
