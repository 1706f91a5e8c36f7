#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use skywire_dataplane::api::Request;

use super::*;
use crate::command::{AppCommand, Command, LocalCommand};
use crate::supervisor::AttachId;

fn limits() -> Limits {
    Limits {
        max_queued_lines: 4,
        max_pending_output: 1024,
        line_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

fn fresh() -> (Connection, Instant) {
    let now = Instant::now();
    (Connection::new(limits(), now), now)
}

/// The reply lines written so far, as JSON, marked written.
fn replies(connection: &mut Connection) -> Vec<Value> {
    let text = String::from_utf8(connection.output().to_vec()).unwrap();
    connection.written(connection.pending());
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The command of a `Run` action.
fn run(action: Option<Action>) -> Command {
    match action {
        Some(Action::Run(parsed)) => parsed.command,
        other => panic!("not a command to run: {other:?}"),
    }
}

fn error_of(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"].as_str().unwrap()
}

#[test]
fn commands_are_handed_out_one_at_a_time_in_order() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"status\nlt\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
    assert_eq!(connection.running(), Some("status"));
    assert_eq!(connection.poll_action(), None, "lt waits for status");
    connection.handle_answer(b"{\"ok\":true}\n");
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::ListTransports)
    );
    assert_eq!(replies(&mut connection).len(), 1);
}

#[test]
fn buffered_counts_waiting_lines_a_partial_line_and_unwritten_replies() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"status\nlt\nrou", now);
    // "status" and "lt" wait in the queue, "rou" is a line begun.
    assert_eq!(connection.buffered(), 6 + 2 + 3);
    run(connection.poll_action());
    assert_eq!(connection.buffered(), 2 + 3, "status is running");
    connection.handle_answer(b"{\"ok\":true}\n");
    assert_eq!(connection.buffered(), 2 + 3 + 12);
    connection.written(12);
    assert_eq!(connection.buffered(), 2 + 3);
}

#[test]
fn lines_are_cut_across_reads_and_lose_their_carriage_return() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"sta", now);
    assert_eq!(connection.poll_action(), None);
    connection.handle_bytes(b"tus\r\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
}

#[test]
fn what_needs_nobody_else_is_answered_here() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(
        b"\n  # a comment\nfrobnicate\nstatus now\n'open\n\xff\xfe\n",
        now,
    );
    assert_eq!(connection.poll_action(), None);
    let replies = replies(&mut connection);
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(error_of(&replies[0]).starts_with("unknown command `frobnicate`"));
    assert!(replies[0].get("command").is_none());
    assert_eq!(replies[1]["command"], "status");
    assert!(error_of(&replies[1]).contains("takes no arguments"));
    assert!(error_of(&replies[2]).contains("quote opened at column 1 is not closed"));
    assert!(error_of(&replies[3]).contains("not valid UTF-8"));
}

#[test]
fn a_line_too_long_is_skipped_to_its_end() {
    let (mut connection, now) = fresh();
    let mut input = vec![b'x'; MAX_LINE + 1];
    input.extend_from_slice(b"\nhelp\n");
    connection.handle_bytes(&input, now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Local(LocalCommand::Help { topic: None })
    );
    let replies = replies(&mut connection);
    assert!(error_of(&replies[0]).starts_with("line too long"));
}

#[test]
fn commands_answered_at_once_never_count_as_waiting() {
    let (mut connection, now) = fresh();
    connection.handle_bytes("help\n".repeat(20).as_bytes(), now);
    let mut answered = 0;
    while let Some(action) = connection.poll_action() {
        assert!(matches!(action, Action::Run(_)));
        connection.handle_answer(b"{\"ok\":true}\n");
        answered += 1;
    }
    assert_eq!(answered, 20);
    assert!(!connection.is_finished());
}

#[test]
fn too_many_lines_behind_a_command_close_the_connection() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"status\n", now);
    run(connection.poll_action());
    connection.handle_bytes("lt\n".repeat(4).as_bytes(), now);
    assert_eq!(connection.poll_action(), None, "four may wait");
    assert!(connection.output().is_empty());
    connection.handle_bytes(b"lt\n", now);
    let replies = replies(&mut connection);
    assert!(error_of(&replies[0]).starts_with("too many commands waiting: at most 4"));
    assert!(connection.is_finished());
}

