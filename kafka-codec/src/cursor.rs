//! The skeleton both scanners share: where they are in the current chunk, the one read
//! they are waiting for, and the error that stopped them for good.

use std::ops::Range;

use crate::FrameError;

#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// Offset of the current chunk's first byte in the whole stream.
    base: u64,
    len: usize,
    pos: usize,
    outstanding: Option<usize>,
    failed: Option<FrameError>,
}

impl Cursor {
    /// The next `len` bytes of the stream are at chunk offsets `0..len`. A read asked for
    /// in the previous chunk and never answered is forgotten: the caller moved on.
    pub(crate) fn begin(&mut self, len: usize) {
        self.base += self.pos as u64;
        self.len = len;
        self.pos = 0;
        self.outstanding = None;
    }

    /// At the top of every `poll`: a failed scanner stays failed, and a read must be
    /// answered before the scanner can move on.
    pub(crate) fn check(&mut self) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if let Some(wanted) = self.outstanding {
            return self.fail(FrameError::ShortRead { wanted, got: 0 });
        }
        Ok(())
    }

    pub(crate) fn available(&self) -> usize {
        self.len.saturating_sub(self.pos)
    }

    /// Offset in the current chunk of the next byte not accounted for.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn chunk_len(&self) -> usize {
        self.len
    }

    /// Offset in the stream of the next byte not accounted for.
    pub(crate) fn stream_position(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Accounts for `n` bytes without reading them (payload).
    pub(crate) fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.len);
    }

    /// Asks the caller for up to `want` bytes of what is left of the chunk.
    pub(crate) fn read(&mut self, want: usize) -> Range<usize> {
        let len = want.min(self.available());
        self.outstanding = Some(len);
        self.pos..self.pos + len
    }

    /// The caller's answer to [`Cursor::read`]: it must be exactly the bytes asked for.
    /// Returns the chunk range they came from.
    pub(crate) fn accept(&mut self, bytes: &[u8]) -> Result<Range<usize>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let wanted = self.outstanding.take().unwrap_or(0);
        if bytes.len() != wanted {
            return self.fail(FrameError::ShortRead {
                wanted,
                got: bytes.len(),
            });
        }
        let start = self.pos;
        self.pos += wanted;
        Ok(start..self.pos)
    }

    /// Records the error that ends this stream and returns it.
    pub(crate) fn fail<T>(&mut self, err: FrameError) -> Result<T, FrameError> {
        self.failed = Some(err.clone());
        Err(err)
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.is_some()
    }
}
