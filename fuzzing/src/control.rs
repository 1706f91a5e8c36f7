//! What a control-socket client sends: a byte stream cut into lines, and each line read as
//! viscript (the tokenizer, then the command table).

use skywire_control::command::{self, join_words, tokenize};
use skywire_control::MAX_LINE;

use crate::Seed;

/// The input's first byte says how large the pieces are in which the rest arrives (1 to 256
/// bytes); the server's line splitter cuts them into lines, and each line goes on as the server
/// takes it (UTF-8, a trailing carriage return dropped) to the viscript parser. Lines stay
/// within the limit and hold no new line, and the lines are the stream's own bytes. Accepted
/// when a line parsed as a command.
pub fn control_lines(data: &[u8]) -> bool {
    let Some((&piece, stream)) = data.split_first() else {
        return false;
    };
    let lines = skywire_control::fuzzing::control_lines(stream.chunks(usize::from(piece) + 1));
    // One piece per line ended by a new line, and one for an unfinished line over the limit.
    let complete = stream.iter().filter(|&&byte| byte == b'\n').count();
    let unfinished = stream
        .rsplit(|&byte| byte == b'\n')
        .next()
        .unwrap_or_default();
    assert_eq!(
        lines.len(),
        complete + usize::from(unfinished.len() > MAX_LINE)
    );
    let mut accepted = false;
    let mut rest = stream;
    for line in lines {
        let end = rest.iter().position(|&byte| byte == b'\n');
        let (sent, after) = rest.split_at(end.unwrap_or(rest.len()));
        rest = after.get(1..).unwrap_or_default();
        let Some(line) = line else {
            assert!(sent.len() > MAX_LINE, "a line within the limit was skipped");
            continue;
        };
        assert_eq!(line, sent);
        let Ok(line) = String::from_utf8(line) else {
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        accepted |= matches!(command::parse(line), Ok(Some(_)));
    }
    accepted
}

/// One line of viscript, as the control socket, `visctl -f` scripts and the prompt take it:
/// the words it splits into join back into a line that splits into the same words, and the
/// command table reads it or names what is wrong. Accepted when it is a command.
pub fn viscript(data: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(data) else {
        return false;
    };
    if let Ok(words) = tokenize(line) {
        assert_eq!(tokenize(&join_words(&words)), Ok(words));
    }
    match command::parse(line) {
        Ok(Some(command)) => {
            let _ = (command.name(), command.request(), command.is_app_command());
            true
        }
        Ok(None) => false,
        Err(error) => {
            let _ = (error.to_string(), error.command());
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
        ("status", vec!["status"]),
        ("build_route", vec!["build_route", &key, &other]),
        ("ping_node", vec!["pn", &other, "4"]),
        ("vpn", vec!["vpn", "start", "server"]),
        ("socks", vec!["socks", "status"]),
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
        ("logs", vec!["logs", "1", "20"]),
        ("help", vec!["help", "build_route"]),
    ];
    lines
        .into_iter()
        .map(|(name, words)| (name, join_words(&words)))
        .collect()
}

/// A client's session: every sample line, a comment, a blank line and a carriage return, in
/// pieces of 1, 5 and 256 bytes.
pub fn control_lines_seeds() -> Vec<Seed> {
    let mut stream = String::new();
    for (_, line) in sample_lines() {
        stream.push_str(&line);
        stream.push('\n');
    }
    stream.push_str("# a comment\n\nstatus\r\n");
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
