//! The control socket's line format: a request is one line of viscript, a reply one JSON object
//! on one line, `{"ok":true,"command":…,"result":…,"text":…}` or
//! `{"ok":false,"command":…,"error":…}`. Both the server and the client read and write it here.

use serde::{Deserialize, Serialize};

/// Longest request line, in bytes, without its new line.
pub const MAX_LINE: usize = 65_536;

/// Longest reply line a client accepts, in bytes.
pub const MAX_REPLY_LINE: usize = 16 * 1024 * 1024;

/// A reply line as written: what the server sends.
#[derive(Debug, Serialize)]
struct Outgoing<'a, R: Serialize> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The reply line (new line included) of a command that succeeded.
pub fn success_line<R: Serialize>(command: &str, result: &R, text: &str) -> Vec<u8> {
    finish(serde_json::to_vec(&Outgoing {
        ok: true,
        command: Some(command),
        result: Some(result),
        text: Some(text),
        error: None,
    }))
    .unwrap_or_else(|err| {
        failure_line(
            Some(command),
            &format!("the reply could not be written as JSON ({err}); this is a bug in skywired"),
        )
    })
}

/// The reply line (new line included) of a command that failed; `command` when the line named
/// a known one.
pub fn failure_line(command: Option<&str>, error: &str) -> Vec<u8> {
    let outgoing: Outgoing<'_, ()> = Outgoing {
        ok: false,
        command,
        result: None,
        text: None,
        error: Some(error),
    };
    // Strings and a bool always serialize; the fallback only keeps this free of panics.
    finish(serde_json::to_vec(&outgoing))
        .unwrap_or_else(|_| b"{\"ok\":false,\"error\":\"internal error\"}\n".to_vec())
}

fn finish(json: serde_json::Result<Vec<u8>>) -> serde_json::Result<Vec<u8>> {
    json.map(|mut line| {
        line.push(b'\n');
        line
    })
}

/// A reply line as read: what a client receives.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Answer {
    /// Whether the command succeeded.
    pub ok: bool,
    /// The command's name, when the line named a known one.
    #[serde(default)]
    pub command: Option<String>,
    /// The result as data (successes only).
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The result for people (successes only).
    #[serde(default)]
    pub text: Option<String>,
    /// What went wrong and what to do (failures only).
    #[serde(default)]
    pub error: Option<String>,
    /// The line as received, without its new line.
    #[serde(skip)]
    pub raw: String,
}

impl Answer {
    /// Reads one reply line (without its new line).
    pub fn parse(line: &str) -> serde_json::Result<Answer> {
        let mut answer: Answer = serde_json::from_str(line)?;
        answer.raw = line.to_owned();
        Ok(answer)
    }

    /// The error message of a failure, or a stand-in when the server sent none.
    pub fn error_message(&self) -> &str {
        self.error
            .as_deref()
            .unwrap_or("the command failed without saying why")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn success_and_failure_lines_read_back() {
        let line = success_line("status", &serde_json::json!({"status": {"a": 1}}), "a\nb");
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        assert_eq!(
            text,
            r#"{"ok":true,"command":"status","result":{"status":{"a":1}},"text":"a\nb"}"#
        );
        let answer = Answer::parse(text).unwrap();
        assert!(answer.ok);
        assert_eq!(answer.text.as_deref(), Some("a\nb"));
        assert_eq!(answer.raw, text);

        let line = failure_line(None, "unknown command");
        assert_eq!(line, b"{\"ok\":false,\"error\":\"unknown command\"}\n");
        let line = failure_line(Some("rm_route"), "no route");
        let answer = Answer::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
        assert!(!answer.ok);
        assert_eq!(answer.command.as_deref(), Some("rm_route"));
        assert_eq!(answer.error_message(), "no route");
    }
}
