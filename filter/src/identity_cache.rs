//! Who a certificate's holder is, per certificate, for the VM's connections.
//!
//! Identifying a peer means reading its certificate out of Envoy (a PEM of about 700 bytes
//! copied into the VM) and parsing it: in the VM that is the largest share of the filter's
//! own work on a new connection, and clients present the same certificate on every
//! connection until it is renewed. Envoy already hashes the peer certificate
//! (`connection.sha256_peer_certificate_digest`), so the filter asks for that short string
//! first and identifies a certificate it has seen from the cache, without reading the PEM.
//!
//! The answer depends only on the certificate and the configuration's mapping, so one
//! cache belongs to one configuration. It holds at most `max_entries` certificates; when
//! full, one entry makes room for the new one.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::session::Identification;

/// Certificates of the clients of one broker, comfortably: about 200 bytes each.
pub const DEFAULT_MAX_ENTRIES: usize = 1024;

#[derive(Debug)]
pub struct IdentityCache {
    max_entries: usize,
    entries: RefCell<HashMap<Box<[u8]>, Identification>>,
}

impl IdentityCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The identification of the certificate with this SHA-256 digest, from the cache or
    /// from `identify` (which reads and parses the certificate). Only certificates are
    /// cached: a connection without one never reaches here.
    pub fn get_or_identify(
        &self,
        digest: &[u8],
        identify: impl FnOnce() -> Identification,
    ) -> Identification {
        if let Some(known) = self.entries.borrow().get(digest) {
            return known.clone();
        }
        let identification = identify();
        if self.max_entries == 0 || matches!(identification, Identification::NoMtls) {
            return identification;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max_entries {
            let victim = entries.keys().next().cloned();
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        entries.insert(digest.into(), identification.clone());
        identification
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(name: &str) -> Identification {
        Identification::Principal {
            identity: name.into(),
            principal: name.into(),
        }
    }

    #[test]
    fn a_certificate_is_identified_once() {
        let cache = IdentityCache::new(4);
        let mut parsed = 0;
        for _ in 0..3 {
            let id = cache.get_or_identify(b"aa", || {
                parsed += 1;
                principal("p")
            });
            assert_eq!(id, principal("p"));
        }
        assert_eq!(parsed, 1);
        let other = cache.get_or_identify(b"bb", || principal("q"));
        assert_eq!(other, principal("q"));
    }

    #[test]
    fn refusals_are_remembered_too_but_never_a_missing_certificate() {
        let cache = IdentityCache::new(4);
        let refused = Identification::NoPrincipal {
            identity: "spiffe://evil.example/ns/a/sa/b".into(),
            reason: "trust domain".into(),
        };
        cache.get_or_identify(b"ee", || refused.clone());
        assert_eq!(cache.get_or_identify(b"ee", || principal("x")), refused);
        cache.get_or_identify(b"nn", || Identification::NoMtls);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn bounded() {
        let cache = IdentityCache::new(2);
        for d in [b"1", b"2", b"3", b"4"] {
            cache.get_or_identify(d, || principal("p"));
        }
        assert_eq!(cache.len(), 2);
        assert!(IdentityCache::new(0).is_empty());
    }
}
