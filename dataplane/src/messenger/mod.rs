//! The messenger: users talk by node key. `msg send` carries a text over a mesh TCP stream to
//! the recipient's messenger port, on a route built with an automatic path when none is up;
//! the recipient writes it to its inbox log, and only once the driver has it on the disk does
//! it answer, and the sender record it in its outbox. A message carries a random id, so a
//! retry after a broken stream is recognised and never stored twice.
//!
//! This module owns the app's settings, its two mailboxes in memory (the logs themselves are
//! the driver's to read and write: [`StoreOp`]), the inbox watches and the requests; `receive`
//! serves the streams that arrive, `send` delivers, `wire` is what they say on a stream and
//! `records` the logs' format.

mod receive;
pub mod records;
mod send;
pub mod wire;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blake2::{Blake2s256, Digest};

use crate::api::messenger::{
    Mailbox, MessageId, MessageRow, MessagesReply, MessengerReply, MessengerRequest, WatchEnd,
};
use crate::api::{Reply, RequestError, RequestId, Response};
use crate::identity::NodeKey;
use crate::node::Event;
use crate::service::{Context, StoreOp, StoreResult};
use crate::stack::{Admission, TcpHandle};

use receive::Receiver;
use send::Sender;

/// The mesh TCP port every messenger listens on: below 1024, so the node's own.
pub const PORT: u16 = 100;
/// Listening sockets kept ready on the port.
const BACKLOG: usize = 4;
/// Watches of the inbox at once.
const MAX_WATCHERS: usize = 64;
/// Messages `msg inbox` and `msg outbox` list at most: the newest.
pub const LIST_LIMIT: usize = 1000;
/// How long a stream that sent its FIN may wait for the other end's.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The messenger's limits and policy (the config's `messenger:` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The nodes whose messages are taken; `None`: any mesh node.
    pub allow: Option<Vec<NodeKey>>,
    /// The longest text taken, in bytes (at most [`wire::MAX_TEXT`]).
    pub max_text_bytes: usize,
    /// The most messages the inbox holds; more are refused until the inbox is emptied.
    pub max_inbox: usize,
    /// Messages taken from one sender per minute (a bucket of this many, refilled evenly).
    pub per_sender_per_minute: u32,
    /// How long `msg send` tries to deliver before it says why it could not.
    pub send_timeout: Duration,
    /// Incoming streams served at once.
    pub max_streams: usize,
}

impl Settings {
    /// Who may open messenger streams, checked at their SYN: the allowed nodes, within
    /// `max_streams`, a quarter of them from one node.
    fn admission(&self) -> Admission {
        let admission = match &self.allow {
            Some(keys) => Admission::keys(keys),
            None => Admission::any(),
        };
        admission.limit(self.max_streams, self.max_streams.div_ceil(4))
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow: None,
            max_text_bytes: 4096,
            max_inbox: 10_000,
            per_sender_per_minute: 60,
            send_timeout: Duration::from_secs(10),
            max_streams: 64,
        }
    }
}

