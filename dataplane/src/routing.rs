//! The routing table: what this node does with a packet that arrives with one of its own route
//! ids. A rule forwards (next transport, next id) or consumes (delivers to the route session, or
//! on a direct route takes the inner packet as it is); it names the transport it expects the
//! packet on and the largest packet its route agreed on, and expires unless refreshed. Owns the id
//! space too: each rule, and each freed id while it rests, is charged to the neighbour whose
//! request made it, so that no neighbour can use up the ids of the others or of the node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::identity::NodeKey;
use crate::transport::TransportId;
use crate::wire::RouteId;

/// What to do with a packet that arrives on a route id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Relay it to `transport`, relabelled with `next_id`.
    Forward {
        /// The neighbour it goes to.
        transport: TransportId,
        /// The id that neighbour chose for this route.
        next_id: RouteId,
    },
    /// Deliver it to the route session with `peer`: this node is one end of the route.
    Consume {
        /// The node at the route's other end.
        peer: NodeKey,
        /// Whether the route is direct: `peer` is the neighbour the rule expects packets from,
        /// and may send inner packets without the route session (next header 252).
        direct: bool,
    },
}

/// One rule and its bookkeeping.
#[derive(Debug, Clone)]
pub struct RuleEntry {
    /// What to do.
    pub rule: Rule,
    /// The only transport packets for this id may arrive on.
    pub ingress: TransportId,
    /// The largest mesh packet the route's setup agreed on; longer ones are dropped.
    pub mtu: u16,
    /// The same route's rule for the other direction on this node, if it has one.
    pub pair: Option<RouteId>,
    /// The neighbour whose route setup made the rule; `None` for the node's own routes.
    pub charged_to: Option<TransportId>,
    /// When the rule is dropped unless refreshed first.
    pub expires_at: Instant,
    /// Packets that used the rule.
    pub packets: u64,
    /// Bytes that used the rule (mesh packets, header included).
    pub bytes: u64,
}

/// The verdict for one arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Relay it.
    Forward {
        /// The neighbour it goes to.
        transport: TransportId,
        /// Its new label.
        next_id: RouteId,
    },
    /// Deliver it to the session with this peer.
    Consume {
        /// The route's other end.
        peer: NodeKey,
        /// Whether the route is direct (see [`Rule::Consume`]).
        direct: bool,
    },
    /// No rule has this id.
    UnknownRoute,
    /// The rule exists but expects packets from another neighbour.
    WrongIngress,
    /// Longer than the route agreed on at setup.
    TooLarge,
}

/// Why no route id could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// The neighbour already has as many routes through this node as allowed, or has freed
    /// so many lately that their ids still rest.
    #[error("route limit per neighbour reached")]
    RouteLimit,
    /// No free id was found (the id space is nearly exhausted).
    #[error("no free route id")]
    Exhausted,
}

/// How a table is bounded.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    /// Rules charged to one neighbour. Ids it freed and that still rest count separately, up
    /// to [`RESTING_PER_ROUTE`] times as many.
    pub max_per_neighbour: usize,
    /// How long a rule lives without a refresh; also how long a freed id rests before reuse.
    pub rule_lifetime: Duration,
}

/// This node's routing table.
#[derive(Debug)]
pub struct RoutingTable {
    rules: HashMap<RouteId, RuleEntry>,
    /// Freed ids, when they may be used again (a late packet for an old route must not land
    /// on a new one), and whom they are charged to.
    resting: HashMap<RouteId, (Instant, Option<TransportId>)>,
    usage: HashMap<TransportId, Usage>,
    /// Ids, live or resting, charged to neighbours.
    charged: usize,
    limits: TableLimits,
}

/// What one neighbour holds of the id space.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    live: usize,
    resting: usize,
}

/// Attempts at drawing a free random id before giving up.
const ALLOCATION_ATTEMPTS: usize = 64;
/// Resting ids a neighbour may hold per route it may hold: how fast it may churn routes
/// (with the default limits, 4096 ids resting at once: about 136 rules freed a second).
pub const RESTING_PER_ROUTE: usize = 4;
/// The share of the id space that neighbours together may hold, live or resting: the rest
/// keeps the node's own routes' random draws quick (each draw succeeds at least half the time).
const CHARGED_LIMIT: usize = 1 << 19;

