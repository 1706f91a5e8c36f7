//! Entry points for the fuzz targets (`fuzz/`, `fuzzing/`) into what this crate keeps private:
//! a control connection's state machine. Not part of the crate's API.

use std::time::Instant;

use crate::command::Parsed;
use crate::server::connection::{Action, Attachment, Connection};
use crate::server::Limits;
use crate::signal::AppId;
use crate::supervisor::AttachId;

/// What a control connection handed its loop.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectionAction {
    /// A command to run.
    Run(Parsed),
    /// A line for the attached app's standard input.
    Input(String),
    /// The client detached.
    Detach,
    /// The client ended its watch of the inbox.
    Unwatch,
}

/// A control connection's run: what it handed the loop, in order, and every byte it wrote.
#[derive(Debug, Default)]
pub struct ConnectionRun {
    /// What the connection handed the loop.
    pub actions: Vec<ConnectionAction>,
    /// The reply lines it wrote.
    pub output: Vec<u8>,
}

/// The answer the harness gives every command.
const ANSWER: &[u8] = b"{\"ok\":true}\n";

/// Runs a control connection over what a client sent, read as `chunks` one after the other,
/// then the end of its input, as the control loop does: each command is answered with
/// success as soon as it is handed out, and a command for which `attaches` names an app
/// attaches the connection to that app. The client reads every reply at once.
pub fn control_connection<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    attaches: impl Fn(&Parsed) -> Option<AppId>,
) -> ConnectionRun {
    let now = Instant::now();
    let limits = Limits {
        // A client that reads every reply: one input's failures alone may go past any bound.
        max_pending_output: usize::MAX,
        ..Limits::default()
    };
    let mut connection = Connection::new(limits, now);
    let mut run = ConnectionRun::default();
    let mut attachments = 0;
    let mut step = |connection: &mut Connection, run: &mut ConnectionRun| {
        while let Some(action) = connection.poll_action() {
            let action = match action {
                Action::Run(parsed) => {
                    match attaches(&parsed) {
                        Some(app) => {
                            attachments += 1;
                            let attach = AttachId::from_raw(attachments);
                            connection.handle_attached(Attachment { attach, app }, ANSWER);
                        }
                        None => connection.handle_answer(ANSWER),
                    }
                    ConnectionAction::Run(parsed)
                }
                Action::Input { line, .. } => ConnectionAction::Input(line),
                Action::Detach(_) => ConnectionAction::Detach,
                Action::Unwatch(_) => ConnectionAction::Unwatch,
            };
            run.actions.push(action);
        }
        run.output.extend_from_slice(connection.output());
        connection.written(connection.pending());
    };
    for chunk in chunks {
        connection.handle_bytes(chunk, now);
        step(&mut connection, &mut run);
    }
    connection.handle_eof();
    step(&mut connection, &mut run);
    run
}
