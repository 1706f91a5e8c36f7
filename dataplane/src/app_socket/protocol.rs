//! The app socket's lines, sans-IO: the request a launched app sends first on a connection
//! (`dial KEY PORT`, `listen PORT [SERVICE]`, `accept ID`), and what it is answered: `ok`, a
//! refusal (`error REASON: DETAIL`), and on a listener one `incoming ID KEY PORT` per stream.
//! Each line ends with a new line (a carriage return before it is ignored).

use std::fmt;
use std::time::Duration;

use crate::identity::NodeKey;
use crate::node::RouteError;
use crate::wire::service::ServiceNameError;
use crate::wire::{BuiltinService, ServiceName};

/// The longest request line, its new line included.
pub const MAX_LINE: usize = 256;

/// The answer that opens a stream or a listener.
pub const OK: &[u8] = b"ok\n";

/// What a launched app asks on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRequest {
    /// Open a stream to `port` on node `peer`; the connection becomes the stream.
    Dial {
        /// The node.
        peer: NodeKey,
        /// Its mesh TCP port.
        port: u16,
    },
    /// Take the streams that arrive on `port`, and advertise them as `service` when named; the
    /// connection becomes the listener.
    Listen {
        /// The mesh TCP port.
        port: u16,
        /// The service's name in this node's advert.
        service: Option<ServiceName>,
    },
    /// Take incoming stream `id`; the connection becomes the stream.
    Accept {
        /// The id its `incoming` line gave.
        id: u64,
    },
}

/// The request's line, without its new line: what an app sends.
impl fmt::Display for AppRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRequest::Dial { peer, port } => write!(f, "dial {peer} {port}"),
            AppRequest::Listen {
                port,
                service: None,
            } => write!(f, "listen {port}"),
            AppRequest::Listen {
                port,
                service: Some(service),
            } => write!(f, "listen {port} {service}"),
            AppRequest::Accept { id } => write!(f, "accept {id}"),
        }
    }
}

/// Reads the request at the start of `input`: `None` while its line is not whole, else the
/// request (or why it is none) and how many bytes the line took, its new line included; the
/// bytes after it are already the stream's. A line that fills [`MAX_LINE`] without its new line
/// is refused.
pub fn parse_request(input: &[u8]) -> Option<(Result<AppRequest, Refusal>, usize)> {
    let Some(end) = input.iter().position(|byte| *byte == b'\n') else {
        return (input.len() >= MAX_LINE)
            .then_some((Err(Refusal::BadRequest(BadRequest::TooLong)), input.len()));
    };
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let request = match std::str::from_utf8(line) {
        Ok(line) => parse_line(line),
        Err(_) => Err(BadRequest::NotText),
    };
    Some((request.map_err(Refusal::BadRequest), end + 1))
}

fn parse_line(line: &str) -> Result<AppRequest, BadRequest> {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    match words.as_slice() {
        ["dial", key, port] => Ok(AppRequest::Dial {
            peer: key.parse().map_err(|_| BadRequest::Key(shorten(key)))?,
            port: parse_port(port)?,
        }),
        ["dial", ..] => Err(BadRequest::Usage("dial KEY PORT")),
        ["listen", port] => Ok(AppRequest::Listen {
            port: parse_port(port)?,
            service: None,
        }),
        ["listen", port, service] => Ok(AppRequest::Listen {
            port: parse_port(port)?,
            service: Some(
                service
                    .parse()
                    .map_err(|error| BadRequest::Service(shorten(service), error))?,
            ),
        }),
        ["listen", ..] => Err(BadRequest::Usage("listen PORT [SERVICE]")),
        ["accept", id] => Ok(AppRequest::Accept {
            id: id.parse().map_err(|_| BadRequest::Id(shorten(id)))?,
        }),
        ["accept", ..] => Err(BadRequest::Usage("accept ID")),
        [] => Err(BadRequest::Empty),
        [other, ..] => Err(BadRequest::Unknown(shorten(other))),
    }
}

fn parse_port(word: &str) -> Result<u16, BadRequest> {
    match word.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(BadRequest::Port(shorten(word))),
    }
}

/// A word as a refusal quotes it: at most 48 characters.
fn shorten(word: &str) -> String {
    const MAX: usize = 48;
    match word.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &word[..at]),
        None => word.to_owned(),
    }
}

