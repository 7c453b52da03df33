//! The ground end of the link: a bundle file in, frames out.
//!
//! The [`Sender`] (protocol crate) decides which shards each group gets; this module reads
//! the groups' bytes from the bundle file, encodes the shards, and emits frames. Shards are
//! interleaved round-robin across a window of [`WINDOW_GROUPS`] groups, so a burst of lost
//! frames costs many groups one shard each, while the ground holds only one window of groups
//! in memory. A pass cut short by its byte budget gives the unsent shards back to the sender.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use narlink_protocol::announce::Announcement;
use narlink_protocol::bundle::{BundleHeader, BundleId, HEADER_LEN};
use narlink_protocol::fec::{self, ErasureCode, FecError};
use narlink_protocol::frame::{FrameHeader, FrameRef};
pub use narlink_protocol::params::LinkOptions;
use narlink_protocol::params::{LinkParams, ParamsError};
use narlink_protocol::schedule::{Pass, Sender};
use narlink_protocol::signature::SecretKey;
use serde::Serialize;

use crate::state::mirror::SendRecord;

/// A shard index and its payload.
type EncodedShard = (u16, Vec<u8>);

/// Groups interleaved together.
pub const WINDOW_GROUPS: usize = 64;
/// An announced bundle's announcement goes first and last in every pass, and again after
/// every this many frames (0.2 % of the frames).
pub const ANNOUNCE_EVERY: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("link parameters: {0}")]
    Params(#[from] ParamsError),
    #[error("erasure code: {0}")]
    Fec(#[from] FecError),
    #[error("{0} is not a narlink bundle: {1}")]
    NotBundle(PathBuf, narlink_protocol::bundle::BundleError),
    #[error("writing frames: {0}")]
    Sink(io::Error),
}

/// Frames of one bundle, from its file.
pub struct FrameSource {
    file: File,
    path: PathBuf,
    id: BundleId,
    params: LinkParams,
    code: Box<dyn ErasureCode>,
    pub sender: Sender,
    /// The encoded announcement frame, if the bundle is announced.
    announcement: Option<Vec<u8>>,
}

/// What one pass put on air.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EmitReport {
    pub frames: u64,
    pub bytes: u64,
    pub parity_frames: u64,
    /// Announcement frames among them.
    pub announcements: u64,
    /// Shards planned but left for the next pass (budget reached).
    pub deferred: u64,
}

/// Map an I/O error on `path` to [`LinkError::Io`] saying `what` failed.
fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LinkError {
    let path = path.to_owned();
    move |source| LinkError::Io { what, path, source }
}

impl FrameSource {
    /// Open a bundle file and its send state (`sent` from an earlier pass, if any).
    pub fn open(
        path: &Path,
        options: LinkOptions,
        sent: Option<Vec<u64>>,
    ) -> Result<FrameSource, LinkError> {
        let mut file = File::open(path).map_err(io_err("opening bundle", path))?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(io_err("reading bundle", path))?;
        let header =
            BundleHeader::decode(&head).map_err(|e| LinkError::NotBundle(path.to_owned(), e))?;
        Self::open_raw(path, header.id(), options, sent)
    }

    /// Frames of any file, named `id` (for synthetic link studies).
    pub fn open_raw(
        path: &Path,
        id: BundleId,
        options: LinkOptions,
        sent: Option<Vec<u64>>,
    ) -> Result<FrameSource, LinkError> {
        let file = File::open(path).map_err(io_err("opening bundle", path))?;
        let len = file
            .metadata()
            .map_err(io_err("reading bundle", path))?
            .len();
        let params = options.params(len);
        let sender = match sent {
            Some(sent) => Sender::with_sent(id, params, options.redundancy_percent, sent)?,
            None => Sender::new(id, params, options.redundancy_percent)?,
        };
        Ok(FrameSource {
            file,
            path: path.to_owned(),
            id,
            params,
            code: fec::codec(params.codec),
            sender,
            announcement: None,
        })
    }

    /// Announce the bundle (see [`narlink_protocol::announce`]) in every pass; returns the
    /// encoded frame, or `None` when the frame size is too small to carry it (the bundle then
    /// goes unannounced).
    pub fn announce(&mut self, key: &SecretKey, sequence: u64) -> Option<Vec<u8>> {
        let a = Announcement::sign(key, self.id, self.params, sequence);
        let (header, payload) = a.to_frame()?;
        let mut frame = Vec::new();
        FrameRef::new(header, &payload).ok()?.encode(&mut frame);
        self.announcement = Some(frame.clone());
        Some(frame)
    }

    /// Announce the bundle with an announcement frame made earlier by [`Self::announce`].
    pub fn set_announcement(&mut self, frame: Vec<u8>) {
        self.announcement = Some(frame);
    }

    pub fn id(&self) -> BundleId {
        self.id
    }

    pub fn params(&self) -> LinkParams {
        self.params
    }

    pub fn record(&self, options: LinkOptions) -> SendRecord {
        SendRecord {
            bundle_path: self.path.clone(),
            options,
            bundle_len: self.params.bundle_len,
            sent: self.sender.sent_counts().to_vec(),
        }
    }

