//! The VPN client's routes. What goes into the tunnel sits in a routing table of its own
//! ([`TABLE`]), consulted by a policy rule for every packet that does not carry the node's
//! firewall mark ([`FWMARK`], set on the node's UDP socket), so the transports' own datagrams
//! keep their underlay routes and the tunnel never swallows itself. A full tunnel (`0.0.0.0/0`,
//! `::/0`) also makes the main table's non-default routes win, as wg-quick does, so the local
//! network stays reachable.
//!
//! The undo commands are written to the state folder before anything is added: a daemon that
//! was killed leaves the file behind, and the next start runs them ([`clear_leftovers`]). The
//! routes themselves go with the TUN device.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pool::write_atomically;
use super::prefix::Prefix;
use super::tun::{ip, TunError, TunName};

/// The firewall mark of the node's own datagrams while a VPN client routes through the tunnel.
pub const FWMARK: u32 = 0x736b;
/// The routing table that holds the tunnel's routes.
pub const TABLE: u32 = 0x736b;
/// Priority of the rule that lets the main table's specific routes win in a full tunnel.
pub const SUPPRESS_PRIORITY: u32 = 29_540;
/// Priority of the rule that sends unmarked packets to [`TABLE`].
pub const TUNNEL_PRIORITY: u32 = 29_541;
/// The undo file's name in the state folder.
pub const UNDO_FILE: &str = "vpn-client-routes.yaml";

#[derive(Debug, Default, Serialize, Deserialize)]
struct UndoFile {
    /// `ip` argument lists that remove what was added.
    undo: Vec<Vec<String>>,
}

/// Routes and rules installed for a VPN client; removed on drop.
#[derive(Debug)]
pub struct ClientRoutes {
    file: PathBuf,
    undo: Vec<Vec<String>>,
}

/// Removes what a killed daemon left behind, as its undo file lists; returns how many
/// commands ran.
pub fn clear_leftovers(state_dir: &Path) -> usize {
    let file = state_dir.join(UNDO_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return 0;
    };
    let undo = parse_undo_file(&text);
    let count = undo.len();
    run_undo(&undo);
    if let Err(error) = std::fs::remove_file(&file) {
        log::warn!(
            "cannot remove {}: {error}; remove it by hand",
            file.display()
        );
    }
    if count > 0 {
        log::info!(
            "removed {count} VPN route(s) and rule(s) left by a daemon that did not stop cleanly"
        );
    }
    count
}

/// The text of an undo file that lists the `ip` argument lists `undo`.
pub(crate) fn format_undo_file(undo: &[Vec<String>]) -> Result<String, yaml_serde::Error> {
    yaml_serde::to_string(&UndoFile {
        undo: undo.to_vec(),
    })
}

/// The `ip` argument lists of an undo file's text; none when it is damaged.
pub(crate) fn parse_undo_file(text: &str) -> Vec<Vec<String>> {
    yaml_serde::from_str::<UndoFile>(text)
        .map(|file| file.undo)
        .unwrap_or_default()
}

fn run_undo(undo: &[Vec<String>]) {
    for args in undo.iter().rev() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Some are gone already (routes go with their device).
        let _ = ip(&args);
    }
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
        let table = TABLE.to_string();
        let mark = format!("{FWMARK:#x}");
        let mut add: Vec<Vec<String>> = Vec::new();
        let mut undo: Vec<Vec<String>> = Vec::new();
        let owned = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        for (family, wanted) in [("-4", ipv4), ("-6", ipv6)] {
            let chosen: Vec<&Prefix> = routes
                .iter()
                .filter(|prefix| prefix.is_ipv4() == (family == "-4"))
                .collect();
            if !wanted || chosen.is_empty() {
                continue;
            }
            for prefix in &chosen {
                let cidr = format!("{}/{}", prefix.network(), prefix.prefix_len());
                add.push(owned(&[
                    family,
                    "route",
                    "replace",
                    &cidr,
                    "dev",
                    tun.as_str(),
                    "table",
                    &table,
                ]));
                undo.push(owned(&[
                    family,
                    "route",
                    "del",
                    &cidr,
                    "dev",
                    tun.as_str(),
                    "table",
                    &table,
                ]));
            }
            if chosen.iter().any(|prefix| prefix.is_default()) {
                let priority = SUPPRESS_PRIORITY.to_string();
                let rule = [
                    family,
                    "rule",
                    "add",
                    "priority",
                    &priority,
                    "table",
                    "main",
                    "suppress_prefixlength",
                    "0",
                ];
                add.push(owned(&rule));
                let mut del = owned(&rule);
                del[2] = "del".to_owned();
                undo.push(del);
            }
            let priority = TUNNEL_PRIORITY.to_string();
            let rule = [
                family, "rule", "add", "priority", &priority, "not", "fwmark", &mark, "table",
                &table,
            ];
            add.push(owned(&rule));
            let mut del = owned(&rule);
            del[2] = "del".to_owned();
            undo.push(del);
        }
        let file = state_dir.join(UNDO_FILE);
        let text = format_undo_file(&undo).map_err(|error| TunError::Command {
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
        let routes = ClientRoutes { file, undo };
        for args in &add {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // On failure the drop removes what was added.
            ip(&args)?;
        }
        Ok(routes)
    }
}

impl Drop for ClientRoutes {
    fn drop(&mut self) {
        run_undo(&self.undo);
        if let Err(error) = std::fs::remove_file(&self.file) {
            log::warn!("cannot remove {}: {error}", self.file.display());
        }
    }
}
