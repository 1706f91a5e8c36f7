//! Mesh ping: ICMPv6 echo requests to a node over its route, sent by the mesh stack at a
//! steady pace, and the round-trip times of the replies.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::api::RequestId;
use crate::identity::NodeKey;
use crate::stack::MeshStack;

/// Time between the echo requests of one ping.
const PING_INTERVAL: Duration = Duration::from_millis(200);
/// How long the last echo reply may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// One ping in progress.
#[derive(Debug)]
struct Ping {
    request: RequestId,
    peer: NodeKey,
    address: Ipv6Addr,
    count: u32,
    first_seq: u16,
    sent_at: Vec<Instant>,
    rtt_ms: Vec<f64>,
    next_send: Instant,
    deadline: Instant,
}

/// How a ping ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PingOutcome {
    /// The request it answers.
    pub request: RequestId,
    /// The node pinged.
    pub peer: NodeKey,
    /// Its mesh address.
    pub address: Ipv6Addr,
    /// Echo requests sent.
    pub sent: u32,
    /// Round-trip times of the replies, in milliseconds, in order.
    pub rtt_ms: Vec<f64>,
}

/// The pings in progress.
#[derive(Debug)]
pub(crate) struct Pings {
    pings: Vec<Ping>,
    next_seq: u16,
}

impl Default for Pings {
    fn default() -> Pings {
        Pings {
            pings: Vec::new(),
            next_seq: 1,
        }
    }
}

impl Pings {
    /// Starts pinging `peer` `count` times for `request`.
    pub fn start(&mut self, now: Instant, request: RequestId, peer: NodeKey, count: u32) {
        let first_seq = self.next_seq;
        self.next_seq = self
            .next_seq
            .wrapping_add(count.min(u32::from(u16::MAX)) as u16);
        self.pings.push(Ping {
            request,
            peer,
            address: peer.mesh_address(),
            count,
            first_seq,
            sent_at: Vec::new(),
            rtt_ms: Vec::new(),
            next_send: now,
            deadline: now + PING_INTERVAL * count + PING_TIMEOUT,
        });
    }

    /// Sends the echo requests that are due.
    pub fn drive(&mut self, now: Instant, stack: &mut MeshStack) {
        for ping in &mut self.pings {
            if ping.sent_at.len() < ping.count as usize && now >= ping.next_send {
                let seq = ping.first_seq.wrapping_add(ping.sent_at.len() as u16);
                if stack.send_ping(ping.address, seq) {
                    ping.sent_at.push(now);
                    ping.next_send = now + PING_INTERVAL;
                    if ping.sent_at.len() == ping.count as usize {
                        ping.deadline = now + PING_TIMEOUT;
                    }
                }
            }
        }
    }

    /// An echo reply from `from` with sequence number `seq` arrived.
    pub fn record(&mut self, now: Instant, from: Ipv6Addr, seq: u16) {
        for ping in self.pings.iter_mut().filter(|ping| ping.address == from) {
            let index = usize::from(seq.wrapping_sub(ping.first_seq));
            if let Some(sent) = ping.sent_at.get(index) {
                ping.rtt_ms
                    .push(now.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            }
        }
    }

    /// The route to `peer` went down: its pings end now.
    pub fn route_down(&mut self, now: Instant, peer: &NodeKey) {
        for ping in self.pings.iter_mut().filter(|ping| ping.peer == *peer) {
            ping.deadline = now;
        }
    }

    /// Takes the pings that have ended: every reply came, or the time is up.
    pub fn finished(&mut self, now: Instant) -> Vec<PingOutcome> {
        let (done, running): (Vec<_>, Vec<_>) = self
            .pings
            .drain(..)
            .partition(|ping| now >= ping.deadline || ping.rtt_ms.len() >= ping.count as usize);
        self.pings = running;
        done.into_iter()
            .map(|ping| PingOutcome {
                request: ping.request,
                peer: ping.peer,
                address: ping.address,
                sent: ping.sent_at.len() as u32,
                rtt_ms: ping.rtt_ms,
            })
            .collect()
    }

    /// When [`Pings::drive`] or [`Pings::finished`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pings
            .iter()
            .map(|ping| {
                if ping.sent_at.len() < ping.count as usize {
                    ping.deadline.min(ping.next_send)
                } else {
                    ping.deadline
                }
            })
            .min()
    }
}
