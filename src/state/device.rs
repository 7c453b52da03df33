//! The device's state: its path set and chunk index (a function of its Nix store), the
//! chunks staged from bundles, and each bundle's progress.
//!
//! Device-only tables:
//! - `staged`: chunk id → the staged span's record (see [`DeviceState::stage`]); verified on
//!   arrival and again when read.
//! - `staged_pieces`: (number, piece) → the bytes of a large staged payload, cut into pieces
//!   that fill leaf pages ([`crate::state::page_sized`]). redb writes a leaf page rounded up
//!   to a power of two: a 40 KiB payload in one value costs 64 KiB of flash, in pieces 32 + 8
//!   KiB. Payloads are numbered in staging order, so new pieces land at the end of the tree:
//!   keyed by chunk id, small pieces would share leaves with older ones at random and rewrite
//!   them (`benches/scripts/flash_wear.sh`).
//! - `bundles`: bundle id → [`BundleRecord`] (postcard).
//! - meta `removed`: the store paths garbage collection removed that the ground may not know
//!   of yet ([`RemovedLog`]), reported so the ground's mirror follows without an inventory.

use std::path::Path;

use narlink_protocol::bundle::BundleId;
use narlink_protocol::manifest::{ChunkId, Encoding, Manifest, Payload};
use narlink_protocol::status::device::Reason;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::medium::Medium;
use super::{Ctx, StateDb, StateError, Tx};

const STAGED: TableDefinition<&ChunkId, &[u8]> = TableDefinition::new("staged");
const PIECES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("staged_pieces");
/// Payloads up to this size stay in their record.
const INLINE: usize = 2048;
/// Flag on a head record's encoding byte: the bytes are in `staged_pieces`, and the record
/// ends with their length (u32 LE) and their number there (u64 LE) instead of the bytes.
const IN_PIECES: u8 = 0x80;
const BUNDLES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("bundles");

const FILE: &str = "device.redb";
/// The replay mark's second home, beside the database: restoring `device.redb` from a backup
/// (or re-creating it after damage) does not roll it back (protocol/SPEC.md, "Replay mark").
pub const MARK_FILE: &str = "replay-mark";
const ROLE: &str = "device";

/// Where a bundle stands on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Some payloads are still missing.
    Receiving,
    /// Every payload is staged; ready to import.
    Complete,
    /// Its paths are in the store and in the index.
    Imported,
    /// Import was refused or failed; see the record's note.
    Failed,
    /// A newer bundle from a trusted key arrived before this one was imported: it will never
    /// be imported (every bundle is planned against the state the ground last heard of, so
    /// the newer one carries what this one did).
    Superseded,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The decoded manifest (postcard), as received and checked.
    pub manifest: Vec<u8>,
    pub phase: Phase,
    /// Why the last import failed, for the operator.
    pub note: String,
    /// Monotonic arrival order, to import bundles in the order they came.
    pub seq: u64,
    /// Why it failed or will not be imported: a `status::device::Reason` code (0: it did
    /// not).
    pub reason: u8,
}

/// A bundle record as narlink wrote it before reason codes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct BundleRecordV1 {
    manifest: Vec<u8>,
    phase: Phase,
    note: String,
    seq: u64,
}

pub struct DeviceState {
    pub db: StateDb,
}

impl DeviceState {
    pub fn create(dir: &Path, store_uri: Option<&str>) -> Result<DeviceState, StateError> {
        DeviceState::init(StateDb::create(dir, FILE, ROLE)?, store_uri)
    }

    /// A fresh device state on an in-memory [`Medium`] (crash tests; no publish needed).
    /// `dir` holds what lives beside the database: the replay mark, spilled heads.
    pub fn create_on(
        medium: Medium,
        dir: &Path,
        store_uri: Option<&str>,
    ) -> Result<DeviceState, StateError> {
        DeviceState::init(
            StateDb::on_medium(medium, dir, FILE, ROLE, true)?,
            store_uri,
        )
    }