impl RoutingTable {
    /// An empty table.
    pub fn new(limits: TableLimits) -> RoutingTable {
        RoutingTable {
            rules: HashMap::new(),
            resting: HashMap::new(),
            usage: HashMap::new(),
            charged: 0,
            limits,
        }
    }

    /// Replaces the limits (a changed configuration): rules beyond a lower per-neighbour limit
    /// stay until they go, and the new lifetime counts from each rule's next refresh.
    pub fn set_limits(&mut self, limits: TableLimits) {
        self.limits = limits;
    }

    /// Adds a rule under a fresh random id, non-zero and not recently used, charged to the
    /// neighbour whose request made it (`None`: the node's own), for mesh packets of at most
    /// `mtu` bytes.
    pub fn allocate(
        &mut self,
        now: Instant,
        rng: &mut dyn RngCore,
        ingress: TransportId,
        charged_to: Option<TransportId>,
        rule: Rule,
        mtu: u16,
    ) -> Result<RouteId, AllocateError> {
        if let Some(neighbour) = charged_to {
            let usage = self.usage.get(&neighbour).copied().unwrap_or_default();
            if usage.live >= self.limits.max_per_neighbour
                || usage.resting >= self.limits.max_per_neighbour * RESTING_PER_ROUTE
                || self.charged >= CHARGED_LIMIT
            {
                return Err(AllocateError::RouteLimit);
            }
        }
        for _ in 0..ALLOCATION_ATTEMPTS {
            let Some(id) = RouteId::new(rng.next_u32() & RouteId::MAX) else {
                continue;
            };
            if id.is_control() || self.rules.contains_key(&id) {
                continue;
            }
            match self.resting.get(&id) {
                Some((until, _)) if *until > now => continue,
                Some(_) => self.forget_resting(id),
                None => {}
            }
            self.rules.insert(
                id,
                RuleEntry {
                    rule,
                    ingress,
                    mtu,
                    pair: None,
                    charged_to,
                    expires_at: now + self.limits.rule_lifetime,
                    packets: 0,
                    bytes: 0,
                },
            );
            if let Some(neighbour) = charged_to {
                self.usage.entry(neighbour).or_default().live += 1;
                self.charged += 1;
            }
            return Ok(id);
        }
        Err(AllocateError::Exhausted)
    }

    fn forget_resting(&mut self, id: RouteId) {
        let Some((_, Some(neighbour))) = self.resting.remove(&id) else {
            return;
        };
        self.charged = self.charged.saturating_sub(1);
        if let Some(usage) = self.usage.get_mut(&neighbour) {
            usage.resting = usage.resting.saturating_sub(1);
            if usage.live == 0 && usage.resting == 0 {
                self.usage.remove(&neighbour);
            }
        }
    }

    /// Links two rules as the two directions of one route, so that a refresh or teardown of
    /// either reaches both.
    pub fn pair(&mut self, a: RouteId, b: RouteId) {
        if let Some(entry) = self.rules.get_mut(&a) {
            entry.pair = Some(b);
        }
        if let Some(entry) = self.rules.get_mut(&b) {
            entry.pair = Some(a);
        }
    }

    /// The verdict for a packet of `len` bytes arriving on `ingress` with `id`, counted
    /// against the rule. The relay's hot path: no allocation.
    #[inline]
    pub fn lookup(&mut self, id: RouteId, ingress: TransportId, len: usize) -> Lookup {
        let Some(entry) = self.rules.get_mut(&id) else {
            return Lookup::UnknownRoute;
        };
        if entry.ingress != ingress {
            return Lookup::WrongIngress;
        }
        if len > usize::from(entry.mtu) {
            return Lookup::TooLarge;
        }
        entry.packets += 1;
        entry.bytes += len as u64;
        match entry.rule {
            Rule::Forward { transport, next_id } => Lookup::Forward { transport, next_id },
            Rule::Consume { peer, direct } => Lookup::Consume { peer, direct },
        }
    }

