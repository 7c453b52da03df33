//! Binary patches in the manner of bsdiff (Colin Percival, "Naive differences of executable
//! code", 2003): a new chunk is rebuilt from a reference the device already holds by a list
//! of controls, each "add `add` bytes of the reference to the next `add` diff bytes, then copy
//! `copy` extra bytes, then move `seek` bytes in the reference".
//!
//! Why: a rebuilt binary differs from its previous build mostly by shifted addresses; the
//! bytewise differences of matching code are mostly zeros, which compress to almost nothing,
//! where an LZ-style delta (zstd with a dictionary) pays a new match at every changed byte.
//!
//! Layout (the whole patch is then zstd-compressed as one payload, see
//! [`crate::manifest::Encoding::Bsdiff`]): a varint count of controls; per control
//! `add`, `copy` (varints) and `seek` (zigzag varint); then all diff bytes; then all extra bytes.
//! Keeping the three streams apart lets zstd see long runs of zeros in the diff stream.
//! Every position is checked: a patch never reads outside the reference and never writes
//! more than the length the manifest gives.

use thiserror::Error;

use crate::wire::{put_varint, Reader, WireError};
use crate::zero_runs::RunReader;

/// One step of a patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// Bytes made by adding diff bytes to reference bytes.
    pub add: u64,
    /// Bytes copied from the extra stream.
    pub copy: u64,
    /// Move in the reference after the add (may be negative).
    pub seek: i64,
}

/// A patch before it is serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    pub controls: Vec<Control>,
    pub diff: Vec<u8>,
    pub extra: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatchError {
    #[error("patch is malformed: {0}")]
    Wire(#[from] WireError),
    #[error("patch makes {found} bytes, the chunk has {expected}")]
    Length { found: u64, expected: u64 },
    #[error("patch reads outside its {len}-byte reference (at {at})")]
    OutOfReference { at: i128, len: usize },
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl Patch {
    /// The serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = control_stream(&[self]);
        out.reserve(self.diff.len() + self.extra.len());
        out.extend_from_slice(&self.diff);
        out.extend_from_slice(&self.extra);
        out
    }
}

/// Rebuild the `len`-byte chunk that `patch` makes from `reference`.
pub fn apply(reference: &[u8], patch: &[u8], len: usize) -> Result<Vec<u8>, PatchError> {
    // Find where the controls end and sum what they take from the diff and extra bytes.
    let mut r = Reader::new(patch);
    let count = r.varint_u64()?;
    let mut adds = 0u64;
    for _ in 0..count {
        adds = adds.saturating_add(r.varint_u64()?);
        r.varint_u64()?; // copy
        r.varint_u64()?; // seek
    }
    let controls = &patch[..r.position()];
    let diff = r.take(usize::try_from(adds).unwrap_or(usize::MAX))?;
    let extra = r.take_rest();
    let mut streams = Streams::new(controls, diff, extra);
    let out = streams.next(reference, len)?;
    streams.expect_end()?;
    Ok(out)
}

/// The three streams of one or more patches, read in order: the controls (per patch a
/// varint count, then its controls), the diff bytes and the extra bytes. A single patch is
/// the three laid end to end ([`Patch::to_bytes`]); a solid group codes each stream across
/// all its parts (`manifest::Encoding::Solid`).
pub struct Streams<'a> {
    controls: Reader<'a>,
    diff: Diff<'a>,
    extra: Reader<'a>,
}

/// The diff bytes as they are, or as zero runs and literal bytes ([`crate::zero_runs`]).
enum Diff<'a> {
    Bytes(Reader<'a>),
    Runs(RunReader<'a>),
}

impl Diff<'_> {
    /// Append the next `base.len()` diff bytes to `out`, each added to its byte of `base`.
    fn add_to(&mut self, base: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Diff::Bytes(r) => {
                let d = r.take(base.len())?;
                out.extend(d.iter().zip(base).map(|(x, y)| x.wrapping_add(*y)));
                Ok(())
            }
            Diff::Runs(r) => r.add_to(base, out),
        }
    }

    fn expect_end(&self) -> Result<(), WireError> {
        match self {
            Diff::Bytes(r) => r.expect_end(),
            Diff::Runs(r) => r.expect_end(),
        }
    }
}

