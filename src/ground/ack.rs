//! `ground ack`: fold a device status report into the mirror.
//!
//! The report's state digest is compared with the mirror's. If the device reports bundles
//! imported and paths removed, and its digest is the state they lead to, the mirror follows.
//! Any other mismatch means the mirror is stale: it is never trusted silently.

use std::collections::BTreeSet;

use narlink_protocol::bundle::BundleId;
use narlink_protocol::digest::{short, state_digest};
use narlink_protocol::manifest::Manifest;
use narlink_protocol::status::device::Reason;
use narlink_protocol::status::{Phase, StatusError, StatusReport};
use narlink_protocol::storepath::{Lookup, PathSet};
use serde::Serialize;

use super::downlink::{self, DownlinkError};
use crate::state::mirror::{DownlinkKeys, LastReport, Mirror, Standing};
use crate::state::StateError;
use crate::status_view::StatusView;
use narlink_protocol::digest::hex;

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error(transparent)]
    Downlink(#[from] DownlinkError),
    #[error("status report does not decode: {0}")]
    Decode(#[from] StatusError),
    #[error("inventory: {0}")]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("refused: the inventory is of state {inventory}, the report of state {report}: they were not written together, so the inventory cannot say what the device holds now")]
    InventoryMismatch { inventory: String, report: String },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Clone, Debug, Serialize)]
pub struct AckReport {
    /// The mirror now matches the device.
    pub in_step: bool,
    /// The bundles whose paths were folded in.
    pub applied: Vec<String>,
    /// Paths that left the mirror because the device removed them.
    pub removed: usize,
    pub device_digest: String,
    pub mirror_digest: String,
    pub report: StatusView,
    /// The mirror was rebuilt from the device's inventory.
    pub resync: Option<crate::ground::resync::ResyncReport>,
}

/// A status report (and the inventory sent with it) whose seals were checked.
pub struct Checked {
    report: StatusReport,
    /// The report as it came.
    raw: Vec<u8>,
    device: narlink_protocol::seal::DeviceId,
    counter: u32,
    /// The inventory's paths and counter.
    inventory: Option<(Vec<String>, u32)>,
}

impl Checked {
    /// The device's paths per its inventory, if one came.
    pub fn inventory(&self) -> Option<&[String]> {
        self.inventory.as_ref().map(|(p, _)| p.as_slice())
    }
}

/// Check a sealed status report and, if given, the inventory sent with it against the
/// mirror's `keys` (see [`downlink::open`]): the inventory must be newer than the report and
/// of the same state. Reads nothing else and writes nothing: a refusal changes nothing.
pub fn check(
    keys: &DownlinkKeys,
    report_bytes: &[u8],
    inventory: Option<&[u8]>,
) -> Result<Checked, AckError> {
    let bare = |b: &[u8]| StatusReport::decode(b).is_ok();
    let sealed = downlink::open(keys, report_bytes, "status report", false, bare)?;
    let (device, counter) = (sealed.device, sealed.counter);
    let report = StatusReport::decode(sealed.payload)?;
    let inventory = match inventory {
        None => None,
        Some(bytes) => {
            let after_report = DownlinkKeys {
                last: counter,
                ..keys.clone()
            };
            let bare = |b: &[u8]| crate::inventory::decode(b).is_ok();
            let sealed = downlink::open(&after_report, bytes, "inventory", false, bare)?;
            let paths = crate::inventory::decode(sealed.payload)?;
            let digest = short(&state_digest(paths.iter().map(String::as_str)));
            if digest != report.state_digest {
                return Err(AckError::InventoryMismatch {
                    inventory: hex(&digest),
                    report: hex(&report.state_digest),
                });
            }
            Some((paths, sealed.counter))
        }
    };
    Ok(Checked {
        report,
        raw: report_bytes.to_vec(),
        device,
        counter,
        inventory,
    })
}

