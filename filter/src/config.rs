//! The filter's JSON configuration (Envoy's plugin `configuration`), checked in full
//! before the filter accepts it.

use std::fmt;

use kafka_identity_core::{from_json_naming_fields, IdentityConfig, PrincipalMapper, SourceKind};
use serde::Deserialize;

use crate::session::{ClientSaslPolicy, NoIdentityPolicy, SessionSettings};
use crate::token::{Algorithm, SignedIssuer, TokenIssuer};

/// Envoy 1.38 hands the PEM over through filter state, set by `set_filter_state`.
pub const DEFAULT_PEER_CERT_FILTER_STATE_KEY: &str = "kafka_identity.peer_cert";
/// In an ambient waypoint, Istio's HBONE termination (`connect_authority`) puts the verified
/// peer's URI SANs into this filter state of the inner connection.
pub const DEFAULT_PEER_PRINCIPAL_FILTER_STATE_KEY: &str = "io.istio.peer_principal";
const DEFAULT_STAT_PREFIX: &str = "kafka_identity";
/// Kafka ends an OAUTHBEARER session at the token's `exp` even with
/// `connections.max.reauth.ms` unset; the filter re-authenticates before that.
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
const MIN_TOKEN_LIFETIME_SECS: u64 = 60;
const MAX_TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// Below this not even the broker's SASL answers fit.
const MIN_MAX_FRAME_BYTES: u32 = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an object")]
struct RawConfig {
    stat_prefix: String,
    identity: IdentityConfig,
    on_no_identity: NoIdentityPolicy,
    on_client_sasl: ClientSaslPolicy,
    token_lifetime_seconds: u64,
    /// How long a principal's token is reused by new connections and re-authentications;
    /// None: a tenth of the lifetime.
    token_reuse_seconds: Option<u64>,
    max_frame_bytes: u32,
    /// `None`: the default key. Kept apart from the default so that setting it together
    /// with `waypoint` (where it means nothing) is refused.
    peer_certificate_filter_state_key: Option<String>,
    client_id: String,
    reauthenticate: bool,
    signing: Option<RawSigning>,
    waypoint: Option<RawWaypoint>,
}

/// `waypoint`: the filter runs in an Istio ambient waypoint, where the connection it sees is
/// an internal one (no TLS) and the client is the peer of the HBONE tunnel it came through.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "an object")]
struct RawWaypoint {
    peer_principal_filter_state_key: String,
    peer_certificate_filter_state_key: Option<String>,
}

impl Default for RawWaypoint {
    fn default() -> Self {
        Self {
            peer_principal_filter_state_key: DEFAULT_PEER_PRINCIPAL_FILTER_STATE_KEY.to_owned(),
            peer_certificate_filter_state_key: None,
        }
    }
}

/// `signing`: sign tokens instead of sending unsecured ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
struct RawSigning {
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    key_id: String,
    issuer: String,
    audience: String,
    private_key_pem: Option<String>,
    /// Name of an environment variable of the VM (from Envoy's environment through
    /// `vm_config.environment_variables.host_env_keys`, so the key is not in the config dump;
    /// e.g. filled from a Kubernetes Secret) that holds the PEM.
    private_key_env: Option<String>,
}

fn default_algorithm() -> Algorithm {
    Algorithm::ES256
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            stat_prefix: DEFAULT_STAT_PREFIX.to_owned(),
            identity: IdentityConfig::default(),
            on_no_identity: NoIdentityPolicy::default(),
            on_client_sasl: ClientSaslPolicy::default(),
            token_lifetime_seconds: DEFAULT_TOKEN_LIFETIME_SECS,
            token_reuse_seconds: None,
            max_frame_bytes: kafka_codec::DEFAULT_MAX_FRAME_BYTES,
            peer_certificate_filter_state_key: None,
            client_id: "kafka-identity".to_owned(),
            reauthenticate: true,
            signing: None,
            waypoint: None,
        }
    }
}

