//! Coding new chunks: each chunk, run of chunks (a span) or group of runs (a solid group)
//! as the smallest of plain zstd, a zstd delta against on-board bytes, a bsdiff-style patch,
//! or one part of a solid group whose patches are coded as three streams across the group.
//! [`Batch`] collects new chunks with their references and codes them on all threads.

use std::io::{self, Write};
use std::sync::Arc;

use narlink_protocol::manifest::{ChunkId, Encoding, Payload, Reference, MAX_SOLID, MAX_SPAN};
use narlink_protocol::patch::{Control, Patch};

use crate::ground::bsdiff;
use crate::payload;

use super::pack::PackOptions;
/// A batch is coded once it holds this many bytes of new chunks and the references they
/// bring (the ground's memory: at 96 MiB, compiled-scipy's pack peaked at 696 MiB).
const BATCH_BYTES: usize = 32 << 20;

/// On-board bytes a new chunk may be a delta against.
pub struct RefBytes {
    pub reference: Reference,
    pub bytes: Vec<u8>,
}

/// The references read lately: consecutive chunks of a file share theirs, so each is read
/// once and, in [`Batch::flush`], prepared (zstd dictionary, suffix array) once.
#[derive(Default)]
pub struct RefCache {
    recent: Vec<Arc<RefBytes>>,
}

impl RefCache {
    const KEEP: usize = 8;

    pub fn get(
        &mut self,
        r: Reference,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Arc<RefBytes>> {
        if let Some(hit) = self.recent.iter().find(|x| x.reference == r) {
            return Some(hit.clone());
        }
        let x = Arc::new(RefBytes {
            reference: r,
            bytes: read()?,
        });
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push(x.clone());
        Some(x)
    }
}

/// A new chunk: its id, its bytes, and the references it may be a delta against.
type NewChunk = (ChunkId, Vec<u8>, Vec<Arc<RefBytes>>);

/// Which path of the bundle a new chunk belongs to (its number in bundle order): spans and
/// solid groups never cross paths, so that a path imports as soon as its own payloads arrive.
type PathNumber = usize;

/// A chunk's coding: how, its bytes, and what it is against.
type Coding = (Encoding, Vec<u8>, Option<Reference>);

/// A run as a part of a solid group: a patch, and what it is against.
type Part = (Patch, Option<Reference>);

/// A patch that makes `data` from nothing: all of it new bytes.
fn new_bytes(data: &[u8]) -> Patch {
    Patch {
        controls: vec![Control {
            add: 0,
            copy: data.len() as u64,
            seek: 0,
        }],
        diff: Vec::new(),
        extra: data.to_vec(),
    }
}

/// New chunks waiting to be compressed, in bundle order, and runs coded but not written yet
/// (the last solid group of a batch may go on in the next).
#[derive(Default)]
pub struct Batch {
    chunks: Vec<NewChunk>,
    paths: Vec<PathNumber>,
    bytes: usize,
    coded: Vec<CodedRun>,
}

/// A run coded both ways, without its chunks' bytes: waiting to be written alone or in a
/// solid group.
struct CodedRun {
    /// Its chunks' ids and lengths.
    chunks: Vec<(ChunkId, u32)>,
    path: PathNumber,
    /// Each chunk, or the run as a span, coded the smallest way.
    apart: Vec<Coding>,
    /// The run as a part of a solid group.
    part: Part,
}

impl CodedRun {
    fn raw(&self) -> usize {
        self.chunks.iter().map(|(_, len)| *len as usize).sum()
    }

    /// What the run costs coded apart.
    fn cost(&self) -> usize {
        self.apart
            .iter()
            .map(|(_, b, r)| b.len() + r.map_or(0, |_| payload::REFERENCE_COST))
            .sum()
    }
}

/// A reference prepared for encoding against: a zstd dictionary, and a suffix array for
/// patches (made once the reference is the largest of a chunk, the one patches are made
/// against).
struct Prepared<'a> {
    of: &'a Arc<RefBytes>,
    /// At [`TRIAL_LEVEL`], to choose a chunk's coding.
    dictionary: Option<zstd::dict::EncoderDictionary<'static>>,
    /// At the pack's level, made once a zstd delta against this reference wins.
    final_dictionary: Option<zstd::dict::EncoderDictionary<'static>>,
    patch: Option<bsdiff::Reference<'a>>,
}

