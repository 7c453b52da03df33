//! Persistent state in redb: the set of store paths a device holds and the chunk index over
//! their NARs. The device keeps one (its truth); the ground keeps a mirror (its belief).
//!
//! Tables shared by both roles:
//! - `paths`: store path → [`PathRecord`] (postcard): narHash, narSize, references, deriver,
//!   chunk list of the NAR.
//! - `chunk_locs` (multimap): chunk id → (store path, NAR offset, length). The first location
//!   in key order is the one used, so the index is a function of the set of paths.
//! - `meta`: role, chunking parameters, store URI.

pub mod device;
pub mod identity;
pub mod link;
pub mod medium;
pub mod mirror;
pub mod probation;

use std::path::{Path, PathBuf};

use narlink_protocol::digest::state_digest;
use narlink_protocol::manifest::{ChunkId, ChunkParams, ChunkRef, Rewrites};
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::chunking::PARAMS;

pub(crate) const PATHS: TableDefinition<&str, &[u8]> = TableDefinition::new("paths");
pub(crate) const CHUNK_LOCS: MultimapTableDefinition<&ChunkId, (&str, u64, u32)> =
    MultimapTableDefinition::new("chunk_locs");
/// redb's page cache: small, so the device's memory is bounded by configuration, not by
/// how much it stores.
const CACHE_BYTES: usize = 4 << 20;
/// How long to wait for another process to release the state database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Db { path: PathBuf, source: redb::Error },
    #[error("{path} holds a narlink {found} state, not a {expected} state")]
    Role {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{0} is in use by another narlink process (a running `device listen`?); stop it or try again")]
    Busy(PathBuf),
    #[error(
        "{0} was written by an older narlink (redb file format {1}), which this narlink cannot \
         read: move it aside and run `{2}` again"
    )]
    OldFormat(PathBuf, u8, &'static str),
    #[error(
        "{0} already exists: init starts a state afresh; move it aside first if that is meant"
    )]
    Exists(PathBuf),
    #[error("{0} holds no narlink state: run `{1}` first")]
    Missing(PathBuf, &'static str),
    #[error(
        "{path} was indexed with chunking {found:?}, this narlink uses {PARAMS:?}: re-run init"
    )]
    Chunking { path: PathBuf, found: ChunkParams },
    #[error("state record for {0} does not decode: the state database is damaged; see docs/operations.md, \"A damaged state database\"")]
    Corrupt(String),
    #[error("{path} is damaged ({detail}): see docs/operations.md, \"A damaged state database\", to recover it keeping the replay mark")]
    Damaged { path: PathBuf, detail: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the state knows of one store path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRecord {
    pub nar_hash: [u8; 32],
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    /// Chunks of the normalized NAR.
    pub chunks: Vec<ChunkRef>,
    /// Where the NAR holds store hashes (see [`crate::normalize`]), sorted.
    pub rewrites: Vec<crate::normalize::Rewrite>,
}

impl PathRecord {
    /// The record of a path a manifest brings, whose NAR hashes to `nar_hash` (the entry's
    /// own on the ground; on a device, the one it computed and checked against the bundle's
    /// commitment).
    pub fn of(p: &narlink_protocol::manifest::PathEntry, nar_hash: [u8; 32]) -> Self {
        PathRecord {
            nar_hash,
            nar_size: p.nar_size,
            references: p.references.clone(),
            deriver: p.deriver.clone(),
            chunks: p.chunks.clone(),
            // `Manifest::check` accepted these (the same bounds: own hash + references); a
            // device has found scanned ones before (`ChunkSource::find_rewrites`).
            rewrites: crate::normalize::decode(&p.rewrites, p.references.len() + 1, p.nar_size)
                .unwrap_or_default(),
        }
    }

    /// The manifest entry that brings this path as `store_path`, every chunk listed (no copy
    /// runs): the inverse of [`PathRecord::of`].
    pub fn to_entry(&self, store_path: &str) -> narlink_protocol::manifest::PathEntry {
        narlink_protocol::manifest::PathEntry {
            store_path: store_path.to_owned(),
            nar_hash: Some(self.nar_hash),
            nar_size: self.nar_size,
            references: self.references.clone(),
            deriver: self.deriver.clone(),
            chunks: self.chunks.clone(),
            copies: Vec::new(),
            rewrites: Rewrites::At(crate::normalize::encode(&self.rewrites)),
        }
    }
}

/// Where a chunk's bytes can be read: `len` bytes at `offset` in the NAR of `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub path: String,
    pub offset: u64,
    pub len: u32,
}

