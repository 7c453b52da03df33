//! Frames: one shard of one group of one bundle, self-describing and checksummed.
//!
//! # Layout (format version 1)
//!
//! All integers little-endian. 44 bytes of overhead per frame: a 40-byte header before the
//! payload and a 4-byte checksum after it.
//!
//! ```text
//!  offset size field
//!  0      2    magic            "nL" (0x6e 0x4c)
//!  2      1    version          1
//!  3      1    codec            1 = reed-solomon-simd GF(2^16), 2 = reed-solomon-erasure GF(2^8)
//!  4      2    S  shard size    payload length; every payload of a bundle is exactly S bytes
//!  6      2    K  group size    target (maximum) data shards per group
//!  8      2    P  parity cap    parity shards 0..P exist for every group
//!  10     4    group index      0..G; 0xFFFFFFFF with shard 0: an announcement (see
//!                               crate::announce), whose payload is not a shard
//!  14     2    shard index      0..k data, k..k+P parity (k = this group's data shards)
//!  16     16   bundle id
//!  32     8    L  bundle length bytes
//!  40     S    payload
//!  40+S   4    CRC-32C          over bytes 0 .. 40+S (header and payload)
//! ```
//!
//! The group's own `k` is not on the wire: it follows from `(L, S, K)` (see
//! [`crate::layout`]) and is exposed as [`FrameRef::group_k`]. Likewise the payload length is
//! `S`: shards are fixed-size by construction (the last data shard is zero-padded), so a
//! separate length field would only be a second copy that can disagree.
//!
//! # Decoding
//!
//! [`Frame::decode`] takes exactly one frame. Truncation, a wrong magic, trailing bytes, a
//! checksum mismatch and parameters that do not describe a valid code are all errors; the
//! receiver treats any of them as an erasure (the frame was lost). An unknown version is
//! the named error [`FrameError::UnsupportedVersion`].
//!
//! [`FrameSplitter`] cuts a byte stream (file, pipe, TCP) of concatenated frames. It does
//! not care where reads end and resynchronises after garbage or a corrupted length by
//! scanning for the magic, one byte past each rejected candidate, so a corrupted frame costs
//! only itself.

use thiserror::Error;

use crate::params::{CodecId, LinkParams, ParamsError};
use crate::wire::{put_u16, put_u32, put_u64, Reader, WireError};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"nL";
/// The frame format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 40;
/// Bytes after the payload (the checksum).
pub const TRAILER_LEN: usize = 4;
/// Per-frame overhead: header and checksum.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;
/// Largest frame the format allows.
pub const MAX_FRAME_LEN: usize = OVERHEAD + u16::MAX as usize;

/// CRC-32C (Castagnoli), the iSCSI/ext4/SCTP checksum.
const CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Why bytes are not a frame. Every variant means "treat as lost".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs.
    #[error("truncated frame: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes the frame needs (so far as known).
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Does not start with [`MAGIC`].
    #[error("not a frame: bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A version this build does not read.
    #[error("frame format version {0} is not supported (this build reads version {VERSION}): upgrade the receiver")]
    UnsupportedVersion(u8),
    /// More bytes than the frame.
    #[error("{0} bytes after the end of the frame")]
    TrailingBytes(usize),
    /// Checksum mismatch: corrupted in transit.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// From the frame.
        stored: u32,
        /// Over the bytes received.
        computed: u32,
    },
    /// Codec byte not known to this build.
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    /// Parameters do not describe a valid code and layout.
    #[error("invalid frame parameters: {0}")]
    Params(#[from] ParamsError),
    /// Group index past the bundle's last group.
    #[error("group {group} does not exist: the bundle has {groups} groups")]
    NoSuchGroup {
        /// Given.
        group: u32,
        /// `G`.
        groups: u32,
    },
    /// Shard index past `k + P` for its group.
    #[error("shard {shard} does not exist in group {group} of {total} shards")]
    NoSuchShard {
        /// Group.
        group: u32,
        /// Given.
        shard: u16,
        /// `k + P`.
        total: u32,
    },
    /// Payload length is not `S` (only when building a frame).
    #[error("payload is {len} bytes, the shard size is {shard_size}")]
    PayloadLen {
        /// Given.
        len: usize,
        /// `S`.
        shard_size: u16,
    },
}

impl From<WireError> for FrameError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated { needed, remaining } => FrameError::Truncated {
                needed,
                got: remaining,
            },
            WireError::TrailingBytes(n) => FrameError::TrailingBytes(n),
            // Frames have no varints; keep the mapping total anyway.
            WireError::VarintOverlong | WireError::VarintOverflow { .. } => {
                FrameError::Truncated { needed: 0, got: 0 }
            }
        }
    }
}

