#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Replays every fuzz corpus file (seeds and anything a fuzzer kept) through the same
//! checks the fuzz targets run, so `cargo test` catches regressions without nightly.

use std::fs;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "empty corpus {}", dir.display());
    count
}

#[test]
fn request_corpus_replays_cleanly() {
    replay("requests", kafka_codec::fuzzing::requests);
}

#[test]
fn response_corpus_replays_cleanly() {
    replay("responses", kafka_codec::fuzzing::responses);
}
