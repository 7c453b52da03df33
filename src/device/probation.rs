//! Probation (issue 19): a generation `device listen` lands is on trial until the ground
//! confirms it. The ground confirms once a report sent under the generation came down (the
//! downlink works under it); the confirmation reaching the device proves the uplink does. If
//! no confirmation comes within the window, a required health check fails, or the new
//! generation's narlink fails to start too often, the device switches back to the previous
//! generation and runs its activation.
//!
//! The trial's record is [`crate::state::probation`]. Who counts: the supervisor
//! (`device supervise`, [`super::supervise`]) counts running time and starts when there is one
//! (it sets `NARLINK_SUPERVISED`), the daemon otherwise; the daemon counts reports, runs the
//! health checks and takes confirmations. A revert is journaled in the record (`Reverting`,
//! then `Reverted`), so a revert a kill or a failure cut short is completed by the next step
//! of either process ([`finish`]).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use narlink_protocol::confirm::{ConfirmError, Confirmation};
use narlink_protocol::digest::hex;
use narlink_protocol::status::device::{Activation, Probation as WireProbation, Reason};

use super::activate::{self, ActivateError};
use crate::nixstore::NixStore;
use crate::state::device::{DeviceState, Stage};
use crate::state::probation::{self as record, Probation, Trial, Why};
use crate::state::StateError;

/// The variable a supervisor sets for the daemon it runs (to its process id): the
/// supervisor counts time and starts.
pub const SUPERVISED_ENV: &str = "NARLINK_SUPERVISED";

/// Whether this process runs under `device supervise`; if it does, make it die with its
/// supervisor (so a restarted supervisor never finds an orphan daemon holding the state), or
/// exit at once if the supervisor is gone already.
pub fn attach_to_supervisor() -> bool {
    let Some(pid) = std::env::var_os(SUPERVISED_ENV) else {
        return false;
    };
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().to_string());
    if parent.as_deref() != pid.to_str() {
        eprintln!("listen: the supervisor that started this daemon is gone; exiting");
        std::process::exit(75);
    }
    true
}

/// Begin the probation the last landing asked for, if it finished, passed its activation,
/// and its probation has not begun yet (so a kill between the landing and this is harmless).
/// The new record, if one began now.
pub fn begin_due(state: &DeviceState) -> Result<Option<Probation>, ActivateError> {
    let Some(l) = state.landing()? else {
        return Ok(None);
    };
    let Stage::Done {
        generation,
        activated: true,
        ..
    } = l.stage
    else {
        return Ok(None);
    };
    let bundle = hex(&l.bundle);
    let Some((asked, window)) = state.probation_window()? else {
        return Ok(None);
    };
    if asked != bundle {
        return Ok(None);
    }
    let first_counter = u32::try_from(state.last_counter()? + 1).unwrap_or(u32::MAX);
    let rec = Probation {
        version: record::VERSION,
        bundle,
        store: state.store_uri()?,
        profile: l.profile.clone(),
        generation,
        root: l.root.clone(),
        previous: l.previous,
        previous_root: l
            .previous
            .and_then(|g| activate::generation_root(&l.profile, g)),
        command: l.command.clone(),
        timeout_secs: l.timeout_secs,
        first_counter,
        window,
        seconds: 0,
        reports: 0,
        unproven_starts: 0,
        trial: Trial::OnProbation,
    };
    Ok(record::update(state.db.dir(), |r| {
        if r.as_ref().is_some_and(|p| p.bundle == rec.bundle) {
            return None;
        }
        *r = Some(rec.clone());
        Some(rec)
    })?)
}

/// What a process counts towards the window of the generation on probation.
#[derive(Clone, Copy, Debug)]
pub enum Count {
    /// The daemon wrote a report.
    Report,
    /// Seconds of running time (the supervisor's, or the unsupervised daemon's).
    Seconds(u64),
    /// A start of the daemon: counted as failed until [`Count::Proven`].
    Start,
    /// The daemon started whole: state open, socket bound, health checks passed.
    Proven,
}