    /// The device state on `medium` (see [`DeviceState::create_on`]).
    pub fn open_on(medium: Medium, dir: &Path) -> Result<DeviceState, StateError> {
        Ok(DeviceState {
            db: StateDb::on_medium(medium, dir, FILE, ROLE, false)?,
        })
    }

    fn init(db: StateDb, store_uri: Option<&str>) -> Result<DeviceState, StateError> {
        db.set_meta("store", store_uri.unwrap_or("").as_bytes())?;
        let tx = db.begin_write()?;
        tx.0.open_table(STAGED).ctx(&db.file)?;
        tx.0.open_table(PIECES).ctx(&db.file)?;
        tx.0.open_table(BUNDLES).ctx(&db.file)?;
        db.commit(tx)?;
        Ok(DeviceState { db })
    }

    /// Make a state from [`DeviceState::create`] the one `open` finds (see
    /// [`StateDb::publish`]).
    pub fn publish(self) -> Result<(), StateError> {
        self.db.publish()
    }

    pub fn open(dir: &Path) -> Result<DeviceState, StateError> {
        Ok(DeviceState {
            db: StateDb::open(dir, FILE, ROLE)?,
        })
    }

    /// The store URI recorded at init (`None` = the default store).
    pub fn store_uri(&self) -> Result<Option<String>, StateError> {
        Ok(self
            .db
            .meta("store")?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|s| !s.is_empty()))
    }

    pub fn bundle(&self, id: &BundleId) -> Result<Option<BundleRecord>, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(BUNDLES).ctx(&self.db.file)?;
        let v = t.get(id).ctx(&self.db.file)?;
        v.map(|v| decode_bundle(v.value())).transpose()
    }

    /// All bundle records, in arrival order.
    pub fn bundles(&self) -> Result<Vec<(BundleId, BundleRecord)>, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(BUNDLES).ctx(&self.db.file)?;
        let mut v = Vec::new();
        for e in t.iter().ctx(&self.db.file)? {
            let (k, val) = e.ctx(&self.db.file)?;
            v.push((*k.value(), decode_bundle(val.value())?));
        }
        v.sort_by_key(|(_, r)| r.seq);
        Ok(v)
    }

    pub fn put_bundle(&self, tx: &Tx, id: &BundleId, rec: &BundleRecord) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(rec).unwrap_or_default();
        tx.0.open_table(BUNDLES)
            .ctx(&self.db.file)?
            .insert(id, bytes.as_slice())
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// The next arrival sequence number.
    pub fn next_seq(&self) -> Result<u64, StateError> {
        Ok(self.bundles()?.last().map_or(0, |(_, r)| r.seq + 1))
    }

    /// Stage a verified span's payload (one payload, or a head and the payloads joined to it),
    /// within `tx`. A delta names its reference by path. The head's record holds the bytes and
    /// the span's chunk list; each joined chunk's record names the head.
    ///
    /// ```text
    /// head:   u8 encoding (0 raw, 1 zstd, 2 zstd delta, 3 patch; | 0x80: in pieces), u16 n,
    ///         n × (16-byte chunk id, u32 length), [u16 path length, path, u64 offset,
    ///         u32 length: a delta's reference], then the payload bytes, or (in pieces)
    ///         u32 length, u64 number: the bytes in `staged_pieces` under (number, 0, 1, ...)
    /// joined: u8 4, 16-byte chunk id of the head
    /// ```
    pub fn stage(
        &self,
        tx: &Tx,
        span: &[Payload],
        source: Option<&Source>,
        bytes: &[u8],
    ) -> Result<(), StateError> {
        let Some(head) = span.first() else {
            return Ok(());
        };
        let mut v = Vec::with_capacity(3 + 20 * span.len() + bytes.len());
        let pieces = bytes.len() > INLINE;
        v.push(
            match head.encoding {
                Encoding::Raw => 0,
                Encoding::Zstd => 1,
                Encoding::ZstdRef => 2,
                Encoding::Bsdiff => 3,
                // Solid groups are staged part by part, each coded anew (device/receive.rs).
                Encoding::Joined | Encoding::Solid | Encoding::Part => {
                    return Err(StateError::Corrupt(
                        "a joined payload or a solid group as a staged head".into(),
                    ))
                }
            } | if pieces { IN_PIECES } else { 0 },
        );
        v.extend_from_slice(&(span.len() as u16).to_le_bytes());
        for p in span {
            v.extend_from_slice(&p.chunk);
            v.extend_from_slice(&p.raw_len.to_le_bytes());
        }
        if let Some(s) = source {
            v.extend_from_slice(&(s.path.len() as u16).to_le_bytes());
            v.extend_from_slice(s.path.as_bytes());
            v.extend_from_slice(&s.offset.to_le_bytes());
            v.extend_from_slice(&s.len.to_le_bytes());
        }
        if pieces {
            let mut t = tx.0.open_table(PIECES).ctx(&self.db.file)?;
            let number = match t.last().ctx(&self.db.file)? {
                Some((k, _)) => k.value().0 + 1,
                None => 0,
            };
            v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            v.extend_from_slice(&number.to_le_bytes());
            let mut rest = bytes;
            for (i, n) in super::page_sized(bytes.len(), 1, 0).into_iter().enumerate() {
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                t.insert((number, i as u32), piece).ctx(&self.db.file)?;
            }
        } else {
            v.extend_from_slice(bytes);
        }
        let mut t = tx.0.open_table(STAGED).ctx(&self.db.file)?;
        t.insert(&head.chunk, v.as_slice()).ctx(&self.db.file)?;
        let mut joined = [JOINED; 17];
        joined[1..].copy_from_slice(&head.chunk);
        for p in &span[1..] {
            t.insert(&p.chunk, joined.as_slice()).ctx(&self.db.file)?;
        }
        Ok(())
    }

    pub fn unstage(&self, tx: &Tx, id: &ChunkId) -> Result<(), StateError> {
        let file = &self.db.file;
        let number = {
            let mut t = tx.0.open_table(STAGED).ctx(file)?;
            let old = t.remove(id).ctx(file)?;
            old.and_then(|v| pieces_number(v.value()))
        };
        if let Some(number) = number {
            let mut t = tx.0.open_table(PIECES).ctx(file)?;
            let n = t.range((number, 0)..=(number, u32::MAX)).ctx(file)?.count() as u32;
            for i in 0..n {
                t.remove((number, i)).ctx(file)?;
            }
        }
        Ok(())
    }

    /// Which of `ids` are staged.
    pub fn staged_set(&self, ids: impl Iterator<Item = ChunkId>) -> Result<Vec<bool>, StateError> {
        let r = self.staged_reader()?;
        ids.map(|id| r.contains(&id)).collect()
    }

    /// A snapshot reader of staged payloads.
    pub fn staged_reader(&self) -> Result<StagedReader, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(STAGED).ctx(&self.db.file)?;
        // A state from before pieces has no such table until something is staged.
        let pieces = match tx.open_table(PIECES) {
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            r => Some(r.ctx(&self.db.file)?),
        };
        Ok(StagedReader {
            t,
            pieces,
            file: self.db.file.clone(),
        })
    }
}

