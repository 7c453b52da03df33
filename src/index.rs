//! Building chunk-index records: read a store path's NAR, chunk it, and (optionally) check
//! its narHash against what Nix recorded.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::chunking::{chunk_stream, PARAMS};
use crate::nar::{NarError, NarLayout};
use crate::nixstore::{NixStore, PathInfo};
use crate::normalize::{hash_list, Normalizer};
use crate::state::PathRecord;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Nar { path: String, source: NarError },
    #[error("reading the NAR of {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: NAR is {found_size} bytes with hash {found}, but Nix recorded {expected_size} bytes with {expected}: the store path was modified")]
    Mismatch {
        path: String,
        found: String,
        found_size: u64,
        expected: String,
        expected_size: u64,
    },
}

/// A reader that hashes what passes through it.
struct Sha256Reader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Chunk the normalized NAR of `info.path` as it is in `store`. With `verify`, the NAR's
/// SHA-256 and size must equal what Nix recorded.
pub fn index_path(
    store: &NixStore,
    info: &PathInfo,
    verify: bool,
) -> Result<PathRecord, IndexError> {
    let path = &info.path;
    let layout = NarLayout::scan(&store.real_path(path)).map_err(|source| IndexError::Nar {
        path: path.clone(),
        source,
    })?;
    let hashed = Sha256Reader {
        inner: layout.reader(),
        hasher: verify.then(Sha256::new),
    };
    let mut reader = Normalizer::new(hashed, &hash_list(path, &info.references));
    let mut chunks = Vec::with_capacity((layout.size() / u64::from(PARAMS.avg_size)) as usize + 1);
    let size = chunk_stream::<_, io::Error>(&mut reader, &PARAMS, |_, _, c| {
        chunks.push(c);
        Ok(())
    })
    .map_err(|source| IndexError::Io {
        path: path.clone(),
        source,
    })?;
    let rewrites = std::mem::take(&mut reader.rewrites);
    if let Some(h) = reader.into_inner().hasher.take() {
        let found: [u8; 32] = h.finalize().into();
        if found != info.nar_hash.0 || size != info.nar_size {
            return Err(IndexError::Mismatch {
                path: path.clone(),
                found: crate::nar::NarHash(found).to_string(),
                found_size: size,
                expected: info.nar_hash.to_string(),
                expected_size: info.nar_size,
            });
        }
    }
    Ok(PathRecord {
        nar_hash: info.nar_hash.0,
        nar_size: size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        chunks,
        rewrites,
    })
}

/// What indexing a set of paths found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexReport {
    pub paths: usize,
    pub nar_bytes: u64,
    pub chunks: usize,
    /// Paths whose bytes do not match what Nix recorded; left out of the index.
    pub damaged: Vec<String>,
}

/// Index `infos` into `db` (skipping paths it already holds), committing every few hundred
/// MB so a crash loses little work.
pub fn index_into(
    db: &crate::state::StateDb,
    store: &NixStore,
    infos: &[PathInfo],
    verify: bool,
    progress: bool,
) -> Result<IndexReport, IndexOrStateError> {
    let total: u64 = infos.iter().map(|i| i.nar_size).sum();
    let mut bar = crate::progress::Progress::new("index", total, progress);
    let mut report = IndexReport::default();
    let mut done = 0u64;
    let mut tx = db.begin_write()?;
    let mut pending = 0u64;
    for info in infos {
        done += info.nar_size;
        if db.has_path(&info.path)? {
            continue;
        }
        match index_path(store, info, verify) {
            Ok(rec) => {
                report.paths += 1;
                report.nar_bytes += rec.nar_size;
                report.chunks += rec.chunks.len();
                db.add_path(&tx, &info.path, &rec)?;
                pending += rec.nar_size;
            }
            Err(IndexError::Mismatch { path, .. }) => report.damaged.push(path),
            Err(e) => return Err(e.into()),
        }
        if pending > 256 << 20 {
            db.commit(tx)?;
            tx = db.begin_write()?;
            pending = 0;
        }
        bar.update(done, || format!("{} paths", report.paths));
    }
    db.commit(tx)?;
    bar.finish();
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum IndexOrStateError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// The error of operations that bring a path set in line with a store (device init, ground
/// init, device gc, mirror rebuild): a Nix query, the state database, or indexing a path.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Nix(#[from] crate::nixstore::NixError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Index(#[from] IndexOrStateError),
}
