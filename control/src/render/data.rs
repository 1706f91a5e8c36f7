//! Text for data that has no text of its own: an object as named values, a list of objects as a
//! table, nested objects indented under their name. A new reply reads well enough this way
//! until it gets a text written for it.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Table;

/// How far nested objects are indented, per level.
const INDENT: &str = "  ";

/// The text of `value`; no trailing new line.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::Object(fields) => object(fields),
        Value::Array(items) => list(items),
        scalar => cell(scalar),
    }
}

/// A value that fits in one cell: scalars as they are, lists of scalars joined, anything
/// deeper as compact JSON.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) if items.iter().all(is_scalar) => {
            items.iter().map(cell).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

fn is_table(value: &Value) -> bool {
    matches!(value, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
}

fn object(fields: &Map<String, Value>) -> String {
    let width = fields
        .iter()
        .filter(|(_, value)| !value.is_object() && !is_table(value))
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    let mut blocks = Vec::new();
    for (name, value) in fields {
        if let Value::Object(nested) = value {
            let inner = object(nested);
            let mut block = format!("{name}:");
            for line in inner.lines() {
                let _ = write!(block, "\n{INDENT}{line}");
            }
            blocks.push(block);
        } else if is_table(value) {
            blocks.push(format!("{name}:\n{}", list_of(value)));
        } else {
            lines.push(
                format!("{name:<width$}  {}", cell(value))
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    lines.extend(blocks);
    lines.join("\n")
}

fn list_of(value: &Value) -> String {
    match value {
        Value::Array(items) => list(items),
        other => cell(other),
    }
}

/// A list: a table when it holds objects (one column per field, in order of appearance).
fn list(items: &[Value]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    if !items.iter().all(Value::is_object) {
        return items.iter().map(cell).collect::<Vec<_>>().join("\n");
    }
    let mut columns: Vec<&str> = Vec::new();
    for fields in items.iter().filter_map(Value::as_object) {
        for name in fields.keys() {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let header: Vec<String> = columns
        .iter()
        .map(|name| name.replace('_', " ").to_uppercase())
        .collect();
    let mut table = Table::new(&header);
    for fields in items.iter().filter_map(Value::as_object) {
        table.row(
            columns
                .iter()
                .map(|name| fields.get(*name).map_or_else(|| "-".to_owned(), cell))
                .collect(),
        );
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_are_named_lines_and_lists_of_objects_tables() {
        let value = json!({
            "key": "AAAA",
            "count": 3,
            "up": true,
            "gone": null,
            "peers": ["a", "b"],
            "nodes": [
                {"key": "AAAA", "rtt_ms": 1.5},
                {"key": "BBBB", "services": ["vpn"]},
            ],
            "limits": {"max": 10, "used": 2},
        });
        assert_eq!(
            text(&value),
            "key    AAAA\n\
             count  3\n\
             up     true\n\
             gone   -\n\
             peers  a, b\n\
             nodes:\n\
             KEY   RTT MS  SERVICES\n\
             AAAA  1.5     -\n\
             BBBB  -       vpn\n\
             limits:\n  max   10\n  used  2"
        );
    }

    #[test]
    fn empty_and_scalar_values_read_plainly() {
        assert_eq!(text(&json!([])), "none");
        assert_eq!(text(&json!("text")), "text");
        assert_eq!(text(&json!({"items": []})), "items  none");
        assert_eq!(text(&json!([1, 2])), "1\n2");
    }
}
