//! A client app's `path` (the SOCKS client's and the VPN client's): left out, the node chooses
//! the path and repairs the route; given, the route keeps to it; empty, refused, since leaving
//! the key out is how the path is left to the node.

use skywire_dataplane::NodeKey;

use super::locate::KeyPath;
use super::{Checker, ConfigError};

impl Checker<'_> {
    /// A client's given `path`: the nodes after this one, `end` (the exit or the server,
    /// `role`) last or left out.
    pub(super) fn explicit_path(
        &self,
        at: &KeyPath,
        texts: Vec<String>,
        end: &NodeKey,
        role: &str,
    ) -> Result<Vec<NodeKey>, ConfigError> {
        if texts.is_empty() {
            return Err(self.invalid(
                at,
                format!("is empty: remove the key for an automatic path (the node chooses it, and repairs the route over another when it breaks), or list the {role} alone for a direct route"),
            ));
        }
        let path = self.key_list(at, texts, "a node's public key")?;
        if let Some(index) = path.iter().position(|key| key == end) {
            if index + 1 != path.len() {
                return Err(self.invalid(
                    &at.index(index),
                    format!(
                        "the {role} must be the last node of the path (or left out: it is added)"
                    ),
                ));
            }
        }
        Ok(path)
    }
}
