//! Receive a bundle byte stream: check the manifest, then verify and stage every payload.
//!
//! A payload that fails verification is dropped (it is missing, not fatal): the bundle stays
//! `Receiving` and import refuses it, naming what is missing. Nothing staged is ever lost.

use std::io::{self, Read};

use narlink_protocol::bundle::BundleId;
use narlink_protocol::manifest::{resolve_in, Encoding, Manifest, Payload, Reference};
use narlink_protocol::status::device::Reason;
use narlink_protocol::storepath::PathSet;
use serde::Serialize;

use crate::head::{read_head, BundleHead, HeadError};
use crate::nixstore::NixStore;
use crate::onboard::OnBoard;
use crate::payload::{self, PayloadError};
use crate::state::device::{BundleRecord, DeviceState, Phase, Source};
use crate::state::{StateError, Tx};
use narlink_protocol::digest::hex;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("bundle ends early: {0}")]
    Truncated(io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing the bundle: it is sequence {sequence}, not newer than the last imported bundle ({last}): an old bundle replayed")]
    Replay { sequence: u64, last: u64 },
    #[error("refusing the bundle: its manifest is sequence {sequence}, but it was announced as sequence {announced}")]
    Announced { announced: u64, sequence: u64 },
    #[error("refusing the bundle: it is sequence {sequence}, superseded by bundle {newer} (sequence {newer_sequence}), which this device holds or a trusted key announced")]
    Superseded {
        sequence: u64,
        newer: String,
        newer_sequence: u64,
    },
}

impl ReceiveError {
    /// The reason code a status report gives for this refusal.
    pub fn reason(&self) -> Reason {
        match self {
            ReceiveError::Head(e) => e.reason(),
            ReceiveError::Replay { .. } => Reason::Replayed,
            ReceiveError::Superseded { .. } => Reason::Superseded,
            ReceiveError::Announced { .. } | ReceiveError::Truncated(_) => Reason::Malformed,
            ReceiveError::State(_) => Reason::Other,
        }
    }

