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

/// Exactly the bytes of `range` from a buffer held as a list of chunks (Envoy's raw slices,
/// as the native module sees its buffers), or an error when the chunks hold fewer.
pub fn read_chunks(chunks: &[&[u8]], range: Range<usize>) -> Result<Vec<u8>, HostError> {
    let wanted = range.len();
    let mut out = Vec::with_capacity(wanted);
    let mut offset = 0usize;
    for chunk in chunks {
        let end = offset.saturating_add(chunk.len());
        if end > range.start && offset < range.end {
            let from = range.start.saturating_sub(offset);
            let to = range.end.min(end) - offset;
            if let Some(part) = chunk.get(from..to) {
                out.extend_from_slice(part);
            }
        }
        offset = end;
        if offset >= range.end {
            break;
        }
    }
    if out.len() == wanted {
        Ok(out)
    } else {
        Err(HostError::ShortRead {
            wanted,
            got: out.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_read_across_chunk_borders() {
        let chunks: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        assert_eq!(read_chunks(&chunks, 0..8).unwrap(), b"abcdefgh");
        assert_eq!(read_chunks(&chunks, 2..5).unwrap(), b"cde");
        assert_eq!(read_chunks(&chunks, 3..3).unwrap(), b"");
        assert_eq!(read_chunks(&chunks, 7..8).unwrap(), b"h");
        assert_eq!(
            read_chunks(&chunks, 6..10),
            Err(HostError::ShortRead { wanted: 4, got: 2 })
        );
    }
}
