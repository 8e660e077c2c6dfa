//! Collects the few header bytes of a frame that may arrive split across chunks.

use crate::FrameError;

/// Large enough for the longest field read in one step: size prefix + fixed request
/// header (4 + 8 bytes).
const CAPACITY: usize = 12;

/// A fixed-size buffer: header fields are read into it until a step has all its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accumulator {
    buf: [u8; CAPACITY],
    len: usize,
}

impl Accumulator {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Appends bytes; the caller never asks for more than the capacity.
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let end = self.len + bytes.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(FrameError::MalformedHeader {
                reason: "header field longer than the scanner's buffer",
            })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Outcome of decoding an unsigned varint from the bytes seen so far.
pub(crate) enum Varint {
    Complete(u32),
    NeedMore,
}

/// Decodes Kafka's unsigned varint (protobuf style, at most 5 bytes for 32 bits).
pub(crate) fn decode_uvarint(bytes: &[u8]) -> Result<Varint, FrameError> {
    let mut value: u32 = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if i >= 5 {
            break;
        }
        let chunk = u32::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if i == 4 && chunk > 0x0f {
            return Err(FrameError::MalformedHeader {
                reason: "varint overflows 32 bits",
            });
        }
        value |= chunk << shift;
        if byte & 0x80 == 0 {
            return Ok(Varint::Complete(value));
        }
    }
    if bytes.len() >= 5 {
        return Err(FrameError::MalformedHeader {
            reason: "varint longer than 5 bytes",
        });
    }
    Ok(Varint::NeedMore)
}

pub(crate) fn be_i16(bytes: &[u8]) -> Option<i16> {
    let arr: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
    Some(i16::from_be_bytes(arr))
}

pub(crate) fn be_i32(bytes: &[u8]) -> Option<i32> {
    let arr: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(i32::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_like_kafka() {
        for (bytes, want) in [
            (&[0x00][..], 0u32),
            (&[0x01], 1),
            (&[0x7f], 127),
            (&[0x80, 0x01], 128),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], u32::MAX),
        ] {
            match decode_uvarint(bytes) {
                Ok(Varint::Complete(v)) => assert_eq!(v, want),
                _ => panic!("{bytes:?} did not decode"),
            }
        }
        assert!(matches!(decode_uvarint(&[0x80]), Ok(Varint::NeedMore)));
        assert!(decode_uvarint(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(decode_uvarint(&[0x80, 0x80, 0x80, 0x80, 0x80]).is_err());
    }
}
