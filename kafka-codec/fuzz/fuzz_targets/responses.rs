#![no_main]
// Response direction: hiding frames removes exactly those frames, whatever the chunking.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kafka_codec::fuzzing::responses(data);
});

// libFuzzer's mutations change only what follows the input's format header, so every input
// it keeps in the corpus is one the replay test reads (kafka_codec::fuzzing::check_format).
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, _seed: u32| {
    kafka_codec::fuzzing::mutate_after_header(data, size, max_size, libfuzzer_sys::fuzzer_mutate)
});
