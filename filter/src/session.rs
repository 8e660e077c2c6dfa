//! One connection's state machine, sans-IO: the glue feeds it events (first data with
//! the peer's identity, downstream and upstream chunks) and carries out its decisions.

use std::ops::Range;

use kafka_codec::sasl::{self, AuthenticateResponse};
use kafka_codec::{
    api_key, ChunkEdits, FrameError, HeaderDepth, RequestScanner, RequestScannerConfig,
    ResponseScanner, ResponseScannerConfig, ResponseStep, ScanStep,
};
use serde::Deserialize;

use crate::token;

/// Correlation ids of the injected requests. Kafka's Java client reserves the top eight
/// ids for its own SASL requests and never uses them for ordinary requests, so they cannot
/// collide with a client's ids; the injected answers also arrive before any client answer.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    pub on_no_identity: NoIdentityPolicy,
    pub on_client_sasl: ClientSaslPolicy,
    pub token_lifetime_secs: u64,
    pub max_frame_bytes: u32,
    pub client_id: String,
}

/// What the glue found out about the peer on the first downstream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identification {
    Principal { identity: String, principal: String },
    NoMtls,
    NoPrincipal { identity: String, reason: String },
}

/// Reads ranges of the chunk being processed (from Envoy's buffer, or a slice in tests).
pub trait ChunkSource {
    fn read(&mut self, range: Range<usize>) -> Option<Vec<u8>>;
}

impl ChunkSource for &[u8] {
    fn read(&mut self, range: Range<usize>) -> Option<Vec<u8>> {
        self.get(range).map(<[u8]>::to_vec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    NoIdentity,
    AuthFailed,
    ClientSasl,
    Protocol,
}

/// The connection must be closed; `message` is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The decision on the first downstream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Put these bytes in front of the client's first byte.
    Inject(Vec<u8>),
    /// Forward the connection without an identity.
    PassThrough,
}

/// The decision on a chunk from the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamOutcome {
    /// How to rewrite the chunk; None leaves it untouched.
    pub edits: Option<ChunkEdits>,
    /// Set when this chunk completed authentication: the broker's session lifetime (ms,
    /// 0 when the broker does not require re-authentication).
    pub authenticated: Option<i64>,
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
}

impl Session {
    pub fn new(settings: &SessionSettings) -> Self {
        Self {
            phase: Phase::New,
            requests: RequestScanner::new(RequestScannerConfig {
                max_frame_bytes: settings.max_frame_bytes,
                depth: HeaderDepth::Fixed,
                max_client_id_bytes: 0,
            }),
            responses: ResponseScanner::new(ResponseScannerConfig {
                max_frame_bytes: settings.max_frame_bytes,
                ..Default::default()
            }),
        }
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
        now_unix_secs: u64,
    ) -> Result<Start, Refusal> {
        let why = match identification {
            Identification::Principal { principal, .. } => {
                let token =
                    token::unsecured_jwt(principal, now_unix_secs, settings.token_lifetime_secs);
                let bytes = injected_requests(&settings.client_id, &token)?;
                self.responses.hide(HANDSHAKE_CORRELATION_ID);
                self.responses.hide(AUTHENTICATE_CORRELATION_ID);
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
                Ok(Start::PassThrough)
            }
        }
    }

    /// A chunk of client bytes: follow request frames, refuse client SASL.
    pub fn downstream(&mut self, len: usize, src: &mut dyn ChunkSource) -> Result<(), Refusal> {
        match self.phase {
            Phase::New => {
                return Err(Refusal::new(
                    RefusalKind::Protocol,
                    "client data before the session started",
                ))
            }
            Phase::PassThrough {
                client_sasl_allowed: true,
            } => return Ok(()),
            _ => {}
        }
        self.requests.begin_chunk(len);
        loop {
            match self.requests.poll().map_err(protocol("request"))? {
                ScanStep::Read(range) => {
                    let bytes = read(src, range)?;
                    self.requests.supply(&bytes).map_err(protocol("request"))?;
                }
                ScanStep::Frame(frame) => {
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
                }
                ScanStep::ChunkDone => return Ok(()),
            }
        }
    }

    /// A chunk of broker bytes: while authenticating, remove and check the answers to the
    /// injected requests; afterwards the stream is not inspected.
    pub fn upstream(
        &mut self,
        len: usize,
        src: &mut dyn ChunkSource,
    ) -> Result<UpstreamOutcome, Refusal> {
        if self.phase != Phase::Authenticating && self.responses.is_idle() {
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
                        self.phase = Phase::Authenticated;
                        outcome.authenticated = Some(answer.session_lifetime_ms);
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

fn injected_requests(client_id: &str, token: &str) -> Result<Vec<u8>, Refusal> {
    let internal = |e: sasl::SaslError| Refusal::new(RefusalKind::Protocol, e.to_string());
    let mut bytes = sasl::handshake_request(HANDSHAKE_CORRELATION_ID, client_id, sasl::OAUTHBEARER)
        .map_err(internal)?;
    bytes.extend(
        sasl::authenticate_request(
            AUTHENTICATE_CORRELATION_ID,
            client_id,
            AUTHENTICATE_VERSION,
            &token::client_first_message(token),
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
    Ok(answer)
}

fn read(src: &mut dyn ChunkSource, range: Range<usize>) -> Result<Vec<u8>, Refusal> {
    let len = range.len();
    match src.read(range) {
        Some(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(Refusal::new(
            RefusalKind::Protocol,
            "host returned fewer bytes than the buffer holds",
        )),
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
