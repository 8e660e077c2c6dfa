//! Which configuration of each filter is current, per Wasm VM.
//!
//! Envoy gives every filter configuration its own root context, and a connection keeps
//! the root context it was created under for its whole life. When a filter's configuration
//! changes (ECDS, an Istio WasmPlugin update) but its `vm_config` does not, Envoy keeps the
//! VM and adds a root context; connections opened before the change would go on signing
//! re-authentications with the old key, which key rotation then removes from the broker's
//! JWKS, and mapping identities with the old rules. So connections take the current
//! configuration of their filter from this table at each (re-)authentication.
//!
//! "Current" is the configuration Envoy hands to new connections, and two events say which
//! one that is:
//! - a root context is configured (`on_configure`): a new configuration arrived;
//! - a root context creates a connection: Envoy routes new connections to it. This is the
//!   only sign of a **revert**: Envoy's Wasm host names a plugin by its root id and
//!   configuration text, and for a text it already runs (C1 → C2 → C1, while connections of
//!   C1 keep its plugin alive) it hands back the live plugin without configuring anything.
//!
//! The later event wins: every publication takes the next value of a counter, and a
//! filter's current configuration is its root with the highest. A root that goes away
//! (its plugin shut down: the filter was removed, renamed or replaced and its last
//! connection closed) leaves the table with its configuration, keys and caches.
//!
//! A filter is named by its plugin name and root id: successive configurations of one
//! filter share them (Envoy's ECDS resource name, Istio's WasmPlugin name), two filters
//! with different configurations in one VM need different plugin names.

/// A root context, as the host numbers them (proxy-wasm's context id; the native module
/// numbers its filter configurations itself).
pub type RootId = u32;

#[derive(Debug)]
struct Entry<P> {
    filter: Box<str>,
    root: RootId,
    /// The counter's value when this root was last published: the highest is current.
    published: u64,
    value: P,
}

/// `P` is a shared configuration: `Rc<_>` in a Wasm VM (one thread), `Arc<_>` in the native
/// module, whose table Envoy's main thread and its workers share.
#[derive(Debug)]
pub struct Latest<P> {
    entries: Vec<Entry<P>>,
    /// Counts publications and removals; see [`Latest::version`].
    counter: u64,
}

impl<P> Latest<P> {
    /// An empty table; `const` so that the native module can keep one in a `static`.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
            counter: 0,
        }
    }
}

impl<P> Default for Latest<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone> Latest<P> {
    /// Root context `root` of `filter` accepted `value`: it is the filter's current
    /// configuration from now on.
    pub fn configured(&mut self, filter: &str, root: RootId, value: P) {
        self.root_gone(root);
        self.counter += 1;
        self.entries.push(Entry {
            filter: filter.into(),
            root,
            published: self.counter,
            value,
        });
    }

    /// Root context `root` created a connection, so Envoy hands its configuration to new
    /// connections: it becomes current again if it was not (a revert). Returns whether the
    /// filter's current configuration changed; when it did not, nothing changes, so open
    /// connections do not look again.
    pub fn connection_opened(&mut self, root: RootId) -> bool {
        let Some(index) = self.entries.iter().position(|e| e.root == root) else {
            return false;
        };
        let Some(filter) = self.entries.get(index).map(|e| e.filter.clone()) else {
            return false;
        };
        if self.current_index(&filter) == Some(index) {
            return false;
        }
        self.counter += 1;
        if let Some(entry) = self.entries.get_mut(index) {
            entry.published = self.counter;
        }
        true
    }

    /// Root context `root` went away: its configuration leaves the table. When it was its
    /// filter's current one, the newest published of the filter's remaining roots (which
    /// only serve connections opened before) takes its place; with none left, the filter
    /// is gone.
    pub fn root_gone(&mut self, root: RootId) {
        if let Some(index) = self.entries.iter().position(|e| e.root == root) {
            self.entries.swap_remove(index);
            self.counter += 1;
        }
    }

    /// The current configuration of `filter`, if one was published.
    pub fn current(&self, filter: &str) -> Option<P> {
        self.current_index(filter)
            .and_then(|i| self.entries.get(i))
            .map(|e| e.value.clone())
    }

    /// The current configuration of `filter` if the table changed since `*seen`, the value
    /// of [`Latest::version`] the caller last looked at (start with 0); `*seen` is brought
    /// up to date. Connections call it on every chunk: when nothing changed it costs one
    /// comparison.
    pub fn changed_since(&self, filter: &str, seen: &mut u64) -> Option<P> {
        if *seen == self.counter {
            return None;
        }
        *seen = self.counter;
        self.current(filter)
    }

