//! Whole services in the simulated mesh: each node runs a [`Service`], apps included, with its
//! kernel sockets, TUN devices, host and disk in memory and name lookups answered from a table.
//! The test plays everything outside the service: the local programs (a SOCKS client, the
//! target it reaches, a launched app on the app socket, what goes in and out of a TUN device)
//! and the control client (requests and replies).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use rand_core::RngCore;

use super::network::Network;
use super::{node_address, node_options, secrets, LinkModel, SplitMix, WALL_CLOCK_START_MS};
use crate::api::app_socket::AppId;
use crate::api::messenger::{Mailbox, MessageRow};
use crate::api::vpn::VpnApp;
use crate::api::{AppChange, AppConfig, BuiltinApp, Reply, Request, RequestId, Response};
use crate::identity::NodeKey;
use crate::messenger::records;
use crate::node::{EndRoute, RouteStatus};
use crate::service::{
    HostOp, HostResult, Service, ServiceOptions, SocketEvent, SocketId, SocketOp, StoreOp,
    StoreResult,
};
use crate::vpn::offload::{self, VNET_HDR_LEN};
use crate::vpn::{Prefix, VpnOptions};

/// Bytes a stream holds for the local program before the service's writes block.
const PROGRAM_ROOM: usize = 256 * 1024;
/// Turns at one instant before the harness calls it a livelock.
const MAX_TURNS_AT_ONCE: usize = 100_000;

/// A stream between the test (a local program) and a node's kernel socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamId {
    node: usize,
    index: usize,
}

/// One TCP connection in a node's memory: a local program at one end, the service's socket at
/// the other.
#[derive(Debug)]
struct Stream {
    /// The service's end, while it is open.
    socket: Option<SocketId>,
    /// Bytes from the program to the service.
    to_service: VecDeque<u8>,
    /// The program sent its FIN.
    program_shut: bool,
    /// The program closed its end: the service's writes fail.
    program_closed: bool,
    /// Bytes from the service to the program, at most [`PROGRAM_ROOM`].
    to_program: VecDeque<u8>,
    /// The service sent its FIN, or closed its socket.
    service_shut: bool,
    /// A write of the service's found no room: it hears when there is.
    service_blocked: bool,
}

impl Stream {
    fn new(socket: SocketId) -> Stream {
        Stream {
            socket: Some(socket),
            to_service: VecDeque::new(),
            program_shut: false,
            program_closed: false,
            to_program: VecDeque::new(),
            service_shut: false,
            service_blocked: false,
        }
    }
}

/// A node's kernel sockets, in memory.
#[derive(Debug, Default)]
struct Kernel {
    /// The service's listening sockets, by address.
    listeners: HashMap<SocketAddr, SocketId>,
    /// The test's servers, by address: the streams the service opened to each, not yet
    /// accepted by the test.
    servers: HashMap<SocketAddr, VecDeque<usize>>,
    streams: Vec<Stream>,
    by_socket: HashMap<SocketId, usize>,
    next_port: u16,
}

