//! The VPN server app: its pools, the lease exchanges in progress, and the packets between its
//! clients' route sessions and its TUN device. It starts in steps, each a host change the
//! driver makes: the device is created, the lease file read, the device configured; then it
//! listens for lease requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::filter::{self, ServerFilter};
use super::lease::{self, Grant, Message, ParseError, Refusal};
use super::offload::{self, Coalescer};
use super::pool::{Pool, PoolError, LEASE_FILE};
use super::{HostOps, ServerOptions, VpnError, TUN_MTU};
use crate::api::vpn::{DropCounts, ServerClientRow, ServerStatus, Traffic, VpnApp};
use crate::identity::NodeKey;
use crate::node::{Node, INNER_MTU};
use crate::service::{HostOp, HostResult};
use crate::stack::{Admission, MeshStack, TcpHandle};

/// How long one lease exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lease exchanges in progress at most; more are refused at once.
const MAX_EXCHANGES: usize = 64;
/// Lease exchanges one client key may have in progress at once (a retry while the last one
/// closes).
const EXCHANGES_PER_KEY: usize = 2;
/// Listening sockets kept ready on the lease port.
const BACKLOG: usize = 4;

/// How far the start has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TUN device is being created.
    OpeningTun,
    /// The lease file is being read.
    LoadingLeases,
    /// The device is being given its addresses.
    Configuring,
    /// Serving.
    Running,
}

/// One lease exchange with a client.
#[derive(Debug)]
struct Exchange {
    handle: TcpHandle,
    peer: Option<NodeKey>,
    received: Vec<u8>,
    /// A new lease waits for this save of the lease file before it is granted.
    awaiting_save: Option<(u64, Grant)>,
    reply: Option<Vec<u8>>,
    sent: usize,
    deadline: Instant,
}

/// The VPN server app.
#[derive(Debug)]
pub struct VpnServer {
    options: ServerOptions,
    lease_file: PathBuf,
    phase: Phase,
    pool: Pool,
    filter: ServerFilter,
    exchanges: Vec<Exchange>,
    traffic: HashMap<NodeKey, (Traffic, Traffic)>,
    drops: DropCounts,
    coalescer: Coalescer,
    /// Saves of the lease file asked for, and answered, so far.
    saves_asked: u64,
    saves_answered: u64,
}

impl VpnServer {
    /// Checks the pools and asks for the TUN device; the start goes on as the host answers
    /// ([`VpnServer::handle_host_result`]).
    pub fn start(
        options: &ServerOptions,
        state_dir: &Path,
        host: &mut HostOps,
    ) -> Result<VpnServer, VpnError> {
        let pool = Pool::new(options.pool4, options.pool6)?;
        host.push(HostOp::OpenTun {
            app: VpnApp::Server,
            name: options.tun.clone(),
        });
        Ok(VpnServer {
            options: options.clone(),
            lease_file: state_dir.join(LEASE_FILE),
            phase: Phase::OpeningTun,
            pool,
            filter: ServerFilter::default(),
            exchanges: Vec::new(),
            traffic: HashMap::new(),
            drops: DropCounts::default(),
            coalescer: Coalescer::default(),
            saves_asked: 0,
            saves_answered: 0,
        })
    }

