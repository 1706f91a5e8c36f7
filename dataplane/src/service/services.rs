//! The services of the mesh: what this node offers (the built-in apps that run, and the
//! services that launched apps' listeners announce), put into its advert whenever it changes;
//! the ports that are the node's own; and the `services` request, which lists what every
//! node's advert offers and what the path there costs.

use std::time::Instant;

use super::Service;
use crate::api::services::{ServiceRow, ServicesReply};
use crate::api::vpn::VpnApp;
use crate::messenger;
use crate::socks::{self, Socks};
use crate::vpn::{self, VpnApps};
use crate::wire::{BuiltinService, ServiceEntry, ServiceName};

/// What the node offers, in a form that is cheap to compare at every poll: the port of each
/// built-in service that runs (in the order of [`BuiltinService::ALL`]), and the version of
/// the app socket's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offer {
    builtins: [Option<u16>; BuiltinService::ALL.len()],
    apps: u64,
}

impl Service {
    /// Puts what the node offers now into its advert, when it changed (the node advertises
    /// the change within a second).
    pub(super) fn update_services(&mut self, now: Instant) {
        let offer = Offer {
            builtins: BuiltinService::ALL.map(|builtin| self.builtin_port(builtin)),
            apps: self.app_socket.services_version(),
        };
        if self.offer == Some(offer) {
            return;
        }
        self.offer = Some(offer);
        let mut offered: Vec<ServiceEntry> = BuiltinService::ALL
            .into_iter()
            .zip(offer.builtins)
            .filter_map(|(builtin, port)| {
                Some(ServiceEntry {
                    name: builtin.into(),
                    port: port?,
                })
            })
            .collect();
        offered.extend(self.app_socket.services());
        log::debug!("services offered: {offered:?}");
        self.node.set_services(now, &offered);
    }

    /// The port of a built-in app's service while the app runs.
    fn builtin_port(&self, builtin: BuiltinService) -> Option<u16> {
        match builtin {
            BuiltinService::SocksServer => self
                .socks
                .server()
                .filter(|(_, running)| *running)
                .map(|(options, _)| options.port),
            BuiltinService::VpnServer => self
                .vpn
                .options()
                .server
                .as_ref()
                .filter(|_| self.vpn.is_running(VpnApp::Server))
                .map(|options| options.port),
            BuiltinService::Messenger => self.messenger_running().then_some(messenger::PORT),
        }
    }

    /// Answers `services`: every service that the adverts held list (those named `name`,
    /// when given), by name, then by the cost of the path there.
    pub(super) fn services_reply(&self, now: Instant, name: Option<ServiceName>) -> ServicesReply {
        let own = self.node.key();
        let mut services = Vec::new();
        let mut add = |node, entry: ServiceEntry, route: Option<(f64, usize)>| {
            if name.as_ref().is_some_and(|name| *name != entry.name) {
                return;
            }
            services.push(ServiceRow {
                builtin: entry.name.builtin().is_some(),
                service: entry.name,
                node,
                port: entry.port,
                own: node == own,
                cost_ms: route.map(|(cost, _)| cost),
                hops: route.map(|(_, hops)| hops),
            });
        };
        for entry in self.node.offered_services() {
            add(own, entry, Some((0.0, 0)));
        }
        for known in self.node.known_nodes(now) {
            if known.key == own {
                continue;
            }
            let route = self.node.find_route(&known.key).map(|choice| {
                (
                    choice.cost.as_secs_f64() * 1000.0,
                    choice.path.len().saturating_sub(1),
                )
            });
            for entry in known
                .services
                .iter()
                .filter_map(|bytes| ServiceEntry::parse(bytes))
            {
                add(known.key, entry, route);
            }
        }
        services.sort_by(|a, b| {
            a.service
                .cmp(&b.service)
                .then(a.cost_ms.is_none().cmp(&b.cost_ms.is_none()))
                .then(
                    a.cost_ms
                        .unwrap_or(0.0)
                        .total_cmp(&b.cost_ms.unwrap_or(0.0)),
                )
                .then_with(|| a.node.to_string().cmp(&b.node.to_string()))
        });
        ServicesReply { name, services }
    }
}

/// Whether `port` is one of the node's own, which launched apps may not listen on nor dial:
/// below 1024, or a built-in app's (its default, or as configured), whether the app runs or
/// not.
pub(super) fn is_own_port(socks: &Socks, vpn: &VpnApps, port: u16) -> bool {
    let vpn_options = vpn.options();
    port < 1024
        || port == messenger::PORT
        || port == socks::DEFAULT_PORT
        || port == vpn::DEFAULT_LEASE_PORT
        || socks
            .server()
            .is_some_and(|(options, _)| options.port == port)
        || socks
            .client()
            .is_some_and(|(options, _)| options.exit_port == port)
        || vpn_options
            .server
            .as_ref()
            .is_some_and(|server| server.port == port)
        || vpn_options
            .client
            .as_ref()
            .is_some_and(|client| client.port == port)
}
