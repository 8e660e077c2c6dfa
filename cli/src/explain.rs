//! `kafka-identity explain`: shows which Kafka principal a client certificate maps to.

use kafka_identity_core::{IdentityConfig, PeerIdentity, PrincipalMapper};
use kafka_identity_filter::config;
use serde::Serialize;
use std::process::ExitCode;

/// The identity fields of a client certificate and the principal the filter derives.
///
/// --config takes the filter's configuration, the same file `config check` takes (its
/// signing key is not read), or the "identity" object alone; without it the defaults apply.
/// With a waypoint configuration that has no waypoint.peer_certificate_filter_state_key the
/// certificate is read as the waypoint reads it: its URI SANs joined by ",", no subject.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 a principal results, 2 no principal (the reason is \
printed), 1 usage, file or configuration error."
)]
pub struct Args {
    /// Client certificate, PEM or DER.
    #[arg(long, value_name = "FILE.pem")]
    cert: String,
    /// Filter configuration (JSON), as `config check` takes it, or its "identity" object.
    #[arg(long, value_name = "FILE.json")]
    config: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// What explain needs of a configuration.
pub struct Loaded {
    mapper: PrincipalMapper,
    /// A waypoint that reads the client only from `%DOWNSTREAM_PEER_URI_SAN%`.
    uri_sans_only: bool,
}

/// An object whose keys are all `identity` fields (none of them is a field of the whole
/// configuration) is the `identity` object alone; anything else is a whole configuration,
/// checked by the filter's own parser.
fn is_identity_object(text: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => {
            !map.is_empty()
                && map
                    .keys()
                    .all(|key| IdentityConfig::FIELDS.contains(&key.as_str()))
        }
        _ => false,
    }
}

pub fn load_config(path: Option<&str>) -> Result<Loaded, String> {
    let Some(path) = path else {
        let mapper = IdentityConfig::default()
            .compile()
            .map_err(|e| e.to_string())?;
        return Ok(Loaded {
            mapper,
            uri_sans_only: false,
        });
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    if is_identity_object(&text) {
        let mapper = IdentityConfig::compile_json(&text).map_err(|e| format!("{path}: {e}"))?;
        return Ok(Loaded {
            mapper,
            uri_sans_only: false,
        });
    }
    let settings = config::parse_identity(text.as_bytes())
        .map_err(|e| format!("{path}: configuration refused: {e}"))?;
    let uri_sans_only = settings
        .waypoint
        .as_ref()
        .is_some_and(|w| w.peer_certificate_filter_state_key.is_none());
    Ok(Loaded {
        mapper: settings.mapper,
        uri_sans_only,
    })
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
    /// `certificate`, or `waypoint_uri_sans`: as a waypoint without the certificate reads it.
    read_as: &'static str,
}

fn run(args: &Args) -> Result<bool, String> {
    let loaded = load_config(args.config.as_deref())?;
    let mut peer = load_peer(&args.cert)?;
    if loaded.uri_sans_only {
        // What Istio's connect_authority hands the waypoint: %DOWNSTREAM_PEER_URI_SAN%.
        let joined = if peer.uri_sans.is_empty() {
            "-".to_owned()
        } else {
            peer.uri_sans.join(",")
        };
        peer = PeerIdentity::from_joined_uri_sans(&joined);
    }
    let read_as = if loaded.uri_sans_only {
        "waypoint_uri_sans"
    } else {
        "certificate"
    };
    let outcome = loaded.mapper.map(&peer);
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
            read_as,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        if loaded.uri_sans_only {
            println!(
                "{:<19}waypoint filter state: the URI SANs joined by \",\", no subject",
                "read as:"
            );
        }
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
