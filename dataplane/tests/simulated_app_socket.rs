//! The app socket and the services in the in-memory mesh, each scenario under a fixed seed:
//! launched apps (played by the test on the app socket's in-memory streams) dial, listen and
//! accept over routes the nodes choose themselves, with the bytes intact and half-closes passed
//! both ways; a stream nobody accepts is reset; every refusal; and the services that adverts
//! carry, which go with the next advert and expire with the last, the messenger among them
//! while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use skywire_dataplane::api::services::ServicesReply;
use skywire_dataplane::api::{Reply, Request};
use skywire_dataplane::app_socket::AppSocketOptions;
use skywire_dataplane::service::ServiceOptions;
use skywire_dataplane::sim::{AppSim, StreamId};
use skywire_dataplane::socks::{self, SocksOptions};
use skywire_dataplane::NodeKey;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Virtual-time limits: generous, and free when met early.
const LIMIT: Duration = Duration::from_secs(30);
/// How often the test's apps look at their connections, in virtual time.
const SLICE: Duration = Duration::from_millis(5);

/// Runs in slices until `step` says done; panics after `limit` of virtual time.
fn run_with(
    sim: &mut AppSim,
    what: &str,
    limit: Duration,
    mut step: impl FnMut(&mut AppSim) -> bool,
) {
    let deadline = sim.elapsed() + limit;
    while !step(sim) {
        assert!(sim.elapsed() < deadline, "timed out: {what}");
        sim.run_for(SLICE);
    }
}

/// A line from `stream` (without its new line); `pending` keeps what came after it.
fn read_line(sim: &mut AppSim, stream: StreamId, pending: &mut Vec<u8>) -> String {
    run_with(sim, "a line", LIMIT, |sim| {
        pending.extend(sim.read(stream));
        pending.contains(&b'\n')
    });
    let end = pending.iter().position(|byte| *byte == b'\n').unwrap();
    let line: Vec<u8> = pending.drain(..=end).collect();
    String::from_utf8(line[..end].to_vec()).unwrap()
}

/// The one line a request is answered with.
fn ask(sim: &mut AppSim, node: usize, app: u64, request: &str) -> (StreamId, String) {
    let stream = sim
        .app_connect(node, app)
        .expect("the node takes the connection");
    sim.write(stream, format!("{request}\n").as_bytes());
    let line = read_line(sim, stream, &mut Vec::new());
    (stream, line)
}

/// `len` bytes that tell their position apart.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A, B and C in a line; each node's options as `tune` leaves them.
fn line_of_three(seed: u64, tune: impl Fn(usize, &[NodeKey], &mut ServiceOptions)) -> AppSim {
    let mut sim = AppSim::new(seed, 3, &[(A, B), (B, C)], tune);
    let c = sim.key(C);
    run_with(&mut sim, "A to know a path to C", LIMIT, |sim| {
        sim.nodes[A].service.node().find_route(&c).is_some()
    });
    sim
}

/// Reads from `stream` until `len` bytes have come.
fn read_exactly(sim: &mut AppSim, stream: StreamId, mut got: Vec<u8>, len: usize) -> Vec<u8> {
    run_with(sim, "bytes from the stream", LIMIT, |sim| {
        got.extend(sim.read(stream));
        got.len() >= len
    });
    got
}