/// Everything in a frame but the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Which bundle.
    pub bundle_id: [u8; 16],
    /// The bundle's code and length (the same in every frame of the bundle).
    pub params: LinkParams,
    /// Group index.
    pub group: u32,
    /// Shard index within the group: `< k` data, `k + j` parity shard `j`.
    pub shard: u16,
}

impl FrameHeader {
    /// Checks the parameters and indices; returns the group's `k` (0 for an announcement,
    /// group [`crate::announce::ANNOUNCE_GROUP`] shard 0).
    pub fn validate(&self) -> Result<u16, FrameError> {
        let layout = self.params.validate()?;
        if self.is_announcement() {
            return Ok(0);
        }
        let k = layout.group_k(self.group).ok_or(FrameError::NoSuchGroup {
            group: self.group,
            groups: layout.group_count(),
        })?;
        let total = u32::from(k) + u32::from(self.params.parity);
        if u32::from(self.shard) >= total {
            return Err(FrameError::NoSuchShard {
                group: self.group,
                shard: self.shard,
                total,
            });
        }
        Ok(k)
    }

    /// Whether this frame is an announcement (see [`crate::announce`]), not a shard.
    pub fn is_announcement(&self) -> bool {
        self.group == crate::announce::ANNOUNCE_GROUP && self.shard == 0
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.params.codec.to_u8());
        put_u16(out, self.params.shard_size);
        put_u16(out, self.params.group_k);
        put_u16(out, self.params.parity);
        put_u32(out, self.group);
        put_u16(out, self.shard);
        out.extend_from_slice(&self.bundle_id);
        put_u64(out, self.params.bundle_len);
    }
}

/// A decoded frame borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    header: FrameHeader,
    group_k: u16,
    payload: &'a [u8],
}

/// A frame owning its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    header: FrameHeader,
    group_k: u16,
    payload: Vec<u8>,
}

impl<'a> FrameRef<'a> {
    /// A frame, if the header is valid and the payload is exactly `S` bytes.
    pub fn new(header: FrameHeader, payload: &'a [u8]) -> Result<Self, FrameError> {
        let group_k = header.validate()?;
        if payload.len() != usize::from(header.params.shard_size) {
            return Err(FrameError::PayloadLen {
                len: payload.len(),
                shard_size: header.params.shard_size,
            });
        }
        Ok(FrameRef {
            header,
            group_k,
            payload,
        })
    }

    /// The header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The payload (`S` bytes).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Data shards in this frame's group.
    pub fn group_k(&self) -> u16 {
        self.group_k
    }

    /// Whether this is a parity shard.
    pub fn is_parity(&self) -> bool {
        self.header.shard >= self.group_k
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(OVERHEAD + self.payload.len());
        self.header.write(out);
        out.extend_from_slice(self.payload);
        let crc = crc32c(&out[start..]);
        put_u32(out, crc);
    }

    /// Bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        OVERHEAD + self.payload.len()
    }

    /// Copies the payload into an owned [`Frame`].
    pub fn to_frame(&self) -> Frame {
        Frame {
            header: self.header,
            group_k: self.group_k,
            payload: self.payload.to_vec(),
        }
    }
}

impl Frame {
    /// A frame, if the header is valid and the payload is exactly `S` bytes.
    pub fn new(header: FrameHeader, payload: Vec<u8>) -> Result<Self, FrameError> {
        let group_k = FrameRef::new(header, &payload)?.group_k;
        Ok(Frame {
            header,
            group_k,
            payload,
        })
    }

    /// Borrowed view.
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            header: self.header,
            group_k: self.group_k,
            payload: &self.payload,
        }
    }

    /// The header.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The payload (`S` bytes).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Data shards in this frame's group.
    pub fn group_k(&self) -> u16 {
        self.group_k
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.as_ref().encode(out)
    }

    /// Decodes exactly one frame from `bytes`. Any error means "lost".
    pub fn decode(bytes: &[u8]) -> Result<FrameRef<'_>, FrameError> {
        let mut r = Reader::new(bytes);
        let magic: [u8; 2] = r.take_array()?;
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let codec = r.u8()?;
        let shard_size = r.u16_le()?;
        let total = OVERHEAD + usize::from(shard_size);
        if bytes.len() < total {
            return Err(FrameError::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(FrameError::TrailingBytes(bytes.len() - total));
        }
        let body = &bytes[..total - TRAILER_LEN];
        let stored = u32::from_le_bytes([
            bytes[total - 4],
            bytes[total - 3],
            bytes[total - 2],
            bytes[total - 1],
        ]);
        let computed = crc32c(body);
        if stored != computed {
            return Err(FrameError::Checksum { stored, computed });
        }
        let group_k = r.u16_le()?;
        let parity = r.u16_le()?;
        let group = r.u32_le()?;
        let shard = r.u16_le()?;
        let bundle_id: [u8; 16] = r.take_array()?;
        let bundle_len = r.u64_le()?;
        let payload = r.take(usize::from(shard_size))?;
        let _crc = r.take(TRAILER_LEN)?;
        r.expect_end()?;
        let codec = CodecId::from_u8(codec).ok_or(FrameError::UnknownCodec(codec))?;
        let header = FrameHeader {
            bundle_id,
            params: LinkParams {
                codec,
                shard_size,
                group_k,
                parity,
                bundle_len,
            },
            group,
            shard,
        };
        FrameRef::new(header, payload)
    }
}

