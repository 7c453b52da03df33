//! `device supervise`: the small, stable process that runs `device listen` from the
//! generation live and falls back when that generation's narlink does not work (issue 19).
//!
//! The supervisor is installed outside the profile (it is what an update cannot break). It
//! starts `bin/narlink` of the profile's live generation (its own binary if that generation
//! has none), with `NARLINK_SUPERVISED` set, in a process group that dies with it. While a
//! generation is on probation it counts each start (the daemon marks the start proven once
//! its state is open, its socket bound and its health checks passed) and the running time;
//! when the starts in a row that did not prove healthy or the window run out, it stops the
//! daemon, switches the profile back, runs the previous generation's activation, and starts
//! the previous narlink. It counts and reverts only while no daemon runs, or after killing
//! it, so the record has one writer at a time for those steps.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::activate::ActivateError;
use super::probation::{self, Count, SUPERVISED_ENV};
use crate::nixstore::NixStore;

#[derive(Clone, Debug)]
pub struct SuperviseOptions {
    pub state_dir: PathBuf,
    /// The device's store (where the profile's generations are).
    pub store: Option<String>,
    /// The profile whose live generation's `bin/narlink` runs.
    pub profile: PathBuf,
    /// Arguments of `device listen` after `--state DIR`.
    pub listen_args: Vec<String>,
    /// How often the running time is counted.
    pub tick: Duration,
    /// Pause between a daemon's exit and the next start.
    pub restart_delay: Duration,
}

/// Run forever (until killed). Failures of the probation steps are logged and tried again:
/// the daemon is started whatever they do.
pub fn supervise(opts: &SuperviseOptions) -> ! {
    let dir = &opts.state_dir;
    let store = NixStore::new(opts.store.as_deref());
    loop {
        // No daemon runs: a revert a kill interrupted is finished, the start counted. If that
        // fails, the daemon starts all the same (it tries the revert again at every step): the
        // receiver is never kept down by it.
        if let Err(e) = before_start(dir) {
            log(&format!("probation: {e} (will retry)"));
        }
        let exe = narlink_of(&store, &opts.profile);
        log(&format!("starting {}", exe.display()));
        let started = Instant::now();
        let mut child = match spawn(&exe, dir, &opts.listen_args) {
            Ok(c) => c,
            Err(e) => {
                log(&format!("cannot start {}: {e}", exe.display()));
                std::thread::sleep(opts.restart_delay);
                continue;
            }
        };
        let mut counted = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            std::thread::sleep(Duration::from_millis(100).min(opts.tick));
            let ran = counted.elapsed();
            if ran < opts.tick {
                continue;
            }
            counted = Instant::now();
            match probation::count(dir, Count::Seconds(ran.as_secs().max(1))) {
                Ok(Some(p)) => {
                    if let Some((why, detail)) = probation::due(&p) {
                        log("the window ran out: stopping the daemon to revert");
                        kill(&mut child);
                        if let Err(e) = revert(dir, why, detail) {
                            log(&format!("probation: {e} (will retry)"));
                        }
                        break None;
                    }
                }
                Ok(None) => {}
                Err(e) => log(&format!("probation: {e} (will retry)")),
            }
        };
        log(&format!(
            "daemon exited ({}) after {} s",
            status.map_or("killed".into(), |s| s.to_string()),
            started.elapsed().as_secs()
        ));
        std::thread::sleep(opts.restart_delay);
    }
}

/// Finish a revert under way, count this start, and revert if the starts ran out.
fn before_start(dir: &Path) -> Result<(), ActivateError> {
    if probation::finish(dir)?.is_some_and(|p| p.on_probation()) {
        if let Some(p) = probation::count(dir, Count::Start)? {
            if let Some((why, detail)) = probation::due(&p) {
                revert(dir, why, detail)?;
            }
        }
    }
    Ok(())
}

fn revert(
    dir: &Path,
    why: crate::state::probation::Why,
    detail: String,
) -> Result<(), ActivateError> {
    if let Some(p) = probation::revert(dir, why, None, detail)? {
        log(&probation::describe(&p));
    }
    Ok(())
}

/// `bin/narlink` of the profile's live generation, or this binary if it has none.
fn narlink_of(store: &NixStore, profile: &Path) -> PathBuf {
    store
        .live(profile)
        .map(|(_, root)| store.real_path(&root).join("bin/narlink"))
        .filter(|p| p.is_file())
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("narlink"))
}

fn spawn(exe: &Path, dir: &Path, args: &[String]) -> std::io::Result<Child> {
    let mut c = Command::new(exe);
    c.arg("device")
        .arg("listen")
        .arg("--state")
        .arg(dir)
        .args(args)
        .env(SUPERVISED_ENV, std::process::id().to_string())
        .process_group(0);
    c.spawn()
}

fn kill(child: &mut Child) {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();
}

fn log(line: &str) {
    eprintln!("supervise: {line}");
}
