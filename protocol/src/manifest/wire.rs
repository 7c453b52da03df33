//! The manifest's wire form: what a bundle carries, in as few bytes as the device can still
//! decode without doubt.
//!
//! Against the storage form, it
//! * names every path by a number into one table: the on-board paths the manifest mentions
//!   (references, roots, delta sources), each by the shortest prefix of its packed hash that
//!   is unique on the device ([`PathSet::prefix_len`], at least 3 bytes; all of one length,
//!   the longest that any of them needs), then the new paths;
//! * writes a new path as its packed hash (20 bytes) and name, without the store directory;
//! * lists a new chunk in a path's chunk list by its payload number instead of its id and
//!   length, which the payload already gives;
//! * carries a narHash per path only where the ground chose to (see [`PathEntry::nar_hash`]),
//!   and always the bundle's [`nar_commitment`](super::nar_commitment);
//! * names the standard chunking parameters in one byte;
//! * packs each hash rewrite's index into the low bits of its gap.
//!
//! A device decodes it against its own paths ([`resolve_in`]); a name that resolves to no path
//! or to several means the ground planned against another state, and the bundle is refused.

use serde::{Deserialize, Serialize};

use super::{
    ChunkParams, ChunkRef, CopyRun, Manifest, ManifestError, PathEntry, Payload, Rewrites,
    STANDARD_CHUNKING,
};
use crate::pieces::Pieces;
use crate::storepath::{self, Lookup, PackedHash, PathSet, HASH_BYTES};

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u16,
    /// `None`: [`STANDARD_CHUNKING`] (which is then never written out).
    chunking: Option<ChunkParams>,
    base_digest: [u8; 16],
    sequence: u64,
    /// On-board paths, by packed-hash prefix: all prefixes one length (the longest any of
    /// them needs: 1 to 20 bytes; 0 when there are none), one after the other.
    onboard: (u8, Vec<u8>),
    /// Into the path table: `onboard`, then `paths`.
    roots: Vec<u32>,
    paths: Vec<WirePath>,
    payloads: Vec<Payload>,
    /// Into `onboard`.
    sources: Vec<u32>,
    pieces: Pieces,
    nar_commitment: [u8; 16],
}

#[derive(Serialize, Deserialize)]
struct WirePath {
    hash: PackedHash,
    name: String,
    nar_hash: Option<[u8; 32]>,
    nar_size: u64,
    /// Into the path table.
    references: Vec<u32>,
    deriver: Option<String>,
    chunks: Vec<WireChunk>,
    copies: Vec<CopyRun>,
    rewrites: WireRewrites,
}

#[derive(Serialize, Deserialize)]
enum WireRewrites {
    /// Each rewrite's gap shifted left by [`index_bits`] of the path, its index in the low
    /// bits.
    At(Vec<u64>),
    /// How many indices, and the indices, [`scan_bits`] each, packed least significant bit
    /// first (the last byte's unused bits zero).
    Scan(u32, Vec<u8>),
}

/// Bits that hold a rewrite's index into a hash list of the path itself and `references`
/// others (at most `references` + 1 entries, indices up to `references`).
fn index_bits(references: usize) -> u32 {
    usize::BITS - references.leading_zeros()
}

fn pack_rewrites(rewrites: &[(u64, u16)], references: usize) -> Result<Vec<u64>, ManifestError> {
    let bits = index_bits(references);
    rewrites
        .iter()
        .map(|&(gap, index)| {
            gap.checked_shl(bits)
                .filter(|g| g >> bits == gap)
                .map(|g| g | u64::from(index))
                .ok_or(ManifestError::Decode("hash rewrite gap too large".into()))
        })
        .collect()
}

/// Inverse of [`pack_rewrites`]; the bounds of each index are [`Manifest::check`]'s.
fn unpack_rewrites(packed: &[u64], references: usize) -> Vec<(u64, u16)> {
    let bits = index_bits(references);
    let mask = (1u64 << bits) - 1;
    packed
        .iter()
        .map(|&p| (p >> bits, u16::try_from(p & mask).unwrap_or(u16::MAX)))
        .collect()
}

/// Bits per index in [`WireRewrites::Scan`]: at least one, so that the count of indices is
/// bounded by the bytes that carry them.
fn scan_bits(references: usize) -> u32 {
    index_bits(references).max(1)
}