impl Settings {
    /// Whether messages from `peer` are taken.
    pub fn allows(&self, peer: &NodeKey) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.contains(peer))
    }

    /// The nodes allowed, whatever their order and repeats; `None`: any mesh node.
    fn allowed(&self) -> Option<BTreeSet<NodeKey>> {
        self.allow
            .as_ref()
            .map(|keys| keys.iter().copied().collect())
    }

    /// The numeric settings by their config keys.
    fn limits(&self) -> [(&'static str, u128); 5] {
        [
            ("max_text_bytes", self.max_text_bytes as u128),
            ("max_inbox", self.max_inbox as u128),
            ("per_sender_per_minute", self.per_sender_per_minute.into()),
            ("send_timeout_ms", self.send_timeout.as_millis()),
            ("max_streams", self.max_streams as u128),
        ]
    }

    /// What differs from `old`, one `key old → new` per setting, as the config names them
    /// (for the log); empty when nothing does.
    fn changes_from(&self, old: &Settings) -> Vec<String> {
        let mut changes = Vec::new();
        if self.allowed() != old.allowed() {
            let allow = match &self.allow {
                None => "any node".to_owned(),
                Some(keys) if keys.is_empty() => "nobody".to_owned(),
                Some(keys) => keys
                    .iter()
                    .map(NodeKey::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            changes.push(format!("allow → {allow}"));
        }
        for ((key, old), (_, new)) in old.limits().into_iter().zip(self.limits()) {
            if old != new {
                changes.push(format!("{key} {old} → {new}"));
            }
        }
        changes
    }
}

/// What the service's messenger is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessengerOptions {
    /// Where its logs are kept (the node's state folder).
    pub state_dir: PathBuf,
    /// Its settings; `None`: no messenger (no `messenger:` section).
    pub settings: Option<Settings>,
}

/// Why a messenger request failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MessengerError {
    /// There is no `messenger:` section.
    #[error("this node has no messenger: add a `messenger:` section to the config (`messenger: {{}}` for the defaults, see config.yaml) and reload")]
    NotConfigured,
    /// The logs are still being read.
    #[error("the messenger is still reading its logs: try again in a moment")]
    Loading,
    /// A log could not be read.
    #[error("the messenger cannot read its {mailbox} ({why}): fix or move the file and restart skywired")]
    Unreadable {
        /// Which log.
        mailbox: Mailbox,
        /// What the system said, with the file.
        why: String,
    },
    /// The message was addressed to this node.
    #[error("{0} is this node's own key: messages go to other nodes")]
    OwnKey(NodeKey),
    /// An empty text.
    #[error("the text is empty: give the message after the key")]
    Empty,
    /// A text beyond what the protocol carries.
    #[error(
        "the text is {len} bytes; a message carries at most {} bytes",
        wire::MAX_TEXT
    )]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Too many messages are being delivered.
    #[error("{0} messages are being delivered already: wait for their answers")]
    Busy(usize),
    /// Too many watches.
    #[error("{MAX_WATCHERS} watches of the inbox run already: end one")]
    TooManyWatchers,
    /// No route to the recipient came up in time.
    #[error("not delivered: no route to {peer} within {} ms ({why}); is it running, and are its links up?", .after.as_millis())]
    NoRoute {
        /// The recipient.
        peer: NodeKey,
        /// The send timeout.
        after: Duration,
        /// What went wrong last.
        why: String,
    },
    /// The recipient's messenger port refused the stream: it runs no messenger, or its
    /// `allow` list leaves this node out (both are answered alike, before any stream exists).
    #[error("not delivered: {0} refused the stream: it runs no messenger, or does not take messages from this node (its messenger.allow)")]
    StreamRefused(NodeKey),
    /// The recipient refused the message.
    #[error("not delivered: {peer} refused it: {answer}")]
    Refused {
        /// The recipient.
        peer: NodeKey,
        /// Its answer.
        answer: wire::Answer,
    },
    /// The recipient's answer did not come in time.
    #[error("not delivered: no answer from {peer} within {} ms ({why}){}", .after.as_millis(), if *.went_out { "; it may have stored the message all the same" } else { "; the message never reached it" })]
    TimedOut {
        /// The recipient.
        peer: NodeKey,
        /// The send timeout.
        after: Duration,
        /// What went wrong last.
        why: String,
        /// The whole message went out on some stream.
        went_out: bool,
    },
    /// The messenger stopped before the message was delivered.
    #[error("not delivered: the messenger stopped (its section left the config)")]
    Stopped,
}

/// Draws message ids: BLAKE2s of a secret seed (from the service's injected rng) and a
/// counter, so they are unpredictable in the daemon and repeatable in the simulator.
#[derive(Debug)]
struct MessageIds {
    seed: [u8; 32],
    counter: u64,
}

