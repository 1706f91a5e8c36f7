//! Text for what the node knows of the mesh: the path `find_route` would take, and the graph
//! `list_nodes` shows. Full keys where users copy them (the nodes, a path's hops), short ones
//! in the table of links; each node's services as `name:port`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use skywire_dataplane::api::topology::{FoundRoute, NodesReply};
use skywire_dataplane::topology::AdvertDrops;
use skywire_dataplane::wire::ServiceEntry;
use skywire_dataplane::NodeKey;

use super::{bytes, duration, millis, Table};

pub(super) fn found_route(found: &FoundRoute) -> String {
    let hops = found.path.len().saturating_sub(1);
    let mut text = format!(
        "path to {}: {hops} hop{}, cost {}\n",
        found.peer,
        if hops == 1 { "" } else { "s" },
        millis(found.cost_ms)
    );
    let mut table = Table::new(&["HOP", "NODE", "LINK COST"]);
    for (index, key) in found.path.iter().enumerate() {
        let node = if index == 0 {
            format!("{key} (this node)")
        } else {
            key.to_string()
        };
        let cost = index
            .checked_sub(1)
            .and_then(|link| found.hop_costs_ms.get(link))
            .map_or_else(String::new, |cost| millis(*cost));
        table.row(vec![index.to_string(), node, cost]);
    }
    text.push_str(&table.render());
    text.push('\n');
    match &found.route_in_use {
        Some(path) if *path == found.path => text.push_str("route in use: over this path"),
        Some(path) => {
            let _ = write!(
                text,
                "route in use: over {} (a route keeps its path until it breaks)",
                short_path(path)
            );
        }
        None => text.push_str("route in use: none (`build_route KEY` sets one up over this path)"),
    }
    text
}

pub(super) fn nodes(reply: &NodesReply) -> String {
    let mut text = String::new();
    if reply.nodes.is_empty() {
        text.push_str("nodes: none yet (this node advertises once a link is up and measured)");
    } else {
        let _ = writeln!(text, "nodes: {}", reply.nodes.len());
        let mut table = Table::new(&[
            "NODE",
            "LINKS",
            "ADVERT AGE",
            "EXPIRES IN",
            "SEQUENCE",
            "SERVICES",
        ]);
        for node in &reply.nodes {
            let name = if node.this_node {
                format!("{} (this node)", node.key)
            } else {
                node.key.to_string()
            };
            table.row(vec![
                name,
                node.links.len().to_string(),
                duration(node.advert_age_secs),
                duration(node.expires_in_secs),
                node.sequence.to_string(),
                services(&node.services),
            ]);
        }
        text.push_str(&table.render());
    }
    text.push_str("\n\n");
    // Each link once, under its two ends in key order, with what each end measured.
    let mut links: BTreeMap<(NodeKey, NodeKey), PairedLink> = BTreeMap::new();
    for node in &reply.nodes {
        for link in &node.links {
            let forward = node.key <= link.neighbour;
            let pair = if forward {
                (node.key, link.neighbour)
            } else {
                (link.neighbour, node.key)
            };
            let entry = links.entry(pair).or_default();
            if forward {
                entry.rtt = Some(link.rtt_ms);
            } else {
                entry.rtt_back = Some(link.rtt_ms);
            }
            entry.cost = entry.cost.or(link.cost_ms);
        }
    }
    if links.is_empty() {
        text.push_str("links: none");
    } else {
        let _ = writeln!(
            text,
            "links: {} (cost: the larger round trip of the two ends; `-`: only one end advertises it, so it is not used)",
            links.len()
        );
        let mut table = Table::new(&["NODE", "NEIGHBOUR", "RTT", "RTT BACK", "COST"]);
        let cell = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), millis);
        for ((a, b), link) in &links {
            table.row(vec![
                short(a),
                short(b),
                cell(link.rtt),
                cell(link.rtt_back),
                cell(link.cost),
            ]);
        }
        text.push_str(&table.render());
    }
    let adverts = &reply.adverts;
    let _ = write!(
        text,
        "\n\nadverts: {} sent ({}); dropped: {}",
        adverts.sent,
        bytes(adverts.sent_bytes),
        drops(&adverts.dropped)
    );
    text
}

/// One link as its two ends advertise it: the round trip the end with the lower key measured,
/// the other's, and the cost once both advertise it.
#[derive(Debug, Default)]
struct PairedLink {
    rtt: Option<f64>,
    rtt_back: Option<f64>,
    cost: Option<f64>,
}

/// A node's advertised services as `name:port`, in its advert's order, or `-`.
fn services(services: &[ServiceEntry]) -> String {
    if services.is_empty() {
        return "-".to_owned();
    }
    services
        .iter()
        .map(|entry| format!("{}:{}", entry.name, entry.port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drop counters that are not zero, or `none`.
fn drops(dropped: &AdvertDrops) -> String {
    let counts = [
        (dropped.duplicate, "duplicate"),
        (dropped.own, "own coming back"),
        (dropped.stale, "stale"),
        (dropped.rate_limited, "over a neighbour's rate"),
        (dropped.forged, "forged"),
        (dropped.malformed, "malformed"),
        (dropped.oversized, "oversized"),
        (dropped.full, "over the node limit"),
    ];
    let listed: Vec<String> = counts
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, reason)| format!("{count} {reason}"))
        .collect();
    if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    }
}

fn short(key: &NodeKey) -> String {
    format!("{}…", key.short())
}

fn short_path(keys: &[NodeKey]) -> String {
    keys.iter().map(short).collect::<Vec<_>>().join(" → ")
}
