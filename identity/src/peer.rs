//! The identity fields of a peer, from its certificate or from the strings Envoy exposes.

use crate::envoy_subject;
use crate::java_dn;
use crate::spiffe::{has_spiffe_scheme, SpiffeId, SpiffeProblem};
use std::fmt;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Certificates larger than this are refused before parsing.
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// What is known about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject DN as Kafka sees it (`X500Principal.getName()`); `None` when Envoy did
    /// not expose one.
    pub subject: Option<String>,
    /// False when the subject was rebuilt from Envoy's rendering rather than read from
    /// the certificate: attributes other than CN, C, L, ST, O, OU, STREET, DC and UID may
    /// then differ from what Kafka would see.
    pub subject_exact: bool,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub spiffe: Result<SpiffeId, SpiffeProblem>,
}

/// Why no identity could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    TooLarge(usize),
    NoCertificate,
    Pem(String),
    /// A `%` not followed by two hex digits, at this byte.
    UrlEncoding {
        at: usize,
    },
    Der(String),
    SubjectAltName(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::TooLarge(n) => {
                write!(
                    f,
                    "certificate input is {n} bytes, more than {MAX_INPUT_BYTES}"
                )
            }
            IdentityError::NoCertificate => f.write_str("no CERTIFICATE PEM block found"),
            IdentityError::Pem(e) => write!(f, "invalid PEM: {e}"),
            IdentityError::UrlEncoding { at } => {
                write!(f, "invalid URL encoding: bad %-escape at byte {at}")
            }
            IdentityError::Der(e) => write!(f, "invalid certificate: {e}"),
            IdentityError::SubjectAltName(e) => {
                write!(f, "invalid subjectAltName extension: {e}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

impl PeerIdentity {
    /// Reads the first `CERTIFICATE` block of a PEM text (e.g. `connection.peer_certificate`).
    pub fn from_pem(pem: &[u8]) -> Result<PeerIdentity, IdentityError> {
        check_size(pem.len())?;
        for block in crate::pem::blocks(pem) {
            let block = block.map_err(|e| IdentityError::Pem(e.to_string()))?;
            if block.label == "CERTIFICATE" {
                return PeerIdentity::from_der(&block.contents);
            }
        }
        Err(IdentityError::NoCertificate)
    }

    /// Reads a URL-encoded PEM, as `%DOWNSTREAM_PEER_CERT%` puts it in filter state.
    pub fn from_url_encoded_pem(encoded: &[u8]) -> Result<PeerIdentity, IdentityError> {
        check_size(encoded.len())?;
        let pem = percent_decode(encoded).map_err(|at| IdentityError::UrlEncoding { at })?;
        PeerIdentity::from_pem(&pem)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        check_size(der.len())?;
        let (rest, certificate) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(IdentityError::Der(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        for extension in certificate.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(uri) => uri_sans.push((*uri).to_string()),
                            GeneralName::DNSName(dns) => dns_sans.push((*dns).to_string()),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::ParseError { error } if is_san(extension) => {
                    return Err(IdentityError::SubjectAltName(error.to_string()));
                }
                _ => {}
            }
        }
        let spiffe = SpiffeId::from_uri_sans(&uri_sans);
        Ok(PeerIdentity {
            subject: Some(java_dn::render_name(certificate.subject())),
            subject_exact: true,
            uri_sans,
            dns_sans,
            spiffe,
        })
    }

    /// A peer known only by its URI SANs as Envoy's `%DOWNSTREAM_PEER_URI_SAN%` renders
    /// them: joined by `,`, or `-` when there are none. This is what Istio's HBONE
    /// termination (`connect_authority`) puts into the filter state
    /// `io.istio.peer_principal` of a waypoint's inner connection. No subject: the
    /// subject-DN source has nothing to work with.
    ///
    /// The join cannot always be undone: a URI may contain `,`, so
    /// `https://a.example/x,spiffe://td/ns/a/sa/b` is either two SANs, one of them a SPIFFE
    /// ID, or one SAN that is no SPIFFE ID at all (what the certificate itself, and so a
    /// sidecar, would show). A value with a `,` and a `spiffe:` piece is therefore refused
    /// ([`SpiffeProblem::JoinedAmbiguously`], which ends the mapping like any refused
    /// SPIFFE ID); only the certificate can settle it. Without a `spiffe:` piece every
    /// reading has no SPIFFE ID, and the value is kept as split (for logs).
    /// [`PeerIdentity::joins_to`] checks that a certificate is the one behind a value.
    pub fn from_joined_uri_sans(value: &str) -> PeerIdentity {
        let uri_sans: Vec<String> = if is_no_uri_san(value) {
            Vec::new()
        } else {
            value.split(',').map(str::to_owned).collect()
        };
        let spiffe = if uri_sans.len() > 1 && uri_sans.iter().any(|uri| has_spiffe_scheme(uri)) {
            Err(SpiffeProblem::JoinedAmbiguously(value.to_owned()))
        } else {
            SpiffeId::from_uri_sans(&uri_sans)
        };
        PeerIdentity {
            subject: None,
            subject_exact: false,
            uri_sans,
            dns_sans: Vec::new(),
            spiffe,
        }
    }

    /// Whether this peer's URI SANs, joined as `%DOWNSTREAM_PEER_URI_SAN%` joins them, are
    /// exactly `joined`: the same comparison on both sides of the join, so a SAN that
    /// contains `,` matches only its own rendering, never a split of it.
    pub fn joins_to(&self, joined: &str) -> bool {
        if self.uri_sans.is_empty() {
            return is_no_uri_san(joined);
        }
        self.uri_sans.join(",") == joined
    }

    /// Degraded input from Envoy's `connection.uri_san_peer_certificate` (the first URI
    /// SAN only) and `connection.subject_peer_certificate` (OpenSSL's RFC 2253 rendering).
    /// Two SPIFFE SANs cannot be detected from one URI: prefer the certificate.
    pub fn from_envoy_strings(uri_san: Option<&str>, subject: Option<&str>) -> PeerIdentity {
        let uri_sans: Vec<String> = uri_san
            .filter(|s| !s.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
        Self::from_tls_strings(uri_sans, subject)
    }

    /// What Envoy's TLS connection says of the peer to a native filter: every URI SAN (so two
    /// SPIFFE SANs are seen, as from the certificate) and the subject in OpenSSL's RFC 2253
    /// rendering (converted as for [`PeerIdentity::from_envoy_strings`]).
    pub fn from_tls_strings(uri_sans: Vec<String>, subject: Option<&str>) -> PeerIdentity {
        let uri_sans: Vec<String> = uri_sans.into_iter().filter(|s| !s.is_empty()).collect();
        let spiffe = SpiffeId::from_uri_sans(&uri_sans);
        PeerIdentity {
            subject: subject.map(envoy_subject::to_java),
            subject_exact: false,
            uri_sans,
            dns_sans: Vec::new(),
            spiffe,
        }
    }
}

/// Envoy renders "no URI SAN" as `-` (an empty value is taken the same way).
fn is_no_uri_san(value: &str) -> bool {
    value.is_empty() || value == "-"
}

fn is_san(extension: &x509_parser::extensions::X509Extension<'_>) -> bool {
    extension.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME
}

fn check_size(len: usize) -> Result<(), IdentityError> {
    if len > MAX_INPUT_BYTES {
        return Err(IdentityError::TooLarge(len));
    }
    Ok(())
}

/// `%XX` decoding; `+` stays `+` because it is a base64 character, not a space, here. The
/// error is the position of a bad escape.
fn percent_decode(input: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter().enumerate();
    while let Some((at, &byte)) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let hex = |b: Option<(usize, &u8)>| b.and_then(|(_, b)| char::from(*b).to_digit(16));
        match (hex(bytes.next()), hex(bytes.next())) {
            (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
            _ => return Err(at),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%0A+").unwrap(), b"a b\n+");
        assert!(percent_decode(b"%2").is_err());
        assert!(percent_decode(b"%zz").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            PeerIdentity::from_pem(b""),
            Err(IdentityError::NoCertificate)
        );
        assert!(PeerIdentity::from_pem(
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(PeerIdentity::from_der(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(PeerIdentity::from_der(&[]).is_err());
        assert!(matches!(
            PeerIdentity::from_der(&vec![0u8; MAX_INPUT_BYTES + 1]),
            Err(IdentityError::TooLarge(_))
        ));
    }

    #[test]
    fn joined_uri_sans() {
        let one = PeerIdentity::from_joined_uri_sans("spiffe://cluster.local/ns/apps/sa/producer");
        assert_eq!(one.uri_sans, ["spiffe://cluster.local/ns/apps/sa/producer"]);
        assert_eq!(one.subject, None);
        assert_eq!(
            one.spiffe.unwrap().service_account.as_deref(),
            Some("producer")
        );
        // A SPIFFE ID next to other URIs cannot be told from one URI SAN that contains a
        // ',' (whose certificate has no SPIFFE ID at all): refused, whichever way round.
        for joined in [
            "https://example.org/x,spiffe://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b,https://example.org/x",
            "https://example.org/x,SPIFFE://cluster.local/ns/a/sa/b",
            // Two SPIFFE IDs, or one invalid one: refused too.
            "spiffe://a/x,spiffe://b/y",
        ] {
            let peer = PeerIdentity::from_joined_uri_sans(joined);
            assert_eq!(
                peer.spiffe,
                Err(SpiffeProblem::JoinedAmbiguously(joined.to_owned())),
                "{joined}"
            );
            assert!(peer
                .spiffe
                .unwrap_err()
                .to_string()
                .contains("cannot be told without the certificate"));
        }
        // Without a spiffe: piece no reading has a SPIFFE ID: nothing to refuse.
        let plain = PeerIdentity::from_joined_uri_sans("https://a.example/x,https://b.example/y");
        assert_eq!(plain.uri_sans.len(), 2);
        assert_eq!(plain.spiffe, Err(SpiffeProblem::Missing));
        // Envoy's rendering of "no URI SAN".
        for none in ["", "-"] {
            let peer = PeerIdentity::from_joined_uri_sans(none);
            assert!(peer.uri_sans.is_empty());
            assert_eq!(peer.spiffe, Err(SpiffeProblem::Missing));
        }
        // A bad ID is reported, not skipped.
        assert!(matches!(
            PeerIdentity::from_joined_uri_sans("spiffe://cluster.local/ns/a b/sa/c").spiffe,
            Err(SpiffeProblem::Invalid { .. })
        ));
    }

    #[test]
    fn a_certificate_matches_only_its_own_joined_rendering() {
        let peer = |uris: &[&str]| PeerIdentity {
            subject: None,
            subject_exact: true,
            uri_sans: uris.iter().map(|u| (*u).to_owned()).collect(),
            dns_sans: Vec::new(),
            spiffe: SpiffeId::from_uri_sans(uris),
        };
        let forged = "https://a.example/x,spiffe://cluster.local/ns/kafka/sa/admin";
        // One SAN with a ',' is rendered as exactly the forged-looking value...
        assert!(peer(&[forged]).joins_to(forged));
        // ... and so are two SANs; a certificate with other SANs is not.
        assert!(peer(&[
            "https://a.example/x",
            "spiffe://cluster.local/ns/kafka/sa/admin"
        ])
        .joins_to(forged));
        assert!(!peer(&["spiffe://cluster.local/ns/kafka/sa/admin"]).joins_to(forged));
        assert!(peer(&[]).joins_to("-"));
        assert!(peer(&[]).joins_to(""));
        assert!(!peer(&[]).joins_to("spiffe://a/b"));
        assert!(!peer(&["spiffe://a/b"]).joins_to("-"));
    }

    #[test]
    fn envoy_strings() {
        let peer = PeerIdentity::from_envoy_strings(
            Some("spiffe://cluster.local/ns/a/sa/b"),
            Some("CN=producer,OU=TEST,O=acme"),
        );
        assert_eq!(peer.subject.as_deref(), Some("CN=producer,OU=TEST,O=acme"));
        assert_eq!(peer.spiffe.unwrap().service_account.as_deref(), Some("b"));
        let none = PeerIdentity::from_envoy_strings(Some(""), None);
        assert!(none.uri_sans.is_empty());
        assert_eq!(none.subject, None);
    }
}
