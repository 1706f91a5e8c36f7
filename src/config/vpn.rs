//! The `vpn` section: the VPN server app (an exit with address pools and the client keys it
//! serves) and the VPN client app (its server, the path to it and what it routes through the
//! tunnel), checked into the dataplane's options. A section that is present configures its app;
//! `enabled` (default false) says whether it starts with the node.

use serde::Deserialize;
use skywire_dataplane::vpn::{
    ClientOptions, Prefix, ServerOptions, TunName, DEFAULT_CLIENT_TUN, DEFAULT_LEASE_PORT,
    DEFAULT_POOL4, DEFAULT_POOL6, DEFAULT_SERVER_TUN,
};
use skywire_dataplane::NodeKey;

use super::locate::KeyPath;
use super::{Checker, ConfigError, Whole};

/// The VPN apps as configured.
#[derive(Debug, Clone, Default)]
pub struct Vpn {
    /// The server app (`vpn.server`).
    pub server: Option<ServerOptions>,
    /// The client app (`vpn.client`).
    pub client: Option<ClientOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with server and client"
)]
pub(super) struct RawVpn {
    server: Option<RawVpnServer>,
    client: Option<RawVpnClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, tun, pool4, pool6, allow and port"
)]
struct RawVpnServer {
    enabled: Option<bool>,
    tun: Option<String>,
    pool4: Option<String>,
    pool6: Option<String>,
    allow: Option<Vec<String>>,
    port: Option<Whole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with enabled, tun, server, path, routes and port"
)]
struct RawVpnClient {
    enabled: Option<bool>,
    tun: Option<String>,
    server: Option<String>,
    path: Option<Vec<String>>,
    routes: Option<Vec<String>>,
    port: Option<Whole>,
}

impl Checker<'_> {
    pub(super) fn vpn(&self, raw: RawVpn) -> Result<Vpn, ConfigError> {
        let section = KeyPath::top("vpn");
        let server = match raw.server {
            Some(server) => Some(self.vpn_server(&section.key("server"), server)?),
            None => None,
        };
        let client = match raw.client {
            Some(client) => Some(self.vpn_client(&section.key("client"), client)?),
            None => None,
        };
        if let (Some(server), Some(client)) = (&server, &client) {
            if server.tun == client.tun {
                return Err(self.invalid(
                    &section.key("client").key("tun"),
                    format!(
                        "{} is the server's TUN device too: give the client and the server different names",
                        client.tun
                    ),
                ));
            }
        }
        Ok(Vpn { server, client })
    }

    fn vpn_server(&self, at: &KeyPath, raw: RawVpnServer) -> Result<ServerOptions, ConfigError> {
        let tun = self.tun(
            &at.key("tun"),
            raw.tun.as_deref().unwrap_or(DEFAULT_SERVER_TUN),
        )?;
        let pool4 = self.pool(
            &at.key("pool4"),
            raw.pool4.as_deref().unwrap_or(DEFAULT_POOL4),
            true,
        )?;
        let pool6 = self.pool(
            &at.key("pool6"),
            raw.pool6.as_deref().unwrap_or(DEFAULT_POOL6),
            false,
        )?;
        if pool4.is_none() && pool6.is_none() {
            return Err(self.invalid(
                &at.key("pool4"),
                "both pools are off: the server needs pool4, pool6 or both".to_owned(),
            ));
        }
        let allow = self.keys(&at.key("allow"), raw.allow.unwrap_or_default(), "client")?;
        Ok(ServerOptions {
            start: raw.enabled.unwrap_or(false),
            tun,
            pool4,
            pool6,
            allow,
            port: self.port(&at.key("port"), raw.port)?,
        })
    }

    fn vpn_client(&self, at: &KeyPath, raw: RawVpnClient) -> Result<ClientOptions, ConfigError> {
        let tun = self.tun(
            &at.key("tun"),
            raw.tun.as_deref().unwrap_or(DEFAULT_CLIENT_TUN),
        )?;
        let Some(server_text) = raw.server else {
            return Err(self.invalid(
                &at.key("server"),
                "is missing: give the VPN server's public key (its `skywired pubkey` output)"
                    .to_owned(),
            ));
        };
        let server: NodeKey = server_text.trim().parse().map_err(|err| {
            self.invalid(
                &at.key("server"),
                format!("{err}; give the VPN server's public key (its `skywired pubkey` output)"),
            )
        })?;
        let path = raw
            .path
            .map(|texts| self.explicit_path(&at.key("path"), texts, &server, "server"))
            .transpose()?;
        let mut routes = Vec::new();
        for (index, text) in raw.routes.unwrap_or_default().iter().enumerate() {
            let prefix: Prefix = text.parse().map_err(|err| {
                self.invalid(
                    &at.key("routes").index(index),
                    format!("{err}; 0.0.0.0/0 and ::/0 send everything through the tunnel"),
                )
            })?;
            routes.push(prefix);
        }
        Ok(ClientOptions {
            start: raw.enabled.unwrap_or(false),
            tun,
            server,
            path,
            routes,
            port: self.port(&at.key("port"), raw.port)?,
        })
    }

    fn tun(&self, key: &KeyPath, name: &str) -> Result<TunName, ConfigError> {
        name.parse()
            .map_err(|err| self.invalid(key, format!("{err}; choose a name like skyvpn0")))
    }

    /// A pool prefix; `off` turns the pool off.
    fn pool(&self, key: &KeyPath, text: &str, v4: bool) -> Result<Option<Prefix>, ConfigError> {
        if text.trim() == "off" {
            return Ok(None);
        }
        let example = if v4 { "10.77.0.0/24" } else { "fd77::/64" };
        let prefix: Prefix = text.parse().map_err(|err| {
            self.invalid(key, format!("{err}; write it like {example}, or `off`"))
        })?;
        if prefix.is_ipv4() != v4 {
            return Err(self.invalid(
                key,
                format!(
                    "{prefix} is not an {} prefix: write it like {example}",
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            ));
        }
        if prefix.host_bits() < 2 {
            return Err(self.invalid(
                key,
                format!("{prefix} leaves no address for clients: give it at least 2 host bits"),
            ));
        }
        Ok(Some(prefix))
    }

    fn keys(
        &self,
        at: &KeyPath,
        raw: Vec<String>,
        what: &str,
    ) -> Result<Vec<NodeKey>, ConfigError> {
        let mut keys: Vec<NodeKey> = Vec::with_capacity(raw.len());
        for (index, text) in raw.iter().enumerate() {
            let key: NodeKey = text.trim().parse().map_err(|err| {
                self.invalid(
                    &at.index(index),
                    format!("{err}; give the {what}'s public key (its `skywired pubkey` output)"),
                )
            })?;
            if let Some(first) = keys.iter().position(|other| *other == key) {
                return Err(self.invalid(
                    &at.index(index),
                    format!("the key {key} is listed already, at [{first}]: list each key once"),
                ));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    fn port(&self, key: &KeyPath, raw: Option<Whole>) -> Result<u16, ConfigError> {
        let port = self.number(
            key,
            raw,
            DEFAULT_LEASE_PORT.into(),
            1..=65_535,
            "(a TCP port)",
        )?;
        Ok(u16::try_from(port).unwrap_or(DEFAULT_LEASE_PORT))
    }
}
