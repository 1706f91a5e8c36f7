//! The VPN client's routes, installed and removed on the host thread. What goes into the
//! tunnel sits in a routing table of its own ([`TABLE`]), consulted by a policy rule for every
//! packet that does not carry the node's firewall mark (`FWMARK`, set on the node's UDP
//! socket), so the transports' own datagrams keep their underlay routes and the tunnel never
//! swallows itself. A full tunnel (`0.0.0.0/0`, `::/0`) also makes the main table's non-default
//! routes win, as wg-quick does, so the local network stays reachable.
//!
//! What is added is written to the state folder first ([`UNDO_FILE`]), as data: each route's
//! prefix, device and table, each rule's family, priority and table. A daemon that was killed
//! leaves the file behind, and the next start removes what it lists that is the client's own
//! — routes through the client's own TUN device in [`TABLE`], and the client's two rules — and
//! nothing else ([`clear_leftovers`]); no part of the file is ever run. The routes themselves
//! go with the TUN device.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host::{ip, write_atomically};
use crate::vpn::{Prefix, TunError, TunName, FWMARK};

/// The routing table that holds the tunnel's routes.
pub const TABLE: u32 = 0x736b;
/// The main routing table's number.
const MAIN_TABLE: u32 = 254;
/// Priority of the rule that lets the main table's specific routes win in a full tunnel.
pub const SUPPRESS_PRIORITY: u32 = 29_540;
/// Priority of the rule that sends unmarked packets to [`TABLE`].
pub const TUNNEL_PRIORITY: u32 = 29_541;
/// The undo file's name in the state folder.
pub const UNDO_FILE: &str = "vpn-client-routes.yaml";
/// The undo file's format: version 1 listed `ip` commands, which are never run.
const UNDO_FILE_VERSION: u32 = 2;
/// Most bytes of an undo file read (a client lists a few dozen entries).
const MAX_UNDO_FILE: u64 = 1 << 20;

/// The undo file as written: data only.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoFile {
    version: u32,
    #[serde(default)]
    routes: Vec<RouteRecord>,
    #[serde(default)]
    rules: Vec<RuleRecord>,
}

/// A route as the undo file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRecord {
    prefix: String,
    device: String,
    table: u32,
}

/// A policy rule as the undo file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRecord {
    family: Family,
    priority: u32,
    table: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn of(prefix: &Prefix) -> Family {
        if prefix.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Family::Ipv4 => "-4",
            Family::Ipv6 => "-6",
        }
    }
}

/// Something the VPN client added to the host's routing. Only the client's own can be told:
/// a route through its device in [`TABLE`], or one of its two rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installed {
    /// A route to `prefix` through `device`, in [`TABLE`].
    Route { prefix: Prefix, device: TunName },
    /// The rule that sends a family's unmarked packets to [`TABLE`].
    TunnelRule(Family),
    /// The rule that lets the main table's specific routes win, in a full tunnel.
    SuppressRule(Family),
}

impl Installed {
    /// The `ip` arguments that add it (`add`) or remove it (`del`).
    pub(crate) fn ip_args(&self, verb: &str) -> Vec<String> {
        let owned = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let table = TABLE.to_string();
        // `replace`, so that a route left in place does not fail the add.
        let route_verb = if verb == "add" { "replace" } else { verb };
        match self {
            Installed::Route { prefix, device } => {
                let cidr = format!("{}/{}", prefix.network(), prefix.prefix_len());
                owned(&[
                    Family::of(prefix).flag(),
                    "route",
                    route_verb,
                    &cidr,
                    "dev",
                    device.as_str(),
                    "table",
                    &table,
                ])
            }
            Installed::TunnelRule(family) => owned(&[
                family.flag(),
                "rule",
                verb,
                "priority",
                &TUNNEL_PRIORITY.to_string(),
                "not",
                "fwmark",
                &format!("{FWMARK:#x}"),
                "table",
                &table,
            ]),
            Installed::SuppressRule(family) => owned(&[
                family.flag(),
                "rule",
                verb,
                "priority",
                &SUPPRESS_PRIORITY.to_string(),
                "table",
                "main",
                "suppress_prefixlength",
                "0",
            ]),
        }
    }

