//! The messenger in the in-memory mesh, each scenario under a fixed seed and in virtual time,
//! with no explicit paths (routes come from the adverts): a delivery that is answered only once
//! the recipient's disk has the message, a watch that sees it arrive, a retry after a broken
//! stream that is not stored twice, a message to a recipient that restarted (over the route
//! its sender's node repaired), the refusals (not allowed, too long, no messenger, no route)
//! and the limits (per-sender rate, inbox size).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use skywire_dataplane::api::messenger::{
    Mailbox, MessageRow, MessengerReply, MessengerRequest, SentReply,
};
use skywire_dataplane::api::{Reply, Request, RequestError, Response};
use skywire_dataplane::messenger::wire::Answer;
use skywire_dataplane::messenger::{MessengerError, Settings};
use skywire_dataplane::node::RouteStatus;
use skywire_dataplane::service::ServiceOptions;
use skywire_dataplane::sim::AppSim;
use skywire_dataplane::NodeKey;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

/// Virtual-time limit for anything that should happen soon.
const LIMIT: Duration = Duration::from_secs(60);

/// A square A–B–D–C–A: two paths from A to D, neither given.
const SQUARE: [(usize, usize); 4] = [(A, B), (B, D), (A, C), (C, D)];

/// A mesh where `settings(i, keys)` configures node `i`'s messenger (`None`: it has none),
/// once every node knows a path to every other.
fn mesh(
    seed: u64,
    links: &[(usize, usize)],
    settings: impl Fn(usize, &[NodeKey]) -> Option<Settings>,
) -> AppSim {
    let mut sim = AppSim::new(seed, 4, links, |i, keys, options: &mut ServiceOptions| {
        options.messenger.settings = settings(i, keys);
    });
    let converged = sim.run_until(LIMIT, |sim| {
        (0..4).all(|from| {
            (0..4).filter(|to| *to != from).all(|to| {
                sim.nodes[from]
                    .service
                    .node()
                    .find_route(&sim.key(to))
                    .is_some()
            })
        })
    });
    assert!(converged, "the adverts did not spread");
    sim
}

fn send(peer: NodeKey, text: &str) -> Request {
    Request::Messenger(MessengerRequest::Send {
        peer,
        text: text.to_owned(),
    })
}

fn inbox(sim: &mut AppSim, i: usize) -> Vec<MessageRow> {
    let reply = sim.ask(
        i,
        Request::Messenger(MessengerRequest::List {
            mailbox: Mailbox::Inbox,
            peer: None,
        }),
        LIMIT,
    );
    match reply {
        Ok(Reply::Messenger(MessengerReply::Messages(list))) => list.messages,
        other => panic!("{other:?}"),
    }
}

fn sent(reply: Response) -> SentReply {
    match reply {
        Ok(Reply::Messenger(MessengerReply::Sent(sent))) => sent,
        other => panic!("not delivered: {other:?}"),
    }
}

/// The messenger's error in a failed reply.
fn error(reply: Response) -> MessengerError {
    match reply {
        Err(RequestError::App(error)) => match error.downcast::<MessengerError>() {
            Ok(error) => *error,
            Err(other) => panic!("not a messenger error: {other}"),
        },
        other => panic!("not a messenger error: {other:?}"),
    }
}

fn everyone(_: usize, _: &[NodeKey]) -> Option<Settings> {
    Some(Settings::default())
}

#[test]
fn a_message_is_answered_once_it_is_on_the_recipients_disk() {
    let mut sim = mesh(11, &SQUARE, everyone);
    let watch = sim.request(D, Request::Messenger(MessengerRequest::Watch));
    sim.run_for(Duration::from_millis(1));
    assert!(matches!(
        sim.take_reply(D, watch),
        Some(Ok(Reply::Messenger(MessengerReply::Watching { .. })))
    ));

    // D's disk is slow: A's send waits for it, however long.
    sim.hold_disk(D);
    let request = sim.request(A, send(sim.key(D), "hello over two hops"));
    let stored = sim.run_until(LIMIT, |sim| sim.held_disk_ops(D) == 1);
    assert!(stored, "the message did not reach D's disk");
    sim.run_for(Duration::from_secs(5));
    assert!(
        sim.take_reply(A, request).is_none(),
        "answered before D's disk had the message"
    );
    assert!(sim.message_log(D, Mailbox::Inbox).is_empty());

    sim.release_disk(D);
    let answered = sim.run_until(LIMIT, |sim| sim.has_reply(A, request));
    assert!(answered, "A was not answered once D's disk had it");
    let reply = sent(sim.take_reply(A, request).unwrap());
    assert_eq!((reply.peer, reply.attempts), (sim.key(D), 1));
    assert_eq!(reply.outbox_error, None);

    let log = sim.message_log(D, Mailbox::Inbox);
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].peer, log[0].text.as_str()),
        (sim.key(A), "hello over two hops")
    );
    assert_eq!(log[0].id, reply.id);
    assert_eq!(
        inbox(&mut sim, D),
        log,
        "the inbox lists what the disk holds"
    );
    let outbox = sim.message_log(A, Mailbox::Outbox);
    assert_eq!(outbox.len(), 1);
    assert_eq!((outbox[0].peer, outbox[0].id), (sim.key(D), reply.id));

    // The watch saw it arrive, with its time.
    let arrived = sim.take_reply(D, watch).expect("the watch saw nothing");
    match arrived {
        Ok(Reply::Messenger(MessengerReply::Arrived { message })) => assert_eq!(message, log[0]),
        other => panic!("{other:?}"),
    }
    // Unwatched, it sees no more.
    sim.request(D, Request::Messenger(MessengerRequest::Unwatch { watch }));
    sent(sim.ask(A, send(sim.key(D), "second"), LIMIT));
    assert!(sim.take_reply(D, watch).is_none());
    assert_eq!(inbox(&mut sim, D).len(), 2);
}