pub struct StagedReader {
    t: redb::ReadOnlyTable<&'static ChunkId, &'static [u8]>,
    pieces: Option<redb::ReadOnlyTable<(u64, u32), &'static [u8]>>,
    file: std::path::PathBuf,
}

/// The on-board bytes a delta was made against: `len` bytes at `offset` of the normalized NAR
/// of `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: String,
    pub offset: u64,
    pub len: u32,
}

/// A staged span: its payloads (the head, then those joined to it), its reference (for a
/// delta), its bytes.
pub struct Staged {
    pub span: Vec<Payload>,
    pub source: Option<Source>,
    pub bytes: Vec<u8>,
}

/// The number a head record's pieces are stored under, if they are in pieces (the record's
/// last eight bytes, see [`DeviceState::stage`]).
fn pieces_number(record: &[u8]) -> Option<u64> {
    let kind = *record.first()?;
    if kind == JOINED || kind & IN_PIECES == 0 {
        return None;
    }
    record.last_chunk::<8>().map(|n| u64::from_le_bytes(*n))
}

/// Record kind of a joined chunk (see [`DeviceState::stage`]).
const JOINED: u8 = 4;

/// The head a joined chunk's record names; `None` for a head's record (or a malformed one).
fn joined_head(record: &[u8]) -> Option<ChunkId> {
    match record {
        [JOINED, head @ ..] => head.try_into().ok(),
        _ => None,
    }
}

