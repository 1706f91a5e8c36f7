//! Datagrams waiting to be sent, in buffers that are recycled so that steady-state
//! forwarding allocates nothing: the core fills a buffer, the driver sends it and gives it back.
//! Both are bounded: a datagram beyond [`OUTBOX_LIMIT`] is dropped and counted (a next hop
//! that cannot keep up loses packets, as behind a full socket buffer, instead of growing this
//! node's memory), and the pool keeps at most [`FREE_LIMIT`] buffers once a burst is over.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// Largest datagram the node sends or accepts: a 1500-byte underlay MTU leaves 1452 bytes of
/// UDP payload over IPv6, but a neighbour on a larger-MTU underlay may send more.
pub const MAX_DATAGRAM: usize = 2048;

/// Datagrams waiting at most (8 MiB of buffers); more are dropped and counted.
pub const OUTBOX_LIMIT: usize = 4096;
/// Free buffers kept for reuse at most; more go back to the allocator.
pub const FREE_LIMIT: usize = 1024;

/// How full the outbox has been.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    /// The most datagrams that waited at once.
    pub queued_peak: usize,
    /// Datagrams that may wait at once ([`OUTBOX_LIMIT`]).
    pub limit: usize,
    /// Datagrams dropped because that many waited already.
    pub dropped: u64,
}

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
    queued_peak: usize,
    dropped: u64,
}

impl Outbox {
    /// A free buffer to write a datagram into; hand it back with [`Outbox::push`] or
    /// [`Outbox::recycle_buffer`].
    pub fn buffer(&mut self) -> Box<[u8; MAX_DATAGRAM]> {
        self.free
            .pop()
            .unwrap_or_else(|| Box::new([0u8; MAX_DATAGRAM]))
    }

    /// Queues the first `len` bytes of `buf` for `to`; when [`OUTBOX_LIMIT`] datagrams wait
    /// already, drops it instead and counts it.
    pub fn push(&mut self, to: SocketAddr, buf: Box<[u8; MAX_DATAGRAM]>, len: usize) {
        debug_assert!(len <= MAX_DATAGRAM);
        if self.queue.len() >= OUTBOX_LIMIT {
            self.dropped += 1;
            self.recycle_buffer(buf);
            return;
        }
        self.queue.push_back(Datagram { to, len, buf });
        self.queued_peak = self.queued_peak.max(self.queue.len());
    }

    /// Returns an unused buffer to the pool.
    pub fn recycle_buffer(&mut self, buf: Box<[u8; MAX_DATAGRAM]>) {
        if self.free.len() < FREE_LIMIT {
            self.free.push(buf);
        }
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
        self.recycle_buffer(datagram.buf);
    }

    /// How full it has been.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            queued_peak: self.queued_peak,
            limit: OUTBOX_LIMIT,
            dropped: self.dropped,
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_beyond_the_limit_is_dropped_and_counted_and_the_pool_shrinks_back() {
        let mut outbox = Outbox::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..OUTBOX_LIMIT + 100 {
            outbox.push_copy(to, &[7; 1400]);
        }
        assert_eq!(outbox.len(), OUTBOX_LIMIT);
        assert_eq!(
            outbox.stats(),
            OutboxStats {
                queued_peak: OUTBOX_LIMIT,
                limit: OUTBOX_LIMIT,
                dropped: 100
            }
        );
        while let Some(datagram) = outbox.pop() {
            assert_eq!(datagram.bytes().len(), 1400);
            outbox.recycle(datagram);
        }
        assert_eq!(outbox.free.len(), FREE_LIMIT, "the pool gave the rest back");
        // Room again once the queue has drained.
        outbox.push_copy(to, &[1; 10]);
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.stats().dropped, 100);
    }
}