/// A checked configuration.
#[derive(Debug)]
pub struct FilterConfig {
    pub stat_prefix: String,
    pub mapper: PrincipalMapper,
    pub session: SessionSettings,
    pub peer_certificate_filter_state_key: String,
    /// How long a principal's token is reused (0: never), see `token_cache`.
    pub token_reuse_seconds: u64,
    /// `Some`: the client's identity comes from the filter state the waypoint's HBONE
    /// termination left, never from the connection's TLS (there is none). `None`: sidecar.
    pub waypoint: Option<WaypointPeer>,
}

/// Where a waypoint's filter finds the HBONE peer (see `peer::identify_hbone_peer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointPeer {
    /// The peer's URI SANs (`%DOWNSTREAM_PEER_URI_SAN%`), set by Istio's `connect_authority`.
    pub peer_principal_filter_state_key: String,
    /// The peer's whole certificate (URL-encoded PEM, `%DOWNSTREAM_PEER_CERT%`), set by a
    /// `set_filter_state` added to the waypoint's HBONE listener; for subject-DN rules.
    pub peer_certificate_filter_state_key: Option<String>,
}

impl FilterConfig {
    /// Where the client's identity comes from, as the filter's `configured` log line and
    /// `kafka-identity config check` say it.
    pub fn identity_source(&self) -> String {
        match &self.waypoint {
            Some(w) => format!(
                "waypoint HBONE peer from filter state {:?}",
                w.peer_principal_filter_state_key
            ),
            None => "sidecar TLS peer".to_owned(),
        }
    }
}

/// Why a configuration was refused: the field and the reason, shown as `field: reason`.
/// The same type as the `identity` section's errors.
pub use kafka_identity_core::ConfigError;

fn field_error(field: &str, reason: impl fmt::Display) -> ConfigError {
    ConfigError::new(field, reason)
}

/// Parses and checks the plugin configuration. Empty input means all defaults.
pub fn parse(json: &[u8]) -> Result<FilterConfig, ConfigError> {
    parse_with_env(json, &|_| None)
}

