#![no_main]
// Response direction: hiding frames removes exactly those frames, whatever the chunking.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kafka_codec::fuzzing::responses(data));
