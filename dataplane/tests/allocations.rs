//! The packet paths allocate nothing per packet, under a counting global allocator: the relay
//! path (a route A → B → C in the simulator, B relaying fresh datagrams from A), and the consume
//! path (whole services, C taking VPN packets and echo requests from A over a direct route and
//! over a relayed one, from the datagram to its TUN device and its mesh stack, and sending the
//! stack's answers).
//!
//! Set `ALLOCATION_BACKTRACE=1` to print a backtrace of each allocation counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use skywire_dataplane::api::vpn::VpnApp;
use skywire_dataplane::api::{Reply, Request};
use skywire_dataplane::node::{Event, INNER_MTU};
use skywire_dataplane::service::ServiceOptions;
use skywire_dataplane::sim::{ipv4_packet, ipv6_packet, AppSim, Sim};
use skywire_dataplane::{vpn, NodeKey};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Packets relayed before counting, so that buffer pools and queues have grown.
const WARM_UP: usize = 300;
/// Packets relayed while counting.
const COUNTED: usize = 1000;

/// Counts the allocations made by the thread that turned counting on; the test harness's other
/// threads are not counted.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BACKTRACES: Cell<bool> = const { Cell::new(false) };
    static IN_BACKTRACE: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    // `try_with`: thread-locals may be gone while a thread shuts down.
    let flag = |key: &'static std::thread::LocalKey<Cell<bool>>| key.try_with(Cell::get);
    if !flag(&COUNTING).unwrap_or(false) || flag(&IN_BACKTRACE).unwrap_or(true) {
        return;
    }
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    if flag(&BACKTRACES).unwrap_or(false) {
        let _ = IN_BACKTRACE.try_with(|flag| flag.set(true));
        eprintln!(
            "allocation on a packet path:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        let _ = IN_BACKTRACE.try_with(|flag| flag.set(false));
    }
}

// SAFETY: every call is passed on to `System` unchanged; counting touches only thread-locals
// and allocates nothing itself (a backtrace, when asked for, is taken with counting suspended).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's guarantees about `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` was allocated by `System` through this allocator, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `work` and returns how many allocations this thread made during it.
fn allocations_during(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    counted(work);
    ALLOCATIONS.with(Cell::get) - before
}

/// Runs `work`, with this thread's allocations counted when `count` says so.
fn counted_if<T>(count: bool, work: impl FnOnce() -> T) -> T {
    if count {
        counted(work)
    } else {
        work()
    }
}

/// Runs `work` with this thread's allocations counted.
fn counted<T>(work: impl FnOnce() -> T) -> T {
    let backtraces = std::env::var_os("ALLOCATION_BACKTRACE").is_some();
    BACKTRACES.with(|flag| flag.set(backtraces));
    COUNTING.with(|counting| counting.set(true));
    let result = work();
    COUNTING.with(|counting| counting.set(false));
    result
}

/// `count` fresh datagrams that A sends B on the route to C, not yet delivered.
fn datagrams_from_a(sim: &mut Sim, count: usize) -> Vec<Vec<u8>> {
    let packet = ipv6_packet(
        sim.nodes[A].node.address(),
        sim.nodes[C].node.address(),
        &[0x5a; INNER_MTU - 40],
    );
    let to_c = sim.key(C);
    let b_addr = sim.nodes[B].addr;
    let mut datagrams = Vec::with_capacity(count);
    for _ in 0..count {
        sim.nodes[A].node.send_to(&to_c, &packet).unwrap();
        while let Some(datagram) = sim.nodes[A].node.poll_transmit() {
            assert_eq!(datagram.to, b_addr, "A sends only to B");
            datagrams.push(datagram.bytes().to_vec());
            sim.nodes[A].node.recycle(datagram);
        }
    }
    assert_eq!(datagrams.len(), count, "one datagram per packet sent");
    datagrams
}

/// What B sent while relaying.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sent {
    /// Datagrams of any kind, to anyone.
    datagrams: usize,
    /// Datagrams to C.
    to_c: usize,
}

/// B handles each datagram and sends what it produces.
fn relay_at_b(sim: &mut Sim, datagrams: &[Vec<u8>]) -> Sent {
    let now = sim.now;
    let a_addr = sim.nodes[A].addr;
    let c_addr = sim.nodes[C].addr;
    let b = &mut sim.nodes[B].node;
    let mut sent = Sent::default();
    for datagram in datagrams {
        b.handle_datagram(now, a_addr, datagram);
        while let Some(out) = b.poll_transmit() {
            sent.datagrams += 1;
            if out.to == c_addr {
                sent.to_c += 1;
            }
            b.recycle(out);
        }
    }
    sent
}

/// Exactly one datagram to C per datagram from A.
fn relayed(count: usize) -> Sent {
    Sent {
        datagrams: count,
        to_c: count,
    }
}