impl MessageIds {
    fn next(&mut self) -> MessageId {
        self.counter += 1;
        let digest = Blake2s256::new()
            .chain_update(b"skywire message id")
            .chain_update(self.seed)
            .chain_update(self.counter.to_be_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        MessageId(id)
    }
}

/// Where a log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Load {
    NotAsked,
    Loading,
    Loaded,
    Failed(String),
}

/// A mailbox in memory: its log's records, their ids, and the appends under way.
#[derive(Debug)]
struct Store {
    mailbox: Mailbox,
    file: PathBuf,
    load: Load,
    records: Vec<MessageRow>,
    ids: HashSet<(NodeKey, MessageId)>,
    appending: HashSet<(NodeKey, MessageId)>,
}

impl Store {
    fn new(mailbox: Mailbox, state_dir: &std::path::Path) -> Store {
        Store {
            mailbox,
            file: state_dir.join(format!("messenger-{mailbox}.log")),
            load: Load::NotAsked,
            records: Vec::new(),
            ids: HashSet::new(),
            appending: HashSet::new(),
        }
    }

    /// Messages stored and being stored.
    fn len(&self) -> usize {
        self.records.len() + self.appending.len()
    }

    /// Why the mailbox cannot be used now, if it cannot.
    fn unusable(&self) -> Option<MessengerError> {
        match &self.load {
            Load::Loaded => None,
            Load::NotAsked | Load::Loading => Some(MessengerError::Loading),
            Load::Failed(why) => Some(MessengerError::Unreadable {
                mailbox: self.mailbox,
                why: why.clone(),
            }),
        }
    }

    fn list(&self, peer: Option<&NodeKey>) -> MessagesReply {
        let matching: Vec<&MessageRow> = self
            .records
            .iter()
            .filter(|record| peer.is_none_or(|peer| record.peer == *peer))
            .collect();
        let skip = matching.len().saturating_sub(LIST_LIMIT);
        MessagesReply {
            mailbox: self.mailbox,
            total: matching.len(),
            messages: matching.into_iter().skip(skip).cloned().collect(),
        }
    }
}

/// What an incoming message comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// It was stored before: the answer is at once.
    AlreadyStored,
    /// The inbox is full.
    Full,
    /// It is being appended: the answer comes with the store's.
    Appending,
}

/// Both mailboxes and the log operations for the driver.
#[derive(Debug)]
struct Stores {
    inbox: Store,
    outbox: Store,
    ops: VecDeque<StoreOp>,
    /// Operations handed out or queued that the driver has not answered yet.
    awaited: usize,
}

impl Stores {
    fn push(&mut self, op: StoreOp) {
        self.awaited += 1;
        self.ops.push_back(op);
    }

    fn load(&mut self) {
        for mailbox in [Mailbox::Inbox, Mailbox::Outbox] {
            let store = self.store_mut(mailbox);
            if matches!(store.load, Load::NotAsked | Load::Failed(_)) {
                store.load = Load::Loading;
                let file = store.file.clone();
                self.push(StoreOp::Load { mailbox, file });
            }
        }
    }

    fn is_loaded(&self) -> bool {
        self.inbox.load == Load::Loaded && self.outbox.load == Load::Loaded
    }

    fn store(&self, mailbox: Mailbox) -> &Store {
        match mailbox {
            Mailbox::Inbox => &self.inbox,
            Mailbox::Outbox => &self.outbox,
        }
    }

    fn store_mut(&mut self, mailbox: Mailbox) -> &mut Store {
        match mailbox {
            Mailbox::Inbox => &mut self.inbox,
            Mailbox::Outbox => &mut self.outbox,
        }
    }

    /// Asks for `message` to be appended to `mailbox`'s log.
    fn append(&mut self, mailbox: Mailbox, message: MessageRow) {
        let store = self.store_mut(mailbox);
        store.appending.insert((message.peer, message.id));
        let file = store.file.clone();
        self.push(StoreOp::Append {
            mailbox,
            file,
            message,
        });
    }