#[test]
fn a_retry_after_a_broken_stream_is_not_stored_twice() {
    // A line: A–B–D. The stream breaks after D has the message but before A has its answer.
    let links = [(A, B), (B, D), (C, D)];
    let mut sim = mesh(12, &links, |_, _| {
        Some(Settings {
            send_timeout: Duration::from_secs(120),
            ..Settings::default()
        })
    });
    sim.hold_disk(D);
    let request = sim.request(A, send(sim.key(D), "once only"));
    assert!(sim.run_until(LIMIT, |sim| sim.held_disk_ops(D) == 1));
    // The link A–B dies: the route goes down at both ends, the stream with it.
    sim.link(A, B).alive = false;
    sim.run_for(Duration::from_secs(20));
    assert!(sim.take_reply(A, request).is_none(), "still trying");
    // D stores the message meanwhile; its answer has no way back.
    sim.release_disk(D);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.message_log(D, Mailbox::Inbox).len(), 1);
    // The link comes back: A sends the message again, with its id, and D only says it has it.
    sim.link(A, B).alive = true;
    let answered = sim.run_until(LIMIT, |sim| sim.has_reply(A, request));
    assert!(answered, "A did not deliver after the link came back");
    let reply = sent(sim.take_reply(A, request).unwrap());
    assert!(reply.attempts >= 2, "{} attempt(s)", reply.attempts);
    let log = sim.message_log(D, Mailbox::Inbox);
    assert_eq!(log.len(), 1, "stored twice: {log:?}");
    assert_eq!(log[0].id, reply.id);
    assert_eq!(inbox(&mut sim, D).len(), 1);
    assert_eq!(sim.message_log(A, Mailbox::Outbox).len(), 1);
}

#[test]
fn a_message_to_a_restarted_recipient_rides_the_route_its_senders_node_repaired() {
    let mut sim = mesh(16, &SQUARE, everyone);
    let d = sim.key(D);
    sent(sim.ask(A, send(d, "before the restart"), LIMIT));
    let setups = sim.nodes[A].service.node().setups_started();

    // D is killed and started again before its links are found dead: A's route to it looks
    // ready, but D forgot it.
    sim.restart(D);
    let (b, c) = (sim.key(B), sim.key(C));
    let linked = sim.run_until(LIMIT, |sim| {
        let node = sim.nodes[D].service.node();
        node.is_link_alive(&b) && node.is_link_alive(&c)
    });
    assert!(linked, "D's links did not come back");
    assert_eq!(
        sim.nodes[A].service.node().route_status(&d),
        RouteStatus::Ready
    );
    let reply = sent(sim.ask(A, send(d, "after the restart"), LIMIT));
    // The stream's first packet showed A's node that D forgot the route; the node rebuilt it
    // (one setup) and the stream carried on: the messenger neither opened another stream
    // nor built a route of its own.
    assert_eq!(reply.attempts, 1);
    assert_eq!(sim.nodes[A].service.node().setups_started(), setups + 1);
    let texts: Vec<String> = sim
        .message_log(D, Mailbox::Inbox)
        .into_iter()
        .map(|message| message.text)
        .collect();
    assert_eq!(texts, ["before the restart", "after the restart"]);
    assert_eq!(sim.message_log(A, Mailbox::Outbox).len(), 2);
}

