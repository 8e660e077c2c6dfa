#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
use bytes::Bytes;
use kafka_codec::sasl;
use kafka_codec::{api_key, HeaderDepth, RequestScanner, RequestScannerConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};

#[test]
fn injected_requests_decode_as_a_broker_would() {
    let hs = sasl::handshake_request(i32::MAX - 1, "kafka-identity", sasl::OAUTHBEARER).unwrap();
    let auth = sasl::authenticate_request(
        i32::MAX,
        "kafka-identity",
        2,
        b"n,,\x01auth=Bearer x\x01\x01",
    )
    .unwrap();
    // Size prefixes are right: the scanner sees exactly two frames.
    let stream = [hs.clone(), auth.clone()].concat();
    let frames = RequestScanner::new(RequestScannerConfig {
        depth: HeaderDepth::WholeHeader,
        ..Default::default()
    })
    .scan_slice(&stream)
    .unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(
        (frames[0].api_key, frames[0].api_version),
        (api_key::SASL_HANDSHAKE, 1)
    );
    assert_eq!(
        (frames[1].api_key, frames[1].api_version),
        (api_key::SASL_AUTHENTICATE, 2)
    );

    let mut buf = Bytes::copy_from_slice(&hs[4..]);
    let header = decode_request_header_from_buffer(&mut buf).unwrap();
    assert_eq!(header.correlation_id, i32::MAX - 1);
    let body = SaslHandshakeRequest::decode(&mut buf, 1).unwrap();
    assert_eq!(body.mechanism.as_str(), "OAUTHBEARER");

    let mut buf = Bytes::copy_from_slice(&auth[4..]);
    let header = decode_request_header_from_buffer(&mut buf).unwrap();
    assert_eq!(header.correlation_id, i32::MAX);
    let body = SaslAuthenticateRequest::decode(&mut buf, 2).unwrap();
    assert_eq!(&body.auth_bytes[..], b"n,,\x01auth=Bearer x\x01\x01");
}

fn encode_response<T: Encodable>(corr: i32, key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, key.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

#[test]
fn parses_broker_answers_for_every_authenticate_version() {
    let hs = SaslHandshakeResponse::default()
        .with_error_code(0)
        .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
    let parsed =
        sasl::handshake_response(&encode_response(5, ApiKey::SaslHandshake, 1, &hs)).unwrap();
    assert_eq!(parsed.correlation_id, 5);
    assert_eq!(parsed.mechanisms, vec!["OAUTHBEARER"]);

    for version in 0..=2 {
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(58)
            .with_error_message(Some(StrBytes::from_static_str("invalid_token")))
            .with_session_lifetime_ms(if version >= 1 { 10_000 } else { 0 });
        let parsed = sasl::authenticate_response(
            &encode_response(6, ApiKey::SaslAuthenticate, version, &resp),
            version,
        )
        .unwrap();
        assert_eq!(parsed.correlation_id, 6);
        assert_eq!(parsed.error_code, 58);
        assert_eq!(parsed.error_message.as_deref(), Some("invalid_token"));
        assert_eq!(
            parsed.session_lifetime_ms,
            if version >= 1 { 10_000 } else { 0 }
        );
    }
    assert_eq!(sasl::error_name(58), "SaslAuthenticationFailed");
}

#[test]
fn garbage_answers_are_errors_not_panics() {
    let decode_error = |what: &str, r: Result<(), sasl::SaslError>| match r {
        Err(sasl::SaslError::Decode(_)) => {}
        other => panic!("{what}: {other:?}, not a decode error"),
    };
    for data in [
        &[][..],
        &[0, 0],
        &[0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff],
        &[0xff; 40],
    ] {
        decode_error(
            &format!("handshake {data:?}"),
            sasl::handshake_response(data).map(|_| ()),
        );
        for v in 0..=2 {
            decode_error(
                &format!("authenticate v{v} {data:?}"),
                sasl::authenticate_response(data, v).map(|_| ()),
            );
        }
    }
    // Every truncation of a real answer: an error, never a shorter answer read as whole.
    let hs = SaslHandshakeResponse::default()
        .with_error_code(0)
        .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
    let hs = encode_response(5, ApiKey::SaslHandshake, 1, &hs);
    assert!(sasl::handshake_response(&hs).is_ok());
    for cut in 0..hs.len() {
        decode_error(
            &format!("handshake cut at {cut}"),
            sasl::handshake_response(&hs[..cut]).map(|_| ()),
        );
    }
    for version in 0..=2 {
        let auth = SaslAuthenticateResponse::default()
            .with_error_message(Some(StrBytes::from_static_str("x")))
            .with_auth_bytes(Bytes::from_static(b"abc"))
            .with_session_lifetime_ms(if version >= 1 { 10_000 } else { 0 });
        let auth = encode_response(6, ApiKey::SaslAuthenticate, version, &auth);
        assert!(sasl::authenticate_response(&auth, version).is_ok());
        for cut in 0..auth.len() {
            decode_error(
                &format!("authenticate v{version} cut at {cut}"),
                sasl::authenticate_response(&auth[..cut], version).map(|_| ()),
            );
        }
    }
    assert_eq!(
        sasl::authenticate_response(&[0; 20], 3),
        Err(sasl::SaslError::UnsupportedVersion(3))
    );
    assert_eq!(
        sasl::authenticate_request(1, "x", 7, b""),
        Err(sasl::SaslError::UnsupportedVersion(7))
    );
}
