//! One connection's state machine, sans-IO: the glue feeds it events (first data with
//! the peer's identity, downstream and upstream chunks) and carries out its decisions.

use std::fmt;
use std::ops::Range;
use std::rc::Rc;

use kafka_codec::sasl::{self, AuthenticateResponse};
use kafka_codec::{
    api_key, ChunkEdits, FrameError, HeaderDepth, RequestScanner, RequestScannerConfig,
    ResponseScanner, ResponseScannerConfig, ResponseStep, ScanStep,
};
use serde::Deserialize;

pub use crate::host::ChunkSource;
use crate::host::HostError;
use crate::token::TokenIssuer;
use crate::token_cache::TokenCache;

/// Correlation ids of the injected requests, inside the range Kafka's Java client reserves
/// for its own SASL requests (the top eight ids). Answers are not matched by id, though: a
/// client may use any id, so the filter counts the requests awaiting an answer and removes
/// the responses at its own requests' positions, then checks that they carry these ids.
pub const HANDSHAKE_CORRELATION_ID: i32 = i32::MAX - 7;
pub const AUTHENTICATE_CORRELATION_ID: i32 = i32::MAX - 6;
/// SaslAuthenticate v2 (Kafka 2.5+): flexible encoding, carries the session lifetime.
pub const AUTHENTICATE_VERSION: i16 = 2;

/// What to do with a connection that has no mTLS or no usable identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoIdentityPolicy {
    /// Close it (default): without an identity the filter cannot vouch for anyone.
    #[default]
    Reject,
    /// Forward it untouched: the broker sees an unauthenticated SASL connection.
    PassThrough,
}

/// What to do with a client that sends SaslHandshake or SaslAuthenticate itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSaslPolicy {
    /// Close it (default): a client must never choose its own principal.
    #[default]
    Reject,
    /// Let clients that have no identity (passed through by `on_no_identity`) authenticate
    /// with their own credentials. Never applies to a connection the filter authenticated.
    AllowWithoutIdentity,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub on_no_identity: NoIdentityPolicy,
    pub on_client_sasl: ClientSaslPolicy,
    pub tokens: TokenIssuer,
    pub max_frame_bytes: u32,
    pub client_id: String,
    /// Re-authenticate (KIP-368) before the broker's session ends.
    pub reauthenticate: bool,
}

/// Re-authenticate once 85% to 95% of the session lifetime has passed, like Kafka's Java
/// client: early enough that a busy broker answers before the session ends, and spread so
/// that connections opened together do not all re-authenticate together.
const REAUTH_EARLIEST_PERMILLE: u64 = 850;
const REAUTH_SPREAD_PERMILLE: u64 = 100;

/// Where in the session to re-authenticate, in per mille of its lifetime: drawn from the
/// connection's nonce and the authentication's sequence number (SplitMix64), so it differs
/// between connections and authentications yet is reproducible for a given nonce.
fn reauth_permille(nonce: u64, sequence: u64) -> u64 {
    let mut z = nonce ^ sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    REAUTH_EARLIEST_PERMILLE + z % (REAUTH_SPREAD_PERMILLE + 1)
}

/// `permille` per mille of `ms`, in milliseconds: a session of 1.5 s is re-authenticated
/// after 1.275 to 1.425 s, not after whole seconds of it.
fn permille_of(ms: u64, permille: u64) -> u64 {
    // Whole seconds and the rest apart: exact, and no 128-bit division in the .wasm.
    (ms / 1000)
        .saturating_mul(permille)
        .saturating_add(ms % 1000 * permille / 1000)
}

/// What the glue found out about the peer on the first downstream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identification {
    Principal { identity: String, principal: String },
    NoMtls,
    NoPrincipal { identity: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    NoIdentity,
    AuthFailed,
    ClientSasl,
    Protocol,
    /// The host (Envoy) failed a call the filter cannot do without: a buffer read or
    /// write, the clock.
    Host,
    /// At a re-authentication the current configuration gives the peer no principal or
    /// another one (Kafka refuses a change of principal on re-authentication).
    Reidentified,
}

