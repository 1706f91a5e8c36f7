//! The node's own IP stack on its mesh address: smoltcp, fed with the inner packets that route
//! sessions decrypted, and handing back the packets it wants carried. It answers pings
//! (ICMPv6 echo) and sends this node's own; sans-IO like the rest of the core. Each listening
//! port has an [`Admission`] policy that every SYN is checked against before a socket is made
//! for it: a refused SYN is answered with a reset and counted, and costs no socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpProtocol, Ipv6Address,
    Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::identity::NodeKey;
use crate::node::INNER_MTU;

/// Packets waiting either way; beyond this the stack drops (a peer cannot make it hoard).
const QUEUE_LIMIT: usize = 256;
/// The ICMP socket's buffers: room for a burst of echo replies.
const ICMP_BUFFER: usize = 16 * 1024;
const ICMP_PACKETS: usize = 32;
/// The data an echo request carries.
const PING_PAYLOAD: &[u8] = b"skywire mesh ping";
/// The largest receive and send buffer a TCP socket gets. Window scaling follows the receive
/// buffer, so this bounds a connection's throughput (window / round trip) and its memory.
/// Through a relay, on two shared cores, the round trip is about 6 ms, and 1 MiB held a SOCKS
/// download to 175 MB/s; 4 MiB gives 192 MB/s, and the node's 8 MiB UDP buffers still take a
/// window's burst (16 MiB overran them).
pub const TCP_BUFFER: usize = 4 * 1024 * 1024;
/// The smallest: what each socket gets once [`TCP_MEMORY`] runs short.
pub const TCP_BUFFER_MIN: usize = 64 * 1024;
/// TCP sockets at most, listening ones included.
pub const MAX_TCP_SOCKETS: usize = 1024;
/// All TCP sockets' buffers together, both ways, at most. A new socket gets the largest
/// buffers (from [`TCP_BUFFER`] halving down to [`TCP_BUFFER_MIN`]) that leave every socket
/// still allowed its smallest ones.
pub const TCP_MEMORY: usize = 256 * 1024 * 1024;
/// Half-open streams one peer may have on a port at once, unless its policy says otherwise.
pub const HALF_OPEN_PER_PEER: usize = 64;
/// First local port of outgoing connections.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// A TCP connection of the mesh stack.
pub type TcpHandle = SocketHandle;

/// Why the stack could not open a TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    /// Every socket the stack allows is in use.
    #[error("too many mesh TCP connections (at most {MAX_TCP_SOCKETS})")]
    TooManySockets,
    /// smoltcp refused the endpoint.
    #[error("bad mesh TCP endpoint")]
    BadEndpoint,
    /// Every local port for outgoing connections is taken by a connection still open.
    #[error("every mesh TCP port for outgoing connections ({}-{}) is in use: close some connections", EPHEMERAL_PORTS.start(), EPHEMERAL_PORTS.end())]
    NoFreePort,
}

/// Who may open streams to a listening port, and how many at once. Every SYN is checked
/// against it before a socket is made for it; the packet's source was already checked to be
/// the peer whose route delivered it, so its mesh address names the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The peers admitted, by mesh address; `None` admits any peer with a route.
    peers: Option<HashSet<Ipv6Addr>>,
    /// Streams on the port at once, half-open ones included.
    max_streams: usize,
    /// Streams one peer may hold on the port at once, half-open ones included.
    max_streams_per_peer: usize,
    /// Half-open streams one peer may have on the port at once.
    max_half_open_per_peer: usize,
}

impl Admission {
    /// Any peer with a route, within the stack's own limits.
    pub fn any() -> Admission {
        Admission {
            peers: None,
            max_streams: MAX_TCP_SOCKETS,
            max_streams_per_peer: MAX_TCP_SOCKETS,
            max_half_open_per_peer: HALF_OPEN_PER_PEER,
        }
    }

    /// Only the peers with these keys.
    pub fn keys<'a>(keys: impl IntoIterator<Item = &'a NodeKey>) -> Admission {
        Admission {
            peers: Some(keys.into_iter().map(NodeKey::mesh_address).collect()),
            ..Admission::any()
        }
    }

    /// At most `streams` streams on the port at once, `per_peer` of them from one peer.
    pub fn limit(self, streams: usize, per_peer: usize) -> Admission {
        Admission {
            max_streams: streams.max(1),
            max_streams_per_peer: per_peer.max(1),
            ..self
        }
    }

    /// At most `half_open` streams of one peer half-open at once.
    pub fn half_open_per_peer(self, half_open: usize) -> Admission {
        Admission {
            max_half_open_per_peer: half_open.max(1),
            ..self
        }
    }

    fn admits(&self, peer: &Ipv6Addr) -> bool {
        self.peers.as_ref().is_none_or(|peers| peers.contains(peer))
    }
}

/// Why a SYN to a listening port was refused: it was answered with a reset, and no socket
/// was made for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynRefusal {
    /// The port's policy does not admit the peer.
    NotAdmitted,
    /// The peer has as many half-open streams on the port as it may.
    PeerHalfOpen,
    /// The peer holds as many streams on the port as it may.
    PeerStreams,
    /// The port holds as many streams as it may.
    ListenerFull,
    /// Every socket the stack allows is in use.
    NoSocket,
}

