//! The `skywire` package's own library: what the `skywired` and `visctl` binaries share, that
//! is the configuration file and the node's identity on disk.

pub mod config;

pub use config::{Config, ConfigError};
