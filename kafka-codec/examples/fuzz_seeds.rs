//! Writes the seed corpora of the kafka-codec fuzz targets (`kafka-codec/fuzz/corpus/<target>/`)
//! from the captured streams in `kafka-codec/tests/data`, in the oracle's current input format,
//! and removes inputs of an older format (seeds and anything a fuzzer kept). The corpus replay
//! test (`tests/fuzz_corpus.rs`) fails until this has been run after a format change.
//!
//!     cargo run -p kafka-codec --features fuzzing --example fuzz_seeds
#![allow(clippy::expect_used, clippy::unwrap_used)] // a developer tool: stops on any I/O error

use kafka_codec::fuzzing::{check_format, kept_by_fuzzer, seed_corpus, Target};
use std::fs;
use std::path::Path;

fn main() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = seed_corpus(&crate_dir.join("tests/data")).expect("reading tests/data");
    for target in Target::ALL {
        let dir = crate_dir.join("fuzz/corpus").join(target.name());
        fs::create_dir_all(&dir).expect("corpus directory");
        for entry in fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("corpus entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let stale = check_format(&fs::read(&path).expect("corpus file")).is_err();
            // Seeds are all written again below; inputs a fuzzer kept stay if still readable.
            if stale || !kept_by_fuzzer(name) {
                fs::remove_file(&path).expect("removing an old corpus file");
                if stale {
                    println!("removed {} (older format)", path.display());
                }
            }
        }
        for (_, name, data) in seeds.iter().filter(|(t, _, _)| *t == target) {
            let replay = target.replay(data);
            fs::write(dir.join(name), data).expect("writing a seed");
            println!("{}/{name}: {replay:?}", target.name());
        }
    }
}
