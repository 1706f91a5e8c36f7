//! Both VPN apps of one node: starting and stopping them, the host changes they ask for and
//! the answers, the packets between their TUN devices and the route sessions, and the routes
//! coming and going.

use std::sync::Arc;
use std::time::Instant;

use super::{ClientOptions, HostOps, ServerOptions, VpnClient, VpnError, VpnOptions, VpnServer};
use crate::api::vpn::{ClientStatus, ServerStatus, VpnApp, VpnStatus};
use crate::identity::NodeKey;
use crate::node::{RouteDownReason, RouteError, SetupId, INNER_MTU};
use crate::service::{Context, HostOp, HostResult, InterfaceAddress};

/// The VPN apps.
#[derive(Debug)]
pub struct VpnApps {
    options: VpnOptions,
    server: Option<VpnServer>,
    client: Option<VpnClient>,
    server_error: Option<Arc<VpnError>>,
    client_error: Option<Arc<VpnError>>,
    host: HostOps,
    /// The host's interface addresses, which the client checks a grant against.
    interfaces: Vec<InterfaceAddress>,
    /// Holds the segments of a large frame from a TUN device.
    scratch: Vec<u8>,
}

impl VpnApps {
    /// The apps, none running yet.
    pub fn new(options: VpnOptions) -> VpnApps {
        VpnApps {
            options,
            server: None,
            client: None,
            server_error: None,
            client_error: None,
            host: HostOps::default(),
            interfaces: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The host's interface addresses, as they are now.
    pub fn set_host_interfaces(&mut self, interfaces: Vec<InterfaceAddress>) {
        self.interfaces = interfaces;
    }

    /// The apps' configuration.
    pub fn options(&self) -> &VpnOptions {
        &self.options
    }

    /// Replaces the server app's options (a reloaded config): they are taken at its next
    /// start.
    pub fn set_server_options(&mut self, options: Option<ServerOptions>) {
        self.options.server = options;
    }

    /// Replaces the client app's options (a reloaded config): they are taken at its next
    /// start.
    pub fn set_client_options(&mut self, options: Option<ClientOptions>) {
        self.options.client = options;
    }

    /// Starts the apps the configuration starts with the node; a failure is logged and the
    /// node runs on.
    pub fn autostart(&mut self) {
        let server = self.options.server.as_ref().is_some_and(|o| o.start);
        let client = self.options.client.as_ref().is_some_and(|o| o.start);
        for (wanted, app) in [(server, VpnApp::Server), (client, VpnApp::Client)] {
            if wanted {
                if let Err(error) = self.start(app) {
                    log::error!("{error}");
                }
            }
        }
    }

    /// Starts one app: it runs once the host has made its changes ([`VpnApps::is_settled`]).
    /// A start that fails is also kept as the app's last error ([`VpnApps::start_error`]).
    pub fn start(&mut self, app: VpnApp) -> Result<(), Arc<VpnError>> {
        let name = app_name(app);
        if self.is_running(app) {
            return Err(VpnError::Running(name).into());
        }
        if !self.host.settled(app) {
            return Err(VpnError::Stopping(name).into());
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; INNER_MTU];
        }
        match app {
            VpnApp::Server => {
                let options = self
                    .options
                    .server
                    .clone()
                    .ok_or(VpnError::NotConfigured(name))?;
                self.server_error = None;
                match VpnServer::start(&options, &self.options.state_dir, &mut self.host) {
                    Ok(server) => self.server = Some(server),
                    Err(error) => {
                        let error = Arc::new(error);
                        self.server_error = Some(Arc::clone(&error));
                        return Err(error);
                    }
                }
            }
            VpnApp::Client => {
                let options = self
                    .options
                    .client
                    .clone()
                    .ok_or(VpnError::NotConfigured(name))?;
                self.client_error = None;
                self.client = Some(VpnClient::start(&options, &mut self.host));
            }
        }
        Ok(())
    }

    /// Whether `app` waits for no answer from the host: a start is complete (or failed), a
    /// stop is.
    pub fn is_settled(&self, app: VpnApp) -> bool {
        self.host.settled(app)
    }

    /// Whether `app` runs (or is starting).
    pub fn is_running(&self, app: VpnApp) -> bool {
        match app {
            VpnApp::Server => self.server.is_some(),
            VpnApp::Client => self.client.is_some(),
        }
    }

    /// Why `app`'s last start failed, if it did.
    pub fn start_error(&self, app: VpnApp) -> Option<Arc<VpnError>> {
        match app {
            VpnApp::Server => self.server_error.clone(),
            VpnApp::Client => self.client_error.clone(),
        }
    }

    /// Stops one app; says whether it ran. `keep_route` says whether another app uses the
    /// route to a peer, which then stays up.
    pub fn stop(
        &mut self,
        cx: &mut Context<'_>,
        app: VpnApp,
        keep_route: impl Fn(&NodeKey) -> bool,
    ) -> bool {
        match app {
            VpnApp::Server => {
                let Some(server) = self.server.take() else {
                    return false;
                };
                // Tearing their routes down tells the clients at once, so they lease again
                // from the next server that runs here.
                for client in server.clients() {
                    cx.node.remove_route(cx.now, &client);
                }
                server.stop(cx.stack, &mut self.host);
            }
            VpnApp::Client => {
                let Some(client) = self.client.take() else {
                    return false;
                };
                let server = client.server();
                client.stop(cx.stack, &mut self.host);
                let initiator = cx
                    .node
                    .routes()
                    .any(|(peer, route)| *peer == server && route.initiator);
                if initiator && !keep_route(&server) {
                    cx.node.remove_route(cx.now, &server);
                }
            }
        }
        true
    }

    /// Stops both apps (the node is stopping).
    pub fn shutdown(&mut self, cx: &mut Context<'_>, keep_route: impl Fn(&NodeKey) -> bool) {
        self.stop(cx, VpnApp::Client, &keep_route);
        self.stop(cx, VpnApp::Server, &keep_route);
    }

    /// The host's answer to a change an app asked for.
    pub fn handle_host_result(&mut self, cx: &mut Context<'_>, result: HostResult) {
        self.host.answered(&result);
        match result.app() {
            VpnApp::Server => {
                let Some(server) = self.server.as_mut() else {
                    return;
                };
                if let Err(error) = server.handle_host_result(cx.stack, result, &mut self.host) {
                    log::error!("{error}");
                    self.server_error = Some(Arc::new(error));
                    if let Some(server) = self.server.take() {
                        server.stop(cx.stack, &mut self.host);
                    }
                }
            }
            VpnApp::Client => {
                let Some(client) = self.client.as_mut() else {
                    return;
                };
                if let Err(error) = client.handle_host_result(cx.now, result, &mut self.host) {
                    // Only the device's creation ends a start: there is nothing to undo.
                    log::error!("{error}");
                    self.client_error = Some(Arc::new(error));
                    self.client = None;
                }
            }
        }
    }

    /// The next host change for the driver.
    pub fn poll_host_op(&mut self) -> Option<HostOp> {
        self.host.pop()
    }

    /// A frame `app`'s TUN device gave.
    pub fn handle_tun_frame(&mut self, cx: &mut Context<'_>, app: VpnApp, frame: &mut [u8]) {
        let scratch = &mut self.scratch;
        match app {
            VpnApp::Server => {
                if let Some(server) = self.server.as_mut() {
                    server.handle_tun_frame(cx.node, frame, scratch);
                }
            }
            VpnApp::Client => {
                if let Some(client) = self.client.as_mut() {
                    client.handle_tun_frame(cx.node, frame, scratch);
                }
            }
        }
    }

    /// A packet a route session delivered that is not for the mesh stack.
    pub fn handle_tunnel_packet(&mut self, peer: NodeKey, packet: &[u8]) {
        if let Some(client) = self.client.as_mut() {
            if client.server() == peer {
                client.handle_packet(&peer, packet);
                return;
            }
        }
        match self.server.as_mut() {
            Some(server) => server.handle_packet(&peer, packet),
            None => log::debug!("tunnel packet from {peer} dropped: no VPN server runs"),
        }
    }

    /// Finishes the frames joined from this wake-up's packets, for
    /// [`VpnApps::poll_tun_write`].
    pub fn finish_frames(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.finish_frames();
        }
        if let Some(client) = self.client.as_mut() {
            client.finish_frames();
        }
    }

