#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! The connection state machine against byte streams shaped like a real broker's.

mod support;
use support::{client_answer, request, response_frame};

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use kafka_identity_filter::host::HostError;
use kafka_identity_filter::session::*;
use kafka_identity_filter::token::TokenIssuer;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};

const NOW: u64 = 1_700_000_000_000;

fn settings() -> SessionSettings {
    SessionSettings {
        on_no_identity: NoIdentityPolicy::Reject,
        on_client_sasl: ClientSaslPolicy::Reject,
        tokens: TokenIssuer::Unsecured {
            lifetime_secs: 3600,
        },
        max_frame_bytes: 100 * 1024 * 1024,
        client_id: "kafka-identity".into(),
        reauthenticate: true,
    }
}

fn producer() -> Identification {
    Identification::Principal {
        identity: "spiffe://cluster.local/ns/apps/sa/producer".into(),
        principal: "spiffe://cluster.local/ns/apps/sa/producer".into(),
    }
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

/// Counts host reads, to prove what the filter does not touch.
struct Counting<'a> {
    data: &'a [u8],
    reads: usize,
    bytes: usize,
}

impl ChunkSource for Counting<'_> {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        self.reads += 1;
        self.bytes += range.len();
        let wanted = range.len();
        self.data
            .get(range)
            .map(<[u8]>::to_vec)
            .ok_or(HostError::ShortRead { wanted, got: 0 })
    }
}

fn started() -> Session {
    let mut s = Session::new(&settings());
    assert!(matches!(
        s.start(&settings(), &producer(), NOW),
        Ok(Start::Inject(_))
    ));
    s
}

#[test]
fn injects_handshake_and_authenticate_carrying_the_principal() {
    let mut s = Session::new(&settings());
    let Start::Inject(bytes) = s.start(&settings(), &producer(), NOW).unwrap() else {
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
    let out = s
        .upstream(&settings(), stream.len(), &mut stream.as_slice(), NOW)
        .unwrap();
    assert_eq!(out.authenticated.map(|a| a.session_lifetime_ms), Some(0));
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
        let o = s.upstream(&settings(), 1, &mut &chunk[..], NOW).unwrap();
        lifetime = lifetime.or(o.authenticated);
        match o.edits {
            Some(e) => out.extend(e.apply(&chunk)),
            None => out.extend_from_slice(&chunk),
        }
    }
    assert_eq!(out, client_answer);
    assert_eq!(lifetime.map(|a| a.session_lifetime_ms), Some(10_000));
}

#[test]
fn after_authentication_the_response_stream_is_followed_only_if_reauthenticating() {
    for (reauth, reads, bytes) in [(false, 0, 0), (true, 1, 8)] {
        let settings = SessionSettings {
            reauthenticate: reauth,
            ..settings()
        };
        let mut s = Session::new(&settings);
        s.start(&settings, &producer(), NOW).unwrap();
        let stream = [handshake_ok(), authenticate(0, None, 0)].concat();
        s.upstream(&settings, stream.len(), &mut stream.as_slice(), NOW)
            .unwrap();
        let big = response_frame(5, ApiKey::Fetch, 12, &FetchResponse::default());
        let mut src = Counting {
            data: &big,
            reads: 0,
            bytes: 0,
        };
        let out = s.upstream(&settings, big.len(), &mut src, NOW).unwrap();
        assert_eq!(out, UpstreamOutcome::default());
        assert_eq!(
            (src.reads, src.bytes),
            (reads, bytes),
            "reauthenticate {reauth}"
        );
    }
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
        .upstream(&settings(), stream.len(), &mut stream.as_slice(), NOW)
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::AuthFailed);
    assert!(
        err.message.contains("SaslAuthenticationFailed"),
        "{}",
        err.message
    );
    assert!(err.message.contains("invalid_token"), "{}", err.message);
}

/// What Kafka's OAUTHBEARER server really answers to a token it refuses (a key id its JWKS
/// lacks, a bad signature, an expired token): error code 0 and an RFC 7628 error challenge;
/// the error code would follow only once the client acknowledged it.
#[test]
fn an_error_challenge_with_error_code_0_is_a_refusal_not_an_authentication() {
    let mut s = started();
    let body = SaslAuthenticateResponse::default()
        .with_auth_bytes(bytes::Bytes::from_static(b"{\"status\":\"invalid_token\"}"))
        .with_session_lifetime_ms(0);
    let stream = [
        handshake_ok(),
        response_frame(
            AUTHENTICATE_CORRELATION_ID,
            ApiKey::SaslAuthenticate,
            AUTHENTICATE_VERSION,
            &body,
        ),
    ]
    .concat();
    let err = s
        .upstream(&settings(), stream.len(), &mut stream.as_slice(), NOW)
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::AuthFailed);
    assert_eq!(
        err.message,
        "broker refused the token: error challenge {'status':'invalid_token'}"
    );
}

