//! The frames a proxy injects to authenticate a connection, and the broker's answers.
//!
//! Encoding and decoding of headers and bodies is done by `kafka-protocol`; this module
//! adds the size prefix and turns library errors into [`SaslError`].

use std::fmt;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

pub const OAUTHBEARER: &str = "OAUTHBEARER";

/// SaslHandshake v1: authentication bytes travel in SaslAuthenticate requests (KIP-152).
pub const HANDSHAKE_VERSION: i16 = 1;

/// Highest SaslAuthenticate version a proxy should send; v1+ carries the broker's
/// session lifetime (KIP-368), v2 is the flexible encoding.
pub const MAX_AUTHENTICATE_VERSION: i16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    UnsupportedVersion(i16),
    Encode(String),
    Decode(String),
    UnexpectedCorrelationId { expected: i32, got: i32 },
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslError::UnsupportedVersion(v) => {
                write!(f, "SaslAuthenticate version {v} is not supported (0-2)")
            }
            SaslError::Encode(e) => write!(f, "cannot encode SASL request: {e}"),
            SaslError::Decode(e) => write!(f, "cannot decode SASL response: {e}"),
            SaslError::UnexpectedCorrelationId { expected, got } => write!(
                f,
                "response carries correlation id {got}, expected {expected}"
            ),
        }
    }
}

impl std::error::Error for SaslError {}

/// SaslHandshake v1 request frame (size prefix included).
pub fn handshake_request(
    correlation_id: i32,
    client_id: &str,
    mechanism: &str,
) -> Result<Vec<u8>, SaslError> {
    let body =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.to_owned()));
    frame(
        ApiKey::SaslHandshake,
        HANDSHAKE_VERSION,
        correlation_id,
        client_id,
        &body,
    )
}

/// SaslAuthenticate request frame (size prefix included) carrying `auth_bytes`.
pub fn authenticate_request(
    correlation_id: i32,
    client_id: &str,
    version: i16,
    auth_bytes: &[u8],
) -> Result<Vec<u8>, SaslError> {
    check_authenticate_version(version)?;
    let body =
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(auth_bytes));
    frame(
        ApiKey::SaslAuthenticate,
        version,
        correlation_id,
        client_id,
        &body,
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    pub mechanisms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateResponse {
    pub correlation_id: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub auth_bytes: Vec<u8>,
    /// 0 when the broker does not require re-authentication (or for version 0).
    pub session_lifetime_ms: i64,
}

/// Parses a SaslHandshake v1 response frame (without its size prefix).
pub fn handshake_response(frame: &[u8]) -> Result<HandshakeResponse, SaslError> {
    let mut buf = Bytes::copy_from_slice(frame);
    let header = decode_header(&mut buf, ApiKey::SaslHandshake, HANDSHAKE_VERSION)?;
    let body = SaslHandshakeResponse::decode(&mut buf, HANDSHAKE_VERSION)
        .map_err(|e| SaslError::Decode(e.to_string()))?;
    Ok(HandshakeResponse {
        correlation_id: header.correlation_id,
        error_code: body.error_code,
        mechanisms: body.mechanisms.iter().map(|m| m.to_string()).collect(),
    })
}

/// Parses a SaslAuthenticate response frame (without its size prefix).
pub fn authenticate_response(
    frame: &[u8],
    version: i16,
) -> Result<AuthenticateResponse, SaslError> {
    check_authenticate_version(version)?;
    let mut buf = Bytes::copy_from_slice(frame);
    let header = decode_header(&mut buf, ApiKey::SaslAuthenticate, version)?;
    let body = SaslAuthenticateResponse::decode(&mut buf, version)
        .map_err(|e| SaslError::Decode(e.to_string()))?;
    Ok(AuthenticateResponse {
        correlation_id: header.correlation_id,
        error_code: body.error_code,
        error_message: body.error_message.map(|m| m.to_string()),
        auth_bytes: body.auth_bytes.to_vec(),
        session_lifetime_ms: body.session_lifetime_ms,
    })
}

/// Kafka's name for an error code, e.g. `SaslAuthenticationFailed`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(err) => format!("{err:?}"),
        None => format!("error code {code}"),
    }
}

fn check_authenticate_version(version: i16) -> Result<(), SaslError> {
    if (0..=MAX_AUTHENTICATE_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(SaslError::UnsupportedVersion(version))
    }
}

fn frame<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &T,
) -> Result<Vec<u8>, SaslError> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let header_version = key.request_header_version(version);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| SaslError::Encode(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| SaslError::Encode(e.to_string()))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| SaslError::Encode("frame larger than 2 GiB".to_owned()))?;
    if let Some(prefix) = buf.get_mut(..4) {
        prefix.copy_from_slice(&size.to_be_bytes());
    }
    Ok(buf.to_vec())
}

fn decode_header(buf: &mut Bytes, key: ApiKey, version: i16) -> Result<ResponseHeader, SaslError> {
    ResponseHeader::decode(buf, key.response_header_version(version))
        .map_err(|e| SaslError::Decode(e.to_string()))
}
