//! Garbage collection in step: run the device's Nix garbage collection (or follow one the
//! operator ran), then bring the index in line with the store: paths that left the store
//! leave the index, paths that appeared are indexed. The state digest follows.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::index::index_into;
use crate::nixstore::NixStore;
use crate::state::device::DeviceState;

/// What can go wrong: a Nix query, the state database, or reading a path to index it.
pub type GcError = crate::index::SyncError;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Run `nix-store --gc` (else only follow what is already gone).
    pub collect: bool,
    /// The profile whose old generations may go, and how many to keep.
    pub profile: Option<PathBuf>,
    pub keep_generations: u32,
    pub progress: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub nix: String,
    pub removed_from_index: Vec<String>,
    pub added_to_index: usize,
    pub digest_before: String,
    pub digest_after: String,
}

pub fn gc(state: &DeviceState, store: &NixStore, opts: &GcOptions) -> Result<GcReport, GcError> {
    let mut report = GcReport {
        digest_before: narlink_protocol::digest::hex(&state.db.digest()?[..16]),
        ..GcReport::default()
    };
    if opts.collect {
        if let Some(p) = &opts.profile {
            store.delete_old_generations(p, opts.keep_generations)?;
        }
        report.nix = store.collect_garbage()?;
    }
    let infos = store.path_infos(None)?;
    let valid: BTreeSet<&str> = infos.iter().map(|i| i.path.as_str()).collect();
    let tx = state.db.begin_write()?;
    for p in state.db.paths()? {
        if !valid.contains(p.as_str()) && state.db.remove_path(&tx, &p)? {
            report.removed_from_index.push(p);
        }
    }
    // The next reports name them, so the ground's mirror follows without an inventory.
    state.note_removed(&tx, &report.removed_from_index)?;
    state.db.commit(tx)?;
    let indexed = index_into(&state.db, store, &infos, true, opts.progress)?;
    report.added_to_index = indexed.paths;
    report.digest_after = narlink_protocol::digest::hex(&state.db.digest()?[..16]);
    Ok(report)
}
