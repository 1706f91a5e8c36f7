//! A client of the node's app socket, for the apps that skywired launches: dial a port of
//! another node by its key, listen on a port of this node (as a named service of its advert,
//! if wished), and accept the streams that arrive there. A stream is a plain [`UnixStream`]:
//! what is written to it goes to the other end, a FIN from there reads as the end of the
//! stream, and `shutdown(Shutdown::Write)` sends one. The socket is found in the environment
//! skywired gives its apps ([`ENV_APP_SOCKET`]); other processes are refused.
//!
//! ```no_run
//! use std::io::{Read as _, Write as _};
//! use skywire_control::app_socket::AppSocket;
//!
//! let socket = AppSocket::from_env()?;
//! let node = "I4FR+rr1zIyZWbjd9gOo7X2a7qb5E//mkO91Ziu0RkU=".parse()?;
//! let mut stream = socket.dial(&node, 5000)?;
//! stream.write_all(b"hello")?;
//! stream.shutdown(std::net::Shutdown::Write)?;
//! let mut answer = Vec::new();
//! stream.read_to_end(&mut answer)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use skywire_dataplane::app_socket::protocol::{AppRequest, BadRequest, Refusal};
use skywire_dataplane::NodeKey;

/// The variable that names the app socket in a launched app's environment.
pub const ENV_APP_SOCKET: &str = "SKYWIRE_APP_SOCKET";

/// The longest answer line read.
const MAX_ANSWER: usize = 1024;

/// Why a request on the app socket failed.
#[derive(Debug, thiserror::Error)]
pub enum AppSocketError {
    /// The environment names no app socket.
    #[error("{ENV_APP_SOCKET} is not set: only the apps skywired launches may use the mesh (start this program with `visctl start`)")]
    NotLaunched,
    /// The socket could not be reached.
    #[error("cannot connect to the app socket {}: {source}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The node refused the request; the text is its refusal after `error `, which starts
    /// with its kind (`no route`, `nobody listening`, `not allowed`, `port reserved`, …).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing the connection failed.
    #[error("the app socket connection failed: {0}")]
    Io(#[from] io::Error),
    /// The node answered something that is no answer.
    #[error("unexpected answer from the app socket: {0:?}")]
    Unexpected(String),
}

/// The node's app socket.
#[derive(Debug, Clone)]
pub struct AppSocket {
    path: PathBuf,
}

/// A stream that arrived on a listener, waiting to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The id that `accept` takes.
    pub id: u64,
    /// The caller's node.
    pub node: NodeKey,
    /// The caller's port, its end of the stream.
    pub port: u16,
}

/// A listener: it hears of each stream that arrives on its port.
#[derive(Debug)]
pub struct Listener {
    socket: AppSocket,
    lines: BufReader<UnixStream>,
}

impl AppSocket {
    /// The socket named in the environment ([`ENV_APP_SOCKET`]).
    pub fn from_env() -> Result<AppSocket, AppSocketError> {
        std::env::var_os(ENV_APP_SOCKET)
            .filter(|path| !path.is_empty())
            .map(|path| AppSocket::at(PathBuf::from(path)))
            .ok_or(AppSocketError::NotLaunched)
    }

