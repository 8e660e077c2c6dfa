//! Follows the client→broker stream: frame boundaries and request headers only.

use std::ops::Range;

use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::Message;

use crate::accumulator::{be_i16, be_i32, decode_uvarint, Accumulator, Varint};
use crate::cursor::Cursor;
use crate::error::check_size;
use crate::{api_key, FrameError, DEFAULT_MAX_FRAME_BYTES, SIZE_PREFIX_BYTES};

/// Size prefix plus the fixed part of every request header (api key, api version,
/// correlation id): read in one step, so a frame usually costs a single host read.
const PREFIX_BYTES: usize = SIZE_PREFIX_BYTES + 8;
/// The fixed header fields inside the frame body.
const FIXED_HEADER_BYTES: u64 = 8;

/// The newest Produce version whose body layout the scanner reads `acks` from. Every
/// version up to it is checked against `kafka-protocol`'s encoder by the property tests;
/// a newer one may have moved `acks`, so it is an error rather than a guess.
pub const MAX_PRODUCE_VERSION: i16 = ProduceRequest::VERSIONS.max;

/// How much of each request header the scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderDepth {
    /// Api key, api version, correlation id: one read of 12 bytes per frame.
    Fixed,
    /// Also `acks` of Produce requests, so a caller knows which requests get no response
    /// (6 more bytes per Produce request, never record data).
    ProduceAcks,
    /// The whole request header of every frame (client id, tagged fields) is walked and
    /// must lie inside the frame, as a broker's header parser would need it; an api key
    /// `kafka-protocol` does not know is an error.
    WholeHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestScannerConfig {
    /// Largest frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: u32,
    pub depth: HeaderDepth,
}

impl Default for RequestScannerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            depth: HeaderDepth::Fixed,
        }
    }
}

/// One request frame, reported as soon as its header has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// Offset of the frame's size prefix in the whole request stream.
    pub stream_offset: u64,
    /// Bytes after the size prefix.
    pub size: u32,
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// `acks` of a Produce request when [`HeaderDepth::ProduceAcks`] asks for it.
    pub produce_acks: Option<i16>,
}

impl RequestFrame {
    /// Bytes the frame occupies in the stream, size prefix included.
    pub fn total_len(&self) -> u64 {
        u64::from(self.size) + SIZE_PREFIX_BYTES as u64
    }

    /// A Produce request with `acks=0`: the broker sends no response to it.
    pub fn expects_no_response(&self) -> bool {
        self.api_key == api_key::PRODUCE && self.produce_acks == Some(0)
    }
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStep {
    /// Copy this byte range of the current chunk and hand it to [`RequestScanner::supply`].
    Read(Range<usize>),
    /// A request header has been read.
    Frame(RequestFrame),
    /// Everything in the current chunk has been accounted for (payload bytes are skipped).
    ChunkDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Prefix,
    ClientIdLen,
    ClientId { left: u32 },
    TagCount,
    TagKey { tags_left: u32 },
    TagLen { tags_left: u32 },
    TagData { tags_left: u32, left: u32 },
    TxnIdLen,
    TxnIdLenCompact,
    TxnId { left: u32 },
    Acks,
    Payload { left: u64 },
}

/// How a step takes its bytes.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// Into the accumulator until it holds this many bytes.
    Exact(usize),
    /// One byte at a time into the accumulator until the varint ends.
    Varint,
    /// Accounted for without being read.
    Skip(u64),
}

/// Incremental request-stream scanner: a sans-IO state machine.
///
/// ```text
/// scanner.begin_chunk(len);
/// loop {
///     match scanner.poll()? {
///         ScanStep::Read(range) => scanner.supply(&host_read(range))?,
///         ScanStep::Frame(frame) => handle(frame),
///         ScanStep::ChunkDone => break,
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RequestScanner {
    config: RequestScannerConfig,
    cursor: Cursor,
    step: Step,
    acc: Accumulator,
    frame: FrameInProgress,
    ready: Option<RequestFrame>,
}

