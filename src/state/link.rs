//! The receiver's journal: what the link has delivered and not yet staged, durable frame by
//! frame. The receiver (`crate::device::link`) makes every decision; this module only stores.
//!
//! Tables:
//! - `link_sessions`: session key → [`LinkRecord`] (postcard): bundle id, link parameters,
//!   staging cursor.
//! - `session_shards`: (session key, group, shard) → frame payload. The code is systematic,
//!   so a group's data shards (indices below its `k`) are its bytes: a decoded group is one
//!   that holds every data shard. Decoding writes only the data shards that did not arrive
//!   and drops the parity shards, so a lossless pass writes each byte once.
//! - `refused`: bundle id → [`Refusal`] (postcard).
//!
//! Frame payloads are 1 KiB at the default parameters; redb writes values of a leaf page
//! rounded up to a power of two, so no table here holds values of arbitrary size (see
//! `crate::state::device` for staged payloads).

use std::io::{self, Read};

use narlink_protocol::bundle::BundleId;
use narlink_protocol::layout::GroupLayout;
use narlink_protocol::params::{CodecId, LinkParams};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::device::DeviceState;
use super::{Ctx, StateError, Tx};

/// Which session a frame belongs to: its bundle id and link parameters, hashed.
pub type SessionKey = [u8; 16];

const SESSIONS: TableDefinition<&SessionKey, &[u8]> = TableDefinition::new("link_sessions");
const SHARDS: TableDefinition<(&SessionKey, u32, u16), &[u8]> =
    TableDefinition::new("session_shards");
const REFUSED: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("refused");
/// Tables of earlier journal formats, dropped at open (the status report asks for what they
/// held again): link data keyed by bundle id alone, and decoded groups stored as one value.
const OLD_TABLES: [&str; 4] = ["link", "shards", "groups", "session_groups"];

/// What the journal persists per session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkRecord {
    pub bundle: BundleId,
    pub codec: u8,
    pub shard_size: u16,
    pub group_k: u16,
    pub parity: u16,
    pub bundle_len: u64,
    /// Arrival order.
    pub seq: u64,
    /// The manifest has been read and the bundle recorded.
    pub manifest_done: bool,
    /// Index and bundle offset of the next payload to stage.
    pub next_payload: u64,
    pub next_offset: u64,
    /// The manifest's signature and sequence were accepted.
    pub verified: bool,
    /// The manifest's sequence, once verified or announced.
    pub sequence: u64,
    /// A trusted key announced this session (its id, parameters and sequence) before its
    /// head was verified.
    pub announced: bool,
}

impl LinkRecord {
    /// Verified or announced by a trusted key: out of reach of unverified sessions.
    pub fn trusted(&self) -> bool {
        self.verified || self.announced
    }

    pub fn params(&self) -> Option<LinkParams> {
        Some(LinkParams {
            codec: CodecId::from_u8(self.codec)?,
            shard_size: self.shard_size,
            group_k: self.group_k,
            parity: self.parity,
            bundle_len: self.bundle_len,
        })
    }
}

/// Why a bundle id was refused for good, and when (arrival order).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub seq: u64,
    pub reason: String,
}

/// What the journal holds at open.
pub struct Journal {
    /// Ids refused for good.
    pub refused: Vec<BundleId>,
    /// Every session's record (`None`: it does not decode, written by another narlink
    /// version or damaged).
    pub sessions: Vec<(SessionKey, Option<LinkRecord>)>,
}

impl DeviceState {
    /// Open the journal (creating its tables, dropping those of earlier formats) and read
    /// its refusals and session records.
    pub fn journal(&self) -> Result<Journal, StateError> {
        let file = &self.db.file;
        let tx = self.db.begin_write()?;
        let mut j = Journal {
            refused: Vec::new(),
            sessions: Vec::new(),
        };
        for old in OLD_TABLES {
            let old: TableDefinition<&[u8], &[u8]> = TableDefinition::new(old);
            tx.0.delete_table(old).ctx(file)?;
        }
        {
            let t = tx.0.open_table(SESSIONS).ctx(file)?;
            tx.0.open_table(SHARDS).ctx(file)?;
            let refused = tx.0.open_table(REFUSED).ctx(file)?;
            for e in refused.iter().ctx(file)? {
                j.refused.push(*e.ctx(file)?.0.value());
            }
            for e in t.iter().ctx(file)? {
                let (k, v) = e.ctx(file)?;
                let rec = postcard::from_bytes::<LinkRecord>(v.value()).ok();
                j.sessions.push((*k.value(), rec));
            }
        }
        self.db.commit(tx)?;
        Ok(j)
    }

    /// The (group, shard) pairs session `key` holds, ascending.
    pub fn session_shards(&self, key: &SessionKey) -> Result<Vec<(u32, u16)>, StateError> {
        let file = &self.db.file;
        let tx = self.db.db.begin_read().ctx(file)?;
        let t = tx.open_table(SHARDS).ctx(file)?;
        let mut v = Vec::new();
        for e in t.range(shard_range(key, 0..=u32::MAX)).ctx(file)? {
            let (_, g, s) = e.ctx(file)?.0.value();
            v.push((g, s));
        }
        Ok(v)
    }

    /// Write session `key`'s record, within `tx`.
    pub fn put_session(
        &self,
        tx: &Tx,
        key: &SessionKey,
        rec: &LinkRecord,
    ) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(rec).unwrap_or_default();
        tx.0.open_table(SESSIONS)
            .ctx(&self.db.file)?
            .insert(key, bytes.as_slice())
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// Forget session `key`: its record and every shard it holds, within `tx`.
    pub fn forget_session(&self, tx: &Tx, key: &SessionKey) -> Result<(), StateError> {
        let file = &self.db.file;
        tx.0.open_table(SESSIONS).ctx(file)?.remove(key).ctx(file)?;
        self.drop_groups(tx, key, 0..=u32::MAX)
    }

