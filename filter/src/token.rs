//! The OAUTHBEARER credential the filter presents on the client's behalf.
//!
//! An unsecured JWS (RFC 7515 with `"alg":"none"`, empty signature) is what Kafka's
//! default OAUTHBEARER server callback accepts; the principal is its `sub` claim.
//! RFC 7628 wraps it in a GS2 client-first message.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// `header.payload.` with an empty signature.
pub fn unsecured_jwt(principal: &str, now_unix_secs: u64, lifetime_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let claims = Claims {
        sub: principal,
        iat: now_unix_secs,
        exp: now_unix_secs.saturating_add(lifetime_secs),
    };
    // Serializing a struct of a string and integers cannot fail.
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(payload))
}

/// Makes the token for each (re-)authentication.
#[derive(Debug, Clone)]
pub enum TokenIssuer {
    /// `{"alg":"none"}`: accepted by Kafka's default OAUTHBEARER validator.
    Unsecured { lifetime_secs: u64 },
    /// A JWS the broker checks against a JWKS (Kafka's `OAuthBearerValidatorCallbackHandler`).
    Signed(Box<SignedIssuer>),
}

/// Why a signing key cannot be used or a token cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    NotP256Key,
    NotRsaKey,
    RsaKeyTooSmall {
        bits: usize,
        min: usize,
    },
    Signing {
        algorithm: Algorithm,
        detail: String,
    },
    Json(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NotP256Key => f.write_str(
                "not a P-256 private key in PEM (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\")",
            ),
            TokenError::NotRsaKey => f.write_str(
                "not an RSA private key in PEM (PKCS#8 \"PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")",
            ),
            TokenError::RsaKeyTooSmall { bits, min } => {
                write!(f, "RSA key has {bits} bits; at least {min} are required")
            }
            TokenError::Signing { algorithm, detail } => {
                write!(f, "{algorithm:?} signing failed: {detail}")
            }
            TokenError::Json(e) => write!(f, "cannot encode the token: {e}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl TokenIssuer {
    /// `nonce` makes `jti` unique per connection, `sequence` per (re-)authentication.
    pub fn issue(
        &self,
        principal: &str,
        now_unix_secs: u64,
        nonce: u64,
        sequence: u64,
    ) -> Result<String, TokenError> {
        match self {
            TokenIssuer::Unsecured { lifetime_secs } => {
                Ok(unsecured_jwt(principal, now_unix_secs, *lifetime_secs))
            }
            TokenIssuer::Signed(signed) => signed.issue(principal, now_unix_secs, nonce, sequence),
        }
    }

    /// For logs: `unsecured`, or the algorithm and key id, e.g. `ES256:2026-11`.
    pub fn describe(&self) -> String {
        match self {
            TokenIssuer::Unsecured { .. } => "unsecured".to_owned(),
            TokenIssuer::Signed(signed) => format!("{:?}:{}", signed.algorithm, signed.key_id),
        }
    }

    pub fn lifetime_secs(&self) -> u64 {
        match self {
            TokenIssuer::Unsecured { lifetime_secs } => *lifetime_secs,
            TokenIssuer::Signed(signed) => signed.lifetime_secs,
        }
    }
}

/// The algorithms Kafka's JWKS validator (jose4j) accepts that the filter can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    ES256,
    RS256,
}

#[derive(Clone)]
enum SigningKey {
    Es256(p256::ecdsa::SigningKey),
    Rs256(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

/// Signs `iss`, `aud`, `sub`, `iat`, `exp`, `jti` with a private key; `kid` names the key
/// in the broker's JWKS so keys can be rotated.
#[derive(Clone)]
pub struct SignedIssuer {
    key: SigningKey,
    pub algorithm: Algorithm,
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
    pub lifetime_secs: u64,
}

impl std::fmt::Debug for SignedIssuer {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIssuer")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SignedHeader<'a> {
    alg: Algorithm,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct SignedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        })
    }
}