#[test]
fn listener_without_oauthbearer_is_an_auth_failure() {
    let mut s = started();
    let body = SaslHandshakeResponse::default()
        .with_error_code(33)
        .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
    let stream = response_frame(HANDSHAKE_CORRELATION_ID, ApiKey::SaslHandshake, 1, &body);
    let err = s
        .upstream(&settings(), stream.len(), &mut stream.as_slice(), NOW)
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
    let mut stream = request(ApiKey::ApiVersions, 3, 1);
    stream.extend(request(ApiKey::Metadata, 12, 2));
    stream.extend(request(ApiKey::Produce, 9, 3));
    // Without re-authentication: the 12-byte prefix of each frame. With it, Produce
    // requests also give up acks (client id length, tagged fields, transactional id, acks).
    for (reauth, reads, bytes) in [(false, 3, 36), (true, 7, 42)] {
        let settings = SessionSettings {
            reauthenticate: reauth,
            ..settings()
        };
        let mut s = Session::new(&settings);
        s.start(&settings, &producer(), NOW).unwrap();
        let mut src = Counting {
            data: &stream,
            reads: 0,
            bytes: 0,
        };
        s.downstream(&settings, stream.len(), &mut src, NOW, &mut producer)
            .unwrap();
        assert_eq!(
            (src.reads, src.bytes),
            (reads, bytes),
            "reauthenticate {reauth}"
        );
    }
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
            let first = s.downstream(&settings(), cut, &mut &stream[..cut], NOW, &mut producer);
            let err = if cut >= sasl_header_end {
                first.unwrap_err()
            } else {
                assert!(first.is_ok(), "cut {cut}");
                s.downstream(
                    &settings(),
                    stream.len() - cut,
                    &mut &stream[cut..],
                    NOW,
                    &mut producer,
                )
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
        s.downstream(
            &settings(),
            hs.len(),
            &mut hs.as_slice(),
            NOW,
            &mut producer
        )
        .unwrap_err()
        .kind,
        RefusalKind::ClientSasl
    );

    let allow = SessionSettings {
        on_client_sasl: ClientSaslPolicy::AllowWithoutIdentity,
        ..pass
    };
    let mut s = Session::new(&allow);
    s.start(&allow, &none, 0).unwrap();
    assert!(s
        .downstream(
            &settings(),
            hs.len(),
            &mut hs.as_slice(),
            NOW,
            &mut producer
        )
        .is_ok());
    // ...but never on a connection the filter authenticated.
    let mut s = Session::new(&allow);
    s.start(&allow, &producer(), 0).unwrap();
    assert_eq!(
        s.downstream(
            &settings(),
            hs.len(),
            &mut hs.as_slice(),
            NOW,
            &mut producer
        )
        .unwrap_err()
        .kind,
        RefusalKind::ClientSasl
    );
}

#[test]
fn malformed_frames_are_protocol_errors() {
    let mut s = started();
    let mut bad = (-1i32).to_be_bytes().to_vec();
    bad.extend([0; 8]);
    let err = s
        .downstream(
            &settings(),
            bad.len(),
            &mut bad.as_slice(),
            NOW,
            &mut producer,
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Protocol);
    assert!(err.message.contains("negative"), "{}", err.message);

    let mut s = started();
    let mut negative = (-1i32).to_be_bytes().to_vec();
    negative.extend([0; 8]);
    assert_eq!(
        s.upstream(&settings(), negative.len(), &mut negative.as_slice(), NOW)
            .unwrap_err()
            .kind,
        RefusalKind::Protocol
    );
}

#[test]
fn responses_larger_than_max_frame_bytes_pass() {
    // max_frame_bytes is the broker's socket.request.max.bytes: it bounds requests. A
    // Fetch response may be larger; only its 8-byte prefix is read.
    let mut s = authenticated(&settings());
    let mut big = (200 * 1024 * 1024i32).to_be_bytes().to_vec();
    big.extend(5i32.to_be_bytes());
    big.extend([0; 64]);
    let out = s
        .upstream(&settings(), big.len(), &mut big.as_slice(), NOW)
        .unwrap();
    assert_eq!(out, UpstreamOutcome::default());
}

