#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // bench code
//! How fast the request scanner follows a stream of Produce frames, reading bytes the
//! way the filter does: each range it asks for is copied out of a host buffer.
//!
//! Reports throughput (bytes of stream followed per second) and, printed once per case,
//! host-read calls per frame and bytes copied per frame.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_codec::{RequestScanner, RequestScannerConfig, ScanStep};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Envoy hands a network filter what one socket read returned; 16 KiB is typical.
const CHUNK: usize = 16 * 1024;

fn produce_frame(payload: usize, corr: i32) -> Vec<u8> {
    let version = 9;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("bench-producer")));
    let mut part = produce_request::PartitionProduceData::default();
    part.records = Some(Bytes::from(vec![0x5a; payload]));
    let mut topic = produce_request::TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("orders"));
    topic.partition_data.push(part);
    let mut req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000);
    req.topic_data.push(topic);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .unwrap_or_default();
    req.encode(&mut buf, version).unwrap_or_default();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Follows `stream` chunk by chunk; returns (frames, host reads, bytes copied).
fn follow(stream: &[u8]) -> (u64, u64, u64) {
    let mut scanner = RequestScanner::new(RequestScannerConfig::default());
    let (mut frames, mut reads, mut copied) = (0, 0, 0);
    for chunk in stream.chunks(CHUNK) {
        scanner.begin_chunk(chunk.len());
        loop {
            match scanner.poll() {
                Ok(ScanStep::Read(range)) => {
                    reads += 1;
                    copied += range.len() as u64;
                    // The copy a host call makes into the VM.
                    let bytes = chunk.get(range).unwrap_or_default().to_vec();
                    if scanner.supply(black_box(&bytes)).is_err() {
                        return (frames, reads, copied);
                    }
                }
                Ok(ScanStep::Frame(_)) => frames += 1,
                Ok(ScanStep::ChunkDone) | Err(_) => break,
            }
        }
    }
    (frames, reads, copied)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_scanner");
    for (label, payload, count) in [("produce_1KiB", 1024, 4096), ("produce_1MiB", 1 << 20, 16)] {
        let stream: Vec<u8> = (0..count).flat_map(|i| produce_frame(payload, i)).collect();
        let (frames, reads, copied) = follow(&stream);
        println!(
            "{label}: {frames} frames, {:.2} host reads/frame, {:.1} bytes copied/frame, {} byte chunks",
            reads as f64 / frames as f64,
            copied as f64 / frames as f64,
            CHUNK
        );
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(label, |b| b.iter(|| follow(black_box(&stream))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
