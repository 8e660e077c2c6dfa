//! Sans-IO, incremental codec for the two byte streams of one Kafka connection.
//!
//! Built for a proxy (a proxy-wasm filter) that follows a connection while the bytes stay
//! in the host: the scanners announce which byte ranges of the current chunk they need
//! ([`ScanStep::Read`] from [`RequestScanner::poll`], [`ResponseStep::Read`] from
//! [`ResponseScanner::poll`]), the caller copies only those ranges in, and payload bytes
//! are skipped without being read. Framing is written
//! by hand because no library does it incrementally; message bodies and headers of the
//! frames a proxy injects or inspects are encoded and decoded with `kafka-protocol`.
//!
//! Nothing here panics on any input: malformed streams produce a [`FrameError`].

mod accumulator;
mod cursor;
mod error;
pub mod request;
pub mod response;
pub mod sasl;

pub use error::FrameError;
pub use request::{
    HeaderDepth, RequestFrame, RequestScanner, RequestScannerConfig, ScanStep, MAX_PRODUCE_VERSION,
};
pub use response::{
    ChunkEdits, HiddenResponse, ResponseScanner, ResponseScannerConfig, ResponseStep,
};

/// Kafka's own default for `socket.request.max.bytes`: the largest request a broker accepts.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 100 * 1024 * 1024;

/// Size of the length prefix in front of every Kafka frame.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Api keys a proxy cares about (numbers from the Kafka protocol).
pub mod api_key {
    pub const PRODUCE: i16 = 0;
    pub const API_VERSIONS: i16 = 18;
    pub const SASL_HANDSHAKE: i16 = 17;
    pub const SASL_AUTHENTICATE: i16 = 36;
}

/// Helpers for fuzz targets; public so `cargo test` can replay the fuzz corpus with the
/// very same code the fuzzers run.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
