//! Text for the built-in apps' replies: the VPN and SOCKS apps' state and counters, and what a
//! reload did to them.

use std::fmt::Write as _;

use skywire_dataplane::api::socks::SocksStatus;
use skywire_dataplane::api::vpn::VpnStatus;
use skywire_dataplane::api::{AppChange, BuiltinApp};

use super::{bytes, traffic, Table};

pub(super) fn vpn(status: &VpnStatus) -> String {
    let mut text = String::new();
    if let Some(server) = &status.server {
        let own = [
            server.ipv4.map(|a| a.to_string()),
            server.ipv6.map(|a| a.to_string()),
        ];
        let _ = writeln!(
            text,
            "vpn server   {} on {}{}",
            server.state,
            server.tun,
            own.iter()
                .flatten()
                .map(|address| format!(", {address}"))
                .collect::<String>()
        );
        let drops = &server.drops;
        let _ = writeln!(
            text,
            "  dropped    {} forged source, {} without lease, {} to no client, {} not IP",
            drops.forged_source, drops.no_lease, drops.no_client, drops.not_ip
        );
        if !server.clients.is_empty() {
            let mut table = Table::new(&["CLIENT", "IPV4", "IPV6", "FROM CLIENT", "TO CLIENT"]);
            for client in &server.clients {
                table.row(vec![
                    client.key.to_string(),
                    client
                        .ipv4
                        .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    client
                        .ipv6
                        .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    traffic(client.rx.bytes, client.rx.packets),
                    traffic(client.tx.bytes, client.tx.packets),
                ]);
            }
            let _ = writeln!(text, "{}", table.render());
        }
    }
    if let Some(client) = &status.client {
        let _ = writeln!(text, "vpn client   {} on {}", client.state, client.tun);
        let _ = writeln!(text, "  server     {}", client.server);
        let addresses: Vec<&str> = [client.ipv4.as_deref(), client.ipv6.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if !addresses.is_empty() {
            let _ = writeln!(text, "  addresses  {}", addresses.join(", "));
        }
        if let Some(mtu) = client.mtu {
            let _ = writeln!(text, "  mtu        {mtu}");
        }
        let routes = if client.routes.is_empty() {
            "none".to_owned()
        } else {
            client.routes.join(", ")
        };
        let _ = writeln!(text, "  routes     {routes}");
        let _ = writeln!(text, "  reconnects {}", client.reconnects);
        let _ = writeln!(
            text,
            "  tx         {}",
            traffic(client.tx.bytes, client.tx.packets)
        );
        let _ = writeln!(
            text,
            "  rx         {}",
            traffic(client.rx.bytes, client.rx.packets)
        );
    }
    if text.is_empty() {
        return "no VPN app is configured: add a `vpn` section to the config file".to_owned();
    }
    text.trim_end().to_owned()
}

pub(super) fn socks(status: &SocksStatus) -> String {
    let mut lines = Vec::new();
    match &status.client {
        Some(client) => {
            let listen = client
                .listen
                .map_or_else(|| "-".to_owned(), |listen| listen.to_string());
            lines.push(format!(
                "client  {} on {listen}, exit {} (route {})",
                client.state, client.exit, client.route
            ));
            lines.push(format!(
                "        {} open, {} accepted, {} failed; up {}, down {}; {} buffered",
                client.connections,
                client.accepted,
                client.failed,
                bytes(client.bytes_up),
                bytes(client.bytes_down),
                bytes(client.buffered_bytes as u64)
            ));
        }
        None => lines.push("client  not configured (socks.client)".to_owned()),
    }
    match &status.server {
        Some(server) => {
            lines.push(format!(
                "server  {} on mesh port {}, {} key(s) allowed",
                server.state, server.port, server.allowed
            ));
            lines.push(format!(
                "        {} open, {} accepted, {} refused, {} denied by the dial policy, {} failed; up {}, down {}; {} buffered",
                server.connections,
                server.accepted,
                server.refused,
                server.denied,
                server.failed,
                bytes(server.bytes_up),
                bytes(server.bytes_down),
                bytes(server.buffered_bytes as u64)
            ));
        }
        None => lines.push("server  not configured (socks.server)".to_owned()),
    }
    lines.join("\n")
}

/// What a reload did to a built-in app.
pub(super) fn app_configured(app: BuiltinApp, change: AppChange) -> String {
    match change {
        AppChange::Restarted => format!("{app} restarted with its new section"),
        AppChange::Started => format!("{app} started with its new section"),
        AppChange::Removed => format!("{app} stopped: its section is gone"),
        AppChange::Configured => {
            format!("{app} configured anew; not started (enabled is false)")
        }
        AppChange::Unchanged => {
            format!("{app}: only `enabled` changed, which applies at the next start")
        }
        AppChange::Updated => format!("{app} runs on with its new section"),
    }
}