/// SYNs refused before any socket was made for them, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SynRefusals {
    /// From peers the port's policy does not admit.
    pub not_admitted: u64,
    /// From peers with as many half-open streams as they may have.
    pub peer_half_open: u64,
    /// From peers holding as many streams as they may.
    pub peer_streams: u64,
    /// To ports holding as many streams as they may.
    pub listener_full: u64,
    /// While every socket the stack allows was in use.
    pub no_socket: u64,
}

impl SynRefusals {
    fn count(&mut self, refusal: SynRefusal) {
        let counter = match refusal {
            SynRefusal::NotAdmitted => &mut self.not_admitted,
            SynRefusal::PeerHalfOpen => &mut self.peer_half_open,
            SynRefusal::PeerStreams => &mut self.peer_streams,
            SynRefusal::ListenerFull => &mut self.listener_full,
            SynRefusal::NoSocket => &mut self.no_socket,
        };
        *counter += 1;
    }

    /// All refused SYNs.
    pub fn total(&self) -> u64 {
        self.not_admitted
            + self.peer_half_open
            + self.peer_streams
            + self.listener_full
            + self.no_socket
    }
}

/// A listening port.
#[derive(Debug)]
struct Listener {
    admission: Admission,
    /// Listening sockets kept ready.
    backlog: usize,
    /// Its sockets not yet accepted: listening, or opened by a SYN.
    sockets: Vec<TcpHandle>,
    /// Admitted SYNs to it queued since the last poll, by sender: each needs a socket.
    queued_syns: HashMap<Ipv6Addr, usize>,
}

/// What a SYN says about the stream it opens.
#[derive(Debug, Clone, Copy)]
struct Syn {
    from: SocketAddrV6,
    to: SocketAddrV6,
    /// The acknowledgement number a reset must carry.
    ack: TcpSeqNumber,
}

/// A device that is two queues: what routes delivered, and what the stack sends. Both reuse
/// their buffers: a received packet's goes, once smoltcp has read it, to whoever hands in the
/// next packet; a sent packet's is reused once the packet was carried (these keep the length
/// they grew to: smoltcp writes every byte of a packet it sends). A packet costs no
/// allocation, no copy on the way in and no zeroing.
#[derive(Debug, Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    /// Buffers of packets smoltcp has read, given in exchange for the next ones.
    rx_free: Vec<Vec<u8>>,
    /// Packets to send: a buffer, and how much of it the packet is.
    tx: VecDeque<(Vec<u8>, usize)>,
    free: Vec<Vec<u8>>,
    /// The buffer of the packet [`MeshStack::poll_transmit`] handed out last.
    lent: Option<Vec<u8>>,
}

struct RxToken<'a> {
    packet: Vec<u8>,
    free: &'a mut Vec<Vec<u8>>,
}
struct TxToken<'a> {
    tx: &'a mut VecDeque<(Vec<u8>, usize)>,
    free: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        self.free.push(self.packet);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.free.pop().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let result = f(&mut buf[..len]);
        if self.tx.len() < QUEUE_LIMIT {
            self.tx.push_back((buf, len));
        } else {
            self.free.push(buf);
        }
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // With the send queue full, an answer would be dropped: leave the packet for later.
        if self.tx.len() >= QUEUE_LIMIT {
            return None;
        }
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                free: &mut self.rx_free,
            },
            TxToken {
                tx: &mut self.tx,
                free: &mut self.free,
            },
        ))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        // None stops smoltcp sending until the queue is drained, instead of dropping.
        (self.tx.len() < QUEUE_LIMIT).then_some(TxToken {
            tx: &mut self.tx,
            free: &mut self.free,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = INNER_MTU;
        // The route session's AEAD already authenticates every byte between the two stacks:
        // a TCP checksum would only cost a pass over the data at each end.
        capabilities.checksum.tcp = Checksum::None;
        capabilities
    }
}

/// The mesh stack.
pub struct MeshStack {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    icmp: SocketHandle,
    ident: u16,
    epoch: Instant,
    /// The listening ports.
    listeners: HashMap<u16, Listener>,
    /// Streams accepted on a listening port and not yet released: the port and the peer.
    accepted: HashMap<TcpHandle, (u16, Ipv6Addr)>,
    syn_refusals: SynRefusals,
    /// The same by port, kept when a port stops listening.
    port_syn_refusals: HashMap<u16, SynRefusals>,
    tcp_sockets: usize,
    /// The most TCP sockets open at once so far.
    tcp_sockets_peak: usize,
    /// The TCP sockets' buffers together, both ways.
    tcp_buffer_bytes: usize,
    next_port: u16,
}

impl std::fmt::Debug for MeshStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshStack").finish_non_exhaustive()
    }
}

