//! The device's status report for the ground: the state digest, where the latest bundle
//! stands, and (while frames arrive) what each unfinished group still needs.

use narlink_protocol::digest::short;
use narlink_protocol::status::{Phase as WirePhase, StatusReport, MAGIC};
use serde::Serialize;

use crate::state::device::{DeviceState, Phase, Stage};
use narlink_protocol::digest::hex;

/// A status report as people and scripts read it.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub bundle: String,
    pub phase: String,
    pub state_digest: String,
    /// (group, shards still needed) for the listed unfinished groups.
    pub needs: Vec<(u32, u16)>,
    pub truncated: bool,
}

impl StatusView {
    pub fn of(r: &StatusReport) -> StatusView {
        StatusView {
            bundle: hex(&r.bundle_id),
            phase: phase_name(r.phase),
            state_digest: hex(&r.state_digest),
            needs: r.needs().collect(),
            truncated: r.is_truncated(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "status: bundle {} {}, state {}, {} unfinished groups listed",
            self.bundle,
            self.phase,
            self.state_digest,
            self.needs.len()
        )
    }

    pub fn render(&self) -> String {
        let mut s = self.summary();
        for (g, n) in self.needs.iter().take(50) {
            s.push_str(&format!("\n  group {g}: {n} shards needed"));
        }
        if self.needs.len() > 50 {
            s.push_str(&format!("\n  ... {} more", self.needs.len() - 50));
        }
        s
    }
}

pub fn phase_name(p: WirePhase) -> String {
    match p {
        WirePhase::Idle => "idle".into(),
        WirePhase::Receiving => "receiving".into(),
        WirePhase::Decoded => "ready to import".into(),
        WirePhase::Imported => "imported".into(),
        WirePhase::ImportFailed => "import failed".into(),
        WirePhase::Unknown(n) => format!("unknown phase {n}"),
    }
}

/// The report for the device's current state, and its encoding.
pub fn report(state: &DeviceState) -> Result<(StatusView, Vec<u8>), super::link::LinkError> {
    let digest = short(&state.db.digest()?);
    let r = match super::link::status_report(state)? {
        Some(receiving) => receiving,
        None => match state.bundles()?.pop() {
            None => StatusReport::empty([0; 16], digest, WirePhase::Idle),
            Some((id, rec)) => {
                let landing = state.landing()?.filter(|l| l.bundle == id);
                let phase = match (rec.phase, landing.map(|l| l.stage)) {
                    (Phase::Receiving, _) => WirePhase::Receiving,
                    (Phase::Complete, _) => WirePhase::Decoded,
                    // Imported, and its landing finished: activated, or rolled back.
                    (Phase::Imported, None) => WirePhase::Imported,
                    (
                        Phase::Imported,
                        Some(Stage::Done {
                            activated: true, ..
                        }),
                    ) => WirePhase::Imported,
                    (Phase::Imported, Some(Stage::Done { .. })) => WirePhase::ImportFailed,
                    // In the store, but the profile is not switched and activated yet: the
                    // report never says "imported" before that is durable.
                    (Phase::Imported, Some(_)) => WirePhase::Decoded,
                    (Phase::Failed | Phase::Superseded, _) => WirePhase::ImportFailed,
                };
                StatusReport::empty(id, digest, phase)
            }
        },
    };
    let mut bytes = Vec::new();
    r.encode(&mut bytes);
    Ok((StatusView::of(&r), bytes))
}

pub fn is_report_magic(b: &[u8]) -> bool {
    b.starts_with(&MAGIC)
}

pub fn decode_report(bytes: &[u8]) -> Result<StatusView, String> {
    StatusReport::decode(bytes)
        .map(|r| StatusView::of(&r))
        .map_err(|e| e.to_string())
}
