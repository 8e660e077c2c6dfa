//! Follows the broker→client stream and removes the answers to requests the proxy
//! injected, without buffering the frames it passes on.

use std::collections::VecDeque;
use std::ops::Range;

use crate::accumulator::{be_i32, Accumulator};
use crate::cursor::Cursor;
use crate::error::check_size;
use crate::{FrameError, SIZE_PREFIX_BYTES};

/// Size prefix plus the correlation id that starts every response header.
const PREFIX_BYTES: usize = SIZE_PREFIX_BYTES + 4;

/// Responses are not held to the request limit (`socket.request.max.bytes`): a Fetch
/// response may be larger than any request. A response only has to have a non-negative
/// size that fits its correlation id; payloads are skipped, never buffered.
const MAX_RESPONSE_FRAME_BYTES: u32 = i32::MAX as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseScannerConfig {
    /// Removed frames are read whole to be checked; SASL answers are small.
    pub max_hidden_frame_bytes: u32,
}

impl Default for ResponseScannerConfig {
    fn default() -> Self {
        Self {
            max_hidden_frame_bytes: 64 * 1024,
        }
    }
}

/// A response the proxy removed from the stream, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenResponse {
    pub correlation_id: i32,
    /// The frame without its size prefix: response header, then body.
    pub frame: Vec<u8>,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStep {
    /// Copy this range of the current chunk and hand it to [`ResponseScanner::supply`].
    Read(Range<usize>),
    /// A response to an injected request was removed from the stream.
    Hidden(HiddenResponse),
    /// The chunk is accounted for; [`ResponseScanner::finish_chunk`] says how to rewrite it.
    ChunkDone,
}

/// How the current chunk must be changed before it goes on to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkEdits {
    /// Bytes held back from earlier chunks, to emit before this chunk's bytes.
    pub prepend: Vec<u8>,
    /// Ranges of this chunk to drop, in order and non-overlapping.
    pub remove: Vec<Range<usize>>,
}

impl ChunkEdits {
    pub fn is_noop(&self) -> bool {
        self.prepend.is_empty() && self.remove.is_empty()
    }

    /// When the edit only touches the start of the chunk: how many bytes to drop from the
    /// front (then [`ChunkEdits::prepend`] goes in their place). Hosts can do that without
    /// copying the rest of the chunk.
    pub fn front_only(&self) -> Option<usize> {
        match self.remove.as_slice() {
            [] => Some(0),
            [only] if only.start == 0 => Some(only.end),
            _ => None,
        }
    }

    /// The rewritten chunk.
    pub fn apply(&self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prepend.len() + chunk.len());
        out.extend_from_slice(&self.prepend);
        let mut at = 0;
        for range in &self.remove {
            out.extend_from_slice(chunk.get(at..range.start).unwrap_or(&[]));
            at = range.end;
        }
        out.extend_from_slice(chunk.get(at..).unwrap_or(&[]));
        out
    }

    fn remove(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        if let Some(last) = self.remove.last_mut() {
            if last.end == range.start {
                last.end = range.end;
                return;
            }
        }
        self.remove.push(range);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading size + correlation id into the accumulator. Of the bytes that came in
    /// earlier chunks, the first `passed` went on to the client (no hide was registered
    /// then) and the next `held` were removed and are kept back until the frame's fate is
    /// known; `chunk_start` is where this chunk's part of the prefix begins.
    Prefix {
        passed: usize,
        held: usize,
        chunk_start: usize,
    },
    Hidden {
        correlation_id: i32,
        left: u32,
    },
    Pass {
        left: u64,
    },
}

impl State {
    fn new_prefix(chunk_start: usize) -> State {
        State::Prefix {
            passed: 0,
            held: 0,
            chunk_start,
        }
    }
}

/// A response to remove: the one at this position of the stream, which must carry this
/// correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hide {
    index: u64,
    correlation_id: i32,
}