impl MeshStack {
    /// A stack on `address`. `ident` tells this node's echo requests from others'.
    pub fn new(address: Ipv6Addr, ident: u16, now: Instant) -> MeshStack {
        let mut device = QueueDevice::default();
        let epoch = now;
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            SmolInstant::ZERO,
        );
        iface.update_ip_addrs(|addrs| {
            // The /8 covers every mesh address, so smoltcp needs no routes or neighbours.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(address), 8));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; ICMP_PACKETS],
                vec![0; ICMP_BUFFER],
            ),
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; ICMP_PACKETS],
                vec![0; ICMP_BUFFER],
            ),
        );
        // Binding by ident takes only replies to this node's own requests; smoltcp answers
        // others' requests itself (auto-icmp-echo-reply).
        let _ = socket.bind(icmp::Endpoint::Ident(ident));
        let icmp = sockets.add(socket);
        MeshStack {
            iface,
            device,
            sockets,
            icmp,
            ident,
            epoch,
            listeners: HashMap::new(),
            accepted: HashMap::new(),
            syn_refusals: SynRefusals::default(),
            port_syn_refusals: HashMap::new(),
            tcp_sockets: 0,
            tcp_sockets_peak: 0,
            tcp_buffer_bytes: 0,
            next_port: *EPHEMERAL_PORTS.start(),
        }
    }

    fn new_tcp_socket(&mut self) -> Result<tcp::Socket<'static>, StackError> {
        if self.tcp_sockets >= MAX_TCP_SOCKETS {
            return Err(StackError::TooManySockets);
        }
        let size = self.tcp_buffer_size();
        // Zeroed memory is only made resident by the kernel as data goes through it.
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        self.tcp_buffer_bytes += 2 * size;
        // The default 10 ms delayed ACK stalls slow start on a fast path.
        socket.set_ack_delay(None);
        socket.set_nagle_enabled(false);
        self.tcp_sockets += 1;
        self.tcp_sockets_peak = self.tcp_sockets_peak.max(self.tcp_sockets);
        Ok(socket)
    }

    /// The buffer size for a new TCP socket: the largest that leaves the sockets still to come
    /// their smallest buffers within [`TCP_MEMORY`].
    fn tcp_buffer_size(&self) -> usize {
        let reserved = (MAX_TCP_SOCKETS - self.tcp_sockets - 1) * 2 * TCP_BUFFER_MIN;
        let available = TCP_MEMORY.saturating_sub(self.tcp_buffer_bytes + reserved);
        let mut size = TCP_BUFFER;
        while size > TCP_BUFFER_MIN && 2 * size > available {
            size /= 2;
        }
        size
    }

    // ----- getters -----

    /// TCP sockets open now, listening ones included.
    pub fn tcp_sockets(&self) -> usize {
        self.tcp_sockets
    }

    /// The most TCP sockets open at once so far.
    pub fn tcp_sockets_peak(&self) -> usize {
        self.tcp_sockets_peak
    }

    /// SYNs refused before any socket was made for them.
    pub fn syn_refusals(&self) -> SynRefusals {
        self.syn_refusals
    }

    /// SYNs to `port` refused before any socket was made for them.
    pub fn syn_refusals_on(&self, port: u16) -> SynRefusals {
        self.port_syn_refusals
            .get(&port)
            .copied()
            .unwrap_or_default()
    }

    // ----- listening -----

    /// Accepts connections to `port` from the peers `admission` admits, keeping `backlog`
    /// sockets listening.
    pub fn listen(
        &mut self,
        port: u16,
        backlog: usize,
        admission: Admission,
    ) -> Result<(), StackError> {
        let listener = self.listeners.entry(port).or_insert_with(|| Listener {
            admission: admission.clone(),
            backlog: 1,
            sockets: Vec::new(),
            queued_syns: HashMap::new(),
        });
        listener.admission = admission;
        listener.backlog = backlog.max(1);
        self.refill_listeners(port)
    }

    /// Stops accepting on `port`; connections already accepted go on.
    pub fn unlisten(&mut self, port: u16) {
        let Some(listener) = self.listeners.remove(&port) else {
            return;
        };
        for handle in listener.sockets {
            self.release(handle);
        }
    }

    /// Keeps `port`'s backlog of listening sockets, and one for each SYN on its way in:
    /// smoltcp resets a SYN that finds no listener, so a burst of connections needs as many.
    /// Listeners left over (a SYN that was a retransmission) go once the SYNs are processed.
    fn refill_listeners(&mut self, port: u16) -> Result<(), StackError> {
        let Some(listener) = self.listeners.get_mut(&port) else {
            return Ok(());
        };
        let syns: usize = listener.queued_syns.values().sum();
        let wanted = listener.backlog + syns;
        let handles = std::mem::take(&mut listener.sockets);
        let (idle, mut kept): (Vec<_>, Vec<_>) = handles.into_iter().partition(|handle| {
            self.sockets.get::<tcp::Socket>(*handle).state() == tcp::State::Listen
        });
        let mut listening = 0;
        for handle in idle {
            if syns == 0 && listening >= wanted {
                self.release(handle);
            } else {
                kept.push(handle);
                listening += 1;
            }
        }
        let mut result = Ok(());
        while listening < wanted {
            let mut socket = match self.new_tcp_socket() {
                Ok(socket) => socket,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            };
            if socket.listen(port).is_err() {
                self.forget_tcp_socket(&socket);
                result = Err(StackError::BadEndpoint);
                break;
            }
            kept.push(self.sockets.add(socket));
            listening += 1;
        }
        if let Some(listener) = self.listeners.get_mut(&port) {
            listener.sockets = kept;
        }
        result
    }

    /// Checks a SYN against its port's policy; when admitted, a socket is ready for it. `None`
    /// for a SYN to a port nobody listens on (smoltcp resets it). A retransmitted SYN of a
    /// stream that has its socket already never comes here ([`MeshStack::holds`]).
    fn admit_syn(&mut self, syn: &Syn) -> Option<Result<(), SynRefusal>> {
        let port = syn.to.port();
        let listener = self.listeners.get(&port)?;
        let peer = *syn.from.ip();
        if !listener.admission.admits(&peer) {
            return Some(Err(SynRefusal::NotAdmitted));
        }
        let mut streams = listener.queued_syns.values().sum::<usize>();
        let mut peer_streams = listener.queued_syns.get(&peer).copied().unwrap_or(0);
        let mut peer_half_open = peer_streams;
        let accepted = self
            .accepted
            .iter()
            .filter(|(_, (accepted_port, _))| *accepted_port == port)
            .map(|(handle, _)| handle);
        for handle in listener.sockets.iter().chain(accepted) {
            let socket = self.sockets.get::<tcp::Socket>(*handle);
            let state = socket.state();
            if state == tcp::State::Listen {
                continue;
            }
            streams += 1;
            let Some(remote) = socket.remote_endpoint() else {
                continue;
            };
            if remote.addr != IpAddress::Ipv6(peer) {
                continue;
            }
            peer_streams += 1;
            if state == tcp::State::SynReceived {
                peer_half_open += 1;
            }
        }
        let admission = &listener.admission;
        let refusal = if peer_half_open >= admission.max_half_open_per_peer {
            Some(SynRefusal::PeerHalfOpen)
        } else if peer_streams >= admission.max_streams_per_peer {
            Some(SynRefusal::PeerStreams)
        } else if streams >= admission.max_streams {
            Some(SynRefusal::ListenerFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Some(Err(refusal));
        }
        if let Some(listener) = self.listeners.get_mut(&port) {
            *listener.queued_syns.entry(peer).or_default() += 1;
        }
        if let Err(error) = self.refill_listeners(port) {
            log::debug!("mesh TCP port {port}: no socket for a new connection: {error}");
            if let Some(count) = self
                .listeners
                .get_mut(&port)
                .and_then(|listener| listener.queued_syns.get_mut(&peer))
            {
                *count = count.saturating_sub(1);
            }
            return Some(Err(SynRefusal::NoSocket));
        }
        Some(Ok(()))
    }

    /// Answers a refused SYN with a reset, without a socket.
    fn reset(&mut self, syn: &Syn) {
        let device = &mut self.device;
        if device.tx.len() >= QUEUE_LIMIT {
            return;
        }
        let tcp = TcpRepr {
            src_port: syn.to.port(),
            dst_port: syn.from.port(),
            control: TcpControl::Rst,
            seq_number: TcpSeqNumber(0),
            ack_number: Some(syn.ack),
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv6Repr {
            src_addr: *syn.to.ip(),
            dst_addr: *syn.from.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let len = ip.buffer_len() + tcp.buffer_len();
        let mut buf = device.free.pop().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut packet = Ipv6Packet::new_unchecked(&mut buf[..len]);
        ip.emit(&mut packet);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &IpAddress::Ipv6(*syn.to.ip()),
            &IpAddress::Ipv6(*syn.from.ip()),
            &device.capabilities().checksum,
        );
        device.tx.push_back((buf, len));
    }

    fn forget_tcp_socket(&mut self, socket: &tcp::Socket) {
        self.tcp_sockets = self.tcp_sockets.saturating_sub(1);
        self.tcp_buffer_bytes = self
            .tcp_buffer_bytes
            .saturating_sub(socket.recv_capacity() + socket.send_capacity());
    }

    /// The next connection accepted on any listening port: the port, the connection, and who
    /// opened it. Call after [`MeshStack::poll`].
    pub fn poll_accept(&mut self) -> Option<(u16, TcpHandle, SocketAddrV6)> {
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        ports.into_iter().find_map(|port| {
            let (handle, remote) = self.poll_accept_on(port)?;
            Some((port, handle, remote))
        })
    }

    /// The next connection accepted on `port` only, so that each app takes its own: the
    /// connection and who opened it. Call after [`MeshStack::poll`].
    pub fn poll_accept_on(&mut self, port: u16) -> Option<(TcpHandle, SocketAddrV6)> {
        let handles = &mut self.listeners.get_mut(&port)?.sockets;
        let index = handles.iter().position(|handle| {
            self.sockets.get::<tcp::Socket>(*handle).state() != tcp::State::Listen
        })?;
        let handle = handles.swap_remove(index);
        let remote = self.sockets.get::<tcp::Socket>(handle).remote_endpoint();
        if let Err(error) = self.refill_listeners(port) {
            log::warn!("mesh TCP port {port}: cannot keep listening: {error}");
        }
        let remote = match remote {
            Some(smoltcp::wire::IpEndpoint {
                addr: IpAddress::Ipv6(addr),
                port,
            }) => SocketAddrV6::new(addr, port, 0, 0),
            // A listener that left Listen without a peer was reset: hand it back anyway so
            // that the caller releases it.
            _ => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0),
        };
        self.accepted.insert(handle, (port, *remote.ip()));
        Some((handle, remote))
    }

    /// Opens a connection to `remote`.
    pub fn connect(&mut self, remote: SocketAddrV6) -> Result<TcpHandle, StackError> {
        let local_port = self.free_port()?;
        let mut socket = self.new_tcp_socket()?;
        let endpoint = (IpAddress::Ipv6(*remote.ip()), remote.port());
        if socket
            .connect(self.iface.context(), endpoint, local_port)
            .is_err()
        {
            self.forget_tcp_socket(&socket);
            return Err(StackError::BadEndpoint);
        }
        Ok(self.sockets.add(socket))
    }

    /// The next local port for an outgoing connection, in turn, skipping those that a socket
    /// still holds (open, or closing in TIME-WAIT): after a wrap-around, a new connection
    /// must not take the port of a long-lived one.
    fn free_port(&mut self) -> Result<u16, StackError> {
        let in_use: HashSet<u16> = self
            .sockets
            .iter()
            .filter_map(|(_, socket)| match socket {
                smoltcp::socket::Socket::Tcp(tcp) => tcp.local_endpoint().map(|end| end.port),
                _ => None,
            })
            .collect();
        next_free_port(&mut self.next_port, &in_use).ok_or(StackError::NoFreePort)
    }

    /// A connection's socket, to read, write, close or query.
    pub fn tcp(&mut self, handle: TcpHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Drops a connection's socket (abort it first for a reset, close it for a FIN).
    pub fn release(&mut self, handle: TcpHandle) {
        self.accepted.remove(&handle);
        if let smoltcp::socket::Socket::Tcp(socket) = self.sockets.remove(handle) {
            self.forget_tcp_socket(&socket);
        }
    }

    fn timestamp(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// Whether a connection opened by `syn` is already under way (the SYN was sent again).
    fn holds(&self, syn: &Syn) -> bool {
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Tcp(socket) => {
                socket.remote_endpoint().is_some_and(|remote| {
                    remote.addr == IpAddress::Ipv6(*syn.from.ip()) && remote.port == syn.from.port()
                }) && socket
                    .local_endpoint()
                    .is_some_and(|local| local.port == syn.to.port())
            }
            _ => false,
        })
    }

    /// Takes a packet a route delivered (already checked to come from the peer to this node),
    /// buffer and all, and leaves a spare buffer of its own in its place (empty when it has
    /// none), so that buffers change hands instead of bytes being copied. Only whole IPv6
    /// packets of TCP and ICMPv6 go in: smoltcp would answer anything else with an error.
    /// A SYN to a listening port is first checked against the port's [`Admission`]; a
    /// refused one is answered with a reset and counted ([`MeshStack::syn_refusals`]), and
    /// smoltcp never sees it. Says whether it took the packet (a refused SYN counts as taken
    /// and leaves the buffer); when not, `packet` is as it was.
    pub fn receive(&mut self, packet: &mut Vec<u8>) -> bool {
        if self.device.rx.len() >= QUEUE_LIMIT {
            return false;
        }
        let Ok(header) = Ipv6Packet::new_checked(packet.as_slice()) else {
            return false;
        };
        if !matches!(header.next_header(), IpProtocol::Tcp | IpProtocol::Icmpv6) {
            return false;
        }
        if let Some(syn) = parse_syn(&header) {
            if self.holds(&syn) {
                // A retransmitted SYN: the connection it opened answers it by retransmitting
                // its SYN-ACK. Handed in, it could find a listener first and open a second
                // connection with the same addresses, whose reset would kill the first.
                return false;
            }
            if let Some(Err(refusal)) = self.admit_syn(&syn) {
                self.syn_refusals.count(refusal);
                self.port_syn_refusals
                    .entry(syn.to.port())
                    .or_default()
                    .count(refusal);
                log::debug!(
                    "mesh TCP SYN from {} to {} refused: {refusal:?}",
                    syn.from,
                    syn.to
                );
                self.reset(&syn);
                return true;
            }
        }
        let spare = self.device.rx_free.pop().unwrap_or_default();
        self.device.rx.push_back(std::mem::replace(packet, spare));
        true
    }

    /// Whether [`MeshStack::receive`] would take another packet now; when not, poll the stack
    /// and carry what it sends first.
    pub fn can_receive(&self) -> bool {
        self.device.rx.len() < QUEUE_LIMIT
    }

    /// Lets smoltcp process what arrived and what its sockets want sent. Returns whether it
    /// stopped because its send queue is full: drain [`MeshStack::poll_transmit`] and poll again.
    pub fn poll(&mut self, now: Instant) -> bool {
        let timestamp = self.timestamp(now);
        self.iface
            .poll(timestamp, &mut self.device, &mut self.sockets);
        if self.device.rx.is_empty() {
            for listener in self.listeners.values_mut() {
                listener.queued_syns.clear();
            }
        }
        self.device.tx.len() >= QUEUE_LIMIT
    }

    /// How soon smoltcp wants [`MeshStack::poll`] again.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let timestamp = self.timestamp(now);
        self.iface
            .poll_delay(timestamp, &self.sockets)
            .map(|delay| Duration::from_micros(delay.total_micros()))
    }

    /// The next packet the stack wants carried, and its destination. The packet is lent until
    /// the next call, which reuses its buffer.
    pub fn poll_transmit(&mut self) -> Option<(Ipv6Addr, &[u8])> {
        let device = &mut self.device;
        if let Some(sent) = device.lent.take() {
            if device.free.len() < QUEUE_LIMIT {
                device.free.push(sent);
            }
        }
        loop {
            let (buf, len) = device.tx.pop_front()?;
            // smoltcp emits whole IPv6 packets; anything else is dropped.
            let dst = buf
                .get(..len)
                .and_then(|packet| Ipv6Packet::new_checked(packet).ok())
                .map(|header| header.dst_addr());
            if let Some(dst) = dst {
                let packet = device.lent.insert(buf).get(..len).unwrap_or_default();
                return Some((dst, packet));
            }
        }
    }

    /// Queues an ICMPv6 echo request to `to` with sequence number `seq`.
    pub fn send_ping(&mut self, to: Ipv6Addr, seq: u16) -> bool {
        let checksum = self.device.capabilities().checksum;
        let repr = Icmpv6Repr::EchoRequest {
            ident: self.ident,
            seq_no: seq,
            data: PING_PAYLOAD,
        };
        let own = self.iface.ipv6_addr().unwrap_or(Ipv6Address::UNSPECIFIED);
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        match socket.send(repr.buffer_len(), IpAddress::Ipv6(to)) {
            Ok(buffer) => {
                let mut packet = Icmpv6Packet::new_unchecked(buffer);
                repr.emit(&own, &to, &mut packet, &checksum);
                true
            }
            Err(_) => false,
        }
    }

    /// The next echo reply received: who answered and the sequence number.
    pub fn poll_pong(&mut self) -> Option<(Ipv6Addr, u16)> {
        let checksum = self.device.capabilities().checksum;
        let own = self.iface.ipv6_addr().unwrap_or(Ipv6Address::UNSPECIFIED);
        let socket = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while socket.can_recv() {
            let Ok((payload, IpAddress::Ipv6(from))) = socket.recv() else {
                continue;
            };
            let Ok(packet) = Icmpv6Packet::new_checked(payload) else {
                continue;
            };
            if let Ok(Icmpv6Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv6Repr::parse(&from, &own, &packet, &checksum)
            {
                if ident == self.ident {
                    return Some((from, seq_no));
                }
            }
        }
        None
    }
}

