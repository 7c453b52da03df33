//! The device's inventory: the names of every store path it holds, sent down when the
//! ground's mirror is found stale so the ground can rebuild it.
//!
//! ```text
//! offset size field
//!  0      8   magic "NLINVENT"
//!  8      2   format version, u16 LE (= 1)
//! 10     32   state digest of the listed paths (checked on decode)
//! 42      4   decoded length, u32 LE (<= MAX_DECODED)
//! 46      -   zstd of postcard(Vec<String>): store paths, in byte order
//! ```

use narlink_protocol::digest::state_digest;

pub const MAGIC: [u8; 8] = *b"NLINVENT";
const VERSION: u16 = 1;
const HEADER: usize = 46;
/// Cap on the decoded list: 64 MiB, about a million paths.
pub const MAX_DECODED: u32 = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    #[error("not a narlink inventory")]
    Magic,
    #[error("inventory format version {0} is not supported")]
    Version(u16),
    #[error("inventory claims {0} bytes decoded, over the cap")]
    TooLarge(u32),
    #[error("inventory does not decode: {0}")]
    Decode(String),
    #[error("inventory lists {0}, which is not a store path")]
    NotStorePath(String),
    #[error("inventory paths are not sorted and unique")]
    Unsorted,
    #[error("inventory digest does not match its paths: corrupted in transit")]
    Digest,
}

/// Encode the sorted, unique `paths`.
pub fn encode(paths: &[String]) -> Vec<u8> {
    let raw = postcard::to_allocvec(paths).unwrap_or_default();
    let z = zstd::bulk::compress(&raw, 19).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + z.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&state_digest(paths.iter().map(String::as_str)));
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&z);
    out
}

/// Decode and check an inventory; returns its paths, sorted.
pub fn decode(bytes: &[u8]) -> Result<Vec<String>, InventoryError> {
    if bytes.len() < HEADER || bytes[..8] != MAGIC {
        return Err(InventoryError::Magic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(InventoryError::Version(version));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[10..42]);
    let raw_len = u32::from_le_bytes([bytes[42], bytes[43], bytes[44], bytes[45]]);
    if raw_len > MAX_DECODED {
        return Err(InventoryError::TooLarge(raw_len));
    }
    let raw = zstd::bulk::decompress(&bytes[HEADER..], raw_len as usize)
        .map_err(|e| InventoryError::Decode(e.to_string()))?;
    if raw.len() != raw_len as usize {
        return Err(InventoryError::Decode(format!(
            "{} bytes decoded, header says {raw_len}",
            raw.len()
        )));
    }
    let paths: Vec<String> =
        postcard::from_bytes(&raw).map_err(|e| InventoryError::Decode(e.to_string()))?;
    if let Some(p) = paths
        .iter()
        .find(|p| crate::nixstore::as_store_path(p).as_deref() != Some(p.as_str()))
    {
        return Err(InventoryError::NotStorePath(p.chars().take(80).collect()));
    }
    if paths.windows(2).any(|w| w[0] >= w[1]) {
        return Err(InventoryError::Unsorted);
    }
    if state_digest(paths.iter().map(String::as_str)) != digest {
        return Err(InventoryError::Digest);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let paths = vec![
            "/nix/store/81xl50rg2nv1bisviqjjx3qsy2kvcrzi-dep-1".to_owned(),
            "/nix/store/jlw84i3j2gz04kgknz0mxmj1cgvbxws0-app-1".to_owned(),
        ];
        let b = encode(&paths);
        assert_eq!(decode(&b), Ok(paths));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode(&d).is_err(), "flip at {i} accepted");
        }
    }
}
