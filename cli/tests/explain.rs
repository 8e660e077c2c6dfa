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