fn produce_acks0(corr: i32) -> Vec<u8> {
    // Produce v3 body: transactional_id (null), acks, timeout, no topics.
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(3)
        .with_correlation_id(corr)
        .encode(&mut buf, 1)
        .unwrap();
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf.extend_from_slice(&0i16.to_be_bytes());
    buf.extend_from_slice(&1000i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// Authenticated at NOW with a broker session of 10 s.
fn authenticated(settings: &SessionSettings) -> Session {
    let mut s = Session::new(settings);
    s.start(settings, &producer(), NOW).unwrap();
    let answers = [handshake_ok(), authenticate(0, None, 10_000)].concat();
    let out = s
        .upstream(settings, answers.len(), &mut answers.as_slice(), NOW)
        .unwrap();
    assert!(!out.authenticated.unwrap().reauthentication);
    s
}

#[test]
fn reauthenticates_at_a_request_boundary_before_the_session_ends() {
    let mut s = authenticated(&settings());
    // Before 85% of the session: requests flow untouched.
    let early = request(ApiKey::Metadata, 12, 1);
    let none = s
        .downstream(
            &settings(),
            early.len(),
            &mut early.as_slice(),
            NOW + 8_000,
            &mut producer,
        )
        .unwrap();
    assert_eq!(none, None);
    // After 95%: SASL requests go in front of the next request that starts in the chunk.
    // This chunk ends the tail of nothing and holds an acks=0 produce, then a Metadata.
    let chunk = [produce_acks0(2), request(ApiKey::Metadata, 12, 3)].concat();
    let due = NOW + 9_500; // past 95% of the 10 s session
    let inj = s
        .downstream(
            &settings(),
            chunk.len(),
            &mut chunk.as_slice(),
            due,
            &mut producer,
        )
        .unwrap()
        .unwrap();
    assert_eq!(inj.offset, 0);
    let mut buf = Bytes::from(inj.bytes.clone());
    let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    let mut auth = buf.split_off(4 + size).slice(4..);
    let h = decode_request_header_from_buffer(&mut auth).unwrap();
    assert_eq!(h.correlation_id, AUTHENTICATE_CORRELATION_ID);
    // The broker answers #1 (Metadata sent before), then the two SASL answers, then #3;
    // the acks=0 produce gets none.
    let stream = [
        client_answer(1),
        handshake_ok(),
        authenticate(0, None, 10_000),
        client_answer(3),
    ]
    .concat();
    for cut in 0..stream.len() {
        let mut s2 = authenticated(&settings());
        s2.downstream(
            &settings(),
            early.len(),
            &mut early.as_slice(),
            NOW,
            &mut producer,
        )
        .unwrap();
        assert!(s2
            .downstream(
                &settings(),
                chunk.len(),
                &mut chunk.as_slice(),
                due,
                &mut producer
            )
            .unwrap()
            .is_some());
        let mut out = vec![];
        let mut reauth = None;
        for part in [&stream[..cut], &stream[cut..]] {
            let o = s2
                .upstream(&settings(), part.len(), &mut &part[..], due + 5)
                .unwrap();
            reauth = reauth.or(o.authenticated);
            match o.edits {
                Some(e) => out.extend(e.apply(part)),
                None => out.extend_from_slice(part),
            }
        }
        assert_eq!(
            out,
            [client_answer(1), client_answer(3)].concat(),
            "cut {cut}"
        );
        assert_eq!(
            reauth,
            Some(Authenticated {
                session_lifetime_ms: 10_000,
                reauthentication: true
            })
        );
        assert_eq!(s2.authentications(), 2);
    }
}

#[test]
fn reauthentication_goes_before_a_frame_inside_the_chunk() {
    let mut s = authenticated(&settings());
    let first = request(ApiKey::Fetch, 12, 1);
    // A chunk that ends inside a frame: that frame's start was in this chunk at offset 0.
    let second = request(ApiKey::Fetch, 12, 2);
    let chunk = [&first[10..], &second[..]].concat();
    s.downstream(&settings(), 10, &mut &first[..10], NOW + 100, &mut producer)
        .unwrap();
    let inj = s
        .downstream(
            &settings(),
            chunk.len(),
            &mut chunk.as_slice(),
            NOW + 9_500,
            &mut producer,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        inj.offset,
        first.len() - 10,
        "goes in front of the second request"
    );
}

#[test]
fn without_reauthentication_nothing_is_injected_and_answers_are_not_read() {
    let off = SessionSettings {
        reauthenticate: false,
        ..settings()
    };
    let mut s = authenticated(&off);
    let req = request(ApiKey::Metadata, 12, 1);
    assert_eq!(
        s.downstream(
            &off,
            req.len(),
            &mut req.as_slice(),
            NOW + 60_000,
            &mut producer
        )
        .unwrap(),
        None
    );
    let answer = client_answer(1);
    let mut src = Counting {
        data: &answer,
        reads: 0,
        bytes: 0,
    };
    assert_eq!(
        s.upstream(&off, answer.len(), &mut src, NOW + 60_000)
            .unwrap(),
        UpstreamOutcome::default()
    );
    assert_eq!(src.reads, 0);
}

#[test]
fn refused_reauthentication_closes_the_connection() {
    let mut s = authenticated(&settings());
    let req = request(ApiKey::Metadata, 12, 1);
    assert!(s
        .downstream(
            &settings(),
            req.len(),
            &mut req.as_slice(),
            NOW + 9_500,
            &mut producer
        )
        .unwrap()
        .is_some());
    let stream = [handshake_ok(), authenticate(58, Some("expired"), 0)].concat();
    let err = s
        .upstream(
            &settings(),
            stream.len(),
            &mut stream.as_slice(),
            NOW + 9_501,
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::AuthFailed);
}

fn passed_through(on_client_sasl: ClientSaslPolicy) -> (Session, SessionSettings) {
    let settings = SessionSettings {
        on_no_identity: NoIdentityPolicy::PassThrough,
        on_client_sasl,
        ..settings()
    };
    let mut s = Session::new(&settings);
    assert_eq!(
        s.start(&settings, &Identification::NoMtls, NOW).unwrap(),
        Start::PassThrough
    );
    (s, settings)
}

/// A frame with this size prefix and these bytes after it.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn unauthenticated_connections_must_open_with_a_well_formed_api_versions_or_handshake() {
    // A broker with GSSAPI enabled takes a first frame that is not a Kafka request header
    // as a raw (Kafka 0.9 style) GSSAPI token: the client would authenticate itself.
    let gssapi = raw_frame(&[
        0x60, 0x82, 0x02, 0x5b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
        0x01,
    ]);
    // A known api key the broker does not accept before authentication, and an api key
    // no Kafka knows.
    let metadata = request(ApiKey::Metadata, 12, 1);
    let mut unknown = request(ApiKey::Metadata, 0, 1);
    unknown[4..6].copy_from_slice(&999i16.to_be_bytes());
    // ApiVersions whose client id runs past the end of the frame.
    let mut truncated = 10i32.to_be_bytes().to_vec();
    truncated.extend(18i16.to_be_bytes());
    truncated.extend(3i16.to_be_bytes());
    truncated.extend(1i32.to_be_bytes());
    truncated.extend(40i16.to_be_bytes());
    for policy in [
        ClientSaslPolicy::Reject,
        ClientSaslPolicy::AllowWithoutIdentity,
    ] {
        for (name, first) in [
            ("gssapi", &gssapi),
            ("metadata", &metadata),
            ("unknown", &unknown),
            ("truncated", &truncated),
        ] {
            let (mut s, settings) = passed_through(policy);
            // Byte by byte too: the verdict must not depend on the chunking.
            let whole = s.downstream(
                &settings,
                first.len(),
                &mut first.as_slice(),
                NOW,
                &mut producer,
            );
            let err = whole.expect_err(&format!("{name} under {policy:?}"));
            assert_eq!(err.kind, RefusalKind::Protocol, "{name}: {}", err.message);
            let (mut s, settings) = passed_through(policy);
            let mut refused = false;
            for b in first.iter() {
                if s.downstream(&settings, 1, &mut &[*b][..], NOW, &mut producer)
                    .is_err()
                {
                    refused = true;
                    break;
                }
            }
            assert!(refused, "{name} byte by byte under {policy:?}");
        }
        // ApiVersions opens the conversation in either mode.
        let (mut s, settings) = passed_through(policy);
        let hello = request(ApiKey::ApiVersions, 3, 1);
        assert!(s
            .downstream(
                &settings,
                hello.len(),
                &mut hello.as_slice(),
                NOW,
                &mut producer
            )
            .is_ok());
    }
    // Allowed to authenticate itself: a SaslHandshake may come first, and what follows
    // is the client's own business.
    let (mut s, settings) = passed_through(ClientSaslPolicy::AllowWithoutIdentity);
    let stream = [request(ApiKey::SaslHandshake, 1, 1), gssapi.clone()].concat();
    assert!(s
        .downstream(
            &settings,
            stream.len(),
            &mut stream.as_slice(),
            NOW,
            &mut producer
        )
        .is_ok());
}

#[test]
fn authenticated_connections_forward_api_keys_the_filter_does_not_know() {
    // Newer Kafka APIs must keep working through the filter.
    let mut s = authenticated(&settings());
    let mut newer = request(ApiKey::Metadata, 0, 1);
    newer[4..6].copy_from_slice(&999i16.to_be_bytes());
    assert_eq!(
        s.downstream(
            &settings(),
            newer.len(),
            &mut newer.as_slice(),
            NOW,
            &mut producer
        )
        .unwrap(),
        None
    );
}

#[test]
fn reauthentication_points_spread_over_85_to_95_percent_of_the_session() {
    // Connections opened together must not all re-authenticate together. The point is
    // drawn per connection and authentication from the connection's nonce, so it is
    // deterministic for a given nonce.
    let point = |nonce: u64| {
        let mut s = Session::new(&settings());
        s.set_token_nonce(nonce);
        s.start(&settings(), &producer(), NOW).unwrap();
        let answers = [handshake_ok(), authenticate(0, None, 100_000)].concat();
        s.upstream(&settings(), answers.len(), &mut answers.as_slice(), NOW)
            .unwrap();
        s.reauthentication_due_at().unwrap() - NOW
    };
    let points: Vec<u64> = (0..300u64)
        .map(|n| point(n.wrapping_mul(0x9e37_79b9)))
        .collect();
    assert!(
        points.iter().all(|p| (85_000..=95_000).contains(p)),
        "{points:?}"
    );
    let lowest = *points.iter().min().unwrap();
    let highest = *points.iter().max().unwrap();
    assert!(lowest < 87_000 && highest > 93_000, "{lowest}..{highest}");
    let mut distinct = points.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 50,
        "only {} distinct points",
        distinct.len()
    );
    assert_eq!(point(42), point(42));
}

