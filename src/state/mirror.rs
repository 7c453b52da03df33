//! The ground's mirror of one device: the paths the ground believes are on board, their
//! chunk index, and the bundles packed but not yet acknowledged.
//!
//! Mirror-only table:
//! - `pending`: bundle id → manifest (postcard) of a packed bundle, applied when the device
//!   reports it imported.
//! - `sends`: bundle id → [`SendRecord`] (postcard): the bundle file, link options and
//!   shards sent per group, so a resend continues with parity never sent.
//! - `announcements`: bundle id → its signed announcement frame
//!   ([`narlink_protocol::announce`]), sent again with every resend.
//! - `withdrawals`: bundle id → its signed withdrawal frame (`ground cancel`), sent again
//!   while reports name the bundle.
//! - `ground_bundles`: bundle id → [`GroundBundle`]: what the ground knows of each bundle.

use std::path::{Path, PathBuf};

use narlink_protocol::bundle::BundleId;
use narlink_protocol::manifest::Manifest;
use narlink_protocol::params::LinkOptions;
use narlink_protocol::seal::DeviceSecret;
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Ctx, PathRecord, StateDb, StateError};

const PENDING: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("pending");
/// Key of the pending manifest of a bundle being packed (its id is not known yet).
const PROVISIONAL: [u8; 16] = [0xff; 16];
const SENDS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("sends");
const ANNOUNCEMENTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("announcements");
const WITHDRAWALS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("withdrawals");

const FILE: &str = "mirror.redb";
const ROLE: &str = "mirror";

pub struct Mirror {
    pub db: StateDb,
}

/// The device key a mirror checks downlink messages with, and the counter of the last one
/// it took (0: none yet).
#[derive(Clone, Debug)]
pub struct DownlinkKeys {
    pub secret: Option<DeviceSecret>,
    pub last: u32,
}

fn decode_secret(b: Option<Vec<u8>>) -> Result<Option<DeviceSecret>, StateError> {
    b.map(|b| {
        DeviceSecret::try_from(b.as_slice())
            .map_err(|_| StateError::Corrupt("device secret".into()))
    })
    .transpose()
}

fn decode_counter(b: Option<Vec<u8>>) -> Result<u32, StateError> {
    match b {
        None => Ok(0),
        Some(b) => <[u8; 4]>::try_from(b.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| StateError::Corrupt("downlink counter".into())),
    }
}

impl Mirror {
    /// The database file in a mirror directory.
    pub const FILE: &'static str = FILE;

    pub fn create(dir: &Path) -> Result<Mirror, StateError> {
        let db = StateDb::create(dir, FILE, ROLE)?;
        let tx = db.begin_write()?;
        tx.0.open_table(PENDING).ctx(&db.file)?;
        tx.0.open_table(SENDS).ctx(&db.file)?;
        db.commit(tx)?;
        Ok(Mirror { db })
    }

    /// Make a mirror from [`Mirror::create`] the one `open` finds (see [`StateDb::publish`]).
    pub fn publish(self) -> Result<(), StateError> {
        self.db.publish()
    }

    pub fn open(dir: &Path) -> Result<Mirror, StateError> {
        Ok(Mirror {
            db: StateDb::open(dir, FILE, ROLE)?,
        })
    }

    /// What the downlink check needs of the mirror in `dir`, read without opening it for
    /// writing: a refused message must leave the mirror as it was, byte for byte, and redb
    /// writes on every read-write open and close.
    pub fn downlink_keys(dir: &Path) -> Result<DownlinkKeys, StateError> {
        let file = dir.join(FILE);
        if !file.exists() {
            return Err(StateError::Missing(dir.into(), "narlink ground init"));
        }
        let db = match redb::ReadOnlyDatabase::open(&file) {
            Err(redb::DatabaseError::UpgradeRequired(found)) => {
                return Err(StateError::OldFormat(file, found, "narlink ground init"))
            }
            r => r.ctx(&file)?,
        };
        let tx = db.begin_read().ctx(&file)?;
        let meta = tx.open_table(super::META).ctx(&file)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>, StateError> {
            Ok(meta.get(k).ctx(&file)?.map(|v| v.value().to_vec()))
        };
        Ok(DownlinkKeys {
            secret: decode_secret(get("device-secret")?)?,
            last: decode_counter(get("downlink-counter")?)?,
        })
    }

