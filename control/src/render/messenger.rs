//! Text for the messenger's replies: a delivery, a mailbox's messages, and the lines of a
//! watch (`msg watch`), which is a stream as `attach` is: its first line has
//! `result.attached`, its last `result.detached`. A message's text is shown with its control
//! characters escaped, so that no sender can move a reader's cursor or colour a terminal.

use std::fmt::Write as _;

use serde::Serialize;
use skywire_dataplane::api::messenger::{
    MessageRow, MessagesReply, MessengerReply, SentReply, WatchEnd,
};

use super::{millis, Table};
use crate::command::DETACH_LINE;
use crate::protocol::success_line;

/// The command whose stream these lines are.
const COMMAND: &str = "msg";

/// Why a watch ended, as its last line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WatchDetach {
    /// The client sent `.detach` or ended its input.
    Asked,
    /// The messenger stopped: its section left the configuration.
    Stopped,
    /// skywired is stopping.
    Stopping,
}

impl From<WatchEnd> for WatchDetach {
    fn from(end: WatchEnd) -> WatchDetach {
        match end {
            WatchEnd::Stopped => WatchDetach::Stopped,
            WatchEnd::Stopping => WatchDetach::Stopping,
        }
    }
}

pub(super) fn text(reply: &MessengerReply) -> String {
    match reply {
        MessengerReply::Sent(sent) => sent_text(sent),
        MessengerReply::Messages(list) => messages(list),
        MessengerReply::Watching { .. } => watching_text(),
        MessengerReply::Arrived { message } => arrived_text(message),
        MessengerReply::WatchEnded { ended } => detached_text(WatchDetach::from(*ended)),
    }
}

fn sent_text(sent: &SentReply) -> String {
    let mut text = format!(
        "delivered to {} in {} (message {})",
        sent.peer,
        millis(sent.delivery_ms),
        sent.id
    );
    if sent.attempts > 1 {
        let _ = write!(
            text,
            "; it took {} streams, the first failing, and was stored once",
            sent.attempts
        );
    }
    if let Some(error) = &sent.outbox_error {
        let _ = write!(text, "\nbut not recorded in the outbox: {error}");
    }
    text
}

fn messages(list: &MessagesReply) -> String {
    if list.messages.is_empty() {
        return format!("no messages in the {}", list.mailbox);
    }
    let peer = match list.mailbox {
        skywire_dataplane::api::messenger::Mailbox::Inbox => "FROM",
        skywire_dataplane::api::messenger::Mailbox::Outbox => "TO",
    };
    let mut table = Table::new(&["TIME (UTC)", peer, "TEXT"]);
    for message in &list.messages {
        table.row(vec![
            utc(message.at_ms),
            message.peer.to_string(),
            escaped(&message.text),
        ]);
    }
    let mut text = table.render();
    if list.total > list.messages.len() {
        let _ = write!(
            text,
            "\n(the newest {} of {} messages)",
            list.messages.len(),
            list.total
        );
    }
    text
}

fn watching_text() -> String {
    format!("watching the inbox: new messages come as lines; `{DETACH_LINE}` or the end of input ends the watch")
}

fn arrived_text(message: &MessageRow) -> String {
    format!(
        "{}  {}  {}",
        utc(message.at_ms),
        message.peer,
        escaped(&message.text)
    )
}

fn detached_text(reason: WatchDetach) -> String {
    match reason {
        WatchDetach::Asked => "[watch ended]".to_owned(),
        WatchDetach::Stopped => "[watch ended: the messenger stopped]".to_owned(),
        WatchDetach::Stopping => "[watch ended: skywired is stopping]".to_owned(),
    }
}

#[derive(Debug, Serialize)]
struct Attached {
    attached: Watched,
}

#[derive(Debug, Serialize)]
struct Detached {
    detached: WatchDetached,
}

#[derive(Debug, Serialize)]
struct Watched {
    watch: &'static str,
}

#[derive(Debug, Serialize)]
struct WatchDetached {
    watch: &'static str,
    reason: WatchDetach,
}

