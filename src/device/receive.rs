//! Receive a bundle byte stream: check the manifest, then verify and stage every payload.
//!
//! A payload that fails verification is dropped (it is missing, not fatal): the bundle stays
//! `Receiving` and import refuses it, naming what is missing. Nothing staged is ever lost.

use std::io::{self, Read};

use narlink_protocol::bundle::BundleId;
use narlink_protocol::bundle::{BundleError, BundleHeader, HEADER_LEN, MANIFEST_ZSTD};
use narlink_protocol::manifest::{resolve_in, Manifest, ManifestError, Payload};
use narlink_protocol::signature::{self, Signature, SignatureError};
use narlink_protocol::storepath::PathSet;
use serde::Serialize;

use crate::chunking::PARAMS;
use crate::ground::pack::hex;
use crate::nixstore::NixStore;
use crate::onboard::OnBoard;
use crate::payload::{self, PayloadError};
use crate::state::device::{BundleRecord, DeviceState, Phase, Source};
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest does not decompress: {0}")]
    ManifestZstd(String),
    #[error("bundle uses chunking {found:?}, this device uses {PARAMS:?}")]
    Chunking {
        found: narlink_protocol::manifest::ChunkParams,
    },
    #[error("bundle ends early: {0}")]
    Truncated(io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refusing the bundle: {0}")]
    Signature(#[from] SignatureError),
    #[error("refusing the bundle: it is sequence {sequence}, not newer than the last imported bundle ({last}): an old bundle replayed")]
    Replay { sequence: u64, last: u64 },
    #[error("refusing the bundle: this device trusts no signing key; add one with `narlink device trust --state DIR KEYFILE` (or set it up with --allow-unsigned, for tests only)")]
    NoTrust,
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

/// The head of a bundle: everything before the payloads.
pub struct BundleHead {
    pub header: BundleHeader,
    pub manifest: Manifest,
    pub sigs: Vec<Signature>,
    /// BLAKE3 of the manifest as stored: what the signatures sign.
    pub manifest_hash: [u8; 32],
}

/// The device's paths, to resolve the on-board paths a manifest names.
pub fn device_names(state: &DeviceState) -> Result<PathSet, StateError> {
    Ok(PathSet::new(state.db.paths()?))
}

/// Read the header, manifest and signatures of a bundle stream; check the manifest's
/// checksum (not yet who signed it: see [`accept`]). On-board paths are named with `resolve`
/// ([`narlink_protocol::manifest::resolve_in`] of [`device_names`] on a device).
pub fn read_manifest(
    r: &mut impl Read,
    resolve: impl FnMut(&[u8]) -> Result<String, ManifestError>,
) -> Result<BundleHead, ReceiveError> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(ReceiveError::Truncated)?;
    let header = BundleHeader::decode(&head)?;
    // manifest_len is bounded by the decoded cap's compress bound; check before allocating.
    let cap = zstd::zstd_safe::compress_bound(header.manifest_raw_len as usize) as u64;
    if u64::from(header.manifest_len) > cap {
        return Err(BundleError::ManifestChecksum.into());
    }
    let mut stored = vec![0u8; header.manifest_len as usize];
    r.read_exact(&mut stored).map_err(ReceiveError::Truncated)?;
    let manifest_hash = header.verify_manifest(&stored)?;
    let raw = if header.manifest_encoding == MANIFEST_ZSTD {
        zstd::bulk::decompress(&stored, header.manifest_raw_len as usize)
            .map_err(|e| ReceiveError::ManifestZstd(e.to_string()))?
    } else {
        stored
    };
    let manifest = Manifest::from_wire(&raw, resolve)?;
    if manifest.chunking != PARAMS {
        return Err(ReceiveError::Chunking {
            found: manifest.chunking,
        });
    }
    if manifest.payload_bytes() != header.payload_len {
        return Err(ManifestError::Payload {
            index: 0,
            reason: "payload lengths disagree with the header",
        }
        .into());
    }
    let mut block = vec![0u8; usize::from(header.signatures_len)];
    r.read_exact(&mut block).map_err(ReceiveError::Truncated)?;
    let sigs = if block.is_empty() {
        Vec::new()
    } else {
        signature::decode_block(&block)?
    };
    Ok(BundleHead {
        header,
        manifest,
        sigs,
        manifest_hash,
    })
}

/// Whether this device takes the bundle: signed by a key it trusts (unless it was set up to
/// accept unsigned bundles), and newer than the last bundle it imported.
pub fn accept(state: &DeviceState, head: &BundleHead) -> Result<(), ReceiveError> {
    let (trusted, allow_unsigned) = state.trust()?;
    if trusted.is_empty() && !allow_unsigned {
        return Err(ReceiveError::NoTrust);
    }
    if !(allow_unsigned && head.sigs.is_empty()) {
        signature::verify(&head.manifest_hash, &head.sigs, &trusted)?;
    }
    if allow_unsigned && head.sigs.is_empty() {
        eprintln!("narlink: WARNING: accepting UNSIGNED bundle {} (this device was set up with --allow-unsigned)", hex(&head.header.id()));
    }
    let last = state.last_sequence()?;
    if head.manifest.sequence <= last {
        return Err(ReceiveError::Replay {
            sequence: head.manifest.sequence,
            last,
        });
    }
    Ok(())
}

/// Stage the bundle read from `r`.
pub fn receive(state: &DeviceState, mut r: impl Read) -> Result<ReceiveReport, ReceiveError> {
    let names = device_names(state)?;
    let head = read_manifest(&mut r, resolve_in(&names))?;
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
    accept(state, &head)?;
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
    tx: &redb::WriteTransaction,
    manifest: &Manifest,
    span: &[Payload],
    bytes: &[u8],
    onboard: &mut Option<OnBoard>,
    report: &mut ReceiveReport,
) -> Result<bool, StateError> {
    let Some(p) = span.first() else {
        return Ok(false);
    };
    let source = p.reference.and_then(|r| {
        let path = manifest.sources.get(r.source as usize)?;
        Some(Source {
            path: path.clone(),
            offset: r.offset,
            len: r.len,
        })
    });
    let reference = match &source {
        None => None,
        Some(s) => {
            if onboard.is_none() {
                let store = NixStore::new(state.store_uri()?.as_deref());
                *onboard = Some(OnBoard::new(store, state.db.record_reader()?));
            }
            match onboard.as_mut().map(|o| o.range(&s.path, s.offset, s.len)) {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    report.rejected.push(format!(
                        "chunk {}: delta reference: {e}",
                        payload::short_id(&p.chunk)
                    ));
                    return Ok(false);
                }
                None => None,
            }
        }
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

/// Mark a bundle complete (every payload staged) or still receiving.
pub fn finish_bundle(
    state: &DeviceState,
    tx: &redb::WriteTransaction,
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
