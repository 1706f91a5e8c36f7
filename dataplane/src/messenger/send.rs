//! Delivering messages. Each `msg send` waits for a ready route to the recipient (one is set
//! up over an automatic path when none is under way), opens a mesh stream to its messenger
//! port, sends the message and waits for the answer. A stream that breaks before the answer
//! is opened again with the same message id, so a recipient that stored it already only says
//! so; a refusal is final; the send timeout ends every try. The outbox records what was
//! stored. A route that breaks under a stream, or whose far end restarted, is the node's to
//! repair: the stream waits for it.

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use super::wire::{self, Answer, ANSWER_LEN};
use super::{smol_duration, Ending, MessengerError, Stores, PORT};
use crate::api::messenger::{Mailbox, MessageId, MessageRow, SentReply};
use crate::api::{RequestError, RequestId, Response};
use crate::identity::NodeKey;
use crate::node::{RouteError, RouteWait, SetupId};
use crate::service::Context;
use crate::stack::TcpHandle;

/// Deliveries under way at once.
pub(super) const MAX_DELIVERIES: usize = 64;
/// The first and the longest wait before trying again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Where one delivery stands.
#[derive(Debug)]
enum Phase {
    /// Waiting for a ready route; `setup` is the one this delivery started, if any.
    Route { setup: Option<SetupId> },
    /// Waiting before the next try.
    Wait { until: Instant },
    /// A stream is open: the message goes out, the answer comes back.
    Stream {
        handle: TcpHandle,
        message: Vec<u8>,
        sent: usize,
        answer: [u8; ANSWER_LEN],
        received: usize,
        /// The stream was established: a close now is a break, not a refusal.
        established: bool,
    },
    /// The recipient stored it; the outbox is being written.
    Recording,
}

#[derive(Debug)]
struct Delivery {
    request: RequestId,
    peer: NodeKey,
    id: MessageId,
    text: String,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    attempts: u32,
    phase: Phase,
    /// A route to the recipient was ready at some point.
    routed: bool,
    /// The whole message went out on some stream: the recipient may have it.
    went_out: bool,
    /// What went wrong last, for the error at the deadline.
    problem: String,
    backoff: Duration,
    /// How long the delivery took, once the answer came.
    delivery: Option<Duration>,
}

/// What one step of a delivery came to.
enum Step {
    Keep,
    /// It failed: the request is answered with this.
    Failed(MessengerError),
}

/// The deliveries under way.
#[derive(Debug, Default)]
pub(super) struct Sender {
    deliveries: Vec<Delivery>,
}

impl Sender {
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// Starts delivering message `id` to `peer` for `request`.
    pub fn start(
        &mut self,
        now: Instant,
        request: RequestId,
        peer: NodeKey,
        id: MessageId,
        text: String,
        timeout: Duration,
    ) {
        self.deliveries.push(Delivery {
            request,
            peer,
            id,
            text,
            started: now,
            deadline: now + timeout,
            timeout,
            attempts: 0,
            phase: Phase::Route { setup: None },
            routed: false,
            went_out: false,
            problem: "no route was tried yet".to_owned(),
            backoff: RETRY_FIRST,
            delivery: None,
        });
    }

    /// Moves every delivery on; returns the requests that failed, with why.
    pub fn pump(
        &mut self,
        cx: &mut Context<'_>,
        stores: &mut Stores,
        ending: &mut Ending,
    ) -> Vec<(RequestId, Response)> {
        let mut answered = Vec::new();
        self.deliveries
            .retain_mut(|delivery| match delivery.step(cx, stores, ending) {
                Step::Keep => true,
                Step::Failed(error) => {
                    log::info!("messenger: message to {}: {error}", delivery.peer);
                    answered.push((delivery.request, Err(RequestError::app(error))));
                    false
                }
            });
        answered
    }

