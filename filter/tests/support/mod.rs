//! What the filter's tests share: request and response frames, a broker that answers every request, Envoy's buffer
//! semantics, configurations as the glue keeps them, and a client whose connection follows
//! its filter's current configuration in a [`Latest`] table exactly as the glue's stream
//! context does (`wasm/glue.rs` `Stream::downstream`).
#![allow(dead_code)] // each test crate uses a part

use std::ops::Range;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::BytesMut;
use kafka_identity_filter::config::{self, FilterConfig};
use kafka_identity_filter::connection::Connection;
use kafka_identity_filter::host::{ChunkSource, Clock, HostBuffer, HostError};
use kafka_identity_filter::latest::{filter_key, Latest, RootId};
use kafka_identity_filter::peer::{self, PeerProperties};
use kafka_identity_filter::session::{
    Authenticated, Identification, Refusal, AUTHENTICATE_VERSION,
};
use kafka_identity_filter::token::TokenIssuer;
use kafka_identity_filter::token_cache::{TokenCache, DEFAULT_MAX_ENTRIES};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use p256::pkcs8::EncodePrivateKey;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

pub const NOW: u64 = 1_700_000_000_000;
/// The broker's session lifetime in these tests: re-authentication is due 8.5 to 9.5 s
/// after each authentication.
pub const SESSION_MS: i64 = 10_000;

pub fn filter() -> Rc<str> {
    filter_key("kafka_identity", "kafka_identity").into()
}

/// A connection buffer as Envoy's `proxy_set_buffer_bytes` treats it: start 0 drains and
/// prepends, start at or past the end appends, anything else is refused.
pub struct Buffer(pub Vec<u8>);

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
            Ok(())
        } else if start >= self.0.len() {
            self.0.extend_from_slice(bytes);
            Ok(())
        } else {
            Err(HostError::Status {
                call: "proxy_set_buffer_bytes",
                status: 2,
            })
        }
    }
}

pub struct At(pub u64);

impl Clock for At {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        Ok(self.0)
    }
}