impl<'a> Streams<'a> {
    pub fn new(controls: &'a [u8], diff: &'a [u8], extra: &'a [u8]) -> Streams<'a> {
        Streams {
            controls: Reader::new(controls),
            diff: Diff::Bytes(Reader::new(diff)),
            extra: Reader::new(extra),
        }
    }

    /// The streams of a solid group whose diff bytes travel as zero runs and literal bytes.
    pub fn with_runs(
        controls: &'a [u8],
        runs: &'a [u8],
        literals: &'a [u8],
        extra: &'a [u8],
    ) -> Streams<'a> {
        Streams {
            controls: Reader::new(controls),
            diff: Diff::Runs(RunReader::new(runs, literals)),
            extra: Reader::new(extra),
        }
    }

    /// Rebuild the next patch's `len` bytes from `reference`. Never reads outside the
    /// reference or the streams, and never makes more than `len` bytes.
    pub fn next(&mut self, reference: &[u8], len: usize) -> Result<Vec<u8>, PatchError> {
        let count = self.controls.varint_u64()?;
        let mut out = Vec::with_capacity(len);
        let mut at: i128 = 0;
        for _ in 0..count {
            let add = self.controls.varint_u64()?;
            let copy = self.controls.varint_u64()?;
            let seek = unzigzag(self.controls.varint_u64()?);
            let found = (out.len() as u64).saturating_add(add).saturating_add(copy);
            if found > len as u64 {
                return Err(PatchError::Length {
                    found,
                    expected: len as u64,
                });
            }
            // Both are now at most `len`.
            let (add, copy) = (add as usize, copy as usize);
            let start = usize::try_from(at)
                .ok()
                .filter(|s| s.checked_add(add).is_some_and(|end| end <= reference.len()))
                .ok_or(PatchError::OutOfReference {
                    at,
                    len: reference.len(),
                })?;
            self.diff.add_to(&reference[start..start + add], &mut out)?;
            out.extend_from_slice(self.extra.take(copy)?);
            at += add as i128 + i128::from(seek);
        }
        if out.len() != len {
            return Err(PatchError::Length {
                found: out.len() as u64,
                expected: len as u64,
            });
        }
        Ok(out)
    }

    /// Every stream used up: bytes left over mean a malformed patch.
    pub fn expect_end(&self) -> Result<(), PatchError> {
        self.controls.expect_end()?;
        self.diff.expect_end()?;
        self.extra.expect_end()?;
        Ok(())
    }
}

/// The controls of `patches` as one stream (per patch: count, then its controls), the form
/// [`Streams`] reads; their diff and extra bytes are the other two streams, concatenated.
pub fn control_stream(patches: &[&Patch]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in patches {
        put_varint(&mut out, p.controls.len() as u64);
        for c in &p.controls {
            put_varint(&mut out, c.add);
            put_varint(&mut out, c.copy);
            put_varint(&mut out, zigzag(c.seek));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn applies_and_checks_bounds() {
        let reference = b"hello, world".to_vec();
        let p = Patch {
            controls: vec![
                Control {
                    add: 5,
                    copy: 2,
                    seek: 2,
                },
                Control {
                    add: 5,
                    copy: 0,
                    seek: -12,
                },
            ],
            diff: vec![0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            extra: b"!!".to_vec(),
        };
        let bytes = p.to_bytes();
        assert_eq!(apply(&reference, &bytes, 12).unwrap(), b"hellp!!world");
        assert!(matches!(
            apply(&reference, &bytes, 13),
            Err(PatchError::Length { .. })
        ));
        assert!(matches!(
            apply(&reference[..8], &bytes, 12),
            Err(PatchError::OutOfReference { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(apply(&reference, &long, 12).is_err());
        assert!(apply(&reference, &bytes[..bytes.len() - 1], 12).is_err());
    }

    proptest! {
        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        #[test]
        fn hostile_patches_never_panic(reference in proptest::collection::vec(any::<u8>(), 0..64),
                                       patch in proptest::collection::vec(any::<u8>(), 0..64),
                                       len in 0usize..128) {
            if let Ok(out) = apply(&reference, &patch, len) {
                prop_assert_eq!(out.len(), len);
            }
        }
    }
}