impl RefusalKind {
    /// The `outcome=` of the log line.
    pub fn outcome(self) -> &'static str {
        match self {
            RefusalKind::NoIdentity => "rejected_no_identity",
            RefusalKind::AuthFailed => "auth_failed",
            RefusalKind::ClientSasl => "rejected_client_sasl",
            RefusalKind::Protocol => "protocol_error",
            RefusalKind::Host => "host_error",
            RefusalKind::Reidentified => "reidentified_closed",
        }
    }
}

/// The connection must be closed; `message` is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A host call failed while doing `what`.
    pub fn host(what: &str, error: HostError) -> Self {
        Self::new(RefusalKind::Host, format!("{what}: {error}"))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.outcome(), self.message)
    }
}

impl std::error::Error for Refusal {}

/// The decision on the first downstream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Put these bytes in front of the client's first byte.
    Inject(Vec<u8>),
    /// Forward the connection without an identity.
    PassThrough,
}

/// Bytes to insert into the client's stream at a request boundary of the current chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Offset in the current chunk (a frame boundary).
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// The broker accepted an (re-)authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// The broker's session lifetime in ms (0: the session does not expire).
    pub session_lifetime_ms: i64,
    /// False for the connection's first authentication.
    pub reauthentication: bool,
}

/// The decision on a chunk from the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamOutcome {
    /// How to rewrite the chunk; None leaves it untouched.
    pub edits: Option<ChunkEdits>,
    /// Set when this chunk completed an authentication.
    pub authenticated: Option<Authenticated>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New,
    Authenticating,
    Authenticated,
    PassThrough { client_sasl_allowed: bool },
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    requests: RequestScanner,
    responses: ResponseScanner,
    principal: String,
    /// Requests sent upstream that the broker will answer (acks=0 Produce gets no answer),
    /// the injected ones included: the position of the next request's answer.
    answered_requests: u64,
    /// When to re-authenticate (ms since the epoch), once authenticated.
    reauth_at_ms: Option<u64>,
    reauth_in_flight: bool,
    authentications: u64,
    /// Makes signed tokens' `jti` unique across connections; seeds the re-authentication
    /// point.
    token_nonce: u64,
    /// Where tokens come from when set: the current configuration of the filter, so a
    /// re-authentication on a long-lived connection uses the current signing key.
    issuer: Option<Rc<TokenIssuer>>,
    /// Reuses the requests of the same principal across the VM's connections (set together
    /// with `issuer`: one cache per configuration); without it every token is fresh.
    token_cache: Option<Rc<TokenCache>>,
    /// `TokenIssuer::describe` of the issuer of the last token sent.
    last_token: String,
    /// The first request has been checked (connections the filter does not authenticate).
    opened: bool,
}

impl Session {
    pub fn new(settings: &SessionSettings) -> Self {
        // Pairing answers with requests needs Produce `acks`; without re-authentication
        // the filter reads only the fixed 12-byte prefix of each request.
        let depth = if settings.reauthenticate {
            HeaderDepth::ProduceAcks
        } else {
            HeaderDepth::Fixed
        };
        Self {
            phase: Phase::New,
            requests: RequestScanner::new(RequestScannerConfig {
                max_frame_bytes: settings.max_frame_bytes,
                depth,
            }),
            responses: ResponseScanner::new(ResponseScannerConfig::default()),
            principal: String::new(),
            answered_requests: 0,
            reauth_at_ms: None,
            reauth_in_flight: false,
            authentications: 0,
            token_nonce: 0,
            issuer: None,
            token_cache: None,
            last_token: String::new(),
            opened: false,
        }
    }

    /// A value that differs between connections (the host's connection id and time).
    pub fn set_token_nonce(&mut self, nonce: u64) {
        self.token_nonce = nonce;
    }

