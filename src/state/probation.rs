//! The probation record (issue 19): the generation a landing made live and that the ground
//! has not confirmed yet, how long it has been on trial, and how its trial ended. A file
//! beside the state database, `probation` (JSON, replaced durably), not a redb table: the
//! supervisor reads and writes it while the daemon holds the database, and an older narlink
//! (the one a revert brings back) must read what a newer one wrote. `probation.lock` (an
//! advisory lock) makes each read-modify-write whole between the two processes.
//!
//! What counts the window: there is no clock that runs across boots on the device, so the
//! record counts what the device can count itself: seconds the narlink processes ran under
//! the generation (added at every tick, so a kill loses at most one tick), reports written
//! under it, and starts in a row that did not prove healthy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_err, write_durably, StateError};

pub const FILE: &str = "probation";
const LOCK_FILE: &str = "probation.lock";
const DAMAGED_FILE: &str = "probation.damaged";
/// The record's format version: a narlink reads only records of its own version.
pub const VERSION: u32 = 1;

/// How long a generation stays on probation, and what ends it early.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds of running time without a confirmation before the generation is reverted.
    pub seconds: u64,
    /// Reports it may write without a confirmation; the next one reverts it (0: no limit).
    pub reports: u32,
    /// Starts in a row that may fail to prove healthy; the next one reverts it.
    pub starts: u32,
    /// Required health checks: every executable in this directory, in name order.
    pub checks: Option<PathBuf>,
}

impl Default for Window {
    /// Two days of running time, or 2880 reports (two days of one a minute), whichever
    /// comes first; three failed starts.
    fn default() -> Window {
        Window {
            seconds: 48 * 3600,
            reports: 2880,
            starts: 3,
            checks: None,
        }
    }
}

/// Why a generation was reverted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Why {
    NotConfirmed,
    HealthCheck,
    FailedStarts,
}

impl Why {
    pub fn describe(self) -> &'static str {
        match self {
            Why::NotConfirmed => "not confirmed",
            Why::HealthCheck => "a required health check failed",
            Why::FailedStarts => "the new generation's narlink did not start",
        }
    }
}

/// Where the trial stands. `Reverting` is the journal of a revert under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Trial {
    OnProbation,
    Committed {
        /// The report counter the confirmation answered.
        counter: u32,
    },
    Reverting {
        why: Why,
        check: Option<String>,
        detail: String,
    },
    Reverted {
        why: Why,
        check: Option<String>,
        detail: String,
        /// The previous generation's activation failed after the switch back (it stays live:
        /// there is nothing older to trust more).
        activation_failure: Option<String>,
    },
}

/// One generation's trial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probation {
    pub version: u32,
    /// Hex id of the bundle that landed the generation.
    pub bundle: String,
    /// The device's store (URI), profile, and the generation on trial with its root.
    pub store: Option<String>,
    pub profile: PathBuf,
    pub generation: u32,
    pub root: String,
    /// What a revert goes back to: the generation live before, and its root (none: the
    /// profile had no generation, and a revert removes it).
    pub previous: Option<u32>,
    pub previous_root: Option<String>,
    /// The activation command and its timeout (run for the previous generation on revert).
    pub command: Option<String>,
    pub timeout_secs: u64,
    /// The first report counter sealed under the generation: a confirmation must answer a
    /// report from then on.
    pub first_counter: u32,
    pub window: Window,
    pub seconds: u64,
    pub reports: u32,
    pub unproven_starts: u32,
    #[serde(flatten)]
    pub trial: Trial,
}

impl Probation {
    /// Whether the window has run out: its time, or more reports than the window holds (so
    /// every report of the window can still be answered before the device gives up).
    pub fn window_over(&self) -> bool {
        self.seconds >= self.window.seconds
            || self.window.reports > 0 && self.reports > self.window.reports
    }

    pub fn on_probation(&self) -> bool {
        self.trial == Trial::OnProbation
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The record in `dir`, if there is one. A record that does not parse (a disk fault: it is
/// only ever replaced whole) or of another format version is moved aside to
/// `probation.damaged`, said on stderr, and taken as none: the trial is lost (the generation
/// live stays live), but the receiver is never wedged by it.
pub fn read(dir: &Path) -> Result<Option<Probation>, StateError> {
    let p = path(dir);
    let text = match std::fs::read(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.map_err(io_err(&p))?,
    };
    let why = match serde_json::from_slice::<Probation>(&text) {
        Ok(rec) if rec.version == VERSION => return Ok(Some(rec)),
        Ok(rec) => format!(
            "format version {} (this narlink reads {VERSION})",
            rec.version
        ),
        Err(e) => e.to_string(),
    };
    let aside = dir.join(DAMAGED_FILE);
    std::fs::rename(&p, &aside).map_err(io_err(&p))?;
    eprintln!(
        "narlink: the probation record {} cannot be read ({why}); moved to {}: the live \
         generation stays live, its trial is over",
        p.display(),
        aside.display()
    );
    Ok(None)
}

/// Read the record under the lock, let `f` change it, and write it back durably if it
/// changed, before the lock is let go. Returns what `f` returned.
pub fn update<R>(dir: &Path, f: impl FnOnce(&mut Option<Probation>) -> R) -> Result<R, StateError> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err(&lock_path)(e.into()))?;
    let before = read(dir)?;
    let mut rec = before.clone();
    let out = f(&mut rec);
    if rec != before {
        match &rec {
            Some(r) => {
                let mut bytes = serde_json::to_vec_pretty(r).expect("a record serializes");
                bytes.push(b'\n');
                write_durably(&path(dir), &bytes, 0o644)?;
            }
            None => {
                let p = path(dir);
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
    }
    drop(lock);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged record or one of another version never stops the device: it is moved
    /// aside and taken as none, and the next update writes a fresh one.
    #[test]
    fn an_unreadable_record_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            &b"{\"version\": 1, \"bund"[..],
            b"\x00\xff",
            b"{\"version\": 99}",
        ] {
            std::fs::write(dir.path().join(FILE), junk).unwrap();
            assert_eq!(read(dir.path()).unwrap(), None);
            assert!(!dir.path().join(FILE).exists());
            assert_eq!(std::fs::read(dir.path().join(DAMAGED_FILE)).unwrap(), junk);
            // And an update goes on from nothing.
            let n = update(dir.path(), |r| r.is_none()).unwrap();
            assert!(n);
        }
    }
}
