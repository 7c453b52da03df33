//! Rebuild a NAR from its chunk list: each chunk comes from the staging area or is read back
//! out of a path already in the device's store, and every chunk is checked against its
//! BLAKE3 id before its bytes are used.

use std::collections::HashMap;

use narlink_protocol::manifest::{ChunkRef, PathEntry};
use sha2::{Digest, Sha256};

use crate::nar::{NarError, NarHash, NarLayout};
use crate::nixstore::NixStore;
use crate::payload::{self, short_id, PayloadError};
use crate::state::device::{DeviceState, StagedReader};
use crate::normalize::{self, Rewrite};
use crate::state::{ChunkLookup, RecordLookup, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ReassembleError {
    #[error("{path}: chunk {chunk} is neither staged nor on board: the bundle is incomplete or was planned against another state")]
    Missing { path: String, chunk: String },
    #[error("{path}: staged {source}")]
    Staged { path: String, source: PayloadError },
    #[error("{path}: chunk {chunk} read from on-board path {from} does not match its id: that store path is damaged (run `nix-store --verify --check-contents`)")]
    OnBoard { path: String, chunk: String, from: String },
    #[error("{path}: reading on-board path {from}: {source}")]
    Read { path: String, from: String, source: NarError },
    #[error("{path}: rebuilt NAR has hash {found} ({found_size} bytes), the manifest says {expected} ({expected_size} bytes): refusing to import")]
    NarHash { path: String, found: String, found_size: u64, expected: String, expected_size: u64 },
    #[error("{path}: the manifest's hash rewrites name a hash the path does not have")]
    Rewrites { path: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: writing the rebuilt NAR: {source}")]
    Sink { path: String, source: std::io::Error },
}

/// Where chunks come from, over one consistent snapshot of the device state.
pub struct ChunkSource<'a> {
    store: &'a NixStore,
    staged: StagedReader,
    index: ChunkLookup,
    records: RecordLookup,
    /// On-board paths read recently: their NAR layout and where their store hashes are.
    layouts: HashMap<String, (NarLayout, Vec<Rewrite>)>,
    buf: Vec<u8>,
}

const MAX_CACHED_LAYOUTS: usize = 64;

impl<'a> ChunkSource<'a> {
    pub fn new(state: &DeviceState, store: &'a NixStore) -> Result<ChunkSource<'a>, StateError> {
        Ok(ChunkSource {
            store,
            staged: state.staged_reader()?,
            index: state.db.chunk_reader()?,
            records: state.db.record_reader()?,
            layouts: HashMap::new(),
            buf: Vec::new(),
        })
    }

    /// Whether the chunk can be had at all (without reading it).
    pub fn available(&self, id: &[u8; 32]) -> Result<bool, StateError> {
        Ok(self.staged.get(id)?.is_some() || self.index.contains(id)?)
    }

    /// The verified bytes of chunk `c` of `path`'s NAR.
    pub fn chunk(&mut self, path: &str, c: &ChunkRef) -> Result<&[u8], ReassembleError> {
        if let Some((p, bytes)) = self.staged.get(&c.id)? {
            self.buf = payload::decode(&p, &bytes)
                .map_err(|source| ReassembleError::Staged { path: path.to_owned(), source })?;
            return Ok(&self.buf);
        }
        let Some(loc) = self.index.locate(&c.id)? else {
            return Err(ReassembleError::Missing { path: path.to_owned(), chunk: short_id(&c.id) });
        };
        if self.layouts.len() >= MAX_CACHED_LAYOUTS && !self.layouts.contains_key(&loc.path) {
            self.layouts.clear();
        }
        if !self.layouts.contains_key(&loc.path) {
            let layout = NarLayout::scan(&self.store.real_path(&loc.path)).map_err(|source| {
                ReassembleError::Read { path: path.to_owned(), from: loc.path.clone(), source }
            })?;
            let rewrites = self.records.record(&loc.path)?.map(|r| r.rewrites).unwrap_or_default();
            self.layouts.insert(loc.path.clone(), (layout, rewrites));
        }
        let (layout, rewrites) = &self.layouts[&loc.path];
        self.buf.resize(loc.len as usize, 0);
        layout.read_at(loc.offset, &mut self.buf).map_err(|source| ReassembleError::Read {
            path: path.to_owned(),
            from: loc.path.clone(),
            source,
        })?;
        // Chunk ids are of normalized bytes: put the placeholders in.
        normalize::apply(&mut self.buf, loc.offset, rewrites, |_| Some(normalize::PLACEHOLDER));
        if loc.len != c.len || payload::verify(&c.id, &self.buf).is_err() {
            return Err(ReassembleError::OnBoard {
                path: path.to_owned(),
                chunk: short_id(&c.id),
                from: loc.path.clone(),
            });
        }
        Ok(&self.buf)
    }

    /// Stream `entry`'s NAR into `sink`, every chunk verified; returns the NAR's SHA-256
    /// and size. The caller compares them with the manifest (see [`verify_entry`]).
    pub fn stream(
        &mut self,
        entry: &PathEntry,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<([u8; 32], u64), ReassembleError> {
        let hashes = normalize::hash_list(&entry.store_path, &entry.references);
        let rewrites = crate::state::PathRecord::from(entry).rewrites;
        if rewrites.iter().any(|r| usize::from(r.index) >= hashes.len()) {
            return Err(ReassembleError::Rewrites { path: entry.store_path.clone() });
        }
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut out = Vec::new();
        for c in &entry.chunks {
            let bytes = self.chunk(&entry.store_path, c)?;
            // Put the real store hashes back.
            out.clear();
            out.extend_from_slice(bytes);
            normalize::apply(&mut out, size, &rewrites, |i| hashes.get(usize::from(i)).copied());
            h.update(&out);
            size += out.len() as u64;
            sink(&out).map_err(|source| ReassembleError::Sink { path: entry.store_path.clone(), source })?;
        }
        Ok((h.finalize().into(), size))
    }

    /// Rebuild `entry`'s NAR without keeping it and check its narHash and narSize.
    pub fn verify_entry(&mut self, entry: &PathEntry) -> Result<(), ReassembleError> {
        let (found, size) = self.stream(entry, |_| Ok(()))?;
        if found != entry.nar_hash || size != entry.nar_size {
            return Err(ReassembleError::NarHash {
                path: entry.store_path.clone(),
                found: NarHash(found).to_string(),
                found_size: size,
                expected: NarHash(entry.nar_hash).to_string(),
                expected_size: entry.nar_size,
            });
        }
        Ok(())
    }
}
