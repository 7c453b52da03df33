//! Reading normalized byte ranges of NARs of paths already in a store: the device reads
//! on-board chunks and delta references this way, and the ground reads the same bytes from
//! its own copy of those paths to make the deltas.

use std::collections::HashMap;

use crate::nar::{NarError, NarLayout};
use crate::nixstore::NixStore;
use crate::normalize::{self, Rewrite};
use crate::state::{RecordLookup, StateError};

#[derive(Debug, thiserror::Error)]
pub enum OnBoardError {
    #[error("reading {path}: {source}")]
    Nar { path: String, source: NarError },
    #[error("{0} is not in the index")]
    Unknown(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Paths read recently, with their layout and store-hash positions.
pub struct OnBoard {
    store: NixStore,
    records: RecordLookup,
    cache: HashMap<String, (NarLayout, Vec<Rewrite>)>,
}

const MAX_CACHED: usize = 64;

impl OnBoard {
    pub fn new(store: NixStore, records: RecordLookup) -> OnBoard {
        OnBoard {
            store,
            records,
            cache: HashMap::new(),
        }
    }

    /// The layout of `path`'s NAR (scanned once, then cached).
    pub fn layout(&mut self, path: &str) -> Result<&NarLayout, OnBoardError> {
        self.entry(path).map(|(l, _)| l)
    }

    fn entry(&mut self, path: &str) -> Result<&(NarLayout, Vec<Rewrite>), OnBoardError> {
        if !self.cache.contains_key(path) {
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            let rewrites = self
                .records
                .record(path)?
                .ok_or_else(|| OnBoardError::Unknown(path.to_owned()))?
                .rewrites;
            let layout = NarLayout::scan(&self.store.real_path(path)).map_err(|source| {
                OnBoardError::Nar {
                    path: path.to_owned(),
                    source,
                }
            })?;
            self.cache.insert(path.to_owned(), (layout, rewrites));
        }
        self.cache
            .get(path)
            .ok_or_else(|| OnBoardError::Unknown(path.to_owned()))
    }

    /// The normalized NAR bytes `[offset, offset + len)` of `path`.
    pub fn range(&mut self, path: &str, offset: u64, len: u32) -> Result<Vec<u8>, OnBoardError> {
        let mut v = vec![0u8; len as usize];
        self.read(path, offset, &mut v)?;
        Ok(v)
    }

    /// Fill `buf` with the normalized NAR bytes of `path` at `offset`.
    pub fn read(&mut self, path: &str, offset: u64, buf: &mut [u8]) -> Result<(), OnBoardError> {
        let (layout, rewrites) = self.entry(path)?;
        layout
            .read_at(offset, buf)
            .map_err(|source| OnBoardError::Nar {
                path: path.to_owned(),
                source,
            })?;
        normalize::apply(buf, offset, rewrites, |_| Some(normalize::PLACEHOLDER));
        Ok(())
    }
}
