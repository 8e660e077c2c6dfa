//! `kafka-identity explain`: shows which Kafka principal a client certificate maps to.

use kafka_identity_core::{IdentityConfig, PeerIdentity, PrincipalMapper};
use serde::Serialize;
use std::process::ExitCode;

/// The identity fields of a client certificate and the principal the filter derives.
///
/// --config takes the filter's "identity" object (or a whole filter configuration with an
/// "identity" key); without it the defaults apply.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 a principal results, 2 no principal (the reason is \
printed), 1 usage or file error."
)]
pub struct Args {
    /// Client certificate, PEM or DER.
    #[arg(long, value_name = "FILE.pem")]
    cert: String,
    /// Filter configuration (JSON) or its "identity" object.
    #[arg(long, value_name = "FILE.json")]
    config: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn load_mapper(path: Option<&str>) -> Result<PrincipalMapper, String> {
    let Some(path) = path else {
        return IdentityConfig::default()
            .compile()
            .map_err(|e| e.to_string());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    // Accept the whole filter config as well as the identity object alone.
    let identity = match value.get("identity") {
        Some(identity) => identity.to_string(),
        None => text,
    };
    IdentityConfig::compile_json(&identity).map_err(|e| format!("{path}: {e}"))
}

pub fn load_peer(path: &str) -> Result<PeerIdentity, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let peer = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        PeerIdentity::from_pem(&bytes)
    } else {
        PeerIdentity::from_der(&bytes)
    };
    peer.map_err(|e| format!("{path}: {e}"))
}

/// `--json` output; field order is the documented one.
#[derive(Serialize)]
struct JsonReport<'a> {
    principal: Option<&'a str>,
    source: Option<&'static str>,
    spiffe_id: Option<&'a str>,
    namespace: Option<&'a str>,
    service_account: Option<&'a str>,
    spiffe_error: Option<String>,
    subject: Option<&'a str>,
    uri_sans: &'a [String],
    dns_sans: &'a [String],
    error: Option<String>,
}

fn run(args: &Args) -> Result<bool, String> {
    let mapper = load_mapper(args.config.as_deref())?;
    let peer = load_peer(&args.cert)?;
    let outcome = mapper.map(&peer);
    if args.json {
        let spiffe = peer.spiffe.as_ref().ok();
        let report = JsonReport {
            principal: outcome.as_ref().ok().map(|p| p.name.as_str()),
            source: outcome.as_ref().ok().map(|p| p.source.as_str()),
            spiffe_id: spiffe.map(|id| id.id.as_str()),
            namespace: spiffe.and_then(|id| id.namespace.as_deref()),
            service_account: spiffe.and_then(|id| id.service_account.as_deref()),
            spiffe_error: peer.spiffe.as_ref().err().map(ToString::to_string),
            subject: peer.subject.as_deref(),
            uri_sans: &peer.uri_sans,
            dns_sans: &peer.dns_sans,
            error: outcome.as_ref().err().map(ToString::to_string),
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", human(&peer, &outcome));
    }
    Ok(outcome.is_ok())
}

fn human(
    peer: &PeerIdentity,
    outcome: &Result<kafka_identity_core::Principal, kafka_identity_core::NoPrincipal>,
) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(", ")
        }
    };
    let mut lines: Vec<(&str, String)> = Vec::new();
    let subject = match peer.subject.as_deref() {
        None => "(none)",
        Some("") => "(empty)",
        Some(subject) => subject,
    };
    lines.push(("subject:", subject.to_string()));
    match &peer.spiffe {
        Ok(id) => {
            lines.push(("spiffe id:", id.id.clone()));
            if let (Some(ns), Some(sa)) = (&id.namespace, &id.service_account) {
                lines.push(("  namespace:", ns.clone()));
                lines.push(("  service account:", sa.clone()));
            }
        }
        Err(problem) => lines.push(("spiffe id:", format!("({problem})"))),
    }
    lines.push(("uri sans:", list(&peer.uri_sans)));
    lines.push(("dns sans:", list(&peer.dns_sans)));
    match outcome {
        Ok(principal) => {
            lines.push(("source:", principal.source.to_string()));
            lines.push(("principal:", principal.name.clone()));
        }
        Err(why) => lines.push(("principal:", format!("none ({why})"))),
    }
    lines
        .into_iter()
        .map(|(label, value)| format!("{label:<19}{value}\n"))
        .collect()
}

pub fn run_command(args: &Args) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(message) => {
            eprintln!("kafka-identity: {message}");
            ExitCode::from(1)
        }
    }
}
