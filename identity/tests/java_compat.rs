//! Runs Kafka's own `SslPrincipalMapper` and Java's `X500Principal` (through
//! `identity/compat/PrincipalOracle.java`) on the same certificates and rules as this
//! crate, and requires identical answers.
//!
//! Needs `java`/`javac` and the kafka-clients jar: `KAFKA_IDENTITY_KAFKA_CLASSPATH`
//! (a Java classpath), else `<workspace>/.tools/kafka/libs/*`. Without them the test
//! fails: a silent pass would hide that compatibility was never checked.
// Test helpers outside #[test] functions may panic too: clippy.toml only covers the latter.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use kafka_identity_core::{ApplyError, KafkaRules, PeerIdentity};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// How this crate is expected to treat a rule set relative to Kafka.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Same principal, same "no rule matched", same refusal.
    Same,
    /// Kafka accepts the rules but they use a construct Rust's regex cannot reproduce
    /// exactly; this crate refuses them at configuration time.
    RefusedUnsupported,
    /// Kafka accepts the rules but throws when one matches (bad replacement); this
    /// crate refuses them at configuration time.
    RefusedKafkaThrows,
}

fn rule_sets() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    vec![
        ("DEFAULT", Same),
        ("", Same),
        ("RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$2/L, DEFAULT", Same),
        ("RULE:^CN=([^,]*).*$/$1/", Same),
        ("RULE:^CN=([^,]*).*$/$1/U", Same),
        ("RULE:^CN=([^,]*).*$/$1/L", Same),
        ("RULE:.*/x/", Same),
        ("RULE:(.*)/<$1>/", Same),
        (r"RULE:^CN=(.*?)\,OU=(.*)$/$2\/$1/", Same),
        ("RULE:^CN=(.*)$/$1@$2@$12@$0/", Same),
        ("RULE:^(?i)cn=([a-z]+).*$/$1/", Same),
        ("RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT", Same),
        ("RULE:^OU=(.*)$/$1/", Same),
        (r"RULE:^CN=(\w+).*$/$1/", Same),
        ("RULE:^CN=(.)(.*)$/$2$1/", Same),
        ("RULE:^CN=(?<name>[^,]*).*$/${name}/", Same),
        (r"RULE:^(.*?)(\+.*)?$/$1/", Same),
        ("RULE:^CN=(.*)$/$1", Same),
        ("RULE:^CN=(.*)$/$1/X", Same),
        (r"RULE:^CN=(.*)$/\$1 $0/", Same),
        (
            "  RULE:^CN=a$/b/ ,, RULE:^CN=(.*?),.*$/$1/  , DEFAULT",
            Same,
        ),
        ("RULE:(?s).*?/-/", Same),
        (r"RULE:^CN=([^\,]+)\,(.*)$/$1/", Same),
        ("RULE:^.*?O=([^,+]*).*$/$1/", Same),
        (r"RULE:^[^,]*?\$.*$/dollar/, DEFAULT", Same),
        (r"RULE:^CN=([\p{L} ]+),.*$/$1/", Same),
        ("RULE:^(.*)$/$1/U", Same),
        ("DEFAULT, RULE:^CN=(.*)$/$1/", Same),
        (
            r"RULE:^CN=\\#(.*)$/hash$1/, RULE:^CN=\Q\#\E.*$/quoted/",
            Same,
        ),
        (
            "RULE:^CN=[^\\x2c]{3,5}(,.*)?$/three-to-five/, DEFAULT",
            Same,
        ),
        ("RULE:^(CN|OU)=([^,]*)(,.*)?$/$2 $3/", Same),
        ("RULE:^.*$/a\\\\b/", Same),
        ("RULE:^CN=([^,]*)(,.*)?$/$1/, garbage", Same),
        ("DEFAULTX", Same),
        ("RULE:^(?i)cn=jos[eé].*$/ci/, DEFAULT", Same),
        (r"RULE:^CN=\d+$/digits/, DEFAULT", Same),
        (r"RULE:^CN=a\sb$/space/, DEFAULT", Same),
        ("RULE:^CN=[a-z&&[^aeiou]]+$/consonants/, DEFAULT", Same),
        (r"RULE:^CN=\p{Lu}.*$/upper/, DEFAULT", Same),
        ("RULE:^CN=(?i)[A-Z]+$/letters/, DEFAULT", Same),
        ("RULE:^CN=(a|ab)(.*)$/$1-$2/, DEFAULT", Same),
        ("RULE:^(.*?)(,.*)?$/$1/", Same),
        ("RULE:^CN=(.*)$/DEFAULT/", Same),
        (
            r"RULE:(?i)^CN=\x{1F600}|.*\0101.*$/emoji-or-A/, DEFAULT",
            Same,
        ),
        ("RULE:^CN=[^,]{1,3}(,.*)?$/short/, DEFAULT", Same),
        ("RULE:^.*(O|C)=([A-Za-z]+)$/$2/, DEFAULT", Same),
        ("RULE:^(?:CN=)?([^,]*)(?:,.*)?$/$1/", Same),
        ("RULE:^CN=(.*)$/$1/", Same),
        ("RULE:(?s)^CN=(.*)$/$1/", Same),
        (r"RULE:^CN=[\u0660-\u0669]+$/arabic/, DEFAULT", Same),
        ("RULE:^CN=a**$/x/, DEFAULT", Same),
        ("RULE:^CN=a{1}{2}$/x/, DEFAULT", Same),
        ("RULE:?a/x/, DEFAULT", Same),
        ("RULE:a|*/x/, DEFAULT", Same),
        ("RULE:()CN=.*/x/, DEFAULT", Same),
        ("RULE:^CN=a{2,1}$/x/, DEFAULT", Same),
        ("RULE:^CN=[b-a]$/x/, DEFAULT", Same),
        ("RULE:^CN=a??b*?.*$/x/, DEFAULT", Same),
        ("RULE:^CN=a*{2}.*$/x/, DEFAULT", Same),
        ("RULE:^CN=.*+$/x/, DEFAULT", RefusedUnsupported),
        ("RULE:^CN=D(?i)*uke.*$/x/, DEFAULT", Same),
        ("RULE:^*CN=.*/x/, DEFAULT", Same),
        ("RULE:^CN=.*$?/x/, DEFAULT", Same),
        ("RULE:^CN=(?i)DUKE(?-i),?.*$/x/, DEFAULT", Same),
        ("RULE:^CN=[^]a]*$/x/, DEFAULT", Same),
        ("RULE:^CN=[]a-c]*$/x/, DEFAULT", Same),
        ("RULE:^CN=\\Qa.b\\E.*$/x/, DEFAULT", Same),
        ("RULE:^CN=[a-]+$/dash/, DEFAULT", Same),
        ("RULE:^CN=(?i:d)uke.*$/idk/, DEFAULT", Same),
        (r"RULE:^CN=(a)\1$/x/, DEFAULT", RefusedUnsupported),
        ("RULE:^CN=(?=a).*$/x/, DEFAULT", RefusedUnsupported),
        (r"RULE:^CN=\bx.*$/x/, DEFAULT", RefusedUnsupported),
        ("RULE:^CN=(.*)$/$x/, DEFAULT", RefusedKafkaThrows),
        (r"RULE:^.*$/$1/, DEFAULT", RefusedKafkaThrows),
    ]
}

