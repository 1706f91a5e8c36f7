//! What a changed configuration file asks of a running node: the configuration it runs with
//! and the file's new one compared, as the operations that apply the change (the dataplane's
//! are the requests that `visctl add_neighbour` and `rm_neighbour` send too) and the keys that
//! only a restart can change. Pure: nothing is read or changed here.

use skywire_control::reload::{Operation, Plan, Refusal};
use skywire_dataplane::api::{AppConfig, Request};
use skywire_dataplane::node::NodeSettings;
use skywire_dataplane::NeighbourConfig;

use super::{Config, Neighbour};

/// The operations that make a node running with `old` run as `new` says, and the keys that
/// changed but only a restart can change (the rest of the change applies all the same).
pub fn diff(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan {
        operations: Vec::new(),
        refused: restart_only_changes(old, new),
    };
    let operations = &mut plan.operations;
    if old.log_level != new.log_level {
        operations.push(Operation::LogLevel(new.log_level.into()));
    }
    if (&old.admin_group, &old.socket_group) != (&new.admin_group, &new.socket_group) {
        operations.push(Operation::Groups {
            admin: new.admin_group.clone(),
            socket: new.socket_group.clone(),
        });
    }
    operations
        .extend(neighbour_changes(&old.neighbours, &new.neighbours).map(Operation::Dataplane));
    if old.node_settings() != new.node_settings() {
        operations.push(Operation::Dataplane(Request::SetNodeSettings(
            new.node_settings(),
        )));
    }
    let apps = [
        (
            old.socks.client != new.socks.client,
            AppConfig::SocksClient(new.socks.client.clone()),
        ),
        (
            old.socks.server != new.socks.server,
            AppConfig::SocksServer(new.socks.server.clone()),
        ),
        (
            old.vpn.client != new.vpn.client,
            AppConfig::VpnClient(new.vpn.client.clone()),
        ),
        (
            old.vpn.server != new.vpn.server,
            AppConfig::VpnServer(new.vpn.server.clone()),
        ),
    ];
    for (changed, config) in apps {
        if changed {
            operations.push(Operation::Dataplane(Request::ConfigureApp(Box::new(
                config,
            ))));
        }
    }
    if old.apps != new.apps {
        operations.push(Operation::Catalog(new.apps.clone()));
    }
    plan
}

