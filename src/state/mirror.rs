//! The ground's mirror of one device: the paths the ground believes are on board, their
//! chunk index, and the bundles packed but not yet acknowledged.
//!
//! Mirror-only table:
//! - `pending`: bundle id → manifest (postcard) of a packed bundle, applied when the device
//!   reports it imported.

use std::path::Path;

use narlink_protocol::bundle::BundleId;
use narlink_protocol::manifest::Manifest;
use redb::TableDefinition;

use super::{Ctx, PathRecord, StateDb, StateError};

const PENDING: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("pending");

const FILE: &str = "mirror.redb";
const ROLE: &str = "mirror";

pub struct Mirror {
    pub db: StateDb,
}

impl Mirror {
    pub fn create(dir: &Path) -> Result<Mirror, StateError> {
        let db = StateDb::create(dir, FILE, ROLE)?;
        let tx = db.begin_write()?;
        tx.open_table(PENDING).ctx(&db.file)?;
        db.commit(tx)?;
        Ok(Mirror { db })
    }

    pub fn open(dir: &Path) -> Result<Mirror, StateError> {
        Ok(Mirror { db: StateDb::open(dir, FILE, ROLE)? })
    }

    /// Remember a packed bundle until the device acknowledges it.
    pub fn add_pending(&self, id: &BundleId, manifest: &Manifest) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        tx.open_table(PENDING)
            .ctx(&self.db.file)?
            .insert(id, manifest.to_bytes().as_slice())
            .ctx(&self.db.file)?;
        self.db.commit(tx)
    }

    pub fn pending(&self, id: &BundleId) -> Result<Option<Manifest>, StateError> {
        let tx = self.db.db.begin_read().ctx(&self.db.file)?;
        let t = tx.open_table(PENDING).ctx(&self.db.file)?;
        let v = t.get(id).ctx(&self.db.file)?;
        v.map(|v| {
            Manifest::from_bytes(v.value()).map_err(|e| StateError::Corrupt(format!("pending manifest: {e}")))
        })
        .transpose()
    }

    /// Fold an imported bundle's paths into the mirror and forget it as pending.
    pub fn apply(&self, id: &BundleId, manifest: &Manifest) -> Result<(), StateError> {
        let tx = self.db.begin_write()?;
        for p in &manifest.paths {
            if self.db.has_path(&p.store_path)? {
                continue;
            }
            self.db.add_path(&tx, &p.store_path, &PathRecord::from(p))?;
        }
        tx.open_table(PENDING).ctx(&self.db.file)?.remove(id).ctx(&self.db.file)?;
        self.db.commit(tx)
    }
}
