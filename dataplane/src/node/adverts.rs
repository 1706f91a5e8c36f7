//! This node's part in the flooding of adverts: it advertises its live links (soon after one
//! changes, and every interval), checks what neighbours pass on and passes on what is new to
//! its other neighbours, and hands a neighbour whose link comes up everything it holds.

use super::*;

impl Node {
    pub(super) fn handle_advert(
        &mut self,
        now: Instant,
        ingress: TransportId,
        neighbour: NodeKey,
        advert: Advert,
    ) {
        if advert.origin == self.key {
            // An advert of this node's from before a restart that counted further: count on
            // from it.
            if advert.sequence > self.advertising.sequence {
                self.advertising.sequence = advert.sequence;
                self.schedule_advert(now);
            }
            self.topology.count_drop(AdvertDrop::Own);
            return;
        }
        if self.topology.handle_advert(now, neighbour, &advert).is_ok() {
            log::trace!("advert of {} from {neighbour}: passed on", advert.origin);
            self.flood(&ControlMessage::Advert(advert), Some(ingress));
        }
    }

    /// Asks for an advert soon: a link came up or went down.
    pub(super) fn schedule_advert(&mut self, now: Instant) {
        let earliest = self
            .advertising
            .last
            .map_or(now, |last| last + ADVERT_MIN_INTERVAL);
        let due = (now + ADVERT_DELAY).max(earliest);
        let due = self.advertising.triggered.map_or(due, |at| at.min(due));
        self.advertising.triggered = Some(due);
        self.timers.adverts = self.timers.adverts.min(due);
    }

    /// A link came up: the neighbour gets every advert held, its own view being empty or old.
    pub(super) fn share_adverts(&mut self, transport: TransportId) {
        let messages: Vec<ControlMessage> = self
            .topology
            .adverts()
            .map(|advert| ControlMessage::Advert(advert.clone()))
            .collect();
        for message in &messages {
            self.send_advert(transport, message);
        }
    }

    pub(super) fn maintain_adverts(&mut self, now: Instant) {
        let due = self.advertising.triggered.is_some_and(|at| now >= at)
            || now >= self.advertising.next_periodic;
        if due {
            self.advertise(now);
        }
        self.topology.expire(now);
        let next_check = now + Duration::from_secs(1);
        self.timers.adverts = self
            .advertising
            .triggered
            .map_or(next_check, |at| at.min(next_check))
            .min(self.advertising.next_periodic);
    }

    /// Signs and floods an advert of the live links, the fastest first.
    fn advertise(&mut self, now: Instant) {
        // Only links with a measured round-trip time: the others have no cost to offer yet.
        let mut links: Vec<AdvertLink> = self
            .transports
            .info()
            .filter(|info| {
                self.links
                    .get(&info.id)
                    .is_some_and(|link| link.state == LinkState::Up)
            })
            .filter_map(|info| Some((info.key, info.rtt?)))
            .map(|(neighbour, rtt)| AdvertLink {
                neighbour,
                rtt_micros: u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX),
            })
            .collect();
        links.sort_by_key(|link| (link.rtt_micros, link.neighbour));
        links.truncate(crate::wire::advert::MAX_LINKS);
        let elapsed = now.saturating_duration_since(self.advertising.started);
        let clock = self
            .options
            .advert_sequence_start
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        let sequence = clock.max(self.advertising.sequence.saturating_add(1));
        let lifetime = self.options.advert_interval * ADVERT_LIFETIME_INTERVALS;
        let lifetime_secs = u16::try_from(lifetime.as_secs().max(1)).unwrap_or(u16::MAX);
        let mut nonce = [0u8; crate::xeddsa::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let advert = match Advert::signed(
            &self.options.secret,
            sequence,
            lifetime_secs,
            links,
            Vec::new(),
            &nonce,
        ) {
            Ok(advert) => advert,
            Err(error) => {
                log::warn!("cannot make an advert: {error}");
                return;
            }
        };
        self.advertising.sequence = sequence;
        self.advertising.last = Some(now);
        self.advertising.triggered = None;
        self.advertising.next_periodic = now + self.options.advert_interval;
        let message = ControlMessage::Advert(advert.clone());
        self.topology.set_own(now, advert);
        self.flood(&message, None);
    }

    /// Sends an advert to every neighbour whose link is up, but the one it came from.
    fn flood(&mut self, message: &ControlMessage, except: Option<TransportId>) {
        let targets: Vec<TransportId> = self
            .links
            .iter()
            .filter(|(id, link)| link.state == LinkState::Up && Some(**id) != except)
            .map(|(id, _)| *id)
            .collect();
        for transport in targets {
            self.send_advert(transport, message);
        }
    }

    fn send_advert(&mut self, transport: TransportId, message: &ControlMessage) {
        let Some(address) = self.transports.address_of(transport) else {
            return;
        };
        if self
            .send_control(transport, RouteId::CONTROL, address, message)
            .is_ok()
        {
            self.advertising.sent += 1;
            self.advertising.sent_bytes += message.buffer_len() as u64;
        }
    }

    /// The links that are up, with their round-trip times (a link whose time is not measured
    /// yet counts as slow).
    pub(super) fn live_links(&self) -> Vec<(NodeKey, Duration)> {
        let mut links: Vec<(NodeKey, Duration)> = self
            .transports
            .info()
            .filter(|info| {
                self.links
                    .get(&info.id)
                    .is_some_and(|link| link.state == LinkState::Up)
            })
            .map(|info| (info.key, info.rtt.unwrap_or(UNMEASURED_RTT)))
            .collect();
        links.sort();
        links
    }
}

/// The cost given to a live link whose round-trip time is not measured yet.
const UNMEASURED_RTT: Duration = Duration::from_secs(1);