#[test]
fn reauthentication_is_planned_in_milliseconds_for_sessions_of_any_length() {
    // 85-95% of the session, to the millisecond: a session of 1.5 s is not re-authenticated
    // after 0.85 s (whole seconds of it), nor one under a second at once.
    for lifetime in [999i64, 1_500, 2_345, 10_001, 59_999, 3_599_085] {
        for nonce in 0..64u64 {
            let mut s = Session::new(&settings());
            s.set_token_nonce(nonce.wrapping_mul(0x9e37_79b9));
            s.start(&settings(), &producer(), NOW).unwrap();
            let answers = [handshake_ok(), authenticate(0, None, lifetime)].concat();
            s.upstream(&settings(), answers.len(), &mut answers.as_slice(), NOW)
                .unwrap();
            let after = s.reauthentication_due_at().unwrap() - NOW;
            let (earliest, latest) = (lifetime as u64 * 850 / 1000, lifetime as u64 * 950 / 1000);
            assert!(
                (earliest..=latest).contains(&after),
                "session of {lifetime} ms re-authenticated after {after} ms"
            );
        }
    }
}

#[test]
fn the_peer_is_identified_again_at_each_reauthentication_and_only_then() {
    let other = || Identification::Principal {
        identity: "spiffe://cluster.local/ns/apps/sa/producer".into(),
        principal: "producer".into(),
    };
    let refused = || Identification::NoPrincipal {
        identity: "spiffe://cluster.local/ns/apps/sa/producer".into(),
        reason: "trust domain \"cluster.local\" is not allowed".into(),
    };
    type Case = (&'static str, fn() -> Identification, Option<&'static str>);
    let cases: [Case; 3] = [
        ("same principal", producer, None),
        ("another principal", other, Some("change of principal")),
        ("no principal", refused, Some("no principal for identity")),
    ];
    for (name, identify, refusal) in cases {
        let mut s = authenticated(&settings());
        let mut asked = 0;
        let mut peer = || {
            asked += 1;
            identify()
        };
        let req = request(ApiKey::Metadata, 12, 1);
        // Before re-authentication is due, the peer is not asked.
        s.downstream(
            &settings(),
            req.len(),
            &mut req.as_slice(),
            NOW + 8_000,
            &mut peer,
        )
        .unwrap();
        let due = s.downstream(
            &settings(),
            req.len(),
            &mut req.as_slice(),
            NOW + 9_600,
            &mut peer,
        );
        match refusal {
            None => assert!(due.unwrap().is_some(), "{name}"),
            Some(why) => {
                let err = due.unwrap_err();
                assert_eq!(err.kind, RefusalKind::Reidentified, "{name}");
                assert!(err.message.contains(why), "{name}: {}", err.message);
            }
        }
        assert_eq!(asked, 1, "{name}");
    }
}
