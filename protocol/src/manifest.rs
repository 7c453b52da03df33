//! The bundle manifest: what the device needs to rebuild and verify every new store path.
//!
//! It names the device state it was planned against, lists the new paths in dependency order
//! (every reference is either already on board or listed earlier), and, per path, the chunk
//! list of its NAR. New chunk bytes travel as payloads after the manifest, in the order of
//! [`Manifest::payloads`].
//!
//! Two encodings: on the link, the compact [`wire`] form (on-board paths named by a few bytes
//! of their hash, new chunks by payload number), which a device can only decode against its
//! own set of paths; in local storage, [`Manifest::to_bytes`] (postcard of these structs,
//! every path in full).

mod wire;

pub use wire::{display_names, resolve_in};

use serde::{Deserialize, Serialize};

use crate::pieces::Pieces;
use crate::storepath::STORE_DIR;

/// Format version of [`Manifest`]. Bump on any change of its fields.
pub const MANIFEST_VERSION: u16 = 8;

/// Hard cap on the decompressed manifest (defends the device against a hostile length).
pub const MAX_MANIFEST_BYTES: u32 = 256 << 20;

/// A chunk id: the first 16 bytes (128 bits) of the BLAKE3 of the chunk's bytes.
///
/// Chunk ids only name chunks for deduplication and catch corrupted or forged payloads early;
/// what the device imports is verified against each NAR's SHA-256 narHash. 128 bits keep the
/// chance that two of 2^32 chunks collide below 2^-64, and every new chunk costs 16 bytes
/// less in the manifest (the part of it that does not compress).
pub type ChunkId = [u8; 16];

/// The content-defined chunking parameters both sides must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// Version of the chunking algorithm (3 = FastCDC v2020 over normalized NARs, 128-bit
    /// BLAKE3 ids).
    pub algorithm: u8,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

/// One chunk of a NAR: its id and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A store path the bundle brings to the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathEntry {
    /// Full store path, e.g. `/nix/store/<hash>-name`.
    pub store_path: String,
    /// SHA-256 of the NAR, as Nix computes it. The ground knows every one; the wire form
    /// carries them only in bundles large enough to arrive over several passes, where a path
    /// may be imported before the rest of its bundle is in (since manifest version 7). A
    /// device computes each narHash while it rebuilds the NAR, checks it against this where
    /// given, and checks all of a bundle's together against [`Manifest::nar_commitment`]
    /// once the bundle is complete: a path without one waits for that.
    pub nar_hash: Option<[u8; 32]>,
    pub nar_size: u64,
    /// Full store paths this path references (may include itself).
    pub references: Vec<String>,
    pub deriver: Option<String>,
    /// The NAR, normalized (every store hash of the path itself and of its references
    /// replaced by a placeholder), as a sequence of chunks: these, with the runs of
    /// [`PathEntry::copies`] inserted, add up to `nar_size`.
    pub chunks: Vec<ChunkRef>,
    /// Runs of chunks the device takes from the chunk list of a path it holds, instead of
    /// 20 bytes per chunk here. Sorted by `at`.
    pub copies: Vec<CopyRun>,
    /// Where the store hashes go back into the normalized NAR.
    pub rewrites: Rewrites,
}

/// Where a path's store hashes go back into its normalized NAR. An index points into the
/// path's hash list: its own hash, then its references' in order, self-references skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rewrites {
    /// Each as (gap from the previous occurrence's offset, or the offset itself for the
    /// first; index).
    At(Vec<(u64, u16)>),
    /// At each placeholder the device finds in the normalized NAR, scanning it from the start
    /// (32 `e`s; in a longer run of `e`s, from its start, every 32 bytes), the next of these
    /// indices, in order. The ground sends this form only where that scan finds exactly the
    /// occurrences it recorded, which saves every offset; the device turns it into `At`
    /// before it rebuilds the NAR.
    Scan(Vec<u16>),
}

impl Default for Rewrites {
    fn default() -> Self {
        Rewrites::At(Vec::new())
    }
}

/// `count` chunks starting at chunk `first` of the on-board path `sources[source]`, inserted
/// so that the first of them is chunk number `at` of this path's full list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRun {
    pub at: u32,
    pub source: u32,
    pub first: u32,
    pub count: u32,
}

