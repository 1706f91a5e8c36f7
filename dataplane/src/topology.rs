//! The node manager's view of the mesh: the newest signed advert of every node it has heard of,
//! which adverts to accept and pass on, and the lowest-cost paths over the links that both
//! their ends advertise. Sans-IO: adverts and `now` in, verdicts and paths out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::identity::NodeKey;
use crate::wire::advert::Advert;
use crate::wire::control::MAX_PATH_LEN;
use crate::xeddsa::VerifyingKey;

/// Nodes whose adverts are kept at most: beyond it, adverts from new origins are dropped.
pub const MAX_NODES: usize = 4096;
/// The longest lifetime honoured: a longer one is cut to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Adverts a neighbour may pass on at once before the rate applies (a whole small mesh's
/// worth, so that the exchange when a link comes up gets through).
pub const ADVERT_BURST: u32 = 1024;
/// Adverts per second a neighbour may pass on once its burst is spent. Each costs a signature
/// check (about 50 µs), so a neighbour can take at most a few per cent of a core.
pub const ADVERT_RATE: u32 = 200;
/// How long the sequence number of a node whose advert expired is remembered, so that a
/// replay of an older advert is still recognised as stale.
const TOMBSTONE_LIFE: Duration = Duration::from_secs(3 * 3600);

/// Why an advert was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertDrop {
    /// Larger than any advert can be.
    Oversized,
    /// Did not parse.
    Malformed,
    /// The same sequence number as the advert already held: a flooding echo, harmless.
    Duplicate,
    /// Older than the advert already held (or than one that expired): a replay.
    Stale,
    /// The neighbour passed on more adverts than its rate allows.
    RateLimited,
    /// The signature is not the origin's.
    Forged,
    /// A new origin while [`MAX_NODES`] are known.
    Full,
    /// This node's own advert coming back.
    Own,
}

/// Adverts dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdvertDrops {
    /// Larger than any advert can be.
    pub oversized: u64,
    /// Did not parse.
    pub malformed: u64,
    /// Already held (flooding echoes).
    pub duplicate: u64,
    /// Older than what is held: replays.
    pub stale: u64,
    /// Over a neighbour's rate.
    pub rate_limited: u64,
    /// Bad signatures.
    pub forged: u64,
    /// New origins while full.
    pub full: u64,
    /// This node's own adverts coming back.
    pub own: u64,
}

impl AdvertDrops {
    /// Counts one drop.
    pub fn count(&mut self, reason: AdvertDrop) {
        let counter = match reason {
            AdvertDrop::Oversized => &mut self.oversized,
            AdvertDrop::Malformed => &mut self.malformed,
            AdvertDrop::Duplicate => &mut self.duplicate,
            AdvertDrop::Stale => &mut self.stale,
            AdvertDrop::RateLimited => &mut self.rate_limited,
            AdvertDrop::Forged => &mut self.forged,
            AdvertDrop::Full => &mut self.full,
            AdvertDrop::Own => &mut self.own,
        };
        *counter += 1;
    }
}

/// A path chosen over the known links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChoice {
    /// The nodes, this one first, the destination last.
    pub path: Vec<NodeKey>,
    /// The sum of its links' costs.
    pub cost: Duration,
    /// Each link's cost, in path order: `hop_costs[i]` is the link from `path[i]` to
    /// `path[i + 1]`.
    pub hop_costs: Vec<Duration>,
}

/// One node as the topology knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    /// Its key.
    pub key: NodeKey,
    /// Its advert's sequence number.
    pub sequence: u64,
    /// How long ago its advert arrived.
    pub age: Duration,
    /// How long until its advert expires.
    pub expires_in: Duration,
    /// The links it advertises.
    pub links: Vec<KnownLink>,
    /// The service entries it advertises.
    pub services: Vec<Vec<u8>>,
}

/// One advertised link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownLink {
    /// The node at the other end.
    pub neighbour: NodeKey,
    /// The round-trip time the advertising node measured.
    pub rtt: Duration,
    /// What path choice charges for it: the larger of the two ends' round-trip times, when
    /// both ends advertise the link; `None` when only this end does (the link is not used).
    pub cost: Option<Duration>,
}

