//! `device init`: record what the device's store holds and index it.

use std::path::Path;

use crate::index::{index_into, IndexReport};
use crate::nixstore::NixStore;
use crate::state::device::DeviceState;

/// What can go wrong: a Nix query, the state database, or reading a path to index it.
pub type DeviceInitError = crate::index::SyncError;

/// Create a device state in `dir` for the store at `store_uri` and index every valid path,
/// checking each against the narHash Nix recorded (damaged paths are left out); `setup` then
/// records what else the state needs (trust, limits) before the state takes its name, so a
/// state that `open` finds is always complete. The device's downlink identity
/// (`state::identity`) is made too, or kept if `dir` has one.
pub fn init(
    dir: &Path,
    store_uri: Option<&str>,
    progress: bool,
    setup: impl FnOnce(&DeviceState) -> Result<(), crate::state::StateError>,
) -> Result<IndexReport, DeviceInitError> {
    let store = NixStore::new(store_uri);
    store.check_exists()?;
    let state = DeviceState::create(dir, store_uri)?;
    let infos = store.path_infos(None)?;
    let report = index_into(&state.db, &store, &infos, true, progress)?;
    setup(&state)?;
    // The downlink identity, kept if the directory already has one (a state made afresh).
    crate::state::identity::ensure_secret(dir)?;
    state.publish()?;
    Ok(report)
}