/// The first port from `next` on, in turn through [`EPHEMERAL_PORTS`], that is not `in_use`;
/// `next` moves past it.
fn next_free_port(next: &mut u16, in_use: &HashSet<u16>) -> Option<u16> {
    for _ in EPHEMERAL_PORTS {
        let port = *next;
        *next = if port >= *EPHEMERAL_PORTS.end() || port < *EPHEMERAL_PORTS.start() {
            *EPHEMERAL_PORTS.start()
        } else {
            port + 1
        };
        if EPHEMERAL_PORTS.contains(&port) && !in_use.contains(&port) {
            return Some(port);
        }
    }
    None
}

/// The stream an IPv6 packet opens, if it is a TCP SYN (without ACK).
fn parse_syn(packet: &Ipv6Packet<&[u8]>) -> Option<Syn> {
    if packet.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(packet.payload()).ok()?;
    if !tcp.syn() || tcp.ack() {
        return None;
    }
    Some(Syn {
        from: SocketAddrV6::new(packet.src_addr(), tcp.src_port(), 0, 0),
        to: SocketAddrV6::new(packet.dst_addr(), tcp.dst_port(), 0, 0),
        // The SYN takes one sequence number, and any data it carries one each.
        ack: tcp.seq_number() + 1 + tcp.payload().len(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn two_stacks_ping_each_other() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        assert!(a.send_ping(b_addr, 1));
        a.poll(now);
        let (dst, request) = a.poll_transmit().unwrap();
        assert_eq!(dst, b_addr);
        assert!(b.receive(&mut request.to_vec()));
        b.poll(now);
        let (dst, reply) = b.poll_transmit().unwrap();
        assert_eq!(dst, a_addr);
        assert!(a.receive(&mut reply.to_vec()));
        a.poll(now);
        assert_eq!(a.poll_pong(), Some((b_addr, 1)));
        assert_eq!(a.poll_pong(), None);
    }

    /// Moves packets between two stacks until neither has anything to send.
    pub(crate) fn exchange(a: &mut MeshStack, b: &mut MeshStack, now: Instant) {
        for _ in 0..1000 {
            a.poll(now);
            b.poll(now);
            let mut moved = false;
            while let Some((_, packet)) = a.poll_transmit() {
                b.receive(&mut packet.to_vec());
                moved = true;
            }
            while let Some((_, packet)) = b.poll_transmit() {
                a.receive(&mut packet.to_vec());
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn tcp_connects_accepts_and_carries_data_both_ways() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        b.listen(1080, 2, Admission::any()).unwrap();
        let client = a.connect(SocketAddrV6::new(b_addr, 1080, 0, 0)).unwrap();
        exchange(&mut a, &mut b, now);
        let (port, server, remote) = b.poll_accept().unwrap();
        assert_eq!((port, *remote.ip()), (1080, a_addr));
        assert!(b.poll_accept().is_none());
        assert_eq!(
            b.listeners[&1080].sockets.len(),
            2,
            "the backlog is refilled"
        );
        assert_eq!(a.tcp(client).send_slice(b"hello").unwrap(), 5);
        exchange(&mut a, &mut b, now);
        let mut buf = [0u8; 16];
        assert_eq!(b.tcp(server).recv_slice(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        b.tcp(server).send_slice(b"world").unwrap();
        b.tcp(server).close();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.tcp(client).recv_slice(&mut buf).unwrap(), 5);
        assert!(!a.tcp(client).may_recv(), "the FIN arrived");
        a.release(client);
        b.release(server);
        b.unlisten(1080);
        assert_eq!((a.tcp_sockets, b.tcp_sockets), (0, 0));
    }

    #[test]
    fn a_burst_of_connections_beyond_the_backlog_is_accepted_and_the_extra_listeners_go() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        b.listen(1080, 2, Admission::any()).unwrap();
        let clients: Vec<_> = (0..20)
            .map(|_| a.connect(SocketAddrV6::new(b_addr, 1080, 0, 0)).unwrap())
            .collect();
        exchange(&mut a, &mut b, now);
        let mut accepted = 0;
        while b.poll_accept_on(1080).is_some() {
            accepted += 1;
        }
        assert_eq!(accepted, 20, "every SYN found a listener");
        for client in clients {
            assert_eq!(a.tcp(client).state(), tcp::State::Established);
        }
        assert_eq!(b.listeners[&1080].sockets.len(), 2, "back to the backlog");
        assert_eq!(b.tcp_sockets, 22);
    }

    /// Two stacks on the mesh addresses of two fresh keys: the client's key, and both stacks.
    fn keyed_pair(now: Instant) -> (NodeKey, MeshStack, MeshStack) {
        let client = crate::identity::SecretKey::generate().public();
        let server = crate::identity::SecretKey::generate().public();
        let a = MeshStack::new(client.mesh_address(), 1, now);
        let b = MeshStack::new(server.mesh_address(), 2, now);
        (client, a, b)
    }

    #[test]
    fn a_stranger_syn_is_reset_without_a_socket_and_counted() {
        let now = Instant::now();
        let (_, mut stranger, mut b) = keyed_pair(now);
        let allowed = crate::identity::SecretKey::generate().public();
        b.listen(1080, 2, Admission::keys([&allowed])).unwrap();
        let sockets = b.tcp_sockets();
        let server = SocketAddrV6::new(b.iface.ipv6_addr().unwrap(), 1080, 0, 0);
        let attempts: Vec<_> = (0..50).map(|_| stranger.connect(server).unwrap()).collect();
        exchange(&mut stranger, &mut b, now);
        assert_eq!(b.syn_refusals().not_admitted, 50);
        assert_eq!(b.syn_refusals().total(), 50);
        assert_eq!(b.tcp_sockets(), sockets, "no socket was made");
        assert_eq!(b.tcp_sockets_peak(), sockets);
        assert!(b.poll_accept().is_none());
        for handle in attempts {
            assert_eq!(stranger.tcp(handle).state(), tcp::State::Closed, "reset");
        }
    }

    #[test]
    fn an_admitted_peer_is_held_to_its_half_open_and_stream_caps_and_the_port_to_its_total() {
        let now = Instant::now();
        let (client, mut a, mut b) = keyed_pair(now);
        let admission = Admission::keys([&client]).limit(6, 4).half_open_per_peer(3);
        b.listen(1080, 1, admission).unwrap();
        let server = SocketAddrV6::new(b.iface.ipv6_addr().unwrap(), 1080, 0, 0);
        // Five SYNs at once: three may be half-open, the rest are reset.
        let burst: Vec<_> = (0..5).map(|_| a.connect(server).unwrap()).collect();
        a.poll(now);
        while let Some((_, packet)) = a.poll_transmit() {
            b.receive(&mut packet.to_vec());
        }
        assert_eq!(b.syn_refusals().peer_half_open, 2);
        exchange(&mut a, &mut b, now);
        let established = burst
            .iter()
            .filter(|handle| a.tcp(**handle).state() == tcp::State::Established)
            .count();
        assert_eq!(established, 3);
        let mut accepted = Vec::new();
        while let Some((_, handle, _)) = b.poll_accept() {
            accepted.push(handle);
        }
        assert_eq!(accepted.len(), 3);
        // Established streams count against the peer's cap of four: one more fits.
        let fourth = a.connect(server).unwrap();
        let fifth = a.connect(server).unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.tcp(fourth).state(), tcp::State::Established);
        assert_eq!(a.tcp(fifth).state(), tcp::State::Closed);
        assert_eq!(b.syn_refusals().peer_streams, 1);
        accepted.extend(b.poll_accept().map(|(_, handle, _)| handle));
        assert_eq!(accepted.len(), 4);
        // A released stream frees its place.
        let released = accepted.pop().unwrap();
        b.tcp(released).abort();
        b.release(released);
        exchange(&mut a, &mut b, now);
        let again = a.connect(server).unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.tcp(again).state(), tcp::State::Established);
        assert_eq!(b.syn_refusals().total(), 3);
    }

    #[test]
    fn a_port_refuses_streams_beyond_its_total_whoever_opens_them() {
        let now = Instant::now();
        let (client, mut a, mut b) = keyed_pair(now);
        b.listen(1080, 1, Admission::any().limit(2, 2)).unwrap();
        let server = SocketAddrV6::new(b.iface.ipv6_addr().unwrap(), 1080, 0, 0);
        let first = a.connect(server).unwrap();
        exchange(&mut a, &mut b, now);
        let second = a.connect(server).unwrap();
        exchange(&mut a, &mut b, now);
        let third = a.connect(server).unwrap();
        exchange(&mut a, &mut b, now);
        let states: Vec<_> = [first, second, third]
            .iter()
            .map(|handle| a.tcp(*handle).state())
            .collect();
        assert_eq!(
            states,
            [
                tcp::State::Established,
                tcp::State::Established,
                tcp::State::Closed
            ]
        );
        assert_eq!(b.syn_refusals().peer_streams, 1, "{client}");
    }

    #[test]
    fn a_retransmitted_syn_opens_no_second_connection() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        // A socket ahead of the listeners, released later: a listener made then sits ahead
        // of the connection, where smoltcp would offer it the SYN first.
        let ahead = b.connect(SocketAddrV6::new(a_addr, 9, 0, 0)).unwrap();
        b.listen(1080, 1, Admission::any()).unwrap();
        let client = a.connect(SocketAddrV6::new(b_addr, 1080, 0, 0)).unwrap();
        a.poll(now);
        let (_, syn) = a.poll_transmit().unwrap();
        let syn = syn.to_vec();
        assert!(b.receive(&mut syn.clone()));
        b.poll(now);
        let (server, remote) = b.poll_accept_on(1080).unwrap();
        assert_eq!(*remote.ip(), a_addr);
        b.release(ahead);

        assert!(
            !b.receive(&mut syn.clone()),
            "the SYN sent again is refused"
        );
        b.poll(now);
        assert!(b.poll_accept_on(1080).is_none(), "no second connection");
        exchange(&mut a, &mut b, now);
        assert_eq!(a.tcp(client).state(), tcp::State::Established);
        assert_eq!(b.tcp(server).state(), tcp::State::Established);
    }

    #[test]
    fn buffers_shrink_as_the_stack_fills_and_stay_within_the_total() {
        let now = Instant::now();
        let mut stack = MeshStack::new("fd00::a".parse().unwrap(), 1, now);
        let remote = SocketAddrV6::new("fd00::b".parse().unwrap(), 9, 0, 0);
        let mut sizes = Vec::new();
        let mut handles = Vec::new();
        while let Ok(handle) = stack.connect(remote) {
            sizes.push(stack.tcp(handle).recv_capacity());
            handles.push(handle);
        }
        assert_eq!(handles.len(), MAX_TCP_SOCKETS);
        assert_eq!(sizes.first(), Some(&TCP_BUFFER));
        assert_eq!(sizes.last(), Some(&TCP_BUFFER_MIN));
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]));
        assert!(stack.tcp_buffer_bytes <= TCP_MEMORY);
        assert_eq!(stack.tcp_buffer_bytes, 2 * sizes.iter().sum::<usize>());
        // Released buffers are given again.
        for handle in handles.drain(..) {
            stack.release(handle);
        }
        assert_eq!(stack.tcp_buffer_bytes, 0);
        let handle = stack.connect(remote).unwrap();
        assert_eq!(stack.tcp(handle).recv_capacity(), TCP_BUFFER);
    }

    #[test]
    fn a_port_still_in_use_is_skipped_when_the_ports_wrap_around() {
        let now = Instant::now();
        let a_addr: Ipv6Addr = "fd00::a".parse().unwrap();
        let b_addr: Ipv6Addr = "fd00::b".parse().unwrap();
        let mut a = MeshStack::new(a_addr, 7, now);
        let mut b = MeshStack::new(b_addr, 8, now);
        b.listen(1080, 1, Admission::any()).unwrap();
        let remote = SocketAddrV6::new(b_addr, 1080, 0, 0);
        let long_lived = a.connect(remote).unwrap();
        exchange(&mut a, &mut b, now);
        assert_eq!(a.tcp(long_lived).state(), tcp::State::Established);
        let held = a.tcp(long_lived).local_endpoint().unwrap().port;
        assert_eq!(held, *EPHEMERAL_PORTS.start());
        // Every other port once, each released at once: the next turn comes back to `held`.
        let range = usize::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        for _ in 1..range {
            let handle = a.connect(remote).unwrap();
            assert_ne!(a.tcp(handle).local_endpoint().unwrap().port, held);
            a.release(handle);
        }
        let next = a.connect(remote).unwrap();
        let port = a.tcp(next).local_endpoint().unwrap().port;
        assert_ne!(
            port, held,
            "the long-lived connection keeps its port to itself"
        );
        assert_eq!(port, held + 1);
        assert_eq!(a.tcp(long_lived).state(), tcp::State::Established);
    }

    #[test]
    fn when_every_port_is_in_use_there_is_none_to_give() {
        let mut in_use: HashSet<u16> = EPHEMERAL_PORTS.collect();
        let mut next = 50_000;
        assert_eq!(next_free_port(&mut next, &in_use), None);
        in_use.remove(&49_152);
        assert_eq!(next_free_port(&mut next, &in_use), Some(49_152));
        assert_eq!(next, 49_153);
        let text = StackError::NoFreePort.to_string();
        assert!(text.contains("(49152-65535) is in use"), "{text}");
    }

    #[test]
    fn only_tcp_and_icmpv6_go_in() {
        let mut stack = MeshStack::new("fd00::a".parse().unwrap(), 1, Instant::now());
        let mut udp = vec![0u8; 48];
        udp[0] = 0x60;
        udp[6] = 17;
        assert!(!stack.receive(&mut udp.clone()));
        assert!(!stack.receive(&mut vec![1, 2]));
    }
}
