//! Pack: the closure of the target roots, minus what the mirror says is on board, as a
//! bundle of a manifest and the payloads of the chunks the device lacks.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use narlink_protocol::bundle::{BundleHeader, MANIFEST_PLAIN, MANIFEST_ZSTD};
use narlink_protocol::digest::{hex, short, state_digest};
use narlink_protocol::manifest::{
    nar_commitment, ChunkId, Encoding, Manifest, ManifestError, PathEntry, Reference, Rewrites,
    MANIFEST_VERSION,
};
use narlink_protocol::params::LinkOptions;
use narlink_protocol::pieces::{PieceHasher, Pieces};
use narlink_protocol::signature::SecretKey;
use narlink_protocol::storepath::PathSet;
use serde::Serialize;

use crate::chunking::{chunk_stream, PARAMS};
use crate::ground::code::{Batch, RefBytes, RefCache};
use crate::ground::delta;
use crate::nar::{NarError, NarLayout};
use crate::nixstore::{NixError, NixStore, PathInfo};
use crate::normalize::{self, hash_list, Normalizer, PlaceholderScan};
use crate::onboard::OnBoard;
use crate::progress::{self, Progress};
use crate::state::mirror::{GroundBundle, Mirror, Standing};
use crate::state::StateError;

/// Most placeholders the pack's scan of one path records (8 MiB of offsets): a path with more
/// rewrites sends their offsets.
const SCAN_LIMIT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Nar { path: String, source: NarError },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("reading the NAR of {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "{path}: NAR is {size} bytes but Nix recorded {recorded}: the ground store path changed"
    )]
    Changed {
        path: String,
        size: u64,
        recorded: u64,
    },
    #[error("the mirror is stale: the device last reported state {0}, which is not what the mirror holds; rebuild it with `narlink ground ack --inventory FILE` before packing")]
    Stale(String),
    #[error("bundle {0} is still in flight (the device has not reported it imported, failed or superseded): acknowledge the device's next report first (`ground ack`), withdraw it (`ground cancel`), or pack with --supersede to replace it (the new bundle then carries everything it did)")]
    InFlight(String),
    #[error("the device reports generation {generation} live, holding {root}..., which this mirror does not hold: the mirror was made from other roots than the device runs; make it again from the device's inventory (`ground ack --inventory FILE`)")]
    RootsMismatch { generation: u32, root: String },
    #[error("the references of the new paths form a cycle through {0}")]
    Cycle(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// How hard to work.
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// zstd level for payloads (1..=22).
    pub zstd_level: i32,
    /// Key that signs the manifest (Nix's secret key format).
    pub sign_key: Option<std::sync::Arc<narlink_protocol::signature::SecretKey>>,
    /// Worker threads for compression.
    pub threads: usize,
    /// Make deltas against the previous version of each package on board.
    pub deltas: bool,
    /// Send each path's deriver (the `.drv` it was built from). Off by default: a device
    /// holds no derivations, and a deriver is ~50 incompressible bytes per path.
    pub derivers: bool,
    /// Replace the bundles still in flight (else packing while one is in flight is refused).
    pub supersede: bool,
    pub progress: bool,
    /// The payload section is hashed in pieces of `2^piece_log2` bytes
    /// ([`LinkOptions::piece_log2`] of the link the bundle will be cut for).
    pub piece_log2: u8,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            zstd_level: 19,
            sign_key: None,
            deltas: true,
            derivers: false,
            supersede: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: true,
            piece_log2: LinkOptions::default().piece_log2(),
        }
    }
}

/// What a pack cost; printed for the operator, or as JSON.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PackReport {
    pub bundle: String,
    pub paths_new: usize,
    pub paths_in_closure: usize,
    pub nar_bytes_new: u64,
    /// NAR bytes the device rebuilds from chunks it already holds.
    pub bytes_reused: u64,
    /// NAR bytes of chunks that repeat earlier in this bundle (sent once).
    pub bytes_repeated: u64,
    /// NAR bytes of chunks sent in this bundle, before compression.
    pub bytes_new: u64,
    /// Of those, chunks sent as zstd deltas or patches against on-board data.
    pub chunks_delta: usize,
    /// Chunks coded together with the chunks before them, as one span.
    pub chunks_joined: usize,
    /// Chunks in solid groups (their patches coded as three streams across the group).
    pub chunks_solid: usize,
    /// The same after compression: the payload section.
    pub bytes_compressed: u64,
    pub chunks_new: usize,
    pub chunks_reused: usize,
    pub manifest_bytes: u64,
    pub bundle_bytes: u64,
    pub sequence: u64,
    pub signed_by: Vec<String>,
    /// The mirror has taken no report from the device: the plan rests on the roots given
    /// at `ground init`, which nothing has confirmed.
    pub unconfirmed: bool,
}

