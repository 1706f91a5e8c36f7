//! The VPN client app: builds a route to its server, asks it for addresses over the mesh
//! stack, puts them on its TUN device with the configured routes, and carries packets between
//! the TUN device and the server's route session; rebuilds the route when it goes down and
//! keeps its addresses, which the server keeps for its key.

use std::net::{IpAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::filter;
use super::lease::{self, Grant, Message, ParseError, Refusal};
use super::offload::Coalescer;
use super::pool::Lease;
use super::routes::ClientRoutes;
use super::tun::{write_frame, TunDevice};
use super::{ClientOptions, VpnError};
use crate::api::vpn::{ClientStatus, DropCounts, Traffic};
use crate::identity::NodeKey;
use crate::node::{Node, SetupId, INNER_MTU};
use crate::stack::{MeshStack, TcpHandle};

/// How long one lease exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before trying again after a failure; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between tries.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting before the next try.
    Waiting { until: Instant },
    /// A route setup is under way.
    Building { setup: SetupId },
    /// Waiting, until a deadline, for a route another setup made to become ready.
    AwaitingRoute { until: Instant },
    /// The lease exchange is under way.
    Leasing,
    /// Addresses in place, packets flowing.
    Up,
    /// The server refused; tried again later.
    Refused { refusal: Refusal, until: Instant },
}

/// The lease exchange's connection.
#[derive(Debug)]
struct Exchange {
    handle: TcpHandle,
    sent: usize,
    received: Vec<u8>,
    deadline: Instant,
}

/// The VPN client app.
#[derive(Debug)]
pub struct VpnClient {
    options: ClientOptions,
    state_dir: PathBuf,
    tun: TunDevice,
    phase: Phase,
    exchange: Option<Exchange>,
    grant: Option<Grant>,
    lease: Option<Lease>,
    routes: Option<ClientRoutes>,
    retry: Duration,
    was_up: bool,
    reconnects: u64,
    last_error: Option<String>,
    tx: Traffic,
    rx: Traffic,
    drops: DropCounts,
    coalescer: Coalescer,
}

impl VpnClient {
    /// Creates the TUN device; the route and the lease follow from [`VpnClient::poll`].
    pub fn start(
        options: &ClientOptions,
        state_dir: &Path,
        now: Instant,
    ) -> Result<VpnClient, VpnError> {
        let tun = TunDevice::create(&options.tun)?;
        log::info!(
            "VPN client started on {}, server {}",
            options.tun,
            options.server
        );
        Ok(VpnClient {
            options: options.clone(),
            state_dir: state_dir.to_path_buf(),
            tun,
            phase: Phase::Waiting { until: now },
            exchange: None,
            grant: None,
            lease: None,
            routes: None,
            retry: FIRST_RETRY,
            was_up: false,
            reconnects: 0,
            last_error: None,
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: DropCounts::default(),
            coalescer: Coalescer::default(),
        })
    }

    /// The TUN device.
    pub fn tun(&self) -> &TunDevice {
        &self.tun
    }

    /// The server's key.
    pub fn server(&self) -> NodeKey {
        self.options.server
    }

    /// Whether the node's datagrams must carry the firewall mark ([`super::routes::FWMARK`]).
    pub fn wants_mark(&self) -> bool {
        !self.options.routes.is_empty()
    }

    /// A packet the server's route session delivered: to the TUN device if it is for us.
    pub fn handle_packet(&mut self, peer: &NodeKey, packet: &[u8]) {
        if let Err(drop) =
            filter::check_at_client(&self.options.server, self.lease.as_ref(), peer, packet)
        {
            self.drops.count(drop);
            return;
        }
        self.rx.count(packet.len());
        let tun = &self.tun;
        self.coalescer.push(packet, |frame| write_frame(tun, frame));
    }

    /// Writes what waits to be joined; call once the packets of a wake-up are in.
    pub fn flush_tun(&mut self) {
        let tun = &self.tun;
        self.coalescer.flush(|frame| write_frame(tun, frame));
    }

    /// Reads frames from the TUN device into the server's route session, up to `budget`
    /// frames; says whether more may be waiting. `scratch` holds the segments of a large
    /// frame ([`super::offload::split`]).
    pub fn read_tun(
        &mut self,
        node: &mut Node,
        buf: &mut [u8],
        scratch: &mut [u8],
        budget: usize,
    ) -> bool {
        let (server, tx, drops) = (self.options.server, &mut self.tx, &mut self.drops);
        let (more, not_ip) =
            self.tun
                .read_packets("VPN client", buf, scratch, INNER_MTU, budget, |packet| {
                    // The kernel's own link-local chatter (router solicitations) stays here;
                    // the server checks sources.
                    let Some(addresses) = filter::addresses(packet) else {
                        drops.count(filter::Drop::NotIp);
                        return;
                    };
                    if is_link_local_or_multicast(addresses.dst) {
                        return;
                    }
                    match node.send_to(&server, packet) {
                        Ok(()) => tx.count(packet.len()),
                        Err(error) => log::debug!("VPN packet to the server not sent: {error}"),
                    }
                });
        for _ in 0..not_ip {
            drops.count(filter::Drop::NotIp);
        }
        more
    }

