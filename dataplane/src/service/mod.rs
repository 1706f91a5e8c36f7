//! The dataplane as one sans-IO service: the node, its mesh stack, the built-in apps (VPN,
//! The dataplane as one sans-IO service: the node, its mesh stack, the built-in apps (VPN,
//! SOCKS, the messenger, mesh ping), the app socket's connections, the services the node
//! offers, the route builds waiting on their routes, and the control requests. Inputs come in
//! with `now` (datagrams, TUN frames, kernel-socket events, app connections, name lookups,
//! answers from the host and the message store, requests); outputs are polled (datagrams, TUN
//! frames, socket operations, lookups, host changes, message-store operations, replies, the
//! next timeout and why). Whoever drives it (the mio driver, or the simulator) does every piece
//! of I/O.

mod configure;
mod control;
mod io;
mod ping;
mod services;
pub(crate) mod sockets;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use io::{
    HostOp, HostResult, InterfaceAddress, Lookup, LookupId, SocketEvent, SocketId, SocketOp,
    StoreOp, StoreResult,
};

use crate::api::app_socket::AppId;
use crate::api::messenger::WatchEnd;
use crate::api::vpn::VpnApp;
use crate::api::{RequestId, Response};
use crate::app_socket::{AppSocket, AppSocketOptions};
use crate::identity::NodeKey;
use crate::messenger::{Messenger, MessengerOptions};
use crate::node::{Event, Node, NodeOptions, RouteStatus, SendToError};
use crate::outbox::Datagram;
use crate::socks::{Socks, SocksError, SocksOptions};
use crate::stack::MeshStack;
use crate::transport::TransportError;
use crate::vpn::{VpnApps, VpnOptions};

use control::Control;
use services::{is_own_port, Offer};
use sockets::{Owner, Sockets};

/// What the service is made of.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The node core's options.
    pub node: NodeOptions,
    /// The VPN apps (none by default).
    pub vpn: VpnOptions,
    /// The SOCKS apps (none by default).
    pub socks: SocksOptions,
    /// The messenger (none by default).
    pub messenger: MessengerOptions,
    /// The app socket's limits and timeouts.
    pub app_socket: AppSocketOptions,
}

/// Packets the service itself dropped (the node counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceDrops {
    /// Packets for the mesh stack that it refused: its queue was full, or they were not
    /// whole TCP or ICMPv6 packets.
    pub stack_refused: u64,
    /// Packets the mesh stack sent to a node with no route: none at all, or one being
    /// repaired (a lingering route session alone does not carry them).
    pub stack_unroutable: u64,
}

/// What an app borrows from the service for one call.
#[derive(Debug)]
pub struct Context<'a> {
    /// The time of this call.
    pub now: Instant,
    /// The node: its routes and sessions.
    pub node: &'a mut Node,
    /// The mesh stack.
    pub stack: &'a mut MeshStack,
}

/// The dataplane service.
#[derive(Debug)]
pub struct Service {
    node: Node,
    stack: MeshStack,
    vpn: VpnApps,
    socks: Socks,
    messenger: Messenger,
    /// The kernel sockets the apps use, by id.
    sockets: Sockets,
    app_socket: AppSocket,
    /// What the node's advert offers, as last put there.
    offer: Option<Offer>,
    control: Control,
    drops: ServiceDrops,
    /// The mesh stack's send queue filled up at the last poll: more waits to be sent.
    stack_backlog: bool,
}

impl Service {
    /// The service of a node whose UDP socket is bound to `local`; `rng` draws the node's
    /// route ids, setup ids and probe nonces, and seeds the messenger's message ids. Nothing
    /// runs until [`Service::start`].
    pub fn new(
        options: ServiceOptions,
        local: SocketAddr,
        now: Instant,
        mut rng: Box<dyn rand_core::RngCore + Send>,
    ) -> Result<Service, TransportError> {
        let key = options.node.secret.public();
        let mut message_seed = [0u8; 32];
        rng.fill_bytes(&mut message_seed);
        let node = Node::new(options.node, now, rng)?;
        let ident = u16::from_be_bytes([key.as_bytes()[0], key.as_bytes()[1]]);
        Ok(Service {
            stack: MeshStack::new(key.mesh_address(), ident, now),
            node,
            vpn: VpnApps::new(options.vpn),
            socks: Socks::new(options.socks, now),
            messenger: Messenger::new(options.messenger, message_seed),
            sockets: Sockets::default(),
            app_socket: AppSocket::new(options.app_socket),
            offer: None,
            control: Control::new(now, local),
            drops: ServiceDrops::default(),
            stack_backlog: false,
        })
    }

