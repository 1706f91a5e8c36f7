//! Every text the control socket's replies carry for people, and the reply lines themselves:
//! the dataplane's replies (`node`, `topology`, `builtin`), the launched apps' (`launched`,
//! `usage`), `help` (`help`), and any data without a text of its own (`data`). `visctl` prints
//! these texts; `--json` shows the data they were made from.

mod builtin;
mod data;
mod help;
mod launched;
mod node;
mod topology;
mod usage;

use std::fmt::Write as _;

use skywire_dataplane::api::{Reply, Response};

use crate::protocol::{failure_line, success_line};
pub use help::{help_line, help_overview, help_topic, local_line};
pub(crate) use launched::{
    attached_line, catalog_line, detached_line, help_app_line, list_line, logs_line, result_line,
    started_line, stream_line, DetachReason,
};
pub(crate) use node::status_line;

/// The reply line for the dataplane's response to `command`.
pub fn response_line(command: &str, response: &Response) -> Vec<u8> {
    match response {
        Ok(reply @ Reply::Neighbour(change)) => success_line(
            command,
            reply,
            &format!("{}\n{}", node::neighbour(change), node::NOT_IN_CONFIG),
        ),
        Ok(reply) => success_line(command, reply, &reply_text(reply)),
        Err(error) => failure_line(Some(command), &error.to_string()),
    }
}

/// The text of a dataplane reply; no trailing new line.
pub fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Status(status) => node::status(status),
        Reply::Transports(reply) => node::transports(&reply.transports),
        Reply::Routes(routes) => node::routes(routes),
        Reply::RouteBuilt(route) => node::route_built(route),
        Reply::RouteFound(found) => topology::found_route(found),
        Reply::Nodes(nodes) => topology::nodes(nodes),
        Reply::RouteRemoved { peer } => format!("route to {peer} removed"),
        Reply::Ping(ping) => node::ping(ping),
        Reply::Vpn(status) => builtin::vpn(status),
        Reply::Socks(status) => builtin::socks(status),
        Reply::Neighbour(change) => node::neighbour(change),
        Reply::Settings(settings) => node::settings(settings),
        Reply::AppConfigured { app, change } => builtin::app_configured(*app, *change),
        Reply::Stopped => "the dataplane has stopped".to_owned(),
        // A reply with no text of its own reads as its data: named values and tables.
        other => data::text(&serde_json::to_value(other).unwrap_or_default()),
    }
}

pub(crate) fn two_places(value: f64) -> String {
    format!("{value:.2}")
}

pub(crate) fn millis(value: f64) -> String {
    format!("{} ms", two_places(value))
}

pub(crate) fn ago(seconds: Option<f64>) -> String {
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

pub(crate) fn traffic(byte_count: u64, packets: u64) -> String {
    format!("{} / {packets} pkt", bytes(byte_count))
}

/// Columns padded to their widest cell, two spaces apart.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<S: AsRef<str>>(header: &[S]) -> Table {
        Table {
            rows: vec![header.iter().map(|name| name.as_ref().to_owned()).collect()],
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
mod tests;
