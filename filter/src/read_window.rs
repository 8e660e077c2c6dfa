//! Reads of a chunk through a window: one host read fetches up to [`READ_WINDOW`] bytes and
//! the reads that follow inside them are answered from the VM.
//!
//! The codec asks for a request header field by field (size and fixed fields, then for a
//! Produce request the client id's length, the tagged fields, the transactional id and
//! `acks`): up to five reads of a few bytes each. Each read is a crossing into Envoy and
//! back (plus Envoy calling the VM's allocator), microseconds each, while copying a few
//! hundred bytes costs nothing; so a frame costs one crossing instead of one per field.

use std::ops::Range;

use crate::host::HostError;

/// Bytes fetched per host read: a request header usually fits.
pub const READ_WINDOW: usize = 256;

#[derive(Debug, Default)]
pub struct ReadWindow {
    /// Bytes in the host's buffer (the chunk as it arrived); 0 once it was edited, then
    /// every read fetches exactly its range.
    len: usize,
    start: usize,
    bytes: Vec<u8>,
}

impl ReadWindow {
    pub fn new(chunk_len: usize) -> Self {
        Self {
            len: chunk_len,
            start: 0,
            bytes: Vec::new(),
        }
    }

    /// Exactly the bytes of `range`; `fetch(start, max)` reads up to `max` bytes from
    /// `start` out of the host's buffer.
    pub fn read(
        &mut self,
        range: Range<usize>,
        fetch: impl FnOnce(usize, usize) -> Result<Vec<u8>, HostError>,
    ) -> Result<Vec<u8>, HostError> {
        let wanted = range.len();
        if wanted == 0 {
            return Ok(Vec::new());
        }
        if let Some(bytes) = self.cached(&range) {
            return Ok(bytes);
        }
        let max = wanted.max(READ_WINDOW.min(self.len.saturating_sub(range.start)));
        let bytes = fetch(range.start, max)?;
        if bytes.len() < wanted {
            return Err(HostError::ShortRead {
                wanted,
                got: bytes.len(),
            });
        }
        self.start = range.start;
        self.bytes = bytes;
        self.cached(&range)
            .ok_or(HostError::ShortRead { wanted, got: 0 })
    }

    /// The host's buffer is about to change: forget what was read.
    pub fn edited(&mut self) {
        self.len = 0;
        self.bytes.clear();
    }

    fn cached(&self, range: &Range<usize>) -> Option<Vec<u8>> {
        let from = range.start.checked_sub(self.start)?;
        let to = range.end.checked_sub(self.start)?;
        self.bytes.get(from..to).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host buffer that counts reads and, like Envoy, returns at most what it holds.
    struct Host {
        bytes: Vec<u8>,
        reads: Vec<(usize, usize)>,
    }

    impl Host {
        fn fetch(&mut self, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
            self.reads.push((start, max));
            let end = (start + max).min(self.bytes.len());
            Ok(self.bytes.get(start..end).unwrap_or_default().to_vec())
        }
    }

    fn host(n: usize) -> Host {
        Host {
            bytes: (0..n).map(|i| i as u8).collect(),
            reads: vec![],
        }
    }

    #[test]
    fn the_fields_of_one_header_cost_one_host_read() {
        let mut h = host(1000);
        let mut w = ReadWindow::new(1000);
        for range in [0..12, 12..14, 30..31, 31..33, 33..35] {
            let got = w.read(range.clone(), |s, m| h.fetch(s, m)).unwrap();
            assert_eq!(got, h.bytes[range].to_vec());
        }
        assert_eq!(h.reads, vec![(0, READ_WINDOW)]);
        // The next frame's header, further on: one more read.
        let got = w.read(600..612, |s, m| h.fetch(s, m)).unwrap();
        assert_eq!(got, h.bytes[600..612].to_vec());
        assert_eq!(h.reads.len(), 2);
    }

    #[test]
    fn never_asks_past_the_chunk_and_long_ranges_are_read_whole() {
        let mut h = host(100);
        let mut w = ReadWindow::new(100);
        assert_eq!(
            w.read(90..98, |s, m| h.fetch(s, m)).unwrap(),
            h.bytes[90..98]
        );
        assert_eq!(h.reads, vec![(90, 10)]);
        let mut h = host(1000);
        let mut w = ReadWindow::new(1000);
        assert_eq!(w.read(0..700, |s, m| h.fetch(s, m)).unwrap().len(), 700);
        assert_eq!(h.reads, vec![(0, 700)]);
    }

    #[test]
    fn a_short_host_answer_is_an_error() {
        let mut h = host(10);
        let mut w = ReadWindow::new(100);
        assert_eq!(
            w.read(8..12, |s, m| h.fetch(s, m)),
            Err(HostError::ShortRead { wanted: 4, got: 2 })
        );
    }

    #[test]
    fn after_an_edit_reads_go_to_the_host_for_exactly_their_range() {
        let mut h = host(1000);
        let mut w = ReadWindow::new(1000);
        w.read(0..12, |s, m| h.fetch(s, m)).unwrap();
        w.edited();
        h.bytes[5] = 0xff;
        assert_eq!(w.read(0..12, |s, m| h.fetch(s, m)).unwrap()[5], 0xff);
        assert_eq!(h.reads, vec![(0, READ_WINDOW), (0, 12)]);
    }
}
