//! Drives one connection's [`Session`] against its host: reads the clock, lets the
//! session read the chunk, and carries out its decisions on the buffer with [`splice`].
//! Natively testable; the proxy-wasm glue only supplies Envoy's buffers and clock, logs
//! and counts.

use std::rc::Rc;

use crate::host::{Clock, HostBuffer};
use crate::session::{Authenticated, Identification, Refusal, Session, SessionSettings, Start};
use crate::splice;
use crate::token::TokenIssuer;
use crate::token_cache::TokenCache;

/// What the first client data decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub identification: Identification,
    /// False: the filter authenticates the connection; true: forwarded without identity.
    pub passed_through: bool,
}

#[derive(Debug)]
pub struct Connection {
    session: Session,
    /// A refusal closed the connection: from then on nothing passes in either direction.
    refused: bool,
}

impl Connection {
    /// `nonce` differs between connections (the host's connection id and time).
    pub fn new(settings: &SessionSettings, nonce: u64) -> Self {
        let mut session = Session::new(settings);
        session.set_token_nonce(nonce);
        Self {
            session,
            refused: false,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// See [`Session::set_token_issuer`].
    pub fn set_token_issuer(&mut self, issuer: Rc<TokenIssuer>) {
        self.session.set_token_issuer(issuer);
    }

    /// See [`Session::set_token_cache`].
    pub fn set_token_cache(&mut self, cache: Rc<TokenCache>) {
        self.session.set_token_cache(cache);
    }

    /// Whether a refusal closed the connection.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// `size` bytes from the client are in `buffer`. `identify` says who the peer is under
    /// the current configuration: asked on the first call and again at each
    /// re-authentication (see [`Session::downstream`]). On a refusal the chunk has been
    /// dropped and the caller closes the connection; chunks after a refusal are dropped.
    pub fn downstream(
        &mut self,
        settings: &SessionSettings,
        size: usize,
        buffer: &mut dyn HostBuffer,
        clock: &mut dyn Clock,
        mut identify: impl FnMut() -> Identification,
    ) -> Result<Option<Opened>, Refusal> {
        if self.refused {
            // Best effort: the connection is closing either way.
            let _ = splice::discard(buffer, size);
            return Ok(None);
        }
        let result = self.follow_downstream(settings, size, buffer, clock, &mut identify);
        if result.is_err() {
            self.refused = true;
            let _ = splice::discard(buffer, size);
        }
        result
    }

    fn follow_downstream(
        &mut self,
        settings: &SessionSettings,
        size: usize,
        buffer: &mut dyn HostBuffer,
        clock: &mut dyn Clock,
        identify: &mut impl FnMut() -> Identification,
    ) -> Result<Option<Opened>, Refusal> {
        // A token with iat = 0 would be refused by the broker and a re-authentication
        // planned from time 0 would come at once: without a clock, refuse.
        let now = clock
            .now_ms()
            .map_err(|e| Refusal::host("cannot read the clock", e))?;
        let mut opened = None;
        let mut first_authentication = None;
        if !self.session.is_started() {
            let identification = identify();
            let start = self.session.start(settings, &identification, now)?;
            let passed_through = match start {
                Start::Inject(bytes) => {
                    first_authentication = Some(bytes);
                    false
                }
                Start::PassThrough => true,
            };
            opened = Some(Opened {
                identification,
                passed_through,
            });
        }
        let reauthentication = self
            .session
            .downstream(settings, size, buffer, now, identify)?;
        // The insertion point is an offset in the chunk as it arrived: insert there first,
        // then put the first authentication in front.
        if let Some(injection) = reauthentication {
            splice::insert_at(buffer, injection.offset, &injection.bytes)
                .map_err(|e| Refusal::host("cannot insert the re-authentication", e))?;
        }
        if let Some(bytes) = first_authentication {
            splice::prepend(buffer, &bytes)
                .map_err(|e| Refusal::host("cannot inject the SASL requests", e))?;
        }
        Ok(opened)
    }

    /// `size` bytes from the broker are in `buffer`. On a refusal the chunk has been
    /// dropped (nothing of a failed authentication reaches the client) and the caller
    /// closes the connection. After a refusal in either direction every chunk from the
    /// broker is dropped: Envoy flushes what it holds for the client before it closes, and
    /// hidden SASL answers or the tail of a frame must not be part of it.
    pub fn upstream(
        &mut self,
        settings: &SessionSettings,
        size: usize,
        buffer: &mut dyn HostBuffer,
        clock: &mut dyn Clock,
    ) -> Result<Option<Authenticated>, Refusal> {
        if self.refused {
            let _ = splice::discard(buffer, size);
            return Ok(None);
        }
        let result = self.follow_upstream(settings, size, buffer, clock);
        if result.is_err() {
            self.refused = true;
            // Best effort: the connection is closed either way.
            let _ = splice::discard(buffer, size);
        }
        result
    }

    fn follow_upstream(
        &mut self,
        settings: &SessionSettings,
        size: usize,
        buffer: &mut dyn HostBuffer,
        clock: &mut dyn Clock,
    ) -> Result<Option<Authenticated>, Refusal> {
        let now = clock
            .now_ms()
            .map_err(|e| Refusal::host("cannot read the clock", e))?;
        let outcome = self.session.upstream(settings, size, buffer, now)?;
        if let Some(edits) = outcome.edits {
            splice::apply_edits(buffer, size, &edits)
                .map_err(|e| Refusal::host("cannot rewrite the broker's bytes", e))?;
        }
        Ok(outcome.authenticated)
    }
}
