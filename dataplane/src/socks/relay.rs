//! The byte pump between a kernel TCP stream and a mesh (smoltcp) TCP stream. It keeps no
//! buffer of its own: bytes are read from the kernel straight into smoltcp's send buffer and
//! written from smoltcp's receive buffer straight to the kernel, so a full buffer on one side
//! stops reading on the other (a slow reader slows the sender, through TCP windows both ways).
//! A FIN either way is passed on as a FIN; a reset, an error or idleness ends both.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

/// The kernel side of a relay: a stream that can be half-closed.
pub trait KernelStream: Read + Write {
    /// Sends a FIN: nothing more will be written.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl KernelStream for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// How a relay stands after a pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes may still flow.
    Open,
    /// Both directions ended with a FIN and everything was delivered: release both sides.
    Done,
    /// It ended badly (the reason is for the log): abort the mesh side, drop the kernel side.
    Failed(&'static str),
}

/// One relayed connection's state. The kernel stream and the mesh socket are lent to each
/// [`Relay::pump`] by their owner.
#[derive(Debug)]
pub struct Relay {
    kernel_readable: bool,
    kernel_writable: bool,
    /// The kernel side sent its FIN and the mesh side was closed after it.
    kernel_finished: bool,
    /// The mesh side sent its FIN and the kernel side was shut down after it.
    mesh_finished: bool,
    /// Bytes still to go to the kernel before anything from the mesh (a handshake's reply).
    to_kernel: Vec<u8>,
    /// Bytes still to go to the mesh before anything from the kernel (read with a handshake).
    to_mesh: Vec<u8>,
    last_activity: Instant,
    /// Bytes carried from the kernel side to the mesh side.
    pub to_mesh_bytes: u64,
    /// Bytes carried from the mesh side to the kernel side.
    pub to_kernel_bytes: u64,
}

impl Relay {
    /// A relay that first writes `to_kernel` to the kernel side and `to_mesh` to the mesh side.
    pub fn new(now: Instant, to_kernel: Vec<u8>, to_mesh: Vec<u8>) -> Relay {
        Relay {
            kernel_readable: true,
            kernel_writable: true,
            kernel_finished: false,
            mesh_finished: false,
            to_kernel,
            to_mesh,
            last_activity: now,
            to_mesh_bytes: 0,
            to_kernel_bytes: 0,
        }
    }

    /// The kernel stream became readable (or hung up: reading finds out).
    pub fn set_readable(&mut self) {
        self.kernel_readable = true;
    }

    /// The kernel stream became writable.
    pub fn set_writable(&mut self) {
        self.kernel_writable = true;
    }

    /// When the relay counts as idle if nothing moves.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        self.last_activity + idle
    }

    /// Moves what can move both ways, passes FINs on, and says how the relay stands.
    pub fn pump<S: KernelStream>(
        &mut self,
        now: Instant,
        idle: Duration,
        kernel: &mut S,
        mesh: &mut tcp::Socket<'_>,
    ) -> Progress {
        let before = self.to_mesh_bytes + self.to_kernel_bytes;
        let result = self.mesh_to_kernel(kernel, mesh).and_then(|()| {
            self.kernel_to_mesh(kernel, mesh)?;
            Ok(())
        });
        if self.to_mesh_bytes + self.to_kernel_bytes != before {
            self.last_activity = now;
        }
        if let Err(reason) = result {
            return Progress::Failed(reason);
        }
        let state = mesh.state();
        if self.kernel_finished && self.mesh_finished {
            if mesh.send_queue() == 0 && matches!(state, tcp::State::Closed | tcp::State::TimeWait)
            {
                return Progress::Done;
            }
        } else if state == tcp::State::Closed {
            return Progress::Failed("the mesh stream was reset");
        }
        if now >= self.idle_deadline(idle) {
            return Progress::Failed("idle for too long");
        }
        Progress::Open
    }

