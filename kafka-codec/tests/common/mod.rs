#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Builds real Kafka frames with kafka-protocol's encoders (the oracle for the scanners).
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

pub fn frame_with(header: &RequestHeader, key: ApiKey, body: impl Fn(&mut BytesMut)) -> Vec<u8> {
    let version = header.request_api_version;
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body(&mut buf);
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

pub fn header(key: ApiKey, version: i16, corr: i32, client_id: Option<&str>) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(client_id.map(|c| StrBytes::from_string(c.to_owned())))
}

pub fn produce(
    version: i16,
    corr: i32,
    client_id: Option<&str>,
    acks: i16,
    txn: Option<&str>,
    payload: usize,
) -> Vec<u8> {
    if version < 3 {
        return legacy_produce(version, corr, client_id, acks, payload);
    }
    let mut h = header(ApiKey::Produce, version, corr, client_id);
    if version >= 9 {
        // A tagged field in the header: the scanner must step over it.
        h.unknown_tagged_fields
            .insert(7, Bytes::from_static(b"tag"));
    }
    let mut req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000);
    if version >= 3 {
        req.transactional_id = txn.map(|t| TransactionalId(StrBytes::from_string(t.to_owned())));
    }
    let mut topic = produce_request::TopicProduceData::default();
    if version >= 13 {
        topic.topic_id = uuid::Uuid::from_u128(42);
    } else {
        topic.name = TopicName(StrBytes::from_static_str("orders"));
    }
    let mut part = produce_request::PartitionProduceData::default();
    part.records = Some(Bytes::from(vec![0xab; payload]));
    topic.partition_data.push(part);
    req.topic_data.push(topic);
    frame_with(&h, ApiKey::Produce, |buf| req.encode(buf, version).unwrap())
}

pub fn api_versions(version: i16, corr: i32, client_id: Option<&str>) -> Vec<u8> {
    let h = header(ApiKey::ApiVersions, version, corr, client_id);
    let mut req = ApiVersionsRequest::default();
    if version >= 3 {
        req.client_software_name = StrBytes::from_static_str("test");
        req.client_software_version = StrBytes::from_static_str("1.0");
    }
    frame_with(&h, ApiKey::ApiVersions, |buf| {
        req.encode(buf, version).unwrap()
    })
}

pub fn metadata(version: i16, corr: i32, client_id: Option<&str>) -> Vec<u8> {
    let h = header(ApiKey::Metadata, version, corr, client_id);
    let req = MetadataRequest::default();
    frame_with(&h, ApiKey::Metadata, |buf| {
        req.encode(buf, version).unwrap()
    })
}

pub fn response(corr: i32, body_len: usize) -> Vec<u8> {
    let mut out = ((body_len + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&corr.to_be_bytes());
    out.extend((0..body_len).map(|i| i as u8));
    out
}

/// Produce v0-2 (removed from kafka-protocol and Kafka 4, still spoken by old clients):
/// header v1, then acks, timeout, topics.
fn legacy_produce(
    version: i16,
    corr: i32,
    client_id: Option<&str>,
    acks: i16,
    payload: usize,
) -> Vec<u8> {
    use bytes::BufMut;
    let h = header(ApiKey::Produce, version, corr, client_id);
    let mut buf = BytesMut::new();
    h.encode(&mut buf, 1).unwrap();
    buf.put_i16(acks);
    buf.put_i32(1000);
    buf.put_i32(1);
    buf.put_i16(6);
    buf.put_slice(b"orders");
    buf.put_i32(1);
    buf.put_i32(0);
    buf.put_i32(payload as i32);
    buf.put_slice(&vec![0xab; payload]);
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}