    /// A complete message from `peer` arrived: it is stored unless it was before or the inbox
    /// is full.
    fn offer(&mut self, peer: NodeKey, id: MessageId, text: String, max_inbox: usize) -> Offer {
        let key = (peer, id);
        if self.inbox.ids.contains(&key) {
            return Offer::AlreadyStored;
        }
        if self.inbox.appending.contains(&key) {
            return Offer::Appending;
        }
        if self.inbox.len() >= max_inbox {
            return Offer::Full;
        }
        self.append(
            Mailbox::Inbox,
            MessageRow {
                id,
                peer,
                at_ms: 0,
                text,
            },
        );
        Offer::Appending
    }
}

/// The mesh streams the messenger is done with: those that sent their FIN and wait for the
/// other end's, and those reset, released once the stack has sent the reset.
#[derive(Debug, Default)]
struct Ending {
    closing: Vec<(TcpHandle, Instant)>,
    reset: Vec<TcpHandle>,
}

impl Ending {
    fn close(&mut self, cx: &mut Context<'_>, handle: TcpHandle) {
        cx.stack.tcp(handle).close();
        self.closing.push((handle, cx.now + CLOSE_TIMEOUT));
    }

    fn reset(&mut self, cx: &mut Context<'_>, handle: TcpHandle) {
        cx.stack.tcp(handle).abort();
        self.reset.push(handle);
    }

    /// Releases what is done; call before the apps write, after the stack was polled.
    fn pump(&mut self, cx: &mut Context<'_>) {
        for handle in self.reset.drain(..) {
            cx.stack.release(handle);
        }
        let mut timed_out = Vec::new();
        self.closing.retain(|&(handle, deadline)| {
            let socket = cx.stack.tcp(handle);
            while socket.can_recv() && socket.recv(|buf| (buf.len(), ())).is_ok() {}
            let done = matches!(
                socket.state(),
                smoltcp::socket::tcp::State::Closed | smoltcp::socket::tcp::State::TimeWait
            );
            if done {
                cx.stack.release(handle);
            } else if cx.now >= deadline {
                timed_out.push(handle);
            }
            !done && cx.now < deadline
        });
        for handle in timed_out {
            self.reset(cx, handle);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.closing.iter().map(|(_, deadline)| *deadline).min()
    }
}

/// The messenger app.
#[derive(Debug)]
pub struct Messenger {
    settings: Option<Settings>,
    /// It listens on [`PORT`].
    listening: bool,
    /// Shutting down: it does not start again.
    stopping: bool,
    stores: Stores,
    receiver: Receiver,
    sender: Sender,
    ending: Ending,
    ids: MessageIds,
    watchers: Vec<RequestId>,
    replies: VecDeque<(RequestId, Response)>,
    /// Something happened that the next pump must act on.
    work_due: bool,
}

impl Messenger {
    /// The messenger as configured; it runs from [`Messenger::start`]. `seed` makes its
    /// message ids.
    pub fn new(options: MessengerOptions, seed: [u8; 32]) -> Messenger {
        Messenger {
            settings: options.settings,
            listening: false,
            stopping: false,
            stores: Stores {
                inbox: Store::new(Mailbox::Inbox, &options.state_dir),
                outbox: Store::new(Mailbox::Outbox, &options.state_dir),
                ops: VecDeque::new(),
                awaited: 0,
            },
            receiver: Receiver::default(),
            sender: Sender::default(),
            ending: Ending::default(),
            ids: MessageIds { seed, counter: 0 },
            watchers: Vec::new(),
            replies: VecDeque::new(),
            work_due: false,
        }
    }

    // ----- getters -----

    /// Whether it runs: it is configured, has read its logs and takes messages.
    pub fn is_running(&self) -> bool {
        self.listening
    }

    /// Its settings, if it is configured.
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// Whether no log operation waits for the driver's answer.
    pub fn is_settled(&self) -> bool {
        self.stores.awaited == 0
    }

    // ----- commands -----

