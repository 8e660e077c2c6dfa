//! The edits the filter makes to Envoy's buffers, as pure functions over [`HostBuffer`].
//! Envoy only edits a connection buffer at its front (drain then prepend) or its end, so
//! every change is expressed as one front replacement, copying as little as possible.

use kafka_codec::ChunkEdits;

use crate::host::{HostBuffer, HostError};

/// Puts `bytes` in front of the chunk (the first authentication goes ahead of the
/// client's first byte).
pub fn prepend(buf: &mut dyn HostBuffer, bytes: &[u8]) -> Result<(), HostError> {
    buf.replace(0, 0, bytes)
}

/// Inserts `bytes` at `offset` of the chunk (a request boundary): the bytes before it are
/// read out, drained and put back followed by `bytes`. Only those bytes are copied.
pub fn insert_at(buf: &mut dyn HostBuffer, offset: usize, bytes: &[u8]) -> Result<(), HostError> {
    if offset == 0 {
        return prepend(buf, bytes);
    }
    let mut front = buf.read(0..offset)?;
    front.extend_from_slice(bytes);
    buf.replace(0, offset, &front)
}

/// Rewrites a chunk of `size` bytes as `edits` says. When only its front changes (the
/// usual case: the answers to the filter's own requests come first), the rest of the
/// chunk is not copied.
pub fn apply_edits(
    buf: &mut dyn HostBuffer,
    size: usize,
    edits: &ChunkEdits,
) -> Result<(), HostError> {
    match edits.front_only() {
        Some(drop) => buf.replace(0, drop, &edits.prepend),
        None => {
            let chunk = buf.read(0..size)?;
            buf.replace(0, size, &edits.apply(&chunk))
        }
    }
}

/// Drops the whole chunk: nothing of a refused authentication reaches the client.
pub fn discard(buf: &mut dyn HostBuffer, size: usize) -> Result<(), HostError> {
    buf.replace(0, size, &[])
}
