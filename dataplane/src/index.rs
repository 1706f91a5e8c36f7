//! The one allocator of boringtun session indexes: transports and route sessions draw from it,
//! so that a receiver index names at most one session of this node.

use std::collections::HashSet;

/// boringtun shifts the index left by 8 bits into a 32-bit receiver index.
const INDEX_LIMIT: u32 = 1 << 24;

/// Hands out distinct indexes below 2^24.
#[derive(Debug, Default)]
pub struct IndexAllocator {
    in_use: HashSet<u32>,
    next: u32,
}

impl IndexAllocator {
    /// A new, unused index. (A node holds far fewer than 2^24 sessions: neighbours and peers are bounded.)
    pub fn allocate(&mut self) -> u32 {
        loop {
            self.next = (self.next + 1) % INDEX_LIMIT;
            if self.next != 0 && self.in_use.insert(self.next) {
                return self.next;
            }
        }
    }

    /// Gives an index back.
    pub fn release(&mut self, index: u32) {
        self.in_use.remove(&index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_distinct_and_reusable_after_release() {
        let mut indexes = IndexAllocator::default();
        let a = indexes.allocate();
        let b = indexes.allocate();
        assert_ne!(a, b);
        assert!(a < INDEX_LIMIT && b < INDEX_LIMIT);
        indexes.release(a);
        assert!(!indexes.in_use.contains(&a));
    }
}