    /// Starts it, if it is configured: its logs are read, and it listens once they are.
    pub fn start(&mut self, cx: &mut Context<'_>) {
        if self.settings.is_none() || self.stopping {
            return;
        }
        self.stores.load();
        self.listen(cx);
    }

    fn listen(&mut self, cx: &mut Context<'_>) {
        let Some(settings) = &self.settings else {
            return;
        };
        if self.listening || !self.stores.is_loaded() {
            return;
        }
        match cx.stack.listen(PORT, BACKLOG, settings.admission()) {
            Ok(()) => {
                self.listening = true;
                log::info!(
                    "messenger on mesh port {PORT}: {} message(s) in the inbox, {} in the outbox",
                    self.stores.inbox.records.len(),
                    self.stores.outbox.records.len()
                );
            }
            Err(error) => log::error!("messenger: cannot listen on mesh port {PORT}: {error}"),
        }
    }

    /// Stops it: its streams are reset, the deliveries under way fail, the watches end. The
    /// logs stay read.
    pub fn stop(&mut self, cx: &mut Context<'_>, why: WatchEnd) {
        if self.listening {
            cx.stack.unlisten(PORT);
            self.listening = false;
            log::info!("messenger stopped");
        }
        if why == WatchEnd::Stopping {
            self.stopping = true;
        }
        self.receiver.stop(cx, &mut self.ending);
        let error = || match why {
            WatchEnd::Stopped => RequestError::app(MessengerError::Stopped),
            WatchEnd::Stopping => RequestError::Stopping,
        };
        for request in self.sender.stop(cx, &mut self.ending) {
            self.replies.push_back((request, Err(error())));
        }
        for watch in self.watchers.drain(..) {
            self.replies.push_back((
                watch,
                Ok(Reply::Messenger(MessengerReply::WatchEnded { ended: why })),
            ));
        }
    }

    /// Puts a reloaded `messenger:` section in force: a new section starts it, a section gone
    /// stops it, and new settings apply from the next stream and delivery on (what changed is
    /// logged).
    pub fn set_settings(&mut self, cx: &mut Context<'_>, settings: Option<Settings>) {
        let old = std::mem::replace(&mut self.settings, settings);
        let (old, new) = match (old, &self.settings) {
            (Some(_), None) => return self.stop(cx, WatchEnd::Stopped),
            (None, Some(_)) => return self.start(cx),
            (None, None) => return,
            (Some(old), Some(new)) => (old, new),
        };
        let changes = new.changes_from(&old);
        if changes.is_empty() {
            return;
        }
        log::info!("messenger settings changed: {}", changes.join(", "));
        let admission_changed =
            new.allowed() != old.allowed() || new.max_streams != old.max_streams;
        if self.listening && admission_changed {
            // Streams are admitted at their SYN: those open go on.
            if let Err(error) = cx.stack.listen(PORT, BACKLOG, new.admission()) {
                log::error!(
                    "messenger: cannot apply the new allow and max_streams on mesh port {PORT}: {error}"
                );
            }
        }
    }

    /// A request from the control thread; its answer comes out of [`Messenger::poll_reply`].
    pub fn handle_request(
        &mut self,
        cx: &mut Context<'_>,
        id: RequestId,
        request: MessengerRequest,
    ) {
        if let MessengerRequest::Unwatch { watch } = request {
            self.watchers.retain(|watcher| *watcher != watch);
            return;
        }
        let reply = self.answer(cx, id, request);
        if let Some(reply) = reply {
            self.replies.push_back((id, reply));
        }
        self.work_due = true;
    }