#[test]
fn too_many_lines_in_one_read_behind_a_command_close_it_too() {
    let (mut connection, now) = fresh();
    connection.handle_bytes("status\n".repeat(6).as_bytes(), now);
    run(connection.poll_action());
    assert_eq!(connection.poll_action(), None);
    assert!(error_of(&replies(&mut connection)[0]).starts_with("too many commands waiting"));
    assert!(connection.is_finished());
}

#[test]
fn a_silent_client_and_an_unfinished_line_time_out() {
    let (mut connection, now) = fresh();
    let deadline = connection.poll_timeout().unwrap();
    assert_eq!(deadline, now + limits().line_timeout);
    connection.handle_timeout(deadline - Duration::from_millis(1));
    assert!(connection.output().is_empty());
    connection.handle_timeout(deadline);
    assert!(
        error_of(&replies(&mut connection)[0]).starts_with("no command within 10 s of connecting")
    );
    assert!(connection.is_finished());

    let (mut connection, now) = fresh();
    connection.handle_bytes(b"status\n", now);
    assert_eq!(connection.poll_timeout(), None, "a whole line arrived");
    let later = now + Duration::from_secs(3);
    connection.handle_bytes(b"sta", later);
    assert_eq!(
        connection.poll_timeout(),
        Some(later + limits().line_timeout)
    );
    connection.handle_timeout(later + limits().line_timeout);
    assert!(
        error_of(&replies(&mut connection)[0]).starts_with("a line was not finished within 10 s")
    );
}

#[test]
fn an_attached_connection_sends_input_until_it_detaches() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"attach 3\nhello\n  .detach  \nstatus\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::App(AppCommand::Attach { id: 3 })
    );
    let attachment = Attachment {
        attach: AttachId::from_raw(7),
        app: 3,
    };
    connection.handle_attached(attachment, b"{\"ok\":true,\"result\":{\"attached\":{}}}\n");
    assert_eq!(connection.attachment(), Some(attachment));
    assert_eq!(
        connection.poll_action(),
        Some(Action::Input {
            app: 3,
            line: "hello".to_owned()
        })
    );
    assert_eq!(
        connection.poll_action(),
        Some(Action::Detach(attachment.attach))
    );
    assert_eq!(connection.attachment(), None);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
    let replies = replies(&mut connection);
    assert_eq!(replies[1]["result"]["detached"]["reason"], "asked");
}

#[test]
fn the_end_of_input_detaches_after_the_lines_before_it() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"attach 3\n", now);
    run(connection.poll_action());
    let attachment = Attachment {
        attach: AttachId::from_raw(1),
        app: 3,
    };
    connection.handle_attached(attachment, b"{}\n");
    connection.handle_bytes(b"last words\n", now);
    connection.handle_eof();
    assert!(matches!(
        connection.poll_action(),
        Some(Action::Input { .. })
    ));
    assert_eq!(
        connection.poll_action(),
        Some(Action::Detach(attachment.attach))
    );
    assert_eq!(connection.poll_action(), None);
    replies(&mut connection);
    assert!(connection.is_finished());
}

#[test]
fn after_the_app_exits_lines_are_commands_again() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"attach 3\n", now);
    run(connection.poll_action());
    let attachment = Attachment {
        attach: AttachId::from_raw(1),
        app: 3,
    };
    connection.handle_attached(attachment, b"{}\n");
    connection.send(b"{\"output\":1}\n");
    connection.handle_stream_end(b"{\"detached\":1}\n");
    connection.handle_bytes(b"status\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
    assert_eq!(replies(&mut connection).len(), 3);
}

#[test]
fn a_finished_client_waits_for_its_last_answer() {
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"status\n", now);
    connection.handle_eof();
    run(connection.poll_action());
    assert!(!connection.wants_input());
    assert!(!connection.is_finished(), "its answer is still to come");
    connection.handle_answer(b"{}\n");
    assert_eq!(connection.poll_action(), None);
    assert!(!connection.is_finished(), "the answer is not written yet");
    connection.written(3);
    assert!(connection.is_finished());
}