    /// The route to `peer` is ready.
    pub fn route_ready(&mut self, peer: &NodeKey) {
        if *peer == self.options.server
            && matches!(
                self.phase,
                Phase::Building { .. } | Phase::AwaitingRoute { .. }
            )
        {
            self.phase = Phase::Leasing;
        }
    }

    /// A route setup failed.
    pub fn route_failed(&mut self, now: Instant, setup: SetupId, error: &str) {
        if self.phase == (Phase::Building { setup }) {
            self.fail(now, format!("route to the server failed: {error}"));
        }
    }

    /// The route to `peer` went down.
    pub fn route_down(&mut self, now: Instant, peer: &NodeKey, stack: &mut MeshStack) {
        if *peer != self.options.server {
            return;
        }
        self.drop_exchange(stack);
        if self.phase == Phase::Up {
            log::warn!("VPN: the route to the server went down; rebuilding it");
            self.phase = Phase::Waiting { until: now };
        } else if !matches!(self.phase, Phase::Refused { .. } | Phase::Waiting { .. }) {
            self.phase = Phase::Waiting {
                until: now + self.retry,
            };
        }
    }

    fn fail(&mut self, now: Instant, why: String) {
        log::warn!("VPN client: {why}; trying again in {:?}", self.retry);
        self.last_error = Some(why);
        self.phase = Phase::Waiting {
            until: now + self.retry,
        };
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    fn drop_exchange(&mut self, stack: &mut MeshStack) {
        if let Some(exchange) = self.exchange.take() {
            stack.tcp(exchange.handle).abort();
            stack.release(exchange.handle);
        }
    }

    /// Moves the client on: route building, the lease exchange, retries. Call after the stack
    /// has run.
    pub fn poll(&mut self, now: Instant, node: &mut Node, stack: &mut MeshStack) {
        match self.phase.clone() {
            Phase::Waiting { until } | Phase::Refused { until, .. } if now >= until => {
                self.connect(now, node);
            }
            Phase::Leasing => self.poll_exchange(now, stack),
            Phase::AwaitingRoute { until } if now >= until => {
                self.fail(
                    now,
                    "the route to the server did not become ready".to_owned(),
                );
            }
            _ => {}
        }
    }

    fn connect(&mut self, now: Instant, node: &mut Node) {
        if self.was_up {
            self.reconnects += 1;
            self.was_up = false;
        }
        let server = self.options.server;
        if node
            .routes()
            .any(|(peer, route)| *peer == server && route.ready)
        {
            self.phase = Phase::Leasing;
            return;
        }
        if node.routes().any(|(peer, _)| *peer == server) {
            self.phase = Phase::AwaitingRoute {
                until: now + EXCHANGE_TIMEOUT,
            };
            return;
        }
        let mut path = vec![node.key()];
        path.extend(self.options.path.iter().copied());
        if path.last() != Some(&server) {
            path.push(server);
        }
        match node.build_route(now, &path) {
            Ok(setup) => self.phase = Phase::Building { setup },
            Err(error) => self.fail(now, format!("cannot build a route to the server: {error}")),
        }
    }

    fn poll_exchange(&mut self, now: Instant, stack: &mut MeshStack) {
        if self.exchange.is_none() {
            let remote =
                SocketAddrV6::new(self.options.server.mesh_address(), self.options.port, 0, 0);
            match stack.connect(remote) {
                Ok(handle) => {
                    self.exchange = Some(Exchange {
                        handle,
                        sent: 0,
                        received: Vec::new(),
                        deadline: now + EXCHANGE_TIMEOUT,
                    });
                }
                Err(error) => {
                    return self.fail(now, format!("cannot ask the server for a lease: {error}"))
                }
            }
        }
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        if now >= exchange.deadline {
            self.drop_exchange(stack);
            return self.fail(
                now,
                "the server did not answer the lease request".to_owned(),
            );
        }
        let socket = stack.tcp(exchange.handle);
        let request = Message::Request.to_bytes();
        if exchange.sent < request.len() && socket.may_send() {
            if let Ok(sent) = socket.send_slice(&request[exchange.sent..]) {
                exchange.sent += sent;
            }
        }
        let mut chunk = [0u8; lease::MAX_MESSAGE];
        let room = lease::MAX_MESSAGE - exchange.received.len();
        if let Ok(read) = socket.recv_slice(&mut chunk[..room]) {
            exchange.received.extend_from_slice(&chunk[..read]);
        }
        let outcome = Message::parse(&exchange.received);
        let closed = !lease::may_still_receive(socket);
        match outcome {
            Err(ParseError::Incomplete) if !closed => {}
            Ok((Message::Grant(grant), _)) => {
                self.drop_exchange_gracefully(stack);
                self.apply(now, grant);
            }
            Ok((Message::Refusal(refusal), _)) => {
                self.drop_exchange_gracefully(stack);
                log::error!(
                    "VPN server {} refused this node: {refusal}",
                    self.options.server
                );
                self.last_error = Some(refusal.to_string());
                self.phase = Phase::Refused {
                    refusal,
                    until: now + MAX_RETRY,
                };
            }
            Ok((Message::Request, _)) | Err(_) => {
                self.drop_exchange(stack);
                self.fail(now, "the server's lease answer was malformed".to_owned());
            }
        }
    }

    fn drop_exchange_gracefully(&mut self, stack: &mut MeshStack) {
        if let Some(exchange) = self.exchange.take() {
            // The answer is all that was wanted; the server closes its side.
            stack.tcp(exchange.handle).abort();
            stack.release(exchange.handle);
        }
    }

    /// Puts the granted addresses on the TUN device and installs the routes.
    fn apply(&mut self, now: Instant, grant: Grant) {
        if self.grant != Some(grant) {
            match self.configure(&grant) {
                Ok(()) => {}
                Err(error) => {
                    self.grant = None;
                    self.lease = None;
                    self.routes = None;
                    return self.fail(now, format!("cannot set up the tunnel: {error}"));
                }
            }
        }
        let lease = Lease {
            ipv4: grant.ipv4.map(|(address, _)| address),
            ipv6: grant.ipv6.map(|(address, _)| address),
        };
        log::info!(
            "VPN client up on {}: {}",
            self.options.tun,
            [lease.ipv4.map(IpAddr::V4), lease.ipv6.map(IpAddr::V6)]
                .iter()
                .flatten()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.grant = Some(grant);
        self.lease = Some(lease);
        self.phase = Phase::Up;
        self.was_up = true;
        self.retry = FIRST_RETRY;
        self.last_error = None;
    }

    fn configure(&mut self, grant: &Grant) -> Result<(), VpnError> {
        self.routes = None;
        if self.grant.is_some() {
            self.tun.flush_addresses()?;
        }
        let mut addresses = Vec::new();
        if let Some((address, len)) = grant.ipv4 {
            addresses.push((IpAddr::V4(address), len));
        }
        if let Some((address, len)) = grant.ipv6 {
            addresses.push((IpAddr::V6(address), len));
        }
        let mtu = grant.mtu.min(super::TUN_MTU);
        self.tun.configure(&addresses, mtu)?;
        if !self.options.routes.is_empty() {
            self.routes = Some(ClientRoutes::install(
                &self.state_dir,
                self.tun.name(),
                &self.options.routes,
                grant.ipv4.is_some(),
                grant.ipv6.is_some(),
            )?);
        }
        Ok(())
    }

    /// When [`VpnClient::poll`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting { until }
            | Phase::Refused { until, .. }
            | Phase::AwaitingRoute { until } => Some(*until),
            Phase::Leasing => Some(
                self.exchange
                    .as_ref()
                    .map_or(Instant::now(), |exchange| exchange.deadline),
            ),
            _ => None,
        }
    }

