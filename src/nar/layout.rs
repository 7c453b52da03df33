//! [`NarLayout`]: the NAR of a filesystem tree, described without reading file contents.
//!
//! A scan walks the tree once (lstat, readdir, readlink; never following symlinks) and records the
//! NAR as a sorted list of segments: runs of framing bytes (kept together in one shared buffer)
//! and the contents of regular files (path and length). Any byte range of the NAR can then be
//! produced on demand, and the whole NAR streamed at the speed of the underlying reads.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::error::{from_io, to_io, NarError};
use super::{padding_len, push_str, NarHash, NarSummary, MAX_DEPTH, NAR_MAGIC};

/// Buffer size for streaming a NAR out (dump, hash).
const STREAM_BUF: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum Source {
    /// Bytes `literal[from .. from + len]`.
    Literal { from: usize },
    /// Contents of `files[index]`.
    File { index: usize },
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Offset of the first byte of this segment in the NAR.
    start: u64,
    /// Number of bytes; never 0.
    len: u64,
    source: Source,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

#[derive(Clone, Copy, Debug)]
struct FileRec {
    /// `paths[path.0 .. path.1]` is the path relative to the root.
    path: (usize, usize),
    /// NAR offset of the first content byte.
    offset: u64,
    len: u64,
    executable: bool,
}

/// One regular file of a [`NarLayout`], as returned by [`NarLayout::files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo<'a> {
    /// Path of the file inside the NAR, relative to its root (`""` if the root is the file).
    pub path: &'a Path,
    /// NAR offset of the first byte of the file's contents.
    pub offset: u64,
    /// Length of the contents in bytes.
    pub len: u64,
    /// Whether the NAR marks the file executable.
    pub executable: bool,
}

/// Random-access description of the bytes `nix-store --dump <root>` produces.
///
/// Built by [`NarLayout::scan`] without reading file contents; contents are read when the NAR
/// bytes are asked for ([`read_at`](Self::read_at), [`reader`](Self::reader)). If a file changes
/// length after the scan, reads of it fail with [`NarError::FileChanged`]; the layout does not
/// notice changes that keep the length (as with `nix-store --dump`, the tree must be quiet).
pub struct NarLayout {
    root: PathBuf,
    literal: Vec<u8>,
    segments: Vec<Segment>,
    files: Vec<FileRec>,
    /// Relative paths of `files`, concatenated.
    paths: Vec<u8>,
    size: u64,
    /// Last file opened by `read_at`: (index into `files`, handle).
    cache: Mutex<Option<(usize, File)>>,
}

impl fmt::Debug for NarLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarLayout")
            .field("root", &self.root)
            .field("size", &self.size)
            .field("files", &self.files.len())
            .field("segments", &self.segments.len())
            .field("literal_bytes", &self.literal.len())
            .finish()
    }
}

impl Clone for NarLayout {
    fn clone(&self) -> Self {
        NarLayout {
            root: self.root.clone(),
            literal: self.literal.clone(),
            segments: self.segments.clone(),
            files: self.files.clone(),
            paths: self.paths.clone(),
            size: self.size,
            cache: Mutex::new(None),
        }
    }
}

struct Builder {
    root: PathBuf,
    literal: Vec<u8>,
    /// Start (in `literal`) of framing bytes not yet covered by a segment.
    pending: usize,
    segments: Vec<Segment>,
    files: Vec<FileRec>,
    paths: Vec<u8>,
    /// NAR bytes described so far.
    size: u64,
}

impl Builder {
    fn str(&mut self, s: &[u8]) {
        push_str(&mut self.literal, s);
    }

    /// Close the pending run of framing bytes into a segment.
    fn flush(&mut self) {
        let len = (self.literal.len() - self.pending) as u64;
        if len > 0 {
            self.segments.push(Segment {
                start: self.size,
                len,
                source: Source::Literal { from: self.pending },
            });
            self.size += len;
            self.pending = self.literal.len();
        }
    }

