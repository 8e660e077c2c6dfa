#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
mod common;

use common::response;
use kafka_codec::{FrameError, ResponseScanner, ResponseScannerConfig, ResponseStep};

/// Hides the responses at these (position, correlation id) pairs.
fn scanner_hiding(hides: &[(u64, i32)]) -> ResponseScanner {
    let mut s = ResponseScanner::new(ResponseScannerConfig::default());
    for (index, id) in hides {
        s.hide_at(*index, *id);
    }
    s
}

#[test]
fn hides_the_answers_to_injected_requests() {
    let a = response(i32::MAX - 1, 10);
    let b = response(i32::MAX, 30);
    let c = response(0, 500);
    let stream = [a.clone(), b.clone(), c.clone()].concat();
    let mut s = scanner_hiding(&[(0, i32::MAX - 1), (1, i32::MAX)]);
    let (out, hidden) = s.scan_slice(&stream).unwrap();
    assert_eq!(out, c);
    assert_eq!(hidden.len(), 2);
    assert_eq!(hidden[0].correlation_id, i32::MAX - 1);
    assert_eq!(hidden[0].frame, a[4..]);
    assert_eq!(hidden[1].frame, b[4..]);
    assert!(s.is_idle());
}

#[test]
fn hidden_frames_at_the_front_are_dropped_without_copying_the_rest() {
    let stream = [response(7, 3), response(1, 1000)].concat();
    let mut s = scanner_hiding(&[(0, 7)]);
    s.begin_chunk(stream.len());
    let mut copied = 0;
    loop {
        match s.poll().unwrap() {
            ResponseStep::Read(r) => {
                copied += r.len();
                s.supply(&stream[r]).unwrap();
            }
            ResponseStep::Hidden(_) => {}
            ResponseStep::ChunkDone => break,
        }
    }
    let edits = s.finish_chunk();
    assert_eq!(edits.front_only(), Some(11));
    assert!(edits.prepend.is_empty());
    // The hidden frame (11 bytes) and the passed frame's 8-byte prefix: nothing else.
    assert_eq!(copied, 11 + 8);
}

#[test]
fn a_prefix_split_across_chunks_is_held_back_then_released_or_dropped() {
    let pass = response(3, 20);
    let hide = response(9, 5);
    for (stream_frames, at) in [
        (vec![pass.clone(), hide.clone()], 1),
        (vec![hide.clone(), pass.clone()], 0),
    ] {
        let stream = stream_frames.concat();
        for cut in 0..=stream.len() {
            let mut s = scanner_hiding(&[(at, 9)]);
            let (mut out, mut hidden) = s.scan_slice(&stream[..cut]).unwrap();
            let (out2, hidden2) = s.scan_slice(&stream[cut..]).unwrap();
            out.extend(out2);
            hidden.extend(hidden2);
            assert_eq!(out, pass, "cut {cut}");
            assert_eq!(hidden.len(), 1);
            assert_eq!(hidden[0].frame, hide[4..]);
        }
    }
}

#[test]
fn without_hides_every_byte_passes_untouched() {
    let stream = [response(1, 0), response(2, 70_000)].concat();
    let mut s = scanner_hiding(&[]);
    for chunk in stream.chunks(333) {
        let (out, hidden) = s.scan_slice(chunk).unwrap();
        assert_eq!(out, chunk);
        assert!(hidden.is_empty());
    }
}

#[test]
fn oversized_hidden_or_malformed_responses_fail() {
    let mut s = ResponseScanner::new(ResponseScannerConfig {
        max_hidden_frame_bytes: 50,
    });
    s.hide_at(0, 1);
    assert_eq!(
        s.scan_slice(&response(1, 60)).unwrap_err(),
        FrameError::HiddenFrameTooLarge { size: 64, max: 50 }
    );
    let mut s = scanner_hiding(&[]);
    let mut neg = (-1i32).to_be_bytes().to_vec();
    neg.extend([0; 4]);
    assert_eq!(
        s.scan_slice(&neg).unwrap_err(),
        FrameError::NegativeSize { size: -1 }
    );
}