/// An advert held, and when it arrived.
#[derive(Debug, Clone)]
struct Held {
    advert: Advert,
    /// The origin's key, converted once for all its adverts.
    key: VerifyingKey,
    received: Instant,
    expires: Instant,
}

/// A neighbour's allowance of adverts.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

/// The link-state database and path choice.
#[derive(Debug)]
pub struct Topology {
    own: NodeKey,
    adverts: HashMap<NodeKey, Held>,
    tombstones: HashMap<NodeKey, (u64, Instant)>,
    buckets: HashMap<NodeKey, Bucket>,
    /// Links reported dead by a route down: left out of path choice until either end
    /// advertises anew.
    suspects: HashSet<(NodeKey, NodeKey)>,
    drops: AdvertDrops,
    /// Counts every change that may open or close a path.
    version: u64,
}

impl Topology {
    /// An empty view for the node `own`.
    pub fn new(own: NodeKey) -> Topology {
        Topology {
            own,
            adverts: HashMap::new(),
            tombstones: HashMap::new(),
            buckets: HashMap::new(),
            suspects: HashSet::new(),
            drops: AdvertDrops::default(),
            version: 0,
        }
    }

    // ----- getters -----

    /// Adverts dropped, by reason.
    pub fn drops(&self) -> AdvertDrops {
        self.drops
    }

    /// A number that changes whenever a path may have appeared or gone: an advert taken or
    /// expired, a link suspected, this node's own links changed. Whoever found no path can
    /// look again when it changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The advert held for `origin`.
    pub fn advert(&self, origin: &NodeKey) -> Option<&Advert> {
        self.adverts.get(origin).map(|held| &held.advert)
    }

    /// Every advert held (this node's own included).
    pub fn adverts(&self) -> impl Iterator<Item = &Advert> {
        self.adverts.values().map(|held| &held.advert)
    }

    /// How many nodes are known (this one included once it has advertised).
    pub fn len(&self) -> usize {
        self.adverts.len()
    }

    /// Whether no advert is held.
    pub fn is_empty(&self) -> bool {
        self.adverts.is_empty()
    }

    /// The known nodes, their links and what each link costs, ordered by key.
    pub fn nodes(&self, now: Instant) -> Vec<KnownNode> {
        let mut nodes: Vec<KnownNode> = self
            .adverts
            .values()
            .map(|held| KnownNode {
                key: held.advert.origin,
                sequence: held.advert.sequence,
                age: now.saturating_duration_since(held.received),
                expires_in: held.expires.saturating_duration_since(now),
                links: held
                    .advert
                    .links
                    .iter()
                    .map(|link| KnownLink {
                        neighbour: link.neighbour,
                        rtt: micros(link.rtt_micros),
                        cost: self.advertised_cost(&held.advert.origin, &link.neighbour),
                    })
                    .collect(),
                services: held.advert.services.clone(),
            })
            .collect();
        nodes.sort_by_key(|node| node.key);
        nodes
    }

    // ----- input -----

    /// Takes this node's own new advert.
    pub fn set_own(&mut self, now: Instant, advert: Advert) {
        let Some(key) = VerifyingKey::new(&self.own) else {
            return;
        };
        let expires = now + micros_secs(advert.lifetime_secs).min(MAX_LIFETIME);
        self.version += 1;
        self.adverts.insert(
            self.own,
            Held {
                advert,
                key,
                received: now,
                expires,
            },
        );
    }