    /// The rule for `id`.
    pub fn get(&self, id: RouteId) -> Option<&RuleEntry> {
        self.rules.get(&id)
    }

    /// Extends the life of a rule and of its pair.
    pub fn refresh(&mut self, now: Instant, id: RouteId) {
        let expires_at = now + self.limits.rule_lifetime;
        let pair = self.rules.get_mut(&id).and_then(|entry| {
            entry.expires_at = expires_at;
            entry.pair
        });
        if let Some(entry) = pair.and_then(|pair| self.rules.get_mut(&pair)) {
            entry.expires_at = expires_at;
        }
    }

    /// Removes a rule; its id rests for a rule lifetime before reuse.
    pub fn remove(&mut self, now: Instant, id: RouteId) -> Option<RuleEntry> {
        let entry = self.rules.remove(&id)?;
        if let Some(neighbour) = entry.charged_to {
            // The id stays charged while it rests.
            let usage = self.usage.entry(neighbour).or_default();
            usage.live = usage.live.saturating_sub(1);
            usage.resting += 1;
        }
        self.resting
            .insert(id, (now + self.limits.rule_lifetime, entry.charged_to));
        Some(entry)
    }

    /// Removes a rule and its pair, returning both.
    pub fn remove_with_pair(
        &mut self,
        now: Instant,
        id: RouteId,
    ) -> (Option<RuleEntry>, Option<(RouteId, RuleEntry)>) {
        let entry = self.remove(now, id);
        let pair = entry
            .as_ref()
            .and_then(|entry| entry.pair)
            .and_then(|pair| self.remove(now, pair).map(|e| (pair, e)));
        (entry, pair)
    }

    /// Removes the rules whose time is up and forgets ids that have rested long enough.
    pub fn expire(&mut self, now: Instant) -> Vec<(RouteId, RuleEntry)> {
        let expired: Vec<RouteId> = self
            .rules
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        let rested: Vec<RouteId> = self
            .resting
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in rested {
            self.forget_resting(id);
        }
        expired
            .into_iter()
            .filter_map(|id| self.remove(now, id).map(|entry| (id, entry)))
            .collect()
    }

