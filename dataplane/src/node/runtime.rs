//! What changes while the node runs: neighbours added and removed (`add_neighbour`,
//! `rm_neighbour`, a reloaded config), a neighbour's endpoint and keepalive, and the liveness
//! and route settings.

use super::*;

/// The settings a reloaded configuration may change on a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSettings {
    /// How often each link is probed.
    pub probe_interval: Duration,
    /// Silence after which a link is declared dead.
    pub dead_after: Duration,
    /// Routes one neighbour may hold through this node.
    pub max_routes_per_neighbour: usize,
    /// How long a rule lives without a refresh.
    pub rule_lifetime: Duration,
    /// How often the initiator of a route refreshes it.
    pub refresh_interval: Duration,
}

impl Node {
    // ----- neighbours and settings, while the node runs -----

    /// The settings in force.
    pub fn settings(&self) -> NodeSettings {
        NodeSettings {
            probe_interval: self.options.probe_interval,
            dead_after: self.options.dead_after,
            max_routes_per_neighbour: self.options.max_routes_per_neighbour,
            rule_lifetime: self.options.rule_lifetime,
            refresh_interval: self.options.refresh_interval,
        }
    }

    /// Adds a transport to `neighbour`; its link is probed at once.
    pub fn add_neighbour(
        &mut self,
        now: Instant,
        neighbour: NeighbourConfig,
    ) -> Result<(), TransportError> {
        let key = neighbour.key;
        let id = self.transports.add(neighbour, &mut self.indexes)?;
        self.links.insert(
            id,
            Link::new(now, &self.key, &key, self.options.probe_interval),
        );
        self.timers.liveness = now;
        Ok(())
    }

    /// Sets the endpoint (when one is given: without, the transport keeps the one it has) and
    /// the keepalive of the transport to `neighbour.key`; false if it is no neighbour.
    pub fn update_neighbour(&mut self, neighbour: &NeighbourConfig) -> bool {
        let Some(id) = self.transports.id_of(&neighbour.key) else {
            return false;
        };
        if let Some(endpoint) = neighbour.endpoint {
            self.transports.set_endpoint(id, endpoint);
        }
        self.transports.set_keepalive(id, neighbour.keepalive)
    }

    /// Removes the transport to `key` and what ran over it, exactly as when its link dies: the
    /// routes this node is an end of through it go down (an automatic one is rebuilt over another
    /// path when there is one), the routes it relays to it are reported down to their other end,
    /// and setups through it fail. (The neighbour itself finds out as from a dead link: nothing
    /// it sends is accepted any more.) Returns how many routes this node was an end of went down,
    /// or `None` if `key` is no neighbour.
    pub fn remove_neighbour(&mut self, now: Instant, key: &NodeKey) -> Option<usize> {
        let id = self.transports.id_of(key)?;
        if self
            .links
            .remove(&id)
            .is_some_and(|link| link.state == LinkState::Up)
        {
            self.topology.own_links_changed();
            self.events.push_back(Event::LinkDown { neighbour: *key });
            self.schedule_advert(now);
        }
        let before = self.routes.len();
        self.routes_over_dead_link(now, id);
        let went_down = before - self.routes.len();
        self.transports.remove(key, &mut self.indexes);
        log::info!("neighbour {key} removed: {went_down} route(s) through it went down");
        Some(went_down)
    }

    /// Puts `settings` in force: the next probe of each link follows the new interval, a rule
    /// lives the new lifetime from its next refresh, and each route is refreshed within the new
    /// interval.
    pub fn set_settings(&mut self, now: Instant, settings: NodeSettings) {
        self.options.probe_interval = settings.probe_interval;
        self.options.dead_after = settings.dead_after;
        self.options.max_routes_per_neighbour = settings.max_routes_per_neighbour;
        self.options.rule_lifetime = settings.rule_lifetime;
        self.options.refresh_interval = settings.refresh_interval;
        self.table.set_limits(TableLimits {
            max_per_neighbour: settings.max_routes_per_neighbour,
            rule_lifetime: settings.rule_lifetime,
        });
        let next_probe = now + settings.probe_interval;
        for link in self.links.values_mut() {
            link.next_probe = link.next_probe.min(next_probe);
        }
        let next_refresh = now + settings.refresh_interval;
        for route in self.routes.values_mut() {
            route.next_refresh = route.next_refresh.min(next_refresh);
        }
        self.timers.liveness = now;
    }
}