impl StagedReader {
    /// The staged span that holds chunk `id`: the head's id and the span.
    pub fn get(&self, id: &ChunkId) -> Result<Option<(ChunkId, Staged)>, StateError> {
        let corrupt =
            || StateError::Corrupt(format!("staged chunk {}", crate::payload::short_id(id)));
        let Some(v) = self.t.get(id).ctx(&self.file)? else {
            return Ok(None);
        };
        let mut head = *id;
        let mut v = v.value().to_vec();
        if v.first() == Some(&JOINED) {
            head = joined_head(&v).ok_or_else(corrupt)?;
            v = match self.t.get(&head).ctx(&self.file)? {
                Some(h) => h.value().to_vec(),
                // Its span was unstaged by the import of another bundle that had it: the
                // chunk is on board now, or the bundle needing it was planned stale.
                None => return Ok(None),
            };
        }
        let mut r = narlink_protocol::wire::Reader::new(&v);
        let kind = r.u8().map_err(|_| corrupt())?;
        let encoding = match kind & !IN_PIECES {
            0 => Encoding::Raw,
            1 => Encoding::Zstd,
            2 => Encoding::ZstdRef,
            3 => Encoding::Bsdiff,
            _ => return Err(corrupt()),
        };
        let n = r.u16_le().map_err(|_| corrupt())?;
        let mut span = Vec::with_capacity(usize::from(n));
        for i in 0..n {
            let chunk = r.take_array::<16>().map_err(|_| corrupt())?;
            let raw_len = r.u32_le().map_err(|_| corrupt())?;
            span.push(Payload {
                chunk,
                raw_len,
                encoded_len: 0,
                encoding: if i == 0 { encoding } else { Encoding::Joined },
                reference: None,
            });
        }
        let source = if encoding.needs_reference() {
            let n = r.u16_le().map_err(|_| corrupt())?;
            let path = r.take(usize::from(n)).map_err(|_| corrupt())?;
            let path = String::from_utf8(path.to_vec()).map_err(|_| corrupt())?;
            let offset = r.u64_le().map_err(|_| corrupt())?;
            let len = r.u32_le().map_err(|_| corrupt())?;
            Some(Source { path, offset, len })
        } else {
            None
        };
        let bytes = if kind & IN_PIECES == 0 {
            r.take_rest().to_vec()
        } else {
            let len = r.u32_le().map_err(|_| corrupt())? as usize;
            let number = r.u64_le().map_err(|_| corrupt())?;
            self.pieces_of(number, len).ok_or_else(corrupt)??
        };
        match span.first_mut() {
            Some(p) if p.chunk == head => p.encoded_len = bytes.len() as u32,
            _ => return Err(corrupt()),
        }
        Ok(Some((
            head,
            Staged {
                span,
                source,
                bytes,
            },
        )))
    }

