//! Entry points shared by the cargo-fuzz targets and the corpus replay test.
// A fuzz oracle reports a finding by panicking; this module is never linked into the filter.
#![allow(clippy::panic, clippy::indexing_slicing)]

use crate::{FrameError, HeaderDepth, SIZE_PREFIX_BYTES};
use crate::{RequestScanner, RequestScannerConfig, ResponseScanner, ResponseScannerConfig};

/// A small deterministic generator fed by the input, so every choice the oracle makes
/// (chunk sizes, which frames to hide, when to register each hide) comes from the data.
struct Choices(u64);

impl Choices {
    fn new(seed: &[u8]) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for byte in seed {
            state = (state ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Choices(state | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The first two bytes steer the oracle; the rest is the stream, cut into chunks of
/// varying sizes (1 to 32 bytes).
fn split_input(data: &[u8]) -> (Choices, Vec<&[u8]>) {
    let (seed, rest) = data.split_at(data.len().min(2));
    let mut choices = Choices::new(seed);
    let mut parts = Vec::new();
    let mut at = 0;
    while at < rest.len() {
        let len = (choices.below(32) + 1).min(rest.len() - at);
        parts.push(&rest[at..at + len]);
        at += len;
    }
    (choices, parts)
}

/// Request direction: any chunking must give the same frames as one whole scan.
pub fn requests(data: &[u8]) {
    let (mut choices, parts) = split_input(data);
    let depth = match choices.below(3) {
        0 => HeaderDepth::Fixed,
        1 => HeaderDepth::ProduceAcks,
        _ => HeaderDepth::WholeHeader,
    };
    let config = RequestScannerConfig {
        max_frame_bytes: 1 << 20,
        depth,
    };
    let whole_input: Vec<u8> = parts.concat();
    let whole = RequestScanner::new(config).scan_slice(&whole_input);
    let mut chunked = RequestScanner::new(config);
    let mut frames = Vec::new();
    let mut error = None;
    for part in parts {
        match chunked.scan_slice(part) {
            Ok(mut f) => frames.append(&mut f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    match (whole, error) {
        (Ok(w), None) => assert_eq!(w, frames),
        (Err(w), Some(c)) => assert_eq!(w, c),
        (w, c) => panic!("whole scan {w:?} but chunked scan error {c:?}"),
    }
}

/// Response direction, the way the filter uses it: hides are registered between chunks,
/// each at a random point before the first byte of the frame it removes arrives. The
/// output must be the stream minus exactly those frames, every other byte once, in order.
pub fn responses(data: &[u8]) {
    let (mut choices, parts) = split_input(data);
    let whole_input: Vec<u8> = parts.concat();
    let (frames, tail) = split_frames(&whole_input);
    // Which complete frames to hide, and the chunk boundary at which each hide is
    // registered: boundary k means before parts[k] (k == parts.len(): never needed).
    let mut boundaries = Vec::with_capacity(parts.len() + 1);
    let mut fed = 0;
    for part in &parts {
        boundaries.push(fed);
        fed += part.len();
    }
    let mut plan: Vec<Vec<(u64, i32)>> = vec![Vec::new(); parts.len() + 1];
    let mut hidden_frames = vec![false; frames.len()];
    let mut earliest = 0;
    for (index, frame) in frames.iter().enumerate() {
        if choices.below(3) != 0 {
            continue;
        }
        // The latest boundary at which none of this frame has been fed yet.
        let latest = boundaries
            .iter()
            .rposition(|at| *at <= frame.start)
            .unwrap_or(0);
        if latest < earliest {
            continue;
        }
        let at = earliest + choices.below(latest - earliest + 1);
        earliest = at;
        plan[at].push((index as u64, frame.correlation_id));
        hidden_frames[index] = true;
    }
    let mut scanner = ResponseScanner::new(ResponseScannerConfig {
        max_hidden_frame_bytes: 1 << 20,
    });
    let mut out = Vec::new();
    let mut hidden = Vec::new();
    let mut failure = None;
    for (k, part) in parts.iter().enumerate() {
        for (index, correlation_id) in &plan[k] {
            scanner.hide_at(*index, *correlation_id);
        }
        match scanner.scan_slice(part) {
            Ok((bytes, mut h)) => {
                out.extend_from_slice(&bytes);
                hidden.append(&mut h);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let expected_hidden: Vec<&[u8]> = frames
        .iter()
        .zip(&hidden_frames)
        .filter(|(_, hide)| **hide)
        .map(|(f, _)| &f.bytes[SIZE_PREFIX_BYTES..])
        .collect();
    let mut expected: Vec<u8> = frames
        .iter()
        .zip(&hidden_frames)
        .filter(|(_, hide)| !**hide)
        .flat_map(|(f, _)| f.bytes.iter().copied())
        .collect();
    match failure {
        None => {
            // What follows the complete frames is a frame still arriving: it passes.
            expected.extend_from_slice(tail);
            assert_eq!(out, expected);
            let got: Vec<&[u8]> = hidden.iter().map(|h| h.frame.as_slice()).collect();
            assert_eq!(got, expected_hidden);
            if tail.is_empty() {
                assert!(scanner.is_idle());
            }
        }
        Some(e) => {
            // Only the malformed prefix after the complete frames may stop the scanner.
            assert!(
                matches!(
                    e,
                    FrameError::NegativeSize { .. } | FrameError::TruncatedHeader { .. }
                ),
                "{e:?}"
            );
            assert!(
                tail.len() >= PREFIX,
                "failed on an incomplete prefix: {e:?}"
            );
            expected.extend_from_slice(tail);
            assert!(expected.starts_with(&out));
        }
    }
}

const PREFIX: usize = SIZE_PREFIX_BYTES + 4;

struct Frame<'a> {
    start: usize,
    correlation_id: i32,
    bytes: &'a [u8],
}

/// The complete, well-formed frames at the start of a response stream, and what follows
/// them (reference model for the oracle).
fn split_frames(data: &[u8]) -> (Vec<Frame<'_>>, &[u8]) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(prefix) = data.get(at..at + PREFIX) {
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let correlation_id = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if size < 4 {
            break;
        }
        let Some(bytes) = data.get(at..at + SIZE_PREFIX_BYTES + size) else {
            break;
        };
        frames.push(Frame {
            start: at,
            correlation_id,
            bytes,
        });
        at += bytes.len();
    }
    (frames, &data[at..])
}
