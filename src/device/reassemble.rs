//! Rebuild a NAR from its chunk list: each chunk comes from the staging area or is read back
//! out of a path already in the device's store, and every chunk is checked against its
//! BLAKE3 id before its bytes are used.

use narlink_protocol::manifest::{
    nar_commitment, ChunkId, ChunkRef, Manifest, PathEntry, Payload, Rewrites,
};
use sha2::{Digest, Sha256};

use crate::nar::NarHash;
use crate::nixstore::NixStore;
use crate::normalize;
use crate::onboard::{OnBoard, OnBoardError};
use crate::payload::{self, short_id, PayloadError};
use crate::state::device::{DeviceState, StagedReader};
use crate::state::{ChunkLookup, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ReassembleError {
    #[error("{path}: chunk {chunk} is neither staged nor on board: the bundle is incomplete or was planned against another state")]
    Missing { path: String, chunk: String },
    #[error("{path}: staged {source}")]
    Staged { path: String, source: PayloadError },
    #[error("{path}: chunk {chunk} read from on-board path {from} does not match its id: that store path is damaged (run `nix-store --verify --check-contents`)")]
    OnBoard {
        path: String,
        chunk: String,
        from: String,
    },
    #[error("{path}: reading on-board path {from}: {source}")]
    Reference {
        path: String,
        from: String,
        source: OnBoardError,
    },
    #[error("{path}: rebuilt NAR has hash {found} ({found_size} bytes), the manifest says {expected} ({expected_size} bytes): refusing to import")]
    NarHash {
        path: String,
        found: String,
        found_size: u64,
        expected: String,
        expected_size: u64,
    },
    #[error("the rebuilt NARs hash to commitment {found}, the manifest says {expected}: for some path of the bundle the ground and this device rebuild different bytes; refusing to import")]
    Commitment { found: String, expected: String },
    #[error("{path}: the manifest's hash rewrites name a hash the path does not have, or are not where its placeholders are")]
    Rewrites { path: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{path}: writing the rebuilt NAR: {source}")]
    Sink {
        path: String,
        source: std::io::Error,
    },
}

/// Where chunks come from, over one consistent snapshot of the device state.
pub struct ChunkSource {
    staged: StagedReader,
    index: ChunkLookup,
    onboard: OnBoard,
    buf: Vec<u8>,
    /// The staged span decoded last: its payloads and their bytes (verified).
    span: Vec<Payload>,
    span_bytes: Vec<u8>,
}

/// Where chunk `c` begins in the decoded bytes of `span`.
fn span_offset(span: &[Payload], c: &ChunkRef) -> Option<usize> {
    let mut at = 0;
    for p in span {
        if p.chunk == c.id && p.raw_len == c.len {
            return Some(at);
        }
        at += p.raw_len as usize;
    }
    None
}

impl ChunkSource {
    pub fn new(state: &DeviceState, store: &NixStore) -> Result<ChunkSource, StateError> {
        Ok(ChunkSource {
            staged: state.staged_reader()?,
            index: state.db.chunk_reader()?,
            onboard: OnBoard::new(store.clone(), state.db.record_reader()?),
            buf: Vec::new(),
            span: Vec::new(),
            span_bytes: Vec::new(),
        })
    }

    /// Whether the chunk can be had at all (without reading it).
    pub fn available(&self, id: &ChunkId) -> Result<bool, StateError> {
        Ok(self.staged.contains(id)? || self.index.contains(id)?)
    }

    /// The verified bytes of chunk `c` of `path`'s NAR.
    pub fn chunk(&mut self, path: &str, c: &ChunkRef) -> Result<&[u8], ReassembleError> {
        // A staged span is decoded once for all its chunks, which come one after the other.
        if let Some(at) = span_offset(&self.span, c) {
            return Ok(&self.span_bytes[at..at + c.len as usize]);
        }
        if let Some((_, st)) = self.staged.get(&c.id)? {
            let reference = match &st.source {
                Some(src) => Some(self.onboard.range(&src.path, src.offset, src.len).map_err(
                    |source| ReassembleError::Reference {
                        path: path.to_owned(),
                        from: src.path.clone(),
                        source,
                    },
                )?),
                None => None,
            };
            let bytes =
                payload::decode(&st.span, &st.bytes, reference.as_deref()).map_err(|source| {
                    ReassembleError::Staged {
                        path: path.to_owned(),
                        source,
                    }
                })?;
            self.span = st.span;
            self.span_bytes = bytes;
            let Some(at) = span_offset(&self.span, c) else {
                return Err(ReassembleError::Missing {
                    path: path.to_owned(),
                    chunk: short_id(&c.id),
                });
            };
            return Ok(&self.span_bytes[at..at + c.len as usize]);
        }
        let Some(loc) = self.index.locate(&c.id)? else {
            return Err(ReassembleError::Missing {
                path: path.to_owned(),
                chunk: short_id(&c.id),
            });
        };
        self.buf.resize(loc.len as usize, 0);
        self.onboard
            .read(&loc.path, loc.offset, &mut self.buf)
            .map_err(|source| ReassembleError::Reference {
                path: path.to_owned(),
                from: loc.path.clone(),
                source,
            })?;
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
    /// and size. The caller compares them with the manifest (see [`Self::verify_entry`]).
    pub fn stream(
        &mut self,
        entry: &PathEntry,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<([u8; 32], u64), ReassembleError> {
        let hashes = normalize::hash_list(&entry.store_path, &entry.references);
        // Scanned ones were found by [`Self::find_rewrites`] before a NAR is rebuilt.
        let rewrites = normalize::decode(&entry.rewrites, hashes.len(), entry.nar_size)
            .ok_or_else(|| ReassembleError::Rewrites {
                path: entry.store_path.clone(),
            })?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        let mut out = Vec::new();
        for c in &entry.chunks {
            let bytes = self.chunk(&entry.store_path, c)?;
            // Put the real store hashes back.
            out.clear();
            out.extend_from_slice(bytes);
            normalize::apply(&mut out, size, &rewrites, |i| {
                hashes.get(usize::from(i)).copied()
            });
            h.update(&out);
            size += out.len() as u64;
            sink(&out).map_err(|source| ReassembleError::Sink {
                path: entry.store_path.clone(),
                source,
            })?;
        }
        Ok((h.finalize().into(), size))
    }

    /// Where `entry`'s store hashes go: for [`Rewrites::Scan`], found by scanning its
    /// normalized chunks (each checked against its id) for placeholders; one more or one
    /// fewer than its indices and the path is refused.
    pub fn find_rewrites(&mut self, entry: &PathEntry) -> Result<Rewrites, ReassembleError> {
        let Rewrites::Scan(indices) = &entry.rewrites else {
            return Ok(entry.rewrites.clone());
        };
        let mut scan = normalize::PlaceholderScan::new(indices.len());
        for c in &entry.chunks {
            let bytes = self.chunk(&entry.store_path, c)?;
            scan.feed(bytes);
        }
        if scan.found.len() != indices.len() {
            return Err(ReassembleError::Rewrites {
                path: entry.store_path.clone(),
            });
        }
        let found = scan
            .found
            .iter()
            .zip(indices)
            .map(|(&offset, &index)| normalize::Rewrite { offset, index });
        Ok(Rewrites::At(normalize::encode(&found.collect::<Vec<_>>())))
    }

    /// Rebuild `entry`'s NAR without keeping it, check its narSize and, where the entry
    /// carries one, its narHash; returns the narHash (a bundle's are checked together against
    /// its commitment: see [`check_commitment`]).
    pub fn verify_entry(&mut self, entry: &PathEntry) -> Result<[u8; 32], ReassembleError> {
        let (found, size) = self.stream(entry, |_| Ok(()))?;
        if entry.nar_hash.is_some_and(|h| h != found) || size != entry.nar_size {
            return Err(ReassembleError::NarHash {
                path: entry.store_path.clone(),
                found: NarHash(found).to_string(),
                found_size: size,
                expected: entry
                    .nar_hash
                    .map_or("(not given)".to_owned(), |h| NarHash(h).to_string()),
                expected_size: entry.nar_size,
            });
        }
        Ok(found)
    }
}

/// Check the narHashes of all of `manifest`'s paths, in its order, against its commitment.
pub fn check_commitment(manifest: &Manifest, hashes: &[[u8; 32]]) -> Result<(), ReassembleError> {
    let found = nar_commitment(hashes);
    if hashes.len() != manifest.paths.len() || found != manifest.nar_commitment {
        return Err(ReassembleError::Commitment {
            found: payload::short_id(&found),
            expected: payload::short_id(&manifest.nar_commitment),
        });
    }
    Ok(())
}