/// Pack the update from the mirror's state to the closure of `roots` into `out`.
pub fn pack(
    mirror: &Mirror,
    store: &NixStore,
    roots: &[String],
    out: &Path,
    opts: &PackOptions,
) -> Result<PackReport, PackError> {
    check_mirror(mirror, opts)?;
    let roots = store.resolve_roots(roots)?;
    let closure = store.closure(&roots)?;
    let on_board: BTreeSet<String> = mirror.db.paths()?.into_iter().collect();
    let new: Vec<String> = closure
        .iter()
        .filter(|p| !on_board.contains(*p))
        .cloned()
        .collect();
    let infos = store.path_infos(Some(&new))?;
    let ordered = dependency_order(infos)?;

    let mut report = PackReport {
        paths_new: ordered.len(),
        paths_in_closure: closure.len(),
        unconfirmed: mirror.last_report()?.is_none(),
        ..PackReport::default()
    };
    let total: u64 = ordered.iter().map(|i| i.nar_size).sum();
    report.nar_bytes_new = total;

    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io_err = |what, path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Io { what, path, source }
    };
    let mut payload_file =
        tempfile::tempfile_in(dir).map_err(io_err("creating a temporary file in", dir))?;
    let mut payload_out = BufWriter::with_capacity(1 << 20, &mut payload_file);

    let index = mirror.db.chunk_reader()?;
    // Deltas: the previous version of each package on board (and in the ground's store, to
    // read it), read normalized exactly as the device will.
    let preds = delta::Predecessors::new(
        on_board
            .iter()
            .map(String::as_str)
            .filter(|p| store.real_path(p).exists()),
    );
    let mut onboard = OnBoard::new(store.clone(), mirror.db.record_reader()?);
    let mut sources: Vec<String> = Vec::new();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut payloads = Vec::new();
    let mut entries = Vec::with_capacity(ordered.len());
    let mut predecessor: Vec<Option<String>> = Vec::with_capacity(ordered.len());
    // Per path: whether the device's scan for placeholders finds its rewrites.
    let mut scannable: Vec<bool> = Vec::with_capacity(ordered.len());
    let mut batch = Batch::default();
    let mut refs = RefCache::default();
    let mut progress = Progress::new("pack", total, opts.progress);
    let mut done = 0u64;

    for info in &ordered {
        let layout =
            NarLayout::scan(&store.real_path(&info.path)).map_err(|source| PackError::Nar {
                path: info.path.clone(),
                source,
            })?;
        let mut chunks = Vec::new();
        let mut failure: Option<PackError> = None;
        let pred = preds.of(&info.path).filter(|_| opts.deltas).cloned();
        // What deltas are made against, read at the path's first new chunk (a path whose
        // chunks are all on board costs no read of its predecessor).
        let mut base: Option<Option<(delta::Counterpart, delta::Anchors)>> = None;
        let mut normalized =
            Normalizer::new(layout.reader(), &hash_list(&info.path, &info.references));
        let mut scan = PlaceholderScan::new(SCAN_LIMIT);
        let result = chunk_stream::<_, io::Error>(&mut normalized, &PARAMS, |offset, bytes, c| {
            chunks.push(c);
            scan.feed(bytes);
            done += u64::from(c.len);
            let known = index.contains(&c.id).map_err(|e| {
                failure = Some(e.into());
                io::Error::other("chunk index lookup failed")
            })?;
            if known {
                report.bytes_reused += u64::from(c.len);
                report.chunks_reused += 1;
            } else if !seen.insert(c.id) {
                report.bytes_repeated += u64::from(c.len);
            } else {
                report.bytes_new += u64::from(c.len);
                report.chunks_new += 1;
                let against = pred.as_ref().map(|q| {
                    (
                        q,
                        base.get_or_insert_with(|| delta_base(&mut onboard, &layout, q)),
                    )
                });
                let references: Vec<Arc<RefBytes>> = match against {
                    Some((q, Some((cp, anchors)))) => {
                        let source = match sources.iter().position(|s| s == q) {
                            Some(i) => i,
                            None => {
                                sources.push(q.clone());
                                sources.len() - 1
                            }
                        };
                        cp.references(offset, c.len, anchors.locate(bytes))
                            .into_iter()
                            .filter_map(|(at, len)| {
                                let r = Reference {
                                    source: source as u32,
                                    offset: at,
                                    len,
                                };
                                refs.get(r, || onboard.range(q, at, len).ok())
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                };
                batch.push(c.id, bytes, references, entries.len());
                if batch.full() {
                    batch
                        .flush(opts, &mut payloads, &mut payload_out)
                        .map_err(|e| {
                            failure =
                                Some(io_err("writing payloads to a temporary file in", dir)(e));
                            io::Error::other("payload write failed")
                        })?;
                }
            }
            progress.update(done, || format!("{} new chunks", report.chunks_new));
            Ok(())
        });
        let size = match (result, failure) {
            (_, Some(e)) => return Err(e),
            (Err(source), None) => {
                return Err(PackError::Read {
                    path: info.path.clone(),
                    source,
                })
            }
            (Ok(size), None) => size,
        };
        if size != info.nar_size {
            return Err(PackError::Changed {
                path: info.path.clone(),
                size,
                recorded: info.nar_size,
            });
        }
        entries.push(PathEntry {
            store_path: info.path.clone(),
            nar_hash: Some(info.nar_hash.0),
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone().filter(|_| opts.derivers),
            chunks,
            copies: Vec::new(),
            rewrites: Rewrites::At(normalize::encode(&normalized.rewrites)),
        });
        predecessor.push(pred);
        // Two or more: then the indices alone take fewer bytes than offsets and indices.
        scannable.push(normalized.rewrites.len() >= 2 && scan.finds(&normalized.rewrites));
    }
    batch
        .finish(opts, &mut payloads, &mut payload_out)
        .map_err(io_err("writing payloads to a temporary file in", dir))?;
    payload_out
        .flush()
        .map_err(io_err("writing payloads to a temporary file in", dir))?;
    drop(payload_out);
    progress.finish();
    let pieces = hash_pieces(&mut payload_file, opts.piece_log2)
        .map_err(io_err("reading back payloads in", dir))?;

    // What the device will hold when it decodes the manifest: on-board names are made
    // unique among these.
    let device = PathSet::new(
        on_board
            .iter()
            .map(String::as_str)
            .chain(entries.iter().map(|e| e.store_path.as_str())),
    );
    let nar_commitment = nar_commitment(entries.iter().filter_map(|e| e.nar_hash.as_ref()));
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        chunking: PARAMS,
        base_digest: short(&state_digest(on_board.iter().map(String::as_str))),
        sequence: mirror.next_sequence()?,
        roots: roots.clone(),
        paths: entries,
        payloads,
        sources,
        pieces,
        nar_commitment,
    };
    // The mirror keeps the full chunk lists and rewrites; the wire carries runs the device
    // already holds as copies from the predecessor's list, and where the device's scan finds
    // the rewrites, only their indices.
    mirror.add_pending_full(&manifest)?;
    let mut manifest = manifest;
    for (entry, &scan) in manifest.paths.iter_mut().zip(&scannable) {
        match &entry.rewrites {
            Rewrites::At(gaps) if scan => {
                entry.rewrites = Rewrites::Scan(gaps.iter().map(|&(_, index)| index).collect())
            }
            _ => {}
        }
    }
    // A payload section of more than one piece (a piece is at most one FEC group: 512 KiB at
    // the default link) may take several passes, and a device may import a path before the
    // rest is in: it needs that path's own narHash (32 bytes). A smaller bundle arrives whole
    // and relies on the NAR commitment alone: a one-line config change saves 64 bytes.
    if manifest.pieces.hashes.is_empty() {
        for entry in &mut manifest.paths {
            entry.nar_hash = None;
        }
    }
    for (entry, pred) in manifest.paths.iter_mut().zip(&predecessor) {
        let Some(q) = pred else { continue };
        let Some(previous) = mirror.db.record(q)?.map(|r| r.chunks) else {
            continue;
        };
        let source = match manifest.sources.iter().position(|s| s == q) {
            Some(i) => i,
            None => {
                manifest.sources.push(q.clone());
                manifest.sources.len() - 1
            }
        };
        let (explicit, copies) =
            narlink_protocol::manifest::compact(&entry.chunks, &previous, source as u32);
        if !copies.is_empty() {
            entry.chunks = explicit;
            entry.copies = copies;
        }
    }
    let (header, head) = encode_head(&manifest, &device, opts.sign_key.as_deref())?;
    report.signed_by = opts.sign_key.iter().map(|k| k.name.clone()).collect();
    report.bytes_compressed = header.payload_len;
    report.chunks_delta = manifest.chunks_coded(|p| p.reference.is_some());
    report.chunks_solid = manifest.chunks_coded(|p| p.encoding.starts_part());
    report.chunks_joined = manifest
        .payloads
        .iter()
        .filter(|p| p.encoding == Encoding::Joined)
        .count();
    report.manifest_bytes = u64::from(header.manifest_len);
    report.bundle_bytes = header.total_len();
    report.bundle = hex(&header.id());
    report.sequence = manifest.sequence;

    // Write next to the destination, then rename: a crash never leaves half a bundle at `out`.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        w.write_all(&head).map_err(io_err("writing", out))?;
        payload_file
            .rewind()
            .map_err(io_err("reading back payloads for", out))?;
        io::copy(&mut (&mut payload_file).take(header.payload_len), &mut w)
            .map_err(io_err("writing", out))?;
        w.flush().map_err(io_err("writing", out))?;
    }
    tmp.as_file().sync_all().map_err(io_err("syncing", out))?;
    tmp.persist(out).map_err(|e| PackError::Io {
        what: "renaming into place",
        path: out.to_owned(),
        source: e.error,
    })?;
    let packed = GroundBundle {
        sequence: manifest.sequence,
        packed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        standing: Standing::InFlight,
        reason: 0,
        bundle_len: header.total_len(),
    };
    mirror.commit_pending(&header.id(), &packed)?;
    Ok(report)
}

