#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
//! Each way Envoy can hand over the peer, with certificates made here.

use kafka_identity_filter::config;
use kafka_identity_filter::peer::{identify, PeerProperties};
use kafka_identity_filter::session::Identification;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

fn workload_pem(spiffe: &str) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

fn mapper(json: &str) -> kafka_identity_core::PrincipalMapper {
    config::parse(json.as_bytes()).unwrap().mapper
}

fn url_encode(text: &str) -> Vec<u8> {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out.into_bytes()
}

const PRODUCER: &str = "spiffe://cluster.local/ns/apps/sa/producer";

#[test]
fn pem_property_gives_the_spiffe_principal() {
    let props = PeerProperties {
        mtls: true,
        certificate_pem: Some(workload_pem(PRODUCER).into_bytes()),
        ..Default::default()
    };
    assert_eq!(
        identify(&mapper("{}"), &props),
        Identification::Principal {
            identity: PRODUCER.into(),
            principal: PRODUCER.into()
        }
    );
}

#[test]
fn url_encoded_filter_state_pem_is_decoded() {
    let props = PeerProperties {
        mtls: true,
        filter_state_pem: Some(url_encode(&workload_pem(PRODUCER))),
        ..Default::default()
    };
    let m = mapper(r#"{"identity": {"spiffe": {"template": "{namespace}.{service_account}"}}}"#);
    assert_eq!(
        identify(&m, &props),
        Identification::Principal {
            identity: PRODUCER.into(),
            principal: "apps.producer".into()
        }
    );
}

#[test]
fn envoy_strings_are_the_fallback() {
    let props = PeerProperties {
        mtls: true,
        uri_san: Some(PRODUCER.into()),
        subject: Some(String::new()),
        ..Default::default()
    };
    assert!(
        matches!(identify(&mapper("{}"), &props), Identification::Principal { principal, .. } if principal == PRODUCER)
    );
}

#[test]
fn every_uri_san_from_the_native_tls_callbacks_is_seen() {
    // The native module gets all URI SANs: one SPIFFE ID maps, two are refused as from the
    // certificate itself, where the Wasm host's first-SAN-only string would have mapped.
    let one = PeerProperties {
        mtls: true,
        uri_sans: Some(vec!["https://example.com/x".into(), PRODUCER.into()]),
        subject: Some("CN=producer,O=apps".into()),
        ..Default::default()
    };
    assert!(
        matches!(identify(&mapper("{}"), &one), Identification::Principal { principal, .. } if principal == PRODUCER)
    );
    let two = PeerProperties {
        mtls: true,
        uri_sans: Some(vec![
            PRODUCER.into(),
            "spiffe://cluster.local/ns/apps/sa/admin".into(),
        ]),
        // Set too: `uri_sans` wins over the first-SAN string when the host has both.
        uri_san: Some(PRODUCER.into()),
        ..Default::default()
    };
    assert!(
        matches!(
            identify(&mapper("{}"), &two),
            Identification::NoPrincipal { .. }
        ),
        "{:?}",
        identify(&mapper("{}"), &two)
    );
}

#[test]
fn foreign_trust_domain_and_missing_mtls_give_no_principal() {
    let evil = "spiffe://evil.example/ns/apps/sa/producer";
    let props = PeerProperties {
        mtls: true,
        certificate_pem: Some(workload_pem(evil).into_bytes()),
        ..Default::default()
    };
    match identify(&mapper("{}"), &props) {
        Identification::NoPrincipal { identity, reason } => {
            assert_eq!(identity, evil);
            assert!(reason.contains("evil.example"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        identify(&mapper("{}"), &PeerProperties::default()),
        Identification::NoMtls
    );
}

#[test]
fn garbage_certificate_is_no_principal_not_a_panic() {
    let props = PeerProperties {
        mtls: true,
        certificate_pem: Some(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        ..Default::default()
    };
    assert!(matches!(
        identify(&mapper("{}"), &props),
        Identification::NoPrincipal { .. }
    ));
}

// ---- ambient waypoint: the HBONE peer from filter state ----------------------------------

use kafka_identity_filter::config::WaypointPeer;
use kafka_identity_filter::peer::{identify_hbone_peer, HbonePeer};
use kafka_identity_filter::session::{NoIdentityPolicy, RefusalKind, Session, Start};

const CERT_KEY: &str = "kafka_identity.hbone_peer_cert";

fn waypoint(json: &str) -> (kafka_identity_core::PrincipalMapper, WaypointPeer) {
    let c = config::parse(json.as_bytes()).unwrap();
    (c.mapper, c.waypoint.expect("waypoint mode"))
}

fn hbone(principal: &str) -> HbonePeer {
    HbonePeer {
        principal: Some(principal.as_bytes().to_vec()),
        certificate: None,
    }
}

fn workload_pem_with_subject(spiffe: Option<&str>, cn: &str) -> String {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "acme");
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = spiffe
        .map(|s| vec![SanType::URI(s.try_into().unwrap())])
        .unwrap_or_default();
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

fn reason(id: Identification) -> String {
    match id {
        Identification::NoPrincipal { reason, .. } => reason,
        other => panic!("expected no principal, got {other:?}"),
    }
}

#[test]
fn the_hbone_peer_principal_is_mapped_like_a_certificates_spiffe_id() {
    let (m, keys) = waypoint(r#"{"waypoint": {}}"#);
    assert_eq!(
        identify_hbone_peer(&m, &keys, &hbone(PRODUCER)),
        Identification::Principal {
            identity: PRODUCER.into(),
            principal: PRODUCER.into()
        }
    );
    let (m, keys) = waypoint(
        r#"{"waypoint": {}, "identity": {"spiffe": {"template": "{namespace}.{service_account}"}}}"#,
    );
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &hbone(PRODUCER)),
        Identification::Principal { principal, .. } if principal == "apps.producer"
    ));
    // Other URI SANs next to the SPIFFE ID, as %DOWNSTREAM_PEER_URI_SAN% joins them, cannot
    // be told from one URI SAN containing ',' (no SPIFFE ID): refused without the certificate
    // (a_comma_in_a_uri_san_cannot_forge_a_spiffe_id_in_a_waypoint).
    let joined = format!("https://example.org/x,{PRODUCER}");
    assert!(reason(identify_hbone_peer(&m, &keys, &hbone(&joined)))
        .contains("cannot be told without the certificate"));
}

fn certificate_with_uris(uris: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// Envoy's `%DOWNSTREAM_PEER_URI_SAN%`: the URI SANs joined by ',', '-' for none.
fn joined_uri_sans(uris: &[&str]) -> String {
    if uris.is_empty() {
        "-".to_owned()
    } else {
        uris.join(",")
    }
}

#[test]
fn a_comma_in_a_uri_san_cannot_forge_a_spiffe_id_in_a_waypoint() {
    const ADMIN: &str = "spiffe://cluster.local/ns/kafka/sa/admin";
    let forged_san = format!("https://a.example/x,{ADMIN}");
    let forged = certificate_with_uris(&[&forged_san]);
    let fallback = r#""identity": {"fallback_principal": "anonymous-mesh"}"#;
    // A sidecar reads the certificate: one URI SAN, no SPIFFE ID, so the fallback.
    let sidecar = mapper(&format!("{{{fallback}}}"));
    let props = PeerProperties {
        mtls: true,
        certificate_pem: Some(forged.clone().into_bytes()),
        ..Default::default()
    };
    assert!(matches!(
        identify(&sidecar, &props),
        Identification::Principal { principal, .. } if principal == "anonymous-mesh"
    ));
    // A waypoint with the joined SANs only: never admin, and no fallback either (it cannot
    // tell that there is no SPIFFE ID).
    let (m, keys) = waypoint(&format!(r#"{{"waypoint": {{}}, {fallback}}}"#));
    let joined = joined_uri_sans(&[&forged_san]);
    assert_eq!(joined, forged_san);
    let why = reason(identify_hbone_peer(&m, &keys, &hbone(&joined)));
    assert!(
        why.contains("cannot be told without the certificate"),
        "{why}"
    );
    // A waypoint with the certificate agrees with the sidecar.
    let (m, keys) = waypoint(&format!(
        r#"{{"waypoint": {{"peer_certificate_filter_state_key": "{CERT_KEY}"}}, {fallback}}}"#
    ));
    let with_certificate = HbonePeer {
        principal: Some(joined.into_bytes()),
        certificate: Some(url_encode(&forged)),
    };
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &with_certificate),
        Identification::Principal { principal, .. } if principal == "anonymous-mesh"
    ));
    // A real SPIFFE ID next to another URI SAN: the certificate settles it.
    let two = ["https://example.org/x", PRODUCER];
    let two_sans = HbonePeer {
        principal: Some(joined_uri_sans(&two).into_bytes()),
        certificate: Some(url_encode(&certificate_with_uris(&two))),
    };
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &two_sans),
        Identification::Principal { principal, .. } if principal == PRODUCER
    ));
    // The certificate must still be the tunnel peer's: the forged one does not match the
    // two-SAN peer's value the other way round either.
    let mismatched = HbonePeer {
        principal: Some(joined_uri_sans(&two).into_bytes()),
        certificate: Some(url_encode(&forged)),
    };
    assert!(reason(identify_hbone_peer(&m, &keys, &mismatched)).contains("is not the HBONE peer's"));
}

