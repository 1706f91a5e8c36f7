//! Human-readable text for the dataplane's replies: the `text` field of a reply line, which
//! `visctl` prints. Tables show full node keys where users copy them, short ones (8 characters)
//! inside paths and rules.

use std::fmt::Write as _;

use skywire_dataplane::api::{
    PingReply, Reply, RouteRow, RoutesReply, RuleRow, StatusReply, TransportRow, VpnStatus,
};
use skywire_dataplane::socks::SocksStatus;

/// Characters of a key kept where a short form is enough.
const SHORT_KEY: usize = 8;

/// The text for `reply`; no trailing new line.
pub fn reply(reply: &Reply) -> String {
    match reply {
        Reply::Status(status) => render_status(status),
        Reply::Transports(rows) => transports(rows),
        Reply::Routes(routes) => render_routes(routes),
        Reply::RouteBuilt(route) => route_built(route),
        Reply::RouteRemoved { peer } => format!("route to {peer} removed"),
        Reply::Ping(ping) => render_ping(ping),
        Reply::Vpn(status) => render_vpn(status),
        Reply::Socks(status) => render_socks(status),
        Reply::Stopped => "the dataplane has stopped".to_owned(),
        Reply::Error(message) => format!("error: {message}"),
    }
}

fn render_socks(status: &SocksStatus) -> String {
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
                "        {} open, {} accepted, {} refused, {} failed; up {}, down {}; {} buffered",
                server.connections,
                server.accepted,
                server.refused,
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

fn render_status(status: &StatusReply) -> String {
    let rows = [
        ("node", status.key.clone()),
        ("mesh address", status.mesh_address.to_string()),
        ("listen", status.listen.to_string()),
        ("uptime", duration(status.uptime_secs as f64)),
        (
            "transports",
            format!("{} ({} up)", status.transports, status.links_up),
        ),
        ("routes", status.routes.to_string()),
        ("rules", status.rules.to_string()),
    ];
    let mut text = String::new();
    for (index, (name, value)) in rows.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        let _ = write!(text, "{name:<13} {value}");
    }
    text
}

fn transports(rows: &[TransportRow]) -> String {
    if rows.is_empty() {
        return "no transports: list neighbours in the config's `neighbours` section".to_owned();
    }
    let mut table = Table::new(&[
        "KEY",
        "ENDPOINT",
        "LINK",
        "HANDSHAKE",
        "LAST SEEN",
        "RTT",
        "TX",
        "RX",
    ]);
    for row in rows {
        table.row(vec![
            row.key.clone(),
            row.endpoint
                .map_or_else(|| "-".to_owned(), |endpoint| endpoint.to_string()),
            row.link.to_owned(),
            ago(row.handshake_secs_ago),
            ago(row.last_seen_secs_ago),
            row.rtt_ms.map_or_else(|| "-".to_owned(), millis),
            traffic(row.tx_bytes, row.tx_packets),
            traffic(row.rx_bytes, row.rx_packets),
        ]);
    }
    table.render()
}

fn render_routes(routes: &RoutesReply) -> String {
    let mut text = String::new();
    if routes.routes.is_empty() {
        text.push_str("routes: none (set one up with build_route)");
    } else {
        let _ = writeln!(text, "routes: {}", routes.routes.len());
        let mut table = Table::new(&["PEER", "PATH", "ROLE", "STATE", "OUT ID", "IN ID"]);
        for route in &routes.routes {
            table.row(vec![
                route.peer.clone(),
                path(&route.path),
                if route.initiator {
                    "initiator"
                } else {
                    "responder"
                }
                .to_owned(),
                if route.ready { "ready" } else { "handshake" }.to_owned(),
                route.out_id.to_string(),
                route.in_id.to_string(),
            ]);
        }
        text.push_str(&table.render());
    }
    text.push_str("\n\n");
    if routes.rules.is_empty() {
        text.push_str("rules: none");
    } else {
        let _ = writeln!(text, "rules: {}", routes.rules.len());
        text.push_str(&rules(&routes.rules));
    }
    text
}

