//! A bundle's head: the header, the manifest as stored and the signature block, read from a
//! bundle stream and checked in the order that keeps unverified input cheap:
//!
//! 1. the header (caps on every length, before anything is allocated);
//! 2. the head against the bundle id (one streaming BLAKE3; the stored manifest is spooled,
//!    in memory up to [`SPOOL_IN_MEMORY`], then to a file);
//! 3. the signatures against what the reader trusts ([`RawHead::check_signatures`]);
//! 4. only then is the manifest decompressed and decoded ([`RawHead::manifest`]).
//!
//! So a bundle refused for its signature costs one pass over its head and at most
//! [`SPOOL_IN_MEMORY`] of memory, whatever its manifest claims.

use std::io::{self, Read, Seek, Write};
use std::path::Path;

use narlink_protocol::bundle::{BundleError, BundleHeader, HEADER_LEN, MANIFEST_ZSTD};
use narlink_protocol::manifest::{ChunkParams, Manifest, ManifestError};
use narlink_protocol::signature::{self, PublicKey, Signature, SignatureError};
use narlink_protocol::status::device::Reason;
use tempfile::SpooledTempFile;

use crate::chunking::PARAMS;

/// Stored manifest bytes held in memory before they spill to a file.
pub const SPOOL_IN_MEMORY: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest does not decompress: {0}")]
    ManifestZstd(String),
    #[error("bundle uses chunking {found:?}, this device uses {PARAMS:?}")]
    Chunking { found: ChunkParams },
    #[error("bundle ends early: {0}")]
    Truncated(io::Error),
    #[error("spooling the manifest: {0}")]
    Spool(io::Error),
    #[error("refusing the bundle: {0}")]
    Signature(#[from] SignatureError),
    #[error("refusing the bundle: this device trusts no signing key; add one with `narlink device trust --state DIR KEYFILE` (or set it up with --allow-unsigned, for tests only)")]
    NoTrust,
}

impl HeadError {
    /// The head matched its bundle id, so whoever made the id made it so: refusing the id
    /// for good costs no genuine bundle anything. Other errors may be transit damage or
    /// forged frames (see [`narlink_protocol::bundle`]).
    /// The reason code a status report gives for this refusal.
    pub fn reason(&self) -> Reason {
        match self {
            HeadError::Signature(SignatureError::Unsigned(_)) => Reason::Unsigned,
            HeadError::Signature(SignatureError::Untrusted { .. }) | HeadError::NoTrust => {
                Reason::Untrusted
            }
            HeadError::Signature(SignatureError::Invalid(_)) => Reason::BadSignature,
            HeadError::Signature(_)
            | HeadError::Bundle(_)
            | HeadError::Manifest(_)
            | HeadError::ManifestZstd(_)
            | HeadError::Chunking { .. }
            | HeadError::Truncated(_) => Reason::Malformed,
            HeadError::Spool(_) => Reason::Other,
        }
    }

    pub fn binds_id(&self) -> bool {
        matches!(
            self,
            HeadError::Signature(_)
                | HeadError::NoTrust
                | HeadError::Manifest(_)
                | HeadError::ManifestZstd(_)
                | HeadError::Chunking { .. }
        )
    }
}

/// A head whose bytes match its bundle id; its signatures are not checked yet.
pub struct RawHead {
    pub header: BundleHeader,
    stored: SpooledTempFile,
    pub sigs: Vec<Signature>,
    /// BLAKE3 of the manifest as stored: what signatures sign.
    pub manifest_hash: [u8; 32],
}

/// A head with its manifest decoded.
pub struct BundleHead {
    pub header: BundleHeader,
    pub manifest: Manifest,
    pub sigs: Vec<Signature>,
}