/// The line that opens a listener's notice of stream `id` from `peer`'s port `port`.
pub fn incoming_line(id: u64, peer: &NodeKey, port: u16) -> String {
    format!("incoming {id} {peer} {port}\n")
}

/// Why a request was refused. Its line is `error ` and this, so a refusal's first words (up to
/// the colon) say what kind it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The line is not a request.
    #[error("bad request: {0}")]
    BadRequest(BadRequest),
    /// No route to the node could be had.
    #[error("no route: {peer}: {why}")]
    NoRoute {
        /// The node dialed.
        peer: NodeKey,
        /// Why not.
        why: NoRoute,
    },
    /// The node took the route but has no listener on the port (it reset the stream).
    #[error("nobody listening: {peer} has no listener on port {port}")]
    NobodyListening {
        /// The node dialed.
        peer: NodeKey,
        /// The port.
        port: u16,
    },
    /// The node answered neither way in time.
    #[error("timed out: {peer} did not answer on port {port} within {} s", .after.as_secs())]
    TimedOut {
        /// The node dialed.
        peer: NodeKey,
        /// The port.
        port: u16,
        /// How long it was given.
        after: Duration,
    },
    /// The app may not do that.
    #[error("not allowed: {0}")]
    NotAllowed(NotAllowed),
    /// The port is one of the node's own: below 1024, or a built-in app's.
    #[error("port reserved: port {0} is the node's own (ports below 1024 and the built-in apps' ports are not for launched apps)")]
    PortReserved(u16),
    /// Another app listens on the port.
    #[error("port in use: another app listens on port {0}")]
    PortInUse(u16),
    /// A limit is reached.
    #[error("limit reached: {0}")]
    LimitReached(Limit),
}

impl Refusal {
    /// The refusal's line, new line included.
    pub fn line(&self) -> Vec<u8> {
        format!("error {self}\n").into_bytes()
    }
}

/// Why a line is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// No new line within [`MAX_LINE`] bytes.
    #[error("the line is longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not UTF-8.
    #[error("the line is not UTF-8 text")]
    NotText,
    /// Nothing but blanks.
    #[error("an empty line: send dial, listen or accept")]
    Empty,
    /// A first word that is no request.
    #[error("`{0}` is not dial, listen or accept")]
    Unknown(String),
    /// A request with the wrong words.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// Not a node key.
    #[error("`{0}` is not a node key: a key is 44 characters of base64")]
    Key(String),
    /// Not a port.
    #[error("`{0}` is not a port: a whole number from 1 to 65535")]
    Port(String),
    /// Not a service name.
    #[error("`{0}` is not a service name: {1}")]
    Service(String, ServiceNameError),
    /// Not a stream id.
    #[error("`{0}` is not a stream id: the number of an `incoming` line")]
    Id(String),
    /// No incoming stream has the id (any more).
    #[error("no incoming stream {0} waits: it was accepted already, reset after waiting too long, or never announced")]
    NoIncoming(u64),
    /// The connection sent no whole line in time.
    #[error("no request within {} s", .0.as_secs())]
    Silent(Duration),
}

/// Why no route to a node could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// The key is this node's.
    OwnKey,
    /// The node manager could not set one up.
    Failed(RouteError),
    /// None was ready in time.
    TimedOut(Duration),
    /// The route went down while the stream was opening.
    WentDown,
}

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRoute::OwnKey => f.write_str("that is this node's own key"),
            NoRoute::Failed(error) => error.fmt(f),
            NoRoute::TimedOut(after) => {
                write!(f, "no route was ready within {} s", after.as_secs())
            }
            NoRoute::WentDown => f.write_str("the route went down while the stream was opening"),
        }
    }
}

/// What an app may not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    /// Announce a built-in app's service.
    #[error("`{0}` is a built-in app's service: choose another name")]
    BuiltinService(BuiltinService),
    /// Accept a stream that arrived on another app's listener.
    #[error("incoming stream {0} is another app's")]
    OtherAppsStream(u64),
}