/// Subjects as Name DER, in DER order (most general RDN first).
fn subjects() -> Vec<(&'static str, Vec<u8>)> {
    let cn = |tag: u8, value: &[u8]| name(&[&[("2.5.4.3", tag, value)]]);
    vec![
        (
            "org unit cn",
            name(&[
                &[("2.5.4.10", UTF8, b"acme")],
                &[("2.5.4.11", UTF8, b"TEST")],
                &[("2.5.4.3", UTF8, b"producer")],
            ]),
        ),
        ("empty subject", name(&[])),
        ("specials", cn(UTF8, b"a,b+c=d<e>f#g;h\"i\\j")),
        ("leading trailing spaces", cn(UTF8, b"  x y  ")),
        ("only spaces", cn(UTF8, b"   ")),
        ("leading hash", cn(UTF8, b"#hash")),
        ("nul", cn(UTF8, b"a\0b")),
        ("carriage returns", cn(UTF8, b"\rx\r")),
        ("unicode", cn(UTF8, "José Müller 日本 😀".as_bytes())),
        (
            "multi-valued",
            name(&[
                &[("2.5.4.10", UTF8, b"acme")],
                &[("2.5.4.11", UTF8, b"ops"), ("2.5.4.3", UTF8, b"multi")],
            ]),
        ),
        (
            "unknown oid",
            name(&[&[("1.2.3.4", UTF8, b"x")], &[("2.5.4.3", UTF8, b"known")]]),
        ),
        (
            "email and serial",
            name(&[
                &[("2.5.4.5", PRINTABLE, b"1234")],
                &[("1.2.840.113549.1.9.1", IA5, b"a@b.c")],
                &[("2.5.4.3", UTF8, b"svc")],
            ]),
        ),
        ("bmp ascii", cn(BMP, &bmp("ab"))),
        ("bmp latin", cn(BMP, &bmp("é"))),
        ("universal string", cn(UNIVERSAL, &universal("u"))),
        ("teletex latin-1", cn(TELETEX, b"caf\xe9")),
        ("utf8 invalid bytes", cn(UTF8, b"a\xc3\x28b\xf0\x9fz")),
        ("empty value", cn(UTF8, b"")),
        (
            "dc and uid",
            name(&[
                &[("0.9.2342.19200300.100.1.25", IA5, b"com")],
                &[("0.9.2342.19200300.100.1.25", IA5, b"example")],
                &[("0.9.2342.19200300.100.1.1", UTF8, b"jdoe")],
            ]),
        ),
        (
            "street st l c",
            name(&[
                &[("2.5.4.6", PRINTABLE, b"US")],
                &[("2.5.4.8", UTF8, b"MD")],
                &[("2.5.4.7", UTF8, b"Fulton")],
                &[("2.5.4.9", UTF8, b"1 Main St")],
                &[("2.5.4.3", UTF8, b"Duke")],
            ]),
        ),
        ("visible string", cn(VISIBLE, b"vis")),
        ("numeric string", cn(NUMERIC, b"123")),
        ("newlines", cn(UTF8, b"a\nb\n")),
        (
            "o with equals and comma",
            name(&[&[("2.5.4.10", UTF8, b"a=b,c")], &[("2.5.4.3", UTF8, b"x")]]),
        ),
        ("slash backslash dollar", cn(UTF8, b"a/b\\c$1")),
        ("long", cn(UTF8, "n".repeat(200).as_bytes())),
        (
            "duplicate cn",
            name(&[&[("2.5.4.3", UTF8, b"a")], &[("2.5.4.3", UTF8, b"b")]]),
        ),
        ("greek", cn(UTF8, "ΟΔΟΣ".as_bytes())),
        (
            "dotted i and sharp s",
            cn(UTF8, "İstanbul straße".as_bytes()),
        ),
        ("line separator", cn(UTF8, "a\u{2028}b\u{85}c".as_bytes())),
        ("star at", cn(UTF8, b"*@x")),
        ("arabic digits", cn(UTF8, "٣٤".as_bytes())),
        ("nbsp", cn(UTF8, "a\u{a0}b".as_bytes())),
        ("upper accented", cn(UTF8, "JOSÉ".as_bytes())),
        ("ascii digits", cn(UTF8, b"42")),
        ("whitespace", cn(UTF8, b"a\tb")),
        ("cn only", cn(UTF8, b"Duke")),
        (
            "service users",
            name(&[
                &[("2.5.4.6", PRINTABLE, b"US")],
                &[("2.5.4.10", UTF8, b"Org")],
                &[("2.5.4.11", UTF8, b"ServiceUsers")],
                &[("2.5.4.3", UTF8, b"Duke")],
            ]),
        ),
    ]
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn classpath() -> String {
    if let Ok(cp) = std::env::var("KAFKA_IDENTITY_KAFKA_CLASSPATH") {
        if !cp.is_empty() {
            return cp;
        }
    }
    let libs = workspace().join(".tools/kafka/libs");
    let has_clients = std::fs::read_dir(&libs).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka-clients"))
    });
    assert!(
        has_clients,
        "the Java compatibility test needs the kafka-clients jar: set KAFKA_IDENTITY_KAFKA_CLASSPATH \
         (e.g. to a directory's jar via DIR/*) or install Kafka into {} (scripts install it there)",
        libs.display()
    );
    format!("{}/*", libs.display())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Principal(String),
    NoMatch,
    Invalid,
    Throws,
    /// Rust refuses: Java's result would hold a split surrogate pair.
    SplitsSurrogatePair,
}

