//! Principal templates over a SPIFFE ID, e.g. `{namespace}.{service_account}`.

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

/// A compiled template; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
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
                '}' => return Err("unmatched '}' (write '}}' for a literal brace)".to_string()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!(
                                "unclosed placeholder {{{name} (write '{{{{' for a literal brace)"
                            ))
                            }
                        }
                    }
                    let field = match name.as_str() {
                        "spiffe_id" => Field::SpiffeId,
                        "trust_domain" => Field::TrustDomain,
                        "namespace" => Field::Namespace,
                        "service_account" => Field::ServiceAccount,
                        "path" => Field::Path,
                        _ => {
                            return Err(format!(
                                "unknown placeholder {{{name}}}; allowed: {ALLOWED}"
                            ))
                        }
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
    pub fn render(&self, id: &SpiffeId) -> Result<String, String> {
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
                    let value = value.as_deref().ok_or_else(|| {
                        format!(
                            "SPIFFE ID {:?} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>, which the template needs",
                            id.id
                        )
                    })?;
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
        assert!(t.render(&plain).unwrap_err().contains("/ns/<namespace>"));
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
            .starts_with("unknown placeholder {foo}; allowed: {spiffe_id}"));
        assert!(Template::parse("{path").is_err());
        assert!(Template::parse("a}b").is_err());
    }
}
