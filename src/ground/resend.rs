//! `ground resend`: the frames a status report says the bundle in flight still needs.
//!
//! A report that names no bundle in flight (the device has not heard of the one the ground
//! is sending: its announcement and head were lost, or it still reports one the ground
//! superseded or cancelled) gets the in-flight bundle's announcement alone, so that the next
//! report names it and says what it needs. A report that still names a bundle cancelled with
//! a key gets its withdrawal again.

use std::io;

use narlink_protocol::bundle::BundleId;
use narlink_protocol::digest::hex;
use narlink_protocol::schedule::ResendError;
use narlink_protocol::status::{Phase, StatusReport};
use serde::Serialize;

use super::bundles::{check_sendable, BundleError};
use super::confirm::Due;
use super::link::{EmitReport, FrameSource, LinkError};
use crate::state::mirror::{Mirror, Standing};
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ResendFailure {
    #[error("the mirror has no bundle {0} to resend: it was not packed here")]
    NotPacked(String),
    #[error("the report names bundle {named}, and bundle {in_flight} (in flight) carries no announcement (its frames are too small for one): send its first pass again")]
    Unannounced { named: String, in_flight: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Schedule(#[from] ResendError),
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Clone, Debug, Serialize)]
pub struct ResendReport {
    /// The bundle whose frames were sent.
    pub bundle: String,
    #[serde(flatten)]
    pub emitted: EmitReport,
    /// The report named another bundle: only this one's announcement was sent.
    pub announced_only: bool,
    /// The confirmation of the generation on probation the report called for, sent first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Due>,
}

/// Emit into `sink` the confirmation `report` calls for (`confirmation`, if any), then what
/// it says is missing (at most `budget` bytes of frames, each group's share sized for at
/// most `max_loss_ppm` of loss), and remember what was sent. A report of a settled bundle
/// with nothing in flight is answered by its confirmation alone, if it calls for one.
pub fn resend(
    mirror: &Mirror,
    report: &StatusReport,
    confirmation: Option<Due>,
    budget: Option<u64>,
    max_loss_ppm: u32,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<ResendReport, ResendFailure> {
    if let Some(c) = &confirmation {
        sink(&c.frame).map_err(LinkError::Sink)?;
    }
    match missing(mirror, report, budget, max_loss_ppm, sink) {
        Ok(r) => Ok(ResendReport { confirmation, ..r }),
        Err(ResendFailure::Bundle(BundleError::Settled { .. })) if confirmation.is_some() => {
            Ok(ResendReport {
                bundle: hex(&report.bundle_id),
                emitted: EmitReport::default(),
                announced_only: false,
                confirmation,
            })
        }
        Err(e) => Err(e),
    }
}

fn missing(
    mirror: &Mirror,
    report: &StatusReport,
    budget: Option<u64>,
    max_loss_ppm: u32,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<ResendReport, ResendFailure> {
    let id = report.bundle_id;
    // A cancelled bundle the device still reports: its withdrawal again.
    if let Some(frame) = mirror.withdrawal(&id)? {
        if matches!(report.phase, Phase::Receiving | Phase::Decoded) {
            return send_one(&id, &frame, sink);
        }
    }
    let named = check_sendable(mirror, &id);
    let sendable = named.is_ok() && mirror.send_record(&id)?.is_some();
    if !sendable {
        if let Some(other) = newest_in_flight(mirror)?.filter(|b| *b != id) {
            return announce(mirror, &id, &other, sink);
        }
    }
    named?;
    let rec = mirror
        .send_record(&id)?
        .ok_or_else(|| ResendFailure::NotPacked(hex(&id)))?;
    let mut source = FrameSource::open(&rec.bundle_path, rec.options, Some(rec.sent))?;
    if let Some(frame) = mirror.announcement(&id)? {
        source.set_announcement(frame);
    }
    source.sender.set_max_loss(max_loss_ppm);
    let pass = source.sender.resend(report)?;
    let emitted = source.emit(pass, budget, sink)?;
    mirror.put_send(&id, &source.record(rec.options))?;
    Ok(ResendReport {
        bundle: hex(&id),
        emitted,
        announced_only: false,
        confirmation: None,
    })
}

fn newest_in_flight(mirror: &Mirror) -> Result<Option<BundleId>, StateError> {
    Ok(mirror
        .ground_bundles()?
        .into_iter()
        .rev()
        .find(|(_, b)| b.standing == Standing::InFlight)
        .map(|(id, _)| id))
}

fn announce(
    mirror: &Mirror,
    named: &BundleId,
    in_flight: &BundleId,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<ResendReport, ResendFailure> {
    let Some(frame) = mirror.announcement(in_flight)? else {
        return Err(ResendFailure::Unannounced {
            named: hex(named),
            in_flight: hex(in_flight),
        });
    };
    send_one(in_flight, &frame, sink)
}

/// One announcement or withdrawal frame of bundle `id`, alone.
fn send_one(
    id: &BundleId,
    frame: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<ResendReport, ResendFailure> {
    sink(frame).map_err(LinkError::Sink)?;
    Ok(ResendReport {
        bundle: hex(id),
        emitted: EmitReport {
            frames: 1,
            bytes: frame.len() as u64,
            announcements: 1,
            ..EmitReport::default()
        },
        announced_only: true,
        confirmation: None,
    })
}
