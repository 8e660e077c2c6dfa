//! SPIFFE IDs as the SPIFFE ID specification defines them, and the one a peer presents.

use std::fmt;

const SCHEME: &str = "spiffe://";
const MAX_ID_LENGTH: usize = 2048;
const MAX_TRUST_DOMAIN_LENGTH: usize = 255;

/// A valid SPIFFE ID, split into the parts a principal template can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// The whole ID, e.g. `spiffe://cluster.local/ns/kafka/sa/producer`.
    pub id: String,
    pub trust_domain: String,
    /// The path with its leading `/`, or empty for the trust domain's own ID.
    pub path: String,
    /// For Istio-style IDs (`/ns/<namespace>/sa/<service account>`).
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeIdError {
    TooLong { max: usize },
    Scheme,
    TrustDomainEmpty,
    TrustDomainTooLong { max: usize },
    Port,
    UserInfo,
    Query,
    Fragment,
    UpperCase,
    TrustDomainCharacter(char),
    EmptySegment,
    DotSegment,
    PercentEncoded,
    PathCharacter(char),
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeIdError::TooLong { max } => write!(f, "longer than {max} bytes"),
            SpiffeIdError::Scheme => {
                f.write_str("scheme must be exactly \"spiffe://\" (lower case)")
            }
            SpiffeIdError::TrustDomainEmpty => f.write_str("trust domain is empty"),
            SpiffeIdError::TrustDomainTooLong { max } => {
                write!(f, "trust domain is longer than {max} bytes")
            }
            SpiffeIdError::Port => f.write_str("trust domain must not contain a port"),
            SpiffeIdError::UserInfo => f.write_str("trust domain must not contain user info"),
            SpiffeIdError::Query => f.write_str("SPIFFE ID must not contain a query"),
            SpiffeIdError::Fragment => f.write_str("SPIFFE ID must not contain a fragment"),
            SpiffeIdError::UpperCase => f.write_str("trust domain must be lower case"),
            SpiffeIdError::TrustDomainCharacter(c) => {
                write!(f, "trust domain contains {c:?}; allowed: a-z 0-9 . - _")
            }
            SpiffeIdError::EmptySegment => {
                f.write_str("path has an empty segment (or a trailing /)")
            }
            SpiffeIdError::DotSegment => f.write_str("path must not contain . or .. segments"),
            SpiffeIdError::PercentEncoded => f.write_str("path must not be percent-encoded"),
            SpiffeIdError::PathCharacter(c) => {
                write!(f, "path contains {c:?}; allowed: a-z A-Z 0-9 . - _")
            }
        }
    }
}

impl std::error::Error for SpiffeIdError {}

/// Why a peer has no usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeProblem {
    /// No URI SAN with the `spiffe` scheme.
    Missing,
    /// More than one `spiffe` URI SAN: which identity the peer meant is ambiguous.
    Ambiguous(Vec<String>),
    /// The one `spiffe` URI SAN breaks the SPIFFE ID specification.
    Invalid { uri: String, reason: SpiffeIdError },
    /// URI SANs that arrived joined by `,` (Envoy's `%DOWNSTREAM_PEER_URI_SAN%`) with a
    /// `spiffe` one among them: a URI may itself contain `,`, so the joined text cannot say
    /// which SANs the certificate has, nor whether one of them is a SPIFFE ID.
    JoinedAmbiguously(String),
}

impl fmt::Display for SpiffeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeProblem::Missing => f.write_str("no SPIFFE ID (no spiffe:// URI SAN)"),
            SpiffeProblem::Ambiguous(uris) => write!(
                f,
                "{} spiffe:// URI SANs, exactly one is allowed: {}",
                uris.len(),
                uris.iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            SpiffeProblem::Invalid { uri, reason } => {
                write!(f, "invalid SPIFFE ID {uri:?}: {reason}")
            }
            SpiffeProblem::JoinedAmbiguously(joined) => write!(
                f,
                "URI SANs {joined:?} arrived joined by ',' and a URI may itself contain ',': \
                 whether one of them is a SPIFFE ID cannot be told without the certificate"
            ),
        }
    }
}

impl std::error::Error for SpiffeProblem {}