/// Count `what` if a generation is on probation; the record after it (only while on
/// probation).
pub fn count(dir: &Path, what: Count) -> Result<Option<Probation>, StateError> {
    record::update(dir, |r| {
        let p = r.as_mut().filter(|p| p.on_probation())?;
        match what {
            Count::Report => p.reports = p.reports.saturating_add(1),
            Count::Seconds(s) => p.seconds = p.seconds.saturating_add(s),
            Count::Start => p.unproven_starts = p.unproven_starts.saturating_add(1),
            Count::Proven => p.unproven_starts = 0,
        }
        Some(p.clone())
    })
}

/// Why `p` must be reverted now by what is counted (window over, starts failed), if so.
pub fn due(p: &Probation) -> Option<(Why, String)> {
    if p.unproven_starts > p.window.starts {
        return Some((
            Why::FailedStarts,
            format!(
                "{} starts in a row did not prove healthy",
                p.unproven_starts - 1
            ),
        ));
    }
    if p.window_over() {
        return Some((
            Why::NotConfirmed,
            format!(
                "no confirmation after {} s of running time and {} reports",
                p.seconds, p.reports
            ),
        ));
    }
    None
}

/// Run the required health checks of the generation on probation, in name order: the
/// first that fails (its name) and why. A missing directory holds no checks. `dir` is the
/// state directory.
pub fn run_checks(dir: &Path, p: &Probation) -> Result<Option<(String, String)>, ActivateError> {
    let Some(checks_dir) = &p.window.checks else {
        return Ok(None);
    };
    let mut checks: Vec<_> = match std::fs::read_dir(checks_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .map(|e| e.path())
            .collect(),
        Err(_) => return Ok(None),
    };
    checks.sort();
    for check in checks {
        let name = check
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut c = Command::new(&check);
        activate::with_env(&mut c, &p.root, &p.profile, p.generation);
        let timeout = Duration::from_secs(p.timeout_secs);
        if let Some(failure) = activate::run(dir, &mut c, &format!("health check {name}"), timeout)?
        {
            return Ok(Some((name, failure)));
        }
    }
    Ok(None)
}

/// Switch back from the generation on probation because of `why`: journaled, then done by
/// [`finish`]. The record after it.
pub fn revert(
    dir: &Path,
    why: Why,
    check: Option<String>,
    detail: String,
) -> Result<Option<Probation>, ActivateError> {
    record::update(dir, |r| {
        if let Some(p) = r.as_mut().filter(|p| p.on_probation()) {
            p.trial = Trial::Reverting { why, check, detail };
        }
    })?;
    finish(dir)
}

/// How often a revert runs the previous generation's activation before it gives up.
const REVERT_TRIES: u32 = 3;

/// Complete a revert under way (after a kill, at every start): switch the profile back to
/// the previous generation and run its activation (again: activation commands must be
/// idempotent), then record it done. The record after it.
pub fn finish(dir: &Path) -> Result<Option<Probation>, ActivateError> {
    let Some(p) = record::read(dir)? else {
        return Ok(None);
    };
    let Trial::Reverting { why, check, detail } = p.trial.clone() else {
        return Ok(Some(p));
    };
    let store = NixStore::new(p.store.as_deref());
    let activation_failure = match p.previous {
        Some(g) => {
            if store.current_generation(&p.profile)? != Some(g) {
                store.switch_generation(&p.profile, g)?;
            }
            match (&p.command, &p.previous_root) {
                (Some(c), Some(root)) => {
                    // Three tries: the generation going back is the one that worked, and its
                    // activation must be idempotent anyway.
                    let mut failure = None;
                    for _ in 0..REVERT_TRIES {
                        let timeout = Duration::from_secs(p.timeout_secs);
                        failure = activate::activation(dir, c, root, &p.profile, g, timeout)?;
                        if failure.is_none() {
                            break;
                        }
                    }
                    failure
                }
                _ => None,
            }
        }
        None => {
            activate::remove_profile(&p.profile, p.generation)?;
            None
        }
    };
    Ok(record::update(dir, |r| {
        if let Some(r) = r.as_mut() {
            if matches!(r.trial, Trial::Reverting { .. }) {
                r.trial = Trial::Reverted {
                    why,
                    check,
                    detail,
                    activation_failure,
                };
            }
        }
        r.clone()
    })?)
}