/// How a payload's bytes encode its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// The chunk bytes as they are.
    Raw,
    /// One zstd frame of the chunk bytes.
    Zstd,
    /// One zstd frame made with a reference the device already holds as its dictionary
    /// (a delta): see [`Payload::reference`].
    ZstdRef,
    /// One zstd frame of a [`crate::patch`] that rebuilds the chunk from its reference
    /// (bsdiff-style: for rebuilt binaries whose code moved).
    Bsdiff,
    /// No bytes of its own: the chunk is coded together with the chunks before it, back to
    /// the nearest payload that is not `Joined` (the span's head), whose bytes decode into
    /// the concatenation of all of them. See [`Manifest::spans`].
    Joined,
    /// The head of a *solid group*: its bytes hold the patches of this part and of the
    /// `Part`s after it, coded as three streams (controls, differences, new bytes) across
    /// all of them, so that what repeats between parts (the new code of one rebuilt library
    /// and of the next) is coded once. Each part is patched against its own reference, or
    /// against nothing (all its bytes new). See [`crate::solid`].
    Solid,
    /// No bytes of its own: the next part of the solid group before it (see `Solid`).
    Part,
}

impl Encoding {
    /// Whether decoding needs on-board reference bytes ([`Payload::reference`]).
    pub fn needs_reference(self) -> bool {
        matches!(self, Encoding::ZstdRef | Encoding::Bsdiff)
    }

    /// Whether the payload begins a part of a solid group.
    pub fn starts_part(self) -> bool {
        matches!(self, Encoding::Solid | Encoding::Part)
    }
}

/// Longest reference a delta may name.
pub const MAX_REFERENCE: u32 = 4 << 20;

/// Most bytes a span (a head payload and the payloads joined to it) may decode into; also
/// each part of a solid group.
pub const MAX_SPAN: u32 = 1 << 20;

/// Most bytes a solid group (all its parts) may decode into. The device holds the group's
/// decoded streams (about this much: its differences and new bytes add up to the group)
/// while it stages it. 64 MiB since manifest version 6 (16 MiB before): on compiled-scipy,
/// groups of 64 MiB take 6 % fewer bytes than groups of 16 MiB (docs/measurements.md,
/// "Larger solid groups").
pub const MAX_SOLID: u32 = 64 << 20;

/// The dictionary of each LZMA stream of a solid group: the ground's LZMA encoder takes
/// about 12 times its dictionary, the device's decoder the dictionary itself.
pub const SOLID_DICT: u32 = 16 << 20;

/// Bytes the device reads from its own store to decode a delta: `len` bytes at `offset` of
/// the normalized NAR of `sources[source]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub source: u32,
    pub offset: u64,
    pub len: u32,
}

/// A new chunk carried in the bundle's payload section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub chunk: ChunkId,
    /// Length of the chunk once decoded.
    pub raw_len: u32,
    /// Length of the payload bytes in the bundle.
    pub encoded_len: u32,
    pub encoding: Encoding,
    /// For [`Encoding::ZstdRef`] and [`Encoding::Bsdiff`]: the on-board bytes the delta was
    /// made against; for [`Encoding::Solid`] and [`Encoding::Part`], those the part is
    /// patched against, if any.
    pub reference: Option<Reference>,
}

/// The manifest of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u16,
    pub chunking: ChunkParams,
    /// State digest of the device the ground planned this bundle against: its first 16
    /// bytes, as status reports carry it ([`crate::digest::short`]).
    pub base_digest: [u8; 16],
    /// Increases with every bundle the ground packs for this device: a device refuses a
    /// bundle not newer than the last one it imported (a replay).
    pub sequence: u64,
    /// The target closure roots (what a profile would point to).
    pub roots: Vec<String>,
    /// New paths, references first.
    pub paths: Vec<PathEntry>,
    /// New chunks, in the order their bytes follow the manifest.
    pub payloads: Vec<Payload>,
    /// On-board store paths that deltas are made against.
    pub sources: Vec<String>,
    /// Hashes of the payload section piece by piece: where forged bytes are.
    pub pieces: Pieces,
    /// [`nar_commitment`] of the narHashes of [`Manifest::paths`], in order: one check of
    /// every rebuilt NAR in 16 bytes instead of 32 per path.
    pub nar_commitment: [u8; 16],
}

