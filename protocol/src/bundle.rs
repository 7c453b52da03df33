//! The bundle container: a header, the manifest, the signature block, then the payloads.
//!
//! ```text
//! offset size field
//!  0      4   magic  b"NLBD"
//!  4      1   format version (= 2)
//!  5      1   manifest encoding (0 = as is, 1 = zstd)
//!  6      2   signature block length, u16 LE (<= signature::MAX_BLOCK)
//!  8      4   manifest length in the bundle, u32 LE
//! 12      4   manifest length once decoded, u32 LE (<= MAX_MANIFEST_BYTES; = the length in
//!             the bundle when stored as is)
//! 16      6   payload section length, u48 LE
//! 22     16   bundle id: the first 16 bytes of the BLAKE3 of the manifest bytes as stored
//! 38      -   manifest, signature block (see [`crate::signature`]), payloads
//! ```
//!
//! The manifest names every chunk id and narHash, so the id names the whole bundle. Version 1
//! (magic `NLBUNDLE`, 64 bytes, the whole BLAKE3) is recognized only to say so.

use crate::manifest::MAX_MANIFEST_BYTES;
use crate::signature::MAX_BLOCK;

pub const BUNDLE_MAGIC: [u8; 4] = *b"NLBD";
pub const BUNDLE_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 38;
/// The manifest is stored as it is (small manifests, which zstd would only grow).
pub const MANIFEST_PLAIN: u8 = 0;
/// The manifest is one zstd frame.
pub const MANIFEST_ZSTD: u8 = 1;

/// A 16-byte bundle id.
pub type BundleId = [u8; 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    pub manifest_encoding: u8,
    pub signatures_len: u16,
    pub manifest_len: u32,
    pub manifest_raw_len: u32,
    pub payload_len: u64,
    pub id: BundleId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a narlink bundle (bad magic)")]
    Magic,
    #[error("bundle is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("bundle format version {0} is not supported (this narlink reads version {BUNDLE_VERSION}): use the narlink that packed it, or pack again")]
    Version(u8),
    #[error("bundle manifest encoding {0} is unknown")]
    Encoding(u8),
    #[error("bundle manifest claims {0} bytes decoded, above the cap of {MAX_MANIFEST_BYTES}")]
    ManifestTooLarge(u32),
    #[error("bundle manifest is stored as is, but its two lengths differ")]
    PlainLength,
    #[error("bundle manifest checksum mismatch: the manifest was corrupted in transit")]
    ManifestChecksum,
    #[error("bundle signature block claims {0} bytes, above the cap of {MAX_BLOCK}")]
    SignaturesTooLarge(u16),
}

impl BundleHeader {
    pub fn id(&self) -> BundleId {
        self.id
    }