/// Replace the file at `path` with `bytes` (mode `mode`) so that a crash leaves the old file
/// or the new one: written aside, synced, renamed into place, directory synced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("partial");
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(io_err(path))
}

/// How to cut `units` items of `unit` bytes each (plus `fixed` bytes per value) into values
/// that each fill a redb leaf page well: the counts per value, in order.
///
/// redb stores a value in its leaf page and rounds a page up to a power of two, so a value of
/// 16,418 B (16 frame payloads with their indices) costs 32 KiB of flash and one of 15,392 B
/// costs 16 KiB: storing frames wrote 2.2x the shard bytes before runs were cut to fit, 1.5x
/// after (a per-phase write counter, a throwaway patch; the intake as a whole by
/// `benches/scripts/flash_wear.sh`: docs/measurements.md, "Flash wear").
/// Values fill 32 KiB pages first, then what is left goes into pages of 16 KiB down to 1 KiB,
/// the last value taking the remainder.
pub(crate) fn page_sized(units: usize, unit: usize, fixed: usize) -> Vec<usize> {
    /// Room a leaf page keeps for its header and the entry's key and offsets.
    const LEAF_OVERHEAD: usize = 96;
    let fits = |page: usize| page.saturating_sub(LEAF_OVERHEAD + fixed) / unit.max(1);
    let mut out = Vec::new();
    let mut left = units;
    for page in [32 << 10, 16 << 10, 8 << 10, 4 << 10, 2 << 10, 1 << 10] {
        let n = fits(page);
        while n > 0 && left >= n {
            out.push(n);
            left -= n;
        }
    }
    if left > 0 {
        out.push(left);
    }
    out
}

/// A write transaction on a state: what it writes becomes durable together at
/// [`StateDb::commit`], or not at all.
pub struct Tx(redb::WriteTransaction);

/// 2026-01-01T00:00:00Z in Unix seconds.
const CLOCK_EPOCH: u64 = 1_767_225_600;

/// Seconds since 2026-01-01 by this machine's clock: the floor of counters that must never
/// repeat even when their last value was lost (a restored or re-made database).
pub(crate) fn clock_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(CLOCK_EPOCH))
}

/// A redb database holding the path set and chunk index of one role.
pub struct StateDb {
    pub(crate) db: Database,
    pub(crate) file: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { path, source }
}

fn db_err(file: &Path) -> impl Fn(redb::Error) -> StateError + '_ {
    move |source| match source {
        redb::Error::Corrupted(detail) => StateError::Damaged {
            path: file.to_owned(),
            detail,
        },
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => StateError::Damaged {
            path: file.to_owned(),
            detail: e.to_string(),
        },
        source => StateError::Db {
            path: file.to_owned(),
            source,
        },
    }
}

/// Convert any redb error type into [`StateError`] with the database's path.
pub(crate) trait Ctx<T> {
    fn ctx(self, file: &Path) -> Result<T, StateError>;
}
impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn ctx(self, file: &Path) -> Result<T, StateError> {
        self.map_err(|e| db_err(file)(e.into()))
    }
}

/// The command that creates a state of `role`.
fn init_command(role: &str) -> &'static str {
    if role == "mirror" {
        "narlink ground init"
    } else {
        "narlink device init"
    }
}

