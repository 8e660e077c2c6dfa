#![no_main]

use libfuzzer_sys::fuzz_target;

// PEM, URL-encoded PEM and DER certificates, then Envoy's strings, mapped to a principal.
fuzz_target!(|data: &[u8]| kafka_identity_core::fuzzing::pem(data));
