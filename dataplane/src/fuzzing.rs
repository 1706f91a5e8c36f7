//! Entry points for the fuzz targets (`fuzz/`, `fuzzing/`) into what this crate keeps private:
//! the files the VPN apps read when they start. Not part of the crate's API.

use std::path::PathBuf;

use crate::identity::NodeKey;
use crate::vpn::pool::{Lease, Pool, PoolError, LEASE_FILE};
use crate::vpn::{routes, Prefix};

/// The leases a VPN server with pools `pool4` and `pool6` takes from a lease file holding
/// `text`, as it does when it starts.
pub fn vpn_lease_file(
    pool4: Option<Prefix>,
    pool6: Option<Prefix>,
    text: &str,
) -> Result<Vec<(NodeKey, Lease)>, PoolError> {
    let mut pool = Pool::empty(pool4, pool6, PathBuf::from(LEASE_FILE))?;
    pool.load(text)?;
    Ok(pool.leases().map(|(key, lease)| (*key, *lease)).collect())
}

/// The `ip` argument lists a VPN client's start runs from an undo file holding `text`.
pub fn vpn_undo_file(text: &str) -> Vec<Vec<String>> {
    routes::parse_undo_file(text)
}

/// The text of an undo file listing `undo`, as a VPN client writes it.
pub fn vpn_undo_file_text(undo: &[Vec<String>]) -> String {
    routes::format_undo_file(undo).unwrap_or_default()
}
