#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Any chunking gives the same frames; hiding frames removes exactly those frames.
mod common;

use common::*;
use kafka_codec::{
    HeaderDepth, RequestScanner, RequestScannerConfig, ResponseScanner, ResponseScannerConfig,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Req {
    Produce {
        version: i16,
        acks: i16,
        txn: Option<String>,
        payload: usize,
    },
    Metadata {
        version: i16,
    },
    ApiVersions {
        version: i16,
    },
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (
            0i16..=kafka_codec::MAX_PRODUCE_VERSION,
            prop_oneof![Just(0i16), Just(1), Just(-1)],
            proptest::option::of("[a-z]{0,12}"),
            0usize..3000
        )
            .prop_map(|(version, acks, txn, payload)| Req::Produce {
                version,
                acks,
                txn,
                payload
            }),
        (0i16..=12).prop_map(|version| Req::Metadata { version }),
        (0i16..=4).prop_map(|version| Req::ApiVersions { version }),
    ]
}

fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort();
    let mut out = vec![];
    let mut at = 0;
    for p in points {
        out.push(data[at..p].to_vec());
        at = p;
    }
    out.push(data[at..].to_vec());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn chunking_never_changes_request_frames(
        reqs in proptest::collection::vec(req(), 1..12),
        client in proptest::option::of("[a-z0-9-]{0,40}"),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = vec![];
        let mut truth = vec![];
        for (i, r) in reqs.iter().enumerate() {
            let corr = i as i32;
            let offset = stream.len() as u64;
            let (bytes, key, version, acks) = match r {
                Req::Produce { version, acks, txn, payload } =>
                    (produce(*version, corr, client.as_deref(), *acks, txn.as_deref(), *payload), 0, *version, Some(*acks)),
                Req::Metadata { version } => (metadata(*version, corr, client.as_deref()), 3, *version, None),
                Req::ApiVersions { version } => (api_versions(*version, corr, client.as_deref()), 18, *version, None),
            };
            truth.push((offset, key, version, corr, acks));
            stream.extend(bytes);
        }
        let config = RequestScannerConfig { depth: HeaderDepth::ProduceAcks, ..Default::default() };
        let mut s = RequestScanner::new(config);
        let mut frames = vec![];
        for chunk in split(&stream, &cuts) {
            frames.extend(s.scan_slice(&chunk).unwrap());
        }
        let got: Vec<_> = frames.iter().map(|f| (f.stream_offset, f.api_key, f.api_version, f.correlation_id, f.produce_acks)).collect();
        prop_assert_eq!(got, truth);
        prop_assert!(s.at_frame_boundary());
        prop_assert_eq!(s.stream_position(), stream.len() as u64);
        // Walking whole headers finds the same frames.
        let mut whole = RequestScanner::new(RequestScannerConfig { depth: HeaderDepth::WholeHeader, ..Default::default() });
        let mut n = 0;
        for chunk in split(&stream, &cuts) {
            n += whole.scan_slice(&chunk).unwrap().len();
        }
        prop_assert_eq!(n, reqs.len());
    }

    #[test]
    fn hiding_removes_exactly_the_hidden_frames(
        sizes in proptest::collection::vec(0usize..400, 1..10),
        hide_mask in proptest::collection::vec(any::<bool>(), 10),
        lateness in proptest::collection::vec(any::<usize>(), 10),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        // As the filter does it: each hide is registered between two chunks, at a random
        // point before the first byte of its frame has arrived.
        let frames: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| response(i as i32, *n)).collect();
        let stream = frames.concat();
        let chunks = split(&stream, &cuts);
        let mut chunk_starts = vec![];
        let mut at = 0;
        for c in &chunks {
            chunk_starts.push(at);
            at += c.len();
        }
        let mut register: Vec<Vec<(u64, i32)>> = vec![vec![]; chunks.len()];
        let mut expected = vec![];
        let mut expected_hidden = vec![];
        let (mut earliest, mut frame_start) = (0, 0);
        for (i, f) in frames.iter().enumerate() {
            let latest = chunk_starts.iter().rposition(|s| *s <= frame_start).unwrap();
            if hide_mask[i] && latest >= earliest {
                let when = earliest + lateness[i] % (latest - earliest + 1);
                earliest = when;
                register[when].push((i as u64, i as i32));
                expected_hidden.push(f[4..].to_vec());
            } else {
                expected.extend_from_slice(f);
            }
            frame_start += f.len();
        }
        let mut s = ResponseScanner::new(ResponseScannerConfig::default());
        let mut out = vec![];
        let mut hidden = vec![];
        for (chunk, hides) in chunks.iter().zip(&register) {
            for (index, id) in hides {
                s.hide_at(*index, *id);
            }
            let (o, h) = s.scan_slice(chunk).unwrap();
            out.extend(o);
            hidden.extend(h.into_iter().map(|h| h.frame));
        }
        prop_assert_eq!(out, expected);
        prop_assert_eq!(hidden, expected_hidden);
        prop_assert!(s.is_idle());
    }

    #[test]
    fn mutated_real_streams_never_panic_and_scan_alike(case in mutated_capture()) {
        kafka_codec::fuzzing::requests(&case);
        kafka_codec::fuzzing::responses(&case);
    }
}

