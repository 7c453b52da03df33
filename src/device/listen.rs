//! `device listen`: frames from a socket (UDP datagrams, or a TCP or Unix-domain byte stream),
//! into the same intake as files. Sockets live here, and only here.
//!
//! A tokio task per socket cuts frames out of the bytes; one worker thread owns the device
//! state (redb is synchronous) and persists frames in batches: it flushes whenever no frame
//! is waiting, so a frame is durable a few milliseconds after it arrived, and every batch is
//! one commit. When a bundle completes, the worker can import it at once. The status report
//! file is rewritten after batches (at most five times a second), every `status_every`, and
//! at once on SIGUSR1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use narlink_protocol::frame::{FrameSplitter, MAX_FRAME_LEN};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::activate::{ActivateError, Plan};
use super::import::{import_all, ImportError};
use super::link::{LinkError, LinkReceiver};
use super::probation::{self, Event, Step};
use crate::nixstore::NixStore;
use crate::state::device::DeviceState;
use crate::state::StateError;

#[derive(Clone, Debug)]
pub enum Endpoint {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ListenOptions {
    pub endpoint: Endpoint,
    /// Import a bundle as soon as it is complete.
    pub import: bool,
    /// Stop once a bundle has been imported (or completed, without `import`).
    pub exit_when_done: bool,
    /// Write the status report here after every batch that changed something, and at most
    /// every `status_every`.
    pub status_out: Option<PathBuf>,
    pub status_every: Duration,
    /// After a bundle is imported whole: make its root this profile's new generation...
    pub profile: Option<PathBuf>,
    /// ...and run this activation command, rolling back if it fails.
    pub activate: Option<String>,
    pub activate_timeout: Duration,
    /// Put each generation landed on probation under this window (none: commit at once).
    pub probation: Option<crate::state::probation::Window>,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Activate(#[from] super::activate::ActivateError),
    #[error("writing the status report {path}: {source}")]
    Status {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Panicked(String),
}

#[derive(Debug, Default, Serialize)]
pub struct ListenReport {
    pub frames: u64,
    pub bundles_completed: Vec<String>,
    pub bundles_imported: Vec<String>,
    pub activations: Vec<super::activate::ActivationReport>,
    /// The daemon stopped so that its supervisor starts the narlink of the generation now
    /// live (after a landing on probation, or a revert).
    pub restart: Option<String>,
}

/// Run until `exit_when_done` is met (or forever). `ready` is called with the bound address
/// once the socket listens (for port 0).
pub fn listen(
    state_dir: &Path,
    opts: &ListenOptions,
    ready: impl FnOnce(&str),
) -> Result<ListenReport, ListenError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4096);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(ListenError::Socket)?;
    let bound = rt.block_on(bind(&opts.endpoint))?;
    ready(&bound.describe());
    let worker = {
        let dir = state_dir.to_owned();
        let opts = opts.clone();
        std::thread::spawn(move || work(&dir, &opts, rx))
    };
    // The socket side runs until the worker stops (it drops the receiver: sends then fail).
    let net = std::thread::spawn(move || rt.block_on(serve(bound, tx)));
    let report = worker
        .join()
        .unwrap_or_else(|_| Err(ListenError::Panicked(crate::panic::describe())));
    drop(net); // detached: the process exits with the worker's result
    report
}

enum Bound {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Bound {
    fn describe(&self) -> String {
        match self {
            Bound::Udp(s) => format!(
                "udp {}",
                s.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
            Bound::Tcp(s) => format!(
                "tcp {}",
                s.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
            Bound::Unix(_, p) => format!("unix {}", p.display()),
        }
    }
}

async fn bind(e: &Endpoint) -> Result<Bound, ListenError> {
    let err = |what: String| move |source| ListenError::Bind { what, source };
    Ok(match e {
        Endpoint::Udp(a) => Bound::Udp(
            tokio::net::UdpSocket::bind(a)
                .await
                .map_err(err(format!("udp {a}")))?,
        ),
        Endpoint::Tcp(a) => Bound::Tcp(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(err(format!("tcp {a}")))?,
        ),
        Endpoint::Unix(p) => {
            // A stale socket file from an earlier run would make bind fail.
            if p.exists() {
                let _ = std::fs::remove_file(p);
            }
            Bound::Unix(
                tokio::net::UnixListener::bind(p).map_err(err(format!("unix {}", p.display())))?,
                p.clone(),
            )
        }
    })
}

async fn serve(bound: Bound, tx: mpsc::SyncSender<Vec<u8>>) -> Result<(), ListenError> {
    // SIGUSR1 asks for a status report now: an empty message to the worker.
    if let Ok(mut sig) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if tx.send(Vec::new()).is_err() {
                    break;
                }
            }
        });
    }
    match bound {
        Bound::Udp(sock) => {
            let mut buf = vec![0u8; MAX_FRAME_LEN + 1];
            loop {
                let (n, _) = sock
                    .recv_from(&mut buf)
                    .await
                    .map_err(ListenError::Socket)?;
                if tx.send(buf[..n].to_vec()).is_err() {
                    return Ok(());
                }
            }
        }
        Bound::Tcp(l) => loop {
            let (s, _) = l.accept().await.map_err(ListenError::Socket)?;
            tokio::spawn(stream(s, tx.clone()));
        },
        Bound::Unix(l, _) => loop {
            let (s, _) = l.accept().await.map_err(ListenError::Socket)?;
            tokio::spawn(stream(s, tx.clone()));
        },
    }
}