    /// The next frame for a TUN device, lent until the next call: the server's, then the
    /// client's.
    pub fn poll_tun_write(&mut self) -> Option<(VpnApp, &[u8])> {
        if let Some(frame) = self.server.as_mut().and_then(VpnServer::next_frame) {
            return Some((VpnApp::Server, frame));
        }
        let frame = self.client.as_mut().and_then(VpnClient::next_frame)?;
        Some((VpnApp::Client, frame))
    }

    pub(crate) fn route_failed(&mut self, now: Instant, setup: SetupId, error: &RouteError) {
        if let Some(client) = self.client.as_mut() {
            client.route_failed(now, setup, error);
        }
    }

    pub(crate) fn route_down(
        &mut self,
        cx: &mut Context<'_>,
        peer: &NodeKey,
        reason: RouteDownReason,
    ) {
        if let Some(server) = self.server.as_mut() {
            server.route_down(peer);
        }
        if let Some(client) = self.client.as_mut() {
            client.route_down(cx.now, peer, reason, cx.stack);
        }
    }

    /// Lease exchanges and client retries; runs after the stack.
    pub fn poll(&mut self, cx: &mut Context<'_>) {
        if let Some(server) = self.server.as_mut().filter(|server| server.is_running()) {
            while let Some((handle, remote)) = cx.stack.poll_accept_on(server.port()) {
                let peer = cx.node.peer_at(*remote.ip());
                server.accept(cx.now, cx.stack, handle, peer);
            }
            server.poll_exchanges(cx.now, cx.stack, &mut self.host);
        }
        if let Some(client) = self.client.as_mut() {
            client.poll(cx.now, cx.node, cx.stack, &mut self.host, &self.interfaces);
        }
    }

    /// When [`VpnApps::poll`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let server = self.server.as_ref().and_then(VpnServer::next_deadline);
        let client = self.client.as_ref().and_then(VpnClient::next_deadline);
        server.into_iter().chain(client).min()
    }

    /// Both apps' state.
    pub fn status(&self) -> VpnStatus {
        let stopped = |error: &Option<Arc<VpnError>>| match error {
            Some(error) => format!("failed: {error}"),
            None => "stopped".to_owned(),
        };
        VpnStatus {
            server: self.options.server.as_ref().map(|options| {
                self.server
                    .as_ref()
                    .map(VpnServer::status)
                    .unwrap_or_else(|| ServerStatus {
                        state: stopped(&self.server_error),
                        tun: options.tun.to_string(),
                        ipv4: None,
                        ipv6: None,
                        clients: Vec::new(),
                        drops: Default::default(),
                    })
            }),
            client: self.options.client.as_ref().map(|options| {
                self.client
                    .as_ref()
                    .map(VpnClient::status)
                    .unwrap_or_else(|| ClientStatus {
                        state: stopped(&self.client_error),
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
}

/// The app's name in messages and the config.
fn app_name(app: VpnApp) -> &'static str {
    match app {
        VpnApp::Server => "server",
        VpnApp::Client => "client",
    }
}