/// Read a bundle's head from `r` and check it against the bundle id (not yet who signed
/// it). A stored manifest larger than [`SPOOL_IN_MEMORY`] spills to a file in `spill_dir`
/// (the system's temporary directory when `None`).
pub fn read_head(r: &mut impl Read, spill_dir: Option<&Path>) -> Result<RawHead, HeadError> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(HeadError::Truncated)?;
    let header = BundleHeader::decode(&head)?;
    // A stored manifest is at most the compress bound of its decoded length (itself capped).
    let cap = zstd::zstd_safe::compress_bound(header.manifest_raw_len as usize) as u64;
    if u64::from(header.manifest_len) > cap {
        return Err(BundleError::HeadChecksum.into());
    }
    let mut stored = match spill_dir {
        Some(d) => SpooledTempFile::new_in(SPOOL_IN_MEMORY, d),
        None => SpooledTempFile::new(SPOOL_IN_MEMORY),
    };
    let mut hasher = header.head_hasher();
    let mut left = u64::from(header.manifest_len);
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.read_exact(&mut buf[..n]).map_err(HeadError::Truncated)?;
        hasher.manifest(&buf[..n]);
        stored.write_all(&buf[..n]).map_err(HeadError::Spool)?;
        left -= n as u64;
    }
    let mut block = vec![0u8; usize::from(header.signatures_len)];
    r.read_exact(&mut block).map_err(HeadError::Truncated)?;
    let manifest_hash = hasher.verify(&block)?;
    let sigs = if block.is_empty() {
        Vec::new()
    } else {
        signature::decode_block(&block)?
    };
    Ok(RawHead {
        header,
        stored,
        sigs,
        manifest_hash,
    })
}

impl RawHead {
    /// Check the signatures against `trusted`: one valid signature by a trusted key, unless
    /// `allow_unsigned` and the bundle carries none. Returns whether an unsigned bundle was let
    /// through.
    pub fn check_signatures(
        &self,
        trusted: &[PublicKey],
        allow_unsigned: bool,
    ) -> Result<bool, HeadError> {
        if trusted.is_empty() && !allow_unsigned {
            return Err(HeadError::NoTrust);
        }
        if allow_unsigned && self.sigs.is_empty() {
            return Ok(true);
        }
        signature::verify(&self.manifest_hash, &self.sigs, trusted)?;
        Ok(false)
    }

    /// Decompress and decode the manifest (call after [`check_signatures`](Self::check_signatures)
    /// on a device), naming on-board paths with `resolve` (see
    /// [`narlink_protocol::manifest::resolve_in`]).
    pub fn manifest(
        mut self,
        resolve: impl FnMut(&[u8]) -> Result<String, ManifestError>,
    ) -> Result<BundleHead, HeadError> {
        let header = self.header;
        self.stored.rewind().map_err(HeadError::Spool)?;
        let cap = header.manifest_raw_len as usize;
        let mut raw = Vec::new();
        if header.manifest_encoding == MANIFEST_ZSTD {
            let mut d = zstd::stream::read::Decoder::new(&mut self.stored)
                .map_err(|e| HeadError::ManifestZstd(e.to_string()))?;
            // One byte past the claimed length tells a manifest that decodes longer.
            (&mut d)
                .take(cap as u64 + 1)
                .read_to_end(&mut raw)
                .map_err(|e| HeadError::ManifestZstd(e.to_string()))?;
            if raw.len() != cap {
                return Err(HeadError::ManifestZstd(format!(
                    "decodes to {} bytes, the header says {cap}",
                    raw.len()
                )));
            }
        } else {
            self.stored
                .read_to_end(&mut raw)
                .map_err(HeadError::Spool)?;
        }
        let manifest = Manifest::from_wire(&raw, resolve)?;
        if manifest.chunking != PARAMS {
            return Err(HeadError::Chunking {
                found: manifest.chunking,
            });
        }
        if manifest.payload_bytes() != header.payload_len {
            return Err(ManifestError::Payload {
                index: 0,
                reason: "payload lengths disagree with the header",
            }
            .into());
        }
        Ok(BundleHead {
            header,
            manifest,
            sigs: self.sigs,
        })
    }
}

/// Read and decode a bundle's head without checking who signed it (for `inspect` and
/// tools: nothing read this way reaches a store).
pub fn read_manifest(
    r: &mut impl Read,
    resolve: impl FnMut(&[u8]) -> Result<String, ManifestError>,
) -> Result<BundleHead, HeadError> {
    read_head(r, None)?.manifest(resolve)
}