    /// The secret of the device this mirror speaks for, if it was given.
    pub fn device_secret(&self) -> Result<Option<DeviceSecret>, StateError> {
        decode_secret(self.db.meta("device-secret")?)
    }

    /// Keep the secret of the device this mirror speaks for (its provisioning file, see
    /// protocol/SPEC.md "Sealed downlink messages"); [`Mirror::downlink_keys`] reads it.
    pub fn set_device_secret(&self, secret: &DeviceSecret) -> Result<(), StateError> {
        self.db.set_meta("device-secret", secret)
    }

    /// Record the counter of the last downlink message this mirror took, within `tx`.
    pub fn put_downlink_counter(&self, tx: &super::Tx, counter: u32) -> Result<(), StateError> {
        self.db
            .put_meta(tx, "downlink-counter", &counter.to_le_bytes())
    }

    /// Remember a packed bundle until the device acknowledges it, with its full chunk lists
    /// (the wire form may abbreviate them as copies): stored under a provisional key until the
    /// bundle's id is known ([`commit_pending`](Self::commit_pending)).
    pub fn add_pending_full(&self, manifest: &Manifest) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        tx.0.open_table(PENDING)
            .ctx(&self.db.file)?
            .insert(&PROVISIONAL, manifest.to_bytes().as_slice())
            .ctx(&self.db.file)?;
        self.db.commit(tx)
    }

    /// File the provisional pending manifest under the bundle's id, record the bundle as
    /// `packed`, and every other bundle still in flight as superseded by it (the new one was
    /// planned against the acknowledged state, so it carries what they did).
    pub fn commit_pending(&self, id: &BundleId, packed: &GroundBundle) -> Result<(), StateError> {
        let older = self.ground_bundles()?;
        let tx = self.db.begin_write()?;
        for (other, mut b) in older {
            if b.standing == Standing::InFlight {
                b.standing = Standing::Superseded;
                self.put_ground_bundle(&tx, &other, &b)?;
            }
        }
        self.put_ground_bundle(&tx, id, packed)?;
        {
            let mut t = tx.0.open_table(PENDING).ctx(&self.db.file)?;
            let v = t
                .remove(&PROVISIONAL)
                .ctx(&self.db.file)?
                .map(|v| v.value().to_vec());
            if let Some(v) = v {
                t.insert(id, v.as_slice()).ctx(&self.db.file)?;
            }
        }
        self.db.commit(tx)
    }
}

/// The send state of one bundle, persisted in the mirror between passes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRecord {
    pub bundle_path: PathBuf,
    pub options: LinkOptions,
    pub bundle_len: u64,
    pub sent: Vec<u64>,
}

impl Mirror {
    pub fn put_send(&self, id: &BundleId, rec: &SendRecord) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        let bytes = postcard::to_allocvec(rec).unwrap_or_default();
        tx.0.open_table(SENDS)
            .ctx(&self.db.file)?
            .insert(id, bytes.as_slice())
            .ctx(&self.db.file)?;
        self.db.commit(tx)
    }

    pub fn put_announcement(&self, id: &BundleId, frame: &[u8]) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        tx.0.open_table(ANNOUNCEMENTS)
            .ctx(&self.db.file)?
            .insert(id, frame)
            .ctx(&self.db.file)?;
        self.db.commit(tx)
    }

    /// Keep the withdrawal frame of bundle `id` (`ground cancel`), within `tx`.
    pub fn put_withdrawal(
        &self,
        tx: &super::Tx,
        id: &BundleId,
        frame: &[u8],
    ) -> Result<(), StateError> {
        tx.0.open_table(WITHDRAWALS)
            .ctx(&self.db.file)?
            .insert(id, frame)
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// The withdrawal frame of bundle `id`, if it was cancelled with a key.
    pub fn withdrawal(&self, id: &BundleId) -> Result<Option<Vec<u8>>, StateError> {
        self.frame_in(WITHDRAWALS, id)
    }

    /// The announcement frame of bundle `id`, if it was announced.
    pub fn announcement(&self, id: &BundleId) -> Result<Option<Vec<u8>>, StateError> {
        self.frame_in(ANNOUNCEMENTS, id)
    }

    fn frame_in(
        &self,
        table: TableDefinition<&[u8; 16], &[u8]>,
        id: &BundleId,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let Some(t) = self.db.read_table(table)? else {
            return Ok(None);
        };
        let v = t.get(id).ctx(&self.db.file)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    pub fn send_record(&self, id: &BundleId) -> Result<Option<SendRecord>, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(SENDS).ctx(&self.db.file)?;
        let v = t.get(id).ctx(&self.db.file)?;
        v.map(|v| {
            postcard::from_bytes(v.value()).map_err(|_| StateError::Corrupt("send record".into()))
        })
        .transpose()
    }
}

