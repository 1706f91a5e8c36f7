//! The kernel side of a local stream socket (a SOCKS client's connection, a launched app's
//! connection to the app socket) while it is not relaying: what has been read of its
//! handshake, the replies not yet written, whether it can be read or written, and how it
//! ended. Its owner parses the handshake and chooses what the stream is for next; once it
//! relays, a [`Relay`] takes the bytes read past the handshake and the replies not yet written.

use std::io;
use std::time::{Duration, Instant};

use crate::service::{SocketEvent, SocketId};
use crate::socks::relay::{KernelIo, KernelOp, Relay};

/// How long a stream that was answered for the last time waits for its peer to close before it
/// is closed anyway.
const LINGER: Duration = Duration::from_secs(2);

/// What the owner wants of the stream now, besides writing what is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing more.
    Output,
    /// The handshake's bytes, as far as the input holds them.
    Handshake,
    /// To see the stream end: what arrives is read and dropped.
    Drain,
    /// The last reply out, then a FIN, then the peer's close (what arrives is dropped).
    Finish,
}

/// One local stream's kernel side. The socket itself is the driver's.
#[derive(Debug)]
pub struct LocalStream {
    socket: SocketId,
    readable: bool,
    writable: bool,
    /// The peer closed its side: nothing more will be read.
    read_closed: bool,
    /// The FIN was sent (or could not be): nothing more is written.
    shut: bool,
    /// A read or a write failed: the stream is over.
    broken: bool,
    /// The handshake read so far, and after it the first bytes for the relay.
    input: Box<[u8]>,
    filled: usize,
    /// Bytes for the peer not yet written.
    output: Vec<u8>,
    /// When the handshake, what follows it, or the linger runs out (the owner sets it).
    pub deadline: Instant,
}

impl LocalStream {
    /// A stream that reads a handshake of up to `input_len` bytes by `deadline`.
    pub fn new(socket: SocketId, input_len: usize, deadline: Instant) -> LocalStream {
        LocalStream {
            socket,
            readable: true,
            writable: true,
            read_closed: false,
            shut: false,
            broken: false,
            input: vec![0; input_len].into_boxed_slice(),
            filled: 0,
            output: Vec::new(),
            deadline,
        }
    }

    // ----- getters -----

    /// The kernel socket, by the driver's id.
    pub fn socket(&self) -> SocketId {
        self.socket
    }

    /// A read or a write failed.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The peer closed its side.
    pub fn is_read_closed(&self) -> bool {
        self.read_closed
    }

    /// Whether the peer may still send handshake bytes.
    pub fn is_open(&self) -> bool {
        !self.read_closed && !self.broken
    }

    /// What has been read and not consumed.
    pub fn filled(&self) -> &[u8] {
        &self.input[..self.filled]
    }

    /// Bytes queued for the peer and not yet written.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// Whether a stream answered with [`LocalStream::finish`] is done: closed by its peer
    /// after our FIN, broken, or out of time.
    pub fn is_finished(&self, now: Instant) -> bool {
        (self.shut && self.read_closed) || self.broken || now >= self.deadline
    }

    // ----- commands -----

    /// Drops the first `count` bytes of the input (a parsed greeting, request or line).
    pub fn consume(&mut self, count: usize) {
        let count = count.min(self.filled);
        self.input.copy_within(count..self.filled, 0);
        self.filled -= count;
    }

    /// Queues `bytes` for the peer.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Queues the last reply: the owner asks [`Want::Finish`] from now on, and the stream has
    /// [`LINGER`] to see it out.
    pub fn finish(&mut self, now: Instant, reply: &[u8]) {
        self.queue(reply);
        self.deadline = now + LINGER;
    }

    /// The relay that carries the stream from here on: it first writes what is queued and
    /// then `reply`, and sends the bytes read past the handshake to the mesh side.
    pub fn relay(&mut self, now: Instant, reply: &[u8]) -> Relay {
        let mut to_kernel = std::mem::take(&mut self.output);
        to_kernel.extend_from_slice(reply);
        let to_mesh = self.filled().to_vec();
        self.filled = 0;
        Relay::new(now, to_kernel, to_mesh)
    }

    // ----- input -----

    /// How a lent operation went, or that the socket became ready.
    pub fn handle(&mut self, event: SocketEvent) {
        match event {
            SocketEvent::Readable => self.readable = true,
            SocketEvent::Writable => self.writable = true,
            SocketEvent::Read(Ok(0)) => self.read_closed = true,
            SocketEvent::Read(Ok(read)) => {
                self.filled = (self.filled + read).min(self.input.len());
            }
            SocketEvent::Written(Ok(0)) => self.broken = true,
            SocketEvent::Written(Ok(written)) => {
                self.output.drain(..written.min(self.output.len()));
            }
            SocketEvent::Read(Err(error)) => match error.kind() {
                io::ErrorKind::WouldBlock => self.readable = false,
                io::ErrorKind::Interrupted => {}
                _ => self.broken = true,
            },
            SocketEvent::Written(Err(error)) => match error.kind() {
                io::ErrorKind::WouldBlock => self.writable = false,
                io::ErrorKind::Interrupted => {}
                _ => self.broken = true,
            },
            SocketEvent::Shut(_) => self.shut = true,
            SocketEvent::Listening(_) | SocketEvent::Connected(_) => {}
        }
    }

