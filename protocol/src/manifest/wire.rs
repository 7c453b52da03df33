//! The manifest's wire form: what a bundle carries, in as few bytes as the device can still
//! decode without doubt.
//!
//! Against the storage form, it
//! * names every path by a number into one table: the on-board paths the manifest mentions
//!   (references, roots, delta sources), each by the shortest prefix of its packed hash that
//!   is unique on the device ([`PathSet::prefix_len`], at least 3 bytes), then the new paths;
//! * writes a new path as its packed hash (20 bytes) and name, without the store directory;
//! * lists a new chunk in a path's chunk list by its payload number instead of its id and
//!   length, which the payload already gives.
//!
//! A device decodes it against its own paths ([`resolve_in`]); a name that resolves to no path
//! or to several means the ground planned against another state, and the bundle is refused.

use serde::{Deserialize, Serialize};

use super::{ChunkParams, ChunkRef, CopyRun, Manifest, ManifestError, PathEntry, Payload};
use crate::pieces::Pieces;
use crate::storepath::{self, Lookup, PackedHash, PathSet, HASH_BYTES};

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u16,
    chunking: ChunkParams,
    base_digest: [u8; 16],
    sequence: u64,
    /// On-board paths, by packed-hash prefix (1 to 20 bytes).
    onboard: Vec<Vec<u8>>,
    /// Into the path table: `onboard`, then `paths`.
    roots: Vec<u32>,
    paths: Vec<WirePath>,
    payloads: Vec<Payload>,
    /// Into `onboard`.
    sources: Vec<u32>,
    pieces: Pieces,
}

#[derive(Serialize, Deserialize)]
struct WirePath {
    hash: PackedHash,
    name: String,
    nar_hash: [u8; 32],
    nar_size: u64,
    /// Into the path table.
    references: Vec<u32>,
    deriver: Option<String>,
    chunks: Vec<WireChunk>,
    copies: Vec<CopyRun>,
    rewrites: Vec<(u64, u16)>,
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
        let prefixes = onboard
            .iter()
            .map(|p| {
                let (hash, _) =
                    storepath::split(p).ok_or_else(|| ManifestError::Name((*p).to_owned()))?;
                Ok(hash[..device.prefix_len(&hash)].to_vec())
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
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
                    rewrites: p.rewrites.clone(),
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let wire = Wire {
            version: self.version,
            chunking: self.chunking,
            base_digest: self.base_digest,
            sequence: self.sequence,
            onboard: prefixes,
            roots: self.roots.iter().map(name_of).collect(),
            paths,
            payloads: self.payloads.clone(),
            sources: self.sources.iter().map(|s| index(at[s.as_str()])).collect(),
            pieces: self.pieces.clone(),
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
        let mut names = Vec::with_capacity(w.onboard.len() + w.paths.len());
        for prefix in &w.onboard {
            if prefix.is_empty() || prefix.len() > HASH_BYTES {
                return Err(ManifestError::Decode(
                    "on-board name of 0 or over 20 bytes".into(),
                ));
            }
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
                store_path: names[w.onboard.len() + j].clone(),
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
                rewrites: p.rewrites.clone(),
            });
        }
        let m = Manifest {
            version: w.version,
            chunking: w.chunking,
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
                        .get(..w.onboard.len())
                        .and_then(|o| o.get(i as usize))
                        .cloned()
                        .ok_or(ManifestError::Index("source"))
                })
                .collect::<Result<_, _>>()?,
            pieces: w.pieces,
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
                nar_hash: [3; 32],
                nar_size: 150,
                references: vec![GLIBC.into(), APP.into()],
                deriver: None,
                chunks: vec![new, held],
                copies: Vec::new(),
                rewrites: vec![(10, 0), (40, 1)],
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
}