#[test]
fn a_dialed_and_an_accepted_stream_carry_bytes_intact_and_half_close_both_ways() {
    let mut sim = line_of_three(41, |_, _, _| {});
    let (a, c) = (sim.key(A), sim.key(C));
    let (listener, answer) = ask(&mut sim, C, 1, "listen 5000 echo");
    assert_eq!(answer, "ok");

    // A's app dials with its first bytes right after the request line.
    let dialer = sim.app_connect(A, 7).unwrap();
    sim.write(dialer, format!("dial {c} 5000\nfirst bytes ").as_bytes());
    let mut from_c = Vec::new();
    assert_eq!(read_line(&mut sim, dialer, &mut from_c), "ok");

    let mut lines = Vec::new();
    let incoming = read_line(&mut sim, listener, &mut lines);
    let words: Vec<&str> = incoming.split(' ').collect();
    assert_eq!(words[0], "incoming", "{incoming}");
    assert_eq!(words[2], a.to_string(), "the caller's key");
    assert!(
        words[3].parse::<u16>().unwrap() >= 49152,
        "the caller's port"
    );
    let accepted = sim.app_connect(C, 1).unwrap();
    sim.write(accepted, format!("accept {}\n", words[1]).as_bytes());
    let mut from_a = Vec::new();
    assert_eq!(read_line(&mut sim, accepted, &mut from_a), "ok");

    let (up, down) = (pattern(300_000, 1), pattern(200_000, 2));
    sim.write(dialer, &up);
    sim.write(accepted, &down);
    let from_a = read_exactly(&mut sim, accepted, from_a, 12 + up.len());
    let from_c = read_exactly(&mut sim, dialer, from_c, down.len());
    assert!(
        from_a[..12] == *b"first bytes ",
        "the bytes after the request line"
    );
    assert!(from_a[12..] == up[..], "A's bytes arrived intact");
    assert!(from_c == down, "C's bytes arrived intact");

    // A half-closes: C reads to the end and still writes; then C half-closes too.
    sim.shutdown(dialer);
    run_with(&mut sim, "A's FIN at C", LIMIT, |sim| {
        sim.read(accepted).is_empty() && sim.is_finished(accepted)
    });
    sim.write(accepted, b"after A's FIN");
    assert_eq!(
        read_exactly(&mut sim, dialer, Vec::new(), 13),
        b"after A's FIN"
    );
    assert!(!sim.is_finished(dialer), "C has not half-closed yet");
    sim.shutdown(accepted);
    run_with(&mut sim, "C's FIN at A", LIMIT, |sim| {
        sim.read(dialer).is_empty() && sim.is_finished(dialer)
    });
    run_with(&mut sim, "both connections closed", LIMIT, |sim| {
        sim.is_closed_by_service(dialer) && sim.is_closed_by_service(accepted)
    });
    assert!(
        !sim.is_closed_by_service(listener),
        "the listener listens on"
    );

    // The other way at once: C's app dials A's listener.
    let (_, answer) = ask(&mut sim, A, 7, "listen 6000");
    assert_eq!(answer, "ok");
    let (back, answer) = ask(&mut sim, C, 1, &format!("dial {a} 6000"));
    assert_eq!(answer, "ok");
    sim.write(back, b"the other way");
    assert!(!sim.is_finished(back));
}

#[test]
fn a_stream_not_accepted_in_time_is_reset() {
    let accept_timeout = Duration::from_secs(3);
    let mut sim = line_of_three(42, |_, _, options| {
        options.app_socket = AppSocketOptions {
            accept_timeout,
            ..AppSocketOptions::default()
        };
    });
    let c = sim.key(C);
    let (listener, _) = ask(&mut sim, C, 1, "listen 5000");
    let (dialer, answer) = ask(&mut sim, A, 7, &format!("dial {c} 5000"));
    assert_eq!(answer, "ok", "the stream reached the listening port");
    let incoming = read_line(&mut sim, listener, &mut Vec::new());
    let id = incoming.split(' ').nth(1).unwrap().to_owned();
    let announced = sim.elapsed();
    run_with(&mut sim, "the dialer's stream reset", LIMIT, |sim| {
        sim.is_closed_by_service(dialer)
    });
    assert!(
        sim.elapsed() >= announced + accept_timeout,
        "reset after {:?}",
        sim.elapsed() - announced
    );
    let (_, answer) = ask(&mut sim, C, 1, &format!("accept {id}"));
    assert!(
        answer.starts_with(&format!("error bad request: no incoming stream {id} waits")),
        "{answer}"
    );
}

