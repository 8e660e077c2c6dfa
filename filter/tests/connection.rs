#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! The connection driver and the buffer splicing against a buffer with Envoy's edit
//! semantics and a clock, both of which can fail the way a host call can.

mod support;
use support::{client_answer, request, response_frame};

use std::ops::Range;
use std::rc::Rc;

use kafka_codec::ChunkEdits;
use kafka_identity_filter::connection::Connection;
use kafka_identity_filter::host::{ChunkSource, Clock, HostBuffer, HostError};
use kafka_identity_filter::session::*;
use kafka_identity_filter::splice;
use kafka_identity_filter::token::TokenIssuer;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NOW: u64 = 1_700_000_000_000;

/// A connection buffer as Envoy's `proxy_set_buffer_bytes` treats it: start 0 drains and
/// prepends, start at or past the end appends, anything else is BadArgument (status 2).
#[derive(Default)]
struct EnvoyBuffer {
    bytes: Vec<u8>,
    fail_reads_longer_than: Option<usize>,
    fail_writes: bool,
}

impl EnvoyBuffer {
    fn holding(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            ..Default::default()
        }
    }
}

impl ChunkSource for EnvoyBuffer {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        if self.fail_reads_longer_than.is_some_and(|n| range.len() > n) {
            return Err(HostError::Status {
                call: "proxy_get_buffer_bytes",
                status: 10,
            });
        }
        let wanted = range.len();
        self.bytes
            .get(range)
            .map(<[u8]>::to_vec)
            .ok_or(HostError::ShortRead { wanted, got: 0 })
    }
}

impl HostBuffer for EnvoyBuffer {
    fn replace(&mut self, start: usize, len: usize, bytes: &[u8]) -> Result<(), HostError> {
        let bad = HostError::Status {
            call: "proxy_set_buffer_bytes",
            status: 2,
        };
        if self.fail_writes {
            return Err(bad);
        }
        if start == 0 {
            let drained = len.min(self.bytes.len());
            self.bytes.splice(..drained, bytes.iter().copied());
            Ok(())
        } else if start >= self.bytes.len() {
            self.bytes.extend_from_slice(bytes);
            Ok(())
        } else {
            Err(bad)
        }
    }
}

struct FixedClock(Result<u64, HostError>);

impl Clock for FixedClock {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        self.0
    }
}

fn ok_clock() -> FixedClock {
    FixedClock(Ok(NOW))
}

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

fn sasl_answers(lifetime_ms: i64) -> Vec<u8> {
    let handshake = SaslHandshakeResponse::default()
        .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
    let authenticate = SaslAuthenticateResponse::default().with_session_lifetime_ms(lifetime_ms);
    [
        response_frame(
            HANDSHAKE_CORRELATION_ID,
            ApiKey::SaslHandshake,
            1,
            &handshake,
        ),
        response_frame(
            AUTHENTICATE_CORRELATION_ID,
            ApiKey::SaslAuthenticate,
            AUTHENTICATE_VERSION,
            &authenticate,
        ),
    ]
    .concat()
}

/// Frames in a byte stream: (api key, correlation id).
fn request_keys(mut stream: &[u8]) -> Vec<(i16, i32)> {
    let mut out = vec![];
    while stream.len() >= 12 {
        let size = i32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        let key = i16::from_be_bytes(stream[4..6].try_into().unwrap());
        let corr = i32::from_be_bytes(stream[8..12].try_into().unwrap());
        out.push((key, corr));
        stream = &stream[4 + size..];
    }
    out
}

/// Opened and authenticated at NOW with a broker session of `lifetime_ms`.
fn authenticated(lifetime_ms: i64) -> Connection {
    let mut c = Connection::new(&settings(), 7);
    let hello = request(ApiKey::ApiVersions, 3, 1);
    let mut down = EnvoyBuffer::holding(&hello);
    c.downstream(
        &settings(),
        hello.len(),
        &mut down,
        &mut ok_clock(),
        producer,
    )
    .unwrap();
    let answers = [sasl_answers(lifetime_ms), client_answer(1)].concat();
    let mut up = EnvoyBuffer::holding(&answers);
    let auth = c
        .upstream(&settings(), answers.len(), &mut up, &mut ok_clock())
        .unwrap();
    assert!(auth.is_some());
    assert_eq!(up.bytes, client_answer(1));
    c
}