    /// Store one frame payload of session `key`, within `tx`.
    pub fn put_shard(
        &self,
        tx: &Tx,
        key: &SessionKey,
        group: u32,
        shard: u16,
        payload: &[u8],
    ) -> Result<(), StateError> {
        tx.0.open_table(SHARDS)
            .ctx(&self.db.file)?
            .insert((key, group, shard), payload)
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// The shards of `group` session `key` holds, as of `tx`: (index, payload), ascending.
    pub fn group_shards(
        &self,
        tx: &Tx,
        key: &SessionKey,
        group: u32,
    ) -> Result<Vec<(u16, Vec<u8>)>, StateError> {
        let file = &self.db.file;
        let t = tx.0.open_table(SHARDS).ctx(file)?;
        let mut v = Vec::new();
        for e in t.range(shard_range(key, group..=group)).ctx(file)? {
            let (k, val) = e.ctx(file)?;
            v.push((k.value().2, val.value().to_vec()));
        }
        Ok(v)
    }

    /// Remove shards `which` of `group` of session `key`, within `tx`.
    pub fn remove_shards(
        &self,
        tx: &Tx,
        key: &SessionKey,
        group: u32,
        which: impl IntoIterator<Item = u16>,
    ) -> Result<(), StateError> {
        let mut t = tx.0.open_table(SHARDS).ctx(&self.db.file)?;
        for s in which {
            t.remove((key, group, s)).ctx(&self.db.file)?;
        }
        Ok(())
    }

    /// Remove every shard of the groups in `groups` of session `key`, within `tx`.
    pub fn drop_groups(
        &self,
        tx: &Tx,
        key: &SessionKey,
        groups: std::ops::RangeInclusive<u32>,
    ) -> Result<(), StateError> {
        let file = &self.db.file;
        let mut t = tx.0.open_table(SHARDS).ctx(file)?;
        let keys: Vec<(u32, u16)> = t
            .range(shard_range(key, groups))
            .ctx(file)?
            .map(|e| e.map(|(k, _)| (k.value().1, k.value().2)))
            .collect::<Result<_, _>>()
            .ctx(file)?;
        for (g, s) in keys {
            t.remove((key, g, s)).ctx(file)?;
        }
        Ok(())
    }

    /// Remember that `id` was refused for good, within `tx`, keeping at most `max` refusals
    /// (the oldest are forgotten first). Returns the ids forgotten.
    pub fn refuse(
        &self,
        tx: &Tx,
        id: &BundleId,
        refusal: &Refusal,
        max: usize,
    ) -> Result<Vec<BundleId>, StateError> {
        let file = &self.db.file;
        let mut t = tx.0.open_table(REFUSED).ctx(file)?;
        let rec = postcard::to_allocvec(refusal).unwrap_or_default();
        t.insert(id, rec.as_slice()).ctx(file)?;
        let mut all: Vec<(u64, BundleId)> = Vec::new();
        for e in t.iter().ctx(file)? {
            let (k, v) = e.ctx(file)?;
            let seq = postcard::from_bytes::<Refusal>(v.value()).map_or(0, |r| r.seq);
            all.push((seq, *k.value()));
        }
        all.sort();
        let old: Vec<BundleId> = all
            .iter()
            .take(all.len().saturating_sub(max))
            .map(|(_, id)| *id)
            .collect();
        for id in &old {
            t.remove(id).ctx(file)?;
        }
        Ok(old)
    }

    /// A reader of bytes `[pos, end)` of session `key`'s bundle, out of the data shards of
    /// its decoded groups (one consistent snapshot).
    pub fn bundle_reader(
        &self,
        key: &SessionKey,
        layout: &GroupLayout,
        pos: u64,
        end: u64,
    ) -> Result<BundleReader, StateError> {
        let file = &self.db.file;
        let tx = self.db.db.begin_read().ctx(file)?;
        Ok(BundleReader {
            table: tx.open_table(SHARDS).ctx(file)?,
            key: *key,
            layout: *layout,
            pos,
            end,
        })
    }
}

fn shard_range(
    key: &SessionKey,
    groups: std::ops::RangeInclusive<u32>,
) -> std::ops::RangeInclusive<(&SessionKey, u32, u16)> {
    (key, *groups.start(), 0u16)..=(key, *groups.end(), u16::MAX)
}

/// Reads bundle bytes out of the data shards of decoded groups (see [`DeviceState::bundle_reader`]).
pub struct BundleReader {
    table: redb::ReadOnlyTable<(&'static SessionKey, u32, u16), &'static [u8]>,
    key: SessionKey,
    layout: GroupLayout,
    pos: u64,
    end: u64,
}

impl BundleReader {
    /// Read from `pos` on (up to the end given at creation).
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }
}

impl Read for BundleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let size = u64::from(self.layout.shard_size());
        let (group, shard) = self
            .layout
            .locate_shard(self.pos / size)
            .ok_or_else(|| io::Error::other("offset past the bundle"))?;
        let v = self
            .table
            .get((&self.key, group, shard))
            .map_err(io::Error::other)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("group {group} not decoded (shard {shard} missing)"),
                )
            })?;
        let bytes = v.value();
        let at = (self.pos % size) as usize;
        let avail = (self.end - self.pos).min(size - at as u64) as usize;
        let n = buf.len().min(avail).min(bytes.len().saturating_sub(at));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shard shorter than the shard size",
            ));
        }
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}
