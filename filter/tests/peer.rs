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