    /// Whether the bundle's own signed content (or lack of it) is the reason: see
    /// [`HeadError::binds_id`].
    pub fn binds_id(&self) -> bool {
        match self {
            ReceiveError::Head(e) => e.binds_id(),
            ReceiveError::Replay { .. }
            | ReceiveError::Superseded { .. }
            | ReceiveError::Announced { .. } => true,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ReceiveReport {
    pub bundle: String,
    pub paths: usize,
    pub payloads: usize,
    pub staged: usize,
    pub already_staged: usize,
    /// Payloads that failed verification and were dropped, with the reason.
    pub rejected: Vec<String>,
    pub complete: bool,
}

/// The device's paths, to resolve the on-board paths a manifest names.
pub fn device_names(state: &DeviceState) -> Result<PathSet, StateError> {
    Ok(PathSet::new(state.db.paths()?))
}

/// Read a bundle's head as this device takes it: checked against its id, then its
/// signatures against the device's trust (before the manifest is decompressed), then the
/// manifest decoded against the device's paths. The sequence is [`check_sequence`]'s.
pub fn read_trusted_head(
    state: &DeviceState,
    r: &mut impl Read,
) -> Result<BundleHead, ReceiveError> {
    let raw = read_head(r, Some(state.db.dir()))?;
    let (trusted, allow_unsigned) = state.trust()?;
    if raw.check_signatures(&trusted, allow_unsigned)? {
        eprintln!("narlink: WARNING: accepting UNSIGNED bundle {} (this device was set up with --allow-unsigned)", hex(&raw.header.id()));
    }
    Ok(raw.manifest(resolve_in(&device_names(state)?))?)
}

/// Whether bundle `id` (verified) is newer than the last one this device imported and than
/// every bundle it holds that is not imported yet (failed ones included). If so, those older
/// bundles are marked superseded: they will never be imported.
pub fn check_sequence(
    state: &DeviceState,
    id: &BundleId,
    manifest: &Manifest,
) -> Result<(), ReceiveError> {
    let last = state.last_sequence()?;
    let sequence = manifest.sequence;
    if sequence <= last {
        return Err(ReceiveError::Replay { sequence, last });
    }
    for (other, rec) in unsettled(state, id)? {
        let theirs = rec.manifest()?.sequence;
        if theirs > sequence {
            return Err(ReceiveError::Superseded {
                sequence,
                newer: hex(&other),
                newer_sequence: theirs,
            });
        }
    }
    supersede_older(state, id, sequence)?;
    Ok(())
}

/// The bundles other than `id` not imported yet: receiving, complete, or failed (planned
/// against another state, say), which a newer bundle supersedes.
fn unsettled(
    state: &DeviceState,
    id: &BundleId,
) -> Result<Vec<(BundleId, BundleRecord)>, StateError> {
    Ok(state
        .bundles()?
        .into_iter()
        .filter(|(other, rec)| {
            other != id
                && matches!(
                    rec.phase,
                    Phase::Receiving | Phase::Complete | Phase::Failed
                )
        })
        .collect())
}

/// Mark every bundle not imported yet whose sequence is not above `sequence` superseded by
/// bundle `id`: it will never be imported. Called when `id`'s head verifies, and when a
/// trusted key announces it (the ground has moved on, even before its head arrives).
pub fn supersede_older(
    state: &DeviceState,
    id: &BundleId,
    sequence: u64,
) -> Result<(), StateError> {
    let mut older = Vec::new();
    for (other, rec) in unsettled(state, id)? {
        if rec.manifest()?.sequence <= sequence {
            older.push((other, rec));
        }
    }
    if !older.is_empty() {
        let tx = state.db.begin_write()?;
        for (other, rec) in older {
            let note = format!("superseded by bundle {} (sequence {sequence})", hex(id));
            let rec = BundleRecord {
                phase: Phase::Superseded,
                note,
                reason: Reason::Superseded.to_u8(),
                ..rec
            };
            state.put_bundle(&tx, &other, &rec)?;
        }
        state.db.commit(tx)?;
    }
    Ok(())
}

/// Stage the bundle read from `r`.
pub fn receive(state: &DeviceState, mut r: impl Read) -> Result<ReceiveReport, ReceiveError> {
    let head = read_trusted_head(state, &mut r)?;
    let id = head.header.id();
    let manifest = &head.manifest;
    if state
        .bundle(&id)?
        .is_some_and(|b| b.phase == Phase::Imported)
    {
        // The latest bundle again (an operator's retry) is harmless; an older one is a replay.
        let last = state.last_sequence()?;
        if manifest.sequence < last {
            return Err(ReceiveError::Replay {
                sequence: manifest.sequence,
                last,
            });
        }
        return Ok(ReceiveReport {
            bundle: hex(&id),
            complete: true,
            ..ReceiveReport::default()
        });
    }
    check_sequence(state, &id, manifest)?;
    let mut report = ReceiveReport {
        bundle: hex(&id),
        paths: manifest.paths.len(),
        payloads: manifest.payloads.len(),
        ..ReceiveReport::default()
    };
    let Some(_) = begin_bundle(state, &id, manifest)? else {
        report.complete = true;
        return Ok(report);
    };

    let staged = state.staged_set(manifest.payloads.iter().map(|p| p.chunk))?;
    let mut onboard = None;
    let mut tx = state.db.begin_write()?;
    let mut pending = 0usize;
    let mut buf = Vec::new();
    for span in manifest.spans() {
        let ps = &manifest.payloads[span.clone()];
        let p = &ps[0];
        // At most MAX_SPAN, or one chunk's length (Manifest::check).
        let raw_len = ps.iter().map(|q| q.raw_len).fold(0u32, u32::saturating_add);
        if p.encoded_len > payload::max_encoded_len(raw_len) {
            // Cannot be a valid payload; and its length came from the (checksummed) manifest.
            report.rejected.push(
                PayloadError::TooLong {
                    chunk: payload::short_id(&p.chunk),
                    len: p.encoded_len,
                    raw_len,
                }
                .to_string(),
            );
            io::copy(
                &mut (&mut r).take(u64::from(p.encoded_len)),
                &mut io::sink(),
            )
            .map_err(ReceiveError::Truncated)?;
            continue;
        }
        buf.resize(p.encoded_len as usize, 0);
        r.read_exact(&mut buf).map_err(ReceiveError::Truncated)?;
        if staged[span.clone()].iter().all(|s| *s) {
            report.already_staged += span.len();
            continue;
        }
        if stage_payload(state, &tx, manifest, ps, &buf, &mut onboard, &mut report)? {
            pending += buf.len();
            if pending > 8 << 20 {
                state.db.commit(tx)?;
                tx = state.db.begin_write()?;
                pending = 0;
            }
        }
    }
    report.complete = report.rejected.is_empty();
    finish_bundle(state, &tx, &id, report.complete)?;
    state.db.commit(tx)?;
    Ok(report)
}

/// Record a bundle whose manifest arrived (phase `Receiving`), keeping its arrival order if
/// it was seen before. `None` if it is already imported.
pub fn begin_bundle(
    state: &DeviceState,
    id: &BundleId,
    manifest: &Manifest,
) -> Result<Option<u64>, StateError> {
    let existing = state.bundle(id)?;
    if existing
        .as_ref()
        .is_some_and(|b| b.phase == Phase::Imported)
    {
        return Ok(None);
    }
    if let Some(b) = existing {
        return Ok(Some(b.seq));
    }
    let seq = state.next_seq()?;
    let tx = state.db.begin_write()?;
    state.put_bundle(
        &tx,
        id,
        &BundleRecord {
            manifest: manifest.to_bytes(),
            phase: Phase::Receiving,
            note: String::new(),
            seq,
            reason: 0,
        },
    )?;
    state.db.commit(tx)?;
    Ok(Some(seq))
}

/// Verify one span (a payload and the payloads joined to it, see `Manifest::spans`) and stage
/// it within `tx`. A span that fails verification (or whose delta reference cannot be read on
/// board) is recorded in `report.rejected` and not staged. Returns whether it was staged.
/// `onboard` is opened on first use.
pub fn stage_payload(
    state: &DeviceState,
    tx: &Tx,
    manifest: &Manifest,
    span: &[Payload],
    bytes: &[u8],
    onboard: &mut Option<OnBoard>,
    report: &mut ReceiveReport,
) -> Result<bool, StateError> {
    let Some(p) = span.first() else {
        return Ok(false);
    };
    if p.encoding == Encoding::Solid {
        return stage_solid(state, tx, manifest, span, bytes, onboard, report);
    }
    let source = p.reference.and_then(|r| source_of(manifest, &r));
    let reference = match &source {
        None => None,
        Some(s) => match onboard_reader(state, onboard)?.range(&s.path, s.offset, s.len) {
            Ok(r) => Some(r),
            Err(e) => {
                report.rejected.push(format!(
                    "chunk {}: delta reference: {e}",
                    payload::short_id(&p.chunk)
                ));
                return Ok(false);
            }
        },
    };
    match payload::decode(span, bytes, reference.as_deref()) {
        Ok(_) => {
            state.stage(tx, span, source.as_ref(), bytes)?;
            report.staged += span.len();
            Ok(true)
        }
        Err(e) => {
            report.rejected.push(e.to_string());
            Ok(false)
        }
    }
}

/// The on-board path and range a delta's reference names.
fn source_of(manifest: &Manifest, r: &Reference) -> Option<Source> {
    Some(Source {
        path: manifest.sources.get(r.source as usize)?.clone(),
        offset: r.offset,
        len: r.len,
    })
}

/// The reader of on-board bytes, opened on first use.
fn onboard_reader<'a>(
    state: &DeviceState,
    onboard: &'a mut Option<OnBoard>,
) -> Result<&'a mut OnBoard, StateError> {
    let reader = match onboard.take() {
        Some(o) => o,
        None => OnBoard::new(
            NixStore::new(state.store_uri()?.as_deref()),
            state.db.record_reader()?,
        ),
    };
    Ok(onboard.insert(reader))
}

/// Verify a solid group and stage each of its parts as a span of its own, coded anew with
/// zstd: a part then decodes without the parts before it, as any staged span does.
fn stage_solid(
    state: &DeviceState,
    tx: &Tx,
    manifest: &Manifest,
    group: &[Payload],
    bytes: &[u8],
    onboard: &mut Option<OnBoard>,
    report: &mut ReceiveReport,
) -> Result<bool, StateError> {
    if group.iter().any(|p| p.reference.is_some()) {
        onboard_reader(state, onboard)?;
    }
    let read = |r: &Reference| -> Result<Vec<u8>, String> {
        let s = source_of(manifest, r).ok_or("no such source")?;
        let o = onboard.as_mut().ok_or("no on-board reader")?;
        o.range(&s.path, s.offset, s.len).map_err(|e| e.to_string())
    };
    let parts = match crate::solid::decode(group, bytes, read) {
        Ok(parts) => parts,
        Err(e) => {
            report.rejected.push(e.to_string());
            return Ok(false);
        }
    };
    for (range, data) in parts {
        let coded = match payload::restage(&data) {
            Ok(c) => c,
            Err(e) => {
                report
                    .rejected
                    .push(format!("staging a solid group's part: {e}"));
                return Ok(false);
            }
        };
        let mut span = group[range].to_vec();
        span[0].encoding = Encoding::Zstd;
        span[0].encoded_len = coded.len() as u32;
        span[0].reference = None;
        state.stage(tx, &span, None, &coded)?;
    }
    report.staged += group.len();
    Ok(true)
}

/// Mark a bundle complete (every payload staged) or still receiving.
pub fn finish_bundle(
    state: &DeviceState,
    tx: &Tx,
    id: &BundleId,
    complete: bool,
) -> Result<(), StateError> {
    if let Some(mut rec) = state.bundle(id)? {
        if rec.phase == Phase::Receiving || rec.phase == Phase::Complete {
            rec.phase = if complete {
                Phase::Complete
            } else {
                Phase::Receiving
            };
            state.put_bundle(tx, id, &rec)?;
        }
    }
    Ok(())
}
