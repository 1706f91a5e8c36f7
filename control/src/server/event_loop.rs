//! The control thread's loop: one mio poll over the control socket and its clients, the app
//! socket, the signalfd, the dataplane's replies (through the waker), and the supervisor's
//! pipes and signal server. It reads and writes the clients' sockets, runs their commands where
//! they belong (the command table, the supervisor, the dataplane), hands out the answers, hands
//! launched apps' app socket connections to the dataplane, and stops in phases: the dataplane
//! and the apps at once, then the clients.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use skywire_dataplane::api::messenger::{MessengerReply, MessengerRequest};
use skywire_dataplane::api::{Reply, Request, RequestId, RequestSender, Response};

use super::app_socket::AppSocket;
use super::apps::{self, Outcome};
use super::connection::{Action, Attachment, Connection};
use super::peer::{Credentials, Peer, Policy};
use super::signals::{Children, Received, Signals};
use super::{
    ClientBuffers, ControlError, Limits, APP_SOCKET, FIRST_CLIENT, LISTENER, SIGNALS, WAKER,
};
use crate::command::{Command, Parsed};
use crate::protocol::failure_line;
use crate::reload::ConfigSource;
use crate::render::{self, DetachReason, WatchDetach};
use crate::signal::SignalEvent;
use crate::supervisor::{self, AttachEvent, AttachId, Supervisor};
use reload::Reloading;

mod reload;

/// After the apps' shutdown escalation (signal, SIGTERM, SIGKILL), how long a stop still waits
/// for their exit before it kills and reaps what is left itself.
const APPS_STOP_MARGIN: Duration = Duration::from_secs(1);
/// Bytes read from a client at a time; its replies are written between reads.
const READ_CHUNK: usize = 16 * 1024;
/// Reads from one client per wake-up, so that a busy client cannot starve the others.
const READS_PER_WAKE: usize = 16;
/// Pending output above which a client's replies are written before more are made.
const EARLY_FLUSH: usize = 64 * 1024;
/// How often the loop wakes up when nothing happens, to notice a dataplane that has gone.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const EVENTS_CAPACITY: usize = 256;

/// Where the loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving clients.
    Serving,
    /// Waiting for the dataplane to stop (at most until `dataplane_deadline`) and for the
    /// apps to exit (at most until `apps_deadline`).
    Stopping {
        dataplane_deadline: Instant,
        apps_deadline: Instant,
    },
    /// Done: return, with an error if the dataplane went away on its own.
    Finished { dataplane_failed: bool },
}

/// A request the dataplane or the supervisor has not answered yet.
#[derive(Debug)]
struct Waiting {
    client: Token,
    command: &'static str,
}

/// The control thread's side of the dataplane: the request channel and what is in flight.
#[derive(Debug)]
struct Dataplane {
    requests: RequestSender,
    in_flight: HashMap<RequestId, Waiting>,
    /// The messenger's watches of the inbox (`msg watch`), by request, and the connection
    /// each streams to: their replies keep coming.
    watches: HashMap<RequestId, Token>,
    next_id: RequestId,
    shutdown_id: Option<RequestId>,
    /// False once stopping, or once the dataplane has gone.
    accepting: bool,
    /// It answered the shutdown (or went away).
    stopped: bool,
}

impl Dataplane {
    fn next_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }
}

/// The control thread's side of the supervisor: who waits for which of its answers, and which
/// connection each attached stream goes to.
#[derive(Debug)]
struct AppHost {
    supervisor: Supervisor,
    in_flight: HashMap<supervisor::RequestId, Waiting>,
    attached: HashMap<AttachId, Token>,
}

/// One client: its socket, who it is and its connection's state.
#[derive(Debug)]
struct Client {
    stream: UnixStream,
    peer: Peer,
    connection: Connection,
    /// Stopped reading at the per-wake-up bound with input possibly left.
    unread: bool,
    /// Reading or writing failed: close now.
    broken: bool,
    /// What the connection held when last counted into [`Control::buffered`].
    held: usize,
}

/// What one read from a client gave.
enum Read {
    Bytes,
    Done,
}

