//! Entry points for the fuzz targets (`fuzz/`, `fuzzing/`) into what this crate keeps private:
//! the VPN client's undo file, which the driver reads when it starts. Pure: nothing is run or
//! written. Not part of the crate's API.

use crate::driver::routes;
pub use crate::driver::routes::{SUPPRESS_PRIORITY, TABLE, TUNNEL_PRIORITY};
use crate::vpn::{Prefix, TunName};

/// What a start makes of an undo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoFileReading {
    /// The `ip` argument lists run to remove the client's own entries, in the order run.
    pub removals: Vec<Vec<String>>,
    /// The entries left alone, described.
    pub left_alone: Vec<String>,
    /// The undo file a client writes for its own entries alone.
    pub own_text: String,
}

/// What a start of a VPN client whose TUN device is `device` (none when no client is
/// configured) makes of an undo file holding `text`; the error says why none of it is used.
pub fn vpn_undo_file(text: &str, device: Option<&TunName>) -> Result<UndoFileReading, String> {
    let leftovers = routes::parse_undo_file(text, device)?;
    let own_text = routes::format_undo_file(&leftovers.own).map_err(|error| error.to_string())?;
    Ok(UndoFileReading {
        removals: leftovers
            .own
            .iter()
            .rev()
            .map(|entry| entry.ip_args("del"))
            .collect(),
        left_alone: leftovers.ignored,
        own_text,
    })
}

/// The undo file a VPN client whose TUN device is `tun` writes before it sends `routes` through
/// it (with an IPv4 address when `ipv4`, an IPv6 one when `ipv6`), and the `ip` argument lists
/// it then runs.
pub fn vpn_undo_file_text(
    tun: &TunName,
    routes: &[Prefix],
    ipv4: bool,
    ipv6: bool,
) -> (String, Vec<Vec<String>>) {
    let installed = routes::plan(tun, routes, ipv4, ipv6);
    let text = routes::format_undo_file(&installed).unwrap_or_default();
    let adds = installed.iter().map(|entry| entry.ip_args("add")).collect();
    (text, adds)
}
