//! The launched apps' reply lines: the catalog, `help APP`, a start, the launched apps, logs,
//! ping, resource usage and shutdown results, and the lines of an attached stream.

use std::fmt::Write as _;

use serde::Serialize;

use super::{duration, two_places, usage, Table};
use crate::catalog::{AppSpec, Args, Catalog};
use crate::command::{join_words, DETACH_LINE};
use crate::protocol::{failure_line, success_line};
use crate::signal::AppId;
use crate::supervisor::{
    AppReply, AppState, AppStatus, AttachEvent, OutputLine, Started, StopHow, StopReport, Stream,
    SupervisorError,
};

/// Why an attached stream ended, as its last line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DetachReason {
    /// The client sent `.detach`.
    Asked,
    /// The app exited and will not restart.
    Exited,
    /// skywired is stopping.
    Stopping,
}

/// The `result` of `help APP`: the app's catalog entry, with its name.
#[derive(Debug, Serialize)]
struct NamedSpec<'a> {
    name: &'a str,
    #[serde(flatten)]
    spec: &'a AppSpec,
}

/// The reply line of `help APP`; `spec` is the app's catalog entry, if there is one.
pub(crate) fn help_app_line(name: &str, spec: Option<&AppSpec>) -> Vec<u8> {
    let Some(spec) = spec else {
        return failure_line(
            Some("help"),
            &format!(
                "there is no command or app `{name}`: run `help` to list the commands and `apps` to list the apps"
            ),
        );
    };
    let mut text = format!("app {name}");
    if !spec.desc.trim().is_empty() {
        let _ = write!(text, ": {}", spec.desc.trim());
    }
    let (usage, arguments) = match spec.args {
        Args::Free => (" [ARGS…]", "default arguments"),
        Args::Fixed => ("", "arguments (fixed: the entry does not say `args: free`)"),
    };
    let _ = write!(
        text,
        "\nusage: start [-a] {name}{usage}\nprogram: {}",
        spec.path
    );
    let defaults = if spec.default_args.is_empty() {
        "none".to_owned()
    } else {
        join_words(&spec.default_args)
    };
    let _ = write!(text, "\n{arguments}: {defaults}");
    if spec.daemon {
        text.push_str("\ndaemon: restarted with a growing delay whenever it exits");
    }
    if !spec.help.trim().is_empty() {
        let _ = write!(text, "\n\n{}", spec.help.trim_end());
    }
    success_line("help", &NamedSpec { name, spec }, &text)
}

/// One app of `apps`.
#[derive(Debug, Serialize)]
struct CatalogRow<'a> {
    name: &'a str,
    desc: &'a str,
    daemon: bool,
}

#[derive(Debug, Serialize)]
struct CatalogResult<'a> {
    catalog: Vec<CatalogRow<'a>>,
}

/// The reply line of `apps`.
pub(crate) fn catalog_line(catalog: &Catalog) -> Vec<u8> {
    let rows: Vec<CatalogRow<'_>> = catalog
        .iter()
        .map(|(name, spec)| CatalogRow {
            name,
            desc: spec.desc.trim(),
            daemon: spec.daemon,
        })
        .collect();
    let text = if rows.is_empty() {
        "no apps: list them in the config's `apps:` section".to_owned()
    } else {
        let mut table = Table::new(&["NAME", "KIND", "DESCRIPTION"]);
        for row in &rows {
            table.row(vec![
                row.name.to_owned(),
                if row.daemon { "daemon" } else { "app" }.to_owned(),
                row.desc.to_owned(),
            ]);
        }
        format!(
            "{}\nstart one with `start APP [ARGS…]`; `help APP` shows its arguments",
            table.render()
        )
    };
    success_line("apps", &CatalogResult { catalog: rows }, &text)
}

#[derive(Debug, Serialize)]
struct StartResult<'a> {
    started: &'a Started,
    #[serde(skip_serializing_if = "Option::is_none")]
    attached: Option<Attached<'a>>,
}

/// The app an attached stream follows: its first line's `result.attached`.
#[derive(Debug, Serialize)]
struct Attached<'a> {
    id: AppId,
    name: &'a str,
}

#[derive(Debug, Serialize)]
struct AttachResult<'a> {
    attached: Attached<'a>,
}

fn started_text(started: &Started) -> String {
    format!(
        "started app {} ({}), pid {}: {}",
        started.id,
        started.name,
        started.pid,
        join_words(&started.command_line)
    )
}

/// The reply line of `start`; `attach_error` says why `start -a` could not attach.
pub(crate) fn started_line(started: &Started, attach_error: Option<&str>) -> Vec<u8> {
    let mut text = started_text(started);
    if let Some(problem) = attach_error {
        let _ = write!(text, "\ncannot attach: {problem}");
    }
    success_line(
        "start",
        &StartResult {
            started,
            attached: None,
        },
        &text,
    )
}

