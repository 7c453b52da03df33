//! The device's status report for the ground: the state digest, where the latest bundle
//! stands, what each unfinished group still needs (while frames arrive), and the device
//! section: what is live, how the last activation went, the newest sequence taken, the other
//! bundles and refusals, and the paths garbage collection removed (protocol/SPEC.md, "Status
//! report").

use narlink_protocol::bundle::BundleId;
use narlink_protocol::digest::short;
use narlink_protocol::status::device::{path_tag, Activation, BundleNote, Live, Reason};
use narlink_protocol::status::{Phase as WirePhase, StatusReport};

use super::probation::TrialNote;
use crate::nixstore::NixStore;
use crate::state::device::{BundleRecord, DeviceState, Phase, RemovedLog, Stage};
use crate::state::StateError;
use crate::status_view::StatusView;

/// How much of the device section a report carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Every pass: at most [`REGULAR_NOTES`] other bundles and [`REGULAR_REMOVED`] removed
    /// paths; the report says when some were left out.
    Regular,
    /// Now and then, or when asked: every bundle and refusal the device remembers (at most
    /// [`FULL_NOTES`]) and every removed path in its log.
    Full,
}

/// Other bundles a regular report notes (6 bytes each).
pub const REGULAR_NOTES: usize = 4;
/// Removed paths a regular report names (5 bytes each).
pub const REGULAR_REMOVED: usize = 64;
/// Other bundles a full report notes.
pub const FULL_NOTES: usize = 255;

/// The report for the device's current state, and its encoding sealed for the downlink
/// (each call takes the next downlink counter).
pub fn report(
    state: &DeviceState,
    detail: Detail,
) -> Result<(StatusView, Vec<u8>), super::link::LinkError> {
    let digest = short(&state.db.digest()?);
    let bundles = state.bundles()?;
    let landing = Landed {
        landing: state.landing()?,
        trial: super::probation::report_note(state.db.dir())?,
    };
    let mut r = match super::link::status_report(state)? {
        Some(receiving) => receiving,
        None => match bundles.last() {
            None => StatusReport::empty([0; 16], digest, WirePhase::Idle),
            Some((id, rec)) => {
                let mut r = StatusReport::empty(*id, digest, wire_phase(id, rec, &landing));
                r.device.reason = reason(id, rec, &landing);
                r
            }
        },
    };
    let unfinished = r.listed_groups();
    fill_section(state, &bundles, &landing, &mut r, detail)?;
    r.truncate_to(r.budget_with_lists(unfinished));
    let mut bytes = Vec::new();
    r.encode(&mut bytes);
    let sealed = state.seal(&bytes)?;
    let view = crate::status_view::decode_report(&sealed).unwrap_or_else(|_| StatusView::of(&r));
    Ok((view, sealed))
}

/// How the last landing went: its journal, and the trial of the generation it made.
struct Landed {
    landing: Option<crate::state::device::Landing>,
    trial: Option<TrialNote>,
}

impl Landed {
    /// Why bundle `id`'s generation was reverted, if it was.
    fn reverted(&self, id: &BundleId) -> Option<Reason> {
        let block = self.trial.as_ref()?.block.as_ref()?;
        (block.bundle_prefix == prefix(id) && block.reason != Reason::None).then_some(block.reason)
    }
}

/// A bundle's phase as the report gives it: "imported" only once its landing (switch and
/// activation) is done and passed, "failed" once its generation was reverted.
fn wire_phase(id: &BundleId, rec: &BundleRecord, landed: &Landed) -> WirePhase {
    if rec.phase == Phase::Imported && landed.reverted(id).is_some() {
        return WirePhase::ImportFailed;
    }
    let stage = landed
        .landing
        .as_ref()
        .filter(|l| l.bundle == *id)
        .map(|l| &l.stage);
    match (rec.phase, stage) {
        (Phase::Receiving, _) => WirePhase::Receiving,
        (Phase::Complete, _) => WirePhase::Decoded,
        (Phase::Imported, None) => WirePhase::Imported,
        (Phase::Imported, Some(Stage::Done { activated, .. })) => {
            if *activated {
                WirePhase::Imported
            } else {
                WirePhase::ImportFailed
            }
        }
        // In the store, but the profile is not switched and activated yet: the report never
        // says "imported" before that is durable.
        (Phase::Imported, Some(_)) => WirePhase::Decoded,
        (Phase::Failed, _) => WirePhase::ImportFailed,
        (Phase::Superseded, _) => WirePhase::Superseded,
    }
}

