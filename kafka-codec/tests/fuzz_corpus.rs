#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Replays every fuzz corpus file (seeds and anything a fuzzer kept) through the same
//! checks the fuzz targets run, so `cargo test` catches regressions without nightly.
//! A replay that compares nothing passes as well as one that compares everything, so the
//! seeds are also held to what they are for: each is exactly what `examples/fuzz_seeds.rs`
//! makes from a captured stream today (an input of an older format is refused by name),
//! and each is read as whole frames, with at least one frame hidden for responses.

use kafka_codec::fuzzing::{self, check_format, kept_by_fuzzer, seed_corpus, Replay, Target};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const REGENERATE: &str = "cargo run -p kafka-codec --features fuzzing --example fuzz_seeds";

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (file name, path, bytes) of every file in a target's corpus directory.
fn corpus(target: Target) -> Vec<(String, PathBuf, Vec<u8>)> {
    let dir = crate_dir().join("fuzz/corpus").join(target.name());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let bytes = fs::read(&path).unwrap();
            (name, path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Replays each file, refusing one of another format with the file's name.
fn replay(target: Target) -> BTreeMap<String, Replay> {
    let mut out = BTreeMap::new();
    for (name, path, bytes) in corpus(target) {
        if let Err(e) = check_format(&bytes) {
            panic!("{}: {e}", path.display());
        }
        out.insert(name, target.replay(&bytes));
    }
    assert!(!out.is_empty(), "empty corpus {}", target.name());
    out
}

/// The seeds in the corpus are exactly those the generator makes from tests/data now.
fn seeds_are_current(target: Target) {
    let want: BTreeMap<String, Vec<u8>> = seed_corpus(&crate_dir().join("tests/data"))
        .unwrap()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, name, data)| (name, data))
        .collect();
    let have: BTreeMap<String, Vec<u8>> = corpus(target)
        .into_iter()
        .filter(|(name, _, _)| !kept_by_fuzzer(name))
        .map(|(name, _, bytes)| (name, bytes))
        .collect();
    let missing: Vec<_> = want.keys().filter(|n| !have.contains_key(*n)).collect();
    let extra: Vec<_> = have.keys().filter(|n| !want.contains_key(*n)).collect();
    let stale: Vec<_> = want
        .iter()
        .filter(|(n, data)| have.get(*n).is_some_and(|h| h != *data))
        .map(|(n, _)| n)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stale.is_empty(),
        "{} seeds are not what the generator makes now (missing {missing:?}, not made by it \
         {extra:?}, different bytes {stale:?}): run `{REGENERATE}`",
        target.name()
    );
    assert!(want.len() >= 6, "{} seeds from tests/data", want.len());
}

#[test]
fn request_corpus_replays_cleanly() {
    let replays = replay(Target::Requests);
    let mut depths = Vec::new();
    for (name, r) in replays.iter().filter(|(n, _)| !kept_by_fuzzer(n)) {
        // A captured stream is whole frames: read at any offset but the right one, it is not.
        assert!(
            r.frames >= 1 && r.tail == 0,
            "requests/{name}: {r:?}: the oracle read no complete frame"
        );
        depths.extend(r.depth);
    }
    for depth in [
        kafka_codec::HeaderDepth::Fixed,
        kafka_codec::HeaderDepth::ProduceAcks,
        kafka_codec::HeaderDepth::WholeHeader,
    ] {
        assert!(
            depths.contains(&depth),
            "no request seed scans at {depth:?}"
        );
    }
    seeds_are_current(Target::Requests);
}

#[test]
fn response_corpus_replays_cleanly() {
    for (name, r) in replay(Target::Responses)
        .iter()
        .filter(|(n, _)| !kept_by_fuzzer(n))
    {
        assert!(
            r.frames >= 1 && r.tail == 0 && r.hidden >= 1,
            "responses/{name}: {r:?}: the oracle read no complete frame or hid none"
        );
    }
    seeds_are_current(Target::Responses);
}

#[test]
fn an_input_of_an_older_format_is_refused_by_name() {
    let stream =
        fs::read(crate_dir().join("tests/data/kcat-produce-acks-all.responses.bin")).unwrap();
    // Format 1: one seed byte, then the stream.
    let old = [&[0x07][..], &stream].concat();
    let err = check_format(&old).unwrap_err().to_string();
    assert!(
        err.contains("format 1") && err.contains(REGENERATE),
        "{err}"
    );
    let panic = std::panic::catch_unwind(|| fuzzing::responses(&old)).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("not a kafka-codec fuzz input of format 2"),
        "{message}"
    );
    // A later format's input, too.
    let mut later = fuzzing::input([0, 0], &stream);
    later[3] = 3;
    let err = check_format(&later).unwrap_err().to_string();
    assert!(
        err.contains("format 3, this oracle reads format 2"),
        "{err}"
    );
    // The current format, read at the right offset: every frame complete, some hidden.
    let r = fuzzing::responses(&fuzzing::input([0, 7], &stream));
    assert!(r.frames == 6 && r.tail == 0, "{r:?}");
}

#[test]
fn the_fuzzers_mutations_keep_the_header() {
    let seed = fuzzing::input([1, 2], b"\x00\x00\x00\x04\x00\x00\x00\x01");
    // A mutator that would overwrite everything it is given.
    let scribble = |body: &mut [u8], size: usize, max: usize| {
        body.iter_mut().for_each(|b| *b = 0xee);
        (size + 3).min(max)
    };
    let mut data = seed.clone();
    data.resize(64, 0);
    let size = fuzzing::mutate_after_header(&mut data, seed.len(), 64, scribble);
    assert_eq!(size, seed.len() + 3);
    assert!(check_format(&data[..size]).is_ok(), "{:?}", &data[..size]);
    // libFuzzer runs the empty input first: nothing to check, not a format error.
    assert_eq!(check_format(&[]), Ok(&[][..]));
    assert_eq!(fuzzing::requests(&[]).frames, 0);
    // A mutation of the empty input gets the header.
    let mut data = vec![0u8; 16];
    let size = fuzzing::mutate_after_header(&mut data, 0, 16, |_, s, _| s);
    assert_eq!(check_format(&data[..size]), Ok(&[][..]));
    // An input from elsewhere keeps its bytes, behind a header.
    let mut data = b"abc".to_vec();
    data.resize(12, 0);
    let size = fuzzing::mutate_after_header(&mut data, 3, 12, |_, s, _| s);
    assert_eq!(check_format(&data[..size]), Ok(&b"abc"[..]));
    // No room for a header: left as it is.
    let mut data = vec![9u8; 3];
    assert_eq!(fuzzing::mutate_after_header(&mut data, 3, 3, scribble), 3);
    assert_eq!(data, [9, 9, 9]);
}
