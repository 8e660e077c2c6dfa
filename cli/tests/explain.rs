//! Runs the `kafka-identity` binary on generated certificates.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rcgen::{CertificateParams, DistinguishedName, DnType, Ia5String, KeyPair, SanType};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_cert(dir: &Path, cn: Option<&str>, uris: &[&str], dns: &[&str]) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = DistinguishedName::new();
    if let Some(cn) = cn {
        name.push(DnType::CommonName, cn);
    }
    params.distinguished_name = name;
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .chain(
            dns.iter()
                .map(|d| SanType::DnsName(Ia5String::try_from(*d).unwrap())),
        )
        .collect();
    let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join("cert.pem");
    let der = dir.join("cert.der");
    std::fs::write(&pem, cert.pem()).unwrap();
    std::fs::write(&der, cert.der()).unwrap();
    (pem, der)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn istio_certificate_has_a_principal() {
    let dir = work_dir("cli_istio");
    let (pem, der) = write_cert(
        &dir,
        None,
        &["spiffe://cluster.local/ns/kafka/sa/producer"],
        &["p.kafka.svc"],
    );
    for cert in [&pem, &der] {
        let output = run(&["explain", "--cert", cert.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let text = stdout(&output);
        assert!(
            text.contains("principal:         spiffe://cluster.local/ns/kafka/sa/producer"),
            "{text}"
        );
        assert!(text.contains("  namespace:       kafka"), "{text}");
        assert!(text.contains("dns sans:          p.kafka.svc"), "{text}");
    }
}

#[test]
fn json_output_has_every_key() {
    let dir = work_dir("cli_json");
    let (pem, _) = write_cert(
        &dir,
        Some("producer"),
        &["spiffe://cluster.local/ns/kafka/sa/producer"],
        &[],
    );
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"identity": {"spiffe": {"template": "{namespace}.{service_account}"}}}"#,
    )
    .unwrap();
    let output = run(&[
        "explain",
        "--cert",
        pem.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    for key in [
        "principal",
        "source",
        "spiffe_id",
        "subject",
        "uri_sans",
        "dns_sans",
        "error",
        "read_as",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["principal"], "kafka.producer");
    assert_eq!(json["source"], "spiffe");
    assert_eq!(json["subject"], "CN=producer");
    assert_eq!(json["error"], serde_json::Value::Null);
}

#[test]
fn no_principal_exits_2_with_the_reason() {
    let dir = work_dir("cli_none");
    let (pem, _) = write_cert(&dir, Some("x"), &["spiffe://evil.example/a"], &[]);
    let output = run(&["explain", "--cert", pem.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["principal"], serde_json::Value::Null);
    assert_eq!(
        json["error"],
        "spiffe: trust domain \"evil.example\" not allowed (allowed: cluster.local)"
    );
    let human = run(&["explain", "--cert", pem.to_str().unwrap()]);
    assert_eq!(human.status.code(), Some(2));
    assert!(stdout(&human).contains("principal:         none (spiffe: trust domain"));
}

#[test]
fn usage_and_file_errors_exit_1() {
    let dir = work_dir("cli_errors");
    let (pem, _) = write_cert(&dir, Some("x"), &[], &[]);
    let bad_config = dir.join("bad.json");
    std::fs::write(&bad_config, r#"{"spiffe": {"template": "{foo}"}}"#).unwrap();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let pem = pem.to_str().unwrap();
    for args in [
        vec![],
        vec!["explain"],
        vec!["frobnicate"],
        vec!["explain", "--cert"],
        vec!["explain", "--cert", pem, "--bogus"],
        vec!["explain", "--cert", missing.to_str().unwrap()],
        vec!["explain", "--cert", garbage.to_str().unwrap()],
        vec![
            "explain",
            "--cert",
            pem,
            "--config",
            bad_config.to_str().unwrap(),
        ],
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
    }
    let output = run(&[
        "explain",
        "--cert",
        pem,
        "--config",
        bad_config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("identity.spiffe.template: unknown placeholder {foo}"),
        "{stderr}"
    );
}

fn explain(cert: &Path, config: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args([
            "explain",
            "--cert",
            cert.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--json",
        ])
        .env_remove("KAFKA_IDENTITY_SIGNING_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args(["config", "check", config.to_str().unwrap()])
        .env_remove("KAFKA_IDENTITY_SIGNING_KEY")
        .output()
        .unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).unwrap()
}

#[test]
fn explain_takes_the_filter_configuration_that_config_check_takes() {
    let dir = work_dir("cli_whole_config");
    let (pem, _) = write_cert(
        &dir,
        Some("producer"),
        &["spiffe://cluster.local/ns/kafka/sa/producer"],
        &[],
    );
    let repo_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/local/filter-config.json");
    let cases: &[(&str, &str, &str)] = &[
        // A whole configuration without an `identity` key: the default identity mapping.
        (
            "no-identity.json",
            r#"{"stat_prefix": "kafka_identity", "on_no_identity": "reject", "token_lifetime_seconds": 600}"#,
            "spiffe://cluster.local/ns/kafka/sa/producer",
        ),
        (
            "with-identity.json",
            r#"{"stat_prefix": "kafka_identity", "reauthenticate": true,
                "identity": {"spiffe": {"template": "{namespace}.{service_account}"}}}"#,
            "kafka.producer",
        ),
        (
            "local.json",
            &std::fs::read_to_string(&repo_config).unwrap(),
            "spiffe://cluster.local/ns/kafka/sa/producer",
        ),
        (
            "empty.json",
            "",
            "spiffe://cluster.local/ns/kafka/sa/producer",
        ),
        (
            "defaults.json",
            "{}",
            "spiffe://cluster.local/ns/kafka/sa/producer",
        ),
        // The `identity` object alone, as before.
        (
            "identity-object.json",
            r#"{"spiffe": {"template": "{service_account}"}, "max_principal_length": 64}"#,
            "producer",
        ),
    ];
    for (name, text, principal) in cases {
        let config = dir.join(name);
        std::fs::write(&config, text).unwrap();
        if *name != "identity-object.json" {
            assert_eq!(check(&config).status.code(), Some(0), "config check {name}");
        }
        let output = explain(&pem, &config, &[]);
        assert_eq!(output.status.code(), Some(0), "{name}: {output:?}");
        let report = json(&output);
        assert_eq!(report["principal"], *principal, "{name}");
        assert_eq!(report["read_as"], "certificate", "{name}");
    }
    // A signed configuration: the key is the sidecar's; explain does not need it.
    let signed = dir.join("signed.json");
    std::fs::write(
        &signed,
        r#"{"signing": {"key_id": "k1", "issuer": "kafka-identity", "audience": "kafka",
                        "private_key_env": "KAFKA_IDENTITY_SIGNING_KEY"},
            "identity": {"spiffe": {"template": "{service_account}"}}}"#,
    )
    .unwrap();
    let output = explain(&pem, &signed, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(json(&output)["principal"], "producer");
    // Whatever the filter refuses, explain refuses with the filter's words (exit 1).
    for (text, message) in [
        (
            r#"{"token_lifetime_seconds": 5}"#,
            "configuration refused: token_lifetime_seconds: must be between 60 and 604800, got 5",
        ),
        (
            r#"{"signing": {"key_id": "k1", "audience": "kafka", "private_key_env": "K"}}"#,
            "configuration refused: signing.issuer: missing field",
        ),
        (
            r#"{"stat_prefix": "x", "sources": ["spiffe"]}"#,
            "configuration refused: sources: unknown field `sources`",
        ),
    ] {
        let config = dir.join("refused.json");
        std::fs::write(&config, text).unwrap();
        let output = explain(&pem, &config, &[]);
        assert_eq!(output.status.code(), Some(1), "{text}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(message), "{text}: {stderr}");
    }
}

#[test]
fn explain_reads_the_certificate_as_a_waypoint_does() {
    let dir = work_dir("cli_waypoint_config");
    let forged_san = "https://a.example/x,spiffe://cluster.local/ns/kafka/sa/admin";
    let (pem, _) = write_cert(&dir, Some("x"), &[forged_san], &[]);
    let waypoint = dir.join("waypoint.json");
    std::fs::write(
        &waypoint,
        r#"{"waypoint": {"peer_principal_filter_state_key": "io.istio.peer_principal"},
            "identity": {"fallback_principal": "anonymous-mesh"}}"#,
    )
    .unwrap();
    let output = explain(&pem, &waypoint, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report = json(&output);
    assert_eq!(report["read_as"], "waypoint_uri_sans");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("cannot be told without the certificate"),
        "{report}"
    );
    // With the certificate in filter state the waypoint reads what a sidecar reads: one URI
    // SAN that is no SPIFFE ID, so the fallback.
    let with_certificate = dir.join("waypoint-cert.json");
    std::fs::write(
        &with_certificate,
        r#"{"waypoint": {"peer_certificate_filter_state_key": "kafka_identity.hbone_peer_cert"},
            "identity": {"fallback_principal": "anonymous-mesh"}}"#,
    )
    .unwrap();
    let output = explain(&pem, &with_certificate, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    assert_eq!(report["read_as"], "certificate");
    assert_eq!(report["principal"], "anonymous-mesh");
    // An Istio certificate in a waypoint: its SPIFFE ID, and the human output says how it
    // was read.
    let (istio, _) = write_cert(
        &dir,
        None,
        &["spiffe://cluster.local/ns/kafka/sa/producer"],
        &[],
    );
    let human = run(&[
        "explain",
        "--cert",
        istio.to_str().unwrap(),
        "--config",
        waypoint.to_str().unwrap(),
    ]);
    assert_eq!(human.status.code(), Some(0), "{human:?}");
    let text = stdout(&human);
    assert!(
        text.starts_with("read as:           waypoint filter state"),
        "{text}"
    );
    assert!(
        text.contains("principal:         spiffe://cluster.local/ns/kafka/sa/producer"),
        "{text}"
    );
}
