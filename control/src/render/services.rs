//! Text for `services`: who offers which service, on which port, and what the path there
//! costs. Keys are shown whole: users copy them into a dial.

use skywire_dataplane::api::services::ServicesReply;

use super::{millis, Table};

pub(super) fn services(reply: &ServicesReply) -> String {
    if reply.services.is_empty() {
        return match &reply.name {
            Some(name) => format!("no node advertises `{name}`"),
            None => "no node advertises a service".to_owned(),
        };
    }
    let mut table = Table::new(&["SERVICE", "NODE", "PORT", "COST", "HOPS"]);
    for row in &reply.services {
        let (cost, hops) = match (row.own, row.cost_ms, row.hops) {
            (true, _, _) => ("-".to_owned(), "this node".to_owned()),
            (false, Some(cost), Some(hops)) => (millis(cost), hops.to_string()),
            _ => ("no path".to_owned(), "-".to_owned()),
        };
        let service = if row.builtin {
            format!("{} (built-in)", row.service)
        } else {
            row.service.to_string()
        };
        table.row(vec![
            service,
            row.node.to_string(),
            row.port.to_string(),
            cost,
            hops,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use skywire_dataplane::api::services::ServiceRow;
    use skywire_dataplane::NodeKey;

    use super::*;

    fn row(service: &str, own: bool, cost_ms: Option<f64>, hops: Option<usize>) -> ServiceRow {
        let service = service.parse().unwrap();
        ServiceRow {
            builtin: service == "socks-server".parse().unwrap(),
            service,
            node: NodeKey::from([if own { 1 } else { 2 }; 32]),
            port: 5000,
            own,
            cost_ms,
            hops,
        }
    }

    #[test]
    fn rows_show_the_node_port_and_path_cost() {
        let reply = ServicesReply {
            name: None,
            services: vec![
                row("chat", false, Some(1.5), Some(2)),
                row("chat", false, None, None),
                row("socks-server", true, Some(0.0), Some(0)),
            ],
        };
        let text = services(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICE"), "{text}");
        assert!(
            lines[1].starts_with("chat ") && lines[1].ends_with("1.50 ms  2"),
            "{text}"
        );
        assert!(lines[2].ends_with("no path  -"), "{text}");
        assert!(lines[3].starts_with("socks-server (built-in)"), "{text}");
        assert!(lines[3].ends_with("this node"), "{text}");
        assert!(
            text.contains(&NodeKey::from([2; 32]).to_string()),
            "whole keys"
        );
    }

    #[test]
    fn nothing_found_says_so() {
        let none = ServicesReply {
            name: Some("chat".parse().unwrap()),
            services: vec![],
        };
        assert_eq!(services(&none), "no node advertises `chat`");
    }
}