impl Mirror {
    /// The next bundle sequence number for this device (persisted, strictly increasing):
    /// above the last one packed here, the newest the device reported taking, and the seconds
    /// since 2026-01-01 (so a mirror made again never repeats one, even before the device's
    /// first report reaches it, unless it packs within the same second).
    pub fn next_sequence(&self) -> Result<u64, StateError> {
        let next = (self.last_sequence()? + 1).max(super::clock_seconds());
        self.db.set_meta("sequence", &next.to_le_bytes())?;
        Ok(next)
    }
}

impl Mirror {
    /// Forget every pending bundle (they were planned against a state that is gone), within `tx`.
    pub fn clear_pending(&self, tx: &super::Tx) -> Result<(), StateError> {
        let mut t = tx.0.open_table(PENDING).ctx(&self.db.file)?;
        let keys: Vec<[u8; 16]> = {
            use redb::ReadableTable;
            t.iter()
                .ctx(&self.db.file)?
                .filter_map(|e| e.ok().map(|(k, _)| *k.value()))
                .collect()
        };
        for k in keys {
            t.remove(&k).ctx(&self.db.file)?;
        }
        Ok(())
    }
}

impl Mirror {
    /// Record that the device reported another state than the mirror's (or clear it).
    pub fn set_stale(&self, device_digest: Option<&[u8; 16]>) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        self.put_stale(&tx, device_digest)?;
        self.db.commit(tx)
    }

    /// [`set_stale`](Self::set_stale), within `tx`.
    pub fn put_stale(
        &self,
        tx: &super::Tx,
        device_digest: Option<&[u8; 16]>,
    ) -> Result<(), StateError> {
        self.db
            .put_meta(tx, "stale", device_digest.map_or(&[][..], |d| &d[..]))
    }

    /// The device state digest of the last report that disagreed with the mirror, if the
    /// mirror has not been rebuilt since.
    pub fn stale(&self) -> Result<Option<[u8; 16]>, StateError> {
        Ok(self
            .db
            .meta("stale")?
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok()))
    }
}

/// What the ground knows of each bundle it packed for this device.
const GROUND_BUNDLES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("ground_bundles");

/// Where a packed bundle stands, as far as the ground knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Packed and being sent; the device has not reported it settled.
    InFlight,
    /// The device imported it and the mirror holds its paths.
    Imported,
    /// The device refused it or its import failed (see the reason).
    Failed,
    /// A newer bundle replaced it (packed with `--supersede`, or the device said so).
    Superseded,
    /// Withdrawn by `ground cancel`.
    Cancelled,
}

impl Standing {
    pub fn name(self) -> &'static str {
        match self {
            Standing::InFlight => "in flight",
            Standing::Imported => "imported",
            Standing::Failed => "failed",
            Standing::Superseded => "superseded",
            Standing::Cancelled => "cancelled",
        }
    }
}

/// A bundle the ground packed for this device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroundBundle {
    pub sequence: u64,
    /// Seconds since the Unix epoch.
    pub packed_at: u64,
    pub standing: Standing,
    /// The `status::device::Reason` code the device gave, 0 if none.
    pub reason: u8,
    /// Bytes of the bundle file.
    pub bundle_len: u64,
}

/// The last status report a mirror took, as it came (sealed), and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastReport {
    pub bytes: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub received_at: u64,
}

impl Mirror {
    /// Every bundle packed here, oldest (lowest sequence) first.
    pub fn ground_bundles(&self) -> Result<Vec<(BundleId, GroundBundle)>, StateError> {
        let file = &self.db.file;
        let Some(t) = self.db.read_table(GROUND_BUNDLES)? else {
            return Ok(Vec::new());
        };
        let mut v = Vec::new();
        for e in redb::ReadableTable::iter(&t).ctx(file)? {
            let (k, val) = e.ctx(file)?;
            let b: GroundBundle = postcard::from_bytes(val.value())
                .map_err(|_| StateError::Corrupt("ground bundle record".into()))?;
            v.push((*k.value(), b));
        }
        v.sort_by_key(|(_, b)| b.sequence);
        Ok(v)
    }