pub fn request(key: ApiKey, version: i16, corr: i32) -> Vec<u8> {
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

pub fn response_frame<T: Encodable>(corr: i32, key: ApiKey, version: i16, body: &T) -> Vec<u8> {
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

/// Request frames in a byte stream: (api key, correlation id, the frame's bytes).
pub fn frames(mut stream: &[u8]) -> Vec<(i16, i32, Vec<u8>)> {
    let mut out = vec![];
    while stream.len() >= 12 {
        let size = i32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        let key = i16::from_be_bytes(stream[4..6].try_into().unwrap());
        let corr = i32::from_be_bytes(stream[8..12].try_into().unwrap());
        out.push((key, corr, stream[..4 + size].to_vec()));
        stream = &stream[4 + size..];
    }
    out
}

/// What a broker answers to the requests in `upstream`, in order: SaslHandshake and
/// SaslAuthenticate accepted (a session of `SESSION_MS`), anything else with an empty
/// Metadata answer.
pub fn broker_answers(upstream: &[u8]) -> Vec<u8> {
    frames(upstream)
        .into_iter()
        .flat_map(|(key, corr, _)| match key {
            17 => response_frame(
                corr,
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeResponse::default()
                    .with_mechanisms(vec![StrBytes::from_static_str("OAUTHBEARER")]),
            ),
            36 => response_frame(
                corr,
                ApiKey::SaslAuthenticate,
                AUTHENTICATE_VERSION,
                &SaslAuthenticateResponse::default().with_session_lifetime_ms(SESSION_MS),
            ),
            _ => client_answer(corr),
        })
        .collect()
}

pub fn client_answer(corr: i32) -> Vec<u8> {
    response_frame(corr, ApiKey::Metadata, 12, &MetadataResponse::default())
}

/// The bearer tokens of the SaslAuthenticate requests in `upstream`.
pub fn tokens(upstream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(upstream).into_owned();
    text.match_indices("auth=Bearer ")
        .map(|(at, needle)| {
            let start = at + needle.len();
            let end = start + text[start..].find('\u{1}').unwrap();
            text[start..end].to_owned()
        })
        .collect()
}

fn part(token: &str, index: usize) -> serde_json::Value {
    let encoded = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
}

pub fn claims(token: &str) -> serde_json::Value {
    part(token, 1)
}

/// The `kid` of a signed token's header.
pub fn kid(token: &str) -> String {
    part(token, 0)["kid"].as_str().unwrap().to_owned()
}

/// A configuration signing with a fresh ES256 key named `kid`; `extra` goes first in the
/// object (`"field": value, `).
pub fn signed_config(kid: &str, extra: &str) -> String {
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    format!(
        r#"{{{extra}"signing": {{"key_id": "{kid}", "issuer": "kafka-identity", "audience": "kafka", "private_key_pem": {}}}}}"#,
        serde_json::to_string(&pem).unwrap()
    )
}

/// A configuration and its caches, as the glue keeps them (`wasm/glue.rs` `Configured`).
pub struct Configured {
    pub config: FilterConfig,
    pub cache: Rc<TokenCache>,
    pub issuer: Rc<TokenIssuer>,
}

pub fn configured(json: &str) -> Rc<Configured> {
    let config = config::parse(json.as_bytes()).unwrap();
    let cache = Rc::new(TokenCache::new(
        &config.session.client_id,
        config.token_reuse_seconds * 1000,
        DEFAULT_MAX_ENTRIES,
    ));
    let issuer = Rc::new(config.session.tokens.clone());
    Rc::new(Configured {
        config,
        cache,
        issuer,
    })
}

/// An Istio-style workload certificate: empty subject, one SPIFFE URI SAN.
pub fn workload_pem(spiffe: &str) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
        .into_bytes()
}

/// One client connection through the filter, driven as the glue drives it: opened by root
/// context `root` (which tells `latest`), then on every chunk it takes its filter's
/// current configuration from `latest` when the table changed, signs with it and
/// identifies its peer (the certificate `pem`) with its mapping rules.
pub struct Client {
    pub conn: Connection,
    own: Rc<Configured>,
    seen: u64,
    current: Rc<Configured>,
    pem: Vec<u8>,
    corr: i32,
}

/// What one request of a client came to.
pub struct Round {
    /// The tokens the filter sent the broker with it (none, or one per authentication).
    pub tokens: Vec<String>,
    /// What the client received back.
    pub received: Vec<u8>,
    pub authenticated: Option<Authenticated>,
}

impl Client {
    pub fn open(
        latest: &mut Latest<Rc<Configured>>,
        root: RootId,
        own: &Rc<Configured>,
        pem: Vec<u8>,
        nonce: u64,
    ) -> Self {
        latest.connection_opened(root);
        Self {
            conn: Connection::new(&own.config.session, nonce),
            own: Rc::clone(own),
            seen: 0,
            current: Rc::clone(own),
            pem,
            corr: 0,
        }
    }

    /// The client sends one request at `now`: the bytes that go to the broker.
    pub fn send(&mut self, latest: &Latest<Rc<Configured>>, now: u64) -> Result<Vec<u8>, Refusal> {
        if let Some(current) = latest.changed_since(&filter(), &mut self.seen) {
            self.conn.set_token_issuer(Rc::clone(&current.issuer));
            self.conn.set_token_cache(Rc::clone(&current.cache));
            self.current = current;
        }
        self.corr += 1;
        let req = request(ApiKey::Metadata, 12, self.corr);
        let mut buffer = Buffer(req.clone());
        let (current, pem) = (Rc::clone(&self.current), self.pem.clone());
        self.conn.downstream(
            &self.own.config.session,
            req.len(),
            &mut buffer,
            &mut At(now),
            || {
                peer::identify(
                    &current.config.mapper,
                    &PeerProperties {
                        mtls: true,
                        certificate_pem: Some(pem.clone()),
                        ..Default::default()
                    },
                )
            },
        )?;
        Ok(buffer.0)
    }

    /// The broker's `answer` reaches the filter at `now`: what the client receives.
    pub fn receive(
        &mut self,
        answer: &[u8],
        now: u64,
    ) -> Result<(Vec<u8>, Option<Authenticated>), Refusal> {
        let mut buffer = Buffer(answer.to_vec());
        let authenticated = self.conn.upstream(
            &self.own.config.session,
            answer.len(),
            &mut buffer,
            &mut At(now),
        )?;
        Ok((buffer.0, authenticated))
    }

    /// One request at `now`, answered by the broker.
    pub fn round(&mut self, latest: &Latest<Rc<Configured>>, now: u64) -> Result<Round, Refusal> {
        let upstream = self.send(latest, now)?;
        let (received, authenticated) = self.receive(&broker_answers(&upstream), now + 1)?;
        assert_eq!(
            received,
            client_answer(self.corr),
            "the client sees only its answer"
        );
        Ok(Round {
            tokens: tokens(&upstream),
            received,
            authenticated,
        })
    }
}

/// The principal a connection of `pem` gets under `config`, as the glue identifies it.
pub fn principal_under(config: &Configured, pem: &[u8]) -> Identification {
    peer::identify(
        &config.config.mapper,
        &PeerProperties {
            mtls: true,
            certificate_pem: Some(pem.to_vec()),
            ..Default::default()
        },
    )
}
