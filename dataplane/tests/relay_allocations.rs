//! The relay path allocates nothing per packet: a route A → B → C in the simulator, and B
//! relaying fresh datagrams from A under a counting global allocator.
//!
//! Set `RELAY_ALLOCATION_BACKTRACE=1` to print a backtrace of each allocation counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use skywire_dataplane::node::{Event, INNER_MTU};
use skywire_dataplane::sim::{ipv6_packet, Sim};

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
            "allocation on the relay path:\n{}",
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
    let backtraces = std::env::var_os("RELAY_ALLOCATION_BACKTRACE").is_some();
    BACKTRACES.with(|flag| flag.set(backtraces));
    ALLOCATIONS.with(|count| count.set(0));
    COUNTING.with(|counting| counting.set(true));
    work();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get)
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
         (RELAY_ALLOCATION_BACKTRACE=1 shows where)"
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
