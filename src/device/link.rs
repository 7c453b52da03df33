//! The device end of the link: frames in, bundle bytes out.
//!
//! Frames arrive in any order, duplicated, corrupted, or of other bundles. Each wanted frame
//! is written to the journal and committed (durable) before the group tracker counts it, so a
//! crash loses at most frames not yet committed. A group that will hold `k` shards after the
//! next commit takes no more in that batch (parity behind a lossless run is not stored). A
//! group with `k` shards is decoded at once: the code is systematic, so decoding stores only
//! the data shards that did not arrive and drops the parity, in one transaction. As soon as a
//! prefix of the bundle is decoded, the manifest is read and every payload inside that prefix
//! is verified and staged, in the same transaction that advances the bundle's cursor. Decoded
//! groups below the cursor are dropped, so storage holds roughly one copy of the undelivered
//! part of the bundle, and a lossless pass writes each byte twice: as a frame, then staged.
//!
//! Forged frames that passed their checksum decode into wrong bytes. The manifest's piece
//! hashes ([`narlink_protocol::pieces`]) find them as soon as the groups under a piece decode,
//! anywhere in the bundle: a piece that fails costs the groups under it (their data is
//! dropped and they are asked for again), not the groups of the payload around it. A payload
//! that fails verification where no piece did (a bundle too small for pieces) costs its
//! groups.
//!
//! # Who gets room (protocol/SPEC.md, "Receiver admission")
//!
//! Unverified input may cost bounded resources and never verified progress:
//! - A **session** is one (bundle id, link parameters) pair, so frames that carry a genuine id
//!   with other parameters (forged, or a stripped head) are a session of their own and cannot
//!   make the genuine frames "mismatch".
//! - Sessions whose head is not verified yet share [`UNVERIFIED_SLOTS`] slots and
//!   `unverified_bytes` each. A new one that finds them full evicts the unverified session
//!   holding the fewest bytes (the oldest of those): junk of many ids churns junk, and a
//!   bundle that has made progress outlasts any number of one-frame ids.
//! - A session is *trusted* once a trusted key announced it (a signed announcement frame:
//!   [`narlink_protocol::announce`]) or its head verified. A trusted session is never evicted.
//!   It drops the other sessions of its id and the trusted sessions of older bundles; a
//!   verified head also marks older bundles not yet imported superseded. An older or replayed
//!   bundle is refused.
//! - The status report speaks for the newest trusted session, never for an unverified one
//!   (except on a device that trusts no key).
//! - Ids refused for good (a head that matches its id but fails: unsigned, untrusted, replayed,
//!   superseded) are remembered in a table of at most [`MAX_REFUSALS`] entries.
//!
//! What is durable lives in the journal ([`crate::state::link`]); this module decides.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};

use narlink_protocol::announce::{is_withdrawal, Announcement, Withdrawal};
use narlink_protocol::bundle::{BundleHeader, BundleId, HEADER_LEN};
use narlink_protocol::confirm::{is_confirmation, Confirmation};
use narlink_protocol::digest::short;
use narlink_protocol::fec::{self, ErasureCode};
use narlink_protocol::frame::{Frame, FrameHeader, FrameRef};
use narlink_protocol::layout::GroupLayout;
use narlink_protocol::manifest::Manifest;
use narlink_protocol::params::{Limits, LinkParams};
use narlink_protocol::receiver::{GroupTracker, Outcome};
use narlink_protocol::signature::PublicKey;
use narlink_protocol::status::device::Reason;
use narlink_protocol::status::{Phase as WirePhase, StatusReport};
use serde::Serialize;

use super::receive::{
    begin_bundle, check_sequence, finish_bundle, read_trusted_head, stage_payload, ReceiveError,
    ReceiveReport,
};
use crate::state::device::{BundleRecord, DeviceState, Phase};
use crate::state::link::{LinkRecord, Refusal, SessionKey};
use crate::state::{StateError, Tx};

/// Frames are committed in batches of at most this many payload bytes.
const FLUSH_BYTES: usize = 1 << 20;
/// Staging commits a checkpoint after this many payload bytes: a transaction much larger
/// than redb's cache writes pages more than once.
const STAGE_BATCH: usize = 4 << 20;
/// Sessions whose head is not verified yet, at once.
pub const UNVERIFIED_SLOTS: usize = 8;
/// Bundle ids refused for good that the device remembers (the oldest is forgotten first).
pub const MAX_REFUSALS: usize = 64;

fn session_key(id: &BundleId, p: &LinkParams) -> SessionKey {
    let mut h = blake3::Hasher::new();
    h.update(b"narlink-session-v1\0");
    h.update(id);
    h.update(&[p.codec.to_u8()]);
    h.update(&p.shard_size.to_le_bytes());
    h.update(&p.group_k.to_le_bytes());
    h.update(&p.parity.to_le_bytes());
    h.update(&p.bundle_len.to_le_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.finalize().as_bytes()[..16]);
    k
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("bundle {bundle}: {source}")]
    Bundle {
        bundle: String,
        source: ReceiveError,
    },
}