#[test]
fn every_refusal_says_why_and_the_node_runs_on() {
    let mut sim = line_of_three(43, |i, _, options| {
        options.app_socket.max_per_app = 3;
        if i == C {
            options.socks = SocksOptions {
                client: None,
                server: Some(socks::ServerOptions::default()),
            };
        }
    });
    let (a, c) = (sim.key(A), sim.key(C));
    let stranger = NodeKey::from([9; 32]);
    let (_, answer) = ask(&mut sim, C, 1, "listen 5000 echo");
    assert_eq!(answer, "ok");
    let refusals = [
        (A, format!("dial {c} 6000"), "error nobody listening: "),
        (A, format!("dial {c} 80"), "error port reserved: port 80 "),
        (
            A,
            format!("dial {c} 1080"),
            "error port reserved: port 1080 ",
        ),
        (A, format!("dial {c} 7001"), "error port reserved: "),
        (A, "listen 1023".to_owned(), "error port reserved: "),
        (A, "listen 1080".to_owned(), "error port reserved: "),
        (C, "listen 5000".to_owned(), "error port in use: "),
        (
            A,
            "listen 5001 socks-server".to_owned(),
            "error not allowed: `socks-server`",
        ),
        (A, "listen 5001 messenger".to_owned(), "error not allowed: "),
        (A, format!("dial {stranger} 5000"), "error no route: "),
        (A, format!("dial {a} 5000"), "error no route: "),
        (A, "hello".to_owned(), "error bad request: `hello` is not"),
        (
            A,
            "dial".to_owned(),
            "error bad request: usage: dial KEY PORT",
        ),
        (
            A,
            "accept 99".to_owned(),
            "error bad request: no incoming stream 99",
        ),
    ];
    for (node, request, start) in refusals {
        let (stream, answer) = ask(&mut sim, node, 7, &request);
        assert!(answer.starts_with(start), "{request}: {answer}");
        // The refusal is the last line: then the end of the stream, and once the app closes
        // its end (before the node's linger runs out), the connection.
        run_with(&mut sim, "the end after the refusal", LIMIT, |sim| {
            sim.is_finished(stream)
        });
        sim.close(stream);
        run_with(
            &mut sim,
            "the refused connection closed",
            Duration::from_secs(1),
            |sim| sim.is_closed_by_service(stream),
        );
    }

    // A stream that arrived on app 1's listener is not app 2's to take.
    let (_, answer) = ask(&mut sim, A, 7, &format!("dial {c} 5000"));
    assert_eq!(answer, "ok");
    let (_, answer) = ask(&mut sim, C, 2, "accept 1");
    assert!(
        answer.starts_with("error not allowed: incoming stream 1 is another app's"),
        "{answer}"
    );

    // App 7 holds its stream to C; two more connections reach its limit of three.
    let (_, answer) = ask(&mut sim, A, 7, "listen 5002");
    assert_eq!(answer, "ok");
    let waiting = sim.app_connect(A, 7).unwrap();
    let (refused, answer) = ask(&mut sim, A, 7, "listen 5003");
    assert!(
        answer.starts_with("error limit reached: this app holds 3"),
        "{answer}"
    );
    run_with(
        &mut sim,
        "the connection over the limit closed",
        LIMIT,
        |sim| sim.is_closed_by_service(refused),
    );
    // Another app is not held back, and a connection that sends nothing is closed in time.
    let (_, answer) = ask(&mut sim, A, 8, "listen 5003");
    assert_eq!(answer, "ok");
    let answer = read_line(&mut sim, waiting, &mut Vec::new());
    assert_eq!(answer, "error bad request: no request within 10 s");

    // A line cut short, a line that is too long, bytes that are not text.
    for bytes in [&b"\xff\xfe\n"[..], &[b'x'; 300][..]] {
        let stream = sim.app_connect(B, 3).unwrap();
        sim.write(stream, bytes);
        let answer = read_line(&mut sim, stream, &mut Vec::new());
        assert!(answer.starts_with("error bad request: "), "{answer}");
    }
    let stream = sim.app_connect(B, 3).unwrap();
    sim.write(stream, b"listen 50");
    sim.shutdown(stream);
    run_with(&mut sim, "a half request closed", LIMIT, |sim| {
        sim.is_closed_by_service(stream)
    });
    let (_, answer) = ask(&mut sim, B, 3, "listen 5000");
    assert_eq!(answer, "ok", "the node runs on");
}

