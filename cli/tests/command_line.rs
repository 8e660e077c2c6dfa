//! The command line as users meet it: --help, --version, completions, usage errors, and
//! `config check` giving exactly the filter's verdict on a configuration.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args(args)
        .env_remove("KAFKA_IDENTITY_SIGNING_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_exits_0_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["help"],
        vec!["explain", "--help"],
        vec!["token", "--help"],
        vec!["keygen", "--help"],
        vec!["config", "--help"],
        vec!["config", "check", "--help"],
        vec!["completions", "--help"],
        vec!["help", "keygen"],
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        let out = text(&output.stdout);
        assert!(out.contains("Usage: kafka-identity"), "{args:?}: {out}");
        assert!(output.stderr.is_empty(), "{args:?}: {output:?}");
    }
    let keygen = text(&run(&["keygen", "--help"]).stdout);
    for option in [
        "--key-id",
        "--algorithm",
        "--key-out",
        "--jwks-out",
        "--append",
    ] {
        assert!(keygen.contains(option), "{keygen}");
    }
    assert!(
        keygen.contains("[possible values: ES256, RS256]"),
        "{keygen}"
    );
}

#[test]
fn version_names_the_package_version() {
    for (args, name) in [
        (vec!["--version"], "kafka-identity"),
        (vec!["-V"], "kafka-identity"),
        (vec!["explain", "--version"], "kafka-identity-explain"),
        (
            vec!["config", "check", "--version"],
            "kafka-identity-config-check",
        ),
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert_eq!(
            text(&output.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kafka-identity"),
        ("fish", "complete -c kafka-identity"),
    ] {
        let output = run(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {output:?}");
        let script = text(&output.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        // the subcommands and their options are in it (fish names options without dashes)
        for word in ["explain", "keygen", "check", "jwks-out"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let output = run(&["completions", "powershell"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(text(&output.stderr).contains("possible values: bash, zsh, fish"));
}

#[test]
fn usage_errors_exit_1_and_say_what_was_expected() {
    for (args, expected) in [
        (vec![], "Usage: kafka-identity"),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["explain"], "--cert <FILE.pem>"),
        (vec!["keygen", "--key-id", "k"], "--key-out <KEY.pem>"),
        (
            vec![
                "keygen",
                "--key-id",
                "k",
                "--key-out",
                "k.pem",
                "--jwks-out",
                "j.json",
                "--algorithm",
                "HS256",
            ],
            "possible values: ES256, RS256",
        ),
        (
            vec!["token", "--cert", "c", "--config", "f", "--now", "soon"],
            "invalid value 'soon' for '--now <UNIX_SECONDS>'",
        ),
        (vec!["config", "check"], "<FILE>"),
        (vec!["config"], "Usage: kafka-identity config"),
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let err = text(&output.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
    }
}

// ---- config check -----------------------------------------------------------------------------

fn check_file(dir: &Path, name: &str, json: &str, env: &[(&str, &str)]) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    run_with_env(&["config", "check", path.to_str().unwrap()], env)
}

fn signing_key_pem() -> String {
    let dir = work_dir("cli_check_key");
    let key = dir.join("key.pem");
    let jwks = dir.join("jwks.json");
    let output = run(&[
        "keygen",
        "--key-id",
        "k1",
        "--key-out",
        key.to_str().unwrap(),
        "--jwks-out",
        jwks.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    std::fs::read_to_string(key).unwrap()
}

#[test]
fn config_check_accepts_what_the_filter_accepts() {
    let dir = work_dir("cli_check_ok");
    let repo_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/local/filter-config.json");
    let key = signing_key_pem();
    let signed = r#"{"identity": {"sources": ["spiffe"]},
        "signing": {"key_id": "k1", "issuer": "kafka-identity", "audience": "kafka",
                    "private_key_env": "KAFKA_IDENTITY_SIGNING_KEY"}}"#;
    for (name, json, env) in [
        ("empty.json", "", vec![]),
        ("defaults.json", "{}", vec![]),
        (
            "local.json",
            &*std::fs::read_to_string(&repo_config).unwrap(),
            vec![],
        ),
        (
            "signed.json",
            signed,
            vec![("KAFKA_IDENTITY_SIGNING_KEY", key.as_str())],
        ),
    ] {
        assert!(
            kafka_identity_filter::config::parse_with_env(json.as_bytes(), &|n| env
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned()))
            .is_ok(),
            "the filter itself refuses {name}"
        );
        let output = check_file(&dir, name, json, &env);
        assert_eq!(output.status.code(), Some(0), "{name}: {output:?}");
        assert!(
            text(&output.stdout).contains(": ok (stat_prefix "),
            "{name}: {output:?}"
        );
    }
    let output = check_file(
        &dir,
        "signed-again.json",
        signed,
        &[("KAFKA_IDENTITY_SIGNING_KEY", key.as_str())],
    );
    assert!(text(&output.stdout).contains("token ES256:k1 for 3600 s"));
    let output = check_file(&dir, "waypoint.json", r#"{"waypoint": {}}"#, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        text(&output.stdout)
            .contains("identity waypoint HBONE peer from filter state \"io.istio.peer_principal\""),
        "{output:?}"
    );
    // standard input
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka-identity"))
        .args(["config", "check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"stat_prefix": "kafka_identity"}"#)
        .unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
}

#[test]
fn config_check_refuses_with_the_filters_message_naming_the_field() {
    let dir = work_dir("cli_check_refused");
    let cases: &[(&str, &str)] = &[
        (r#"{"stat_prefx": "x"}"#, "unknown field `stat_prefx`"),
        (r#"{"stat_prefix": "a b"}"#, "stat_prefix:"),
        (
            r#"{"token_lifetime_seconds": 5}"#,
            "token_lifetime_seconds:",
        ),
        (r#"{"max_frame_bytes": 10}"#, "max_frame_bytes:"),
        (r#"{"on_no_identity": "allow"}"#, "unknown variant `allow`"),
        (r#"{"client_id": ""}"#, "client_id:"),
        (
            r#"{"peer_certificate_filter_state_key": ""}"#,
            "peer_certificate_filter_state_key:",
        ),
        (
            r#"{"peer_certificate_filter_state_key": "kafka_identity.peer_cert "}"#,
            "peer_certificate_filter_state_key: \"kafka_identity.peer_cert \" must be 1 to 256",
        ),
        (
            r#"{"identity": {"spiffe": {"template": "{nope}"}}}"#,
            "identity.spiffe.template",
        ),
        (
            r#"{"identity": {"spiffe": {"trust_domains": []}}}"#,
            "identity.spiffe.trust_domains",
        ),
        (
            r#"{"signing": {"key_id": "", "issuer": "i", "audience": "a", "private_key_env": "K"}}"#,
            "signing.key_id:",
        ),
        (
            r#"{"signing": {"key_id": "k", "issuer": "i", "audience": "a",
                "private_key_env": "KAFKA_IDENTITY_SIGNING_KEY"}}"#,
            "signing.private_key_env:",
        ),
        (
            r#"{"signing": {"key_id": "k", "issuer": "i", "audience": "a",
                "private_key_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}"#,
            "signing.private_key",
        ),
        (
            r#"{"signing": {"key_id": "k", "issuer": "i", "audience": "a"}}"#,
            "signing: set exactly one of private_key_pem and private_key_env",
        ),
        (
            r#"{"waypoint": {}, "peer_certificate_filter_state_key": "k"}"#,
            "peer_certificate_filter_state_key:",
        ),
        (
            r#"{"waypoint": {}, "identity": {"sources": ["spiffe", "subject"]}}"#,
            "identity.sources:",
        ),
        ("not json", "configuration:"),
    ];
    for (i, (json, field)) in cases.iter().enumerate() {
        let name = format!("case{i}.json");
        let output = check_file(&dir, &name, json, &[]);
        assert_eq!(output.status.code(), Some(2), "{json}: {output:?}");
        let err = text(&output.stderr);
        // exactly the filter's own message for this input
        let filter = kafka_identity_filter::config::parse(json.as_bytes())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(filter.contains(field), "{json}: the filter says {filter}");
        let path = dir.join(&name);
        assert_eq!(
            err.trim_end(),
            format!("{}: configuration refused: {filter}", path.display()),
            "{json}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn config_check_names_the_field_of_a_nested_section_by_its_path() {
    let dir = work_dir("cli_check_nested");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"signing": {"key_id": "k", "audience": "kafka", "private_key_env": "K"}}"#,
            "signing.issuer: missing field",
        ),
        (
            r#"{"signing": {"issuer": "i", "audience": "a", "private_key_env": "K"}}"#,
            "signing.key_id: missing field",
        ),
        (
            r#"{"signing": {"algorithm": "HS256", "key_id": "k", "issuer": "i", "audience": "a"}}"#,
            "signing.algorithm: unknown variant `HS256`, expected `ES256` or `RS256` at line 1 column 33",
        ),
        (
            r#"{"waypoint": {"peer_principal_filter_state_key": 3}}"#,
            "waypoint.peer_principal_filter_state_key: invalid type: integer `3`, expected a string at line 1 column 50",
        ),
        (
            r#"{"identity": {"spiffe": {"trust_domains": ["a", 3]}}}"#,
            "identity.spiffe.trust_domains[1]: invalid type: integer `3`, expected a string at line 1 column 49",
        ),
        (
            r#"{"signing": 3}"#,
            "signing: invalid type: integer `3`, expected an object at line 1 column 13",
        ),
        (r#"["x"]"#, "configuration: must be a JSON object"),
    ];
    for (i, (json, message)) in cases.iter().enumerate() {
        let name = format!("nested{i}.json");
        let output = check_file(&dir, &name, json, &[]);
        assert_eq!(output.status.code(), Some(2), "{json}: {output:?}");
        assert_eq!(
            text(&output.stderr).trim_end(),
            format!(
                "{}: configuration refused: {message}",
                dir.join(&name).display()
            ),
            "{json}"
        );
    }
}

#[test]
fn config_check_file_errors_exit_1() {
    let dir = work_dir("cli_check_missing");
    let missing = dir.join("missing.json");
    let output = run(&["config", "check", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(text(&output.stderr).contains("missing.json"));
}
