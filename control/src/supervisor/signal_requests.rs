//! The questions apps answer over the signal protocol: a ping, and resource usage measured
//! from /proc and completed with what the app reports. Requests to an app that is being asked
//! already share that question, so that many clients cannot flood it.

use std::time::Instant;

use super::{usage, AppReply, RequestId, ResourceUsage, Supervisor, SupervisorError};
use crate::signal::{AppId, SignalError, SignalReply};

impl Supervisor {
    /// Pings app `id` over the signal protocol; answered with [`AppReply::Pong`]. While a
    /// ping to the app is on the wire, the request shares its answer.
    pub fn ping(&mut self, id: AppId, now: Instant) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        self.running_app(id)?;
        let request = self.next_request();
        if let Some((requests, _)) = self.pings.values_mut().find(|(_, app)| *app == id) {
            requests.push(request);
            return Ok(request);
        }
        let handle = self.signal.request_ping(id, now)?;
        self.pings.insert(handle, (vec![request], id));
        Ok(request)
    }

    /// Measures app `id` from /proc now and asks it what it reports; answered with
    /// [`AppReply::ResourceUsage`] (at once if it is not a signal client). While such a
    /// question to the app is on the wire, the request shares its answer.
    pub fn resource_usage(
        &mut self,
        id: AppId,
        now: Instant,
    ) -> Result<RequestId, SupervisorError> {
        self.last_now = now;
        self.running_app(id)?;
        let ticks_per_second = self.ticks_per_second;
        let Some(app) = self.apps.get_mut(&id) else {
            return Err(SupervisorError::NoSuchId(id));
        };
        let (name, restarts) = (app.name.clone(), app.restarts);
        let Some(process) = app.process_mut() else {
            return Err(SupervisorError::NoSuchId(id));
        };
        let pid = process.pid;
        let sample = usage::sample(pid).map_err(|err| SupervisorError::Proc {
            id,
            pid,
            problem: err.to_string(),
        })?;
        let (since, ticks_before) = process.cpu_mark.unwrap_or((process.started, 0));
        let cpu_percent = usage::cpu_percent(
            sample.cpu_ticks.saturating_sub(ticks_before),
            now.saturating_duration_since(since),
            ticks_per_second,
        );
        process.cpu_mark = Some((now, sample.cpu_ticks));
        let mut usage = ResourceUsage {
            id,
            name,
            pid,
            cpu_percent,
            rss_bytes: sample.rss_bytes,
            threads: sample.threads,
            open_files: sample.open_files,
            uptime_secs: now.saturating_duration_since(process.started).as_secs_f64(),
            restarts,
            reported: None,
            report_error: None,
        };
        let request = self.next_request();
        if let Some(waiting) = self
            .usages
            .values_mut()
            .find(|waiting| waiting.first().is_some_and(|(_, usage)| usage.id == id))
        {
            waiting.push((request, usage));
            return Ok(request);
        }
        match self.signal.request_resource_usage(id, now) {
            Ok(handle) => {
                self.usages.insert(handle, vec![(request, usage)]);
            }
            Err(err) => {
                usage.report_error = Some(err.to_string());
                self.results
                    .push_back((request, Ok(AppReply::ResourceUsage(usage))));
            }
        }
        Ok(request)
    }

    pub(super) fn take_signal_results(&mut self) {
        while let Some((handle, outcome)) = self.signal.poll_result() {
            if let Some((requests, id)) = self.pings.remove(&handle) {
                let reply = outcome
                    .map_err(SupervisorError::from)
                    .and_then(|reply| match reply {
                        SignalReply::Pong { rtt } => Ok(AppReply::Pong {
                            id,
                            rtt_ms: rtt.as_secs_f64() * 1000.0,
                        }),
                        other => Err(SupervisorError::Signal(SignalError::BadReply {
                            app: id,
                            request: "ping",
                            problem: format!("unexpected answer {other:?}"),
                        })),
                    });
                for request in requests {
                    self.results.push_back((request, reply.clone()));
                }
            } else if let Some(waiting) = self.usages.remove(&handle) {
                let (report, problem) = match outcome {
                    Ok(SignalReply::ResourceUsage(report)) => (Some(report), None),
                    Ok(other) => (None, Some(format!("unexpected answer {other:?}"))),
                    Err(err) => (None, Some(err.to_string())),
                };
                for (request, mut usage) in waiting {
                    usage.reported.clone_from(&report);
                    usage.report_error.clone_from(&problem);
                    self.results
                        .push_back((request, Ok(AppReply::ResourceUsage(usage))));
                }
            } else if let Some(id) = self.shutdowns.remove(&handle) {
                match outcome {
                    Ok(reply) => log::info!("app {id} acknowledged the shutdown: {reply:?}"),
                    Err(err) => log::info!("app {id}: {err}"),
                }
            } else {
                log::debug!("signal: result of request {handle} that the supervisor did not make");
            }
        }
    }
}