/// The keys that only a restart changes, each with the reason and whether it differs.
fn restart_only(old: &Config, new: &Config) -> [(&'static str, &'static str, bool); 5] {
    [
        (
            "listen",
            "the UDP socket is bound once, at the start",
            old.listen != new.listen,
        ),
        (
            "node.key_file",
            "the key is the node's identity, read at the start",
            old.key_file != new.key_file,
        ),
        (
            "node.state_dir",
            "the key and the VPN's state are kept there from the start",
            old.state_dir != new.state_dir,
        ),
        (
            "control.socket",
            "the control socket is bound once, at the start",
            old.control_socket != new.control_socket,
        ),
        (
            "control.signal_port",
            "launched apps were given the signal server's port when they started",
            old.signal_port != new.signal_port,
        ),
    ]
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<Refusal> {
    restart_only(old, new)
        .into_iter()
        .filter(|(_, _, changed)| *changed)
        .map(|(key, why, _)| Refusal {
            key: key.to_owned(),
            why,
        })
        .collect()
}

impl Config {
    /// Takes `running`'s values of the keys that only a restart changes: what a running node
    /// still runs with after a reload.
    pub fn keep_restart_only_keys(&mut self, running: &Config) {
        self.listen = running.listen;
        self.key_file.clone_from(&running.key_file);
        self.state_dir.clone_from(&running.state_dir);
        self.control_socket.clone_from(&running.control_socket);
        self.signal_port = running.signal_port;
        debug_assert!(restart_only(running, self)
            .iter()
            .all(|(_, _, changed)| !changed));
    }

    /// The liveness and route settings.
    pub fn node_settings(&self) -> NodeSettings {
        NodeSettings {
            probe_interval: self.liveness.probe_interval,
            dead_after: self.liveness.dead_after,
            max_routes_per_neighbour: usize::try_from(self.routes.max_per_neighbour)
                .unwrap_or(usize::MAX),
            rule_lifetime: self.routes.rule_lifetime,
            refresh_interval: self.routes.refresh_interval,
        }
    }
}

impl From<&Neighbour> for NeighbourConfig {
    fn from(neighbour: &Neighbour) -> NeighbourConfig {
        NeighbourConfig {
            key: neighbour.key,
            endpoint: neighbour.endpoint,
            keepalive: neighbour.keepalive,
        }
    }
}

/// The neighbours that went (removed first, freeing their transports), changed their endpoint
/// or keepalive, and came.
fn neighbour_changes<'a>(
    old: &'a [Neighbour],
    new: &'a [Neighbour],
) -> impl Iterator<Item = Request> + 'a {
    let find = |list: &'a [Neighbour], neighbour: &Neighbour| {
        list.iter().find(|other| other.key == neighbour.key)
    };
    let removed = old
        .iter()
        .filter(move |neighbour| find(new, neighbour).is_none())
        .map(|neighbour| Request::RemoveNeighbour { key: neighbour.key });
    let changed = new
        .iter()
        .filter(move |neighbour| find(old, neighbour).is_some_and(|before| before != *neighbour))
        .map(|neighbour| Request::UpdateNeighbour(neighbour.into()));
    let added = new
        .iter()
        .filter(move |neighbour| find(old, neighbour).is_none())
        .map(|neighbour| Request::AddNeighbour(neighbour.into()));
    removed.chain(changed).chain(added)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use skywire_dataplane::api::socks::SocksApp;
    use skywire_dataplane::api::BuiltinApp;
    use skywire_dataplane::{NodeKey, SecretKey};

    use super::*;
    use crate::config::LogLevel;

    fn key(seed: u8) -> NodeKey {
        SecretKey::from([seed; 32]).public()
    }

    fn config(text: &str) -> Config {
        Config::from_yaml(text, Path::new("/etc/skywire/config.yaml")).unwrap()
    }

    fn neighbour(seed: u8, endpoint: Option<&str>, keepalive: Option<u16>) -> NeighbourConfig {
        NeighbourConfig {
            key: key(seed),
            endpoint: endpoint.map(|text| text.parse().unwrap()),
            keepalive,
        }
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = format!(
            "listen: \"[::]:7777\"\nneighbours:\n  - {{key: {}, endpoint: \"192.0.2.1:7777\"}}\n\
             socks:\n  server: {{allow: [{}]}}\napps:\n  example: {{path: /bin/true}}\n",
            key(1),
            key(2)
        );
        assert_eq!(diff(&config(&text), &config(&text)), Plan::default());
    }

    #[test]
    fn neighbours_go_change_and_come_through_the_neighbour_requests() {
        let old = config(&format!(
            "neighbours:\n  - {{key: {}, endpoint: \"192.0.2.1:7777\"}}\n  - {{key: {}}}\n  - {{key: {}, keepalive: 25}}\n",
            key(1),
            key(2),
            key(3)
        ));
        let new = config(&format!(
            "neighbours:\n  - {{key: {}, endpoint: \"192.0.2.9:7777\"}}\n  - {{key: {}, keepalive: 25}}\n  - {{key: {}, endpoint: \"[2001:db8::4]:7777\"}}\n",
            key(1),
            key(3),
            key(4)
        ));
        let plan = diff(&old, &new);
        assert_eq!(
            plan.operations,
            [
                Request::RemoveNeighbour { key: key(2) },
                Request::UpdateNeighbour(neighbour(1, Some("192.0.2.9:7777"), None)),
                Request::AddNeighbour(neighbour(4, Some("[2001:db8::4]:7777"), None)),
            ]
            .map(Operation::Dataplane)
        );
        assert!(plan.refused.is_empty());
        let keepalive = config(&format!(
            "neighbours:\n  - {{key: {}, endpoint: \"192.0.2.1:7777\", keepalive: 10}}\n  - {{key: {}}}\n  - {{key: {}, keepalive: 25}}\n",
            key(1),
            key(2),
            key(3)
        ));
        assert_eq!(
            diff(&old, &keepalive).operations,
            [Operation::Dataplane(Request::UpdateNeighbour(neighbour(
                1,
                Some("192.0.2.1:7777"),
                Some(10)
            )))]
        );
    }

    #[test]
    fn keys_a_running_node_cannot_change_are_refused_and_the_rest_applies() {
        let old = config("listen: \"[::]:7777\"\n");
        let new = config(
            "listen: \"[::]:7778\"\nnode:\n  key_file: other.key\n  state_dir: /var/lib/other\n\
             control:\n  socket: /run/other.sock\n  signal_port: 8000\nlog_level: debug\n",
        );
        let plan = diff(&old, &new);
        let refused: Vec<&str> = plan.refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            refused,
            [
                "listen",
                "node.key_file",
                "node.state_dir",
                "control.socket",
                "control.signal_port"
            ]
        );
        assert_eq!(
            plan.refused[0].to_string(),
            "restart to change listen (the UDP socket is bound once, at the start)"
        );
        assert_eq!(
            plan.operations,
            [Operation::LogLevel(log::LevelFilter::Debug)]
        );

        // What the node runs with after the reload: the file's, but for those keys.
        let mut running = new.clone();
        running.keep_restart_only_keys(&old);
        assert_eq!(running.listen, old.listen);
        assert_eq!(running.key_file(), old.key_file());
        assert_eq!(running.state_dir(), old.state_dir());
        assert_eq!(running.control_socket(), old.control_socket());
        assert_eq!(running.signal_port, old.signal_port);
        assert_eq!(running.log_level, LogLevel::Debug);
        assert!(diff(&running, &new).operations.is_empty());
        assert_eq!(diff(&running, &new).refused.len(), 5, "refused again");
    }

    #[test]
    fn settings_groups_and_the_catalog_are_operations() {
        let old = config("apps:\n  a: {path: /bin/true}\n");
        let new = config(
            "liveness: {probe_interval_ms: 500, dead_after_ms: 2000}\n\
             routes: {max_per_neighbour: 10}\n\
             control: {admin_group: wheel}\n\
             apps:\n  a: {path: /bin/true}\n  b: {path: /bin/false}\n",
        );
        let plan = diff(&old, &new);
        assert_eq!(
            plan.operations,
            [
                Operation::Groups {
                    admin: Some("wheel".to_owned()),
                    socket: None
                },
                Operation::Dataplane(Request::SetNodeSettings(NodeSettings {
                    probe_interval: Duration::from_millis(500),
                    dead_after: Duration::from_millis(2000),
                    max_routes_per_neighbour: 10,
                    rule_lifetime: Duration::from_secs(30),
                    refresh_interval: Duration::from_secs(10),
                })),
                Operation::Catalog(new.apps.clone()),
            ]
        );

        // A section left out: its defaults again.
        let plan = diff(&new, &old);
        assert!(
            plan.operations
                .contains(&Operation::Dataplane(Request::SetNodeSettings(
                    NodeSettings {
                        probe_interval: Duration::from_millis(250),
                        dead_after: Duration::from_millis(750),
                        max_routes_per_neighbour: 1024,
                        rule_lifetime: Duration::from_secs(30),
                        refresh_interval: Duration::from_secs(10),
                    }
                ))),
            "{:?}",
            plan.operations
        );
    }

    #[test]
    fn only_the_app_sections_that_changed_are_sent() {
        let vpn = format!(
            "vpn:\n  server: {{enabled: true, allow: [{}]}}\n  client: {{server: {}}}\n",
            key(1),
            key(2)
        );
        let old = config(&format!(
            "{vpn}socks:\n  client: {{exit: {}}}\n  server: {{port: 1080}}\n",
            key(3)
        ));
        let new = config(&format!(
            "{vpn}socks:\n  client: {{exit: {}, listen: \"127.0.0.1:1081\"}}\n",
            key(3)
        ));
        let plan = diff(&old, &new);
        let apps: Vec<(BuiltinApp, bool)> = plan
            .operations
            .iter()
            .map(|operation| match operation {
                Operation::Dataplane(Request::ConfigureApp(config)) => {
                    let configured = !matches!(
                        **config,
                        AppConfig::SocksServer(None)
                            | AppConfig::SocksClient(None)
                            | AppConfig::VpnClient(None)
                            | AppConfig::VpnServer(None)
                    );
                    (config.app(), configured)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            apps,
            [
                (BuiltinApp::Socks(SocksApp::Client), true),
                (BuiltinApp::Socks(SocksApp::Server), false),
            ]
        );
        let Operation::Dataplane(Request::ConfigureApp(client)) = &plan.operations[0] else {
            unreachable!()
        };
        let AppConfig::SocksClient(Some(client)) = &**client else {
            panic!("{client:?}")
        };
        assert_eq!(client.listen, "127.0.0.1:1081".parse().unwrap());
    }
}
