//! One control connection as a state machine without its socket: bytes in, reply lines out.
//! It cuts the bytes into lines, answers by itself what needs nobody else (blank lines, lines
//! too long or not UTF-8, commands that do not parse), hands each command to the loop in turn
//! and waits for its answer before the next, bounds what may wait, while attached to an app
//! turns lines into the app's input, and while watching the messenger's inbox waits for
//! `.detach`. The loop owns the socket: it feeds what it reads, runs the [`Action`]s, and
//! writes [`Connection::output`].

use std::collections::VecDeque;
use std::time::Instant;

use skywire_dataplane::api::RequestId;

use super::Limits;
use crate::command::{self, Parsed, DETACH_LINE};
use crate::protocol::{failure_line, MAX_LINE};
use crate::render::{self, DetachReason, WatchDetach};
use crate::signal::AppId;
use crate::supervisor::AttachId;

/// What the loop is to do for a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run the command; its answer comes back through [`Connection::handle_answer`] or
    /// [`Connection::handle_attached`]. The connection's next line waits for it.
    Run(Parsed),
    /// Write the line to the attached app's standard input.
    Input {
        /// The app.
        app: AppId,
        /// The line, without its new line.
        line: String,
    },
    /// The client detached: the supervisor stops streaming to it.
    Detach(AttachId),
    /// The client ended its watch of the inbox: the messenger stops streaming to it.
    Unwatch(RequestId),
}

/// The app whose stream a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attachment {
    /// The supervisor's listener.
    pub(crate) attach: AttachId,
    /// The app.
    pub(crate) app: AppId,
}

/// A piece of a client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// A whole line, without its new line.
    Line(Vec<u8>),
    /// A line that was too long and was skipped.
    TooLong,
    /// The end of the input.
    End,
}

/// One connection. See the module docs.
#[derive(Debug)]
pub(crate) struct Connection {
    limits: Limits,
    splitter: LineSplitter,
    /// Input not looked at yet, in order.
    queue: VecDeque<Piece>,
    /// The bytes of the lines in `queue`.
    queued_bytes: usize,
    /// The command in progress: the next line waits for its answer.
    running: Option<&'static str>,
    attached: Option<Attachment>,
    /// The messenger's watch (its request) whose messages the connection receives.
    watching: Option<RequestId>,
    output: Vec<u8>,
    written: usize,
    /// When the connection is closed unless a line arrives (the first, or the end of one begun).
    line_deadline: Option<Instant>,
    /// The client has sent all it will send.
    eof: bool,
    /// Close once the output is written.
    closing: bool,
    /// The client let more replies pile up than allowed: close now.
    overflowed: bool,
}

impl Connection {
    /// A new connection, which must send its first line within the line timeout.
    pub(crate) fn new(limits: Limits, now: Instant) -> Connection {
        Connection {
            limits,
            splitter: LineSplitter::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            running: None,
            attached: None,
            watching: None,
            output: Vec::new(),
            written: 0,
            line_deadline: Some(now + limits.line_timeout),
            eof: false,
            closing: false,
            overflowed: false,
        }
    }

    // ----- getters -----

    /// Reply bytes not written yet.
    pub(crate) fn output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    /// How many reply bytes wait to be written.
    pub(crate) fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// Bytes held for the client: input not yet run, and replies not yet written.
    pub(super) fn buffered(&self) -> usize {
        self.queued_bytes + self.splitter.partial.len() + self.pending()
    }

    /// Whether reading from the client is still of use.
    pub(crate) fn wants_input(&self) -> bool {
        !self.eof && !self.closing && !self.overflowed
    }

    /// The app this connection is attached to.
    pub(crate) fn attachment(&self) -> Option<Attachment> {
        self.attached
    }

    /// The watch of the inbox this connection receives.
    pub(super) fn watching(&self) -> Option<RequestId> {
        self.watching
    }