/// Counters of what arrived.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IntakeStats {
    pub frames: u64,
    /// Frames that failed their checksum or did not parse (erasures).
    pub corrupt: u64,
    pub duplicates: u64,
    /// Frames of bundles already complete.
    pub late: u64,
    /// Frames refused: parameters over the limits, frames of a bundle whose head was verified
    /// under other parameters, frames of bundles refused for good.
    pub refused: u64,
    /// Frames refused because a storage quota was reached (nothing stored was lost).
    pub over_quota: u64,
    /// Announcements verified under a trusted key.
    pub announcements: u64,
    /// Withdrawals (`ground cancel`) verified under a trusted key.
    pub withdrawals: u64,
    /// Generations a confirmation committed (issue 19, probation).
    pub generations_confirmed: Vec<u32>,
    /// Confirmations refused, by reason (they changed nothing).
    pub confirmations_refused: std::collections::BTreeMap<String, u64>,
    /// Unverified sessions evicted to make room for a new one.
    pub evicted: u64,
    /// Sessions dropped because a newer bundle superseded theirs, or a link record that did
    /// not decode (written by another narlink version, or damaged).
    pub dropped: u64,
    pub stored: u64,
    pub groups_decoded: u64,
    /// Groups whose decode failed or whose payloads failed verification; asked for again.
    pub groups_dropped: u64,
    pub payloads_staged: u64,
    pub bundles_completed: Vec<String>,
    /// Bundles refused for good, with the reason (unsigned, untrusted, replayed, superseded).
    pub refused_bundles: Vec<String>,
    /// Bundles a trusted key announced (id and sequence), and bundles whose head verified.
    pub bundles_announced: Vec<String>,
    pub bundles_verified: Vec<String>,
}

struct Session {
    rec: LinkRecord,
    layout: GroupLayout,
    tracker: GroupTracker,
    code: Box<dyn ErasureCode>,
    manifest: Option<Manifest>,
    /// The manifest's pieces whose bytes were found genuine (or lie partly below the staging
    /// cursor, where their groups are gone): not checked again until a reset.
    pieces_ok: Vec<bool>,
    persisted: bool,
    /// Bytes of shards and decoded groups this bundle holds on disk (as of the last flush),
    /// and bytes pending in the current batch.
    stored: u64,
    pending: u64,
}

impl Session {
    /// What an unverified session must hold before the status report names it: more than
    /// one shard (junk of random ids holds one each).
    fn substantial(&self) -> u64 {
        2 * u64::from(self.layout.shard_size())
    }

    /// Disk this bundle's link data takes: shards held of undecoded groups, and the data
    /// shards of decoded groups not yet staged.
    fn measure(&mut self) {
        let s = u64::from(self.layout.shard_size());
        self.stored = (0..self.layout.group_count())
            .map(|g| {
                if self.tracker.is_decoded(g) {
                    self.layout.byte_range(g).map_or(0, |r| {
                        if r.end > self.rec.next_offset {
                            r.end - r.start
                        } else {
                            0
                        }
                    })
                } else {
                    u64::from(self.tracker.held(g)) * s
                }
            })
            .sum();
        self.pending = 0;
    }
}

/// The device's frame intake over its state database.
pub struct LinkReceiver<'a> {
    state: &'a DeviceState,
    limits: Limits,
    quota: crate::state::device::DeviceLimits,
    sessions: BTreeMap<SessionKey, Session>,
    /// Bundles whose frames are late: staged whole, imported, failed, superseded or refused.
    done: HashSet<BundleId>,
    pending: Vec<(SessionKey, Frame)>,
    pending_keys: HashSet<(SessionKey, u32, u16)>,
    /// Pending frames per (session, group): a group that will have `k` shards after the
    /// next flush takes no more (parity behind a lossless run of data shards is not stored).
    pending_groups: HashMap<(SessionKey, u32), u16>,
    pending_bytes: usize,
    /// Sessions whose data the next flush deletes.
    evicted: Vec<SessionKey>,
    /// The keys announcements are checked against.
    trusted: Vec<PublicKey>,
    pub stats: IntakeStats,
}

impl<'a> LinkReceiver<'a> {
    /// Open the intake, rebuilding every unfinished session's tracker from what is durable.
    /// Sessions of bundles that are no longer wanted (finished, superseded, not newer than the
    /// last import) and records that do not decode are dropped with their data.
    pub fn open(state: &'a DeviceState) -> Result<LinkReceiver<'a>, LinkError> {
        let quota = state.limits()?;
        let mut r = LinkReceiver {
            state,
            limits: Limits {
                max_bundle_len: quota.max_bundle_bytes,
                ..Limits::default()
            },
            quota,
            sessions: BTreeMap::new(),
            done: HashSet::new(),
            pending: Vec::new(),
            pending_keys: HashSet::new(),
            pending_groups: HashMap::new(),
            pending_bytes: 0,
            evicted: Vec::new(),
            trusted: state.trust()?.0,
            stats: IntakeStats::default(),
        };
        let journal = state.journal()?;
        r.done.extend(journal.refused);
        for (id, rec) in state.bundles()? {
            if rec.phase != Phase::Receiving {
                r.done.insert(id);
            }
        }
        let last = state.last_sequence()?;
        for (key, rec) in journal.sessions {
            let stale = |rec: &LinkRecord| rec.trusted() && rec.sequence <= last;
            let wanted = rec.filter(|rec| !r.done.contains(&rec.bundle) && !stale(rec));
            match wanted.map(|rec| r.rebuild(key, rec)).transpose() {
                Ok(Some(session)) => {
                    r.sessions.insert(key, session);
                }
                Ok(None) | Err(LinkError::State(StateError::Corrupt(_))) => {
                    r.stats.dropped += 1;
                    r.evicted.push(key);
                }
                Err(e) => return Err(e),
            }
        }
        r.recover()?;
        r.flush()?;
        Ok(r)
    }

    /// Finish what a crash interrupted: decode groups that already have `k` shards, and
    /// stage what the decoded prefix covers.
    fn recover(&mut self) -> Result<(), LinkError> {
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            let decodable: Vec<u32> = match self.sessions.get(&key) {
                Some(s) => (0..s.layout.group_count())
                    .filter(|&g| s.tracker.is_decodable(g))
                    .collect(),
                None => continue,
            };
            for g in decodable {
                self.decode(&key, g)?;
            }
            self.advance(&key)?;
        }
        Ok(())
    }