fn services(sim: &mut AppSim, node: usize, name: Option<&str>) -> ServicesReply {
    let request = Request::Services {
        name: name.map(|name| name.parse().unwrap()),
    };
    match sim.ask(node, request, LIMIT) {
        Ok(Reply::Services(reply)) => reply,
        other => panic!("not a services reply: {other:?}"),
    }
}

/// The services node `node` lists, as (service, offering node, port).
fn listed(sim: &mut AppSim, node: usize) -> Vec<(String, NodeKey, u16)> {
    services(sim, node, None)
        .services
        .iter()
        .map(|row| (row.service.to_string(), row.node, row.port))
        .collect()
}

#[test]
fn services_travel_with_the_adverts_and_expire_with_them() {
    let advert_interval = Duration::from_secs(5);
    let mut sim = line_of_three(44, |i, _, options| {
        options.node.advert_interval = advert_interval;
        if i == C {
            options.socks = SocksOptions {
                client: None,
                server: Some(socks::ServerOptions {
                    port: 2080,
                    ..socks::ServerOptions::default()
                }),
            };
        }
    });
    let c = sim.key(C);
    let (listener, answer) = ask(&mut sim, C, 1, "listen 5000 chat");
    assert_eq!(answer, "ok");
    let both = vec![
        ("chat".to_owned(), c, 5000),
        ("socks-server".to_owned(), c, 2080),
    ];
    run_with(&mut sim, "A to list C's services", LIMIT, |sim| {
        listed(sim, A) == both
    });

    let reply = services(&mut sim, A, Some("chat"));
    assert_eq!(reply.services.len(), 1);
    let row = &reply.services[0];
    assert_eq!((row.hops, row.builtin, row.own), (Some(2), false, false));
    assert!(row.cost_ms.unwrap() > 0.0, "{row:?}");
    let own = services(&mut sim, C, Some("socks-server"));
    assert_eq!(own.services[0].hops, Some(0));
    assert!(own.services[0].own && own.services[0].builtin);

    // A port announced by a built-in service there is that node's own: no dial to it.
    let (_, answer) = ask(&mut sim, A, 7, &format!("dial {c} 2080"));
    assert!(
        answer.starts_with("error port reserved: port 2080"),
        "{answer}"
    );

    // The listener goes: the next advert leaves its service out.
    sim.close(listener);
    let socks_only = vec![("socks-server".to_owned(), c, 2080)];
    run_with(&mut sim, "A to drop C's chat", LIMIT, |sim| {
        listed(sim, A) == socks_only
    });

    // C falls silent: its advert, services and all, expires at A after its lifetime (four
    // intervals), not before.
    sim.link(B, C).alive = false;
    let cut = sim.elapsed();
    run_with(
        &mut sim,
        "C's advert to expire at A",
        8 * advert_interval,
        |sim| listed(sim, A).is_empty(),
    );
    assert!(
        sim.elapsed() >= cut + 2 * advert_interval,
        "expired after {:?}",
        sim.elapsed() - cut
    );
}