    fn mesh_to_kernel<S: KernelStream>(
        &mut self,
        kernel: &mut S,
        mesh: &mut tcp::Socket<'_>,
    ) -> Result<(), &'static str> {
        while self.kernel_writable && !self.to_kernel.is_empty() {
            match kernel.write(&self.to_kernel) {
                Ok(0) => return Err("the kernel stream takes no more bytes"),
                Ok(written) => {
                    self.to_kernel.drain(..written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.kernel_writable = false;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err("writing to the kernel stream failed"),
            }
        }
        if !self.to_kernel.is_empty() {
            return Ok(());
        }
        while self.kernel_writable && mesh.can_recv() {
            let outcome = mesh.recv(|buf| match kernel.write(buf) {
                Ok(written) => (written, Ok(written)),
                Err(error) => (0, Err(error)),
            });
            match outcome {
                Ok(Ok(0)) => return Err("the kernel stream takes no more bytes"),
                Ok(Ok(written)) => self.to_kernel_bytes += written as u64,
                Ok(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.kernel_writable = false;
                }
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Err("writing to the kernel stream failed"),
                Err(_) => break,
            }
        }
        if !self.mesh_finished && !mesh.may_recv() && mesh.recv_queue() == 0 {
            let state = mesh.state();
            // A FIN leaves these states; a reset or a timeout leaves Closed.
            let fin = matches!(
                state,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            if fin {
                self.mesh_finished = true;
                if kernel.shutdown_write().is_err() {
                    return Err("the kernel stream could not be half-closed");
                }
            }
        }
        Ok(())
    }

    fn kernel_to_mesh<S: KernelStream>(
        &mut self,
        kernel: &mut S,
        mesh: &mut tcp::Socket<'_>,
    ) -> Result<(), &'static str> {
        while !self.to_mesh.is_empty() && mesh.can_send() {
            match mesh.send_slice(&self.to_mesh) {
                Ok(sent) => {
                    self.to_mesh.drain(..sent);
                    self.to_mesh_bytes += sent as u64;
                }
                Err(_) => break,
            }
        }
        if !self.to_mesh.is_empty() {
            return Ok(());
        }
        while self.kernel_readable && !self.kernel_finished && mesh.can_send() {
            let outcome = mesh.send(|buf| match kernel.read(buf) {
                Ok(read) => (read, Ok(read)),
                Err(error) => (0, Err(error)),
            });
            match outcome {
                Ok(Ok(0)) => {
                    self.kernel_finished = true;
                    mesh.close();
                }
                Ok(Ok(read)) => self.to_mesh_bytes += read as u64,
                Ok(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.kernel_readable = false;
                }
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Err("reading from the kernel stream failed"),
                Err(_) => break,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::stack::tests::exchange;
    use std::collections::VecDeque;
    use std::net::{Ipv6Addr, SocketAddrV6};

    use super::*;
    use crate::stack::{MeshStack, TcpHandle, TCP_BUFFER};

    /// A kernel stream in memory: what the local program sends, what it has received, and
    /// how much it is willing to take.
    #[derive(Default)]
    struct FakeStream {
        incoming: VecDeque<u8>,
        eof: bool,
        received: Vec<u8>,
        room: usize,
        shut: bool,
    }

    impl Read for FakeStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.incoming.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let len = buf.len().min(self.incoming.len());
            for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..len)) {
                *slot = byte;
            }
            Ok(len)
        }
    }

    impl Write for FakeStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let len = buf.len().min(self.room);
            self.room -= len;
            self.received.extend_from_slice(&buf[..len]);
            Ok(len)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl KernelStream for FakeStream {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
    }

    struct Pair {
        a: MeshStack,
        b: MeshStack,
        a_tcp: TcpHandle,
        b_tcp: TcpHandle,
        now: Instant,
    }

