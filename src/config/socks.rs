//! The `socks` section: the SOCKS client app (entry node) and server app (exit node), checked
//! into the dataplane's options. A section that is present configures its app; `enabled`
//! (default true) says whether it starts with the node or only with `visctl socks start`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;
use skywire_dataplane::socks::{ClientOptions, DialPolicy, ServerOptions, SocksOptions};
use skywire_dataplane::vpn::Prefix;
use skywire_dataplane::NodeKey;

use super::locate::KeyPath;
use super::{millis, Checker, ConfigError, Whole};

const TIMEOUT_MS: RangeInclusive<u64> = 100..=600_000;
const IDLE_TIMEOUT_MS: RangeInclusive<u64> = 1_000..=86_400_000;
const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=1_024;
const PORT: RangeInclusive<u64> = 1..=65_535;
/// Nodes after this one in a route's path (the path holds at most 16, this node included).
const MAX_PATH: usize = 15;

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with client and server"
)]
pub(super) struct RawSocks {
    client: Option<RawClient>,
    server: Option<RawServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, listen, allow_remote_clients, exit, exit_port, path, handshake_timeout_ms, connect_timeout_ms, idle_timeout_ms and max_connections"
)]
struct RawClient {
    enabled: Option<bool>,
    listen: Option<String>,
    allow_remote_clients: Option<bool>,
    exit: Option<String>,
    exit_port: Option<Whole>,
    path: Option<Vec<String>>,
    handshake_timeout_ms: Option<Whole>,
    connect_timeout_ms: Option<Whole>,
    idle_timeout_ms: Option<Whole>,
    max_connections: Option<Whole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, port, allow, deny, allow_private, allow_targets, dial_timeout_ms, idle_timeout_ms, max_connections and max_connections_per_key"
)]
struct RawServer {
    enabled: Option<bool>,
    port: Option<Whole>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    allow_private: Option<bool>,
    allow_targets: Option<Vec<String>>,
    dial_timeout_ms: Option<Whole>,
    idle_timeout_ms: Option<Whole>,
    max_connections: Option<Whole>,
    max_connections_per_key: Option<Whole>,
}

/// Whether only this host can reach `listen` (an IPv4-mapped loopback counts).
fn is_loopback(listen: SocketAddr) -> bool {
    listen.ip().to_canonical().is_loopback()
}