    /// Tokens for every (re-)authentication from now on come from `issuer` instead of the
    /// settings' own: the glue hands in the current configuration's issuer before each
    /// chunk, so key rotation reaches connections opened before it.
    pub fn set_token_issuer(&mut self, issuer: Rc<TokenIssuer>) {
        self.issuer = Some(issuer);
    }

    /// (Re-)authentications from now on take their requests from `cache`, which must belong
    /// to the same configuration as the issuer (see `token_cache`).
    pub fn set_token_cache(&mut self, cache: Rc<TokenCache>) {
        self.token_cache = Some(cache);
    }

    /// The credential of the last token sent: `unsecured` or e.g. `ES256:2026-11`.
    pub fn last_token(&self) -> &str {
        &self.last_token
    }

    /// When the next re-authentication is due (ms since the epoch), if one is planned.
    pub fn reauthentication_due_at(&self) -> Option<u64> {
        self.reauth_at_ms
    }

    /// Successful authentications so far, re-authentications included.
    pub fn authentications(&self) -> u64 {
        self.authentications
    }

    /// SaslHandshake + SaslAuthenticate for the session's principal; their answers will be
    /// the next two responses after those of the requests already sent.
    fn authentication_requests(
        &mut self,
        settings: &SessionSettings,
        now_ms: u64,
    ) -> Result<Vec<u8>, Refusal> {
        let issuer = self.issuer.as_deref().unwrap_or(&settings.tokens);
        let make = || {
            let token = issuer
                .issue(
                    &self.principal,
                    now_ms / 1000,
                    self.token_nonce,
                    self.authentications,
                )
                .map_err(|e| {
                    Refusal::new(RefusalKind::AuthFailed, format!("cannot issue token: {e}"))
                })?;
            injected_requests(&settings.client_id, &token)
        };
        let bytes = match &self.token_cache {
            Some(cache) => cache
                .requests(&settings.client_id, &self.principal, now_ms, make)?
                .to_vec(),
            None => make()?,
        };
        self.last_token = issuer.describe();
        self.responses
            .hide_at(self.answered_requests, HANDSHAKE_CORRELATION_ID);
        self.responses
            .hide_at(self.answered_requests + 1, AUTHENTICATE_CORRELATION_ID);
        self.answered_requests += 2;
        Ok(bytes)
    }

    pub fn is_started(&self) -> bool {
        self.phase != Phase::New
    }

    pub fn is_authenticated(&self) -> bool {
        self.phase == Phase::Authenticated
    }

    /// Called once, on the first downstream data (after the TLS handshake).
    pub fn start(
        &mut self,
        settings: &SessionSettings,
        identification: &Identification,
        now_ms: u64,
    ) -> Result<Start, Refusal> {
        let why = match identification {
            Identification::Principal { principal, .. } => {
                self.principal = principal.clone();
                let bytes = self.authentication_requests(settings, now_ms)?;
                self.phase = Phase::Authenticating;
                return Ok(Start::Inject(bytes));
            }
            Identification::NoMtls => "no client certificate (connection is not mTLS)".to_owned(),
            Identification::NoPrincipal { identity, reason } => {
                format!("no principal for identity {identity:?}: {reason}")
            }
        };
        match settings.on_no_identity {
            NoIdentityPolicy::Reject => Err(Refusal::new(RefusalKind::NoIdentity, why)),
            NoIdentityPolicy::PassThrough => {
                self.phase = Phase::PassThrough {
                    client_sasl_allowed: settings.on_client_sasl
                        == ClientSaslPolicy::AllowWithoutIdentity,
                };
                // Nothing has been scanned yet: read whole headers from the start.
                self.requests = RequestScanner::new(RequestScannerConfig {
                    max_frame_bytes: settings.max_frame_bytes,
                    depth: HeaderDepth::WholeHeader,
                });
                Ok(Start::PassThrough)
            }
        }
    }