#[test]
fn refusals_say_why_and_the_nodes_run_on() {
    let mut sim = mesh(13, &SQUARE, |i, keys| match i {
        // D takes only B's messages, of at most 10 bytes.
        D => Some(Settings {
            allow: Some(vec![keys[B]]),
            max_text_bytes: 10,
            ..Settings::default()
        }),
        // C runs no messenger.
        C => None,
        _ => Some(Settings {
            send_timeout: Duration::from_secs(3),
            ..Settings::default()
        }),
    });
    let (d, c) = (sim.key(D), sim.key(C));
    // A is refused at its stream's SYN: D's messenger port admits only B.
    match error(sim.ask(A, send(d, "hi"), LIMIT)) {
        MessengerError::StreamRefused(peer) => assert_eq!(peer, d),
        other => panic!("{other}"),
    }
    let too_long = error(sim.ask(B, send(d, "eleven byte"), LIMIT));
    assert!(
        matches!(
            too_long,
            MessengerError::Refused {
                answer: Answer::TooLong { max: 10 },
                ..
            }
        ),
        "{too_long}"
    );
    assert!(
        too_long.to_string().contains("at most 10 bytes"),
        "{too_long}"
    );
    sent(sim.ask(B, send(d, "ten bytes!"), LIMIT));
    assert!(matches!(
        error(sim.ask(A, send(c, "anyone there?"), LIMIT)),
        MessengerError::StreamRefused(peer) if peer == c
    ));
    let own = sim.key(A);
    assert!(matches!(
        error(sim.ask(A, send(own, "me"), LIMIT)),
        MessengerError::OwnKey(_)
    ));
    assert!(matches!(
        error(sim.ask(C, send(d, "no messenger here"), LIMIT)),
        MessengerError::NotConfigured
    ));
    // A node nobody knows: no route within the send timeout.
    let stranger = skywire_dataplane::SecretKey::from([9; 32]).public();
    let started = sim.elapsed();
    let no_route = error(sim.ask(A, send(stranger, "hello?"), LIMIT));
    assert!(
        matches!(no_route, MessengerError::NoRoute { .. }),
        "{no_route}"
    );
    assert!(sim.elapsed() - started < Duration::from_secs(4));
    assert_eq!(inbox(&mut sim, D).len(), 1, "only B's message is stored");
}

#[test]
fn a_senders_rate_and_the_inbox_size_are_bounded() {
    let mut sim = mesh(14, &SQUARE, |i, _| {
        Some(Settings {
            per_sender_per_minute: 2,
            max_inbox: 3,
            ..Settings::default()
        })
        .filter(|_| i != C)
    });
    let d = sim.key(D);
    sent(sim.ask(A, send(d, "one"), LIMIT));
    sent(sim.ask(A, send(d, "two"), LIMIT));
    let limited = error(sim.ask(A, send(d, "three"), LIMIT));
    let MessengerError::Refused {
        answer: Answer::RateLimited { retry_after_ms },
        ..
    } = limited
    else {
        panic!("{limited}");
    };
    assert!((1..=30_000).contains(&retry_after_ms), "{retry_after_ms}");
    // Another sender has its own rate.
    sent(sim.ask(B, send(d, "from B"), LIMIT));
    // Half a minute later A may send again, but the inbox is full.
    sim.run_for(Duration::from_secs(31));
    let full = error(sim.ask(A, send(d, "four"), LIMIT));
    assert!(
        matches!(
            full,
            MessengerError::Refused {
                answer: Answer::InboxFull { max: 3 },
                ..
            }
        ),
        "{full}"
    );
    assert_eq!(sim.message_log(D, Mailbox::Inbox).len(), 3);
    assert_eq!(sim.message_log(A, Mailbox::Outbox).len(), 2);
}

#[test]
fn a_reloaded_section_applies_while_the_messenger_runs() {
    use skywire_dataplane::api::{AppChange, AppConfig, BuiltinApp};
    let mut sim = mesh(15, &SQUARE, everyone);
    let d = sim.key(D);
    let watch = sim.request(D, Request::Messenger(MessengerRequest::Watch));

    // New settings: D takes nothing from A from now on; its watch goes on.
    let nobody = Settings {
        allow: Some(Vec::new()),
        ..Settings::default()
    };
    assert_eq!(
        sim.configure_app(D, AppConfig::Messenger(Some(nobody)), LIMIT),
        (BuiltinApp::Messenger, AppChange::Updated)
    );
    assert!(matches!(
        error(sim.ask(A, send(d, "refused now"), LIMIT)),
        MessengerError::StreamRefused(peer) if peer == d
    ));

    // The section gone: D's messenger stops, its watch ends, nothing answers on its port.
    let (_, change) = sim.configure_app(D, AppConfig::Messenger(None), LIMIT);
    assert_eq!(change, AppChange::Removed);
    assert!(!sim.nodes[D].service.messenger_running());
    let replies: Vec<Response> = std::iter::from_fn(|| sim.take_reply(D, watch)).collect();
    assert!(
        matches!(
            replies.last(),
            Some(Ok(Reply::Messenger(MessengerReply::WatchEnded { .. })))
        ),
        "{replies:?}"
    );
    assert!(matches!(
        error(sim.ask(A, send(d, "nobody home"), LIMIT)),
        MessengerError::StreamRefused(_)
    ));

    // Back again: it takes messages, and still has its log.
    let (_, change) = sim.configure_app(D, AppConfig::Messenger(Some(Settings::default())), LIMIT);
    assert_eq!(change, AppChange::Started);
    assert!(sim.nodes[D].service.messenger_running());
    sent(sim.ask(A, send(d, "welcome back"), LIMIT));
    assert_eq!(inbox(&mut sim, D).len(), 1);
}
