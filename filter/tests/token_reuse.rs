#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Connections of one principal share its token for the reuse window of one configuration
//! (docs/design.md "Cost per connection"); after it, and with another configuration (key
//! rotation), they get a fresh one.

use std::ops::Range;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kafka_identity_filter::config::{self, FilterConfig};
use kafka_identity_filter::connection::Connection;
use kafka_identity_filter::host::{ChunkSource, Clock, HostBuffer, HostError};
use kafka_identity_filter::latest::Latest;
use kafka_identity_filter::session::Identification;
use kafka_identity_filter::token_cache::{TokenCache, DEFAULT_MAX_ENTRIES};
use p256::pkcs8::EncodePrivateKey;

mod support;

const NOW: u64 = 1_700_000_000_000;
const PRODUCER: &str = "spiffe://cluster.local/ns/apps/sa/producer";
const CONSUMER: &str = "spiffe://cluster.local/ns/apps/sa/consumer";
/// ApiVersions v3 with client id "c" and an empty tagged-field section.
const API_VERSIONS: [u8; 16] = [0, 0, 0, 12, 0, 18, 0, 3, 0, 0, 0, 1, 0, 1, b'c', 0];

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
        assert_eq!(start, 0);
        self.0
            .splice(..len.min(self.0.len()), bytes.iter().copied());
        Ok(())
    }
}

struct At(u64);

impl Clock for At {
    fn now_ms(&mut self) -> Result<u64, HostError> {
        Ok(self.0)
    }
}

/// A configuration and its cache, as the glue keeps them.
struct Configured {
    config: FilterConfig,
    cache: Rc<TokenCache>,
    issuer: Rc<kafka_identity_filter::token::TokenIssuer>,
}

fn configured(json: &str) -> Configured {
    let config = config::parse(json.as_bytes()).unwrap();
    let cache = Rc::new(TokenCache::new(
        &config.session.client_id,
        config.token_reuse_seconds * 1000,
        DEFAULT_MAX_ENTRIES,
    ));
    let issuer = Rc::new(config.session.tokens.clone());
    Configured {
        config,
        cache,
        issuer,
    }
}

/// The token a new connection of `principal` opened at `now_ms` presents.
fn token_of_new_connection(c: &Configured, principal: &str, now_ms: u64, nonce: u64) -> String {
    let mut conn = Connection::new(&c.config.session, nonce);
    conn.set_token_issuer(Rc::clone(&c.issuer));
    conn.set_token_cache(Rc::clone(&c.cache));
    let mut buffer = Buffer(API_VERSIONS.to_vec());
    conn.downstream(
        &c.config.session,
        API_VERSIONS.len(),
        &mut buffer,
        &mut At(now_ms),
        || Identification::Principal {
            identity: principal.into(),
            principal: principal.into(),
        },
    )
    .unwrap();
    let text = String::from_utf8_lossy(&buffer.0).into_owned();
    let start = text.find("auth=Bearer ").unwrap() + "auth=Bearer ".len();
    let end = start + text[start..].find('\u{1}').unwrap();
    text[start..end].to_owned()
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn signed_config(kid: &str, extra: &str) -> String {
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

#[test]
fn a_principal_reuses_its_token_within_the_window_then_gets_a_fresh_one() {
    // Default lifetime 3600 s: reused for 360 s.
    let c = configured(&signed_config("k1", ""));
    let first = token_of_new_connection(&c, PRODUCER, NOW, 1);
    let same = token_of_new_connection(&c, PRODUCER, NOW + 359_999, 2);
    assert_eq!(first, same, "one signature for both connections");
    assert_eq!(claims(&first)["iat"], NOW / 1000);
    let other = token_of_new_connection(&c, CONSUMER, NOW + 1, 3);
    assert_eq!(claims(&other)["sub"], CONSUMER);
    let fresh = token_of_new_connection(&c, PRODUCER, NOW + 360_000, 4);
    assert_ne!(first, fresh);
    assert_eq!(claims(&fresh)["iat"], NOW / 1000 + 360);
    assert_ne!(claims(&fresh)["jti"], claims(&first)["jti"]);
}

#[test]
fn reuse_off_gives_every_connection_its_own_token() {
    let c = configured(r#"{"token_reuse_seconds": 0}"#);
    let a = token_of_new_connection(&c, PRODUCER, NOW, 1);
    let b = token_of_new_connection(&c, PRODUCER, NOW, 2);
    // Unsecured tokens of the same second are equal by content; the signed ones differ by jti.
    assert_eq!(a, b);
    assert!(c.cache.is_empty());
    let s = configured(&signed_config("k1", r#""token_reuse_seconds": 0, "#));
    let a = token_of_new_connection(&s, PRODUCER, NOW, 1);
    let b = token_of_new_connection(&s, PRODUCER, NOW, 2);
    assert_ne!(claims(&a)["jti"], claims(&b)["jti"]);
}

#[test]
fn a_switch_of_configuration_never_serves_the_old_keys_token() {
    // What the glue does on a key rotation: the new configuration is published in the
    // VM's table while connections of the old one are open and its cache holds a fresh
    // token of the old key for the principal. Within the reuse window nothing in the old
    // cache expires: only the switch can keep that token from being served.
    let old = support::configured(&signed_config("old", ""));
    let new = support::configured(&signed_config("new", ""));
    let mut latest = Latest::default();
    latest.configured(&support::filter(), 1, Rc::clone(&old));
    let pem = support::workload_pem(PRODUCER);
    let mut open = support::Client::open(&mut latest, 1, &old, pem.clone(), 1);
    let first = open.round(&latest, NOW).unwrap().tokens;
    let mut second = support::Client::open(&mut latest, 1, &old, pem.clone(), 2);
    let cached = second.round(&latest, NOW + 1_000).unwrap().tokens;
    assert_eq!(
        first, cached,
        "the old configuration's cache serves its token"
    );
    assert_eq!(support::kid(&first[0]), "old");

    latest.configured(&support::filter(), 2, Rc::clone(&new));
    // The open connection's re-authentication (its session of 10 s is 85-95% over)...
    let reauth = open.round(&latest, NOW + 9_600).unwrap();
    assert!(reauth.authenticated.unwrap().reauthentication);
    assert_eq!(support::kid(&reauth.tokens[0]), "new");
    // ...and a new connection get the new key's token.
    let mut late = support::Client::open(&mut latest, 2, &new, pem.clone(), 3);
    let fresh = late.round(&latest, NOW + 9_700).unwrap().tokens;
    assert_eq!(support::kid(&fresh[0]), "new");
    assert_eq!(
        fresh, reauth.tokens,
        "the new configuration's cache reuses its own token"
    );
    assert_eq!(
        old.cache.len(),
        1,
        "the old token is still cached, just never served again"
    );
}