    /// Stops: removes the routes and releases the exchange; the TUN device goes when `self`
    /// is dropped. The route to the server is the driver's to tear down.
    pub fn stop(mut self, stack: &mut MeshStack) {
        self.drop_exchange(stack);
        self.routes = None;
        log::info!("VPN client stopped, {} removed", self.options.tun);
    }

    /// The app's state.
    pub fn status(&self) -> ClientStatus {
        let state = match &self.phase {
            Phase::Up => "up".to_owned(),
            Phase::Leasing => "leasing".to_owned(),
            Phase::Building { .. } | Phase::AwaitingRoute { .. } => "connecting".to_owned(),
            Phase::Refused { refusal, .. } => format!("refused: {refusal}"),
            Phase::Waiting { .. } => match &self.last_error {
                Some(error) => format!("connecting (last try: {error})"),
                None => "connecting".to_owned(),
            },
        };
        ClientStatus {
            state,
            server: self.options.server,
            tun: self.options.tun.to_string(),
            ipv4: self
                .grant
                .and_then(|grant| grant.ipv4)
                .map(|(address, len)| format!("{address}/{len}")),
            ipv6: self
                .grant
                .and_then(|grant| grant.ipv6)
                .map(|(address, len)| format!("{address}/{len}")),
            mtu: self.grant.map(|grant| grant.mtu),
            routes: self
                .options
                .routes
                .iter()
                .map(ToString::to_string)
                .collect(),
            reconnects: self.reconnects,
            tx: self.tx,
            rx: self.rx,
            drops: self.drops,
        }
    }
}

fn is_link_local_or_multicast(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}
