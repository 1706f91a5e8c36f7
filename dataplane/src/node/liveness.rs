//! Link liveness: a probe on route id 0 to every neighbour each interval, round-trip times from
//! the answers, and a link declared dead after a silence.

use super::*;

impl Node {
    /// Whether a link went silent after it had been up. A link never heard from is not dead:
    /// the first packet sent over it starts the handshake.
    pub(super) fn link_is_dead(&self, transport: TransportId) -> bool {
        self.links
            .get(&transport)
            .is_some_and(|link| link.state == LinkState::Down)
    }

    pub(super) fn mark_alive(&mut self, now: Instant, transport: TransportId, neighbour: NodeKey) {
        if let Some(link) = self.links.get_mut(&transport) {
            if link.state != LinkState::Up {
                link.state = LinkState::Up;
                // Measure it at once, so that the advert that follows can offer it.
                link.next_probe = now;
                self.timers.liveness = now;
                log::info!("link to {neighbour} is up");
                self.topology.own_links_changed();
                self.events.push_back(Event::LinkUp { neighbour });
                self.share_adverts(transport);
                self.schedule_advert(now);
            }
        }
    }

    pub(super) fn check_links(&mut self, now: Instant) {
        let interval = self.options.probe_interval;
        let dead_after = self.options.dead_after;
        // Silence counts up to where the socket has been read, and at most a `dead_after`
        // behind `now`, so that a socket that never empties still lets dead links die.
        let heard_until = self.input_read_until.map_or(now, |read_until| {
            now.checked_sub(dead_after)
                .map_or(read_until, |floor| read_until.max(floor))
        });
        let mut died = Vec::new();
        let mut due = Vec::new();
        for info in self.transports.info() {
            let Some(link) = self.links.get_mut(&info.id) else {
                continue;
            };
            let silent = info
                .last_received
                .map_or(dead_after, |at| heard_until.saturating_duration_since(at));
            if link.state == LinkState::Up && silent >= dead_after {
                link.state = LinkState::Down;
                died.push((info.id, info.key));
            }
            if now >= link.next_probe && info.endpoint.is_some() {
                link.next_probe = now + interval;
                due.push((info.id, info.key));
            }
        }
        for (transport, key) in due {
            let nonce = self.rng.next_u64();
            let probe = ControlMessage::Probe { nonce };
            let sent = self.send_control(transport, RouteId::CONTROL, key.mesh_address(), &probe);
            if let Some(link) = self.links.get_mut(&transport) {
                link.probe = Some(Probe {
                    nonce,
                    sent: now,
                    timed: sent == Ok(Sent::Now),
                });
            }
        }
        for (transport, key) in died {
            log::warn!("link to {key} is dead: silent for {dead_after:?}");
            self.topology.own_links_changed();
            self.events.push_back(Event::LinkDown { neighbour: key });
            self.schedule_advert(now);
            self.routes_over_dead_link(now, transport);
        }
        let next = self
            .links
            .values()
            .map(|link| link.next_probe)
            .min()
            .unwrap_or(now + interval);
        self.timers.liveness = next
            .min(now + interval / 4)
            .max(now + Duration::from_millis(10));
    }
}

impl Link {
    /// A link never heard from. Of its two ends, the one with the lower key probes first and
    /// the other a quarter interval later: when both start a WireGuard handshake at once, each
    /// drops the other's answer and the link waits for boringtun's retry, 5 s later.
    pub(super) fn new(
        now: Instant,
        own: &NodeKey,
        neighbour: &NodeKey,
        interval: Duration,
    ) -> Link {
        Link {
            state: LinkState::Unknown,
            probe: None,
            next_probe: if own < neighbour {
                now
            } else {
                now + interval / 4
            },
            reports_sent: 0,
            reports_taken: 0,
        }
    }
}