#[test]
fn relaying_a_packet_allocates_nothing() {
    let mut sim = Sim::new(21, 3, &[(A, B), (B, C)], |_, _| {});
    let path = sim.path(&[A, B, C]);
    let to_c = sim.key(C);
    let now = sim.now;
    sim.nodes[A].node.build_route(now, &path).unwrap();
    assert!(
        sim.run_until(Duration::from_secs(20), |sim| sim.has_event(
            A,
            |e| matches!(e, Event::RouteReady { peer } if *peer == to_c)
        )),
        "route A → B → C not ready"
    );

    let warm_up = datagrams_from_a(&mut sim, WARM_UP);
    assert_eq!(relay_at_b(&mut sim, &warm_up), relayed(WARM_UP));

    let datagrams = datagrams_from_a(&mut sim, COUNTED);
    let node_drops = sim.nodes[B].node.drops();
    let transport_drops = sim.nodes[B].node.transports().drops();
    let mut sent = Sent::default();
    let allocations = allocations_during(|| sent = relay_at_b(&mut sim, &datagrams));

    assert_eq!(sent, relayed(COUNTED), "B relayed every datagram to C");
    assert_eq!(sim.nodes[B].node.drops(), node_drops);
    assert_eq!(sim.nodes[B].node.transports().drops(), transport_drops);
    assert_eq!(
        allocations, 0,
        "the relay path allocated {allocations} times for {COUNTED} packets \
         (ALLOCATION_BACKTRACE=1 shows where)"
    );
}

/// The counter does see allocations, so the test above can fail.
#[test]
fn the_counter_counts() {
    let allocations = allocations_during(|| {
        std::hint::black_box(vec![0u8; 64]);
    });
    assert_eq!(allocations, 1);
}

/// The consume path's nodes: the VPN client A, the relay B, the VPN server C.
const CLIENT: usize = 0;
const SERVER: usize = 2;
/// How far the virtual clock moves between two rounds of packets.
const STEP: Duration = Duration::from_millis(10);
/// Rounds before counting, and counted; a round carries one VPN packet, and every 20th an
/// echo request as well (the mesh ping sends one each 200 ms).
const WARM_UP_ROUNDS: usize = 300;
const COUNTED_ROUNDS: usize = 1000;

/// A's VPN client, whose server C is reached over `path` (node indexes after A), and C's
/// server.
fn vpn_apps(path: &'static [usize]) -> impl Fn(usize, &[NodeKey], &mut ServiceOptions) {
    move |i, keys, options| match i {
        CLIENT => {
            options.vpn.client = Some(vpn::ClientOptions {
                start: true,
                tun: "skycli".parse().unwrap(),
                server: keys[SERVER],
                path: Some(path.iter().map(|node| keys[*node]).collect()),
                routes: vec![
                    "10.99.0.0/24".parse().unwrap(),
                    "10.77.0.0/24".parse().unwrap(),
                ],
                port: vpn::DEFAULT_LEASE_PORT,
            });
        }
        SERVER => {
            options.vpn.server = Some(vpn::ServerOptions {
                start: true,
                tun: "skysrv".parse().unwrap(),
                pool4: Some("10.77.0.0/24".parse().unwrap()),
                pool6: None,
                allow: vec![keys[CLIENT]],
                port: vpn::DEFAULT_LEASE_PORT,
            });
        }
        _ => {}
    }
}

/// What C did with what came in, counted by the test.
#[derive(Debug, Default)]
struct AtServer {
    /// Frames C wrote to its TUN device.
    frames: usize,
    /// Datagrams C sent.
    datagrams: usize,
}

/// One round at `now`: every service's due work (not counted), then datagrams between the
/// services until none is left, with everything C's service does counted: taking its
/// datagrams, working, writing its TUN device and sending.
fn round(sim: &mut AppSim, now: Instant, at_server: &mut AtServer) {
    for node in &mut sim.nodes {
        node.service.poll(now);
    }
    let addresses: Vec<_> = sim.nodes.iter().map(|node| node.addr).collect();
    loop {
        let mut moved = false;
        for from in 0..sim.nodes.len() {
            let is_server = from == SERVER;
            counted_if(is_server, || sim.nodes[from].service.poll(now));
            if is_server {
                counted(|| {
                    while sim.nodes[SERVER].service.poll_tun_write().is_some() {
                        at_server.frames += 1;
                    }
                });
            }
            loop {
                let datagram = counted_if(is_server, || sim.nodes[from].service.poll_transmit());
                let Some(datagram) = datagram else {
                    break;
                };
                moved = true;
                if is_server {
                    at_server.datagrams += 1;
                }
                let source = addresses[from];
                if let Some(to) = addresses.iter().position(|addr| *addr == datagram.to) {
                    let service = &mut sim.nodes[to].service;
                    counted_if(to == SERVER, || {
                        service.handle_datagram(now, source, datagram.bytes())
                    });
                }
                counted_if(is_server, || sim.nodes[from].service.recycle(datagram));
            }
        }
        if !moved {
            return;
        }
    }
}

