//! What launched apps write to the node's app socket: the request line (`dial KEY PORT`,
//! `listen PORT [SERVICE]`, `accept ID`) as the app socket reads it from whatever has arrived,
//! and whole sessions of apps on two neighbouring nodes, served by the nodes' services in the
//! in-memory mesh.

use std::time::Duration;

use skywire_dataplane::app_socket::protocol::{parse_request, AppRequest, Refusal, MAX_LINE};
use skywire_dataplane::app_socket::AppSocketOptions;
use skywire_dataplane::sim::{AppSim, StreamId};
use skywire_dataplane::NodeKey;

use crate::{key, records, Seed, PEER_SECRET};

/// The request at the start of what arrived: it is read from its first line alone, so the
/// bytes after the new line (the stream's) change nothing, and every shorter part of that line
/// waits for more; a line that fills [`MAX_LINE`] without one is refused. A refusal is one
/// line; a request written out again as an app writes it reads back the same. Accepted when a
/// request parsed.
pub fn app_socket_request(data: &[u8]) -> bool {
    let Some((request, used)) = parse_request(data) else {
        assert!(data.len() < MAX_LINE && !data.contains(&b'\n'));
        return false;
    };
    assert!(used <= data.len());
    match data[..used].iter().position(|byte| *byte == b'\n') {
        Some(end) => {
            assert_eq!(end + 1, used, "the request ends at its first new line");
            assert_eq!(parse_request(&data[..used]), Some((request.clone(), used)));
            for len in 0..end.min(MAX_LINE) {
                assert_eq!(parse_request(&data[..len]), None, "{len} bytes of a line");
            }
        }
        None => assert!(used >= MAX_LINE, "only a line too long has no new line"),
    }
    match request {
        Ok(request) => {
            let line = format!("{request}\n");
            assert_eq!(
                parse_request(line.as_bytes()),
                Some((Ok(request), line.len()))
            );
            true
        }
        Err(refusal) => {
            one_line(&refusal);
            false
        }
    }
}

/// A refusal's line is one line, which starts with `error`.
fn one_line(refusal: &Refusal) {
    let line = refusal.line();
    assert!(line.starts_with(b"error "));
    assert_eq!(line.iter().filter(|byte| **byte == b'\n').count(), 1);
    assert!(line.ends_with(b"\n"));
}

/// Each request as an app writes it, one with a carriage return, and a dial whose stream's
/// first bytes came with it.
pub fn app_socket_request_seeds() -> Vec<Seed> {
    let peer: NodeKey = key(PEER_SECRET);
    let line = |request: AppRequest| format!("{request}\n").into_bytes();
    let mut dial_and_stream = line(AppRequest::Dial { peer, port: 5000 });
    dial_and_stream.extend_from_slice(b"the stream's first bytes");
    vec![
        Seed::new("dial.line", line(AppRequest::Dial { peer, port: 5000 })),
        Seed::new(
            "listen.line",
            line(AppRequest::Listen {
                port: 6000,
                service: None,
            }),
        ),
        Seed::new(
            "listen_service.line",
            line(AppRequest::Listen {
                port: 6001,
                service: Some("chat-v2.example".parse().expect("a service name")),
            }),
        ),
        Seed::new("accept.line", line(AppRequest::Accept { id: 17 })),
        Seed::new(
            "carriage_return.line",
            format!("{}\r\n", AppRequest::Accept { id: 3 }).into_bytes(),
        ),
        Seed::new("dial_and_stream.line", dial_and_stream),
    ]
}

/// An app connects to its node's app socket: node `byte & 1`'s app `byte >> 1 & 3`.
const CONNECT: u8 = 0;
/// Connection `byte` (modulo those open) is written the rest of the record.
const WRITE: u8 = 1;
/// Connection `byte` sends its FIN.
const SHUTDOWN: u8 = 2;
/// Connection `byte` is closed.
const CLOSE: u8 = 3;
/// As many milliseconds as the record's first two bytes say pass.
const WAIT: u8 = 4;
/// Record kinds are read modulo this.
const KINDS: u8 = 5;

