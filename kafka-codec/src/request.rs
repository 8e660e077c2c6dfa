//! Follows the client→broker stream: frame boundaries and request headers only.

use std::ops::Range;

use kafka_protocol::messages::ApiKey;

use crate::accumulator::{be_i16, be_i32, decode_uvarint, Accumulator, Varint};
use crate::error::check_size;
use crate::{api_key, FrameError, DEFAULT_MAX_FRAME_BYTES, SIZE_PREFIX_BYTES};

/// Size prefix plus the fixed part of every request header (api key, api version,
/// correlation id): read in one step, so a frame usually costs a single host read.
const PREFIX_BYTES: usize = SIZE_PREFIX_BYTES + 8;
/// The fixed header fields inside the frame body.
const FIXED_HEADER_BYTES: u64 = 8;

/// What the scanner reads of each request header beyond api key, version and correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderDepth {
    /// Api key, api version, correlation id: one read of 12 bytes per frame.
    Fixed,
    /// Also the client id.
    ClientId,
    /// Also `acks` of Produce requests (so a caller knows which requests get no response).
    ProduceAcks,
    /// Both the client id and Produce `acks`.
    Full,
}

impl HeaderDepth {
    fn client_id(self) -> bool {
        matches!(self, HeaderDepth::ClientId | HeaderDepth::Full)
    }
    fn produce_acks(self) -> bool {
        matches!(self, HeaderDepth::ProduceAcks | HeaderDepth::Full)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestScannerConfig {
    /// Largest frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: u32,
    pub depth: HeaderDepth,
    /// Client ids longer than this are truncated (they are only used in logs).
    pub max_client_id_bytes: usize,
}

impl Default for RequestScannerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            depth: HeaderDepth::Fixed,
            max_client_id_bytes: 256,
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
    /// The client id when [`HeaderDepth`] asks for it and the client sent one.
    pub client_id: Option<String>,
    /// `acks` of a Produce request when [`HeaderDepth`] asks for it.
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
    ClientId { left: u32, capture: bool },
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
enum Need {
    Exact(usize),
    Varint,
    Capture(u32),
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
    step: Step,
    acc: Accumulator,
    /// Offset of the current chunk's first byte in the stream.
    chunk_base: u64,
    chunk_len: usize,
    pos: usize,
    outstanding_read: Option<usize>,
    frame: FrameInProgress,
    ready: Option<RequestFrame>,
    failed: Option<FrameError>,
    frames_seen: u64,
}

#[derive(Debug, Clone, Default)]
struct FrameInProgress {
    start: u64,
    size: u32,
    consumed: u64,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    header_version: Option<i16>,
    client_id: Option<Vec<u8>>,
    produce_acks: Option<i16>,
}

impl RequestScanner {
    pub fn new(config: RequestScannerConfig) -> Self {
        Self {
            config,
            step: Step::Prefix,
            acc: Accumulator::default(),
            chunk_base: 0,
            chunk_len: 0,
            pos: 0,
            outstanding_read: None,
            frame: FrameInProgress::default(),
            ready: None,
            failed: None,
            frames_seen: 0,
        }
    }

    /// The next `len` bytes of the stream are available at chunk offsets `0..len`.
    /// Call after the previous chunk reported [`ScanStep::ChunkDone`].
    pub fn begin_chunk(&mut self, len: usize) {
        self.chunk_base += self.pos as u64;
        self.chunk_len = len;
        self.pos = 0;
        self.outstanding_read = None;
    }

    /// True between frames: the bytes seen so far end exactly at a frame boundary.
    pub fn at_frame_boundary(&self) -> bool {
        self.step == Step::Prefix && self.acc.len() == 0 && self.failed.is_none()
    }

    /// Frames whose header has been read so far.
    pub fn frames_seen(&self) -> u64 {
        self.frames_seen
    }

    /// Offset in the stream of the next byte the scanner has not accounted for.
    pub fn stream_position(&self) -> u64 {
        self.chunk_base + self.pos as u64
    }

    pub fn poll(&mut self) -> Result<ScanStep, FrameError> {
        loop {
            if let Some(err) = &self.failed {
                return Err(err.clone());
            }
            if let Some(frame) = self.ready.take() {
                return Ok(ScanStep::Frame(frame));
            }
            if self.outstanding_read.is_some() {
                return self.fail(FrameError::ShortRead {
                    wanted: self.outstanding_read.unwrap_or(0),
                    got: 0,
                });
            }
            let avail = self.chunk_len.saturating_sub(self.pos);
            let need = match self.need() {
                Ok(need) => need,
                Err(err) => return self.fail(err),
            };
            if let Need::Skip(left) = need {
                if left == 0 {
                    if let Err(err) = self.after_skip() {
                        return self.fail(err);
                    }
                    continue;
                }
                if avail == 0 {
                    return Ok(ScanStep::ChunkDone);
                }
                let n = left.min(avail as u64);
                self.pos += n as usize;
                self.frame.consumed += n;
                self.reduce_skip(n);
                continue;
            }
            if avail == 0 {
                return Ok(ScanStep::ChunkDone);
            }
            let want = match need {
                Need::Exact(n) => n.saturating_sub(self.acc.len()),
                Need::Varint => 1,
                Need::Capture(left) => left as usize,
                Need::Skip(_) => 0,
            };
            let len = want.min(avail);
            self.outstanding_read = Some(len);
            return Ok(ScanStep::Read(self.pos..self.pos + len));
        }
    }

    /// Hands over the bytes of the range returned by the last [`ScanStep::Read`].
    pub fn supply(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let wanted = self.outstanding_read.take().unwrap_or(0);
        if bytes.len() != wanted {
            return self.fail(FrameError::ShortRead {
                wanted,
                got: bytes.len(),
            });
        }
        self.pos += bytes.len();
        let result = self.take(bytes);
        if let Err(err) = result {
            return self.fail(err);
        }
        Ok(())
    }

    /// Scans bytes the caller holds itself (tests, fuzzing, callers without a host).
    pub fn scan_slice(&mut self, data: &[u8]) -> Result<Vec<RequestFrame>, FrameError> {
        let mut frames = Vec::new();
        self.begin_chunk(data.len());
        loop {
            match self.poll()? {
                ScanStep::Read(range) => {
                    let bytes = data.get(range).unwrap_or(&[]);
                    self.supply(bytes)?;
                }
                ScanStep::Frame(frame) => frames.push(frame),
                ScanStep::ChunkDone => return Ok(frames),
            }
        }
    }

    fn fail<T>(&mut self, err: FrameError) -> Result<T, FrameError> {
        self.failed = Some(err.clone());
        Err(err)
    }

    fn need(&self) -> Result<Need, FrameError> {
        let need = match self.step {
            Step::Prefix => return Ok(Need::Exact(PREFIX_BYTES)),
            Step::ClientIdLen | Step::TxnIdLen | Step::Acks => Need::Exact(2),
            Step::TagCount | Step::TagKey { .. } | Step::TagLen { .. } | Step::TxnIdLenCompact => {
                Need::Varint
            }
            Step::ClientId { left, capture } => {
                if capture {
                    Need::Capture(left)
                } else {
                    Need::Skip(u64::from(left))
                }
            }
            Step::TagData { left, .. } | Step::TxnId { left } => Need::Skip(u64::from(left)),
            Step::Payload { left } => return Ok(Need::Skip(left)),
        };
        // Header fields must lie inside the frame.
        let more = match need {
            Need::Exact(n) => n.saturating_sub(self.acc.len()) as u64,
            Need::Varint => 1,
            Need::Capture(n) => u64::from(n),
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

    fn reduce_skip(&mut self, n: u64) {
        self.step = match self.step {
            Step::ClientId { left, capture } => Step::ClientId {
                left: left.saturating_sub(n as u32),
                capture,
            },
            Step::TagData { tags_left, left } => Step::TagData {
                tags_left,
                left: left.saturating_sub(n as u32),
            },
            Step::TxnId { left } => Step::TxnId {
                left: left.saturating_sub(n as u32),
            },
            Step::Payload { left } => Step::Payload {
                left: left.saturating_sub(n),
            },
            other => other,
        };
    }

    /// A skip step has reached its end.
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
            _ => Err(FrameError::MalformedHeader {
                reason: "scanner reached an impossible state",
            }),
        }
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Step::ClientId { left, capture } = self.step {
            self.frame.consumed += bytes.len() as u64;
            if capture {
                let limit = self.config.max_client_id_bytes;
                let id = self.frame.client_id.get_or_insert_with(Vec::new);
                let room = limit.saturating_sub(id.len());
                id.extend(bytes.iter().take(room));
            }
            let left = left.saturating_sub(bytes.len() as u32);
            self.step = Step::ClientId { left, capture };
            if left == 0 {
                self.after_client_id()?;
            }
            return Ok(());
        }
        if self.step != Step::Prefix {
            self.frame.consumed += bytes.len() as u64;
        }
        self.acc.extend(bytes)?;
        match self.step {
            Step::Prefix => {
                if self.acc.len() < PREFIX_BYTES {
                    return Ok(());
                }
                self.start_frame()
            }
            Step::ClientIdLen => self.exact2(|s, v| s.on_client_id_len(v)),
            Step::TxnIdLen => self.exact2(|s, v| s.on_txn_id_len(v)),
            Step::Acks => self.exact2(|s, v| {
                s.frame.produce_acks = Some(v);
                s.finish_header();
                Ok(())
            }),
            Step::TagCount | Step::TagKey { .. } | Step::TagLen { .. } | Step::TxnIdLenCompact => {
                let value = match decode_uvarint(self.acc.bytes())? {
                    Varint::Complete(v) => v,
                    Varint::NeedMore => return Ok(()),
                };
                self.acc.clear();
                self.on_varint(value)
            }
            _ => Err(FrameError::MalformedHeader {
                reason: "scanner read bytes in a skipping state",
            }),
        }
    }

    fn exact2(
        &mut self,
        then: impl FnOnce(&mut Self, i16) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        if self.acc.len() < 2 {
            return Ok(());
        }
        let value = be_i16(self.acc.bytes()).ok_or(FrameError::MalformedHeader {
            reason: "short 16-bit field",
        })?;
        self.acc.clear();
        then(self, value)
    }

    fn start_frame(&mut self) -> Result<(), FrameError> {
        let bytes = self.acc.bytes();
        let malformed = FrameError::MalformedHeader {
            reason: "short request prefix",
        };
        let raw_size = be_i32(bytes).ok_or(malformed.clone())?;
        let api_key = be_i16(bytes.get(4..).unwrap_or(&[])).ok_or(malformed.clone())?;
        let api_version = be_i16(bytes.get(6..).unwrap_or(&[])).ok_or(malformed.clone())?;
        let correlation_id = be_i32(bytes.get(8..).unwrap_or(&[])).ok_or(malformed)?;
        let size = check_size(raw_size, self.config.max_frame_bytes)?;
        if u64::from(size) < FIXED_HEADER_BYTES {
            return Err(FrameError::TruncatedHeader {
                size,
                needed: FIXED_HEADER_BYTES,
            });
        }
        self.acc.clear();
        let start = (self.chunk_base + self.pos as u64).saturating_sub(PREFIX_BYTES as u64);
        let header_version = ApiKey::try_from(api_key)
            .ok()
            .map(|key| key.request_header_version(api_version));
        self.frame = FrameInProgress {
            start,
            size,
            consumed: FIXED_HEADER_BYTES,
            api_key,
            api_version,
            correlation_id,
            header_version,
            client_id: None,
            produce_acks: None,
        };
        let depth = self.config.depth;
        let wants_acks = depth.produce_acks() && api_key == api_key::PRODUCE;
        let has_client_id = matches!(header_version, Some(v) if v >= 1);
        if has_client_id && (depth.client_id() || wants_acks) {
            self.step = Step::ClientIdLen;
        } else {
            self.finish_header();
        }
        Ok(())
    }

    fn on_client_id_len(&mut self, len: i16) -> Result<(), FrameError> {
        match u32::try_from(len) {
            // A negative length is a null client id.
            Err(_) => self.after_client_id(),
            Ok(left) => {
                let capture = self.config.depth.client_id();
                if capture {
                    self.frame.client_id = Some(Vec::new());
                }
                self.step = Step::ClientId { left, capture };
                if left == 0 {
                    self.after_client_id()?;
                }
                Ok(())
            }
        }
    }

    fn after_client_id(&mut self) -> Result<(), FrameError> {
        let wants_acks = self.config.depth.produce_acks() && self.frame.api_key == api_key::PRODUCE;
        if !wants_acks {
            self.finish_header();
        } else if self.frame.header_version.unwrap_or(0) >= 2 {
            self.step = Step::TagCount;
        } else {
            self.start_produce_body();
        }
        Ok(())
    }

    fn on_varint(&mut self, value: u32) -> Result<(), FrameError> {
        match self.step {
            Step::TagCount => self.after_tag(value.saturating_add(1)),
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
            _ => Err(FrameError::MalformedHeader {
                reason: "varint in a non-varint state",
            }),
        }
    }

    /// One tagged field (or the count) is done; `tags_left` counts the one just finished.
    fn after_tag(&mut self, tags_left: u32) -> Result<(), FrameError> {
        match tags_left.saturating_sub(1) {
            0 => {
                self.start_produce_body();
                Ok(())
            }
            n => {
                self.step = Step::TagKey { tags_left: n };
                Ok(())
            }
        }
    }

    fn start_produce_body(&mut self) {
        self.step = match self.frame.api_version {
            v if v <= 2 => Step::Acks,
            v if v <= 8 => Step::TxnIdLen,
            _ => Step::TxnIdLenCompact,
        };
    }

    fn on_txn_id_len(&mut self, len: i16) -> Result<(), FrameError> {
        self.step = match u32::try_from(len) {
            Err(_) | Ok(0) => Step::Acks,
            Ok(left) => Step::TxnId { left },
        };
        Ok(())
    }

    fn finish_header(&mut self) {
        let frame = &mut self.frame;
        self.ready = Some(RequestFrame {
            stream_offset: frame.start,
            size: frame.size,
            api_key: frame.api_key,
            api_version: frame.api_version,
            correlation_id: frame.correlation_id,
            client_id: frame
                .client_id
                .take()
                .map(|id| String::from_utf8_lossy(&id).into_owned()),
            produce_acks: frame.produce_acks,
        });
        self.frames_seen += 1;
        let left = u64::from(frame.size).saturating_sub(frame.consumed);
        self.step = Step::Payload { left };
    }
}
