//! The VPN server app: its TUN device, its pools, the lease exchanges in progress, and the
//! packets between its clients' route sessions and the TUN device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::filter::{self, ServerFilter};
use super::lease::{self, Grant, Message, ParseError, Refusal};
use super::offload::Coalescer;
use super::pool::{Pool, PoolError};
use super::tun::{write_frame, TunDevice};
use super::{ServerOptions, VpnError, TUN_MTU};
use crate::api::vpn::{DropCounts, ServerClientRow, ServerStatus, Traffic};
use crate::identity::NodeKey;
use crate::node::{Node, INNER_MTU};
use crate::stack::{MeshStack, TcpHandle};

/// How long one lease exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lease exchanges in progress at most; more are refused at once.
const MAX_EXCHANGES: usize = 64;
/// Listening sockets kept ready on the lease port.
const BACKLOG: usize = 4;

/// One lease exchange with a client.
#[derive(Debug)]
struct Exchange {
    handle: TcpHandle,
    peer: Option<NodeKey>,
    received: Vec<u8>,
    reply: Option<Vec<u8>>,
    sent: usize,
    deadline: Instant,
}

/// The VPN server app.
#[derive(Debug)]
pub struct VpnServer {
    options: ServerOptions,
    tun: TunDevice,
    pool: Pool,
    filter: ServerFilter,
    exchanges: Vec<Exchange>,
    traffic: HashMap<NodeKey, (Traffic, Traffic)>,
    drops: DropCounts,
    coalescer: Coalescer,
}

impl VpnServer {
    /// Opens the pools, creates and configures the TUN device, and listens for lease requests.
    pub fn start(
        options: &ServerOptions,
        state_dir: &Path,
        stack: &mut MeshStack,
    ) -> Result<VpnServer, VpnError> {
        let pool = Pool::open(options.pool4, options.pool6, state_dir)?;
        let tun = TunDevice::create(&options.tun)?;
        let server = pool.server();
        let mut addresses = Vec::new();
        if let (Some(address), Some(prefix)) = (server.ipv4, pool.pool4()) {
            addresses.push((IpAddr::V4(address), prefix.prefix_len()));
        }
        if let (Some(address), Some(prefix)) = (server.ipv6, pool.pool6()) {
            addresses.push((IpAddr::V6(address), prefix.prefix_len()));
        }
        tun.configure(&addresses, TUN_MTU)?;
        stack
            .listen(options.port, BACKLOG)
            .map_err(|source| VpnError::Listen {
                port: options.port,
                source,
            })?;
        log::info!(
            "VPN server up on {} ({}), leases on mesh port {}, {} allowed key(s)",
            options.tun,
            addresses
                .iter()
                .map(|(address, len)| format!("{address}/{len}"))
                .collect::<Vec<_>>()
                .join(", "),
            options.port,
            options.allow.len()
        );
        Ok(VpnServer {
            options: options.clone(),
            tun,
            pool,
            filter: ServerFilter::default(),
            exchanges: Vec::new(),
            traffic: HashMap::new(),
            drops: DropCounts::default(),
            coalescer: Coalescer::default(),
        })
    }

    /// The TUN device.
    pub fn tun(&self) -> &TunDevice {
        &self.tun
    }

    /// The mesh TCP port of the lease exchange.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// A packet that `peer`'s route session delivered: to the TUN device if its source is
    /// the peer's lease.
    pub fn handle_packet(&mut self, peer: &NodeKey, packet: &[u8]) {
        if let Err(drop) = self.filter.check_from_client(peer, packet) {
            self.drops.count(drop);
            return;
        }
        if let Some((rx, _)) = self.traffic.get_mut(peer) {
            rx.count(packet.len());
        }
        let tun = &self.tun;
        self.coalescer.push(packet, |frame| write_frame(tun, frame));
    }

    /// Writes what waits to be joined; call once the packets of a wake-up are in.
    pub fn flush_tun(&mut self) {
        let tun = &self.tun;
        self.coalescer.flush(|frame| write_frame(tun, frame));
    }

    /// Reads frames from the TUN device and sends each packet to the client that holds its
    /// destination, up to `budget` frames; says whether more may be waiting. `scratch` holds
    /// the segments of a large frame ([`super::offload::split`]).
    pub fn read_tun(
        &mut self,
        node: &mut Node,
        buf: &mut [u8],
        scratch: &mut [u8],
        budget: usize,
    ) -> bool {
        let (filter, traffic, drops) = (&self.filter, &mut self.traffic, &mut self.drops);
        let (more, not_ip) =
            self.tun
                .read_packets(
                    "VPN server",
                    buf,
                    scratch,
                    INNER_MTU,
                    budget,
                    |packet| match filter.client_for(packet) {
                        Ok(peer) => match node.send_to(&peer, packet) {
                            Ok(()) => {
                                if let Some((_, tx)) = traffic.get_mut(&peer) {
                                    tx.count(packet.len());
                                }
                            }
                            Err(error) => log::debug!("VPN packet to {peer} not sent: {error}"),
                        },
                        Err(drop) => drops.count(drop),
                    },
                );
        for _ in 0..not_ip {
            drops.count(filter::Drop::NotIp);
        }
        more
    }