    /// The `len` bytes staged in pieces under `number`; `None` if they are not all there.
    fn pieces_of(&self, number: u64, len: usize) -> Option<Result<Vec<u8>, StateError>> {
        let t = self.pieces.as_ref()?;
        // The length is from the database, which may be damaged: grow as pieces come.
        let mut bytes = Vec::with_capacity(len.min(16 << 20));
        let pieces = match t.range((number, 0)..=(number, u32::MAX)).ctx(&self.file) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        for (i, e) in pieces.enumerate() {
            match e.ctx(&self.file) {
                Ok((k, v)) if k.value().1 == i as u32 && bytes.len() < len => {
                    bytes.extend_from_slice(v.value())
                }
                Ok(_) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        (bytes.len() == len).then_some(Ok(bytes))
    }

    /// Whether chunk `id` is staged: its record, and for a joined chunk its head's.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StateError> {
        let Some(v) = self.t.get(id).ctx(&self.file)? else {
            return Ok(false);
        };
        match joined_head(v.value()) {
            Some(head) => Ok(self.t.get(&head).ctx(&self.file)?.is_some()),
            None => Ok(true),
        }
    }
}

fn decode_bundle(bytes: &[u8]) -> Result<BundleRecord, StateError> {
    if let Ok(r) = postcard::from_bytes::<BundleRecord>(bytes) {
        return Ok(r);
    }
    let old: BundleRecordV1 =
        postcard::from_bytes(bytes).map_err(|_| StateError::Corrupt("bundle record".into()))?;
    let reason = match old.phase {
        Phase::Superseded => Reason::Superseded,
        Phase::Failed => Reason::Other,
        _ => Reason::None,
    };
    Ok(BundleRecord {
        manifest: old.manifest,
        phase: old.phase,
        note: old.note,
        seq: old.seq,
        reason: reason.to_u8(),
    })
}

impl BundleRecord {
    pub fn manifest(&self) -> Result<Manifest, StateError> {
        Manifest::from_bytes(&self.manifest)
            .map_err(|e| StateError::Corrupt(format!("stored manifest: {e}")))
    }
}

impl DeviceState {
    /// The public keys this device trusts (Nix format, one per line), and whether it
    /// accepts unsigned bundles.
    pub fn trust(&self) -> Result<(Vec<narlink_protocol::signature::PublicKey>, bool), StateError> {
        let keys = self.db.meta("trusted_keys")?.unwrap_or_default();
        let keys = String::from_utf8_lossy(&keys)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                narlink_protocol::signature::PublicKey::from_nix(l)
                    .map_err(|e| StateError::Corrupt(format!("trusted key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allow = self.db.meta("allow_unsigned")?.is_some_and(|b| b == b"1");
        Ok((keys, allow))
    }

    /// Trust these keys (added to those already trusted), stop trusting the keys named
    /// `remove`, and set the unsigned policy, in one commit.
    pub fn set_trust(
        &self,
        keys: &[narlink_protocol::signature::PublicKey],
        remove: &[String],
        allow_unsigned: bool,
    ) -> Result<(), StateError> {
        let (mut all, _) = self.trust()?;
        all.retain(|k| !remove.contains(&k.name));
        for k in keys {
            if !all.contains(k) {
                all.push(k.clone());
            }
        }
        let text: Vec<String> = all.iter().map(|k| k.to_nix()).collect();
        let tx = self.db.begin_write()?;
        self.db
            .put_meta(&tx, "trusted_keys", text.join("\n").as_bytes())?;
        self.db.put_meta(
            &tx,
            "allow_unsigned",
            if allow_unsigned { b"1" } else { b"0" },
        )?;
        self.db.commit(tx)
    }

    /// The replay mark: the sequence number of the newest bundle imported (0 before the
    /// first), the larger of the database's record and the mark file beside it (see
    /// [`MARK_FILE`]). A damaged record is an error, never 0: that would let old bundles be
    /// replayed.
    pub fn last_sequence(&self) -> Result<u64, StateError> {
        let in_db = match self.db.meta("sequence")? {
            None => 0,
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| StateError::Corrupt("replay mark (sequence)".into()))?,
        };
        Ok(in_db.max(self.file_mark()?))
    }

    fn mark_path(&self) -> std::path::PathBuf {
        self.db.dir().join(MARK_FILE)
    }

    /// The mark file's sequence (0 if there is none).
    fn file_mark(&self) -> Result<u64, StateError> {
        let path = self.mark_path();
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(super::io_err(&path)(e)),
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| StateError::Corrupt(path.display().to_string())),
        }
    }

