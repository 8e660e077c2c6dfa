#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable
)] // bench code
//! What one connection costs the filter's own code, natively (docs/design.md "Cost per
//! connection" puts these next to Envoy's profile): identifying the peer from its PEM,
//! making a token (unsecured, ES256, RS256) or taking it from the cache, a whole
//! connection's authentication through the connection driver, and a data chunk after it.
//!
//! `make bench-filter` runs it. Buffers are vectors with Envoy's edit semantics, so the
//! host calls themselves (crossing into Envoy) are not in these numbers.

use std::hint::black_box;
use std::ops::Range;
use std::rc::Rc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use kafka_identity_filter::config::{self, FilterConfig};
use kafka_identity_filter::connection::Connection;
use kafka_identity_filter::host::{ChunkSource, Clock, HostBuffer, HostError};
use kafka_identity_filter::peer::{self, PeerProperties};
use kafka_identity_filter::session::{
    Identification, AUTHENTICATE_CORRELATION_ID, AUTHENTICATE_VERSION, HANDSHAKE_CORRELATION_ID,
};
use kafka_identity_filter::token_cache::{TokenCache, DEFAULT_MAX_ENTRIES};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use p256::pkcs8::EncodePrivateKey;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

const NOW: u64 = 1_700_000_000_000;
const PRODUCER: &str = "spiffe://cluster.local/ns/apps/sa/producer";

struct Buffer(Vec<u8>);

impl ChunkSource for Buffer {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        let wanted = range.len();
        self.0
            .get(range)
            .map(<[u8]>::to_vec)
            .ok_or(HostError::ShortRead { wanted, got: 0 })
    }
}

impl HostBuffer for Buffer {
    fn replace(&mut self, start: usize, len: usize, bytes: &[u8]) -> Result<(), HostError> {
        if start == 0 {
            self.0
                .splice(..len.min(self.0.len()), bytes.iter().copied());
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }
}

struct At(u64);

impl Clock for At {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        Ok(self.0)
    }
}

/// An Istio-style workload certificate: empty subject, SPIFFE URI SAN, EC P-256.
fn workload_pem() -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(PRODUCER.try_into().unwrap())];
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem().into_bytes()
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

fn response<T: Encodable>(corr: i32, key: ApiKey, version: i16, body: &T) -> Vec<u8> {
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

/// The broker's answers to the two SASL requests and to the client's ApiVersions.
fn broker_answers() -> Vec<u8> {
    let handshake = SaslHandshakeResponse::default()
        .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]);
    let authenticate = SaslAuthenticateResponse::default().with_session_lifetime_ms(3_600_000);
    [
        response(
            HANDSHAKE_CORRELATION_ID,
            ApiKey::SaslHandshake,
            1,
            &handshake,
        ),
        response(
            AUTHENTICATE_CORRELATION_ID,
            ApiKey::SaslAuthenticate,
            AUTHENTICATE_VERSION,
            &authenticate,
        ),
        response(1, ApiKey::ApiVersions, 3, &ApiVersionsResponse::default()),
    ]
    .concat()
}

fn es256_config() -> FilterConfig {
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let pem = key
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    signed_config("ES256", &pem)
}

fn rs256_config() -> FilterConfig {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    signed_config("RS256", &pem)
}

fn signed_config(alg: &str, pem: &str) -> FilterConfig {
    let json = format!(
        r#"{{"signing": {{"algorithm": "{alg}", "key_id": "k1", "issuer": "kafka-identity", "audience": "kafka", "private_key_pem": {}}}}}"#,
        serde_json::to_string(pem).unwrap()
    );
    config::parse(json.as_bytes()).unwrap()
}

/// One connection from its first byte to the client's first answer: identify the peer from
/// `pem`, inject the SASL requests, hide and check the broker's answers.
fn one_connection(
    config: &FilterConfig,
    cache: Option<&Rc<TokenCache>>,
    pem: &[u8],
    hello: &[u8],
    answers: &[u8],
    nonce: u64,
) -> usize {
    let settings = &config.session;
    let mut conn = Connection::new(settings, nonce);
    if let Some(cache) = cache {
        conn.set_token_issuer(Rc::new(settings.tokens.clone()));
        conn.set_token_cache(Rc::clone(cache));
    }
    let mut down = Buffer(hello.to_vec());
    conn.downstream(settings, hello.len(), &mut down, &mut At(NOW), || {
        peer::identify(
            &config.mapper,
            &PeerProperties {
                mtls: true,
                certificate_pem: Some(pem.to_vec()),
                ..Default::default()
            },
        )
    })
    .unwrap();
    let mut up = Buffer(answers.to_vec());
    let auth = conn
        .upstream(settings, answers.len(), &mut up, &mut At(NOW + 1))
        .unwrap();
    assert!(auth.is_some());
    down.0.len() + up.0.len()
}

