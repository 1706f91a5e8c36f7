//! The app commands run against the supervisor: what each asks of it, and its reply line now,
//! later (the supervisor answers a ping, a measurement or a shutdown when the app has), or as
//! the first line of an attached stream.

use std::time::Instant;

use crate::command::AppCommand;
use crate::protocol::failure_line;
use crate::render;
use crate::signal::AppId;
use crate::supervisor::{AttachId, RequestId, Started, Supervisor};

/// What running an app command gave.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The reply line.
    Reply(Vec<u8>),
    /// The supervisor answers later, through `poll_result`.
    Later(RequestId),
    /// The reply line; then the connection streams app `app`'s output as listener `attach`.
    Attached {
        /// The first reply line.
        line: Vec<u8>,
        /// The supervisor's listener.
        attach: AttachId,
        /// The app.
        app: AppId,
    },
}

/// Runs `command`, called `name` on the line.
pub(super) fn run(
    name: &str,
    command: &AppCommand,
    supervisor: &mut Supervisor,
    now: Instant,
) -> Outcome {
    let failed = |err: crate::supervisor::SupervisorError| {
        Outcome::Reply(failure_line(Some(name), &err.to_string()))
    };
    match command {
        AppCommand::HelpApp { name: app } => {
            Outcome::Reply(render::help_app_line(app, supervisor.catalog().get(app)))
        }
        AppCommand::Apps => Outcome::Reply(render::catalog_line(supervisor.catalog())),
        AppCommand::Start { app, args, attach } => match supervisor.start(app, args.clone(), now) {
            Ok(started) if *attach => attach_started(supervisor, &started),
            Ok(started) => Outcome::Reply(render::started_line(&started, None)),
            Err(err) => failed(err),
        },
        AppCommand::ListApps { full } => {
            Outcome::Reply(render::list_line(&supervisor.list(now), *full))
        }
        AppCommand::Ping { id } => supervisor
            .ping(*id, now)
            .map_or_else(failed, Outcome::Later),
        AppCommand::ResUsage { id } => supervisor
            .resource_usage(*id, now)
            .map_or_else(failed, Outcome::Later),
        AppCommand::Shutdown { id } => supervisor
            .shutdown(*id, now)
            .map_or_else(failed, Outcome::Later),
        AppCommand::Attach { id } => match supervisor.attach(*id) {
            Ok(attach) => {
                let app_name = supervisor
                    .status(*id, now)
                    .map(|status| status.name)
                    .unwrap_or_default();
                Outcome::Attached {
                    line: render::attached_line(name, *id, &app_name, None),
                    attach,
                    app: *id,
                }
            }
            Err(err) => failed(err),
        },
        AppCommand::Logs { id, count } => match supervisor.logs(*id, *count) {
            Ok(lines) => Outcome::Reply(render::logs_line(*id, &lines)),
            Err(err) => failed(err),
        },
    }
}

fn attach_started(supervisor: &mut Supervisor, started: &Started) -> Outcome {
    match supervisor.attach(started.id) {
        Ok(attach) => Outcome::Attached {
            line: render::attached_line("start", started.id, &started.name, Some(started)),
            attach,
            app: started.id,
        },
        // It exited already; say so after the start.
        Err(err) => Outcome::Reply(render::started_line(started, Some(&err.to_string()))),
    }
}