    fn fs_path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn node(&mut self, rel: &mut Vec<u8>, meta: &Metadata, depth: usize) -> Result<(), NarError> {
        self.str(b"(");
        self.str(b"type");
        let ft = meta.file_type();
        if ft.is_symlink() {
            let path = self.fs_path(rel);
            let target =
                fs::read_link(&path).map_err(|e| NarError::io(&path, "read symlink", e))?;
            self.str(b"symlink");
            self.str(b"target");
            self.str(target.as_os_str().as_bytes());
        } else if ft.is_file() {
            let len = meta.len();
            let executable = meta.permissions().mode() & 0o100 != 0;
            self.str(b"regular");
            if executable {
                self.str(b"executable");
                self.str(b"");
            }
            self.str(b"contents");
            self.literal.extend_from_slice(&len.to_le_bytes());
            self.flush();
            let path_start = self.paths.len();
            self.paths.extend_from_slice(rel);
            let index = self.files.len();
            self.files.push(FileRec {
                path: (path_start, self.paths.len()),
                offset: self.size,
                len,
                executable,
            });
            if len > 0 {
                self.segments.push(Segment {
                    start: self.size,
                    len,
                    source: Source::File { index },
                });
                self.size = self.size.checked_add(len).ok_or(NarError::SizeOverflow {
                    offset: self.size,
                    len,
                })?;
            }
            self.literal
                .resize(self.literal.len() + padding_len(len) as usize, 0);
        } else if ft.is_dir() {
            let path = self.fs_path(rel);
            self.str(b"directory");
            let mut names = Vec::new();
            for entry in
                fs::read_dir(&path).map_err(|e| NarError::io(&path, "read directory", e))?
            {
                let entry = entry.map_err(|e| NarError::io(&path, "read directory", e))?;
                names.push(entry.file_name());
            }
            // Nix keeps entries in a std::map<std::string, …>: byte order of the names.
            names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let name = name.as_bytes();
                let rel_len = rel.len();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name);
                let child = self.fs_path(rel);
                if depth >= MAX_DEPTH {
                    return Err(NarError::TreeTooDeep {
                        path: child,
                        max: MAX_DEPTH,
                    });
                }
                let child_meta =
                    fs::symlink_metadata(&child).map_err(|e| NarError::io(&child, "stat", e))?;
                self.str(b"entry");
                self.str(b"(");
                self.str(b"name");
                self.str(name);
                self.str(b"node");
                self.node(rel, &child_meta, depth + 1)?;
                self.str(b")");
                rel.truncate(rel_len);
            }
        } else {
            let kind = if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "file of unknown type"
            };
            return Err(NarError::UnsupportedFileType {
                path: self.fs_path(rel),
                kind,
            });
        }
        self.str(b")");
        Ok(())
    }
}

impl NarLayout {
    /// Describe the NAR of the tree at `path` (a regular file, symlink or directory), reading
    /// only metadata, directory listings and symlink targets.
    pub fn scan(path: &Path) -> Result<NarLayout, NarError> {
        let meta = fs::symlink_metadata(path).map_err(|e| NarError::io(path, "stat", e))?;
        let mut b = Builder {
            root: path.to_path_buf(),
            literal: Vec::new(),
            pending: 0,
            segments: Vec::new(),
            files: Vec::new(),
            paths: Vec::new(),
            size: 0,
        };
        b.str(NAR_MAGIC);
        b.node(&mut Vec::new(), &meta, 0)?;
        b.flush();
        Ok(NarLayout {
            root: b.root,
            literal: b.literal,
            segments: b.segments,
            files: b.files,
            paths: b.paths,
            size: b.size,
            cache: Mutex::new(None),
        })
    }

    /// The path this layout was scanned from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Length of the NAR in bytes (Nix's `narSize`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The regular files of the NAR in NAR order (which is byte order of their paths).
    pub fn files(&self) -> impl ExactSizeIterator<Item = FileInfo<'_>> + '_ {
        self.files.iter().map(move |f| FileInfo {
            path: Path::new(OsStr::from_bytes(
                self.paths.get(f.path.0..f.path.1).unwrap_or_default(),
            )),
            offset: f.offset,
            len: f.len,
            executable: f.executable,
        })
    }