    /// A chunk of client bytes: follow request frames, refuse client SASL, and when the
    /// session is due for re-authentication, say where to insert the SASL requests.
    ///
    /// `identify` says who the peer is under the current configuration; it is asked at
    /// each re-authentication, and a peer that no longer maps to the session's principal
    /// closes the connection (`RefusalKind::Reidentified`) instead of being vouched for
    /// again under rules that were changed or removed.
    pub fn downstream(
        &mut self,
        settings: &SessionSettings,
        len: usize,
        src: &mut dyn ChunkSource,
        now_ms: u64,
        identify: &mut dyn FnMut() -> Identification,
    ) -> Result<Option<Injection>, Refusal> {
        match self.phase {
            Phase::New => {
                return Err(Refusal::new(
                    RefusalKind::Protocol,
                    "client data before the session started",
                ))
            }
            // Once the first request is checked, a client allowed to authenticate itself
            // speaks for itself.
            Phase::PassThrough {
                client_sasl_allowed: true,
            } if self.opened => return Ok(None),
            _ => {}
        }
        let mut injection = None;
        self.requests.begin_chunk(len);
        let chunk_start = self.requests.stream_position();
        loop {
            match self.requests.poll().map_err(protocol("request"))? {
                ScanStep::Read(range) => {
                    let bytes = read(src, range)?;
                    self.requests.supply(&bytes).map_err(protocol("request"))?;
                }
                ScanStep::Frame(frame) => {
                    if let Phase::PassThrough {
                        client_sasl_allowed,
                    } = self.phase
                    {
                        if !self.opened {
                            self.opened = true;
                            check_first_request(&frame, client_sasl_allowed)?;
                            if client_sasl_allowed {
                                return Ok(None);
                            }
                        }
                    }
                    if frame.api_key == api_key::SASL_HANDSHAKE
                        || frame.api_key == api_key::SASL_AUTHENTICATE
                    {
                        let name = if frame.api_key == api_key::SASL_HANDSHAKE {
                            "SaslHandshake"
                        } else {
                            "SaslAuthenticate"
                        };
                        return Err(Refusal::new(
                            RefusalKind::ClientSasl,
                            format!(
                                "client sent {name} (correlation id {}): clients must not \
                                 authenticate themselves through this listener",
                                frame.correlation_id
                            ),
                        ));
                    }
                    let starts_here = frame.stream_offset >= chunk_start;
                    if injection.is_none() && starts_here && self.reauth_due(now_ms) {
                        let offset =
                            usize::try_from(frame.stream_offset - chunk_start).map_err(|_| {
                                Refusal::new(RefusalKind::Protocol, "chunk offset overflow")
                            })?;
                        self.check_identity(&identify())?;
                        let bytes = self.authentication_requests(settings, now_ms)?;
                        self.reauth_in_flight = true;
                        injection = Some(Injection { offset, bytes });
                    }
                    if !frame.expects_no_response() {
                        self.answered_requests += 1;
                    }
                }
                ScanStep::ChunkDone => return Ok(injection),
            }
        }
    }

    /// Between client requests (a host timer, not a data event): when a re-authentication is
    /// due and the client's stream stands at a request boundary, the SASL requests to send
    /// upstream now. A connection that stays idle past its deadline would otherwise be
    /// re-authenticated only at its next request. `identify` is asked as in
    /// [`Session::downstream`].
    pub fn reauthenticate_between_requests(
        &mut self,
        settings: &SessionSettings,
        now_ms: u64,
        identify: &mut dyn FnMut() -> Identification,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        if !self.reauth_due(now_ms) || !self.requests.at_frame_boundary() {
            return Ok(None);
        }
        self.check_identity(&identify())?;
        let bytes = self.authentication_requests(settings, now_ms)?;
        self.reauth_in_flight = true;
        Ok(Some(bytes))
    }

