//! Solid groups (`Encoding::Solid` in the manifest): the patches of many parts (runs of new
//! chunks, each patched against its own on-board reference, or against nothing) coded as
//! three LZMA streams across all of them: controls, differences, new bytes.
//!
//! Why: the rebuilt libraries of one package bump share what changed (a new compiler, new
//! generated code), and so do its small new files. Coded part by part, every part starts its
//! coder afresh; coded as one stream each, what repeats between parts is coded once, and each
//! stream's statistics (mostly-zero differences, machine code, control varints) stay apart.
//! On scipy 1.11.4 -> 1.12.0, whole-file patches coded file by file take 7.57 MB, the same
//! patches in 16 MiB groups 6.28 MB (`docs/measurements.md`, "Solid groups").
//!
//! Layout of a group's bytes: varint length of the coded controls, varint twice the length of
//! the coded differences plus their form ([`DiffForm`]), then the three coded streams (the new
//! bytes take the rest). Each is a headerless LZMA stream with a dictionary of [`DICT`] bytes;
//! differences as zero runs are two of them (protocol/SPEC.md, "Solid groups").

use std::ops::Range;

use narlink_protocol::manifest::{self, Encoding, Payload, Reference, MAX_SOLID, SOLID_DICT};
use narlink_protocol::patch::{control_stream, Patch, Streams};
use narlink_protocol::wire::{put_varint, Reader};
use narlink_protocol::zero_runs;

use crate::payload::{
    lzma_compress_pieces, lzma_decompress, short_id, verify, PayloadError, LZMA_PRESET_EXTREME,
};

/// The LZMA dictionary of each stream.
pub const DICT: u32 = SOLID_DICT;

/// liblzma's preset for the streams: 9 extreme, as for single patches. Preset 6 packed the
/// mass rebuild in half the time, but lost every group of the relinked-library test (16,343
/// against 14,841 B) and 0.5 % on compiled-scipy (docs/measurements.md, "Solid groups").
const PRESET: u32 = 9 | LZMA_PRESET_EXTREME;

/// Most bytes a group's control stream may decode into: as for a single patch, a few bytes
/// per control, and controls never outnumber the bytes they make.
fn max_controls(raw: usize, parts: usize) -> usize {
    raw + 4096 * parts
}

/// How a group's differences travel (`narlink_protocol::zero_runs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffForm {
    /// LZMA over the diff bytes as they are.
    Bytes = 0,
    /// LZMA over the zero runs, then LZMA over the literal bytes.
    Runs = 1,
}

/// The bytes of a solid group carrying `patches`, one per part, in order, its differences
/// in whichever form codes smaller.
pub fn encode(patches: &[&Patch]) -> std::io::Result<Vec<u8>> {
    encode_with(patches, &[DiffForm::Bytes, DiffForm::Runs])
}

/// [`encode`], trying only `forms` for the differences.
pub fn encode_with(patches: &[&Patch], forms: &[DiffForm]) -> std::io::Result<Vec<u8>> {
    let controls = control_stream(patches);
    let diff: Vec<&[u8]> = patches.iter().map(|p| p.diff.as_slice()).collect();
    let extra: Vec<&[u8]> = patches.iter().map(|p| p.extra.as_slice()).collect();
    let mut d: Option<(DiffForm, Vec<u8>)> = None;
    for &form in forms {
        let coded = code_diff(&diff, form)?;
        if d.as_ref().is_none_or(|(_, best)| coded.len() < best.len()) {
            d = Some((form, coded));
        }
    }
    let (form, d) = d.expect("at least one form");
    let (c, e) = (code(&[&controls])?, code(&extra)?);
    let mut out = Vec::with_capacity(c.len() + d.len() + e.len() + 10);
    put_varint(&mut out, c.len() as u64);
    put_varint(&mut out, (d.len() as u64) << 1 | form as u64);
    out.extend_from_slice(&c);
    out.extend_from_slice(&d);
    out.extend_from_slice(&e);
    Ok(out)
}

/// One LZMA stream over `pieces`, fed to the encoder one after the other, never joined (a
/// group's differences and new bytes add up to its length, up to 64 MiB).
fn code(pieces: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    // An encoder never looks further back than its input: a smaller dictionary for a short
    // stream costs nothing in bytes and spares the ground memory. The decoder assumes DICT.
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let dict = (len as u32).next_power_of_two().clamp(1 << 16, DICT);
    lzma_compress_pieces(pieces, dict, PRESET)
}

