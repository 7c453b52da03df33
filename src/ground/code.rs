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
/// New chunk bytes (and the references they bring) collected before they are coded.
pub const BATCH_BYTES: usize = 32 << 20;

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

/// A run's codings (one per chunk: alone, or a span's head and its joined chunks) and its
/// part of a solid group (a patch, and what it is against).
type Coded = (
    Vec<(Encoding, Vec<u8>, Option<Reference>)>,
    (Patch, Option<Reference>),
);

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

/// New chunks waiting to be compressed, in bundle order.
#[derive(Default)]
pub struct Batch {
    chunks: Vec<NewChunk>,
    pub bytes: usize,
}

/// A reference prepared for encoding against: a zstd dictionary, and a suffix array for
/// patches (only for the largest reference of a chunk, the one patches are made against).
struct Prepared<'a> {
    of: &'a Arc<RefBytes>,
    dictionary: zstd::dict::EncoderDictionary<'static>,
    patch: Option<bsdiff::Reference<'a>>,
}

impl Batch {
    pub fn push(&mut self, id: ChunkId, bytes: &[u8], references: Vec<Arc<RefBytes>>) {
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

    /// The best encoding of one chunk: plain zstd (or raw), a zstd delta against one of its
    /// references, or a patch against its largest reference, whichever is smallest.
    fn encode<'a>(
        data: &[u8],
        references: &'a [Arc<RefBytes>],
        level: i32,
        prepared: &mut Vec<Prepared<'a>>,
    ) -> (Encoding, Vec<u8>, Option<Reference>) {
        let (encoding, plain) = payload::encode(data, level);
        let mut best = (encoding, plain, None);
        let largest = references.iter().max_by_key(|r| r.bytes.len());
        for r in references {
            let i = match prepared.iter().position(|p| Arc::ptr_eq(p.of, r)) {
                Some(i) => i,
                None => {
                    if prepared.len() == RefCache::KEEP {
                        prepared.remove(0);
                    }
                    let is_largest = largest.is_some_and(|l| Arc::ptr_eq(l, r));
                    prepared.push(Prepared {
                        of: r,
                        dictionary: zstd::dict::EncoderDictionary::copy(&r.bytes, level),
                        patch: is_largest.then(|| bsdiff::Reference::new(&r.bytes)),
                    });
                    prepared.len() - 1
                }
            };
            let p = &prepared[i];
            if let Some(d) = payload::encode_delta(data, &p.dictionary, best.1.len()) {
                best = (Encoding::ZstdRef, d, Some(r.reference));
            }
            if let Some(b) = p.patch.as_ref() {
                if let Some(d) = bsdiff::encode_patch(data, b, best.1.len()) {
                    best = (Encoding::Bsdiff, d, Some(r.reference));
                }
            }
        }
        best
    }

    /// Runs of consecutive chunks that may be coded as one span: those whose largest
    /// reference is the same (or that have none), at most [`MAX_SPAN`] bytes in all.
    fn span_candidates(chunks: &[NewChunk]) -> Vec<std::ops::Range<usize>> {
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
    /// `Joined`). Also the run's patch for a solid group: against its largest reference, or
    /// against nothing.
    fn encode_run<'a>(run: &'a [NewChunk], level: i32, prepared: &mut Vec<Prepared<'a>>) -> Coded {
        let singles: Vec<_> = run
            .iter()
            .map(|(_, data, references)| Self::encode(data, references, level, prepared))
            .collect();
        let data: Vec<u8> = run.iter().flat_map(|(_, d, _)| d.iter().copied()).collect();
        let mut best = singles;
        if run.len() > 1 {
            let separate: usize = best.iter().map(|(_, b, _)| b.len()).sum();
            let (encoding, bytes, reference) = Self::encode(&data, &run[0].2, level, prepared);
            if encoding != Encoding::Raw && bytes.len() < separate {
                best = vec![(encoding, bytes, reference)];
                best.extend((1..run.len()).map(|_| (Encoding::Joined, Vec::new(), None)));
            }
        }
        // Its part of a solid group: a patch against its largest reference even where
        // another coding won alone. (Measured on scipy 1.11.4 -> 1.12.0: leaving out the
        // runs a zstd delta won, and sending as new bytes those plain zstd won, cost 5 %:
        // the groups broke up, and a patch coded in a group beats its coding alone.)
        let part = Self::part(&data, &run[0].2, level, prepared);
        (best, part)
    }

