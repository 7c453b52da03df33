//! The device's status report for the ground: the state digest, where the latest bundle
//! stands, and (while frames arrive) what each unfinished group still needs.

use narlink_protocol::digest::short;
use narlink_protocol::status::{Phase as WirePhase, StatusReport};

use crate::state::device::{DeviceState, Phase, Stage};
use crate::status_view::StatusView;

/// The report for the device's current state, and its encoding sealed for the downlink
/// (each call takes the next downlink counter).
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
                    (Phase::Imported, Some(Stage::Done { activated, .. })) => {
                        if activated {
                            WirePhase::Imported
                        } else {
                            WirePhase::ImportFailed
                        }
                    }
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
    let sealed = state.seal(&bytes)?;
    let view = crate::status_view::decode_report(&sealed).unwrap_or_else(|_| StatusView::of(&r));
    Ok((view, sealed))
}
