//! The byte pump between a kernel TCP stream and a mesh (smoltcp) TCP stream. It keeps no
//! buffer of its own: bytes are read from the kernel straight into smoltcp's send buffer and
//! written from smoltcp's receive buffer straight to the kernel, so a full buffer on one side
//! stops reading on the other (a slow reader slows the sender, through TCP windows both ways).
//! A FIN either way is passed on as a FIN; a reset, an error or idleness ends both.
//!
//! The relay never touches the kernel stream: it says which operation comes next
//! ([`Relay::next_io`]), lends the mesh socket's buffer for it ([`Relay::lend`]), and hears how
//! it went ([`Relay::handle`]).

use std::io;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use crate::service::{SocketEvent, SocketId, SocketOp};

/// How a relay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes may still flow.
    Open,
    /// Both directions ended with a FIN and everything was delivered: release both sides.
    Done,
    /// It ended badly (the reason is for the log): abort the mesh side, drop the kernel side.
    Failed(&'static str),
}

/// The kernel operation a relay wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelIo {
    /// Read into the mesh socket's send buffer.
    Read,
    /// Write what the mesh side delivered.
    Write,
    /// Pass the mesh side's FIN on.
    Shutdown,
}

/// A kernel operation with the buffer it works on, lent from the relay or its mesh socket.
#[derive(Debug)]
pub enum KernelOp<'a> {
    /// Read into this.
    Read(&'a mut [u8]),
    /// Write this.
    Write(&'a [u8]),
    /// Send a FIN.
    Shutdown,
}

impl<'a> KernelOp<'a> {
    /// This operation on kernel socket `socket`, as the driver is asked for it.
    pub fn on(self, socket: SocketId) -> SocketOp<'a> {
        match self {
            KernelOp::Read(buf) => SocketOp::Read { socket, buf },
            KernelOp::Write(bytes) => SocketOp::Write { socket, bytes },
            KernelOp::Shutdown => SocketOp::Shutdown { socket },
        }
    }
}

