//! A blocking client of the control socket, as `visctl` uses it: it sends viscript lines and
//! reads reply lines. Reading is separate from sending so that a streaming command can keep
//! reading lines after its first reply.

use std::io::{self, BufRead, BufReader, Read as _, Write as _};
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
}

impl ControlClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<ControlClient> {
        Ok(ControlClient {
            stream: BufReader::new(UnixStream::connect(path)?),
        })
    }

    /// Gives up waiting for a reply after `timeout` (`None`: waits as long as it takes).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
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
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REPLY_LINE).unwrap_or(u64::MAX) + 1;
        (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut line)?;
        match line.pop() {
            None => return Err(ClientError::Closed),
            Some(b'\n') => {}
            Some(_) if line.len() >= MAX_REPLY_LINE => {
                return Err(ClientError::Malformed {
                    problem: format!("a line over {MAX_REPLY_LINE} bytes"),
                })
            }
            Some(_) => return Err(ClientError::Closed),
        }
        let text = String::from_utf8(line).map_err(|_| ClientError::Malformed {
            problem: "not UTF-8".to_owned(),
        })?;
        Answer::parse(&text).map_err(|err| ClientError::Malformed {
            problem: err.to_string(),
        })
    }

    /// Sends one line and reads its reply.
    pub fn command(&mut self, line: &str) -> Result<Answer, ClientError> {
        self.send_line(line)?;
        self.read_answer()
    }
}