#[test]
fn a_refused_hbone_peer_gets_no_principal_and_no_fallback() {
    let (m, keys) =
        waypoint(r#"{"waypoint": {}, "identity": {"fallback_principal": "anonymous-mesh"}}"#);
    let evil = "spiffe://evil.example/ns/apps/sa/producer";
    assert!(reason(identify_hbone_peer(&m, &keys, &hbone(evil))).contains("evil.example"));
    let two = format!("{PRODUCER},spiffe://cluster.local/ns/kafka/sa/kafka");
    assert!(reason(identify_hbone_peer(&m, &keys, &hbone(&two)))
        .contains("cannot be told without the certificate"));
    assert!(reason(identify_hbone_peer(
        &m,
        &keys,
        &hbone("SPIFFE://cluster.local/ns/a/sa/b")
    ))
    .contains("invalid SPIFFE ID"));
    let not_utf8 = HbonePeer {
        principal: Some(vec![0xff, 0xfe]),
        certificate: None,
    };
    assert!(reason(identify_hbone_peer(&m, &keys, &not_utf8)).contains("not UTF-8"));
}

#[test]
fn without_the_filter_state_there_is_no_identity_and_the_policies_apply() {
    let (m, keys) = waypoint(r#"{"waypoint": {"peer_principal_filter_state_key": "k.p"}}"#);
    let id = identify_hbone_peer(&m, &keys, &HbonePeer::default());
    assert!(
        reason(id.clone()).contains("no filter state \"k.p\""),
        "{id:?}"
    );
    // The same policies as a sidecar connection without identity.
    let reject = config::parse(br#"{"waypoint": {}}"#).unwrap();
    let mut s = Session::new(&reject.session);
    let refusal = s
        .start(&reject.session, &id, 1_700_000_000_000)
        .unwrap_err();
    assert_eq!(refusal.kind, RefusalKind::NoIdentity);
    let pass = config::parse(br#"{"waypoint": {}, "on_no_identity": "pass_through"}"#).unwrap();
    assert_eq!(pass.session.on_no_identity, NoIdentityPolicy::PassThrough);
    let mut s = Session::new(&pass.session);
    assert!(matches!(
        s.start(&pass.session, &id, 1_700_000_000_000).unwrap(),
        Start::PassThrough
    ));
}

#[test]
fn the_hbone_peers_certificate_gives_subject_rules_their_dn() {
    let config = format!(
        r#"{{"waypoint": {{"peer_certificate_filter_state_key": "{CERT_KEY}"}},
             "identity": {{"sources": ["spiffe", "subject"],
                          "subject": {{"rules": "RULE:^CN=([a-z]+),O=acme$/dn:$1/"}}}}}}"#
    );
    let (m, keys) = waypoint(&config);
    // No SPIFFE ID (Envoy renders the empty SAN list as "-"): the subject rule decides.
    let plain = HbonePeer {
        principal: Some(b"-".to_vec()),
        certificate: Some(url_encode(&workload_pem_with_subject(None, "billing"))),
    };
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &plain),
        Identification::Principal { principal, .. } if principal == "dn:billing"
    ));
    // With a SPIFFE ID the SPIFFE source comes first, as in a sidecar.
    let both = HbonePeer {
        principal: Some(PRODUCER.as_bytes().to_vec()),
        certificate: Some(url_encode(&workload_pem_with_subject(Some(PRODUCER), "x"))),
    };
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &both),
        Identification::Principal { principal, .. } if principal == PRODUCER
    ));
}