/// The differences in `form`: LZMA over them, or varint r, r bytes of LZMA over the zero
/// runs, then LZMA over the literal bytes.
fn code_diff(diff: &[&[u8]], form: DiffForm) -> std::io::Result<Vec<u8>> {
    match form {
        DiffForm::Bytes => code(diff),
        DiffForm::Runs => {
            let (runs, literals) = zero_runs::split(diff);
            let runs = code(&[&runs])?;
            let mut out = Vec::new();
            put_varint(&mut out, runs.len() as u64);
            out.extend_from_slice(&runs);
            out.extend_from_slice(&code(&[&literals])?);
            Ok(out)
        }
    }
}

/// A decoded part: its payloads' range within the group, and its bytes.
pub type Part = (Range<usize>, Vec<u8>);

/// Decode a solid group: `group` is its payloads (the `Solid` head, its `Part`s and their
/// `Joined`s), `bytes` the head's payload bytes, `reference` reads a part's on-board
/// reference. Returns each part's range within `group` and its bytes, every chunk checked
/// against its id. Memory: the decoded streams (at most about twice the group's length) and
/// one reference at a time.
pub fn decode(
    group: &[Payload],
    bytes: &[u8],
    mut reference: impl FnMut(&Reference) -> Result<Vec<u8>, String>,
) -> Result<Vec<Part>, PayloadError> {
    let head = group.first().ok_or(PayloadError::Span {
        chunk: String::new(),
    })?;
    let chunk = || short_id(&head.chunk);
    let parts = manifest::parts(group);
    let raw: u64 = group.iter().map(|p| u64::from(p.raw_len)).sum();
    let well_formed = head.encoding == Encoding::Solid
        && parts[1..]
            .iter()
            .all(|r| group[r.start].encoding == Encoding::Part);
    if !well_formed || raw > u64::from(MAX_SOLID) {
        return Err(PayloadError::Span { chunk: chunk() });
    }
    let raw = raw as usize;
    let malformed = |reason: String| PayloadError::Patch {
        chunk: chunk(),
        reason: format!("solid group: {reason}"),
    };
    let mut r = Reader::new(bytes);
    let (cl, dl) = (r.varint_u64(), r.varint_u64());
    let (Ok(cl), Ok(dl)) = (cl, dl) else {
        return Err(malformed("truncated lengths".into()));
    };
    let mut take = |n: u64| {
        r.take(usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(|e| malformed(e.to_string()))
    };
    let (c, d) = (take(cl)?, take(dl >> 1)?);
    let e = r.take_rest();
    let lzma = |s: &[u8], cap: usize, what: &str| {
        lzma_decompress(s, cap, DICT).map_err(|e| malformed(format!("{what}: {e}")))
    };
    let cap = max_controls(raw, parts.len());
    let controls = lzma(c, cap, "controls")?;
    let extra = lzma(e, raw, "new bytes")?;
    let (diff, runs, literals);
    let mut streams = if dl & 1 == 0 {
        diff = lzma(d, raw, "differences")?;
        Streams::new(&controls, &diff, &extra)
    } else {
        let mut r = Reader::new(d);
        let coded_runs = r
            .varint_u64()
            .map_err(|e| malformed(format!("zero runs: {e}")))
            .and_then(|n| {
                r.take(usize::try_from(n).unwrap_or(usize::MAX))
                    .map_err(|e| malformed(format!("zero runs: {e}")))
            })?;
        runs = lzma(coded_runs, cap, "zero runs")?;
        literals = lzma(r.take_rest(), raw, "literal differences")?;
        Streams::with_runs(&controls, &runs, &literals, &extra)
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let p = &group[part.start];
        let base = match &p.reference {
            Some(r) => reference(r).map_err(|reason| PayloadError::Patch {
                chunk: short_id(&p.chunk),
                reason: format!("its reference: {reason}"),
            })?,
            None => Vec::new(),
        };
        let len: usize = group[part.clone()].iter().map(|q| q.raw_len as usize).sum();
        let data = streams.next(&base, len).map_err(|e| PayloadError::Patch {
            chunk: short_id(&p.chunk),
            reason: e.to_string(),
        })?;
        let mut at = 0;
        for q in &group[part.clone()] {
            let end = at + q.raw_len as usize;
            verify(&q.chunk, &data[at..end])?;
            at = end;
        }
        out.push((part, data));
    }
    streams
        .expect_end()
        .map_err(|e| malformed(format!("bytes left over: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunking::chunk_id;
    use crate::testutil::noise;

    fn payload(data: &[u8], encoding: Encoding, reference: Option<Reference>) -> Payload {
        Payload {
            chunk: chunk_id(data),
            raw_len: data.len() as u32,
            encoded_len: 0,
            encoding,
            reference,
        }
    }

    /// Two parts against two references and a part of new bytes that repeats the first
    /// part's new code: the group decodes to every part, and is smaller than the parts
    /// coded apart.
    #[test]
    fn parts_round_trip_and_share_the_coder() {
        let (old_a, old_b) = (noise(300_000, 1), noise(200_000, 2));
        let fresh = noise(40_000, 3);
        let mut a = old_a.clone();
        a.splice(100_000..100_000, fresh.iter().copied());
        let mut b = old_b.clone();
        b[5_000] ^= 1;
        let c = fresh.clone();
        let ra = crate::ground::bsdiff::Reference::new(&old_a);
        let rb = crate::ground::bsdiff::Reference::new(&old_b);
        let empty = crate::ground::bsdiff::Reference::new(&[]);
        let (pa, pb, pc) = (
            ra.diff(&a).unwrap(),
            rb.diff(&b).unwrap(),
            empty.diff(&c).unwrap(),
        );
        let bytes = encode(&[&pa, &pb, &pc]).unwrap();
        let apart: usize = [&pa, &pb, &pc]
            .iter()
            .map(|p| crate::payload::lzma_compress(&p.to_bytes()).unwrap().len())
            .sum();
        assert!(
            bytes.len() + 30_000 < apart,
            "solid {} B, apart {apart} B",
            bytes.len()
        );
        let r = |s: u32, len: usize| Reference {
            source: s,
            offset: 0,
            len: len as u32,
        };
        let mut group = vec![
            payload(&a, Encoding::Solid, Some(r(0, old_a.len()))),
            payload(&b, Encoding::Part, Some(r(1, old_b.len()))),
            payload(&c, Encoding::Part, None),
        ];
        // Chunks of at most 256 KiB: `a` is two chunks, a part and a joined one.
        let (a1, a2) = a.split_at(200_000);
        group.splice(
            0..1,
            [
                payload(a1, Encoding::Solid, Some(r(0, old_a.len()))),
                payload(a2, Encoding::Joined, None),
            ],
        );
        let refs = [old_a.clone(), old_b.clone()];
        let out = decode(&group, &bytes, |r| Ok(refs[r.source as usize].clone())).unwrap();
        let parts: Vec<_> = out.iter().map(|(r, d)| (r.clone(), d.clone())).collect();
        assert_eq!(parts, vec![(0..2, a), (2..3, b), (3..4, c)]);

        // A flipped byte anywhere fails, never panics; a wrong reference fails its chunk.
        for i in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&group, &bad, |r| Ok(refs[r.source as usize].clone())).is_err());
        }
        let swapped = decode(&group, &bytes, |r| Ok(refs[1 - r.source as usize].clone()));
        assert!(swapped.is_err());
        assert!(decode(&group[1..], &bytes, |_| Ok(Vec::new())).is_err());
    }

    /// The form of a group's differences: the low bit of its second varint.
    fn form(bytes: &[u8]) -> u64 {
        let mut r = Reader::new(bytes);
        r.varint_u64().unwrap();
        r.varint_u64().unwrap() & 1
    }

    /// A library changed in a few scattered bytes travels as zero runs, smaller than its
    /// differences as they are; a table of pointers that all moved travels as bytes. Both
    /// forms decode to the same parts, and a flipped byte of either fails, never panics.
    #[test]
    fn scattered_changes_travel_as_runs_and_dense_ones_as_bytes() {
        let old = noise(1 << 20, 4);
        let mut sparse = old.clone();
        for i in (0..sparse.len()).step_by(997) {
            sparse[i] = sparse[i].wrapping_add(1 + (i % 3) as u8);
        }
        let mut dense = old.clone();
        for i in (0..dense.len() - 8).step_by(8) {
            let v = u64::from_le_bytes(dense[i..i + 8].try_into().unwrap());
            dense[i..i + 8].copy_from_slice(&v.wrapping_add(0x4000).to_le_bytes());
        }
        let prepared = crate::ground::bsdiff::Reference::new(&old);
        for (new, want) in [(sparse, 1), (dense, 0)] {
            let patch = prepared.diff(&new).unwrap();
            let bytes = encode(&[&patch]).unwrap();
            assert_eq!(form(&bytes), want);
            let group = [payload(
                &new,
                Encoding::Solid,
                Some(Reference {
                    source: 0,
                    offset: 0,
                    len: old.len() as u32,
                }),
            )];
            for f in [DiffForm::Bytes, DiffForm::Runs] {
                let forced = encode_with(&[&patch], &[f]).unwrap();
                assert_eq!(form(&forced), f as u64);
                assert!(bytes.len() <= forced.len());
                let out = decode(&group, &forced, |_| Ok(old.clone())).unwrap();
                assert_eq!(out, vec![(0..1, new.clone())]);
                for i in (0..forced.len()).step_by(61) {
                    let mut bad = forced.clone();
                    bad[i] ^= 0x08;
                    assert!(decode(&group, &bad, |_| Ok(old.clone())).is_err());
                }
            }
        }
    }
}