/// The piece hashes of the payload section in `file`.
fn hash_pieces(file: &mut std::fs::File, log2: u8) -> io::Result<Pieces> {
    file.rewind()?;
    let mut hasher = PieceHasher::new(log2);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher.finish()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// Whether the mirror may be packed against: not stale, holding what the device last
/// reported live, and no bundle in flight (unless it is to be superseded).
fn check_mirror(mirror: &Mirror, opts: &PackOptions) -> Result<(), PackError> {
    // The live root first: a mirror made from the wrong roots is stale too, but this says why.
    let last = mirror.last_report()?;
    let report = last
        .as_ref()
        .and_then(|l| crate::status_view::report_of(&l.bytes));
    if let Some(live) = report.and_then(|(r, _)| r.device.live) {
        let names = PathSet::new(mirror.db.paths()?);
        if names.lookup(&live.root) == narlink_protocol::storepath::Lookup::Missing {
            return Err(PackError::RootsMismatch {
                generation: live.generation,
                root: narlink_protocol::storepath::unpack(&live.root),
            });
        }
    }
    if let Some(d) = mirror.stale()? {
        return Err(PackError::Stale(hex(&d)));
    }
    // With --supersede, `commit_pending` marks them superseded once the new bundle exists.
    let in_flight = mirror
        .ground_bundles()?
        .into_iter()
        .find(|(_, b)| b.standing == Standing::InFlight);
    match in_flight {
        Some((id, _)) if !opts.supersede => Err(PackError::InFlight(hex(&id))),
        _ => Ok(()),
    }
}

/// The bytes of a bundle before its payloads, and its header: the header, the manifest's wire
/// form (`device` as in [`Manifest::to_wire`]; zstd-compressed unless that would not make it
/// smaller), and the signature block (empty without a key).
pub fn encode_head(
    manifest: &Manifest,
    device: &PathSet,
    key: Option<&SecretKey>,
) -> Result<(BundleHeader, Vec<u8>), ManifestError> {
    let raw = manifest.to_wire(device)?;
    let (encoding, stored) = match zstd::bulk::compress(&raw, 19) {
        Ok(z) if z.len() < raw.len() => (MANIFEST_ZSTD, z),
        _ => (MANIFEST_PLAIN, raw.clone()),
    };
    let hash = *blake3::hash(&stored).as_bytes();
    let sig_block = key
        .map(|k| narlink_protocol::signature::encode_block(&[k.sign(&hash)]))
        .unwrap_or_default();
    let header = BundleHeader::for_head(
        &stored,
        encoding,
        raw.len() as u32,
        manifest.payload_bytes(),
        &sig_block,
    );
    let mut head = header.encode().to_vec();
    head.extend_from_slice(&stored);
    head.extend_from_slice(&sig_block);
    Ok((header, head))
}

/// The predecessor `q` of a new path prepared for finding references: which of its files
/// correspond to which of `layout`'s, and an anchor index of its bytes.
fn delta_base(
    onboard: &mut OnBoard,
    layout: &NarLayout,
    q: &str,
) -> Option<(delta::Counterpart, delta::Anchors)> {
    let old = onboard.layout(q).ok()?;
    let (cp, size) = (delta::Counterpart::new(layout, old), old.size());
    let anchors = delta::Anchors::build(size, |at, buf| onboard.read(q, at, buf)).ok()?;
    Some((cp, anchors))
}

/// Order paths so that every path comes after the paths it references; among the paths
/// ready, the smallest NAR first (then by name), so that on the device small paths become
/// complete, and importable, early.
fn dependency_order(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>, PackError> {
    let names: BTreeSet<String> = infos.iter().map(|i| i.path.clone()).collect();
    let mut waiting: BTreeMap<String, (PathInfo, usize)> = BTreeMap::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in infos {
        let deps: Vec<&String> = i
            .references
            .iter()
            .filter(|r| **r != i.path && names.contains(*r))
            .collect();
        for d in &deps {
            dependents
                .entry((*d).clone())
                .or_default()
                .push(i.path.clone());
        }
        let n = deps.len();
        waiting.insert(i.path.clone(), (i, n));
    }
    let size =
        |p: &str, w: &BTreeMap<String, (PathInfo, usize)>| w.get(p).map_or(0, |(i, _)| i.nar_size);
    let mut ready: BTreeSet<(u64, String)> = waiting
        .iter()
        .filter(|(_, (_, n))| *n == 0)
        .map(|(p, (i, _))| (i.nar_size, p.clone()))
        .collect();
    let mut out = Vec::with_capacity(waiting.len());
    while let Some((_, p)) = ready.pop_first() {
        let Some((info, _)) = waiting.remove(&p) else {
            continue;
        };
        for d in dependents.get(&p).into_iter().flatten() {
            if let Some((_, n)) = waiting.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert((size(d, &waiting), d.clone()));
                }
            }
        }
        out.push(info);
    }
    if let Some((p, _)) = waiting.into_iter().next() {
        return Err(PackError::Cycle(p));
    }
    Ok(out)
}