/// Fold a checked status report into the mirror, in one commit: the bundles it reports
/// imported join the mirror and the paths it reports removed leave it, if and only if the
/// result is the state the device reported; the ground's record of each bundle follows the
/// report; the report, its counter and the device's newest sequence are kept.
pub fn ack(mirror: &Mirror, checked: &Checked) -> Result<AckReport, AckError> {
    let r = &checked.report;
    let paths: BTreeSet<String> = mirror.db.paths()?.into_iter().collect();
    let mut mirror_digest = digest_of(&paths);
    // Bundles whose paths are in the device's store: imported, or imported and then rolled
    // back because the activation failed or reverted after it (the paths stay; the old
    // generation is live).
    let imported: Vec<(BundleId, Manifest)> = mirror
        .pending_all()?
        .into_iter()
        .filter(|(id, _)| {
            matches!(
                r.said_of(id),
                Some(
                    (Phase::Imported, _)
                        | (
                            Phase::ImportFailed,
                            Reason::Activation
                                | Reason::NotConfirmed
                                | Reason::HealthCheck
                                | Reason::FailedStarts
                        )
                )
            )
        })
        .collect();
    // The state the report describes, if the mirror's view is right: its paths, those of
    // the bundles imported, less those removed.
    let mut target = paths.clone();
    for (_, m) in &imported {
        target.extend(m.paths.iter().map(|p| p.store_path.clone()));
    }
    let names = PathSet::new(&target);
    let removed: Vec<String> = r
        .device
        .removed
        .iter()
        .filter_map(|t| match names.lookup(t) {
            Lookup::Unique(p) => Some(p.to_owned()),
            _ => None,
        })
        .collect();
    for p in &removed {
        target.remove(p);
    }
    let target_digest = digest_of(&target);
    let tx = mirror.db.begin_write()?;
    let mut applied = Vec::new();
    let mut removed_applied = 0;
    if target_digest == r.state_digest && target_digest != mirror_digest {
        mirror.fold(&tx, &imported, &removed)?;
        applied = imported.iter().map(|(id, _)| hex(id)).collect();
        removed_applied = paths.iter().filter(|p| !target.contains(*p)).count();
        mirror_digest = target_digest;
    }
    let in_step = r.state_digest == mirror_digest;
    // The newest bundle the device imported: every older one can never import.
    let newest_imported = imported
        .iter()
        .filter(|(id, _)| applied.contains(&hex(id)))
        .map(|(_, m)| m.sequence)
        .max();
    for (id, mut b) in mirror.ground_bundles()? {
        let before = (b.standing, b.reason);
        match r.said_of(&id) {
            Some((Phase::Imported, _)) => b.standing = Standing::Imported,
            Some((Phase::ImportFailed, why)) => {
                (b.standing, b.reason) = (Standing::Failed, why.to_u8())
            }
            // A bundle the ground cancelled stays cancelled when the device says it dropped it.
            Some((Phase::Superseded, _)) if b.standing == Standing::Cancelled => {}
            Some((Phase::Superseded, why)) => {
                (b.standing, b.reason) = (Standing::Superseded, why.to_u8())
            }
            _ => {}
        }
        if newest_imported.is_some_and(|n| b.sequence < n) && b.standing != Standing::Imported {
            b.standing = Standing::Superseded;
            mirror.forget_pending(&tx, &id)?;
        }
        if (b.standing, b.reason) != before {
            mirror.put_ground_bundle(&tx, &id, &b)?;
        }
    }
    // Remember a mismatch: `ground pack` refuses a stale mirror until it is rebuilt.
    mirror.put_stale(&tx, if in_step { None } else { Some(&r.state_digest) })?;
    let counter = checked
        .inventory
        .as_ref()
        .map_or(checked.counter, |(_, n)| *n);
    mirror.put_downlink_counter(&tx, counter)?;
    mirror.raise_sequence(&tx, r.device.sequence)?;
    let received_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mirror.put_last_report(
        &tx,
        &LastReport {
            bytes: checked.raw.clone(),
            received_at,
        },
    )?;
    mirror.db.commit(tx)?;
    let mut report = StatusView::of(r);
    report.device = Some(hex(&checked.device));
    report.counter = Some(checked.counter);
    Ok(AckReport {
        in_step,
        applied,
        removed: removed_applied,
        device_digest: hex(&r.state_digest),
        mirror_digest: hex(&mirror_digest),
        report,
        resync: None,
    })
}

fn digest_of(paths: &BTreeSet<String>) -> [u8; 16] {
    short(&state_digest(paths.iter().map(String::as_str)))
}

impl AckReport {
    pub fn render(&self) -> String {
        let mut s = format!(
            "device reports bundle {} {}",
            self.report.bundle, self.report.phase
        );
        if let Some(rs) = &self.resync {
            s.push_str(&format!(
                "\nmirror rebuilt from the device's inventory: {} paths removed, {} added, {} unknown to the ground store",
                rs.removed.len(),
                rs.added,
                rs.unknown_to_ground.len()
            ));
        }
        for b in &self.applied {
            s.push_str(&format!("\nbundle {b} folded into the mirror"));
        }
        if self.removed > 0 {
            s.push_str(&format!(
                "\n{} paths the device's garbage collection removed left the mirror",
                self.removed
            ));
        }
        if self.in_step {
            s.push_str(&format!(
                "\nmirror in step with the device (state {})",
                self.mirror_digest
            ));
        } else {
            s.push_str(&format!(
                "\nmirror is STALE: the device is in state {}, the mirror believes {}; \
                 do not pack against it: rebuild it with `ground ack --inventory FILE` \
                 (the device writes one with `device status --inventory FILE`)",
                self.device_digest, self.mirror_digest
            ));
        }
        s
    }
}