    fn file_path(&self, index: usize) -> PathBuf {
        let rel = self
            .files
            .get(index)
            .and_then(|f| self.paths.get(f.path.0..f.path.1))
            .unwrap_or_default();
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn file_len(&self, index: usize) -> u64 {
        self.files.get(index).map_or(0, |f| f.len)
    }

    /// Open file `index` and check it still has its scanned length.
    fn open_file(&self, index: usize) -> Result<File, NarError> {
        let path = self.file_path(index);
        let file = File::open(&path).map_err(|e| NarError::io(&path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| NarError::io(&path, "stat", e))?;
        let expected = self.file_len(index);
        if !meta.is_file() || meta.len() != expected {
            return Err(NarError::FileChanged {
                path,
                expected,
                found: meta.len(),
            });
        }
        Ok(file)
    }

    /// The error for a file that ended early.
    fn short_read(&self, index: usize, file: &File) -> NarError {
        let path = self.file_path(index);
        match file.metadata() {
            Ok(meta) => NarError::FileChanged {
                path,
                expected: self.file_len(index),
                found: meta.len(),
            },
            Err(e) => NarError::io(path, "stat", e),
        }
    }

    /// Index of the segment holding NAR byte `offset` (`segments.len()` if past the end).
    fn segment_at(&self, offset: u64) -> usize {
        self.segments.partition_point(|s| s.end() <= offset)
    }

    fn literal_bytes(&self, from: usize, within: u64, n: usize) -> &[u8] {
        let start = from.saturating_add(within as usize);
        self.literal
            .get(start..start.saturating_add(n))
            .unwrap_or_default()
    }

    /// Fill `buf` with the NAR bytes at `offset .. offset + buf.len()`.
    ///
    /// The last file opened is kept open for the next call, so consecutive reads within one
    /// file cost one `pread` each. Safe to call from several threads.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), NarError> {
        let len = buf.len() as u64;
        let out_of_range = || NarError::OutOfRange {
            offset,
            len,
            size: self.size,
        };
        let end = offset.checked_add(len).ok_or_else(out_of_range)?;
        if end > self.size {
            return Err(out_of_range());
        }
        let mut pos = offset;
        let mut done = 0usize;
        let mut i = self.segment_at(offset);
        while done < buf.len() {
            let seg = *self.segments.get(i).ok_or_else(out_of_range)?;
            let within = pos - seg.start;
            let n = (seg.len - within).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + n];
            match seg.source {
                Source::Literal { from } => {
                    let src = self.literal_bytes(from, within, n);
                    if src.len() != n {
                        return Err(out_of_range());
                    }
                    dst.copy_from_slice(src);
                }
                Source::File { index } => self.read_file_at(index, within, dst)?,
            }
            done += n;
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }

    fn read_file_at(&self, index: usize, at: u64, dst: &mut [u8]) -> Result<(), NarError> {
        // Take the cached handle out so other threads are not blocked while we read.
        let cached = match self.cache.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let file = match cached {
            Some((i, f)) if i == index => f,
            _ => self.open_file(index)?,
        };
        match file.read_exact_at(dst, at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(self.short_read(index, &file))
            }
            Err(e) => return Err(NarError::io(self.file_path(index), "read", e)),
        }
        match self.cache.lock() {
            Ok(mut g) => *g = Some((index, file)),
            Err(poisoned) => *poisoned.into_inner() = Some((index, file)),
        }
        Ok(())
    }

    /// A sequential reader of the whole NAR.
    pub fn reader(&self) -> NarReader<'_> {
        NarReader {
            layout: self,
            seg: 0,
            within: 0,
            file: None,
        }
    }

    /// A sequential reader of the NAR from byte `offset` to the end.
    pub fn reader_at(&self, offset: u64) -> Result<NarReader<'_>, NarError> {
        if offset > self.size {
            return Err(NarError::OutOfRange {
                offset,
                len: 0,
                size: self.size,
            });
        }
        let seg = self.segment_at(offset);
        let within = self.segments.get(seg).map_or(0, |s| offset - s.start);
        Ok(NarReader {
            layout: self,
            seg,
            within,
            file: None,
        })
    }
}

/// Sequential reader over the bytes of a [`NarLayout`]; see [`NarLayout::reader`].
///
/// Reads of file contents go straight from the file into the caller's buffer, so use large
/// buffers (256 KiB or more) for speed. Each file is opened once. Errors are `io::Error`s
/// wrapping a [`NarError`] (for example [`NarError::FileChanged`]).
pub struct NarReader<'a> {
    layout: &'a NarLayout,
    /// Current segment.
    seg: usize,
    /// Bytes of the current segment already returned.
    within: u64,
    /// Handle for the current file segment: (file index, handle).
    file: Option<(usize, File)>,
}

impl fmt::Debug for NarReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarReader")
            .field("root", &self.layout.root)
            .field("position", &self.position())
            .finish()
    }
}

impl NarReader<'_> {
    /// NAR offset of the next byte to be read.
    pub fn position(&self) -> u64 {
        match self.layout.segments.get(self.seg) {
            Some(s) => s.start + self.within,
            None => self.layout.size,
        }
    }

    /// Read into `dst`, which is not longer than what is left of the current segment.
    fn read_segment(&mut self, seg: Segment, dst: &mut [u8]) -> Result<usize, NarError> {
        match seg.source {
            Source::Literal { from } => {
                let src = self.layout.literal_bytes(from, self.within, dst.len());
                dst[..src.len()].copy_from_slice(src);
                Ok(src.len())
            }
            Source::File { index } => {
                let file = match &mut self.file {
                    Some((i, f)) if *i == index => f,
                    slot => {
                        let mut f = self.layout.open_file(index)?;
                        if self.within > 0 {
                            io::Seek::seek(&mut f, io::SeekFrom::Start(self.within)).map_err(
                                |e| NarError::io(self.layout.file_path(index), "seek in", e),
                            )?;
                        }
                        &mut slot.insert((index, f)).1
                    }
                };
                loop {
                    match file.read(dst) {
                        Ok(0) => return Err(self.layout.short_read(index, file)),
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(NarError::io(self.layout.file_path(index), "read", e))
                        }
                    }
                }
            }
        }
    }
}