    /// The peer, identified again at a re-authentication, must still map to the principal
    /// the session authenticated: Kafka refuses a change of principal, and a peer the
    /// current configuration refuses must not be vouched for again.
    fn check_identity(&self, identification: &Identification) -> Result<(), Refusal> {
        let why = match identification {
            Identification::Principal { principal, .. } if *principal == self.principal => {
                return Ok(())
            }
            Identification::Principal {
                identity,
                principal,
            } => format!(
                "identity {identity:?} maps to principal {principal:?} under the current \
                 configuration, not {:?}: Kafka refuses a change of principal on \
                 re-authentication",
                self.principal
            ),
            Identification::NoPrincipal { identity, reason } => format!(
                "no principal for identity {identity:?} under the current configuration: \
                 {reason}"
            ),
            Identification::NoMtls => {
                "no client certificate under the current configuration".to_owned()
            }
        };
        Err(Refusal::new(RefusalKind::Reidentified, why))
    }

    fn reauth_due(&self, now_ms: u64) -> bool {
        self.phase == Phase::Authenticated
            && !self.reauth_in_flight
            && self.reauth_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// A chunk of broker bytes: remove and check the answers to the injected requests.
    /// Without re-authentication the stream is not inspected once authenticated; with it,
    /// only response frame boundaries are followed (8 bytes read per response).
    pub fn upstream(
        &mut self,
        settings: &SessionSettings,
        len: usize,
        src: &mut dyn ChunkSource,
        now_ms: u64,
    ) -> Result<UpstreamOutcome, Refusal> {
        let following = match self.phase {
            Phase::Authenticating => true,
            Phase::Authenticated => settings.reauthenticate || !self.responses.is_idle(),
            Phase::New | Phase::PassThrough { .. } => false,
        };
        if !following {
            return Ok(UpstreamOutcome::default());
        }
        let mut outcome = UpstreamOutcome::default();
        self.responses.begin_chunk(len);
        loop {
            match self.responses.poll().map_err(protocol("response"))? {
                ResponseStep::Read(range) => {
                    let bytes = read(src, range)?;
                    self.responses
                        .supply(&bytes)
                        .map_err(protocol("response"))?;
                }
                ResponseStep::Hidden(hidden) => {
                    if hidden.correlation_id == HANDSHAKE_CORRELATION_ID {
                        check_handshake(&hidden.frame)?;
                    } else {
                        let answer = check_authenticate(&hidden.frame)?;
                        let lifetime = answer.session_lifetime_ms;
                        outcome.authenticated = Some(Authenticated {
                            session_lifetime_ms: lifetime,
                            reauthentication: self.authentications > 0,
                        });
                        self.authentications += 1;
                        self.phase = Phase::Authenticated;
                        self.reauth_in_flight = false;
                        let permille = reauth_permille(self.token_nonce, self.authentications);
                        self.reauth_at_ms = u64::try_from(lifetime)
                            .ok()
                            .filter(|ms| *ms > 0 && settings.reauthenticate)
                            .map(|ms| now_ms.saturating_add(permille_of(ms, permille)));
                    }
                }
                ResponseStep::ChunkDone => break,
            }
        }
        let edits = self.responses.finish_chunk();
        if !edits.is_noop() {
            outcome.edits = Some(edits);
        }
        Ok(outcome)
    }
}

/// The first request on a connection the filter did not authenticate. A broker with
/// GSSAPI enabled takes a first frame whose request header it cannot parse (an api key it
/// does not know, a header that does not fit) as a raw Kafka 0.9 GSSAPI token, so the
/// client would authenticate itself. The scanner has already walked the whole header
/// (`HeaderDepth::WholeHeader`); before authentication a broker accepts only ApiVersions
/// and SaslHandshake, so only those two may come first: any other key, even one the
/// filter knows, might be one the broker does not and reopen that path.
fn check_first_request(
    frame: &kafka_codec::RequestFrame,
    client_sasl_allowed: bool,
) -> Result<(), Refusal> {
    let allowed = frame.api_key == api_key::API_VERSIONS
        || (client_sasl_allowed && frame.api_key == api_key::SASL_HANDSHAKE);
    if allowed || frame.api_key == api_key::SASL_HANDSHAKE {
        // A refused SaslHandshake is reported as client SASL by the caller.
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::Protocol,
        format!(
            "first request on a connection without identity has api key {} (version {}): \
             only ApiVersions or SaslHandshake may open a connection the filter does not \
             authenticate",
            frame.api_key, frame.api_version
        ),
    ))
}

