//! `ground init`: record that the device holds the closure of some roots.

use std::path::Path;

use crate::index::{index_into, IndexOrStateError, IndexReport};
use crate::nixstore::{NixError, NixStore};
use crate::state::mirror::Mirror;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum GroundInitError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Index(#[from] IndexOrStateError),
}

/// Create a mirror in `dir` saying the device holds the closure of `roots` (as built in
/// `store`, the ground's store), and index those paths.
pub fn init(dir: &Path, store: &NixStore, roots: &[String], progress: bool) -> Result<IndexReport, GroundInitError> {
    let roots = store.resolve_roots(roots)?;
    let closure = store.closure(&roots)?;
    let infos = store.path_infos(Some(&closure))?;
    let mirror = Mirror::create(dir)?;
    Ok(index_into(&mirror.db, store, &infos, false, progress)?)
}