impl Read for NarReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let Some(&seg) = self.layout.segments.get(self.seg) else {
                break;
            };
            let left = seg.len - self.within;
            let want = left.min((buf.len() - done) as u64) as usize;
            let n = match self.read_segment(seg, &mut buf[done..done + want]) {
                Ok(n) => n,
                // Hand out what we have; the error will come again on the next call.
                Err(_) if done > 0 => return Ok(done),
                Err(e) => return Err(to_io(e)),
            };
            done += n;
            self.within += n as u64;
            if self.within >= seg.len {
                self.seg += 1;
                self.within = 0;
                if matches!(seg.source, Source::File { .. }) {
                    self.file = None;
                }
            }
            if n == 0 {
                // Only a corrupt layout gets here; do not spin.
                break;
            }
        }
        Ok(done)
    }
}

/// Read from `r` until `buf` is full or `r` is exhausted.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn reader_error(e: io::Error, offset: u64) -> NarError {
    from_io(e).unwrap_or_else(|source| NarError::Read { offset, source })
}

/// Write the NAR of `path` to `out` (what `nix-store --dump` writes), hashing it in the same pass.
pub fn dump(path: &Path, mut out: impl Write) -> Result<NarSummary, NarError> {
    let layout = NarLayout::scan(path)?;
    let mut reader = layout.reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; STREAM_BUF];
    let mut offset = 0u64;
    loop {
        let n = fill(&mut reader, &mut buf).map_err(|e| reader_error(e, offset))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        out.write_all(chunk)
            .map_err(|source| NarError::Write { offset, source })?;
        offset += n as u64;
    }
    out.flush()
        .map_err(|source| NarError::Write { offset, source })?;
    Ok(NarSummary {
        nar_hash: NarHash(hasher.finalize().into()),
        nar_size: offset,
    })
}

/// `narHash` and `narSize` of `path`, without writing the NAR anywhere.
///
/// Reading and hashing overlap on two threads for large trees.
pub fn hash_path(path: &Path) -> Result<NarSummary, NarError> {
    let layout = NarLayout::scan(path)?;
    if layout.size() < 8 * STREAM_BUF as u64 {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; STREAM_BUF];
        let mut reader = layout.reader();
        let mut offset = 0u64;
        loop {
            let n = fill(&mut reader, &mut buf).map_err(|e| reader_error(e, offset))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        return Ok(NarSummary {
            nar_hash: NarHash(hasher.finalize().into()),
            nar_size: offset,
        });
    }
    hash_pipelined(&layout)
}