fn rules(rows: &[RuleRow]) -> String {
    let mut table = Table::new(&[
        "ID",
        "ACTION",
        "FROM",
        "TO",
        "NEXT ID",
        "PACKETS",
        "BYTES",
        "EXPIRES IN",
    ]);
    for rule in rows {
        table.row(vec![
            rule.id.to_string(),
            rule.action.to_owned(),
            short(&rule.from),
            short(&rule.to),
            rule.next_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            rule.packets.to_string(),
            bytes(rule.bytes),
            duration(rule.expires_in_secs),
        ]);
    }
    table.render()
}

fn route_built(route: &RouteRow) -> String {
    let state = if route.ready {
        "ready"
    } else {
        "set up, end-to-end handshake pending"
    };
    format!(
        "route to {} {state}\npath: {}\nids: out {}, in {}",
        route.peer,
        path(&route.path),
        route.out_id,
        route.in_id
    )
}

fn render_vpn(status: &VpnStatus) -> String {
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
                    client.key.clone(),
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

fn render_ping(ping: &PingReply) -> String {
    let mut text = format!(
        "PING {} ({}): {} echo request{}\n",
        ping.peer,
        ping.address,
        ping.sent,
        if ping.sent == 1 { "" } else { "s" }
    );
    for rtt in &ping.rtt_ms {
        let _ = writeln!(
            text,
            "reply from {}: time={} ms",
            ping.address,
            two_places(*rtt)
        );
    }
    let received = ping.rtt_ms.len();
    let lost = u64::from(ping.sent).saturating_sub(received as u64);
    let loss = if ping.sent == 0 {
        0
    } else {
        lost * 100 / u64::from(ping.sent)
    };
    let _ = write!(
        text,
        "{} sent, {received} received, {loss}% loss",
        ping.sent
    );
    let finite = ping.rtt_ms.iter().copied().filter(|rtt| rtt.is_finite());
    let (count, min, max, sum) = finite.fold(
        (0usize, f64::INFINITY, f64::NEG_INFINITY, 0.0),
        |(count, min, max, sum), rtt| (count + 1, min.min(rtt), max.max(rtt), sum + rtt),
    );
    if count > 0 {
        let _ = write!(
            text,
            ", rtt min/avg/max = {}/{}/{} ms",
            two_places(min),
            two_places(sum / count as f64),
            two_places(max)
        );
    }
    text
}

/// A key cut to its first characters, as logs show it.
fn short(key: &str) -> String {
    if key.chars().count() <= SHORT_KEY {
        return key.to_owned();
    }
    let mut short: String = key.chars().take(SHORT_KEY).collect();
    short.push('…');
    short
}

fn path(keys: &[String]) -> String {
    keys.iter()
        .map(|key| short(key))
        .collect::<Vec<_>>()
        .join(" → ")
}

pub(crate) fn two_places(value: f64) -> String {
    format!("{value:.2}")
}

fn millis(value: f64) -> String {
    format!("{} ms", two_places(value))
}

fn ago(seconds: Option<f64>) -> String {
    match seconds {
        None => "never".to_owned(),
        Some(seconds) => format!("{} ago", duration(seconds)),
    }
}

/// Seconds as `4.2 s`, `3m 05s`, `2h 03m`, `5d 04h`.
pub(crate) fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    // Whole seconds from here on; the cast saturates for absurd values.
    let whole = seconds as u64;
    let (days, hours, minutes, secs) = (
        whole / 86_400,
        whole / 3_600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    if days > 0 {
        format!("{days}d {hours:02}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else {
        format!("{minutes}m {secs:02}s")
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `3.0 GiB`.
pub(crate) fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

fn traffic(byte_count: u64, packets: u64) -> String {
    format!("{} / {packets} pkt", bytes(byte_count))
}

/// Columns padded to their widest cell, two spaces apart.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|name| (*name).to_owned()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            if index > 0 {
                text.push('\n');
            }
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            text.push_str(line.trim_end());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_C: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn vpn_status_shows_state_addresses_and_counters() {
        use skywire_dataplane::vpn::{ClientStatus, ServerClientRow, ServerStatus, Traffic};
        let text = reply(&Reply::Vpn(Box::new(VpnStatus {
            server: Some(ServerStatus {
                state: "running".to_owned(),
                tun: "skysrv".to_owned(),
                ipv4: Some("10.77.0.1".parse().unwrap()),
                ipv6: None,
                clients: vec![ServerClientRow {
                    key: KEY_B.to_owned(),
                    ipv4: Some("10.77.0.2".parse().unwrap()),
                    ipv6: None,
                    rx: Traffic {
                        packets: 2,
                        bytes: 200,
                    },
                    tx: Traffic::default(),
                }],
                drops: Default::default(),
            }),
            client: Some(ClientStatus {
                state: "up".to_owned(),
                server: KEY_C.to_owned(),
                tun: "skycli".to_owned(),
                ipv4: Some("10.88.0.2/24".to_owned()),
                ipv6: Some("fd88::2/64".to_owned()),
                mtu: Some(1348),
                routes: vec!["0.0.0.0/0".to_owned()],
                reconnects: 1,
                tx: Traffic {
                    packets: 5,
                    bytes: 500,
                },
                rx: Traffic::default(),
                drops: Default::default(),
            }),
        })));
        for expected in [
            "vpn server   running on skysrv, 10.77.0.1",
            KEY_B,
            "10.77.0.2",
            "vpn client   up on skycli",
            "10.88.0.2/24, fd88::2/64",
            "mtu        1348",
            "routes     0.0.0.0/0",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        let none = reply(&Reply::Vpn(Box::new(VpnStatus {
            server: None,
            client: None,
        })));
        assert!(none.contains("no VPN app is configured"));
    }

    fn route(ready: bool) -> RouteRow {
        RouteRow {
            peer: KEY_C.to_owned(),
            path: vec![KEY_A.to_owned(), KEY_B.to_owned(), KEY_C.to_owned()],
            initiator: true,
            ready,
            out_id: 1234,
            in_id: 5678,
        }
    }

    #[test]
    fn status_is_a_block_of_named_lines() {
        let text = reply(&Reply::Status(StatusReply {
            key: KEY_A.to_owned(),
            mesh_address: "fd00::1".parse().unwrap(),
            listen: "[::]:7777".parse().unwrap(),
            uptime_secs: 3_725,
            transports: 3,
            links_up: 2,
            routes: 1,
            rules: 4,
        }));
        assert_eq!(
            text,
            format!(
                "node          {KEY_A}\nmesh address  fd00::1\nlisten        [::]:7777\nuptime        1h 02m\ntransports    3 (2 up)\nroutes        1\nrules         4"
            )
        );
    }

    #[test]
    fn transports_are_a_table_with_full_keys() {
        let rows = vec![
            TransportRow {
                key: KEY_B.to_owned(),
                endpoint: Some("192.0.2.1:7777".parse().unwrap()),
                link: "up",
                handshake_secs_ago: Some(12.34),
                last_seen_secs_ago: Some(0.5),
                rtt_ms: Some(1.234),
                tx_bytes: 1536,
                rx_bytes: 100,
                tx_packets: 3,
                rx_packets: 2,
            },
            TransportRow {
                key: KEY_C.to_owned(),
                endpoint: None,
                link: "unknown",
                handshake_secs_ago: None,
                last_seen_secs_ago: None,
                rtt_ms: None,
                tx_bytes: 0,
                rx_bytes: 0,
                tx_packets: 0,
                rx_packets: 0,
            },
        ];
        let text = reply(&Reply::Transports(rows));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("KEY"), "{text}");
        for header in [
            "ENDPOINT",
            "LINK",
            "HANDSHAKE",
            "LAST SEEN",
            "RTT",
            "TX",
            "RX",
        ] {
            assert!(lines[0].contains(header), "{text}");
        }
        assert!(lines[1].starts_with(KEY_B), "{text}");
        for cell in [
            "192.0.2.1:7777",
            "up",
            "12.3 s ago",
            "0.5 s ago",
            "1.23 ms",
            "1.5 KiB / 3 pkt",
            "100 B / 2 pkt",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {text}");
        }
        assert!(lines[2].starts_with(KEY_C), "{text}");
        assert!(lines[2].contains("never"), "{text}");
        // Columns line up: ENDPOINT starts at the same place in every line.
        let column = lines[0].find("ENDPOINT").unwrap();
        assert_eq!(&lines[1][column..column + 9], "192.0.2.1");
        assert!(reply(&Reply::Transports(vec![])).contains("no transports"));
    }

    #[test]
    fn routes_and_rules_are_two_tables() {
        let text = reply(&Reply::Routes(RoutesReply {
            routes: vec![route(true)],
            rules: vec![
                RuleRow {
                    id: 5678,
                    action: "consume",
                    from: KEY_B.to_owned(),
                    to: KEY_C.to_owned(),
                    next_id: None,
                    packets: 10,
                    bytes: 2048,
                    expires_in_secs: 25.0,
                },
                RuleRow {
                    id: 42,
                    action: "forward",
                    from: KEY_B.to_owned(),
                    to: KEY_C.to_owned(),
                    next_id: Some(77),
                    packets: 0,
                    bytes: 0,
                    expires_in_secs: 90.0,
                },
            ],
        }));
        assert!(text.starts_with("routes: 1\nPEER"), "{text}");
        assert!(text.contains(KEY_C), "{text}");
        assert!(text.contains("AAAAAAAA… → AQEBAQEB… → AgICAgIC…"), "{text}");
        assert!(text.contains("initiator"), "{text}");
        assert!(text.contains("ready"), "{text}");
        assert!(text.contains("\n\nrules: 2\nID"), "{text}");
        assert!(text.contains("consume"), "{text}");
        assert!(text.contains("2.0 KiB"), "{text}");
        assert!(text.contains("1m 30s"), "{text}");
        assert!(text.contains("77"), "{text}");

        let empty = reply(&Reply::Routes(RoutesReply {
            routes: vec![],
            rules: vec![],
        }));
        assert_eq!(
            empty,
            "routes: none (set one up with build_route)\n\nrules: none"
        );
    }

    #[test]
    fn route_built_and_removed_are_sentences() {
        let text = reply(&Reply::RouteBuilt(route(true)));
        assert!(
            text.starts_with(&format!("route to {KEY_C} ready\n")),
            "{text}"
        );
        assert!(text.contains("ids: out 1234, in 5678"), "{text}");
        let text = reply(&Reply::RouteBuilt(route(false)));
        assert!(text.contains("handshake pending"), "{text}");
        assert_eq!(
            reply(&Reply::RouteRemoved {
                peer: KEY_B.to_owned()
            }),
            format!("route to {KEY_B} removed")
        );
    }

    #[test]
    fn ping_shows_replies_and_a_summary() {
        let text = reply(&Reply::Ping(PingReply {
            peer: KEY_B.to_owned(),
            address: "fd00::2".parse().unwrap(),
            sent: 4,
            rtt_ms: vec![1.0, 2.0, 3.5],
        }));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("PING {KEY_B} (fd00::2): 4 echo requests"));
        assert_eq!(lines[1], "reply from fd00::2: time=1.00 ms");
        assert_eq!(lines[3], "reply from fd00::2: time=3.50 ms");
        assert_eq!(
            lines[4],
            "4 sent, 3 received, 25% loss, rtt min/avg/max = 1.00/2.17/3.50 ms"
        );
        let text = reply(&Reply::Ping(PingReply {
            peer: KEY_B.to_owned(),
            address: "fd00::2".parse().unwrap(),
            sent: 1,
            rtt_ms: vec![],
        }));
        assert!(text.ends_with("1 sent, 0 received, 100% loss"), "{text}");
    }

    #[test]
    fn stopped_and_error_are_plain() {
        assert_eq!(reply(&Reply::Stopped), "the dataplane has stopped");
        assert_eq!(
            reply(&Reply::Error("no route to x".to_owned())),
            "error: no route to x"
        );
    }

    #[test]
    fn units_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(duration(4.25), "4.2 s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(2.0 * 86_400.0 + 3_600.0), "2d 01h");
        assert_eq!(duration(f64::NAN), "-");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(KEY_A), "AAAAAAAA…");
    }
}
