//! The dataplane's side of the VPN apps: starting and stopping them, their TUN devices as mio
//! sources, packets between the TUN devices and the route sessions, and their requests.

use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::socket::{self, sockopt};

use super::Dataplane;
use crate::api::vpn::{ClientStatus, ServerStatus, VpnApp, VpnStatus};
use crate::identity::NodeKey;
use crate::node::SetupId;
use crate::vpn::{routes, VpnClient, VpnError, VpnOptions, VpnServer};

/// The server's TUN device.
pub(super) const TUN_SERVER: Token = Token(8);
/// The client's TUN device.
pub(super) const TUN_CLIENT: Token = Token(9);
/// Packets read from one TUN device per wake-up before the loop looks at its other work.
const TUN_BUDGET: usize = 256;
/// Room for the largest frame a TUN device hands out: a 64 KiB segment and its header.
const TUN_BUFFER: usize = 65_536 + crate::vpn::offload::VNET_HDR_LEN;

/// The VPN apps of one dataplane.
#[derive(Debug)]
pub(super) struct VpnApps {
    options: VpnOptions,
    server: Option<VpnServer>,
    client: Option<VpnClient>,
    server_error: Option<String>,
    client_error: Option<String>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl VpnApps {
    /// The apps, none running yet; removes what a killed daemon's client left behind.
    pub(super) fn new(options: VpnOptions) -> VpnApps {
        routes::clear_leftovers(&options.state_dir);
        VpnApps {
            options,
            server: None,
            client: None,
            server_error: None,
            client_error: None,
            buf: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl Dataplane {
    /// Starts the apps the configuration starts with the dataplane; a failure is logged and
    /// the node runs on.
    pub(super) fn vpn_autostart(&mut self, now: Instant) {
        let server = self.vpn.options.server.as_ref().is_some_and(|o| o.start);
        let client = self.vpn.options.client.as_ref().is_some_and(|o| o.start);
        for (wanted, app) in [(server, VpnApp::Server), (client, VpnApp::Client)] {
            if wanted {
                if let Err(error) = self.vpn_start(now, app) {
                    log::error!("{error}");
                }
            }
        }
    }

    /// Starts one app.
    pub(super) fn vpn_start(&mut self, now: Instant, app: VpnApp) -> Result<(), VpnError> {
        match app {
            VpnApp::Server => {
                if self.vpn.server.is_some() {
                    return Err(VpnError::Running("server"));
                }
                let options = self
                    .vpn
                    .options
                    .server
                    .clone()
                    .ok_or(VpnError::NotConfigured("server"))?;
                let started =
                    VpnServer::start(&options, &self.vpn.options.state_dir, &mut self.stack)
                        .and_then(|server| {
                            let fd = server.tun().as_raw_fd();
                            self.poll
                                .registry()
                                .register(&mut SourceFd(&fd), TUN_SERVER, Interest::READABLE)
                                .map_err(VpnError::Register)?;
                            Ok(server)
                        });
                self.vpn.server_error = started.as_ref().err().map(ToString::to_string);
                let server = started?;
                self.vpn.server = Some(server);
            }
            VpnApp::Client => {
                if self.vpn.client.is_some() {
                    return Err(VpnError::Running("client"));
                }
                let options = self
                    .vpn
                    .options
                    .client
                    .clone()
                    .ok_or(VpnError::NotConfigured("client"))?;
                let started = VpnClient::start(&options, &self.vpn.options.state_dir, now)
                    .and_then(|client| {
                        let fd = client.tun().as_raw_fd();
                        self.poll
                            .registry()
                            .register(&mut SourceFd(&fd), TUN_CLIENT, Interest::READABLE)
                            .map_err(VpnError::Register)?;
                        Ok(client)
                    });
                self.vpn.client_error = started.as_ref().err().map(ToString::to_string);
                let client = started?;
                if client.wants_mark() {
                    self.set_mark(routes::FWMARK);
                }
                self.vpn.client = Some(client);
            }
        }
        Ok(())
    }

    /// Stops one app; says whether it ran.
    pub(super) fn vpn_stop(&mut self, now: Instant, app: VpnApp) -> bool {
        match app {
            VpnApp::Server => {
                let Some(server) = self.vpn.server.take() else {
                    return false;
                };
                let fd = server.tun().as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                // Tearing their routes down tells the clients at once, so they lease again
                // from the next server that runs here.
                for client in server.clients() {
                    self.node.remove_route(now, &client);
                }
                server.stop(&mut self.stack);
            }
            VpnApp::Client => {
                let Some(client) = self.vpn.client.take() else {
                    return false;
                };
                let fd = client.tun().as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                let server = client.server();
                let marked = client.wants_mark();
                client.stop(&mut self.stack);
                if marked {
                    self.set_mark(0);
                }
                let initiator = self
                    .node
                    .routes()
                    .any(|(peer, route)| *peer == server && route.initiator);
                if initiator && !self.socks.uses_route(&server) {
                    self.node.remove_route(now, &server);
                }
            }
        }
        true
    }

    /// Marks (or unmarks, with 0) the node's datagrams so that policy routing keeps them out
    /// of the tunnel.
    fn set_mark(&self, mark: u32) {
        if let Err(error) = socket::setsockopt(&self.socket, sockopt::Mark, &mark) {
            log::warn!("cannot mark the node's UDP datagrams ({error}): the tunnel may carry its own transports");
        }
    }

    /// Reads the TUN devices that are readable; says whether either has more waiting.
    pub(super) fn vpn_read(&mut self, server: bool, client: bool) -> bool {
        if self.vpn.buf.is_empty() && (self.vpn.server.is_some() || self.vpn.client.is_some()) {
            self.vpn.buf = vec![0; TUN_BUFFER];
            self.vpn.scratch = vec![0; crate::node::INNER_MTU];
        }
        let mut more = false;
        if server {
            if let Some(app) = self.vpn.server.as_mut() {
                more |= app.read_tun(
                    &mut self.node,
                    &mut self.vpn.buf,
                    &mut self.vpn.scratch,
                    TUN_BUDGET,
                );
            }
        }
        if client {
            if let Some(app) = self.vpn.client.as_mut() {
                more |= app.read_tun(
                    &mut self.node,
                    &mut self.vpn.buf,
                    &mut self.vpn.scratch,
                    TUN_BUDGET,
                );
            }
        }
        more
    }

    /// A packet a route session delivered that is not for the mesh stack.
    pub(super) fn vpn_tunnel_packet(&mut self, peer: NodeKey, packet: &[u8]) {
        if let Some(client) = self.vpn.client.as_mut() {
            if client.server() == peer {
                client.handle_packet(&peer, packet);
                return;
            }
        }
        match self.vpn.server.as_mut() {
            Some(server) => server.handle_packet(&peer, packet),
            None => log::debug!("tunnel packet from {peer} dropped: no VPN server runs"),
        }
    }

    /// Writes the packets the route sessions delivered in this wake-up to the TUN devices.
    pub(super) fn vpn_flush(&mut self) {
        if let Some(server) = self.vpn.server.as_mut() {
            server.flush_tun();
        }
        if let Some(client) = self.vpn.client.as_mut() {
            client.flush_tun();
        }
    }

    pub(super) fn vpn_route_ready(&mut self, peer: &NodeKey) {
        if let Some(client) = self.vpn.client.as_mut() {
            client.route_ready(peer);
        }
    }

    pub(super) fn vpn_route_failed(&mut self, now: Instant, setup: SetupId, error: &str) {
        if let Some(client) = self.vpn.client.as_mut() {
            client.route_failed(now, setup, error);
        }
    }

    pub(super) fn vpn_route_down(&mut self, now: Instant, peer: &NodeKey) {
        if let Some(server) = self.vpn.server.as_mut() {
            server.route_down(peer);
        }
        if let Some(client) = self.vpn.client.as_mut() {
            client.route_down(now, peer, &mut self.stack);
        }
    }

    /// Lease exchanges and client retries; runs after the stack.
    pub(super) fn vpn_poll(&mut self, now: Instant) {
        if let Some(server) = self.vpn.server.as_mut() {
            while let Some((handle, remote)) = self.stack.poll_accept_on(server.port()) {
                let peer = self
                    .node
                    .routes()
                    .map(|(peer, _)| *peer)
                    .find(|peer| peer.mesh_address() == *remote.ip());
                server.accept(now, &mut self.stack, handle, peer);
            }
            server.poll_exchanges(now, &mut self.stack);
        }
        if let Some(client) = self.vpn.client.as_mut() {
            client.poll(now, &mut self.node, &mut self.stack);
        }
    }

    pub(super) fn vpn_next_deadline(&self) -> Option<Instant> {
        let server = self.vpn.server.as_ref().and_then(VpnServer::next_deadline);
        let client = self.vpn.client.as_ref().and_then(VpnClient::next_deadline);
        server.into_iter().chain(client).min()
    }

    pub(super) fn vpn_status(&self) -> VpnStatus {
        let stopped = |error: &Option<String>| match error {
            Some(error) => format!("failed: {error}"),
            None => "stopped".to_owned(),
        };
        VpnStatus {
            server: self.vpn.options.server.as_ref().map(|options| {
                self.vpn
                    .server
                    .as_ref()
                    .map(VpnServer::status)
                    .unwrap_or_else(|| ServerStatus {
                        state: stopped(&self.vpn.server_error),
                        tun: options.tun.to_string(),
                        ipv4: None,
                        ipv6: None,
                        clients: Vec::new(),
                        drops: Default::default(),
                    })
            }),
            client: self.vpn.options.client.as_ref().map(|options| {
                self.vpn
                    .client
                    .as_ref()
                    .map(VpnClient::status)
                    .unwrap_or_else(|| ClientStatus {
                        state: stopped(&self.vpn.client_error),
                        server: options.server,
                        tun: options.tun.to_string(),
                        ipv4: None,
                        ipv6: None,
                        mtu: None,
                        routes: options.routes.iter().map(ToString::to_string).collect(),
                        reconnects: 0,
                        tx: Default::default(),
                        rx: Default::default(),
                        drops: Default::default(),
                    })
            }),
        }
    }

    /// Stops both apps (the daemon is stopping).
    pub(super) fn vpn_shutdown(&mut self, now: Instant) {
        self.vpn_stop(now, VpnApp::Client);
        self.vpn_stop(now, VpnApp::Server);
    }
}