    /// Changes whenever any filter's current configuration may have changed.
    pub fn version(&self) -> u64 {
        self.counter
    }

    /// Root contexts held (a bounded number: Envoy's live plugins).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn current_index(&self, filter: &str) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if *e.filter == *filter && best.is_none_or(|(_, p)| e.published > p) {
                best = Some((i, e.published));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// The registry key of a filter: its plugin name and root id.
pub fn filter_key(plugin_name: &str, root_id: &str) -> String {
    format!("{plugin_name}\u{0}{root_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn the_newest_configuration_of_each_filter_wins() {
        let mut latest = Latest::default();
        let a: Rc<str> = filter_key("kafka_identity", "kafka_identity").into();
        let b: Rc<str> = filter_key("other", "kafka_identity").into();
        assert!(latest.current(&a).is_none());
        latest.configured(&a, 1, Rc::new("old key"));
        latest.configured(&b, 2, Rc::new("another listener's key"));
        latest.configured(&a, 3, Rc::new("new key"));
        assert_eq!(*latest.current(&a).unwrap(), "new key");
        assert_eq!(*latest.current(&b).unwrap(), "another listener's key");
        // Plugin name and root id cannot run into each other.
        assert_ne!(filter_key("a", "bc"), filter_key("ab", "c"));
    }

    #[test]
    fn a_root_that_opens_a_connection_again_is_current_again() {
        // C1 -> C2 -> C1: Envoy hands back C1's live plugin without configuring it; the
        // only sign is that C1's root creates the next connection.
        let mut latest = Latest::default();
        let f: Rc<str> = filter_key("kafka_identity", "kafka_identity").into();
        latest.configured(&f, 1, Rc::new("C1"));
        assert!(!latest.connection_opened(1), "already current");
        latest.configured(&f, 2, Rc::new("C2"));
        assert!(!latest.connection_opened(2));
        assert_eq!(*latest.current(&f).unwrap(), "C2");
        assert!(latest.connection_opened(1), "the revert is seen");
        assert_eq!(*latest.current(&f).unwrap(), "C1");
        // And forward again.
        assert!(latest.connection_opened(2));
        assert_eq!(*latest.current(&f).unwrap(), "C2");
        // A root the table does not know (its configuration was refused) changes nothing.
        assert!(!latest.connection_opened(9));
        assert_eq!(*latest.current(&f).unwrap(), "C2");
    }

    #[test]
    fn connections_look_again_only_when_something_changed() {
        let mut latest = Latest::default();
        let f: Rc<str> = filter_key("kafka_identity", "kafka_identity").into();
        latest.configured(&f, 1, Rc::new("C1"));
        let mut seen = 0;
        assert_eq!(*latest.changed_since(&f, &mut seen).unwrap(), "C1");
        assert!(latest.changed_since(&f, &mut seen).is_none());
        // New connections of the current root do not move the version.
        for _ in 0..3 {
            latest.connection_opened(1);
        }
        assert!(latest.changed_since(&f, &mut seen).is_none());
        latest.configured(&f, 2, Rc::new("C2"));
        assert_eq!(*latest.changed_since(&f, &mut seen).unwrap(), "C2");
        latest.connection_opened(1);
        assert_eq!(*latest.changed_since(&f, &mut seen).unwrap(), "C1");
    }

    #[test]
    fn roots_that_are_gone_leave_the_table() {
        let mut latest = Latest::default();
        let f: Rc<str> = filter_key("kafka_identity", "kafka_identity").into();
        let g: Rc<str> = filter_key("renamed", "kafka_identity").into();
        let c1 = Rc::new("C1");
        latest.configured(&f, 1, Rc::clone(&c1));
        latest.configured(&f, 2, Rc::new("C2"));
        latest.configured(&g, 3, Rc::new("G"));
        assert_eq!(latest.len(), 3);
        // The current root of f goes (f removed, its last connections closing): the
        // configuration published before it serves what is left.
        let mut seen = latest.version();
        latest.root_gone(2);
        assert_eq!(*latest.changed_since(&f, &mut seen).unwrap(), "C1");
        latest.root_gone(1);
        assert!(latest.current(&f).is_none(), "f is gone");
        assert_eq!(Rc::strong_count(&c1), 1, "nothing of C1 is kept");
        assert_eq!(*latest.current(&g).unwrap(), "G");
        latest.root_gone(3);
        latest.root_gone(3);
        assert!(latest.is_empty());
    }
}
