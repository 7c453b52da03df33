//! `ground ack`: fold a device status report into the mirror.
//!
//! The report's state digest is compared with the mirror's. If the device reports a bundle
//! imported and its digest is the state that bundle leads to, the bundle's paths join the
//! mirror. Any other mismatch means the mirror is stale: it is never trusted silently.

use narlink_protocol::digest::{short, state_digest};
use narlink_protocol::status::{Phase, StatusError, StatusReport};
use serde::Serialize;

use super::downlink::{self, DownlinkError};
use crate::state::mirror::{DownlinkKeys, Mirror};
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
    /// The bundle whose paths were folded in, if any.
    pub applied: Option<String>,
    pub device_digest: String,
    pub mirror_digest: String,
    pub report: StatusView,
    /// The mirror was rebuilt from the device's inventory.
    pub resync: Option<crate::ground::resync::ResyncReport>,
}

/// A status report (and the inventory sent with it) whose seals were checked.
pub struct Checked {
    report: StatusReport,
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
    report: &[u8],
    inventory: Option<&[u8]>,
) -> Result<Checked, AckError> {
    let bare = |b: &[u8]| StatusReport::decode(b).is_ok();
    let sealed = downlink::open(keys, report, "status report", false, bare)?;
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
        device,
        counter,
        inventory,
    })
}

/// Fold a checked status report into the mirror, and take its counter (and the
/// inventory's).
pub fn ack(mirror: &Mirror, checked: &Checked) -> Result<AckReport, AckError> {
    let r = &checked.report;
    let mut applied = None;
    let paths: std::collections::BTreeSet<String> = mirror.db.paths()?.into_iter().collect();
    let mut mirror_digest = short(&state_digest(paths.iter().map(String::as_str)));
    if r.state_digest != mirror_digest && r.phase == Phase::Imported {
        if let Some(m) = mirror.pending(&r.bundle_id)? {
            // The state the bundle leads to: the mirror's paths and the bundle's.
            let mut target = paths;
            target.extend(m.paths.iter().map(|p| p.store_path.clone()));
            let target = short(&state_digest(target.iter().map(String::as_str)));
            if target == r.state_digest && m.base_digest == mirror_digest {
                mirror.apply(&r.bundle_id, &m)?;
                applied = Some(hex(&r.bundle_id));
                // The mirror now holds exactly the target.
                mirror_digest = target;
            }
        }
    }
    let in_step = r.state_digest == mirror_digest;
    // Remember a mismatch: `ground pack` refuses a stale mirror until it is rebuilt.
    mirror.set_stale(if in_step { None } else { Some(&r.state_digest) })?;
    let counter = checked
        .inventory
        .as_ref()
        .map_or(checked.counter, |(_, n)| *n);
    mirror.set_downlink_counter(counter)?;
    let mut report = StatusView::of(r);
    report.device = Some(hex(&checked.device));
    report.counter = Some(checked.counter);
    Ok(AckReport {
        in_step,
        applied,
        device_digest: hex(&r.state_digest),
        mirror_digest: hex(&mirror_digest),
        report,
        resync: None,
    })
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
        if let Some(b) = &self.applied {
            s.push_str(&format!("\nbundle {b} folded into the mirror"));
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
