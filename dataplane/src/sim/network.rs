//! The simulated network between the nodes: links that delay, lose or drop everything, and
//! the datagrams on their way, ordered by arrival.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use rand_core::RngCore;

use super::{LinkModel, SplitMix};

/// A datagram on its way.
#[derive(Debug)]
pub(super) struct InFlight {
    pub from: usize,
    pub to: usize,
    pub bytes: Vec<u8>,
}

/// The links and what is on them.
#[derive(Debug)]
pub(super) struct Network {
    links: HashMap<(usize, usize), LinkModel>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, InFlight>,
    sequence: u64,
    rng: SplitMix,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    /// `links` (index pairs) with the default model; `rng` decides losses.
    pub(super) fn new(links: &[(usize, usize)], rng: SplitMix) -> Network {
        Network {
            links: links
                .iter()
                .map(|(a, b)| (pair(*a, *b), LinkModel::default()))
                .collect(),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            sequence: 0,
            rng,
        }
    }

    /// The link between `a` and `b`, made when there was none.
    pub(super) fn link(&mut self, a: usize, b: usize) -> &mut LinkModel {
        self.links.entry(pair(a, b)).or_default()
    }

    /// Puts a datagram from `from` to `to` (`None`: an address no node has) on its link;
    /// false when it is lost.
    pub(super) fn send(
        &mut self,
        now: Instant,
        from: usize,
        to: Option<usize>,
        bytes: &[u8],
    ) -> bool {
        let Some(to) = to else {
            return false;
        };
        let Some(model) = self.links.get_mut(&pair(from, to)) else {
            return false;
        };
        if model.lose_next > 0 {
            model.lose_next -= 1;
            return false;
        }
        let model = *model;
        if !model.alive || (self.rng.next_u32() % 1_000_000) < model.loss_ppm {
            return false;
        }
        self.sequence += 1;
        self.in_flight.insert(
            self.sequence,
            InFlight {
                from,
                to,
                bytes: bytes.to_vec(),
            },
        );
        self.queue.push(Reverse((now + model.delay, self.sequence)));
        true
    }

    /// A seed drawn from the generator that decides losses (a restarted node's randomness).
    pub(super) fn seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// When the next datagram arrives.
    pub(super) fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The next datagram that has arrived by `now`.
    pub(super) fn pop_arrived(&mut self, now: Instant) -> Option<InFlight> {
        loop {
            let Reverse((at, sequence)) = *self.queue.peek()?;
            if at > now {
                return None;
            }
            self.queue.pop();
            if let Some(flight) = self.in_flight.remove(&sequence) {
                return Some(flight);
            }
        }
    }
}
