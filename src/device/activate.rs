//! Activation: make an imported root the profile's new generation, run the activation
//! command, and switch back to the previous generation if it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::nixstore::{NixError, NixStore};

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Nix(#[from] NixError),
    #[error("could not run the activation command: {0}")]
    Spawn(std::io::Error),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ActivationReport {
    pub profile: PathBuf,
    pub root: String,
    /// The generation made for `root`.
    pub generation: u32,
    /// The generation live now (the previous one after a rollback).
    pub live_generation: Option<u32>,
    pub activated: bool,
    pub rolled_back: bool,
    /// Exit status and last lines of the activation command's output, when it failed.
    pub failure: Option<String>,
}

/// Make `root` the new generation of `profile`; run `command` (through `sh -c`, with
/// `NARLINK_ROOT`, `NARLINK_PROFILE` and `NARLINK_GENERATION` set); on failure or after
/// `timeout`, switch back to the generation that was live before.
pub fn activate(
    store: &NixStore,
    profile: &Path,
    root: &str,
    command: Option<&str>,
    timeout: Duration,
) -> Result<ActivationReport, ActivateError> {
    let previous = store.current_generation(profile)?;
    let generation = store.set_profile(profile, root)?;
    let mut report = ActivationReport {
        profile: profile.to_owned(),
        root: root.to_owned(),
        generation,
        live_generation: Some(generation),
        activated: true,
        ..ActivationReport::default()
    };
    let Some(command) = command else {
        return Ok(report);
    };
    let failure = run(command, root, profile, generation, timeout)?;
    if let Some(why) = failure {
        report.activated = false;
        report.failure = Some(why);
        if let Some(prev) = previous.filter(|p| *p != generation) {
            store.switch_generation(profile, prev)?;
            report.rolled_back = true;
        }
        report.live_generation = store.current_generation(profile)?;
    }
    Ok(report)
}

/// Run the activation command; `Some(reason)` if it failed.
fn run(
    command: &str,
    root: &str,
    profile: &Path,
    generation: u32,
    timeout: Duration,
) -> Result<Option<String>, ActivateError> {
    let out = tempfile::tempfile().map_err(ActivateError::Spawn)?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("NARLINK_ROOT", root)
        .env("NARLINK_PROFILE", profile)
        .env("NARLINK_GENERATION", generation.to_string())
        .stdout(out.try_clone().map_err(ActivateError::Spawn)?)
        .stderr(out.try_clone().map_err(ActivateError::Spawn)?)
        .spawn()
        .map_err(ActivateError::Spawn)?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(ActivateError::Spawn)? {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
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
        Some(s) => Some(format!("activation command failed ({s}): {tail}")),
        None => Some(format!(
            "activation command timed out after {} s: {tail}",
            timeout.as_secs()
        )),
    })
}
