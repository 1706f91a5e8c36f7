//! The control requests: the one place where the control thread's requests are read and its
//! replies are written. Most are answered at once; a route build, a ping (which may build its
//! route first), and the start or stop of an app are answered when they are done.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::ping::{PingOutcome, Pings};
use super::{Context, Service};
use crate::api::topology::{AdvertCounts, FoundRoute, LinkRow, NodeRow, NodesReply};
use crate::api::vpn::VpnApp;
use crate::api::{
    AppChange, BuiltinApp, MeshTcpStatus, NeighbourChange, NeighbourReply, PingReply, Reply,
    Request, RequestError, RequestId, Response, RouteRow, RoutesReply, RuleRow, StatusReply,
    TransportRow, TransportsReply,
};
use crate::identity::NodeKey;
use crate::node::{EndRoute, Node, RouteDownReason, RouteError, RouteWait, SetupId};
use crate::routing::Rule;
use crate::stack::{MeshStack, MAX_TCP_SOCKETS};
use crate::transport::TransportError;
use crate::wire::ServiceEntry;

/// How long a route may take from setup request to being proven end to end (the node gives up
/// sooner itself: this bounds what the control client waits whatever happens).
const BUILD_TIMEOUT: Duration = Duration::from_secs(15);

/// A request waiting for its route to be ready: `setup` is the one it started, if any (a
/// ping may wait for a setup or a repair under way).
#[derive(Debug)]
struct PendingBuild {
    request: RequestId,
    setup: Option<SetupId>,
    peer: NodeKey,
    deadline: Instant,
    then: AfterBuild,
}

/// What a request that waits on a route build does once the route is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterBuild {
    /// Answers with the route (`build_route`).
    Answer,
    /// Pings the peer over it (`ping_node` with no route to the peer ready yet). It asks the
    /// node for the route at every poll, as the apps do (`Service::start_routed_pings`).
    Ping {
        /// How many echo requests.
        count: u32,
    },
}

/// A request answered once an app has done what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deferred {
    /// Answered once the VPN app has started or failed to.
    VpnStart(VpnApp),
    /// Answered once the VPN app's host changes are undone.
    VpnStop(VpnApp),
    /// Answered once the SOCKS client's port is bound, or could not be.
    SocksStart,
    /// Answered once the app has stopped and started as its new configuration says
    /// (`Service::app_configured`).
    AppConfigured {
        app: BuiltinApp,
        change: AppChange,
        /// The VPN app's start is still to be made, once its stop is complete.
        start_due: bool,
    },
    /// Answered once the service has stopped.
    Shutdown,
}

/// The requests in progress and the replies not yet taken.
#[derive(Debug)]
pub(super) struct Control {
    started: Instant,
    local: SocketAddr,
    builds: Vec<PendingBuild>,
    pings: Pings,
    deferred: Vec<(RequestId, Deferred)>,
    replies: VecDeque<(RequestId, Response)>,
    shutting_down: bool,
}

impl Control {
    pub fn new(now: Instant, local: SocketAddr) -> Control {
        Control {
            started: now,
            local,
            builds: Vec::new(),
            pings: Pings::default(),
            deferred: Vec::new(),
            replies: VecDeque::new(),
            shutting_down: false,
        }
    }

