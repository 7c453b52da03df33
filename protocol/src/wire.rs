//! A small bounded reader and a few writers for the link-layer formats.
//!
//! Modelled on rustls `msgs/codec.rs`: a [`Reader`] walks a borrowed slice, every read is
//! checked against what is left, a length-prefixed part is read through a length-bounded
//! sub-reader, and a parser ends with [`Reader::expect_end`] so trailing bytes are an error.
//! Integers are little-endian; variable-length integers are unsigned LEB128 and must be in
//! their shortest form (an overlong encoding is rejected, so every value has exactly one
//! encoding and decode-then-encode reproduces the input).
//!
//! Nothing here allocates.

use thiserror::Error;

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input ended early.
    #[error("truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the read wanted.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A varint used more bytes than its value needs (e.g. `0x80 0x00` for 0).
    #[error("overlong varint")]
    VarintOverlong,
    /// A varint does not fit the integer type it was read as.
    #[error("varint overflows {bits}-bit integer")]
    VarintOverflow {
        /// Width of the target type.
        bits: u32,
    },
    /// Bytes were left after the value ended.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Most bytes an LEB128 `u64` can take.
pub const MAX_VARINT_LEN: usize = 10;

/// A cursor over a borrowed byte slice; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread rest, without consuming it.
    pub fn peek_rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(WireError::Truncated {
                needed: n,
                remaining,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Takes the next `N` bytes as an array.
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A sub-reader over the next `n` bytes; this reader moves past them.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, WireError> {
        self.take(n).map(Reader::new)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take_array::<1>()?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16_le(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32_le(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Reads an unsigned LEB128 varint in shortest form.
    pub fn varint_u64(&mut self) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only carry the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(WireError::VarintOverflow { bits: 64 });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // A final zero byte after the first adds nothing: overlong.
                if i > 0 && byte == 0 {
                    return Err(WireError::VarintOverlong);
                }
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow { bits: 64 })
    }

    /// Reads a varint that must fit a `u32`.
    pub fn varint_u32(&mut self) -> Result<u32, WireError> {
        let v = self.varint_u64()?;
        u32::try_from(v).map_err(|_| WireError::VarintOverflow { bits: 32 })
    }

    /// Reads a varint that must fit a `u16`.
    pub fn varint_u16(&mut self) -> Result<u16, WireError> {
        let v = self.varint_u64()?;
        u16::try_from(v).map_err(|_| WireError::VarintOverflow { bits: 16 })
    }

    /// Fails with [`WireError::TrailingBytes`] unless everything was read.
    pub fn expect_end(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n)),
        }
    }
}

/// Appends `v` as an unsigned LEB128 varint (shortest form).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// How many bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// Appends a little-endian `u16`.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_width_little_endian() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16_le(), Ok(0x0302));
        assert_eq!(r.u32_le(), Ok(0x0706_0504));
        assert_eq!(r.u64_le(), Ok(0x0f0e_0d0c_0b0a_0908));
        assert!(r.is_empty());
        assert_eq!(
            r.u8(),
            Err(WireError::Truncated {
                needed: 1,
                remaining: 0
            })
        );
    }

    #[test]
    fn sub_reader_is_bounded() {
        let mut r = Reader::new(&[1, 2, 3, 4]);
        let mut s = r.sub(2).unwrap();
        assert_eq!(s.u16_le(), Ok(0x0201));
        assert!(s.u8().is_err());
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.expect_end(), Err(WireError::TrailingBytes(2)));
        assert!(r.sub(3).is_err());
    }

    #[test]
    fn varint_edges() {
        for (bytes, want) in [
            (&[0x00][..], Ok(0)),
            (&[0x7f][..], Ok(127)),
            (&[0x80, 0x01][..], Ok(128)),
            (&[0x80, 0x00][..], Err(WireError::VarintOverlong)),
            (&[0xff, 0x00][..], Err(WireError::VarintOverlong)),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..],
                Ok(u64::MAX),
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..],
                Err(WireError::VarintOverflow { bits: 64 }),
            ),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ][..],
                Err(WireError::VarintOverflow { bits: 64 }),
            ),
            (
                &[0x80][..],
                Err(WireError::Truncated {
                    needed: 1,
                    remaining: 0,
                }),
            ),
        ] {
            assert_eq!(Reader::new(bytes).varint_u64(), want, "{bytes:x?}");
        }
        assert_eq!(
            Reader::new(&[0x80, 0x80, 0x04]).varint_u16(),
            Err(WireError::VarintOverflow { bits: 16 })
        );
        assert_eq!(
            Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x10]).varint_u32(),
            Err(WireError::VarintOverflow { bits: 32 })
        );
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint_u64(), Ok(v));
            prop_assert!(r.expect_end().is_ok());
        }

        #[test]
        fn varint_decode_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            // Whatever decodes must re-encode to exactly the bytes consumed.
            let mut r = Reader::new(&bytes);
            if let Ok(v) = r.varint_u64() {
                let mut out = Vec::new();
                put_varint(&mut out, v);
                prop_assert_eq!(&out[..], &bytes[..r.position()]);
            }
        }
    }
}
