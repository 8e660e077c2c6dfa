//! Identity fields and principals from generated certificates.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use kafka_identity_core::{IdentityConfig, PeerIdentity, Source, SpiffeProblem};
use rcgen::{DnType, DnValue};
use support::*;

const ISTIO_ID: &str = "spiffe://cluster.local/ns/kafka/sa/producer";

fn istio_cert() -> (Vec<u8>, String) {
    rcgen_cert(vec![], &[ISTIO_ID], &[])
}

#[test]
fn istio_workload_certificate() {
    let (der, pem) = istio_cert();
    let peer = PeerIdentity::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(peer, PeerIdentity::from_der(&der).unwrap());
    assert_eq!(peer.subject.as_deref(), Some(""));
    assert_eq!(peer.uri_sans, vec![ISTIO_ID]);
    let id = peer.spiffe.clone().unwrap();
    assert_eq!(id.trust_domain, "cluster.local");
    assert_eq!(id.namespace.as_deref(), Some("kafka"));
    assert_eq!(id.service_account.as_deref(), Some("producer"));

    let default = IdentityConfig::default().compile().unwrap();
    let principal = default.map(&peer).unwrap();
    assert_eq!(principal.name, ISTIO_ID);
    assert_eq!(principal.source, Source::Spiffe);

    let templated = IdentityConfig::compile_json(
        r#"{"spiffe": {"template": "{namespace}.{service_account}"}}"#,
    )
    .unwrap();
    assert_eq!(templated.map(&peer).unwrap().name, "kafka.producer");

    // The empty subject gives no principal: Kafka would have an empty name.
    let subject_only = IdentityConfig::compile_json(r#"{"sources": ["subject"]}"#).unwrap();
    assert_eq!(
        subject_only.map(&peer).unwrap_err().to_string(),
        "subject: principal is empty"
    );
}

#[test]
fn url_encoded_pem_from_envoy_138() {
    let (_, pem) = istio_cert();
    let encoded = pem.replace(' ', "%20").replace('\n', "%0A");
    let peer = PeerIdentity::from_url_encoded_pem(encoded.as_bytes()).unwrap();
    assert_eq!(peer.uri_sans, vec![ISTIO_ID]);
}

#[test]
fn pem_with_other_blocks_first() {
    let (_, pem) = istio_cert();
    let text = format!("junk\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{pem}");
    assert!(PeerIdentity::from_pem(text.as_bytes()).is_ok());
}

#[test]
fn several_uri_and_dns_sans() {
    let (der, _) = rcgen_cert(
        vec![(DnType::CommonName, "svc".into())],
        &["https://example.com/x", ISTIO_ID, "urn:example:a"],
        &["a.example.com", "b.example.com"],
    );
    let peer = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(
        peer.uri_sans,
        vec!["https://example.com/x", ISTIO_ID, "urn:example:a"]
    );
    assert_eq!(peer.dns_sans, vec!["a.example.com", "b.example.com"]);
    assert_eq!(peer.spiffe.unwrap().id, ISTIO_ID);
}

#[test]
fn two_spiffe_sans_are_rejected() {
    let (der, _) = rcgen_cert(
        vec![(DnType::CommonName, "svc".into())],
        &[ISTIO_ID, "spiffe://cluster.local/ns/kafka/sa/admin"],
        &[],
    );
    let peer = PeerIdentity::from_der(&der).unwrap();
    assert!(matches!(peer.spiffe, Err(SpiffeProblem::Ambiguous(ref ids)) if ids.len() == 2));
    let spiffe_only = IdentityConfig::default().compile().unwrap();
    let why = spiffe_only.map(&peer).unwrap_err().to_string();
    assert!(
        why.starts_with("spiffe: 2 spiffe:// URI SANs, exactly one is allowed"),
        "{why}"
    );

    // Ambiguity is a refusal, not a reason to fall back to the subject.
    let then_subject =
        IdentityConfig::compile_json(r#"{"sources": ["spiffe", "subject"]}"#).unwrap();
    let why = then_subject.map(&peer).unwrap_err().to_string();
    assert!(why.starts_with("spiffe: 2 spiffe:// URI SANs"), "{why}");
}

/// A certificate whose SPIFFE ID the SPIFFE source refuses (foreign trust domain, two
/// SPIFFE SANs, an invalid ID, an ID the template cannot use) is refused outright: its
/// subject DN, or a rule's output, or the fallback would otherwise let an issuer outside
/// the allowed trust domains pick a principal. Only a certificate with no SPIFFE ID at
/// all goes on to the other sources.
#[test]
fn a_refused_spiffe_id_never_falls_through_to_the_subject_or_fallback() {
    let cn = || vec![(DnType::CommonName, DnValue::from("kafka-admin"))];
    let any_config = [
        r#"{"sources": ["spiffe", "subject"]}"#,
        r#"{"sources": ["subject", "spiffe"]}"#,
        r#"{"sources": ["spiffe"], "fallback_principal": "anonymous"}"#,
        r#"{"sources": ["spiffe", "subject"], "spiffe": {"template": "{namespace}.{service_account}"}, "fallback_principal": "anonymous"}"#,
    ];
    let refused = [
        vec!["spiffe://evil.example/ns/kafka/sa/producer"],
        vec![ISTIO_ID, "spiffe://cluster.local/ns/kafka/sa/admin"],
        vec!["spiffe://cluster.local/ns/../sa/x"],
        vec!["SPIFFE://cluster.local/ns/kafka/sa/producer"],
    ];
    for uris in &refused {
        let (der, _) = rcgen_cert(cn(), uris, &[]);
        let peer = PeerIdentity::from_der(&der).unwrap();
        for config in any_config {
            let mapper = IdentityConfig::compile_json(config).unwrap();
            let got = mapper.map(&peer);
            assert!(got.is_err(), "{uris:?} with {config}: {got:?}");
            let why = got.unwrap_err().to_string();
            assert!(why.starts_with("spiffe: "), "{why}");
            assert!(!why.contains("subject:"), "{why}");
        }
    }
    // An Istio-template config cannot use a non-Istio ID: refused, not mapped by DN.
    let (der, _) = rcgen_cert(cn(), &["spiffe://cluster.local/workload/a"], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let mapper = IdentityConfig::compile_json(any_config[3]).unwrap();
    assert!(mapper.map(&peer).is_err());
    // No SPIFFE ID at all: the subject source (or the fallback) applies.
    let (der, _) = rcgen_cert(cn(), &["https://example.com/x"], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let mapper = IdentityConfig::compile_json(any_config[0]).unwrap();
    assert_eq!(mapper.map(&peer).unwrap().name, "CN=kafka-admin");
    let mapper = IdentityConfig::compile_json(any_config[2]).unwrap();
    assert_eq!(mapper.map(&peer).unwrap().source, Source::Fallback);
    // Without the SPIFFE source, SPIFFE SANs play no part.
    let (der, _) = rcgen_cert(cn(), &refused[0], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let subject_only = IdentityConfig::compile_json(r#"{"sources": ["subject"]}"#).unwrap();
    assert_eq!(subject_only.map(&peer).unwrap().name, "CN=kafka-admin");
}

#[test]
fn trust_domain_allow_list_and_fallback() {
    let (der, _) = rcgen_cert(vec![], &["spiffe://evil.example/ns/kafka/sa/producer"], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let strict = IdentityConfig::compile_json(
        r#"{"sources": ["spiffe", "subject"], "subject": {"rules": "RULE:^CN=(.*)$/$1/"}}"#,
    )
    .unwrap();
    assert_eq!(
        strict.map(&peer).unwrap_err().to_string(),
        "spiffe: trust domain \"evil.example\" not allowed (allowed: cluster.local)"
    );
    // The fallback is for certificates without a SPIFFE ID, never for a refused one.
    let fallback = IdentityConfig::compile_json(r#"{"fallback_principal": "anonymous"}"#).unwrap();
    assert!(fallback.map(&peer).is_err());
    let (der, _) = rcgen_cert(vec![], &[], &[]);
    let principal = fallback
        .map(&PeerIdentity::from_der(&der).unwrap())
        .unwrap();
    assert_eq!(
        (principal.name.as_str(), principal.source),
        ("anonymous", Source::Fallback)
    );
}

#[test]
fn invalid_spiffe_id() {
    let (der, _) = rcgen_cert(vec![], &["spiffe://cluster.local/ns/../sa/x"], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let why = IdentityConfig::default()
        .compile()
        .unwrap()
        .map(&peer)
        .unwrap_err();
    assert!(
        why.to_string()
            .contains("must not contain . or .. segments"),
        "{why}"
    );
}

#[test]
fn principal_length_limit() {
    let long = format!("spiffe://cluster.local/{}", "a".repeat(300));
    let (der, _) = rcgen_cert(vec![], &[&long], &[]);
    let peer = PeerIdentity::from_der(&der).unwrap();
    let why = IdentityConfig::default()
        .compile()
        .unwrap()
        .map(&peer)
        .unwrap_err();
    assert!(
        why.to_string().contains("more than the maximum 255"),
        "{why}"
    );
    let roomy = IdentityConfig::compile_json(r#"{"max_principal_length": 1000}"#).unwrap();
    assert!(roomy.map(&peer).is_ok());
}

#[test]
fn dn_rendering_edge_cases() {
    let (der, _) = rcgen_cert(
        vec![
            (
                DnType::CountryName,
                DnValue::PrintableString("US".try_into().unwrap()),
            ),
            (DnType::OrganizationName, "Acme, Inc.".into()),
            (DnType::OrganizationalUnitName, " spaced ".into()),
            (DnType::CommonName, "#a+b=c;<d>\"e\\".into()),
            (
                DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                DnValue::Ia5String("a@b".try_into().unwrap()),
            ),
        ],
        &[],
        &[],
    );
    let peer = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(
        peer.subject.as_deref(),
        Some("1.2.840.113549.1.9.1=#1603614062,CN=\\#a\\+b\\=c\\;\\<d\\>\\\"e\\\\,OU=\\ spaced\\ ,O=Acme\\, Inc.,C=US")
    );
}

#[test]
fn multi_valued_rdn_and_string_types() {
    let subject = name(&[
        &[("2.5.4.10", UTF8, b"acme")],
        &[("2.5.4.11", UTF8, b"b"), ("2.5.4.3", PRINTABLE, b"a")],
        &[("2.5.4.3", BMP, &bmp("x"))],
        &[("2.5.4.3", UNIVERSAL, &universal("u"))],
    ]);
    let peer = PeerIdentity::from_der(&raw_cert(&subject, &[], &[])).unwrap();
    assert_eq!(
        peer.subject.as_deref(),
        Some("CN=#1c0400000075,CN=\\00x,OU=b+CN=a,O=acme")
    );
}
