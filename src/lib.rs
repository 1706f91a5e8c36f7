//! The `skywire` package's own library: what the `skywired` and `visctl` binaries share: the
//! configuration file, the node's identity on disk, the configuration a running node reloads,
//! and systemd's readiness protocol.

pub mod config;
pub mod notify;
pub mod reload;

pub use config::{Config, ConfigError};
