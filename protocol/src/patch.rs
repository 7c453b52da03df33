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
        let mut out = Vec::with_capacity(self.diff.len() + self.extra.len() + 16);
        put_varint(&mut out, self.controls.len() as u64);
        for c in &self.controls {
            put_varint(&mut out, c.add);
            put_varint(&mut out, c.copy);
            put_varint(&mut out, zigzag(c.seek));
        }
        out.extend_from_slice(&self.diff);
        out.extend_from_slice(&self.extra);
        out
    }
}

/// Rebuild the `len`-byte chunk that `patch` makes from `reference`.
pub fn apply(reference: &[u8], patch: &[u8], len: usize) -> Result<Vec<u8>, PatchError> {
    let mut r = Reader::new(patch);
    let count = r.varint_u64()?;
    // Every control takes at least three bytes: the count cannot make us allocate more
    // than the patch itself.
    let mut controls = Vec::with_capacity((count as usize).min(patch.len() / 3));
    let (mut adds, mut copies) = (0u64, 0u64);
    for _ in 0..count {
        let c = Control {
            add: r.varint_u64()?,
            copy: r.varint_u64()?,
            seek: unzigzag(r.varint_u64()?),
        };
        adds = adds.saturating_add(c.add);
        copies = copies.saturating_add(c.copy);
        controls.push(c);
    }
    let total = adds.saturating_add(copies);
    if total != len as u64 {
        return Err(PatchError::Length {
            found: total,
            expected: len as u64,
        });
    }
    // Both lengths are now at most `len`.
    let diff = r.take(adds as usize)?;
    let extra = r.take(copies as usize)?;
    r.expect_end()?;
    let mut out = Vec::with_capacity(len);
    let (mut d, mut e) = (diff, extra);
    let mut at: i128 = 0;
    for c in controls {
        let (add, copy) = (c.add as usize, c.copy as usize);
        let start = usize::try_from(at)
            .ok()
            .filter(|s| s.checked_add(add).is_some_and(|end| end <= reference.len()))
            .ok_or(PatchError::OutOfReference {
                at,
                len: reference.len(),
            })?;
        let (dd, rest) = d.split_at(add);
        d = rest;
        out.extend(
            dd.iter()
                .zip(&reference[start..start + add])
                .map(|(x, y)| x.wrapping_add(*y)),
        );
        let (ee, rest) = e.split_at(copy);
        e = rest;
        out.extend_from_slice(ee);
        at += add as i128 + i128::from(c.seek);
    }
    Ok(out)
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
