//! Recognise a narlink file by its magic and describe it.

use std::io::{self, Read};

use narlink_protocol::bundle::BUNDLE_MAGIC;
use narlink_protocol::manifest::{display_names, Encoding};
use narlink_protocol::signature::show_key_id;
use serde::Serialize;

use crate::head::{read_manifest, HeadError};
use crate::nar::NarHash;
use crate::progress::bytes;
use crate::status_view::{decode_report, StatusView};
use narlink_protocol::digest::hex;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Bundle(#[from] HeadError),
    #[error("status report: {0}")]
    Status(String),
    #[error("not a narlink file (magic {0})")]
    Unknown(String),
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inspection {
    Bundle(BundleView),
    Status(StatusView),
    Frames(FramesView),
    Inventory(InventoryView),
}

/// A file of frames: what bundles they belong to and how complete each would be.
#[derive(Debug, Serialize)]
pub struct FramesView {
    pub frames: u64,
    pub skipped_bytes: u64,
    pub bundles: Vec<FramesOfBundle>,
}

#[derive(Debug, Serialize)]
pub struct FramesOfBundle {
    pub bundle: String,
    pub bundle_len: u64,
    pub shard_size: u16,
    pub group_k: u16,
    pub parity: u16,
    pub groups: u32,
    pub frames: u64,
    pub parity_frames: u64,
    /// Groups with at least k distinct shards in this file.
    pub groups_decodable: u32,
}

#[derive(Debug, Serialize)]
pub struct InventoryView {
    pub paths: Vec<String>,
    pub state_digest: String,
}

#[derive(Debug, Serialize)]
pub struct BundleView {
    pub bundle: String,
    pub sequence: u64,
    /// Key ids of the signatures (not verified here: `inspect` trusts nothing).
    pub signed_by: Vec<String>,
    pub manifest_bytes: u32,
    pub payload_bytes: u64,
    pub base_digest: String,
    /// The commitment to the new paths' narHashes (which a bundle does not carry: the device
    /// computes them).
    pub nar_commitment: String,
    pub roots: Vec<String>,
    pub paths: Vec<PathView>,
    pub payloads: usize,
    /// Chunks coded as plain zstd (alone, or in a span with the chunks before them).
    pub payloads_zstd: usize,
    /// Chunks coded against on-board bytes: zstd deltas and patches.
    pub payloads_delta: usize,
    /// Of those, bsdiff-style patches (alone, in a span, or as a part of a solid group).
    pub payloads_patch: usize,
    /// Chunks in solid groups (patches or new bytes, coded as three streams across the group).
    pub payloads_solid: usize,
    /// Chunks coded together with the payload before them (no bytes of their own).
    pub payloads_joined: usize,
}

#[derive(Debug, Serialize)]
pub struct PathView {
    pub path: String,
    /// Known where the manifest is the ground's own; a bundle carries none.
    pub nar_hash: Option<String>,
    pub nar_size: u64,
    pub chunks: usize,
    pub references: usize,
}

pub fn inspect(r: impl Read) -> Result<Inspection, InspectError> {
    let (magic, mut r) = crate::peek::peek_magic(r)?;
    if magic.starts_with(&BUNDLE_MAGIC) || magic == *b"NLBUNDLE" {
        let head = read_manifest(&mut r, display_names)?;
        let (header, m) = (&head.header, &head.manifest);
        // Chunks by how they are coded: a joined chunk as the head of its part.
        let coded = |what: &dyn Fn(Encoding) -> bool| m.chunks_coded(|p| what(p.encoding));
        return Ok(Inspection::Bundle(BundleView {
            bundle: hex(&header.id()),
            sequence: m.sequence,
            signed_by: head.sigs.iter().map(|s| show_key_id(&s.key)).collect(),
            manifest_bytes: header.manifest_len,
            payload_bytes: header.payload_len,
            base_digest: hex(&m.base_digest),
            nar_commitment: hex(&m.nar_commitment),
            roots: m.roots.clone(),
            payloads: m.payloads.len(),
            payloads_zstd: coded(&|e| e == Encoding::Zstd),
            payloads_delta: m.chunks_coded(|p| p.reference.is_some()),
            // A part of a solid group with a reference is a patch against it.
            payloads_patch: m.chunks_coded(|p| {
                p.encoding == Encoding::Bsdiff
                    || (p.encoding.starts_part() && p.reference.is_some())
            }),
            payloads_solid: coded(&Encoding::starts_part),
            payloads_joined: m
                .payloads
                .iter()
                .filter(|p| p.encoding == Encoding::Joined)
                .count(),
            paths: m
                .paths
                .iter()
                .map(|p| PathView {
                    path: p.store_path.clone(),
                    nar_hash: p.nar_hash.map(|h| NarHash(h).to_string()),
                    nar_size: p.nar_size,
                    chunks: p.chunks.len()
                        + p.copies.iter().map(|r| r.count as usize).sum::<usize>(),
                    references: p.references.len(),
                })
                .collect(),
        }));
    }
    if magic == crate::inventory::MAGIC {
        let mut all = Vec::new();
        r.take(u64::from(crate::inventory::MAX_DECODED))
            .read_to_end(&mut all)?;
        let (payload, _) = crate::status_view::unseal(&all);
        let paths =
            crate::inventory::decode(payload).map_err(|e| InspectError::Status(e.to_string()))?;
        let digest = narlink_protocol::digest::state_digest(paths.iter().map(String::as_str));
        return Ok(Inspection::Inventory(InventoryView {
            state_digest: hex(&digest[..16]),
            paths,
        }));
    }
    if magic[..2] == narlink_protocol::frame::MAGIC {
        return frames(r);
    }
    let mut all = Vec::new();
    r.take(1 << 20).read_to_end(&mut all)?;
    match decode_report(&all) {
        Ok(v) => Ok(Inspection::Status(v)),
        Err(e) if crate::status_view::is_report_magic(&all) => Err(InspectError::Status(e)),
        Err(_) => Err(InspectError::Unknown(hex(&all[..all.len().min(8)]))),
    }
}

/// Count the frames of a stream per bundle, and which groups they would complete.
fn frames(mut r: impl Read) -> Result<Inspection, InspectError> {
    use narlink_protocol::frame::FrameSplitter;
    use narlink_protocol::params::Limits;
    use narlink_protocol::receiver::{GroupTracker, Outcome};
    use std::collections::BTreeMap;
    let mut splitter = FrameSplitter::new();
    let mut per: BTreeMap<[u8; 16], (FramesOfBundle, Option<GroupTracker>)> = BTreeMap::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    let mut eof = false;
    while !eof {
        let n = r.read(&mut buf)?;
        if n == 0 {
            splitter.finish();
            eof = true;
        } else {
            splitter.push(&buf[..n]);
        }
        while let Some(f) = splitter.next_frame() {
            total += 1;
            let h = *f.header();
            let e = per.entry(h.bundle_id).or_insert_with(|| {
                let tracker = GroupTracker::new(h.bundle_id, h.params, &Limits::default()).ok();
                let groups = h.params.validate().map_or(0, |l| l.group_count());
                (
                    FramesOfBundle {
                        bundle: hex(&h.bundle_id),
                        bundle_len: h.params.bundle_len,
                        shard_size: h.params.shard_size,
                        group_k: h.params.group_k,
                        parity: h.params.parity,
                        groups,
                        frames: 0,
                        parity_frames: 0,
                        groups_decodable: 0,
                    },
                    tracker,
                )
            });
            e.0.frames += 1;
            if f.as_ref().is_parity() {
                e.0.parity_frames += 1;
            }
            if let Some(t) = e.1.as_mut() {
                if t.handle_frame(&h) == Outcome::Decodable {
                    e.0.groups_decodable += 1;
                }
            }
        }
    }
    Ok(Inspection::Frames(FramesView {
        frames: total,
        skipped_bytes: splitter.stats().skipped_bytes,
        bundles: per.into_values().map(|(v, _)| v).collect(),
    }))
}

impl Inspection {
    pub fn render(&self) -> String {
        match self {
            Inspection::Bundle(b) => {
                let mut s = format!(
                    "bundle {} (sequence {}, signed by {})\nmanifest {}, payloads {} ({} chunks, {} zstd, {} deltas, {} in solid groups)\nplanned against state {}, NARs committed to {}\nroots: {}\n{} new paths:",
                    b.bundle,
                    b.sequence,
                    if b.signed_by.is_empty() { "nobody".to_owned() } else { format!("key {}", b.signed_by.join(", ")) },
                    bytes(u64::from(b.manifest_bytes)),
                    bytes(b.payload_bytes),
                    b.payloads,
                    b.payloads_zstd,
                    b.payloads_delta,
                    b.payloads_solid,
                    b.base_digest,
                    b.nar_commitment,
                    b.roots.join(" "),
                    b.paths.len()
                );
                for p in &b.paths {
                    s.push_str(&format!(
                        "\n  {}  {}  {} chunks{}",
                        p.path,
                        bytes(p.nar_size),
                        p.chunks,
                        p.nar_hash
                            .as_deref()
                            .map(|h| format!("  {h}"))
                            .unwrap_or_default()
                    ));
                }
                s
            }
            Inspection::Status(v) => v.render(),
            Inspection::Inventory(v) => {
                let mut s = format!(
                    "inventory of state {}: {} store paths",
                    v.state_digest,
                    v.paths.len()
                );
                for p in v.paths.iter().take(100) {
                    s.push_str(&format!("\n  {p}"));
                }
                s
            }
            Inspection::Frames(v) => {
                let mut s = format!(
                    "{} frames ({} bytes skipped between them)",
                    v.frames, v.skipped_bytes
                );
                for b in &v.bundles {
                    s.push_str(&format!(
                        "\n  bundle {}: {} frames ({} parity), {} B bundle in {} groups of k={} x {} B (P={}); {} groups decodable from this file",
                        b.bundle, b.frames, b.parity_frames, b.bundle_len, b.groups, b.group_k, b.shard_size, b.parity, b.groups_decodable
                    ));
                }
                s
            }
        }
    }
}