    /// The socket at `path`.
    pub fn at(path: impl Into<PathBuf>) -> AppSocket {
        AppSocket { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stream to `port` on `node`; the node builds a route there when it has none.
    pub fn dial(&self, node: &NodeKey, port: u16) -> Result<UnixStream, AppSocketError> {
        self.request(&AppRequest::Dial { peer: *node, port })
    }

    /// Listens on `port` of this node, advertised as `service` when one is named.
    pub fn listen(&self, port: u16, service: Option<&str>) -> Result<Listener, AppSocketError> {
        let service = match service.map(str::parse).transpose() {
            Ok(service) => service,
            Err(error) => {
                let why = BadRequest::Service(service.unwrap_or_default().to_owned(), error);
                return Err(AppSocketError::Refused(
                    Refusal::BadRequest(why).to_string(),
                ));
            }
        };
        let stream = self.request(&AppRequest::Listen { port, service })?;
        Ok(Listener {
            socket: self.clone(),
            lines: BufReader::new(stream),
        })
    }

    /// Takes the stream that arrived with id `id`.
    pub fn accept(&self, id: u64) -> Result<UnixStream, AppSocketError> {
        self.request(&AppRequest::Accept { id })
    }

    /// Sends `request` on a new connection and reads the answer: the connection, once it is
    /// `ok`.
    fn request(&self, request: &AppRequest) -> Result<UnixStream, AppSocketError> {
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| AppSocketError::Connect {
                path: self.path.clone(),
                source,
            })?;
        stream.write_all(format!("{request}\n").as_bytes())?;
        let answer = read_answer(&mut stream)?;
        match answer.as_str() {
            "ok" => Ok(stream),
            refusal => match refusal.strip_prefix("error ") {
                Some(reason) => Err(AppSocketError::Refused(reason.to_owned())),
                None => Err(AppSocketError::Unexpected(refusal.to_owned())),
            },
        }
    }
}

/// The answer line, read a byte at a time: what follows it is the stream's, and stays unread.
fn read_answer(stream: &mut UnixStream) -> Result<String, AppSocketError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(AppSocketError::Unexpected(
                "the node closed the connection without an answer".to_owned(),
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_ANSWER {
            return Err(AppSocketError::Unexpected("an endless answer".to_owned()));
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

impl Listener {
    /// The next stream that arrives; `None` once the node has closed the listener.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, AppSocketError> {
        let mut line = String::new();
        if self.lines.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        parse_incoming(line.trim_end()).map(Some)
    }

    /// Takes `incoming`: its stream.
    pub fn accept(&self, incoming: &Incoming) -> Result<UnixStream, AppSocketError> {
        self.socket.accept(incoming.id)
    }
}

/// Reads an `incoming ID KEY PORT` line.
fn parse_incoming(line: &str) -> Result<Incoming, AppSocketError> {
    let unexpected = || AppSocketError::Unexpected(line.to_owned());
    let words: Vec<&str> = line.split(' ').collect();
    let ["incoming", id, node, port] = words.as_slice() else {
        return Err(unexpected());
    };
    Ok(Incoming {
        id: id.parse().map_err(|_| unexpected())?,
        node: node.parse().map_err(|_| unexpected())?,
        port: port.parse().map_err(|_| unexpected())?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn incoming_lines_are_read() {
        let key = NodeKey::from([3; 32]);
        assert_eq!(
            parse_incoming(&format!("incoming 12 {key} 49153")).unwrap(),
            Incoming {
                id: 12,
                node: key,
                port: 49153
            }
        );
        for bad in ["incoming 1", "incoming x KEY 1", "outgoing 1 2 3", ""] {
            assert!(parse_incoming(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_service_name_is_refused_as_the_node_would_without_asking_it() {
        let socket = AppSocket::at("/nonexistent/apps.sock");
        match socket.listen(5000, Some("a b")) {
            Err(AppSocketError::Refused(reason)) => assert!(
                reason.starts_with("bad request: `a b` is not a service name"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_open_the_stream_or_say_why_not() {
        let dir = std::env::temp_dir().join(format!("skywire-app-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("apps.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                &b"ok\nstream bytes"[..],
                b"error port reserved: port 80 is\n",
            ] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 64];
                let len = stream.read(&mut request).unwrap();
                assert!(request[..len].ends_with(b"\n"));
                stream.write_all(answer).unwrap();
            }
        });
        let socket = AppSocket::at(&path);
        let node = NodeKey::from([5; 32]);
        let mut stream = socket.dial(&node, 5000).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert_eq!(
            rest, b"stream bytes",
            "the bytes after the answer are the stream's"
        );
        match socket.dial(&node, 80) {
            Err(AppSocketError::Refused(reason)) => {
                assert!(reason.starts_with("port reserved"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
