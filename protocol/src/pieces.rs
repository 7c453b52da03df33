//! Piece hashes: the payload section cut into pieces of `2^log2` bytes, each named in the
//! signed manifest by the first [`PIECE_HASH`] bytes of its BLAKE3.
//!
//! They do not make anything trusted that was not: every payload is still verified against
//! its chunk ids, and every NAR against its narHash. They tell the device *where* forged or
//! damaged bytes are. Without them a payload that fails verification costs every FEC group it
//! spans (the device cannot tell which shard was bad), so one forged frame cost a large solid
//! group's worth of groups; with them it costs the groups under the piece that failed, which
//! the device can check as soon as those groups decode, anywhere in the bundle.
//!
//! A forger who finds a second preimage of a 64-bit truncated BLAKE3 (about 2^64 work) gets
//! a piece through, and then the payload check: they cost the payload's groups, as without
//! pieces, never an import of the forged bytes.

use serde::{Deserialize, Serialize};

/// Bytes of each piece's hash.
pub const PIECE_HASH: usize = 8;
/// Smallest and largest piece the format allows (1 KiB to 16 MiB).
pub const MIN_PIECE_LOG2: u8 = 10;
pub const MAX_PIECE_LOG2: u8 = 24;

/// The piece hashes of a payload section (none for a section of at most one piece, where
/// checking the payloads says as much).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pieces {
    /// Each piece holds `2^log2` bytes; the last may be shorter.
    pub log2: u8,
    pub hashes: Vec<[u8; PIECE_HASH]>,
}

/// The hash a piece's bytes must have.
pub fn piece_hash(bytes: &[u8]) -> [u8; PIECE_HASH] {
    let mut h = [0u8; PIECE_HASH];
    h.copy_from_slice(&blake3::hash(bytes).as_bytes()[..PIECE_HASH]);
    h
}

/// The piece size for a link whose FEC groups hold `group_bytes`: the largest power of two
/// not over it, within the format's bounds, so that a piece spans at most two groups.
pub fn piece_log2_for(group_bytes: u64) -> u8 {
    let log2 = 63 - group_bytes.max(1).leading_zeros() as u8;
    log2.clamp(MIN_PIECE_LOG2, MAX_PIECE_LOG2)
}

impl Pieces {
    /// Bytes per piece.
    pub fn len(&self) -> u64 {
        1 << self.log2.min(MAX_PIECE_LOG2)
    }

    /// Whether there is no piece hash (the payloads alone are checked).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many pieces a payload section of `payload_bytes` is cut into.
    pub fn count_for(&self, payload_bytes: u64) -> u64 {
        payload_bytes.div_ceil(self.len())
    }

    /// Whether these hashes can describe a section of `payload_bytes`: none, or a piece size
    /// within the bounds and one hash per piece of a section longer than one piece.
    pub fn fits(&self, payload_bytes: u64) -> bool {
        self.hashes.is_empty()
            || ((MIN_PIECE_LOG2..=MAX_PIECE_LOG2).contains(&self.log2)
                && payload_bytes > self.len()
                && self.hashes.len() as u64 == self.count_for(payload_bytes))
    }

    /// Piece `i`'s bytes within a payload section of `payload_bytes`.
    pub fn range(&self, i: usize, payload_bytes: u64) -> core::ops::Range<u64> {
        let start = (i as u64).saturating_mul(self.len()).min(payload_bytes);
        start..start.saturating_add(self.len()).min(payload_bytes)
    }

    /// Whether `bytes` are piece `i`.
    pub fn check(&self, i: usize, bytes: &[u8]) -> bool {
        self.hashes.get(i) == Some(&piece_hash(bytes))
    }
}

/// Hashes a payload section as it is written, piece by piece.
pub struct PieceHasher {
    log2: u8,
    hasher: blake3::Hasher,
    filled: u64,
    hashes: Vec<[u8; PIECE_HASH]>,
    total: u64,
}

impl PieceHasher {
    pub fn new(log2: u8) -> PieceHasher {
        PieceHasher {
            log2: log2.clamp(MIN_PIECE_LOG2, MAX_PIECE_LOG2),
            hasher: blake3::Hasher::new(),
            filled: 0,
            hashes: Vec::new(),
            total: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        let len = 1u64 << self.log2;
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((len - self.filled) as usize).min(bytes.len());
            self.hasher.update(&bytes[..take]);
            self.filled += take as u64;
            bytes = &bytes[take..];
            if self.filled == len {
                self.push();
            }
        }
    }

    fn push(&mut self) {
        let mut h = [0u8; PIECE_HASH];
        h.copy_from_slice(&self.hasher.finalize().as_bytes()[..PIECE_HASH]);
        self.hashes.push(h);
        self.hasher.reset();
        self.filled = 0;
    }

    /// The hashes of everything written (none if it was at most one piece).
    pub fn finish(mut self) -> Pieces {
        if self.filled > 0 {
            self.push();
        }
        if self.total <= 1 << self.log2 {
            self.hashes.clear();
        }
        Pieces {
            log2: self.log2,
            hashes: self.hashes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn hashes_streamed_in_any_cut_match_each_piece() {
        let bytes = section(5000);
        for step in [1, 7, 1024, 1500, 5000] {
            let mut h = PieceHasher::new(10);
            bytes.chunks(step).for_each(|c| h.update(c));
            let p = h.finish();
            assert_eq!(p.hashes.len(), 5);
            assert!(p.fits(5000));
            for i in 0..5 {
                let r = p.range(i, 5000);
                assert!(p.check(i, &bytes[r.start as usize..r.end as usize]));
            }
            assert_eq!(p.range(4, 5000), 4096..5000);
            let mut flipped = bytes[1024..2048].to_vec();
            flipped[17] ^= 1;
            assert!(!p.check(1, &flipped));
            assert!(!p.check(5, &bytes[..10]));
        }
    }

    #[test]
    fn one_piece_or_less_carries_no_hash() {
        for n in [0, 1, 1024] {
            let mut h = PieceHasher::new(10);
            h.update(&section(n));
            let p = h.finish();
            assert!(p.is_empty() && p.fits(n as u64), "{n}");
        }
        let mut h = PieceHasher::new(10);
        h.update(&section(1025));
        assert_eq!(h.finish().hashes.len(), 2);
    }

    #[test]
    fn fits_refuses_counts_and_sizes_that_do_not_describe_the_section() {
        let p = |log2, n| Pieces {
            log2,
            hashes: vec![[0; PIECE_HASH]; n],
        };
        assert!(p(10, 3).fits(3000));
        assert!(!p(10, 2).fits(3000));
        assert!(!p(10, 4).fits(3000));
        assert!(!p(9, 6).fits(3000));
        assert!(!p(25, 1).fits(3000));
        assert!(!p(12, 1).fits(3000));
        assert!(p(12, 0).fits(3000));
    }

    #[test]
    fn piece_size_follows_the_fec_group() {
        assert_eq!(piece_log2_for(1000 * 1024), 19);
        assert_eq!(piece_log2_for(256), MIN_PIECE_LOG2);
        assert_eq!(piece_log2_for(u64::MAX), MAX_PIECE_LOG2);
    }
}