    fn connected_pair() -> Pair {
        let now = Instant::now();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new("fd00::a".parse().unwrap(), 1, now);
        let mut b = MeshStack::new(b_addr, 2, now);
        b.listen(9, 1).unwrap();
        let a_tcp = a.connect(SocketAddrV6::new(b_addr, 9, 0, 0)).unwrap();
        exchange(&mut a, &mut b, now);
        let (_, b_tcp, _) = b.poll_accept().unwrap();
        Pair {
            a,
            b,
            a_tcp,
            b_tcp,
            now,
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_slow_reader_stops_the_relay_from_reading_and_buffers_stay_bounded() {
        let mut pair = connected_pair();
        let mut kernel = FakeStream::default();
        let mut relay = Relay::new(pair.now, Vec::new(), Vec::new());
        // The far end writes far more than the buffers hold; the local reader takes nothing.
        let mut far_sent = 0usize;
        for _ in 0..50 {
            while let Ok(sent) = pair.b.tcp(pair.b_tcp).send_slice(&[7u8; 65536]) {
                if sent == 0 {
                    break;
                }
                far_sent += sent;
            }
            exchange(&mut pair.a, &mut pair.b, pair.now);
            let progress = relay.pump(pair.now, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp));
            assert_eq!(progress, Progress::Open);
        }
        let buffered = pair.a.tcp(pair.a_tcp).recv_queue();
        assert!(buffered <= TCP_BUFFER, "{buffered}");
        assert!(
            far_sent <= 2 * TCP_BUFFER + 65536,
            "the sender was held back: {far_sent}"
        );
        assert!(kernel.received.is_empty());
        // Once the reader reads, everything arrives.
        kernel.room = usize::MAX;
        relay.set_writable();
        for _ in 0..50 {
            relay.pump(pair.now, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp));
            exchange(&mut pair.a, &mut pair.b, pair.now);
        }
        assert_eq!(kernel.received.len(), far_sent);
    }

    #[test]
    fn half_close_passes_through_and_the_other_direction_goes_on() {
        let mut pair = connected_pair();
        let mut kernel = FakeStream {
            room: usize::MAX,
            ..FakeStream::default()
        };
        kernel.incoming.extend(b"request".iter());
        kernel.eof = true;
        let mut relay = Relay::new(pair.now, b"hello ".to_vec(), Vec::new());
        relay.pump(pair.now, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp));
        exchange(&mut pair.a, &mut pair.b, pair.now);
        let mut buf = [0u8; 64];
        let len = pair.b.tcp(pair.b_tcp).recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"request");
        assert!(!pair.b.tcp(pair.b_tcp).may_recv(), "the FIN went through");
        // The other direction still carries data after the half-close, then its own FIN.
        pair.b.tcp(pair.b_tcp).send_slice(b"response").unwrap();
        pair.b.tcp(pair.b_tcp).close();
        exchange(&mut pair.a, &mut pair.b, pair.now);
        let mut progress = Progress::Open;
        for _ in 0..4 {
            progress = relay.pump(pair.now, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp));
            exchange(&mut pair.a, &mut pair.b, pair.now);
        }
        assert_eq!(kernel.received, b"hello response");
        assert!(kernel.shut);
        assert_eq!(progress, Progress::Done);
        assert_eq!((relay.to_mesh_bytes, relay.to_kernel_bytes), (7, 8));
    }

    #[test]
    fn a_reset_or_idleness_fails_the_relay() {
        let mut pair = connected_pair();
        let mut kernel = FakeStream::default();
        let mut relay = Relay::new(pair.now, Vec::new(), Vec::new());
        let later = pair.now + IDLE;
        assert_eq!(
            relay.pump(later, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp)),
            Progress::Failed("idle for too long")
        );
        pair.b.tcp(pair.b_tcp).abort();
        exchange(&mut pair.a, &mut pair.b, pair.now);
        assert_eq!(
            relay.pump(pair.now, IDLE, &mut kernel, pair.a.tcp(pair.a_tcp)),
            Progress::Failed("the mesh stream was reset")
        );
    }
}
