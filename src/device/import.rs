//! Import: rebuild every NAR of a complete bundle, verify all of them, then hand them to
//! Nix in dependency order and fold the new paths into the index.
//!
//! Two passes: the first rebuilds each NAR only to check its narHash (nothing is written);
//! the second streams the same verified chunks into Nix (`nix-store --serve --write`, see
//! [`NixStore::add_nars`]), which checks the narHash again before it registers a path. Memory
//! stays at a few chunks, in narlink and in Nix, and no path is registered before its whole
//! NAR has been verified. If Nix fails midway, the paths this import added are deleted
//! again, so the store is as it was.

use std::collections::HashSet;

use narlink_protocol::bundle::BundleId;
use narlink_protocol::manifest::{Manifest, PathEntry};
use serde::Serialize;

use super::activate::Plan;
use super::reassemble::{check_commitment, ChunkSource, ReassembleError};
use crate::nar::NarHash;
use crate::nixstore::{NarMeta, NixError, NixStore};
use crate::progress::Progress;
use crate::state::device::{BundleRecord, DeviceState, Phase};
use crate::state::{PathRecord, StateError};
use narlink_protocol::digest::hex;
use narlink_protocol::status::device::Reason;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("bundle {bundle} is incomplete: {missing} of {total} payloads are not staged yet (receive the rest first)")]
    Incomplete {
        bundle: String,
        missing: usize,
        total: usize,
    },
    #[error("bundle {bundle} was planned against another device state ({reason}): refusing it; send a status report so the ground can re-plan")]
    StaleBase { bundle: String, reason: String },
    #[error("bundle {bundle}: {path} references {reference}, which is neither on board nor earlier in the bundle")]
    Order {
        bundle: String,
        path: String,
        reference: String,
    },
    #[error("bundle {bundle}: {source}")]
    Verify {
        bundle: String,
        source: ReassembleError,
    },
    #[error("bundle {bundle}: nix-store --import failed, the paths it had added were removed again: {source}")]
    Nix { bundle: String, source: NixError },
    #[error("bundle {bundle} is sequence {sequence}, not newer than the last imported bundle ({last}): an old bundle replayed, refused")]
    Replay {
        bundle: String,
        sequence: u64,
        last: u64,
    },
    #[error(transparent)]
    NixQuery(#[from] NixError),
    #[error(transparent)]
    Landing(#[from] super::activate::ActivateError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl ImportError {
    /// The reason code a status report gives for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            ImportError::Incomplete { .. } => Reason::None,
            ImportError::StaleBase { .. } | ImportError::Order { .. } => Reason::StaleBase,
            ImportError::Verify { .. } => Reason::Verify,
            ImportError::Nix { .. } => Reason::Nix,
            ImportError::Replay { .. } => Reason::Replayed,
            ImportError::NixQuery(_) | ImportError::Landing(_) | ImportError::State(_) => {
                Reason::Other
            }
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BundleImport {
    pub bundle: String,
    /// Every path of the bundle is now in the store (else: a partial import).
    pub complete: bool,
    pub paths_imported: usize,
    pub paths_already_valid: usize,
    pub nar_bytes: u64,
    pub roots: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub bundles: Vec<BundleImport>,
    /// Bundles refused, with the reason (the others were still imported).
    pub refused: Vec<String>,
}

/// Import every staged bundle that has not been imported yet, in arrival order.
///
/// With `partial`, a bundle still being received has every path imported whose chunks are all
/// here and whose narHash its manifest gives (a prefix of the bundle's dependency order; small
/// bundles give none and wait for their NAR commitment), as soon as they are; without it, an
/// incomplete bundle is refused and the store is left untouched.
///
/// With a `plan`, the import of a complete bundle journals the landing of its first root in
/// the same commit (see [`super::activate`]); call [`super::activate::land`] after.
pub fn import_all(
    state: &DeviceState,
    store: &NixStore,
    progress: bool,
    partial: bool,
    plan: Option<&Plan>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut first_error = None;
    for (id, rec) in state.bundles()? {
        if matches!(rec.phase, Phase::Imported | Phase::Superseded) {
            continue;
        }
        // A bundle older than the last one imported can never apply: it was superseded.
        if rec.phase == Phase::Failed && rec.manifest()?.sequence <= state.last_sequence()? {
            continue;
        }
        match import_bundle(state, store, &id, &rec, progress, partial, plan) {
            Ok(r) if r.paths_imported == 0 && !r.complete => {}
            Ok(r) => report.bundles.push(r),
            Err(e) => {
                // Remember why, for `device status` and the operator; the staged data stays.
                if !matches!(e, ImportError::Incomplete { .. }) {
                    let tx = state.db.begin_write()?;
                    state.put_bundle(
                        &tx,
                        &id,
                        &BundleRecord {
                            phase: Phase::Failed,
                            note: e.to_string(),
                            reason: e.reason().to_u8(),
                            ..rec
                        },
                    )?;
                    state.db.commit(tx)?;
                }
                report.refused.push(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    // One bundle failing does not hold back the others; but if nothing could be imported,
    // that is an error.
    match first_error {
        Some(e) if report.bundles.is_empty() => Err(e),
        _ => Ok(report),
    }
}

fn import_bundle(
    state: &DeviceState,
    store: &NixStore,
    id: &BundleId,
    rec: &BundleRecord,
    progress: bool,
    partial: bool,
    plan: Option<&Plan>,
) -> Result<BundleImport, ImportError> {
    let bundle = hex(id);
    let mut manifest = rec.manifest()?;
    // Chunk runs the ground abbreviated as copies come from this device's own index.
    for i in 0..manifest.paths.len() {
        let full = manifest.paths[i]
            .expand(&manifest.sources, |src| {
                state.db.record(src).ok().flatten().map(|r| r.chunks)
            })
            .map_err(|e| ImportError::StaleBase {
                bundle: bundle.clone(),
                reason: e.to_string(),
            })?;
        manifest.paths[i].chunks = full;
        manifest.paths[i].copies.clear();
    }
    let staged = state.staged_set(manifest.payloads.iter().map(|p| p.chunk))?;
    let missing = staged.iter().filter(|s| !**s).count();
    let complete = missing == 0;
    if !complete && !partial {
        return Err(ImportError::Incomplete {
            bundle,
            missing,
            total: manifest.payloads.len(),
        });
    }
    check_base(state, &manifest, &bundle)?;
    let last = state.last_sequence()?;
    if manifest.sequence <= last {
        return Err(ImportError::Replay {
            bundle,
            sequence: manifest.sequence,
            last,
        });
    }

    let mut source = ChunkSource::new(state, store)?;
    // Everything, or the prefix of paths whose chunks are all here and whose narHash the
    // manifest gives (the others wait for the NAR commitment, checked once all are here).
    let mut ready = manifest.paths.len();
    if !complete {
        ready = 0;
        'paths: for p in &manifest.paths {
            if p.nar_hash.is_none() {
                break;
            }
            for c in &p.chunks {
                if !source.available(&c.id)? {
                    break 'paths;
                }
            }
            ready += 1;
        }
    }
    let names: Vec<String> = manifest.paths[..ready]
        .iter()
        .map(|p| p.store_path.clone())
        .collect();
    let valid_before = store.valid_paths(&names)?;
    // Pass 1 rebuilds every NAR before anything touches the store, each chunk checked against
    // its id, and takes its narHash; for a complete bundle, it checks them all against the
    // manifest's commitment. There, paths the store already holds (an import cut short, a
    // partial import, or brought by other means) are rebuilt too: the commitment is over what
    // the bundle produces. A partial import skips them (each call would rebuild them again).
    let skip = |p: &PathEntry| !complete && valid_before.contains(&p.store_path);
    // Where the device finds the store hashes itself, it finds them first (the index keeps
    // them).
    for entry in manifest.paths[..ready].iter_mut().filter(|p| !skip(p)) {
        entry.rewrites = source
            .find_rewrites(entry)
            .map_err(|source| ImportError::Verify {
                bundle: bundle.clone(),
                source,
            })?;
    }
    let ready = &manifest.paths[..ready];
    let verify_bytes: u64 = ready.iter().filter(|p| !skip(p)).map(|p| p.nar_size).sum();
    let mut bar = Progress::new("verify", verify_bytes, progress);
    let mut done = 0;
    let mut hashes: Vec<Option<[u8; 32]>> = Vec::with_capacity(ready.len());
    for entry in ready {
        if skip(entry) {
            hashes.push(None);
            continue;
        }
        let hash = source
            .verify_entry(entry)
            .map_err(|source| ImportError::Verify {
                bundle: bundle.clone(),
                source,
            })?;
        hashes.push(Some(hash));
        done += entry.nar_size;
        bar.update(done, String::new);
    }
    bar.finish();
    if complete {
        let all: Vec<[u8; 32]> = hashes.iter().flatten().copied().collect();
        check_commitment(&manifest, &all).map_err(|source| ImportError::Verify {
            bundle: bundle.clone(),
            source,
        })?;
    }
    let todo: Vec<(&PathEntry, [u8; 32])> = ready
        .iter()
        .zip(&hashes)
        .filter(|(p, _)| !valid_before.contains(&p.store_path))
        .filter_map(|(p, h)| Some((p, (*h)?)))
        .collect();
    let nar_bytes: u64 = todo.iter().map(|(p, _)| p.nar_size).sum();

    // Pass 2: stream the verified chunks into Nix, in dependency order.
    if !todo.is_empty() {
        let mut failure: Option<ReassembleError> = None;
        let mut bar = Progress::new("import", nar_bytes, progress);
        let mut done = 0;
        let result = store.add_nars(|nix| {
            for &(entry, hash) in &todo {
                let meta = NarMeta {
                    path: &entry.store_path,
                    nar_hash: NarHash(hash),
                    nar_size: entry.nar_size,
                    references: &entry.references,
                    deriver: entry.deriver.as_deref(),
                };
                nix.add(&meta, |w| {
                    if let Err(e) = source.stream(entry, |b| w.write_all(b)) {
                        // Stop mid-NAR: Nix registers nothing it has not read completely.
                        let msg = e.to_string();
                        failure = Some(e);
                        return Err(std::io::Error::other(msg));
                    }
                    Ok(())
                })?;
                done += entry.nar_size;
                bar.update(done, String::new);
            }
            Ok(())
        });
        bar.finish();
        if let Err(err) = result {
            // The paths Nix added, and what it had restored of the one it was reading.
            let added: Vec<String> = todo.iter().map(|(p, _)| p.store_path.clone()).collect();
            let _ = store.delete(&added);
            // Our side failed to rebuild a NAR, unless all it saw was Nix going away (a full
            // disk, say): then Nix's own error says what happened.
            if let Some(source) = failure.filter(|f| !matches!(f, ReassembleError::Sink { .. })) {
                return Err(ImportError::Verify { bundle, source });
            }
            return Err(ImportError::Nix {
                bundle,
                source: err,
            });
        }
    }

    // Fold into the index; once complete, drop the staged chunks and mark the bundle
    // imported: one transaction.
    let tx = state.db.begin_write()?;
    // (A path skipped above went into the index when it was imported, or goes in once the
    // bundle is complete.)
    for (p, hash) in ready.iter().zip(&hashes) {
        let Some(hash) = hash else { continue };
        if !state.db.has_path(&p.store_path)? {
            state
                .db
                .add_path(&tx, &p.store_path, &PathRecord::of(p, *hash))?;
        }
    }
    if complete {
        if let (Some(plan), Some(root)) = (plan, manifest.roots.first()) {
            super::activate::begin(state, store, &tx, id, root, plan)?;
        }
        state.note_sequence(&tx, manifest.sequence)?;
        // The ground planned this bundle against the device's state (`check_base`), so it
        // knows every removal before it.
        state.clear_removed(&tx)?;
        for p in &manifest.payloads {
            state.unstage(&tx, &p.chunk)?;
        }
        state.put_bundle(
            &tx,
            id,
            &BundleRecord {
                phase: Phase::Imported,
                note: String::new(),
                reason: 0,
                ..rec.clone()
            },
        )?;
    }
    state.db.commit(tx)?;
    if complete {
        state.save_mark(manifest.sequence)?;
    }

    Ok(BundleImport {
        complete,
        bundle: hex(id),
        paths_imported: todo.len(),
        paths_already_valid: valid_before.len(),
        nar_bytes,
        roots: manifest.roots.clone(),
    })
}

/// The bundle must have been planned against this device's state, and every reference
/// must be on board or earlier in the bundle.
fn check_base(state: &DeviceState, m: &Manifest, bundle: &str) -> Result<(), ImportError> {
    let lacking = lacking_references(state, m)?;
    // The device's paths, less those this bundle brings (some may be imported already, by a
    // partial or an interrupted import), must be the state the ground planned against.
    let ours: HashSet<&str> = m.paths.iter().map(|p| p.store_path.as_str()).collect();
    let paths = state.db.paths()?;
    let digest = narlink_protocol::digest::state_digest(
        paths
            .iter()
            .map(String::as_str)
            .filter(|p| !ours.contains(p)),
    );
    if narlink_protocol::digest::short(&digest) != m.base_digest {
        let mut names: Vec<&str> = lacking.iter().map(|(_, r)| r.as_str()).collect();
        names.sort();
        names.dedup();
        let reason = if names.is_empty() {
            "state digest differs".to_owned()
        } else {
            format!("the device lacks base paths {}", names.join(", "))
        };
        return Err(ImportError::StaleBase {
            bundle: bundle.to_owned(),
            reason,
        });
    }
    if let Some((path, reference)) = lacking.into_iter().next() {
        return Err(ImportError::Order {
            bundle: bundle.to_owned(),
            path,
            reference,
        });
    }
    Ok(())
}

/// (path, reference) pairs whose reference is neither on board nor earlier in the bundle.
fn lacking_references(
    state: &DeviceState,
    m: &Manifest,
) -> Result<Vec<(String, String)>, StateError> {
    let mut lacking = Vec::new();
    let mut earlier: HashSet<&str> = HashSet::new();
    for p in &m.paths {
        for r in &p.references {
            if r != &p.store_path && !earlier.contains(r.as_str()) && !state.db.has_path(r)? {
                lacking.push((p.store_path.clone(), r.clone()));
            }
        }
        earlier.insert(&p.store_path);
    }
    Ok(lacking)
}