impl Client {
    /// Reads one chunk into the connection; `Done` when there is nothing more to read now.
    fn read_chunk(&mut self, buffer: &mut [u8], now: Instant) -> Read {
        if !self.connection.wants_input() || self.broken {
            return Read::Done;
        }
        loop {
            match self.stream.read(buffer) {
                Ok(0) => {
                    self.connection.handle_eof();
                    return Read::Done;
                }
                Ok(count) => {
                    self.connection.handle_bytes(&buffer[..count], now);
                    return Read::Bytes;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Read::Done,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::debug!("control connection closed while reading: {err}");
                    self.broken = true;
                    return Read::Done;
                }
            }
        }
    }

    /// Writes pending output until the socket would block.
    fn flush(&mut self) {
        while !self.broken && self.connection.pending() > 0 {
            match self.stream.write(self.connection.output()) {
                Ok(0) => self.broken = true,
                Ok(count) => self.connection.written(count),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::debug!("control connection closed while writing: {err}");
                    self.broken = true;
                }
            }
        }
    }

    /// Writes what waits when it is a lot, before more replies are made.
    fn make_room(&mut self) {
        if self.connection.pending() > EARLY_FLUSH {
            self.flush();
        }
    }

    fn answer(&mut self, line: &[u8]) {
        self.make_room();
        self.connection.handle_answer(line);
    }

    fn send(&mut self, line: &[u8]) {
        self.make_room();
        self.connection.send(line);
    }
}

/// What [`Control`] is made of.
pub(super) struct Parts {
    pub(super) poll: Poll,
    pub(super) listener: UnixListener,
    pub(super) app_socket: Option<AppSocket>,
    pub(super) signals: Signals,
    pub(super) waker: Arc<Waker>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) policy: Policy,
    pub(super) limits: Limits,
    pub(super) children: Children,
    pub(super) supervisor: Supervisor,
    pub(super) requests: RequestSender,
    pub(super) config: Option<Box<dyn ConfigSource>>,
}

/// The running loop.
pub(super) struct Control {
    poll: Poll,
    listener: Option<UnixListener>,
    app_socket: Option<AppSocket>,
    signals: Signals,
    _waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    policy: Policy,
    limits: Limits,
    clients: HashMap<Token, Client>,
    next_token: usize,
    dataplane: Dataplane,
    phase: Phase,
    children: Children,
    apps: AppHost,
    /// The configuration file that a reload reads.
    config: Option<Box<dyn ConfigSource>>,
    /// The reload under way, if one is.
    reloading: Option<Reloading>,
    /// The bytes all clients hold, as last counted.
    buffered: usize,
    /// Clients disconnected because all clients together held too many bytes.
    dropped_for_memory: u64,
}

impl Control {
    pub(super) fn new(parts: Parts) -> Control {
        Control {
            poll: parts.poll,
            listener: Some(parts.listener),
            app_socket: parts.app_socket,
            signals: parts.signals,
            _waker: parts.waker,
            stop: parts.stop,
            policy: parts.policy,
            limits: parts.limits,
            clients: HashMap::new(),
            next_token: FIRST_CLIENT,
            dataplane: Dataplane {
                requests: parts.requests,
                in_flight: HashMap::new(),
                watches: HashMap::new(),
                next_id: 1,
                shutdown_id: None,
                accepting: true,
                stopped: false,
            },
            phase: Phase::Serving,
            children: parts.children,
            apps: AppHost {
                supervisor: parts.supervisor,
                in_flight: HashMap::new(),
                attached: HashMap::new(),
            },
            config: parts.config,
            reloading: None,
            buffered: 0,
            dropped_for_memory: 0,
        }
    }

    /// Serves until stopped; then makes sure no app outlives the loop and closes the clients.
    pub(super) fn run(
        mut self,
        replies: &Receiver<(RequestId, Response)>,
    ) -> Result<(), ControlError> {
        let outcome = self.serve(replies);
        self.stop_apps();
        self.finish();
        outcome
    }

