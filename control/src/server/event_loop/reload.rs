//! A reload under way (SIGHUP, `visctl reload`): the plan applied in order, the dataplane's
//! answers awaited, and the report given to the client that asked, and to the log.

use std::collections::HashMap;

use mio::Token;
use skywire_dataplane::api::{RequestId, Response};

use super::super::peer::Policy;
use super::{Control, Phase};
use crate::protocol::{failure_line, success_line};
use crate::reload::{Operation, Report};
use crate::render;

/// The command's name in replies.
const RELOAD: &str = "reload";

/// A reload whose dataplane requests are not all answered.
#[derive(Debug)]
pub(super) struct Reloading {
    /// The client that asked; none for SIGHUP.
    client: Option<Token>,
    report: Report,
    /// The requests not answered yet, each with what it does.
    waiting: HashMap<RequestId, String>,
}

impl Control {
    /// Reads the configuration file again and applies what changed; `client` asked for it
    /// (`visctl reload`), or nobody did (SIGHUP). The report goes to the log, and to the client
    /// once the dataplane has answered.
    pub(super) fn reload(&mut self, client: Option<Token>) {
        let reloading = match self.begin_reload(client) {
            Ok(reloading) => reloading,
            Err(problem) => {
                log::error!("reload refused: {problem}");
                if let Some(client) = client.and_then(|token| self.clients.get_mut(&token)) {
                    client.answer(&failure_line(Some(RELOAD), &problem));
                }
                return;
            }
        };
        if reloading.waiting.is_empty() {
            // Answered from within the client's own command: its connection goes on by itself.
            self.finish_reload(reloading);
        } else {
            self.reloading = Some(reloading);
        }
    }

    fn begin_reload(&mut self, client: Option<Token>) -> Result<Reloading, String> {
        if self.reloading.is_some() {
            return Err("a reload is under way: wait for its answer, then reload again".to_owned());
        }
        if self.phase != Phase::Serving || !self.dataplane.accepting {
            return Err("skywired is stopping: nothing was reloaded".to_owned());
        }
        let Some(config) = self.config.as_mut() else {
            return Err("this skywired runs without a config file to reload".to_owned());
        };
        let plan = config.reload().map_err(|problem| {
            format!("{problem}; nothing was changed: the running configuration stays")
        })?;
        let mut reloading = Reloading {
            client,
            report: Report::new(config.file()),
            waiting: HashMap::new(),
        };
        reloading
            .report
            .refused
            .extend(plan.refused.iter().map(ToString::to_string));
        for operation in plan.operations {
            self.apply(operation, &mut reloading);
        }
        Ok(reloading)
    }

    /// Applies one operation: the control thread's own at once, the dataplane's by request.
    fn apply(&mut self, operation: Operation, reloading: &mut Reloading) {
        let described = operation.to_string();
        let report = &mut reloading.report;
        match operation {
            Operation::Dataplane(request) => {
                let id = self.dataplane.next_id();
                match self.dataplane.requests.send(id, request) {
                    Ok(()) => {
                        reloading.waiting.insert(id, described);
                    }
                    Err(_) => {
                        self.dataplane.accepting = false;
                        report
                            .failed
                            .push(format!("{described}: the dataplane has stopped"));
                    }
                }
            }
            Operation::Catalog(catalog) => {
                self.apps.supervisor.set_catalog(catalog);
                report.applied.push(described);
            }
            Operation::LogLevel(level) => {
                log::set_max_level(level);
                report.applied.push(described);
            }
            Operation::Groups { admin, socket } => {
                match Policy::new(admin.as_deref(), socket.as_deref()) {
                    Ok(policy) => {
                        self.policy = policy;
                        report.applied.push(described);
                    }
                    Err(error) => report.failed.push(format!("{described}: {error}")),
                }
            }
        }
    }

    /// Whether `id` is a request of the reload under way; if it is, its answer goes into the
    /// report, and the last answer ends the reload.
    pub(super) fn reload_answered(&mut self, id: RequestId, response: &Response) -> bool {
        let Some(reloading) = self.reloading.as_mut() else {
            return false;
        };
        let Some(described) = reloading.waiting.remove(&id) else {
            return false;
        };
        match response {
            Ok(reply) => reloading.report.applied.push(render::reply_text(reply)),
            Err(error) => reloading
                .report
                .failed
                .push(format!("{described}: {error}")),
        }
        if reloading.waiting.is_empty() {
            if let Some(reloading) = self.reloading.take() {
                if let Some(token) = self.finish_reload(reloading) {
                    self.drive(token);
                }
            }
        }
        true
    }

    /// Logs the report and answers the client that asked, if it is still there; returns its
    /// token.
    fn finish_reload(&mut self, reloading: Reloading) -> Option<Token> {
        let Reloading { client, report, .. } = reloading;
        for line in &report.applied {
            log::info!("reload: {line}");
        }
        for line in &report.refused {
            log::warn!("reload: {line}");
        }
        for line in &report.failed {
            log::error!("reload: {line}");
        }
        log::info!(
            "reloaded {}: {} change(s) applied, {} refused, {} failed",
            report.file.display(),
            report.applied.len(),
            report.refused.len(),
            report.failed.len()
        );
        let token = client?;
        let line = if report.is_complete() {
            success_line(RELOAD, &report, &report.text())
        } else {
            failure_line(Some(RELOAD), &report.text())
        };
        self.clients.get_mut(&token)?.answer(&line);
        Some(token)
    }
}
