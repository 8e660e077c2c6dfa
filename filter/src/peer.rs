//! From what Envoy exposes about the peer to an [`Identification`]: in a sidecar the TLS
//! connection's peer certificate ([`identify`]), in an ambient waypoint the HBONE peer that
//! Istio recorded in filter state ([`identify_hbone_peer`]).

use kafka_identity_core::{PeerIdentity, PrincipalMapper};

use crate::config::WaypointPeer;
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
    /// Every URI SAN, where the host has them (the native module's TLS callbacks); when set,
    /// used instead of `uri_san`.
    pub uri_sans: Option<Vec<String>>,
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
    } else if let Some(uri_sans) = &props.uri_sans {
        Ok(PeerIdentity::from_tls_strings(
            uri_sans.clone(),
            props.subject.as_deref(),
        ))
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
    map(mapper, &peer)
}

/// What a waypoint's inner connection carries about the client, read on the first
/// downstream data from the filter-state keys of [`WaypointPeer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HbonePeer {
    /// `waypoint.peer_principal_filter_state_key` (Istio: `io.istio.peer_principal`): the
    /// verified HBONE peer's URI SANs, joined by `,`.
    pub principal: Option<Vec<u8>>,
    /// `waypoint.peer_certificate_filter_state_key`, when configured: the HBONE peer's
    /// certificate, URL-encoded PEM.
    pub certificate: Option<Vec<u8>>,
}

/// The client of a connection inside an ambient waypoint. The connection itself is an
/// internal one without TLS; the client is the peer of the HBONE tunnel it arrived through,
/// whose certificate Envoy verified when it terminated the tunnel, and whose URI SANs
/// Istio's `connect_authority` filter copied into filter state. Only Envoy's filters can
/// write filter state, so a client cannot forge it.
///
/// The SPIFFE ID is validated and mapped exactly as a certificate's URI SAN would be. With a
/// certificate key configured the certificate is required (a missing one would silently
/// change which principal the subject rules give), its URI SANs joined must be exactly the
/// tunnel peer's value, so a key filled by anything but the HBONE listener's
/// `set_filter_state` is noticed, and the certificate's own SANs are mapped. Without it a
/// value the join made ambiguous (a `,` next to a `spiffe:` piece: a URI may contain `,`)
/// is refused, never split into a SPIFFE ID the certificate does not have.
pub fn identify_hbone_peer(
    mapper: &PrincipalMapper,
    keys: &WaypointPeer,
    found: &HbonePeer,
) -> Identification {
    let principal_key = &keys.peer_principal_filter_state_key;
    let Some(raw) = &found.principal else {
        return Identification::NoPrincipal {
            identity: "(no HBONE peer)".to_owned(),
            reason: format!(
                "no filter state {principal_key:?}: the connection did not come through the \
                 waypoint's HBONE termination"
            ),
        };
    };
    let Ok(joined) = std::str::from_utf8(raw) else {
        return Identification::NoPrincipal {
            identity: "(unreadable HBONE peer)".to_owned(),
            reason: format!("filter state {principal_key:?} is not UTF-8"),
        };
    };
    let tunnel_peer = PeerIdentity::from_joined_uri_sans(joined);
    let peer = match &keys.peer_certificate_filter_state_key {
        None => tunnel_peer,
        Some(cert_key) => {
            let no_principal = |reason: String| Identification::NoPrincipal {
                identity: describe(&tunnel_peer),
                reason,
            };
            let Some(encoded) = &found.certificate else {
                return no_principal(format!(
                    "no filter state {cert_key:?}: the set_filter_state in the waypoint's \
                     HBONE listener did not run"
                ));
            };
            let certificate = match PeerIdentity::from_url_encoded_pem(encoded) {
                Ok(certificate) => certificate,
                Err(e) => return no_principal(format!("filter state {cert_key:?}: {e}")),
            };
            // Compared as Envoy joined them, not split: a SAN containing ',' must match
            // its own rendering, and the certificate then says which SANs there are.
            if !certificate.joins_to(joined) {
                return no_principal(format!(
                    "the certificate in filter state {cert_key:?} (URI SANs {:?}) is not the \
                     HBONE peer's ({principal_key:?}: {joined:?})",
                    certificate.uri_sans.join(",")
                ));
            }
            certificate
        }
    };
    map(mapper, &peer)
}

/// The principal the mapping rules give the peer, named in logs by [`describe`].
fn map(mapper: &PrincipalMapper, peer: &PeerIdentity) -> Identification {
    let identity = describe(peer);
    match mapper.map(peer) {
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
