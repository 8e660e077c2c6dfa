#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code
mod common;

use common::response;
use kafka_codec::{FrameError, ResponseScanner, ResponseScannerConfig, ResponseStep};

fn scanner_hiding(ids: &[i32]) -> ResponseScanner {
    let mut s = ResponseScanner::new(ResponseScannerConfig::default());
    for id in ids {
        s.hide(*id);
    }
    s
}

#[test]
fn hides_the_answers_to_injected_requests() {
    let a = response(i32::MAX - 1, 10);
    let b = response(i32::MAX, 30);
    let c = response(0, 500);
    let stream = [a.clone(), b.clone(), c.clone()].concat();
    let mut s = scanner_hiding(&[i32::MAX - 1, i32::MAX]);
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
    let mut s = scanner_hiding(&[7]);
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
    for stream_frames in [
        vec![pass.clone(), hide.clone()],
        vec![hide.clone(), pass.clone()],
    ] {
        let stream = stream_frames.concat();
        for cut in 0..=stream.len() {
            let mut s = scanner_hiding(&[9]);
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
fn oversized_or_malformed_responses_fail() {
    let mut s = ResponseScanner::new(ResponseScannerConfig {
        max_frame_bytes: 100,
        max_hidden_frame_bytes: 50,
    });
    s.hide(1);
    assert_eq!(
        s.scan_slice(&response(1, 60)).unwrap_err(),
        FrameError::HiddenFrameTooLarge { size: 64, max: 50 }
    );
    let mut s = ResponseScanner::new(ResponseScannerConfig {
        max_frame_bytes: 100,
        max_hidden_frame_bytes: 50,
    });
    assert!(matches!(
        s.scan_slice(&response(1, 200)),
        Err(FrameError::TooLarge { .. })
    ));
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
    let mut s = scanner_hiding(&[]);
    s.hide_at(1, 7);
    let (out, hidden) = s.scan_slice(&stream).unwrap();
    assert_eq!(out, [response(7, 5), response(8, 2)].concat());
    assert_eq!(hidden.len(), 1);
    assert_eq!(hidden[0].frame, response(7, 6)[4..]);
    assert_eq!(s.frames_seen(), 3);
}

#[test]
fn a_response_out_of_step_is_an_error() {
    let mut s = scanner_hiding(&[]);
    s.hide_at(0, 99);
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
