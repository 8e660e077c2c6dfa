//! Entry points shared by the cargo-fuzz targets and the corpus replay test.
// A fuzz oracle reports a finding by panicking; this module is never linked into the filter.
#![allow(clippy::panic, clippy::indexing_slicing)]

use crate::{FrameError, HeaderDepth, SIZE_PREFIX_BYTES};
use crate::{RequestScanner, RequestScannerConfig, ResponseScanner, ResponseScannerConfig};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

/// Every oracle input starts with this tag and [`INPUT_VERSION`]: an input laid out for
/// another version of the oracle is refused by name. Without it, a corpus file of an older
/// layout (format 1: one seed byte, no header) is read a byte off, no frame is ever
/// complete, and its replay compares nothing while passing.
pub const INPUT_TAG: [u8; 3] = *b"KCF";
/// Bump whenever the layout after the tag changes, and regenerate the seed corpora
/// (`cargo run -p kafka-codec --features fuzzing --example fuzz_seeds`).
pub const INPUT_VERSION: u8 = 2;
/// The oracle's seed: the bytes that steer chunking and hiding, after the header.
pub const SEED_BYTES: usize = 2;
/// Tag and version.
pub const HEADER_BYTES: usize = INPUT_TAG.len() + 1;

/// Format 2: `KCF`, version 2, a two-byte seed, then the byte stream.
pub fn input(seed: [u8; SEED_BYTES], stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + SEED_BYTES + stream.len());
    out.extend_from_slice(&INPUT_TAG);
    out.push(INPUT_VERSION);
    out.extend_from_slice(&seed);
    out.extend_from_slice(stream);
    out
}

/// An input that is not in the current format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// No tag: written before inputs had a header (format 1), or not an oracle input.
    Untagged,
    /// Tagged, for another version of the oracle.
    Version(u8),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let regenerate = "regenerate the seeds with `cargo run -p kafka-codec --features fuzzing \
                          --example fuzz_seeds` and delete inputs a fuzzer kept for the old format";
        match self {
            FormatError::Untagged => write!(
                f,
                "not a kafka-codec fuzz input of format {INPUT_VERSION}: it does not start with \
                 \"KCF\" and the version byte (a corpus file of format 1, one seed byte and no \
                 header?); {regenerate}"
            ),
            FormatError::Version(v) => write!(
                f,
                "a kafka-codec fuzz input of format {v}, this oracle reads format \
                 {INPUT_VERSION}; {regenerate}"
            ),
        }
    }
}

/// The seed and stream of an input in the current format. The empty input has neither
/// (libFuzzer runs it first, before the corpus): nothing to check, in any format.
pub fn check_format(data: &[u8]) -> Result<&[u8], FormatError> {
    if data.is_empty() {
        return Ok(data);
    }
    match (data.get(..INPUT_TAG.len()), data.get(INPUT_TAG.len())) {
        (Some(tag), Some(version)) if tag == INPUT_TAG => {
            if *version == INPUT_VERSION {
                Ok(&data[HEADER_BYTES..])
            } else {
                Err(FormatError::Version(*version))
            }
        }
        _ => Err(FormatError::Untagged),
    }
}

/// For the fuzz targets' custom mutator: `mutate` (libFuzzer's own mutations) changes only
/// what follows the header, so every input the fuzzer writes to the corpus is in the
/// current format. An input without the header (libFuzzer's first, empty one) gets it.
/// `data` holds `max(size, max_size)` bytes, as libFuzzer hands them over.
pub fn mutate_after_header(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    mutate: impl FnOnce(&mut [u8], usize, usize) -> usize,
) -> usize {
    let max_size = max_size.min(data.len());
    let size = size.min(data.len());
    if max_size < HEADER_BYTES {
        return size.min(max_size);
    }
    let body = max_size - HEADER_BYTES;
    let kept = if size >= HEADER_BYTES && check_format(&data[..size]).is_ok() {
        size - HEADER_BYTES
    } else {
        // Keep the bytes, behind a header.
        let kept = size.min(body);
        data.copy_within(..kept, HEADER_BYTES);
        data[..INPUT_TAG.len()].copy_from_slice(&INPUT_TAG);
        data[INPUT_TAG.len()] = INPUT_VERSION;
        kept
    };
    let kept = kept.min(body);
    HEADER_BYTES + mutate(&mut data[HEADER_BYTES..max_size], kept, body).min(body)
}