    fn answer(
        &mut self,
        cx: &mut Context<'_>,
        id: RequestId,
        request: MessengerRequest,
    ) -> Option<Response> {
        let fail = |error| Some(Err(RequestError::app(error)));
        let Some(settings) = &self.settings else {
            return fail(MessengerError::NotConfigured);
        };
        let unusable = self
            .stores
            .inbox
            .unusable()
            .or_else(|| self.stores.outbox.unusable());
        if let Some(error) = unusable {
            return fail(error);
        }
        let reply = match request {
            MessengerRequest::Send { peer, text } => {
                let problem = if peer == cx.node.key() {
                    Some(MessengerError::OwnKey(peer))
                } else if text.is_empty() {
                    Some(MessengerError::Empty)
                } else if text.len() > wire::MAX_TEXT {
                    Some(MessengerError::TooLong { len: text.len() })
                } else if self.sender.len() >= send::MAX_DELIVERIES {
                    Some(MessengerError::Busy(self.sender.len()))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return fail(problem);
                }
                let message = self.ids.next();
                self.sender
                    .start(cx.now, id, peer, message, text, settings.send_timeout);
                return None;
            }
            MessengerRequest::List { mailbox, peer } => {
                MessengerReply::Messages(self.stores.store(mailbox).list(peer.as_ref()))
            }
            MessengerRequest::Watch => {
                if self.watchers.len() >= MAX_WATCHERS {
                    return fail(MessengerError::TooManyWatchers);
                }
                self.watchers.push(id);
                MessengerReply::Watching {
                    watching: Mailbox::Inbox,
                }
            }
            MessengerRequest::Unwatch { .. } => return None,
        };
        Some(Ok(Reply::Messenger(reply)))
    }

    /// The driver's answer to a log operation.
    pub fn handle_store_result(&mut self, cx: &mut Context<'_>, result: StoreResult) {
        self.stores.awaited = self.stores.awaited.saturating_sub(1);
        self.work_due = true;
        match result {
            StoreResult::Loaded { mailbox, result } => {
                let store = self.stores.store_mut(mailbox);
                match result {
                    Ok((records, cut)) => {
                        if cut > 0 {
                            log::warn!(
                                "messenger: {} ended in {cut} byte(s) of a record that was never completed (a crash during a write): cut off",
                                store.file.display()
                            );
                        }
                        store.ids = records.iter().map(|r| (r.peer, r.id)).collect();
                        store.records = records;
                        store.load = Load::Loaded;
                    }
                    Err(error) => {
                        let why = format!("{}: {error}", store.file.display());
                        log::error!("messenger: cannot read {why}");
                        store.load = Load::Failed(why);
                    }
                }
                self.listen(cx);
            }
            StoreResult::Appended {
                mailbox: Mailbox::Inbox,
                result,
                peer,
                id,
            } => {
                let store = &mut self.stores.inbox;
                store.appending.remove(&(peer, id));
                let answer = match result {
                    Ok(message) => {
                        store.ids.insert((peer, id));
                        store.records.push(message.clone());
                        for watch in &self.watchers {
                            self.replies.push_back((
                                *watch,
                                Ok(Reply::Messenger(MessengerReply::Arrived {
                                    message: message.clone(),
                                })),
                            ));
                        }
                        wire::Answer::Stored
                    }
                    Err(error) => {
                        log::error!(
                            "messenger: cannot write a message from {peer} to {}: {error}",
                            store.file.display()
                        );
                        wire::Answer::StoreFailed
                    }
                };
                self.receiver.resolve(peer, id, answer);
            }
            StoreResult::Appended {
                mailbox: Mailbox::Outbox,
                result,
                peer,
                id,
            } => {
                let store = &mut self.stores.outbox;
                store.appending.remove(&(peer, id));
                let outbox_error = match result {
                    Ok(message) => {
                        store.ids.insert((peer, id));
                        store.records.push(message);
                        None
                    }
                    Err(error) => {
                        log::error!(
                            "messenger: cannot record a message to {peer} in {}: {error}",
                            store.file.display()
                        );
                        Some(format!("{}: {error}", store.file.display()))
                    }
                };
                if let Some((request, reply)) = self.sender.recorded(peer, id, outbox_error) {
                    self.replies
                        .push_back((request, Ok(Reply::Messenger(MessengerReply::Sent(reply)))));
                }
            }
        }
    }

