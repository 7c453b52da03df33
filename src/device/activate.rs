//! Landing an imported update: make its root the profile's new generation, run the activation
//! command, and return to the previous generation if it fails, as one journaled sequence
//! (design invariant 8; [`Landing`] in the device state).
//!
//! [`begin`] writes the journal in the import's own commit; [`land`] then does one step per
//! stage and records the next stage durably before going on. So after a kill at any instant
//! the next `device import` (or the daemon when it starts) calls [`land`] and finishes the step
//! it was in: a switch already made is recognised (the generation's link already names the
//! root), an activation cut short runs again from the start (activation commands must be
//! idempotent), a rollback cut short is completed. The activation command runs in a process
//! group of its own, killed whole when it overruns its timeout.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use narlink_protocol::bundle::BundleId;
use serde::Serialize;

use crate::nixstore::{NixError, NixStore};
use crate::state::device::{DeviceState, Landing, Stage};
use crate::state::{StateError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("could not run the activation command: {0}")]
    Spawn(std::io::Error),
    #[error("profile {path}: {source}")]
    Profile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to do with an imported root.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profile: PathBuf,
    /// Run through `sh -c`, with `NARLINK_ROOT`, `NARLINK_PROFILE`, `NARLINK_GENERATION`.
    pub command: Option<String>,
    pub timeout: Duration,
    /// Put the new generation on probation under this window (`device listen`; see
    /// [`super::probation`]).
    pub probation: Option<crate::state::probation::Window>,
}

