//! A difference stream as zero runs and literal bytes: the second form of a solid group's
//! differences ([`crate::patch::Streams::with_runs`]).
//!
//! Why: where a rebuilt library changed in few, scattered places (a 565 MB TensorFlow
//! library with 439 thousand changed bytes, most of them alone), LZMA over the
//! differences themselves pays for every change twice: a literal, then a new match to take
//! up the zeros again, up to 273 bytes at a time. Said as "so many zeros, then so many
//! bytes", with the bytes in a stream of their own, the same differences take a third less
//! (492,707 -> 331,848 B on that library; HDiffPatch, which codes its differences this way,
//! 329,667 B). Where the differences are dense and repetitive (libssl3), LZMA over them wins
//! instead, so the ground codes a group both ways and sends the smaller
//! (`docs/measurements.md`, "Differences as zero runs").
//!
//! Layout: `runs` is a list of (varint zeros, varint literals − 1) pairs, `literals` their
//! bytes one after the other. After the last pair, every byte of the stream is zero.

use crate::wire::{put_varint, Reader, WireError};

/// The shortest run of zeros that ends a literal segment: a lone zero between two changed
/// bytes costs less as a literal than as a pair of its own (tf, scipy, libssl3 alike).
const MIN_RUN: u64 = 2;

/// The runs and literal bytes of the stream `pieces` make one after the other (the pieces
/// are never joined: a group's differences reach 64 MiB).
pub fn split(pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    let (mut runs, mut literals) = (Vec::new(), Vec::new());
    // Zeros before the open segment, its length (0: none open), zeros seen after it.
    let (mut lead, mut open, mut zeros) = (0u64, 0u64, 0u64);
    for &b in pieces.iter().flat_map(|p| p.iter()) {
        if b == 0 {
            zeros += 1;
            continue;
        }
        if open > 0 && zeros < MIN_RUN {
            literals.extend(std::iter::repeat_n(0, zeros as usize));
            open += zeros;
        } else {
            if open > 0 {
                put_varint(&mut runs, lead);
                put_varint(&mut runs, open - 1);
                lead = 0;
            }
            lead += zeros;
            open = 0;
        }
        zeros = 0;
        literals.push(b);
        open += 1;
    }
    if open > 0 {
        put_varint(&mut runs, lead);
        put_varint(&mut runs, open - 1);
    }
    (runs, literals)
}

/// Reads a stream in the runs form as it is needed, never expanding it whole.
pub struct RunReader<'a> {
    runs: Reader<'a>,
    literals: Reader<'a>,
    /// What is left of the current pair: zeros, then literal bytes.
    zeros: u64,
    open: u64,
}

impl<'a> RunReader<'a> {
    pub fn new(runs: &'a [u8], literals: &'a [u8]) -> RunReader<'a> {
        RunReader {
            runs: Reader::new(runs),
            literals: Reader::new(literals),
            zeros: 0,
            open: 0,
        }
    }

    /// Append to `out` the next `base.len()` bytes of the stream, each added to the byte of
    /// `base` at its place. Work is bounded by `base.len()` plus the pairs read, and every
    /// pair read makes at least one byte.
    pub fn add_to(&mut self, base: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut base = base;
        while !base.is_empty() {
            if self.zeros == 0 && self.open == 0 {
                if self.runs.is_empty() {
                    self.zeros = u64::MAX;
                } else {
                    self.zeros = self.runs.varint_u64()?;
                    self.open = self.runs.varint_u64()?.saturating_add(1);
                }
            }
            let n = |left: u64| usize::try_from(left).map_or(base.len(), |l| l.min(base.len()));
            if self.zeros > 0 {
                let k = n(self.zeros);
                out.extend_from_slice(&base[..k]);
                self.zeros -= k as u64;
                base = &base[k..];
            } else {
                let k = n(self.open);
                let d = self.literals.take(k)?;
                out.extend(d.iter().zip(&base[..k]).map(|(x, y)| x.wrapping_add(*y)));
                self.open -= k as u64;
                base = &base[k..];
            }
        }
        Ok(())
    }

    /// Every pair and literal byte used (the zeros after the last pair need not be).
    pub fn expect_end(&self) -> Result<(), WireError> {
        if self.open > 0 {
            return Err(WireError::Truncated {
                needed: usize::try_from(self.open).unwrap_or(usize::MAX),
                remaining: 0,
            });
        }
        self.runs.expect_end()?;
        self.literals.expect_end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expand(runs: &[u8], literals: &[u8], len: usize) -> Result<Vec<u8>, WireError> {
        let mut r = RunReader::new(runs, literals);
        let mut out = Vec::new();
        r.add_to(&vec![0; len], &mut out)?;
        r.expect_end()?;
        Ok(out)
    }

    #[test]
    fn lone_zeros_stay_literal_and_runs_do_not() {
        let d = [0, 0, 0, 5, 0, 6, 0, 0, 7, 0, 0, 0];
        let (runs, literals) = split(&[&d[..4], &d[4..]]);
        assert_eq!(runs, [3, 2, 2, 0]);
        assert_eq!(literals, [5, 0, 6, 7]);
        assert_eq!(expand(&runs, &literals, d.len()).unwrap(), d);
        // One literal byte more than the pairs use, or a pair cut short: refused.
        assert!(expand(&runs, &[5, 0, 6, 7, 8], d.len()).is_err());
        assert!(expand(&runs, &literals, 6).is_err());
        assert!(expand(&runs[..3], &literals, d.len()).is_err());
    }

    #[test]
    fn a_hostile_run_costs_no_memory() {
        // Runs of 2^63 zeros and of 2^64 literal bytes: nothing is allocated for them.
        let mut runs = Vec::new();
        put_varint(&mut runs, 1 << 63);
        put_varint(&mut runs, u64::MAX);
        let mut r = RunReader::new(&runs, &[]);
        let mut out = Vec::new();
        r.add_to(&[9; 1000], &mut out).unwrap();
        assert_eq!(out, [9; 1000]);
        assert!(
            r.expect_end().is_err(),
            "its literal bytes were never given"
        );
        let mut runs = Vec::new();
        put_varint(&mut runs, 0);
        put_varint(&mut runs, u64::MAX);
        assert!(expand(&runs, &[1; 10], 1000).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(d in proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0..400),
                       cut in 0usize..400, base in any::<u8>()) {
            let cut = cut.min(d.len());
            let (runs, literals) = split(&[&d[..cut], &d[cut..]]);
            // Within what `solid::decode` lets the streams expand to (the group's length, and
            // + 4096 per part for the runs): a pair after the first makes at least 3 bytes
            // and takes 2 while its numbers are small.
            prop_assert!(runs.len() <= d.len() + 2 && literals.len() <= d.len());
            let base = vec![base; d.len()];
            let mut r = RunReader::new(&runs, &literals);
            let mut out = Vec::new();
            r.add_to(&base[..cut], &mut out).unwrap();
            r.add_to(&base[cut..], &mut out).unwrap();
            r.expect_end().unwrap();
            let want: Vec<u8> = d.iter().zip(&base).map(|(x, y)| x.wrapping_add(*y)).collect();
            prop_assert_eq!(out, want);
        }

        #[test]
        fn hostile_streams_never_panic(runs in proptest::collection::vec(any::<u8>(), 0..32),
                                       literals in proptest::collection::vec(any::<u8>(), 0..32),
                                       len in 0usize..256) {
            if let Ok(out) = expand(&runs, &literals, len) {
                prop_assert_eq!(out.len(), len);
            }
        }
    }
}
