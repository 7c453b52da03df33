//! The receiver's journal: what the link has delivered and not yet staged, durable frame by
//! frame. The receiver (`crate::device::link`) makes every decision; this module only stores.
//!
//! Tables:
//! - `link_sessions`: session key → [`LinkRecord`] (postcard): bundle id, link parameters,
//!   staging cursor.
//! - `session_runs`: (session key, group, first shard) → a run of shards of that group
//!   committed together, cut to fill leaf pages ([`crate::state::page_sized`]):
//!   ```text
//!   u16 n, n × u16 shard index (ascending, the first is the key's), n × payload
//!   ```
//!   (every payload of a session is one shard size long). Each shard held is in exactly one
//!   run, so keys are unique. The code is systematic, so a group's data shards (indices
//!   below its `k`) are its bytes: a decoded group is one that holds every data shard.
//!   Decoding writes only the data shards that did not arrive and drops the parity shards,
//!   so a lossless pass writes each byte once.
//! - `refused`: bundle id → [`Refusal`] (postcard).
//!
//! redb writes a leaf page rounded up to a power of two, and a leaf holds three 1 KiB frame
//! payloads with their keys in 4 KiB: shards one per value cost 1.39x their bytes on flash,
//! runs of 31 fill a 32 KiB page (docs/measurements.md, "Flash wear": a throwaway program
//! over redb, and the intake as a whole by `benches/scripts/flash_wear.sh`). Runs are not
//! limited to consecutive shards: under loss, runs of consecutive shards would be short and
//! of any length, each rounded up to its own power of two.

use std::collections::HashMap;
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
    TableDefinition::new("session_runs");
const REFUSED: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("refused");
/// Tables of earlier journal formats, dropped at open (the status report asks for what they
/// held again): link data keyed by bundle id alone, decoded groups stored as one value, one
/// shard per value.
const OLD_TABLES: [&str; 5] = [
    "link",
    "shards",
    "groups",
    "session_groups",
    "session_shards",
];

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
    /// The reason as a `status::device::Reason` code, for the status report.
    pub code: u8,
}

/// A refusal as narlink wrote it before reason codes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RefusalV1 {
    seq: u64,
    reason: String,
}

fn decode_refusal(bytes: &[u8]) -> Option<Refusal> {
    postcard::from_bytes(bytes).ok().or_else(|| {
        let old: RefusalV1 = postcard::from_bytes(bytes).ok()?;
        Some(Refusal {
            seq: old.seq,
            reason: old.reason,
            code: narlink_protocol::status::device::Reason::Other.to_u8(),
        })
    })
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
    /// The bundles refused for good that the device remembers, oldest first (read only: the
    /// table may not exist yet).
    pub fn refusals(&self) -> Result<Vec<(BundleId, Refusal)>, StateError> {
        let file = &self.db.file;
        let Some(t) = self.db.read_table(REFUSED)? else {
            return Ok(Vec::new());
        };
        let mut v = Vec::new();
        for e in t.iter().ctx(file)? {
            let (k, val) = e.ctx(file)?;
            if let Some(r) = decode_refusal(val.value()) {
                v.push((*k.value(), r));
            }
        }
        v.sort_by_key(|(_, r)| r.seq);
        Ok(v)
    }

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

    /// The (group, shard) pairs session `key` (of shard size `size`) holds, ascending.
    pub fn session_shards(
        &self,
        key: &SessionKey,
        size: u16,
    ) -> Result<Vec<(u32, u16)>, StateError> {
        let file = &self.db.file;
        let tx = self.db.db.begin_read().ctx(file)?;
        let t = tx.open_table(SHARDS).ctx(file)?;
        let mut v = Vec::new();
        for e in t.range(shard_range(key, 0..=u32::MAX)).ctx(file)? {
            let (k, run) = e.ctx(file)?;
            let g = k.value().1;
            v.extend(Run::parse(run.value(), size)?.indices().map(|s| (g, s)));
        }
        v.sort_unstable();
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

    /// Store shards of `group` of session `key` (shard size `size`), within `tx`: (index,
    /// payload) pairs, ascending, none held already.
    pub fn put_shards(
        &self,
        tx: &Tx,
        key: &SessionKey,
        size: u16,
        group: u32,
        shards: &[(u16, &[u8])],
    ) -> Result<(), StateError> {
        let mut t = tx.0.open_table(SHARDS).ctx(&self.db.file)?;
        let mut rest = shards;
        for n in super::page_sized(shards.len(), usize::from(size) + 2, 2) {
            let (run, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            if let Some(&(first, _)) = run.first() {
                t.insert((key, group, first), Run::encode(run).as_slice())
                    .ctx(&self.db.file)?;
            }
        }
        Ok(())
    }

    /// The shards of `group` session `key` (shard size `size`) holds, as of `tx`: (index,
    /// payload), ascending.
    pub fn group_shards(
        &self,
        tx: &Tx,
        key: &SessionKey,
        size: u16,
        group: u32,
    ) -> Result<Vec<(u16, Vec<u8>)>, StateError> {
        let file = &self.db.file;
        let t = tx.0.open_table(SHARDS).ctx(file)?;
        let mut v = Vec::new();
        for e in t.range(shard_range(key, group..=group)).ctx(file)? {
            let run = e.ctx(file)?.1;
            let run = Run::parse(run.value(), size)?;
            v.extend(run.shards().map(|(i, b)| (i, b.to_vec())));
        }
        v.sort_unstable_by_key(|(i, _)| *i);
        Ok(v)
    }

    /// Remove shards `which` of `group` of session `key` (shard size `size`), within `tx`;
    /// the runs they were in keep their other shards.
    pub fn remove_shards(
        &self,
        tx: &Tx,
        key: &SessionKey,
        size: u16,
        group: u32,
        which: &[u16],
    ) -> Result<(), StateError> {
        if which.is_empty() {
            return Ok(());
        }
        let file = &self.db.file;
        let mut t = tx.0.open_table(SHARDS).ctx(file)?;
        let mut touched: Vec<(u16, Vec<u8>)> = Vec::new();
        for e in t.range(shard_range(key, group..=group)).ctx(file)? {
            let (k, run) = e.ctx(file)?;
            if Run::parse(run.value(), size)?
                .indices()
                .any(|i| which.contains(&i))
            {
                touched.push((k.value().2, run.value().to_vec()));
            }
        }
        let mut keep: Vec<(u16, &[u8])> = Vec::new();
        for (first, run) in &touched {
            t.remove((key, group, *first)).ctx(file)?;
            let shards = Run::parse(run, size)?.shards();
            keep.extend(shards.filter(|(i, _)| !which.contains(i)));
        }
        drop(t);
        keep.sort_unstable_by_key(|(i, _)| *i);
        self.put_shards(tx, key, size, group, &keep)
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
            let seq = decode_refusal(v.value()).map_or(0, |r| r.seq);
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
            runs: None,
        })
    }
}

