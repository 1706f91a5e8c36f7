//! The streams that bring messages. Admission comes first: a stream is judged by its sender
//! (the route session names it) before a byte is read — not allowed, too many streams, over
//! its rate, inbox full — and a refused one gets its answer and nothing else. An admitted one
//! has its fixed header read, its length checked against the limit, and only then its text;
//! the answer waits for the driver to have the message on the disk.

use std::collections::HashMap;
use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use super::wire::{self, Answer, HEADER_LEN};
use super::{smol_duration, Ending, Offer, Settings, Stores, PORT};
use crate::api::messenger::MessageId;
use crate::identity::NodeKey;
use crate::service::Context;
use crate::stack::TcpHandle;

/// How long a sender has to send its whole message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream waits for its message to be on the disk before it is given up on (the
/// sender then gives up or tries again; the message is stored all the same).
const STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Streams one sender may have open at once.
const MAX_PER_SENDER: usize = 4;
/// Streams held at all, refused ones included, as a multiple of `max_streams`: beyond it a
/// stream is reset at once, with no answer.
const HELD_FACTOR: usize = 2;
/// Senders whose buckets are remembered; full buckets are forgotten first.
const MAX_BUCKETS: usize = 4096;

/// Where one stream stands.
#[derive(Debug)]
enum Phase {
    /// Reading the fixed header.
    Header { bytes: [u8; HEADER_LEN], len: usize },
    /// Reading the text, whose length is known and allowed.
    Text {
        id: MessageId,
        text: Vec<u8>,
        len: usize,
    },
    /// The message is being appended to the inbox.
    Storing { id: MessageId },
    /// The answer goes out as soon as the stream can send.
    Answer(Answer),
}

#[derive(Debug)]
struct Incoming {
    handle: TcpHandle,
    peer: NodeKey,
    phase: Phase,
    deadline: Instant,
}

/// What became of a stream in one step.
enum Step {
    Keep,
    /// The answer went out and the stream was closed.
    Answered,
    /// The sender went away or took too long: reset.
    Abandoned,
}

/// One sender's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The streams being served and the senders' rates.
#[derive(Debug, Default)]
pub(super) struct Receiver {
    streams: Vec<Incoming>,
    buckets: HashMap<NodeKey, Bucket>,
}

impl Receiver {
    /// Accepts what arrived on the port and moves every stream on.
    pub fn pump(
        &mut self,
        cx: &mut Context<'_>,
        settings: &Settings,
        stores: &mut Stores,
        ending: &mut Ending,
    ) {
        while let Some((handle, remote)) = cx.stack.poll_accept_on(PORT) {
            self.accept(cx, settings, stores, ending, handle, remote);
        }
        let mut index = 0;
        while index < self.streams.len() {
            match step(cx, settings, stores, &mut self.streams[index]) {
                Step::Keep => index += 1,
                Step::Answered => {
                    let stream = self.streams.swap_remove(index);
                    ending.close(cx, stream.handle);
                }
                Step::Abandoned => {
                    let stream = self.streams.swap_remove(index);
                    ending.reset(cx, stream.handle);
                }
            }
        }
    }

    fn accept(
        &mut self,
        cx: &mut Context<'_>,
        settings: &Settings,
        stores: &Stores,
        ending: &mut Ending,
        handle: TcpHandle,
        remote: SocketAddrV6,
    ) {
        // A stream comes through a route session, which names its sender; one without (a
        // listener reset before it was accepted) has nobody to answer.
        let peer = match cx.node.peer_at(*remote.ip()) {
            Some(peer) if !remote.ip().is_unspecified() => peer,
            _ => {
                ending.reset(cx, handle);
                return;
            }
        };
        if self.streams.len() >= settings.max_streams * HELD_FACTOR {
            log::debug!("messenger: stream from {peer} reset: too many held");
            ending.reset(cx, handle);
            return;
        }
        let refusal = self.admit(cx.now, settings, stores, &peer);
        if let Some(answer) = refusal {
            log::debug!("messenger: message from {peer} refused: {answer}");
        }
        let socket = cx.stack.tcp(handle);
        socket.set_timeout(Some(smol_duration(RECEIVE_TIMEOUT)));
        self.streams.push(Incoming {
            handle,
            peer,
            phase: match refusal {
                Some(answer) => Phase::Answer(answer),
                None => Phase::Header {
                    bytes: [0; HEADER_LEN],
                    len: 0,
                },
            },
            deadline: cx.now + RECEIVE_TIMEOUT,
        });
    }