fn run_java(cases: &Path, work: &Path) -> Vec<(String, Outcome)> {
    let classpath = classpath();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/PrincipalOracle.java");
    let javac = Command::new("javac")
        .args(["-cp", &classpath, "-d"])
        .arg(work)
        .arg(&source)
        .output()
        .expect("javac must be installed for the Java compatibility test");
    assert!(
        javac.status.success(),
        "javac failed (is the kafka-clients jar on {classpath}?):\n{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let java = Command::new("java")
        .arg("-cp")
        .arg(format!("{}:{classpath}", work.display()))
        .arg("PrincipalOracle")
        .arg(cases)
        .output()
        .expect("java must be installed for the Java compatibility test");
    assert!(
        java.status.success(),
        "PrincipalOracle failed:\n{}",
        String::from_utf8_lossy(&java.stderr)
    );
    String::from_utf8(java.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let outcome = match fields[1] {
                "OK" => Outcome::Principal(unhex(fields[2])),
                "NOMATCH" => Outcome::NoMatch,
                "INVALID" => Outcome::Invalid,
                "ERROR" => Outcome::Throws,
                other => panic!("unexpected oracle status {other}"),
            };
            (unhex(fields[0]), outcome)
        })
        .collect()
}

#[test]
fn same_principals_as_kafka_and_java() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java_compat");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let subjects = subjects();
    let rules = rule_sets();
    let mut lines = String::new();
    let mut cases = Vec::new();
    for (i, (label, subject)) in subjects.iter().enumerate() {
        let der = raw_cert(subject, &[], &[]);
        let path = work.join(format!("subject-{i}.der"));
        std::fs::write(&path, &der).unwrap();
        for (rule, expect) in &rules {
            let _ = writeln!(lines, "{}\t{}", path.display(), hex(rule.as_bytes()));
            cases.push((*label, der.clone(), *rule, *expect));
        }
    }
    let case_file = work.join("cases.tsv");
    std::fs::write(&case_file, lines).unwrap();

    let java = run_java(&case_file, &work);
    assert_eq!(java.len(), cases.len(), "oracle answered every case");

    let mut mismatches = Vec::new();
    let mut kafka_throws_seen = std::collections::HashSet::new();
    for ((label, der, rule, expect), (java_dn, java_outcome)) in cases.iter().zip(&java) {
        let rust_dn = PeerIdentity::from_der(der).unwrap().subject.unwrap();
        if &rust_dn != java_dn {
            mismatches.push(format!(
                "[{label}] subject: rust {rust_dn:?} java {java_dn:?}"
            ));
            continue;
        }
        let rust_outcome = match KafkaRules::parse(rule) {
            Err(_) => Outcome::Invalid,
            Ok(parsed) => match parsed.apply(&rust_dn) {
                Ok(name) => Outcome::Principal(name),
                Err(ApplyError::NoMatchingRule) => Outcome::NoMatch,
                Err(ApplyError::SplitsSurrogatePair { .. }) => Outcome::SplitsSurrogatePair,
            },
        };
        let agrees = match expect {
            // Java's lone surrogates come out of its UTF-8 encoder as '?'.
            Expect::Same if rust_outcome == Outcome::SplitsSurrogatePair => {
                matches!(java_outcome, Outcome::Principal(p) if p.contains('?') && !rust_dn.contains('?'))
            }
            Expect::Same => rust_outcome == *java_outcome,
            Expect::RefusedUnsupported => {
                rust_outcome == Outcome::Invalid && *java_outcome != Outcome::Invalid
            }
            Expect::RefusedKafkaThrows => {
                if *java_outcome == Outcome::Throws {
                    kafka_throws_seen.insert(*rule);
                }
                rust_outcome == Outcome::Invalid && *java_outcome != Outcome::Invalid
            }
        };
        if !agrees {
            mismatches.push(format!(
                "[{label}] dn {rust_dn:?} rules {rule:?} ({expect:?}): rust {rust_outcome:?} java {java_outcome:?}"
            ));
        }
    }
    for (rule, expect) in &rules {
        if *expect == Expect::RefusedKafkaThrows {
            assert!(
                kafka_throws_seen.contains(rule),
                "Kafka never threw for {rule:?}"
            );
        }
    }
    println!("{} cases compared with Java", cases.len());
    assert!(cases.len() >= 50);
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from Kafka/Java:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