fn injected_requests(client_id: &str, token: &str) -> Result<Vec<u8>, Refusal> {
    let internal = |e: sasl::SaslError| Refusal::new(RefusalKind::Protocol, e.to_string());
    let mut bytes = sasl::handshake_request(HANDSHAKE_CORRELATION_ID, client_id, sasl::OAUTHBEARER)
        .map_err(internal)?;
    bytes.extend(
        sasl::authenticate_request(
            AUTHENTICATE_CORRELATION_ID,
            client_id,
            AUTHENTICATE_VERSION,
            &crate::token::client_first_message(token),
        )
        .map_err(internal)?,
    );
    Ok(bytes)
}

fn check_handshake(frame: &[u8]) -> Result<(), Refusal> {
    let answer = sasl::handshake_response(frame)
        .map_err(|e| Refusal::new(RefusalKind::AuthFailed, format!("SaslHandshake: {e}")))?;
    if answer.error_code != 0 {
        return Err(Refusal::new(
            RefusalKind::AuthFailed,
            format!(
                "broker refused SaslHandshake for OAUTHBEARER: {} (mechanisms enabled on this \
                 listener: {})",
                sasl::error_name(answer.error_code),
                answer.mechanisms.join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_authenticate(frame: &[u8]) -> Result<AuthenticateResponse, Refusal> {
    let answer = sasl::authenticate_response(frame, AUTHENTICATE_VERSION)
        .map_err(|e| Refusal::new(RefusalKind::AuthFailed, format!("SaslAuthenticate: {e}")))?;
    if answer.error_code != 0 {
        return Err(Refusal::new(
            RefusalKind::AuthFailed,
            format!(
                "broker refused the token: {}: {}",
                sasl::error_name(answer.error_code),
                answer.error_message.as_deref().unwrap_or("(no message)")
            ),
        ));
    }
    // A broker refusing an OAUTHBEARER token answers first with an error challenge and error
    // code 0 (RFC 7628 3.2.2, Kafka's OAuthBearerSaslServer: `{"status":"invalid_token"}`);
    // the error code would come only after the client acknowledged the challenge. A successful
    // answer carries no bytes, so any bytes here are a refusal.
    if !answer.auth_bytes.is_empty() {
        return Err(Refusal::new(
            RefusalKind::AuthFailed,
            format!(
                "broker refused the token: error challenge {}",
                loggable(&answer.auth_bytes)
            ),
        ));
    }
    Ok(answer)
}

/// At most 200 characters of what a broker sent, for a log line's quoted reason: double
/// quotes become single ones and control characters `?`.
fn loggable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(200)
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn read(src: &mut dyn ChunkSource, range: Range<usize>) -> Result<Vec<u8>, Refusal> {
    let wanted = range.len();
    match src.read(range) {
        Ok(bytes) if bytes.len() == wanted => Ok(bytes),
        Ok(bytes) => Err(Refusal::host(
            "cannot read the connection's bytes",
            HostError::ShortRead {
                wanted,
                got: bytes.len(),
            },
        )),
        Err(e) => Err(Refusal::host("cannot read the connection's bytes", e)),
    }
}

fn protocol(direction: &'static str) -> impl Fn(FrameError) -> Refusal {
    move |e| {
        Refusal::new(
            RefusalKind::Protocol,
            format!("malformed {direction} frame: {e}"),
        )
    }
}