#[derive(Debug, Clone, Default)]
struct FrameInProgress {
    start: u64,
    size: u32,
    /// Bytes of the frame body accounted for so far.
    consumed: u64,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    header_version: i16,
    wants_acks: bool,
    produce_acks: Option<i16>,
}

impl RequestScanner {
    pub fn new(config: RequestScannerConfig) -> Self {
        Self {
            config,
            cursor: Cursor::default(),
            step: Step::Prefix,
            acc: Accumulator::default(),
            frame: FrameInProgress::default(),
            ready: None,
        }
    }

    /// The next `len` bytes of the stream are available at chunk offsets `0..len`.
    /// Call after the previous chunk reported [`ScanStep::ChunkDone`].
    pub fn begin_chunk(&mut self, len: usize) {
        self.cursor.begin(len);
    }

    /// True between frames: the bytes seen so far end exactly at a frame boundary.
    pub fn at_frame_boundary(&self) -> bool {
        self.step == Step::Prefix && self.acc.len() == 0 && !self.cursor.is_failed()
    }

    /// Offset in the stream of the next byte the scanner has not accounted for.
    pub fn stream_position(&self) -> u64 {
        self.cursor.stream_position()
    }

    pub fn poll(&mut self) -> Result<ScanStep, FrameError> {
        self.cursor.check()?;
        if let Some(frame) = self.ready.take() {
            return Ok(ScanStep::Frame(frame));
        }
        match self.next_step() {
            Ok(step) => Ok(step),
            Err(err) => self.cursor.fail(err),
        }
    }

    /// Hands over the bytes of the range returned by the last [`ScanStep::Read`].
    pub fn supply(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.cursor.accept(bytes)?;
        if let Err(err) = self.take(bytes) {
            return self.cursor.fail(err);
        }
        Ok(())
    }

    /// Scans bytes the caller holds itself. Kept for callers without a host buffer: the
    /// tests, the fuzz targets and the benchmark drive the scanner through it.
    pub fn scan_slice(&mut self, data: &[u8]) -> Result<Vec<RequestFrame>, FrameError> {
        let mut frames = Vec::new();
        self.begin_chunk(data.len());
        loop {
            match self.poll()? {
                ScanStep::Read(range) => self.supply(data.get(range).unwrap_or(&[]))?,
                ScanStep::Frame(frame) => frames.push(frame),
                ScanStep::ChunkDone => return Ok(frames),
            }
        }
    }

    fn next_step(&mut self) -> Result<ScanStep, FrameError> {
        loop {
            match self.need()? {
                Need::Skip(0) => {
                    self.after_skip()?;
                    // Skipping a client id or a tagged field may complete a header.
                    if let Some(frame) = self.ready.take() {
                        return Ok(ScanStep::Frame(frame));
                    }
                }
                Need::Skip(left) => {
                    let avail = self.cursor.available();
                    if avail == 0 {
                        return Ok(ScanStep::ChunkDone);
                    }
                    let n = left.min(avail as u64);
                    self.cursor.skip(n as usize);
                    self.consume(n);
                    self.reduce_skip(n);
                }
                need => {
                    if self.cursor.available() == 0 {
                        return Ok(ScanStep::ChunkDone);
                    }
                    let want = match need {
                        Need::Exact(n) => n.saturating_sub(self.acc.len()),
                        _ => 1,
                    };
                    return Ok(ScanStep::Read(self.cursor.read(want)));
                }
            }
        }
    }

    fn need(&self) -> Result<Need, FrameError> {
        let need = match self.step {
            Step::Prefix => return Ok(Need::Exact(PREFIX_BYTES)),
            Step::Payload { left } => return Ok(Need::Skip(left)),
            Step::ClientIdLen | Step::TxnIdLen | Step::Acks => Need::Exact(2),
            Step::TagCount | Step::TagKey { .. } | Step::TagLen { .. } | Step::TxnIdLenCompact => {
                Need::Varint
            }
            Step::ClientId { left } | Step::TagData { left, .. } | Step::TxnId { left } => {
                Need::Skip(u64::from(left))
            }
        };
        // Header fields must lie inside the frame.
        let more = match need {
            Need::Exact(n) => n.saturating_sub(self.acc.len()) as u64,
            Need::Varint => 1,
            Need::Skip(n) => n,
        };
        if self.frame.consumed + more > u64::from(self.frame.size) {
            return Err(FrameError::TruncatedHeader {
                size: self.frame.size,
                needed: self.frame.consumed + more,
            });
        }
        Ok(need)
    }