    /// The ids of rules that send to or expect packets from `transport`.
    pub fn ids_touching(&self, transport: TransportId) -> Vec<RouteId> {
        let mut ids: Vec<RouteId> = self
            .rules
            .iter()
            .filter(|(_, entry)| {
                entry.ingress == transport
                    || matches!(entry.rule, Rule::Forward { transport: t, .. } if t == transport)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Every rule, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (RouteId, &RuleEntry)> {
        let mut rules: Vec<(RouteId, &RuleEntry)> =
            self.rules.iter().map(|(id, entry)| (*id, entry)).collect();
        rules.sort_by_key(|(id, _)| *id);
        rules.into_iter()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    /// A deterministic generator: the table must work with any source of numbers.
    struct Counter(u32);

    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.0 = self.0.wrapping_add(1);
            self.0
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand_core::impls::fill_bytes_via_next(self, dest)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    const LIFETIME: Duration = Duration::from_secs(30);
    const MTU: u16 = 1420;

    fn table(max_per_neighbour: usize) -> RoutingTable {
        RoutingTable::new(TableLimits {
            max_per_neighbour,
            rule_lifetime: LIFETIME,
        })
    }

    fn forward(transport: u16, next: u32) -> Rule {
        Rule::Forward {
            transport: TransportId::new(transport),
            next_id: RouteId::new(next).unwrap(),
        }
    }

    #[test]
    fn lookup_forwards_counts_and_checks_ingress() {
        let now = Instant::now();
        let mut table = table(8);
        let a = TransportId::new(1);
        let id = table
            .allocate(now, &mut Counter(0), a, Some(a), forward(2, 77), MTU)
            .unwrap();
        assert_eq!(
            table.lookup(id, a, 100),
            Lookup::Forward {
                transport: TransportId::new(2),
                next_id: RouteId::new(77).unwrap()
            }
        );
        assert_eq!(
            table.lookup(id, TransportId::new(2), 100),
            Lookup::WrongIngress
        );
        assert_eq!(
            table.lookup(RouteId::new(5).unwrap(), a, 100),
            Lookup::UnknownRoute
        );
        // The MTU its setup agreed on, and no byte more.
        assert_eq!(table.lookup(id, a, usize::from(MTU) + 1), Lookup::TooLarge);
        assert!(matches!(
            table.lookup(id, a, usize::from(MTU)),
            Lookup::Forward { .. }
        ));
        let entry = table.get(id).unwrap();
        assert_eq!(
            (entry.packets, entry.bytes),
            (2, 100 + u64::from(MTU)),
            "a refused packet is not counted against the rule"
        );
    }

    #[test]
    fn consume_rules_name_the_peer() {
        let now = Instant::now();
        let mut table = table(8);
        let peer = SecretKey::from([3; 32]).public();
        let a = TransportId::new(1);
        let id = table
            .allocate(
                now,
                &mut Counter(0),
                a,
                Some(a),
                Rule::Consume { peer, direct: true },
                MTU,
            )
            .unwrap();
        assert_eq!(
            table.lookup(id, a, 1),
            Lookup::Consume { peer, direct: true }
        );
    }

    #[test]
    fn ids_are_non_zero_20_bit_and_distinct() {
        let now = Instant::now();
        let mut table = table(100);
        // Starts right below a multiple of 2^20 so that the masked value hits zero.
        let mut rng = Counter(RouteId::MAX);
        let a = TransportId::new(1);
        let ids: Vec<RouteId> = (0..50)
            .map(|_| {
                table
                    .allocate(now, &mut rng, a, Some(a), forward(2, 1), MTU)
                    .unwrap()
            })
            .collect();
        assert!(ids
            .iter()
            .all(|id| !id.is_control() && id.get() <= RouteId::MAX));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn per_neighbour_limit_is_enforced_and_freed() {
        let now = Instant::now();
        let mut table = table(2);
        let mut rng = Counter(0);
        let a = TransportId::new(1);
        let b = TransportId::new(2);
        let first = table
            .allocate(now, &mut rng, a, Some(a), forward(3, 1), MTU)
            .unwrap();
        table
            .allocate(now, &mut rng, a, Some(a), forward(3, 1), MTU)
            .unwrap();
        assert_eq!(
            table.allocate(now, &mut rng, a, Some(a), forward(3, 1), MTU),
            Err(AllocateError::RouteLimit)
        );
        assert!(table
            .allocate(now, &mut rng, b, Some(b), forward(3, 1), MTU)
            .is_ok());
        table.remove(now, first);
        assert!(table
            .allocate(now, &mut rng, a, Some(a), forward(3, 1), MTU)
            .is_ok());
    }

    #[test]
    fn a_neighbour_churning_routes_cannot_exhaust_the_id_space() {
        let now = Instant::now();
        let mut table = table(16);
        let mut rng = Counter(0);
        let churner = TransportId::new(1);
        let honest = TransportId::new(2);
        // Setups that come and go as fast as the churner can send them.
        let mut made = 0;
        for _ in 0..100_000 {
            match table.allocate(now, &mut rng, churner, Some(churner), forward(3, 1), MTU) {
                Ok(id) => {
                    table.remove(now, id);
                    made += 1;
                }
                Err(error) => {
                    assert_eq!(error, AllocateError::RouteLimit);
                    break;
                }
            }
        }
        assert_eq!(
            made,
            16 * RESTING_PER_ROUTE,
            "the churner's resting ids are bounded"
        );
        // Everyone else is untouched: the node's own routes and another neighbour's.
        for _ in 0..16 {
            table
                .allocate(now, &mut rng, honest, Some(honest), forward(3, 1), MTU)
                .unwrap();
            table
                .allocate(now, &mut rng, churner, None, forward(3, 1), MTU)
                .unwrap();
        }
        // Once its ids have rested, the churner may set up routes again.
        let later = now + LIFETIME;
        table.expire(later);
        assert!(table
            .allocate(later, &mut rng, churner, Some(churner), forward(3, 1), MTU)
            .is_ok());
    }

    #[test]
    fn rules_are_charged_to_the_requesting_neighbour_not_the_ingress() {
        let now = Instant::now();
        let mut table = table(1);
        let mut rng = Counter(0);
        let requester = TransportId::new(1);
        let next_hop = TransportId::new(2);
        // A relay's reverse rule expects packets from the next hop but is the requester's.
        table
            .allocate(now, &mut rng, next_hop, Some(requester), forward(1, 1), MTU)
            .unwrap();
        assert_eq!(
            table.allocate(
                now,
                &mut rng,
                requester,
                Some(requester),
                forward(2, 1),
                MTU
            ),
            Err(AllocateError::RouteLimit)
        );
        assert!(table
            .allocate(now, &mut rng, requester, Some(next_hop), forward(2, 1), MTU)
            .is_ok());
    }

    #[test]
    fn freed_ids_rest_before_reuse() {
        let now = Instant::now();
        let mut table = table(8);
        let a = TransportId::new(1);
        let id = table
            .allocate(now, &mut Counter(0), a, Some(a), forward(2, 1), MTU)
            .unwrap();
        table.remove(now, id);
        // The same generator would draw the same id again: it must be skipped while resting.
        let again = table
            .allocate(now, &mut Counter(0), a, Some(a), forward(2, 1), MTU)
            .unwrap();
        assert_ne!(again, id);
        let later = now + LIFETIME + Duration::from_secs(1);
        table.expire(later);
        table.remove(later, again);
        let reused = table
            .allocate(
                later + LIFETIME * 2,
                &mut Counter(0),
                a,
                Some(a),
                forward(2, 1),
                MTU,
            )
            .unwrap();
        assert_eq!(reused, id);
    }

    #[test]
    fn rules_expire_unless_refreshed_with_their_pair() {
        let now = Instant::now();
        let mut table = table(8);
        let mut rng = Counter(0);
        let a = TransportId::new(1);
        let b = TransportId::new(2);
        let there = table
            .allocate(now, &mut rng, a, Some(a), forward(2, 9), MTU)
            .unwrap();
        let back = table
            .allocate(now, &mut rng, b, Some(b), forward(1, 8), MTU)
            .unwrap();
        let lonely = table
            .allocate(now, &mut rng, a, Some(a), forward(2, 7), MTU)
            .unwrap();
        table.pair(there, back);
        table.refresh(now + LIFETIME / 2, there);
        let expired = table.expire(now + LIFETIME);
        assert_eq!(
            expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![lonely]
        );
        assert!(table.get(back).is_some());
        assert_eq!(table.expire(now + LIFETIME * 2).len(), 2);
        assert!(table.is_empty());
    }

    #[test]
    fn removing_with_pair_and_finding_rules_by_transport() {
        let now = Instant::now();
        let mut table = table(8);
        let mut rng = Counter(0);
        let a = TransportId::new(1);
        let b = TransportId::new(2);
        let c = TransportId::new(3);
        let there = table
            .allocate(now, &mut rng, a, Some(a), forward(2, 9), MTU)
            .unwrap();
        let back = table
            .allocate(now, &mut rng, b, Some(b), forward(1, 8), MTU)
            .unwrap();
        let other = table
            .allocate(now, &mut rng, c, Some(c), forward(1, 5), MTU)
            .unwrap();
        table.pair(there, back);
        assert_eq!(table.ids_touching(b), {
            let mut ids = vec![there, back];
            ids.sort();
            ids
        });
        assert_eq!(table.ids_touching(c), vec![other]);
        let (entry, pair) = table.remove_with_pair(now, back);
        assert!(entry.is_some());
        assert_eq!(pair.map(|(id, _)| id), Some(there));
        assert_eq!(table.len(), 1);
    }
}
