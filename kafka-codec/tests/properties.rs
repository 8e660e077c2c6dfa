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
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        kafka_codec::fuzzing::requests(&data);
        kafka_codec::fuzzing::responses(&data);
    }
}
