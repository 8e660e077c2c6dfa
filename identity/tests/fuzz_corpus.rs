//! Replays every file under `identity/fuzz/corpus/<target>/` through the functions the
//! cargo-fuzz targets call, so fuzz findings stay regression tests without nightly.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            run(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

#[test]
fn pem_corpus() {
    replay("pem", kafka_identity_core::fuzzing::pem);
}

#[test]
fn rules_corpus() {
    replay("rules", kafka_identity_core::fuzzing::rules);
}