/// Why a confirmation was refused (it changed nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// Its tag does not verify under this device's secret, or it answers a report this
    /// device never sent.
    Forged,
    /// Made for another device.
    Foreign,
    /// Answers a report from before this generation's probation, or confirms a generation
    /// already committed.
    Replayed,
    /// For a generation that is not on probation (another one, or one reverted or never
    /// landed).
    Stale,
    /// Not a well-formed confirmation.
    Malformed,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Forged => "forged",
            Refusal::Foreign => "foreign (for another device)",
            Refusal::Replayed => "replayed",
            Refusal::Stale => "stale (not the generation on probation)",
            Refusal::Malformed => "malformed",
        })
    }
}

/// Take a confirmation: commit the generation on probation if it verifies and is current.
/// The generation committed, or why it was refused.
pub fn confirm(state: &DeviceState, c: &Confirmation) -> Result<Result<u32, Refusal>, StateError> {
    let secret = state.device_secret()?;
    match c.verify(&secret) {
        Ok(()) => {}
        Err(ConfirmError::Foreign(_)) => return Ok(Err(Refusal::Foreign)),
        Err(_) => return Ok(Err(Refusal::Forged)),
    }
    if u64::from(c.counter) > state.last_counter()? {
        return Ok(Err(Refusal::Forged));
    }
    let bundle = hex(&c.bundle_id);
    record::update(state.db.dir(), |r| {
        let Some(p) = r.as_mut() else {
            return Err(Refusal::Stale);
        };
        if p.bundle != bundle || p.generation != c.generation {
            return Err(Refusal::Stale);
        }
        if c.counter < p.first_counter {
            return Err(Refusal::Replayed);
        }
        match p.trial {
            Trial::OnProbation => {
                p.trial = Trial::Committed { counter: c.counter };
                Ok(p.generation)
            }
            Trial::Committed { .. } => Err(Refusal::Replayed),
            _ => Err(Refusal::Stale),
        }
    })
}

/// What a report says about the trial of the newest generation a landing put on probation.
#[derive(Clone, Debug)]
pub struct TrialNote {
    /// The bundle that landed it.
    pub bundle_prefix: [u8; 4],
    pub activation: Activation,
    /// The probation block: while on probation, being reverted, or reverted (none once
    /// committed).
    pub block: Option<WireProbation>,
}

