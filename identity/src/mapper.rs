//! From identity fields to a principal, trying the configured sources in order.

use crate::config::SourceKind;
use crate::kafka_rules::{ApplyError, KafkaRules};
use crate::peer::PeerIdentity;
use crate::principal::{validate_principal, PrincipalError};
use crate::spiffe::SpiffeProblem;
use crate::template::{Template, TemplateError};
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

/// Why one source gave no principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFailure {
    /// No usable SPIFFE ID (missing, several, invalid).
    Spiffe(SpiffeProblem),
    TrustDomainNotAllowed {
        trust_domain: String,
        allowed: Vec<String>,
    },
    Template(TemplateError),
    NoSubject,
    NoMatchingRule {
        subject: String,
    },
    Rules(ApplyError),
    Principal(PrincipalError),
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceFailure::Spiffe(problem) => problem.fmt(f),
            SourceFailure::TrustDomainNotAllowed {
                trust_domain,
                allowed,
            } => write!(
                f,
                "trust domain {trust_domain:?} not allowed (allowed: {})",
                allowed.join(", ")
            ),
            SourceFailure::Template(e) => e.fmt(f),
            SourceFailure::NoSubject => f.write_str("no subject available"),
            SourceFailure::NoMatchingRule { subject } => write!(f, "no rule matched {subject:?}"),
            SourceFailure::Rules(e) => e.fmt(f),
            SourceFailure::Principal(e) => e.fmt(f),
        }
    }
}

/// Why no source gave a principal, per source tried, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPrincipal {
    pub attempts: Vec<(SourceKind, SourceFailure)>,
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

impl std::error::Error for SourceFailure {}

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
    ///
    /// With the SPIFFE source configured, a certificate whose SPIFFE ID that source
    /// refuses (foreign trust domain, several SPIFFE SANs, an invalid ID, one the template
    /// cannot use) is refused outright, whatever the order of the sources: falling through
    /// to its subject DN, a rule's output or the fallback would let an issuer outside the
    /// allowed trust domains choose a principal. Only a certificate without any SPIFFE ID
    /// goes on to the next source.
    pub fn map(&self, peer: &PeerIdentity) -> Result<Principal, NoPrincipal> {
        let spiffe = self.sources.iter().find_map(|source| match source {
            CompiledSource::Spiffe {
                trust_domains,
                template,
            } => Some((trust_domains, template)),
            CompiledSource::Subject { .. } => None,
        });
        // Decided before any other source is tried: None when there is no SPIFFE ID.
        let spiffe_outcome = match spiffe {
            Some((trust_domains, template)) => {
                from_spiffe(peer, trust_domains, template, self.max_principal_length)?
            }
            None => None,
        };
        let mut attempts = Vec::with_capacity(self.sources.len());
        for source in &self.sources {
            match source {
                CompiledSource::Spiffe { .. } => match &spiffe_outcome {
                    Some(name) => {
                        return Ok(Principal {
                            name: name.clone(),
                            source: Source::Spiffe,
                        })
                    }
                    None => attempts.push((
                        SourceKind::Spiffe,
                        SourceFailure::Spiffe(SpiffeProblem::Missing),
                    )),
                },
                CompiledSource::Subject { rules } => {
                    let checked = from_subject(peer, rules).and_then(|name| {
                        validate_principal(&name, self.max_principal_length)
                            .map(|()| name)
                            .map_err(SourceFailure::Principal)
                    });
                    match checked {
                        Ok(name) => {
                            return Ok(Principal {
                                name,
                                source: Source::Subject,
                            })
                        }
                        Err(reason) => attempts.push((SourceKind::Subject, reason)),
                    }
                }
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

/// The SPIFFE source's verdict: a principal, no SPIFFE ID at all (`None`: the other
/// sources may try), or a refusal that ends the mapping.
fn from_spiffe(
    peer: &PeerIdentity,
    trust_domains: &[String],
    template: &Template,
    max_principal_length: usize,
) -> Result<Option<String>, NoPrincipal> {
    let refuse = |reason: SourceFailure| NoPrincipal {
        attempts: vec![(SourceKind::Spiffe, reason)],
    };
    let id = match &peer.spiffe {
        Ok(id) => id,
        Err(SpiffeProblem::Missing) => return Ok(None),
        Err(problem) => return Err(refuse(SourceFailure::Spiffe(problem.clone()))),
    };
    if !trust_domains.contains(&id.trust_domain) {
        return Err(refuse(SourceFailure::TrustDomainNotAllowed {
            trust_domain: id.trust_domain.clone(),
            allowed: trust_domains.to_vec(),
        }));
    }
    let name = template
        .render(id)
        .map_err(|e| refuse(SourceFailure::Template(e)))?;
    validate_principal(&name, max_principal_length)
        .map_err(|e| refuse(SourceFailure::Principal(e)))?;
    Ok(Some(name))
}

fn from_subject(peer: &PeerIdentity, rules: &KafkaRules) -> Result<String, SourceFailure> {
    let subject = peer.subject.as_deref().ok_or(SourceFailure::NoSubject)?;
    rules.apply(subject).map_err(|e| match e {
        ApplyError::NoMatchingRule => SourceFailure::NoMatchingRule {
            subject: subject.to_owned(),
        },
        other => SourceFailure::Rules(other),
    })
}