/// Counters of a [`FrameSplitter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitterStats {
    /// Frames returned.
    pub frames: u64,
    /// Bytes skipped while searching for a frame (garbage and rejected candidates).
    pub skipped_bytes: u64,
    /// Candidates that started with the magic but did not decode.
    pub rejected: u64,
}

/// Cuts a byte stream of concatenated frames into frames, whatever the read boundaries.
///
/// Feed bytes with [`push`](Self::push), then call [`next_frame`](Self::next_frame) until it
/// returns `None`; at the end of the stream call [`finish`](Self::finish) and drain again.
/// The buffer holds at most one incomplete candidate (at most `max_frame_len` bytes) plus the
/// last push.
#[derive(Debug, Clone)]
pub struct FrameSplitter {
    buf: Vec<u8>,
    start: usize,
    max_shard_size: u16,
    eof: bool,
    stats: SplitterStats,
}

impl Default for FrameSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameSplitter {
    /// A splitter accepting any shard size.
    pub fn new() -> Self {
        Self::with_max_shard_size(u16::MAX)
    }

    /// A splitter that treats a candidate with a shard size over `max` as garbage, so a
    /// corrupted length is rejected at once instead of after up to 64 KiB more input.
    pub fn with_max_shard_size(max: u16) -> Self {
        FrameSplitter {
            buf: Vec::new(),
            start: 0,
            max_shard_size: max,
            eof: false,
            stats: SplitterStats::default(),
        }
    }

    /// Appends stream bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the end of the stream: an incomplete candidate is then given up on.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Counters so far.
    pub fn stats(&self) -> SplitterStats {
        self.stats
    }

