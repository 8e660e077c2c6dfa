#![no_main]

use libfuzzer_sys::fuzz_target;

// Kafka mapping rules (or an identity JSON config) on the first line, a DN after it.
fuzz_target!(|data: &[u8]| kafka_identity_core::fuzzing::rules(data));
