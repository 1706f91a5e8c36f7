//! The text of `res_usage`: what /proc says about an app, then what the app reports about
//! itself, a few readable lines of it. A Go app reports its whole `MemStats` (about 10 KB of
//! JSON): that shows as heap in use, system memory and GC runs. `--json` keeps the whole report.

use serde_json::{Map, Value};

use super::{bytes, data, duration, two_places};
use crate::supervisor::ResourceUsage;

/// Fields of a report shown as text; `--json` has the rest.
const MAX_FIELDS: usize = 16;
/// Characters of one reported value shown as text.
const MAX_VALUE: usize = 120;

/// The text of a `res_usage` result.
pub(super) fn text(usage: &ResourceUsage) -> String {
    let mut rows = vec![
        (
            "app".to_owned(),
            format!("{} ({}), pid {}", usage.id, usage.name, usage.pid),
        ),
        (
            "cpu".to_owned(),
            format!("{} %", two_places(usage.cpu_percent)),
        ),
        ("memory".to_owned(), bytes(usage.rss_bytes)),
        ("threads".to_owned(), usage.threads.to_string()),
        ("open files".to_owned(), usage.open_files.to_string()),
        ("uptime".to_owned(), duration(usage.uptime_secs)),
        ("restarts".to_owned(), usage.restarts.to_string()),
    ];
    let mut text = match (&usage.reported, &usage.report_error) {
        (Some(report), _) => {
            let reported = report_lines(report);
            let mut text = aligned(&rows, NAME_WIDTH);
            text.push_str("\nreported:");
            for line in reported.lines() {
                text.push_str("\n  ");
                text.push_str(line);
            }
            text
        }
        (None, error) => {
            let nothing = match error {
                Some(error) => format!("nothing: {error}"),
                None => "nothing".to_owned(),
            };
            rows.push(("reported".to_owned(), nothing));
            aligned(&rows, NAME_WIDTH)
        }
    };
    text.truncate(text.trim_end().len());
    text
}

/// Width of the names of `res_usage`'s own rows.
const NAME_WIDTH: usize = 10;