/// Cut frames out of one connection's bytes.
async fn stream(mut s: impl tokio::io::AsyncRead + Unpin, tx: mpsc::SyncSender<Vec<u8>>) {
    let mut splitter = FrameSplitter::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        splitter.push(&buf[..n]);
        while let Some(f) = splitter.next_frame() {
            let mut bytes = Vec::with_capacity(f.payload().len() + 64);
            f.encode(&mut bytes);
            // A full queue blocks this thread: the socket is not read until the worker
            // catches up, which is the back-pressure a stream wants.
            if tx.send(bytes).is_err() {
                return;
            }
        }
    }
    splitter.finish();
    while let Some(f) = splitter.next_frame() {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        let _ = tx.send(bytes);
    }
}

/// The worker: owns the state, persists frames in batches, imports, writes status.
fn work(
    dir: &Path,
    opts: &ListenOptions,
    rx: mpsc::Receiver<Vec<u8>>,
) -> Result<ListenReport, ListenError> {
    let state = DeviceState::open(dir)?;
    let store = NixStore::new(state.store_uri()?.as_deref());
    let mut report = ListenReport::default();
    let supervised = probation::attach_to_supervisor();
    // An update a kill interrupted between its import and its activation comes first, then
    // the trial of the generation live (a revert a kill interrupted, the health checks).
    land(&state, &store, &mut report)?;
    if let Some(why) = trial(&state, Event::Start { supervised }, supervised)? {
        return stop(&state, opts, why, report);
    }
    let mut rx_link = LinkReceiver::open(&state)?;
    let mut last_status = Instant::now() - opts.status_every;
    let mut last_tick = Instant::now();
    let mut reports = 0u64;
    // Something may be ready to import: at the start (a bundle completed before a kill, or
    // during probation), and after a bundle completed while a generation was on probation
    // (imported once the trial ends).
    let mut import_waiting = true;
    loop {
        // Block for the first frame (or wake up for a scheduled status report), then take
        // whatever else is already waiting: one durable commit for the batch.
        let first = match rx.recv_timeout(opts.status_every) {
            Ok(f) => Some(f),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = 0;
        let mut requested = false;
        if let Some(f) = first {
            if f.is_empty() {
                requested = true;
            } else {
                rx_link.handle_bytes(&f)?;
                batch += 1;
            }
            while let Ok(f) = rx.try_recv() {
                if f.is_empty() {
                    requested = true;
                    continue;
                }
                rx_link.handle_bytes(&f)?;
                batch += 1;
                if batch >= 4096 {
                    break;
                }
            }
            rx_link.flush()?;
            report.frames += batch;
        }
        let stats = &mut rx_link.stats;
        for b in std::mem::take(&mut stats.bundles_announced) {
            log(&format!("bundle {b} announced"));
        }
        for b in std::mem::take(&mut stats.bundles_verified) {
            log(&format!("bundle {b} verified"));
        }
        for b in std::mem::take(&mut stats.refused_bundles) {
            log(&format!("bundle {b}"));
        }
        let completed = std::mem::take(&mut stats.bundles_completed);
        for b in &completed {
            log(&format!("bundle {b} ready to import"));
        }
        report.bundles_completed.extend(completed.iter().cloned());
        for g in std::mem::take(&mut stats.generations_confirmed) {
            log(&format!(
                "generation {g} confirmed by the ground: committed"
            ));
        }
        for (why, n) in std::mem::take(&mut stats.confirmations_refused) {
            log(&format!("{n} confirmations refused: {why}"));
        }
        let staged = std::mem::take(&mut rx_link.stats.payloads_staged);
        import_waiting |= staged > 0 || !completed.is_empty();
        if import_waiting && opts.import && !probation::on_probation(state.db.dir())? {
            // Paths whose data is all here go into the store now, the rest later.
            import_waiting = false;
            drop(rx_link);
            let landed = import_and_activate(&state, &store, opts, &mut report)?;
            if landed {
                if let Some(why) = trial(&state, Event::Landed, supervised)? {
                    return stop(&state, opts, why, report);
                }
            }
            rx_link = LinkReceiver::open(&state)?;
        }
        if !supervised {
            // Unsupervised, the daemon counts its running time itself, every status interval
            // (at most every 30 s: each count is a durable write while on probation).
            if last_tick.elapsed() >= opts.status_every.min(TIME_TICK) {
                let ran = last_tick.elapsed().as_secs();
                last_tick += Duration::from_secs(ran);
                if let Some(why) = trial(&state, Event::Ran(ran), supervised)? {
                    return stop(&state, opts, why, report);
                }
            }
        }
        let done = if opts.import {
            !report.bundles_imported.is_empty()
        } else {
            !report.bundles_completed.is_empty()
        };
        let leaving = opts.exit_when_done && done;
        if let Some(path) = &opts.status_out {
            // The last report before leaving says how the landing went.
            if requested
                || leaving
                || batch > 0 && last_status.elapsed() >= Duration::from_millis(200)
                || last_status.elapsed() >= opts.status_every
            {
                reports += 1;
                write_status(&state, path, reports)?;
                last_status = Instant::now();
                if let Some(why) = trial(&state, Event::Report, supervised)? {
                    return stop(&state, opts, why, report);
                }
            }
        }
        if leaving {
            break;
        }
    }
    Ok(report)
}

/// How often an unsupervised daemon counts its running time at most.
const TIME_TICK: Duration = Duration::from_secs(30);

/// Write the `n`-th report of this run to `path`; every 16th is a full one (protocol/SPEC.md,
/// "Status report").
fn write_status(state: &DeviceState, path: &Path, n: u64) -> Result<(), ListenError> {
    let detail = if n % 16 == 1 {
        super::status::Detail::Full
    } else {
        super::status::Detail::Regular
    };
    let (_, bytes) = super::status::report(state, detail)?;
    write_atomically(path, &bytes).map_err(|source| ListenError::Status {
        path: path.to_owned(),
        source,
    })
}

/// Stop so that the supervisor starts the narlink of the generation live, with a last
/// report that says why.
fn stop(
    state: &DeviceState,
    opts: &ListenOptions,
    why: String,
    mut report: ListenReport,
) -> Result<ListenReport, ListenError> {
    log(&format!(
        "stopping: {why}; the supervisor starts the narlink now live"
    ));
    if let Some(path) = &opts.status_out {
        write_status(state, path, 1)?;
    }
    report.restart = Some(why);
    Ok(report)
}

/// Take a step of the trial of the generation live; why the daemon must stop now (its
/// supervisor then starts the narlink of the generation live), if it must.
fn trial(
    state: &DeviceState,
    event: Event,
    supervised: bool,
) -> Result<Option<String>, ListenError> {
    let step = match probation::step(state, event) {
        Ok(s) => s,
        Err(ActivateError::State(e)) => return Err(e.into()),
        Err(e) => {
            log(&format!("probation: {e} (will retry)"));
            return Ok(None);
        }
    };
    Ok(match step {
        Step::Nothing => None,
        Step::Began(p) => {
            log(&probation::describe(&p));
            // The new generation's narlink takes over under the supervisor.
            supervised.then(|| format!("generation {} landed on probation", p.generation))
        }
        Step::Reverted(p) => {
            log(&probation::describe(&p));
            supervised.then(|| format!("generation {} reverted", p.generation))
        }
    })
}

/// One line on stderr per event, for the journal.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "listen: {line}");
}

