//! A test's raw connection to a control socket: bytes out as they are (bad ones included),
//! reply lines in, each checked to be one JSON object on one line. Tests of every crate include
//! this file, so it uses only std and serde_json.

#![allow(dead_code)]

use std::io::{self, BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long a read waits for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One connection to a control socket.
#[derive(Debug)]
pub struct ControlSocket {
    reader: BufReader<UnixStream>,
}

impl ControlSocket {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> ControlSocket {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|err| panic!("cannot connect to {}: {err}", path.display()));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        ControlSocket {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.reader.get_mut().write_all(bytes.as_ref()).unwrap();
    }

    /// The next reply line.
    pub fn answer(&mut self) -> Value {
        let mut line = String::new();
        let count = self.reader.read_line(&mut line).unwrap();
        assert!(count > 0, "the server closed the connection");
        assert!(line.ends_with('\n'), "{line:?}");
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        assert!(value.is_object(), "{line}");
        value
    }

    /// Sends `bytes`, which the server may refuse by hanging up.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes.as_ref())
    }

    /// Ends what this client sends; its replies still come.
    pub fn shutdown_write(&mut self) {
        self.reader.get_ref().shutdown(Shutdown::Write).unwrap();
    }

    /// How many reply lines arrive before the server closes (or resets) the connection.
    pub fn lines_until_closed(&mut self) -> usize {
        let mut count = 0;
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return count,
                Ok(_) => count += 1,
                Err(err) if err.kind() == ErrorKind::ConnectionReset => return count,
                Err(err) => panic!("{err} after {count} lines"),
            }
        }
    }

    /// Sends one line and reads its reply.
    pub fn command(&mut self, line: &str) -> Value {
        self.send(format!("{line}\n"));
        self.answer()
    }

    /// Whether the server closed the connection (after whatever it sent before).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(err) => err.kind() == ErrorKind::ConnectionReset,
        }
    }
}
