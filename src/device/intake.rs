//! What `device receive` takes: bundle files, frame files, directories of frame files, or
//! standard input, recognised by their first bytes.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use narlink_protocol::bundle::BUNDLE_MAGIC;
use serde::Serialize;

use super::link::{IntakeStats, LinkError, LinkReceiver};
use super::receive::{receive, ReceiveError, ReceiveReport};
use crate::peek::peek_magic;
use crate::state::device::DeviceState;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Bundle { path: PathBuf, source: ReceiveError },
    #[error(transparent)]
    Link(#[from] LinkError),
}

#[derive(Debug, Default, Serialize)]
pub struct IntakeReport {
    /// Whole bundles received from bundle files.
    pub bundles: Vec<ReceiveReport>,
    /// Frames received.
    pub link: IntakeStats,
    /// Bundles still being received over the link.
    pub receiving: usize,
    /// Inputs named on the command line that held neither a bundle nor any frame.
    pub unrecognized: Vec<String>,
}

impl IntakeReport {
    /// Whether some bundle became complete (ready to import).
    pub fn complete(&self) -> bool {
        self.bundles.iter().any(|b| b.complete) || !self.link.bundles_completed.is_empty()
    }

    pub fn rejected(&self) -> Vec<&String> {
        self.bundles.iter().flat_map(|b| &b.rejected).collect()
    }

    pub fn render(&self) -> String {
        let mut lines = Vec::new();
        for r in &self.bundles {
            lines.push(format!(
                "bundle {}: {} paths, {} payloads: {} staged now, {} already staged, {} rejected{}",
                r.bundle,
                r.paths,
                r.payloads,
                r.staged,
                r.already_staged,
                r.rejected.len(),
                if r.complete {
                    "; complete, ready to import"
                } else {
                    "; incomplete"
                }
            ));
            lines.extend(r.rejected.iter().map(|e| format!("rejected: {e}")));
        }
        let l = &self.link;
        if l.frames > 0 {
            lines.push(format!(
                "frames: {} in, {} stored, {} duplicate, {} corrupt, {} refused, {} late; {} groups decoded, {} dropped; {} payloads staged",
                l.frames, l.stored, l.duplicates, l.corrupt, l.refused, l.late, l.groups_decoded, l.groups_dropped, l.payloads_staged
            ));
            for b in &l.refused_bundles {
                lines.push(format!("bundle {b}"));
            }
            for b in &l.bundles_completed {
                lines.push(format!("bundle {b}: complete, ready to import"));
            }
            if self.receiving > 0 {
                lines.push(format!(
                    "{} bundle(s) still receiving: `narlink device status` says what is missing",
                    self.receiving
                ));
            }
        }
        lines.join("\n")
    }
}

/// Counts bytes read, for progress output.
struct Counting<R> {
    inner: R,
    read: u64,
    bar: crate::progress::Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let read = self.read;
        self.bar.update(read, String::new);
        Ok(n)
    }
}

/// Receive everything in `paths` (`-` is standard input).
pub fn receive_paths(
    state: &DeviceState,
    paths: &[PathBuf],
    progress: bool,
) -> Result<IntakeReport, IntakeError> {
    let mut report = IntakeReport::default();
    let mut link = LinkReceiver::open(state)?;
    for p in paths {
        if p.as_os_str() == "-" {
            if !one(state, &mut link, &mut report, p, io::stdin().lock())? {
                report.unrecognized.push("standard input".into());
            }
        } else if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .and_then(|d| d.map(|e| e.map(|e| e.path())).collect())
                .map_err(|source| IntakeError::Io {
                    path: p.clone(),
                    source,
                })?;
            files.sort();
            for f in files.iter().filter(|f| f.is_file()) {
                // A damaged frame file in a directory is an erasure, nothing more.
                one(state, &mut link, &mut report, f, open(f)?)?;
            }
        } else if !one(state, &mut link, &mut report, p, {
            let total = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            Counting {
                inner: open(p)?,
                read: 0,
                bar: crate::progress::Progress::new("receive", total, progress),
            }
        })? {
            report.unrecognized.push(p.display().to_string());
        }
    }
    link.flush()?;
    report.receiving = link.active();
    report.link = std::mem::take(&mut link.stats);
    Ok(report)
}

fn open(p: &Path) -> Result<BufReader<std::fs::File>, IntakeError> {
    std::fs::File::open(p)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|source| IntakeError::Io {
            path: p.to_owned(),
            source,
        })
}

fn one(
    state: &DeviceState,
    link: &mut LinkReceiver<'_>,
    report: &mut IntakeReport,
    path: &Path,
    r: impl Read,
) -> Result<bool, IntakeError> {
    let (magic, r) = peek_magic(r).map_err(|source| IntakeError::Io {
        path: path.to_owned(),
        source,
    })?;
    // A bundle of an older format too, so that its header decoder says which.
    if magic.starts_with(&BUNDLE_MAGIC) || magic == *b"NLBUNDLE" {
        let b = receive(state, r).map_err(|source| IntakeError::Bundle {
            path: path.to_owned(),
            source,
        })?;
        report.bundles.push(b);
        Ok(true)
    } else {
        let before = link.stats.frames;
        link.handle_stream(r)?;
        Ok(link.stats.frames > before)
    }
}