#[test]
fn a_client_that_does_not_read_is_dropped_but_one_large_reply_is_not() {
    let (mut connection, _) = fresh();
    let large = vec![b'x'; 4096];
    connection.send(b"small\n");
    connection.written(6);
    connection.send(&large);
    assert!(!connection.is_finished(), "one large reply alone is fine");
    connection.send(b"one too many\n");
    assert!(connection.is_finished());
    assert_eq!(connection.pending(), large.len());
}

#[test]
fn partly_written_output_keeps_its_rest() {
    let (mut connection, _) = fresh();
    connection.send(b"abcdef");
    connection.written(2);
    assert_eq!(connection.output(), b"cdef");
    connection.send(b"gh");
    connection.written(3);
    assert_eq!(connection.output(), b"fgh");
}

fn split(splitter: &mut LineSplitter, bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut pieces = Vec::new();
    splitter.feed(bytes, &mut pieces);
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Line(line) => Some(line),
            Piece::TooLong | Piece::End => None,
        })
        .collect()
}

#[test]
fn splitter_cuts_lines_across_reads() {
    let mut splitter = LineSplitter::default();
    assert!(split(&mut splitter, b"sta").is_empty());
    assert_eq!(
        split(&mut splitter, b"tus\nlt\n\nlr"),
        [Some(b"status".to_vec()), Some(b"lt".to_vec()), Some(vec![])]
    );
    assert_eq!(split(&mut splitter, b"\n"), [Some(b"lr".to_vec())]);
}

#[test]
fn splitter_skips_long_lines_to_their_end() {
    let mut splitter = LineSplitter::default();
    let exact = vec![b'a'; MAX_LINE];
    let mut input = exact.clone();
    input.push(b'\n');
    assert_eq!(split(&mut splitter, &input), [Some(exact)]);

    assert_eq!(split(&mut splitter, &vec![b'b'; MAX_LINE]), []);
    assert_eq!(split(&mut splitter, b"bb"), [None]);
    assert!(split(&mut splitter, &vec![b'c'; 3 * MAX_LINE]).is_empty());
    assert_eq!(split(&mut splitter, b"cc\nok\n"), [Some(b"ok".to_vec())]);

    let mut input = vec![b'd'; MAX_LINE + 1];
    input.extend_from_slice(b"\nnext\n");
    assert_eq!(split(&mut splitter, &input), [None, Some(b"next".to_vec())]);
}

#[test]
fn a_watching_connection_ends_its_watch_on_detach_or_the_end_of_input() {
    use skywire_dataplane::api::messenger::MessengerRequest;
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"msg watch\nhello\n.detach\nstatus\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Messenger(MessengerRequest::Watch))
    );
    connection.handle_watching(42, b"{\"ok\":true,\"result\":{\"attached\":{}}}\n");
    assert_eq!(connection.watching(), Some(42));
    assert_eq!(connection.running(), None);
    // A line other than `.detach` is refused and the watch goes on.
    assert_eq!(connection.poll_action(), Some(Action::Unwatch(42)));
    assert_eq!(connection.watching(), None);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
    let lines = replies(&mut connection);
    assert!(
        error_of(&lines[1]).contains("takes no input"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[1]["command"], "msg");
    assert_eq!(lines[2]["result"]["detached"]["reason"], "asked");

    let (mut connection, now) = fresh();
    connection.handle_bytes(b"msg watch\n", now);
    run(connection.poll_action());
    connection.handle_watching(7, b"{}\n");
    connection.send(b"{\"message\":1}\n");
    connection.handle_eof();
    assert_eq!(connection.poll_action(), Some(Action::Unwatch(7)));
    assert_eq!(connection.poll_action(), None);
    replies(&mut connection);
    assert!(connection.is_finished());

    // The messenger may end it too; lines are commands again.
    let (mut connection, now) = fresh();
    connection.handle_bytes(b"msg watch\n", now);
    run(connection.poll_action());
    connection.handle_watching(8, b"{}\n");
    connection.handle_watch_end(b"{\"detached\":1}\n");
    connection.handle_bytes(b"status\n", now);
    assert_eq!(
        run(connection.poll_action()),
        Command::Dataplane(Request::Status)
    );
}