/// One run of shards as stored (see the module doc).
struct Run<'v> {
    indices: &'v [u8],
    payloads: &'v [u8],
    size: usize,
}

impl<'v> Run<'v> {
    fn encode(shards: &[(u16, &[u8])]) -> Vec<u8> {
        let len = shards.iter().map(|(_, p)| 2 + p.len()).sum::<usize>();
        let mut v = Vec::with_capacity(2 + len);
        v.extend_from_slice(&(shards.len() as u16).to_le_bytes());
        for (i, _) in shards {
            v.extend_from_slice(&i.to_le_bytes());
        }
        for (_, p) in shards {
            v.extend_from_slice(p);
        }
        v
    }

    fn parse(v: &'v [u8], size: u16) -> Result<Run<'v>, StateError> {
        let corrupt = || StateError::Corrupt("a run of link shards".into());
        let (n, rest) = v.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let n = usize::from(u16::from_le_bytes(*n));
        let size = usize::from(size);
        if rest.len() != n * (2 + size) {
            return Err(corrupt());
        }
        let (indices, payloads) = rest.split_at(2 * n);
        Ok(Run {
            indices,
            payloads,
            size,
        })
    }

    fn indices(&self) -> impl Iterator<Item = u16> + 'v {
        self.indices
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn shards(&self) -> impl Iterator<Item = (u16, &'v [u8])> + 'v {
        let payloads = self.payloads.chunks_exact(self.size.max(1));
        self.indices().zip(payloads)
    }

    /// The payload of shard `i`, if this run holds it.
    fn get(&self, i: u16) -> Option<&'v [u8]> {
        self.shards().find(|&(j, _)| j == i).map(|(_, p)| p)
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
    /// For the group read last: which run (its first shard) holds each shard.
    runs: Option<(u32, HashMap<u16, u16>)>,
}

impl BundleReader {
    /// Read from `pos` on (up to the end given at creation).
    pub fn seek(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The payload of `shard` of `group`, if held.
    fn shard(&mut self, group: u32, shard: u16) -> io::Result<Option<Vec<u8>>> {
        let size = self.layout.shard_size();
        if self.runs.as_ref().is_none_or(|(g, _)| *g != group) {
            let mut map = HashMap::new();
            let runs = self
                .table
                .range(shard_range(&self.key, group..=group))
                .map_err(io::Error::other)?;
            for e in runs {
                let (k, run) = e.map_err(io::Error::other)?;
                let first = k.value().2;
                let run = Run::parse(run.value(), size).map_err(io::Error::other)?;
                map.extend(run.indices().map(|i| (i, first)));
            }
            self.runs = Some((group, map));
        }
        let Some(&first) = self.runs.as_ref().and_then(|(_, m)| m.get(&shard)) else {
            return Ok(None);
        };
        let Some(v) = self
            .table
            .get((&self.key, group, first))
            .map_err(io::Error::other)?
        else {
            return Ok(None);
        };
        let run = Run::parse(v.value(), size).map_err(io::Error::other)?;
        Ok(run.get(shard).map(<[u8]>::to_vec))
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
        let missing = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("group {group} not decoded (shard {shard} missing)"),
            )
        };
        let bytes = self.shard(group, shard)?.ok_or_else(missing)?;
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

#[cfg(test)]
mod refusal_tests {
    use super::*;

    /// Refusals written before reason codes decode with the code "other".
    #[test]
    fn refusals_of_the_earlier_format_decode() {
        let old = RefusalV1 {
            seq: 3,
            reason: "unsigned".into(),
        };
        let r = decode_refusal(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((r.seq, r.reason.as_str()), (3, "unsigned"));
        assert_eq!(
            r.code,
            narlink_protocol::status::device::Reason::Other.to_u8()
        );
        let new = Refusal {
            seq: 4,
            reason: "replayed".into(),
            code: 4,
        };
        let r = decode_refusal(&postcard::to_allocvec(&new).unwrap()).unwrap();
        assert_eq!(r.code, 4);
    }
}