/// The seed of the in-memory mesh, which its nodes' keys come from.
const SIM_SEED: u64 = 7;
/// Connections one input may open.
const MAX_CONNECTIONS: usize = 16;
/// Virtual time that passes after each record, for what it set off to happen.
const SLICE: Duration = Duration::from_millis(20);
/// Virtual time one input may let pass in all.
const MAX_TIME: Duration = Duration::from_secs(30);
/// Virtual time after the apps close their connections, in which the nodes close theirs: more
/// than the longest timeout of [`OPTIONS`].
const CLOSING_TIME: Duration = Duration::from_secs(10);
/// The app sockets' options: the default limits, and timeouts shorter than the default ones,
/// so that an input reaches them in less virtual time.
const OPTIONS: AppSocketOptions = AppSocketOptions {
    max_per_app: 256,
    max_connections: 1024,
    request_timeout: Duration::from_secs(2),
    dial_timeout: Duration::from_secs(4),
    accept_timeout: Duration::from_secs(2),
};

/// One app's connection, as the app sees it.
struct Connection {
    stream: StreamId,
    /// What the node wrote to it.
    read: Vec<u8>,
    /// Whether the app sent its FIN (or closed it), after which it writes nothing.
    shut: bool,
}

/// Sessions of launched apps on two neighbouring nodes, fed records (see [`records`]; the
/// kinds are the constants of this module) that open connections to the app socket, write to
/// them, half-close and close them, and let time pass. Each connection's first line from the
/// node is `ok` or a refusal (`error ` and why); after every app closes its connections and
/// the nodes' timers have run, the nodes hold none of them. Accepted when a request was
/// answered.
pub fn app_socket_session(data: &[u8]) -> bool {
    let (mut sim, connections) = play(data);
    let mut answered = false;
    for connection in &connections {
        let Some(end) = connection.read.iter().position(|byte| *byte == b'\n') else {
            continue;
        };
        let line = &connection.read[..end];
        assert!(
            line == b"ok" || line.starts_with(b"error "),
            "{:?}",
            String::from_utf8_lossy(line)
        );
        answered = true;
    }
    for connection in &connections {
        sim.close(connection.stream);
    }
    sim.run_for(CLOSING_TIME);
    for connection in &connections {
        assert!(
            sim.is_closed_by_service(connection.stream),
            "a connection its app closed is held on"
        );
    }
    answered
}

/// Two neighbouring nodes with their app sockets.
fn mesh() -> AppSim {
    AppSim::new(SIM_SEED, 2, &[(0, 1)], |_, _, options| {
        options.app_socket = OPTIONS;
    })
}

/// Runs `records` through two nodes' app sockets: the mesh, and each connection as its app saw
/// it.
fn play(records: &[u8]) -> (AppSim, Vec<Connection>) {
    let mut sim = mesh();
    let mut connections: Vec<Connection> = Vec::new();
    for (kind, bytes) in records::split(records) {
        let first = bytes.first().copied().unwrap_or(0);
        let chosen = (!connections.is_empty()).then(|| usize::from(first) % connections.len());
        match kind % KINDS {
            CONNECT if connections.len() < MAX_CONNECTIONS => {
                let (node, app) = (usize::from(first & 1), u64::from(first >> 1 & 3));
                if let Some(stream) = sim.app_connect(node, app) {
                    connections.push(Connection {
                        stream,
                        read: Vec::new(),
                        shut: false,
                    });
                }
            }
            WRITE => {
                if let Some(connection) = chosen.map(|index| &connections[index]) {
                    if !connection.shut {
                        sim.write(connection.stream, bytes.get(1..).unwrap_or_default());
                    }
                }
            }
            SHUTDOWN => {
                if let Some(connection) = chosen.map(|index| &mut connections[index]) {
                    sim.shutdown(connection.stream);
                    connection.shut = true;
                }
            }
            CLOSE => {
                if let Some(connection) = chosen.map(|index| &mut connections[index]) {
                    sim.close(connection.stream);
                    connection.shut = true;
                }
            }
            WAIT => {
                let millis = bytes.first_chunk().map_or(0, |ms| u16::from_be_bytes(*ms));
                sim.run_for(Duration::from_millis(millis.into()));
            }
            _ => {}
        }
        if sim.elapsed() > MAX_TIME {
            break;
        }
        sim.run_for(SLICE);
        for connection in &mut connections {
            connection.read.extend(sim.read(connection.stream));
        }
    }
    (sim, connections)
}