/// The commitment to the narHashes of a bundle's paths, in the manifest's order: the first 16
/// bytes of their BLAKE3 under a key derived for this use.
///
/// Every chunk a device rebuilds a NAR from is checked against its 128-bit id, so what a
/// narHash adds is a check that both sides restore the same store hashes into the same
/// bytes, and a complete one of everything a bundle produces. One commitment gives that
/// check at the strength of the chunk ids; it only cannot say which path differs (the error
/// then names the bundle).
pub fn nar_commitment<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("narlink 2026-12-05 nar commitment");
    for n in hashes {
        h.update(n);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The chunking parameters of manifest version 7 (algorithm 3: FastCDC v2020 cut points over
/// store-hash-normalized NARs, 128-bit BLAKE3 ids; sizes chosen by measurement,
/// docs/measurements.md "Chunk size"). The wire form names them in one byte.
pub const STANDARD_CHUNKING: ChunkParams = ChunkParams {
    algorithm: 3,
    min_size: 16 * 1024,
    avg_size: 64 * 1024,
    max_size: 256 * 1024,
};

impl Manifest {
    /// The payloads in spans: each range is a head payload and the `Joined` payloads after
    /// it, decoded together from the head's bytes. (A manifest that passed
    /// [`Manifest::check`] never starts with a `Joined` payload.)
    pub fn spans(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            (at < self.payloads.len()).then(|| {
                let span = self.span_at(at);
                at = span.end;
                span
            })
        })
    }

    /// The span that starts at payload `start`: it and the `Joined` payloads right after it;
    /// for the head of a solid group, the whole group (its `Part`s and their `Joined`s).
    pub fn span_at(&self, start: usize) -> std::ops::Range<usize> {
        let solid = self
            .payloads
            .get(start)
            .is_some_and(|p| p.encoding == Encoding::Solid);
        let follows = self
            .payloads
            .iter()
            .skip(start + 1)
            .take_while(|p| {
                p.encoding == Encoding::Joined || (solid && p.encoding == Encoding::Part)
            })
            .count();
        start..start + 1 + follows
    }

    /// The parts of the span `span`: each a payload and the `Joined` payloads after it (a
    /// span that is not a solid group is one part).
    pub fn parts(&self, span: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        parts(&self.payloads[span.clone()])
            .into_iter()
            .map(|r| r.start + span.start..r.end + span.start)
            .collect()
    }

    /// How many chunks are coded by a part head (a payload that is not `Joined`) for which
    /// `what` holds: a joined chunk counts as coded like the head of its part.
    pub fn chunks_coded(&self, what: impl Fn(&Payload) -> bool) -> usize {
        self.spans()
            .flat_map(|s| self.parts(s))
            .filter(|p| what(&self.payloads[p.start]))
            .map(|p| p.len())
            .sum()
    }

    /// Sum of all payloads' encoded lengths: the size of the payload section.
    pub fn payload_bytes(&self) -> u64 {
        self.payloads.iter().map(|p| u64::from(p.encoded_len)).sum()
    }
}