/// The zstd level a chunk's codings are compared at; the one that wins is coded again at the
/// pack's level (`PackOptions::zstd_level`, 19 by default). Comparing at 19 took most of the
/// time of packs where patches win most chunks, and coding at 9 cost pyarrow 6.9 % of its
/// bytes (docs/measurements.md, "zstd level, after patches and solid groups").
const TRIAL_LEVEL: i32 = 9;

/// The references a coding thread has prepared, least recently used first, within a budget
/// of memory. zstd sizes a dictionary's tables for the dictionary at its level: at level 19
/// they take about 32 bytes per byte of reference (a 1 MiB reference, 33 MiB), so
/// dictionaries are made only for references up to [`PreparedRefs::DICTIONARY_MAX`]; a
/// suffix array takes 4 bytes per byte. Before this budget each thread kept 8 references of
/// any size, and the pack of compiled-scipy peaked at 606 MiB (docs/measurements.md, "Where
/// the pack's memory goes").
struct PreparedRefs<'a> {
    list: Vec<Prepared<'a>>,
    budget: usize,
}

impl<'a> PreparedRefs<'a> {
    /// Memory for prepared references, shared out among the coding threads.
    const BUDGET: usize = 128 << 20;
    /// Largest reference given a zstd dictionary: zstd deltas against larger ones rarely beat
    /// a patch (on compiled-scipy, 0.1 % more bytes without them; none on the mass rebuild).
    const DICTIONARY_MAX: usize = 1 << 20;

    fn new(threads: usize) -> Self {
        PreparedRefs {
            list: Vec::new(),
            budget: Self::BUDGET / threads.max(1),
        }
    }

    /// What a prepared reference holds in memory, about (each dictionary counted at its
    /// size at level 19, though the trial one is at [`TRIAL_LEVEL`]: an overestimate).
    fn cost(p: &Prepared<'_>) -> usize {
        let n = p.of.bytes.len();
        let dictionaries = [&p.dictionary, &p.final_dictionary]
            .iter()
            .filter(|d| d.is_some())
            .count();
        n + dictionaries * 32 * n + p.patch.as_ref().map_or(0, |_| 4 * n)
    }

    /// `r` prepared, with its suffix array if `patch`, with its dictionary at the pack's
    /// `level` if `final_level`.
    fn get(
        &mut self,
        r: &'a Arc<RefBytes>,
        level: i32,
        patch: bool,
        final_level: bool,
    ) -> &Prepared<'a> {
        let small = r.bytes.len() <= Self::DICTIONARY_MAX;
        let dictionary =
            |level| small.then(|| zstd::dict::EncoderDictionary::copy(&r.bytes, level));
        let mut p = match self.list.iter().position(|p| Arc::ptr_eq(p.of, r)) {
            Some(i) => self.list.remove(i),
            None => Prepared {
                of: r,
                dictionary: dictionary(level.min(TRIAL_LEVEL)),
                final_dictionary: None,
                patch: None,
            },
        };
        if patch && p.patch.is_none() {
            p.patch = Some(bsdiff::Reference::new(&r.bytes));
        }
        if final_level && p.final_dictionary.is_none() && level > TRIAL_LEVEL {
            p.final_dictionary = dictionary(level);
        }
        let mut held: usize = self.list.iter().map(Self::cost).sum::<usize>() + Self::cost(&p);
        while held > self.budget && !self.list.is_empty() {
            held -= Self::cost(&self.list.remove(0));
        }
        self.list.push(p);
        self.list.last().expect("just pushed")
    }
}