impl Checker<'_> {
    pub(super) fn socks(&self, raw: RawSocks) -> Result<SocksOptions, ConfigError> {
        let section = KeyPath::top("socks");
        Ok(SocksOptions {
            client: raw
                .client
                .map(|client| self.socks_client(&section.key("client"), client))
                .transpose()?,
            server: raw
                .server
                .map(|server| self.socks_server(&section.key("server"), server))
                .transpose()?,
        })
    }

    fn node_key(&self, at: &KeyPath, text: &str, what: &str) -> Result<NodeKey, ConfigError> {
        text.parse().map_err(|err| {
            self.invalid(
                at,
                format!("{err}; give {what} (its `skywired pubkey` output)"),
            )
        })
    }

    /// A list of distinct keys.
    pub(super) fn key_list(
        &self,
        at: &KeyPath,
        texts: Vec<String>,
        what: &str,
    ) -> Result<Vec<NodeKey>, ConfigError> {
        let mut keys: Vec<NodeKey> = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let key = self.node_key(&at.index(index), text, what)?;
            if let Some(first) = keys.iter().position(|other| *other == key) {
                return Err(self.invalid(
                    &at.index(index),
                    format!(
                        "the key {key} is listed already, at index {first}: list each node once"
                    ),
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    pub(super) fn millis_or(
        &self,
        at: &KeyPath,
        value: Option<Whole>,
        default: Duration,
        allowed: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number(at, value, millis(default), allowed, "milliseconds")
            .map(Duration::from_millis)
    }

    fn socks_client(&self, at: &KeyPath, raw: RawClient) -> Result<ClientOptions, ConfigError> {
        let Some(exit) = raw.exit else {
            return Err(self.invalid(
                &at.key("exit"),
                "is missing: give the exit node's public key (its `skywired pubkey` output)"
                    .to_owned(),
            ));
        };
        let exit = self.node_key(&at.key("exit"), &exit, "the exit node's public key")?;
        let mut options = ClientOptions::new(exit);
        options.enabled = raw.enabled.unwrap_or(true);
        if let Some(text) = &raw.listen {
            options.listen = text.trim().parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    &at.key("listen"),
                    format!(
                        "{text:?} is not an IP address and port: write \"127.0.0.1:1080\" (this host only), \"[::1]:1080\" or similar"
                    ),
                )
            })?;
        }
        if !is_loopback(options.listen) && raw.allow_remote_clients != Some(true) {
            return Err(self.invalid(
                &at.key("listen"),
                format!(
                    "{} is reachable from other hosts, and the SOCKS port asks no password: anyone who reaches it could use this node and its exit as an open proxy. Listen on loopback (\"127.0.0.1:1080\"), or set socks.client.allow_remote_clients: true if a firewall keeps strangers out",
                    options.listen
                ),
            ));
        }
        options.exit_port = self.number(
            &at.key("exit_port"),
            raw.exit_port,
            options.exit_port.into(),
            PORT,
            "(TCP ports)",
        )? as u16;
        let path_key = at.key("path");
        options.path = raw
            .path
            .map(|texts| self.explicit_path(&path_key, texts, &exit, "exit"))
            .transpose()?;
        if options
            .route_path()
            .is_some_and(|path| path.len() > MAX_PATH)
        {
            return Err(self.invalid(
                &path_key,
                format!("a route goes through at most {MAX_PATH} nodes after this one, the exit included: shorten the path"),
            ));
        }
        options.handshake_timeout = self.millis_or(
            &at.key("handshake_timeout_ms"),
            raw.handshake_timeout_ms,
            options.handshake_timeout,
            TIMEOUT_MS,
        )?;
        options.connect_timeout = self.millis_or(
            &at.key("connect_timeout_ms"),
            raw.connect_timeout_ms,
            options.connect_timeout,
            TIMEOUT_MS,
        )?;
        options.idle_timeout = self.millis_or(
            &at.key("idle_timeout_ms"),
            raw.idle_timeout_ms,
            options.idle_timeout,
            IDLE_TIMEOUT_MS,
        )?;
        options.max_connections = self.number(
            &at.key("max_connections"),
            raw.max_connections,
            options.max_connections as u64,
            MAX_CONNECTIONS,
            "connections",
        )? as usize;
        Ok(options)
    }

    /// A list of address ranges.
    fn prefix_list(&self, at: &KeyPath, texts: Vec<String>) -> Result<Vec<Prefix>, ConfigError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                text.parse().map_err(|err| {
                    self.invalid(
                        &at.index(index),
                        format!("{err}; a single address is written with /32 or /128"),
                    )
                })
            })
            .collect()
    }

    fn socks_server(&self, at: &KeyPath, raw: RawServer) -> Result<ServerOptions, ConfigError> {
        let defaults = ServerOptions::default();
        let max_connections = self.number(
            &at.key("max_connections"),
            raw.max_connections,
            defaults.max_connections as u64,
            MAX_CONNECTIONS,
            "connections",
        )?;
        Ok(ServerOptions {
            enabled: raw.enabled.unwrap_or(true),
            port: self.number(
                &at.key("port"),
                raw.port,
                defaults.port.into(),
                PORT,
                "(TCP ports)",
            )? as u16,
            allow: self.key_list(
                &at.key("allow"),
                raw.allow.unwrap_or_default(),
                "a client node's public key",
            )?,
            dial_policy: DialPolicy {
                deny: self.prefix_list(&at.key("deny"), raw.deny.unwrap_or_default())?,
                allow_private: raw.allow_private.unwrap_or(false),
                allow_targets: self.prefix_list(
                    &at.key("allow_targets"),
                    raw.allow_targets.unwrap_or_default(),
                )?,
            },
            dial_timeout: self.millis_or(
                &at.key("dial_timeout_ms"),
                raw.dial_timeout_ms,
                defaults.dial_timeout,
                TIMEOUT_MS,
            )?,
            idle_timeout: self.millis_or(
                &at.key("idle_timeout_ms"),
                raw.idle_timeout_ms,
                defaults.idle_timeout,
                IDLE_TIMEOUT_MS,
            )?,
            max_connections: max_connections as usize,
            // One key may use them all unless the operator says otherwise.
            max_connections_per_key: self.number(
                &at.key("max_connections_per_key"),
                raw.max_connections_per_key,
                max_connections,
                MAX_CONNECTIONS,
                "connections",
            )? as usize,
        })
    }
}
