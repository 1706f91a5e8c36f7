//! A blocking client of the control socket, as `visctl` uses it: it sends viscript lines and
//! reads reply lines. Reading is separate from sending so that a streaming command (`attach`)
//! can keep reading lines after its first reply, and can wait for one with a timeout while it
//! also forwards input.

use std::io::{self, BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{Answer, MAX_REPLY_LINE};

/// Why talking to `skywired` failed after connecting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the socket failed.
    #[error("lost the connection to skywired: {0}; check that skywired is still running (its log says why it stopped)")]
    Io(#[from] io::Error),
    /// The server closed the connection before it answered.
    #[error("skywired closed the connection without answering: it may be stopping; check its log")]
    Closed,
    /// A request line cannot be sent: the protocol has one request per line.
    #[error("a command cannot contain a new line: send one command per line")]
    NewLine,
    /// The server sent something that is not a reply line.
    #[error("skywired sent something that is not a reply ({problem}): is this socket really skywired's?")]
    Malformed {
        /// What is wrong with it.
        problem: String,
    },
}

/// A connection to the control socket.
#[derive(Debug)]
pub struct ControlClient {
    stream: BufReader<UnixStream>,
    /// The beginning of a reply line whose end has not arrived yet.
    partial: Vec<u8>,
    /// What [`ControlClient::set_read_timeout`] asked for.
    read_timeout: Option<Duration>,
}

impl ControlClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<ControlClient> {
        Ok(ControlClient {
            stream: BufReader::new(UnixStream::connect(path)?),
            partial: Vec::new(),
            read_timeout: None,
        })
    }

    /// Gives up waiting for a reply after `timeout` (`None`: waits as long as it takes).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        self.stream.get_ref().set_read_timeout(timeout)
    }

    /// Sends one line of viscript.
    pub fn send_line(&mut self, line: &str) -> Result<(), ClientError> {
        if line.contains('\n') {
            return Err(ClientError::NewLine);
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.get_mut().write_all(&bytes)?;
        Ok(())
    }

    /// Reads the next reply line.
    pub fn read_answer(&mut self) -> Result<Answer, ClientError> {
        let line = self.next_line()?;
        parse_line(line)
    }

    /// Reads the next reply line if one arrives within `timeout` (at least a millisecond);
    /// `Ok(None)` if none did. A line cut by the timeout is kept for the next read.
    pub fn poll_answer(&mut self, timeout: Duration) -> Result<Option<Answer>, ClientError> {
        let socket = self.stream.get_ref();
        socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let line = self.next_line();
        self.stream.get_ref().set_read_timeout(self.read_timeout)?;
        match line {
            Ok(line) => parse_line(line).map(Some),
            Err(ClientError::Io(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The next line, without its new line; what a timeout cuts off stays in `partial`.
    fn next_line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            let available = match self.stream.fill_buf() {
                Ok(available) => available,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            };
            if available.is_empty() {
                self.partial.clear();
                return Err(ClientError::Closed);
            }
            let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
                Some(end) => (end + 1, Some(end)),
                None => (available.len(), None),
            };
            self.partial
                .extend_from_slice(&available[..complete.unwrap_or(taken)]);
            self.stream.consume(taken);
            if complete.is_some() {
                return Ok(std::mem::take(&mut self.partial));
            }
            if self.partial.len() > MAX_REPLY_LINE {
                self.partial.clear();
                return Err(ClientError::Malformed {
                    problem: format!("a line over {MAX_REPLY_LINE} bytes"),
                });
            }
        }
    }

    /// Sends one line and reads its reply.
    pub fn command(&mut self, line: &str) -> Result<Answer, ClientError> {
        match self.send_line(line) {
            Ok(()) => self.read_answer(),
            // A server that refuses a client (it may not use the socket, or too many are
            // connected) writes why and closes, perhaps before the line arrived: the reason
            // is still there to read.
            Err(ClientError::Io(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.read_answer().map_err(|_| ClientError::Io(err))
            }
            Err(err) => Err(err),
        }
    }
}

fn parse_line(line: Vec<u8>) -> Result<Answer, ClientError> {
    if line.len() > MAX_REPLY_LINE {
        return Err(ClientError::Malformed {
            problem: format!("a line over {MAX_REPLY_LINE} bytes"),
        });
    }
    let text = String::from_utf8(line).map_err(|_| ClientError::Malformed {
        problem: "not UTF-8".to_owned(),
    })?;
    Answer::parse(&text).map_err(|err| ClientError::Malformed {
        problem: err.to_string(),
    })
}
