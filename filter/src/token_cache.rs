//! The SASL requests (SaslHandshake + SaslAuthenticate with the token) per principal,
//! made once and reused by the VM's connections for a bounded time.
//!
//! Signing a token costs an ECDSA (or RSA) signature in the VM, far more than everything
//! else a new connection costs the filter; and an unsecured token still costs JSON,
//! base64 and two Kafka frames. A client that opens many connections presents the same
//! principal every time, so the filter makes the requests for a principal once and reuses
//! them while the token is young: for `reuse_ms` after it was issued (by default a tenth of
//! the token's lifetime). After that the next connection or re-authentication of that
//! principal gets a fresh token. The broker's session ends at the token's `exp` (minus at
//! most the reuse window compared with a fresh token), and re-authentication is planned
//! from the lifetime the broker reports, so nothing else changes.
//!
//! What it means for the token: connections of one principal within a reuse window share
//! one token, so `jti` and `iat` identify an issuance, not a connection (docs/security.md).
//!
//! One cache belongs to one configuration (one issuer, one signing key): a new
//! configuration (key rotation) starts with an empty cache, so a token signed with a key
//! that was rotated out is never served again. The cache holds at most `max_entries`
//! principals; when full, stale entries go first, then the oldest.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Enough for the client service accounts of one broker; each entry is about 1 KB.
pub const DEFAULT_MAX_ENTRIES: usize = 256;

#[derive(Debug)]
struct Entry {
    requests: Rc<[u8]>,
    issued_at_ms: u64,
}

#[derive(Debug)]
pub struct TokenCache {
    /// The client id the cached requests carry (the configuration's).
    client_id: String,
    reuse_ms: u64,
    max_entries: usize,
    entries: RefCell<HashMap<Box<str>, Entry>>,
}

impl TokenCache {
    /// `reuse_ms` 0 turns reuse off: every authentication gets its own token.
    pub fn new(client_id: &str, reuse_ms: u64, max_entries: usize) -> Self {
        Self {
            client_id: client_id.to_owned(),
            reuse_ms,
            max_entries,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The requests for `principal` with `client_id`: reused if made less than `reuse_ms`
    /// ago, else made by `make` (and kept, unless made for another client id than the
    /// cache's: a connection of an older configuration re-authenticating).
    pub fn requests<E>(
        &self,
        client_id: &str,
        principal: &str,
        now_ms: u64,
        make: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Rc<[u8]>, E> {
        if self.reuse_ms == 0 || self.max_entries == 0 || client_id != self.client_id {
            return make().map(Rc::from);
        }
        if let Some(entry) = self.entries.borrow().get(principal) {
            if self.fresh(entry, now_ms) {
                return Ok(Rc::clone(&entry.requests));
            }
        }
        let requests: Rc<[u8]> = Rc::from(make()?);
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max_entries && !entries.contains_key(principal) {
            entries.retain(|_, e| self.fresh(e, now_ms));
            if entries.len() >= self.max_entries {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.issued_at_ms)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            principal.into(),
            Entry {
                requests: Rc::clone(&requests),
                issued_at_ms: now_ms,
            },
        );
        Ok(requests)
    }

    /// Made within the reuse window (a clock that went back makes an entry stale).
    fn fresh(&self, entry: &Entry, now_ms: u64) -> bool {
        now_ms >= entry.issued_at_ms && now_ms - entry.issued_at_ms < self.reuse_ms
    }

    /// Principals held.
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

    fn make(n: &mut u32) -> impl FnOnce() -> Result<Vec<u8>, ()> + '_ {
        move || {
            *n += 1;
            Ok(n.to_be_bytes().to_vec())
        }
    }

    #[test]
    fn reused_within_the_window_then_made_again() {
        let cache = TokenCache::new("kafka-identity", 1000, 8);
        let mut made = 0;
        let first = cache
            .requests("kafka-identity", "p", 10_000, make(&mut made))
            .unwrap();
        let again = cache
            .requests("kafka-identity", "p", 10_999, make(&mut made))
            .unwrap();
        assert_eq!(made, 1);
        assert!(Rc::ptr_eq(&first, &again));
        let later = cache
            .requests("kafka-identity", "p", 11_000, make(&mut made))
            .unwrap();
        assert_eq!(made, 2);
        assert_ne!(first, later);
        // A clock that goes back does not revive an entry.
        cache
            .requests("kafka-identity", "p", 10_500, make(&mut made))
            .unwrap();
        assert_eq!(made, 3);
    }

    #[test]
    fn principals_and_client_ids_are_kept_apart() {
        let cache = TokenCache::new("kafka-identity", 1000, 8);
        let mut made = 0;
        let a = cache
            .requests("kafka-identity", "a", 0, make(&mut made))
            .unwrap();
        let b = cache
            .requests("kafka-identity", "b", 0, make(&mut made))
            .unwrap();
        assert_ne!(a, b);
        // Another configuration's client id: made fresh, not kept.
        cache.requests("other", "a", 0, make(&mut made)).unwrap();
        cache.requests("other", "a", 0, make(&mut made)).unwrap();
        assert_eq!(made, 4);
        assert_eq!(
            cache
                .requests("kafka-identity", "a", 1, make(&mut made))
                .unwrap(),
            a
        );
    }

    #[test]
    fn reuse_zero_makes_every_time() {
        let cache = TokenCache::new("kafka-identity", 0, 8);
        let mut made = 0;
        for _ in 0..3 {
            cache
                .requests("kafka-identity", "p", 0, make(&mut made))
                .unwrap();
        }
        assert_eq!(made, 3);
        assert!(cache.is_empty());
    }

    #[test]
    fn bounded_stale_entries_go_first_then_the_oldest() {
        let cache = TokenCache::new("kafka-identity", 1000, 3);
        let mut made = 0;
        cache
            .requests("kafka-identity", "old", 0, make(&mut made))
            .unwrap();
        cache
            .requests("kafka-identity", "a", 900, make(&mut made))
            .unwrap();
        cache
            .requests("kafka-identity", "b", 950, make(&mut made))
            .unwrap();
        // Full: "old" is stale at 1500 and goes; a and b stay.
        cache
            .requests("kafka-identity", "c", 1500, make(&mut made))
            .unwrap();
        assert_eq!(cache.len(), 3);
        let before = made;
        cache
            .requests("kafka-identity", "a", 1600, make(&mut made))
            .unwrap();
        assert_eq!(made, before, "a is still cached");
        // Full and nothing stale: the oldest (a, issued at 900) goes.
        cache
            .requests("kafka-identity", "d", 1700, make(&mut made))
            .unwrap();
        assert_eq!(cache.len(), 3);
        let before = made;
        cache
            .requests("kafka-identity", "b", 1701, make(&mut made))
            .unwrap();
        cache
            .requests("kafka-identity", "c", 1701, make(&mut made))
            .unwrap();
        assert_eq!(made, before, "b and c are still cached");
        cache
            .requests("kafka-identity", "a", 1701, make(&mut made))
            .unwrap();
        assert_eq!(made, before + 1, "a was evicted");
    }

    #[test]
    fn a_failure_is_not_cached() {
        let cache = TokenCache::new("kafka-identity", 1000, 8);
        let failed: Result<Rc<[u8]>, &str> = cache.requests("kafka-identity", "p", 0, || Err("no"));
        assert!(failed.is_err());
        assert!(cache.is_empty());
    }
}
