//! The per-connection log lines both hosts write, word for word (docs/operations.md lists
//! them; alerts and the e2e suite grep them): `kafka-identity: source=.. identity=..
//! principal=.. token=.. outcome=.. ...`. Hosts only decide whether a level is enabled and
//! where the line goes.

use crate::session::{Identification, Refusal};

/// What a connection's log lines say about it, filled in as the connection learns it.
#[derive(Debug, Default, Clone)]
pub struct Described {
    /// The client's address, read from the host only when a line is written.
    pub source: Option<String>,
    pub identity: Option<String>,
    pub principal: Option<String>,
}

impl Described {
    /// Records who the first data identified.
    pub fn identified(&mut self, identification: &Identification) {
        match identification {
            Identification::Principal {
                identity,
                principal,
            } => {
                self.identity = Some(identity.clone());
                self.principal = Some(principal.clone());
            }
            Identification::NoPrincipal { identity, .. } => self.identity = Some(identity.clone()),
            Identification::NoMtls => {}
        }
    }

    /// `source=.. identity=.. principal=.. token=..`; `token` is the session's last token id
    /// (empty: none yet).
    pub fn fields(&self, token: &str) -> String {
        let token = if token.is_empty() { "-" } else { token };
        format!(
            "source={} identity={} principal={} token={token}",
            self.source.as_deref().unwrap_or("-"),
            self.identity.as_deref().unwrap_or("-"),
            self.principal.as_deref().unwrap_or("-"),
        )
    }

    /// The line of a connection forwarded without identity (info).
    pub fn passed_through(&self, token: &str, identification: &Identification) -> String {
        let reason = match identification {
            Identification::NoMtls => "no mTLS",
            Identification::NoPrincipal { reason, .. } => reason.as_str(),
            Identification::Principal { .. } => "",
        };
        format!(
            "kafka-identity: {} outcome=passed_through reason=\"{reason}\"",
            self.fields(token)
        )
    }

    /// The line of an accepted (re-)authentication (info for the first, debug after).
    pub fn authenticated(&self, token: &str, reauthentication: bool, lifetime_ms: i64) -> String {
        let outcome = if reauthentication {
            "reauthenticated"
        } else {
            "authenticated"
        };
        format!(
            "kafka-identity: {} outcome={outcome} session_lifetime_ms={lifetime_ms}",
            self.fields(token)
        )
    }

    /// The line of a refused connection (warn).
    pub fn refused(&self, token: &str, refusal: &Refusal) -> String {
        format!(
            "kafka-identity: {} outcome={} reason=\"{}\"",
            self.fields(token),
            refusal.kind.outcome(),
            refusal.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::RefusalKind;

    #[test]
    fn lines_name_what_is_known_and_dash_the_rest() {
        let mut d = Described::default();
        assert_eq!(d.fields(""), "source=- identity=- principal=- token=-");
        d.identified(&Identification::Principal {
            identity: "spiffe://td/ns/a/sa/b".into(),
            principal: "User:b".into(),
        });
        d.source = Some("10.0.0.1:5".into());
        assert_eq!(
            d.authenticated("t1", false, 60000),
            "kafka-identity: source=10.0.0.1:5 identity=spiffe://td/ns/a/sa/b principal=User:b \
             token=t1 outcome=authenticated session_lifetime_ms=60000"
        );
        let refusal = Refusal::new(RefusalKind::AuthFailed, "no");
        assert!(d.refused("t1", &refusal).ends_with(&format!(
            "outcome={} reason=\"no\"",
            RefusalKind::AuthFailed.outcome()
        )));
        assert!(Described::default()
            .passed_through("", &Identification::NoMtls)
            .ends_with("outcome=passed_through reason=\"no mTLS\""));
    }
}