/// Reads a variable of the Wasm VM's environment (`signing.private_key_env`).
type EnvReader<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// As [`parse`], reading `signing.private_key_env` through `env`.
pub fn parse_with_env(
    json: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FilterConfig, ConfigError> {
    parse_reading_key(json, Some(env))
}

/// How a configuration identifies clients: what `kafka-identity explain` needs of it.
#[derive(Debug)]
pub struct IdentitySettings {
    pub mapper: PrincipalMapper,
    pub waypoint: Option<WaypointPeer>,
}

/// Checks a whole configuration exactly as [`parse_with_env`] does, every field, but does
/// not read `signing.private_key_env`: `kafka-identity explain` shows a certificate's
/// principal under the configuration users have, without the key only the sidecar holds.
pub fn parse_identity(json: &[u8]) -> Result<IdentitySettings, ConfigError> {
    let config = parse_reading_key(json, None)?;
    Ok(IdentitySettings {
        mapper: config.mapper,
        waypoint: config.waypoint,
    })
}

/// `env: None`: the key named by `private_key_env` is not read, and the tokens of the
/// result are not the configuration's (only [`parse_identity`] passes it, and drops them).
fn parse_reading_key(
    json: &[u8],
    env: Option<&EnvReader<'_>>,
) -> Result<FilterConfig, ConfigError> {
    let text = std::str::from_utf8(json).map_err(|e| field_error("configuration", e))?;
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        // The identity crate's parser, so a nested field is named by its path
        // (`signing.issuer: missing field`), as the `identity` section's are.
        from_json_naming_fields(text, None)?
    };
    if raw.stat_prefix.is_empty()
        || !raw
            .stat_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(field_error(
            "stat_prefix",
            format!(
                "{:?} must be non-empty and use only letters, digits, '_' and '.'",
                raw.stat_prefix
            ),
        ));
    }
    if !(MIN_TOKEN_LIFETIME_SECS..=MAX_TOKEN_LIFETIME_SECS).contains(&raw.token_lifetime_seconds) {
        return Err(field_error(
            "token_lifetime_seconds",
            format!(
                "must be between {MIN_TOKEN_LIFETIME_SECS} and {MAX_TOKEN_LIFETIME_SECS}, got {}",
                raw.token_lifetime_seconds
            ),
        ));
    }
    // Reusing a token shortens the broker's session by up to the reuse time; at most half
    // the lifetime keeps re-authentication well before the token's end.
    let max_reuse = raw.token_lifetime_seconds / 2;
    let token_reuse_seconds = raw
        .token_reuse_seconds
        .unwrap_or(raw.token_lifetime_seconds / 10);
    if token_reuse_seconds > max_reuse {
        return Err(field_error(
            "token_reuse_seconds",
            format!(
                "must be between 0 and half of token_lifetime_seconds ({max_reuse}), got {token_reuse_seconds}"
            ),
        ));
    }
    let max_allowed = u32::try_from(i32::MAX).unwrap_or(u32::MAX);
    if !(MIN_MAX_FRAME_BYTES..=max_allowed).contains(&raw.max_frame_bytes) {
        return Err(field_error(
            "max_frame_bytes",
            format!(
                "must be between {MIN_MAX_FRAME_BYTES} and {max_allowed}, got {}",
                raw.max_frame_bytes
            ),
        ));
    }
    if raw.client_id.is_empty()
        || raw.client_id.len() > 255
        || raw.client_id.chars().any(char::is_control)
    {
        return Err(field_error(
            "client_id",
            "must be 1 to 255 characters without control characters",
        ));
    }
    let peer_certificate_filter_state_key = match raw.peer_certificate_filter_state_key {
        Some(key) => {
            // A typo (a trailing space) would find no certificate and silently fall back to
            // Envoy's strings: the first URI SAN only, so two SPIFFE SANs go unnoticed.
            check_filter_state_key("peer_certificate_filter_state_key", &key)?;
            if raw.waypoint.is_some() {
                return Err(field_error(
                    "peer_certificate_filter_state_key",
                    "is read from the TLS connection of a sidecar; with `waypoint` there is \
                     none: set waypoint.peer_certificate_filter_state_key instead",
                ));
            }
            key
        }
        None => DEFAULT_PEER_CERT_FILTER_STATE_KEY.to_owned(),
    };
    let waypoint = raw
        .waypoint
        .map(|w| waypoint_peer(w, &raw.identity.sources))
        .transpose()?;
    if raw.on_no_identity == NoIdentityPolicy::PassThrough
        && raw.on_client_sasl == ClientSaslPolicy::AllowWithoutIdentity
        && raw.signing.is_none()
    {
        // A broker that takes the filter's unsecured tokens takes anyone's: a client
        // without a certificate would be passed through and could then authenticate
        // itself with {"alg":"none"} and any `sub`, e.g. a super user.
        return Err(field_error(
            "on_client_sasl",
            "allow_without_identity together with on_no_identity: pass_through needs signing \
             (a broker that accepts unsecured tokens would let any client without a \
             certificate choose its principal)",
        ));
    }
    let tokens = match raw.signing {
        None => TokenIssuer::Unsecured {
            lifetime_secs: raw.token_lifetime_seconds,
        },
        Some(signing) => signed_issuer(signing, raw.token_lifetime_seconds, env)?,
    };
    let mapper = raw.identity.compile()?;
    Ok(FilterConfig {
        stat_prefix: raw.stat_prefix,
        mapper,
        session: SessionSettings {
            on_no_identity: raw.on_no_identity,
            on_client_sasl: raw.on_client_sasl,
            tokens,
            max_frame_bytes: raw.max_frame_bytes,
            client_id: raw.client_id,
            reauthenticate: raw.reauthenticate,
        },
        peer_certificate_filter_state_key,
        token_reuse_seconds,
        waypoint,
    })
}

