//! `ground init`: record that the device holds the closure of some roots.

use std::path::Path;

use crate::index::{index_into, IndexReport};
use crate::nixstore::NixStore;
use crate::state::mirror::Mirror;

/// What can go wrong: a Nix query, the state database, or reading a path to index it.
pub type GroundInitError = crate::index::SyncError;

/// Create a mirror in `dir` saying the device holds the closure of `roots` (as built in
/// `store`, the ground's store), and index those paths.
pub fn init(
    dir: &Path,
    store: &NixStore,
    roots: &[String],
    progress: bool,
    device: Option<&narlink_protocol::seal::DeviceSecret>,
) -> Result<IndexReport, GroundInitError> {
    let mirror = Mirror::create(dir)?;
    if let Some(secret) = device {
        mirror.set_device_secret(secret)?;
    }
    let roots = store.resolve_roots(roots)?;
    let closure = store.closure(&roots)?;
    let infos = store.path_infos(Some(&closure))?;
    let report = index_into(&mirror.db, store, &infos, false, progress)?;
    mirror.publish()?;
    Ok(report)
}
