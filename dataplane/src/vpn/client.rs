//! The VPN client app: has its TUN device made, has the node build a route to its server (over
//! a path the node chooses and repairs, or along the configured one), asks the server for
//! addresses over the mesh stack, has them put on the device with the configured routes, and
//! carries packets between the device and the server's route session. It follows the node's
//! route status: a repair goes on under its flows, and a route that goes down is built again,
//! with the addresses kept (the server keeps them for its key). A grant it cannot use safely
//! (a subnet outside its routes, an address inside a network of another interface) is refused
//! before anything is put on the host.

use std::net::{IpAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::filter;
use super::lease::{self, Grant, Message, ParseError, Refusal, UnusableGrant};
use super::offload::{self, Coalescer};
use super::pool::Lease;
use super::{ClientOptions, HostOps, VpnError, FWMARK};
use crate::api::vpn::{ClientStatus, DropCounts, Traffic, VpnApp};
use crate::identity::NodeKey;
use crate::node::{Node, RouteDownReason, RouteError, RouteStatus, RouteWait, SetupId, INNER_MTU};
use crate::service::{HostOp, HostResult, InterfaceAddress};
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
    /// The TUN device is being created.
    Opening,
    /// Waiting before the next try.
    Waiting { until: Instant },
    /// A route setup this app asked for is under way.
    Building { setup: SetupId },
    /// Waiting, until a deadline, for a route the node is setting up or repairing to become
    /// ready.
    AwaitingRoute { until: Instant },
    /// No path to the server is known, as of this version of the node's graph: tried again
    /// when the graph changes.
    Unreachable { graph: u64, why: String },
    /// The lease exchange is under way (since then).
    Leasing { since: Instant },
    /// The granted addresses and the routes are being put in place.
    Configuring,
    /// Addresses in place, packets flowing.
    Up,
    /// The server refused; tried again later.
    Refused { refusal: Refusal, until: Instant },
    /// The server's grant could not be used; asked again later.
    Unusable { why: UnusableGrant, until: Instant },
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
    phase: Phase,
    exchange: Option<Exchange>,
    /// The grant the device has.
    grant: Option<Grant>,
    /// The grant being put in place.
    configuring: Option<Grant>,
    lease: Option<Lease>,
    /// Whether routes were asked for and not removed since.
    routes_installed: bool,
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
    /// Asks for the TUN device; the route and the lease follow from [`VpnClient::poll`] once
    /// it is there.
    pub fn start(options: &ClientOptions, host: &mut HostOps) -> VpnClient {
        host.push(HostOp::OpenTun {
            app: VpnApp::Client,
            name: options.tun.clone(),
        });
        VpnClient {
            options: options.clone(),
            phase: Phase::Opening,
            exchange: None,
            grant: None,
            configuring: None,
            lease: None,
            routes_installed: false,
            retry: FIRST_RETRY,
            was_up: false,
            reconnects: 0,
            last_error: None,
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: DropCounts::default(),
            coalescer: Coalescer::default(),
        }
    }

    /// The server's key.
    pub fn server(&self) -> NodeKey {
        self.options.server
    }

    /// Whether the node's datagrams must carry the firewall mark ([`FWMARK`]).
    fn wants_mark(&self) -> bool {
        !self.options.routes.is_empty()
    }

    /// The host's answer to one of the client's changes; an error in creating the device ends
    /// the start.
    pub fn handle_host_result(
        &mut self,
        now: Instant,
        result: HostResult,
        host: &mut HostOps,
    ) -> Result<(), VpnError> {
        match result {
            HostResult::TunOpened { result, .. } => {
                result?;
                log::info!(
                    "VPN client started on {}, server {}",
                    self.options.tun,
                    self.options.server
                );
                if self.wants_mark() {
                    host.push(HostOp::MarkDatagrams(FWMARK));
                }
                self.phase = Phase::Waiting { until: now };
            }
            HostResult::TunConfigured { result, .. } => {
                let Some(grant) = self.configuring else {
                    return Ok(());
                };
                match result {
                    Ok(()) => {
                        self.grant = Some(grant);
                        if self.options.routes.is_empty() {
                            self.configured();
                        } else {
                            self.routes_installed = true;
                            host.push(HostOp::InstallRoutes {
                                name: self.options.tun.clone(),
                                routes: self.options.routes.clone(),
                                ipv4: grant.ipv4.is_some(),
                                ipv6: grant.ipv6.is_some(),
                            });
                        }
                    }
                    Err(error) => self.configuration_failed(now, error.into()),
                }
            }
            HostResult::RoutesInstalled(result) => match result {
                Ok(()) => self.configured(),
                Err(error) => {
                    self.routes_installed = false;
                    self.configuration_failed(now, error.into());
                }
            },
            HostResult::RoutesRemoved
            | HostResult::LeasesLoaded { .. }
            | HostResult::LeasesSaved { .. } => {}
        }
        Ok(())
    }

    /// The granted addresses and the routes are in place.
    fn configured(&mut self) {
        let Some(grant) = self.configuring.take() else {
            return;
        };
        let lease = Lease {
            ipv4: grant.ipv4.map(|(address, _)| address),
            ipv6: grant.ipv6.map(|(address, _)| address),
        };
        self.lease = Some(lease);
        if self.phase != Phase::Configuring {
            // The route went down meanwhile: the addresses stay for the next lease.
            return;
        }
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
        self.phase = Phase::Up;
        self.was_up = true;
        self.retry = FIRST_RETRY;
        self.last_error = None;
    }

    fn configuration_failed(&mut self, now: Instant, error: VpnError) {
        self.configuring = None;
        self.grant = None;
        self.lease = None;
        if self.phase == Phase::Configuring {
            self.fail(now, format!("cannot set up the tunnel: {error}"));
        }
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

    /// A frame the TUN device gave: its packets go to the server's route session. `scratch`
    /// holds the segments of a large frame ([`offload::split`]).
    pub fn handle_tun_frame(&mut self, node: &mut Node, frame: &mut [u8], scratch: &mut [u8]) {
        let (server, tx, drops) = (self.options.server, &mut self.tx, &mut self.drops);
        let split = offload::split(frame, scratch, INNER_MTU, |packet| {
            // The kernel's own link-local chatter (router solicitations) stays here; the
            // server checks sources.
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
        if split.is_err() {
            drops.count(filter::Drop::NotIp);
        }
    }

    /// A route setup failed.
    pub fn route_failed(&mut self, now: Instant, setup: SetupId, error: &RouteError) {
        if self.phase == (Phase::Building { setup }) {
            self.fail(now, format!("route to the server failed: {error}"));
        }
    }

    /// The route to `peer` went down, and the node could not repair it.
    pub fn route_down(
        &mut self,
        now: Instant,
        peer: &NodeKey,
        reason: RouteDownReason,
        stack: &mut MeshStack,
    ) {
        if *peer != self.options.server {
            return;
        }
        self.drop_exchange(stack);
        match self.phase {
            Phase::Up | Phase::Configuring => {
                log::warn!("VPN: the route to the server went down ({reason}); rebuilding it");
                self.phase = Phase::Waiting { until: now };
            }
            Phase::Refused { .. }
            | Phase::Unusable { .. }
            | Phase::Waiting { .. }
            | Phase::Opening
            | Phase::Unreachable { .. } => {}
            _ => {
                self.phase = Phase::Waiting {
                    until: now + self.retry,
                };
            }
        }
    }

    /// No path to the server is known: the status says so until the node's graph changes.
    fn unreachable(&mut self, node: &Node, error: &RouteError) {
        if !matches!(self.phase, Phase::Unreachable { .. }) {
            log::warn!("VPN client: {error}; trying again when the mesh changes");
        }
        self.last_error = Some(error.to_string());
        self.phase = Phase::Unreachable {
            graph: node.graph_version(),
            why: error.to_string(),
        };
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
    /// has run; `interfaces` are the host's addresses, against which a grant is checked.
    pub fn poll(
        &mut self,
        now: Instant,
        node: &mut Node,
        stack: &mut MeshStack,
        host: &mut HostOps,
        interfaces: &[InterfaceAddress],
    ) {
        let server = self.options.server;
        match self.phase.clone() {
            Phase::Waiting { until }
            | Phase::Refused { until, .. }
            | Phase::Unusable { until, .. }
                if now >= until =>
            {
                self.connect(now, node);
            }
            Phase::Unreachable { graph, .. } if node.graph_version() != graph => {
                self.connect(now, node);
            }
            Phase::Building { .. } | Phase::AwaitingRoute { .. }
                if node.route_status(&server) == RouteStatus::Ready =>
            {
                self.phase = Phase::Leasing { since: now };
                self.poll_exchange(now, stack, host, interfaces);
            }
            Phase::Leasing { .. } => self.poll_exchange(now, stack, host, interfaces),
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
        let path = self.options.path.as_ref().map(|relays| {
            let mut path = vec![node.key()];
            path.extend(relays.iter().copied());
            if path.last() != Some(&server) {
                path.push(server);
            }
            path
        });
        match node.want_route(now, &server, path.as_deref()) {
            Ok(RouteWait::Ready) => self.phase = Phase::Leasing { since: now },
            Ok(RouteWait::Underway) => {
                self.phase = Phase::AwaitingRoute {
                    until: now + EXCHANGE_TIMEOUT,
                }
            }
            Ok(RouteWait::Started(setup)) => self.phase = Phase::Building { setup },
            Err(error @ RouteError::NoPath(_)) => self.unreachable(node, &error),
            Err(error) => self.fail(now, format!("cannot build a route to the server: {error}")),
        }
    }

    fn poll_exchange(
        &mut self,
        now: Instant,
        stack: &mut MeshStack,
        host: &mut HostOps,
        interfaces: &[InterfaceAddress],
    ) {
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
        // Reset before it opened: the server admits only the keys in its allow list, and
        // resets every stream while its VPN server is not (yet) running.
        let reset = socket.state() == smoltcp::socket::tcp::State::Closed && exchange.sent == 0;
        match outcome {
            Err(ParseError::Incomplete) if !closed => {}
            Err(ParseError::Incomplete) if reset => {
                self.drop_exchange(stack);
                self.fail(
                    now,
                    "the server refused the lease stream: its vpn.server.allow does not list this node's key, or its VPN server is not running".to_owned(),
                );
            }
            Ok((Message::Grant(grant), _)) => {
                // The answer is all that was wanted; the server closes its side.
                self.drop_exchange(stack);
                let elsewhere: Vec<InterfaceAddress> = interfaces
                    .iter()
                    .filter(|entry| entry.interface != self.options.tun.as_str())
                    .cloned()
                    .collect();
                match grant.check(&self.options.routes, &elsewhere) {
                    Ok(()) => self.apply(grant, host),
                    Err(why) => {
                        log::error!(
                            "VPN client: refused the grant of server {}: {why}",
                            self.options.server
                        );
                        self.forget_grant(host);
                        self.last_error = Some(why.to_string());
                        self.phase = Phase::Unusable {
                            why,
                            until: now + MAX_RETRY,
                        };
                    }
                }
            }
            Ok((Message::Refusal(refusal), _)) => {
                self.drop_exchange(stack);
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

    /// Has the granted addresses put on the TUN device and the routes installed; the client is
    /// up once the host has done it. A grant the device has already needs nothing.
    fn apply(&mut self, grant: Grant, host: &mut HostOps) {
        self.phase = Phase::Configuring;
        self.configuring = Some(grant);
        if self.grant == Some(grant) && self.lease.is_some() {
            self.configured();
            return;
        }
        if self.routes_installed {
            self.routes_installed = false;
            host.push(HostOp::RemoveRoutes);
        }
        let mut addresses = Vec::new();
        if let Some((address, len)) = grant.ipv4 {
            addresses.push((IpAddr::V4(address), len));
        }
        if let Some((address, len)) = grant.ipv6 {
            addresses.push((IpAddr::V6(address), len));
        }
        host.push(HostOp::ConfigureTun {
            app: VpnApp::Client,
            name: self.options.tun.clone(),
            addresses,
            mtu: grant.mtu.min(super::TUN_MTU),
            replace: self.grant.is_some(),
        });
    }

    /// Takes what an earlier grant put on the host off it: its routes and the device's
    /// addresses.
    fn forget_grant(&mut self, host: &mut HostOps) {
        if self.routes_installed {
            self.routes_installed = false;
            host.push(HostOp::RemoveRoutes);
        }
        if self.grant.take().is_some() {
            host.push(HostOp::ConfigureTun {
                app: VpnApp::Client,
                name: self.options.tun.clone(),
                addresses: Vec::new(),
                mtu: super::TUN_MTU,
                replace: true,
            });
        }
        self.lease = None;
    }

    /// When [`VpnClient::poll`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting { until }
            | Phase::Refused { until, .. }
            | Phase::Unusable { until, .. }
            | Phase::AwaitingRoute { until } => Some(*until),
            Phase::Leasing { since } => Some(
                self.exchange
                    .as_ref()
                    .map_or(*since, |exchange| exchange.deadline),
            ),
            _ => None,
        }
    }

    /// Stops: releases the exchange, has the routes removed, the device closed and the mark
    /// taken off. The route to the server is the caller's to tear down.
    pub fn stop(mut self, stack: &mut MeshStack, host: &mut HostOps) {
        self.drop_exchange(stack);
        if self.routes_installed {
            host.push(HostOp::RemoveRoutes);
        }
        host.push(HostOp::CloseTun {
            app: VpnApp::Client,
        });
        if self.wants_mark() && self.phase != Phase::Opening {
            host.push(HostOp::MarkDatagrams(0));
        }
        log::info!("VPN client stopped, {} removed", self.options.tun);
    }

    /// The app's state.
    pub fn status(&self) -> ClientStatus {
        let state = match &self.phase {
            Phase::Opening => "starting".to_owned(),
            Phase::Up => "up".to_owned(),
            Phase::Leasing { .. } | Phase::Configuring => "leasing".to_owned(),
            Phase::Building { .. } | Phase::AwaitingRoute { .. } => "connecting".to_owned(),
            Phase::Unreachable { why, .. } => format!("unreachable: {why}"),
            Phase::Refused { refusal, .. } => format!("refused: {refusal}"),
            Phase::Unusable { why, .. } => format!("grant refused: {why}"),
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