    fn remove(&self) {
        let args = self.ip_args("del");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Some are gone already (routes go with their device).
        let _ = ip(&args);
    }
}

/// What an undo file lists: the client's own entries, and why each other one is left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// The client's own entries, as the file lists them.
    pub(crate) own: Vec<Installed>,
    /// Each other entry, described.
    pub(crate) ignored: Vec<String>,
}

/// Reads an undo file's text for a client whose TUN device is `device` (none when no client
/// is configured: then only its rules are its own). Pure: nothing is run.
pub(crate) fn parse_undo_file(text: &str, device: Option<&TunName>) -> Result<Leftovers, String> {
    let file: UndoFile = yaml_serde::from_str(text).map_err(|error| {
        format!("not an undo file of this version ({error}); it lists no command that is run")
    })?;
    if file.version != UNDO_FILE_VERSION {
        return Err(format!(
            "version {} where {UNDO_FILE_VERSION} was expected",
            file.version
        ));
    }
    let mut leftovers = Leftovers::default();
    for route in file.routes {
        let prefix = route.prefix.parse::<Prefix>().ok();
        let own = device.filter(|own| own.as_str() == route.device);
        match (prefix, own) {
            (Some(prefix), Some(own)) if route.table == TABLE => {
                leftovers.own.push(Installed::Route {
                    prefix,
                    device: own.clone(),
                })
            }
            _ => leftovers.ignored.push(format!(
                "route {:?} dev {:?} table {}",
                route.prefix, route.device, route.table
            )),
        }
    }
    for rule in file.rules {
        match (rule.priority, rule.table) {
            (TUNNEL_PRIORITY, TABLE) => leftovers.own.push(Installed::TunnelRule(rule.family)),
            (SUPPRESS_PRIORITY, MAIN_TABLE) => {
                leftovers.own.push(Installed::SuppressRule(rule.family))
            }
            _ => leftovers.ignored.push(format!(
                "rule priority {} table {}",
                rule.priority, rule.table
            )),
        }
    }
    Ok(leftovers)
}

/// The undo file's text for `installed`.
pub(crate) fn format_undo_file(installed: &[Installed]) -> Result<String, yaml_serde::Error> {
    let mut file = UndoFile {
        version: UNDO_FILE_VERSION,
        ..UndoFile::default()
    };
    for entry in installed {
        match entry {
            Installed::Route { prefix, device } => file.routes.push(RouteRecord {
                prefix: prefix.to_string(),
                device: device.as_str().to_owned(),
                table: TABLE,
            }),
            Installed::TunnelRule(family) => file.rules.push(RuleRecord {
                family: *family,
                priority: TUNNEL_PRIORITY,
                table: TABLE,
            }),
            Installed::SuppressRule(family) => file.rules.push(RuleRecord {
                family: *family,
                priority: SUPPRESS_PRIORITY,
                table: MAIN_TABLE,
            }),
        }
    }
    yaml_serde::to_string(&file)
}

/// What a client whose TUN device is `tun` installs to send `routes` through it, in order:
/// the routes of each family it has an address for, then that family's rules.
pub(crate) fn plan(tun: &TunName, routes: &[Prefix], ipv4: bool, ipv6: bool) -> Vec<Installed> {
    let mut installed = Vec::new();
    for (family, wanted) in [(Family::Ipv4, ipv4), (Family::Ipv6, ipv6)] {
        let chosen: Vec<&Prefix> = routes
            .iter()
            .filter(|prefix| Family::of(prefix) == family)
            .collect();
        if !wanted || chosen.is_empty() {
            continue;
        }
        for prefix in &chosen {
            installed.push(Installed::Route {
                prefix: **prefix,
                device: tun.clone(),
            });
        }
        if chosen.iter().any(|prefix| prefix.is_default()) {
            installed.push(Installed::SuppressRule(family));
        }
        installed.push(Installed::TunnelRule(family));
    }
    installed
}