    /// Session `key` from its record and what is durable. A group is decoded if it lies
    /// below the staging cursor (its shards were dropped once staged) or holds every data
    /// shard.
    fn rebuild(&self, key: SessionKey, rec: LinkRecord) -> Result<Session, LinkError> {
        let params = rec
            .params()
            .ok_or_else(|| StateError::Corrupt("link record codec".into()))?;
        let layout = params
            .validate()
            .map_err(|_| StateError::Corrupt("link record parameters".into()))?;
        let held = self.state.session_shards(&key, layout.shard_size())?;
        let mut decoded: BTreeSet<u32> = (0..layout.group_count())
            .take_while(|&g| {
                layout
                    .byte_range(g)
                    .is_some_and(|r| r.end <= rec.next_offset)
            })
            .collect();
        let mut data: BTreeMap<u32, u16> = BTreeMap::new();
        for &(g, s) in &held {
            if layout.group_k(g).is_some_and(|k| s < k) {
                *data.entry(g).or_default() += 1;
            }
        }
        decoded.extend(
            data.into_iter()
                .filter(|&(g, n)| layout.group_k(g) == Some(n))
                .map(|(g, _)| g),
        );
        let persisted: Vec<(u32, u16)> = held
            .into_iter()
            .filter(|(g, _)| !decoded.contains(g))
            .collect();
        let tracker = GroupTracker::rebuild(rec.bundle, params, &self.limits, persisted, decoded)
            .map_err(|_| StateError::Corrupt("link record parameters".into()))?;
        let manifest = if rec.manifest_done {
            let rec = self
                .state
                .bundle(&rec.bundle)?
                .ok_or_else(|| StateError::Corrupt("bundle record of a link session".into()))?;
            Some(rec.manifest()?)
        } else {
            None
        };
        let mut s = Session {
            rec,
            layout,
            tracker,
            code: fec::codec(params.codec),
            manifest,
            pieces_ok: Vec::new(),
            persisted: true,
            stored: 0,
            pending: 0,
        };
        s.measure();
        Ok(s)
    }
}

