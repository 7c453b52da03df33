//! NAR (Nix ARchive) codec: the byte format of `nix-store --dump`.
//!
//! # Grammar
//!
//! Every `str` is a little-endian `u64` length, the bytes, then zero bytes up to the next multiple
//! of 8. Literal tokens below are such strings.
//!
//! ```text
//! archive   = str("nix-archive-1") node
//! node      = str("(") str("type") body str(")")
//! body      = str("regular") [ str("executable") str("") ] str("contents") str(<file bytes>)
//!           | str("symlink") str("target") str(<target>)
//!           | str("directory") entry*
//! entry     = str("entry") str("(") str("name") str(<name>) str("node") node str(")")
//! ```
//!
//! Directory entries appear in strictly increasing byte order of their names. A regular file is
//! "executable" iff its owner-execute bit is set; no other metadata (times, owners, other mode
//! bits, hard links, xattrs) is recorded.
//!
//! # Modules
//!
//! - [`hash`]: Nix base32 and [`NarHash`] (sha256 of a NAR), in Nix's textual forms.
//! - [`layout`]: [`NarLayout`], a random-access view of the NAR of a filesystem tree that does not
//!   read file contents until asked; [`dump`] and [`hash_path`].
//! - [`parse`]: a streaming, total parser for untrusted NARs; [`validate`] and [`restore`].

pub mod error;
pub mod hash;
pub mod layout;
pub mod parse;

pub use error::NarError;
pub use hash::NarHash;
pub use layout::{dump, hash_path, FileInfo, NarLayout, NarReader};
pub use parse::{restore, validate, NarEvent, NarParser};

/// Hash and size of a NAR, as recorded in Nix's database (`narHash`, `narSize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NarSummary {
    /// sha256 of the NAR bytes.
    pub nar_hash: NarHash,
    /// Length of the NAR in bytes.
    pub nar_size: u64,
}

/// Magic string opening every NAR.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";

/// Longest accepted directory entry name, in bytes (`NAME_MAX` on Linux).
pub const MAX_NAME_LEN: usize = 255;

/// Longest accepted symlink target, in bytes (`PATH_MAX - 1` on Linux).
pub const MAX_TARGET_LEN: usize = 4095;

/// Deepest accepted nesting: the number of directory levels above any node (the root is at 0).
pub const MAX_DEPTH: usize = 256;

/// Number of zero bytes that follow a string of `len` bytes in a NAR.
pub(crate) fn padding_len(len: u64) -> u64 {
    (8 - (len % 8)) % 8
}

/// Append one NAR string (length, bytes, padding) to `out`.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len() + padding_len(s.len() as u64) as usize, 0);
}
