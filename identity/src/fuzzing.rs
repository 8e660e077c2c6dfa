//! Entry points shared by the cargo-fuzz targets (`identity/fuzz`) and the corpus replay
//! test, so that every fuzz input is also a regression test. They must never panic.

use crate::config::IdentityConfig;
use crate::java_regex;
use crate::mapper::PrincipalMapper;
use std::sync::OnceLock;

/// Compiled once: recompiling the rules for every input would dominate fuzzing time.
fn mapper() -> Option<&'static PrincipalMapper> {
    static MAPPER: OnceLock<Option<PrincipalMapper>> = OnceLock::new();
    MAPPER
        .get_or_init(|| {
            IdentityConfig::compile_json(
                r#"{"sources": ["spiffe", "subject"],
                    "spiffe": {"template": "{namespace}.{service_account}"},
                    "subject": {"rules": "RULE:^CN=([^,]*).*$/$1/L,DEFAULT"}}"#,
            )
            .ok()
        })
        .as_ref()
}
use crate::kafka_rules::KafkaRules;
use crate::peer::PeerIdentity;

/// Certificate input in every form the filter accepts, then mapped.
pub fn pem(data: &[u8]) {
    let peers = [
        PeerIdentity::from_pem(data),
        PeerIdentity::from_der(data),
        PeerIdentity::from_url_encoded_pem(data),
    ];
    let text = String::from_utf8_lossy(data);
    let (uri, subject) = text.split_once('\n').unwrap_or((&text, ""));
    let degraded = PeerIdentity::from_envoy_strings(Some(uri), Some(subject));
    if let Some(mapper) = mapper() {
        for peer in peers.iter().flatten().chain([&degraded]) {
            let _ = mapper.map(peer).map_err(|e| e.to_string());
        }
    }
}

/// First line: rules (or a JSON config when it starts with `{`); the rest: a DN.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (rules, dn) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = java_regex::translate(rules);
    if rules.starts_with('{') {
        if let Ok(mapper) = IdentityConfig::compile_json(rules) {
            let _ = mapper.map(&PeerIdentity::from_envoy_strings(None, Some(dn)));
        }
        return;
    }
    if let Ok(parsed) = KafkaRules::parse(rules) {
        let _ = parsed.apply(dn);
    }
}