impl LinkReceiver<'_> {
    /// Take one frame's bytes (a datagram, or one frame cut from a stream). Corrupt frames
    /// are counted as erasures. Call [`flush`](Self::flush) when input pauses.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.stats.frames += 1;
        match Frame::decode(bytes) {
            Ok(f) => self.offer(f),
            Err(_) => {
                self.stats.corrupt += 1;
                Ok(())
            }
        }
    }

    /// Take one decoded frame.
    pub fn handle_frame(&mut self, f: FrameRef<'_>) -> Result<(), LinkError> {
        self.stats.frames += 1;
        self.offer(f)
    }

    fn offer(&mut self, f: FrameRef<'_>) -> Result<(), LinkError> {
        let h = *f.header();
        let id = h.bundle_id;
        // A withdrawal counts even for a bundle staged whole: it is not imported yet.
        if h.is_announcement() && is_withdrawal(f.payload()) {
            return self.withdrawn(&h, f.payload());
        }
        if h.is_announcement() && is_confirmation(f.payload()) {
            return self.confirmed(&h, f.payload());
        }
        if self.done.contains(&id) {
            self.stats.late += 1;
            return Ok(());
        }
        if h.is_announcement() {
            return self.announced(&h, f.payload());
        }
        let key = session_key(&id, &h.params);
        if !self.sessions.contains_key(&key) && !self.admit(key, &h)? {
            self.stats.refused += 1;
            return Ok(());
        }
        let Some(s) = self.sessions.get(&key) else {
            return Ok(());
        };
        let outcome = s.tracker.peek_frame(&h);
        let batched = self.pending_groups.get(&(key, h.group)).copied();
        let enough = batched.is_some_and(|n| n >= s.tracker.needed(h.group));
        if !outcome.is_wanted() || enough || self.pending_keys.contains(&(key, h.group, h.shard)) {
            match outcome {
                Outcome::ParamsMismatch | Outcome::OutOfRange | Outcome::OtherBundle => {
                    self.stats.refused += 1
                }
                _ => self.stats.duplicates += 1,
            }
            return Ok(());
        }
        // Quotas: a session not yet verified gets room for its manifest only; all sessions
        // together get the link quota. Refusing a frame loses nothing already stored.
        let len = f.payload().len() as u64;
        let total: u64 = self.sessions.values().map(|s| s.stored + s.pending).sum();
        let cap = if s.rec.trusted() {
            u64::MAX
        } else {
            self.quota.unverified_bytes
        };
        if s.stored + s.pending + len > cap || total + len > self.quota.link_quota_bytes {
            self.stats.over_quota += 1;
            return Ok(());
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.pending += len;
        }
        self.pending_keys.insert((key, h.group, h.shard));
        *self.pending_groups.entry((key, h.group)).or_default() += 1;
        self.pending_bytes += f.payload().len();
        self.pending.push((key, f.to_frame()));
        if self.pending_bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Open a session for the first frame of (bundle id, parameters) `key`, if the receiver
    /// takes it (see the module doc). Whether it did.
    fn admit(&mut self, key: SessionKey, h: &FrameHeader) -> Result<bool, LinkError> {
        // This bundle is verified or announced under other parameters: not its frames.
        if self
            .sessions
            .values()
            .any(|s| s.rec.trusted() && s.rec.bundle == h.bundle_id)
        {
            return Ok(false);
        }
        let Some(session) = self.new_session(h)? else {
            return Ok(false);
        };
        let unverified = self.sessions.values().filter(|s| !s.rec.trusted()).count();
        if unverified >= UNVERIFIED_SLOTS {
            self.evict_unverified();
        }
        self.sessions.insert(key, session);
        Ok(true)
    }

    /// A fresh session for frames like `h`, if its parameters are within the limits.
    fn new_session(&self, h: &FrameHeader) -> Result<Option<Session>, LinkError> {
        let Ok(layout) = h.params.validate_within(&self.limits) else {
            return Ok(None);
        };
        let Ok(tracker) = GroupTracker::new(h.bundle_id, h.params, &self.limits) else {
            return Ok(None);
        };
        let rec = LinkRecord {
            bundle: h.bundle_id,
            codec: h.params.codec.to_u8(),
            shard_size: h.params.shard_size,
            group_k: h.params.group_k,
            parity: h.params.parity,
            bundle_len: h.params.bundle_len,
            seq: self.next_seq()?,
            manifest_done: false,
            next_payload: 0,
            next_offset: 0,
            verified: false,
            sequence: 0,
            announced: false,
        };
        Ok(Some(Session {
            rec,
            layout,
            tracker,
            code: fec::codec(h.params.codec),
            manifest: None,
            pieces_ok: Vec::new(),
            persisted: false,
            stored: 0,
            pending: 0,
        }))
    }

    /// An announcement frame: if a trusted key signed it and it is newer than the last
    /// import and every trusted session, its session is opened (or marked) as announced and
    /// settled (see [`Self::settle`]). Anything else is counted and ignored.
    fn announced(&mut self, h: &FrameHeader, payload: &[u8]) -> Result<(), LinkError> {
        let a = match Announcement::from_frame(h, payload) {
            Ok(a) if a.verify(&self.trusted).is_ok() => a,
            _ => {
                self.stats.refused += 1;
                return Ok(());
            }
        };
        self.stats.announcements += 1;
        let newer = self.newer_trusted(&a.bundle_id, a.sequence).is_some();
        if a.sequence <= self.state.last_sequence()? || newer {
            // A replay, or superseded: a trusted key said so.
            self.done.insert(a.bundle_id);
            self.stats.late += 1;
            return Ok(());
        }
        let key = session_key(&a.bundle_id, &a.params);
        if !self.sessions.contains_key(&key) {
            let Some(session) = self.new_session(h)? else {
                self.stats.refused += 1;
                return Ok(());
            };
            self.sessions.insert(key, session);
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            if !s.rec.announced {
                // The ground has moved on: bundles held but not imported that are older never
                // will be. Once per announced bundle (the frame repeats every 512 frames).
                super::receive::supersede_older(self.state, &a.bundle_id, a.sequence)?;
                s.rec.announced = true;
                s.rec.sequence = a.sequence;
                s.persisted = false;
                self.stats.bundles_announced.push(format!(
                    "{} (sequence {})",
                    narlink_protocol::digest::hex(&a.bundle_id),
                    a.sequence
                ));
            }
        }
        self.settle(&key);
        Ok(())
    }

    /// A withdrawal frame: if a trusted key signed it and the bundle is not imported, drop
    /// every session of it, mark its record (if its head came) as never to be imported, and
    /// refuse its frames from now on. Anything else is counted and ignored.
    fn withdrawn(&mut self, h: &FrameHeader, payload: &[u8]) -> Result<(), LinkError> {
        let w = match Withdrawal::from_frame(h, payload) {
            Ok(w) if w.verify(&self.trusted).is_ok() => w,
            _ => {
                self.stats.refused += 1;
                return Ok(());
            }
        };
        let id = w.bundle_id;
        let record = self.state.bundle(&id)?;
        if self.done.contains(&id) && record.is_none()
            || record
                .as_ref()
                .is_some_and(|r| matches!(r.phase, Phase::Imported | Phase::Superseded))
        {
            // Imported already (too late to withdraw), or settled: nothing to do.
            self.stats.late += 1;
            return Ok(());
        }
        self.stats.withdrawals += 1;
        let keys: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.rec.bundle == id)
            .map(|(k, _)| *k)
            .collect();
        let mut seq = None;
        for k in keys {
            seq = seq.max(self.sessions.get(&k).map(|s| s.rec.seq));
            self.drop_session(k);
        }
        let reason = "withdrawn by the ground (ground cancel)".to_owned();
        if let Some(rec) = record {
            seq = seq.max(Some(rec.seq));
            let tx = self.state.db.begin_write()?;
            let rec = BundleRecord {
                phase: Phase::Superseded,
                note: reason.clone(),
                reason: Reason::Cancelled.to_u8(),
                ..rec
            };
            self.state.put_bundle(&tx, &id, &rec)?;
            self.state.db.commit(tx)?;
        }
        let seq = match seq {
            Some(s) => s,
            None => self.next_seq()?,
        };
        self.refuse_id(id, seq, reason, Reason::Cancelled)
    }

    /// A confirmation frame: the generation on probation is committed if it verifies and is
    /// current ([`super::probation::confirm`]); anything else is counted by reason.
    fn confirmed(&mut self, h: &FrameHeader, payload: &[u8]) -> Result<(), LinkError> {
        use super::probation::{confirm, Refusal};
        let outcome = match Confirmation::from_frame(h, payload) {
            Ok(c) => confirm(self.state, &c)?,
            Err(_) => Err(Refusal::Malformed),
        };
        match outcome {
            Ok(generation) => self.stats.generations_confirmed.push(generation),
            Err(why) => {
                *self
                    .stats
                    .confirmations_refused
                    .entry(why.to_string())
                    .or_default() += 1
            }
        }
        Ok(())
    }

    fn next_seq(&self) -> Result<u64, LinkError> {
        let s = self
            .sessions
            .values()
            .map(|s| s.rec.seq + 1)
            .max()
            .unwrap_or(0);
        Ok(s.max(self.state.next_seq()?))
    }

    /// Persist pending frames (one durable commit), count them, decode every group that
    /// became decodable, and stage what the decoded prefix of each bundle holds.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        if self.pending.is_empty()
            && self.evicted.is_empty()
            && self.sessions.values().all(|s| s.persisted)
        {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.pending);
        self.pending_keys.clear();
        self.pending_groups.clear();
        self.pending_bytes = 0;
        let tx = self.state.db.begin_write()?;
        for key in std::mem::take(&mut self.evicted) {
            self.state.forget_session(&tx, &key)?;
        }
        for (key, s) in self.sessions.iter().filter(|(_, s)| !s.persisted) {
            self.state.put_session(&tx, key, &s.rec)?;
        }
        let mut runs = BTreeMap::<(SessionKey, u32), Vec<_>>::new();
        for (key, f) in &frames {
            let h = f.header();
            runs.entry((*key, h.group))
                .or_default()
                .push((h.shard, f.payload()));
        }
        for ((key, group), mut shards) in runs {
            shards.sort_by_key(|(i, _)| *i);
            let size = shards.first().map_or(0, |(_, p)| p.len() as u16);
            self.state.put_shards(&tx, &key, size, group, &shards)?;
        }
        self.state.db.commit(tx)?;
        let mut decodable: BTreeSet<(SessionKey, u32)> = BTreeSet::new();
        for s in self.sessions.values_mut() {
            s.persisted = true;
        }
        for (key, f) in &frames {
            let h = f.header();
            if let Some(s) = self.sessions.get_mut(key) {
                if s.tracker.handle_frame(h) == Outcome::Decodable {
                    decodable.insert((*key, h.group));
                }
                self.stats.stored += 1;
            }
        }
        let mut touched = BTreeSet::new();
        for (id, g) in decodable {
            self.decode(&id, g)?;
            touched.insert(id);
        }
        for id in touched {
            self.advance(&id)?;
        }
        for s in self.sessions.values_mut() {
            s.measure();
        }
        Ok(())
    }

    /// Make room for a new session by dropping the untrusted session that holds the fewest
    /// bytes (the oldest of those). A trusted session is never evicted. Its data goes at the
    /// next flush.
    fn evict_unverified(&mut self) {
        let victim = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.rec.trusted())
            .min_by_key(|(_, s)| (s.stored + s.pending, s.rec.seq))
            .map(|(k, _)| *k);
        if let Some(key) = victim {
            self.drop_session(key);
            self.stats.evicted += 1;
        }
    }

    /// Forget session `key`: its pending frames now, its stored data at the next flush.
    fn drop_session(&mut self, key: SessionKey) {
        self.pending.retain(|(k, _)| *k != key);
        self.pending_keys.retain(|k| k.0 != key);
        self.pending_groups.retain(|k, _| k.0 != key);
        self.pending_bytes = self.pending.iter().map(|(_, f)| f.payload().len()).sum();
        self.sessions.remove(&key);
        self.evicted.push(key);
    }

    /// Decode `group` from its stored shards: store the data shards that did not arrive and
    /// drop the parity shards, so the group's data shards are its bytes.
    fn decode(&mut self, key: &SessionKey, group: u32) -> Result<(), LinkError> {
        let Some(s) = self.sessions.get_mut(key) else {
            return Ok(());
        };
        let params = *s.tracker.params();
        let k = s.layout.group_k(group).unwrap_or(0);
        let size = usize::from(s.layout.shard_size());
        let tx = self.state.db.begin_write()?;
        let held = self
            .state
            .group_shards(&tx, key, s.layout.shard_size(), group)?;
        let refs: Vec<(u16, &[u8])> = held.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        match fec::decode_group(s.code.as_ref(), &params, &s.layout, group, &refs) {
            Ok(bytes) => {
                let has: HashSet<u16> = held.iter().map(|(i, _)| *i).collect();
                let missing: Vec<(u16, Vec<u8>)> = (0..k)
                    .filter(|i| !has.contains(i))
                    .map(|i| {
                        // The last data shard is padded with zeros (decode_group checked them).
                        let at = (usize::from(i) * size).min(bytes.len());
                        let mut shard = bytes[at..(at + size).min(bytes.len())].to_vec();
                        shard.resize(size, 0);
                        (i, shard)
                    })
                    .collect();
                let parity: Vec<u16> = held.iter().map(|(i, _)| *i).filter(|&i| i >= k).collect();
                let shard_size = s.layout.shard_size();
                self.state
                    .remove_shards(&tx, key, shard_size, group, &parity)?;
                let missing: Vec<(u16, &[u8])> =
                    missing.iter().map(|(i, b)| (*i, b.as_slice())).collect();
                self.state
                    .put_shards(&tx, key, shard_size, group, &missing)?;
                self.state.db.commit(tx)?;
                s.tracker.mark_decoded(group);
                self.stats.groups_decoded += 1;
            }
            Err(_) => {
                // Forged or inconsistent shards: drop them all and ask for the group again.
                self.state.drop_groups(&tx, key, group..=group)?;
                self.state.db.commit(tx)?;
                self.stats.groups_dropped += 1;
                self.reset(key)?;
            }
        }
        Ok(())
    }

    /// Rebuild a session's tracker from what is durable (after dropping data).
    fn reset(&mut self, key: &SessionKey) -> Result<(), LinkError> {
        if let Some(s) = self.sessions.remove(key) {
            let session = self.rebuild(*key, s.rec)?;
            self.sessions.insert(*key, session);
        }
        Ok(())
    }

    /// Stage whatever the decoded prefix of bundle `id` now covers.
    fn advance(&mut self, key: &SessionKey) -> Result<(), LinkError> {
        let Some(s) = self.sessions.get_mut(key) else {
            return Ok(());
        };
        let id = s.rec.bundle;
        let bundle = narlink_protocol::digest::hex(&id);
        let groups = s.layout.group_count();
        let first_missing = (0..groups)
            .find(|&g| !s.tracker.is_decoded(g))
            .unwrap_or(groups);
        let prefix_end = if first_missing == groups {
            s.layout.bundle_len()
        } else {
            s.layout.byte_range(first_missing).map_or(0, |r| r.start)
        };

        if s.manifest.is_none() {
            if prefix_end < HEADER_LEN as u64 {
                return Ok(());
            }
            let mut r = self.state.bundle_reader(key, &s.layout, 0, prefix_end)?;
            let mut head = [0u8; HEADER_LEN];
            r.read_exact(&mut head).map_err(|e| LinkError::Bundle {
                bundle: bundle.clone(),
                source: ReceiveError::Truncated(e),
            })?;
            // A header that does not describe this bundle came from forged or damaged
            // shards: drop what it was decoded from and ask again.
            let header = match BundleHeader::decode(&head) {
                Ok(h) if h.total_len() == s.layout.bundle_len() && h.id() == id => h,
                _ => return self.drop_head(key, HEADER_LEN as u64),
            };
            if header.payload_offset() > prefix_end {
                return Ok(());
            }
            r.seek(0);
            let head = read_trusted_head(self.state, &mut r)
                .and_then(|h| check_sequence(self.state, &id, &h.manifest).map(|()| h));
            drop(r);
            let head = match head {
                Ok(h) => h,
                Err(e) if e.binds_id() => return self.reject(key, e),
                Err(ReceiveError::State(e)) => return Err(e.into()),
                Err(_) => return self.drop_head(key, header.payload_offset()),
            };
            let manifest = head.manifest;
            // A trusted key announced a newer bundle: this one will never be imported (as
            // `announced` refuses the announcement of an older one).
            if let Some((newer_sequence, newer)) = self.newer_trusted(&id, manifest.sequence) {
                let why = ReceiveError::Superseded {
                    sequence: manifest.sequence,
                    newer: narlink_protocol::digest::hex(&newer),
                    newer_sequence,
                };
                return self.reject(key, why);
            }
            let announced = self.sessions.get(key).filter(|s| s.rec.announced);
            if let Some(announced) = announced.map(|s| s.rec.sequence) {
                if announced != manifest.sequence {
                    let sequence = manifest.sequence;
                    let why = ReceiveError::Announced {
                        announced,
                        sequence,
                    };
                    return self.reject(key, why);
                }
            }
            begin_bundle(self.state, &id, &manifest)?;
            self.verified(key, &manifest);
            self.stats.bundles_verified.push(format!(
                "{bundle} (sequence {}, {} paths)",
                manifest.sequence,
                manifest.paths.len()
            ));
            let s = self
                .sessions
                .get_mut(key)
                .ok_or_else(|| StateError::Corrupt("session".into()))?;
            s.rec.manifest_done = true;
            s.rec.next_offset = header.payload_offset();
            s.manifest = Some(manifest);
        }

        let s = self
            .sessions
            .get_mut(key)
            .ok_or_else(|| StateError::Corrupt("session".into()))?;
        // Pieces whose groups decoded into forged bytes, anywhere in the bundle.
        let mut bad = check_pieces(self.state, key, s)?;
        let Some(m) = s.manifest.as_ref() else {
            return Ok(());
        };
        let mut tx = self.state.db.begin_write()?;
        let mut batch = 0usize;
        let mut report = ReceiveReport::default();
        // Every payload of the decoded prefix is checked, also past one that failed, so
        // that all groups forged shards decoded into are dropped in one go (one resend round,
        // not one per group); the cursor stops at the first failure. A payload over a piece
        // that failed is not decoded: it would fail.
        let mut onboard = None;
        {
            let mut r = self.state.bundle_reader(key, &s.layout, 0, prefix_end)?;
            let staged = self.state.staged_reader()?;
            let mut buf = Vec::new();
            let (mut at, mut offset) = (s.rec.next_payload as usize, s.rec.next_offset);
            while let Some(p) = m.payloads.get(at) {
                let span = m.span_at(at);
                let end = offset + u64::from(p.encoded_len);
                if end > prefix_end {
                    break;
                }
                let ps = &m.payloads[span.clone()];
                // Staged already only when all of it is (a chunk of a solid group may have
                // been staged by another bundle in another grouping).
                let mut have = true;
                for q in ps {
                    have &= staged.contains(&q.chunk)?;
                }
                let damaged = bad.iter().any(|b| b.start < end && offset < b.end);
                if !have && !damaged {
                    buf.resize(p.encoded_len as usize, 0);
                    r.seek(offset);
                    r.read_exact(&mut buf).map_err(|e| LinkError::Bundle {
                        bundle: bundle.clone(),
                        source: ReceiveError::Truncated(e),
                    })?;
                    if !stage_payload(self.state, &tx, m, ps, &buf, &mut onboard, &mut report)? {
                        bad.push(offset..end);
                    }
                    batch += buf.len();
                }
                if !bad.iter().any(|b| b.start < end) {
                    s.rec.next_payload = span.end as _;
                    s.rec.next_offset = end;
                    if batch >= STAGE_BATCH {
                        // A checkpoint: what is staged, the cursor, the groups it passed.
                        drop_staged(self.state, &tx, key, &s.layout, s.rec.next_offset)?;
                        self.state.put_session(&tx, key, &s.rec)?;
                        self.state.db.commit(tx)?;
                        tx = self.state.db.begin_write()?;
                        batch = 0;
                    }
                }
                (at, offset) = (span.end, end);
            }
        }
        self.stats.payloads_staged += report.staged as u64;
        let complete = s.rec.next_payload as usize == m.payloads.len();
        // Drop decoded groups wholly staged, and the groups of the payloads that failed.
        drop_staged(self.state, &tx, key, &s.layout, s.rec.next_offset)?;
        let hit: BTreeSet<u32> = bad
            .iter()
            .flat_map(|b| groups_under(&s.layout, b.clone()))
            .collect();
        for &g in &hit {
            self.state.drop_groups(&tx, key, g..=g)?;
        }
        self.stats.groups_dropped += hit.len() as u64;
        if complete {
            finish_bundle(self.state, &tx, &id, true)?;
            self.state.forget_session(&tx, key)?;
        } else {
            self.state.put_session(&tx, key, &s.rec)?;
        }
        self.state.db.commit(tx)?;
        if complete {
            self.sessions.remove(key);
            self.done.insert(id);
            self.stats.bundles_completed.push(bundle);
        } else if !bad.is_empty() {
            self.reset(key)?;
        }
        Ok(())
    }

    /// The newest trusted session (announced or verified) of a bundle other than `id`, if it
    /// is newer than `sequence`: its sequence and bundle.
    fn newer_trusted(&self, id: &BundleId, sequence: u64) -> Option<(u64, BundleId)> {
        self.sessions
            .values()
            .filter(|o| o.rec.trusted() && o.rec.bundle != *id)
            .map(|o| (o.rec.sequence, o.rec.bundle))
            .max()
            .filter(|&(newest, _)| newest > sequence)
    }

    /// Session `key`'s head verified with `manifest`: it is never evicted now.
    fn verified(&mut self, key: &SessionKey, manifest: &Manifest) {
        if let Some(s) = self.sessions.get_mut(key) {
            s.rec.verified = true;
            s.rec.sequence = manifest.sequence;
        }
        self.settle(key);
    }

    /// Trusted session `key` is the one its bundle travels in, and newer than older trusted
    /// sessions: every other session of its bundle goes, and every trusted session of an older
    /// bundle (superseded; their records [`check_sequence`] marks when a head verifies).
    fn settle(&mut self, key: &SessionKey) {
        let Some(s) = self.sessions.get(key) else {
            return;
        };
        let (id, sequence) = (s.rec.bundle, s.rec.sequence);
        let gone: Vec<(SessionKey, BundleId)> = self
            .sessions
            .iter()
            .filter(|(k, s)| {
                *k != key && (s.rec.bundle == id || (s.rec.trusted() && s.rec.sequence < sequence))
            })
            .map(|(k, s)| (*k, s.rec.bundle))
            .collect();
        for (k, bundle) in gone {
            if bundle != id {
                self.done.insert(bundle);
            }
            self.drop_session(k);
            self.stats.dropped += 1;
        }
    }

    /// A bundle this device does not take (unsigned, untrusted, replayed, superseded): its head
    /// matched its id, so stop receiving that id for good, drop the session's data, and
    /// remember why in the bounded refusal table.
    fn reject(&mut self, key: &SessionKey, why: ReceiveError) -> Result<(), LinkError> {
        let Some(s) = self.sessions.get(key) else {
            return Ok(());
        };
        let (id, seq) = (s.rec.bundle, s.rec.seq);
        self.drop_session(*key);
        self.refuse_id(id, seq, why.to_string(), why.reason())
    }

    /// Remember that bundle `id` is refused for good (in the bounded refusal table), and
    /// take none of its frames any more.
    fn refuse_id(
        &mut self,
        id: BundleId,
        seq: u64,
        reason: String,
        code: Reason,
    ) -> Result<(), LinkError> {
        let tx = self.state.db.begin_write()?;
        let refusal = Refusal {
            seq,
            reason: reason.clone(),
            code: code.to_u8(),
        };
        // A refused id forgotten that comes back costs its head once more, nothing else.
        for old in self.state.refuse(&tx, &id, &refusal, MAX_REFUSALS)? {
            self.done.remove(&old);
        }
        self.state.db.commit(tx)?;
        self.done.insert(id);
        self.stats
            .refused_bundles
            .push(format!("{}: {reason}", narlink_protocol::digest::hex(&id)));
        Ok(())
    }

    /// A head that does not match its bundle id (forged or damaged shards decoded into it):
    /// drop the decoded groups of its first `end` bytes and ask for them again. Nothing
    /// else of the bundle is lost.
    fn drop_head(&mut self, key: &SessionKey, end: u64) -> Result<(), LinkError> {
        let Some(s) = self.sessions.get(key) else {
            return Ok(());
        };
        let groups = (0..s.layout.group_count())
            .take_while(|&g| s.layout.byte_range(g).is_some_and(|r| r.start < end))
            .last();
        let tx = self.state.db.begin_write()?;
        if let Some(last) = groups {
            self.state.drop_groups(&tx, key, 0..=last)?;
        }
        self.state.db.commit(tx)?;
        self.stats.groups_dropped += 1;
        self.reset(key)
    }

    /// The session the status report speaks for: the newest bundle verified or announced by
    /// a trusted key. Only a device that trusts no key (set up with `--allow-unsigned`, where
    /// nothing can be announced) falls back to the unverified session holding the most, if it
    /// holds more than one shard (junk of random ids holds one each). So on a device with
    /// trusted keys the report never names junk.
    fn current(&self) -> Option<&Session> {
        let trusted = self.sessions.values().filter(|s| s.rec.trusted());
        trusted.max_by_key(|s| s.rec.sequence).or_else(|| {
            self.sessions
                .values()
                .filter(|s| self.trusted.is_empty() && s.stored + s.pending >= s.substantial())
                .max_by_key(|s| (s.stored + s.pending, s.rec.seq))
        })
    }

    /// The status report for the bundle being received, if any (see `current`).
    pub fn status(&self, state_digest: [u8; 16]) -> Option<StatusReport> {
        let s = self.current()?;
        Some(s.tracker.status_report(state_digest, WirePhase::Receiving))
    }

    /// Bundles still being received.
    pub fn active(&self) -> usize {
        self.sessions.len()
    }
}

