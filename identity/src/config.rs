//! The `identity` section of the filter's JSON configuration.

use crate::json_path;
use crate::kafka_rules::KafkaRules;
use crate::mapper::{CompiledSource, PrincipalMapper};
use crate::principal::validate_principal;
use crate::spiffe::validate_trust_domain;
use crate::template::Template;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;

pub const DEFAULT_MAX_PRINCIPAL_LENGTH: usize = 255;
/// Kafka principals travel in a SASL/OAUTHBEARER token; keep them modest.
pub const MAX_MAX_PRINCIPAL_LENGTH: usize = 4096;

/// Where a principal can come from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Spiffe,
    Subject,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Spiffe => "spiffe",
            SourceKind::Subject => "subject",
        }
    }
}

/// `identity`: how a peer certificate becomes a Kafka principal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an object")]
pub struct IdentityConfig {
    pub sources: Vec<SourceKind>,
    pub spiffe: SpiffeConfig,
    pub subject: SubjectConfig,
    pub fallback_principal: Option<String>,
    pub max_principal_length: usize,
}

/// `identity.spiffe`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an object")]
pub struct SpiffeConfig {
    pub trust_domains: Vec<String>,
    pub template: String,
}

/// `identity.subject`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an object")]
pub struct SubjectConfig {
    /// Kafka's `ssl.principal.mapping.rules`.
    pub rules: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            sources: vec![SourceKind::Spiffe],
            spiffe: SpiffeConfig::default(),
            subject: SubjectConfig::default(),
            fallback_principal: None,
            max_principal_length: DEFAULT_MAX_PRINCIPAL_LENGTH,
        }
    }
}

impl Default for SpiffeConfig {
    fn default() -> Self {
        SpiffeConfig {
            trust_domains: vec!["cluster.local".to_string()],
            template: "{spiffe_id}".to_string(),
        }
    }
}

impl Default for SubjectConfig {
    fn default() -> Self {
        SubjectConfig {
            rules: "DEFAULT".to_string(),
        }
    }
}

/// A refused configuration: the field and the reason, on one line. The filter's own
/// configuration errors have this shape too (it is the same type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path, e.g. `identity.spiffe.template`.
    pub field: String,
    /// What is wrong with it, for a human.
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Parses JSON text into `T`, naming the field of any error by its path: the `identity`
/// object and the filter's whole configuration go through this one parser, so an error
/// reads the same wherever the field sits (`identity.spiffe.trust_domains[1]: invalid
/// type...`, `signing.issuer: missing field`). The path is read from the text up to the
/// position serde_json reports ([`json_path`]). `section` is the path of the text inside the
/// filter's configuration (`Some("identity")`), `None` for the whole configuration; an
/// error that belongs to no field (not JSON, trailing characters) is named `section`, or
/// `configuration` for the whole.
pub fn from_json_naming_fields<T: DeserializeOwned>(
    json: &str,
    section: Option<&str>,
) -> Result<T, ConfigError> {
    let whole = section.unwrap_or("configuration");
    // serde's derived structs also take a JSON array, field by field in declaration order;
    // a configuration is an object.
    if json.bytes().find(|b| !b.is_ascii_whitespace()) != Some(b'{') {
        return Err(ConfigError::new(whole, "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = T::deserialize(&mut deserializer).map_err(|e| {
        // Syntax errors belong to the text, not to a field.
        if !e.is_data() {
            return ConfigError::new(whole, e);
        }
        let message = e.to_string();
        let variant = message.starts_with("unknown variant");
        let mut path = json_path::offset_of(json, e.line(), e.column())
            .map(|consumed| json_path::path_at(json, consumed, variant))
            .unwrap_or_default();
        // serde reports a missing field at the end of the object that lacks it, in words
        // only; name the field itself, as every other error does.
        let reason = match missing_field(&message) {
            Some(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                "missing field".to_owned()
            }
            None => message,
        };
        let field = match (path.is_empty(), section) {
            (true, _) => whole.to_owned(),
            (false, Some(section)) => format!("{section}.{path}"),
            (false, None) => path,
        };
        ConfigError::new(field, reason)
    })?;
    deserializer.end().map_err(|e| ConfigError::new(whole, e))?;
    Ok(value)
}

/// The field named by serde's `missing field `name`` message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.get(..rest.find('`')?)
}

