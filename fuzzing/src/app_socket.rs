//! What a launched app writes to the node's app socket before its stream's bytes: the request
//! line (`dial KEY PORT`, `listen PORT [SERVICE]`, `accept ID`), as the app socket reads it
//! from whatever has arrived.

use skywire_dataplane::app_socket::protocol::{parse_request, AppRequest, Refusal, MAX_LINE};
use skywire_dataplane::NodeKey;

use crate::{key, Seed, PEER_SECRET};

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