/// The groups that hold any of `bytes`.
fn groups_under(layout: &GroupLayout, bytes: std::ops::Range<u64>) -> std::ops::Range<u32> {
    let group_of = |at: u64| {
        layout
            .locate_shard(at / u64::from(layout.shard_size()))
            .map_or(layout.group_count(), |(g, _)| g)
    };
    if bytes.is_empty() {
        return 0..0;
    }
    group_of(bytes.start)..group_of(bytes.end - 1).saturating_add(1)
}

/// Check the pieces of session `s`'s payload section that are not checked yet and whose
/// groups have all decoded; returns the byte ranges (in the bundle) of those that failed.
/// A piece that starts below the staging cursor is not checked: the groups before the
/// cursor are gone, and the payloads it holds were verified when they were staged.
fn check_pieces(
    state: &DeviceState,
    key: &SessionKey,
    s: &mut Session,
) -> Result<Vec<std::ops::Range<u64>>, LinkError> {
    let Some(m) = s.manifest.as_ref() else {
        return Ok(Vec::new());
    };
    let pieces = &m.pieces;
    let section = m.payload_bytes();
    let start = s.layout.bundle_len().saturating_sub(section);
    s.pieces_ok.resize(pieces.hashes.len(), false);
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    let mut reader = None;
    for (i, ok) in s.pieces_ok.iter_mut().enumerate() {
        if *ok {
            continue;
        }
        let r = pieces.range(i, section);
        let bytes = start + r.start..start + r.end;
        if bytes.start < s.rec.next_offset {
            *ok = true;
            continue;
        }
        if !groups_under(&s.layout, bytes.clone()).all(|g| s.tracker.is_decoded(g)) {
            continue;
        }
        buf.resize((bytes.end - bytes.start) as usize, 0);
        let reader = match &mut reader {
            Some(r) => r,
            None => reader.insert(state.bundle_reader(key, &s.layout, 0, s.layout.bundle_len())?),
        };
        reader.seek(bytes.start);
        reader.read_exact(&mut buf).map_err(|e| LinkError::Bundle {
            bundle: narlink_protocol::digest::hex(&s.rec.bundle),
            source: ReceiveError::Truncated(e),
        })?;
        *ok = pieces.check(i, &buf);
        if !*ok {
            bad.push(bytes);
        }
    }
    Ok(bad)
}

