//! Feeds arbitrary bytes to the MQTT decoder and proves that whatever decodes re-encodes to an
//! equal packet; the checks live in `fuzz/harness.rs`, which the corpus replay test shares.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../harness.rs");

fuzz_target!(|data: &[u8]| check_input(data));