impl PackReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let pct = |n: u64| {
            if self.nar_bytes_new == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.nar_bytes_new as f64
            }
        };
        format!(
            "bundle {}\n\
             paths:            {} new of {} in the closure\n\
             NAR bytes new:    {}\n\
             reused on board:  {} ({:.1}%)\n\
             repeated:         {} ({:.1}%)\n\
             sent chunks:      {} in {} chunks ({} as deltas or patches, {} joined to the one before, {} in solid groups)\n\
             compressed:       {}\n\
             manifest:         {}\n\
             bundle:           {} ({:.2}% of the new NAR bytes)\n\
             sequence {}, signed by {}",
            self.bundle,
            self.paths_new,
            self.paths_in_closure,
            progress::bytes(self.nar_bytes_new),
            progress::bytes(self.bytes_reused),
            pct(self.bytes_reused),
            progress::bytes(self.bytes_repeated),
            pct(self.bytes_repeated),
            progress::bytes(self.bytes_new),
            self.chunks_new,
            self.chunks_delta,
            self.chunks_joined,
            self.chunks_solid,
            progress::bytes(self.bytes_compressed),
            progress::bytes(self.manifest_bytes),
            progress::bytes(self.bundle_bytes),
            pct(self.bundle_bytes),
            self.sequence,
            if self.signed_by.is_empty() {
                "nobody (unsigned)".to_owned()
            } else {
                self.signed_by.join(", ")
            },
        )
    }
}