/// Drop the groups of session `key` that lie wholly below bundle offset `staged` (their
/// payloads are staged), within `tx`.
fn drop_staged(
    state: &DeviceState,
    tx: &Tx,
    key: &SessionKey,
    layout: &GroupLayout,
    staged: u64,
) -> Result<(), StateError> {
    let below = (0..layout.group_count())
        .take_while(|&g| layout.byte_range(g).is_some_and(|r| r.end <= staged))
        .last();
    match below {
        Some(last) => state.drop_groups(tx, key, 0..=last),
        None => Ok(()),
    }
}

/// The current status report of the device, including link progress.
pub fn status_report(state: &DeviceState) -> Result<Option<StatusReport>, LinkError> {
    let r = LinkReceiver::open(state)?;
    let digest = short(&state.db.digest()?);
    let newest_bundle = state.bundles()?.last().map(|(_, b)| b.seq);
    match r.current() {
        Some(s) if s.rec.trusted() || newest_bundle.is_none_or(|b| s.rec.seq >= b) => {
            Ok(r.status(digest))
        }
        _ => Ok(None),
    }
}

impl LinkReceiver<'_> {
    /// Take a byte stream of concatenated frames (a file, standard input, a TCP stream):
    /// frames are cut out wherever reads end; garbage between them is skipped.
    pub fn handle_stream(&mut self, mut r: impl Read) -> Result<(), LinkError> {
        let mut splitter =
            narlink_protocol::frame::FrameSplitter::with_max_shard_size(self.limits.max_shard_size);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // What arrived so far still counts.
                    self.drain(&mut splitter)?;
                    self.flush()?;
                    return Err(StateError::Io {
                        path: "frame stream".into(),
                        source: e,
                    }
                    .into());
                }
            };
            splitter.push(&buf[..n]);
            self.drain(&mut splitter)?;
        }
        splitter.finish();
        self.drain(&mut splitter)?;
        self.stats.corrupt += splitter.stats().rejected;
        self.flush()
    }

    fn drain(
        &mut self,
        splitter: &mut narlink_protocol::frame::FrameSplitter,
    ) -> Result<(), LinkError> {
        while let Some(f) = splitter.next_frame() {
            self.handle_frame(f.as_ref())?;
        }
        Ok(())
    }
}
