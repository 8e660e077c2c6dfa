//! What the filter needs from its host, as traits: the proxy-wasm glue implements them on
//! Envoy's buffers and clock, the tests implement them on vectors with Envoy's semantics.

use std::fmt;
use std::ops::Range;

/// A host call that did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The call returned a status other than Ok (proxy-wasm status codes: 1 NotFound,
    /// 2 BadArgument, 7 SerializationFailure, 10 InternalFailure, ...).
    Status { call: &'static str, status: u32 },
    /// A buffer read returned another number of bytes than asked for.
    ShortRead { wanted: usize, got: usize },
    /// The host's answer cannot be represented (e.g. a time beyond u64 milliseconds).
    OutOfRange { call: &'static str },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Status { call, status } => write!(f, "{call} returned status {status}"),
            HostError::ShortRead { wanted, got } => {
                write!(f, "host returned {got} bytes where {wanted} were asked for")
            }
            HostError::OutOfRange { call } => write!(f, "{call} returned a value out of range"),
        }
    }
}

impl std::error::Error for HostError {}

/// Reads ranges of the chunk being processed.
pub trait ChunkSource {
    /// Exactly the bytes of `range`, or an error.
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError>;
}

impl ChunkSource for &[u8] {
    fn read(&mut self, range: Range<usize>) -> Result<Vec<u8>, HostError> {
        let wanted = range.len();
        self.get(range)
            .map(<[u8]>::to_vec)
            .ok_or(HostError::ShortRead {
                wanted,
                got: self.len().min(wanted),
            })
    }
}

/// One direction's buffer of the current chunk, editable the way Envoy edits it.
pub trait HostBuffer: ChunkSource {
    /// Envoy's `proxy_set_buffer_bytes(start, len, bytes)` on a connection buffer: with
    /// `start == 0` it drains `len` bytes from the front and puts `bytes` there; with
    /// `start` at or past the end it appends `bytes`; any other range is refused.
    fn replace(&mut self, start: usize, len: usize, bytes: &[u8]) -> Result<(), HostError>;
}

/// The host's clock.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> Result<u64, HostError>;
}