/// Why a manifest could not be decoded or is inconsistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest does not decode: {0}")]
    Decode(String),
    #[error("manifest format version {found} is not supported (this narlink reads version {MANIFEST_VERSION}): upgrade narlink on this side")]
    Version { found: u16 },
    #[error(
        "manifest path {path}: chunk lengths add up to {sum} bytes, but narSize is {nar_size}"
    )]
    ChunkSum {
        path: String,
        sum: u64,
        nar_size: u64,
    },
    #[error("manifest path {path} references {reference}, which is neither on board nor earlier in the bundle")]
    Order { path: String, reference: String },
    #[error("manifest path {0}: hash rewrites overlap, run past the NAR, or name a hash it does not have")]
    Rewrites(String),
    #[error("manifest path {0}: chunk copy runs are out of order or name no source")]
    Copies(String),
    #[error("manifest path {path}: copies chunks of {source_path}, which the device does not hold (or not that many)")]
    CopySource { path: String, source_path: String },
    #[error("manifest lists path {0} twice")]
    Duplicate(String),
    #[error("manifest payload {index}: {reason}")]
    Payload { index: usize, reason: &'static str },
    #[error("manifest names {0:?}, which is not a store path /nix/store/<hash>-<name>")]
    Name(String),
    #[error("manifest names on-board path {STORE_DIR}/{prefix}…, {}: it was planned against another state", if *.ambiguous { "which names several paths on this device" } else { "which this device does not hold" })]
    Unresolved { prefix: String, ambiguous: bool },
    #[error("manifest {0} index out of range")]
    Index(&'static str),
    #[error("manifest piece hashes do not describe its payload section (piece size or count)")]
    Pieces,
}

impl Manifest {
    /// The storage form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decode the storage form and check internal consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = decode_canonical(bytes)?;
        m.check()?;
        Ok(m)
    }

    /// Structural checks that need no knowledge of the device.
    pub fn check(&self) -> Result<(), ManifestError> {
        let mut seen = std::collections::HashSet::new();
        for p in &self.paths {
            if !seen.insert(p.store_path.as_str()) {
                return Err(ManifestError::Duplicate(p.store_path.clone()));
            }
            let in_list = |index: u16| usize::from(index) <= p.references.len();
            match &p.rewrites {
                Rewrites::At(gaps) => {
                    let mut at: u64 = 0;
                    for (i, &(gap, index)) in gaps.iter().enumerate() {
                        let next = at.checked_add(gap);
                        let ok = (i == 0 || gap >= 32)
                            && in_list(index)
                            && next
                                .and_then(|n| n.checked_add(32))
                                .is_some_and(|end| end <= p.nar_size);
                        if !ok {
                            return Err(ManifestError::Rewrites(p.store_path.clone()));
                        }
                        at = next.unwrap_or(0);
                    }
                }
                Rewrites::Scan(indices) => {
                    if !indices.iter().all(|&i| in_list(i))
                        || indices.len() as u64 > p.nar_size / 32
                    {
                        return Err(ManifestError::Rewrites(p.store_path.clone()));
                    }
                }
            }
            let mut at = 0u64;
            for r in &p.copies {
                if u64::from(r.at) < at || r.count == 0 || r.source as usize >= self.sources.len() {
                    return Err(ManifestError::Copies(p.store_path.clone()));
                }
                at = u64::from(r.at) + u64::from(r.count);
            }
            // With copies, the sum is checked once the device has expanded them.
            let sum: u64 = p.chunks.iter().map(|c| u64::from(c.len)).sum();
            if (p.copies.is_empty() && sum != p.nar_size) || sum > p.nar_size {
                return Err(ManifestError::ChunkSum {
                    path: p.store_path.clone(),
                    sum,
                    nar_size: p.nar_size,
                });
            }
        }
        for (index, p) in self.payloads.iter().enumerate() {
            if p.raw_len == 0 {
                return Err(ManifestError::Payload {
                    index,
                    reason: "empty chunk",
                });
            }
            if p.raw_len > self.chunking.max_size {
                return Err(ManifestError::Payload {
                    index,
                    reason: "chunk longer than the chunking maximum",
                });
            }
            if p.encoding == Encoding::Joined && (index == 0 || p.encoded_len != 0) {
                return Err(ManifestError::Payload {
                    index,
                    reason: "joined payload without a head, or with bytes of its own",
                });
            }
            if p.encoding == Encoding::Part && p.encoded_len != 0 {
                return Err(ManifestError::Payload {
                    index,
                    reason: "part of a solid group with bytes of its own",
                });
            }
            if p.encoding == Encoding::Raw && p.encoded_len != p.raw_len {
                return Err(ManifestError::Payload {
                    index,
                    reason: "raw payload whose length differs from its chunk",
                });
            }
            let valid = |r: &Reference| {
                (r.source as usize) < self.sources.len() && r.len <= MAX_REFERENCE && r.len > 0
            };
            match (p.encoding.needs_reference(), p.reference) {
                (true, Some(r)) if valid(&r) => {}
                (true, _) => {
                    return Err(ManifestError::Payload {
                        index,
                        reason: "delta without a valid reference",
                    });
                }
                (false, Some(r)) if p.encoding.starts_part() && valid(&r) => {}
                (false, Some(_)) => {
                    return Err(ManifestError::Payload {
                        index,
                        reason: "reference on a payload that is not a delta, or not valid",
                    });
                }
                _ => {}
            }
        }
        if !self.pieces.fits(self.payload_bytes()) {
            return Err(ManifestError::Pieces);
        }
        let raw = |r: std::ops::Range<usize>| -> u64 {
            self.payloads[r].iter().map(|p| u64::from(p.raw_len)).sum()
        };
        for span in self.spans() {
            let head = self.payloads[span.start].encoding;
            if head == Encoding::Part {
                return Err(ManifestError::Payload {
                    index: span.start,
                    reason: "part outside a solid group",
                });
            }
            let parts = self.parts(span.clone());
            let long_part = parts
                .iter()
                .any(|p| p.len() > 1 && raw(p.clone()) > u64::from(MAX_SPAN));
            if (head == Encoding::Solid && (raw(span.clone()) > u64::from(MAX_SOLID) || long_part))
                || (head != Encoding::Solid
                    && span.len() > 1
                    && (raw(span.clone()) > u64::from(MAX_SPAN) || head == Encoding::Raw))
            {
                return Err(ManifestError::Payload {
                    index: span.start,
                    reason: "span or solid group longer than the maximum, or raw",
                });
            }
        }
        Ok(())
    }
}