    // ----- getters -----

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Packets the service dropped, by reason.
    pub fn drops(&self) -> ServiceDrops {
        self.drops
    }

    /// Whether the messenger runs (it is configured and takes messages): for the services
    /// this node offers.
    pub fn messenger_running(&self) -> bool {
        self.messenger.is_running()
    }

    /// Whether a shutdown is complete: every output after it is the last.
    pub fn is_stopped(&self) -> bool {
        self.control.is_shutting_down() && self.vpn_settled() && self.messenger.is_settled()
    }

    fn vpn_settled(&self) -> bool {
        self.vpn.is_settled(VpnApp::Server) && self.vpn.is_settled(VpnApp::Client)
    }

    // ----- input -----

    /// How far the UDP socket has been read ([`Node::set_input_read_until`]).
    pub fn set_input_read_until(&mut self, at: Instant) {
        self.node.set_input_read_until(at);
    }

    /// A datagram from the UDP socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.node.handle_datagram(now, from, datagram);
    }

    /// A frame `app`'s TUN device gave (worked on in place).
    pub fn handle_tun_frame(&mut self, now: Instant, app: VpnApp, frame: &mut [u8]) {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.vpn.handle_tun_frame(&mut cx, app, frame);
    }

    /// A connection arrived on the listening socket `listener` from `from`: the id the driver
    /// holds the new stream under, or `None` when it is to be closed at once.
    pub fn handle_accepted(
        &mut self,
        now: Instant,
        listener: SocketId,
        from: SocketAddr,
    ) -> Option<SocketId> {
        self.socks
            .handle_accepted(now, &mut self.sockets, listener, from)
    }

    /// What happened on a kernel socket: an operation's answer, or readiness.
    pub fn handle_socket(&mut self, now: Instant, socket: SocketId, event: SocketEvent) {
        let Some(owner) = self.sockets.owner(socket) else {
            return;
        };
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        let listening = matches!(event, SocketEvent::Listening(_));
        match owner {
            Owner::App(number) => {
                let (socks, vpn) = (&self.socks, &self.vpn);
                let own_port = |port| is_own_port(socks, vpn, port);
                self.app_socket
                    .handle_socket(&mut cx, &mut self.sockets, number, event, &own_port);
            }
            _ => self
                .socks
                .handle_socket(&mut cx, &mut self.sockets, socket, owner, event),
        }
        if listening {
            self.answer_deferred(now);
        }
    }

    /// A launched app's connection to the app socket (`app`'s, or a process of its tree's),
    /// which the driver holds from now on: the id it holds it under, or `None` when it is to
    /// be closed at once (the node is stopping).
    pub fn handle_app_connection(&mut self, now: Instant, app: AppId) -> Option<SocketId> {
        if self.control.is_shutting_down() {
            return None;
        }
        Some(
            self.app_socket
                .handle_connection(now, &mut self.sockets, app),
        )
    }

    /// The answer to a name lookup: the addresses, none when the name did not resolve.
    pub fn handle_resolved(&mut self, now: Instant, lookup: LookupId, addresses: Vec<SocketAddr>) {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.socks
            .handle_resolved(&mut cx, &mut self.sockets, lookup, addresses);
    }

    /// The host's answer to a change the service asked for.
    pub fn handle_host_result(&mut self, now: Instant, result: HostResult) {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.vpn.handle_host_result(&mut cx, result);
        self.answer_deferred(now);
    }

    /// The driver's answer to a message-store operation.
    pub fn handle_store_result(&mut self, now: Instant, result: StoreResult) {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.messenger.handle_store_result(&mut cx, result);
    }

    /// The addresses of the host's interfaces, read at start and whenever they change: the
    /// SOCKS server does not dial them, and the VPN client takes no grant inside their
    /// networks.
    pub fn handle_interfaces(&mut self, addresses: Vec<InterfaceAddress>) {
        self.socks
            .set_host_addresses(addresses.iter().map(|entry| entry.address).collect());
        self.vpn.set_host_interfaces(addresses);
    }

    // ----- work -----

    /// Starts the apps the configuration starts with the node. A SOCKS server that cannot
    /// listen fails at once; a SOCKS client's port is bound by the driver:
    /// [`Service::take_socks_error`] tells whether it could be. VPN failures are logged and
    /// shown in their status.
    pub fn start(&mut self, now: Instant) -> Result<(), SocksError> {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.socks.start_enabled(&mut cx, &mut self.sockets)?;
        self.messenger.start(&mut cx);
        self.vpn.autostart();
        Ok(())
    }

    /// Why the SOCKS client's last start failed, once.
    pub fn take_socks_error(&mut self) -> Option<SocksError> {
        self.socks.take_start_error()
    }

    /// Runs what is due and what the inputs since the last call made necessary: timers, the
    /// node's events, pings and route builds, the apps, the mesh stack. Call after a batch of
    /// inputs and whenever [`Service::poll_timeout`] comes, then drain the outputs.
    pub fn poll(&mut self, now: Instant) {
        if self.node.poll_timeout().0 <= now {
            self.node.handle_timeout(now);
        }
        while let Some(event) = self.node.poll_event() {
            self.handle_event(now, event);
        }
        self.start_routed_pings(now);
        self.control.drive_pings(now, &mut self.stack);
        self.expire_builds(now);
        let mut full = self.run_stack(now);
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        self.socks.pump(&mut cx, &mut self.sockets);
        self.messenger.pump(&mut cx);
        let (socks, vpn) = (&self.socks, &self.vpn);
        let own_port = |port| is_own_port(socks, vpn, port);
        self.app_socket.pump(&mut cx, &mut self.sockets, &own_port);
        self.vpn.poll(&mut cx);
        full |= self.run_stack(now);
        while let Some((from, seq)) = self.stack.poll_pong() {
            self.control.record_pong(now, from, seq);
        }
        self.finish_pings(now);
        self.vpn.finish_frames();
        self.update_services(now);
        self.answer_deferred(now);
        self.stack_backlog = full;
    }

    /// Tears everything down: the apps stop, and the routes this node built are torn down.
    /// The service is stopped ([`Service::is_stopped`]) once the host has undone the apps'
    /// changes.
    pub fn shutdown(&mut self, now: Instant) {
        if self.control.is_shutting_down() {
            return;
        }
        self.control.begin_shutdown();
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        let socks = &self.socks;
        self.vpn.shutdown(&mut cx, |peer| socks.uses_route(peer));
        let _ = self.socks.stop(&mut cx, &mut self.sockets, None);
        self.messenger.stop(&mut cx, WatchEnd::Stopping);
        self.app_socket.close_all(&mut cx, &mut self.sockets);
        self.run_stack(now);
        let peers: Vec<NodeKey> = self
            .node
            .routes()
            .filter(|(_, route)| route.initiator)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in peers {
            self.node.remove_route(now, &peer);
        }
        log::info!("dataplane stopping");
    }

    /// Polls the mesh stack and carries what it sends to the route sessions; says whether its
    /// send queue filled up, so that more waits.
    fn run_stack(&mut self, now: Instant) -> bool {
        let full = self.stack.poll(now);
        while let Some((dst, packet)) = self.stack.poll_transmit() {
            match self.node.peer_at(dst) {
                Some(peer) => match self.node.send_to(&peer, packet) {
                    Ok(()) => {}
                    Err(error @ (SendToError::NoRoute | SendToError::Repairing)) => {
                        self.drops.stack_unroutable += 1;
                        log::debug!("mesh stack packet to {dst}: {error}");
                    }
                    Err(error) => log::debug!("mesh stack packet to {dst} not sent: {error}"),
                },
                None => {
                    self.drops.stack_unroutable += 1;
                    log::debug!("mesh stack packet to {dst}: no route");
                }
            }
        }
        full
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        if !matches!(event, Event::Packet { .. } | Event::TunnelPacket { .. }) {
            self.socks.handle_event(&mut cx, &mut self.sockets, &event);
            self.messenger.handle_event(&mut cx, &event);
            self.app_socket
                .handle_event(&mut cx, &mut self.sockets, &event);
        }
        match event {
            Event::Packet { mut packet, .. } => {
                if !self.stack.can_receive() {
                    self.run_stack(now);
                }
                if !self.stack.receive(&mut packet) {
                    self.drops.stack_refused += 1;
                }
                // The stack's spare buffer, or the refused packet's.
                self.node.recycle_packet(packet);
            }
            Event::TunnelPacket { peer, packet } => {
                self.vpn.handle_tunnel_packet(peer, &packet);
                self.node.recycle_packet(packet);
            }
            Event::RouteReady { peer } => {
                log::info!("route to {peer} is ready");
                self.route_ready(peer);
            }
            Event::RouteFailed { setup, peer, error } => {
                self.vpn.route_failed(now, setup, &error);
                self.route_failed(setup, peer, &error);
            }
            Event::RouteDown { peer, reason } => {
                log::info!("route to {peer} is down: {reason}");
                self.vpn.route_down(&mut cx, &peer, reason);
                // A setup of its own to that peer may still be under way: it answers its
                // requests itself.
                let settled = self.node.route_status(&peer) == RouteStatus::Absent;
                self.control.route_down(now, &peer, reason, settled);
            }
            Event::LinkUp { neighbour } => log::info!("link to {neighbour} is up"),
            Event::LinkDown { neighbour } => log::warn!("link to {neighbour} is down"),
        }
    }

    // ----- output -----

    /// The next datagram to send. Give it back with [`Service::recycle`] once sent.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.node.poll_transmit()
    }

    /// Returns a sent datagram's buffer for reuse.
    pub fn recycle(&mut self, datagram: Datagram) {
        self.node.recycle(datagram);
    }

    /// The next frame to write to a TUN device, lent until the next call.
    pub fn poll_tun_write(&mut self) -> Option<(VpnApp, &[u8])> {
        self.vpn.poll_tun_write()
    }

    /// The next kernel-socket operation. Answer it (all but a close) with
    /// [`Service::handle_socket`] before asking for the next.
    pub fn poll_socket_op(&mut self) -> Option<SocketOp<'_>> {
        if let Some(op) = self.sockets.next_queued_op() {
            return Some(op);
        }
        // Find the next socket with I/O due, then lend it its buffer.
        let (owner, io) = loop {
            let socket = self.sockets.next_woken()?;
            let Some(owner) = self.sockets.owner(socket) else {
                continue;
            };
            let io = match owner {
                Owner::App(number) => self.app_socket.next_io(&mut self.stack, number),
                _ => self.socks.next_io(&mut self.stack, owner),
            };
            if let Some(io) = io {
                break (owner, io);
            }
        };
        match owner {
            Owner::App(number) => self.app_socket.lend(&mut self.stack, number, io),
            _ => self.socks.lend(&mut self.stack, owner, io),
        }
    }

    /// The next name to resolve.
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.socks.poll_lookup()
    }

    /// The next change to make to the host.
    pub fn poll_host_op(&mut self) -> Option<HostOp> {
        self.vpn.poll_host_op()
    }

    /// The next message-store operation.
    pub fn poll_store_op(&mut self) -> Option<StoreOp> {
        self.messenger.poll_store_op()
    }

    /// The next reply to a control request.
    pub fn poll_reply(&mut self) -> Option<(RequestId, Response)> {
        self.control
            .poll_reply()
            .or_else(|| self.messenger.poll_reply())
    }

    /// When [`Service::poll`] must run next, and why.
    pub fn poll_timeout(&mut self, now: Instant) -> (Instant, &'static str) {
        let mut next = self.node.poll_timeout();
        let mut consider = |at: Option<Instant>, reason: &'static str| {
            if let Some(at) = at {
                if at < next.0 {
                    next = (at, reason);
                }
            }
        };
        if self.stack_backlog {
            consider(Some(now), "mesh stack backlog");
        }
        if self.sockets.has_work() {
            consider(Some(now), "kernel socket work");
        }
        consider(
            self.stack
                .poll_delay(now)
                .map(|delay| now + delay.min(Duration::from_secs(3600))),
            "mesh stack",
        );
        consider(self.socks.poll_timeout(), "SOCKS apps");
        consider(self.messenger.poll_timeout(now), "messenger");
        consider(self.app_socket.poll_timeout(), "app socket");
        consider(self.vpn.next_deadline(), "VPN apps");
        consider(self.control.next_deadline(), "pings and route builds");
        next
    }
}