    /// Routes coming and going.
    pub fn handle_event(&mut self, cx: &mut Context<'_>, event: &Event) {
        match event {
            Event::RouteDown { peer, .. } => {
                self.receiver.route_down(cx, &mut self.ending, peer);
                self.sender.route_down(cx, &mut self.ending, peer);
            }
            Event::RouteFailed { setup, error, .. } => {
                self.sender.route_failed(cx.now, *setup, error)
            }
            _ => return,
        }
        self.work_due = true;
    }

    /// Does the app's work: call after the stack was polled, and poll it again afterwards so
    /// that what it wrote is sent.
    pub fn pump(&mut self, cx: &mut Context<'_>) {
        self.work_due = false;
        self.ending.pump(cx);
        if let Some(settings) = &self.settings {
            if self.listening {
                self.receiver
                    .pump(cx, settings, &mut self.stores, &mut self.ending);
            }
            for (request, reply) in self.sender.pump(cx, &mut self.stores, &mut self.ending) {
                self.replies.push_back((request, reply));
            }
        }
    }

    // ----- output -----

    /// The next reply to a request (a watch's are many).
    pub fn poll_reply(&mut self) -> Option<(RequestId, Response)> {
        self.replies.pop_front()
    }

    /// The next log operation for the driver.
    pub fn poll_store_op(&mut self) -> Option<StoreOp> {
        self.stores.ops.pop_front()
    }

    /// When [`Messenger::pump`] must run at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.work_due {
            return Some(now);
        }
        [
            self.receiver.next_deadline(),
            self.sender.next_deadline(),
            self.ending.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn smol_duration(duration: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_differ_and_follow_the_seed() {
        let mut a = MessageIds {
            seed: [1; 32],
            counter: 0,
        };
        let mut b = MessageIds {
            seed: [1; 32],
            counter: 0,
        };
        let first = a.next();
        assert_ne!(first, a.next());
        assert_eq!(first, b.next(), "the same seed, the same ids");
        let mut c = MessageIds {
            seed: [2; 32],
            counter: 0,
        };
        assert_ne!(first, c.next());
    }

    #[test]
    fn a_reload_names_the_settings_that_changed_and_nothing_else() {
        let key = crate::SecretKey::from([3; 32]).public();
        let other = crate::SecretKey::from([4; 32]).public();
        let old = Settings {
            allow: Some(vec![key, other]),
            ..Settings::default()
        };
        let reordered = Settings {
            allow: Some(vec![other, key, other]),
            ..Settings::default()
        };
        assert!(reordered.changes_from(&old).is_empty(), "the same nodes");
        assert!(old.changes_from(&old).is_empty());

        let new = Settings {
            allow: Some(vec![key]),
            max_text_bytes: 8192,
            send_timeout: Duration::from_secs(20),
            ..Settings::default()
        };
        assert_eq!(
            new.changes_from(&old),
            [
                format!("allow → {key}"),
                "max_text_bytes 4096 → 8192".to_owned(),
                "send_timeout_ms 10000 → 20000".to_owned(),
            ]
        );
        let nobody = Settings {
            allow: Some(vec![]),
            ..Settings::default()
        };
        assert_eq!(nobody.changes_from(&old), ["allow → nobody"]);
        assert_eq!(Settings::default().changes_from(&old), ["allow → any node"]);
    }

    #[test]
    fn the_allow_list_is_any_node_unless_given() {
        let key = crate::SecretKey::from([3; 32]).public();
        let other = crate::SecretKey::from([4; 32]).public();
        assert!(Settings::default().allows(&key));
        let listed = Settings {
            allow: Some(vec![key]),
            ..Settings::default()
        };
        assert!(listed.allows(&key) && !listed.allows(&other));
        let nobody = Settings {
            allow: Some(Vec::new()),
            ..Settings::default()
        };
        assert!(!nobody.allows(&key));
    }
}