/// The first line of a watch.
pub(crate) fn watching_line() -> Vec<u8> {
    success_line(
        COMMAND,
        &Attached {
            attached: Watched { watch: "inbox" },
        },
        &watching_text(),
    )
}

/// A message that arrived while a watch runs.
pub(crate) fn arrived_line(message: &MessageRow) -> Vec<u8> {
    #[derive(Serialize)]
    struct Arrived<'a> {
        message: &'a MessageRow,
    }
    success_line(COMMAND, &Arrived { message }, &arrived_text(message))
}

/// The last line of a watch.
pub(crate) fn watch_detached_line(reason: WatchDetach) -> Vec<u8> {
    success_line(
        COMMAND,
        &Detached {
            detached: WatchDetached {
                watch: "inbox",
                reason,
            },
        },
        &detached_text(reason),
    )
}

/// A text with its control characters (new lines, tabs, escape sequences) written as escapes.
fn escaped(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS`, in UTC.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm, from 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::Answer;
    use skywire_dataplane::api::messenger::{Mailbox, MessageId};
    use skywire_dataplane::SecretKey;

    fn answer(line: &[u8]) -> Answer {
        Answer::parse(std::str::from_utf8(line).unwrap().trim_end()).unwrap()
    }

    fn message(text: &str) -> MessageRow {
        MessageRow {
            id: MessageId([0xab; 16]),
            peer: SecretKey::from([1; 32]).public(),
            at_ms: 1_767_225_600_000,
            text: text.to_owned(),
        }
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31 23:59:59");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00:00");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(escaped("héllo wörld"), "héllo wörld");
        assert_eq!(escaped("a\nb\tc\u{1b}[31m"), "a\\nb\\tc\\u{1b}[31m");
    }

    #[test]
    fn a_mailbox_is_a_table_and_says_what_it_left_out() {
        let list = MessagesReply {
            mailbox: Mailbox::Inbox,
            total: 1500,
            messages: vec![message("hi\nthere")],
        };
        let text = messages(&list);
        assert!(text.starts_with("TIME (UTC)"), "{text}");
        assert!(text.contains("FROM"), "{text}");
        assert!(text.contains("2026-01-01 00:00:00"), "{text}");
        assert!(text.contains("hi\\nthere"), "{text}");
        assert!(text.ends_with("(the newest 1 of 1500 messages)"), "{text}");
        let empty = MessagesReply {
            mailbox: Mailbox::Outbox,
            total: 0,
            messages: Vec::new(),
        };
        assert_eq!(messages(&empty), "no messages in the outbox");
    }

    #[test]
    fn a_watch_is_a_stream_as_attach_is() {
        let first = answer(&watching_line());
        assert_eq!(first.command.as_deref(), Some("msg"));
        assert_eq!(first.result.unwrap()["attached"]["watch"], "inbox");
        let arrived = answer(&arrived_line(&message("hello")));
        let result = arrived.result.unwrap();
        assert_eq!(result["message"]["text"], "hello");
        assert_eq!(result["message"]["id"], "ab".repeat(16));
        assert!(arrived.text.unwrap().ends_with("  hello"));
        let last = answer(&watch_detached_line(WatchDetach::Stopping));
        assert_eq!(last.result.unwrap()["detached"]["reason"], "stopping");
    }

    #[test]
    fn a_delivery_says_how_it_went() {
        let sent = SentReply {
            peer: SecretKey::from([1; 32]).public(),
            id: MessageId([1; 16]),
            attempts: 2,
            delivery_ms: 12.5,
            outbox_error: Some("disk full".to_owned()),
        };
        let text = sent_text(&sent);
        assert!(text.starts_with("delivered to "), "{text}");
        assert!(text.contains("12.50 ms"), "{text}");
        assert!(text.contains("it took 2 streams"), "{text}");
        assert!(
            text.contains("not recorded in the outbox: disk full"),
            "{text}"
        );
    }
}
