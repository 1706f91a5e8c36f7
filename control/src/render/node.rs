//! Text for the node's own replies: its status (with the control thread's signal server),
//! transports, routes and routing table, a route built, a ping, a neighbour added, changed or
//! removed, and the settings a reload put in force. Tables show full node keys
//! where users copy them, short ones inside paths and rules.

use std::fmt::Write as _;

use serde::Serialize;

use skywire_dataplane::api::{
    NeighbourChange, NeighbourReply, PingReply, RouteRow, RoutesReply, RuleRow, SettingsReply,
    StatusReply, TransportRow,
};
use skywire_dataplane::NodeKey;

use super::{ago, bytes, duration, millis, traffic, two_places, Table};
use crate::protocol::success_line;
use crate::server::ClientBuffers;
use crate::signal::ListenerState;

/// The `result` of `status`: the dataplane's figures, and the signal server's state, which the
/// control thread knows.
#[derive(Debug, Serialize)]
struct NodeStatus<'a> {
    #[serde(flatten)]
    node: &'a StatusReply,
    signal_server: &'a ListenerState,
    control_socket: &'a ClientBuffers,
}

/// The reply line of `status`.
pub(crate) fn status_line(
    command: &str,
    node: &StatusReply,
    signal: &ListenerState,
    clients: &ClientBuffers,
) -> Vec<u8> {
    let mut text = format!(
        "{}\n{:<13} {}",
        status(node),
        "signal server",
        signal_server(signal)
    );
    if clients.dropped > 0 {
        let _ = write!(
            text,
            "\n{:<13} {} clients disconnected: all clients together held more than {}",
            "control full",
            clients.dropped,
            bytes(clients.limit as u64)
        );
    }
    success_line(
        command,
        &NodeStatus {
            node,
            signal_server: signal,
            control_socket: clients,
        },
        &text,
    )
}

fn signal_server(state: &ListenerState) -> String {
    match state {
        ListenerState::Listening { address } => format!("listening on {address}"),
        ListenerState::Retrying {
            address,
            error,
            retry_in_ms,
        } => format!(
            "retrying: cannot listen on {address}: {error}; next try in {}",
            duration(*retry_in_ms as f64 / 1000.0)
        ),
    }
}

pub(super) fn status(status: &StatusReply) -> String {
    let rows = [
        ("node", status.key.to_string()),
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
    let mut rows = rows.to_vec();
    rows.extend(limits_hit(status));
    let mut text = String::new();
    for (index, (name, value)) in rows.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        let _ = write!(text, "{name:<13} {value}");
    }
    text
}

/// A line for each limit the node has hit: they name what was refused or dropped.
fn limits_hit(status: &StatusReply) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let mesh = &status.mesh_tcp;
    if mesh.sockets_limit > 0 && mesh.sockets_peak >= mesh.sockets_limit {
        rows.push((
            "mesh sockets",
            format!(
                "{} open, all {} were in use at once",
                mesh.sockets, mesh.sockets_limit
            ),
        ));
    }
    let refused = &mesh.syns_refused;
    if refused.total() > 0 {
        rows.push((
            "SYNs refused",
            format!(
                "{} ({} not admitted, {} over a key's half-open cap, {} over a key's stream cap, {} port full, {} no socket)",
                refused.total(),
                refused.not_admitted,
                refused.peer_half_open,
                refused.peer_streams,
                refused.listener_full,
                refused.no_socket
            ),
        ));
    }
    let outbox = &status.outbox;
    if outbox.dropped > 0 {
        rows.push((
            "outbox full",
            format!(
                "{} datagrams dropped at its limit of {}",
                outbox.dropped, outbox.limit
            ),
        ));
    }
    rows
}

pub(super) fn transports(rows: &[TransportRow]) -> String {
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
            row.key.to_string(),
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

pub(super) fn routes(routes: &RoutesReply) -> String {
    let mut text = String::new();
    if routes.routes.is_empty() {
        text.push_str("routes: none (set one up with build_route)");
    } else {
        let _ = writeln!(text, "routes: {}", routes.routes.len());
        let mut table = Table::new(&["PEER", "PATH", "ROLE", "STATE", "OUT ID", "IN ID"]);
        for route in &routes.routes {
            table.row(vec![
                route.peer.to_string(),
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
            rule.from.as_ref().map_or_else(|| "?".to_owned(), short),
            rule.to.as_ref().map_or_else(|| "?".to_owned(), short),
            rule.next_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            rule.packets.to_string(),
            bytes(rule.bytes),
            duration(rule.expires_in_secs),
        ]);
    }
    table.render()
}

pub(super) fn route_built(route: &RouteRow) -> String {
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

pub(super) fn ping(ping: &PingReply) -> String {
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

/// A key as paths and rules show it: its short form, marked as cut.
fn short(key: &NodeKey) -> String {
    format!("{}…", key.short())
}

fn path(keys: &[NodeKey]) -> String {
    keys.iter().map(short).collect::<Vec<_>>().join(" → ")
}

/// What `add_neighbour` and `rm_neighbour` add to their reply's text.
pub(super) const NOT_IN_CONFIG: &str =
    "this change is not in the config file: the next reload or restart undoes it";

pub(super) fn neighbour(reply: &NeighbourReply) -> String {
    let key = reply.key;
    let endpoint = match reply.endpoint {
        Some(endpoint) => format!("endpoint {endpoint}"),
        None => "no endpoint yet: it must call first".to_owned(),
    };
    let keepalive = match reply.keepalive {
        Some(seconds) => format!(", keepalive {seconds} s"),
        None => String::new(),
    };
    match reply.change {
        NeighbourChange::Added => format!("neighbour {key} added ({endpoint}{keepalive})"),
        NeighbourChange::Updated => format!("neighbour {key} changed: {endpoint}{keepalive}"),
        NeighbourChange::Removed => format!(
            "neighbour {key} removed; {} route(s) through it went down",
            reply.routes_down
        ),
    }
}

pub(super) fn settings(settings: &SettingsReply) -> String {
    format!(
        "liveness and route settings: probe every {} ms, dead after {} ms; at most {} route(s) \
         per neighbour, rules live {} ms, refreshed every {} ms",
        settings.probe_interval_ms,
        settings.dead_after_ms,
        settings.max_routes_per_neighbour,
        settings.rule_lifetime_ms,
        settings.refresh_interval_ms
    )
}
