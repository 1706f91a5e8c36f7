//! Datagrams waiting to be sent, in buffers that are recycled so that steady-state
//! forwarding allocates nothing: the core fills a buffer, the driver sends it and gives it back.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// Largest datagram the node sends or accepts: a 1500-byte underlay MTU leaves 1452 bytes of
/// UDP payload over IPv6, but a neighbour on a larger-MTU underlay may send more.
pub const MAX_DATAGRAM: usize = 2048;

/// One datagram to send.
#[derive(Debug)]
pub struct Datagram {
    /// Where it goes.
    pub to: SocketAddr,
    len: usize,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

impl Datagram {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The queue of datagrams to send and the pool of free buffers.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Datagram>,
    // Boxed because buffers are lent out and given back: each move is a pointer, not 2 KiB.
    #[allow(clippy::vec_box)]
    free: Vec<Box<[u8; MAX_DATAGRAM]>>,
}

impl Outbox {
    /// A free buffer to write a datagram into; hand it back with [`Outbox::push`] or
    /// [`Outbox::recycle_buffer`].
    pub fn buffer(&mut self) -> Box<[u8; MAX_DATAGRAM]> {
        self.free
            .pop()
            .unwrap_or_else(|| Box::new([0u8; MAX_DATAGRAM]))
    }

    /// Queues the first `len` bytes of `buf` for `to`.
    pub fn push(&mut self, to: SocketAddr, buf: Box<[u8; MAX_DATAGRAM]>, len: usize) {
        debug_assert!(len <= MAX_DATAGRAM);
        self.queue.push_back(Datagram { to, len, buf });
    }

    /// Returns an unused buffer to the pool.
    pub fn recycle_buffer(&mut self, buf: Box<[u8; MAX_DATAGRAM]>) {
        self.free.push(buf);
    }

    /// Copies `bytes` into a buffer and queues it.
    pub fn push_copy(&mut self, to: SocketAddr, bytes: &[u8]) {
        let len = bytes.len().min(MAX_DATAGRAM);
        let mut buf = self.buffer();
        buf[..len].copy_from_slice(&bytes[..len]);
        self.push(to, buf, len);
    }

    /// The next datagram to send, oldest first.
    pub fn pop(&mut self) -> Option<Datagram> {
        self.queue.pop_front()
    }

    /// Gives a sent datagram's buffer back.
    pub fn recycle(&mut self, datagram: Datagram) {
        self.free.push(datagram.buf);
    }

    /// How many datagrams wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
