//! `ground ack`: fold a device status report into the mirror.
//!
//! The report's state digest is compared with the mirror's. If the device reports a bundle
//! imported and its digest is the state that bundle leads to, the bundle's paths join the
//! mirror. Any other mismatch means the mirror is stale: it is never trusted silently.

use narlink_protocol::digest::{short, state_digest};
use narlink_protocol::status::{Phase, StatusError, StatusReport};
use serde::Serialize;

use crate::state::mirror::Mirror;
use crate::state::StateError;
use crate::status_view::StatusView;
use narlink_protocol::digest::hex;

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("status report does not decode: {0}")]
    Decode(#[from] StatusError),
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

pub fn ack(mirror: &Mirror, bytes: &[u8]) -> Result<AckReport, AckError> {
    let r = StatusReport::decode(bytes)?;
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
    Ok(AckReport {
        in_step,
        applied,
        device_digest: hex(&r.state_digest),
        mirror_digest: hex(&mirror_digest),
        report: StatusView::of(&r),
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