/// What the report says about the trial in `dir`, if there is one.
pub fn report_note(dir: &Path) -> Result<Option<TrialNote>, StateError> {
    let Some(p) = record::read(dir)? else {
        return Ok(None);
    };
    let mut bundle_prefix = [0u8; 4];
    for (i, b) in bundle_prefix.iter_mut().enumerate() {
        *b = p
            .bundle
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    let (activation, reason, check) = match &p.trial {
        Trial::Committed { .. } => {
            return Ok(Some(TrialNote {
                bundle_prefix,
                activation: Activation::Committed,
                block: None,
            }))
        }
        Trial::OnProbation => (Activation::Probation, Reason::None, None),
        Trial::Reverting { why, check, .. } => (Activation::Landing, reason(*why), check.clone()),
        Trial::Reverted { why, check, .. } => (Activation::Reverted, reason(*why), check.clone()),
    };
    Ok(Some(TrialNote {
        bundle_prefix,
        activation,
        block: Some(WireProbation {
            bundle_prefix,
            reason,
            reports: p.reports,
            minutes: u32::try_from(p.seconds / 60).unwrap_or(u32::MAX),
            starts: u8::try_from(p.unproven_starts).unwrap_or(u8::MAX),
            check: check.map(String::into_bytes).unwrap_or_default(),
        }),
    }))
}

/// The report reason of a revert.
pub fn reason(why: Why) -> Reason {
    match why {
        Why::NotConfirmed => Reason::NotConfirmed,
        Why::HealthCheck => Reason::HealthCheck,
        Why::FailedStarts => Reason::FailedStarts,
    }
}

/// What the daemon's trial step did.
#[derive(Debug)]
pub enum Step {
    /// Nothing changed (no trial, or it goes on).
    Nothing,
    /// A trial began (the landing just made a generation live).
    Began(Probation),
    /// The generation was switched back.
    Reverted(Probation),
}

/// The daemon's steps of a trial: at its start, after a landing, after each report, and
/// each time it counts its running time (unsupervised). A revert done here is complete
/// when this returns.
pub fn step(state: &DeviceState, event: Event) -> Result<Step, ActivateError> {
    let dir = state.db.dir();
    // A revert a kill or a failure interrupted is finished first (it is tried again at
    // every step until it is done).
    finish(dir)?;
    let began = match event {
        Event::Start { .. } | Event::Landed => begin_due(state)?,
        _ => None,
    };
    let counted = match event {
        Event::Start { supervised: false } => count(dir, Count::Start)?,
        Event::Report => count(dir, Count::Report)?,
        Event::Ran(s) => count(dir, Count::Seconds(s))?,
        Event::Start { supervised: true } | Event::Landed => {
            record::read(dir)?.filter(Probation::on_probation)
        }
    };
    let Some(p) = counted else {
        return Ok(Step::Nothing);
    };
    if let Some((why, detail)) = due(&p) {
        return Ok(reverted(revert(dir, why, None, detail)?));
    }
    if matches!(event, Event::Start { .. } | Event::Landed) {
        if let Some((name, failure)) = run_checks(dir, &p)? {
            return Ok(reverted(revert(
                dir,
                Why::HealthCheck,
                Some(name),
                failure,
            )?));
        }
        if let Event::Start { .. } = event {
            count(dir, Count::Proven)?;
        }
    }
    Ok(began.map_or(Step::Nothing, Step::Began))
}

fn reverted(p: Option<Probation>) -> Step {
    p.map_or(Step::Nothing, Step::Reverted)
}

/// When the daemon takes a [`step`].
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// The daemon started (state open, socket bound, unfinished landing done).
    Start { supervised: bool },
    /// A landing just finished.
    Landed,
    /// A report was written.
    Report,
    /// Seconds of running time (unsupervised daemon only).
    Ran(u64),
}

/// Whether a generation is on probation now (the daemon lands nothing meanwhile: a bundle
/// that arrives waits until the trial ends, so a revert always goes back to a generation
/// that was confirmed or was live before).
pub fn on_probation(dir: &Path) -> Result<bool, StateError> {
    Ok(record::read(dir)?.is_some_and(|p| p.on_probation()))
}

/// One line for the daemon's log about a trial.
pub fn describe(p: &Probation) -> String {
    match &p.trial {
        Trial::OnProbation => format!(
            "generation {} (bundle {}) on probation: {} s, {} reports, {} unproven starts so far",
            p.generation, p.bundle, p.seconds, p.reports, p.unproven_starts
        ),
        Trial::Committed { counter } => format!(
            "generation {} committed (confirmation of report {counter})",
            p.generation
        ),
        Trial::Reverting { why, .. } => format!(
            "generation {} being reverted: {}",
            p.generation,
            why.describe()
        ),
        Trial::Reverted {
            why,
            check,
            detail,
            activation_failure,
        } => format!(
            "generation {} REVERTED ({}{}): {detail}; generation {} live again{}",
            p.generation,
            why.describe(),
            check.as_deref().map_or(String::new(), |c| format!(": {c}")),
            p.previous.map_or("none".into(), |g| g.to_string()),
            activation_failure
                .as_deref()
                .map_or(String::new(), |f| format!(
                    ", but its activation failed: {f}"
                ))
        ),
    }
}
