//! Drives the broker core's connection handling with arbitrary bytes: several connections, each
//! decoded as the network runtime does, with timers and lost sockets; the script format and the
//! checks live in `fuzz/broker_harness.rs`, which the corpus replay test shares.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../broker_harness.rs");

fuzz_target!(|data: &[u8]| check_broker_input(data));