impl Kernel {
    /// Does one of the service's operations; its answer, if it has one.
    fn execute(&mut self, op: SocketOp<'_>) -> Option<(SocketId, SocketEvent)> {
        let answer = match op {
            SocketOp::Listen {
                socket,
                mut address,
            } => {
                if address.port() == 0 {
                    self.next_port += 1;
                    address.set_port(40_000 + self.next_port);
                }
                let result = match self.listeners.entry(address) {
                    Entry::Occupied(_) => Err(io::ErrorKind::AddrInUse.into()),
                    Entry::Vacant(vacant) => {
                        vacant.insert(socket);
                        Ok(address)
                    }
                };
                (socket, SocketEvent::Listening(result))
            }
            SocketOp::Connect { socket, address } => {
                let result = match self.servers.get_mut(&address) {
                    Some(waiting) => {
                        let index = self.streams.len();
                        self.streams.push(Stream::new(socket));
                        self.by_socket.insert(socket, index);
                        waiting.push_back(index);
                        Ok(())
                    }
                    None => Err(io::Error::from_raw_os_error(Errno::ECONNREFUSED as i32)),
                };
                (socket, SocketEvent::Connected(result))
            }
            SocketOp::Read { socket, buf } => {
                let result = match self.stream(socket) {
                    Some(stream) if !stream.to_service.is_empty() => {
                        let len = buf.len().min(stream.to_service.len());
                        for (slot, byte) in buf.iter_mut().zip(stream.to_service.drain(..len)) {
                            *slot = byte;
                        }
                        Ok(len)
                    }
                    Some(stream) if stream.program_shut => Ok(0),
                    Some(_) => Err(io::ErrorKind::WouldBlock.into()),
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                (socket, SocketEvent::Read(result))
            }
            SocketOp::Write { socket, bytes } => {
                let result = match self.stream(socket) {
                    Some(stream) if stream.program_closed => Err(io::ErrorKind::BrokenPipe.into()),
                    Some(stream) => {
                        let room = PROGRAM_ROOM - stream.to_program.len();
                        if room == 0 {
                            stream.service_blocked = true;
                            Err(io::ErrorKind::WouldBlock.into())
                        } else {
                            let len = room.min(bytes.len());
                            stream.to_program.extend(&bytes[..len]);
                            Ok(len)
                        }
                    }
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                (socket, SocketEvent::Written(result))
            }
            SocketOp::Shutdown { socket } => {
                let result = match self.stream(socket) {
                    Some(stream) => {
                        stream.service_shut = true;
                        Ok(())
                    }
                    None => Err(io::ErrorKind::NotConnected.into()),
                };
                (socket, SocketEvent::Shut(result))
            }
            SocketOp::Close { socket } => {
                self.listeners.retain(|_, listener| *listener != socket);
                if let Some(index) = self.by_socket.remove(&socket) {
                    let stream = &mut self.streams[index];
                    stream.socket = None;
                    stream.service_shut = true;
                }
                return None;
            }
        };
        Some(answer)
    }

    fn stream(&mut self, socket: SocketId) -> Option<&mut Stream> {
        let index = *self.by_socket.get(&socket)?;
        self.streams.get_mut(index)
    }
}

/// A node's host, in memory: its TUN devices, routes, mark and lease file.
#[derive(Debug, Default)]
struct Host {
    /// The devices that are open, with the addresses they were given: the server's, then the
    /// client's.
    tuns: [Option<Vec<(IpAddr, u8)>>; 2],
    /// Frames the service wrote to each device and the test has not taken.
    written: [Vec<Vec<u8>>; 2],
    routes: Option<Vec<Prefix>>,
    mark: u32,
    leases: Option<String>,
    /// Whether creating a TUN device fails (as without CAP_NET_ADMIN).
    deny_tun: bool,
}

fn slot(app: VpnApp) -> usize {
    match app {
        VpnApp::Server => 0,
        VpnApp::Client => 1,
    }
}

impl Host {
    fn execute(&mut self, op: HostOp) -> Option<HostResult> {
        Some(match op {
            HostOp::OpenTun { app, name } => {
                let result = if self.deny_tun {
                    Err(crate::vpn::TunError::Permission {
                        name: name.to_string(),
                    })
                } else {
                    self.tuns[slot(app)] = Some(Vec::new());
                    Ok(())
                };
                HostResult::TunOpened { app, result }
            }
            HostOp::ConfigureTun { app, addresses, .. } => {
                if let Some(tun) = &mut self.tuns[slot(app)] {
                    *tun = addresses;
                }
                HostResult::TunConfigured {
                    app,
                    result: Ok(()),
                }
            }
            HostOp::InstallRoutes { routes, .. } => {
                self.routes = Some(routes);
                HostResult::RoutesInstalled(Ok(()))
            }
            HostOp::RemoveRoutes => {
                self.routes = None;
                HostResult::RoutesRemoved
            }
            HostOp::CloseTun { app } => {
                self.tuns[slot(app)] = None;
                return None;
            }
            HostOp::MarkDatagrams(mark) => {
                self.mark = mark;
                return None;
            }
            HostOp::LoadLeases { file } => HostResult::LeasesLoaded {
                file,
                text: Ok(self.leases.clone()),
            },
            HostOp::SaveLeases { file, text } => {
                self.leases = Some(text);
                HostResult::LeasesSaved {
                    file,
                    result: Ok(()),
                }
            }
        })
    }
}

/// A node's disk, in memory: the messenger's logs by file.
#[derive(Debug, Default)]
struct Disk {
    files: HashMap<PathBuf, Vec<u8>>,
    /// Operations held back (a slow disk), in order, while the test holds them.
    held: Option<VecDeque<StoreOp>>,
}

impl Disk {
    /// Does `op` at wall-clock time `wall_ms`, as the driver's store thread does.
    fn execute(&mut self, op: StoreOp, wall_ms: u64) -> StoreResult {
        match op {
            StoreOp::Load { mailbox, file } => {
                let bytes = self.files.entry(file).or_default();
                let parsed = records::parse(bytes);
                let cut = bytes.len() - parsed.valid_len;
                bytes.truncate(parsed.valid_len);
                StoreResult::Loaded {
                    mailbox,
                    result: Ok((parsed.records, cut)),
                }
            }
            StoreOp::Append {
                mailbox,
                file,
                mut message,
            } => {
                message.at_ms = wall_ms;
                self.files
                    .entry(file)
                    .or_default()
                    .extend_from_slice(&records::encode(&message));
                StoreResult::Appended {
                    mailbox,
                    peer: message.peer,
                    id: message.id,
                    result: Ok(message),
                }
            }
        }
    }
}

/// One simulated node and what surrounds its service.
#[derive(Debug)]
pub struct AppNode {
    /// The node's service.
    pub service: Service,
    /// Its key.
    pub key: NodeKey,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Replies to requests, not taken yet.
    replies: Vec<(RequestId, Response)>,
    kernel: Kernel,
    host: Host,
    disk: Disk,
    /// What its service is made of, for a restart.
    options: ServiceOptions,
}

/// The simulated mesh of services.
#[derive(Debug)]
pub struct AppSim {
    /// Virtual time now.
    pub now: Instant,
    /// Virtual time at the start.
    pub start: Instant,
    /// The nodes.
    pub nodes: Vec<AppNode>,
    network: Network,
    /// Names the nodes' lookups resolve.
    names: HashMap<String, Vec<IpAddr>>,
    next_request: RequestId,
    /// Datagrams lost to link models.
    pub lost: u64,
}

impl AppSim {
    /// `count` nodes joined by `links` (index pairs), each service's options set by
    /// `configure` (given the node's index and every node's key), and started.
    pub fn new(
        seed: u64,
        count: usize,
        links: &[(usize, usize)],
        configure: impl Fn(usize, &[NodeKey], &mut ServiceOptions),
    ) -> AppSim {
        let start = Instant::now();
        let mut rng = SplitMix(seed);
        let secrets = secrets(&mut rng, count);
        let keys: Vec<NodeKey> = secrets.iter().map(|secret| secret.public()).collect();
        let mut nodes = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let mut options = ServiceOptions {
                node: node_options(i, &secrets, links),
                vpn: VpnOptions {
                    state_dir: PathBuf::from(format!("state-{i}")),
                    ..VpnOptions::default()
                },
                socks: Default::default(),
                messenger: crate::messenger::MessengerOptions {
                    state_dir: PathBuf::from(format!("state-{i}")),
                    settings: None,
                },
                app_socket: Default::default(),
            };
            configure(i, &keys, &mut options);
            let mut service = Service::new(
                options.clone(),
                node_address(i),
                start,
                Box::new(SplitMix(rng.next_u64())),
            )
            .unwrap();
            service.start(start).unwrap();
            nodes.push(AppNode {
                service,
                key: *key,
                addr: node_address(i),
                replies: Vec::new(),
                kernel: Kernel::default(),
                host: Host::default(),
                disk: Disk::default(),
                options,
            });
        }
        let mut sim = AppSim {
            now: start,
            start,
            nodes,
            network: Network::new(links, rng),
            names: HashMap::new(),
            next_request: 1,
            lost: 0,
        };
        // As the driver does before its loop runs: what the starts asked for is done.
        sim.drain();
        sim
    }

    /// Restarts node `i` as a process that was killed and started again: a new service with
    /// the same options and nothing else (no routes, sessions, streams or replies), whose
    /// advert sequence starts from the simulated wall clock. Its disk and its lease file stay.
    pub fn restart(&mut self, i: usize) {
        let now = self.now;
        let mut options = self.nodes[i].options.clone();
        options.node.advert_sequence_start = self.wall_clock_ms();
        let rng = Box::new(SplitMix(self.network.seed()));
        let node = &mut self.nodes[i];
        node.service = Service::new(options, node.addr, now, rng).unwrap();
        node.service.start(now).unwrap();
        node.replies.clear();
        node.kernel = Kernel::default();
        node.host = Host {
            leases: node.host.leases.take(),
            deny_tun: node.host.deny_tun,
            ..Host::default()
        };
        self.drain();
    }

    /// The key of node `i`.
    pub fn key(&self, i: usize) -> NodeKey {
        self.nodes[i].key
    }

    /// The keys of the nodes listed.
    pub fn path(&self, nodes: &[usize]) -> Vec<NodeKey> {
        nodes.iter().map(|i| self.key(*i)).collect()
    }

    /// Node `at`'s route to node `to`, if it has one.
    pub fn route(&self, at: usize, to: usize) -> Option<&EndRoute> {
        let peer = self.key(to);
        let mut routes = self.nodes[at].service.node().routes();
        routes
            .find(|(key, _)| **key == peer)
            .map(|(_, route)| route)
    }

    /// Changes how the link between `a` and `b` behaves.
    pub fn link(&mut self, a: usize, b: usize) -> &mut LinkModel {
        self.network.link(a, b)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Makes `name` resolve to `addresses` for every node.
    pub fn set_name(&mut self, name: &str, addresses: &[IpAddr]) {
        self.names.insert(name.to_owned(), addresses.to_vec());
    }

    /// Makes TUN devices on node `i` fail to be created from now on, as without
    /// CAP_NET_ADMIN.
    pub fn deny_tun(&mut self, i: usize) {
        self.nodes[i].host.deny_tun = true;
    }

    // ----- the control client -----

    /// Sends a request to node `i`; its reply comes to [`AppSim::take_reply`].
    pub fn request(&mut self, i: usize, request: Request) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        let now = self.now;
        self.nodes[i].service.handle_request(now, id, request);
        id
    }

    /// Whether the reply to request `id` of node `i` has come.
    pub fn has_reply(&self, i: usize, id: RequestId) -> bool {
        self.nodes[i]
            .replies
            .iter()
            .any(|(reply_id, _)| *reply_id == id)
    }

    /// The reply to request `id` of node `i`, once it has come.
    pub fn take_reply(&mut self, i: usize, id: RequestId) -> Option<Response> {
        let replies = &mut self.nodes[i].replies;
        let at = replies.iter().position(|(reply_id, _)| *reply_id == id)?;
        Some(replies.remove(at).1)
    }

    /// Sends a request to node `i` and runs until it is answered; panics after `limit`.
    pub fn ask(&mut self, i: usize, request: Request, limit: Duration) -> Response {
        let id = self.request(i, request);
        let answered = self.run_until(limit, |sim| {
            sim.nodes[i]
                .replies
                .iter()
                .any(|(reply_id, _)| *reply_id == id)
        });
        assert!(
            answered,
            "node {i} did not answer request {id} in {limit:?}"
        );
        self.take_reply(i, id).unwrap()
    }

    /// Gives node `i` a built-in app's section as a reload does, and says which app it was and
    /// what became of it; panics on any other answer, or after `limit`.
    pub fn configure_app(
        &mut self,
        i: usize,
        config: AppConfig,
        limit: Duration,
    ) -> (BuiltinApp, AppChange) {
        match self.ask(i, Request::ConfigureApp(Box::new(config)), limit) {
            Ok(Reply::AppConfigured { app, change }) => (app, change),
            other => panic!("node {i} did not configure the app: {other:?}"),
        }
    }

    /// Makes `relay`, on the route between `from` and `to`, forget it: restarts `relay`, waits
    /// for its links to both ends to come back, sends `request` (which needs the route) to
    /// `from`, and runs until `from`'s packets have found the route forgotten and it waits for
    /// `to`'s repair. Returns the request's id; panics when a wait takes longer than `limit`.
    pub fn forget_route_at_relay(
        &mut self,
        relay: usize,
        from: usize,
        to: usize,
        request: Request,
        limit: Duration,
    ) -> RequestId {
        let (from_key, to_key) = (self.key(from), self.key(to));
        self.restart(relay);
        let links_back = self.run_until(limit, |sim| {
            let node = sim.nodes[relay].service.node();
            node.is_link_alive(&from_key) && node.is_link_alive(&to_key)
        });
        assert!(
            links_back,
            "node {relay}'s links did not come back in {limit:?}"
        );
        let id = self.request(from, request);
        let forgotten = self.run_until(limit, |sim| {
            sim.nodes[from].service.node().route_status(&to_key) == RouteStatus::Repairing
        });
        assert!(
            forgotten,
            "node {from} did not find its route to node {to} forgotten in {limit:?}"
        );
        id
    }

    /// How many route setups node `i` has started.
    pub fn setups_started(&self, i: usize) -> u64 {
        self.nodes[i].service.node().setups_started()
    }

    /// Runs 100 ms, then insists that node `at` still waits for the repair of its route to node
    /// `peer` and has started no setup of its own beside it: no more than `setups_before`.
    pub fn assert_waits_for_repair(&mut self, at: usize, peer: usize, setups_before: u64) {
        let peer_key = self.key(peer);
        self.run_for(Duration::from_millis(100));
        assert_eq!(
            self.nodes[at].service.node().route_status(&peer_key),
            RouteStatus::Repairing
        );
        assert_eq!(
            self.setups_started(at),
            setups_before,
            "node {at} set up a route beside the repair"
        );
    }

    /// Insists that the route between `initiator` and `far_end` came back by the initiator's one
    /// repair: one setup more at `initiator` than `initiator_before`, none more at `far_end`
    /// than `far_end_before`, and the far end's route is the initiator's.
    pub fn assert_repaired_by(
        &self,
        initiator: usize,
        initiator_before: u64,
        far_end: usize,
        far_end_before: u64,
    ) {
        assert_eq!(
            self.setups_started(far_end),
            far_end_before,
            "node {far_end} set up a route of its own"
        );
        assert_eq!(
            self.setups_started(initiator),
            initiator_before + 1,
            "one setup: node {initiator}'s repair"
        );
        let route = self
            .route(far_end, initiator)
            .unwrap_or_else(|| panic!("node {far_end} has no route to node {initiator}"));
        assert!(
            !route.initiator,
            "node {far_end}'s route to node {initiator} is its own"
        );
    }

    /// Rebuilds node `from`'s route to the last node of `path` over `path` (node indexes,
    /// `from` first) while the old route still runs, as a repair does: the new route takes
    /// over once its far end has had the proof, nothing goes down meanwhile, and the route
    /// session carries on. Returns the build's reply once it comes; panics after `limit`.
    pub fn rebuild_route(&mut self, from: usize, path: &[usize], limit: Duration) -> Response {
        let path = self.path(path);
        self.ask(from, Request::BuildRoute { path }, limit)
    }

    // ----- local programs -----

    /// A local program on node `i` connects to `address`, where the service listens; `None`
    /// when nothing listens there or the service closes the connection at once.
    pub fn connect(&mut self, i: usize, address: SocketAddr) -> Option<StreamId> {
        let now = self.now;
        let node = &mut self.nodes[i];
        let listener = *node.kernel.listeners.get(&address)?;
        let from = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            50_000 + node.kernel.streams.len() as u16,
        ));
        let socket = node.service.handle_accepted(now, listener, from)?;
        let index = node.kernel.streams.len();
        node.kernel.streams.push(Stream::new(socket));
        node.kernel.by_socket.insert(socket, index);
        Some(StreamId { node: i, index })
    }

    /// Launched app `app` on node `i` connects to the node's app socket (the control thread
    /// has checked it); `None` when the service closes the connection at once.
    pub fn app_connect(&mut self, i: usize, app: AppId) -> Option<StreamId> {
        let now = self.now;
        let node = &mut self.nodes[i];
        let socket = node.service.handle_app_connection(now, app)?;
        let index = node.kernel.streams.len();
        node.kernel.streams.push(Stream::new(socket));
        node.kernel.by_socket.insert(socket, index);
        Some(StreamId { node: i, index })
    }

    /// A local server on node `i` listens on `address`: the service can connect to it.
    pub fn serve(&mut self, i: usize, address: SocketAddr) {
        self.nodes[i].kernel.servers.entry(address).or_default();
    }

    /// The next connection the service made to the local server at `address` on node `i`.
    pub fn accept(&mut self, i: usize, address: SocketAddr) -> Option<StreamId> {
        let index = self.nodes[i]
            .kernel
            .servers
            .get_mut(&address)?
            .pop_front()?;
        Some(StreamId { node: i, index })
    }

    fn notify(&mut self, stream: StreamId, event: SocketEvent) {
        let now = self.now;
        let node = &mut self.nodes[stream.node];
        if let Some(socket) = node.kernel.streams[stream.index].socket {
            node.service.handle_socket(now, socket, event);
        }
    }

    /// The program writes `bytes`.
    pub fn write(&mut self, stream: StreamId, bytes: &[u8]) {
        let state = &mut self.nodes[stream.node].kernel.streams[stream.index];
        assert!(!state.program_shut, "writing after a FIN");
        state.to_service.extend(bytes);
        self.notify(stream, SocketEvent::Readable);
    }

    /// The program sends its FIN.
    pub fn shutdown(&mut self, stream: StreamId) {
        self.nodes[stream.node].kernel.streams[stream.index].program_shut = true;
        self.notify(stream, SocketEvent::Readable);
    }

    /// The program closes its end: it reads nothing more, and the service's writes fail.
    pub fn close(&mut self, stream: StreamId) {
        let state = &mut self.nodes[stream.node].kernel.streams[stream.index];
        state.program_shut = true;
        state.program_closed = true;
        state.to_program.clear();
        self.notify(stream, SocketEvent::Readable);
        self.notify(stream, SocketEvent::Writable);
    }

    /// The program reads everything the service wrote so far.
    pub fn read(&mut self, stream: StreamId) -> Vec<u8> {
        let state = &mut self.nodes[stream.node].kernel.streams[stream.index];
        let bytes: Vec<u8> = state.to_program.drain(..).collect();
        if state.service_blocked {
            state.service_blocked = false;
            self.notify(stream, SocketEvent::Writable);
        }
        bytes
    }

    /// Whether the program has read everything the service will send: the service sent its
    /// FIN or closed its socket, and nothing is left to read.
    pub fn is_finished(&self, stream: StreamId) -> bool {
        let state = &self.nodes[stream.node].kernel.streams[stream.index];
        state.service_shut && state.to_program.is_empty()
    }

    /// Whether the service has closed its end.
    pub fn is_closed_by_service(&self, stream: StreamId) -> bool {
        self.nodes[stream.node].kernel.streams[stream.index]
            .socket
            .is_none()
    }

    // ----- TUN devices -----

    /// The addresses of `app`'s TUN device on node `i`, while it is open.
    pub fn tun_addresses(&self, i: usize, app: VpnApp) -> Option<&[(IpAddr, u8)]> {
        self.nodes[i].host.tuns[slot(app)].as_deref()
    }

    /// The routes the VPN client of node `i` has installed.
    pub fn tun_routes(&self, i: usize) -> Option<&[Prefix]> {
        self.nodes[i].host.routes.as_deref()
    }

    /// The lease file of node `i`, as last written.
    pub fn lease_file(&self, i: usize) -> Option<&str> {
        self.nodes[i].host.leases.as_deref()
    }

    /// The kernel sends `packet` into `app`'s TUN device on node `i`: the service reads it.
    pub fn tun_send(&mut self, i: usize, app: VpnApp, packet: &[u8]) {
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(packet);
        let now = self.now;
        self.nodes[i].service.handle_tun_frame(now, app, &mut frame);
    }

    /// The packets the service wrote to `app`'s TUN device on node `i` since the last call,
    /// cut as the kernel would cut them.
    pub fn tun_received(&mut self, i: usize, app: VpnApp) -> Vec<Vec<u8>> {
        let frames = std::mem::take(&mut self.nodes[i].host.written[slot(app)]);
        let mut scratch = vec![0u8; 65_536];
        let mut packets = Vec::new();
        for mut frame in frames {
            offload::split(&mut frame, &mut scratch, 65_535, |packet| {
                packets.push(packet.to_vec())
            })
            .unwrap();
        }
        packets
    }

    // ----- the disk -----

    /// The messages of node `i`'s `mailbox` log, as its disk holds them.
    pub fn message_log(&self, i: usize, mailbox: Mailbox) -> Vec<MessageRow> {
        let node = &self.nodes[i];
        let file = PathBuf::from(format!("state-{i}")).join(format!("messenger-{mailbox}.log"));
        node.disk
            .files
            .get(&file)
            .map(|bytes| records::parse(bytes).records)
            .unwrap_or_default()
    }

    /// Holds back node `i`'s log operations, as a slow disk would, until
    /// [`AppSim::release_disk`].
    pub fn hold_disk(&mut self, i: usize) {
        self.nodes[i].disk.held.get_or_insert_with(VecDeque::new);
    }

    /// How many of node `i`'s log operations are held back.
    pub fn held_disk_ops(&self, i: usize) -> usize {
        self.nodes[i].disk.held.as_ref().map_or(0, VecDeque::len)
    }

    /// Does node `i`'s held log operations, in order, and holds no more.
    pub fn release_disk(&mut self, i: usize) {
        let wall_ms = self.wall_clock_ms();
        let now = self.now;
        let node = &mut self.nodes[i];
        for op in node.disk.held.take().unwrap_or_default() {
            let answer = node.disk.execute(op, wall_ms);
            node.service.handle_store_result(now, answer);
        }
    }

    fn wall_clock_ms(&self) -> u64 {
        WALL_CLOCK_START_MS + u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    // ----- running -----

    /// Does what every service asks for: datagrams onto the links, TUN frames, socket
    /// operations, lookups, host changes, replies.
    fn drain(&mut self) {
        let now = self.now;
        let wall_ms = self.wall_clock_ms();
        let addresses: Vec<SocketAddr> = self.nodes.iter().map(|node| node.addr).collect();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            loop {
                let mut more = false;
                while let Some(datagram) = node.service.poll_transmit() {
                    let to = addresses.iter().position(|addr| *addr == datagram.to);
                    let sent = self.network.send(now, i, to, datagram.bytes());
                    if to.is_some() && !sent {
                        self.lost += 1;
                    }
                    node.service.recycle(datagram);
                }
                while let Some((app, frame)) = node.service.poll_tun_write() {
                    node.host.written[slot(app)].push(frame.to_vec());
                }
                while let Some(op) = node.service.poll_socket_op() {
                    more = true;
                    if let Some((socket, event)) = node.kernel.execute(op) {
                        node.service.handle_socket(now, socket, event);
                    }
                }
                while let Some(lookup) = node.service.poll_lookup() {
                    more = true;
                    let addresses = self
                        .names
                        .get(&lookup.name)
                        .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, lookup.port)))
                        .into_iter()
                        .flatten()
                        .collect();
                    node.service.handle_resolved(now, lookup.id, addresses);
                }
                while let Some(op) = node.service.poll_host_op() {
                    more = true;
                    if let Some(answer) = node.host.execute(op) {
                        node.service.handle_host_result(now, answer);
                    }
                }
                while let Some(op) = node.service.poll_store_op() {
                    match &mut node.disk.held {
                        Some(held) => held.push_back(op),
                        None => {
                            more = true;
                            let answer = node.disk.execute(op, wall_ms);
                            node.service.handle_store_result(now, answer);
                        }
                    }
                }
                while let Some(reply) = node.service.poll_reply() {
                    node.replies.push(reply);
                }
                if !more {
                    break;
                }
            }
        }
    }

    /// Runs the mesh until `done` holds or `limit` of virtual time has passed; says which.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&AppSim) -> bool) -> bool {
        let deadline = self.now + limit;
        let mut turns_at_once = 0;
        loop {
            self.drain();
            if done(self) {
                return true;
            }
            let now = self.now;
            let next_timer = self
                .nodes
                .iter_mut()
                .map(|node| node.service.poll_timeout(now).0)
                .min();
            let next = match (self.network.next_arrival(), next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(deadline),
            };
            if next > deadline {
                self.now = deadline;
                return false;
            }
            if next <= self.now {
                turns_at_once += 1;
                assert!(
                    turns_at_once < MAX_TURNS_AT_ONCE,
                    "the services keep asking to run at {:?}",
                    self.elapsed()
                );
            } else {
                turns_at_once = 0;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(flight) = self.network.pop_arrived(now) {
                let from = self.nodes[flight.from].addr;
                self.nodes[flight.to]
                    .service
                    .handle_datagram(now, from, &flight.bytes);
            }
            for node in &mut self.nodes {
                node.service.poll(now);
            }
        }
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }
}
