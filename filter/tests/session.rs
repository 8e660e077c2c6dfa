#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! The connection state machine against byte streams shaped like a real broker's.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use kafka_identity_filter::session::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};

fn settings() -> SessionSettings {
    SessionSettings {
        on_no_identity: NoIdentityPolicy::Reject,
        on_client_sasl: ClientSaslPolicy::Reject,
        token_lifetime_secs: 3600,
        max_frame_bytes: 100 * 1024 * 1024,
        client_id: "kafka-identity".into(),
    }
}

fn producer() -> Identification {
    Identification::Principal {
        identity: "spiffe://cluster.local/ns/apps/sa/producer".into(),
        principal: "spiffe://cluster.local/ns/apps/sa/producer".into(),
    }
}

fn response_frame<T: Encodable>(corr: i32, key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, key.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn handshake_ok() -> Vec<u8> {
    let body = SaslHandshakeResponse::default()
        .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
    response_frame(HANDSHAKE_CORRELATION_ID, ApiKey::SaslHandshake, 1, &body)
}

fn authenticate(error: i16, message: Option<&'static str>, lifetime: i64) -> Vec<u8> {
    let body = SaslAuthenticateResponse::default()
        .with_error_code(error)
        .with_error_message(message.map(StrBytes::from_static_str))
        .with_session_lifetime_ms(lifetime);
    response_frame(
        AUTHENTICATE_CORRELATION_ID,
        ApiKey::SaslAuthenticate,
        AUTHENTICATE_VERSION,
        &body,
    )
}

fn request(key: ApiKey, version: i16, corr: i32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    buf.extend_from_slice(&[0u8; 40]);
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Counts host reads, to prove what the filter does not touch.
struct Counting<'a> {
    data: &'a [u8],
    reads: usize,
    bytes: usize,
}

impl ChunkSource for Counting<'_> {
    fn read(&mut self, range: Range<usize>) -> Option<Vec<u8>> {
        self.reads += 1;
        self.bytes += range.len();
        self.data.get(range).map(<[u8]>::to_vec)
    }
}

fn started() -> Session {
    let mut s = Session::new(&settings());
    assert!(matches!(
        s.start(&settings(), &producer(), 1_700_000_000),
        Ok(Start::Inject(_))
    ));
    s
}

#[test]
fn injects_handshake_and_authenticate_carrying_the_principal() {
    let mut s = Session::new(&settings());
    let Start::Inject(bytes) = s.start(&settings(), &producer(), 1_700_000_000).unwrap() else {
        panic!("expected injection")
    };
    let mut buf = Bytes::from(bytes);
    let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    let mut first = buf.slice(4..4 + size);
    let mut second = buf.split_off(4 + size).slice(4..);
    let h = decode_request_header_from_buffer(&mut first).unwrap();
    assert_eq!((h.request_api_key, h.request_api_version), (17, 1));
    assert_eq!(h.correlation_id, HANDSHAKE_CORRELATION_ID);
    assert_eq!(
        SaslHandshakeRequest::decode(&mut first, 1)
            .unwrap()
            .mechanism
            .as_str(),
        "OAUTHBEARER"
    );
    let h = decode_request_header_from_buffer(&mut second).unwrap();
    assert_eq!(
        (h.request_api_key, h.request_api_version),
        (36, AUTHENTICATE_VERSION)
    );
    assert_eq!(h.correlation_id, AUTHENTICATE_CORRELATION_ID);
    let auth = SaslAuthenticateRequest::decode(&mut second, AUTHENTICATE_VERSION).unwrap();
    let text = String::from_utf8(auth.auth_bytes.to_vec()).unwrap();
    assert!(
        text.starts_with("n,,\u{1}auth=Bearer eyJhbGciOiJub25lIn0."),
        "{text}"
    );
    assert!(text.ends_with(".\u{1}\u{1}"));
}

#[test]
fn removes_the_broker_answers_and_passes_the_clients() {
    let mut s = started();
    let client_answer = response_frame(1, ApiKey::ApiVersions, 3, &ApiVersionsResponse::default());
    let stream = [
        handshake_ok(),
        authenticate(0, None, 0),
        client_answer.clone(),
    ]
    .concat();
    let out = s.upstream(stream.len(), &mut stream.as_slice()).unwrap();
    assert_eq!(out.authenticated, Some(0));
    assert_eq!(out.edits.as_ref().unwrap().apply(&stream), client_answer);
    assert!(s.is_authenticated());
}

#[test]
fn answers_split_into_single_bytes_still_authenticate() {
    let mut s = started();
    let client_answer = response_frame(1, ApiKey::Metadata, 12, &MetadataResponse::default());
    let stream = [
        handshake_ok(),
        authenticate(0, None, 10_000),
        client_answer.clone(),
    ]
    .concat();
    let mut out = vec![];
    let mut lifetime = None;
    for b in &stream {
        let chunk = [*b];
        let o = s.upstream(1, &mut &chunk[..]).unwrap();
        lifetime = lifetime.or(o.authenticated);
        match o.edits {
            Some(e) => out.extend(e.apply(&chunk)),
            None => out.extend_from_slice(&chunk),
        }
    }
    assert_eq!(out, client_answer);
    assert_eq!(lifetime, Some(10_000));
}

