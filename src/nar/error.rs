//! The one error type of the NAR codec.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while scanning, dumping, parsing or restoring a NAR.
///
/// Filesystem errors name the path concerned; errors about NAR bytes name the byte offset in
/// the NAR at which the problem was found (offset 0 is the first byte of the archive).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarError {
    /// A filesystem operation on `path` failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The tree holds something a NAR cannot represent (socket, FIFO, device node).
    #[error(
        "{} is a {kind}; a NAR can only hold regular files, directories and symlinks \
         (remove it or exclude it from the tree)",
        path.display()
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },

    /// A regular file changed length between the scan and the read of its contents.
    #[error(
        "{} changed while being archived: it was {expected} bytes when scanned, now {found} \
         bytes; nothing written from this scan is valid, scan again once the tree is quiet",
        path.display()
    )]
    FileChanged {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The tree nests directories deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error(
        "{} is nested deeper than {max} directory levels, the most a NAR parser here accepts",
        path.display()
    )]
    TreeTooDeep { path: PathBuf, max: usize },

    /// `restore` was asked to write into something that already exists.
    #[error("restore destination {} already exists; restore only creates fresh paths", path.display())]
    DestinationExists { path: PathBuf },

    /// A random-access read went past the end of the NAR.
    #[error(
        "read of {len} bytes at NAR offset {offset} ends past the end of the NAR ({size} bytes)"
    )]
    OutOfRange { offset: u64, len: u64, size: u64 },

    /// Writing NAR bytes to an output failed.
    #[error("cannot write NAR output at byte {offset}: {source}")]
    Write {
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// Reading NAR bytes from an input failed (not a truncation: the reader itself reported an error).
    #[error("cannot read NAR input at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// The input does not start with the NAR magic.
    #[error("not a NAR: expected the string \"nix-archive-1\" at byte {offset}, found {found}")]
    BadMagic { offset: u64, found: String },

    /// The input ended in the middle of the archive.
    #[error("NAR truncated: input ended at byte {offset} while reading {context}")]
    Truncated { offset: u64, context: &'static str },

    /// A token other than the one(s) the grammar allows here.
    #[error("malformed NAR at byte {offset}: expected {expected}, found {found}")]
    UnexpectedToken {
        offset: u64,
        expected: &'static str,
        found: String,
    },

    /// The padding after a string was not all zero bytes.
    #[error("malformed NAR at byte {offset}: padding byte is not zero")]
    NonZeroPadding { offset: u64 },

    /// A directory entry name that cannot name a file.
    #[error("malformed NAR at byte {offset}: invalid entry name {name}: {reason}")]
    InvalidName {
        offset: u64,
        name: String,
        reason: &'static str,
    },

    /// A directory entry name longer than [`MAX_NAME_LEN`](super::MAX_NAME_LEN).
    #[error("malformed NAR at byte {offset}: entry name is {len} bytes, longer than the {max}-byte limit")]
    NameTooLong { offset: u64, len: u64, max: usize },

    /// Directory entries out of order or duplicated.
    #[error(
        "malformed NAR at byte {offset}: entry name {name} does not sort strictly after \
         the previous entry {prev} (entries must be unique and in byte order)"
    )]
    NamesNotSorted {
        offset: u64,
        prev: String,
        name: String,
    },

    /// A symlink target longer than [`MAX_TARGET_LEN`](super::MAX_TARGET_LEN).
    #[error("malformed NAR at byte {offset}: symlink target is {len} bytes, longer than the {max}-byte limit")]
    TargetTooLong { offset: u64, len: u64, max: usize },

    /// A symlink target that cannot be created (empty or containing NUL).
    #[error("malformed NAR at byte {offset}: invalid symlink target {target}: {reason}")]
    InvalidTarget {
        offset: u64,
        target: String,
        reason: &'static str,
    },

    /// Directories nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("malformed NAR at byte {offset}: directories nested deeper than {max} levels")]
    TooDeep { offset: u64, max: usize },

    /// A file whose length would make the archive longer than 2^64 bytes.
    #[error("malformed NAR at byte {offset}: file length {len} overflows the archive size")]
    SizeOverflow { offset: u64, len: u64 },

    /// Bytes after the end of the archive.
    #[error("malformed NAR: unexpected data after the end of the archive at byte {offset}")]
    TrailingBytes { offset: u64 },

    /// A textual hash that could not be parsed.
    #[error("invalid hash {input:?}: {reason}")]
    InvalidHash { input: String, reason: String },

    /// A parser method was called in a state where it does not apply (a caller bug).
    #[error("NAR parser misuse: {0}")]
    Misuse(&'static str),
}

impl NarError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        NarError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// Render untrusted bytes for an error message: escaped, quoted, at most 80 bytes shown.
pub(crate) fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 80;
    let shown = &b[..b.len().min(MAX)];
    let mut s = format!("\"{}\"", shown.escape_ascii());
    if b.len() > MAX {
        s.push_str(&format!(" (… {} bytes in all)", b.len()));
    }
    s
}

/// Convert a `NarError` into an `io::Error` (for `Read` impls), keeping it downcastable.
pub(crate) fn to_io(e: NarError) -> io::Error {
    match e {
        // Keep the kind of plain I/O errors visible to callers that match on it.
        NarError::Io { ref source, .. } => io::Error::new(source.kind(), e),
        _ => io::Error::other(e),
    }
}

/// Recover a `NarError` from an `io::Error` made by [`to_io`], if it is one.
pub(crate) fn from_io(e: io::Error) -> Result<NarError, io::Error> {
    if !e.get_ref().is_some_and(|inner| inner.is::<NarError>()) {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|inner| inner.downcast::<NarError>()) {
        Some(Ok(nar)) => Ok(*nar),
        Some(Err(other)) => Err(io::Error::new(kind, other)),
        None => Err(io::Error::from(kind)),
    }
}
