//! Streaming, total parser for untrusted NARs; [`validate`] and [`restore`].
//!
//! [`NarParser`] accepts exactly the canonical archives `nix-store --dump` writes (see the
//! grammar in [`super`]) and rejects anything else with an error naming the byte offset. Memory is
//! bounded regardless of the input: one read buffer, the current path (at most
//! [`MAX_DEPTH`] names of at most [`MAX_NAME_LEN`] bytes) and one previous name per open
//! directory. No length read from the input is used to allocate before it is checked against its
//! cap; file contents are never held whole.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{from_io, show_bytes, NarError};
use super::{padding_len, NarHash, NarSummary, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN, NAR_MAGIC};

/// Size of the parser's read buffer, and the largest [`NarEvent::Contents`] piece.
pub const PARSER_BUF: usize = 256 * 1024;

/// Longest token of the grammar ("nix-archive-1").
const MAX_TOKEN: usize = 16;

/// One step of a NAR, as reported by [`NarParser::next`].
///
/// The node an event concerns is at [`NarParser::path`]. The sequence for a directory is
/// `Directory`, then for each entry `Entry` followed by the events of its node, then
/// `EndDirectory`. A regular file is `Regular` followed by its contents, which come as
/// `Contents` events unless taken with [`NarParser::read_contents`] or
/// [`NarParser::skip_contents`].
#[derive(Debug, PartialEq, Eq)]
pub enum NarEvent<'a> {
    /// The node is a directory; its entries follow.
    Directory,
    /// A directory entry with this name; its node follows.
    Entry { name: &'a [u8] },
    /// The node is a regular file of `size` bytes, starting at NAR offset `offset`.
    Regular {
        executable: bool,
        size: u64,
        offset: u64,
    },
    /// The next piece (at most [`PARSER_BUF`] bytes, never empty) of the current file's contents.
    Contents(&'a [u8]),
    /// The node is a symlink to `target`.
    Symlink { target: &'a [u8] },
    /// The end of the innermost open directory.
    EndDirectory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the magic.
    Start,
    /// Before the "(" of a node.
    Node,
    /// Inside the contents of a regular file.
    Contents { remaining: u64, size: u64 },
    /// After a node's closing ")".
    AfterNode,
    /// Inside a directory, before "entry" or ")".
    DirBody,
    /// The archive ended and nothing follows it.
    Done,
    /// An error was returned.
    Failed,
}

/// What `step` produced; turned into a borrowed [`NarEvent`] by `next`.
enum Step {
    Directory,
    /// The name is in `scratch`.
    Entry,
    Regular {
        executable: bool,
        size: u64,
        offset: u64,
    },
    /// `buf[start .. start + len]`.
    Contents {
        start: usize,
        len: usize,
    },
    /// The target is in `scratch`.
    Symlink,
    EndDirectory,
    End,
}

/// A short string read where the grammar wants a fixed token.
struct Token {
    /// NAR offset of its length field.
    at: u64,
    bytes: [u8; MAX_TOKEN],
    /// `Ok(n)`: `bytes[..n]`; `Err(len)`: too long to be a token, `len` bytes.
    len: Result<usize, u64>,
}

struct Frame {
    /// Length of `path` before this directory's current entry was appended.
    path_len: usize,
    /// Previous entry name (to check order), empty before the first entry.
    prev: Vec<u8>,
}

/// Pull parser for a NAR read from any `Read`.
///
/// The parser reads the input in large blocks; it consumes the whole reader and requires the
/// archive to end exactly at the end of the input. Call [`next`](Self::next) until it returns
/// `Ok(None)`; after an error the parser is finished.
pub struct NarParser<R> {
    r: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// NAR offset of `buf[pos]`.
    offset: u64,
    state: State,
    stack: Vec<Frame>,
    /// Path of the current node, names joined by '/'.
    path: Vec<u8>,
    /// Entry name or symlink target of the last event.
    scratch: Vec<u8>,
}

impl<R: Read> NarParser<R> {
    /// A parser reading the NAR from `r`.
    pub fn new(r: R) -> Self {
        NarParser {
            r,
            buf: vec![0u8; PARSER_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            state: State::Start,
            stack: Vec::new(),
            path: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// NAR offset of the next byte the parser will consume.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Path of the node the last event concerns, relative to the root (empty for the root),
    /// names joined with `/`. Names are validated, so this is safe to join to a directory.
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// Number of directories containing the current node.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.r
    }

    /// The next event, or `None` once the archive has ended (and the input with it).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<NarEvent<'_>>, NarError> {
        let step = match self.step() {
            Ok(step) => step,
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        Ok(match step {
            Step::Directory => Some(NarEvent::Directory),
            Step::Entry => Some(NarEvent::Entry {
                name: &self.scratch,
            }),
            Step::Regular {
                executable,
                size,
                offset,
            } => Some(NarEvent::Regular {
                executable,
                size,
                offset,
            }),
            Step::Contents { start, len } => Some(NarEvent::Contents(
                self.buf.get(start..start + len).unwrap_or_default(),
            )),
            Step::Symlink => Some(NarEvent::Symlink {
                target: &self.scratch,
            }),
            Step::EndDirectory => Some(NarEvent::EndDirectory),
            Step::End => None,
        })
    }

    /// Read contents of the current regular file into `out`; returns 0 once the file is done.
    /// Large `out` buffers are filled straight from the input.
    pub fn read_contents(&mut self, out: &mut [u8]) -> Result<usize, NarError> {
        let State::Contents { remaining, size } = self.state else {
            return Err(NarError::Misuse(
                "read_contents called while not inside a regular file",
            ));
        };
        if remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        let want = remaining.min(out.len() as u64) as usize;
        let n = if self.pos < self.end {
            let n = want.min(self.end - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            n
        } else if want >= self.buf.len() / 2 {
            let n = loop {
                match self.r.read(&mut out[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.fail_read(e)),
                }
            };
            if n == 0 {
                return Err(self.fail(NarError::Truncated {
                    offset: self.offset,
                    context: "file contents",
                }));
            }
            n
        } else {
            if self.fill()? == 0 {
                return Err(self.fail(NarError::Truncated {
                    offset: self.offset,
                    context: "file contents",
                }));
            }
            let n = want.min(self.end - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            n
        };
        self.offset += n as u64;
        self.state = State::Contents {
            remaining: remaining - n as u64,
            size,
        };
        Ok(n)
    }

    /// Skip the rest of the current regular file's contents.
    pub fn skip_contents(&mut self) -> Result<(), NarError> {
        loop {
            let State::Contents { remaining, size } = self.state else {
                return Err(NarError::Misuse(
                    "skip_contents called while not inside a regular file",
                ));
            };
            if remaining == 0 {
                return Ok(());
            }
            if self.pos == self.end && self.fill()? == 0 {
                return Err(self.fail(NarError::Truncated {
                    offset: self.offset,
                    context: "file contents",
                }));
            }
            let n = remaining.min((self.end - self.pos) as u64);
            self.pos += n as usize;
            self.offset += n;
            self.state = State::Contents {
                remaining: remaining - n,
                size,
            };
        }
    }

    fn fail(&mut self, e: NarError) -> NarError {
        self.state = State::Failed;
        e
    }

    fn fail_read(&mut self, e: io::Error) -> NarError {
        let offset = self.offset;
        let e = from_io(e).unwrap_or_else(|source| NarError::Read { offset, source });
        self.fail(e)
    }

    /// Refill the buffer if it is empty; returns the number of buffered bytes (0 at EOF).
    fn fill(&mut self) -> Result<usize, NarError> {
        if self.pos < self.end {
            return Ok(self.end - self.pos);
        }
        self.pos = 0;
        self.end = 0;
        loop {
            match self.r.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n.min(self.buf.len());
                    return Ok(self.end);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail_read(e)),
            }
        }
    }

    /// Consume exactly `dst.len()` bytes.
    fn read_exact(&mut self, dst: &mut [u8], context: &'static str) -> Result<(), NarError> {
        let mut done = 0;
        while done < dst.len() {
            if self.fill()? == 0 {
                return Err(NarError::Truncated {
                    offset: self.offset,
                    context,
                });
            }
            let n = (dst.len() - done).min(self.end - self.pos);
            dst[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            done += n;
        }
        Ok(())
    }

    fn read_u64(&mut self, context: &'static str) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, context)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Consume the zero padding after a string of `len` bytes.
    fn padding(&mut self, len: u64, context: &'static str) -> Result<(), NarError> {
        let pad = padding_len(len) as usize;
        let mut b = [0u8; 8];
        let start = self.offset;
        self.read_exact(&mut b[..pad], context)?;
        match b[..pad].iter().position(|&x| x != 0) {
            Some(i) => Err(NarError::NonZeroPadding {
                offset: start + i as u64,
            }),
            None => Ok(()),
        }
    }

    /// Read a string of at most `MAX_TOKEN` bytes. A longer one is reported by its length and
    /// not consumed (the caller fails anyway).
    fn read_token(&mut self, context: &'static str) -> Result<Token, NarError> {
        let at = self.offset;
        let len = self.read_u64(context)?;
        let mut bytes = [0u8; MAX_TOKEN];
        if len > MAX_TOKEN as u64 {
            return Ok(Token {
                at,
                bytes,
                len: Err(len),
            });
        }
        let n = len as usize;
        self.read_exact(&mut bytes[..n], context)?;
        self.padding(len, context)?;
        Ok(Token {
            at,
            bytes,
            len: Ok(n),
        })
    }

    /// Read a token that must be one of `choices`; returns its index.
    fn token_of(&mut self, choices: &[&[u8]], expected: &'static str) -> Result<usize, NarError> {
        let Token { at, bytes, len } = self.read_token(expected)?;
        let found = match len {
            Ok(n) => {
                let tok = &bytes[..n];
                if let Some(i) = choices.iter().position(|c| *c == tok) {
                    return Ok(i);
                }
                show_bytes(tok)
            }
            Err(len) => format!("a {len}-byte string"),
        };
        Err(NarError::UnexpectedToken {
            offset: at,
            expected,
            found,
        })
    }

    fn expect(&mut self, token: &'static [u8], expected: &'static str) -> Result<(), NarError> {
        self.token_of(&[token], expected).map(|_| ())
    }

    /// Read a string of at most `max` bytes into `scratch`; returns its offset. `too_long`
    /// builds the error for a longer one.
    fn read_bounded(
        &mut self,
        max: usize,
        context: &'static str,
        too_long: impl FnOnce(u64, u64) -> NarError,
    ) -> Result<u64, NarError> {
        let at = self.offset;
        let len = self.read_u64(context)?;
        if len > max as u64 {
            return Err(too_long(at, len));
        }
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        s.resize(len as usize, 0);
        let r = self.read_exact(&mut s, context);
        self.scratch = s;
        r?;
        self.padding(len, context)?;
        Ok(at)
    }

    fn step(&mut self) -> Result<Step, NarError> {
        loop {
            match self.state {
                State::Failed => {
                    return Err(NarError::Misuse("NarParser::next called after an error"))
                }
                State::Done => return Ok(Step::End),
                State::Start => {
                    let Token { at, bytes, len } = self.read_token("the archive magic")?;
                    match len {
                        Ok(n) if &bytes[..n] == NAR_MAGIC => {}
                        Ok(n) => {
                            return Err(NarError::BadMagic {
                                offset: at,
                                found: show_bytes(&bytes[..n]),
                            })
                        }
                        Err(len) => {
                            return Err(NarError::BadMagic {
                                offset: at,
                                found: format!("a {len}-byte string"),
                            })
                        }
                    }
                    self.state = State::Node;
                }
                State::Node => return self.node(),
                State::Contents { remaining, size } => {
                    if remaining > 0 {
                        if self.fill()? == 0 {
                            return Err(NarError::Truncated {
                                offset: self.offset,
                                context: "file contents",
                            });
                        }
                        let start = self.pos;
                        let len = remaining.min((self.end - self.pos) as u64) as usize;
                        self.pos += len;
                        self.offset += len as u64;
                        self.state = State::Contents {
                            remaining: remaining - len as u64,
                            size,
                        };
                        return Ok(Step::Contents { start, len });
                    }
                    self.padding(size, "the padding after file contents")?;
                    self.expect(b")", "\")\" closing a regular file")?;
                    self.state = State::AfterNode;
                }
                State::AfterNode => {
                    if self.stack.is_empty() {
                        let at = self.offset;
                        if self.fill()? > 0 {
                            return Err(NarError::TrailingBytes { offset: at });
                        }
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    self.expect(b")", "\")\" closing a directory entry")?;
                    if let Some(frame) = self.stack.last() {
                        self.path.truncate(frame.path_len);
                    }
                    self.state = State::DirBody;
                }
                State::DirBody => {
                    let at = self.offset;
                    let which = self.token_of(&[b"entry", b")"], "\"entry\" or \")\"")?;
                    if which == 1 {
                        self.stack.pop();
                        self.state = State::AfterNode;
                        return Ok(Step::EndDirectory);
                    }
                    if self.stack.len() > MAX_DEPTH {
                        return Err(NarError::TooDeep {
                            offset: at,
                            max: MAX_DEPTH,
                        });
                    }
                    self.expect(b"(", "\"(\" opening a directory entry")?;
                    self.expect(b"name", "\"name\"")?;
                    let name_at =
                        self.read_bounded(MAX_NAME_LEN, "an entry name", |offset, len| {
                            NarError::NameTooLong {
                                offset,
                                len,
                                max: MAX_NAME_LEN,
                            }
                        })?;
                    self.check_name(name_at)?;
                    self.expect(b"node", "\"node\"")?;
                    let path_len = self.path.len();
                    if let Some(frame) = self.stack.last_mut() {
                        frame.prev.clear();
                        frame.prev.extend_from_slice(&self.scratch);
                        frame.path_len = path_len;
                    }
                    if !self.path.is_empty() {
                        self.path.push(b'/');
                    }
                    self.path.extend_from_slice(&self.scratch);
                    self.state = State::Node;
                    return Ok(Step::Entry);
                }
            }
        }
    }

    fn check_name(&self, at: u64) -> Result<(), NarError> {
        let name = &self.scratch[..];
        let invalid = |reason| {
            Err(NarError::InvalidName {
                offset: at,
                name: show_bytes(name),
                reason,
            })
        };
        if name.is_empty() {
            return invalid("empty");
        }
        if name == b"." || name == b".." {
            return invalid("\".\" and \"..\" are not allowed");
        }
        if name.contains(&b'/') {
            return invalid("contains '/'");
        }
        if name.contains(&0) {
            return invalid("contains a NUL byte");
        }
        if let Some(frame) = self.stack.last() {
            if !frame.prev.is_empty() && frame.prev.as_slice() >= name {
                return Err(NarError::NamesNotSorted {
                    offset: at,
                    prev: show_bytes(&frame.prev),
                    name: show_bytes(name),
                });
            }
        }
        Ok(())
    }

    /// Parse a node's header up to its first event.
    fn node(&mut self) -> Result<Step, NarError> {
        self.expect(b"(", "\"(\" opening a node")?;
        self.expect(b"type", "\"type\"")?;
        let kind = self.token_of(
            &[b"regular", b"symlink", b"directory"],
            "a node type (\"regular\", \"symlink\" or \"directory\")",
        )?;
        match kind {
            0 => {
                let which = self.token_of(
                    &[b"executable", b"contents"],
                    "\"executable\" or \"contents\"",
                )?;
                let executable = which == 0;
                if executable {
                    self.expect(b"", "\"\" after \"executable\"")?;
                    self.expect(b"contents", "\"contents\"")?;
                }
                let size_at = self.offset;
                let size = self.read_u64("the length of file contents")?;
                let offset = self.offset;
                if offset
                    .checked_add(size)
                    .and_then(|e| e.checked_add(padding_len(size)))
                    .is_none()
                {
                    return Err(NarError::SizeOverflow {
                        offset: size_at,
                        len: size,
                    });
                }
                self.state = State::Contents {
                    remaining: size,
                    size,
                };
                Ok(Step::Regular {
                    executable,
                    size,
                    offset,
                })
            }
            1 => {
                self.expect(b"target", "\"target\"")?;
                let at = self.read_bounded(MAX_TARGET_LEN, "a symlink target", |offset, len| {
                    NarError::TargetTooLong {
                        offset,
                        len,
                        max: MAX_TARGET_LEN,
                    }
                })?;
                let reason = if self.scratch.is_empty() {
                    Some("empty")
                } else if self.scratch.contains(&0) {
                    Some("contains a NUL byte")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(NarError::InvalidTarget {
                        offset: at,
                        target: show_bytes(&self.scratch),
                        reason,
                    });
                }
                self.expect(b")", "\")\" closing a symlink")?;
                self.state = State::AfterNode;
                Ok(Step::Symlink)
            }
            _ => {
                self.stack.push(Frame {
                    path_len: self.path.len(),
                    prev: Vec::new(),
                });
                self.state = State::DirBody;
                Ok(Step::Directory)
            }
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    r: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        let n = n.min(buf.len());
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(r: R) -> Self {
        Hashing {
            r,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn summary(self) -> NarSummary {
        NarSummary {
            nar_hash: NarHash(self.hasher.finalize().into()),
            nar_size: self.count,
        }
    }
}

/// Check that `r` holds exactly one well-formed NAR; returns its hash and size.
pub fn validate(r: impl Read) -> Result<NarSummary, NarError> {
    let mut p = NarParser::new(Hashing::new(r));
    loop {
        match p.next()? {
            None => break,
            Some(NarEvent::Regular { .. }) => p.skip_contents()?,
            Some(_) => {}
        }
    }
    Ok(p.into_inner().summary())
}

/// Unpack the NAR read from `r` at `dest`, which must not exist yet (its parent must).
///
/// Creates directories, files (mode 0666, or 0777 if executable, less the umask; executables
/// always get their execute bits as in Nix) and symlinks, and returns the NAR's hash and size.
/// On error, whatever was created so far is left in place for the caller to remove.
pub fn restore(r: impl Read, dest: &Path) -> Result<NarSummary, NarError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(NarError::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let target_of = |rel: &Path| -> PathBuf {
        if rel.as_os_str().is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel)
        }
    };
    enum Make {
        Dir,
        File { executable: bool },
        Link(Vec<u8>),
    }
    let mut p = NarParser::new(Hashing::new(r));
    let mut buf = vec![0u8; PARSER_BUF];
    loop {
        let make = match p.next()? {
            None => break,
            Some(NarEvent::Directory) => Make::Dir,
            Some(NarEvent::Regular { executable, .. }) => Make::File { executable },
            // At most MAX_TARGET_LEN bytes.
            Some(NarEvent::Symlink { target }) => Make::Link(target.to_vec()),
            Some(NarEvent::Contents(_)) => {
                // Contents are consumed with read_contents right after `Regular`.
                return Err(NarError::Misuse("restore saw unconsumed file contents"));
            }
            Some(NarEvent::Entry { .. }) | Some(NarEvent::EndDirectory) => continue,
        };
        let path = target_of(p.path());
        match make {
            Make::Dir => {
                fs::create_dir(&path).map_err(|e| NarError::io(&path, "create directory", e))?;
            }
            Make::File { executable } => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o777 } else { 0o666 })
                    .open(&path)
                    .map_err(|e| NarError::io(&path, "create file", e))?;
                loop {
                    let n = p.read_contents(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])
                        .map_err(|e| NarError::io(&path, "write", e))?;
                }
                if executable {
                    set_executable(&file, &path)?;
                }
            }
            Make::Link(target) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| NarError::io(&path, "create symlink", e))?;
            }
        }
    }
    Ok(p.into_inner().summary())
}

fn set_executable(file: &File, path: &Path) -> Result<(), NarError> {
    let meta = file.metadata().map_err(|e| NarError::io(path, "stat", e))?;
    let mode = meta.permissions().mode();
    if mode & 0o111 != 0o111 {
        file.set_permissions(fs::Permissions::from_mode(mode | 0o111))
            .map_err(|e| NarError::io(path, "make executable", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nar::{dump, push_str};

    /// Builds NARs token by token.
    #[derive(Default)]
    struct B(Vec<u8>);

    impl B {
        fn s(mut self, s: &[u8]) -> Self {
            push_str(&mut self.0, s);
            self
        }
        fn t(self, toks: &[&str]) -> Self {
            toks.iter().fold(self, |b, t| b.s(t.as_bytes()))
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn file(self, contents: &[u8]) -> Self {
            self.t(&["(", "type", "regular", "contents"])
                .s(contents)
                .t(&[")"])
        }
        fn entry(self, name: &[u8]) -> Self {
            self.t(&["entry", "(", "name"]).s(name).t(&["node"])
        }
        fn nar() -> Self {
            B::default().t(&["nix-archive-1"])
        }
    }

    fn sample() -> Vec<u8> {
        B::nar()
            .t(&["(", "type", "directory"])
            .entry(b"a")
            .file(b"hello")
            .t(&[")"])
            .entry(b"b")
            .t(&["(", "type", "symlink", "target", "a", ")"])
            .t(&[")"])
            .entry(b"c")
            .t(&["(", "type", "directory"])
            .entry(b"x")
            .t(&["(", "type", "regular", "executable", "", "contents"])
            .s(b"12345678")
            .t(&[")"])
            .t(&[")"])
            .t(&[")"])
            .t(&[")"])
            .t(&[")"])
            .0
    }

    fn err(nar: &[u8]) -> NarError {
        match validate(nar) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn events_of_sample() {
        let nar = sample();
        let mut p = NarParser::new(&nar[..]);
        let mut seen = Vec::new();
        while let Some(ev) = p.next().unwrap() {
            let ev = format!("{ev:?}");
            seen.push(format!("{ev} @ {}", p.path().display()));
        }
        assert_eq!(
            seen,
            [
                "Directory @ ",
                "Entry { name: [97] } @ a",
                "Regular { executable: false, size: 5, offset: 232 } @ a",
                "Contents([104, 101, 108, 108, 111]) @ a",
                "Entry { name: [98] } @ b",
                "Symlink { target: [97] } @ b",
                "Entry { name: [99] } @ c",
                "Directory @ c",
                "Entry { name: [120] } @ c/x",
                "Regular { executable: true, size: 8, offset: 784 } @ c/x",
                "Contents([49, 50, 51, 52, 53, 54, 55, 56]) @ c/x",
                "EndDirectory @ c",
                "EndDirectory @ ",
            ]
        );
        assert_eq!(&nar[232..237], b"hello");
        assert_eq!(&nar[784..792], b"12345678");
        let s = validate(&nar[..]).unwrap();
        assert_eq!(s.nar_size, nar.len() as u64);
        assert_eq!(s.nar_hash, NarHash::of(&nar));
    }

    #[test]
    fn restore_round_trip() {
        let nar = sample();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let s = restore(&nar[..], &dest).unwrap();
        assert_eq!(s.nar_hash, NarHash::of(&nar));
        let mut again = Vec::new();
        dump(&dest, &mut again).unwrap();
        assert_eq!(again, nar);
        assert!(matches!(
            restore(&nar[..], &dest),
            Err(NarError::DestinationExists { .. })
        ));
        // A single file and a single symlink as the root.
        let f = B::nar().file(b"x").0;
        restore(&f[..], &dir.path().join("f")).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"x");
        let l = B::nar()
            .t(&["(", "type", "symlink", "target", "/nowhere", ")"])
            .0;
        restore(&l[..], &dir.path().join("l")).unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("l")).unwrap(),
            Path::new("/nowhere")
        );
    }

    #[test]
    fn read_contents_and_skip() {
        let big: Vec<u8> = (0..(PARSER_BUF * 3 + 5)).map(|i| (i % 251) as u8).collect();
        let nar = B::nar().file(&big).0;
        let mut p = NarParser::new(&nar[..]);
        assert!(matches!(p.next().unwrap(), Some(NarEvent::Regular { .. })));
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        let n = p.read_contents(&mut small).unwrap();
        got.extend_from_slice(&small[..n]);
        let mut large = vec![0u8; PARSER_BUF * 2];
        loop {
            let n = p.read_contents(&mut large).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&large[..n]);
        }
        assert_eq!(got, big);
        assert!(p.next().unwrap().is_none());

        let mut p = NarParser::new(&nar[..]);
        p.next().unwrap();
        let mut pieces = 0;
        let mut total = 0;
        while let Some(NarEvent::Contents(c)) = p.next().unwrap() {
            assert!(!c.is_empty() && c.len() <= PARSER_BUF);
            pieces += 1;
            total += c.len();
        }
        assert_eq!(total, big.len());
        assert!(pieces >= 4);
        let mut p = NarParser::new(&nar[..]);
        p.next().unwrap();
        p.skip_contents().unwrap();
        assert!(p.next().unwrap().is_none());
        assert!(matches!(
            p.read_contents(&mut small),
            Err(NarError::Misuse(_))
        ));
    }

    fn dir_with(names: &[&[u8]]) -> Vec<u8> {
        let mut b = B::nar().t(&["(", "type", "directory"]);
        for n in names {
            b = b.entry(n).file(b"").t(&[")"]);
        }
        b.t(&[")"]).0
    }

    #[test]
    fn rejects_bad_magic() {
        let e = err(&B::default().t(&["nix-archive-2"]).file(b"").0);
        assert!(matches!(e, NarError::BadMagic { offset: 0, .. }), "{e}");
        let e = err(b"\x0d\0\0\0\0\0\0\0nix-archive-1\0\0\0");
        assert!(
            matches!(
                e,
                NarError::NonZeroPadding { .. } | NarError::Truncated { .. }
            ),
            "{e}"
        );
        let e = err(&[0xff; 64]);
        assert!(matches!(e, NarError::BadMagic { offset: 0, .. }), "{e}");
        assert!(e.to_string().contains("byte 0"), "{e}");
        let e = err(b"");
        assert!(matches!(e, NarError::Truncated { offset: 0, .. }), "{e}");
    }

    #[test]
    fn rejects_unknown_tokens() {
        let e = err(&B::nar().t(&["(", "type", "fifo", ")"]).0);
        assert!(
            matches!(e, NarError::UnexpectedToken { offset: 56, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("at byte 56"), "{e}");
        assert!(e.to_string().contains("\"fifo\""), "{e}");
        let e = err(&B::nar().t(&["(", "type", "regular", "executable", "x"]).0);
        assert!(matches!(e, NarError::UnexpectedToken { .. }), "{e}");
        let e = err(&B::nar().t(&["(", "kind"]).0);
        assert!(matches!(e, NarError::UnexpectedToken { .. }), "{e}");
        // A huge "token" length is reported, not allocated.
        let e = err(&B::nar().t(&["("]).raw(&u64::MAX.to_le_bytes()).0);
        assert!(
            e.to_string().contains("18446744073709551615-byte string"),
            "{e}"
        );
        // Content before "contents", as old Nix parsers allowed, is not canonical.
        let e = err(&B::nar().t(&["(", "type", "regular", ")"]).0);
        assert!(matches!(e, NarError::UnexpectedToken { .. }), "{e}");
        let e = err(&B::nar()
            .t(&["(", "type", "directory", "entry", "(", "nom"])
            .0);
        assert!(matches!(e, NarError::UnexpectedToken { .. }), "{e}");
    }

    #[test]
    fn rejects_nonzero_padding() {
        let mut nar = B::nar().file(b"abc").0;
        // "abc" content starts after magic(24) "("(16) "type"(16) "regular"(16) "contents"(16) len(8).
        let pad = 24 + 16 * 4 + 8 + 3;
        assert_eq!(&nar[pad - 3..pad], b"abc");
        nar[pad + 2] = 1;
        let e = err(&nar);
        assert!(
            matches!(e, NarError::NonZeroPadding { offset } if offset == pad as u64 + 2),
            "{e}"
        );
        // Padding of a token.
        let mut nar = B::nar().file(b"").0;
        nar[8 + 13] = b'x';
        let e = err(&nar);
        assert!(matches!(e, NarError::NonZeroPadding { offset: 21 }), "{e}");
    }

    #[test]
    fn rejects_bad_names() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b".", "\".\""),
            (b"..", "\"..\""),
            (b"a/b", "'/'"),
            (b"a\0b", "NUL"),
        ];
        for (name, why) in cases {
            let e = err(&dir_with(&[name]));
            assert!(
                matches!(e, NarError::InvalidName { offset: 128, .. }),
                "{e}"
            );
            assert!(e.to_string().contains(why), "{e}");
        }
        let long = vec![b'n'; 256];
        let e = err(&dir_with(&[&long]));
        assert!(matches!(e, NarError::NameTooLong { len: 256, .. }), "{e}");
        assert!(validate(&dir_with(&[&long[..255]])[..]).is_ok());
        let e = err(&dir_with(&[b"a"])
            .iter()
            .copied()
            .take(128)
            .chain(u64::MAX.to_le_bytes())
            .collect::<Vec<_>>());
        assert!(matches!(e, NarError::NameTooLong { .. }), "{e}");
    }

    #[test]
    fn rejects_unsorted_names() {
        let e = err(&dir_with(&[b"b", b"a"]));
        assert!(matches!(e, NarError::NamesNotSorted { .. }), "{e}");
        let e = err(&dir_with(&[b"a", b"a"]));
        assert!(matches!(e, NarError::NamesNotSorted { .. }), "{e}");
        // Byte order, not locale order: "B" < "a" < "\xc3\xa9".
        assert!(validate(&dir_with(&[b"B", b"a", b"\xc3\xa9"])[..]).is_ok());
        let e = err(&dir_with(&[b"a", b"B"]));
        assert!(matches!(e, NarError::NamesNotSorted { .. }), "{e}");
        // A prefix sorts first.
        assert!(validate(&dir_with(&[b"a", b"a0"])[..]).is_ok());
        assert!(validate(&dir_with(&[b"a0", b"a"])[..]).is_err());
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        let t = vec![b't'; 4096];
        let nar = B::nar()
            .t(&["(", "type", "symlink", "target"])
            .s(&t)
            .t(&[")"])
            .0;
        let e = err(&nar);
        assert!(
            matches!(e, NarError::TargetTooLong { len: 4096, .. }),
            "{e}"
        );
        let nar = B::nar()
            .t(&["(", "type", "symlink", "target"])
            .s(&t[..4095])
            .t(&[")"])
            .0;
        assert!(validate(&nar[..]).is_ok());
        let nar = B::nar().t(&["(", "type", "symlink", "target", "", ")"]).0;
        assert!(matches!(err(&nar), NarError::InvalidTarget { .. }));
        let nar = B::nar()
            .t(&["(", "type", "symlink", "target"])
            .s(b"a\0")
            .t(&[")"])
            .0;
        assert!(matches!(err(&nar), NarError::InvalidTarget { .. }));
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut b = B::nar();
        for _ in 0..depth {
            b = b.t(&["(", "type", "directory"]).entry(b"d");
        }
        b = b.file(b"");
        for _ in 0..depth {
            b = b.t(&[")", ")"]);
        }
        b.0
    }

    #[test]
    fn rejects_deep_nesting() {
        assert!(validate(&nested(MAX_DEPTH)[..]).is_ok());
        let e = err(&nested(MAX_DEPTH + 1));
        assert!(matches!(e, NarError::TooDeep { max: 256, .. }), "{e}");
        // Far deeper input still fails fast without using much memory.
        let e = err(&nested(10_000));
        assert!(matches!(e, NarError::TooDeep { .. }), "{e}");
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut nar = sample();
        let len = nar.len() as u64;
        nar.push(0);
        let e = err(&nar);
        assert!(
            matches!(e, NarError::TrailingBytes { offset } if offset == len),
            "{e}"
        );
        let mut two = sample();
        two.extend_from_slice(&sample());
        assert!(matches!(err(&two), NarError::TrailingBytes { .. }));
    }

    #[test]
    fn rejects_truncation_everywhere() {
        let nar = sample();
        for cut in 0..nar.len() {
            let e = err(&nar[..cut]);
            assert!(matches!(e, NarError::Truncated { .. }), "cut at {cut}: {e}");
            assert!(
                e.to_string().contains(&format!("byte {cut}")),
                "cut at {cut}: {e}"
            );
        }
    }

    #[test]
    fn rejects_huge_file_without_allocating() {
        let nar = B::nar()
            .t(&["(", "type", "regular", "contents"])
            .raw(&(u64::MAX - 10).to_le_bytes())
            .0;
        assert!(matches!(err(&nar), NarError::SizeOverflow { .. }));
        let nar = B::nar()
            .t(&["(", "type", "regular", "contents"])
            .raw(&(1u64 << 40).to_le_bytes())
            .raw(b"abc")
            .0;
        assert!(matches!(err(&nar), NarError::Truncated { .. }));
    }

    #[test]
    fn errors_from_reader_carry_offset() {
        /// Yields `self.0`, then fails.
        struct Broken(Vec<u8>);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let e = validate(Broken(sample()[..40].to_vec())).unwrap_err();
        assert!(matches!(e, NarError::Read { offset: 40, .. }), "{e}");
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }

    #[test]
    fn single_byte_reads() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let nar = sample();
        let s = validate(OneByte(&nar)).unwrap();
        assert_eq!(s.nar_hash, NarHash::of(&nar));
    }

    #[test]
    fn mutations_never_panic() {
        // Every single-byte change of the sample is either rejected or still a valid NAR.
        let nar = sample();
        for i in 0..nar.len() {
            for v in [0u8, 1, 0x7f, 0xff, nar[i] ^ 0x20] {
                let mut m = nar.clone();
                m[i] = v;
                let _ = validate(&m[..]);
            }
        }
    }
}