/// Import what is ready and, when a bundle completed, switch the profile and activate. A
/// bundle whose import is refused or fails is logged and left (its record says why); the
/// daemon goes on. Only a failure of the device's own state stops it.
fn import_and_activate(
    state: &DeviceState,
    store: &NixStore,
    opts: &ListenOptions,
    report: &mut ListenReport,
) -> Result<bool, ListenError> {
    let plan = Plan::new(
        store,
        opts.profile.as_deref(),
        opts.activate.as_deref(),
        opts.activate_timeout,
    )
    .map(|p| Plan {
        probation: opts.probation.clone(),
        ..p
    });
    match import_all(state, store, opts.progress, true, plan.as_ref()) {
        Ok(imp) => {
            for r in &imp.refused {
                log(&format!("import refused: {r}"));
            }
            for b in &imp.bundles {
                log(&format!(
                    "bundle {} {} ({} paths)",
                    b.bundle,
                    if b.complete {
                        "imported"
                    } else {
                        "partly imported"
                    },
                    b.paths_imported
                ));
            }
            report.bundles_imported.extend(
                imp.bundles
                    .iter()
                    .filter(|b| b.complete)
                    .map(|b| b.bundle.clone()),
            );
        }
        Err(ImportError::State(e)) => return Err(e.into()),
        Err(e) => log(&format!("import refused: {e}")),
    }
    let before = report.activations.len();
    land(state, store, report)?;
    Ok(report.activations.len() > before)
}

/// Finish the journaled landing, if one is unfinished (after an import, or one a kill
/// interrupted before the daemon started), and log its result.
fn land(
    state: &DeviceState,
    store: &NixStore,
    report: &mut ListenReport,
) -> Result<(), ListenError> {
    match super::activate::land(state, store) {
        Ok(None) => {}
        Ok(Some(act)) => {
            log(&format!(
                "profile {} generation {} {}",
                act.profile.display(),
                act.generation,
                act.failure
                    .as_deref()
                    .map_or("activated".to_owned(), |f| format!(
                        "FAILED, generation {} live: {f}",
                        act.live_generation.map_or("none".into(), |g| g.to_string())
                    ))
            ));
            report.activations.push(act);
        }
        Err(ActivateError::State(e)) => return Err(e.into()),
        Err(e) => log(&format!("landing the update failed, will retry: {e}")),
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}