    /// Bytes held and not yet returned or skipped.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn skip(&mut self, n: usize) {
        self.start += n;
        self.stats.skipped_bytes += n as u64;
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next complete, valid frame, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let avail = &self.buf[self.start..];
            match avail.windows(MAGIC.len()).position(|w| w == MAGIC) {
                Some(p) => self.skip(p),
                None => {
                    // Keep a trailing first byte of the magic: the rest may come next.
                    let keep = usize::from(!self.eof && avail.last() == Some(&MAGIC[0]));
                    self.skip(avail.len() - keep);
                    self.compact();
                    return None;
                }
            }
            let avail = &self.buf[self.start..];
            if avail.len() < HEADER_LEN {
                if self.eof {
                    self.skip(1);
                    continue;
                }
                self.compact();
                return None;
            }
            let shard_size = u16::from_le_bytes([avail[4], avail[5]]);
            if avail[2] != VERSION || shard_size > self.max_shard_size {
                self.stats.rejected += 1;
                self.skip(1);
                continue;
            }
            let total = OVERHEAD + usize::from(shard_size);
            if avail.len() < total {
                if self.eof {
                    self.stats.rejected += 1;
                    self.skip(1);
                    continue;
                }
                self.compact();
                return None;
            }
            match Frame::decode(&avail[..total]) {
                Ok(frame) => {
                    let frame = frame.to_frame();
                    self.start += total;
                    self.stats.frames += 1;
                    return Some(frame);
                }
                Err(_) => {
                    self.stats.rejected += 1;
                    self.skip(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_header() -> FrameHeader {
        FrameHeader {
            bundle_id: *b"0123456789abcdef",
            params: LinkParams {
                codec: CodecId::RsSimd16,
                shard_size: 8,
                group_k: 4,
                parity: 4,
                bundle_len: 50,
            },
            group: 1,
            shard: 5,
        }
    }

    fn any_frame() -> impl proptest::strategy::Strategy<Value = (FrameHeader, Vec<u8>)> {
        use proptest::prelude::*;
        (
            any::<[u8; 16]>(),
            prop::sample::select(vec![CodecId::RsSimd16, CodecId::RsErasure8]),
            1u16..=64,
            1u16..=128,
            1u16..=128,
            1u64..100_000,
            any::<u32>(),
            any::<u16>(),
        )
            .prop_filter_map("valid", |(id, codec, half_s, k, p, len, g, sh)| {
                let params = LinkParams {
                    codec,
                    shard_size: half_s * 2,
                    group_k: k,
                    parity: p,
                    bundle_len: len,
                };
                let layout = params.validate().ok()?;
                let group = g % layout.group_count();
                let total = u32::from(layout.group_k(group)?) + u32::from(p);
                let header = FrameHeader {
                    bundle_id: id,
                    params,
                    group,
                    shard: (u32::from(sh) % total) as u16,
                };
                let payload = (0..half_s * 2).map(|i| (i as u8) ^ id[0]).collect();
                Some((header, payload))
            })
    }

    proptest::proptest! {
        #[test]
        fn any_valid_frame_round_trips((header, payload) in any_frame()) {
            let f = Frame::new(header, payload).unwrap();
            let mut out = Vec::new();
            f.encode(&mut out);
            proptest::prop_assert_eq!(out.len(), f.as_ref().encoded_len());
            let back = Frame::decode(&out).unwrap();
            proptest::prop_assert_eq!(back, f.as_ref());
            for n in [0, 1, 3, HEADER_LEN - 1, HEADER_LEN, out.len() - 1] {
                proptest::prop_assert!(Frame::decode(&out[..n]).is_err());
            }
        }

        #[test]
        fn decode_is_total(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), fix_crc: bool) {
            // With and without a matching checksum, so the field checks are reached too.
            if bytes.len() >= 4 {
                bytes[..3].copy_from_slice(&[b'n', b'L', VERSION]);
                if bytes.len() >= OVERHEAD {
                    let s = (bytes.len() - OVERHEAD) as u16;
                    bytes[4..6].copy_from_slice(&s.to_le_bytes());
                }
                if fix_crc {
                    let n = bytes.len();
                    let crc = crc32c(&bytes[..n - 4]);
                    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
                }
            }
            if let Ok(f) = Frame::decode(&bytes) {
                let mut out = Vec::new();
                f.encode(&mut out);
                proptest::prop_assert_eq!(out, bytes);
            }
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trip_and_layout() {
        let payload = [1, 2, 3, 4, 5, 6, 7, 8];
        let f = FrameRef::new(sample_header(), &payload).unwrap();
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(out.len(), OVERHEAD + 8);
        assert_eq!(&out[..4], &[b'n', b'L', 1, 1]);
        assert_eq!(&out[4..6], &8u16.to_le_bytes());
        assert_eq!(&out[10..14], &1u32.to_le_bytes());
        assert_eq!(&out[16..32], b"0123456789abcdef");
        assert_eq!(&out[32..40], &50u64.to_le_bytes());
        assert_eq!(&out[40..48], &payload);
        let back = Frame::decode(&out).unwrap();
        assert_eq!(back, f);
        // 50 bytes / 8 = 7 shards, K = 4: groups of 4 and 3.
        assert_eq!(back.group_k(), 3);
        assert!(back.is_parity());
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_rejected() {
        let payload = [9u8; 8];
        let mut out = Vec::new();
        FrameRef::new(sample_header(), &payload)
            .unwrap()
            .encode(&mut out);
        for n in 0..out.len() {
            assert!(Frame::decode(&out[..n]).is_err(), "prefix of {n} bytes");
        }
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                assert!(Frame::decode(&bad).is_err(), "bit {bit} of byte {i}");
            }
        }
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(Frame::decode(&longer), Err(FrameError::TrailingBytes(1)));
    }

    #[test]
    fn named_errors() {
        let mut out = Vec::new();
        FrameRef::new(sample_header(), &[0; 8])
            .unwrap()
            .encode(&mut out);
        let mut v2 = out.clone();
        v2[2] = 2;
        assert_eq!(Frame::decode(&v2), Err(FrameError::UnsupportedVersion(2)));
        assert_eq!(Frame::decode(b"xx"), Err(FrameError::BadMagic(*b"xx")));
        // Unknown codec with a valid checksum.
        let mut c = out.clone();
        c[3] = 9;
        let n = c.len();
        let crc = crc32c(&c[..n - 4]);
        c[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Frame::decode(&c), Err(FrameError::UnknownCodec(9)));
        // Shard index past k + P, valid checksum.
        let mut h = sample_header();
        h.shard = 7; // group 1 has k = 3, P = 4
        assert!(matches!(
            FrameRef::new(h, &[0; 8]),
            Err(FrameError::NoSuchShard { total: 7, .. })
        ));
        h.shard = 0;
        h.group = 2;
        assert!(matches!(
            FrameRef::new(h, &[0; 8]),
            Err(FrameError::NoSuchGroup { groups: 2, .. })
        ));
        assert!(matches!(
            FrameRef::new(sample_header(), &[0; 7]),
            Err(FrameError::PayloadLen { .. })
        ));
    }
}
