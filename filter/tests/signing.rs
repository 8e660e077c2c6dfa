#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Signed tokens verify with the public key the broker's JWKS would hold.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kafka_identity_filter::config;
use kafka_identity_filter::token::TokenIssuer;
use p256::pkcs8::EncodePrivateKey;

fn parts(token: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3);
    let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (
        json(p[0]),
        json(p[1]),
        URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
        format!("{}.{}", p[0], p[1]),
    )
}

fn signing_config(alg: &str, pem_field: &str) -> String {
    format!(
        r#"{{"signing": {{"algorithm": "{alg}", "key_id": "k1", "issuer": "kafka-identity", "audience": "kafka", {pem_field}}}}}"#
    )
}

#[test]
fn es256_tokens_verify_and_carry_every_claim() {
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let json = signing_config(
        "ES256",
        &format!(
            r#""private_key_pem": {}"#,
            serde_json::to_string(&pem).unwrap()
        ),
    );
    let c = config::parse(json.as_bytes()).unwrap();
    let t1 = c
        .session
        .tokens
        .issue(
            "spiffe://cluster.local/ns/apps/sa/producer",
            1_700_000_000,
            7,
            0,
        )
        .unwrap();
    let (header, claims, sig, input) = parts(&t1);
    assert_eq!(
        header,
        serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"})
    );
    assert_eq!(claims["iss"], "kafka-identity");
    assert_eq!(claims["aud"], "kafka");
    assert_eq!(claims["sub"], "spiffe://cluster.local/ns/apps/sa/producer");
    assert_eq!(claims["iat"], 1_700_000_000u64);
    assert_eq!(claims["exp"], 1_700_003_600u64);
    use p256::ecdsa::signature::Verifier;
    let signature = p256::ecdsa::Signature::from_slice(&sig).unwrap();
    key.verifying_key()
        .verify(input.as_bytes(), &signature)
        .unwrap();
    // Another key does not verify it.
    let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    assert!(other
        .verifying_key()
        .verify(input.as_bytes(), &signature)
        .is_err());
    // jti differs per connection nonce and per re-authentication.
    let jti = |t: &str| parts(t).1["jti"].clone();
    let t2 = c
        .session
        .tokens
        .issue(
            "spiffe://cluster.local/ns/apps/sa/producer",
            1_700_000_000,
            8,
            0,
        )
        .unwrap();
    let t3 = c
        .session
        .tokens
        .issue(
            "spiffe://cluster.local/ns/apps/sa/producer",
            1_700_000_000,
            7,
            1,
        )
        .unwrap();
    assert_ne!(jti(&t1), jti(&t2));
    assert_ne!(jti(&t1), jti(&t3));
}

#[test]
fn rs256_tokens_verify_and_short_keys_are_refused() {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let json = signing_config("RS256", r#""private_key_env": "SIGNING_KEY""#);
    let c = config::parse_with_env(json.as_bytes(), &|name| {
        (name == "SIGNING_KEY").then(|| pem.clone())
    })
    .unwrap();
    let token = c.session.tokens.issue("p", 1, 0, 0).unwrap();
    let (header, _, sig, input) = parts(&token);
    assert_eq!(header["alg"], "RS256");
    use rsa::signature::Verifier;
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
    verifier
        .verify(
            input.as_bytes(),
            &rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap(),
        )
        .unwrap();

    let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let small_pem = small
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let json = signing_config(
        "RS256",
        &format!(
            r#""private_key_pem": {}"#,
            serde_json::to_string(&small_pem).unwrap()
        ),
    );
    let err = config::parse(json.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("1024 bits"), "{err}");
}

#[test]
fn signing_config_errors_name_the_field() {
    let err = |json: &str| config::parse(json.as_bytes()).unwrap_err().to_string();
    assert!(
        err(&signing_config("ES256", r#""private_key_env": "NOPE""#))
            .starts_with("signing.private_key_env: environment variable \"NOPE\"")
    );
    assert!(err(&signing_config(
        "ES256",
        r#""private_key_pem": "x", "private_key_env": "Y""#
    ))
    .starts_with("signing: set exactly one"));
    assert!(err(&signing_config(
        "ES256",
        r#""private_key_pem": "not a key""#
    ))
    .starts_with("signing.private_key: not a P-256 private key"));
    assert!(err(&signing_config("HS256", r#""private_key_pem": "x""#))
        .contains("unknown variant `HS256`"));
    assert!(err(
        r#"{"signing": {"key_id": "", "issuer": "i", "audience": "a", "private_key_pem": "x"}}"#
    )
    .starts_with("signing.key_id:"));
    // Unsecured remains the default.
    assert!(matches!(
        config::parse(b"{}").unwrap().session.tokens,
        TokenIssuer::Unsecured { .. }
    ));
}