    /// Offset of the signature block.
    pub fn signatures_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.manifest_len)
    }

    /// Offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.signatures_offset() + u64::from(self.signatures_len)
    }

    /// Total bundle length.
    pub fn total_len(&self) -> u64 {
        self.payload_offset() + self.payload_len
    }

    /// Build the header for a manifest stored as `stored` (`encoding` one of
    /// [`MANIFEST_PLAIN`], [`MANIFEST_ZSTD`]).
    pub fn for_manifest(
        stored: &[u8],
        encoding: u8,
        raw_len: u32,
        payload_len: u64,
        signatures_len: u16,
    ) -> BundleHeader {
        let mut id = [0u8; 16];
        id.copy_from_slice(&blake3::hash(stored).as_bytes()[..16]);
        BundleHeader {
            manifest_encoding: encoding,
            signatures_len,
            manifest_len: stored.len() as u32,
            manifest_raw_len: raw_len,
            payload_len,
            id,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&BUNDLE_MAGIC);
        b[4] = BUNDLE_VERSION;
        b[5] = self.manifest_encoding;
        b[6..8].copy_from_slice(&self.signatures_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_raw_len.to_le_bytes());
        b[16..22].copy_from_slice(&self.payload_len.to_le_bytes()[..6]);
        b[22..38].copy_from_slice(&self.id);
        b
    }

    /// Parse a header from the first bytes of a bundle.
    pub fn decode(bytes: &[u8]) -> Result<BundleHeader, BundleError> {
        if bytes.starts_with(b"NLBUNDLE") {
            return Err(BundleError::Version(1));
        }
        if bytes.len() < 4 || bytes[0..4] != BUNDLE_MAGIC {
            return Err(BundleError::Magic);
        }
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(BundleError::Short(bytes.len()));
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if b[4] != BUNDLE_VERSION {
            return Err(BundleError::Version(b[4]));
        }
        let manifest_encoding = b[5];
        if manifest_encoding != MANIFEST_PLAIN && manifest_encoding != MANIFEST_ZSTD {
            return Err(BundleError::Encoding(manifest_encoding));
        }
        let signatures_len = u16::from_le_bytes([b[6], b[7]]);
        if signatures_len as usize > MAX_BLOCK {
            return Err(BundleError::SignaturesTooLarge(signatures_len));
        }
        let (manifest_len, manifest_raw_len) = (u32_at(8), u32_at(12));
        if manifest_raw_len > MAX_MANIFEST_BYTES {
            return Err(BundleError::ManifestTooLarge(manifest_raw_len));
        }
        if manifest_encoding == MANIFEST_PLAIN && manifest_len != manifest_raw_len {
            return Err(BundleError::PlainLength);
        }
        let mut payload_len = [0u8; 8];
        payload_len[..6].copy_from_slice(&b[16..22]);
        let payload_len = u64::from_le_bytes(payload_len);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[22..38]);
        Ok(BundleHeader {
            manifest_encoding,
            signatures_len,
            manifest_len,
            manifest_raw_len,
            payload_len,
            id,
        })
    }

    /// Check the stored manifest bytes against the header's id; returns their whole BLAKE3
    /// (what signatures sign).
    pub fn verify_manifest(&self, stored: &[u8]) -> Result<[u8; 32], BundleError> {
        let hash = *blake3::hash(stored).as_bytes();
        if stored.len() as u64 != u64::from(self.manifest_len) || hash[..16] != self.id {
            return Err(BundleError::ManifestChecksum);
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_truncation() {
        let h = BundleHeader::for_manifest(b"manifest", MANIFEST_ZSTD, 100, 12345, 0);
        let enc = h.encode();
        assert_eq!(BundleHeader::decode(&enc), Ok(h));
        for n in 0..HEADER_LEN {
            assert!(
                BundleHeader::decode(&enc[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        assert_eq!(
            h.verify_manifest(b"manifest"),
            Ok(*blake3::hash(b"manifest").as_bytes())
        );
        assert_eq!(
            h.verify_manifest(b"manifesT"),
            Err(BundleError::ManifestChecksum)
        );
    }

    #[test]
    fn rejects_oversized_manifest_and_unknown_version() {
        let mut enc = BundleHeader::for_manifest(b"m", MANIFEST_ZSTD, 1, 0, 0).encode();
        enc[12..16].copy_from_slice(&(MAX_MANIFEST_BYTES + 1).to_le_bytes());
        assert!(matches!(
            BundleHeader::decode(&enc),
            Err(BundleError::ManifestTooLarge(_))
        ));
        let mut enc = BundleHeader::for_manifest(b"m", MANIFEST_ZSTD, 1, 0, 0).encode();
        enc[4] = 9;
        assert_eq!(BundleHeader::decode(&enc), Err(BundleError::Version(9)));
        let plain = BundleHeader::for_manifest(b"m", MANIFEST_PLAIN, 2, 0, 0).encode();
        assert_eq!(BundleHeader::decode(&plain), Err(BundleError::PlainLength));
        assert_eq!(
            BundleHeader::decode(b"NLBUNDLE\x01\x00"),
            Err(BundleError::Version(1))
        );
    }
}