impl Batch {
    /// Whether the batch should be coded now.
    pub fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES
    }

    pub fn push(
        &mut self,
        id: ChunkId,
        bytes: &[u8],
        references: Vec<Arc<RefBytes>>,
        path: PathNumber,
    ) {
        self.paths.push(path);
        // A reference shared with the previous chunk is counted once.
        let shared = |r: &Arc<RefBytes>| {
            self.chunks
                .last()
                .is_some_and(|(_, _, prev)| prev.iter().any(|p| Arc::ptr_eq(p, r)))
        };
        let fresh: usize = references
            .iter()
            .filter(|r| !shared(r))
            .map(|r| r.bytes.len())
            .sum();
        self.bytes += bytes.len() + fresh;
        self.chunks.push((id, bytes.to_vec(), references));
    }

    /// The best encoding of some bytes: plain zstd (or raw), a zstd delta against one of its
    /// references, or a patch against its largest reference, whichever is smallest; and that
    /// patch, or all of it new bytes, as a part of a solid group. The zstd codings are
    /// compared at [`TRIAL_LEVEL`]; the best of them is coded again at the pack's level when
    /// it wins or comes within a quarter of the patch (at 9, pyarrow's deltas are 7 % larger:
    /// compared at 9 alone, patches took chunks that deltas at 19 win, +3.3 % on pyarrow).
    fn encode<'a>(
        data: &[u8],
        references: &'a [Arc<RefBytes>],
        level: i32,
        prepared: &mut PreparedRefs<'a>,
    ) -> (Coding, Part) {
        let (encoding, plain) = payload::encode(data, level.min(TRIAL_LEVEL));
        let mut best: Coding = (encoding, plain, None);
        let mut part = None;
        let mut patched = None;
        let largest = references.iter().max_by_key(|r| r.bytes.len());
        let mut delta_against = None;
        for r in references {
            let is_largest = largest.is_some_and(|l| Arc::ptr_eq(l, r));
            let p = prepared.get(r, level, is_largest, false);
            if let Some(dictionary) = &p.dictionary {
                if let Some(d) = payload::encode_delta(data, dictionary, best.1.len()) {
                    best = (Encoding::ZstdRef, d, Some(r.reference));
                    delta_against = Some(r);
                }
            }
            if let Some(patch) = p
                .patch
                .as_ref()
                .filter(|_| is_largest)
                .and_then(|b| b.diff(data))
            {
                patched = bsdiff::code_patch(&patch, data.len(), usize::MAX)
                    .map(|d| (Encoding::Bsdiff, d, Some(r.reference)));
                part = Some((patch, Some(r.reference)));
            }
        }
        let patch_len = patched.as_ref().map_or(usize::MAX, |p| p.1.len());
        let close = best.1.len().saturating_mul(4)
            <= patch_len
                .saturating_add(payload::REFERENCE_COST)
                .saturating_mul(5);
        let again = match best.0 {
            _ if level <= TRIAL_LEVEL || !close => None,
            Encoding::Zstd => Some(payload::encode(data, level).1),
            Encoding::ZstdRef => delta_against.and_then(|r| {
                let p = prepared.get(r, level, false, true);
                // Against the same reference: no reference cost to beat.
                let against = best.1.len() + payload::REFERENCE_COST;
                payload::encode_delta(data, p.final_dictionary.as_ref()?, against)
            }),
            _ => None,
        };
        if let Some(b) = again.filter(|b| b.len() < best.1.len()) {
            best.1 = b;
        }
        if let Some(p) = patched.filter(|p| p.1.len() + payload::REFERENCE_COST < best.1.len()) {
            best = p;
        }
        (best, part.unwrap_or_else(|| (new_bytes(data), None)))
    }

    /// Runs of consecutive chunks that may be coded as one span: those whose largest
    /// reference is the same (or that have none), at most [`MAX_SPAN`] bytes in all.
    fn span_candidates(chunks: &[NewChunk], paths: &[PathNumber]) -> Vec<std::ops::Range<usize>> {
        let largest = |k: usize| chunks[k].2.iter().max_by_key(|r| r.bytes.len());
        let same = |a: Option<&Arc<RefBytes>>, b: Option<&Arc<RefBytes>>| match (a, b) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            (None, None) => true,
            _ => false,
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < chunks.len() {
            let (mut j, mut raw) = (i + 1, chunks[i].1.len());
            while j < chunks.len()
                && paths[j] == paths[i]
                && same(largest(i), largest(j))
                && raw + chunks[j].1.len() <= MAX_SPAN as usize
            {
                raw += chunks[j].1.len();
                j += 1;
            }
            out.push(i..j);
            i = j;
        }
        out
    }

    /// The payloads of a run of chunks: each chunk coded alone, or, when that is smaller, the
    /// run coded as one span (the first chunk's payload carries the bytes, the others are
    /// `Joined`); and the run as a part of a solid group (a patch against the largest of its
    /// first chunk's references, or all of it new).
    fn encode_run<'a>(
        run: &'a [NewChunk],
        level: i32,
        prepared: &mut PreparedRefs<'a>,
    ) -> (Vec<Coding>, Part) {
        let (singles, mut parts): (Vec<_>, Vec<_>) = run
            .iter()
            .map(|(_, data, references)| Self::encode(data, references, level, prepared))
            .unzip();
        if run.len() < 2 {
            return (singles, parts.remove(0));
        }
        let separate: usize = singles.iter().map(|(_, b, _)| b.len()).sum();
        let data: Vec<u8> = run.iter().flat_map(|(_, d, _)| d.iter().copied()).collect();
        let ((encoding, bytes, reference), part) = Self::encode(&data, &run[0].2, level, prepared);
        if encoding == Encoding::Raw || bytes.len() >= separate {
            return (singles, part);
        }
        let mut out = vec![(encoding, bytes, reference)];
        out.extend((1..run.len()).map(|_| (Encoding::Joined, Vec::new(), None)));
        (out, part)
    }

    /// Run `f` over `items` on `threads` threads, results in order.
    fn on_threads<'a, T: Sync, R: Send, S>(
        items: &'a [T],
        threads: usize,
        state: impl Fn() -> S + Sync,
        f: impl Fn(&'a T, &mut S) -> R + Sync,
    ) -> io::Result<Vec<R>> {
        let per = items.len().div_ceil(threads.max(1)).max(1);
        let (f, state) = (&f, &state);
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        let mut state = state();
                        part.iter().map(|x| f(x, &mut state)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| io::Error::other("a compression thread panicked"))
                })
                .collect::<io::Result<Vec<Vec<_>>>>()
                .map(|v| v.into_iter().flatten().collect())
        })
    }

    /// The parts of `runs` (`raw` bytes of chunks) as one solid group, if there are two or
    /// more.
    fn solid(runs: &[CodedRun], raw: usize) -> io::Result<Option<Vec<u8>>> {
        if runs.len() < 2 {
            return Ok(None);
        }
        let patches: Vec<&Patch> = runs.iter().map(|r| &r.part.0).collect();
        let bytes = crate::solid::encode(&patches)?;
        let fits = bytes.len() as u64 <= u64::from(payload::max_encoded_len(raw as u32));
        Ok(fits.then_some(bytes))
    }

    /// Code the batch on `opts.threads` threads and append the payloads in order, but for
    /// the runs of a solid group the next batch may add to. Each run is coded apart (each
    /// chunk, or the run as one span, as the smallest of plain zstd, a zstd delta against a
    /// reference and a patch) and as a part of a solid group (a patch against its largest
    /// reference, or new bytes); consecutive runs of one path, up to [`MAX_SOLID`] bytes, go
    /// as one solid group when that is smaller.
    pub fn flush(
        &mut self,
        opts: &PackOptions,
        payloads: &mut Vec<Payload>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        self.code(opts)?;
        self.write(false, payloads, out)
    }

    /// [`Batch::flush`], and write every run.
    pub fn finish(
        &mut self,
        opts: &PackOptions,
        payloads: &mut Vec<Payload>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        self.flush(opts, payloads, out)?;
        self.write(true, payloads, out)
    }

    /// Code the batch's chunks, run by run, both ways; the chunks' bytes go.
    fn code(&mut self, opts: &PackOptions) -> io::Result<()> {
        let chunks = std::mem::take(&mut self.chunks);
        let paths = std::mem::take(&mut self.paths);
        self.bytes = 0;
        let runs = Self::span_candidates(&chunks, &paths);
        let chunks = &chunks;
        let threads = opts.threads;
        let coded = Self::on_threads(
            &runs,
            threads,
            || PreparedRefs::new(threads),
            |run, prepared| {
                let path = paths[run.start];
                let run = &chunks[run.clone()];
                let (apart, part) = Self::encode_run(run, opts.zstd_level, prepared);
                CodedRun {
                    chunks: run.iter().map(|(id, d, _)| (*id, d.len() as u32)).collect(),
                    path,
                    apart,
                    part,
                }
            },
        )?;
        self.coded.extend(coded);
        Ok(())
    }

    /// Write the coded runs, group by group: runs of one path while they fit in MAX_SOLID
    /// bytes. (A forged frame costs the groups under its piece of the payload section, not
    /// the payload's: protocol/src/pieces.rs. Before pieces, groups were capped at 256 KiB
    /// coded.) Unless `all`, the last group stays for the next batch to add to.
    fn write(
        &mut self,
        all: bool,
        payloads: &mut Vec<Payload>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let runs = &self.coded;
        let mut i = 0;
        while i < runs.len() {
            let (mut j, mut raw) = (i, 0usize);
            while j < runs.len()
                && (j == i
                    || (runs[j].path == runs[i].path && raw + runs[j].raw() <= MAX_SOLID as usize))
            {
                raw += runs[j].raw();
                j += 1;
            }
            if j == runs.len() && !all {
                break;
            }
            Self::write_group(&runs[i..j], raw, payloads, out)?;
            i = j;
        }
        self.coded.drain(..i);
        Ok(())
    }

    /// Write `runs` (`raw` bytes of chunks) as one solid group if that is smaller than their
    /// codings apart; else each half the same way, down to groups of two runs; else apart.
    /// (A group that loses as a whole can win in parts: on the mass rebuild, groups of whole
    /// paths lost where halves won. Keeping a group whenever it codes its runs well, without
    /// coding them apart, halves the time but cost 2.5 % on the mass rebuild:
    /// docs/measurements.md, "Solid first, and why it was not kept".)
    fn write_group(
        runs: &[CodedRun],
        raw: usize,
        payloads: &mut Vec<Payload>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let separate: usize = runs.iter().map(CodedRun::cost).sum();
        let references = runs.iter().filter(|r| r.part.1.is_some()).count();
        let solid = Self::solid(runs, raw)?
            .filter(|b| b.len() + references * payload::REFERENCE_COST < separate);
        if solid.is_none() && runs.len() >= 4 {
            let (a, b) = runs.split_at(runs.len() / 2);
            Self::write_group(a, a.iter().map(CodedRun::raw).sum(), payloads, out)?;
            return Self::write_group(b, b.iter().map(CodedRun::raw).sum(), payloads, out);
        }
        for (n, run) in runs.iter().enumerate() {
            let part_reference = run.part.1;
            for (m, &(id, raw_len)) in run.chunks.iter().enumerate() {
                let coding = match &solid {
                    Some(bytes) if n == 0 && m == 0 => {
                        (Encoding::Solid, bytes.as_slice(), part_reference)
                    }
                    Some(_) if m == 0 => (Encoding::Part, &[][..], part_reference),
                    Some(_) => (Encoding::Joined, &[][..], None),
                    None => {
                        let (e, b, r) = &run.apart[m];
                        (*e, b.as_slice(), *r)
                    }
                };
                out.write_all(coding.1)?;
                payloads.push(Payload {
                    chunk: id,
                    raw_len,
                    encoded_len: coding.1.len() as u32,
                    encoding: coding.0,
                    reference: coding.2,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::noise;

    /// Codings are compared at [`TRIAL_LEVEL`]; the winner is coded again at the pack's level
    /// and kept if smaller: bytes edited in many small places win as a zstd delta against
    /// their reference, and their bytes are the delta at level 19.
    #[test]
    fn the_winner_is_coded_at_the_packs_level() {
        let reference = noise(600_000, 1);
        let mut chunk = Vec::new();
        for (i, piece) in reference[..200_000].chunks(40).enumerate() {
            chunk.extend_from_slice(piece);
            chunk.push(b'0' + (i % 10) as u8);
        }
        let r = Arc::new(RefBytes {
            reference: Reference {
                source: 0,
                offset: 0,
                len: reference.len() as u32,
            },
            bytes: reference.clone(),
        });
        let delta = |level| {
            let d = zstd::dict::EncoderDictionary::copy(&reference, level);
            payload::encode_delta(&chunk, &d, usize::MAX).unwrap()
        };
        let (at9, at19) = (delta(TRIAL_LEVEL), delta(19));
        assert!(
            at19.len() < at9.len(),
            "19: {} B, 9: {} B",
            at19.len(),
            at9.len()
        );
        // Patches are made against the largest reference: here unrelated bytes.
        let other = Arc::new(RefBytes {
            reference: Reference {
                source: 1,
                offset: 0,
                len: 800_000,
            },
            bytes: noise(800_000, 9),
        });
        let refs = [r, other];
        let mut prepared = PreparedRefs::new(1);
        let ((encoding, bytes, _), _) = Batch::encode(&chunk, &refs, 19, &mut prepared);
        assert_eq!(encoding, Encoding::ZstdRef);
        assert!(
            bytes == at19,
            "{} B, at 19 {} B, at 9 {} B",
            bytes.len(),
            at19.len(),
            at9.len()
        );
        // At the trial level itself, nothing is coded twice.
        let ((_, bytes, _), _) = Batch::encode(&chunk, &refs, 9, &mut prepared);
        assert!(bytes == at9, "{} B, at 9 {} B", bytes.len(), at9.len());
    }
}
