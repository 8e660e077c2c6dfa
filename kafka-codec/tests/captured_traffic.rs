#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! The scanners against bytes real clients sent to a real broker (see data/README.md).

use kafka_codec::sasl;
use kafka_codec::{
    HeaderDepth, RequestScanner, RequestScannerConfig, ResponseScanner, ResponseScannerConfig,
};

const HS: i32 = i32::MAX - 7;
const AUTH: i32 = i32::MAX - 6;

struct Capture {
    name: &'static str,
    requests: &'static [u8],
    responses: &'static [u8],
    /// (api key, api version, correlation id, produce acks)
    expected: &'static [(i16, i16, i32, Option<i16>)],
}

macro_rules! capture {
    ($name:literal, $expected:expr) => {
        Capture {
            name: $name,
            requests: include_bytes!(concat!("data/", $name, ".requests.bin")),
            responses: include_bytes!(concat!("data/", $name, ".responses.bin")),
            expected: $expected,
        }
    };
}

fn captures() -> Vec<Capture> {
    let sasl = [(17, 1, HS, None), (36, 2, AUTH, None)];
    let with_sasl =
        |rest: &[(i16, i16, i32, Option<i16>)]| -> &'static [(i16, i16, i32, Option<i16>)] {
            let mut v = sasl.to_vec();
            v.extend_from_slice(rest);
            Box::leak(v.into_boxed_slice())
        };
    vec![
        capture!(
            "kcat-produce-acks-all",
            with_sasl(&[
                (18, 3, 1, None),
                (3, 4, 2, None),
                (0, 7, 3, Some(-1)),
                (0, 7, 4, Some(-1))
            ])
        ),
        capture!(
            "kcat-produce-acks-0",
            with_sasl(&[(18, 3, 1, None), (3, 4, 2, None), (0, 7, 3, Some(0))])
        ),
        capture!(
            "java-producer-bootstrap",
            with_sasl(&[(18, 5, 0, None), (3, 13, 1, None), (22, 5, 2, None)])
        ),
        capture!(
            "java-producer",
            with_sasl(&[(18, 5, 4, None), (22, 5, 5, None), (0, 13, 6, Some(-1))])
        ),
        capture!(
            "kcat-consumer-fetch",
            with_sasl(&[
                (18, 3, 1, None),
                (3, 4, 2, None),
                (10, 2, 3, None),
                (10, 2, 4, None),
                (3, 4, 5, None),
                (1, 11, 6, None),
                (2, 2, 7, None),
                (2, 2, 8, None),
                (1, 11, 9, None),
                (1, 11, 10, None),
                (1, 11, 11, None),
            ])
        ),
        capture!(
            "kcat-consumer-group",
            with_sasl(&[
                (18, 3, 1, None),
                (3, 4, 2, None),
                (11, 5, 3, None),
                (11, 5, 4, None),
                (3, 4, 5, None),
                (14, 3, 6, None),
                (12, 3, 7, None),
                (9, 7, 8, None),
                (8, 7, 9, None),
                (13, 1, 10, None),
            ])
        ),
    ]
}

/// (api key, api version, correlation id, produce acks)
type Header = (i16, i16, i32, Option<i16>);

fn scan(c: &Capture, chunk: usize, depth: HeaderDepth) -> Vec<Header> {
    let mut s = RequestScanner::new(RequestScannerConfig {
        depth,
        ..Default::default()
    });
    let mut out = vec![];
    for part in c.requests.chunks(chunk) {
        for f in s.scan_slice(part).unwrap() {
            out.push((f.api_key, f.api_version, f.correlation_id, f.produce_acks));
        }
    }
    assert!(
        s.at_frame_boundary(),
        "{}: stream does not end at a frame boundary",
        c.name
    );
    out
}

