//! A medium for a state database that lives in memory and can lose power: the storage seam
//! under every table (redb's [`StorageBackend`]), as redb's own `tests/crash_consistency.rs`
//! does it.
//!
//! Writes land in the live image; a completed sync makes the live image durable. Power can be
//! cut at the N-th sync from now: that sync and every later operation fail (as a process on a
//! dying machine would see its last writes fail, or never return), and
//! [`Medium::after_power_cut`] gives the image that survives: what was durable, plus the
//! first `torn` writes issued since (a disk persists part of what it was given). A state
//! reopened on it must be one the journal accepts.
//!
//! So crash tests run the production journal code (tables, transactions, recovery), with only
//! the medium simulated, thousands of times a second and without Nix. The seam sits under
//! redb rather than over the tables because a second implementation of the tables would test
//! itself, not the code that runs on the device.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// An in-memory medium (clones share it).
#[derive(Clone, Debug, Default)]
pub struct Medium {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Operations since the last completed sync, in the order they were issued.
    unsynced: Vec<Op>,
    syncs: u64,
    /// The sync (counted from the medium's creation) that the power cut interrupts.
    cut_at: Option<u64>,
    off: bool,
}

#[derive(Debug)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(offset, data) => {
            let at = *offset as usize;
            if image.len() < at + data.len() {
                image.resize(at + data.len(), 0);
            }
            image[at..at + data.len()].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

fn power_off() -> io::Error {
    io::Error::other("the medium lost power")
}

impl Medium {
    pub fn new() -> Medium {
        Medium::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while the lock was held leaves the image as consistent as any
        // crash would: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Syncs completed so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Cut the power during the `n`-th sync from now (1 = the next one).
    pub fn cut_power_at_sync(&self, n: u64) {
        let mut i = self.lock();
        i.cut_at = Some(i.syncs + n.max(1));
    }

    /// Cut the power now: nothing issued since the last sync is durable.
    pub fn cut_power(&self) {
        self.lock().off = true;
    }

    /// Whether the power is off.
    pub fn is_off(&self) -> bool {
        self.lock().off
    }

    /// Writes issued since the last completed sync (what a power cut may tear).
    pub fn unsynced(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// The medium after a power cut, powered again: the durable image plus the first `torn`
    /// operations issued after it. Cuts the power of this one if it is still on.
    pub fn after_power_cut(&self, torn: usize) -> Medium {
        let mut i = self.lock();
        i.off = true;
        let mut image = i.durable.clone();
        for op in i.unsynced.iter().take(torn) {
            apply(&mut image, op);
        }
        Medium {
            inner: Arc::new(Mutex::new(Inner {
                live: image.clone(),
                durable: image,
                ..Inner::default()
            })),
        }
    }

    /// Bytes the medium holds (its live image).
    pub fn len_bytes(&self) -> u64 {
        self.lock().live.len() as u64
    }
}

impl StorageBackend for Medium {
    fn len(&self) -> Result<u64, io::Error> {
        let i = self.lock();
        if i.off {
            return Err(power_off());
        }
        Ok(i.live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let i = self.lock();
        if i.off {
            return Err(power_off());
        }
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        let src = at
            .checked_add(out.len())
            .and_then(|end| i.live.get(at..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut i = self.lock();
        if i.off {
            return Err(power_off());
        }
        let op = Op::SetLen(len);
        apply(&mut i.live, &op);
        i.unsynced.push(op);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut i = self.lock();
        if i.off {
            return Err(power_off());
        }
        if i.cut_at == Some(i.syncs + 1) {
            i.off = true;
            return Err(power_off());
        }
        i.syncs += 1;
        let Inner {
            durable, unsynced, ..
        } = &mut *i;
        for op in unsynced.drain(..) {
            apply(durable, &op);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut i = self.lock();
        if i.off {
            return Err(power_off());
        }
        let op = Op::Write(offset, data.to_vec());
        apply(&mut i.live, &op);
        i.unsynced.push(op);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDb;

    fn open(m: &Medium, dir: &std::path::Path) -> StateDb {
        StateDb::on_medium(m.clone(), dir, "t.redb", "device", false).expect("open")
    }

    /// A commit is all or nothing across a power cut at any sync and any torn write.
    #[test]
    fn a_power_cut_keeps_the_last_commit_or_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let base = Medium::new();
        StateDb::on_medium(base.clone(), dir.path(), "t.redb", "device", true)
            .and_then(|s| s.set_meta("k", b"old"))
            .expect("create");
        let syncs_of_commit = {
            let m = base.after_power_cut(0);
            let s = open(&m, dir.path());
            let before = m.syncs();
            s.set_meta("k", &[7u8; 20_000]).expect("commit");
            m.syncs() - before
        };
        assert!(syncs_of_commit >= 1);
        let mut torn_seen = 0;
        for cut in 1..=syncs_of_commit {
            let m = base.after_power_cut(0);
            let s = open(&m, dir.path());
            m.cut_power_at_sync(cut);
            assert!(s.set_meta("k", &[7u8; 20_000]).is_err(), "the commit fails");
            drop(s);
            for torn in 0..=m.unsynced() {
                torn_seen += 1;
                let after = m.after_power_cut(torn);
                let v = open(&after, dir.path()).meta("k").expect("read");
                assert!(
                    v.as_deref() == Some(b"old".as_slice())
                        || v.as_deref() == Some([7u8; 20_000].as_slice()),
                    "cut at sync {cut}, {torn} writes torn: {:?}",
                    v.map(|v| v.len())
                );
            }
        }
        assert!(torn_seen > syncs_of_commit);
    }
}
