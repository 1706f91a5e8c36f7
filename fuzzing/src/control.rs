//! What a control-socket client sends: a byte stream that a control connection cuts into
//! lines and runs, and each line read as viscript (the tokenizer, then the command table).

use skywire_control::command::{self, join_words, tokenize, AppCommand, DETACH_LINE};
use skywire_control::fuzzing::{control_connection, ConnectionAction};
use skywire_control::signal::AppId;
use skywire_control::{Command, Parsed, MAX_LINE};

use crate::Seed;

/// The app a command attaches the connection to, as the harness answers it: `attach ID` and
/// `start -a` (which attaches to app 1) do.
fn attaches(parsed: &Parsed) -> Option<AppId> {
    match parsed.command {
        Command::App(AppCommand::Attach { id }) => Some(id),
        Command::App(AppCommand::Start { attach: true, .. }) => Some(1),
        _ => None,
    }
}

/// The input's first byte says how large the pieces are in which the rest arrives (1 to 256
/// bytes); a control connection takes them (and then the end of the input) as the server
/// reads them, each command answered at once, and what it hands the loop and replies must be
/// what its lines say, however the stream was cut: a command for each line that parses; for
/// an attached connection each line as the app's input until `.detach` or the end; an error
/// reply for a line over [`MAX_LINE`], not UTF-8, or not a command. Every reply is one JSON
/// object a line. Accepted when a line ran as a command.
pub fn control_lines(data: &[u8]) -> bool {
    let Some((&piece, stream)) = data.split_first() else {
        return false;
    };
    let run = control_connection(stream.chunks(usize::from(piece) + 1), attaches);
    let (expected, replies) = what_the_lines_say(stream);
    assert_eq!(run.actions, expected);
    let output = std::str::from_utf8(&run.output).expect("replies are UTF-8");
    let mut count = 0;
    for line in output.lines() {
        let reply: serde_json::Value = serde_json::from_str(line).expect("a reply is JSON");
        assert!(reply.is_object(), "{line}");
        count += 1;
    }
    assert_eq!(count, replies, "{output}");
    assert!(run.output.is_empty() || run.output.ends_with(b"\n"));
    run.actions
        .iter()
        .any(|action| matches!(action, ConnectionAction::Run(_)))
}