    /// Takes a connection accepted on the lease port from `peer` (`None`: from an address
    /// with no route, which cannot happen for an authenticated session).
    pub fn accept(
        &mut self,
        now: Instant,
        stack: &mut MeshStack,
        handle: TcpHandle,
        peer: Option<NodeKey>,
    ) {
        if self.exchanges.len() >= MAX_EXCHANGES || peer.is_none() {
            stack.tcp(handle).abort();
            stack.release(handle);
            return;
        }
        let mut exchange = Exchange {
            handle,
            peer,
            received: Vec::new(),
            reply: None,
            sent: 0,
            deadline: now + EXCHANGE_TIMEOUT,
        };
        if let Some(peer) = peer.filter(|peer| !self.options.allow.contains(peer)) {
            log::warn!("VPN lease refused to {peer}: its key is not in vpn.server.allow");
            exchange.reply = Some(Message::Refusal(Refusal::NotAllowed).to_bytes());
        }
        self.exchanges.push(exchange);
    }

    /// Moves the lease exchanges on; call after the stack has run.
    pub fn poll_exchanges(&mut self, now: Instant, stack: &mut MeshStack) {
        let mut index = 0;
        while index < self.exchanges.len() {
            if self.step_exchange(now, stack, index) {
                index += 1;
            } else {
                let exchange = self.exchanges.swap_remove(index);
                stack.release(exchange.handle);
            }
        }
    }

    /// One exchange's progress; false when it is over and its socket can go.
    fn step_exchange(&mut self, now: Instant, stack: &mut MeshStack, index: usize) -> bool {
        let exchange = &mut self.exchanges[index];
        let socket = stack.tcp(exchange.handle);
        if now >= exchange.deadline {
            socket.abort();
            return false;
        }
        if exchange.reply.is_none() {
            let mut chunk = [0u8; lease::MAX_MESSAGE];
            let room = lease::MAX_MESSAGE - exchange.received.len();
            if let Ok(read) = socket.recv_slice(&mut chunk[..room]) {
                exchange.received.extend_from_slice(&chunk[..read]);
            }
            match Message::parse(&exchange.received) {
                Err(ParseError::Incomplete) if lease::may_still_receive(socket) => return true,
                Ok((Message::Request, _)) => {
                    let Some(peer) = exchange.peer else {
                        return false;
                    };
                    let reply = match self.lease(peer) {
                        Ok(grant) => Message::Grant(grant),
                        Err(refusal) => Message::Refusal(refusal),
                    };
                    self.exchanges[index].reply = Some(reply.to_bytes());
                }
                Err(ParseError::Version(_)) => {
                    exchange.reply = Some(Message::Refusal(Refusal::Version).to_bytes());
                }
                _ => {
                    socket.abort();
                    return false;
                }
            }
        }
        let exchange = &mut self.exchanges[index];
        let socket = stack.tcp(exchange.handle);
        if let Some(reply) = &exchange.reply {
            if exchange.sent < reply.len() {
                if let Ok(sent) = socket.send_slice(&reply[exchange.sent..]) {
                    exchange.sent += sent;
                }
                if exchange.sent == reply.len() {
                    socket.close();
                }
                return true;
            }
        }
        // Done once the client has closed too and what was sent is acknowledged.
        socket.is_open() && socket.state() != smoltcp::socket::tcp::State::TimeWait
    }

    /// Leases addresses to an allowed `peer` and lets its packets through.
    fn lease(&mut self, peer: NodeKey) -> Result<Grant, Refusal> {
        let lease = self.pool.lease(peer).map_err(|error| {
            log::warn!("VPN lease for {peer} failed: {error}");
            match error {
                PoolError::Exhausted(_) => Refusal::PoolExhausted,
                _ => Refusal::ServerError,
            }
        })?;
        self.filter.admit(peer, lease);
        self.traffic.entry(peer).or_default();
        log::info!(
            "VPN client {peer} connected: {}",
            [lease.ipv4.map(IpAddr::V4), lease.ipv6.map(IpAddr::V6)]
                .iter()
                .flatten()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Grant {
            ipv4: lease
                .ipv4
                .zip(self.pool.pool4().map(|prefix| prefix.prefix_len())),
            ipv6: lease
                .ipv6
                .zip(self.pool.pool6().map(|prefix| prefix.prefix_len())),
            mtu: TUN_MTU,
        })
    }

    /// The clients admitted in this run.
    pub fn clients(&self) -> Vec<NodeKey> {
        self.filter.clients().map(|(key, _)| *key).collect()
    }

    /// The route to `peer` went down: its packets stop until it leases again.
    pub fn route_down(&mut self, peer: &NodeKey) {
        self.filter.remove(peer);
    }

    /// The earliest exchange deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.exchanges
            .iter()
            .map(|exchange| exchange.deadline)
            .min()
    }

    /// Stops listening and drops the exchanges; the TUN device goes when `self` is dropped.
    pub fn stop(mut self, stack: &mut MeshStack) {
        stack.unlisten(self.options.port);
        for exchange in self.exchanges.drain(..) {
            stack.tcp(exchange.handle).abort();
            stack.release(exchange.handle);
        }
        log::info!("VPN server stopped, {} removed", self.options.tun);
    }

    /// The app's state.
    pub fn status(&self) -> ServerStatus {
        let server = self.pool.server();
        let mut clients: Vec<ServerClientRow> = self
            .filter
            .clients()
            .map(|(key, lease)| {
                let (rx, tx) = self.traffic.get(key).copied().unwrap_or_default();
                ServerClientRow {
                    key: *key,
                    ipv4: lease.ipv4,
                    ipv6: lease.ipv6,
                    rx,
                    tx,
                }
            })
            .collect();
        clients.sort_by_cached_key(|client| client.key.to_string());
        ServerStatus {
            state: "running".to_owned(),
            tun: self.options.tun.to_string(),
            ipv4: server.ipv4,
            ipv6: server.ipv6,
            clients,
            drops: self.drops,
        }
    }
}
