//! The filter's counters: their names and what each counts. Both hosts define them under the
//! configuration's `stat_prefix` (`<stat_prefix>.<name>`), so operators, the dashboard and
//! the alerts read the same names whichever build runs (docs/operations.md; Envoy puts its
//! own namespace in front: `wasmcustom.` for Wasm, `dynamicmodulescustom.` for the native
//! module).

use crate::session::RefusalKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Connections opened.
    Connections,
    /// First authentications the broker accepted.
    Authenticated,
    /// Re-authentications the broker accepted.
    Reauthenticated,
    /// The broker refused the filter's SASL exchange.
    AuthFailed,
    /// No mTLS or no principal, with `on_no_identity: reject`.
    RejectedNoIdentity,
    /// A client spoke SASL itself.
    RejectedClientSasl,
    /// Malformed frames, and host calls that failed.
    ProtocolErrors,
    /// Forwarded without identity (`on_no_identity: pass_through`).
    PassedThrough,
    /// Closed at a re-authentication: the current configuration maps the peer differently.
    ReidentifiedClosed,
    /// The filter's code panicked on a connection, which was closed (native module only: in
    /// Wasm a panic traps the VM instead, so this stays 0 there).
    Panics,
}

impl Counter {
    pub const ALL: [Counter; 10] = [
        Counter::Connections,
        Counter::Authenticated,
        Counter::Reauthenticated,
        Counter::AuthFailed,
        Counter::RejectedNoIdentity,
        Counter::RejectedClientSasl,
        Counter::ProtocolErrors,
        Counter::PassedThrough,
        Counter::ReidentifiedClosed,
        Counter::Panics,
    ];

    /// The name after `<stat_prefix>.`.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Connections => "connections",
            Counter::Authenticated => "authenticated",
            Counter::Reauthenticated => "reauthenticated",
            Counter::AuthFailed => "auth_failed",
            Counter::RejectedNoIdentity => "rejected_no_identity",
            Counter::RejectedClientSasl => "rejected_client_sasl",
            Counter::ProtocolErrors => "protocol_errors",
            Counter::PassedThrough => "passed_through",
            Counter::ReidentifiedClosed => "reidentified_closed",
            Counter::Panics => "panics",
        }
    }

    /// Its position in [`Counter::ALL`]: hosts keep their counter ids in an array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Which counter a refusal of this kind counts in.
    pub fn for_refusal(kind: RefusalKind) -> Counter {
        match kind {
            RefusalKind::NoIdentity => Counter::RejectedNoIdentity,
            RefusalKind::AuthFailed => Counter::AuthFailed,
            RefusalKind::ClientSasl => Counter::RejectedClientSasl,
            RefusalKind::Protocol | RefusalKind::Host => Counter::ProtocolErrors,
            RefusalKind::Reidentified => Counter::ReidentifiedClosed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_at_its_index() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
