use std::fmt;

/// Why a stream cannot be followed any further. A proxy closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The 4-byte size prefix is negative.
    NegativeSize { size: i32 },
    /// The size prefix is above the configured maximum (Kafka's `socket.request.max.bytes`).
    TooLarge { size: u32, max: u32 },
    /// The frame ends before the header the scanner has to read.
    TruncatedHeader { size: u32, needed: u64 },
    /// A header field cannot be decoded (e.g. an over-long varint).
    MalformedHeader { reason: &'static str },
    /// A frame the proxy has to read whole (an answer to its own request) is too large.
    HiddenFrameTooLarge { size: u32, max: u32 },
    /// The caller supplied a different number of bytes than the scanner asked for.
    ShortRead { wanted: usize, got: usize },
    /// The response at a position the caller expected an answer to its own request carries
    /// another correlation id: requests and responses are out of step.
    UnexpectedResponse { index: u64, expected: i32, got: i32 },
    /// A response the caller asked to remove had already begun to pass when it asked.
    HideTooLate { index: u64 },
    /// A Produce request newer than the layouts the scanner knows where to find `acks` in.
    UnsupportedProduceVersion { version: i16, max: i16 },
    /// An api key `kafka-protocol` does not know, where the whole header must be read.
    UnknownApiKey { api_key: i16 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NegativeSize { size } => {
                write!(f, "frame size {size} is negative")
            }
            FrameError::TooLarge { size, max } => write!(
                f,
                "frame size {size} exceeds the maximum of {max} bytes (socket.request.max.bytes)"
            ),
            FrameError::TruncatedHeader { size, needed } => write!(
                f,
                "frame of {size} bytes is too short for its header ({needed} bytes needed)"
            ),
            FrameError::MalformedHeader { reason } => write!(f, "malformed frame header: {reason}"),
            FrameError::HiddenFrameTooLarge { size, max } => write!(
                f,
                "response frame of {size} bytes to an injected request exceeds {max} bytes"
            ),
            FrameError::UnexpectedResponse {
                index,
                expected,
                got,
            } => write!(
                f,
                "response #{index} carries correlation id {got}, expected {expected}"
            ),
            FrameError::ShortRead { wanted, got } => write!(
                f,
                "caller supplied {got} bytes where the scanner asked for {wanted}"
            ),
            FrameError::HideTooLate { index } => write!(
                f,
                "response #{index} was to be removed but had begun to pass to the client"
            ),
            FrameError::UnsupportedProduceVersion { version, max } => write!(
                f,
                "Produce version {version} is not one whose acks the filter can read (0 to {max})"
            ),
            FrameError::UnknownApiKey { api_key } => write!(f, "unknown api key {api_key}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Validates a size prefix against the configured bounds.
pub(crate) fn check_size(raw: i32, max: u32) -> Result<u32, FrameError> {
    let size = u32::try_from(raw).map_err(|_| FrameError::NegativeSize { size: raw })?;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}
