//! One accepted configuration as a worker uses it: the checked configuration (shared by every
//! worker of a native module, one per Wasm VM) with this worker's token issuer, token cache
//! and identity cache. A configuration update makes a new generation; connections find the
//! current one of their filter in a [`crate::latest::Latest`] table.

use std::rc::Rc;
use std::sync::Arc;

use crate::config::FilterConfig;
use crate::identity_cache::{self, IdentityCache};
use crate::token::TokenIssuer;
use crate::token_cache::{self, TokenCache};

#[derive(Debug)]
pub struct Generation {
    pub config: Arc<FilterConfig>,
    /// The issuer shared with connections that re-authenticate under a newer configuration.
    pub tokens: Rc<TokenIssuer>,
    /// The SASL requests per principal made with `tokens`, reused for a while.
    pub token_cache: Rc<TokenCache>,
    /// Identifications by certificate, for this configuration's mapping.
    pub identities: IdentityCache,
}

impl Generation {
    pub fn new(config: Arc<FilterConfig>) -> Self {
        let tokens = Rc::new(config.session.tokens.clone());
        let token_cache = Rc::new(TokenCache::new(
            &config.session.client_id,
            config.token_reuse_seconds.saturating_mul(1000),
            token_cache::DEFAULT_MAX_ENTRIES,
        ));
        Self {
            config,
            tokens,
            token_cache,
            identities: IdentityCache::new(identity_cache::DEFAULT_MAX_ENTRIES),
        }
    }

    /// The `configured` log line: what this configuration does.
    pub fn describe(&self, plugin: &str) -> String {
        let config = &self.config;
        format!(
            "kafka-identity: configured (plugin {plugin}, identity {}, stat_prefix {}, \
             on_no_identity {:?}, on_client_sasl {:?}, token {})",
            config.identity_source(),
            config.stat_prefix,
            config.session.on_no_identity,
            config.session.on_client_sasl,
            config.session.tokens.describe()
        )
    }
}