    /// Checks an advert that `neighbour` passed on; `Ok` means it is new and held now, and
    /// should be passed on to the other neighbours. The cheap checks come first: only a new
    /// advert within the neighbour's rate costs a signature check.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        neighbour: NodeKey,
        advert: &Advert,
    ) -> Result<(), AdvertDrop> {
        match self.check(now, neighbour, advert) {
            Ok(key) => {
                self.version += 1;
                self.tombstones.remove(&advert.origin);
                self.suspects
                    .retain(|(a, b)| *a != advert.origin && *b != advert.origin);
                let expires = now + micros_secs(advert.lifetime_secs).min(MAX_LIFETIME);
                self.adverts.insert(
                    advert.origin,
                    Held {
                        advert: advert.clone(),
                        key,
                        received: now,
                        expires,
                    },
                );
                Ok(())
            }
            Err(reason) => {
                self.drops.count(reason);
                Err(reason)
            }
        }
    }

    /// Whether an advert from `origin` with `sequence` is one already held or older, and so
    /// dropped (counted) without further ado: most adverts a node receives are such echoes.
    pub fn drop_if_known(&mut self, origin: &NodeKey, sequence: u64) -> bool {
        let held = self.adverts.get(origin).map(|held| held.advert.sequence);
        let reason = match held {
            Some(held) if held == sequence => AdvertDrop::Duplicate,
            Some(held) if held > sequence => AdvertDrop::Stale,
            _ => return false,
        };
        self.drops.count(reason);
        true
    }

    /// Counts an advert that was dropped before it could be handled (too large, or unparsable).
    pub fn count_drop(&mut self, reason: AdvertDrop) {
        self.drops.count(reason);
    }

    /// Leaves the link `a`–`b` out of path choice until either end advertises anew (a route
    /// over it was reported down).
    pub fn suspect_link(&mut self, a: NodeKey, b: NodeKey) {
        if self.suspects.len() >= MAX_NODES {
            // Reports that no advert has answered yet pile up: start over.
            self.suspects.clear();
        }
        self.version += 1;
        self.suspects.insert(ordered(a, b));
    }

    /// This node's live links changed (one came up or died): they count for path choice at
    /// once, before the node's next advert says so.
    pub fn own_links_changed(&mut self) {
        self.version += 1;
    }

    /// Drops the adverts whose lifetime is over, and forgets old tombstones and idle buckets.
    pub fn expire(&mut self, now: Instant) {
        let own = self.own;
        let expired: Vec<NodeKey> = self
            .adverts
            .iter()
            .filter(|(key, held)| **key != own && held.expires <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            if let Some(held) = self.adverts.remove(&key) {
                log::debug!("advert of {key} expired");
                self.version += 1;
                self.tombstones.insert(key, (held.advert.sequence, now));
            }
        }
        self.tombstones
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < TOMBSTONE_LIFE);
        if self.tombstones.len() > MAX_NODES {
            let mut oldest: Vec<(Instant, NodeKey)> = self
                .tombstones
                .iter()
                .map(|(key, (_, since))| (*since, *key))
                .collect();
            oldest.sort();
            let excess = oldest.len() - MAX_NODES;
            for (_, key) in oldest.into_iter().take(excess) {
                self.tombstones.remove(&key);
            }
        }
        self.buckets.retain(|_, bucket| {
            now.saturating_duration_since(bucket.refilled) < Duration::from_secs(60)
        });
    }

    // ----- path choice -----

    /// The lowest-cost path from this node to `to`. `own_links` are this node's live links
    /// with their round-trip times: they count whether or not the neighbour advertises them
    /// back (this node saw them answer), at the larger of the two times when it does.
    pub fn path_to(&self, own_links: &[(NodeKey, Duration)], to: &NodeKey) -> Option<PathChoice> {
        if *to == self.own {
            return None;
        }
        let mut best: HashMap<NodeKey, (Duration, Option<NodeKey>)> = HashMap::new();
        let mut queue = BinaryHeap::new();
        best.insert(self.own, (Duration::ZERO, None));
        queue.push(Reverse((Duration::ZERO, self.own)));
        while let Some(Reverse((cost, node))) = queue.pop() {
            if best.get(&node).is_some_and(|(known, _)| *known < cost) {
                continue;
            }
            if node == *to {
                break;
            }
            for (next, link_cost) in self.links_from(&node, own_links) {
                let total = cost + link_cost;
                if best.get(&next).is_none_or(|(known, _)| total < *known) {
                    best.insert(next, (total, Some(node)));
                    queue.push(Reverse((total, next)));
                }
            }
        }
        let (cost, _) = *best.get(to)?;
        let mut path = vec![*to];
        let mut at = *to;
        while let Some((_, Some(previous))) = best.get(&at) {
            path.push(*previous);
            at = *previous;
            if path.len() > MAX_PATH_LEN {
                return None;
            }
        }
        path.reverse();
        let hop_costs = path
            .windows(2)
            .map(|pair| match (best.get(&pair[0]), best.get(&pair[1])) {
                (Some((from, _)), Some((to, _))) => to.saturating_sub(*from),
                _ => Duration::ZERO,
            })
            .collect();
        Some(PathChoice {
            path,
            cost,
            hop_costs,
        })
    }

    /// The usable links out of `node` and their costs.
    fn links_from(
        &self,
        node: &NodeKey,
        own_links: &[(NodeKey, Duration)],
    ) -> Vec<(NodeKey, Duration)> {
        if *node == self.own {
            return own_links
                .iter()
                .map(|(neighbour, rtt)| {
                    let back = self.rtt_advertised(neighbour, &self.own);
                    (*neighbour, back.map_or(*rtt, |back| back.max(*rtt)))
                })
                .collect();
        }
        let Some(held) = self.adverts.get(node) else {
            return Vec::new();
        };
        held.advert
            .links
            .iter()
            .filter(|link| link.neighbour != self.own)
            .filter_map(|link| {
                let cost = self.advertised_cost(node, &link.neighbour)?;
                Some((link.neighbour, cost))
            })
            .collect()
    }

    /// The cost of the link `a`–`b` as the two ends advertise it: the larger of their
    /// round-trip times, or `None` unless both list it (or it is suspected dead).
    fn advertised_cost(&self, a: &NodeKey, b: &NodeKey) -> Option<Duration> {
        let there = self.rtt_advertised(a, b)?;
        let back = self.rtt_advertised(b, a)?;
        if self.suspects.contains(&ordered(*a, *b)) {
            return None;
        }
        Some(there.max(back))
    }

    fn rtt_advertised(&self, from: &NodeKey, to: &NodeKey) -> Option<Duration> {
        self.adverts
            .get(from)?
            .advert
            .links
            .iter()
            .find(|link| link.neighbour == *to)
            .map(|link| micros(link.rtt_micros))
    }

    /// The cheap checks, then the rate, then the signature; the origin's key on success.
    fn check(
        &mut self,
        now: Instant,
        neighbour: NodeKey,
        advert: &Advert,
    ) -> Result<VerifyingKey, AdvertDrop> {
        if advert.origin == self.own {
            return Err(AdvertDrop::Own);
        }
        let known_key = match self.adverts.get(&advert.origin) {
            Some(held) if held.advert.sequence == advert.sequence => {
                return Err(AdvertDrop::Duplicate)
            }
            Some(held) if held.advert.sequence > advert.sequence => return Err(AdvertDrop::Stale),
            Some(held) => Some(held.key),
            None => {
                if self
                    .tombstones
                    .get(&advert.origin)
                    .is_some_and(|(sequence, _)| *sequence >= advert.sequence)
                {
                    return Err(AdvertDrop::Stale);
                }
                if self.adverts.len() >= MAX_NODES {
                    return Err(AdvertDrop::Full);
                }
                None
            }
        };
        self.take_token(now, neighbour)?;
        let key = match known_key {
            Some(key) => key,
            None => VerifyingKey::new(&advert.origin).ok_or(AdvertDrop::Forged)?,
        };
        if !advert.verify_with(&key) {
            return Err(AdvertDrop::Forged);
        }
        Ok(key)
    }

    fn take_token(&mut self, now: Instant, neighbour: NodeKey) -> Result<(), AdvertDrop> {
        let bucket = self.buckets.entry(neighbour).or_insert(Bucket {
            tokens: ADVERT_BURST,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled);
        let earned = elapsed.as_millis().saturating_mul(u128::from(ADVERT_RATE)) / 1000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(ADVERT_BURST);
            bucket.refilled = now;
        }
        if bucket.tokens == 0 {
            return Err(AdvertDrop::RateLimited);
        }
        bucket.tokens -= 1;
        Ok(())
    }
}