#[test]
fn hiding_by_position_ignores_clients_using_the_same_correlation_id() {
    // A client whose correlation ids reached the proxy's: position decides.
    let stream = [response(7, 5), response(7, 6), response(8, 2)].concat();
    let mut s = scanner_hiding(&[(1, 7)]);
    let (out, hidden) = s.scan_slice(&stream).unwrap();
    assert_eq!(out, [response(7, 5), response(8, 2)].concat());
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0].frame, response(7, 6)[4..]);
}

#[test]
fn a_response_out_of_step_is_an_error() {
    let mut s = scanner_hiding(&[(0, 99)]);
    assert_eq!(
        s.scan_slice(&response(3, 1)).unwrap_err(),
        FrameError::UnexpectedResponse {
            index: 0,
            expected: 99,
            got: 3
        }
    );
}

#[test]
fn a_hide_registered_while_a_prefix_is_split_over_three_chunks_sends_no_byte_twice() {
    // Re-authentication registers hides between chunks: here after the first 2 bytes of a
    // passed frame's 8-byte prefix went on to the client, and before the next 3 arrive.
    let passed = response(1, 20);
    let reauth = [response(7, 4), response(8, 6)].concat();
    let stream = [passed.clone(), reauth].concat();
    let mut s = scanner_hiding(&[]);
    let (mut out, _) = s.scan_slice(&stream[..2]).unwrap();
    s.hide_at(1, 7);
    s.hide_at(2, 8);
    let (more, _) = s.scan_slice(&stream[2..5]).unwrap();
    out.extend(more);
    let (rest, hidden) = s.scan_slice(&stream[5..]).unwrap();
    out.extend(rest);
    assert_eq!(out, passed);
    assert_eq!(hidden.len(), 2);
    assert!(s.is_idle());
}

#[test]
fn responses_are_not_held_to_the_request_size_limit() {
    // A Fetch response may be larger than socket.request.max.bytes (100 MiB by default):
    // only its prefix is read, the rest passes.
    let size: i32 = 150 * 1024 * 1024 + 4;
    let mut prefix = size.to_be_bytes().to_vec();
    prefix.extend(5i32.to_be_bytes());
    let mut s = scanner_hiding(&[]);
    let (out, _) = s.scan_slice(&prefix).unwrap();
    assert_eq!(out, prefix);
    let (out, _) = s.scan_slice(&[0xab; 4096]).unwrap();
    assert_eq!(out.len(), 4096);
}

#[test]
fn a_hide_registered_after_its_frame_began_is_an_error() {
    // The filter registers a hide before the answer can arrive; a caller that does not
    // gets an error, never a half-removed frame.
    let stream = [response(1, 3), response(2, 3), response(3, 3)].concat();
    // After the whole first frame went by.
    let mut s = scanner_hiding(&[]);
    s.scan_slice(&stream[..11]).unwrap();
    s.hide_at(0, 1);
    assert_eq!(
        s.scan_slice(&stream[11..]).unwrap_err(),
        FrameError::HideTooLate { index: 0 }
    );
    // After two bytes of its prefix went by.
    let mut s = scanner_hiding(&[]);
    s.scan_slice(&stream[..13]).unwrap();
    s.hide_at(1, 2);
    assert_eq!(
        s.scan_slice(&stream[13..]).unwrap_err(),
        FrameError::HideTooLate { index: 1 }
    );
}

#[test]
fn a_passed_prefix_split_across_chunks_does_not_block_a_later_hide() {
    // One byte of a passed response went by, then re-authentication registered the hide
    // of the next response; both arrive in the next chunk.
    let passed = response(1, 117);
    let hidden_frame = response(7, 75);
    let stream = [passed.clone(), hidden_frame.clone()].concat();
    let mut s = scanner_hiding(&[]);
    let (mut out, _) = s.scan_slice(&stream[..1]).unwrap();
    s.hide_at(1, 7);
    let (rest, hidden) = s.scan_slice(&stream[1..]).unwrap();
    out.extend(rest);
    assert_eq!(out, passed);
    assert_eq!(hidden[0].frame, hidden_frame[4..]);
}