impl Plan {
    /// The plan a `--profile`/`--activate` pair asks for, if any: `--activate` alone uses the
    /// store's default profile.
    pub fn new(
        store: &NixStore,
        profile: Option<&Path>,
        command: Option<&str>,
        timeout: Duration,
    ) -> Option<Plan> {
        let profile = profile
            .map(Path::to_owned)
            .or_else(|| command.map(|_| store.default_profile()))?;
        Some(Plan {
            profile,
            command: command.map(str::to_owned),
            timeout,
            probation: None,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ActivationReport {
    pub profile: PathBuf,
    pub root: String,
    /// The generation made for `root`.
    pub generation: u32,
    /// The generation live now (the previous one after a rollback; none if the profile had
    /// no generation before and the activation failed).
    pub live_generation: Option<u32>,
    pub activated: bool,
    pub rolled_back: bool,
    /// Exit status and last lines of the activation command's output, when it failed.
    pub failure: Option<String>,
}

/// Journal the landing of bundle `id` (root `root`) by `plan`, within the import's commit
/// `tx`: once that commit is durable, [`land`] will switch the profile.
pub fn begin(
    state: &DeviceState,
    store: &NixStore,
    tx: &Tx,
    id: &BundleId,
    root: &str,
    plan: &Plan,
) -> Result<(), ActivateError> {
    let landing = Landing {
        bundle: *id,
        root: root.to_owned(),
        profile: plan.profile.clone(),
        command: plan.command.clone(),
        timeout_secs: plan.timeout.as_secs(),
        previous: store.current_generation(&plan.profile)?,
        stage: Stage::Switch,
    };
    state.put_landing(tx, &landing)?;
    state.put_probation_window(tx, id, plan.probation.as_ref())?;
    Ok(())
}

/// Carry an unfinished journaled landing to its end (switch, activate, roll back), recording
/// each stage before the next step; its report, or `None` if there was nothing to finish.
pub fn land(
    state: &DeviceState,
    store: &NixStore,
) -> Result<Option<ActivationReport>, ActivateError> {
    let Some(mut l) = state.landing()? else {
        return Ok(None);
    };
    if matches!(l.stage, Stage::Done { .. }) {
        return Ok(None);
    }
    loop {
        l.stage = match l.stage.clone() {
            Stage::Done { .. } => return Ok(Some(report(&l))),
            Stage::Switch => {
                let current = store.current_generation(&l.profile)?;
                let generation = match current {
                    Some(g) if generation_root(&l.profile, g).as_deref() == Some(&l.root) => g,
                    _ => store.set_profile(&l.profile, &l.root)?,
                };
                if l.command.is_some() {
                    Stage::Activate { generation }
                } else {
                    done(generation, Some(generation), None)
                }
            }
            Stage::Activate { generation } => {
                if store.current_generation(&l.profile)? != Some(generation) {
                    store.switch_generation(&l.profile, generation)?;
                }
                let command = l.command.as_deref().unwrap_or("true");
                let timeout = Duration::from_secs(l.timeout_secs);
                match activation(
                    state.db.dir(),
                    command,
                    &l.root,
                    &l.profile,
                    generation,
                    timeout,
                )? {
                    None => done(generation, Some(generation), None),
                    Some(failure) => Stage::RollBack {
                        generation,
                        failure,
                    },
                }
            }
            Stage::RollBack {
                generation,
                failure,
            } => {
                match l.previous {
                    Some(p) if p != generation => store.switch_generation(&l.profile, p)?,
                    Some(_) => {}
                    None => remove_profile(&l.profile, generation)?,
                }
                let live = store.current_generation(&l.profile)?;
                done(generation, live, Some(failure))
            }
        };
        state.save_landing(&l)?;
    }
}

/// The report of the last landing, if it is finished (what a run that had nothing to do
/// says, so a failed update stays a failure until a newer one lands).
pub fn last(state: &DeviceState) -> Result<Option<ActivationReport>, ActivateError> {
    Ok(state
        .landing()?
        .filter(|l| matches!(l.stage, Stage::Done { .. }))
        .map(|l| report(&l)))
}

fn done(generation: u32, live: Option<u32>, failure: Option<String>) -> Stage {
    Stage::Done {
        generation,
        activated: failure.is_none(),
        live,
        failure,
    }
}

fn report(l: &Landing) -> ActivationReport {
    let Stage::Done {
        generation,
        activated,
        live,
        failure,
    } = &l.stage
    else {
        return ActivationReport::default();
    };
    ActivationReport {
        profile: l.profile.clone(),
        root: l.root.clone(),
        generation: *generation,
        live_generation: *live,
        activated: *activated,
        rolled_back: !activated,
        failure: failure.clone(),
    }
}

/// The link of generation `g` of `profile` (`PROFILE-G-link`, as Nix names it).
pub(super) fn generation_link(profile: &Path, g: u32) -> PathBuf {
    let name = profile
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    profile.with_file_name(format!("{name}-{g}-link"))
}

/// The store path generation `g` of `profile` holds.
pub(super) fn generation_root(profile: &Path, g: u32) -> Option<String> {
    std::fs::read_link(generation_link(profile, g))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Leave the profile as it was before its first generation: no profile at all.
pub(super) fn remove_profile(profile: &Path, generation: u32) -> Result<(), ActivateError> {
    for p in [profile.to_owned(), generation_link(profile, generation)] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ActivateError::Profile { path: p, source: e })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Run the activation command for `generation` (root `root`) of `profile`; `Some(reason)`
/// if it failed. `dir` is the state directory (see [`run`]).
pub(super) fn activation(
    dir: &Path,
    command: &str,
    root: &str,
    profile: &Path,
    generation: u32,
    timeout: Duration,
) -> Result<Option<String>, ActivateError> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(command);
    with_env(&mut c, root, profile, generation);
    run(dir, &mut c, "activation command", timeout)
}

/// The environment activation commands and health checks see.
pub(super) fn with_env(c: &mut Command, root: &str, profile: &Path, generation: u32) {
    c.env("NARLINK_ROOT", root)
        .env("NARLINK_PROFILE", profile)
        .env("NARLINK_GENERATION", generation.to_string());
}

/// The command a narlink process is running for the device (activation, health check), in
/// the state directory: `<process group> <start time> <boot id>`.
const RUNNING_FILE: &str = "running-command";

/// Kill what a narlink killed mid-command left running: the command has a process group of
/// its own and would outlive it, and end after the one that replaced it (an old activation
/// finishing after the revert's). Only if it is still that process (same boot, same start
/// time), so a reused process id is never hit.
fn reap(dir: &Path) {
    let file = dir.join(RUNNING_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    let mut f = text.split_whitespace();
    if let (Some(pid), Some(start), Some(boot)) = (f.next(), f.next(), f.next()) {
        if let Ok(pid) = pid.parse::<i32>() {
            if Some(boot) == boot_id().as_deref() && start_time(pid).as_deref() == Some(start) {
                if let Some(group) = rustix::process::Pid::from_raw(pid) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
            }
        }
    }
    let _ = std::fs::remove_file(file);
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// Run `c` in a process group of its own; `Some(reason)` (naming it `what`, with the last
/// lines of its output) if it failed. On timeout the whole group is killed. What runs is
/// named in the state directory `dir` while it runs, so that a narlink killed meanwhile does
/// not leave it running past the next command ([`reap`]).
pub(super) fn run(
    dir: &Path,
    c: &mut Command,
    what: &str,
    timeout: Duration,
) -> Result<Option<String>, ActivateError> {
    reap(dir);
    let out = tempfile::tempfile().map_err(ActivateError::Spawn)?;
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(ActivateError::Spawn)?)
        .stderr(out.try_clone().map_err(ActivateError::Spawn)?)
        .process_group(0)
        .spawn()
        .map_err(ActivateError::Spawn)?;
    let group = rustix::process::Pid::from_child(&child);
    let running = dir.join(RUNNING_FILE);
    if let (Some(started), Some(boot)) = (start_time(group.as_raw_nonzero().get()), boot_id()) {
        let _ = std::fs::write(&running, format!("{} {started} {boot}\n", child.id()));
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(ActivateError::Spawn)? {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&running);
    let tail = {
        use std::io::{Read, Seek};
        let mut out = out;
        let mut s = String::new();
        let _ = out.rewind();
        let _ = out.read_to_string(&mut s);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    };
    Ok(match status {
        Some(s) if s.success() => None,
        Some(s) => Some(format!("{what} failed ({s}): {tail}")),
        None => Some(format!(
            "{what} timed out after {} s (its process group was killed): {tail}",
            timeout.as_secs()
        )),
    })
}