/// Incremental response-stream scanner with frame removal (sans-IO).
#[derive(Debug, Clone)]
pub struct ResponseScanner {
    config: ResponseScannerConfig,
    cursor: Cursor,
    hide: VecDeque<Hide>,
    /// Response frames whose prefix has been read.
    frames: u64,
    state: State,
    acc: Accumulator,
    body: Vec<u8>,
    edits: ChunkEdits,
    ready: Option<HiddenResponse>,
}

impl ResponseScanner {
    pub fn new(config: ResponseScannerConfig) -> Self {
        Self {
            config,
            cursor: Cursor::default(),
            hide: VecDeque::new(),
            frames: 0,
            state: State::new_prefix(0),
            acc: Accumulator::default(),
            body: Vec::new(),
            edits: ChunkEdits::default(),
            ready: None,
        }
    }

    /// Removes the response at position `index` of the stream (0 is the first response on
    /// the connection). Positions, not correlation ids, decide: a proxy that counts the
    /// requests awaiting an answer knows where the answer to its own request falls even if
    /// a client used the same correlation id. The frame must carry `correlation_id`, else
    /// the stream is out of step and scanning fails. Register hides in stream order, at
    /// any time before the frame's first byte arrives (between chunks is fine).
    pub fn hide_at(&mut self, index: u64, correlation_id: i32) {
        self.hide.push_back(Hide {
            index,
            correlation_id,
        });
    }

    /// Nothing to hide, nothing held, at a frame boundary: the caller may stop scanning.
    pub fn is_idle(&self) -> bool {
        self.hide.is_empty()
            && self.acc.len() == 0
            && matches!(self.state, State::Prefix { .. })
            && !self.cursor.is_failed()
    }

    pub fn begin_chunk(&mut self, len: usize) {
        self.cursor.begin(len);
        self.edits = ChunkEdits::default();
        if let State::Prefix { passed, held, .. } = self.state {
            // The prefix (if any) continues at the start of the new chunk.
            self.state = State::Prefix {
                passed,
                held,
                chunk_start: 0,
            };
        }
    }

    pub fn poll(&mut self) -> Result<ResponseStep, FrameError> {
        self.cursor.check()?;
        if let Some(hidden) = self.ready.take() {
            return Ok(ResponseStep::Hidden(hidden));
        }
        loop {
            let avail = self.cursor.available();
            if avail == 0 {
                return Ok(ResponseStep::ChunkDone);
            }
            let want = match self.state {
                State::Prefix { .. } => PREFIX_BYTES.saturating_sub(self.acc.len()),
                State::Hidden { left, .. } => left as usize,
                State::Pass { left } => {
                    let n = left.min(avail as u64);
                    self.cursor.skip(n as usize);
                    self.state = match left - n {
                        0 => State::new_prefix(self.cursor.pos()),
                        left => State::Pass { left },
                    };
                    continue;
                }
            };
            return Ok(ResponseStep::Read(self.cursor.read(want)));
        }
    }

    pub fn supply(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let range = self.cursor.accept(bytes)?;
        if let Err(err) = self.take(range, bytes) {
            return self.cursor.fail(err);
        }
        Ok(())
    }

    /// How to rewrite the chunk just scanned; call after [`ResponseStep::ChunkDone`].
    pub fn finish_chunk(&mut self) -> ChunkEdits {
        if let State::Prefix {
            passed,
            held,
            chunk_start,
        } = self.state
        {
            let here = self.cursor.chunk_len().saturating_sub(chunk_start);
            if self.acc.len() > 0 && !self.hide.is_empty() {
                // The frame may be one to hide: keep this chunk's part of its prefix back
                // until its correlation id is known.
                self.edits.remove(chunk_start..self.cursor.chunk_len());
                self.state = State::Prefix {
                    passed,
                    held: held + here,
                    chunk_start: 0,
                };
            } else if self.acc.len() > 0 {
                // Nothing to hide: what was held goes out now, this chunk's part with it.
                self.release(passed, held);
                self.state = State::Prefix {
                    passed: passed + held + here,
                    held: 0,
                    chunk_start: 0,
                };
            }
        }
        std::mem::take(&mut self.edits)
    }