#[test]
fn the_first_authentication_goes_in_front_of_the_clients_first_byte() {
    let mut c = Connection::new(&settings(), 1);
    let hello = request(ApiKey::ApiVersions, 3, 1);
    let mut down = EnvoyBuffer::holding(&hello);
    let opened = c
        .downstream(
            &settings(),
            hello.len(),
            &mut down,
            &mut ok_clock(),
            producer,
        )
        .unwrap()
        .unwrap();
    assert!(!opened.passed_through);
    assert_eq!(
        request_keys(&down.bytes),
        vec![
            (17, HANDSHAKE_CORRELATION_ID),
            (36, AUTHENTICATE_CORRELATION_ID),
            (18, 1)
        ]
    );
    assert!(down.bytes.ends_with(&hello));
}

#[test]
fn a_reauthentication_is_spliced_in_at_a_request_boundary_inside_the_chunk() {
    let mut c = authenticated(10_000);
    // A chunk with the tail of nothing: two requests, the re-authentication due.
    let chunk = [
        request(ApiKey::Metadata, 12, 2),
        request(ApiKey::Metadata, 12, 3),
    ]
    .concat();
    // Half a request first, so the boundary is inside the next chunk.
    let (head, tail) = chunk.split_at(30);
    let mut down = EnvoyBuffer::holding(head);
    c.downstream(
        &settings(),
        head.len(),
        &mut down,
        &mut ok_clock(),
        producer,
    )
    .unwrap();
    assert_eq!(down.bytes, head);
    let mut down = EnvoyBuffer::holding(tail);
    let due = FixedClock(Ok(NOW + 9_600));
    c.downstream(&settings(), tail.len(), &mut down, &mut { due }, producer)
        .unwrap();
    let first_len = request(ApiKey::Metadata, 12, 2).len() - 30;
    assert_eq!(down.bytes[..first_len], tail[..first_len]);
    assert_eq!(
        request_keys(&down.bytes[first_len..]),
        vec![
            (17, HANDSHAKE_CORRELATION_ID),
            (36, AUTHENTICATE_CORRELATION_ID),
            (3, 3)
        ]
    );
    assert!(down.bytes.ends_with(&request(ApiKey::Metadata, 12, 3)));
}

#[test]
fn a_reauthentication_uses_the_newest_issuer_handed_in() {
    let mut c = authenticated(10_000);
    assert_eq!(c.session().last_token(), "unsecured");
    let newer = Rc::new(TokenIssuer::Unsecured { lifetime_secs: 60 });
    c.set_token_issuer(Rc::clone(&newer));
    let req = request(ApiKey::Metadata, 12, 2);
    let mut down = EnvoyBuffer::holding(&req);
    c.downstream(
        &settings(),
        req.len(),
        &mut down,
        &mut FixedClock(Ok(NOW + 9_600)),
        producer,
    )
    .unwrap();
    // The token's exp - iat is the newer issuer's 60 s, not the settings' 3600 s.
    let text = String::from_utf8_lossy(&down.bytes);
    let payload = text.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
}

#[test]
fn a_clock_failure_refuses_the_connection_instead_of_signing_iat_0() {
    let mut c = Connection::new(&settings(), 1);
    let hello = request(ApiKey::ApiVersions, 3, 1);
    let mut down = EnvoyBuffer::holding(&hello);
    let broken = HostError::Status {
        call: "proxy_get_current_time_nanoseconds",
        status: 10,
    };
    let err = c
        .downstream(
            &settings(),
            hello.len(),
            &mut down,
            &mut FixedClock(Err(broken)),
            producer,
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Host);
    assert!(err.message.contains("clock"), "{err}");
    assert!(
        down.bytes.is_empty(),
        "nothing was injected, and nothing of the refused chunk goes on"
    );
    // On an authenticated connection too (a re-authentication would be planned from 0).
    let mut c = authenticated(10_000);
    let answer = client_answer(2);
    let mut up = EnvoyBuffer::holding(&answer);
    let err = c
        .upstream(
            &settings(),
            answer.len(),
            &mut up,
            &mut FixedClock(Err(broken)),
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Host);
}