    /// Why a stream from `peer` is refused before a byte of it is read, if it is.
    fn admit(
        &mut self,
        now: Instant,
        settings: &Settings,
        stores: &Stores,
        peer: &NodeKey,
    ) -> Option<Answer> {
        if !settings.allows(peer) {
            return Some(Answer::NotAllowed);
        }
        let serving = self
            .streams
            .iter()
            .filter(|stream| !matches!(stream.phase, Phase::Answer(_)));
        let (all, theirs) = serving.fold((0, 0), |(all, theirs), stream| {
            (all + 1, theirs + usize::from(stream.peer == *peer))
        });
        if all >= settings.max_streams || theirs >= MAX_PER_SENDER {
            return Some(Answer::Busy);
        }
        if stores.inbox.len() >= settings.max_inbox {
            return Some(Answer::InboxFull {
                max: u32::try_from(settings.max_inbox).unwrap_or(u32::MAX),
            });
        }
        if let Err(wait) = self.take_token(now, settings.per_sender_per_minute, peer) {
            return Some(Answer::RateLimited {
                retry_after_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            });
        }
        None
    }

    /// Takes one of `peer`'s tokens, or says how long until there is one.
    fn take_token(
        &mut self,
        now: Instant,
        per_minute: u32,
        peer: &NodeKey,
    ) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(peer) {
            self.buckets.retain(|_, bucket| {
                bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * per_second
                    < capacity
            });
        }
        let bucket = self.buckets.entry(*peer).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// The inbox's answer for `peer`'s message `id`: the streams waiting for it are answered.
    pub fn resolve(&mut self, peer: NodeKey, id: MessageId, answer: Answer) {
        for stream in &mut self.streams {
            if stream.peer == peer
                && matches!(stream.phase, Phase::Storing { id: waiting } if waiting == id)
            {
                stream.phase = Phase::Answer(answer);
            }
        }
    }

    /// The route to `peer` is gone: its streams are reset.
    pub fn route_down(&mut self, cx: &mut Context<'_>, ending: &mut Ending, peer: &NodeKey) {
        self.streams.retain(|stream| {
            if stream.peer == *peer {
                ending.reset(cx, stream.handle);
                false
            } else {
                true
            }
        });
    }