#[test]
fn a_running_messenger_is_offered_and_its_port_is_the_nodes_own() {
    use skywire_dataplane::api::{AppChange, AppConfig};
    use skywire_dataplane::messenger::{self, Settings};

    let advert_interval = Duration::from_secs(5);
    let mut sim = line_of_three(45, |i, _, options| {
        options.node.advert_interval = advert_interval;
        if i == C {
            options.messenger.settings = Some(Settings::default());
        }
    });
    let c = sim.key(C);
    let offered = vec![("messenger".to_owned(), c, messenger::PORT)];
    run_with(&mut sim, "A to list C's messenger", LIMIT, |sim| {
        listed(sim, A) == offered
    });
    let own = services(&mut sim, C, Some("messenger"));
    assert!(own.services[0].own && own.services[0].builtin);

    // An app may neither take the messenger's port at C nor dial it there from A.
    let (_, answer) = ask(&mut sim, C, 1, &format!("listen {}", messenger::PORT));
    assert!(
        answer.starts_with(&format!("error port reserved: port {}", messenger::PORT)),
        "{answer}"
    );
    let (_, answer) = ask(&mut sim, A, 2, &format!("dial {c} {}", messenger::PORT));
    assert!(
        answer.starts_with(&format!("error port reserved: port {}", messenger::PORT)),
        "{answer}"
    );

    // The messenger's section gone: C's next advert no longer offers it.
    let (_, change) = sim.configure_app(C, AppConfig::Messenger(None), LIMIT);
    assert_eq!(change, AppChange::Removed);
    run_with(&mut sim, "A to drop C's messenger", LIMIT, |sim| {
        listed(sim, A).is_empty()
    });
}

/// B, the relay of A's route to C, restarts. C's next packet finds that B forgot the route,
/// and C waits for A, the route's initiator, to repair it. A dial and a message from C
/// meanwhile wait for that repair: C starts no setup of its own beside it, and both complete
/// over A's repaired route.
#[test]
fn a_dial_and_a_message_during_a_repair_wait_for_it_and_start_no_setup_of_their_own() {
    use skywire_dataplane::api::messenger::{MessengerReply, MessengerRequest};
    use skywire_dataplane::api::Response;
    use skywire_dataplane::messenger::Settings;

    let mut sim = line_of_three(46, |_, _, options| {
        options.messenger.settings = Some(Settings::default());
    });
    let (a, c) = (sim.key(A), sim.key(C));
    let send = |peer: NodeKey, text: &str| {
        Request::Messenger(MessengerRequest::Send {
            peer,
            text: text.to_owned(),
        })
    };
    let delivered = |reply: Option<Response>| {
        assert!(
            matches!(reply, Some(Ok(Reply::Messenger(MessengerReply::Sent(_))))),
            "not delivered: {reply:?}"
        );
    };
    let (listener, answer) = ask(&mut sim, A, 1, "listen 5000");
    assert_eq!(answer, "ok");
    // A's message has A's node build the route: A is its initiator, C its far end.
    delivered(Some(sim.ask(A, send(c, "from A"), LIMIT)));

    let first = sim.forget_route_at_relay(B, C, A, send(a, "first from C"), LIMIT);
    let (setups_at_a, setups_at_c) = (sim.setups_started(A), sim.setups_started(C));

    // While C waits for A's repair, its app dials A and its messenger sends again.
    let dialer = sim.app_connect(C, 2).unwrap();
    sim.write(dialer, format!("dial {a} 5000\n").as_bytes());
    let second = sim.request(C, send(a, "second from C"));
    sim.assert_waits_for_repair(C, A, setups_at_c);

    // A's next packet finds the route forgotten too, and A's node repairs it.
    let from_a = sim.request(A, send(c, "again from A"));
    assert_eq!(read_line(&mut sim, dialer, &mut Vec::new()), "ok");
    let incoming = read_line(&mut sim, listener, &mut Vec::new());
    assert!(incoming.starts_with("incoming "), "{incoming}");
    run_with(&mut sim, "the three messages delivered", LIMIT, |sim| {
        sim.has_reply(C, first) && sim.has_reply(C, second) && sim.has_reply(A, from_a)
    });
    delivered(sim.take_reply(C, first));
    delivered(sim.take_reply(C, second));
    delivered(sim.take_reply(A, from_a));
    sim.assert_repaired_by(A, setups_at_a, C, setups_at_c);
}
