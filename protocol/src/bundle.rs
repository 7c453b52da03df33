//! The bundle container: a header, the compressed manifest, then the payloads.
//!
//! ```text
//! offset size field
//!  0      8   magic  b"NLBUNDLE"
//!  8      2   format version, u16 LE (= 1)
//! 10      1   manifest encoding (1 = zstd)
//! 11      1   reserved, 0
//! 12      4   manifest length in the bundle, u32 LE
//! 16      4   manifest length once decoded, u32 LE (<= MAX_MANIFEST_BYTES)
//! 20      8   payload section length, u64 LE
//! 28     32   BLAKE3 of the encoded manifest bytes
//! 60      4   signature block length, u32 LE (<= signature::MAX_BLOCK)
//! 64      -   encoded manifest, signature block (see [`crate::signature`]), payloads
//! ```
//!
//! The bundle id is the first 16 bytes of the manifest's BLAKE3: the manifest names every
//! chunk id and narHash, so it names the whole bundle.

use crate::manifest::MAX_MANIFEST_BYTES;
use crate::signature::MAX_BLOCK;

pub const BUNDLE_MAGIC: [u8; 8] = *b"NLBUNDLE";
pub const BUNDLE_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
pub const MANIFEST_ZSTD: u8 = 1;

/// A 16-byte bundle id.
pub type BundleId = [u8; 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    pub manifest_encoding: u8,
    pub manifest_len: u32,
    pub manifest_raw_len: u32,
    pub payload_len: u64,
    pub manifest_blake3: [u8; 32],
    pub signatures_len: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a narlink bundle (bad magic)")]
    Magic,
    #[error("bundle is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("bundle format version {0} is not supported (this narlink reads version {BUNDLE_VERSION}): upgrade narlink on this side")]
    Version(u16),
    #[error("bundle header reserved byte is {0}, not 0: written by a newer narlink?")]
    Reserved(u8),
    #[error("bundle manifest encoding {0} is unknown")]
    Encoding(u8),
    #[error("bundle manifest claims {0} bytes decoded, above the cap of {MAX_MANIFEST_BYTES}")]
    ManifestTooLarge(u32),
    #[error("bundle manifest checksum mismatch: the manifest was corrupted in transit")]
    ManifestChecksum,
    #[error("bundle signature block claims {0} bytes, above the cap of {MAX_BLOCK}")]
    SignaturesTooLarge(u32),
}

impl BundleHeader {
    pub fn id(&self) -> BundleId {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.manifest_blake3[..16]);
        id
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

    /// Build the header for an encoded manifest.
    pub fn for_manifest(
        encoded_manifest: &[u8],
        raw_len: u32,
        payload_len: u64,
        signatures_len: u32,
    ) -> BundleHeader {
        BundleHeader {
            manifest_encoding: MANIFEST_ZSTD,
            manifest_len: encoded_manifest.len() as u32,
            manifest_raw_len: raw_len,
            payload_len,
            manifest_blake3: *blake3::hash(encoded_manifest).as_bytes(),
            signatures_len,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&BUNDLE_MAGIC);
        b[8..10].copy_from_slice(&BUNDLE_VERSION.to_le_bytes());
        b[10] = self.manifest_encoding;
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.manifest_raw_len.to_le_bytes());
        b[20..28].copy_from_slice(&self.payload_len.to_le_bytes());
        b[28..60].copy_from_slice(&self.manifest_blake3);
        b[60..64].copy_from_slice(&self.signatures_len.to_le_bytes());
        b
    }

    /// Parse a header from the first bytes of a bundle.
    pub fn decode(bytes: &[u8]) -> Result<BundleHeader, BundleError> {
        if bytes.len() < 8 || bytes[0..8] != BUNDLE_MAGIC {
            return Err(BundleError::Magic);
        }
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(BundleError::Short(bytes.len()));
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != BUNDLE_VERSION {
            return Err(BundleError::Version(version));
        }
        if b[10] != MANIFEST_ZSTD {
            return Err(BundleError::Encoding(b[10]));
        }
        if b[11] != 0 {
            return Err(BundleError::Reserved(b[11]));
        }
        let manifest_raw_len = u32_at(16);
        if manifest_raw_len > MAX_MANIFEST_BYTES {
            return Err(BundleError::ManifestTooLarge(manifest_raw_len));
        }
        let signatures_len = u32_at(60);
        if signatures_len as usize > MAX_BLOCK {
            return Err(BundleError::SignaturesTooLarge(signatures_len));
        }
        let mut payload_len = [0u8; 8];
        payload_len.copy_from_slice(&b[20..28]);
        let mut manifest_blake3 = [0u8; 32];
        manifest_blake3.copy_from_slice(&b[28..60]);
        Ok(BundleHeader {
            manifest_encoding: b[10],
            manifest_len: u32_at(12),
            manifest_raw_len,
            payload_len: u64::from_le_bytes(payload_len),
            manifest_blake3,
            signatures_len,
        })
    }

    /// Check the encoded manifest bytes against the header's checksum.
    pub fn verify_manifest(&self, encoded_manifest: &[u8]) -> Result<(), BundleError> {
        if encoded_manifest.len() as u64 != u64::from(self.manifest_len)
            || *blake3::hash(encoded_manifest).as_bytes() != self.manifest_blake3
        {
            return Err(BundleError::ManifestChecksum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_truncation() {
        let h = BundleHeader::for_manifest(b"manifest", 100, 12345, 0);
        let enc = h.encode();
        assert_eq!(BundleHeader::decode(&enc), Ok(h));
        for n in 0..HEADER_LEN {
            assert!(
                BundleHeader::decode(&enc[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        assert_eq!(h.verify_manifest(b"manifest"), Ok(()));
        assert_eq!(
            h.verify_manifest(b"manifesT"),
            Err(BundleError::ManifestChecksum)
        );
    }

    #[test]
    fn rejects_oversized_manifest_and_unknown_version() {
        let mut enc = BundleHeader::for_manifest(b"m", 1, 0, 0).encode();
        enc[16..20].copy_from_slice(&(MAX_MANIFEST_BYTES + 1).to_le_bytes());
        assert!(matches!(
            BundleHeader::decode(&enc),
            Err(BundleError::ManifestTooLarge(_))
        ));
        let mut enc = BundleHeader::for_manifest(b"m", 1, 0, 0).encode();
        enc[8] = 9;
        assert_eq!(BundleHeader::decode(&enc), Err(BundleError::Version(9)));
    }
}