/// Rows as `name  value`, the values in one column at least `min_width` from the start.
fn aligned(rows: &[(String, String)], min_width: usize) -> String {
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .max(min_width);
    rows.iter()
        .map(|(name, value)| format!("{name:<width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What an app reported, as lines.
fn report_lines(report: &Value) -> String {
    let Value::Object(fields) = report else {
        return cut(&data::cell(report));
    };
    if let Some(rows) = go_memory(fields) {
        let more = fields.len().saturating_sub(3);
        let mut text = aligned(&rows, 0);
        text.push_str(&format!(
            "\n({more} more fields of Go's MemStats: --json shows them)"
        ));
        return text;
    }
    let mut rows = Vec::new();
    for (name, value) in fields.iter().take(MAX_FIELDS) {
        match value {
            Value::Object(nested) => match go_memory(nested) {
                Some(memory) => rows.extend(
                    memory
                        .into_iter()
                        .map(|(what, value)| (format!("{name} {what}"), value)),
                ),
                None => rows.push((name.clone(), count_note(nested.len(), "field"))),
            },
            Value::Array(items) if items.iter().any(|item| item.is_object()) => {
                rows.push((name.clone(), count_note(items.len(), "item")));
            }
            value => rows.push((name.clone(), cut(&data::cell(value)))),
        }
    }
    if rows.is_empty() {
        return "nothing (an empty report)".to_owned();
    }
    let mut text = aligned(&rows, 0);
    if fields.len() > MAX_FIELDS {
        text.push_str(&format!(
            "\n({} more fields: --json shows them)",
            fields.len() - MAX_FIELDS
        ));
    }
    text
}

fn count_note(count: usize, what: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {what}{plural} (--json shows them)")
}

/// Heap in use, system memory and GC runs, if `fields` is a Go `runtime.MemStats`.
fn go_memory(fields: &Map<String, Value>) -> Option<Vec<(String, String)>> {
    let number = |name: &str| fields.get(name).and_then(Value::as_u64);
    let (heap, system, runs) = (number("HeapInuse")?, number("Sys")?, number("NumGC")?);
    Some(vec![
        ("heap in use".to_owned(), bytes(heap)),
        ("system memory".to_owned(), bytes(system)),
        ("GC runs".to_owned(), runs.to_string()),
    ])
}

/// A value cut to [`MAX_VALUE`] characters.
fn cut(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn usage(reported: Option<Value>) -> ResourceUsage {
        ResourceUsage {
            id: 3,
            name: "meshnet".to_owned(),
            pid: 4242,
            cpu_percent: 1.5,
            rss_bytes: 12 << 20,
            threads: 7,
            open_files: 9,
            uptime_secs: 75.0,
            restarts: 0,
            reported,
            report_error: None,
        }
    }

    /// A report the size of a Go app's: `runtime.MemStats` with its 256-entry arrays.
    fn mem_stats() -> Value {
        let mut stats = json!({
            "Alloc": 2_000_000, "TotalAlloc": 9_000_000, "Sys": 12_582_912,
            "Lookups": 0, "Mallocs": 30_000, "Frees": 20_000, "HeapAlloc": 2_000_000,
            "HeapSys": 7_864_320, "HeapIdle": 4_000_000, "HeapInuse": 3_355_443,
            "HeapReleased": 3_000_000, "HeapObjects": 10_000, "StackInuse": 500_000,
            "StackSys": 500_000, "NextGC": 4_194_304, "LastGC": 1_700_000_000_000_000_000u64,
            "PauseTotalNs": 1_000_000, "NumGC": 12, "NumForcedGC": 0,
            "GCCPUFraction": 0.0001, "EnableGC": true, "DebugGC": false,
            "BySize": (0..61).map(|size| json!({"Size": size * 16, "Mallocs": 5, "Frees": 4})).collect::<Vec<_>>(),
        });
        stats["PauseNs"] = json!(vec![12_345; 256]);
        stats["PauseEnd"] = json!(vec![1_700_000_000_000_000_000u64; 256]);
        stats
    }

    #[test]
    fn go_mem_stats_read_as_three_lines() {
        let report = mem_stats();
        assert!(report.to_string().len() > 8_000);
        let text = text(&usage(Some(report)));
        assert!(text.lines().count() <= 13, "{text}");
        assert!(text.lines().all(|line| line.len() < 100), "{text}");
        for expected in [
            "app         3 (meshnet), pid 4242",
            "memory      12.0 MiB",
            "reported:",
            "  heap in use    3.2 MiB",
            "  system memory  12.0 MiB",
            "  GC runs        12",
            "--json shows them",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn mem_stats_inside_a_report_keep_their_name() {
        let report = json!({"Node": "AAAA", "Mem": mem_stats()});
        let text = text(&usage(Some(report)));
        assert!(text.contains("  Node               AAAA"), "{text}");
        assert!(text.contains("  Mem heap in use    3.2 MiB"), "{text}");
        assert!(text.contains("  Mem GC runs        12"), "{text}");
    }

    #[test]
    fn other_reports_are_named_values() {
        let text = text(&usage(Some(json!({
            "Requests": 3,
            "Ticks": 10,
            "Peers": [{"key": "a"}],
            "Config": {"a": 1, "b": 2},
            "Note": "x".repeat(500),
        }))));
        assert!(
            text.contains("\nreported:\n  Requests  3\n  Ticks     10\n"),
            "{text}"
        );
        assert!(
            text.contains("  Peers     1 item (--json shows them)"),
            "{text}"
        );
        assert!(
            text.contains("  Config    2 fields (--json shows them)"),
            "{text}"
        );
        assert!(
            text.lines().all(|line| line.chars().count() < 140),
            "{text}"
        );

        let many: Map<String, Value> = (0..40).map(|n| (format!("F{n}"), json!(n))).collect();
        let many = super::text(&usage(Some(Value::Object(many))));
        assert!(
            many.contains("(24 more fields: --json shows them)"),
            "{many}"
        );
    }

    #[test]
    fn no_report_says_why() {
        let mut silent = usage(None);
        silent.report_error = Some("app 3 has not registered".to_owned());
        let text = text(&silent);
        assert!(
            text.ends_with("reported    nothing: app 3 has not registered"),
            "{text}"
        );
        assert!(text.starts_with("app         3 (meshnet), pid 4242\ncpu         1.50 %"));
    }
}