/// The two keys in order, so that a link has one name.
fn ordered(a: NodeKey, b: NodeKey) -> (NodeKey, NodeKey) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn micros(value: u32) -> Duration {
    Duration::from_micros(u64::from(value))
}

fn micros_secs(secs: u16) -> Duration {
    Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::identity::SecretKey;
    use crate::wire::advert::AdvertLink;

    fn secret(byte: u8) -> SecretKey {
        SecretKey::from([byte; 32])
    }

    fn key(byte: u8) -> NodeKey {
        secret(byte).public()
    }

    /// An advert of node `origin` listing `links` (neighbour, round trip in ms).
    fn advert(origin: u8, sequence: u64, links: &[(u8, u64)]) -> Advert {
        Advert::signed(
            &secret(origin),
            sequence,
            60,
            links
                .iter()
                .map(|(neighbour, ms)| AdvertLink {
                    neighbour: key(*neighbour),
                    rtt_micros: u32::try_from(ms * 1000).unwrap(),
                })
                .collect(),
            Vec::new(),
            &[origin; 64],
        )
        .unwrap()
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    /// Node 1's view; its own links are given to path choice directly.
    fn view() -> Topology {
        Topology::new(key(1))
    }

    #[test]
    fn a_link_counts_only_when_both_ends_advertise_it_at_the_larger_time() {
        let now = Instant::now();
        let mut topology = view();
        let own = [(key(2), ms(10))];
        // 2 lists 3 at 5 ms, but 3 does not list 2 yet.
        topology
            .handle_advert(now, key(2), &advert(2, 1, &[(1, 10), (3, 5)]))
            .unwrap();
        assert_eq!(topology.path_to(&own, &key(3)), None);
        // 3 lists 2 at 40 ms: the link counts at 40, the larger.
        topology
            .handle_advert(now, key(2), &advert(3, 1, &[(2, 40)]))
            .unwrap();
        let choice = topology.path_to(&own, &key(3)).unwrap();
        assert_eq!(choice.path, vec![key(1), key(2), key(3)]);
        assert_eq!(choice.cost, ms(10 + 40));
        assert_eq!(choice.hop_costs, vec![ms(10), ms(40)]);
        let nodes = topology.nodes(now);
        let two = nodes.iter().find(|node| node.key == key(2)).unwrap();
        let link = two
            .links
            .iter()
            .find(|link| link.neighbour == key(3))
            .unwrap();
        assert_eq!((link.rtt, link.cost), (ms(5), Some(ms(40))));
    }

    #[test]
    fn the_cheapest_path_wins_and_suspected_links_are_avoided() {
        let now = Instant::now();
        let mut topology = view();
        // 1–2–4 costs 10 + 10; 1–3–4 costs 5 + 30.
        let own = [(key(2), ms(10)), (key(3), ms(5))];
        for advert in [
            advert(2, 1, &[(1, 10), (4, 10)]),
            advert(3, 1, &[(1, 5), (4, 30)]),
            advert(4, 1, &[(2, 10), (3, 30)]),
        ] {
            topology.handle_advert(now, key(2), &advert).unwrap();
        }
        let choice = topology.path_to(&own, &key(4)).unwrap();
        assert_eq!((choice.path[1], choice.cost), (key(2), ms(20)));
        topology.suspect_link(key(2), key(4));
        let choice = topology.path_to(&own, &key(4)).unwrap();
        assert_eq!((choice.path[1], choice.cost), (key(3), ms(35)));
        // A new advert from either end lifts the suspicion.
        topology
            .handle_advert(now, key(2), &advert(4, 2, &[(2, 10), (3, 30)]))
            .unwrap();
        assert_eq!(topology.path_to(&own, &key(4)).unwrap().cost, ms(20));
        // With no live link of its own, the node has no path at all.
        assert_eq!(topology.path_to(&[], &key(4)), None);
    }

    #[test]
    fn echoes_replays_forgeries_and_own_adverts_are_dropped_and_counted() {
        let now = Instant::now();
        let mut topology = view();
        let newer = advert(2, 5, &[(1, 10)]);
        topology.handle_advert(now, key(3), &newer).unwrap();
        assert_eq!(
            topology.handle_advert(now, key(3), &newer),
            Err(AdvertDrop::Duplicate)
        );
        assert_eq!(
            topology.handle_advert(now, key(3), &advert(2, 4, &[(1, 1)])),
            Err(AdvertDrop::Stale)
        );
        let mut bent = advert(2, 6, &[(1, 10)]);
        bent.links[0].rtt_micros = 1;
        assert_eq!(
            topology.handle_advert(now, key(3), &bent),
            Err(AdvertDrop::Forged)
        );
        let mut impostor = advert(3, 7, &[(1, 1)]);
        impostor.origin = key(2);
        assert_eq!(
            topology.handle_advert(now, key(3), &impostor),
            Err(AdvertDrop::Forged)
        );
        assert_eq!(
            topology.handle_advert(now, key(3), &advert(1, 9, &[])),
            Err(AdvertDrop::Own)
        );
        assert_eq!(topology.advert(&key(2)), Some(&newer));
        let drops = topology.drops();
        assert_eq!(
            (drops.duplicate, drops.stale, drops.forged, drops.own),
            (1, 1, 2, 1)
        );
    }

    #[test]
    fn expired_adverts_go_and_a_replay_after_expiry_is_still_stale() {
        let now = Instant::now();
        let mut topology = view();
        topology
            .handle_advert(now, key(3), &advert(2, 5, &[(1, 10)]))
            .unwrap();
        topology.expire(now + Duration::from_secs(59));
        assert!(topology.advert(&key(2)).is_some());
        topology.expire(now + Duration::from_secs(60));
        assert!(topology.advert(&key(2)).is_none());
        let later = now + Duration::from_secs(61);
        assert_eq!(
            topology.handle_advert(later, key(3), &advert(2, 5, &[(1, 10)])),
            Err(AdvertDrop::Stale)
        );
        assert!(topology
            .handle_advert(later, key(3), &advert(2, 6, &[(1, 10)]))
            .is_ok());
    }

    #[test]
    fn the_version_moves_whenever_a_path_may_have_changed() {
        let now = Instant::now();
        let mut topology = view();
        let mut last = topology.version();
        let mut moved = |topology: &Topology| {
            let moved = topology.version() != last;
            last = topology.version();
            moved
        };
        let fresh = advert(2, 1, &[(1, 10), (3, 5)]);
        topology.handle_advert(now, key(3), &fresh).unwrap();
        assert!(moved(&topology), "an advert taken");
        let _ = topology.handle_advert(now, key(3), &fresh);
        assert!(!moved(&topology), "an echo changes nothing");
        topology.suspect_link(key(2), key(3));
        assert!(moved(&topology), "a link suspected");
        topology.own_links_changed();
        assert!(moved(&topology), "a link of this node's");
        topology.expire(now + Duration::from_secs(30));
        assert!(!moved(&topology), "nothing expired yet");
        topology.expire(now + Duration::from_secs(60));
        assert!(moved(&topology), "an advert expired");
    }

    #[test]
    fn a_neighbour_passing_on_too_many_adverts_is_held_to_its_rate() {
        let now = Instant::now();
        let mut topology = view();
        let flood = advert(2, 1, &[]);
        // Each new sequence costs a token (and, here, fails its signature: still counted).
        let mut limited = 0;
        for sequence in 0..u64::from(ADVERT_BURST) + 10 {
            let mut copy = flood.clone();
            copy.sequence = sequence + 2;
            if topology.handle_advert(now, key(3), &copy) == Err(AdvertDrop::RateLimited) {
                limited += 1;
            }
        }
        assert_eq!(limited, 10);
        // Another neighbour is not held back, and the rate refills with time.
        let mut copy = flood.clone();
        copy.sequence = 1_000_000;
        assert_eq!(
            topology.handle_advert(now, key(4), &copy),
            Err(AdvertDrop::Forged)
        );
        assert_eq!(
            topology.handle_advert(now + Duration::from_secs(1), key(3), &copy),
            Err(AdvertDrop::Forged)
        );
    }
}