    fn consume(&mut self, n: u64) {
        if self.step != Step::Prefix {
            self.frame.consumed += n;
        }
    }

    fn reduce_skip(&mut self, n: u64) {
        let less = |left: u32| left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
        self.step = match self.step {
            Step::ClientId { left } => Step::ClientId { left: less(left) },
            Step::TagData { tags_left, left } => Step::TagData {
                tags_left,
                left: less(left),
            },
            Step::TxnId { left } => Step::TxnId { left: less(left) },
            Step::Payload { left } => Step::Payload {
                left: left.saturating_sub(n),
            },
            other => other,
        };
    }

    /// A skipping step has reached its end.
    fn after_skip(&mut self) -> Result<(), FrameError> {
        match self.step {
            Step::ClientId { .. } => self.after_client_id(),
            Step::TagData { tags_left, .. } => self.after_tag(tags_left),
            Step::TxnId { .. } => {
                self.step = Step::Acks;
                Ok(())
            }
            Step::Payload { .. } => {
                self.step = Step::Prefix;
                Ok(())
            }
            _ => Err(impossible()),
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.consume(bytes.len() as u64);
        self.acc.extend(bytes)?;
        match self.step {
            Step::Prefix if self.acc.len() < PREFIX_BYTES => Ok(()),
            Step::Prefix => self.start_frame(),
            Step::ClientIdLen | Step::TxnIdLen | Step::Acks => {
                if self.acc.len() < 2 {
                    return Ok(());
                }
                let value = be_i16(self.acc.bytes()).ok_or_else(impossible)?;
                self.acc.clear();
                self.on_i16(value)
            }
            Step::TagCount | Step::TagKey { .. } | Step::TagLen { .. } | Step::TxnIdLenCompact => {
                match decode_uvarint(self.acc.bytes())? {
                    Varint::NeedMore => Ok(()),
                    Varint::Complete(value) => {
                        self.acc.clear();
                        self.on_varint(value)
                    }
                }
            }
            Step::ClientId { .. }
            | Step::TagData { .. }
            | Step::TxnId { .. }
            | Step::Payload { .. } => Err(impossible()),
        }
    }

    fn start_frame(&mut self) -> Result<(), FrameError> {
        let bytes = self.acc.bytes();
        let raw_size = be_i32(bytes).ok_or_else(impossible)?;
        let api_key = be_i16(bytes.get(4..).unwrap_or(&[])).ok_or_else(impossible)?;
        let api_version = be_i16(bytes.get(6..).unwrap_or(&[])).ok_or_else(impossible)?;
        let correlation_id = be_i32(bytes.get(8..).unwrap_or(&[])).ok_or_else(impossible)?;
        let size = check_size(raw_size, self.config.max_frame_bytes)?;
        if u64::from(size) < FIXED_HEADER_BYTES {
            return Err(FrameError::TruncatedHeader {
                size,
                needed: FIXED_HEADER_BYTES,
            });
        }
        self.acc.clear();
        let known = ApiKey::try_from(api_key).ok();
        let wants_acks =
            self.config.depth == HeaderDepth::ProduceAcks && api_key == api_key::PRODUCE;
        if wants_acks && !(0..=MAX_PRODUCE_VERSION).contains(&api_version) {
            return Err(FrameError::UnsupportedProduceVersion {
                version: api_version,
                max: MAX_PRODUCE_VERSION,
            });
        }
        let header_version = match (self.config.depth, known) {
            (HeaderDepth::WholeHeader, None) => {
                return Err(FrameError::UnknownApiKey { api_key });
            }
            (_, Some(key)) => key.request_header_version(api_version),
            (_, None) => 0,
        };
        self.frame = FrameInProgress {
            start: self
                .cursor
                .stream_position()
                .saturating_sub(PREFIX_BYTES as u64),
            size,
            consumed: FIXED_HEADER_BYTES,
            api_key,
            api_version,
            correlation_id,
            header_version,
            wants_acks,
            produce_acks: None,
        };
        let walk = wants_acks || self.config.depth == HeaderDepth::WholeHeader;
        if walk && header_version >= 1 {
            self.step = Step::ClientIdLen;
            Ok(())
        } else if wants_acks {
            self.start_produce_body();
            Ok(())
        } else {
            self.finish_header();
            Ok(())
        }
    }

    fn on_i16(&mut self, value: i16) -> Result<(), FrameError> {
        match self.step {
            Step::ClientIdLen => match u32::try_from(value) {
                // A negative length is a null client id.
                Err(_) | Ok(0) => self.after_client_id(),
                Ok(left) => {
                    self.step = Step::ClientId { left };
                    Ok(())
                }
            },
            Step::TxnIdLen => {
                self.step = match u32::try_from(value) {
                    Err(_) | Ok(0) => Step::Acks,
                    Ok(left) => Step::TxnId { left },
                };
                Ok(())
            }
            Step::Acks => {
                self.frame.produce_acks = Some(value);
                self.finish_header();
                Ok(())
            }
            _ => Err(impossible()),
        }
    }

    fn on_varint(&mut self, value: u32) -> Result<(), FrameError> {
        match self.step {
            Step::TagCount if value == 0 => self.after_header(),
            Step::TagCount => {
                self.step = Step::TagKey { tags_left: value };
                Ok(())
            }
            Step::TagKey { tags_left } => {
                self.step = Step::TagLen { tags_left };
                Ok(())
            }
            Step::TagLen { tags_left } => {
                self.step = Step::TagData {
                    tags_left,
                    left: value,
                };
                Ok(())
            }
            Step::TxnIdLenCompact => {
                // Compact strings store length + 1; 0 is null.
                self.step = match value.checked_sub(1) {
                    None | Some(0) => Step::Acks,
                    Some(left) => Step::TxnId { left },
                };
                Ok(())
            }
            _ => Err(impossible()),
        }
    }

    fn after_client_id(&mut self) -> Result<(), FrameError> {
        if self.frame.header_version >= 2 {
            self.step = Step::TagCount;
            Ok(())
        } else {
            self.after_header()
        }
    }

    /// One tagged field is done; `tags_left` counts it.
    fn after_tag(&mut self, tags_left: u32) -> Result<(), FrameError> {
        match tags_left.saturating_sub(1) {
            0 => self.after_header(),
            n => {
                self.step = Step::TagKey { tags_left: n };
                Ok(())
            }
        }
    }

    fn after_header(&mut self) -> Result<(), FrameError> {
        if self.frame.wants_acks {
            self.start_produce_body();
        } else {
            self.finish_header();
        }
        Ok(())
    }

    /// Produce bodies start with `acks` (v0-2), or a transactional id then `acks`: a
    /// nullable string (v3-8) or a compact nullable string (v9+).
    fn start_produce_body(&mut self) {
        self.step = match self.frame.api_version {
            v if v <= 2 => Step::Acks,
            v if v <= 8 => Step::TxnIdLen,
            _ => Step::TxnIdLenCompact,
        };
    }

    fn finish_header(&mut self) {
        let frame = &self.frame;
        self.ready = Some(RequestFrame {
            stream_offset: frame.start,
            size: frame.size,
            api_key: frame.api_key,
            api_version: frame.api_version,
            correlation_id: frame.correlation_id,
            produce_acks: frame.produce_acks,
        });
        self.step = Step::Payload {
            left: u64::from(frame.size).saturating_sub(frame.consumed),
        };
    }
}

/// A state the scanner's own transitions never produce; an error rather than a panic.
fn impossible() -> FrameError {
    FrameError::MalformedHeader {
        reason: "request scanner reached an impossible state",
    }
}