/// Routes and rules installed for a VPN client; removed on drop.
#[derive(Debug)]
pub struct ClientRoutes {
    file: PathBuf,
    installed: Vec<Installed>,
}

/// Removes what a killed daemon's VPN client left behind, as its undo file in `state_dir`
/// lists it: only the client's own entries (`device` is its TUN device, when one is
/// configured), never anything else, and no part of the file is run. Returns how many were
/// removed.
pub fn clear_leftovers(state_dir: &Path, device: Option<&TunName>) -> usize {
    let file = state_dir.join(UNDO_FILE);
    let text = match read_undo_file(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return 0,
        Err(error) => {
            log::warn!("cannot read {}: {error}; remove it by hand", file.display());
            return 0;
        }
    };
    let leftovers = match parse_undo_file(&text, device) {
        Ok(leftovers) => leftovers,
        Err(problem) => {
            log::warn!(
                "{}: {problem}: nothing of it was removed; check `ip rule` for rules of priority {SUPPRESS_PRIORITY} and {TUNNEL_PRIORITY}",
                file.display()
            );
            Leftovers::default()
        }
    };
    for ignored in &leftovers.ignored {
        log::warn!(
            "{}: left alone: {ignored} is not the VPN client's own (its device {}, table {TABLE}, its rules' priorities {SUPPRESS_PRIORITY} and {TUNNEL_PRIORITY})",
            file.display(),
            device.map_or("(none configured)", TunName::as_str)
        );
    }
    for installed in leftovers.own.iter().rev() {
        installed.remove();
    }
    if let Err(error) = std::fs::remove_file(&file) {
        log::warn!(
            "cannot remove {}: {error}; remove it by hand",
            file.display()
        );
    }
    let count = leftovers.own.len();
    if count > 0 {
        log::info!(
            "removed {count} VPN route(s) and rule(s) left by a daemon that did not stop cleanly"
        );
    }
    count
}

