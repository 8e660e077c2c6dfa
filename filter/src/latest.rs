//! The newest configuration of each filter, per Wasm VM.
//!
//! Envoy gives every filter configuration its own root context, and a connection keeps
//! the root context it was created under for its whole life. When a filter's configuration
//! changes (ECDS, an Istio WasmPlugin update) but its `vm_config` does not, Envoy keeps the
//! VM and adds a root context; connections opened before the change would go on signing
//! re-authentications with the old key, which key rotation then removes from the broker's
//! JWKS. So every root context publishes its configuration here when Envoy accepts it, and
//! connections take the newest one of their filter at each (re-)authentication.
//!
//! A filter is named by its plugin name and root id: successive configurations of one
//! filter share them (Envoy's ECDS resource name, Istio's WasmPlugin name), two filters
//! with different configurations in one VM need different plugin names.

use std::rc::Rc;

#[derive(Debug)]
pub struct Latest<T> {
    entries: Vec<(String, Rc<T>)>,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> Latest<T> {
    /// Records `value` as the newest configuration of `filter`.
    pub fn publish(&mut self, filter: &str, value: Rc<T>) {
        match self.entries.iter_mut().find(|(name, _)| name == filter) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((filter.to_owned(), value)),
        }
    }

    /// The newest configuration of `filter`, if one was published.
    pub fn get(&self, filter: &str) -> Option<Rc<T>> {
        self.entries
            .iter()
            .find(|(name, _)| name == filter)
            .map(|(_, value)| Rc::clone(value))
    }
}

/// The registry key of a filter: its plugin name and root id.
pub fn filter_key(plugin_name: &str, root_id: &str) -> String {
    format!("{plugin_name}\u{0}{root_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_configuration_of_each_filter_wins() {
        let mut latest = Latest::default();
        let a = filter_key("kafka_identity", "kafka_identity");
        let b = filter_key("other", "kafka_identity");
        assert!(latest.get(&a).is_none());
        latest.publish(&a, Rc::new("old key"));
        latest.publish(&b, Rc::new("another listener's key"));
        latest.publish(&a, Rc::new("new key"));
        assert_eq!(*latest.get(&a).unwrap(), "new key");
        assert_eq!(*latest.get(&b).unwrap(), "another listener's key");
        // Plugin name and root id cannot run into each other.
        assert_ne!(filter_key("a", "bc"), filter_key("ab", "c"));
    }
}