    pub fn poll_reply(&mut self) -> Option<(RequestId, Response)> {
        self.replies.pop_front()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    pub fn drive_pings(&mut self, now: Instant, stack: &mut MeshStack) {
        self.pings.drive(now, stack);
    }

    pub fn record_pong(&mut self, now: Instant, from: Ipv6Addr, seq: u16) {
        self.pings.record(now, from, seq);
    }

    /// When a ping or a route build has something due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let builds = self.builds.iter().map(|build| build.deadline).min();
        match (builds, self.pings.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn reply(&mut self, request: RequestId, reply: Response) {
        self.replies.push_back((request, reply));
    }

    /// Holds `request` until the route to `peer` is ready, or setup `setup` (when it started
    /// one) fails.
    fn wait_for_route(
        &mut self,
        now: Instant,
        request: RequestId,
        setup: Option<SetupId>,
        peer: NodeKey,
        then: AfterBuild,
    ) {
        self.builds.push(PendingBuild {
            request,
            setup,
            peer,
            deadline: now + BUILD_TIMEOUT,
            then,
        });
    }

    /// The route to `peer` went down: the pings over it end and, when nothing else is under
    /// way to `peer` (`settled`: a repair that found no other path), the requests waiting for
    /// a route there are answered.
    pub fn route_down(
        &mut self,
        now: Instant,
        peer: &NodeKey,
        reason: RouteDownReason,
        settled: bool,
    ) {
        self.pings.route_down(now, peer);
        if !settled {
            return;
        }
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.builds.drain(..).partition(|build| build.peer == *peer);
        self.builds = waiting;
        for build in done {
            self.reply(
                build.request,
                Err(RequestError::RouteDown {
                    peer: *peer,
                    reason,
                }),
            );
        }
    }

    /// Answers `request` once `wait` is done (`Service::answer_deferred`).
    pub(super) fn defer(&mut self, request: RequestId, wait: Deferred) {
        self.deferred.push((request, wait));
    }
}

impl Service {
    /// A request from the control thread; its reply comes out of [`Service::poll_reply`], at
    /// once or when what it asked for is done.
    pub fn handle_request(&mut self, now: Instant, id: RequestId, request: Request) {
        if self.control.shutting_down {
            let reply = match request {
                Request::Shutdown => {
                    self.control.deferred.push((id, Deferred::Shutdown));
                    self.answer_deferred(now);
                    return;
                }
                _ => Err(RequestError::Stopping),
            };
            self.control.reply(id, reply);
            return;
        }
        let mut cx = Context {
            now,
            node: &mut self.node,
            stack: &mut self.stack,
        };
        let reply = match request {
            Request::Status => Ok(Reply::Status(self.status(now))),
            Request::ListTransports => Ok(Reply::Transports(TransportsReply {
                transports: self.transport_rows(now),
            })),
            Request::ListRoutes => Ok(Reply::Routes(self.routes_reply(now))),
            Request::BuildRoute { mut path } => {
                let own = cx.node.key();
                if path.first() != Some(&own) {
                    path.insert(0, own);
                }
                let peer = path.last().copied().unwrap_or(own);
                match cx.node.build_route(now, &path) {
                    Ok(setup) => {
                        self.control
                            .wait_for_route(now, id, Some(setup), peer, AfterBuild::Answer);
                        return;
                    }
                    Err(error) => Err(build_error(peer, error)),
                }
            }
            Request::BuildRouteTo { peer } => match cx.node.build_route_to(now, &peer) {
                Ok(setup) => {
                    self.control
                        .wait_for_route(now, id, Some(setup), peer, AfterBuild::Answer);
                    return;
                }
                Err(error) => Err(build_error(peer, error)),
            },
            Request::FindRoute { peer } => self.find_route(peer),
            Request::ListNodes => Ok(Reply::Nodes(self.nodes_reply(now))),
            Request::RemoveRoute { peer } => {
                if cx.node.remove_route(now, &peer) {
                    Ok(Reply::RouteRemoved { peer })
                } else {
                    Err(RequestError::NoRoute { peer })
                }
            }
            Request::PingNode { peer, count } => {
                let then = AfterBuild::Ping { count };
                match cx.node.want_route(now, &peer, None) {
                    Ok(RouteWait::Ready) => {
                        self.control.pings.start(now, id, peer, count);
                        return;
                    }
                    Ok(RouteWait::Started(setup)) => {
                        self.control
                            .wait_for_route(now, id, Some(setup), peer, then);
                        return;
                    }
                    Ok(RouteWait::Underway) => {
                        self.control.wait_for_route(now, id, None, peer, then);
                        return;
                    }
                    Err(error) => Err(build_error(peer, error)),
                }
            }
            Request::VpnStart { app } => match self.vpn.start(app) {
                Ok(()) => {
                    self.control.deferred.push((id, Deferred::VpnStart(app)));
                    self.answer_deferred(now);
                    return;
                }
                Err(error) => Err(RequestError::app(error)),
            },
            Request::VpnStop { app } => {
                let socks = &self.socks;
                if self.vpn.stop(&mut cx, app, |peer| socks.uses_route(peer)) {
                    self.control.deferred.push((id, Deferred::VpnStop(app)));
                    self.answer_deferred(now);
                    return;
                }
                Err(RequestError::VpnNotRunning(app))
            }
            Request::VpnStatus => Ok(Reply::Vpn(Box::new(self.vpn.status()))),
            Request::SocksStart { app } => {
                match self.socks.start(&mut cx, &mut self.sockets, app) {
                    Ok(()) => {
                        self.control.deferred.push((id, Deferred::SocksStart));
                        self.answer_deferred(now);
                        return;
                    }
                    Err(error) => Err(RequestError::app(error)),
                }
            }
            Request::SocksStop { app } => match self.socks.stop(&mut cx, &mut self.sockets, app) {
                Ok(()) => Ok(Reply::Socks(self.socks.status(&mut cx))),
                Err(error) => Err(RequestError::app(error)),
            },
            Request::SocksStatus => Ok(Reply::Socks(self.socks.status(&mut cx))),
            Request::AddNeighbour(neighbour) => {
                let key = neighbour.key;
                match cx.node.add_neighbour(now, neighbour) {
                    Ok(()) => {
                        log::info!("neighbour {key} added");
                        Ok(Reply::Neighbour(neighbour_reply(
                            cx.node,
                            key,
                            NeighbourChange::Added,
                        )))
                    }
                    Err(TransportError::DuplicateNeighbour(_)) => {
                        Err(RequestError::NeighbourExists { key })
                    }
                    Err(error) => Err(RequestError::Neighbour { key, error }),
                }
            }
            Request::UpdateNeighbour(neighbour) => {
                let key = neighbour.key;
                if cx.node.update_neighbour(&neighbour) {
                    Ok(Reply::Neighbour(neighbour_reply(
                        cx.node,
                        key,
                        NeighbourChange::Updated,
                    )))
                } else {
                    Err(RequestError::NoNeighbour { key })
                }
            }
            Request::RemoveNeighbour { key } => match cx.node.remove_neighbour(now, &key) {
                Some(routes_down) => Ok(Reply::Neighbour(NeighbourReply {
                    key,
                    change: NeighbourChange::Removed,
                    endpoint: None,
                    keepalive: None,
                    routes_down,
                })),
                None => Err(RequestError::NoNeighbour { key }),
            },
            Request::SetNodeSettings(settings) => {
                cx.node.set_settings(now, settings);
                Ok(Reply::Settings(cx.node.settings().into()))
            }
            Request::Services { name } => Ok(Reply::Services(self.services_reply(now, name))),
            // The driver adopts app connections itself (`Service::handle_app_connection`): a
            // descriptor is not the service's to hold, so one that arrives here is closed.
            Request::AppConnection(connection) => {
                log::warn!(
                    "app {}: a connection handed to the service is closed",
                    connection.app
                );
                return;
            }
            Request::ConfigureApp(config) => {
                self.configure_app(now, id, *config);
                return;
            }
            Request::Messenger(request) => {
                self.messenger.handle_request(&mut cx, id, request);
                return;
            }
            Request::Shutdown => {
                self.shutdown(now);
                self.control.deferred.push((id, Deferred::Shutdown));
                self.answer_deferred(now);
                return;
            }
        };
        self.control.reply(id, reply);
    }

    /// Answers the deferred requests whose app is done.
    pub(super) fn answer_deferred(&mut self, now: Instant) {
        if self.control.deferred.is_empty() {
            return;
        }
        let deferred = std::mem::take(&mut self.control.deferred);
        for (id, mut wait) in deferred {
            let reply = match wait {
                Deferred::AppConfigured {
                    app,
                    change,
                    ref mut start_due,
                } => self.app_configured(app, change, start_due),
                Deferred::VpnStart(app) | Deferred::VpnStop(app) if !self.vpn.is_settled(app) => {
                    None
                }
                Deferred::VpnStart(app) if !self.vpn.is_running(app) => {
                    Some(Err(match self.vpn.start_error(app) {
                        Some(error) => RequestError::app(error),
                        None => RequestError::VpnNotRunning(app),
                    }))
                }
                Deferred::VpnStart(_) | Deferred::VpnStop(_) => {
                    Some(Ok(Reply::Vpn(Box::new(self.vpn.status()))))
                }
                Deferred::SocksStart if !self.socks.is_settled() => None,
                Deferred::SocksStart => Some(match self.socks.take_start_error() {
                    Some(error) => Err(RequestError::app(error)),
                    None => {
                        let mut cx = Context {
                            now,
                            node: &mut self.node,
                            stack: &mut self.stack,
                        };
                        Ok(Reply::Socks(self.socks.status(&mut cx)))
                    }
                }),
                Deferred::Shutdown => self.is_stopped().then_some(Ok(Reply::Stopped)),
            };
            match reply {
                Some(reply) => self.control.reply(id, reply),
                None => self.control.deferred.push((id, wait)),
            }
        }
    }

    /// The route to `peer` is ready: the builds waiting for it are answered.
    pub(super) fn route_ready(&mut self, peer: NodeKey) {
        let row = self
            .node
            .routes()
            .find(|(key, _)| **key == peer)
            .map(|(key, route)| route_row(key, route));
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .control
            .builds
            .drain(..)
            .partition(|build| build.peer == peer && build.then == AfterBuild::Answer);
        self.control.builds = waiting;
        for build in done {
            let reply = match &row {
                Some(row) => Ok(Reply::RouteBuilt(row.clone())),
                None => Err(RequestError::RouteWentDown { peer }),
            };
            self.control.reply(build.request, reply);
        }
    }

    /// The pings waiting for a route ask the node for it again, as the apps do: once it is
    /// ready they start; while a setup or a repair is under way they wait; when there is
    /// none, one is set up.
    pub(super) fn start_routed_pings(&mut self, now: Instant) {
        let (node, control) = (&mut self.node, &mut self.control);
        control.builds.retain_mut(|build| {
            let AfterBuild::Ping { count } = build.then else {
                return true;
            };
            match node.want_route(now, &build.peer, None) {
                Ok(RouteWait::Ready) => {
                    control.pings.start(now, build.request, build.peer, count);
                    false
                }
                Ok(RouteWait::Started(setup)) => {
                    build.setup = Some(setup);
                    true
                }
                Ok(RouteWait::Underway) => true,
                Err(error) => {
                    let reply = Err(build_error(build.peer, error));
                    control.replies.push_back((build.request, reply));
                    false
                }
            }
        });
    }

    /// A route setup failed: the build waiting for it is answered.
    pub(super) fn route_failed(&mut self, setup: SetupId, peer: NodeKey, error: &RouteError) {
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .control
            .builds
            .drain(..)
            .partition(|build| build.setup == Some(setup));
        self.control.builds = waiting;
        for build in done {
            self.control.reply(
                build.request,
                Err(RequestError::RouteFailed {
                    peer,
                    error: error.clone(),
                }),
            );
        }
    }

    pub(super) fn expire_builds(&mut self, now: Instant) {
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .control
            .builds
            .drain(..)
            .partition(|build| now >= build.deadline);
        self.control.builds = waiting;
        for build in done {
            self.control.reply(
                build.request,
                Err(RequestError::HandshakeTimeout {
                    peer: build.peer,
                    after: BUILD_TIMEOUT,
                }),
            );
        }
    }

    pub(super) fn finish_pings(&mut self, now: Instant) {
        for ping in self.control.pings.finished(now) {
            let PingOutcome {
                request,
                peer,
                address,
                sent,
                rtt_ms,
            } = ping;
            let reply = Ok(Reply::Ping(PingReply {
                peer,
                address,
                sent,
                rtt_ms,
            }));
            self.control.reply(request, reply);
        }
    }

    fn find_route(&self, peer: NodeKey) -> Response {
        if peer == self.node.key() {
            let error = RouteError::BadPath("a route needs another node");
            return Err(RequestError::RouteFailed { peer, error });
        }
        let Some(choice) = self.node.find_route(&peer) else {
            return Err(RequestError::NoPath { peer });
        };
        let route_in_use = self
            .node
            .routes()
            .find(|(key, _)| **key == peer)
            .map(|(_, route)| route.path.clone());
        Ok(Reply::RouteFound(FoundRoute {
            peer,
            path: choice.path,
            cost_ms: millis(choice.cost),
            hop_costs_ms: choice.hop_costs.into_iter().map(millis).collect(),
            route_in_use,
        }))
    }

    fn nodes_reply(&self, now: Instant) -> NodesReply {
        let own = self.node.key();
        let nodes = self
            .node
            .known_nodes(now)
            .into_iter()
            .map(|node| NodeRow {
                key: node.key,
                this_node: node.key == own,
                sequence: node.sequence,
                advert_age_secs: node.age.as_secs_f64(),
                expires_in_secs: node.expires_in.as_secs_f64(),
                links: node
                    .links
                    .iter()
                    .map(|link| LinkRow {
                        neighbour: link.neighbour,
                        rtt_ms: millis(link.rtt),
                        cost_ms: link.cost.map(millis),
                    })
                    .collect(),
                services: node
                    .services
                    .iter()
                    .filter_map(|bytes| ServiceEntry::parse(bytes))
                    .collect(),
            })
            .collect();
        let sent = self.node.advert_counters();
        NodesReply {
            nodes,
            adverts: AdvertCounts {
                sent: sent.sent,
                sent_bytes: sent.sent_bytes,
                dropped: self.node.advert_drops(),
            },
        }
    }

    fn status(&self, now: Instant) -> StatusReply {
        let transports = self.node.transports();
        StatusReply {
            key: self.node.key(),
            mesh_address: self.node.address(),
            listen: self.control.local,
            uptime_secs: now
                .saturating_duration_since(self.control.started)
                .as_secs(),
            transports: transports.len(),
            links_up: transports
                .info()
                .filter(|info| self.node.link_state(info.id) == "up")
                .count(),
            routes: self.node.routes().count(),
            rules: self.node.table().len(),
            mesh_tcp: MeshTcpStatus {
                sockets: self.stack.tcp_sockets(),
                sockets_peak: self.stack.tcp_sockets_peak(),
                sockets_limit: MAX_TCP_SOCKETS,
                syns_refused: self.stack.syn_refusals(),
            },
            outbox: self.node.outbox_stats(),
        }
    }

    fn transport_rows(&self, now: Instant) -> Vec<TransportRow> {
        self.node
            .transports()
            .info()
            .map(|info| TransportRow {
                key: info.key,
                endpoint: info.endpoint,
                link: self.node.link_state(info.id),
                handshake_secs_ago: info.last_handshake.map(|age| age.as_secs_f64()),
                last_seen_secs_ago: info
                    .last_received
                    .map(|at| now.saturating_duration_since(at).as_secs_f64()),
                rtt_ms: info.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                tx_bytes: info.tx_bytes,
                rx_bytes: info.rx_bytes,
                tx_packets: info.tx_packets,
                rx_packets: info.rx_packets,
            })
            .collect()
    }

    fn routes_reply(&self, now: Instant) -> RoutesReply {
        let transports = self.node.transports();
        let name = |id| transports.key_of(id);
        let mut routes: Vec<RouteRow> = self
            .node
            .routes()
            .map(|(peer, route)| route_row(peer, route))
            .collect();
        // In the order users read keys: by their text.
        routes.sort_by_cached_key(|route| route.peer.to_string());
        let rules = self
            .node
            .table()
            .iter()
            .map(|(id, entry)| {
                let (action, to, next_id) = match entry.rule {
                    Rule::Forward { transport, next_id } => {
                        ("forward", name(transport), Some(next_id.get()))
                    }
                    Rule::Consume { peer, .. } => ("consume", Some(peer), None),
                };
                RuleRow {
                    id: id.get(),
                    action,
                    from: name(entry.ingress),
                    to,
                    next_id,
                    packets: entry.packets,
                    bytes: entry.bytes,
                    expires_in_secs: entry
                        .expires_at
                        .saturating_duration_since(now)
                        .as_secs_f64(),
                }
            })
            .collect();
        RoutesReply { routes, rules }
    }
}

/// A route that could not be set up, as the control client hears of it: no path known is one
/// error whichever request met it.
fn build_error(peer: NodeKey, error: RouteError) -> RequestError {
    match error {
        RouteError::NoPath(_) => RequestError::NoPath { peer },
        error => RequestError::RouteFailed { peer, error },
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A neighbour as its transport is now.
fn neighbour_reply(node: &Node, key: NodeKey, change: NeighbourChange) -> NeighbourReply {
    let transports = node.transports();
    let id = transports.id_of(&key);
    NeighbourReply {
        key,
        change,
        endpoint: id.and_then(|id| transports.endpoint_of(id)),
        keepalive: id.and_then(|id| transports.keepalive_of(id)),
        routes_down: 0,
    }
}

fn route_row(peer: &NodeKey, route: &EndRoute) -> RouteRow {
    RouteRow {
        peer: *peer,
        path: route.path.clone(),
        initiator: route.initiator,
        ready: route.ready,
        out_id: route.out_id.get(),
        in_id: route.in_id.get(),
    }
}