    /// Raise the mark file to `sequence` (never lower it): written aside, synced, renamed
    /// into place, directory synced. Called once an import's commit is durable, so a crash in
    /// between leaves the database's record ahead, and [`Self::last_sequence`] takes the larger.
    pub fn save_mark(&self, sequence: u64) -> Result<(), StateError> {
        if sequence <= self.file_mark()? {
            return Ok(());
        }
        super::write_durably(&self.mark_path(), format!("{sequence}\n").as_bytes(), 0o644)
    }

    /// Record an imported bundle's sequence number, within `tx`.
    pub fn note_sequence(&self, tx: &Tx, sequence: u64) -> Result<(), StateError> {
        if sequence > self.last_sequence()? {
            tx.0.open_table(super::META)
                .ctx(&self.db.file)?
                .insert("sequence", sequence.to_le_bytes().as_slice())
                .ctx(&self.db.file)?;
        }
        Ok(())
    }
}

/// What a device lets the link take, configured at init (`device init --max-bundle ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// Largest bundle accepted, in bytes (also caps staging per bundle).
    pub max_bundle_bytes: u64,
    /// Disk for frames and decoded groups of all bundles being received.
    pub link_quota_bytes: u64,
    /// Disk for a bundle whose manifest has not yet been verified (its signature): enough
    /// for the manifest while the ground interleaves it with the groups around it (64
    /// groups, 64 MiB at the default link parameters); junk frames cannot take more.
    pub unverified_bytes: u64,
    /// Bundles received at once.
    pub max_active_bundles: u32,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            max_bundle_bytes: 16 << 30,
            link_quota_bytes: 20 << 30,
            unverified_bytes: 256 << 20,
            max_active_bundles: 4,
        }
    }
}

impl DeviceState {
    /// The limits set at init (the defaults for a state from before limits existed). Limits
    /// that do not decode are an error, never silently the defaults.
    pub fn limits(&self) -> Result<DeviceLimits, StateError> {
        match self.db.meta("limits")? {
            None => Ok(DeviceLimits::default()),
            Some(b) => {
                postcard::from_bytes(&b).map_err(|_| StateError::Corrupt("device limits".into()))
            }
        }
    }

    pub fn set_limits(&self, l: &DeviceLimits) -> Result<(), StateError> {
        self.db
            .set_meta("limits", &postcard::to_allocvec(l).unwrap_or_default())
    }
}

/// The journal of one update's last steps (design invariant 8): written in the import's own
/// commit, then advanced one stage per commit, so after a kill at any instant the next run
/// knows which step it was in and finishes or undoes it (see `device::activate::land`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landing {
    pub bundle: BundleId,
    /// The bundle's first root: what the profile switches to.
    pub root: String,
    pub profile: std::path::PathBuf,
    pub command: Option<String>,
    pub timeout_secs: u64,
    /// The generation live before the switch; `None` if the profile had none.
    pub previous: Option<u32>,
    pub stage: Stage,
}

/// Where a landing stands. Each stage names the step to do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Imported: make `root` the profile's generation next.
    Switch,
    /// Generation `generation` holds `root`: run the activation next (again, after a kill in
    /// the middle of it).
    Activate { generation: u32 },
    /// The activation failed: return to the previous generation (or to no profile) next.
    RollBack { generation: u32, failure: String },
    /// Finished: `activated`, or rolled back with `failure`; `live` is the generation live now.
    Done {
        generation: u32,
        activated: bool,
        live: Option<u32>,
        failure: Option<String>,
    },
}

impl DeviceState {
    /// The journal of the last update's landing, if one was ever recorded.
    pub fn landing(&self) -> Result<Option<Landing>, StateError> {
        self.db
            .meta("landing")?
            .map(|b| {
                postcard::from_bytes(&b).map_err(|_| StateError::Corrupt("landing journal".into()))
            })
            .transpose()
    }

