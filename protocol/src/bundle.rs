//! The bundle container: a header, the manifest, the signature block, then the payloads.
//!
//! ```text
//! offset size field
//!  0      4   magic  b"NLBD"
//!  4      1   format version (= 3)
//!  5      1   manifest encoding (0 = as is, 1 = zstd)
//!  6      2   signature block length, u16 LE (<= signature::MAX_BLOCK)
//!  8      4   manifest length in the bundle, u32 LE
//! 12      4   manifest length once decoded, u32 LE (<= MAX_MANIFEST_BYTES; = the length in
//!             the bundle when stored as is)
//! 16      6   payload section length, u48 LE
//! 22     16   bundle id: the first 16 bytes of the BLAKE3 of the head (see below)
//! 38      -   manifest, signature block (see [`crate::signature`]), payloads
//! ```
//!
//! The **head** is everything before the payloads but the id itself: header bytes 0..22, the
//! manifest as stored, the signature block. The id binds all of it, so frames that carry a
//! bundle's id but another signature block, manifest or lengths decode to a head that does not
//! match the id: an erasure to ask for again, never a reason to refuse the id. A head that
//! matches its id was made that way by whoever made the id; if its signature does not verify,
//! refusing that id for good costs nobody else anything. The manifest names every chunk id and
//! narHash, so the id names the whole bundle. Versions 1 (magic `NLBUNDLE`) and 2 (the id of
//! the manifest bytes alone) are recognized only to say so.

use crate::manifest::MAX_MANIFEST_BYTES;
use crate::signature::MAX_BLOCK;

pub const BUNDLE_MAGIC: [u8; 4] = *b"NLBD";
pub const BUNDLE_VERSION: u8 = 3;
pub const HEADER_LEN: usize = 38;
/// Where the id starts in the header: the bytes before it are part of the head it names.
const ID_OFFSET: usize = 22;
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
    #[error("bundle head does not match the bundle id: its manifest or signatures were corrupted or forged in transit")]
    HeadChecksum,
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
    /// [`MANIFEST_PLAIN`], [`MANIFEST_ZSTD`]) followed by the signature block `signatures`.
    pub fn for_head(
        stored: &[u8],
        encoding: u8,
        raw_len: u32,
        payload_len: u64,
        signatures: &[u8],
    ) -> BundleHeader {
        let mut h = BundleHeader {
            manifest_encoding: encoding,
            signatures_len: signatures.len() as u16,
            manifest_len: stored.len() as u32,
            manifest_raw_len: raw_len,
            payload_len,
            id: [0; 16],
        };
        h.id = h.head_id(stored, signatures);
        h
    }

    /// The id of this header's fields with `stored` and `signatures`.
    fn head_id(&self, stored: &[u8], signatures: &[u8]) -> BundleId {
        let mut h = self.head_hasher();
        h.manifest(stored);
        h.id(signatures)
    }

    /// Hash a head as it streams by: feed the stored manifest to
    /// [`HeadHasher::manifest`], then check it with [`HeadHasher::verify`].
    pub fn head_hasher(&self) -> HeadHasher {
        let mut id = blake3::Hasher::new();
        id.update(&self.encode()[..ID_OFFSET]);
        HeadHasher {
            header: *self,
            id,
            manifest: blake3::Hasher::new(),
            fed: 0,
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

    /// Check the stored manifest and the signature block against the header's id; returns
    /// the manifest's BLAKE3 (what signatures sign).
    pub fn verify_head(&self, stored: &[u8], signatures: &[u8]) -> Result<[u8; 32], BundleError> {
        let mut h = self.head_hasher();
        h.manifest(stored);
        h.verify(signatures)
    }
}

/// The two hashes of a head, computed as its manifest streams by (see
/// [`BundleHeader::head_hasher`]).
pub struct HeadHasher {
    header: BundleHeader,
    id: blake3::Hasher,
    manifest: blake3::Hasher,
    fed: u64,
}

impl HeadHasher {
    /// The next bytes of the manifest as stored.
    pub fn manifest(&mut self, bytes: &[u8]) {
        self.id.update(bytes);
        self.manifest.update(bytes);
        self.fed += bytes.len() as u64;
    }

    fn id(mut self, signatures: &[u8]) -> BundleId {
        self.id.update(signatures);
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.id.finalize().as_bytes()[..16]);
        id
    }

    /// With the signature block, check the head against the header's id; returns the
    /// manifest's BLAKE3 (what signatures sign).
    pub fn verify(self, signatures: &[u8]) -> Result<[u8; 32], BundleError> {
        let h = self.header;
        if self.fed != u64::from(h.manifest_len)
            || signatures.len() != usize::from(h.signatures_len)
        {
            return Err(BundleError::HeadChecksum);
        }
        let manifest = *self.manifest.finalize().as_bytes();
        if self.id(signatures) != h.id {
            return Err(BundleError::HeadChecksum);
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_truncation() {
        let h = BundleHeader::for_head(b"manifest", MANIFEST_ZSTD, 100, 12345, b"sigs");
        let enc = h.encode();
        assert_eq!(BundleHeader::decode(&enc), Ok(h));
        for n in 0..HEADER_LEN {
            assert!(
                BundleHeader::decode(&enc[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        assert_eq!(
            h.verify_head(b"manifest", b"sigs"),
            Ok(*blake3::hash(b"manifest").as_bytes())
        );
        // Any byte of the head, the signature block included, changes what the id names.
        for (m, s) in [
            (&b"manifesT"[..], &b"sigs"[..]),
            (b"manifest", b"sigS"),
            (b"manifest", b""),
            (b"manifestsigs", b""),
        ] {
            assert_eq!(h.verify_head(m, s), Err(BundleError::HeadChecksum));
        }
        let mut other = h;
        other.payload_len += 1;
        assert_eq!(
            other.verify_head(b"manifest", b"sigs"),
            Err(BundleError::HeadChecksum)
        );
    }

    #[test]
    fn rejects_oversized_manifest_and_unknown_version() {
        let mut enc = BundleHeader::for_head(b"m", MANIFEST_ZSTD, 1, 0, b"").encode();
        enc[12..16].copy_from_slice(&(MAX_MANIFEST_BYTES + 1).to_le_bytes());
        assert!(matches!(
            BundleHeader::decode(&enc),
            Err(BundleError::ManifestTooLarge(_))
        ));
        let mut enc = BundleHeader::for_head(b"m", MANIFEST_ZSTD, 1, 0, b"").encode();
        enc[4] = 9;
        assert_eq!(BundleHeader::decode(&enc), Err(BundleError::Version(9)));
        let plain = BundleHeader::for_head(b"m", MANIFEST_PLAIN, 2, 0, b"").encode();
        assert_eq!(BundleHeader::decode(&plain), Err(BundleError::PlainLength));
        assert_eq!(
            BundleHeader::decode(b"NLBUNDLE\x01\x00"),
            Err(BundleError::Version(1))
        );
    }
}
