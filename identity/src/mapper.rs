//! From identity fields to a principal, trying the configured sources in order.

use crate::config::SourceKind;
use crate::kafka_rules::{ApplyError, KafkaRules};
use crate::peer::PeerIdentity;
use crate::principal::validate_principal;
use crate::template::Template;
use std::fmt;

/// Where a principal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Spiffe,
    Subject,
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Spiffe => "spiffe",
            Source::Subject => "subject",
            Source::Fallback => "fallback",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kafka principal name for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub source: Source,
}

/// Why no source gave a principal, per source tried, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPrincipal {
    pub attempts: Vec<(SourceKind, String)>,
}

impl fmt::Display for NoPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .attempts
            .iter()
            .map(|(kind, reason)| format!("{}: {reason}", kind.as_str()))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for NoPrincipal {}

#[derive(Debug, Clone)]
pub(crate) enum CompiledSource {
    Spiffe {
        trust_domains: Vec<String>,
        template: Template,
    },
    Subject {
        rules: KafkaRules,
    },
}

/// A compiled `identity` configuration.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    sources: Vec<CompiledSource>,
    fallback: Option<String>,
    max_principal_length: usize,
}

impl PrincipalMapper {
    pub(crate) fn new(
        sources: Vec<CompiledSource>,
        fallback: Option<String>,
        max_principal_length: usize,
    ) -> Self {
        PrincipalMapper {
            sources,
            fallback,
            max_principal_length,
        }
    }

    /// The principal for a peer, or why there is none.
    pub fn map(&self, peer: &PeerIdentity) -> Result<Principal, NoPrincipal> {
        let mut attempts = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            let (kind, outcome) = match source {
                CompiledSource::Spiffe {
                    trust_domains,
                    template,
                } => (
                    SourceKind::Spiffe,
                    from_spiffe(peer, trust_domains, template),
                ),
                CompiledSource::Subject { rules } => {
                    (SourceKind::Subject, from_subject(peer, rules))
                }
            };
            let checked = outcome.and_then(|name| {
                validate_principal(&name, self.max_principal_length).map(|()| name)
            });
            match checked {
                Ok(name) => {
                    let source = match kind {
                        SourceKind::Spiffe => Source::Spiffe,
                        SourceKind::Subject => Source::Subject,
                    };
                    return Ok(Principal { name, source });
                }
                Err(reason) => attempts.push((kind, reason)),
            }
        }
        match &self.fallback {
            Some(name) => Ok(Principal {
                name: name.clone(),
                source: Source::Fallback,
            }),
            None => Err(NoPrincipal { attempts }),
        }
    }
}

fn from_spiffe(
    peer: &PeerIdentity,
    trust_domains: &[String],
    template: &Template,
) -> Result<String, String> {
    let id = peer.spiffe.as_ref().map_err(ToString::to_string)?;
    if !trust_domains.contains(&id.trust_domain) {
        return Err(format!(
            "trust domain {:?} not allowed (allowed: {})",
            id.trust_domain,
            trust_domains.join(", ")
        ));
    }
    template.render(id)
}

fn from_subject(peer: &PeerIdentity, rules: &KafkaRules) -> Result<String, String> {
    let subject = peer
        .subject
        .as_deref()
        .ok_or_else(|| "no subject available".to_string())?;
    rules.apply(subject).map_err(|e| match e {
        ApplyError::NoMatchingRule => format!("no rule matched {subject:?}"),
        other => other.to_string(),
    })
}