    /// The outbox has recorded message `id` to `peer` (or could not): its request's answer.
    pub fn recorded(
        &mut self,
        peer: NodeKey,
        id: MessageId,
        outbox_error: Option<String>,
    ) -> Option<(RequestId, SentReply)> {
        let index = self
            .deliveries
            .iter()
            .position(|d| d.peer == peer && d.id == id && matches!(d.phase, Phase::Recording))?;
        let delivery = self.deliveries.swap_remove(index);
        log::info!(
            "messenger: message {id} delivered to {peer} after {} attempt(s)",
            delivery.attempts
        );
        Some((
            delivery.request,
            SentReply {
                peer,
                id,
                attempts: delivery.attempts,
                delivery_ms: delivery.delivery.unwrap_or_default().as_secs_f64() * 1000.0,
                outbox_error,
            },
        ))
    }

    /// The route to `peer` is gone: its streams are reset, to be opened again.
    pub fn route_down(&mut self, cx: &mut Context<'_>, ending: &mut Ending, peer: &NodeKey) {
        for delivery in self.deliveries.iter_mut().filter(|d| d.peer == *peer) {
            delivery.retry(cx, ending, "the route went down".to_owned());
        }
    }

    /// A route build failed: the deliveries waiting on it try again after a while.
    pub fn route_failed(&mut self, now: Instant, setup: SetupId, error: &RouteError) {
        for delivery in &mut self.deliveries {
            if matches!(delivery.phase, Phase::Route { setup: Some(s) } if s == setup) {
                delivery.problem = error.to_string();
                delivery.phase = Phase::Wait {
                    until: now + delivery.next_backoff(),
                };
            }
        }
    }

    /// Ends every delivery: their streams are reset; returns their requests. One whose message
    /// is stored and being recorded is left to finish.
    pub fn stop(&mut self, cx: &mut Context<'_>, ending: &mut Ending) -> Vec<RequestId> {
        let mut stopped = Vec::new();
        self.deliveries.retain(|delivery| {
            if matches!(delivery.phase, Phase::Recording) {
                return true;
            }
            if let Phase::Stream { handle, .. } = delivery.phase {
                ending.reset(cx, handle);
            }
            stopped.push(delivery.request);
            false
        });
        stopped
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deliveries
            .iter()
            .filter_map(|delivery| match delivery.phase {
                Phase::Recording => None,
                Phase::Wait { until } => Some(until.min(delivery.deadline)),
                _ => Some(delivery.deadline),
            })
            .min()
    }
}

impl Delivery {
    fn next_backoff(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        wait
    }

    /// Drops the stream, if there is one, and tries again after a while.
    fn retry(&mut self, cx: &mut Context<'_>, ending: &mut Ending, problem: String) {
        match self.phase {
            Phase::Recording => return,
            Phase::Stream { handle, .. } => ending.reset(cx, handle),
            Phase::Route { .. } | Phase::Wait { .. } => {}
        }
        self.problem = problem;
        self.phase = Phase::Wait {
            until: cx.now + self.next_backoff(),
        };
    }

    fn step(&mut self, cx: &mut Context<'_>, stores: &mut Stores, ending: &mut Ending) -> Step {
        if cx.now >= self.deadline && !matches!(self.phase, Phase::Recording) {
            if let Phase::Stream { handle, .. } = self.phase {
                ending.reset(cx, handle);
            }
            let why = std::mem::take(&mut self.problem);
            return Step::Failed(if self.routed {
                MessengerError::TimedOut {
                    peer: self.peer,
                    after: self.timeout,
                    why,
                    went_out: self.went_out,
                }
            } else {
                MessengerError::NoRoute {
                    peer: self.peer,
                    after: self.timeout,
                    why,
                }
            });
        }
        loop {
            match &mut self.phase {
                Phase::Wait { until } => {
                    if cx.now < *until {
                        return Step::Keep;
                    }
                    self.phase = Phase::Route { setup: None };
                }
                // A build's failure comes as an event (`Sender::route_failed`).
                Phase::Route { setup } => match cx.node.want_route(cx.now, &self.peer, None) {
                    Ok(RouteWait::Ready) => {
                        self.routed = true;
                        self.open_stream(cx);
                        if matches!(self.phase, Phase::Wait { .. }) {
                            return Step::Keep;
                        }
                    }
                    Ok(RouteWait::Started(started)) => {
                        *setup = Some(started);
                        return Step::Keep;
                    }
                    Ok(RouteWait::Underway) => return Step::Keep,
                    Err(error) => {
                        self.problem = error.to_string();
                        self.phase = Phase::Wait {
                            until: cx.now + self.next_backoff(),
                        };
                        return Step::Keep;
                    }
                },
                Phase::Stream { .. } => return self.exchange(cx, stores, ending),
                Phase::Recording => return Step::Keep,
            }
        }
    }