/// Split a span's payloads into parts: each a payload and the `Joined` payloads after it.
pub fn parts(span: &[Payload]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, p) in span.iter().enumerate() {
        match out.last_mut() {
            Some(r) if p.encoding == Encoding::Joined => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Decode postcard bytes that start with [`MANIFEST_VERSION`] and are in canonical form:
/// decode then encode gives them back (no over-long varints, no trailing bytes), so one
/// manifest has one encoding and the bundle id, the hash of the wire form, names one manifest.
fn decode_canonical<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ManifestError> {
    // The version comes first: check it before trusting the rest of the layout.
    let (version, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| ManifestError::Decode(e.to_string()))?;
    if version != MANIFEST_VERSION {
        return Err(ManifestError::Version { found: version });
    }
    let value: T = postcard::from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
    if postcard::to_allocvec(&value).ok().as_deref() != Some(bytes) {
        return Err(ManifestError::Decode("not in canonical form".into()));
    }
    Ok(value)
}

impl PathEntry {
    /// The full chunk list: explicit chunks with the copy runs inserted, the runs' chunks
    /// taken from `lookup(source path)` (the holder's own index). The lengths must add up to
    /// `nar_size`.
    pub fn expand(
        &self,
        sources: &[String],
        mut lookup: impl FnMut(&str) -> Option<Vec<ChunkRef>>,
    ) -> Result<Vec<ChunkRef>, ManifestError> {
        if self.copies.is_empty() {
            return Ok(self.chunks.clone());
        }
        let mut out = Vec::with_capacity(
            self.chunks.len() + self.copies.iter().map(|r| r.count as usize).sum::<usize>(),
        );
        let mut explicit = self.chunks.iter();
        for r in &self.copies {
            while out.len() < r.at as usize {
                out.push(
                    *explicit
                        .next()
                        .ok_or_else(|| ManifestError::Copies(self.store_path.clone()))?,
                );
            }
            let source = sources
                .get(r.source as usize)
                .ok_or_else(|| ManifestError::Copies(self.store_path.clone()))?;
            let bad = || ManifestError::CopySource {
                path: self.store_path.clone(),
                source_path: source.clone(),
            };
            let list = lookup(source).ok_or_else(bad)?;
            let run = list
                .get(
                    r.first as usize
                        ..(r.first as usize)
                            .checked_add(r.count as usize)
                            .ok_or_else(bad)?,
                )
                .ok_or_else(bad)?;
            out.extend_from_slice(run);
        }
        out.extend(explicit);
        let sum: u64 = out.iter().map(|c| u64::from(c.len)).sum();
        if sum != self.nar_size {
            return Err(ManifestError::ChunkSum {
                path: self.store_path.clone(),
                sum,
                nar_size: self.nar_size,
            });
        }
        Ok(out)
    }
}

/// Replace runs of `chunks` found in `previous` (a path the device holds, `sources[source]`)
/// by copy runs. Returns (explicit chunks, copy runs).
pub fn compact(
    chunks: &[ChunkRef],
    previous: &[ChunkRef],
    source: u32,
) -> (Vec<ChunkRef>, Vec<CopyRun>) {
    let mut at: std::collections::HashMap<ChunkId, usize> = std::collections::HashMap::new();
    for (j, c) in previous.iter().enumerate().rev() {
        at.insert(c.id, j);
    }
    let (mut explicit, mut copies) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < chunks.len() {
        match at
            .get(&chunks[i].id)
            .copied()
            .filter(|&j| previous[j].len == chunks[i].len)
        {
            Some(j) => {
                let mut n = 1;
                while i + n < chunks.len()
                    && j + n < previous.len()
                    && chunks[i + n] == previous[j + n]
                {
                    n += 1;
                }
                copies.push(CopyRun {
                    at: i as u32,
                    source,
                    first: j as u32,
                    count: n as u32,
                });
                i += n;
            }
            None => {
                explicit.push(chunks[i]);
                i += 1;
            }
        }
    }
    (explicit, copies)
}