fn benches(c: &mut Criterion) {
    let pem = workload_pem();
    let unsecured = config::parse(b"{}").unwrap();
    let es256 = es256_config();
    let rs256 = rs256_config();
    let props = PeerProperties {
        mtls: true,
        certificate_pem: Some(pem.clone()),
        ..Default::default()
    };
    assert!(matches!(
        peer::identify(&unsecured.mapper, &props),
        Identification::Principal { .. }
    ));

    let mut g = c.benchmark_group("per connection");
    g.bench_function("identify: PEM -> X.509 -> SPIFFE principal", |b| {
        b.iter(|| peer::identify(&unsecured.mapper, black_box(&props)))
    });
    for (name, config) in [
        ("unsecured", &unsecured),
        ("ES256", &es256),
        ("RS256", &rs256),
    ] {
        let mut nonce = 0u64;
        g.bench_function(format!("token: issue {name}"), |b| {
            b.iter(|| {
                nonce += 1;
                config
                    .session
                    .tokens
                    .issue(black_box(PRODUCER), NOW / 1000, nonce, 0)
                    .unwrap()
            })
        });
    }
    let cache = TokenCache::new("kafka-identity", 360_000, DEFAULT_MAX_ENTRIES);
    cache
        .requests("kafka-identity", PRODUCER, NOW, || {
            Ok::<_, ()>(vec![0u8; 700])
        })
        .unwrap();
    g.bench_function("token: cached SASL requests (hit)", |b| {
        b.iter(|| {
            cache
                .requests("kafka-identity", black_box(PRODUCER), NOW + 1, || {
                    Ok::<_, ()>(Vec::new())
                })
                .unwrap()
        })
    });

    let hello = request(ApiKey::ApiVersions, 3, 1);
    let answers = broker_answers();
    for (name, config) in [("unsecured", &unsecured), ("ES256", &es256)] {
        let mut nonce = 0u64;
        g.bench_function(
            format!("connection: open + authenticate, {name}, no reuse"),
            |b| {
                b.iter(|| {
                    nonce += 1;
                    one_connection(config, None, &pem, &hello, &answers, nonce)
                })
            },
        );
        let cache = Rc::new(TokenCache::new(
            &config.session.client_id,
            config.token_reuse_seconds * 1000,
            DEFAULT_MAX_ENTRIES,
        ));
        g.bench_function(
            format!("connection: open + authenticate, {name}, token reused"),
            |b| {
                b.iter(|| {
                    nonce += 1;
                    one_connection(config, Some(&cache), &pem, &hello, &answers, nonce)
                })
            },
        );
    }
    g.finish();

    // After authentication: a chunk that holds one whole request.
    let mut g = c.benchmark_group("per chunk");
    let settings = &unsecured.session;
    let mut conn = Connection::new(settings, 1);
    let mut down = Buffer(hello.clone());
    conn.downstream(settings, hello.len(), &mut down, &mut At(NOW), || {
        Identification::Principal {
            identity: PRODUCER.into(),
            principal: PRODUCER.into(),
        }
    })
    .unwrap();
    let mut up = Buffer(answers.clone());
    conn.upstream(settings, answers.len(), &mut up, &mut At(NOW))
        .unwrap();
    let metadata = request(ApiKey::Metadata, 12, 2);
    g.bench_function("request chunk: one whole request", |b| {
        b.iter(|| {
            let mut buf = Buffer(metadata.clone());
            conn.downstream(
                settings,
                metadata.len(),
                &mut buf,
                &mut At(NOW),
                || unreachable!(),
            )
            .unwrap();
        })
    });
    g.finish();
}

criterion_group!(connection, benches);
criterion_main!(connection);