impl IdentityConfig {
    /// The fields of the `identity` object, none of them a field of the filter's whole
    /// configuration: `kafka-identity explain --config` tells the two apart by them.
    pub const FIELDS: &'static [&'static str] = &[
        "sources",
        "spiffe",
        "subject",
        "fallback_principal",
        "max_principal_length",
    ];

    /// Parses the JSON text of the `identity` object.
    pub fn from_json_str(json: &str) -> Result<IdentityConfig, ConfigError> {
        from_json_naming_fields(json, Some("identity"))
    }

    /// Parses and compiles the JSON text of the `identity` object.
    pub fn compile_json(json: &str) -> Result<PrincipalMapper, ConfigError> {
        IdentityConfig::from_json_str(json)?.compile()
    }

    /// Checks everything and compiles templates and rules.
    pub fn compile(self) -> Result<PrincipalMapper, ConfigError> {
        let max = self.max_principal_length;
        if max == 0 || max > MAX_MAX_PRINCIPAL_LENGTH {
            return Err(ConfigError::new(
                "identity.max_principal_length",
                format!("must be between 1 and {MAX_MAX_PRINCIPAL_LENGTH}, got {max}"),
            ));
        }
        if self.sources.is_empty() {
            return Err(ConfigError::new(
                "identity.sources",
                "must name at least one source: \"spiffe\", \"subject\"",
            ));
        }
        // Both sections are checked even when unused, so a typo is caught before it is
        // switched on.
        let spiffe = compile_spiffe(&self.spiffe)?;
        let subject = compile_subject(&self.subject)?;
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, kind) in self.sources.iter().enumerate() {
            if self
                .sources
                .get(..i)
                .is_some_and(|seen| seen.contains(kind))
            {
                return Err(ConfigError::new(
                    format!("identity.sources[{i}]"),
                    format!("\"{}\" is listed twice", kind.as_str()),
                ));
            }
            sources.push(match kind {
                SourceKind::Spiffe => spiffe.clone(),
                SourceKind::Subject => subject.clone(),
            });
        }
        if let Some(fallback) = &self.fallback_principal {
            validate_principal(fallback, max)
                .map_err(|reason| ConfigError::new("identity.fallback_principal", reason))?;
        }
        Ok(PrincipalMapper::new(sources, self.fallback_principal, max))
    }
}

fn compile_spiffe(config: &SpiffeConfig) -> Result<CompiledSource, ConfigError> {
    if config.trust_domains.is_empty() {
        return Err(ConfigError::new(
            "identity.spiffe.trust_domains",
            "must list at least one trust domain",
        ));
    }
    for (i, domain) in config.trust_domains.iter().enumerate() {
        validate_trust_domain(domain).map_err(|reason| {
            ConfigError::new(
                format!("identity.spiffe.trust_domains[{i}]"),
                format!("{domain:?} is not a valid trust domain: {reason}"),
            )
        })?;
    }
    let template = Template::parse(&config.template)
        .map_err(|reason| ConfigError::new("identity.spiffe.template", reason))?;
    Ok(CompiledSource::Spiffe {
        trust_domains: config.trust_domains.clone(),
        template,
    })
}