impl SignedIssuer {
    /// Reads a PKCS#8 PEM private key (or SEC1 `EC PRIVATE KEY` / PKCS#1 `RSA PRIVATE KEY`)
    /// for the algorithm.
    pub fn new(
        algorithm: Algorithm,
        private_key_pem: &str,
        key_id: String,
        issuer: String,
        audience: String,
        lifetime_secs: u64,
    ) -> Result<Self, TokenError> {
        let key = match algorithm {
            Algorithm::ES256 => SigningKey::Es256(es256_key(private_key_pem)?),
            Algorithm::RS256 => SigningKey::Rs256(Box::new(rs256_key(private_key_pem)?)),
        };
        Ok(Self {
            key,
            algorithm,
            key_id,
            issuer,
            audience,
            lifetime_secs,
        })
    }

    fn issue(
        &self,
        principal: &str,
        now_unix_secs: u64,
        nonce: u64,
        sequence: u64,
    ) -> Result<String, TokenError> {
        use sha2::Digest;
        let encode = |value: &dyn erased::Json| -> Result<String, TokenError> {
            Ok(URL_SAFE_NO_PAD.encode(value.to_json()?))
        };
        let mut hash = sha2::Sha256::new();
        for part in [
            self.key_id.as_bytes(),
            principal.as_bytes(),
            &now_unix_secs.to_be_bytes(),
            &nonce.to_be_bytes(),
            &sequence.to_be_bytes(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let jti = URL_SAFE_NO_PAD.encode(hash.finalize().get(..18).unwrap_or_default());
        let header = SignedHeader {
            alg: self.algorithm,
            typ: "JWT",
            kid: &self.key_id,
        };
        let claims = SignedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: principal,
            iat: now_unix_secs,
            exp: now_unix_secs.saturating_add(self.lifetime_secs),
            jti,
        };
        let signing_input = format!("{}.{}", encode(&header)?, encode(&claims)?);
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        use p256::ecdsa::signature::Signer;
        match &self.key {
            SigningKey::Es256(key) => {
                // JWS wants the fixed-size r || s form, not DER (RFC 7518 section 3.4).
                let signature: p256::ecdsa::Signature =
                    key.try_sign(message).map_err(|e| TokenError::Signing {
                        algorithm: Algorithm::ES256,
                        detail: e.to_string(),
                    })?;
                Ok(signature.to_bytes().to_vec())
            }
            SigningKey::Rs256(key) => {
                use rsa::signature::SignatureEncoding;
                let signature = key.try_sign(message).map_err(|e| TokenError::Signing {
                    algorithm: Algorithm::RS256,
                    detail: e.to_string(),
                })?;
                Ok(signature.to_vec())
            }
        }
    }
}

fn es256_key(pem: &str) -> Result<p256::ecdsa::SigningKey, TokenError> {
    use p256::pkcs8::DecodePrivateKey;
    if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(key);
    }
    p256::SecretKey::from_sec1_pem(pem)
        .map(p256::ecdsa::SigningKey::from)
        .map_err(|_| TokenError::NotP256Key)
}

/// Smallest RSA key accepted (jose4j refuses RS256 keys below 2048 bits).
const MIN_RSA_BITS: usize = 2048;

fn rs256_key(pem: &str) -> Result<rsa::pkcs1v15::SigningKey<sha2::Sha256>, TokenError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| TokenError::NotRsaKey)?;
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(TokenError::RsaKeyTooSmall {
            bits,
            min: MIN_RSA_BITS,
        });
    }
    Ok(rsa::pkcs1v15::SigningKey::new(key))
}

/// JSON encoding behind a trait object, so header and claims share one helper.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, super::TokenError>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, super::TokenError> {
            serde_json::to_vec(self).map_err(|e| super::TokenError::Json(e.to_string()))
        }
    }
}

/// RFC 7628 section 3.1 client-first message: `n,,` GS2 header, then `auth=Bearer <token>`
/// between ^A separators.
pub fn client_first_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_carries_principal_and_lifetime() {
        let token = unsecured_jwt(
            "spiffe://cluster.local/ns/apps/sa/producer",
            1_700_000_000,
            3600,
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"none"}"#);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "spiffe://cluster.local/ns/apps/sa/producer");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);
    }

    #[test]
    fn principals_with_quotes_stay_one_claim() {
        let token = unsecured_jwt("a\"b\\c", 0, 1);
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["sub"], "a\"b\\c");
    }

    #[test]
    fn client_first_message_is_rfc7628() {
        assert_eq!(client_first_message("t"), b"n,,\x01auth=Bearer t\x01\x01");
    }
}