#[test]
fn a_configured_certificate_must_be_there_and_be_the_tunnel_peers() {
    let config =
        format!(r#"{{"waypoint": {{"peer_certificate_filter_state_key": "{CERT_KEY}"}}}}"#);
    let (m, keys) = waypoint(&config);
    // Missing: refused, not mapped from the principal alone.
    assert!(reason(identify_hbone_peer(&m, &keys, &hbone(PRODUCER)))
        .contains("set_filter_state in the waypoint's HBONE listener did not run"));
    // Another workload's certificate than the tunnel's peer.
    let other = HbonePeer {
        principal: Some(PRODUCER.as_bytes().to_vec()),
        certificate: Some(url_encode(&workload_pem(
            "spiffe://cluster.local/ns/apps/sa/consumer",
        ))),
    };
    assert!(reason(identify_hbone_peer(&m, &keys, &other)).contains("is not the HBONE peer's"));
    // Garbage: no principal, no panic.
    let garbage = HbonePeer {
        principal: Some(PRODUCER.as_bytes().to_vec()),
        certificate: Some(b"%ZZnot a certificate".to_vec()),
    };
    assert!(reason(identify_hbone_peer(&m, &keys, &garbage)).contains(CERT_KEY));
    // The right one.
    let right = HbonePeer {
        principal: Some(PRODUCER.as_bytes().to_vec()),
        certificate: Some(url_encode(&workload_pem(PRODUCER))),
    };
    assert!(matches!(
        identify_hbone_peer(&m, &keys, &right),
        Identification::Principal { principal, .. } if principal == PRODUCER
    ));
}