    /// Emit the shards of `pass` as encoded frames into `sink`, at most `budget` bytes of
    /// frames (whole frames). Shards not emitted are given back to the sender.
    pub fn emit(
        &mut self,
        pass: Pass,
        budget: Option<u64>,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<EmitReport, LinkError> {
        let layout = *self.sender.layout();
        let groups = layout.group_count() as usize;
        let mut want: Vec<Vec<u16>> = vec![Vec::new(); groups];
        for s in pass {
            want[s.group as usize].push(s.shard);
        }
        let mut report = EmitReport::default();
        let mut buf = Vec::new();
        let mut frame = Vec::new();
        let mut out_of_budget = false;
        // An empty pass (the device needs nothing) sends nothing, announcements included.
        let announcement = self
            .announcement
            .clone()
            .filter(|_| want.iter().any(|w| !w.is_empty()));
        let announce = |report: &mut EmitReport,
                        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>|
         -> Result<(), LinkError> {
            if let Some(a) = &announcement {
                sink(a).map_err(LinkError::Sink)?;
                report.frames += 1;
                report.bytes += a.len() as u64;
                report.announcements += 1;
            }
            Ok(())
        };
        announce(&mut report, sink)?;
        for window in (0..groups).collect::<Vec<_>>().chunks(WINDOW_GROUPS) {
            let mut encoded: Vec<(u32, Vec<EncodedShard>)> = Vec::new();
            for &g in window {
                if want[g].is_empty() {
                    continue;
                }
                if out_of_budget {
                    report.deferred += want[g].len() as u64;
                    self.sender.unsend(g as u32, want[g].len() as u64);
                    continue;
                }
                let range = layout.byte_range(g as u32).unwrap_or(0..0);
                buf.resize((range.end - range.start) as usize, 0);
                self.file
                    .seek(SeekFrom::Start(range.start))
                    .and_then(|_| self.file.read_exact(&mut buf))
                    .map_err(|source| LinkError::Io {
                        what: "reading bundle",
                        path: self.path.clone(),
                        source,
                    })?;
                let shards = fec::encode_group_shards(
                    self.code.as_ref(),
                    &self.params,
                    &layout,
                    g as u32,
                    &buf,
                    &want[g],
                )?;
                encoded.push((g as u32, want[g].iter().copied().zip(shards).collect()));
            }
            // Round-robin over the window's groups.
            let mut pos = vec![0usize; encoded.len()];
            let mut emitted = vec![0u64; encoded.len()];
            let mut left: usize = encoded.iter().map(|(_, s)| s.len()).sum();
            while left > 0 && !out_of_budget {
                for (i, (g, shards)) in encoded.iter().enumerate() {
                    let Some((shard, payload)) = shards.get(pos[i]) else {
                        continue;
                    };
                    let header = FrameHeader {
                        bundle_id: self.id,
                        params: self.params,
                        group: *g,
                        shard: *shard,
                    };
                    frame.clear();
                    FrameRef::new(header, payload)
                        .map_err(|e| LinkError::Sink(io::Error::other(e.to_string())))?
                        .encode(&mut frame);
                    if budget.is_some_and(|b| report.bytes + frame.len() as u64 > b) {
                        out_of_budget = true;
                        break;
                    }
                    sink(&frame).map_err(LinkError::Sink)?;
                    report.frames += 1;
                    report.bytes += frame.len() as u64;
                    if report.frames % ANNOUNCE_EVERY == 0 {
                        announce(&mut report, sink)?;
                    }
                    if *shard >= layout.group_k(*g).unwrap_or(0) {
                        report.parity_frames += 1;
                    }
                    pos[i] += 1;
                    emitted[i] += 1;
                    left -= 1;
                }
            }
            for (i, (g, shards)) in encoded.iter().enumerate() {
                let unsent = shards.len() as u64 - emitted[i];
                if unsent > 0 {
                    report.deferred += unsent;
                    self.sender.unsend(*g, unsent);
                }
            }
        }
        announce(&mut report, sink)?;
        Ok(report)
    }
}

/// Where frames go: one file of concatenated frames, a directory with one file per frame,
/// or standard output.
pub enum FrameSink {
    File(io::BufWriter<File>),
    Dir { dir: PathBuf, next: u64 },
    Stdout(io::BufWriter<io::Stdout>),
}

impl FrameSink {
    /// `-` is standard output; an existing directory (or a path ending in `/`) gets one file
    /// per frame; anything else is a file (appended to, so passes can accumulate).
    pub fn open(dest: &Path) -> io::Result<FrameSink> {
        if dest.as_os_str() == "-" {
            return Ok(FrameSink::Stdout(io::BufWriter::with_capacity(
                1 << 20,
                io::stdout(),
            )));
        }
        if dest.is_dir() || dest.to_string_lossy().ends_with('/') {
            std::fs::create_dir_all(dest)?;
            let next = std::fs::read_dir(dest)?.count() as u64;
            return Ok(FrameSink::Dir {
                dir: dest.to_owned(),
                next,
            });
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dest)?;
        Ok(FrameSink::File(io::BufWriter::with_capacity(1 << 20, f)))
    }

    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            FrameSink::File(w) => w.write_all(frame),
            FrameSink::Stdout(w) => w.write_all(frame),
            FrameSink::Dir { dir, next } => {
                *next += 1;
                std::fs::write(dir.join(format!("{:08}.frame", *next)), frame)
            }
        }
    }

    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            FrameSink::File(w) => {
                w.flush()?;
                w.get_ref().sync_all()
            }
            FrameSink::Stdout(w) => w.flush(),
            FrameSink::Dir { .. } => Ok(()),
        }
    }
}