/// Hash a layout with one thread reading and one hashing, passing a few buffers back and forth.
fn hash_pipelined(layout: &NarLayout) -> Result<NarSummary, NarError> {
    use std::sync::mpsc;
    const BUFFERS: usize = 4;
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        // The channel has room for all buffers, so this cannot fail.
        let _ = empty_tx.send(vec![0u8; STREAM_BUF]);
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                hasher.update(&buf[..n]);
                total += n as u64;
                // The reader may have stopped already; then the buffer is just dropped.
                let _ = empty_tx.send(buf);
            }
            (NarHash(hasher.finalize().into()), total)
        });
        let mut reader = layout.reader();
        let mut offset = 0u64;
        let mut result = Ok(());
        for mut buf in empty_rx.iter() {
            match fill(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    offset += n as u64;
                    if full_tx.send((buf, n)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(reader_error(e, offset));
                    break;
                }
            }
        }
        drop(full_tx);
        let joined = hasher.join();
        result?;
        match joined {
            Ok((nar_hash, nar_size)) => Ok(NarSummary { nar_hash, nar_size }),
            Err(_) => Err(NarError::Read {
                offset,
                source: io::Error::other("hashing thread failed"),
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn nar_str(out: &mut Vec<u8>, s: &[u8]) {
        push_str(out, s);
    }

    #[test]
    fn single_file_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello").unwrap();
        let layout = NarLayout::scan(&p).unwrap();
        let mut want = Vec::new();
        for s in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"hello",
            b")",
        ] {
            nar_str(&mut want, s);
        }
        assert_eq!(layout.size(), want.len() as u64);
        let mut got = Vec::new();
        layout.reader().read_to_end(&mut got).unwrap();
        assert_eq!(got, want);
        let files: Vec<_> = layout.files().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, Path::new(""));
        assert_eq!(files[0].len, 5);
        assert!(!files[0].executable);
        let off = files[0].offset as usize;
        assert_eq!(&want[off..off + 5], b"hello");
        // Every sub-range.
        for a in 0..want.len() {
            for b in a..=want.len() {
                let mut buf = vec![0u8; b - a];
                layout.read_at(a as u64, &mut buf).unwrap();
                assert_eq!(buf, &want[a..b]);
            }
            let mut r = layout.reader_at(a as u64).unwrap();
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, &want[a..]);
        }
        let mut one = [0u8; 1];
        assert!(matches!(
            layout.read_at(want.len() as u64, &mut one),
            Err(NarError::OutOfRange { .. })
        ));
        assert!(layout.read_at(u64::MAX, &mut one).is_err());
    }

    #[test]
    fn changed_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![7u8; 1000]).unwrap();
        let layout = NarLayout::scan(dir.path()).unwrap();
        fs::write(dir.path().join("a"), vec![7u8; 10]).unwrap();
        let mut sink = Vec::new();
        let err = layout.reader().read_to_end(&mut sink).unwrap_err();
        let err = from_io(err).unwrap();
        assert!(
            matches!(
                err,
                NarError::FileChanged {
                    expected: 1000,
                    found: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/a"), "{err}");
        let mut buf = vec![0u8; 100];
        let off = layout.files().next().unwrap().offset;
        let err = layout.read_at(off, &mut buf).unwrap_err();
        assert!(matches!(err, NarError::FileChanged { .. }), "{err}");
    }

    #[test]
    fn unsupported_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = NarLayout::scan(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, NarError::Io { .. }), "{err}");
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = NarLayout::scan(dir.path()).unwrap_err();
        assert!(
            matches!(err, NarError::UnsupportedFileType { kind: "socket", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sock"), "{err}");
    }

    #[test]
    fn symlinks_are_not_followed_and_files_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/x"), b"12345678").unwrap();
        let mut perm = fs::metadata(root.join("d/x")).unwrap().permissions();
        perm.set_mode(0o700);
        fs::set_permissions(root.join("d/x"), perm).unwrap();
        symlink("d", root.join("link")).unwrap();
        fs::write(root.join("e"), b"").unwrap();
        let layout = NarLayout::scan(root).unwrap();
        let files: Vec<_> = layout.files().collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, Path::new("d/x"));
        assert!(files[0].executable);
        assert_eq!(files[1].path, Path::new("e"));
        assert_eq!(files[1].len, 0);
        let mut all = Vec::new();
        layout.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, layout.size());
        let o = files[0].offset as usize;
        assert_eq!(&all[o..o + 8], b"12345678");
        assert_eq!(&all[o - 8..o], &8u64.to_le_bytes());
        let s = dump(root, io::sink()).unwrap();
        assert_eq!(s.nar_size, layout.size());
        assert_eq!(s.nar_hash, NarHash::of(&all));
        assert_eq!(hash_path(root).unwrap(), s);
    }

    #[test]
    fn too_deep_tree_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = dir.path().join("root");
        for _ in 0..MAX_DEPTH {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        // MAX_DEPTH nested directories: the deepest is at depth MAX_DEPTH, which is allowed.
        assert!(NarLayout::scan(&dir.path().join("root")).is_ok());
        fs::write(p.join("f"), b"").unwrap();
        let err = NarLayout::scan(&dir.path().join("root")).unwrap_err();
        assert!(
            matches!(err, NarError::TreeTooDeep { max: MAX_DEPTH, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("256 directory levels, the most a NAR parser here accepts"),
            "{err}"
        );
        // What scan accepts, the parser accepts.
        fs::remove_file(p.join("f")).unwrap();
        let mut nar = Vec::new();
        dump(&dir.path().join("root"), &mut nar).unwrap();
        crate::nar::validate(&nar[..]).unwrap();
    }

    #[test]
    fn pipelined_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(9 * STREAM_BUF + 12345) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(dir.path().join("big"), &data).unwrap();
        fs::write(dir.path().join("small"), b"x").unwrap();
        let mut all = Vec::new();
        let s = dump(dir.path(), &mut all).unwrap();
        assert_eq!(s.nar_hash, NarHash::of(&all));
        let layout = NarLayout::scan(dir.path()).unwrap();
        assert_eq!(hash_pipelined(&layout).unwrap(), s);
        assert_eq!(hash_path(dir.path()).unwrap(), s);
    }
}