    /// Whether the start is complete.
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The mesh TCP port of the lease exchange.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// The host's answer to one of the server's changes; an error ends the start.
    pub fn handle_host_result(
        &mut self,
        stack: &mut MeshStack,
        result: HostResult,
        host: &mut HostOps,
    ) -> Result<(), VpnError> {
        match (self.phase, result) {
            (Phase::OpeningTun, HostResult::TunOpened { result, .. }) => {
                result?;
                self.phase = Phase::LoadingLeases;
                host.push(HostOp::LoadLeases {
                    file: self.lease_file.clone(),
                });
            }
            (Phase::LoadingLeases, HostResult::LeasesLoaded { file, text }) => {
                match text {
                    Ok(Some(text)) => self.pool.load(&file, &text)?,
                    Ok(None) => {}
                    Err(source) => return Err(PoolError::File { file, source }.into()),
                }
                self.phase = Phase::Configuring;
                host.push(HostOp::ConfigureTun {
                    app: VpnApp::Server,
                    name: self.options.tun.clone(),
                    addresses: self.addresses(),
                    mtu: TUN_MTU,
                    replace: false,
                });
            }
            (Phase::Configuring, HostResult::TunConfigured { result, .. }) => {
                result?;
                let port = self.options.port;
                let admission = Admission::keys(&self.options.allow)
                    .limit(MAX_EXCHANGES, EXCHANGES_PER_KEY)
                    .half_open_per_peer(EXCHANGES_PER_KEY);
                stack
                    .listen(port, BACKLOG, admission)
                    .map_err(|source| VpnError::Listen { port, source })?;
                self.phase = Phase::Running;
                log::info!(
                    "VPN server up on {} ({}), leases on mesh port {port}, {} allowed key(s)",
                    self.options.tun,
                    self.addresses()
                        .iter()
                        .map(|(address, len)| format!("{address}/{len}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.options.allow.len()
                );
            }
            (_, HostResult::LeasesSaved { file, result }) => {
                self.saves_answered += 1;
                let saved = result.is_ok();
                if let Err(source) = result {
                    log::warn!("VPN lease not given: {}", PoolError::File { file, source });
                }
                self.answer_saved(saved);
            }
            (phase, result) => log::debug!("VPN server ({phase:?}): unexpected {result:?}"),
        }
        Ok(())
    }

    /// The server's own addresses with their pools' prefix lengths.
    fn addresses(&self) -> Vec<(IpAddr, u8)> {
        let server = self.pool.server();
        let mut addresses = Vec::new();
        if let (Some(address), Some(prefix)) = (server.ipv4, self.pool.pool4()) {
            addresses.push((IpAddr::V4(address), prefix.prefix_len()));
        }
        if let (Some(address), Some(prefix)) = (server.ipv6, self.pool.pool6()) {
            addresses.push((IpAddr::V6(address), prefix.prefix_len()));
        }
        addresses
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
        self.coalescer.push(packet);
    }

    /// Finishes what waits to be joined; call once the packets of a wake-up are in.
    pub fn finish_frames(&mut self) {
        self.coalescer.finish();
    }

    /// The next frame for the TUN device, lent until the next call.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        self.coalescer.next_frame()
    }

    /// A frame the TUN device gave: each packet in it goes to the client that holds its
    /// destination. `scratch` holds the segments of a large frame ([`offload::split`]).
    pub fn handle_tun_frame(&mut self, node: &mut Node, frame: &mut [u8], scratch: &mut [u8]) {
        let (filter, traffic, drops) = (&self.filter, &mut self.traffic, &mut self.drops);
        let split = offload::split(frame, scratch, INNER_MTU, |packet| {
            match filter.client_for(packet) {
                Ok(peer) => match node.send_to(&peer, packet) {
                    Ok(()) => {
                        if let Some((_, tx)) = traffic.get_mut(&peer) {
                            tx.count(packet.len());
                        }
                    }
                    Err(error) => log::debug!("VPN packet to {peer} not sent: {error}"),
                },
                Err(drop) => drops.count(drop),
            }
        });
        if split.is_err() {
            drops.count(filter::Drop::NotIp);
        }
    }

    /// Takes a connection accepted on the lease port from `peer` (`None`: from an address
    /// with no route session, which cannot happen for an authenticated stream).
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
            awaiting_save: None,
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
    pub fn poll_exchanges(&mut self, now: Instant, stack: &mut MeshStack, host: &mut HostOps) {
        let mut index = 0;
        while index < self.exchanges.len() {
            if self.step_exchange(now, stack, host, index) {
                index += 1;
            } else {
                let exchange = self.exchanges.swap_remove(index);
                stack.release(exchange.handle);
            }
        }
    }

    /// One exchange's progress; false when it is over and its socket can go.
    fn step_exchange(
        &mut self,
        now: Instant,
        stack: &mut MeshStack,
        host: &mut HostOps,
        index: usize,
    ) -> bool {
        let exchange = &mut self.exchanges[index];
        let socket = stack.tcp(exchange.handle);
        if now >= exchange.deadline {
            socket.abort();
            return false;
        }
        if exchange.reply.is_none() && exchange.awaiting_save.is_none() {
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
                    match self.lease(peer) {
                        Ok((grant, false)) => {
                            self.exchanges[index].reply = Some(Message::Grant(grant).to_bytes());
                        }
                        Ok((grant, true)) => {
                            self.saves_asked += 1;
                            self.exchanges[index].awaiting_save = Some((self.saves_asked, grant));
                            host.push(HostOp::SaveLeases {
                                file: self.lease_file.clone(),
                                text: self.pool.to_text(),
                            });
                            return true;
                        }
                        Err(refusal) => {
                            self.exchanges[index].reply =
                                Some(Message::Refusal(refusal).to_bytes());
                        }
                    }
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
        if exchange.awaiting_save.is_some() {
            return true;
        }
        // Done once the client has closed too and what was sent is acknowledged.
        socket.is_open() && socket.state() != smoltcp::socket::tcp::State::TimeWait
    }

    /// A save of the lease file was answered: the exchange that waited for it grants its new
    /// lease, or refuses and the lease is forgotten.
    fn answer_saved(&mut self, saved: bool) {
        let save = self.saves_answered;
        for index in 0..self.exchanges.len() {
            let exchange = &mut self.exchanges[index];
            let (Some((waited_for, grant)), Some(peer)) = (exchange.awaiting_save, exchange.peer)
            else {
                continue;
            };
            if waited_for != save {
                continue;
            }
            exchange.awaiting_save = None;
            let message = if saved {
                self.admit(peer, grant);
                Message::Grant(grant)
            } else {
                self.pool.forget(&peer);
                Message::Refusal(Refusal::ServerError)
            };
            self.exchanges[index].reply = Some(message.to_bytes());
        }
    }

    /// The lease of an allowed `peer`: the grant, and whether it is new (to be saved first).
    fn lease(&mut self, peer: NodeKey) -> Result<(Grant, bool), Refusal> {
        let (lease, new) = self.pool.lease(peer).map_err(|error| {
            log::warn!("VPN lease for {peer} failed: {error}");
            match error {
                PoolError::Exhausted(_) => Refusal::PoolExhausted,
                _ => Refusal::ServerError,
            }
        })?;
        let grant = Grant {
            ipv4: lease
                .ipv4
                .zip(self.pool.pool4().map(|prefix| prefix.prefix_len())),
            ipv6: lease
                .ipv6
                .zip(self.pool.pool6().map(|prefix| prefix.prefix_len())),
            mtu: TUN_MTU,
        };
        if !new {
            self.admit(peer, grant);
        }
        Ok((grant, new))
    }

    /// Lets `peer`'s packets through with the addresses of `grant`.
    fn admit(&mut self, peer: NodeKey, grant: Grant) {
        let Some(lease) = self.pool.lease_of(&peer) else {
            return;
        };
        self.filter.admit(peer, lease);
        self.traffic.entry(peer).or_default();
        log::info!(
            "VPN client {peer} connected: {}",
            [
                grant.ipv4.map(|(a, _)| IpAddr::V4(a)),
                grant.ipv6.map(|(a, _)| IpAddr::V6(a))
            ]
            .iter()
            .flatten()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
        );
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

    /// Stops listening, drops the exchanges and closes the TUN device.
    pub fn stop(mut self, stack: &mut MeshStack, host: &mut HostOps) {
        if self.phase == Phase::Running {
            stack.unlisten(self.options.port);
        }
        for exchange in self.exchanges.drain(..) {
            stack.tcp(exchange.handle).abort();
            stack.release(exchange.handle);
        }
        host.push(HostOp::CloseTun {
            app: VpnApp::Server,
        });
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
            state: if self.is_running() {
                "running"
            } else {
                "starting"
            }
            .to_owned(),
            tun: self.options.tun.to_string(),
            ipv4: server.ipv4,
            ipv6: server.ipv6,
            clients,
            drops: self.drops,
        }
    }
}