/// The first line of a stream: `attach`'s reply, or `start -a`'s (which has the start too).
pub(crate) fn attached_line(
    command: &str,
    id: AppId,
    name: &str,
    started: Option<&Started>,
) -> Vec<u8> {
    let how = format!(
        "attached to app {id} ({name}): lines sent go to its standard input; `{}` or the end of input detaches",
        DETACH_LINE
    );
    let attached = Attached { id, name };
    match started {
        Some(started) => success_line(
            command,
            &StartResult {
                started,
                attached: Some(attached),
            },
            &format!("{}\n{how}", started_text(started)),
        ),
        None => success_line(command, &AttachResult { attached }, &how),
    }
}

/// A line of an attached stream.
pub(crate) fn stream_line(app: AppId, event: &AttachEvent) -> Vec<u8> {
    let text = match event {
        AttachEvent::Output(OutputLine { line, .. }) => line.clone(),
        AttachEvent::Missed(count) => format!(
            "[{count} line{} of app {app} skipped: this connection did not keep up]",
            if *count == 1 { "" } else { "s" }
        ),
        AttachEvent::Exited {
            status,
            restarting: true,
        } => format!("[app {app} exited ({status}); it will be restarted]"),
        AttachEvent::Exited { status, .. } => format!("[app {app} exited ({status})]"),
    };
    success_line("attach", event, &text)
}

#[derive(Debug, Serialize)]
struct DetachResult {
    detached: Detached,
}

#[derive(Debug, Serialize)]
struct Detached {
    id: AppId,
    reason: DetachReason,
}

/// The last line of an attached stream.
pub(crate) fn detached_line(app: AppId, reason: DetachReason) -> Vec<u8> {
    let text = match reason {
        DetachReason::Asked => format!("[detached from app {app}]"),
        DetachReason::Exited => format!("[detached: app {app} has exited]"),
        DetachReason::Stopping => format!("[detached from app {app}: skywired is stopping]"),
    };
    success_line(
        "attach",
        &DetachResult {
            detached: Detached { id: app, reason },
        },
        &text,
    )
}

#[derive(Debug, Serialize)]
struct ListResult<'a> {
    apps: Vec<&'a AppStatus>,
}

/// The reply line of `list_apps`.
pub(crate) fn list_line(apps: &[AppStatus], full: bool) -> Vec<u8> {
    let shown: Vec<&AppStatus> = apps
        .iter()
        .filter(|app| full || app.state != AppState::Exited)
        .collect();
    let text = if shown.is_empty() {
        let hidden = apps.len();
        if hidden > 0 {
            format!("no app is running; `list_apps -f` shows the {hidden} that exited")
        } else {
            "no apps launched: `apps` lists the catalog, `start APP` launches one".to_owned()
        }
    } else {
        let mut header = vec!["ID", "NAME", "STATE", "PID", "SIGNAL", "RESTARTS", "UPTIME"];
        if full {
            header.extend(["LAST EXIT", "COMMAND"]);
        }
        let mut table = Table::new(&header);
        for app in &shown {
            let mut row = vec![
                app.id.to_string(),
                app.name.clone(),
                app.state.to_string(),
                app.pid
                    .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                if app.registered { "yes" } else { "no" }.to_owned(),
                app.restarts.to_string(),
                app.uptime_secs.map_or_else(|| "-".to_owned(), duration),
            ];
            if full {
                row.push(app.last_exit.clone().unwrap_or_else(|| "-".to_owned()));
                row.push(join_words(&app.command_line));
            }
            table.row(row);
        }
        let mut text = table.render();
        for app in &shown {
            if let Some(error) = &app.last_error {
                let _ = write!(text, "\napp {}: last restart failed: {error}", app.id);
            }
        }
        text
    };
    success_line("list_apps", &ListResult { apps: shown }, &text)
}

/// The `result` of `logs`.
#[derive(Debug, Serialize)]
struct Logs<'a> {
    id: AppId,
    lines: &'a [OutputLine],
}

