#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
mod common;

use common::*;
use kafka_codec::{api_key, FrameError, HeaderDepth, RequestScanner, RequestScannerConfig};
use kafka_protocol::messages::ApiKey;

fn scanner(depth: HeaderDepth) -> RequestScanner {
    RequestScanner::new(RequestScannerConfig {
        depth,
        ..Default::default()
    })
}

#[test]
fn reads_fixed_header_with_one_read_per_frame() {
    let mut stream = api_versions(3, 1, Some("rdkafka"));
    stream.extend(metadata(12, 2, Some("rdkafka")));
    stream.extend(produce(9, 3, Some("rdkafka"), -1, None, 5000));
    let mut s = scanner(HeaderDepth::Fixed);
    s.begin_chunk(stream.len());
    let mut reads = 0;
    let mut frames = vec![];
    loop {
        match s.poll().unwrap() {
            kafka_codec::request::ScanStep::Read(r) => {
                reads += 1;
                assert!(r.len() <= 12, "read {r:?} is more than a header");
                s.supply(&stream[r]).unwrap();
            }
            kafka_codec::request::ScanStep::Frame(f) => frames.push(f),
            kafka_codec::request::ScanStep::ChunkDone => break,
        }
    }
    assert_eq!(reads, 3);
    let keys: Vec<_> = frames
        .iter()
        .map(|f| (f.api_key, f.api_version, f.correlation_id))
        .collect();
    assert_eq!(keys, vec![(18, 3, 1), (3, 12, 2), (0, 9, 3)]);
    assert_eq!(
        frames[2].stream_offset,
        frames[1].stream_offset + frames[1].total_len()
    );
    assert!(frames
        .iter()
        .all(|f| f.client_id.is_none() && f.produce_acks.is_none()));
}

#[test]
fn reads_client_id_and_acks_for_every_produce_version() {
    for version in 0..=13i16 {
        for (acks, txn) in [(0i16, None), (1, Some("tx-1")), (-1, None), (-1, Some(""))] {
            let client = Some("producer-7");
            let bytes = produce(version, 100 + version as i32, client, acks, txn, 64);
            let frames = scanner(HeaderDepth::Full).scan_slice(&bytes).unwrap();
            assert_eq!(frames.len(), 1, "v{version}");
            let f = &frames[0];
            assert_eq!(f.api_key, api_key::PRODUCE);
            assert_eq!(f.api_version, version);
            assert_eq!(f.correlation_id, 100 + version as i32);
            assert_eq!(f.client_id.as_deref(), Some("producer-7"), "v{version}");
            assert_eq!(f.produce_acks, Some(acks), "v{version} txn {txn:?}");
            assert_eq!(f.expects_no_response(), acks == 0);
            assert_eq!(f.total_len(), bytes.len() as u64);
        }
    }
}

#[test]
fn null_client_id_and_non_produce_frames() {
    let bytes = metadata(9, 5, None);
    let f = &scanner(HeaderDepth::Full).scan_slice(&bytes).unwrap()[0];
    assert_eq!(f.client_id, None);
    assert_eq!(f.produce_acks, None);
    let bytes = produce(3, 6, None, 0, None, 0);
    let f = &scanner(HeaderDepth::ProduceAcks)
        .scan_slice(&bytes)
        .unwrap()[0];
    assert_eq!((f.client_id.clone(), f.produce_acks), (None, Some(0)));
}

#[test]
fn long_client_ids_are_truncated_not_buffered() {
    let id = "x".repeat(5000);
    let bytes = metadata(4, 1, Some(&id));
    let mut s = RequestScanner::new(RequestScannerConfig {
        depth: HeaderDepth::ClientId,
        max_client_id_bytes: 16,
        ..Default::default()
    });
    let f = &s.scan_slice(&bytes).unwrap()[0];
    assert_eq!(f.client_id.as_deref(), Some("xxxxxxxxxxxxxxxx"));
}

#[test]
fn header_split_at_every_byte_boundary() {
    let mut stream = produce(9, 1, Some("c"), 1, Some("t"), 10);
    stream.extend(produce(7, 2, Some("c"), 0, None, 10));
    stream.extend(api_versions(4, 3, Some("c")));
    let whole = scanner(HeaderDepth::Full).scan_slice(&stream).unwrap();
    for cut in 0..stream.len() {
        let mut s = scanner(HeaderDepth::Full);
        let mut frames = s.scan_slice(&stream[..cut]).unwrap();
        frames.extend(s.scan_slice(&stream[cut..]).unwrap());
        assert_eq!(frames, whole, "cut at {cut}");
    }
    // One byte at a time.
    let mut s = scanner(HeaderDepth::Full);
    let frames: Vec<_> = stream
        .iter()
        .flat_map(|b| s.scan_slice(&[*b]).unwrap())
        .collect();
    assert_eq!(frames, whole);
}

#[test]
fn size_errors_are_values_with_clear_messages() {
    let mut s = scanner(HeaderDepth::Fixed);
    let mut bad = (-5i32).to_be_bytes().to_vec();
    bad.extend([0; 8]);
    let err = s.scan_slice(&bad).unwrap_err();
    assert_eq!(err, FrameError::NegativeSize { size: -5 });
    assert_eq!(err.to_string(), "frame size -5 is negative");
    // The scanner stays failed.
    assert!(s.scan_slice(&[0; 20]).is_err());

    let mut s = RequestScanner::new(RequestScannerConfig {
        max_frame_bytes: 1000,
        ..Default::default()
    });
    let mut big = 1001i32.to_be_bytes().to_vec();
    big.extend([0; 8]);
    let err = s.scan_slice(&big).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            size: 1001,
            max: 1000
        }
    );
    assert!(err.to_string().contains("socket.request.max.bytes"));

    let mut tiny = 3i32.to_be_bytes().to_vec();
    tiny.extend([0; 8]);
    assert!(matches!(
        scanner(HeaderDepth::Fixed).scan_slice(&tiny),
        Err(FrameError::TruncatedHeader { size: 3, .. })
    ));
}

#[test]
fn truncated_client_id_is_an_error() {
    // Header claims a 50-byte client id inside a 12-byte frame.
    let mut f = 12i32.to_be_bytes().to_vec();
    f.extend((ApiKey::Metadata as i16).to_be_bytes());
    f.extend(4i16.to_be_bytes());
    f.extend(9i32.to_be_bytes());
    f.extend(50i16.to_be_bytes());
    f.extend([b'a'; 2]);
    let err = scanner(HeaderDepth::ClientId).scan_slice(&f).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TruncatedHeader {
                size: 12,
                needed: 60
            }
        ),
        "{err:?}"
    );
    // At fixed depth the same frame is fine: the client id is never looked at.
    assert_eq!(scanner(HeaderDepth::Fixed).scan_slice(&f).unwrap().len(), 1);
}

#[test]
fn default_max_is_kafkas_socket_request_max_bytes() {
    assert_eq!(kafka_codec::DEFAULT_MAX_FRAME_BYTES, 104_857_600);
}
