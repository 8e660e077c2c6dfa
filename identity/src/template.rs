//! Principal templates over a SPIFFE ID, e.g. `{namespace}.{service_account}`.

use std::fmt;

use crate::spiffe::SpiffeId;

pub(crate) const ALLOWED: &str =
    "{spiffe_id}, {trust_domain}, {namespace}, {service_account}, {path}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    SpiffeId,
    TrustDomain,
    Namespace,
    ServiceAccount,
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// Why a template cannot be compiled, or cannot be filled for an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    UnmatchedClose,
    Unclosed {
        name: String,
    },
    UnknownPlaceholder {
        name: String,
    },
    /// `{namespace}` or `{service_account}` of an ID that is not Istio-style.
    NotIstioStyle {
        id: String,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::UnmatchedClose => {
                f.write_str("unmatched '}' (write '}}' for a literal brace)")
            }
            TemplateError::Unclosed { name } => write!(
                f,
                "unclosed placeholder {{{name} (write '{{{{' for a literal brace)"
            ),
            TemplateError::UnknownPlaceholder { name } => {
                write!(f, "unknown placeholder {{{name}}}; allowed: {ALLOWED}")
            }
            TemplateError::NotIstioStyle { id } => write!(
                f,
                "SPIFFE ID {id:?} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>, which the template needs"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// A compiled template; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::UnmatchedClose),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(TemplateError::Unclosed { name }),
                        }
                    }
                    let field = match name.as_str() {
                        "spiffe_id" => Field::SpiffeId,
                        "trust_domain" => Field::TrustDomain,
                        "namespace" => Field::Namespace,
                        "service_account" => Field::ServiceAccount,
                        "path" => Field::Path,
                        _ => return Err(TemplateError::UnknownPlaceholder { name }),
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Fills the template; fails when it needs the namespace or service account of an ID
    /// that is not Istio-style.
    pub fn render(&self, id: &SpiffeId) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(Field::SpiffeId) => out.push_str(&id.id),
                Part::Field(Field::TrustDomain) => out.push_str(&id.trust_domain),
                Part::Field(Field::Path) => out.push_str(&id.path),
                Part::Field(field @ (Field::Namespace | Field::ServiceAccount)) => {
                    let value = if *field == Field::Namespace {
                        &id.namespace
                    } else {
                        &id.service_account
                    };
                    let value = value
                        .as_deref()
                        .ok_or_else(|| TemplateError::NotIstioStyle { id: id.id.clone() })?;
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields() {
        let id = SpiffeId::parse("spiffe://td/ns/n/sa/s").unwrap();
        let t = Template::parse("{{{namespace}}}:{service_account}@{trust_domain}{path}").unwrap();
        assert_eq!(t.render(&id).unwrap(), "{n}:s@td/ns/n/sa/s");
        let plain = SpiffeId::parse("spiffe://td/x").unwrap();
        assert!(t
            .render(&plain)
            .unwrap_err()
            .to_string()
            .contains("/ns/<namespace>"));
        assert_eq!(
            Template::parse("{spiffe_id}")
                .unwrap()
                .render(&plain)
                .unwrap(),
            "spiffe://td/x"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(Template::parse("{foo}")
            .unwrap_err()
            .to_string()
            .starts_with("unknown placeholder {foo}; allowed: {spiffe_id}"));
        assert!(Template::parse("{path").is_err());
        assert!(Template::parse("a}b").is_err());
    }
}