#[test]
fn a_failed_read_of_the_broker_bytes_refuses_instead_of_dropping_them() {
    // The answers to a re-authentication sit behind a client answer, so removing them
    // needs the whole chunk: a read the host fails must not turn into an empty chunk that
    // silently loses the client's answers.
    let reauthenticating = || {
        let mut c = authenticated(10_000);
        for (corr, at) in [(2, NOW + 1_000), (3, NOW + 9_600)] {
            let req = request(ApiKey::Metadata, 12, corr);
            let mut down = EnvoyBuffer::holding(&req);
            c.downstream(
                &settings(),
                req.len(),
                &mut down,
                &mut FixedClock(Ok(at)),
                producer,
            )
            .unwrap();
        }
        c
    };
    let chunk = [client_answer(2), sasl_answers(10_000), client_answer(3)].concat();
    let mut c = reauthenticating();
    let mut up = EnvoyBuffer {
        bytes: chunk.clone(),
        fail_reads_longer_than: Some(64),
        fail_writes: false,
    };
    assert!(chunk.len() > 64);
    let err = c
        .upstream(&settings(), chunk.len(), &mut up, &mut ok_clock())
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Host);
    assert!(err.message.contains("rewrite"), "{err}");
    assert!(
        up.bytes.is_empty(),
        "the chunk is dropped, the connection closes"
    );
    // Without the failure the same chunk comes out as exactly the client's answers.
    let mut c = reauthenticating();
    let mut up = EnvoyBuffer::holding(&chunk);
    let auth = c
        .upstream(&settings(), chunk.len(), &mut up, &mut ok_clock())
        .unwrap();
    assert!(auth.unwrap().reauthentication);
    assert_eq!(up.bytes, [client_answer(2), client_answer(3)].concat());
}

#[test]
fn a_refused_write_is_a_host_error_and_the_chunk_is_dropped() {
    let mut c = Connection::new(&settings(), 1);
    let hello = request(ApiKey::ApiVersions, 3, 1);
    let mut down = EnvoyBuffer {
        bytes: hello.clone(),
        fail_reads_longer_than: None,
        fail_writes: true,
    };
    let err = c
        .downstream(
            &settings(),
            hello.len(),
            &mut down,
            &mut ok_clock(),
            producer,
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Host);
    assert!(
        err.to_string().starts_with("host_error: cannot inject"),
        "{err}"
    );
}

#[test]
fn splicing_follows_envoys_front_only_edits() {
    // insert_at copies only the bytes before the insertion point.
    let mut buf = EnvoyBuffer::holding(b"abcdef");
    splice::insert_at(&mut buf, 2, b"XY").unwrap();
    assert_eq!(buf.bytes, b"abXYcdef");
    let mut buf = EnvoyBuffer::holding(b"abcdef");
    splice::insert_at(&mut buf, 0, b"XY").unwrap();
    assert_eq!(buf.bytes, b"XYabcdef");
    // Edits at the front only: drained and replaced, no full read.
    let mut buf = EnvoyBuffer {
        bytes: b"0123456789".to_vec(),
        fail_reads_longer_than: Some(0),
        fail_writes: false,
    };
    let front = ChunkEdits {
        prepend: b"held".to_vec(),
        remove: std::iter::once(0..3).collect(),
    };
    splice::apply_edits(&mut buf, 10, &front).unwrap();
    assert_eq!(buf.bytes, b"held3456789");
    // Elsewhere in the chunk: read, rewritten, replaced.
    let mut buf = EnvoyBuffer::holding(b"0123456789");
    let middle = ChunkEdits {
        prepend: vec![],
        remove: vec![2..4, 6..7],
    };
    splice::apply_edits(&mut buf, 10, &middle).unwrap();
    assert_eq!(buf.bytes, b"0145789");
    splice::discard(&mut buf, 7).unwrap();
    assert!(buf.bytes.is_empty());
}

#[test]
fn after_a_refusal_nothing_from_the_broker_reaches_the_client() {
    // Refused in the client's direction while the filter's SASL requests are in flight:
    // Envoy flushes what it holds for the client before it closes, so the broker's answers
    // to them (and to anything else) must be dropped, not passed on unread.
    let mut c = Connection::new(&settings(), 1);
    let hello = request(ApiKey::ApiVersions, 3, 1);
    let mut down = EnvoyBuffer::holding(&hello);
    c.downstream(
        &settings(),
        hello.len(),
        &mut down,
        &mut ok_clock(),
        producer,
    )
    .unwrap();
    let sasl = request(ApiKey::SaslHandshake, 1, 2);
    let mut down = EnvoyBuffer::holding(&sasl);
    let err = c
        .downstream(
            &settings(),
            sasl.len(),
            &mut down,
            &mut ok_clock(),
            producer,
        )
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::ClientSasl);
    assert!(c.is_refused());
    assert!(down.bytes.is_empty(), "the refused chunk goes nowhere");
    let answers = [sasl_answers(10_000), client_answer(1)].concat();
    // In whatever chunks the broker's bytes come.
    let (head, tail) = answers.split_at(7);
    for chunk in [head, tail] {
        let mut up = EnvoyBuffer::holding(chunk);
        assert_eq!(
            c.upstream(&settings(), chunk.len(), &mut up, &mut ok_clock()),
            Ok(None)
        );
        assert!(
            up.bytes.is_empty(),
            "broker bytes after a refusal reached the client"
        );
    }
    // Nor does anything more of the client's reach the broker.
    let more = request(ApiKey::Metadata, 12, 3);
    let mut down = EnvoyBuffer::holding(&more);
    assert_eq!(
        c.downstream(
            &settings(),
            more.len(),
            &mut down,
            &mut ok_clock(),
            producer
        ),
        Ok(None)
    );
    assert!(down.bytes.is_empty());

    // Refused in the broker's direction (a frame the filter cannot read): the rest of
    // that frame, and everything after it, is dropped too.
    let mut c = authenticated(10_000);
    let mut bad = (-1i32).to_be_bytes().to_vec();
    bad.extend([0; 8]);
    let mut up = EnvoyBuffer::holding(&bad);
    let err = c
        .upstream(&settings(), bad.len(), &mut up, &mut ok_clock())
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Protocol);
    assert!(up.bytes.is_empty());
    let rest = [vec![0; 100], client_answer(2)].concat();
    let mut up = EnvoyBuffer::holding(&rest);
    assert_eq!(
        c.upstream(&settings(), rest.len(), &mut up, &mut ok_clock()),
        Ok(None)
    );
    assert!(up.bytes.is_empty());
}