/// Bytes real clients and a real broker exchanged (tests/data, see its README).
const CAPTURES: [&[u8]; 12] = [
    include_bytes!("data/kcat-produce-acks-all.requests.bin"),
    include_bytes!("data/kcat-produce-acks-all.responses.bin"),
    include_bytes!("data/kcat-produce-acks-0.requests.bin"),
    include_bytes!("data/kcat-produce-acks-0.responses.bin"),
    include_bytes!("data/java-producer-bootstrap.requests.bin"),
    include_bytes!("data/java-producer-bootstrap.responses.bin"),
    include_bytes!("data/java-producer.requests.bin"),
    include_bytes!("data/java-producer.responses.bin"),
    include_bytes!("data/kcat-consumer-fetch.requests.bin"),
    include_bytes!("data/kcat-consumer-fetch.responses.bin"),
    include_bytes!("data/kcat-consumer-group.requests.bin"),
    include_bytes!("data/kcat-consumer-group.responses.bin"),
];

/// One edit of a stream: overwrite, insert or delete a byte, or cut the stream there.
fn edit(stream: &mut Vec<u8>, (kind, at, value): (u8, usize, u8)) {
    let at = at % (stream.len() + 1);
    match kind % 4 {
        0 if at < stream.len() => stream[at] = value,
        1 => stream.insert(at, value),
        2 if at < stream.len() => {
            stream.remove(at);
        }
        3 => stream.truncate(at),
        _ => {}
    }
}

/// An oracle input (current format, any seed) holding a captured stream with 0-3 edits:
/// random bytes almost never get past the first size prefix, real frames with a few edits
/// reach the frames after it, and edits anywhere (a size, a header, a payload) test the
/// scanners where a stream goes wrong.
fn mutated_capture() -> impl Strategy<Value = Vec<u8>> {
    (
        0..CAPTURES.len(),
        any::<[u8; kafka_codec::fuzzing::SEED_BYTES]>(),
        proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(capture, seed, edits)| {
            let mut stream = CAPTURES[capture].to_vec();
            for e in edits {
                edit(&mut stream, e);
            }
            kafka_codec::fuzzing::input(seed, &stream)
        })
}

/// The property above is only worth something if its inputs get past the first frame: most
/// cases must hold several complete frames, and some must be cut or bent mid-stream.
#[test]
fn the_mutated_streams_reach_past_the_first_frame() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut several, mut ragged, cases) = (0, 0, 300);
    for _ in 0..cases {
        let case = mutated_capture().new_tree(&mut runner).unwrap().current();
        let r = kafka_codec::fuzzing::responses(&case);
        several += usize::from(r.frames >= 2);
        ragged += usize::from(r.tail > 0);
    }
    assert!(
        several * 3 >= cases * 2,
        "{several} of {cases} cases with 2+ complete frames"
    );
    assert!(
        ragged * 10 >= cases,
        "{ragged} of {cases} cases end mid-frame"
    );
}