/// Sessions: an app on the peer listens as a service, an app on the node dials it with its
/// first bytes after the request, the listener's app accepts the stream, and bytes go both
/// ways until the dialer half-closes; and a request of each kind that is refused, with a
/// connection that never sends one.
pub fn app_socket_session_seeds() -> Vec<Seed> {
    let sim = mesh();
    let (node, peer) = (sim.key(0), sim.key(1));
    let line = |request: AppRequest| format!("{request}\n").into_bytes();
    let write = |records: &mut Vec<u8>, connection: u8, bytes: &[u8]| {
        let mut record = vec![connection];
        record.extend_from_slice(bytes);
        records::push(records, WRITE, &record);
    };

    let mut streams = Vec::new();
    records::push(&mut streams, CONNECT, &[1]);
    let listen = AppRequest::Listen {
        port: 5000,
        service: Some("echo".parse().expect("a service name")),
    };
    write(&mut streams, 0, &line(listen));
    records::push(&mut streams, CONNECT, &[0]);
    let mut dial = line(AppRequest::Dial { peer, port: 5000 });
    dial.extend_from_slice(b"first bytes");
    write(&mut streams, 1, &dial);
    records::push(&mut streams, WAIT, &500u16.to_be_bytes());
    let (_, connections) = play(&streams);
    let incoming = String::from_utf8_lossy(&connections[0].read).into_owned();
    let id = incoming
        .lines()
        .find_map(|line| {
            line.strip_prefix("incoming ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no stream arrived at the listener: {incoming:?}"));
    records::push(&mut streams, CONNECT, &[1]);
    write(&mut streams, 2, &line(AppRequest::Accept { id }));
    write(&mut streams, 2, b"the other way");
    write(&mut streams, 1, b"more bytes");
    records::push(&mut streams, SHUTDOWN, &[1]);
    records::push(&mut streams, WAIT, &200u16.to_be_bytes());

    let mut refusals = Vec::new();
    let requests = [
        line(AppRequest::Listen {
            port: 80,
            service: None,
        }),
        line(AppRequest::Dial {
            peer: node,
            port: 5000,
        }),
        line(AppRequest::Accept { id: 99 }),
        b"connect somewhere\n".to_vec(),
    ];
    for (index, request) in (0u8..).zip(requests) {
        records::push(&mut refusals, CONNECT, &[index << 1]);
        write(&mut refusals, index, &request);
    }
    records::push(&mut refusals, CONNECT, &[0]);
    records::push(&mut refusals, WAIT, &3_000u16.to_be_bytes());
    vec![
        Seed::new("streams.rec", streams),
        Seed::new("refusals.rec", refusals),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_seed_carries_a_stream_both_ways() {
        let seeds = app_socket_session_seeds();
        let (_, connections) = play(&seeds[0].bytes);
        let read = |index: usize| String::from_utf8_lossy(&connections[index].read).into_owned();
        assert!(read(0).starts_with("ok\nincoming "), "{}", read(0));
        assert_eq!(read(1), "ok\nthe other way");
        assert_eq!(read(2), "ok\nfirst bytesmore bytes");
        assert!(app_socket_session(&seeds[0].bytes));
    }

    #[test]
    fn the_refusals_seed_is_refused_each_time() {
        let seeds = app_socket_session_seeds();
        let (_, connections) = play(&seeds[1].bytes);
        let starts: Vec<String> = connections
            .iter()
            .map(|connection| {
                let read = String::from_utf8_lossy(&connection.read);
                read.split(':').next().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(
            starts,
            [
                "error port reserved",
                "error no route",
                "error bad request",
                "error bad request",
                "error bad request"
            ]
        );
    }
}
