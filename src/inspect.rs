//! Recognise a narlink file by its magic and describe it.

use std::io::{self, Read};

use narlink_protocol::bundle::BUNDLE_MAGIC;
use narlink_protocol::manifest::Encoding;
use serde::Serialize;

use crate::device::receive::{read_manifest, ReceiveError};
use crate::device::status::{decode_report, StatusView};
use crate::ground::pack::hex;
use crate::nar::NarHash;
use crate::progress::bytes;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Bundle(#[from] ReceiveError),
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
}

#[derive(Debug, Serialize)]
pub struct BundleView {
    pub bundle: String,
    pub sequence: u64,
    /// Key names of the signatures (not verified here: `inspect` trusts nothing).
    pub signed_by: Vec<String>,
    pub manifest_bytes: u32,
    pub payload_bytes: u64,
    pub base_digest: String,
    pub target_digest: String,
    pub roots: Vec<String>,
    pub paths: Vec<PathView>,
    pub payloads: usize,
    pub payloads_zstd: usize,
}

#[derive(Debug, Serialize)]
pub struct PathView {
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub chunks: usize,
    pub references: usize,
}

pub fn inspect(mut r: impl Read) -> Result<Inspection, InspectError> {
    let mut magic = [0u8; 8];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let mut r = io::Cursor::new(magic[..n].to_vec()).chain(r);
    if magic == BUNDLE_MAGIC {
        let (header, m, sigs) = read_manifest(&mut r)?;
        return Ok(Inspection::Bundle(BundleView {
            bundle: hex(&header.id()),
            sequence: m.sequence,
            signed_by: sigs.iter().map(|s| s.name.clone()).collect(),
            manifest_bytes: header.manifest_len,
            payload_bytes: header.payload_len,
            base_digest: hex(&m.base_digest[..16]),
            target_digest: hex(&m.target_digest[..16]),
            roots: m.roots.clone(),
            payloads: m.payloads.len(),
            payloads_zstd: m.payloads.iter().filter(|p| p.encoding == Encoding::Zstd).count(),
            paths: m
                .paths
                .iter()
                .map(|p| PathView {
                    path: p.store_path.clone(),
                    nar_hash: NarHash(p.nar_hash).to_string(),
                    nar_size: p.nar_size,
                    chunks: p.chunks.len(),
                    references: p.references.len(),
                })
                .collect(),
        }));
    }
    let mut all = Vec::new();
    r.take(1 << 20).read_to_end(&mut all)?;
    match decode_report(&all) {
        Ok(v) => Ok(Inspection::Status(v)),
        Err(e) if n == magic.len() && looks_like_status(&magic) => Err(InspectError::Status(e)),
        Err(_) => Err(InspectError::Unknown(hex(&magic[..n]))),
    }
}

fn looks_like_status(magic: &[u8]) -> bool {
    crate::device::status::is_report_magic(magic)
}

impl Inspection {
    pub fn render(&self) -> String {
        match self {
            Inspection::Bundle(b) => {
                let mut s = format!(
                    "bundle {} (sequence {}, signed by {})\nmanifest {} , payloads {} ({} chunks, {} zstd)\nplanned against state {}, leads to {}\nroots: {}\n{} new paths:",
                    b.bundle,
                    b.sequence,
                    if b.signed_by.is_empty() { "nobody".to_owned() } else { b.signed_by.join(", ") },
                    bytes(u64::from(b.manifest_bytes)),
                    bytes(b.payload_bytes),
                    b.payloads,
                    b.payloads_zstd,
                    b.base_digest,
                    b.target_digest,
                    b.roots.join(" "),
                    b.paths.len()
                );
                for p in &b.paths {
                    s.push_str(&format!("\n  {}  {}  {} chunks  {}", p.path, bytes(p.nar_size), p.chunks, p.nar_hash));
                }
                s
            }
            Inspection::Status(v) => v.render(),
        }
    }
}
