//! The ground half of bsdiff-style patches ([`narlink_protocol::patch`]): find, for a new
//! chunk, the approximate matches in a reference and write the controls, diff and extra bytes.
//!
//! The search follows Percival's bsdiff 4: exact matches from a suffix array of the
//! reference, extended forwards and backwards while at least half the bytes agree, so that
//! code whose addresses moved becomes one long "add" of mostly-zero differences. The suffix
//! array (libdivsufsort, through the `suffix_array` crate) is built once per reference and
//! shared by every chunk made against it.

use narlink_protocol::patch::{Control, Patch};
use suffix_array::SuffixArray;

/// How far past an exact match its alignment is checked for going on agreeing (see
/// [`jump_cost`]).
const LOOKAHEAD: isize = 16;

/// How many bytes an exact match, and the [`LOOKAHEAD`] bytes after it under its alignment,
/// must agree beyond the current alignment over the same bytes to start a new alignment,
/// `distance` bytes away in the reference. bsdiff asks 8 at any distance, over the match
/// alone; in a large reference of machine code, matches of 9 to 40 bytes far away are mostly
/// chance (the same instruction sequences), and each such jump breaks the run of near-zero
/// differences it interrupts, while a genuine new alignment (code after an insertion) goes
/// on agreeing past its first exact match. Asking 6 plus 2.5 per bit of distance: on scipy
/// 1.11.4 -> 1.12.0 (686 changed files, `cargo bench --bench patch_cover`), 6,219,480 ->
/// 5,496,467 B; on libssl3 3.0.20 -> 3.0.22, 450,366 -> 451,543 B (docs/measurements.md,
/// "Patch covering").
fn jump_cost(distance: isize) -> isize {
    let bits = (isize::BITS - distance.unsigned_abs().leading_zeros()) as isize;
    6 + bits * 5 / 2
}

/// A reference prepared for patching.
pub struct Reference<'a> {
    old: &'a [u8],
    sa: SuffixArray<'a>,
}