    /// The bytes of `group` (`raw` bytes of chunks) as one solid group, if it has two runs
    /// or more and that is smaller than their codings apart.
    fn solid(group: &[Coded], raw: usize) -> io::Result<Option<Vec<u8>>> {
        if group.len() < 2 {
            return Ok(None);
        }
        let parts: Vec<&(Patch, Option<Reference>)> = group.iter().map(|(_, p)| p).collect();
        let separate: usize = group
            .iter()
            .flat_map(|(codings, _)| codings.iter())
            .map(|(_, b, r)| b.len() + r.map_or(0, |_| payload::REFERENCE_COST))
            .sum();
        let references = parts.iter().filter(|(_, r)| r.is_some()).count();
        let patches: Vec<&Patch> = parts.iter().map(|(p, _)| p).collect();
        let bytes = crate::solid::encode(&patches)?;
        let smaller = bytes.len() + references * payload::REFERENCE_COST < separate;
        let fits = bytes.len() as u64 <= u64::from(payload::max_encoded_len(raw as u32));
        Ok((smaller && fits).then_some(bytes))
    }

    /// `data` as a part of a solid group: a patch against the largest of `references` (the
    /// one [`Batch::encode`] prepared a suffix array for), or all of it new.
    fn part<'a>(
        data: &[u8],
        references: &'a [Arc<RefBytes>],
        level: i32,
        prepared: &mut Vec<Prepared<'a>>,
    ) -> (Patch, Option<Reference>) {
        let largest = references.iter().max_by_key(|r| r.bytes.len());
        if let Some(r) = largest {
            let p = match prepared.iter().position(|p| Arc::ptr_eq(p.of, r)) {
                Some(i) => &prepared[i],
                None => {
                    Self::encode(data, references, level, prepared);
                    match prepared.iter().position(|p| Arc::ptr_eq(p.of, r)) {
                        Some(i) => &prepared[i],
                        None => return (new_bytes(data), None),
                    }
                }
            };
            if let Some(patch) = p.patch.as_ref().and_then(|b| b.diff(data)) {
                return (patch, Some(r.reference));
            }
        }
        (new_bytes(data), None)
    }

    /// Compress the batch on `opts.threads` threads and append the payloads in order: each
    /// chunk, or run of chunks coded as one span, as the smallest of plain zstd, a delta
    /// against a reference and a patch; and consecutive runs, up to [`MAX_SOLID`] bytes, as
    /// one solid group when that is smaller than all of those.
    pub fn flush(
        &mut self,
        opts: &PackOptions,
        payloads: &mut Vec<Payload>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let chunks = std::mem::take(&mut self.chunks);
        self.bytes = 0;
        let runs = Self::span_candidates(&chunks);
        let per = runs.len().div_ceil(opts.threads.max(1)).max(1);
        let chunks = &chunks;
        let coded: Vec<Coded> = std::thread::scope(|s| {
            let handles: Vec<_> = runs
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        let mut prepared = Vec::new();
                        part.iter()
                            .map(|run| {
                                Self::encode_run(
                                    &chunks[run.clone()],
                                    opts.zstd_level,
                                    &mut prepared,
                                )
                            })
                            .collect::<Vec<_>>()
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
        })?;
        let mut i = 0;
        while i < runs.len() {
            // A group: runs while they fit in MAX_SOLID bytes.
            let (mut j, mut raw) = (i, 0usize);
            while j < runs.len() {
                let len: usize = chunks[runs[j].clone()].iter().map(|c| c.1.len()).sum();
                if j > i && raw + len > MAX_SOLID as usize {
                    break;
                }
                raw += len;
                j += 1;
            }
            let group = &coded[i..j];
            let solid = Self::solid(group, raw)?;
            for (n, run) in runs[i..j].iter().enumerate() {
                let (singles, part) = &group[n];
                let part_reference = part.1;
                for (m, k) in run.clone().enumerate() {
                    let coding = match &solid {
                        Some(bytes) if n == 0 && m == 0 => {
                            (Encoding::Solid, bytes.as_slice(), part_reference)
                        }
                        Some(_) if m == 0 => (Encoding::Part, &[][..], part_reference),
                        Some(_) => (Encoding::Joined, &[][..], None),
                        None => {
                            let (e, b, r) = &singles[m];
                            (*e, b.as_slice(), *r)
                        }
                    };
                    let (id, data, _) = &chunks[k];
                    out.write_all(coding.1)?;
                    payloads.push(Payload {
                        chunk: *id,
                        raw_len: data.len() as u32,
                        encoded_len: coding.1.len() as u32,
                        encoding: coding.0,
                        reference: coding.2,
                    });
                }
            }
            i = j;
        }
        Ok(())
    }
}
