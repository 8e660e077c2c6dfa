//! Entry points shared by the cargo-fuzz targets and the corpus replay test.
// A fuzz oracle reports a finding by panicking; this module is never linked into the filter.
#![allow(clippy::panic, clippy::indexing_slicing)]

use crate::{HeaderDepth, SIZE_PREFIX_BYTES};
use crate::{RequestScanner, RequestScannerConfig, ResponseScanner, ResponseScannerConfig};

/// Splits `data` into chunks whose sizes come from the data itself.
fn chunks(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let (seed, rest) = match data.split_first() {
        Some((seed, rest)) => (*seed, rest),
        None => (0, data),
    };
    let step = usize::from(seed % 17) + 1;
    (seed, rest.chunks(step).collect())
}

/// Request direction: any chunking must give the same frames as one whole scan.
pub fn requests(data: &[u8]) {
    let (seed, parts) = chunks(data);
    let depth = match seed % 4 {
        0 => HeaderDepth::Fixed,
        1 => HeaderDepth::ClientId,
        2 => HeaderDepth::ProduceAcks,
        _ => HeaderDepth::Full,
    };
    let config = RequestScannerConfig {
        max_frame_bytes: 1 << 20,
        depth,
        max_client_id_bytes: 64,
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

/// Response direction: hiding frames and re-joining the chunks gives the stream minus
/// exactly those frames.
pub fn responses(data: &[u8]) {
    let (seed, parts) = chunks(data);
    let whole_input: Vec<u8> = parts.concat();
    let config = ResponseScannerConfig {
        max_frame_bytes: 1 << 20,
        max_hidden_frame_bytes: 1 << 20,
    };
    // Hide the correlation ids of the first frames (as a proxy does for its own requests).
    let frames = split_frames(&whole_input);
    let hide: Vec<i32> = frames
        .iter()
        .take(usize::from(seed % 4))
        .map(|(corr, _)| *corr)
        .collect();
    let mut scanner = ResponseScanner::new(config);
    // Hide by correlation id, or by position (as the filter does) depending on the seed.
    for (index, id) in hide.iter().enumerate() {
        if seed & 0x10 == 0 {
            scanner.hide(*id);
        } else {
            scanner.hide_at(index as u64, *id);
        }
    }
    let mut out = Vec::new();
    let mut hidden = Vec::new();
    for part in parts {
        match scanner.scan_slice(part) {
            Ok((bytes, mut h)) => {
                out.extend_from_slice(&bytes);
                hidden.append(&mut h);
            }
            Err(_) => return,
        }
    }
    // Compare with a reference model that works on whole frames.
    let mut expected = Vec::new();
    let mut to_hide = hide.clone();
    let mut consumed = 0;
    for (corr, frame) in &frames {
        if to_hide.first() == Some(corr) {
            to_hide.remove(0);
        } else {
            expected.extend_from_slice(frame);
        }
        consumed += frame.len();
    }
    let tail = whole_input.get(consumed..).unwrap_or(&[]);
    if hidden.len() == hide.len() {
        // Every hidden frame arrived whole; the unparsed tail passes unless held.
        assert!(out.starts_with(&expected));
        assert!(tail.starts_with(out.get(expected.len()..).unwrap_or(&[])));
    }
}

/// Whole frames of a response stream (reference model for the fuzz check).
fn split_frames(data: &[u8]) -> Vec<(i32, &[u8])> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(prefix) = data.get(at..at + SIZE_PREFIX_BYTES + 4) {
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let corr = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if !(4..=(1 << 20)).contains(&size) {
            break;
        }
        let Some(frame) = data.get(at..at + SIZE_PREFIX_BYTES + size) else {
            break;
        };
        frames.push((corr, frame));
        at += SIZE_PREFIX_BYTES + size;
    }
    frames
}