/// The limits an app can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// The app's connections and streams on the app socket.
    #[error("this app holds {0} connections and streams on the app socket, its most")]
    App(usize),
    /// Every app's connections together.
    #[error("the node holds {0} app socket connections, its most")]
    Node(usize),
    /// The node's mesh TCP sockets.
    #[error("the node's mesh stack holds all the streams it can")]
    Stack,
    /// The services an advert lists.
    #[error("this node advertises {0} services, the most an advert lists")]
    Services(usize),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key() -> NodeKey {
        NodeKey::from([7; 32])
    }

    fn parse(line: &str) -> Result<AppRequest, Refusal> {
        let (request, used) = parse_request(line.as_bytes()).unwrap();
        assert_eq!(used, line.find('\n').unwrap() + 1);
        request
    }

    #[test]
    fn requests_are_read_up_to_their_new_line() {
        let line = format!("dial {} 5000\nstream bytes", key());
        let (request, used) = parse_request(line.as_bytes()).unwrap();
        assert_eq!(
            request,
            Ok(AppRequest::Dial {
                peer: key(),
                port: 5000
            })
        );
        assert_eq!(&line.as_bytes()[used..], b"stream bytes");
        assert_eq!(
            parse("listen 5000 echo\r\n"),
            Ok(AppRequest::Listen {
                port: 5000,
                service: Some("echo".parse().unwrap())
            })
        );
        assert_eq!(
            parse("listen 6000\n"),
            Ok(AppRequest::Listen {
                port: 6000,
                service: None
            })
        );
        assert_eq!(parse("accept 42\n"), Ok(AppRequest::Accept { id: 42 }));
        for request in [
            AppRequest::Dial {
                peer: key(),
                port: 1,
            },
            AppRequest::Listen {
                port: 65535,
                service: Some("echo".parse().unwrap()),
            },
            AppRequest::Listen {
                port: 80,
                service: None,
            },
            AppRequest::Accept { id: u64::MAX },
        ] {
            assert_eq!(parse(&format!("{request}\n")), Ok(request));
        }
        assert_eq!(parse_request(b"listen 50"), None, "not whole yet");
    }

    #[test]
    fn bad_lines_are_refused_with_what_is_wrong() {
        let bad = |line: &str| match parse(line) {
            Err(Refusal::BadRequest(why)) => why,
            other => panic!("{line:?}: {other:?}"),
        };
        assert_eq!(bad("\n"), BadRequest::Empty);
        assert_eq!(bad("connect x\n"), BadRequest::Unknown("connect".into()));
        assert_eq!(bad("dial x\n"), BadRequest::Usage("dial KEY PORT"));
        assert_eq!(bad("dial nokey 5\n"), BadRequest::Key("nokey".into()));
        assert_eq!(
            bad(&format!("dial {} 0\n", key())),
            BadRequest::Port("0".into())
        );
        assert_eq!(bad("listen 70000\n"), BadRequest::Port("70000".into()));
        assert!(matches!(bad("listen 5000 a/b\n"), BadRequest::Service(..)));
        assert_eq!(
            bad("listen 1 2 3\n"),
            BadRequest::Usage("listen PORT [SERVICE]")
        );
        assert_eq!(bad("accept -1\n"), BadRequest::Id("-1".into()));
        let long = "x".repeat(100);
        assert_eq!(
            bad(&format!("{long}\n")),
            BadRequest::Unknown(format!("{}…", "x".repeat(48)))
        );
        let (request, used) = parse_request(&[0xff, b'\n']).unwrap();
        assert_eq!(
            (request, used),
            (Err(Refusal::BadRequest(BadRequest::NotText)), 2)
        );
        let endless = vec![b'a'; MAX_LINE];
        let (request, _) = parse_request(&endless).unwrap();
        assert_eq!(request, Err(Refusal::BadRequest(BadRequest::TooLong)));
    }

    #[test]
    fn refusal_lines_start_with_their_kind() {
        let lines = [
            (Refusal::PortReserved(80), "error port reserved: "),
            (Refusal::PortInUse(5000), "error port in use: "),
            (
                Refusal::NobodyListening {
                    peer: key(),
                    port: 5,
                },
                "error nobody listening: ",
            ),
            (
                Refusal::NoRoute {
                    peer: key(),
                    why: NoRoute::OwnKey,
                },
                "error no route: ",
            ),
            (
                Refusal::NotAllowed(NotAllowed::BuiltinService(BuiltinService::Messenger)),
                "error not allowed: `messenger`",
            ),
            (
                Refusal::LimitReached(Limit::App(8)),
                "error limit reached: ",
            ),
        ];
        for (refusal, start) in lines {
            let line = String::from_utf8(refusal.line()).unwrap();
            assert!(line.starts_with(start), "{line}");
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        }
        assert_eq!(
            incoming_line(3, &key(), 49152),
            format!("incoming 3 {} 49152\n", key())
        );
    }
}
