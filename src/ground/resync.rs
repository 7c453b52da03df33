//! Rebuild a stale mirror from the device's inventory: paths the device no longer holds
//! leave the mirror; paths it holds that the mirror lacks join it, indexed from the ground's
//! store when the ground has them (else they count for the digest but offer no chunks).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::index::index_into;
use crate::nixstore::NixStore;
use crate::state::mirror::Mirror;
use crate::state::PathRecord;

/// What can go wrong: a Nix query, the state database, or reading a path to index it.
pub type ResyncError = crate::index::SyncError;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ResyncReport {
    pub removed: Vec<String>,
    pub added: usize,
    /// Paths on the device the ground's store does not have: no chunks can be reused from them.
    pub unknown_to_ground: Vec<String>,
    pub digest: String,
}

pub fn resync(
    mirror: &Mirror,
    store: &NixStore,
    device_paths: &[String],
    progress: bool,
) -> Result<ResyncReport, ResyncError> {
    let mut report = ResyncReport::default();
    let device: BTreeSet<&str> = device_paths.iter().map(String::as_str).collect();
    let tx = mirror.db.begin_write()?;
    for p in mirror.db.paths()? {
        if !device.contains(p.as_str()) && mirror.db.remove_path(&tx, &p)? {
            report.removed.push(p);
        }
    }
    mirror.clear_pending(&tx)?;
    mirror.db.commit(tx)?;
    let missing: Vec<String> = device_paths
        .iter()
        .filter(|p| !mirror.db.has_path(p).unwrap_or(false))
        .cloned()
        .collect();
    let known = store.valid_paths(&missing)?;
    let (have, unknown): (Vec<String>, Vec<String>) =
        missing.into_iter().partition(|p| known.contains(p));
    let infos = store.path_infos(Some(&have))?;
    report.added = index_into(&mirror.db, store, &infos, false, progress)?.paths;
    let tx = mirror.db.begin_write()?;
    let empty = PathRecord {
        nar_hash: [0; 32],
        nar_size: 0,
        references: Vec::new(),
        deriver: None,
        chunks: Vec::new(),
        rewrites: Vec::new(),
    };
    for p in &unknown {
        mirror.db.add_path(&tx, p, &empty)?;
    }
    mirror.db.commit(tx)?;
    report.unknown_to_ground = unknown;
    report.digest = narlink_protocol::digest::hex(&mirror.db.digest()?[..16]);
    mirror.set_stale(None)?;
    Ok(report)
}