    // ----- output -----

    /// The kernel operation due next: what is queued goes out first.
    pub fn next_io(&self, want: Want) -> Option<KernelIo> {
        if self.broken {
            return None;
        }
        if self.writable && !self.output.is_empty() {
            return Some(KernelIo::Write);
        }
        let may_read = self.readable && !self.read_closed;
        match want {
            Want::Handshake if may_read && self.filled < self.input.len() => Some(KernelIo::Read),
            Want::Drain if may_read => Some(KernelIo::Read),
            Want::Finish if !self.shut && self.output.is_empty() => Some(KernelIo::Shutdown),
            Want::Finish if self.shut && may_read => Some(KernelIo::Read),
            _ => None,
        }
    }

    /// Operation `io` (from [`LocalStream::next_io`] with the same `want`) with its buffer.
    pub fn lend(&mut self, io: KernelIo, want: Want) -> KernelOp<'_> {
        match io {
            KernelIo::Write => KernelOp::Write(&self.output),
            KernelIo::Shutdown => KernelOp::Shutdown,
            KernelIo::Read => {
                if want != Want::Handshake {
                    // Read only to be dropped.
                    self.filled = 0;
                }
                KernelOp::Read(&mut self.input[self.filled..])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(now: Instant) -> LocalStream {
        LocalStream::new(SocketId(7), 8, now + Duration::from_secs(10))
    }

    /// Lends a read for `want` and has it deliver `bytes`.
    fn read(stream: &mut LocalStream, want: Want, bytes: &[u8]) {
        assert_eq!(stream.next_io(want), Some(KernelIo::Read));
        let KernelOp::Read(buf) = stream.lend(KernelIo::Read, want) else {
            panic!("a read was lent something else");
        };
        buf[..bytes.len()].copy_from_slice(bytes);
        stream.handle(SocketEvent::Read(Ok(bytes.len())));
    }

    #[test]
    fn the_handshake_fills_the_input_up_to_its_size_and_what_follows_goes_to_the_relay() {
        let now = Instant::now();
        let mut stream = stream(now);
        read(&mut stream, Want::Handshake, b"abc");
        read(&mut stream, Want::Handshake, b"defgh");
        assert_eq!(stream.filled(), b"abcdefgh");
        assert_eq!(stream.next_io(Want::Handshake), None, "the input is full");
        stream.consume(6);
        assert_eq!(stream.filled(), b"gh");
        stream.queue(b"hello ");
        let relay = stream.relay(now, b"ok\n");
        assert_eq!(stream.filled(), b"");
        assert_eq!(stream.output_len(), 0);
        assert_eq!(
            format!("{relay:?}"),
            format!(
                "{:?}",
                Relay::new(now, b"hello ok\n".to_vec(), b"gh".to_vec())
            )
        );
    }

    #[test]
    fn output_goes_first_and_a_short_write_keeps_the_rest() {
        let now = Instant::now();
        let mut stream = stream(now);
        stream.queue(b"reply");
        assert_eq!(stream.next_io(Want::Handshake), Some(KernelIo::Write));
        stream.handle(SocketEvent::Written(Ok(3)));
        let KernelOp::Write(rest) = stream.lend(KernelIo::Write, Want::Handshake) else {
            panic!("a write was lent something else");
        };
        assert_eq!(rest, b"ly");
        stream.handle(SocketEvent::Written(Err(io::ErrorKind::WouldBlock.into())));
        assert_eq!(stream.next_io(Want::Output), None, "not writable");
        stream.handle(SocketEvent::Writable);
        assert_eq!(stream.next_io(Want::Output), Some(KernelIo::Write));
        stream.handle(SocketEvent::Written(Err(io::ErrorKind::BrokenPipe.into())));
        assert!(stream.is_broken());
        assert_eq!(
            stream.next_io(Want::Output),
            None,
            "a broken stream asks nothing"
        );
    }

    #[test]
    fn a_drained_stream_drops_what_it_reads_and_sees_the_end() {
        let now = Instant::now();
        let mut stream = stream(now);
        for _ in 0..3 {
            read(&mut stream, Want::Drain, b"12345678");
        }
        assert!(stream.is_open());
        stream.handle(SocketEvent::Read(Ok(0)));
        assert!(stream.is_read_closed());
        assert_eq!(stream.next_io(Want::Drain), None);
    }

    #[test]
    fn a_finished_stream_writes_its_reply_then_a_fin_then_waits_for_the_close() {
        let now = Instant::now();
        let mut stream = stream(now);
        stream.finish(now, b"no\n");
        assert_eq!(stream.next_io(Want::Finish), Some(KernelIo::Write));
        stream.handle(SocketEvent::Written(Ok(3)));
        assert_eq!(stream.next_io(Want::Finish), Some(KernelIo::Shutdown));
        stream.handle(SocketEvent::Shut(Ok(())));
        read(&mut stream, Want::Finish, b"late");
        assert!(!stream.is_finished(now));
        assert!(stream.is_finished(now + LINGER), "the linger ran out");
        stream.handle(SocketEvent::Read(Ok(0)));
        assert!(stream.is_finished(now));
    }
}