#[test]
fn an_idle_connection_is_reauthenticated_when_its_deadline_passes_between_requests() {
    // A host without data events at the deadline (the native module's scheduler) asks
    // `due`: before the deadline nothing, after it the SASL requests, once.
    let mut c = authenticated(10_000);
    let early = c
        .due(&settings(), &mut FixedClock(Ok(NOW + 1_000)), producer)
        .unwrap();
    assert_eq!(early, None);
    let bytes = c
        .due(&settings(), &mut FixedClock(Ok(NOW + 9_600)), producer)
        .unwrap()
        .expect("due after 85-95 % of the session");
    assert_eq!(
        request_keys(&bytes),
        vec![
            (17, HANDSHAKE_CORRELATION_ID),
            (36, AUTHENTICATE_CORRELATION_ID)
        ]
    );
    let again = c
        .due(&settings(), &mut FixedClock(Ok(NOW + 9_700)), producer)
        .unwrap();
    assert_eq!(again, None, "one re-authentication in flight at a time");
    // The broker's answers to it are hidden from the client and count as a re-authentication.
    let answers = sasl_answers(10_000);
    let mut up = EnvoyBuffer::holding(&answers);
    let auth = c
        .upstream(&settings(), answers.len(), &mut up, &mut ok_clock())
        .unwrap();
    assert!(auth.unwrap().reauthentication);
    assert!(up.bytes.is_empty());
}

#[test]
fn no_reauthentication_is_injected_into_the_middle_of_a_clients_request() {
    let mut c = authenticated(10_000);
    let req = request(ApiKey::Metadata, 12, 2);
    let (head, _) = req.split_at(10);
    let mut down = EnvoyBuffer::holding(head);
    c.downstream(
        &settings(),
        head.len(),
        &mut down,
        &mut ok_clock(),
        producer,
    )
    .unwrap();
    let due = c
        .due(&settings(), &mut FixedClock(Ok(NOW + 9_600)), producer)
        .unwrap();
    assert_eq!(due, None, "the client is half way through a request");
}

#[test]
fn a_peer_that_maps_differently_at_an_idle_deadline_is_refused() {
    let mut c = authenticated(10_000);
    let other = || Identification::Principal {
        identity: "spiffe://cluster.local/ns/apps/sa/other".into(),
        principal: "spiffe://cluster.local/ns/apps/sa/other".into(),
    };
    let err = c
        .due(&settings(), &mut FixedClock(Ok(NOW + 9_600)), other)
        .unwrap_err();
    assert_eq!(err.kind, RefusalKind::Reidentified);
    // From then on nothing passes in either direction.
    let req = request(ApiKey::Metadata, 12, 2);
    let mut down = EnvoyBuffer::holding(&req);
    let _ = c.downstream(&settings(), req.len(), &mut down, &mut ok_clock(), producer);
    assert!(down.bytes.is_empty());
}

#[test]
fn a_connection_refused_from_outside_passes_nothing_on() {
    let mut c = authenticated(10_000);
    c.refuse();
    let req = request(ApiKey::Metadata, 12, 2);
    let mut down = EnvoyBuffer::holding(&req);
    let _ = c.downstream(&settings(), req.len(), &mut down, &mut ok_clock(), producer);
    assert!(down.bytes.is_empty());
    let answer = client_answer(2);
    let mut up = EnvoyBuffer::holding(&answer);
    let _ = c.upstream(&settings(), answer.len(), &mut up, &mut ok_clock());
    assert!(up.bytes.is_empty());
}