fn compile_subject(config: &SubjectConfig) -> Result<CompiledSource, ConfigError> {
    let rules = KafkaRules::parse(&config.rules)
        .map_err(|e| ConfigError::new("identity.subject.rules", e))?;
    if rules.is_empty() {
        return Err(ConfigError::new(
            "identity.subject.rules",
            "no rules (Kafka would reject every certificate); use \"DEFAULT\" for the DN itself",
        ));
    }
    Ok(CompiledSource::Subject { rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        IdentityConfig::compile_json(json).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = IdentityConfig::from_json_str("{}").unwrap();
        assert_eq!(config, IdentityConfig::default());
        assert_eq!(config.sources, vec![SourceKind::Spiffe]);
        assert_eq!(config.spiffe.trust_domains, vec!["cluster.local"]);
        assert!(config.compile().is_ok());
    }

    #[test]
    fn fields_are_the_ones_serde_knows() {
        // serde lists every field it accepts when it refuses an unknown one.
        let listed = error(r#"{"?": 1}"#);
        let expected = IdentityConfig::FIELDS
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            listed.contains(&format!("expected one of {expected} at")),
            "{listed}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(error(r#"{"bogus": 1}"#).starts_with("identity.bogus: unknown field `bogus`"));
        assert!(error(r#"{"spiffe": {"x": 1}}"#).starts_with(
            "identity.spiffe.x: unknown field `x`, expected `trust_domains` or `template`"
        ));
        assert!(error(r#"{"max_principal_length": "x"}"#)
            .starts_with("identity.max_principal_length: invalid type: string \"x\""));
        assert!(error(r#"{"spiffe": {"trust_domains": ["a", 3]}}"#)
            .starts_with("identity.spiffe.trust_domains[1]: invalid type"));
        assert!(error("{} x").starts_with("identity: trailing characters"));
        assert_eq!(error(r#"["subject"]"#), "identity: must be a JSON object");
        assert!(error(r#"{"spiffe": 3}"#)
            .starts_with("identity.spiffe: invalid type: integer `3`, expected an object"));
        assert!(error(r#"{"subject": {"rule": "DEFAULT"}}"#)
            .starts_with("identity.subject.rule: unknown field `rule`, expected `rules`"));
        assert_eq!(
            error(r#"{"spiffe": {"template": "{foo}"}}"#),
            "identity.spiffe.template: unknown placeholder {foo}; allowed: {spiffe_id}, {trust_domain}, {namespace}, {service_account}, {path}"
        );
        assert_eq!(
            error(r#"{"spiffe": {"trust_domains": []}}"#),
            "identity.spiffe.trust_domains: must list at least one trust domain"
        );
        assert!(error(r#"{"spiffe": {"trust_domains": ["a", "B"]}}"#)
            .starts_with("identity.spiffe.trust_domains[1]: \"B\""));
        assert!(
            error(r#"{"sources": ["subject"], "subject": {"rules": "RULE:(/x/"}}"#)
                .starts_with("identity.subject.rules: rule \"RULE:(/x/\": pattern \"(\"")
        );
        assert!(
            error(r#"{"sources": ["subject"], "subject": {"rules": "RULE:(a)\\1/x/"}}"#)
                .contains("backreference not supported")
        );
        assert!(
            error(r#"{"sources": ["subject"], "subject": {"rules": "bogus"}}"#)
                .starts_with("identity.subject.rules: rule \"bogus\": invalid rule")
        );
        assert!(error(r#"{"sources": []}"#).starts_with("identity.sources: must name"));
        assert!(error(r#"{"sources": ["spiffe", "spiffe"]}"#).starts_with("identity.sources[1]"));
        assert!(error(r#"{"sources": ["ldap"]}"#).starts_with(
            "identity.sources[0]: unknown variant `ldap`, expected `spiffe` or `subject`"
        ));
        assert!(error(r#"{"fallback_principal": ""}"#).starts_with("identity.fallback_principal: "));
        assert!(
            error(r#"{"max_principal_length": 0}"#).starts_with("identity.max_principal_length")
        );
        // Unused sections are checked too.
        assert!(IdentityConfig::compile_json(r#"{"subject": {"rules": "bogus"}}"#).is_err());
    }
}