#[test]
fn after_authentication_the_response_stream_is_not_read() {
    let mut s = started();
    let stream = [handshake_ok(), authenticate(0, None, 0)].concat();
    s.upstream(stream.len(), &mut stream.as_slice()).unwrap();
    let big = response_frame(5, ApiKey::Fetch, 12, &FetchResponse::default());
    let mut src = Counting {
        data: &big,
        reads: 0,
        bytes: 0,
    };
    let out = s.upstream(big.len(), &mut src).unwrap();
    assert_eq!(out, UpstreamOutcome::default());
    assert_eq!(src.reads, 0);
}

#[test]
fn broker_rejection_closes_with_its_message() {
    let mut s = started();
    let stream = [
        handshake_ok(),
        authenticate(58, Some("{\"status\":\"invalid_token\"}"), 0),
    ]
    .concat();
    let err = s
        .upstream(stream.len(), &mut stream.as_slice())
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::AuthFailed);
    assert!(
        err.message.contains("SaslAuthenticationFailed"),
        "{}",
        err.message
    );
    assert!(err.message.contains("invalid_token"), "{}", err.message);
}

#[test]
fn listener_without_oauthbearer_is_an_auth_failure() {
    let mut s = started();
    let body = SaslHandshakeResponse::default()
        .with_error_code(33)
        .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
    let stream = response_frame(HANDSHAKE_CORRELATION_ID, ApiKey::SaslHandshake, 1, &body);
    let err = s
        .upstream(stream.len(), &mut stream.as_slice())
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::AuthFailed);
    assert!(
        err.message.contains("UnsupportedSaslMechanism") && err.message.contains("PLAIN"),
        "{}",
        err.message
    );
}

#[test]
fn client_requests_are_followed_reading_only_headers() {
    let mut s = started();
    let mut stream = request(ApiKey::ApiVersions, 3, 1);
    stream.extend(request(ApiKey::Metadata, 12, 2));
    stream.extend(request(ApiKey::Produce, 9, 3));
    let mut src = Counting {
        data: &stream,
        reads: 0,
        bytes: 0,
    };
    s.downstream(stream.len(), &mut src).unwrap();
    assert_eq!(src.reads, 3);
    assert_eq!(src.bytes, 36);
}

#[test]
fn client_sasl_is_refused_at_any_point() {
    for key in [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate] {
        let stream = [
            request(ApiKey::ApiVersions, 3, 1),
            request(ApiKey::Metadata, 12, 2),
            request(key, 1, 3),
        ]
        .concat();
        for cut in 0..stream.len() {
            let mut s = started();
            // Refused as soon as the header is complete, whichever chunk completes it.
            let sasl_header_end = stream.len() - request(key, 1, 3).len() + 12;
            let first = s.downstream(cut, &mut &stream[..cut]);
            let err = if cut >= sasl_header_end {
                first.unwrap_err()
            } else {
                assert!(first.is_ok(), "cut {cut}");
                s.downstream(stream.len() - cut, &mut &stream[cut..])
                    .unwrap_err()
            };
            assert_eq!(err.kind, RefusalKind::ClientSasl);
        }
    }
}

#[test]
fn no_identity_is_refused_or_passed_through_by_policy() {
    let none = Identification::NoMtls;
    let mut s = Session::new(&settings());
    let err = s.start(&settings(), &none, 0).unwrap_err();
    assert_eq!(err.kind, RefusalKind::NoIdentity);

    let nope = Identification::NoPrincipal {
        identity: "spiffe://evil.example/ns/a/sa/b".into(),
        reason: "trust domain not allowed".into(),
    };
    let err = Session::new(&settings())
        .start(&settings(), &nope, 0)
        .unwrap_err();
    assert!(err.message.contains("evil.example") && err.message.contains("trust domain"));

    let pass = SessionSettings {
        on_no_identity: NoIdentityPolicy::PassThrough,
        ..settings()
    };
    let mut s = Session::new(&pass);
    assert_eq!(s.start(&pass, &none, 0).unwrap(), Start::PassThrough);
    // Client SASL is still refused unless explicitly allowed for such connections.
    let hs = request(ApiKey::SaslHandshake, 1, 1);
    assert_eq!(
        s.downstream(hs.len(), &mut hs.as_slice()).unwrap_err().kind,
        RefusalKind::ClientSasl
    );

    let allow = SessionSettings {
        on_client_sasl: ClientSaslPolicy::AllowWithoutIdentity,
        ..pass
    };
    let mut s = Session::new(&allow);
    s.start(&allow, &none, 0).unwrap();
    assert!(s.downstream(hs.len(), &mut hs.as_slice()).is_ok());
    // ...but never on a connection the filter authenticated.
    let mut s = Session::new(&allow);
    s.start(&allow, &producer(), 0).unwrap();
    assert_eq!(
        s.downstream(hs.len(), &mut hs.as_slice()).unwrap_err().kind,
        RefusalKind::ClientSasl
    );
}

#[test]
fn malformed_frames_are_protocol_errors() {
    let mut s = started();
    let mut bad = (-1i32).to_be_bytes().to_vec();
    bad.extend([0; 8]);
    let err = s.downstream(bad.len(), &mut bad.as_slice()).unwrap_err();
    assert_eq!(err.kind, RefusalKind::Protocol);
    assert!(err.message.contains("negative"), "{}", err.message);

    let mut s = started();
    let mut big = (200 * 1024 * 1024i32).to_be_bytes().to_vec();
    big.extend([0; 8]);
    assert_eq!(
        s.upstream(big.len(), &mut big.as_slice()).unwrap_err().kind,
        RefusalKind::Protocol
    );
}