    /// Scans and rewrites bytes the caller holds itself. Kept for callers without a host
    /// buffer: the tests and the fuzz targets drive the scanner through it.
    pub fn scan_slice(
        &mut self,
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<HiddenResponse>), FrameError> {
        let mut hidden = Vec::new();
        self.begin_chunk(data.len());
        loop {
            match self.poll()? {
                ResponseStep::Read(range) => self.supply(data.get(range).unwrap_or(&[]))?,
                ResponseStep::Hidden(h) => hidden.push(h),
                ResponseStep::ChunkDone => break,
            }
        }
        Ok((self.finish_chunk().apply(data), hidden))
    }

    /// Puts the held bytes of the prefix back in front of this chunk.
    fn release(&mut self, passed: usize, held: usize) {
        if held > 0 {
            let bytes = self.acc.bytes().get(passed..passed + held).unwrap_or(&[]);
            self.edits.prepend.extend_from_slice(bytes);
        }
    }

    fn take(&mut self, range: Range<usize>, bytes: &[u8]) -> Result<(), FrameError> {
        match self.state {
            State::Prefix {
                passed,
                held,
                chunk_start,
            } => {
                self.acc.extend(bytes)?;
                if self.acc.len() < PREFIX_BYTES {
                    return Ok(());
                }
                let malformed = || FrameError::MalformedHeader {
                    reason: "short response prefix",
                };
                let raw_size = be_i32(self.acc.bytes()).ok_or_else(malformed)?;
                let correlation_id =
                    be_i32(self.acc.bytes().get(SIZE_PREFIX_BYTES..).unwrap_or(&[]))
                        .ok_or_else(malformed)?;
                let size = check_size(raw_size, MAX_RESPONSE_FRAME_BYTES)?;
                if size < 4 {
                    return Err(FrameError::TruncatedHeader { size, needed: 4 });
                }
                let index = self.frames;
                self.frames += 1;
                let hide_this = match self.hide.front() {
                    Some(hide) if hide.index == index => {
                        if hide.correlation_id != correlation_id {
                            return Err(FrameError::UnexpectedResponse {
                                index,
                                expected: hide.correlation_id,
                                got: correlation_id,
                            });
                        }
                        true
                    }
                    Some(hide) if hide.index < index => {
                        // Its frame went by before the hide was registered.
                        return Err(FrameError::HideTooLate { index: hide.index });
                    }
                    _ => false,
                };
                if hide_this {
                    if passed > 0 {
                        return Err(FrameError::HideTooLate { index });
                    }
                    self.hide.pop_front();
                    if size > self.config.max_hidden_frame_bytes {
                        return Err(FrameError::HiddenFrameTooLarge {
                            size,
                            max: self.config.max_hidden_frame_bytes,
                        });
                    }
                    self.edits.remove(chunk_start..range.end);
                    self.body.clear();
                    self.body.extend_from_slice(
                        self.acc.bytes().get(SIZE_PREFIX_BYTES..).unwrap_or(&[]),
                    );
                    self.acc.clear();
                    self.state = State::Hidden {
                        correlation_id,
                        left: size - 4,
                    };
                    self.finish_hidden_if_done();
                } else {
                    self.release(passed, held);
                    self.acc.clear();
                    self.state = match u64::from(size) - 4 {
                        0 => State::new_prefix(range.end),
                        left => State::Pass { left },
                    };
                }
                Ok(())
            }
            State::Hidden {
                correlation_id,
                left,
            } => {
                self.edits.remove(range);
                self.body.extend_from_slice(bytes);
                self.state = State::Hidden {
                    correlation_id,
                    left: left.saturating_sub(u32::try_from(bytes.len()).unwrap_or(u32::MAX)),
                };
                self.finish_hidden_if_done();
                Ok(())
            }
            State::Pass { .. } => Err(FrameError::MalformedHeader {
                reason: "response scanner read bytes in a passing state",
            }),
        }
    }

    fn finish_hidden_if_done(&mut self) {
        if let State::Hidden {
            correlation_id,
            left: 0,
        } = self.state
        {
            self.ready = Some(HiddenResponse {
                correlation_id,
                frame: std::mem::take(&mut self.body),
            });
            self.state = State::new_prefix(self.cursor.pos());
        }
    }
}