/// The undo file's text, at most [`MAX_UNDO_FILE`] bytes; `None` when there is none.
fn read_undo_file(file: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let handle = match std::fs::File::open(file) {
        Ok(handle) => handle,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut text = String::new();
    handle.take(MAX_UNDO_FILE).read_to_string(&mut text)?;
    Ok(Some(text))
}

impl ClientRoutes {
    /// Sends `routes` through `tun`, keeping marked packets on the underlay. Prefixes of a
    /// family the tunnel has no address for are skipped.
    pub fn install(
        state_dir: &Path,
        tun: &TunName,
        routes: &[Prefix],
        ipv4: bool,
        ipv6: bool,
    ) -> Result<ClientRoutes, TunError> {
        let installed = plan(tun, routes, ipv4, ipv6);
        let file = state_dir.join(UNDO_FILE);
        let text = format_undo_file(&installed).map_err(|error| TunError::Command {
            args: "(none run)".to_owned(),
            problem: format!("cannot record the VPN routes: {error}"),
        })?;
        write_atomically(&file, text.as_bytes()).map_err(|error| TunError::Command {
            args: "(none run)".to_owned(),
            problem: format!(
                "cannot write {}: {error}; the state folder must be writable",
                file.display()
            ),
        })?;
        let mut routes = ClientRoutes {
            file,
            installed: Vec::with_capacity(installed.len()),
        };
        for entry in installed {
            let args = entry.ip_args("add");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // On failure the drop removes what was added.
            ip(&args)?;
            routes.installed.push(entry);
        }
        Ok(routes)
    }
}

impl Drop for ClientRoutes {
    fn drop(&mut self) {
        for installed in self.installed.iter().rev() {
            installed.remove();
        }
        if let Err(error) = std::fs::remove_file(&self.file) {
            log::warn!("cannot remove {}: {error}", self.file.display());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name(text: &str) -> TunName {
        text.parse().unwrap()
    }

    #[test]
    fn what_a_client_writes_it_reads_back_as_its_own() {
        let installed = vec![
            Installed::Route {
                prefix: "0.0.0.0/0".parse().unwrap(),
                device: name("skyvpn0"),
            },
            Installed::SuppressRule(Family::Ipv4),
            Installed::TunnelRule(Family::Ipv4),
            Installed::Route {
                prefix: "fd99::/64".parse().unwrap(),
                device: name("skyvpn0"),
            },
            Installed::TunnelRule(Family::Ipv6),
        ];
        let text = format_undo_file(&installed).unwrap();
        assert!(text.contains("version: 2"), "{text}");
        let leftovers = parse_undo_file(&text, Some(&name("skyvpn0"))).unwrap();
        assert!(leftovers.ignored.is_empty(), "{leftovers:?}");
        // The routes first, as the file lists them, then the rules.
        assert_eq!(leftovers.own.len(), installed.len());
        for entry in &installed {
            assert!(leftovers.own.contains(entry), "{entry:?}");
        }
        assert_eq!(
            installed[0].ip_args("del").join(" "),
            "-4 route del 0.0.0.0/0 dev skyvpn0 table 29547"
        );
        assert_eq!(
            installed[1].ip_args("del").join(" "),
            "-4 rule del priority 29540 table main suppress_prefixlength 0"
        );
        assert_eq!(
            installed[4].ip_args("add").join(" "),
            "-6 rule add priority 29541 not fwmark 0x736b table 29547"
        );
    }

    #[test]
    fn entries_that_are_not_the_clients_own_are_left_alone() {
        let text = "version: 2\nroutes:\n\
            - {prefix: 10.20.0.0/16, device: skyvpn0, table: 29547}\n\
            - {prefix: 10.20.0.0/16, device: eth0, table: 29547}\n\
            - {prefix: 10.20.0.0/16, device: skyvpn0, table: 254}\n\
            - {prefix: \"10.0.0.0/8; reboot\", device: skyvpn0, table: 29547}\n\
            - {prefix: 10.30.0.0/16, device: \"$(touch /tmp/pwned)\", table: 29547}\n\
            rules:\n\
            - {family: ipv4, priority: 29541, table: 29547}\n\
            - {family: ipv4, priority: 100, table: 29547}\n\
            - {family: ipv6, priority: 29541, table: 254}\n\
            - {family: ipv4, priority: 29540, table: 254}\n";
        let leftovers = parse_undo_file(text, Some(&name("skyvpn0"))).unwrap();
        assert_eq!(
            leftovers.own,
            [
                Installed::Route {
                    prefix: "10.20.0.0/16".parse().unwrap(),
                    device: name("skyvpn0")
                },
                Installed::TunnelRule(Family::Ipv4),
                Installed::SuppressRule(Family::Ipv4),
            ]
        );
        assert_eq!(leftovers.ignored.len(), 6, "{:?}", leftovers.ignored);
        // Without a client configured, no route is its own.
        let leftovers = parse_undo_file(text, None).unwrap();
        assert_eq!(leftovers.own.len(), 2);
    }

    #[test]
    fn commands_of_the_old_format_and_unknown_fields_are_never_read_as_entries() {
        let old = "undo:\n- [-4, rule, del, priority, '100', table, main]\n- [link, del, eth0]\n";
        assert!(parse_undo_file(old, Some(&name("skyvpn0"))).is_err());
        let extra = "version: 2\nroutes:\n- {prefix: 10.0.0.0/8, device: skyvpn0, table: 29547, run: reboot}\n";
        assert!(parse_undo_file(extra, Some(&name("skyvpn0"))).is_err());
        let other_version = "version: 3\n";
        assert!(parse_undo_file(other_version, None)
            .unwrap_err()
            .contains("version 3"));
    }
}