/// Filter-state keys are names such as `io.istio.peer_principal`: a key with spaces or
/// control characters is a typo that would silently find nothing.
fn check_filter_state_key(field: &str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || key.len() > 256 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(field_error(
            field,
            format!("{key:?} must be 1 to 256 printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

fn waypoint_peer(raw: RawWaypoint, sources: &[SourceKind]) -> Result<WaypointPeer, ConfigError> {
    check_filter_state_key(
        "waypoint.peer_principal_filter_state_key",
        &raw.peer_principal_filter_state_key,
    )?;
    if raw.peer_certificate_filter_state_key.is_none() && sources.contains(&SourceKind::Subject) {
        // The peer principal carries URI SANs only: without the certificate the subject
        // source could never give a principal, which is a configuration mistake.
        return Err(field_error(
            "identity.sources",
            "\"subject\" needs the client's certificate, which a waypoint only has with \
             waypoint.peer_certificate_filter_state_key (filled by a set_filter_state in its \
             HBONE listener)",
        ));
    }
    if let Some(key) = &raw.peer_certificate_filter_state_key {
        check_filter_state_key("waypoint.peer_certificate_filter_state_key", key)?;
        if *key == raw.peer_principal_filter_state_key {
            return Err(field_error(
                "waypoint.peer_certificate_filter_state_key",
                format!("{key:?} is also peer_principal_filter_state_key: the certificate needs a key of its own"),
            ));
        }
    }
    Ok(WaypointPeer {
        peer_principal_filter_state_key: raw.peer_principal_filter_state_key,
        peer_certificate_filter_state_key: raw.peer_certificate_filter_state_key,
    })
}

fn signed_issuer(
    signing: RawSigning,
    lifetime_secs: u64,
    env: Option<&EnvReader<'_>>,
) -> Result<TokenIssuer, ConfigError> {
    for (field, value) in [
        ("signing.key_id", &signing.key_id),
        ("signing.issuer", &signing.issuer),
        ("signing.audience", &signing.audience),
    ] {
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(field_error(
                field,
                "must be non-empty without control characters",
            ));
        }
    }
    let pem = match (signing.private_key_pem, signing.private_key_env, env) {
        (Some(pem), None, _) => pem,
        (None, Some(name), Some(env)) => env(&name).ok_or_else(|| {
            field_error(
                "signing.private_key_env",
                format!("environment variable {name:?} is not set in the Wasm VM (name it in vm_config.environment_variables.host_env_keys and set it in Envoy's environment; Istio: vmConfig.env valueFrom HOST)"),
            )
        })?,
        // Not read (parse_identity): tokens that are never used.
        (None, Some(_), None) => return Ok(TokenIssuer::Unsecured { lifetime_secs }),
        _ => {
            return Err(field_error(
                "signing",
                "set exactly one of private_key_pem and private_key_env",
            ))
        }
    };
    let issuer = SignedIssuer::new(
        signing.algorithm,
        &pem,
        signing.key_id,
        signing.issuer,
        signing.audience,
        lifetime_secs,
    )
    .map_err(|e| field_error("signing.private_key", e))?;
    Ok(TokenIssuer::Signed(Box::new(issuer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn empty_configuration_is_all_safe_defaults() {
        for text in ["", "{}", "  \n"] {
            let c = parse(text.as_bytes()).unwrap();
            assert_eq!(c.stat_prefix, "kafka_identity");
            assert_eq!(c.session.on_no_identity, NoIdentityPolicy::Reject);
            assert_eq!(c.session.on_client_sasl, ClientSaslPolicy::Reject);
            assert_eq!(c.session.max_frame_bytes, 104_857_600);
            assert!(matches!(
                c.session.tokens,
                TokenIssuer::Unsecured {
                    lifetime_secs: 3600
                }
            ));
            assert!(c.session.reauthenticate);
            assert_eq!(c.token_reuse_seconds, 360);
        }
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(err(r#"{"stat_prefx": "x"}"#).contains("unknown field `stat_prefx`"));
        assert!(err(r#"{"stat_prefix": "a b"}"#).starts_with("stat_prefix:"));
        assert!(err(r#"{"token_lifetime_seconds": 5}"#).starts_with("token_lifetime_seconds:"));
        assert!(err(r#"{"token_reuse_seconds": 1801}"#).starts_with("token_reuse_seconds:"));
        assert!(
            err(r#"{"token_lifetime_seconds": 60, "token_reuse_seconds": 31}"#)
                .starts_with("token_reuse_seconds:")
        );
        assert!(err(r#"{"max_frame_bytes": 10}"#).starts_with("max_frame_bytes:"));
        assert!(err(r#"{"on_no_identity": "allow"}"#).contains("unknown variant `allow`"));
        assert!(err(r#"{"client_id": ""}"#).starts_with("client_id:"));
        assert!(err(r#"{"identity": {"spiffe": {"template": "{nope}"}}}"#)
            .starts_with("identity.spiffe.template"));
        assert!(err(r#"{"identity": {"spiffe": {"trust_domains": []}}}"#)
            .starts_with("identity.spiffe.trust_domains"));
        assert!(err("not json").starts_with("configuration:"));
    }

    #[test]
    fn errors_in_nested_sections_name_the_field_by_its_path() {
        let signing = |fields: &str| err(&format!(r#"{{"signing": {{{fields}}}}}"#));
        assert_eq!(
            signing(r#""key_id": "k", "audience": "a", "private_key_env": "K""#),
            "signing.issuer: missing field"
        );
        assert_eq!(
            signing(r#""issuer": "i", "audience": "a", "private_key_env": "K""#),
            "signing.key_id: missing field"
        );
        assert_eq!(
            signing(r#""key_id": "k", "issuer": "i", "private_key_env": "K""#),
            "signing.audience: missing field"
        );
        assert!(
            signing(r#""algorithm": "HS256", "key_id": "k", "issuer": "i", "audience": "a""#)
                .starts_with(
                    "signing.algorithm: unknown variant `HS256`, expected `ES256` or `RS256`"
                )
        );
        assert!(
            signing(r#""key_id": "k", "issuer": "i", "audience": "a", "private_key": "x""#)
                .starts_with("signing.private_key: unknown field `private_key`")
        );
        assert!(signing(r#""key_id": 7, "issuer": "i", "audience": "a""#)
            .starts_with("signing.key_id: invalid type: integer `7`, expected a string"));
        assert!(err(r#"{"signing": 3}"#)
            .starts_with("signing: invalid type: integer `3`, expected an object"));
        assert!(
            err(r#"{"waypoint": {"peer_principal_filter_state_key": 3}}"#)
                .starts_with("waypoint.peer_principal_filter_state_key: invalid type: integer `3`")
        );
        assert!(err(r#"{"waypoint": {"peer_principal": "x"}}"#)
            .starts_with("waypoint.peer_principal: unknown field `peer_principal`"));
        assert!(
            err(r#"{"identity": {"spiffe": {"trust_domains": ["a", 3]}}}"#)
                .starts_with("identity.spiffe.trust_domains[1]: invalid type: integer `3`")
        );
        assert!(err(r#"{"identity": {"sources": ["ldap"]}}"#)
            .starts_with("identity.sources[0]: unknown variant `ldap`"));
        assert!(err(r#"{"identity": 3}"#)
            .starts_with("identity: invalid type: integer `3`, expected an object"));
        // Top level: the field itself, or `configuration` for the text as a whole.
        assert!(err(r#"{"stat_prefx": "x"}"#).starts_with("stat_prefx: unknown field `stat_prefx`"));
        assert!(err(r#"{"on_no_identity": "allow"}"#)
            .starts_with("on_no_identity: unknown variant `allow`"));
        assert!(err(r#"{"reauthenticate": "yes"}"#)
            .starts_with("reauthenticate: invalid type: string \"yes\", expected a boolean"));
        assert!(err("{} x").starts_with("configuration: trailing characters"));
        assert!(err(r#"{"stat_prefix": "x""#).starts_with("configuration: EOF while parsing"));
        // Broken JSON is the text's fault, wherever it breaks (with its position).
        assert!(err(r#"{"identity": {"spiffe": {}"#)
            .starts_with("configuration: EOF while parsing an object at line 1 column 26"));
        assert!(err(r#"{"identity": {"spiffe" {}}}"#)
            .starts_with("configuration: expected `:` at line 1 column 24"));
        // serde would take an array as the fields in order: `["x"]` set stat_prefix.
        assert_eq!(err(r#"["x"]"#), "configuration: must be a JSON object");
        assert_eq!(err("3"), "configuration: must be a JSON object");
    }

    /// The path a path-tracking deserializer names for a refused text, as
    /// `from_json_naming_fields` spells it; `None` when serde accepts the text or the error
    /// is the text's (syntax).
    fn oracle(text: &str) -> Option<String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let e = serde_path_to_error::deserialize::<_, RawConfig>(&mut de).err()?;
        if !e.inner().is_data() {
            return None;
        }
        let mut path = String::new();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Unknown => panic!("{text}: {e}"),
            }
        }
        let message = e.inner().to_string();
        if let Some(name) = message.strip_prefix("missing field `") {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name.split('`').next().unwrap());
        }
        Some(if path.is_empty() {
            "configuration".to_owned()
        } else {
            path
        })
    }

    /// Every value, key and element of a full configuration, replaced, removed or added
    /// in turn.
    fn mutations(value: &serde_json::Value) -> Vec<serde_json::Value> {
        use serde_json::{json, Value};
        let replacements = [
            json!(7),
            json!(-1),
            json!(1.5),
            json!(99_999_999_999_u64),
            json!("x"),
            json!(true),
            json!(null),
            json!([]),
            json!(["x", 3]),
            json!({}),
            json!({"bogus": 1}),
        ];
        let mut out: Vec<Value> = replacements.to_vec();
        match value {
            Value::Object(map) => {
                let mut extra = map.clone();
                extra.insert("bogus".into(), json!(1));
                out.push(Value::Object(extra));
                for (key, inner) in map {
                    let mut without = map.clone();
                    without.remove(key);
                    out.push(Value::Object(without));
                    for changed in mutations(inner) {
                        let mut with = map.clone();
                        with.insert(key.clone(), changed);
                        out.push(Value::Object(with));
                    }
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    for changed in mutations(inner) {
                        let mut with = items.clone();
                        with[i] = changed;
                        out.push(Value::Array(with));
                    }
                }
            }
            _ => {}
        }
        out
    }

    #[test]
    fn error_fields_are_the_paths_a_path_tracking_deserializer_names() {
        let full: serde_json::Value = serde_json::from_str(
            r#"{"stat_prefix": "kafka_identity",
                "identity": {"sources": ["spiffe", "subject"],
                             "spiffe": {"trust_domains": ["cluster.local", "example.org"],
                                        "template": "{spiffe_id}"},
                             "subject": {"rules": "DEFAULT"},
                             "fallback_principal": "anonymous", "max_principal_length": 255},
                "on_no_identity": "reject", "on_client_sasl": "reject",
                "token_lifetime_seconds": 3600, "token_reuse_seconds": 360,
                "reauthenticate": true, "max_frame_bytes": 1048576, "client_id": "c",
                "peer_certificate_filter_state_key": "k",
                "signing": {"algorithm": "ES256", "key_id": "k", "issuer": "i",
                            "audience": "a", "private_key_env": "K"},
                "waypoint": {"peer_principal_filter_state_key": "p",
                             "peer_certificate_filter_state_key": "c"}}"#,
        )
        .unwrap();
        let (mut compared, mut nested) = (0, 0);
        for mutated in mutations(&full) {
            if !mutated.is_object() {
                continue;
            }
            // Compact, and over many lines (the position's line and column both matter).
            for text in [
                serde_json::to_string(&mutated).unwrap(),
                serde_json::to_string_pretty(&mutated).unwrap(),
            ] {
                let Some(expected) = oracle(&text) else {
                    continue;
                };
                let ours = from_json_naming_fields::<RawConfig>(&text, None).unwrap_err();
                assert_eq!(ours.field, expected, "{text}\n{ours}");
                compared += 1;
                nested += usize::from(expected.contains('.') || expected.contains('['));
            }
        }
        // The mutations do reach errors, nested ones among them.
        assert!(
            compared > 300 && nested > 200,
            "{compared} compared, {nested} nested"
        );
    }

    #[test]
    fn parse_identity_checks_everything_but_reads_no_signing_key() {
        let signed = r#"{"signing": {"key_id": "k", "issuer": "i", "audience": "a",
                                      "private_key_env": "KAFKA_IDENTITY_NOT_SET"},
                         "waypoint": {}}"#;
        assert!(err(signed).starts_with("signing.private_key_env: environment variable"));
        let settings = parse_identity(signed.as_bytes()).unwrap();
        assert!(settings.waypoint.is_some());
        // Every other check applies, the signing section's own included.
        for (json, field) in [
            (r#"{"token_lifetime_seconds": 5}"#, "token_lifetime_seconds"),
            (
                r#"{"signing": {"key_id": "", "issuer": "i", "audience": "a", "private_key_env": "K"}}"#,
                "signing.key_id",
            ),
            (
                r#"{"signing": {"key_id": "k", "issuer": "i", "audience": "a"}}"#,
                "signing",
            ),
            (
                r#"{"identity": {"spiffe": {"template": "{x}"}}}"#,
                "identity.spiffe.template",
            ),
            (
                r#"{"peer_certificate_filter_state_key": "a b"}"#,
                "peer_certificate_filter_state_key",
            ),
        ] {
            assert_eq!(
                parse_identity(json.as_bytes()).unwrap_err().field,
                field,
                "{json}"
            );
            assert_eq!(parse(json.as_bytes()).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn token_reuse_defaults_to_a_tenth_of_the_lifetime() {
        assert_eq!(
            parse(br#"{"token_lifetime_seconds": 600}"#)
                .unwrap()
                .token_reuse_seconds,
            60
        );
        assert_eq!(
            parse(br#"{"token_reuse_seconds": 0}"#)
                .unwrap()
                .token_reuse_seconds,
            0
        );
        assert_eq!(
            parse(br#"{"token_reuse_seconds": 1800}"#)
                .unwrap()
                .token_reuse_seconds,
            1800
        );
    }

    #[test]
    fn policies_parse() {
        let c = parse(br#"{"on_no_identity": "pass_through"}"#).unwrap();
        assert_eq!(c.session.on_no_identity, NoIdentityPolicy::PassThrough);
        assert_eq!(c.session.on_client_sasl, ClientSaslPolicy::Reject);
        let c = parse(br#"{"on_client_sasl": "allow_without_identity"}"#).unwrap();
        assert_eq!(
            c.session.on_client_sasl,
            ClientSaslPolicy::AllowWithoutIdentity
        );
    }

    #[test]
    fn sidecar_mode_is_the_default_and_waypoint_mode_is_only_what_is_configured() {
        let sidecar = parse(b"{}").unwrap();
        assert_eq!(sidecar.waypoint, None);
        assert_eq!(
            sidecar.peer_certificate_filter_state_key,
            "kafka_identity.peer_cert"
        );
        let waypoint = parse(br#"{"waypoint": {}}"#).unwrap();
        assert_eq!(
            waypoint.waypoint,
            Some(WaypointPeer {
                peer_principal_filter_state_key: "io.istio.peer_principal".into(),
                peer_certificate_filter_state_key: None,
            })
        );
        let with_cert = parse(
            br#"{"waypoint": {"peer_principal_filter_state_key": "p",
                              "peer_certificate_filter_state_key": "kafka_identity.hbone_peer_cert"},
                 "identity": {"sources": ["spiffe", "subject"]}}"#,
        )
        .unwrap()
        .waypoint
        .unwrap();
        assert_eq!(with_cert.peer_principal_filter_state_key, "p");
        assert_eq!(
            with_cert.peer_certificate_filter_state_key.as_deref(),
            Some("kafka_identity.hbone_peer_cert")
        );
        // `null` is sidecar mode, as if absent.
        assert_eq!(parse(br#"{"waypoint": null}"#).unwrap().waypoint, None);
        assert_eq!(sidecar.identity_source(), "sidecar TLS peer");
        assert_eq!(
            waypoint.identity_source(),
            "waypoint HBONE peer from filter state \"io.istio.peer_principal\""
        );
    }

    #[test]
    fn bad_waypoint_settings_name_the_field() {
        assert!(
            err(r#"{"waypoint": {"peer_principal_filter_state_key": ""}}"#)
                .starts_with("waypoint.peer_principal_filter_state_key: \"\" must be")
        );
        assert!(
            err(r#"{"waypoint": {"peer_principal_filter_state_key": "io.istio. peer"}}"#)
                .starts_with("waypoint.peer_principal_filter_state_key:")
        );
        assert!(
            err(r#"{"waypoint": {"peer_certificate_filter_state_key": "a\nb"}}"#)
                .starts_with("waypoint.peer_certificate_filter_state_key:")
        );
        assert!(err(
            r#"{"waypoint": {"peer_certificate_filter_state_key": "io.istio.peer_principal"}}"#
        )
        .starts_with(
            "waypoint.peer_certificate_filter_state_key: \"io.istio.peer_principal\" is also"
        ));
        assert!(err(r#"{"waypoint": {"peer_principal": "x"}}"#)
            .contains("unknown field `peer_principal`"));
        // The sidecar's key means nothing in a waypoint: refused rather than ignored.
        assert!(
            err(r#"{"waypoint": {}, "peer_certificate_filter_state_key": "k"}"#)
                .starts_with("peer_certificate_filter_state_key: is read from the TLS connection")
        );
        // Subject-DN rules without the certificate could never match.
        assert!(
            err(r#"{"waypoint": {}, "identity": {"sources": ["spiffe", "subject"]}}"#)
                .starts_with("identity.sources: \"subject\" needs the client's certificate")
        );
    }

    #[test]
    fn the_sidecars_filter_state_key_is_checked_like_the_waypoints() {
        for bad in [
            "",
            "kafka_identity.peer_cert ",
            " k",
            "a b",
            "k\\n",
            "k\\u00e9",
            &"k".repeat(257),
        ] {
            let json = format!(r#"{{"peer_certificate_filter_state_key": "{bad}"}}"#);
            let why = err(&json);
            assert!(
                why.starts_with("peer_certificate_filter_state_key: ")
                    && why.ends_with("must be 1 to 256 printable ASCII characters without spaces"),
                "{json}: {why}"
            );
        }
        assert_eq!(
            err(r#"{"peer_certificate_filter_state_key": "kafka_identity.peer_cert "}"#),
            "peer_certificate_filter_state_key: \"kafka_identity.peer_cert \" must be 1 to 256 printable ASCII characters without spaces"
        );
        for good in [
            "kafka_identity.peer_cert",
            "envoy.string/x-1",
            &"k".repeat(256),
        ] {
            let json = format!(r#"{{"peer_certificate_filter_state_key": "{good}"}}"#);
            assert_eq!(
                parse(json.as_bytes())
                    .unwrap()
                    .peer_certificate_filter_state_key,
                good
            );
        }
    }

    #[test]
    fn clients_choosing_their_own_principal_is_refused_without_signing() {
        // Passed-through clients that may speak SASL themselves, in front of a broker that
        // accepts unsecured tokens (no `signing`): any client without a certificate could
        // send {"alg":"none"} with sub=admin.
        let why = err(
            r#"{"on_no_identity": "pass_through", "on_client_sasl": "allow_without_identity"}"#,
        );
        assert!(
            why.starts_with("on_client_sasl: allow_without_identity together with on_no_identity: pass_through needs signing"),
            "{why}"
        );
    }
}