fn pack_indices(indices: &[u16], references: usize) -> WireRewrites {
    let bits = scan_bits(references);
    let mut out = vec![0u8; (indices.len() * bits as usize).div_ceil(8)];
    for (n, &i) in indices.iter().enumerate() {
        for b in 0..bits as usize {
            if i >> b & 1 == 1 {
                let at = n * bits as usize + b;
                out[at / 8] |= 1 << (at % 8);
            }
        }
    }
    WireRewrites::Scan(indices.len() as u32, out)
}

/// Inverse of [`pack_indices`]: `None` unless `bytes` are exactly `count` indices, unused
/// bits zero.
fn unpack_indices(count: u32, bytes: &[u8], references: usize) -> Option<Vec<u16>> {
    let bits = scan_bits(references) as usize;
    let total = (count as usize).checked_mul(bits)?;
    if bytes.len() != total.div_ceil(8) || (total % 8 != 0 && bytes.last()? >> (total % 8) != 0) {
        return None;
    }
    let bit = |at: usize| u16::from(bytes[at / 8] >> (at % 8) & 1);
    Some(
        (0..count as usize)
            .map(|n| (0..bits).map(|b| bit(n * bits + b) << b).sum())
            .collect(),
    )
}

#[derive(Serialize, Deserialize)]
enum WireChunk {
    /// The chunk that payload number `.0` brings.
    New(u32),
    /// A chunk the device holds.
    Held(ChunkRef),
}

/// Resolve wire names against the device's set of paths.
pub fn resolve_in(set: &PathSet) -> impl FnMut(&[u8]) -> Result<String, ManifestError> + '_ {
    |prefix| match set.lookup(prefix) {
        Lookup::Unique(p) => Ok(p.to_owned()),
        other => Err(ManifestError::Unresolved {
            prefix: storepath::unpack(prefix),
            ambiguous: other == Lookup::Ambiguous,
        }),
    }
}

/// Names for showing a manifest without a device: `/nix/store/<prefix>…`.
pub fn display_names(prefix: &[u8]) -> Result<String, ManifestError> {
    Ok(format!(
        "{}/{}…",
        storepath::STORE_DIR,
        storepath::unpack(prefix)
    ))
}

fn index(i: usize) -> u32 {
    // A manifest is capped at MAX_MANIFEST_BYTES: it cannot name 2^32 paths or payloads.
    i as u32
}

