//! Proves that fan-out shares one message: once connections have been served a message or two,
//! routing a QoS 0 PUBLISH allocates the shared message and nothing else, for eight subscribers
//! as for one (no per-receiver copy, and no outbox allocated and freed for each message).
//!
//! A counting global allocator counts allocations while a thread-local flag is on; the flag is
//! on only while the core routes a publish and its receivers' packets are taken.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.
#![allow(unsafe_code)] // The counting allocator implements `GlobalAlloc`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use support::*;
use tern_core::ConnectionId;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Messages routed while counting.
const MESSAGES: usize = 50;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations while routing `MESSAGES` messages, with `receivers` subscribers each served one message at a
/// time (the quiet case: every outbox drains between two messages).
fn allocations_routing_messages(receivers: usize) -> usize {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("pub", V311, Opts::new());
    let subscribers: Vec<ConnectionId> = (0..receivers)
        .map(|i| {
            let subscriber = tb.connect(&format!("sub{i}"), V311, Opts::new());
            tb.subscribe(&subscriber, "t", Q0);
            subscriber.id
        })
        .collect();
    let packets: Vec<_> = (0..MESSAGES + 2)
        .map(|_| wire(&publish("t", "payload", Q0, 0), V311))
        .collect();
    let mut woken = Vec::with_capacity(receivers + 1);
    let mut delivered = 0;
    for (i, packet) in packets.into_iter().enumerate() {
        // The first two messages warm up what the core keeps between messages.
        let count = i >= 2;
        COUNTING.with(|c| c.set(count));
        tb.broker.handle_packet(publisher.id, packet, tb.now);
        tb.broker.take_woken(&mut woken);
        for &id in &subscribers {
            while let Some(transmit) = tb.broker.poll_transmit(id) {
                delivered += 1;
                drop(transmit);
            }
        }
        woken.clear();
        COUNTING.with(|c| c.set(false));
    }
    assert_eq!(
        delivered,
        (MESSAGES + 2) * receivers,
        "every receiver got every message"
    );
    ALLOCATIONS.with(|n| n.replace(0))
}

#[test]
fn routing_allocates_the_shared_message_only_whatever_the_receivers() {
    let one = allocations_routing_messages(1);
    let eight = allocations_routing_messages(8);
    assert!(
        one <= MESSAGES,
        "routing {MESSAGES} QoS 0 messages to one receiver allocated {one} times (the shared message \
         is one allocation each)"
    );
    assert_eq!(
        eight, one,
        "allocations for {MESSAGES} messages: {one} with one receiver, {eight} with eight"
    );
}
