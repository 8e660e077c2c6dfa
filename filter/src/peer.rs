//! From what Envoy exposes about the peer to an [`Identification`].

use kafka_identity_core::{PeerIdentity, PrincipalMapper};

use crate::session::Identification;

/// Connection properties read from Envoy on the first downstream data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerProperties {
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.peer_certificate` (Envoy 1.39+): PEM.
    pub certificate_pem: Option<Vec<u8>>,
    /// The filter-state key filled with `%DOWNSTREAM_PEER_CERT%` (URL-encoded PEM).
    pub filter_state_pem: Option<Vec<u8>>,
    /// `connection.uri_san_peer_certificate`: only the first URI SAN.
    pub uri_san: Option<String>,
    /// `connection.subject_peer_certificate`.
    pub subject: Option<String>,
}

/// The best identity source available: the certificate itself, else Envoy's strings.
pub fn identify(mapper: &PrincipalMapper, props: &PeerProperties) -> Identification {
    if !props.mtls {
        return Identification::NoMtls;
    }
    let parsed = if let Some(pem) = &props.certificate_pem {
        PeerIdentity::from_pem(pem)
    } else if let Some(encoded) = &props.filter_state_pem {
        PeerIdentity::from_url_encoded_pem(encoded)
    } else {
        Ok(PeerIdentity::from_envoy_strings(
            props.uri_san.as_deref(),
            props.subject.as_deref(),
        ))
    };
    let peer = match parsed {
        Ok(peer) => peer,
        Err(e) => {
            return Identification::NoPrincipal {
                identity: "(unreadable certificate)".to_owned(),
                reason: e.to_string(),
            }
        }
    };
    let identity = describe(&peer);
    match mapper.map(&peer) {
        Ok(principal) => Identification::Principal {
            identity,
            principal: principal.name,
        },
        Err(why) => Identification::NoPrincipal {
            identity,
            reason: why.to_string(),
        },
    }
}

/// A short name for the peer in logs: its SPIFFE ID, else its first URI SAN or subject.
fn describe(peer: &PeerIdentity) -> String {
    if let Ok(id) = &peer.spiffe {
        return id.id.clone();
    }
    if let Some(uri) = peer.uri_sans.first() {
        return uri.clone();
    }
    match &peer.subject {
        Some(s) if !s.is_empty() => s.clone(),
        _ => "(no SAN, empty subject)".to_owned(),
    }
}