/// What one input exercised: the complete frames the reference model found, how many the
/// oracle hid (responses), and the bytes after the last complete frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub frames: usize,
    pub hidden: usize,
    pub tail: usize,
    /// Requests: how deep the scanner read headers.
    pub depth: Option<HeaderDepth>,
}

/// The two oracles, by the name of their fuzz target and corpus directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Requests,
    Responses,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Requests, Target::Responses];

    pub fn name(self) -> &'static str {
        match self {
            Target::Requests => "requests",
            Target::Responses => "responses",
        }
    }

    pub fn replay(self, data: &[u8]) -> Replay {
        match self {
            Target::Requests => requests(data),
            Target::Responses => responses(data),
        }
    }
}

/// The seed corpus entries made from one captured stream (whole frames): for requests one
/// input per header depth, for responses two inputs that each hide at least one frame;
/// each the first seed (counting up from 0, up to 1023) that does so: fewer when no seed
/// does, e.g. when the oracle cannot read the stream. Seeds are named `<capture>-<seed hex>`.
pub fn seed_inputs(target: Target, stream: &[u8]) -> Vec<([u8; SEED_BYTES], Vec<u8>)> {
    let mut out: Vec<([u8; SEED_BYTES], Vec<u8>)> = Vec::new();
    let mut depths = Vec::new();
    for n in 0..1024u16 {
        let seed = n.to_be_bytes();
        let data = input(seed, stream);
        let replay = target.replay(&data);
        let wanted = match target {
            Target::Requests => {
                let new = replay.depth.is_some_and(|d| !depths.contains(&d));
                if new {
                    depths.extend(replay.depth);
                }
                new
            }
            Target::Responses => replay.hidden > 0,
        };
        if wanted {
            out.push((seed, data));
        }
        let enough = match target {
            Target::Requests => 3,
            Target::Responses => 2,
        };
        if out.len() == enough {
            break;
        }
    }
    out
}

/// Every seed corpus entry, made from the captured streams in `data_dir`
/// (`kafka-codec/tests/data`: `<capture>.requests.bin`, `<capture>.responses.bin`), as
/// (target, file name, input), sorted by target and name.
pub fn seed_corpus(data_dir: &Path) -> io::Result<Vec<(Target, String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(data_dir)? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        for target in Target::ALL {
            let Some(capture) = file.strip_suffix(&format!(".{}.bin", target.name())) else {
                continue;
            };
            let stream = fs::read(&path)?;
            for (seed, data) in seed_inputs(target, &stream) {
                let name = format!("{capture}-{:02x}{:02x}", seed[0], seed[1]);
                out.push((target, name, data));
            }
        }
    }
    out.sort_by(|a, b| (a.0.name(), &a.1).cmp(&(b.0.name(), &b.1)));
    Ok(out)
}

/// libFuzzer names the inputs it keeps by the SHA-1 of their bytes (40 hex digits); the
/// seeds have names of their own.
pub fn kept_by_fuzzer(file_name: &str) -> bool {
    file_name.len() == 40 && file_name.bytes().all(|b| b.is_ascii_hexdigit())
}

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

/// After the header, [`SEED_BYTES`] steer the oracle; the rest is the stream, cut into
/// chunks of varying sizes (1 to 32 bytes). Panics (a finding) on an input of another
/// format: only a stale corpus holds one, since the targets' mutator keeps the header.
fn split_input(data: &[u8]) -> (Choices, Vec<&[u8]>) {
    let data = check_format(data).unwrap_or_else(|e| panic!("{e}"));
    let (seed, rest) = data.split_at(data.len().min(SEED_BYTES));
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
pub fn requests(data: &[u8]) -> Replay {
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
    let (complete, tail) = split_frames(&whole_input);
    Replay {
        frames: complete.len(),
        hidden: 0,
        tail: tail.len(),
        depth: Some(depth),
    }
}

/// Response direction, the way the filter uses it: hides are registered between chunks,
/// each at a random point before the first byte of the frame it removes arrives. The
/// output must be the stream minus exactly those frames, every other byte once, in order.
pub fn responses(data: &[u8]) -> Replay {
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
    Replay {
        frames: frames.len(),
        hidden: hidden.len(),
        tail: tail.len(),
        depth: None,
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