    fn serve(&mut self, replies: &Receiver<(RequestId, Response)>) -> Result<(), ControlError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.next_wakeup(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ControlError::EventLoop(err));
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    APP_SOCKET => self.accept_apps(),
                    SIGNALS => self.read_signals(),
                    // The stop flag and the replies are looked at below, on every round.
                    WAKER => {}
                    token if self.apps.supervisor.owns(token) => {
                        self.apps.supervisor.handle_event(event, now);
                    }
                    token => self.client_event(token),
                }
            }
            self.resume_reads();
            self.receive_replies(replies);
            self.drive_apps();
            self.expire_lines(Instant::now());
            if self.stop.swap(false, Ordering::SeqCst) {
                log::info!("stop requested");
                self.begin_shutdown();
            }
            if let Phase::Stopping {
                dataplane_deadline,
                apps_deadline,
            } = self.phase
            {
                let now = Instant::now();
                let dataplane_done = self.dataplane.stopped || now >= dataplane_deadline;
                let apps_done = self.apps.supervisor.all_stopped() || now >= apps_deadline;
                if dataplane_done && apps_done {
                    if !self.dataplane.stopped {
                        log::warn!(
                            "the dataplane did not stop within {} s: exiting without it",
                            self.limits.shutdown_timeout.as_secs()
                        );
                    }
                    self.phase = Phase::Finished {
                        dataplane_failed: false,
                    };
                }
            }
            if let Phase::Finished { dataplane_failed } = self.phase {
                return if dataplane_failed {
                    Err(ControlError::DataplaneStopped)
                } else {
                    Ok(())
                };
            }
        }
    }

    /// How long the next poll may sleep: not past the shutdown deadlines, a client's line
    /// deadline or the supervisor's next timer, not at all while a client has unread input,
    /// and never long, so that a dataplane that went away is noticed.
    fn next_wakeup(&self, now: Instant) -> Duration {
        if self.clients.values().any(|client| client.unread) {
            return Duration::ZERO;
        }
        let mut wakeup = now + HOUSEKEEPING;
        if let Phase::Stopping {
            dataplane_deadline,
            apps_deadline,
        } = self.phase
        {
            if !self.dataplane.stopped {
                wakeup = wakeup.min(dataplane_deadline);
            }
            wakeup = wakeup.min(apps_deadline);
        }
        if let Some(at) = self.apps.supervisor.poll_timeout() {
            wakeup = wakeup.min(at);
        }
        if let Some(at) = self
            .clients
            .values()
            .filter_map(|client| client.connection.poll_timeout())
            .min()
        {
            wakeup = wakeup.min(at);
        }
        wakeup.saturating_duration_since(now)
    }

    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.clients.len() >= self.limits.max_clients {
                        log::warn!(
                            "refusing a control connection: {} are open already",
                            self.clients.len()
                        );
                        let line = failure_line(
                            None,
                            &format!(
                                "too many clients: skywired serves at most {} control connections at once; close some and retry",
                                self.limits.max_clients
                            ),
                        );
                        // Best effort: a fresh socket's buffer takes one short line.
                        let _ = stream.write(&line);
                        continue;
                    }
                    let Some(peer) = self.identify(&mut stream) else {
                        continue;
                    };
                    let token = Token(self.next_token);
                    self.next_token = self.next_token.wrapping_add(1).max(FIRST_CLIENT);
                    if let Err(err) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot watch a control connection: {err}");
                        continue;
                    }
                    let client = Client {
                        stream,
                        peer,
                        connection: Connection::new(self.limits, now),
                        unread: false,
                        broken: false,
                        held: 0,
                    };
                    self.clients.insert(token, client);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("cannot accept a control connection: {err}");
                    return;
                }
            }
        }
    }

    /// Hands the app socket's new connections from launched apps to the dataplane (the others
    /// were refused).
    fn accept_apps(&mut self) {
        let Some(app_socket) = &self.app_socket else {
            return;
        };
        for connection in app_socket.accept(&self.apps.supervisor) {
            let dataplane = &mut self.dataplane;
            let id = dataplane.next_id();
            // Not answered: the dataplane serves the connection itself.
            if dataplane
                .requests
                .send(id, Request::AppConnection(connection))
                .is_err()
            {
                dataplane.accepting = false;
                log::warn!("an app socket connection dropped: the dataplane has stopped");
            }
        }
    }

    /// Who the client on `stream` is; `None`, after telling it why, when it may not use the
    /// socket at all.
    fn identify(&self, stream: &mut UnixStream) -> Option<Peer> {
        let credentials = match Credentials::of(stream) {
            Ok(credentials) => credentials,
            Err(err) => {
                log::warn!("refusing a control connection: cannot read its credentials: {err}");
                let line = failure_line(
                    None,
                    &format!("skywired cannot read this client's credentials ({err}), so it cannot tell what it may do"),
                );
                let _ = stream.write(&line);
                return None;
            }
        };
        let ancestry = self.apps.supervisor.ancestry(credentials.pid);
        let peer = self.policy.admit(credentials, ancestry);
        if let Some(refusal) = self.policy.refusal(&peer) {
            log::info!(
                "refused a control connection from {peer}: {}",
                peer.standing()
            );
            // Best effort, as above.
            let _ = stream.write(&failure_line(None, &refusal.to_string()));
            return None;
        }
        log::debug!("control connection from {peer}: {}", peer.standing());
        Some(peer)
    }

    fn read_signals(&mut self) {
        while let Some(received) = self.signals.poll() {
            match received {
                Received::Stop(signal) => {
                    log::info!("{signal} received: stopping");
                    self.begin_shutdown();
                }
                Received::Reload => {
                    log::info!("SIGHUP received: reloading the configuration");
                    self.reload(None);
                }
                Received::Child => {
                    self.children.reap();
                    self.apps.supervisor.reap(Instant::now());
                }
            }
        }
    }

    /// Stops serving: shuts the apps down and tells the dataplane to stop, both at once.
    fn begin_shutdown(&mut self) {
        if self.phase != Phase::Serving {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut app_socket) = self.app_socket.take() {
            let _ = self.poll.registry().deregister(app_socket.listener());
        }
        let now = Instant::now();
        self.apps.supervisor.shutdown_all(now);
        let apps_deadline = now + self.apps_stop_time();
        self.dataplane.accepting = false;
        let id = self.dataplane.next_id();
        match self.dataplane.requests.send(id, Request::Shutdown) {
            Ok(()) => self.dataplane.shutdown_id = Some(id),
            Err(_) => {
                log::info!("the dataplane has stopped already");
                self.dataplane.stopped = true;
            }
        }
        self.phase = Phase::Stopping {
            dataplane_deadline: now + self.limits.shutdown_timeout,
            apps_deadline,
        };
    }

    /// How long the apps' shutdown escalation takes at most: the signal shutdown's grace, then
    /// SIGTERM's, then a moment for SIGKILL.
    fn apps_stop_time(&self) -> Duration {
        let options = self.apps.supervisor.options();
        options.shutdown_grace + options.term_grace + APPS_STOP_MARGIN
    }

    /// Makes sure no app outlives the loop: waits for what a stop did not wait for (after the
    /// dataplane failed), then kills and reaps whatever is left.
    fn stop_apps(&mut self) {
        let now = Instant::now();
        let deadline = match self.phase {
            Phase::Finished {
                dataplane_failed: true,
            } => now + self.apps_stop_time(),
            _ => now,
        };
        if let Err(err) = self
            .apps
            .supervisor
            .finish_shutdown(&mut self.poll, deadline)
        {
            log::error!("cannot wait for the apps to stop: {err}; killing them");
        }
        self.drive_apps();
    }

    fn receive_replies(&mut self, replies: &Receiver<(RequestId, Response)>) {
        loop {
            match replies.try_recv() {
                Ok((id, response)) => self.deliver(id, &response),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.dataplane.accepting = false;
                    self.dataplane.stopped = true;
                    if self.phase == Phase::Serving {
                        log::error!("the dataplane thread has gone: stopping");
                        self.phase = Phase::Finished {
                            dataplane_failed: true,
                        };
                    }
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, id: RequestId, response: &Response) {
        if Some(id) == self.dataplane.shutdown_id {
            if !matches!(response, Ok(Reply::Stopped)) {
                log::warn!("the dataplane answered the shutdown with {response:?}");
            }
            self.dataplane.stopped = true;
            return;
        }
        if self.reload_answered(id, response) {
            return;
        }
        if let Some(&token) = self.dataplane.watches.get(&id) {
            self.watch_event(id, token, response);
            return;
        }
        let Some(waiting) = self.dataplane.in_flight.remove(&id) else {
            log::debug!("dropping the reply to unknown request {id}");
            return;
        };
        if let Ok(Reply::Messenger(MessengerReply::Watching { .. })) = response {
            self.watch_started(id, waiting.client);
            return;
        }
        if let (Ok(Reply::Neighbour(change)), Some(config)) = (response, self.config.as_mut()) {
            config.neighbour_changed(change);
        }
        if !self.clients.contains_key(&waiting.client) {
            log::debug!("dropping the reply to request {id}: its client has gone");
            return;
        }
        let line = match response {
            Ok(Reply::Status(status)) => render::status_line(
                waiting.command,
                status,
                &self.apps.supervisor.signal().listener_state(Instant::now()),
                &self.client_buffers(),
            ),
            _ => render::response_line(waiting.command, response),
        };
        let Some(client) = self.clients.get_mut(&waiting.client) else {
            return;
        };
        client.answer(&line);
        self.drive(waiting.client);
    }

    /// A watch of the inbox has begun for `client`'s `msg watch`: its connection becomes the
    /// stream. A client gone meanwhile ends it at once.
    fn watch_started(&mut self, watch: RequestId, client: Token) {
        let Some(connection) = self.clients.get_mut(&client) else {
            self.unwatch(watch);
            return;
        };
        self.dataplane.watches.insert(watch, client);
        connection.make_room();
        connection
            .connection
            .handle_watching(watch, &render::watching_line());
        self.drive(client);
    }

    /// A message for a watch's connection, or the watch's end.
    fn watch_event(&mut self, watch: RequestId, token: Token, response: &Response) {
        let Some(client) = self.clients.get_mut(&token) else {
            self.unwatch(watch);
            return;
        };
        match response {
            Ok(Reply::Messenger(MessengerReply::Arrived { message })) => {
                client.send(&render::arrived_line(message));
            }
            Ok(Reply::Messenger(MessengerReply::WatchEnded { ended })) => {
                self.dataplane.watches.remove(&watch);
                client.make_room();
                client
                    .connection
                    .handle_watch_end(&render::watch_detached_line((*ended).into()));
            }
            other => log::debug!("dropping the watch {watch}'s reply {other:?}"),
        }
        self.drive(token);
    }

    /// Ends a watch: the messenger streams no more to it.
    fn unwatch(&mut self, watch: RequestId) {
        self.dataplane.watches.remove(&watch);
        if !self.dataplane.accepting {
            return;
        }
        // The messenger does not answer it.
        let id = self.dataplane.next_id();
        let request = Request::Messenger(MessengerRequest::Unwatch { watch });
        if self.dataplane.requests.send(id, request).is_err() {
            self.dataplane.accepting = false;
        }
    }

    /// Runs the supervisor's timers and hands out what it produced: finished requests to the
    /// clients waiting for them, attached streams to their connections, signal events to the log.
    fn drive_apps(&mut self) {
        let now = Instant::now();
        if self
            .apps
            .supervisor
            .poll_timeout()
            .is_some_and(|at| at <= now)
        {
            self.apps.supervisor.handle_timeout(now);
        }
        let mut touched = Vec::new();
        while let Some((id, result)) = self.apps.supervisor.poll_result() {
            let Some(waiting) = self.apps.in_flight.remove(&id) else {
                log::debug!("dropping the supervisor's answer {id}: nobody waits for it");
                continue;
            };
            let Some(client) = self.clients.get_mut(&waiting.client) else {
                log::debug!("dropping the supervisor's answer {id}: its client has gone");
                continue;
            };
            client.answer(&render::result_line(waiting.command, &result));
            touched.push(waiting.client);
        }
        while let Some((attach, event)) = self.apps.supervisor.poll_attached() {
            let Some(&token) = self.apps.attached.get(&attach) else {
                continue;
            };
            let Some(client) = self.clients.get_mut(&token) else {
                self.apps.attached.remove(&attach);
                self.apps.supervisor.detach(attach);
                continue;
            };
            let Some(attachment) = client
                .connection
                .attachment()
                .filter(|held| held.attach == attach)
            else {
                continue;
            };
            client.send(&render::stream_line(attachment.app, &event));
            if let AttachEvent::Exited {
                restarting: false, ..
            } = event
            {
                client.make_room();
                client.connection.handle_stream_end(&render::detached_line(
                    attachment.app,
                    DetachReason::Exited,
                ));
                self.apps.attached.remove(&attach);
            }
            touched.push(token);
        }
        while let Some(event) = self.apps.supervisor.signal_mut().poll_event() {
            log_signal_event(event);
        }
        touched.sort_unstable();
        touched.dedup();
        for token in touched {
            self.drive(token);
        }
    }

    /// Closes connections that did not send their first line, or finish a line, in time.
    fn expire_lines(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, client)| client.connection.poll_timeout().is_some_and(|at| at <= now))
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            if let Some(client) = self.clients.get_mut(&token) {
                client.make_room();
                client.connection.handle_timeout(now);
            }
            self.settle(token);
        }
    }

    /// Reads what a client sent, up to this wake-up's share, answering as it goes.
    fn client_event(&mut self, token: Token) {
        let mut buffer = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_WAKE {
            // An event for a client closed earlier in this round is spurious.
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            client.unread = false;
            let read = client.read_chunk(&mut buffer, Instant::now());
            self.drive(token);
            if let Read::Done = read {
                return;
            }
        }
        if let Some(client) = self.clients.get_mut(&token) {
            client.unread = true;
        }
    }

    /// Continues reading from clients that had more input than one wake-up's share.
    fn resume_reads(&mut self) {
        let unread: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, client)| client.unread)
            .map(|(token, _)| *token)
            .collect();
        for token in unread {
            self.client_event(token);
        }
    }

    /// Runs a connection's actions until it waits, then writes and maybe closes it.
    fn drive(&mut self, token: Token) {
        loop {
            // Each action may add a reply: count it before the next.
            self.bound_buffers(token);
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            client.make_room();
            if client.broken {
                break;
            }
            let Some(action) = client.connection.poll_action() else {
                break;
            };
            match action {
                Action::Run(parsed) => self.run_command(token, parsed),
                Action::Input { app, line } => {
                    if let Err(err) = self.apps.supervisor.send_input(app, &line) {
                        client.send(&failure_line(Some("attach"), &err.to_string()));
                    }
                }
                Action::Detach(attach) => {
                    self.apps.supervisor.detach(attach);
                    self.apps.attached.remove(&attach);
                }
                Action::Unwatch(watch) => self.unwatch(watch),
            }
        }
        self.settle(token);
    }

    /// Runs one command where it belongs, if the client may: the command table, the
    /// supervisor or the dataplane.
    fn run_command(&mut self, token: Token, parsed: Parsed) {
        let name = parsed.spec.name;
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if let Err(denied) = self.policy.check(&client.peer, name, parsed.role) {
            log::info!(
                "refused `{name}` to {} ({})",
                client.peer,
                client.peer.standing()
            );
            client.answer(&failure_line(Some(name), &denied.to_string()));
            return;
        }
        match parsed.command {
            Command::Local(local) => client.answer(&render::local_line(&local)),
            Command::App(command) => {
                let apps = &mut self.apps;
                match apps::run(name, &command, &mut apps.supervisor, Instant::now()) {
                    Outcome::Reply(line) => client.answer(&line),
                    Outcome::Later(id) => {
                        apps.in_flight.insert(
                            id,
                            Waiting {
                                client: token,
                                command: name,
                            },
                        );
                    }
                    Outcome::Attached { line, attach, app } => {
                        apps.attached.insert(attach, token);
                        client.make_room();
                        client
                            .connection
                            .handle_attached(Attachment { attach, app }, &line);
                    }
                }
            }
            Command::Reload => self.reload(Some(token)),
            Command::Dataplane(request) => {
                let dataplane = &mut self.dataplane;
                if !dataplane.accepting {
                    client.answer(&failure_line(
                        Some(name),
                        "skywired is stopping: the command was not run",
                    ));
                    return;
                }
                let id = dataplane.next_id();
                match dataplane.requests.send(id, request) {
                    Ok(()) => {
                        dataplane.in_flight.insert(
                            id,
                            Waiting {
                                client: token,
                                command: name,
                            },
                        );
                    }
                    Err(_) => {
                        dataplane.accepting = false;
                        client.answer(&failure_line(
                            Some(name),
                            "the dataplane has stopped, so skywired is stopping: see its log",
                        ));
                    }
                }
            }
        }
    }

    /// What the clients hold together.
    fn client_buffers(&self) -> ClientBuffers {
        ClientBuffers {
            clients: self.clients.len(),
            buffered_bytes: self.buffered,
            limit: self.limits.max_buffered_total,
            dropped: self.dropped_for_memory,
        }
    }

    /// Counts what a client holds now into the total; past the limit, disconnects the
    /// clients holding the most until the total is within it again: many clients that do not
    /// read cannot make the daemon hoard.
    fn bound_buffers(&mut self, token: Token) {
        if let Some(client) = self.clients.get_mut(&token) {
            let held = client.connection.buffered();
            self.buffered = self.buffered.saturating_sub(client.held) + held;
            client.held = held;
        }
        while self.buffered > self.limits.max_buffered_total {
            let Some((token, held)) = self
                .clients
                .iter()
                .map(|(token, client)| (*token, client.held))
                .max_by_key(|(_, held)| *held)
            else {
                return;
            };
            log::warn!(
                "disconnecting the control client that holds the most ({held} bytes): all clients together hold {} bytes, more than {}",
                self.buffered,
                self.limits.max_buffered_total
            );
            self.dropped_for_memory += 1;
            self.close(token);
        }
    }

    /// Writes what a client has pending and closes it when it is done with.
    fn settle(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.flush();
        if !client.broken && !client.connection.is_finished() {
            self.bound_buffers(token);
            return;
        }
        self.close(token);
    }

    /// Closes a client's connection, detaching it from the app it was attached to.
    fn close(&mut self, token: Token) {
        if let Some(mut client) = self.clients.remove(&token) {
            self.buffered = self.buffered.saturating_sub(client.held);
            if let Some(attachment) = client.connection.attachment() {
                self.apps.supervisor.detach(attachment.attach);
                self.apps.attached.remove(&attachment.attach);
            }
            if let Some(watch) = client.connection.watching() {
                self.unwatch(watch);
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }

    /// Tells clients still waiting that no answer is coming and attached ones that their
    /// stream ends, writes what can be written without blocking, and closes every connection.
    fn finish(&mut self) {
        for (_, mut client) in self.clients.drain() {
            if let Some(command) = client.connection.running() {
                client.answer(&failure_line(
                    Some(command),
                    "skywired stopped before answering this command",
                ));
            }
            if let Some(attachment) = client.connection.attachment() {
                self.apps.supervisor.detach(attachment.attach);
                client.make_room();
                client.connection.handle_stream_end(&render::detached_line(
                    attachment.app,
                    DetachReason::Stopping,
                ));
            }
            if client.connection.watching().is_some() {
                client.make_room();
                client
                    .connection
                    .handle_watch_end(&render::watch_detached_line(WatchDetach::Stopping));
            }
            client.flush();
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
        self.apps.attached.clear();
        self.dataplane.watches.clear();
    }
}

fn log_signal_event(event: SignalEvent) {
    match event {
        SignalEvent::Registered { app, replaced } => log::info!(
            "app {app} registered with the signal server{}",
            if replaced { " again" } else { "" }
        ),
        SignalEvent::Disconnected { app } => {
            log::info!("app {app} disconnected from the signal server");
        }
        SignalEvent::Refused {
            claimed,
            peer,
            reason,
        } => log::warn!(
            "signal server: refused a registration from {peer} (id {}): {reason}",
            claimed.map_or_else(|| "unreadable".to_owned(), |id| id.to_string())
        ),
    }
}