impl<'a> Reference<'a> {
    pub fn new(old: &'a [u8]) -> Reference<'a> {
        Reference {
            old,
            sa: SuffixArray::new(old),
        }
    }

    /// The longest prefix of `new` found in the reference: (position, length).
    fn search(&self, new: &[u8]) -> (usize, usize) {
        let r = self.sa.search_lcp(new);
        (r.start, r.len())
    }

    /// A patch that makes `new` from this reference, or `None` if finding it would take more
    /// than a bounded amount of work (highly repetitive data).
    pub fn diff(&self, new: &[u8]) -> Option<Patch> {
        let old = self.old;
        let (oldsize, newsize) = (old.len() as isize, new.len() as isize);
        let at = |i: isize| old[i as usize];
        // Work bound: bsdiff is quadratic on pathological inputs.
        let mut budget: i64 = 256 * new.len() as i64 + (4 << 20);
        let mut patch = Patch::default();
        let (mut scan, mut len, mut pos) = (0isize, 0isize, 0isize);
        let (mut lastscan, mut lastpos, mut lastoffset) = (0isize, 0isize, 0isize);
        while scan < newsize {
            let mut oldscore = 0isize;
            scan += len;
            let mut scsc = scan;
            while scan < newsize {
                let (p, l) = self.search(&new[scan as usize..]);
                (pos, len) = (p as isize, l as isize);
                budget -= 32 + len as i64;
                while scsc < scan + len {
                    if scsc + lastoffset < oldsize && at(scsc + lastoffset) == new[scsc as usize] {
                        oldscore += 1;
                    }
                    scsc += 1;
                }
                budget -= len as i64;
                if budget < 0 {
                    return None;
                }
                if len == oldscore && len != 0 {
                    break;
                }
                // Whether the match's alignment goes on agreeing past it, against the
                // current alignment over the same bytes.
                let end = (scan + len + LOOKAHEAD).min(newsize);
                let agree = |offset: isize| {
                    (scan + len..end)
                        .filter(|&i| (0..oldsize).contains(&(i + offset)))
                        .filter(|&i| at(i + offset) == new[i as usize])
                        .count() as isize
                };
                budget -= 2 * LOOKAHEAD as i64;
                if len + agree(pos - scan)
                    > oldscore + agree(lastoffset) + jump_cost(pos - (scan + lastoffset))
                {
                    break;
                }
                if scan + lastoffset < oldsize && at(scan + lastoffset) == new[scan as usize] {
                    oldscore -= 1;
                }
                scan += 1;
            }
            if len == oldscore && scan != newsize {
                continue;
            }
            // Extend the previous match forwards while at least half the bytes agree.
            let (mut s, mut best, mut lenf) = (0isize, 0isize, 0isize);
            let mut i = 0isize;
            while lastscan + i < scan && lastpos + i < oldsize {
                if at(lastpos + i) == new[(lastscan + i) as usize] {
                    s += 1;
                }
                i += 1;
                if s * 2 - i > best * 2 - lenf {
                    best = s;
                    lenf = i;
                }
            }
            // And this match backwards.
            let mut lenb = 0isize;
            if scan < newsize {
                let (mut s, mut best) = (0isize, 0isize);
                let mut i = 1isize;
                while scan >= lastscan + i && pos >= i {
                    if at(pos - i) == new[(scan - i) as usize] {
                        s += 1;
                    }
                    if s * 2 - i > best * 2 - lenb {
                        best = s;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            // Split an overlap where it scores best.
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                let (mut s, mut best, mut lens) = (0isize, 0isize, 0isize);
                for i in 0..overlap {
                    if new[(lastscan + lenf - overlap + i) as usize]
                        == at(lastpos + lenf - overlap + i)
                    {
                        s += 1;
                    }
                    if new[(scan - lenb + i) as usize] == at(pos - lenb + i) {
                        s -= 1;
                    }
                    if s > best {
                        best = s;
                        lens = i + 1;
                    }
                }
                lenf += lens - overlap;
                lenb -= lens;
            }
            budget -= (scan - lastscan) as i64;
            patch.diff.extend(
                (0..lenf).map(|i| new[(lastscan + i) as usize].wrapping_sub(at(lastpos + i))),
            );
            patch
                .extra
                .extend_from_slice(&new[(lastscan + lenf) as usize..(scan - lenb) as usize]);
            patch.controls.push(Control {
                add: lenf as u64,
                copy: ((scan - lenb) - (lastscan + lenf)) as u64,
                seek: ((pos - lenb) - (lastpos + lenf)) as i64,
            });
            lastscan = scan - lenb;
            lastpos = pos - lenb;
            lastoffset = pos - scan;
        }
        Some(patch)
    }
}

/// Encode one chunk as a bsdiff-style patch payload (its format: [`crate::payload`]) against
/// a prepared reference, if that beats `plain` by more than the reference costs.
pub fn encode_patch(chunk: &[u8], reference: &Reference, plain: usize) -> Option<Vec<u8>> {
    code_patch(&reference.diff(chunk)?, chunk.len(), plain)
}

/// [`encode_patch`] of a patch already made for a chunk of `len` bytes.
pub fn code_patch(patch: &Patch, len: usize, plain: usize) -> Option<Vec<u8>> {
    use crate::payload::{lzma_compress, max_patch_len, REFERENCE_COST};
    let patch = patch.to_bytes();
    if patch.len() > max_patch_len(len as u32) {
        return None;
    }
    let z = lzma_compress(&patch).ok()?;
    (z.len() + REFERENCE_COST < plain).then_some(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;
    use narlink_protocol::patch::apply;

    #[test]
    fn shifted_code_becomes_a_small_patch() {
        // "Code" with 4-byte "addresses" every 16 bytes, all shifted by 0x40 in the new build,
        // 300 bytes inserted in the middle.
        let mut old = noise(200_000, 7);
        for i in (0..old.len() - 4).step_by(16) {
            old[i..i + 4].copy_from_slice(&(i as u32).to_le_bytes());
        }
        let mut new = old[..100_000].to_vec();
        new.extend_from_slice(&noise(300, 9));
        new.extend_from_slice(&old[100_000..]);
        for i in (0..new.len() - 4).step_by(16) {
            let v = u32::from_le_bytes(new[i..i + 4].try_into().unwrap());
            new[i..i + 4].copy_from_slice(&v.wrapping_add(0x40).to_le_bytes());
        }
        let r = Reference::new(&old);
        let patch = r.diff(&new).unwrap();
        let bytes = patch.to_bytes();
        assert_eq!(apply(&old, &bytes, new.len()).unwrap(), new);
        let z = zstd::bulk::compress(&bytes, 19).unwrap();
        let plain = zstd::bulk::compress(&new, 19).unwrap();
        let with_dict = zstd::bulk::Compressor::with_dictionary(19, &old)
            .unwrap()
            .compress(&new)
            .unwrap();
        assert!(
            z.len() * 4 < with_dict.len(),
            "bsdiff {} B, zstd with dictionary {} B, plain {} B",
            z.len(),
            with_dict.len(),
            plain.len()
        );
    }

    #[test]
    fn edge_cases_round_trip() {
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![], vec![]),
            (vec![], b"abc".to_vec()),
            (b"abc".to_vec(), vec![]),
            (vec![0; 10_000], vec![0; 20_000]),
            (noise(5000, 1), noise(5000, 2)),
            (b"abcabcabc".repeat(1000), b"abcabdabc".repeat(1000)),
        ];
        for (old, new) in cases {
            let p = Reference::new(&old)
                .diff(&new)
                .expect("within the work bound");
            assert_eq!(apply(&old, &p.to_bytes(), new.len()).unwrap(), new);
        }
    }
}