/// What a connection must make of `stream` followed by its end: its actions, and how many
/// replies it writes.
fn what_the_lines_say(stream: &[u8]) -> (Vec<ConnectionAction>, usize) {
    let mut actions = Vec::new();
    let mut replies = 0;
    let mut attached = false;
    let mut lines: Vec<&[u8]> = stream.split(|&byte| byte == b'\n').collect();
    // What follows the last new line is no line; only when it is over the limit already does
    // it get its error.
    let unfinished = lines.pop().unwrap_or_default();
    for line in lines {
        if line.len() > MAX_LINE {
            replies += 1;
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            replies += 1;
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if attached {
            if line.trim() == DETACH_LINE {
                attached = false;
                actions.push(ConnectionAction::Detach);
                replies += 1;
            } else {
                actions.push(ConnectionAction::Input(line.to_owned()));
            }
            continue;
        }
        match command::parse_line(line) {
            Ok(None) => {}
            Err(_) => replies += 1,
            Ok(Some(parsed)) => {
                attached = attaches(&parsed).is_some();
                actions.push(ConnectionAction::Run(parsed));
                replies += 1;
            }
        }
    }
    if unfinished.len() > MAX_LINE {
        replies += 1;
    }
    if attached {
        actions.push(ConnectionAction::Detach);
        replies += 1;
    }
    (actions, replies)
}

/// One line of viscript, as the control socket, `visctl -f` scripts and the prompt take it:
/// the words it splits into join back into a line that splits into the same words, and the
/// command table reads it or names what is wrong; an error names a command exactly when the
/// line's first word is one. Accepted when it is a command.
pub fn viscript(data: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(data) else {
        return false;
    };
    let words = tokenize(line);
    if let Ok(words) = &words {
        assert_eq!(tokenize(&join_words(words)).as_ref(), Ok(words));
    }
    let named = words
        .as_ref()
        .ok()
        .and_then(|words| words.first())
        .and_then(|name| command::find(name));
    match command::parse_line(line) {
        Ok(Some(parsed)) => {
            let spec = named.expect("a command that parsed is named by its first word");
            assert_eq!(parsed.spec.name, spec.name);
            true
        }
        Ok(None) => {
            assert!(words.is_ok_and(|words| words.is_empty()));
            false
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            assert_eq!(error.command(), named.map(|spec| spec.name), "{error}");
            false
        }
    }
}

/// Command lines as `visctl` writes them: every command of the table with arguments, one
/// quoted and with escapes.
fn sample_lines() -> Vec<(&'static str, String)> {
    let key = skywire_dataplane::SecretKey::from([2; 32])
        .public()
        .to_string();
    let other = skywire_dataplane::SecretKey::from([3; 32])
        .public()
        .to_string();
    let lines: Vec<(&str, Vec<&str>)> = vec![
        ("help", vec!["help", "build_route"]),
        ("status", vec!["status"]),
        ("list_transports", vec!["lt"]),
        (
            "add_neighbour",
            vec!["add_neighbour", &key, "192.0.2.1:7777"],
        ),
        ("rm_neighbour", vec!["rm_neighbour", &key]),
        ("list_routes", vec!["list_routes"]),
        ("build_route", vec!["build_route", &key, &other]),
        ("find_route", vec!["fr", &other]),
        ("list_nodes", vec!["list_nodes"]),
        ("rm_route", vec!["rr", &other]),
        ("ping_node", vec!["pn", &other, "4"]),
        ("services", vec!["services", "messenger"]),
        ("vpn", vec!["vpn", "start", "server"]),
        ("socks", vec!["socks", "status"]),
        (
            "msg",
            vec!["msg", "send", &other, "hello  there", "# not a comment"],
        ),
        ("reload", vec!["reload"]),
        ("apps", vec!["apps"]),
        (
            "start",
            vec![
                "start",
                "-a",
                "signal-example",
                "two words",
                "tab\there \"q\"",
            ],
        ),
        ("list_apps", vec!["la", "-f"]),
        ("ping", vec!["ping", "1"]),
        ("res_usage", vec!["ru", "1"]),
        ("shutdown", vec!["shutdown", "1"]),
        ("attach", vec!["attach", "3"]),
        ("logs", vec!["logs", "1", "20"]),
    ];
    lines
        .into_iter()
        .map(|(name, words)| (name, join_words(&words)))
        .collect()
}

/// A client's session, in pieces of 1, 5 and 256 bytes: every sample line that does not
/// attach, an attached stretch that ends with `.detach`, a comment, a blank line, a line that
/// is no command, a carriage return, and an attached stretch that the end of the input ends.
pub fn control_lines_seeds() -> Vec<Seed> {
    let samples = sample_lines();
    let attaching = |line: &str| {
        command::parse_line(line)
            .ok()
            .flatten()
            .and_then(|parsed| attaches(&parsed))
            .is_some()
    };
    let mut stream = String::new();
    for (_, line) in samples.iter().filter(|(_, line)| !attaching(line)) {
        stream.push_str(line);
        stream.push('\n');
    }
    stream.push_str("attach 3\nhello app\n  .detach  \n# a comment\n\nnot_a_command x\nstatus\r\n");
    for (_, line) in samples.iter().filter(|(_, line)| attaching(line)) {
        stream.push_str(line);
        stream.push_str("\na line for the app\n");
    }
    [0u8, 4, 255]
        .into_iter()
        .map(|piece| {
            let mut bytes = vec![piece];
            bytes.extend_from_slice(stream.as_bytes());
            Seed::new(format!("session_{}.bin", usize::from(piece) + 1), bytes)
        })
        .collect()
}

/// Each sample line.
pub fn viscript_seeds() -> Vec<Seed> {
    sample_lines()
        .into_iter()
        .map(|(name, line)| Seed::new(format!("{name}.vis"), line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_the_table_has_a_sample_line() {
        let samples = sample_lines();
        for spec in skywire_control::COMMANDS {
            let sample = samples.iter().find(|(name, _)| *name == spec.name);
            let (_, line) = sample
                .unwrap_or_else(|| panic!("`{}` has no sample line in sample_lines()", spec.name));
            let parsed = command::parse_line(line).unwrap().unwrap();
            assert_eq!(parsed.spec.name, spec.name, "{line}");
        }
    }
}
