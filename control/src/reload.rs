//! A reload of the configuration file (SIGHUP, `visctl reload`). The binary reads and checks the
//! file and compares it with the running configuration ([`ConfigSource`]); what the file asks of
//! the running node comes here as a [`Plan`]: the operations that apply it, the dataplane's
//! among them the very requests that `add_neighbour` and `rm_neighbour` send, and the keys
//! that only a restart can change. The control thread applies the plan and tells what it did
//! ([`Report`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use skywire_dataplane::api::{NeighbourReply, Request};

use crate::catalog::Catalog;

/// One step of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A request to the dataplane: a neighbour added, changed or removed, the liveness and
    /// route settings, or a built-in app's section.
    Dataplane(Request),
    /// The catalog that `start` launches from; launched apps run on.
    Catalog(Catalog),
    /// How much to log.
    LogLevel(log::LevelFilter),
    /// The groups whose members may use the control socket (`control.admin_group`,
    /// `control.socket_group`); connections made from then on are judged by them.
    Groups {
        /// `control.admin_group`.
        admin: Option<String>,
        /// `control.socket_group`.
        socket: Option<String>,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Dataplane(Request::AddNeighbour(neighbour)) => {
                write!(f, "add neighbour {}", neighbour.key)
            }
            Operation::Dataplane(Request::UpdateNeighbour(neighbour)) => {
                write!(f, "change neighbour {}", neighbour.key)
            }
            Operation::Dataplane(Request::RemoveNeighbour { key }) => {
                write!(f, "remove neighbour {key}")
            }
            Operation::Dataplane(Request::SetNodeSettings(_)) => {
                f.write_str("the liveness and route settings")
            }
            Operation::Dataplane(Request::ConfigureApp(config)) => {
                write!(f, "the new section of {}", config.app())
            }
            Operation::Dataplane(request) => write!(f, "{request:?}"),
            Operation::Catalog(catalog) => {
                write!(f, "the apps catalog: {} app(s)", catalog.len())
            }
            Operation::LogLevel(level) => {
                write!(f, "log level {}", level.as_str().to_lowercase())
            }
            Operation::Groups { admin, socket } => {
                let name = |group: &Option<String>| match group {
                    Some(group) => format!("`{group}`"),
                    None => "none".to_owned(),
                };
                write!(
                    f,
                    "control groups: admin_group {}, socket_group {} (for connections from now on)",
                    name(admin),
                    name(socket)
                )
            }
        }
    }
}

/// A key whose change only a restart puts in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its key path, like `listen` or `node.state_dir`.
    pub key: String,
    /// Why it cannot change while the node runs.
    pub why: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "restart to change {} ({})", self.key, self.why)
    }
}

/// What a changed configuration file asks of the running node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The operations that apply the change, in order.
    pub operations: Vec<Operation>,
    /// The keys that changed but only a restart can change.
    pub refused: Vec<Refusal>,
}

/// The configuration file of a running node, and the configuration it runs with.
pub trait ConfigSource: Send + fmt::Debug {
    /// The file.
    fn file(&self) -> &Path;

    /// Reads and checks the file again and compares it with the configuration the node runs
    /// with, which is then the file's, but for the refused keys. A file that cannot be read or
    /// checked is an error that says what is wrong, and the running configuration stays.
    fn reload(&mut self) -> Result<Plan, String>;

    /// A neighbour was added, changed or removed while the node runs (`add_neighbour`,
    /// `rm_neighbour`): the next reload compares the file with the node as it runs, and so
    /// undoes it unless the file says the same.
    fn neighbour_changed(&mut self, change: &NeighbourReply);
}

/// What a reload did: the reply's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The configuration file.
    pub file: PathBuf,
    /// What was changed, one line each.
    pub applied: Vec<String>,
    /// The keys that changed but need a restart: `restart to change KEY (why)`.
    pub refused: Vec<String>,
    /// What could not be changed, and why.
    pub failed: Vec<String>,
}

impl Report {
    /// An empty report of a reload of `file`.
    pub fn new(file: &Path) -> Report {
        Report {
            file: file.to_path_buf(),
            ..Report::default()
        }
    }

    /// Whether the node now runs as the file says.
    pub fn is_complete(&self) -> bool {
        self.refused.is_empty() && self.failed.is_empty()
    }

    /// The report for people, one item a line.
    pub fn text(&self) -> String {
        let file = self.file.display();
        let mut text = if self.applied.is_empty() && self.refused.is_empty() {
            format!("reloaded {file}: nothing to change")
        } else if self.applied.is_empty() {
            format!("reloaded {file}: nothing that can change while the node runs")
        } else {
            let mut text = format!("reloaded {file}:");
            for line in &self.applied {
                text.push_str("\n  ");
                text.push_str(line);
            }
            text
        };
        if !self.refused.is_empty() {
            text.push_str("\nnot changed until a restart:");
            for line in &self.refused {
                text.push_str("\n  ");
                text.push_str(line);
            }
        }
        if !self.failed.is_empty() {
            text.push_str("\nfailed:");
            for line in &self.failed {
                text.push_str("\n  ");
                text.push_str(line);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lists_what_was_done_refused_and_failed() {
        let mut report = Report::new(Path::new("/etc/skywire/config.yaml"));
        assert!(report.is_complete());
        assert_eq!(
            report.text(),
            "reloaded /etc/skywire/config.yaml: nothing to change"
        );
        report.applied.push("log level debug".to_owned());
        report.refused.push(
            Refusal {
                key: "listen".to_owned(),
                why: "the UDP socket is bound at the start",
            }
            .to_string(),
        );
        assert!(!report.is_complete());
        assert_eq!(
            report.text(),
            "reloaded /etc/skywire/config.yaml:\n  log level debug\n\
             not changed until a restart:\n  restart to change listen (the UDP socket is bound at the start)"
        );
    }
}