impl Manifest {
    /// The wire form. `device` holds the paths the device will have when it decodes it (the
    /// state planned against, and this manifest's new paths): on-board names are made unique
    /// among them.
    pub fn to_wire(&self, device: &PathSet) -> Result<Vec<u8>, ManifestError> {
        let new: std::collections::HashMap<&str, usize> = self
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.store_path.as_str(), i))
            .collect();
        let mut onboard: Vec<&str> = Vec::new();
        let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mentioned = self
            .roots
            .iter()
            .chain(self.paths.iter().flat_map(|p| &p.references))
            .chain(&self.sources);
        for p in mentioned {
            if !new.contains_key(p.as_str()) && !at.contains_key(p.as_str()) {
                at.insert(p, onboard.len());
                onboard.push(p);
            }
        }
        let name_of = |p: &String| -> u32 {
            index(match new.get(p.as_str()) {
                Some(&j) => onboard.len() + j,
                None => at[p.as_str()],
            })
        };
        let hashes = onboard
            .iter()
            .map(|p| {
                storepath::split(p)
                    .map(|(hash, _)| hash)
                    .ok_or_else(|| ManifestError::Name((*p).to_owned()))
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let prefix_len = hashes
            .iter()
            .map(|h| device.prefix_len(h))
            .max()
            .unwrap_or(0);
        let prefixes = (
            prefix_len as u8,
            hashes
                .iter()
                .flat_map(|h| &h[..prefix_len])
                .copied()
                .collect(),
        );
        let payload_of: std::collections::HashMap<_, _> = self
            .payloads
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.chunk, p.raw_len), index(i)))
            .collect();
        let paths = self
            .paths
            .iter()
            .map(|p| {
                let (hash, name) = storepath::split(&p.store_path)
                    .ok_or_else(|| ManifestError::Name(p.store_path.clone()))?;
                Ok(WirePath {
                    hash,
                    name: name.to_owned(),
                    nar_hash: p.nar_hash,
                    nar_size: p.nar_size,
                    references: p.references.iter().map(name_of).collect(),
                    deriver: p.deriver.clone(),
                    chunks: p
                        .chunks
                        .iter()
                        .map(|c| match payload_of.get(&(c.id, c.len)) {
                            Some(&i) => WireChunk::New(i),
                            None => WireChunk::Held(*c),
                        })
                        .collect(),
                    copies: p.copies.clone(),
                    rewrites: match &p.rewrites {
                        Rewrites::At(gaps) => {
                            WireRewrites::At(pack_rewrites(gaps, p.references.len())?)
                        }
                        Rewrites::Scan(indices) => pack_indices(indices, p.references.len()),
                    },
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let wire = Wire {
            version: self.version,
            chunking: (self.chunking != STANDARD_CHUNKING).then_some(self.chunking),
            base_digest: self.base_digest,
            sequence: self.sequence,
            onboard: prefixes,
            roots: self.roots.iter().map(name_of).collect(),
            paths,
            payloads: self.payloads.clone(),
            sources: self.sources.iter().map(|s| index(at[s.as_str()])).collect(),
            pieces: self.pieces.clone(),
            nar_commitment: self.nar_commitment,
        };
        // Serializing plain structs into a Vec cannot fail.
        Ok(postcard::to_allocvec(&wire).unwrap_or_default())
    }

    /// Decode the wire form, naming on-board paths with `resolve` (see [`resolve_in`] and
    /// [`display_names`]), and check internal consistency. Not authenticity: the bundle
    /// container checks the manifest's BLAKE3, and signatures come on top of that.
    pub fn from_wire(
        bytes: &[u8],
        mut resolve: impl FnMut(&[u8]) -> Result<String, ManifestError>,
    ) -> Result<Manifest, ManifestError> {
        let w: Wire = super::decode_canonical(bytes)?;
        if w.chunking == Some(STANDARD_CHUNKING) {
            // One manifest, one encoding: the standard parameters are only ever implied.
            return Err(ManifestError::Decode("not in canonical form".into()));
        }
        let (prefix_len, ref prefixes) = w.onboard;
        let prefix_len = usize::from(prefix_len);
        if prefix_len > HASH_BYTES
            || (prefix_len == 0) != prefixes.is_empty()
            || prefixes.len() % prefix_len.max(1) != 0
        {
            return Err(ManifestError::Decode(
                "on-board names of 0 or over 20 bytes, or not a whole number of them".into(),
            ));
        }
        let onboard = prefixes.len() / prefix_len.max(1);
        let mut names = Vec::with_capacity(onboard + w.paths.len());
        for prefix in prefixes.chunks(prefix_len.max(1)) {
            names.push(resolve(prefix)?);
        }
        for p in &w.paths {
            if !storepath::valid_name(&p.name) {
                return Err(ManifestError::Name(p.name.clone()));
            }
            names.push(storepath::join(&p.hash, &p.name));
        }
        let name = |i: &u32, what| {
            names
                .get(*i as usize)
                .cloned()
                .ok_or(ManifestError::Index(what))
        };
        let new_ids: std::collections::HashSet<_> =
            w.payloads.iter().map(|p| (p.chunk, p.raw_len)).collect();
        let mut paths = Vec::with_capacity(w.paths.len());
        for (j, p) in w.paths.iter().enumerate() {
            let chunks = p
                .chunks
                .iter()
                .map(|c| match c {
                    WireChunk::New(i) => w
                        .payloads
                        .get(*i as usize)
                        .map(|q| ChunkRef {
                            id: q.chunk,
                            len: q.raw_len,
                        })
                        .ok_or(ManifestError::Index("payload")),
                    // A chunk some payload brings is always named by that payload.
                    WireChunk::Held(c) if new_ids.contains(&(c.id, c.len)) => {
                        Err(ManifestError::Decode("not in canonical form".into()))
                    }
                    WireChunk::Held(c) => Ok(*c),
                })
                .collect::<Result<Vec<_>, _>>()?;
            paths.push(PathEntry {
                store_path: names[onboard + j].clone(),
                nar_hash: p.nar_hash,
                nar_size: p.nar_size,
                references: p
                    .references
                    .iter()
                    .map(|i| name(i, "reference"))
                    .collect::<Result<_, _>>()?,
                deriver: p.deriver.clone(),
                chunks,
                copies: p.copies.clone(),
                rewrites: match &p.rewrites {
                    WireRewrites::At(packed) => {
                        Rewrites::At(unpack_rewrites(packed, p.references.len()))
                    }
                    WireRewrites::Scan(count, bytes) => Rewrites::Scan(
                        unpack_indices(*count, bytes, p.references.len()).ok_or_else(|| {
                            ManifestError::Decode(
                                "hash rewrite indices not in canonical form".into(),
                            )
                        })?,
                    ),
                },
            });
        }
        let m = Manifest {
            version: w.version,
            chunking: w.chunking.unwrap_or(STANDARD_CHUNKING),
            base_digest: w.base_digest,
            sequence: w.sequence,
            roots: w
                .roots
                .iter()
                .map(|i| name(i, "root"))
                .collect::<Result<_, _>>()?,
            paths,
            payloads: w.payloads,
            sources: w
                .sources
                .iter()
                .map(|&i| {
                    names
                        .get(..onboard)
                        .and_then(|o| o.get(i as usize))
                        .cloned()
                        .ok_or(ManifestError::Index("source"))
                })
                .collect::<Result<_, _>>()?,
            pieces: w.pieces,
            nar_commitment: w.nar_commitment,
        };
        m.check()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Encoding, MANIFEST_VERSION};

    const GLIBC: &str = "/nix/store/4gzm0877y0a50n95y4i8ky3m1fyg8x55-glibc-2.40";
    const OLD_APP: &str = "/nix/store/7fx6vp3nbn2hhm2lfbxm0h2kwv224nrn-app-1";
    const APP: &str = "/nix/store/9a3d09kkwh0f8z933bg538z07zm73c7d-app-2";

    fn manifest() -> Manifest {
        let new = ChunkRef {
            id: [1; 16],
            len: 100,
        };
        let held = ChunkRef {
            id: [2; 16],
            len: 50,
        };
        Manifest {
            version: MANIFEST_VERSION,
            chunking: ChunkParams {
                algorithm: 3,
                min_size: 16 << 10,
                avg_size: 64 << 10,
                max_size: 256 << 10,
            },
            base_digest: [9; 16],
            sequence: 4,
            roots: vec![APP.into()],
            paths: vec![PathEntry {
                store_path: APP.into(),
                nar_hash: Some([3; 32]),
                nar_size: 150,
                references: vec![GLIBC.into(), APP.into()],
                deriver: None,
                chunks: vec![new, held],
                copies: Vec::new(),
                rewrites: Rewrites::At(vec![(10, 0), (40, 1)]),
            }],
            payloads: vec![Payload {
                chunk: new.id,
                raw_len: 100,
                encoded_len: 20,
                encoding: Encoding::ZstdRef,
                reference: Some(super::super::Reference {
                    source: 0,
                    offset: 0,
                    len: 100,
                }),
            }],
            sources: vec![OLD_APP.into()],
            pieces: Default::default(),
            nar_commitment: crate::manifest::nar_commitment(&[[3; 32]]),
        }
    }

    #[test]
    fn names_resolve_on_the_device_and_nowhere_else() {
        let m = manifest();
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = m.to_wire(&device).unwrap();
        // The storage form spells every path out; the wire form names two on-board paths in
        // 3 bytes each and the new one in 20 + its name.
        assert!(wire.len() + 100 < m.to_bytes().len(), "{}", wire.len());
        assert_eq!(
            Manifest::from_wire(&wire, resolve_in(&device)),
            Ok(m.clone())
        );

        // A device without the old app: refused, naming what it lacks.
        let lacking = PathSet::new([GLIBC]);
        let err = Manifest::from_wire(&wire, resolve_in(&lacking)).unwrap_err();
        assert_eq!(
            err,
            ManifestError::Unresolved {
                prefix: "7fx6".into(),
                ambiguous: false
            }
        );
        assert!(err
            .to_string()
            .contains("/nix/store/7fx6…, which this device does not hold"));

        // A device holding another path that shares the 3-byte prefix: ambiguous, refused.
        let crowded = PathSet::new([
            GLIBC,
            OLD_APP,
            "/nix/store/7fx6vzzzzzzzzzzzzzzzzzzzzzzzzzzz-other",
        ]);
        assert!(matches!(
            Manifest::from_wire(&wire, resolve_in(&crowded)),
            Err(ManifestError::Unresolved {
                ambiguous: true,
                ..
            })
        ));
    }

    #[test]
    fn new_chunks_are_named_by_payload_and_only_so() {
        let m = manifest();
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let mut wire = m.to_wire(&device).unwrap();
        let w: Wire = postcard::from_bytes(&wire).unwrap();
        assert!(matches!(
            w.paths[0].chunks[..],
            [WireChunk::New(0), WireChunk::Held(_)]
        ));
        // Spelling the new chunk out instead is not canonical.
        let mut w = w;
        w.paths[0].chunks[0] = WireChunk::Held(m.paths[0].chunks[0]);
        wire = postcard::to_allocvec(&w).unwrap();
        assert!(matches!(
            Manifest::from_wire(&wire, resolve_in(&device)),
            Err(ManifestError::Decode(_))
        ));
        // A payload number out of range.
        w.paths[0].chunks[0] = WireChunk::New(1);
        wire = postcard::to_allocvec(&w).unwrap();
        assert_eq!(
            Manifest::from_wire(&wire, resolve_in(&device)),
            Err(ManifestError::Index("payload"))
        );
    }

    #[test]
    fn joined_payloads_form_spans_behind_a_head() {
        let mut m = manifest();
        let joined = Payload {
            chunk: [7; 16],
            raw_len: 50,
            encoded_len: 0,
            encoding: Encoding::Joined,
            reference: None,
        };
        m.payloads.push(joined);
        m.paths[0].chunks[1] = ChunkRef {
            id: [7; 16],
            len: 50,
        };
        assert_eq!(m.check(), Ok(()));
        assert_eq!(m.spans().collect::<Vec<_>>(), vec![0..2]);
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = m.to_wire(&device).unwrap();
        assert_eq!(
            Manifest::from_wire(&wire, resolve_in(&device)),
            Ok(m.clone())
        );
        // A joined payload must follow a head and carry no bytes of its own.
        let mut first = m.clone();
        first.payloads.swap(0, 1);
        assert!(first.check().is_err());
        let mut with_bytes = m.clone();
        with_bytes.payloads[1].encoded_len = 1;
        assert!(with_bytes.check().is_err());
    }

    #[test]
    fn standard_chunking_is_implied_and_only_so() {
        let m = manifest();
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = m.to_wire(&device).unwrap();
        let mut w: Wire = postcard::from_bytes(&wire).unwrap();
        assert_eq!(w.chunking, None);
        // Spelt out, the standard parameters are a second encoding of one manifest: refused.
        w.chunking = Some(STANDARD_CHUNKING);
        let spelt = postcard::to_allocvec(&w).unwrap();
        assert_eq!(spelt.len(), wire.len() + 10);
        assert!(matches!(
            Manifest::from_wire(&spelt, resolve_in(&device)),
            Err(ManifestError::Decode(_))
        ));
        // Other parameters travel and come back.
        let mut other = m.clone();
        other.chunking.avg_size = 32 << 10;
        let wire = other.to_wire(&device).unwrap();
        assert_eq!(
            Manifest::from_wire(&wire, resolve_in(&device)).map(|d| d.chunking),
            Ok(other.chunking)
        );
    }

    #[test]
    fn rewrite_indices_ride_in_the_gaps_low_bits() {
        assert_eq!(
            (0..6).map(index_bits).collect::<Vec<_>>(),
            [0, 1, 2, 2, 3, 3]
        );
        // Two references: indices 0..=2 in 2 bits.
        let rewrites = vec![(10, 0), (40, 2), (1 << 40, 1)];
        let packed = pack_rewrites(&rewrites, 2).unwrap();
        assert_eq!(packed[..2], [10 << 2, (40 << 2) | 2]);
        assert_eq!(unpack_rewrites(&packed, 2), rewrites);
        // No references: the gap alone.
        assert_eq!(pack_rewrites(&[(7, 0)], 0).unwrap(), [7]);
        // A gap that does not fit beside its index is refused, not truncated.
        assert!(pack_rewrites(&[(u64::MAX >> 1, 0)], 2).is_err());
        // An index the bits can hold but the hash list does not have: `check` refuses it.
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = manifest().to_wire(&device).unwrap();
        let mut w: Wire = postcard::from_bytes(&wire).unwrap();
        // APP's hash list: itself and GLIBC (its self-reference is skipped): indices 0..=1 of
        // the 2 bits that its two references give room for.
        let WireRewrites::At(packed) = &mut w.paths[0].rewrites else {
            panic!("explicit rewrites")
        };
        packed[1] |= 3;
        let bad = postcard::to_allocvec(&w).unwrap();
        assert!(matches!(
            Manifest::from_wire(&bad, resolve_in(&device)),
            Err(ManifestError::Rewrites(_))
        ));
    }

    #[test]
    fn onboard_names_share_one_length() {
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = manifest().to_wire(&device).unwrap();
        let w: Wire = postcard::from_bytes(&wire).unwrap();
        assert_eq!(w.onboard.0, 3);
        assert_eq!(w.onboard.1.len(), 6);
        // A device where glibc's name needs more than 3 bytes: both are sent that long.
        let near = "/nix/store/4gzm0877yzzzzzzzzzzzzzzzzzzzzzzz-near";
        let crowded = PathSet::new([GLIBC, OLD_APP, APP, near]);
        let wire = manifest().to_wire(&crowded).unwrap();
        let w: Wire = postcard::from_bytes(&wire).unwrap();
        assert!(w.onboard.0 > 3, "{}", w.onboard.0);
        assert_eq!(w.onboard.1.len(), 2 * usize::from(w.onboard.0));
        assert_eq!(
            Manifest::from_wire(&wire, resolve_in(&crowded)),
            Ok(manifest())
        );
        // Names that are not a whole number of prefixes, a length of 0 or over 20: refused.
        for onboard in [
            (3, vec![1; 7]),
            (0, vec![1; 3]),
            (21, vec![1; 21]),
            (1, vec![]),
        ] {
            let mut bad: Wire = postcard::from_bytes(&wire).unwrap();
            bad.onboard = onboard.clone();
            let bytes = postcard::to_allocvec(&bad).unwrap();
            assert!(
                matches!(
                    Manifest::from_wire(&bytes, resolve_in(&crowded)),
                    Err(ManifestError::Decode(_))
                ),
                "{onboard:?}"
            );
        }
    }

    #[test]
    fn scanned_rewrites_carry_only_their_indices() {
        // Two references: 2 bits per index; none: 1 bit (so the count is bounded by bytes).
        for (indices, references, bytes) in [
            (vec![0u16, 2, 1, 2, 0], 2, vec![0b10_01_10_00, 0b00]),
            (vec![0, 0, 0], 0, vec![0]),
            (vec![], 5, vec![]),
        ] {
            let WireRewrites::Scan(count, packed) = pack_indices(&indices, references) else {
                unreachable!()
            };
            assert_eq!((count as usize, &packed), (indices.len(), &bytes));
            assert_eq!(
                unpack_indices(count, &packed, references),
                Some(indices.clone())
            );
        }
        // Too few or too many bytes for the count, or stray bits past the last index.
        assert_eq!(unpack_indices(5, &[0], 2), None);
        assert_eq!(unpack_indices(3, &[0, 0], 2), None);
        assert_eq!(unpack_indices(3, &[0b0100_0000], 2), None);
        assert_eq!(unpack_indices(u32::MAX, &[0; 8], 2), None);
        // Through the wire and back.
        let mut m = manifest();
        m.paths[0].rewrites = Rewrites::Scan(vec![1, 0, 1]);
        // A bundle may leave its narHashes to the commitment.
        m.paths[0].nar_hash = None;
        let device = PathSet::new([GLIBC, OLD_APP, APP]);
        let wire = m.to_wire(&device).unwrap();
        assert_eq!(Manifest::from_wire(&wire, resolve_in(&device)), Ok(m));
    }
}