fn reason(id: &BundleId, rec: &BundleRecord, landed: &Landed) -> Reason {
    if let Some(why) = landed.reverted(id) {
        return why;
    }
    match wire_phase(id, rec, landed) {
        WirePhase::ImportFailed if rec.phase == Phase::Imported => Reason::Activation,
        _ => Reason::from_u8(rec.reason),
    }
}

fn fill_section(
    state: &DeviceState,
    bundles: &[(BundleId, BundleRecord)],
    landed: &Landed,
    r: &mut StatusReport,
    detail: Detail,
) -> Result<(), StateError> {
    let store = NixStore::new(state.store_uri()?.as_deref());
    let profile = landed
        .landing
        .as_ref()
        .map_or_else(|| store.default_profile(), |l| l.profile.clone());
    let d = &mut r.device;
    d.live = store.live(&profile).and_then(|(generation, root)| {
        Some(Live {
            generation,
            root: path_tag(&root)?,
        })
    });
    d.activation = match landed.landing.as_ref().map(|l| &l.stage) {
        None => Activation::None,
        Some(Stage::Done {
            activated: true, ..
        }) => Activation::Passed,
        Some(Stage::Done { .. }) => Activation::RolledBack,
        Some(_) => Activation::Landing,
    };
    // The trial of the generation the last landing made (an older trial says nothing now).
    let landed_bundle = landed.landing.as_ref().map(|l| prefix(&l.bundle));
    if d.activation == Activation::Passed {
        if let Some(note) = landed
            .trial
            .as_ref()
            .filter(|n| Some(n.bundle_prefix) == landed_bundle)
        {
            d.activation = note.activation;
            d.probation = note.block.clone();
        }
    }
    // What a new bundle's sequence must exceed (`receive::check_sequence`): the replay mark
    // and the bundles not settled. Only their manifests are decoded: reports are frequent.
    d.sequence = state.last_sequence()?;
    for (_, rec) in bundles {
        if matches!(
            rec.phase,
            Phase::Receiving | Phase::Complete | Phase::Failed
        ) {
            d.sequence = d.sequence.max(rec.manifest()?.sequence);
        }
    }
    // Other bundles and refusals, newest first.
    let mut notes: Vec<(u64, BundleNote)> = bundles
        .iter()
        .filter(|(id, _)| *id != r.bundle_id)
        .map(|(id, rec)| {
            let note = BundleNote {
                id_prefix: prefix(id),
                phase: wire_phase(id, rec, landed),
                reason: reason(id, rec, landed),
            };
            (rec.seq, note)
        })
        .collect();
    for (id, refusal) in state.refusals()? {
        if id != r.bundle_id {
            let note = BundleNote {
                id_prefix: prefix(&id),
                phase: WirePhase::ImportFailed,
                reason: Reason::from_u8(refusal.code),
            };
            notes.push((refusal.seq, note));
        }
    }
    notes.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    // Removed paths the device still lacks (one imported again is not gone).
    let log = state.removed_log()?;
    let mut removed = Vec::new();
    for p in &log.paths {
        if !state.db.has_path(p)? {
            removed.extend(path_tag(p));
        }
    }
    removed.sort();
    removed.dedup();
    let (max_notes, max_removed) = match detail {
        Detail::Regular => (REGULAR_NOTES, REGULAR_REMOVED),
        Detail::Full => (FULL_NOTES, RemovedLog::MAX),
    };
    r.lists_cut = notes.len() > max_notes || removed.len() > max_removed;
    r.removals_lost = log.lost;
    notes.truncate(max_notes);
    removed.truncate(max_removed);
    let d = &mut r.device;
    d.others = notes.into_iter().map(|(_, n)| n).collect();
    d.removed = removed;
    Ok(())
}

fn prefix(id: &BundleId) -> [u8; 4] {
    [id[0], id[1], id[2], id[3]]
}
