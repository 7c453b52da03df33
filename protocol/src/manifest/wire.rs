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
use crate::manifest::MANIFEST_VERSION;
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
        // The version comes first: check it before trusting the rest of the layout.
        let (version, _) = postcard::take_from_bytes::<u16>(bytes)
            .map_err(|e| ManifestError::Decode(e.to_string()))?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::Version { found: version });
        }
        let w: Wire =
            postcard::from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        // One manifest, one encoding: no over-long varints, no trailing bytes (the bundle id
        // is the hash of these bytes).
        if postcard::to_allocvec(&w).ok().as_deref() != Some(bytes) {
            return Err(ManifestError::Decode("not in canonical form".into()));
        }
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
        };
        m.check()?;
        Ok(m)
    }
}