    /// Resets every stream.
    pub fn stop(&mut self, cx: &mut Context<'_>, ending: &mut Ending) {
        for stream in self.streams.drain(..) {
            ending.reset(cx, stream.handle);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams.iter().map(|stream| stream.deadline).min()
    }
}

/// Moves one stream on as far as it can go now.
fn step(
    cx: &mut Context<'_>,
    settings: &Settings,
    stores: &mut Stores,
    stream: &mut Incoming,
) -> Step {
    let socket = cx.stack.tcp(stream.handle);
    // A stream just accepted is still in SYN-RECEIVED, where smoltcp says it may not receive
    // yet.
    let open = socket.may_recv() || socket.state() == tcp::State::SynReceived;
    loop {
        match &mut stream.phase {
            Phase::Header { bytes, len } => {
                if let Ok(read) = socket.recv_slice(&mut bytes[*len..]) {
                    *len += read;
                }
                stream.phase = match wire::parse_header(&bytes[..*len]) {
                    Err(error) => {
                        log::debug!("messenger: bad message from {}: {error}", stream.peer);
                        Phase::Answer(Answer::Malformed)
                    }
                    Ok(Some(header)) if header.text_len > settings.max_text_bytes => {
                        Phase::Answer(Answer::TooLong {
                            max: u32::try_from(settings.max_text_bytes).unwrap_or(u32::MAX),
                        })
                    }
                    Ok(Some(header)) => Phase::Text {
                        id: header.id,
                        text: vec![0; header.text_len],
                        len: 0,
                    },
                    Ok(None) if open && cx.now < stream.deadline => return Step::Keep,
                    Ok(None) => return Step::Abandoned,
                };
            }
            Phase::Text { id, text, len } => {
                if let Ok(read) = socket.recv_slice(&mut text[*len..]) {
                    *len += read;
                }
                if *len < text.len() {
                    return if open && cx.now < stream.deadline {
                        Step::Keep
                    } else {
                        Step::Abandoned
                    };
                }
                let id = *id;
                stream.phase = match String::from_utf8(std::mem::take(text)) {
                    Err(_) => Phase::Answer(Answer::NotUtf8),
                    Ok(text) => match stores.offer(stream.peer, id, text, settings.max_inbox) {
                        Offer::AlreadyStored => Phase::Answer(Answer::AlreadyStored),
                        Offer::Full => Phase::Answer(Answer::InboxFull {
                            max: u32::try_from(settings.max_inbox).unwrap_or(u32::MAX),
                        }),
                        Offer::Appending => {
                            stream.deadline = cx.now + STORE_TIMEOUT;
                            Phase::Storing { id }
                        }
                    },
                };
            }
            Phase::Storing { .. } => {
                return if cx.now < stream.deadline {
                    Step::Keep
                } else {
                    Step::Abandoned
                };
            }
            Phase::Answer(answer) => {
                if socket.may_send() {
                    let _ = socket.send_slice(&wire::emit_answer(*answer));
                    return Step::Answered;
                }
                return if socket.state() == tcp::State::Closed || cx.now >= stream.deadline {
                    Step::Abandoned
                } else {
                    Step::Keep
                };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::messenger::Mailbox;
    use crate::messenger::{Store, Stores};
    use crate::node::{Node, NodeOptions};
    use crate::service::StoreOp;
    use crate::stack::tests::exchange;
    use crate::stack::MeshStack;
    use std::collections::VecDeque;
    use std::net::Ipv6Addr;
    use std::path::Path;

    /// A sender's stack and a recipient's, with a stream between them accepted on the
    /// messenger port; what the sender sent first (`bytes`) has arrived.
    struct Pair {
        sender: MeshStack,
        recipient: MeshStack,
        client: TcpHandle,
        stream: Incoming,
        node: Node,
        stores: Stores,
        now: Instant,
    }

    impl Pair {
        fn new(bytes: &[u8]) -> Pair {
            let now = Instant::now();
            let (a, b): (Ipv6Addr, Ipv6Addr) =
                ("fd00::a".parse().unwrap(), "fd00::b".parse().unwrap());
            let mut sender = MeshStack::new(a, 1, now);
            let mut recipient = MeshStack::new(b, 2, now);
            recipient
                .listen(PORT, 1, crate::stack::Admission::any())
                .unwrap();
            let client = sender.connect(SocketAddrV6::new(b, PORT, 0, 0)).unwrap();
            exchange(&mut sender, &mut recipient, now);
            assert_eq!(sender.tcp(client).send_slice(bytes).unwrap(), bytes.len());
            exchange(&mut sender, &mut recipient, now);
            let (handle, _) = recipient.poll_accept_on(PORT).unwrap();
            let secret = crate::SecretKey::from([1; 32]);
            let stream = Incoming {
                handle,
                peer: crate::SecretKey::from([2; 32]).public(),
                phase: Phase::Header {
                    bytes: [0; HEADER_LEN],
                    len: 0,
                },
                deadline: now + RECEIVE_TIMEOUT,
            };
            let node =
                Node::new(NodeOptions::new(secret), now, Box::new(rand_core::OsRng)).unwrap();
            let mut inbox = Store::new(Mailbox::Inbox, Path::new("state"));
            inbox.load = super::super::Load::Loaded;
            let stores = Stores {
                inbox,
                outbox: Store::new(Mailbox::Outbox, Path::new("state")),
                ops: VecDeque::new(),
                awaited: 0,
            };
            Pair {
                sender,
                recipient,
                client,
                stream,
                node,
                stores,
                now,
            }
        }

        fn step(&mut self, settings: &Settings) -> Step {
            let mut cx = Context {
                now: self.now,
                node: &mut self.node,
                stack: &mut self.recipient,
            };
            step(&mut cx, settings, &mut self.stores, &mut self.stream)
        }

        /// What the recipient answered, once it has arrived.
        fn answer(&mut self) -> Answer {
            exchange(&mut self.sender, &mut self.recipient, self.now);
            let mut bytes = [0u8; wire::ANSWER_LEN];
            let read = self.sender.tcp(self.client).recv_slice(&mut bytes).unwrap();
            wire::parse_answer(&bytes[..read]).unwrap().unwrap()
        }
    }

    fn message_with(text: &[u8]) -> Vec<u8> {
        let mut bytes = vec![wire::VERSION];
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text);
        bytes
    }

    #[test]
    fn a_text_that_is_not_utf8_is_refused_over_the_wire() {
        let mut pair = Pair::new(&message_with(&[b'h', 0xff, 0xfe]));
        assert!(matches!(pair.step(&Settings::default()), Step::Answered));
        assert_eq!(pair.answer(), Answer::NotUtf8);
        assert!(pair.stores.ops.is_empty(), "nothing was stored");
    }

    #[test]
    fn a_text_too_long_is_refused_from_its_header_alone() {
        // Only the header is sent: its length is enough to refuse it.
        let mut pair = Pair::new(&message_with(&[b'x'; 9])[..HEADER_LEN]);
        let settings = Settings {
            max_text_bytes: 8,
            ..Settings::default()
        };
        assert!(matches!(pair.step(&settings), Step::Answered));
        assert_eq!(pair.answer(), Answer::TooLong { max: 8 });
    }

    #[test]
    fn another_version_is_refused_as_malformed() {
        let mut bytes = message_with(b"hi");
        bytes[0] = 9;
        let mut pair = Pair::new(&bytes);
        assert!(matches!(pair.step(&Settings::default()), Step::Answered));
        assert_eq!(pair.answer(), Answer::Malformed);
    }

    #[test]
    fn a_good_message_waits_for_the_disk() {
        let mut pair = Pair::new(&message_with("héllo".as_bytes()));
        assert!(matches!(pair.step(&Settings::default()), Step::Keep));
        assert!(matches!(pair.stream.phase, Phase::Storing { .. }));
        let Some(StoreOp::Append { message, .. }) = pair.stores.ops.pop_front() else {
            panic!("no append");
        };
        assert_eq!(message.text, "héllo");
        assert!(
            matches!(pair.step(&Settings::default()), Step::Keep),
            "no answer yet"
        );
    }

    #[test]
    fn a_senders_bucket_refills_evenly() {
        let mut receiver = Receiver::default();
        let peer = crate::SecretKey::from([5; 32]).public();
        let start = Instant::now();
        for _ in 0..6 {
            assert!(receiver.take_token(start, 6, &peer).is_ok());
        }
        let wait = receiver.take_token(start, 6, &peer).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10), "6 a minute: one every 10 s");
        let later = start + Duration::from_secs(10);
        assert!(receiver.take_token(later, 6, &peer).is_ok());
        assert!(receiver.take_token(later, 6, &peer).is_err());
        // Another sender has its own bucket.
        let other = crate::SecretKey::from([6; 32]).public();
        assert!(receiver.take_token(later, 6, &other).is_ok());
    }
}