impl StateDb {
    /// Create a fresh state in `dir` for `role`, replacing none: fails if one exists. The
    /// state is built in `FILE.partial` and appears under its own name only at
    /// [`StateDb::publish`], so a crash during init leaves no state that looks whole (a
    /// leftover `.partial` is removed by the next init).
    pub(crate) fn create(
        dir: &Path,
        file_name: &str,
        role: &'static str,
    ) -> Result<StateDb, StateError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let done = dir.join(file_name);
        if done.exists() {
            return Err(StateError::Exists(done));
        }
        let file = dir.join(format!("{file_name}.partial"));
        if file.exists() {
            std::fs::remove_file(&file).map_err(io_err(&file))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .ctx(&file)?;
        StateDb::init(db, file, role)
    }

    /// The state of `role` on an in-memory [`medium::Medium`] (crash tests), labelled
    /// `dir/file_name` in messages: created on a blank medium (`create`; no
    /// [`StateDb::publish`] needed), or opened and checked like [`StateDb::open`] (after a
    /// power cut, say). `dir` holds what lives beside the database (the replay mark, spilled
    /// heads).
    pub(crate) fn on_medium(
        medium: medium::Medium,
        dir: &Path,
        file_name: &str,
        role: &'static str,
        create: bool,
    ) -> Result<StateDb, StateError> {
        let file = dir.join(file_name);
        let blank = medium.len_bytes() == 0;
        match (create, blank) {
            (true, false) => return Err(StateError::Exists(file)),
            (false, true) => return Err(StateError::Missing(dir.into(), init_command(role))),
            _ => {}
        }
        let db = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(medium)
        {
            Err(redb::DatabaseError::UpgradeRequired(found)) => {
                return Err(StateError::OldFormat(file, found, init_command(role)))
            }
            r => r.ctx(&file)?,
        };
        if blank {
            StateDb::init(db, file, role)
        } else {
            StateDb::check(db, file, dir, role)
        }
    }

    /// Write the tables every state of `role` starts with.
    fn init(db: Database, file: PathBuf, role: &'static str) -> Result<StateDb, StateError> {
        let s = StateDb { db, file };
        let tx = s.db.begin_write().ctx(&s.file)?;
        {
            let mut meta = tx.open_table(META).ctx(&s.file)?;
            meta.insert("role", role.as_bytes()).ctx(&s.file)?;
            let params = postcard::to_allocvec(&PARAMS).unwrap_or_default();
            meta.insert("chunking", params.as_slice()).ctx(&s.file)?;
            tx.open_table(PATHS).ctx(&s.file)?;
            tx.open_multimap_table(CHUNK_LOCS).ctx(&s.file)?;
        }
        tx.commit().ctx(&s.file)?;
        Ok(s)
    }

    /// Close a state made by [`StateDb::create`] and give it its own name (rename, then
    /// fsync of the directory): from here on it is a state `open` accepts.
    pub(crate) fn publish(self) -> Result<(), StateError> {
        let StateDb { db, file } = self;
        drop(db);
        let done = file.with_extension("");
        std::fs::rename(&file, &done).map_err(io_err(&done))?;
        let dir = done.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }

    /// Open an existing state and check its role and chunking parameters.
    pub(crate) fn open(
        dir: &Path,
        file_name: &str,
        role: &'static str,
    ) -> Result<StateDb, StateError> {
        let file = dir.join(file_name);
        if !file.exists() {
            return Err(StateError::Missing(dir.into(), init_command(role)));
        }
        crate::panic::note_database(&file);
        // Another narlink process (a daemon, an import) may hold the database for a moment:
        // wait for it rather than fail at once.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match Database::builder().set_cache_size(CACHE_BYTES).open(&file) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StateError::Busy(file))
                }
                Err(redb::DatabaseError::UpgradeRequired(found)) => {
                    return Err(StateError::OldFormat(file, found, init_command(role)))
                }
                r => break r.ctx(&file)?,
            }
        };
        StateDb::check(db, file, dir, role)
    }

    /// Check an opened state's role and chunking parameters.
    fn check(
        db: Database,
        file: PathBuf,
        dir: &Path,
        role: &'static str,
    ) -> Result<StateDb, StateError> {
        let s = StateDb { db, file };
        let found = s.meta("role")?.unwrap_or_default();
        if found != role.as_bytes() {
            return Err(StateError::Role {
                path: dir.into(),
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: role,
            });
        }
        let params: ChunkParams = s
            .meta("chunking")?
            .and_then(|b| postcard::from_bytes(&b).ok())
            .ok_or_else(|| StateError::Corrupt("chunking parameters".into()))?;
        if params != PARAMS {
            return Err(StateError::Chunking {
                path: dir.into(),
                found: params,
            });
        }
        Ok(s)
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        let t = tx.open_table(META).ctx(&self.file)?;
        Ok(t.get(key).ctx(&self.file)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let tx = self.db.begin_write().ctx(&self.file)?;
        tx.open_table(META)
            .ctx(&self.file)?
            .insert(key, value)
            .ctx(&self.file)?;
        tx.commit().ctx(&self.file)
    }

    /// Table `def` in a read snapshot, `None` if nothing was ever written to it (a state
    /// made by an older narlink).
    pub(crate) fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        match tx.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e).ctx(&self.file),
        }
    }

    /// Set meta `key` to `value`, within `tx`.
    pub(crate) fn put_meta(&self, tx: &Tx, key: &str, value: &[u8]) -> Result<(), StateError> {
        tx.0.open_table(META)
            .ctx(&self.file)?
            .insert(key, value)
            .ctx(&self.file)?;
        Ok(())
    }

    /// Record `path` and index its chunks, within `tx`.
    pub(crate) fn add_path(&self, tx: &Tx, path: &str, rec: &PathRecord) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(rec).unwrap_or_default();
        tx.0.open_table(PATHS)
            .ctx(&self.file)?
            .insert(path, bytes.as_slice())
            .ctx(&self.file)?;
        let mut locs = tx.0.open_multimap_table(CHUNK_LOCS).ctx(&self.file)?;
        let mut offset = 0u64;
        for c in &rec.chunks {
            locs.insert(&c.id, (path, offset, c.len)).ctx(&self.file)?;
            offset += u64::from(c.len);
        }
        Ok(())
    }

    /// Forget `path` and its chunk locations, within `tx`. Returns whether it was there.
    pub(crate) fn remove_path(&self, tx: &Tx, path: &str) -> Result<bool, StateError> {
        let rec = {
            let t = tx.0.open_table(PATHS).ctx(&self.file)?;
            let v = t.get(path).ctx(&self.file)?;
            match v {
                Some(v) => decode_record(path, v.value())?,
                None => return Ok(false),
            }
        };
        let mut locs = tx.0.open_multimap_table(CHUNK_LOCS).ctx(&self.file)?;
        let mut offset = 0u64;
        for c in &rec.chunks {
            locs.remove(&c.id, (path, offset, c.len)).ctx(&self.file)?;
            offset += u64::from(c.len);
        }
        tx.0.open_table(PATHS)
            .ctx(&self.file)?
            .remove(path)
            .ctx(&self.file)?;
        Ok(true)
    }

    /// Every path the state holds, in byte order.
    pub fn paths(&self) -> Result<Vec<String>, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        let t = tx.open_table(PATHS).ctx(&self.file)?;
        let mut v = Vec::with_capacity(t.len().ctx(&self.file)? as usize);
        for e in t.iter().ctx(&self.file)? {
            v.push(e.ctx(&self.file)?.0.value().to_owned());
        }
        Ok(v)
    }

    pub fn has_path(&self, path: &str) -> Result<bool, StateError> {
        Ok(self.record(path)?.is_some())
    }

    pub fn record(&self, path: &str) -> Result<Option<PathRecord>, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        let t = tx.open_table(PATHS).ctx(&self.file)?;
        let v = t.get(path).ctx(&self.file)?;
        v.map(|v| decode_record(path, v.value())).transpose()
    }

    /// The state digest of the path set.
    pub fn digest(&self) -> Result<[u8; 32], StateError> {
        let paths = self.paths()?;
        Ok(state_digest(paths.iter().map(String::as_str)))
    }

    /// A reader for many chunk lookups in one consistent snapshot.
    pub fn chunk_reader(&self) -> Result<ChunkLookup, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        let locs = tx.open_multimap_table(CHUNK_LOCS).ctx(&self.file)?;
        Ok(ChunkLookup {
            locs,
            file: self.file.clone(),
        })
    }

    /// A reader for many record lookups in one consistent snapshot.
    pub fn record_reader(&self) -> Result<RecordLookup, StateError> {
        let tx = self.db.begin_read().ctx(&self.file)?;
        let paths = tx.open_table(PATHS).ctx(&self.file)?;
        Ok(RecordLookup {
            paths,
            file: self.file.clone(),
        })
    }

    pub fn begin_write(&self) -> Result<Tx, StateError> {
        Ok(Tx(self.db.begin_write().ctx(&self.file)?))
    }

    /// Commit `tx`: durable when this returns.
    pub fn commit(&self, tx: Tx) -> Result<(), StateError> {
        tx.0.commit().ctx(&self.file)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The directory the state lives in.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

fn decode_record(path: &str, bytes: &[u8]) -> Result<PathRecord, StateError> {
    postcard::from_bytes(bytes).map_err(|_| StateError::Corrupt(path.to_owned()))
}

/// Path record lookups over one read snapshot.
pub struct RecordLookup {
    paths: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    file: PathBuf,
}

impl RecordLookup {
    pub fn record(&self, path: &str) -> Result<Option<PathRecord>, StateError> {
        let v = self.paths.get(path).ctx(&self.file)?;
        v.map(|v| decode_record(path, v.value())).transpose()
    }
}

/// Chunk lookups over one read snapshot of the index.
pub struct ChunkLookup {
    locs: redb::ReadOnlyMultimapTable<&'static ChunkId, (&'static str, u64, u32)>,
    file: PathBuf,
}