/// One relayed connection's state. The mesh socket is lent to each call by its owner.
#[derive(Debug)]
pub struct Relay {
    kernel_readable: bool,
    kernel_writable: bool,
    /// The kernel side sent its FIN and the mesh side was closed after it.
    kernel_finished: bool,
    /// The mesh side sent its FIN and the kernel side was shut down after it.
    mesh_finished: bool,
    /// Why it failed, once it has.
    failed: Option<&'static str>,
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
            failed: None,
            to_kernel,
            to_mesh,
            last_activity: now,
            to_mesh_bytes: 0,
            to_kernel_bytes: 0,
        }
    }

    /// When the relay counts as idle if nothing moves.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        self.last_activity + idle
    }

    /// The kernel operation due next, if any; [`Relay::lend`] gives it its buffer.
    pub fn next_io(&mut self, mesh: &mut tcp::Socket<'_>) -> Option<KernelIo> {
        if self.failed.is_some() {
            return None;
        }
        self.flush_to_mesh(mesh);
        let for_kernel = !self.to_kernel.is_empty() || mesh.can_recv();
        if self.kernel_writable && for_kernel {
            return Some(KernelIo::Write);
        }
        if !self.mesh_finished && !for_kernel && fin_received(mesh) {
            return Some(KernelIo::Shutdown);
        }
        let room = self.to_mesh.is_empty() && mesh.can_send();
        if self.kernel_readable && !self.kernel_finished && room {
            return Some(KernelIo::Read);
        }
        None
    }

    /// The operation `io` (from [`Relay::next_io`] just before) with its buffer: the next
    /// bytes for the kernel, or the free space of the mesh socket's send buffer.
    pub fn lend<'a>(&'a mut self, io: KernelIo, mesh: &'a mut tcp::Socket<'_>) -> KernelOp<'a> {
        match io {
            KernelIo::Write if !self.to_kernel.is_empty() => KernelOp::Write(&self.to_kernel),
            KernelIo::Write => KernelOp::Write(mesh.peek(usize::MAX).unwrap_or_default()),
            // Nothing is queued: the closure only lends the free space, and `handle` queues
            // what the read put there.
            KernelIo::Read => KernelOp::Read(mesh.send(|free| (0, free)).unwrap_or_default()),
            KernelIo::Shutdown => KernelOp::Shutdown,
        }
    }

    /// How a lent operation went, or that the kernel stream became ready.
    pub fn handle(&mut self, now: Instant, event: SocketEvent, mesh: &mut tcp::Socket<'_>) {
        match event {
            SocketEvent::Readable => self.kernel_readable = true,
            SocketEvent::Writable => self.kernel_writable = true,
            SocketEvent::Read(result) => self.handle_read(now, result, mesh),
            SocketEvent::Written(result) => self.handle_written(now, result, mesh),
            SocketEvent::Shut(Ok(())) => self.mesh_finished = true,
            SocketEvent::Shut(Err(_)) => self.fail("the kernel stream could not be half-closed"),
            SocketEvent::Listening(_) | SocketEvent::Connected(_) => {}
        }
    }

    fn handle_read(&mut self, now: Instant, result: io::Result<usize>, mesh: &mut tcp::Socket<'_>) {
        match result {
            Ok(0) => {
                self.kernel_finished = true;
                mesh.close();
            }
            Ok(read) => {
                let queued = mesh
                    .send(|free| {
                        let queued = read.min(free.len());
                        (queued, queued)
                    })
                    .unwrap_or(0);
                self.to_mesh_bytes += queued as u64;
                self.last_activity = now;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.kernel_readable = false;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.fail("reading from the kernel stream failed"),
        }
    }

    fn handle_written(
        &mut self,
        now: Instant,
        result: io::Result<usize>,
        mesh: &mut tcp::Socket<'_>,
    ) {
        match result {
            Ok(0) => self.fail("the kernel stream takes no more bytes"),
            Ok(written) if !self.to_kernel.is_empty() => {
                self.to_kernel.drain(..written.min(self.to_kernel.len()));
            }
            Ok(written) => {
                let taken = mesh
                    .recv(|bytes| {
                        let taken = written.min(bytes.len());
                        (taken, taken)
                    })
                    .unwrap_or(0);
                self.to_kernel_bytes += taken as u64;
                self.last_activity = now;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.kernel_writable = false;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.fail("writing to the kernel stream failed"),
        }
    }

    fn fail(&mut self, reason: &'static str) {
        self.failed.get_or_insert(reason);
    }

    /// Moves the bytes read with the handshake into the mesh socket.
    fn flush_to_mesh(&mut self, mesh: &mut tcp::Socket<'_>) {
        if !self.to_mesh.is_empty() && mesh.can_send() {
            if let Ok(sent) = mesh.send_slice(&self.to_mesh) {
                self.to_mesh.drain(..sent);
                self.to_mesh_bytes += sent as u64;
            }
        }
    }

    /// How the relay stands now.
    pub fn progress(
        &mut self,
        now: Instant,
        idle: Duration,
        mesh: &mut tcp::Socket<'_>,
    ) -> Progress {
        if let Some(reason) = self.failed {
            return Progress::Failed(reason);
        }
        let state = mesh.state();
        if self.kernel_finished && self.mesh_finished {
            if mesh.send_queue() == 0 && matches!(state, tcp::State::Closed | tcp::State::TimeWait)
            {
                return Progress::Done;
            }
        } else if state == tcp::State::Closed {
            // Closed after both FINs, the stream may still hold bytes for the kernel side, and
            // its FIN is only seen once they are read; closed otherwise, it was reset (or
            // timed out) and nothing more will come.
            let closed_well = self.kernel_finished && (mesh.can_recv() || fin_received(mesh));
            if !closed_well {
                return Progress::Failed("the mesh stream was reset");
            }
        }
        if now >= self.idle_deadline(idle) {
            return Progress::Failed("idle for too long");
        }
        Progress::Open
    }
}

/// Whether the mesh side's FIN has arrived and every byte before it was read. smoltcp says so
/// in every state the FIN can leave the socket in, Closed included.
fn fin_received(mesh: &mut tcp::Socket<'_>) -> bool {
    !mesh.can_recv() && matches!(mesh.recv(|_| (0, ())), Err(tcp::RecvError::Finished))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use crate::stack::tests::exchange;
    use std::collections::VecDeque;
    use std::net::{Ipv6Addr, SocketAddrV6};

    use super::*;
    use crate::stack::{MeshStack, TcpHandle, TCP_BUFFER};

    /// A kernel stream in memory: what the local program sends, what it has received, and
    /// how much it is willing to take.
    #[derive(Default)]
    pub(crate) struct FakeStream {
        pub incoming: VecDeque<u8>,
        pub eof: bool,
        pub received: Vec<u8>,
        pub room: usize,
        pub shut: bool,
    }

    impl FakeStream {
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

        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let len = buf.len().min(self.room);
            self.room -= len;
            self.received.extend_from_slice(&buf[..len]);
            Ok(len)
        }
    }

    /// Does what the relay asks of the kernel side until it asks nothing, as a driver would,
    /// then says how it stands.
    fn pump(
        relay: &mut Relay,
        now: Instant,
        kernel: &mut FakeStream,
        mesh: &mut tcp::Socket<'_>,
    ) -> Progress {
        for _ in 0..10_000 {
            let Some(io) = relay.next_io(mesh) else {
                break;
            };
            let event = match relay.lend(io, mesh) {
                KernelOp::Read(buf) => SocketEvent::Read(kernel.read(buf)),
                KernelOp::Write(bytes) => SocketEvent::Written(kernel.write(bytes)),
                KernelOp::Shutdown => {
                    kernel.shut = true;
                    SocketEvent::Shut(Ok(()))
                }
            };
            relay.handle(now, event, mesh);
        }
        relay.progress(now, IDLE, mesh)
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
        b.listen(9, 1, crate::stack::Admission::any()).unwrap();
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
            let progress = pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
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
        relay.handle(pair.now, SocketEvent::Writable, pair.a.tcp(pair.a_tcp));
        for _ in 0..50 {
            pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
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
        pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
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
            progress = pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
            exchange(&mut pair.a, &mut pair.b, pair.now);
        }
        assert_eq!(kernel.received, b"hello response");
        assert!(kernel.shut);
        assert_eq!(progress, Progress::Done);
        assert_eq!((relay.to_mesh_bytes, relay.to_kernel_bytes), (7, 8));
    }

    /// The mesh side's FIN arrives while its last bytes wait for a kernel reader that takes
    /// nothing; the local program half-closes, so the mesh stream closes (LAST-ACK, then
    /// CLOSED) before the relay has written those bytes. It is a clean end all the same.
    #[test]
    fn a_stream_closed_before_its_fin_was_passed_on_ends_cleanly() {
        let mut pair = connected_pair();
        let mut kernel = FakeStream::default();
        let mut relay = Relay::new(pair.now, Vec::new(), Vec::new());
        pair.b.tcp(pair.b_tcp).send_slice(b"response").unwrap();
        pair.b.tcp(pair.b_tcp).close();
        exchange(&mut pair.a, &mut pair.b, pair.now);
        assert_eq!(pair.a.tcp(pair.a_tcp).state(), tcp::State::CloseWait);
        kernel.incoming.extend(b"request".iter());
        kernel.eof = true;
        let progress = pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
        assert_eq!(progress, Progress::Open);
        exchange(&mut pair.a, &mut pair.b, pair.now);
        assert_eq!(pair.a.tcp(pair.a_tcp).state(), tcp::State::Closed);
        assert!(pair.a.tcp(pair.a_tcp).can_recv(), "the bytes wait");
        let progress = pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
        assert_eq!(progress, Progress::Open, "the reader has not read yet");
        kernel.room = usize::MAX;
        relay.handle(pair.now, SocketEvent::Writable, pair.a.tcp(pair.a_tcp));
        let progress = pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp));
        assert_eq!(kernel.received, b"response");
        assert!(kernel.shut, "the FIN was passed on");
        assert_eq!(progress, Progress::Done);
        let mut buf = [0u8; 16];
        let len = pair.b.tcp(pair.b_tcp).recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"request");
    }

    #[test]
    fn a_reset_or_idleness_fails_the_relay() {
        let mut pair = connected_pair();
        let mut kernel = FakeStream::default();
        let mut relay = Relay::new(pair.now, Vec::new(), Vec::new());
        let later = pair.now + IDLE;
        assert_eq!(
            relay.progress(later, IDLE, pair.a.tcp(pair.a_tcp)),
            Progress::Failed("idle for too long")
        );
        pair.b.tcp(pair.b_tcp).abort();
        exchange(&mut pair.a, &mut pair.b, pair.now);
        assert_eq!(
            pump(&mut relay, pair.now, &mut kernel, pair.a.tcp(pair.a_tcp)),
            Progress::Failed("the mesh stream was reset")
        );
    }

    #[test]
    fn kernel_errors_fail_the_relay() {
        let mut pair = connected_pair();
        let mut relay = Relay::new(pair.now, Vec::new(), Vec::new());
        let mesh = pair.a.tcp(pair.a_tcp);
        relay.handle(
            pair.now,
            SocketEvent::Read(Err(io::ErrorKind::ConnectionReset.into())),
            mesh,
        );
        assert_eq!(
            relay.progress(pair.now, IDLE, mesh),
            Progress::Failed("reading from the kernel stream failed")
        );
        assert_eq!(relay.next_io(mesh), None, "a failed relay asks nothing");
    }
}
