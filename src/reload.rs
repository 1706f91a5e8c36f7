//! The configuration a running `skywired` was started with and has reloaded since: what SIGHUP
//! and `visctl reload` compare the config file with, changed by the neighbours added and
//! removed while it runs.

use std::path::Path;

use skywire_control::reload::{ConfigSource, Operation, Plan, Refusal};
use skywire_dataplane::api::{NeighbourChange, NeighbourReply};
use skywire_dataplane::NodeKey;

use crate::config::{diff, Config, Neighbour};

/// The running configuration, behind the control thread's reloads.
#[derive(Debug)]
pub struct RunningConfig {
    config: Config,
    /// The node's own key, which a new file must not name as a neighbour or VPN server.
    own: NodeKey,
    /// `RUST_LOG` set the log level, which `log_level` then cannot change.
    log_level_from_env: bool,
}

impl RunningConfig {
    /// The configuration `config` of the node with key `own`; `log_level_from_env` when
    /// `RUST_LOG` overrides `log_level`.
    pub fn new(config: Config, own: NodeKey, log_level_from_env: bool) -> RunningConfig {
        RunningConfig {
            config,
            own,
            log_level_from_env,
        }
    }

    /// The configuration the node runs with now.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ConfigSource for RunningConfig {
    fn file(&self) -> &Path {
        self.config.file()
    }

    fn reload(&mut self) -> Result<Plan, String> {
        let mut new = Config::load(self.config.file()).map_err(|error| error.to_string())?;
        new.check_against(&self.own)
            .map_err(|error| error.to_string())?;
        let mut plan = diff(&self.config, &new);
        if self.log_level_from_env {
            let before = plan.operations.len();
            plan.operations
                .retain(|operation| !matches!(operation, Operation::LogLevel(_)));
            if plan.operations.len() != before {
                plan.refused.push(Refusal {
                    key: "log_level".to_owned(),
                    why: "RUST_LOG overrides it: start skywired without RUST_LOG",
                });
            }
        }
        new.keep_restart_only_keys(&self.config);
        self.config = new;
        Ok(plan)
    }

    fn neighbour_changed(&mut self, change: &NeighbourReply) {
        let neighbours = &mut self.config.neighbours;
        neighbours.retain(|neighbour| neighbour.key != change.key);
        if change.change != NeighbourChange::Removed {
            neighbours.push(Neighbour {
                key: change.key,
                endpoint: change.endpoint,
                keepalive: change.keepalive,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use skywire_dataplane::api::Request;
    use skywire_dataplane::{NeighbourConfig, SecretKey};

    use super::*;

    /// A config file of its own, removed on drop.
    struct File(PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> File {
            let dir =
                std::env::temp_dir().join(format!("skywire-reload-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = File(dir.join("config.yaml"));
            file.write(text);
            file
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn running(file: &File, own: NodeKey, from_env: bool) -> RunningConfig {
        RunningConfig::new(Config::load(&file.0).unwrap(), own, from_env)
    }

    #[test]
    fn a_file_that_fails_its_checks_changes_nothing() {
        let own = SecretKey::generate().public();
        let file = File::new("invalid", "log_level: info\n");
        let mut config = running(&file, own, false);
        file.write("log_level: loud\n");
        let error = config.reload().unwrap_err();
        assert!(
            error.contains("`log_level`") && error.contains("line 1"),
            "{error}"
        );
        file.write(&format!("neighbours:\n  - key: {own}\n"));
        let error = config.reload().unwrap_err();
        assert!(error.contains("the node's own public key"), "{error}");
        let exit = SecretKey::generate().public();
        file.write(&format!(
            "socks:\n  client:\n    exit: {exit}\n    listen: \"0.0.0.0:1080\"\n"
        ));
        let error = config.reload().unwrap_err();
        assert!(
            error.contains("socks.client.listen") && error.contains("allow_remote_clients"),
            "{error}"
        );
        assert!(config.config().socks.client.is_none());
        assert_eq!(config.config().log_level, crate::config::LogLevel::Info);
        assert!(config.config().neighbours.is_empty());
        // The running configuration stayed: a good file is compared with it.
        file.write("log_level: debug\n");
        assert_eq!(
            config.reload().unwrap().operations,
            [Operation::LogLevel(log::LevelFilter::Debug)]
        );
        assert_eq!(config.reload().unwrap(), Plan::default());
    }

    #[test]
    fn a_reload_undoes_neighbours_changed_at_runtime() {
        let own = SecretKey::generate().public();
        let (listed, added) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let file = File::new("runtime", &format!("neighbours:\n  - key: {listed}\n"));
        let mut config = running(&file, own, false);
        let change = |key, change| NeighbourReply {
            key,
            change,
            endpoint: None,
            keepalive: None,
            routes_down: 0,
        };
        config.neighbour_changed(&change(added, NeighbourChange::Added));
        config.neighbour_changed(&change(listed, NeighbourChange::Removed));
        assert_eq!(
            config.reload().unwrap().operations,
            [
                Request::RemoveNeighbour { key: added },
                Request::AddNeighbour(NeighbourConfig {
                    key: listed,
                    endpoint: None,
                    keepalive: None
                }),
            ]
            .map(Operation::Dataplane)
        );
    }

    #[test]
    fn rust_log_keeps_the_log_level() {
        let own = SecretKey::generate().public();
        let file = File::new("rust-log", "log_level: info\n");
        let mut config = running(&file, own, true);
        file.write("log_level: trace\n");
        let plan = config.reload().unwrap();
        assert!(plan.operations.is_empty());
        assert_eq!(
            plan.refused[0].to_string(),
            "restart to change log_level (RUST_LOG overrides it: start skywired without RUST_LOG)"
        );
    }
}
