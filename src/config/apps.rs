//! The launched apps' part of the configuration: the `apps:` catalog (the seed's format and the
//! launcher's `capabilities` and `env`, checked by `skywire_control::catalog`), and the signal
//! server's port and the groups that may use the control socket in the `control` section.

use std::ops::RangeInclusive;

use skywire_control::catalog::{Catalog, CatalogError};

use super::locate::KeyPath;
use super::{Checker, ConfigError, Whole};

const SIGNAL_PORT: RangeInclusive<u64> = 0..=65_535;
/// Longest group name accepted (Linux tools allow 32 bytes).
const MAX_GROUP_LEN: usize = 32;

impl Checker<'_> {
    /// `control.signal_port`: the signal server's TCP port on 127.0.0.1, 0 for any free one.
    pub(super) fn signal_port(&self, raw: Option<Whole>) -> Result<u16, ConfigError> {
        let port = self.number(
            &KeyPath::top("control").key("signal_port"),
            raw,
            u64::from(skywire_control::signal::DEFAULT_PORT),
            SIGNAL_PORT,
            "(0 picks a free port)",
        )?;
        Ok(u16::try_from(port).unwrap_or(skywire_control::signal::DEFAULT_PORT))
    }

    /// `control.admin_group` or `control.socket_group` (`key`): a group name, whose existence is
    /// checked when the control thread starts.
    pub(super) fn group(
        &self,
        key: &str,
        raw: Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(group) = raw else {
            return Ok(None);
        };
        let well_formed = !group.is_empty()
            && group.len() <= MAX_GROUP_LEN
            && !group.starts_with('-')
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !well_formed {
            return Err(self.invalid(
                &KeyPath::top("control").key(key),
                format!(
                    "{group:?} is not a group name: give the name of an existing group (1 to {MAX_GROUP_LEN} letters, digits, `_`, `-` or `.`), or leave the key out"
                ),
            ));
        }
        Ok(Some(group))
    }

    /// `apps`: checks the names and paths that serde could not.
    pub(super) fn apps(&self, raw: Option<Catalog>) -> Result<Catalog, ConfigError> {
        let catalog = raw.unwrap_or_default();
        let section = KeyPath::top("apps");
        catalog.check().map_err(|err| match &err {
            CatalogError::Name(name) => self.invalid(
                &section.key(name),
                format!(
                    "{name:?} cannot name an app: use 1 to {} letters, digits, `-`, `_` or `.`",
                    skywire_control::catalog::MAX_NAME_LEN
                ),
            ),
            CatalogError::EmptyPath(name) => self.invalid(
                &section.key(name).key("path"),
                "is empty: give the program to run, relative to the config file's folder (with a `/`), absolute, or a bare name looked up in PATH".to_owned(),
            ),
            CatalogError::Env {
                app,
                variable,
                problem,
            } => self.invalid(
                &section.key(app).key("env").key(variable),
                format!("cannot be set: {problem}"),
            ),
            CatalogError::Parse(problem) => self.invalid(&section, problem.clone()),
        })?;
        Ok(catalog)
    }
}