#[test]
fn request_headers_of_real_clients_under_every_chunking() {
    for c in captures() {
        for chunk in [1, 2, 3, 5, 7, 12, 13, 64, 100_000] {
            let got = scan(&c, chunk, HeaderDepth::ProduceAcks);
            assert_eq!(got, c.expected, "{} in chunks of {chunk}", c.name);
            // Every real client's headers (client ids, tagged fields) are walked whole.
            let whole: Vec<_> = scan(&c, chunk, HeaderDepth::WholeHeader)
                .into_iter()
                .map(|(k, v, corr, _)| (k, v, corr, None::<i16>))
                .collect();
            let without_acks: Vec<_> = c
                .expected
                .iter()
                .map(|(k, v, corr, _)| (*k, *v, *corr, None))
                .collect();
            assert_eq!(whole, without_acks, "{} in chunks of {chunk}", c.name);
        }
    }
}

#[test]
fn every_request_but_acks_0_produce_gets_an_answer_in_order() {
    for c in captures() {
        // Nothing to hide: the scanner hands on the broker's stream exactly, under any chunking.
        for chunk in [1, 3, 8, 9, 50, 100_000] {
            let mut s = ResponseScanner::new(ResponseScannerConfig::default());
            let mut out = vec![];
            for part in c.responses.chunks(chunk) {
                let (o, hidden) = s.scan_slice(part).unwrap();
                assert!(hidden.is_empty(), "{} chunk {chunk}: {hidden:?}", c.name);
                out.extend(o);
            }
            assert!(
                out == c.responses,
                "{} chunk {chunk}: output differs",
                c.name
            );
            assert!(s.is_idle(), "{} chunk {chunk}: scanner not idle", c.name);
        }
        // Reference: correlation ids of the answers, read off the stream frame by frame.
        let mut ids = vec![];
        let mut at = 0;
        while at < c.responses.len() {
            let size = i32::from_be_bytes(c.responses[at..at + 4].try_into().unwrap()) as usize;
            ids.push(i32::from_be_bytes(
                c.responses[at + 4..at + 8].try_into().unwrap(),
            ));
            at += 4 + size;
        }
        let expected: Vec<i32> = c
            .expected
            .iter()
            .filter(|e| e.3 != Some(0))
            .map(|e| e.2)
            .collect();
        assert_eq!(ids, expected, "{}", c.name);
    }
}

#[test]
fn hiding_the_injected_answers_leaves_exactly_the_clients_stream() {
    for c in captures() {
        let first = 4 + i32::from_be_bytes(c.responses[..4].try_into().unwrap()) as usize;
        let second = first
            + 4
            + i32::from_be_bytes(c.responses[first..first + 4].try_into().unwrap()) as usize;
        for chunk in [1, 3, 8, 9, 50, 100_000] {
            let mut s = ResponseScanner::new(ResponseScannerConfig::default());
            s.hide_at(0, HS);
            s.hide_at(1, AUTH);
            let mut out = vec![];
            let mut hidden = vec![];
            for part in c.responses.chunks(chunk) {
                let (o, h) = s.scan_slice(part).unwrap();
                out.extend(o);
                hidden.extend(h);
            }
            assert_eq!(out, &c.responses[second..], "{} chunk {chunk}", c.name);
            let hs = sasl::handshake_response(&hidden[0].frame).unwrap();
            assert_eq!((hs.correlation_id, hs.error_code), (HS, 0));
            assert!(hs.mechanisms.contains(&"OAUTHBEARER".to_owned()));
            let auth = sasl::authenticate_response(&hidden[1].frame, 2).unwrap();
            assert_eq!((auth.correlation_id, auth.error_code), (AUTH, 0));
            // Kafka 4.4 reports the token's remaining lifetime (exp - now) even with
            // connections.max.reauth.ms unset; the filter's tokens lived 3600 s.
            assert!(
                (3_500_000..=3_600_000).contains(&auth.session_lifetime_ms),
                "{}",
                auth.session_lifetime_ms
            );
        }
    }
}