impl SpiffeId {
    /// Parses and validates one SPIFFE ID.
    pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeIdError> {
        if uri.len() > MAX_ID_LENGTH {
            return Err(SpiffeIdError::TooLong { max: MAX_ID_LENGTH });
        }
        let rest = uri.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        let (namespace, service_account) = istio_parts(path);
        Ok(SpiffeId {
            id: uri.to_string(),
            trust_domain: trust_domain.to_string(),
            path: path.to_string(),
            namespace,
            service_account,
        })
    }

    /// Picks the peer's SPIFFE ID from its URI SANs: exactly one must use the scheme.
    pub fn from_uri_sans<S: AsRef<str>>(uri_sans: &[S]) -> Result<SpiffeId, SpiffeProblem> {
        let candidates: Vec<&str> = uri_sans
            .iter()
            .map(AsRef::as_ref)
            .filter(|uri| has_spiffe_scheme(uri))
            .collect();
        match candidates.as_slice() {
            [] => Err(SpiffeProblem::Missing),
            [one] => SpiffeId::parse(one).map_err(|reason| SpiffeProblem::Invalid {
                uri: (*one).to_string(),
                reason,
            }),
            many => Err(SpiffeProblem::Ambiguous(
                many.iter().map(|s| (*s).to_string()).collect(),
            )),
        }
    }
}

/// Any capitalisation counts, so that `SPIFFE://x` is reported as invalid, not ignored.
pub(crate) fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
}

/// Validates a trust domain name: lower-case letters, digits, `.`, `-` and `_`.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::TrustDomainEmpty);
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LENGTH {
        return Err(SpiffeIdError::TrustDomainTooLong {
            max: MAX_TRUST_DOMAIN_LENGTH,
        });
    }
    if let Some(bad) = trust_domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(match bad {
            ':' => SpiffeIdError::Port,
            '@' => SpiffeIdError::UserInfo,
            '?' => SpiffeIdError::Query,
            '#' => SpiffeIdError::Fragment,
            c if c.is_ascii_uppercase() => SpiffeIdError::UpperCase,
            c => SpiffeIdError::TrustDomainCharacter(c),
        });
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(SpiffeIdError::EmptySegment),
            "." | ".." => return Err(SpiffeIdError::DotSegment),
            _ => {}
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(match bad {
                '?' => SpiffeIdError::Query,
                '#' => SpiffeIdError::Fragment,
                '%' => SpiffeIdError::PercentEncoded,
                c => SpiffeIdError::PathCharacter(c),
            });
        }
    }
    Ok(())
}

fn istio_parts(path: &str) -> (Option<String>, Option<String>) {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["ns", namespace, "sa", account] => {
            (Some((*namespace).to_string()), Some((*account).to_string()))
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_id() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/kafka/sa/producer").unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.path, "/ns/kafka/sa/producer");
        assert_eq!(id.namespace.as_deref(), Some("kafka"));
        assert_eq!(id.service_account.as_deref(), Some("producer"));
    }

    #[test]
    fn non_istio_path_has_no_namespace() {
        let id = SpiffeId::parse("spiffe://example.org/workload/a").unwrap();
        assert_eq!(id.namespace, None);
        assert_eq!(id.service_account, None);
        let id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(id.path, "");
    }

    #[test]
    fn rejects_what_the_spec_forbids() {
        for bad in [
            "spiffe://",
            "spiffe:///path",
            "SPIFFE://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#frag",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a%20b",
            "spiffe://exa mple.org/a",
            "http://example.org/a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be rejected");
        }
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        assert!(SpiffeId::parse(&long_td).is_err());
        let long_id = format!("spiffe://a/{}", "b".repeat(2048));
        assert!(SpiffeId::parse(&long_id).is_err());
    }

    #[test]
    fn picks_exactly_one() {
        assert_eq!(
            SpiffeId::from_uri_sans(&["https://x"]),
            Err(SpiffeProblem::Missing)
        );
        let two = SpiffeId::from_uri_sans(&["spiffe://a/x", "spiffe://b/y"]).unwrap_err();
        assert!(matches!(two, SpiffeProblem::Ambiguous(ref v) if v.len() == 2));
        assert!(two.to_string().contains("exactly one"));
        let one = SpiffeId::from_uri_sans(&["https://x", "spiffe://a/x"]).unwrap();
        assert_eq!(one.trust_domain, "a");
        assert!(matches!(
            SpiffeId::from_uri_sans(&["SPIFFE://A/x"]),
            Err(SpiffeProblem::Invalid { .. })
        ));
    }
}