    /// Record `l`, within `tx`.
    pub fn put_landing(&self, tx: &Tx, l: &Landing) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(l).unwrap_or_default();
        self.db.put_meta(tx, "landing", &bytes)
    }

    /// Record `l` in a commit of its own (durable before the next step starts).
    pub fn save_landing(&self, l: &Landing) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        self.put_landing(&tx, l)?;
        self.db.commit(tx)
    }

    /// The probation window the landing of `bundle` asked for (none: no probation), within
    /// the commit that journals the landing.
    pub fn put_probation_window(
        &self,
        tx: &Tx,
        bundle: &BundleId,
        window: Option<&super::probation::Window>,
    ) -> Result<(), StateError> {
        let bytes = match window {
            Some(w) => serde_json::to_vec(&(narlink_protocol::digest::hex(bundle), w))
                .expect("a window serializes"),
            None => Vec::new(),
        };
        self.db.put_meta(tx, "probation-window", &bytes)
    }

    /// The bundle whose landing asked for probation, and its window.
    pub fn probation_window(
        &self,
    ) -> Result<Option<(String, super::probation::Window)>, StateError> {
        match self.db.meta("probation-window")? {
            Some(b) if !b.is_empty() => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|_| StateError::Corrupt("probation window".into())),
            _ => Ok(None),
        }
    }
}

/// Store paths that left the device (garbage collection) since the ground last planned a
/// bundle against the device's state: every report names them (protocol/SPEC.md, "Status
/// report"), so the ground's mirror can follow a GC without an inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedLog {
    pub paths: Vec<String>,
    /// Older entries were forgotten to keep the log within [`RemovedLog::MAX`].
    pub lost: bool,
}

impl RemovedLog {
    /// Paths the log keeps; an inventory is the way back beyond that.
    pub const MAX: usize = 4096;
}

impl DeviceState {
    /// The log of removed paths.
    pub fn removed_log(&self) -> Result<RemovedLog, StateError> {
        self.db
            .meta("removed")?
            .map(|b| {
                postcard::from_bytes(&b).map_err(|_| StateError::Corrupt("removed log".into()))
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Add `paths` to the log of removed paths, within `tx`.
    pub fn note_removed(&self, tx: &Tx, paths: &[String]) -> Result<(), StateError> {
        let mut log = self.removed_log()?;
        log.paths.extend(paths.iter().cloned());
        if log.paths.len() > RemovedLog::MAX {
            let extra = log.paths.len() - RemovedLog::MAX;
            log.paths.drain(..extra);
            log.lost = true;
        }
        self.put_removed(tx, &log)
    }

    /// Empty the log, within `tx`: the ground planned against the state that follows it.
    pub fn clear_removed(&self, tx: &Tx) -> Result<(), StateError> {
        self.put_removed(tx, &RemovedLog::default())
    }

    fn put_removed(&self, tx: &Tx, log: &RemovedLog) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(log).unwrap_or_default();
        self.db.put_meta(tx, "removed", &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before reason codes still decode, their reason taken from the phase;
    /// records of this version decode as written.
    #[test]
    fn bundle_records_of_the_earlier_format_decode() {
        for (phase, reason) in [
            (Phase::Superseded, Reason::Superseded),
            (Phase::Failed, Reason::Other),
            (Phase::Imported, Reason::None),
        ] {
            let old = BundleRecordV1 {
                manifest: vec![1, 2, 3],
                phase,
                note: "why".into(),
                seq: 7,
            };
            let r = decode_bundle(&postcard::to_allocvec(&old).unwrap()).unwrap();
            assert_eq!(
                (r.manifest, r.phase, r.note, r.seq),
                (vec![1, 2, 3], phase, "why".into(), 7)
            );
            assert_eq!(r.reason, reason.to_u8());
        }
        let new = BundleRecord {
            manifest: vec![9],
            phase: Phase::Failed,
            note: String::new(),
            seq: 1,
            reason: Reason::StaleBase.to_u8(),
        };
        let r = decode_bundle(&postcard::to_allocvec(&new).unwrap()).unwrap();
        assert_eq!(r.reason, Reason::StaleBase.to_u8());
        assert!(decode_bundle(&[0xff; 3]).is_err());
    }
}
