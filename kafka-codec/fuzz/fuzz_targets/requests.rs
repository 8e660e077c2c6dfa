#![no_main]
// Request direction: arbitrary bytes in arbitrary chunks; same frames as one whole scan.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kafka_codec::fuzzing::requests(data));
