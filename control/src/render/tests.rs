#![allow(clippy::unwrap_used)]

use skywire_dataplane::api::vpn::VpnStatus;
use skywire_dataplane::api::{
    PingReply, Reply, RequestError, RouteRow, RoutesReply, RuleRow, StatusReply, TransportRow,
    TransportsReply,
};
use skywire_dataplane::NodeKey;

use super::*;
use crate::protocol::Answer;
use crate::signal::ListenerState;

fn key(text: &str) -> NodeKey {
    text.parse().unwrap()
}

const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_C: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

#[test]
fn vpn_status_shows_state_addresses_and_counters() {
    use skywire_dataplane::api::vpn::{ClientStatus, ServerClientRow, ServerStatus, Traffic};
    let text = reply_text(&Reply::Vpn(Box::new(VpnStatus {
        server: Some(ServerStatus {
            state: "running".to_owned(),
            tun: "skysrv".to_owned(),
            ipv4: Some("10.77.0.1".parse().unwrap()),
            ipv6: None,
            clients: vec![ServerClientRow {
                key: key(KEY_B),
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
            server: key(KEY_C),
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
    let none = reply_text(&Reply::Vpn(Box::new(VpnStatus {
        server: None,
        client: None,
    })));
    assert!(none.contains("no VPN app is configured"));
}

fn route(ready: bool) -> RouteRow {
    RouteRow {
        peer: key(KEY_C),
        path: vec![key(KEY_A), key(KEY_B), key(KEY_C)],
        initiator: true,
        ready,
        out_id: 1234,
        in_id: 5678,
    }
}

/// A node's status with no limit hit: up 5 s, one transport up, no routes.
fn node_status() -> StatusReply {
    StatusReply {
        key: key(KEY_A),
        mesh_address: "fd00::1".parse().unwrap(),
        listen: "[::]:7777".parse().unwrap(),
        uptime_secs: 5,
        transports: 1,
        links_up: 1,
        routes: 0,
        rules: 0,
        mesh_tcp: Default::default(),
        outbox: Default::default(),
    }
}

#[test]
fn status_is_a_block_of_named_lines() {
    let text = reply_text(&Reply::Status(StatusReply {
        uptime_secs: 3_725,
        transports: 3,
        links_up: 2,
        routes: 1,
        rules: 4,
        ..node_status()
    }));
    assert_eq!(
        text,
        format!(
            "node          {KEY_A}\nmesh address  fd00::1\nlisten        [::]:7777\nuptime        1h 02m\ntransports    3 (2 up)\nroutes        1\nrules         4"
        )
    );
}

#[test]
fn status_names_each_limit_the_node_has_hit() {
    let mut status = node_status();
    status.mesh_tcp.sockets_limit = 1024;
    status.outbox.limit = 4096;
    let quiet = reply_text(&Reply::Status(status.clone()));
    assert!(
        !quiet.contains("refused") && !quiet.contains("outbox"),
        "{quiet}"
    );
    status.mesh_tcp.syns_refused.not_admitted = 40;
    status.mesh_tcp.syns_refused.peer_half_open = 2;
    status.outbox.dropped = 7;
    let text = reply_text(&Reply::Status(status));
    assert!(
        text.contains("SYNs refused  42 (40 not admitted, 2 over a key's half-open cap,"),
        "{text}"
    );
    assert!(
        text.contains("outbox full   7 datagrams dropped at its limit of 4096"),
        "{text}"
    );
}

#[test]
fn transports_are_a_table_with_full_keys() {
    let rows = vec![
        TransportRow {
            key: key(KEY_B),
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
            key: key(KEY_C),
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
    let text = reply_text(&Reply::Transports(TransportsReply { transports: rows }));
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
    assert!(
        reply_text(&Reply::Transports(TransportsReply { transports: vec![] }))
            .contains("no transports")
    );
}

#[test]
fn routes_and_rules_are_two_tables() {
    let text = reply_text(&Reply::Routes(RoutesReply {
        routes: vec![route(true)],
        rules: vec![
            RuleRow {
                id: 5678,
                action: "consume",
                from: Some(key(KEY_B)),
                to: Some(key(KEY_C)),
                next_id: None,
                packets: 10,
                bytes: 2048,
                expires_in_secs: 25.0,
            },
            RuleRow {
                id: 42,
                action: "forward",
                from: Some(key(KEY_B)),
                to: Some(key(KEY_C)),
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

    let empty = reply_text(&Reply::Routes(RoutesReply {
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
    let text = reply_text(&Reply::RouteBuilt(route(true)));
    assert!(
        text.starts_with(&format!("route to {KEY_C} ready\n")),
        "{text}"
    );
    assert!(text.contains("ids: out 1234, in 5678"), "{text}");
    let text = reply_text(&Reply::RouteBuilt(route(false)));
    assert!(text.contains("handshake pending"), "{text}");
    assert_eq!(
        reply_text(&Reply::RouteRemoved { peer: key(KEY_B) }),
        format!("route to {KEY_B} removed")
    );
}

#[test]
fn ping_shows_replies_and_a_summary() {
    let text = reply_text(&Reply::Ping(PingReply {
        peer: key(KEY_B),
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
    let text = reply_text(&Reply::Ping(PingReply {
        peer: key(KEY_B),
        address: "fd00::2".parse().unwrap(),
        sent: 1,
        rtt_ms: vec![],
    }));
    assert!(text.ends_with("1 sent, 0 received, 100% loss"), "{text}");
}

#[test]
fn response_lines_hold_the_data_untagged_or_the_error() {
    let line = response_line("rm_route", &Err(RequestError::NoRoute { peer: key(KEY_B) }));
    assert_eq!(
        line,
        format!("{{\"ok\":false,\"command\":\"rm_route\",\"error\":\"no route to {KEY_B}: `list_routes` shows the routes\"}}\n").into_bytes()
    );
    let line = response_line("rm_route", &Ok(Reply::RouteRemoved { peer: key(KEY_B) }));
    let answer = Answer::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
    assert_eq!(answer.result.unwrap(), serde_json::json!({ "peer": KEY_B }));
    assert_eq!(answer.text.unwrap(), format!("route to {KEY_B} removed"));

    let status = Reply::Status(node_status());
    let line = response_line("status", &Ok(status));
    let answer = Answer::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
    let result = answer.result.unwrap();
    assert_eq!(result["key"], KEY_A);
    assert_eq!(result["mesh_address"], "fd00::1");
    assert!(result.get("status").is_none(), "{result}");
    assert_eq!(reply_text(&Reply::Stopped), "the dataplane has stopped");
}

#[test]
fn status_adds_the_signal_servers_state() {
    let node = node_status();
    let read =
        |line: Vec<u8>| Answer::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
    let listening = ListenerState::Listening {
        address: "127.0.0.1:7999".parse().unwrap(),
    };
    let answer = read(status_line(
        "status",
        &node,
        &listening,
        &Default::default(),
    ));
    let result = answer.result.unwrap();
    assert_eq!(result["key"], KEY_A);
    assert_eq!(
        result["signal_server"],
        serde_json::json!({"state": "listening", "address": "127.0.0.1:7999"})
    );
    assert!(answer
        .text
        .unwrap()
        .ends_with("\nrules         0\nsignal server listening on 127.0.0.1:7999"));

    let retrying = ListenerState::Retrying {
        address: "127.0.0.1:7999".parse().unwrap(),
        error: "Address already in use (os error 98)".to_owned(),
        retry_in_ms: 4_200,
    };
    let answer = read(status_line("status", &node, &retrying, &Default::default()));
    assert_eq!(answer.result.unwrap()["signal_server"]["state"], "retrying");
    assert!(answer.text.unwrap().ends_with(
        "signal server retrying: cannot listen on 127.0.0.1:7999: Address already in use (os error 98); next try in 4.2 s"
    ));
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
}

const KEY_D: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

fn found(route_in_use: Option<Vec<NodeKey>>) -> skywire_dataplane::api::topology::FoundRoute {
    skywire_dataplane::api::topology::FoundRoute {
        peer: key(KEY_D),
        path: vec![key(KEY_A), key(KEY_B), key(KEY_D)],
        cost_ms: 0.84,
        hop_costs_ms: vec![0.42, 0.42],
        route_in_use,
    }
}

#[test]
fn a_found_route_lists_its_hops_with_full_keys_and_says_what_is_in_use() {
    let text = reply_text(&Reply::RouteFound(found(None)));
    // The node column is as wide as its widest cell, a full key and "(this node)".
    let this = format!("{KEY_A} (this node)");
    assert_eq!(
        text,
        format!(
            "path to {KEY_D}: 2 hops, cost 0.84 ms\n\
             HOP  {:<58}LINK COST\n\
             0    {this}\n\
             1    {KEY_B:<58}0.42 ms\n\
             2    {KEY_D:<58}0.42 ms\n\
             route in use: none (`build_route KEY` sets one up over this path)",
            "NODE"
        )
    );
    let same = found(Some(vec![key(KEY_A), key(KEY_B), key(KEY_D)]));
    let text = reply_text(&Reply::RouteFound(same));
    assert!(text.ends_with("route in use: over this path"), "{text}");
    let other = found(Some(vec![key(KEY_A), key(KEY_C), key(KEY_D)]));
    let text = reply_text(&Reply::RouteFound(other));
    assert!(
        text.ends_with(
            "route in use: over AAAAAAAA… → AgICAgIC… → AwMDAwMD… (a route keeps its path until it breaks)"
        ),
        "{text}"
    );
}

#[test]
fn the_known_graph_lists_nodes_with_their_services_then_each_link_once_then_the_adverts() {
    use skywire_dataplane::api::topology::{AdvertCounts, LinkRow, NodeRow, NodesReply};
    use skywire_dataplane::topology::AdvertDrops;
    use skywire_dataplane::wire::ServiceEntry;
    let link = |neighbour: &str, rtt_ms: f64, cost_ms: Option<f64>| LinkRow {
        neighbour: key(neighbour),
        rtt_ms,
        cost_ms,
    };
    let service = |name: &str, port: u16| ServiceEntry {
        name: name.parse().unwrap(),
        port,
    };
    let node = |own: &str, this_node: bool, links: Vec<LinkRow>, services| NodeRow {
        key: key(own),
        this_node,
        sequence: 1_765_000_000_123,
        advert_age_secs: 1.25,
        expires_in_secs: 238.0,
        links,
        services,
    };
    let reply = NodesReply {
        nodes: vec![
            node(KEY_A, true, vec![link(KEY_B, 0.2, Some(0.25))], vec![]),
            node(
                KEY_B,
                false,
                vec![link(KEY_A, 0.25, Some(0.25)), link(KEY_C, 0.3, None)],
                vec![service("messenger", 100), service("echo", 5000)],
            ),
        ],
        adverts: AdvertCounts {
            sent: 12,
            sent_bytes: 1700,
            dropped: AdvertDrops {
                duplicate: 3,
                own: 1,
                ..AdvertDrops::default()
            },
        },
    };
    let text = reply_text(&Reply::Nodes(reply));
    let this = format!("{KEY_A} (this node)");
    assert_eq!(
        text,
        format!(
            "nodes: 2\n\
             {:<58}LINKS  ADVERT AGE  EXPIRES IN  SEQUENCE       SERVICES\n\
             {this}  1      1.2 s       3m 58s      1765000000123  -\n\
             {KEY_B:<58}2      1.2 s       3m 58s      1765000000123  messenger:100, echo:5000\n\
             \n\
             links: 2 (cost: the larger round trip of the two ends; `-`: only one end advertises it, so it is not used)\n\
             NODE       NEIGHBOUR  RTT      RTT BACK  COST\n\
             AAAAAAAA…  AQEBAQEB…  0.20 ms  0.25 ms   0.25 ms\n\
             AQEBAQEB…  AgICAgIC…  0.30 ms  -         -\n\
             \n\
             adverts: 12 sent (1.7 KiB); dropped: 3 duplicate, 1 own coming back",
            "NODE"
        )
    );
    let empty = reply_text(&Reply::Nodes(NodesReply {
        nodes: vec![],
        adverts: AdvertCounts {
            sent: 0,
            sent_bytes: 0,
            dropped: AdvertDrops::default(),
        },
    }));
    assert!(empty.starts_with("nodes: none yet"), "{empty}");
    assert!(empty.ends_with("dropped: none"), "{empty}");
}
