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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIssuer {
    /// `{"alg":"none"}`: accepted by Kafka's default OAUTHBEARER validator.
    Unsecured { lifetime_secs: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TokenIssuer {
    /// `sequence` numbers the tokens of one connection (0 for the first authentication).
    pub fn issue(
        &self,
        principal: &str,
        now_unix_secs: u64,
        _sequence: u64,
    ) -> Result<String, TokenError> {
        match self {
            TokenIssuer::Unsecured { lifetime_secs } => {
                Ok(unsecured_jwt(principal, now_unix_secs, *lifetime_secs))
            }
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
