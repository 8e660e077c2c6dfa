//! Identity: from a peer certificate to the Kafka principal the broker would derive.
//!
//! Plain Rust (no proxy-wasm, no I/O) shared by the Envoy filter and the `kafka-identity`
//! CLI; builds for the host and for `wasm32-unknown-unknown`.
//!
//! ```
//! use kafka_identity_core::{IdentityConfig, PeerIdentity};
//! let mapper = IdentityConfig::compile_json(r#"{"sources": ["spiffe", "subject"]}"#).unwrap();
//! let peer = PeerIdentity::from_envoy_strings(None, Some("CN=producer,O=acme"));
//! assert_eq!(mapper.map(&peer).unwrap().name, "CN=producer,O=acme");
//! ```

mod config;
mod envoy_subject;
mod java_dn;
mod java_regex;
mod json_path;
mod kafka_rules;
mod mapper;
mod matcher;
mod peer;
mod pem;
mod principal;
mod spiffe;
mod template;

#[doc(hidden)]
pub mod fuzzing;

pub use config::{
    from_json_naming_fields, ConfigError, IdentityConfig, SourceKind, SpiffeConfig, SubjectConfig,
    DEFAULT_MAX_PRINCIPAL_LENGTH, MAX_MAX_PRINCIPAL_LENGTH,
};
pub use java_regex::RegexError;
pub use kafka_rules::{ApplyError, KafkaRules, ReplacementError, RuleError, RuleProblem};
pub use mapper::{NoPrincipal, Principal, PrincipalMapper, Source, SourceFailure};
pub use peer::{IdentityError, PeerIdentity};
pub use principal::{validate_principal, PrincipalError};
pub use spiffe::{validate_trust_domain, SpiffeId, SpiffeIdError, SpiffeProblem};
pub use template::TemplateError;