    fn open_stream(&mut self, cx: &mut Context<'_>) {
        let remote = SocketAddrV6::new(self.peer.mesh_address(), PORT, 0, 0);
        match cx.stack.connect(remote) {
            Ok(handle) => {
                cx.stack
                    .tcp(handle)
                    .set_timeout(Some(smol_duration(self.timeout)));
                self.attempts += 1;
                self.problem = format!(
                    "its messenger port did not answer over the route (attempt {})",
                    self.attempts
                );
                self.phase = Phase::Stream {
                    handle,
                    message: wire::emit_message(self.id, &self.text),
                    sent: 0,
                    answer: [0; ANSWER_LEN],
                    received: 0,
                    established: false,
                };
            }
            Err(error) => {
                self.problem = error.to_string();
                self.phase = Phase::Wait {
                    until: cx.now + self.next_backoff(),
                };
            }
        }
    }

    /// Sends the message and reads the answer.
    fn exchange(&mut self, cx: &mut Context<'_>, stores: &mut Stores, ending: &mut Ending) -> Step {
        let Phase::Stream {
            handle,
            message,
            sent,
            answer,
            received,
            established,
        } = &mut self.phase
        else {
            return Step::Keep;
        };
        let handle = *handle;
        let socket = cx.stack.tcp(handle);
        *established |= socket.state() == tcp::State::Established;
        if *sent < message.len() && socket.can_send() {
            if let Ok(count) = socket.send_slice(&message[*sent..]) {
                *sent += count;
            }
        }
        self.went_out |= *sent == message.len();
        if let Ok(count) = socket.recv_slice(&mut answer[*received..]) {
            *received += count;
        }
        let parsed = wire::parse_answer(&answer[..*received]);
        let closed = !socket.may_recv() && socket.state() != tcp::State::SynSent;
        let established = *established;
        match parsed {
            Ok(Some(reply)) if reply.is_stored() => {
                ending.close(cx, handle);
                self.delivery = Some(cx.now.saturating_duration_since(self.started));
                stores.append(
                    Mailbox::Outbox,
                    MessageRow {
                        id: self.id,
                        peer: self.peer,
                        at_ms: 0,
                        text: std::mem::take(&mut self.text),
                    },
                );
                self.phase = Phase::Recording;
                Step::Keep
            }
            Ok(Some(refusal)) => {
                ending.close(cx, handle);
                Step::Failed(MessengerError::Refused {
                    peer: self.peer,
                    answer: refusal,
                })
            }
            Err(error) => {
                ending.reset(cx, handle);
                Step::Failed(MessengerError::Refused {
                    peer: self.peer,
                    answer: Answer::Unknown(match error {
                        wire::WireError::BadVersion(version) => version,
                        wire::WireError::BadLength(_) => 0,
                    }),
                })
            }
            Ok(None) if closed && !established => {
                // Reset while connecting: nothing listens on the recipient's messenger port,
                // or it does not admit this node.
                ending.reset(cx, handle);
                Step::Failed(MessengerError::StreamRefused(self.peer))
            }
            Ok(None) if closed => {
                self.retry(
                    cx,
                    ending,
                    "the stream closed before the answer came".to_owned(),
                );
                Step::Keep
            }
            Ok(None) => Step::Keep,
        }
    }
}