impl ChunkLookup {
    /// Where `id` can be read, if any path holds it.
    pub fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, StateError> {
        let mut it = self.locs.get(id).ctx(&self.file)?;
        match it.next() {
            None => Ok(None),
            Some(v) => {
                let v = v.ctx(&self.file)?;
                let (path, offset, len) = v.value();
                Ok(Some(ChunkLocation {
                    path: path.to_owned(),
                    offset,
                    len,
                }))
            }
        }
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool, StateError> {
        Ok(self.locs.get(id).ctx(&self.file)?.next().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Rewrite;

    #[test]
    fn page_sized_values_fit_their_pages() {
        for (units, unit, fixed) in [
            (16, 1026, 2),
            (1000, 1026, 2),
            (40_000, 1, 0),
            (5000, 258, 2),
        ] {
            let cut = page_sized(units, unit, fixed);
            assert_eq!(cut.iter().sum::<usize>(), units);
            let bytes = |n: &usize| fixed + n * unit;
            let flash: usize = cut
                .iter()
                .map(|n| (bytes(n) + 96).next_power_of_two())
                .sum();
            let stored: usize = cut.iter().map(bytes).sum();
            // Within an eighth of the bytes, or one smallest page, whichever is more.
            assert!(
                flash <= stored + (stored / 8).max(2048),
                "{units} x {unit}: {cut:?} takes {flash} B of pages for {stored} B"
            );
        }
    }

    #[test]
    fn to_entry_is_the_inverse_of_of() {
        let rec = PathRecord {
            nar_hash: [7; 32],
            nar_size: 300,
            references: vec!["/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1".into()],
            deriver: None,
            chunks: vec![
                ChunkRef {
                    id: [1; 16],
                    len: 100,
                },
                ChunkRef {
                    id: [2; 16],
                    len: 200,
                },
            ],
            rewrites: vec![
                Rewrite {
                    offset: 10,
                    index: 1,
                },
                Rewrite {
                    offset: 150,
                    index: 0,
                },
            ],
        };
        let entry = rec.to_entry("/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-app-1");
        assert_eq!(PathRecord::of(&entry, [7; 32]), rec);
    }
}