/// The reply line of `logs`.
pub(crate) fn logs_line(id: AppId, lines: &[OutputLine]) -> Vec<u8> {
    let text = if lines.is_empty() {
        format!("app {id} has written nothing yet")
    } else {
        lines
            .iter()
            .map(|line| match line.stream {
                Stream::Stdout => line.line.clone(),
                Stream::Stderr => format!("[stderr] {}", line.line),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    success_line("logs", &Logs { id, lines }, &text)
}

/// The reply line of a request the supervisor finished; `command` is the one that asked.
pub(crate) fn result_line(command: &str, result: &Result<AppReply, SupervisorError>) -> Vec<u8> {
    match result {
        Err(err) => failure_line(Some(command), &err.to_string()),
        Ok(reply) => {
            let text = match reply {
                AppReply::Pong { id, rtt_ms } => {
                    format!("app {id}: signal round trip {} ms", two_places(*rtt_ms))
                }
                AppReply::ResourceUsage(usage) => usage::text(usage),
                AppReply::Stopped(report) => stopped_text(report),
            };
            success_line(command, reply, &text)
        }
    }
}

fn stopped_text(report: &StopReport) -> String {
    let how = match report.how {
        StopHow::Signal => "it exited after the signal shutdown",
        StopHow::Sigterm => "it exited after SIGTERM",
        StopHow::Sigkill => "it was killed with SIGKILL",
        StopHow::Cancelled => "its restart was cancelled",
    };
    let mut text = format!("app {} ({}) stopped: {how}", report.id, report.name);
    if !report.status.is_empty() {
        let _ = write!(text, " ({})", report.status);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::protocol::Answer;

    fn answer(line: &[u8]) -> Answer {
        Answer::parse(std::str::from_utf8(line).unwrap().trim_end()).unwrap()
    }

    fn status(id: AppId, state: AppState) -> AppStatus {
        AppStatus {
            id,
            name: "example".to_owned(),
            state,
            pid: (state != AppState::Exited).then_some(1234),
            daemon: false,
            registered: true,
            restarts: 2,
            uptime_secs: (state != AppState::Exited).then_some(75.0),
            command_line: vec!["/bin/example".to_owned(), "a b".to_owned()],
            last_exit: None,
            last_error: None,
        }
    }

    #[test]
    fn list_apps_hides_exited_apps_unless_full() {
        let apps = [status(1, AppState::Exited), status(2, AppState::Running)];
        let short = answer(&list_line(&apps, false));
        let rows = short.result.unwrap()["apps"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["id"], 2);
        let text = short.text.unwrap();
        assert!(
            text.contains("running") && text.contains("1m 15s"),
            "{text}"
        );
        assert!(!text.contains("COMMAND"), "{text}");

        let full = answer(&list_line(&apps, true));
        assert_eq!(full.result.unwrap()["apps"].as_array().unwrap().len(), 2);
        let text = full.text.unwrap();
        assert!(text.contains("/bin/example \"a b\""), "{text}");

        let none = answer(&list_line(&apps[..1], false));
        assert!(none.text.unwrap().contains("list_apps -f"));
    }

    #[test]
    fn stream_lines_carry_the_event_as_result() {
        let line = stream_line(
            3,
            &AttachEvent::Output(OutputLine {
                stream: Stream::Stdout,
                line: "tick 1".to_owned(),
            }),
        );
        assert_eq!(
            line,
            b"{\"ok\":true,\"command\":\"attach\",\"result\":{\"output\":{\"stream\":\"stdout\",\"line\":\"tick 1\"}},\"text\":\"tick 1\"}\n"
        );
        let exited = answer(&stream_line(
            3,
            &AttachEvent::Exited {
                status: "exit status: 0".to_owned(),
                restarting: false,
            },
        ));
        assert_eq!(exited.result.unwrap()["exited"]["restarting"], false);
        let detached = answer(&detached_line(3, DetachReason::Asked));
        assert_eq!(
            detached.result.unwrap()["detached"],
            serde_json::json!({"id": 3, "reason": "asked"})
        );
    }

    #[test]
    fn results_render_for_people() {
        let pong = answer(&result_line(
            "ping",
            &Ok(AppReply::Pong { id: 4, rtt_ms: 0.5 }),
        ));
        assert_eq!(
            pong.result.unwrap(),
            serde_json::json!({"id": 4, "rtt_ms": 0.5})
        );
        assert_eq!(pong.text.unwrap(), "app 4: signal round trip 0.50 ms");
        let stopped = answer(&result_line(
            "shutdown",
            &Ok(AppReply::Stopped(StopReport {
                id: 4,
                name: "x".to_owned(),
                pid: Some(9),
                how: StopHow::Sigkill,
                status: "signal: 9 (SIGKILL)".to_owned(),
            })),
        ));
        assert!(stopped.text.unwrap().contains("killed with SIGKILL"));
        assert_eq!(stopped.result.unwrap()["how"], "sigkill");
        let failed = answer(&result_line("ping", &Err(SupervisorError::NoSuchId(7))));
        assert_eq!(failed.command.as_deref(), Some("ping"));
        assert!(failed.error_message().contains("no app with id 7"));
    }

    #[test]
    fn logs_and_app_help_are_their_data() {
        let lines = [
            OutputLine {
                stream: Stream::Stdout,
                line: "tick 1".to_owned(),
            },
            OutputLine {
                stream: Stream::Stderr,
                line: "warning".to_owned(),
            },
        ];
        let logs = answer(&logs_line(5, &lines));
        assert_eq!(logs.result.as_ref().unwrap()["id"], 5);
        assert_eq!(logs.result.unwrap()["lines"][1]["stream"], "stderr");
        assert_eq!(logs.text.unwrap(), "tick 1\n[stderr] warning");

        let catalog =
            Catalog::from_yaml_str("example:\n  path: /bin/true\n  desc: an example\n").unwrap();
        let help = answer(&help_app_line("example", catalog.get("example")));
        assert_eq!(help.result.as_ref().unwrap()["name"], "example");
        assert_eq!(help.result.unwrap()["path"], "/bin/true");
        assert!(help.text.unwrap().starts_with("app example: an example\n"));
        let unknown = answer(&help_app_line("nope", None));
        assert!(unknown
            .error_message()
            .contains("there is no command or app `nope`"));
    }
}
