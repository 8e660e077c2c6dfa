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
    assert!(frames.iter().all(|f| f.produce_acks.is_none()));
}

#[test]
fn reads_acks_for_every_produce_version() {
    for version in 0..=kafka_codec::MAX_PRODUCE_VERSION {
        for (acks, txn) in [(0i16, None), (1, Some("tx-1")), (-1, None), (-1, Some(""))] {
            let client = Some("producer-7");
            let bytes = produce(version, 100 + version as i32, client, acks, txn, 64);
            let frames = scanner(HeaderDepth::ProduceAcks)
                .scan_slice(&bytes)
                .unwrap();
            assert_eq!(frames.len(), 1, "v{version}");
            let f = &frames[0];
            assert_eq!(f.api_key, api_key::PRODUCE);
            assert_eq!(f.api_version, version);
            assert_eq!(f.correlation_id, 100 + version as i32);
            assert_eq!(f.produce_acks, Some(acks), "v{version} txn {txn:?}");
            assert_eq!(f.expects_no_response(), acks == 0);
            assert_eq!(f.total_len(), bytes.len() as u64);
        }
    }
}

#[test]
fn a_produce_version_newer_than_the_codec_knows_is_an_error_not_a_guess() {
    // Same bytes as the newest known version, relabelled: the body layout of a future
    // version is unknown, so its acks must not be read from where v13 keeps them.
    let newest = kafka_codec::MAX_PRODUCE_VERSION;
    let mut bytes = produce(newest, 1, Some("p"), -1, None, 8);
    bytes[6..8].copy_from_slice(&(newest + 1).to_be_bytes());
    let err = scanner(HeaderDepth::ProduceAcks)
        .scan_slice(&bytes)
        .unwrap_err();
    assert_eq!(
        err,
        FrameError::UnsupportedProduceVersion {
            version: newest + 1,
            max: newest
        }
    );
    assert!(err.to_string().contains("Produce version 14"), "{err}");
    // Without the need for acks such a frame is forwarded like any other.
    assert_eq!(
        scanner(HeaderDepth::Fixed)
            .scan_slice(&bytes)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn null_client_id_and_non_produce_frames() {
    let bytes = metadata(9, 5, None);
    let f = &scanner(HeaderDepth::ProduceAcks)
        .scan_slice(&bytes)
        .unwrap()[0];
    assert_eq!(f.produce_acks, None);
    let bytes = produce(3, 6, None, 0, None, 0);
    let f = &scanner(HeaderDepth::ProduceAcks)
        .scan_slice(&bytes)
        .unwrap()[0];
    assert_eq!(f.produce_acks, Some(0));
    assert_eq!(
        scanner(HeaderDepth::WholeHeader)
            .scan_slice(&metadata(9, 5, None))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn whole_header_walks_client_ids_and_tagged_fields_of_every_api_versions_version() {
    for version in 0..=4i16 {
        let bytes = api_versions(version, 7, Some("x".repeat(300).as_str()));
        let frames = scanner(HeaderDepth::WholeHeader)
            .scan_slice(&bytes)
            .unwrap();
        assert_eq!(frames.len(), 1, "v{version}");
        // Cut one byte off the header's end (and the frame): the header no longer fits.
        let mut short = bytes.clone();
        let header_end = if version >= 3 {
            4 + 8 + 2 + 300 + 1
        } else {
            4 + 8 + 2 + 300
        };
        short.truncate(header_end - 1);
        let size = (short.len() - 4) as i32;
        short[..4].copy_from_slice(&size.to_be_bytes());
        assert!(
            matches!(
                scanner(HeaderDepth::WholeHeader).scan_slice(&short),
                Err(FrameError::TruncatedHeader { .. })
            ),
            "v{version}"
        );
    }
}

#[test]
fn whole_header_refuses_an_api_key_it_does_not_know() {
    let mut f = 12i32.to_be_bytes().to_vec();
    f.extend(0x6000i16.to_be_bytes()); // what a raw GSSAPI token starts with
    f.extend(0i16.to_be_bytes());
    f.extend(1i32.to_be_bytes());
    f.extend([0; 4]);
    assert_eq!(
        scanner(HeaderDepth::WholeHeader)
            .scan_slice(&f)
            .unwrap_err(),
        FrameError::UnknownApiKey { api_key: 0x6000 }
    );
    // Forwarding depths do not care: newer Kafka APIs must keep working.
    assert_eq!(
        scanner(HeaderDepth::ProduceAcks)
            .scan_slice(&f)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn header_split_at_every_byte_boundary() {
    let mut stream = produce(9, 1, Some("c"), 1, Some("t"), 10);
    stream.extend(produce(7, 2, Some("c"), 0, None, 10));
    stream.extend(api_versions(4, 3, Some("c")));
    for depth in [
        HeaderDepth::Fixed,
        HeaderDepth::ProduceAcks,
        HeaderDepth::WholeHeader,
    ] {
        let whole = scanner(depth).scan_slice(&stream).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..stream.len() {
            let mut s = scanner(depth);
            let mut frames = s.scan_slice(&stream[..cut]).unwrap();
            frames.extend(s.scan_slice(&stream[cut..]).unwrap());
            assert_eq!(frames, whole, "{depth:?} cut at {cut}");
        }
    }
    let whole = scanner(HeaderDepth::ProduceAcks)
        .scan_slice(&stream)
        .unwrap();
    // One byte at a time.
    let mut s = scanner(HeaderDepth::ProduceAcks);
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
    let err = scanner(HeaderDepth::WholeHeader)
        .scan_slice(&f)
        .unwrap_err();
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