    /// The command whose answer the connection waits for.
    pub(crate) fn running(&self) -> Option<&'static str> {
        self.running
    }

    /// Whether the connection can be closed: it overflowed, or it has nothing left to say and
    /// it was told to close or its client has finished.
    pub(crate) fn is_finished(&self) -> bool {
        self.overflowed
            || (self.pending() == 0
                && (self.closing || (self.eof && self.queue.is_empty() && self.running.is_none())))
    }

    /// When [`Connection::handle_timeout`] is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.line_deadline
    }

    // ----- input -----

    /// Takes bytes the client sent.
    pub(crate) fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        if !self.wants_input() {
            return;
        }
        let mut pieces = Vec::new();
        self.splitter.feed(bytes, &mut pieces);
        if !pieces.is_empty() {
            self.line_deadline = None;
        }
        if self.splitter.in_line() && self.line_deadline.is_none() {
            self.line_deadline = Some(now + self.limits.line_timeout);
        }
        for piece in pieces {
            self.enqueue(piece);
        }
    }

    /// The client has sent all it will send; an attached stream ends with it.
    pub(crate) fn handle_eof(&mut self) {
        if self.eof {
            return;
        }
        self.eof = true;
        self.line_deadline = None;
        self.queue.push_back(Piece::End);
    }

    /// Closes the connection, with an error, if its line deadline has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.line_deadline.is_none_or(|at| at > now) {
            return;
        }
        self.line_deadline = None;
        let seconds = self.limits.line_timeout.as_secs_f64();
        let message = if self.splitter.in_line() {
            format!(
                "a line was not finished within {seconds} s: closing the connection; end every command with a new line"
            )
        } else {
            format!(
                "no command within {seconds} s of connecting: closing the connection; send one command a line"
            )
        };
        log::debug!("control client: {message}");
        self.send(&failure_line(None, &message));
        self.closing = true;
    }

    /// The answer to the command in progress.
    pub(crate) fn handle_answer(&mut self, line: &[u8]) {
        self.running = None;
        self.send(line);
    }

    /// The command in progress attached the connection to an app; `line` is its answer.
    pub(crate) fn handle_attached(&mut self, attachment: Attachment, line: &[u8]) {
        self.running = None;
        self.attached = Some(attachment);
        self.send(line);
    }

    /// The attached app exited for good: the stream ends with `line`.
    pub(crate) fn handle_stream_end(&mut self, line: &[u8]) {
        self.attached = None;
        self.send(line);
    }

    /// The command in progress started watching the inbox (request `watch`); `line` is its
    /// answer.
    pub(super) fn handle_watching(&mut self, watch: RequestId, line: &[u8]) {
        self.running = None;
        self.watching = Some(watch);
        self.send(line);
    }

    /// The watch ended without being asked to: the stream ends with `line`.
    pub(super) fn handle_watch_end(&mut self, line: &[u8]) {
        self.watching = None;
        self.send(line);
    }

    /// Queues a reply line. A client that has more than the bound of earlier replies unread is
    /// disconnected instead; one large reply alone never is.
    pub(crate) fn send(&mut self, line: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.pending() > self.limits.max_pending_output {
            log::warn!(
                "disconnecting a control client that does not read its replies ({} bytes waiting)",
                self.pending()
            );
            self.overflowed = true;
            return;
        }
        self.output.extend_from_slice(line);
    }

    /// `count` bytes of the output were written.
    pub(crate) fn written(&mut self, count: usize) {
        self.written = (self.written + count).min(self.output.len());
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written > self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
        }
    }

    // ----- output -----

    /// The next thing for the loop to do, answering meanwhile what needs nobody else. Run
    /// each action before asking for the next: the connection's replies stay in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        if self.running.is_some() {
            if self.queue.len() > self.limits.max_queued_lines {
                self.too_many_waiting();
            }
            return None;
        }
        while !self.closing && !self.overflowed {
            let piece = self.queue.pop_front()?;
            if let Piece::Line(line) = &piece {
                self.queued_bytes -= line.len();
            }
            let in_stream = match (self.attached, self.watching) {
                (Some(_), _) => Some("attach"),
                (None, Some(_)) => Some("msg"),
                (None, None) => None,
            };
            let bytes = match piece {
                Piece::End => match (self.attached.take(), self.watching) {
                    // The end of input detaches: what was sent before it went in.
                    (Some(attachment), _) => return Some(self.detach(attachment)),
                    (None, Some(watch)) => return Some(self.unwatch(watch)),
                    (None, None) => continue,
                },
                Piece::TooLong => {
                    self.send(&failure_line(
                        in_stream,
                        &format!("line too long: at most {MAX_LINE} bytes; it was skipped"),
                    ));
                    continue;
                }
                Piece::Line(bytes) => bytes,
            };
            let Ok(line) = String::from_utf8(bytes) else {
                self.send(&failure_line(
                    in_stream,
                    "the line is not valid UTF-8: send commands as UTF-8 text",
                ));
                continue;
            };
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(watch) = self.watching {
                if line.trim() == DETACH_LINE {
                    return Some(self.unwatch(watch));
                }
                self.send(&failure_line(
                    in_stream,
                    &format!("`msg watch` takes no input: send `{DETACH_LINE}` to end the watch"),
                ));
                continue;
            }
            if let Some(attachment) = self.attached {
                if line.trim() == DETACH_LINE {
                    self.attached = None;
                    return Some(self.detach(attachment));
                }
                return Some(Action::Input {
                    app: attachment.app,
                    line: line.to_owned(),
                });
            }
            match command::parse_line(line) {
                Ok(None) => {}
                Err(err) => self.send(&failure_line(err.command(), &err.to_string())),
                Ok(Some(parsed)) => {
                    self.running = Some(parsed.spec.name);
                    return Some(Action::Run(parsed));
                }
            }
        }
        None
    }

    fn detach(&mut self, attachment: Attachment) -> Action {
        self.send(&render::detached_line(attachment.app, DetachReason::Asked));
        Action::Detach(attachment.attach)
    }

    fn unwatch(&mut self, watch: RequestId) -> Action {
        self.watching = None;
        self.send(&render::watch_detached_line(WatchDetach::Asked));
        Action::Unwatch(watch)
    }

    fn enqueue(&mut self, piece: Piece) {
        if self.closing || self.overflowed {
            return;
        }
        if self.running.is_some() && self.queue.len() >= self.limits.max_queued_lines {
            self.too_many_waiting();
            return;
        }
        if let Piece::Line(line) = &piece {
            self.queued_bytes += line.len();
        }
        self.queue.push_back(piece);
    }

    fn too_many_waiting(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.send(&failure_line(
            None,
            &format!(
                "too many commands waiting: at most {} may wait for the reply to an earlier one; send each command after the previous reply (closing the connection)",
                self.limits.max_queued_lines
            ),
        ));
        self.closing = true;
    }
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes; a longer line becomes
/// [`Piece::TooLong`] and is skipped up to its new line.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
    discarding: bool,
}

impl LineSplitter {
    /// Whether a line has begun and not ended (bytes kept, or a long line being skipped).
    fn in_line(&self) -> bool {
        self.discarding || !self.partial.is_empty()
    }

    fn feed(&mut self, mut bytes: &[u8], pieces: &mut Vec<Piece>) {
        while !bytes.is_empty() {
            let (segment, rest) = match bytes.iter().position(|&byte| byte == b'\n') {
                Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
                None => (bytes, None),
            };
            if self.discarding {
                match rest {
                    Some(rest) => {
                        self.discarding = false;
                        bytes = rest;
                        continue;
                    }
                    None => return,
                }
            }
            if self.partial.len() + segment.len() > MAX_LINE {
                self.partial.clear();
                pieces.push(Piece::TooLong);
                match rest {
                    Some(rest) => bytes = rest,
                    None => {
                        self.discarding = true;
                        return;
                    }
                }
                continue;
            }
            self.partial.extend_from_slice(segment);
            match rest {
                Some(rest) => {
                    pieces.push(Piece::Line(std::mem::take(&mut self.partial)));
                    bytes = rest;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