    /// Record what the ground knows of bundle `id`, within `tx`.
    pub fn put_ground_bundle(
        &self,
        tx: &super::Tx,
        id: &BundleId,
        b: &GroundBundle,
    ) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(b).unwrap_or_default();
        tx.0.open_table(GROUND_BUNDLES)
            .ctx(&self.db.file)?
            .insert(id, bytes.as_slice())
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// Every pending manifest (bundles packed whose paths the mirror does not hold yet).
    pub fn pending_all(&self) -> Result<Vec<(BundleId, Manifest)>, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(PENDING).ctx(&self.db.file)?;
        let mut v = Vec::new();
        for e in redb::ReadableTable::iter(&t).ctx(&self.db.file)? {
            let (k, val) = e.ctx(&self.db.file)?;
            if *k.value() == PROVISIONAL {
                continue;
            }
            let m = Manifest::from_bytes(val.value())
                .map_err(|e| StateError::Corrupt(format!("pending manifest: {e}")))?;
            v.push((*k.value(), m));
        }
        Ok(v)
    }

    /// Within `tx`: add the paths of the bundles `imported` (and forget them as pending),
    /// then remove the paths `removed`.
    pub fn fold(
        &self,
        tx: &super::Tx,
        imported: &[(BundleId, Manifest)],
        removed: &[String],
    ) -> Result<(), StateError> {
        for (id, m) in imported {
            for p in &m.paths {
                if !self.db.has_path(&p.store_path)? {
                    // The ground's own manifests carry every narHash.
                    let nar_hash = p.nar_hash.ok_or_else(|| {
                        StateError::Corrupt(format!(
                            "pending manifest: {} has no narHash",
                            p.store_path
                        ))
                    })?;
                    self.db
                        .add_path(tx, &p.store_path, &PathRecord::of(p, nar_hash))?;
                }
            }
            self.forget_pending(tx, id)?;
        }
        for p in removed {
            self.db.remove_path(tx, p)?;
        }
        Ok(())
    }

    /// Forget bundle `id` as pending, within `tx` (it can never be imported).
    pub fn forget_pending(&self, tx: &super::Tx, id: &BundleId) -> Result<(), StateError> {
        tx.0.open_table(PENDING)
            .ctx(&self.db.file)?
            .remove(id)
            .ctx(&self.db.file)?;
        Ok(())
    }

    /// Raise the sequence counter to at least `sequence` (the newest one the device took):
    /// a mirror made again never reuses a number.
    pub fn raise_sequence(&self, tx: &super::Tx, sequence: u64) -> Result<(), StateError> {
        if sequence > self.last_sequence()? {
            self.db.put_meta(tx, "sequence", &sequence.to_le_bytes())?;
        }
        Ok(())
    }

    fn last_sequence(&self) -> Result<u64, StateError> {
        Ok(self
            .db
            .meta("sequence")?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// Keep the report just taken, within `tx`.
    pub fn put_last_report(&self, tx: &super::Tx, r: &LastReport) -> Result<(), StateError> {
        let bytes = postcard::to_allocvec(r).unwrap_or_default();
        self.db.put_meta(tx, "last-report", &bytes)
    }

    /// The last report taken, if any.
    pub fn last_report(&self) -> Result<Option<LastReport>, StateError> {
        self.db
            .meta("last-report")?
            .map(|b| {
                postcard::from_bytes(&b).map_err(|_| StateError::Corrupt("last report".into()))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror made again takes its sequences above the newest one the device reported, even
    /// one far ahead of this machine's clock (packed on another ground with a clock ahead).
    #[test]
    fn sequences_follow_the_device_and_never_repeat() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Mirror::create(tmp.path()).unwrap();
        let first = m.next_sequence().unwrap();
        assert!(first >= super::super::clock_seconds());
        assert!(m.next_sequence().unwrap() > first);
        let ahead = super::super::clock_seconds() + 1_000_000_000;
        let tx = m.db.begin_write().unwrap();
        m.raise_sequence(&tx, ahead).unwrap();
        m.db.commit(tx).unwrap();
        assert_eq!(m.next_sequence().unwrap(), ahead + 1);
        // A lower report never lowers it.
        let tx = m.db.begin_write().unwrap();
        m.raise_sequence(&tx, first).unwrap();
        m.db.commit(tx).unwrap();
        assert_eq!(m.next_sequence().unwrap(), ahead + 2);
    }
}