fn vpn_packets_at_server(sim: &mut AppSim) -> u64 {
    match sim.ask(SERVER, Request::VpnStatus, Duration::from_secs(5)) {
        Ok(Reply::Vpn(status)) => status.server.unwrap().clients[0].rx.packets,
        other => panic!("no VPN status: {other:?}"),
    }
}

/// C takes packets over a route from A (`path`): VPN packets for its TUN device, echo requests
/// for its mesh stack, which answers them.
fn consuming_allocates_nothing(path: &'static [usize]) {
    let mut sim = AppSim::new(22, 3, &[(0, 1), (1, 2), (0, 2)], vpn_apps(path));
    assert!(
        sim.run_until(Duration::from_secs(30), |sim| {
            sim.nodes[CLIENT]
                .service
                .node()
                .routes()
                .any(|(_, route)| route.ready)
        }),
        "A's route to C"
    );
    let client_ready =
        |sim: &mut AppSim| match sim.ask(CLIENT, Request::VpnStatus, Duration::from_secs(5)) {
            Ok(Reply::Vpn(status)) => status.client.is_some_and(|client| client.state == "up"),
            other => panic!("no VPN status: {other:?}"),
        };
    let deadline = sim.elapsed() + Duration::from_secs(30);
    while !client_ready(&mut sim) {
        assert!(sim.elapsed() < deadline, "A's VPN client never came up");
        sim.run_for(Duration::from_millis(100));
    }
    let route_path = sim.nodes[CLIENT]
        .service
        .node()
        .routes()
        .next()
        .map(|(_, route)| route.path.len() - 1);
    assert_eq!(route_path, Some(path.len()), "hops of A's route to C");
    let rounds = WARM_UP_ROUNDS + COUNTED_ROUNDS;
    let server = sim.key(SERVER);
    let pinging = sim.request(
        CLIENT,
        Request::PingNode {
            peer: server,
            count: (rounds / 20) as u32,
        },
    );
    let packet = ipv4_packet(
        "10.77.0.2".parse().unwrap(),
        Ipv4Addr::new(10, 99, 0, 1),
        &[0x5a; INNER_MTU - 20],
    );
    let vpn_before = vpn_packets_at_server(&mut sim);

    let mut now = sim.now;
    let mut at_server = AtServer::default();
    for _ in 0..WARM_UP_ROUNDS {
        now += STEP;
        sim.tun_send(CLIENT, VpnApp::Client, &packet);
        round(&mut sim, now, &mut at_server);
    }
    let drops_before = sim.nodes[SERVER].service.node().drops();
    let (frames_before, datagrams_before) = (at_server.frames, at_server.datagrams);
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..COUNTED_ROUNDS {
        now += STEP;
        sim.tun_send(CLIENT, VpnApp::Client, &packet);
        round(&mut sim, now, &mut at_server);
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    sim.now = now;

    let frames = at_server.frames - frames_before;
    let answers = at_server.datagrams - datagrams_before;
    assert!(
        frames >= COUNTED_ROUNDS,
        "C wrote {frames} frames for {COUNTED_ROUNDS} packets"
    );
    assert!(
        answers >= COUNTED_ROUNDS / 20,
        "C sent {answers} datagrams for {} echo requests",
        COUNTED_ROUNDS / 20
    );
    assert_eq!(sim.nodes[SERVER].service.node().drops(), drops_before);
    assert_eq!(
        vpn_packets_at_server(&mut sim) - vpn_before,
        rounds as u64,
        "every VPN packet reached C's server"
    );
    let reply = loop {
        if let Some(reply) = sim.take_reply(CLIENT, pinging) {
            break reply;
        }
        sim.run_for(Duration::from_millis(100));
    };
    let Ok(Reply::Ping(ping)) = reply else {
        panic!("no ping outcome: {reply:?}");
    };
    assert_eq!(
        ping.rtt_ms.len(),
        rounds / 20,
        "C answered every echo request"
    );
    assert_eq!(
        allocations,
        0,
        "C's consume path allocated {allocations} times for {COUNTED_ROUNDS} VPN packets and \
         {} echo requests (ALLOCATION_BACKTRACE=1 shows where)",
        COUNTED_ROUNDS / 20
    );
}

#[test]
fn consuming_a_packet_from_a_direct_route_allocates_nothing() {
    consuming_allocates_nothing(&[SERVER]);
}

#[test]
fn consuming_a_packet_from_a_relayed_route_allocates_nothing() {
    consuming_allocates_nothing(&[1, SERVER]);
}
