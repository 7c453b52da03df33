//! One check per fuzz target: feed arbitrary bytes to library code and assert what must hold.
//!
//! Every check must return normally on any input; a panic is a bug in the code under test (or in
//! the check). Where an encoder exists, decoding then re-encoding must give the input back.
//!
//! This file is compiled twice: as the `narlink_fuzz_checks` library the fuzz targets call
//! (`fuzz/src/lib.rs`), and as a module of the root package's corpus replay test
//! (`tests/fuzz_corpus.rs`, via `#[path]`). So it may only use crates the root package depends
//! on: `narlink`, `narlink_protocol`, `blake3`, `tempfile`, `zstd`.
//!
//! Checksums (frame and status CRC-32C, the bundle id: the manifest's BLAKE3) would stop most mutations
//! at the first gate, so the checks that meet one run twice: on the input as it is, and on a
//! copy whose checksum was recomputed to match, which lets the fuzzer reach the code behind it.

use std::collections::{BTreeMap, BTreeSet};

use narlink::nar::{self, NarError, NarEvent, NarHash, NarParser};
use narlink_protocol::bundle::{self, BundleHeader};
use narlink_protocol::fec::{self, GroupShape};
use narlink_protocol::frame::{self, Frame, FrameError, FrameHeader, FrameSplitter};
use narlink_protocol::layout::GroupLayout;
use narlink_protocol::manifest::{resolve_in, Manifest, ManifestError};
use narlink_protocol::params::{CodecId, Limits, LinkParams};
use narlink_protocol::receiver::{GroupTracker, Outcome};
use narlink_protocol::status::{self, NeedRun, Phase, StatusReport};
use narlink_protocol::storepath::{self, PathSet};

/// A target's check: returns on any input, panics on a bug.
pub type Check = fn(&[u8]);

/// Every check, by target name (also the name of its directory under `fuzz/seeds/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("frame", frame),
    ("frame_stream", frame_stream),
    ("status", status),
    ("manifest", manifest),
    ("bundle", bundle),
    ("nar", nar),
    ("group_decode", group_decode),
    ("receiver", receiver),
    ("patch", patch),
    ("payload", payload),
    ("solid", solid),
    ("announce", announce),
    ("link", link),
    ("seal", seal),
];

/// Reads fuzzer-chosen values off the front of the input; past the end, every value is 0.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let t = self.take(2);
        b[..t.len()].copy_from_slice(t);
        u16::from_le_bytes(b)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let t = self.take(4);
        b[..t.len()].copy_from_slice(t);
        u32::from_le_bytes(b)
    }
}

/// A copy of `data` whose last four bytes are the CRC-32C of the bytes before them.
fn with_fixed_crc(data: &[u8]) -> Vec<u8> {
    let mut fixed = data.to_vec();
    let body = fixed.len() - 4;
    let crc = frame::crc32c(&fixed[..body]);
    fixed[body..].copy_from_slice(&crc.to_le_bytes());
    fixed
}

// ---------------------------------------------------------------------------------------------
// frame

/// `Frame::decode` of the whole input; on success the frame re-encodes to the input.
pub fn frame(data: &[u8]) {
    let _ = frame_round_trip(data);
    if data.len() >= frame::OVERHEAD {
        let fixed = with_fixed_crc(data);
        if let Err(e) = frame_round_trip(&fixed) {
            assert!(
                !matches!(e, FrameError::Checksum { .. }),
                "checksum error on a frame whose checksum was just computed: {e}"
            );
        }
    }
}

fn frame_round_trip(bytes: &[u8]) -> Result<(), FrameError> {
    let f = Frame::decode(bytes)?;
    let mut out = Vec::new();
    f.encode(&mut out);
    assert_eq!(out, bytes, "decoded frame does not re-encode to its input");
    assert_eq!(f.encoded_len(), bytes.len());
    assert_eq!(f.payload().len(), usize::from(f.header().params.shard_size));
    assert_eq!(f.header().validate(), Ok(f.group_k()));
    assert_eq!(f.is_parity(), f.header().shard >= f.group_k());
    let owned = f.to_frame();
    assert_eq!(owned.as_ref(), f);
    let mut again = Vec::new();
    owned.encode(&mut again);
    assert_eq!(again, bytes);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// frame_stream

/// Input: `split: u16`, `max_shard: u16` (0: no cap), then the stream.
///
/// The stream goes through a [`FrameSplitter`] three ways — in one push, in two pushes cut at
/// `split` (modulo the stream length + 1), and (for short streams) one byte at a time — and
/// every way must give the same frames and counters. Each frame must re-encode to bytes that
/// occur in the stream, in order; the buffer must stay under one frame; and after `finish`
/// every byte must be accounted for as a frame or as skipped.
pub fn frame_stream(data: &[u8]) {
    let mut input = Input::new(data);
    let split = usize::from(input.u16());
    let max_shard = input.u16();
    let stream = input.rest();
    let split = split % (stream.len() + 1);
    let new_splitter = || {
        if max_shard == 0 {
            FrameSplitter::new()
        } else {
            FrameSplitter::with_max_shard_size(max_shard)
        }
    };
    let cap = if max_shard == 0 { u16::MAX } else { max_shard };
    let run = |pieces: &mut dyn Iterator<Item = &[u8]>| {
        let mut s = new_splitter();
        let mut frames = Vec::new();
        for piece in pieces {
            s.push(piece);
            frames.extend(std::iter::from_fn(|| s.next_frame()));
            assert!(
                s.buffered() < frame::OVERHEAD + usize::from(cap),
                "splitter holds {} bytes after draining, more than one frame",
                s.buffered()
            );
        }
        s.finish();
        frames.extend(std::iter::from_fn(|| s.next_frame()));
        assert_eq!(s.buffered(), 0, "bytes left in the splitter after finish");
        (frames, s.stats())
    };

    let (frames, stats) = run(&mut std::iter::once(stream));
    assert_eq!(stats.frames, frames.len() as u64);
    let mut at = 0;
    let mut frame_bytes = 0u64;
    for f in &frames {
        assert!(usize::from(f.header().params.shard_size) <= usize::from(cap));
        let mut enc = Vec::new();
        f.encode(&mut enc);
        let decoded = Frame::decode(&enc).expect("a frame from the splitter re-decodes");
        assert_eq!(decoded, f.as_ref());
        let pos = stream[at..]
            .windows(enc.len())
            .position(|w| w == enc.as_slice())
            .expect("a frame from the splitter is not in its input");
        at += pos + enc.len();
        frame_bytes += enc.len() as u64;
    }
    assert_eq!(
        frame_bytes + stats.skipped_bytes,
        stream.len() as u64,
        "every byte of the stream is a frame or skipped"
    );

    let (split_frames, split_stats) = run(&mut [&stream[..split], &stream[split..]].into_iter());
    assert_eq!(
        split_frames, frames,
        "frames depend on where the stream was cut ({split})"
    );
    assert_eq!(
        split_stats, stats,
        "counters depend on where the stream was cut ({split})"
    );

    if stream.len() <= 512 {
        let (byte_frames, byte_stats) = run(&mut stream.chunks(1));
        assert_eq!(
            byte_frames, frames,
            "frames differ when fed one byte at a time"
        );
        assert_eq!(
            byte_stats, stats,
            "counters differ when fed one byte at a time"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// status

/// `StatusReport::decode` of the whole input; on success the report re-encodes to the input,
/// its runs are canonical, and truncating it to any budget keeps a prefix that fits.
pub fn status(data: &[u8]) {
    status_round_trip(data);
    if data.len() >= status::FIXED_LEN && data.len() <= status::MAX_LEN {
        let fixed = with_fixed_crc(data);
        if let Err(status::StatusError::Checksum) = StatusReport::decode(&fixed) {
            panic!("checksum error on a report whose checksum was just computed");
        }
        status_round_trip(&fixed);
    }
}

fn status_round_trip(bytes: &[u8]) {
    let Ok(report) = StatusReport::decode(bytes) else {
        return;
    };
    let mut out = Vec::new();
    report.encode(&mut out);
    assert_eq!(report.encoded_len(), out.len());
    if bytes[2] == status::VERSION {
        assert_eq!(
            out, bytes,
            "decoded status report does not re-encode to its input"
        );
    } else {
        // An older version re-encodes as this one, saying the same.
        assert_eq!(StatusReport::decode(&out).as_ref(), Ok(&report));
    }
    check_runs(report.runs());
    assert_eq!(
        report.listed_groups(),
        report.runs().iter().map(|r| u64::from(r.len)).sum::<u64>()
    );

    let least = report.base_len();
    let budgets = [
        least,
        least + 1,
        least + 2,
        (least + out.len()) / 2,
        out.len().saturating_sub(1),
        out.len(),
    ];
    for budget in budgets {
        let budget = budget.max(least);
        let mut t = report.clone();
        assert!(
            t.truncate_to(budget),
            "a report always fits {budget} >= {least} bytes (its header and device section)"
        );
        assert!(t.encoded_len() <= budget);
        if report.encoded_len() <= budget {
            assert_eq!(
                t, report,
                "truncating to a budget it fits changed the report"
            );
            continue;
        }
        assert!(t.is_truncated());
        check_runs(t.runs());
        let kept = t.runs();
        if let Some((last, whole)) = kept.split_last() {
            assert_eq!(
                whole,
                &report.runs()[..whole.len()],
                "truncation is not a prefix"
            );
            let orig = report.runs()[whole.len()];
            assert_eq!(
                (last.first_group, last.needed),
                (orig.first_group, orig.needed)
            );
            assert!(last.len <= orig.len);
        }
        let mut enc = Vec::new();
        t.encode(&mut enc);
        assert_eq!(enc.len(), t.encoded_len());
        assert_eq!(StatusReport::decode(&enc).as_ref(), Ok(&t));
    }
}

/// Runs are non-empty, need at least one shard, ascend without overlap, and are maximal.
fn check_runs(runs: &[NeedRun]) {
    let mut prev: Option<&NeedRun> = None;
    for r in runs {
        assert!(r.len >= 1 && r.needed >= 1, "empty run {r:?}");
        assert!(r.end() <= 1 << 32);
        if let Some(p) = prev {
            assert!(
                u64::from(r.first_group) >= p.end(),
                "runs overlap: {p:?} {r:?}"
            );
            assert!(
                !(u64::from(r.first_group) == p.end() && r.needed == p.needed),
                "runs not maximal: {p:?} {r:?}"
            );
        }
        prev = Some(r);
    }
}

// ---------------------------------------------------------------------------------------------
// patch

/// `patch::apply` (bsdiff-style payloads, after zstd) with a fuzzer-chosen reference and
/// chunk length: first a u16 reference length and a u32 chunk length (at most 1 MiB), then the
/// reference bytes, then the patch. On success the output has exactly the chunk length.
pub fn patch(data: &[u8]) {
    let mut input = Input::new(data);
    let reference_len = usize::from(input.u16());
    let len = (input.u32() % (1 << 20)) as usize;
    let reference = input.take(reference_len);
    let patch = input.rest();
    if let Ok(out) = narlink_protocol::patch::apply(reference, patch, len) {
        assert_eq!(out.len(), len, "patch made the wrong length");
    }
}

// ---------------------------------------------------------------------------------------------
// payload

/// `narlink::payload::decode`, the device's decoder of every payload encoding (bare zstd
/// frames, zstd deltas, LZMA patches), with a fuzzer-chosen encoding, chunk length (at most
/// 256 KiB) and reference: a u8 encoding (its high bit: the length is split into a span of
/// two chunks, the second joined to the first), a u32 length, a u16 reference length, the
/// reference, then the payload. It must fail cleanly (almost always at the chunk id) or give
/// the chunks.
pub fn payload(data: &[u8]) {
    use narlink_protocol::manifest::{Encoding, Payload, Reference};
    let mut input = Input::new(data);
    let selector = input.u8();
    let encoding = match selector % 4 {
        0 => Encoding::Raw,
        1 => Encoding::Zstd,
        2 => Encoding::ZstdRef,
        _ => Encoding::Bsdiff,
    };
    let raw_len = input.u32() % (256 << 10) + 1;
    let reference_len = usize::from(input.u16());
    let reference = input.take(reference_len);
    let bytes = input.rest();
    let p = Payload {
        chunk: [0; 16],
        raw_len,
        encoded_len: bytes.len() as u32,
        encoding,
        reference: encoding.needs_reference().then_some(Reference {
            source: 0,
            offset: 0,
            len: reference.len() as u32,
        }),
    };
    let mut span = vec![p];
    if selector & 0x80 != 0 && raw_len > 1 {
        span[0].raw_len = raw_len / 2;
        span.push(Payload {
            chunk: [1; 16],
            raw_len: raw_len - raw_len / 2,
            encoded_len: 0,
            encoding: Encoding::Joined,
            reference: None,
        });
    }
    if let Ok(chunks) = narlink::payload::decode(&span, bytes, Some(reference)) {
        assert_eq!(chunks.len(), raw_len as usize);
    }
}

/// A solid group: up to four parts (lengths and chunk ids from the input, each with a
/// reference of input bytes or none), then the group's bytes. Decoding never panics and
/// never returns other than each part's length, each chunk checked.
pub fn solid(data: &[u8]) {
    use narlink_protocol::manifest::{Encoding, Payload, Reference};
    let mut input = Input::new(data);
    let count = usize::from(input.u8() % 4) + 1;
    let mut group = Vec::new();
    let mut references = Vec::new();
    for i in 0..count {
        let raw_len = u32::from(input.u16()) + 1;
        let chunk: [u8; 16] = input.take(16).try_into().unwrap_or([0; 16]);
        let reference_len = usize::from(input.u16());
        let has_reference = reference_len % 2 == 1;
        let reference = input.take(reference_len).to_vec();
        group.push(Payload {
            chunk,
            raw_len,
            encoded_len: 0,
            encoding: if i == 0 {
                Encoding::Solid
            } else {
                Encoding::Part
            },
            reference: has_reference.then_some(Reference {
                source: references.len() as u32,
                offset: 0,
                len: reference.len() as u32,
            }),
        });
        references.push(reference);
    }
    let bytes = input.rest();
    let read = |r: &Reference| {
        references
            .get(r.source as usize)
            .cloned()
            .ok_or_else(|| "no such reference".to_string())
    };
    if let Ok(parts) = narlink::solid::decode(&group, bytes, read) {
        assert_eq!(parts.len(), count);
        for (range, data) in parts {
            let len: u32 = group[range].iter().map(|p| p.raw_len).sum();
            assert_eq!(data.len(), len as usize);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// manifest

/// Names any on-board prefix: the path whose packed hash is the prefix padded with zeros (a
/// device that holds every path there is).
pub fn any_name(prefix: &[u8]) -> Result<String, ManifestError> {
    let mut hash = [0u8; storepath::HASH_BYTES];
    let n = prefix.len().min(hash.len());
    hash[..n].copy_from_slice(&prefix[..n]);
    Ok(storepath::join(&hash, "onboard"))
}

/// Every store path a manifest names: a device that holds them decodes its wire form.
pub fn names_of(m: &Manifest) -> PathSet {
    PathSet::new(
        m.paths
            .iter()
            .flat_map(|p| p.references.iter().chain([&p.store_path]))
            .chain(&m.roots)
            .chain(&m.sources),
    )
}

/// Whether every path `m` names has a hash of its own in `device`.
fn one_path_per_hash(device: &PathSet, m: &Manifest) -> bool {
    m.paths
        .iter()
        .flat_map(|p| p.references.iter().chain([&p.store_path]))
        .chain(&m.roots)
        .chain(&m.sources)
        .all(|p| {
            storepath::split(p)
                .is_some_and(|(h, _)| device.lookup(&h) == storepath::Lookup::Unique(p.as_str()))
        })
}

/// `Manifest::from_wire` of the whole input, on a device that holds every path ([`any_name`]);
/// on success the manifest goes through its wire form (against the paths it names) and its
/// storage form unchanged, and both encodings are fixed points. Then the storage form decoder
/// on the input.
///
/// (Which prefix names an on-board path is the encoder's choice, so the input itself need not
/// come back.)
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::from_wire(data, any_name) {
        assert_eq!(m.check(), Ok(()));
        let device = names_of(&m);
        if !one_path_per_hash(&device, &m) {
            // No store holds two paths with one hash (the hash covers the name): such a
            // manifest cannot name them apart, and no device could decode it.
            return;
        }
        let wire = m.to_wire(&device).expect("a decoded manifest encodes");
        let back = Manifest::from_wire(&wire, resolve_in(&device)).expect("re-encoded decodes");
        assert_eq!(back, m, "manifest changed through to_wire/from_wire");
        assert_eq!(
            back.to_wire(&device).ok(),
            Some(wire),
            "wire form not a fixed point"
        );
        let bytes = m.to_bytes();
        assert_eq!(
            Manifest::from_bytes(&bytes),
            Ok(m),
            "storage form changed it"
        );
    }
    if let Ok(m) = Manifest::from_bytes(data) {
        let bytes = m.to_bytes();
        let back = Manifest::from_bytes(&bytes).expect("a re-encoded manifest decodes");
        assert_eq!(back, m, "manifest changed through to_bytes/from_bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// bundle

/// `narlink::head::read_manifest` over the input (header, head checked against the id,
/// signature block, manifest decoded), on a device that holds every path ([`any_name`]). On
/// success the header re-encodes to the input's header. Runs again with the header's id fixed
/// to match the head it names (as many bytes as the input has), so mutations of the manifest
/// and signature block get past the checksum.
pub fn bundle(data: &[u8]) {
    bundle_once(data);
    if let Ok(h) = BundleHeader::decode(data) {
        let have = data.len() - bundle::HEADER_LEN;
        let len = (h.manifest_len as usize).min(have);
        let stored = &data[bundle::HEADER_LEN..bundle::HEADER_LEN + len];
        let sigs_end = (bundle::HEADER_LEN + len + usize::from(h.signatures_len)).min(data.len());
        let sigs = &data[bundle::HEADER_LEN + len..sigs_end];
        let raw_len = if h.manifest_encoding == bundle::MANIFEST_PLAIN {
            len as u32
        } else {
            h.manifest_raw_len
        };
        let fixed_h =
            BundleHeader::for_head(stored, h.manifest_encoding, raw_len, h.payload_len, sigs);
        let mut fixed = data.to_vec();
        fixed[..bundle::HEADER_LEN].copy_from_slice(&fixed_h.encode());
        bundle_once(&fixed);
    }
}

fn bundle_once(data: &[u8]) {
    let Ok(head) = narlink::head::read_manifest(&mut &data[..], any_name) else {
        return;
    };
    let header = head.header;
    let end = bundle::HEADER_LEN + header.manifest_len as usize;
    let sigs_end = end + usize::from(header.signatures_len);
    assert!(header
        .verify_head(&data[bundle::HEADER_LEN..end], &data[end..sigs_end])
        .is_ok());
    let enc = header.encode();
    assert_eq!(
        enc[..],
        data[..bundle::HEADER_LEN],
        "bundle header does not re-encode to its input"
    );
    assert_eq!(BundleHeader::decode(&enc), Ok(header));
    assert_eq!(head.manifest.payload_bytes(), header.payload_len);
    assert_eq!(
        Manifest::from_bytes(&head.manifest.to_bytes()),
        Ok(head.manifest)
    );
}

// ---------------------------------------------------------------------------------------------
// nar

/// The input as a NAR: `nar::validate` and a [`NarParser`] walk must agree; a NAR that
/// validates must re-serialize from the parser's events to the same bytes, and
/// `restore` into a temporary directory then `dump` must give the input back exactly.
pub fn nar(data: &[u8]) {
    let validated = nar::validate(data);
    let walked = nar_walk(data);
    match (&validated, &walked) {
        (Ok(_), Ok(rebuilt)) => {
            assert!(
                rebuilt == data,
                "NAR events do not re-serialize to the input"
            );
        }
        (Err(_), Err(_)) => {}
        (v, w) => panic!(
            "validate and the event walk disagree: validate {:?}, walk {:?}",
            v.as_ref().map(|_| ()),
            w.as_ref().map(|_| ())
        ),
    }
    let Ok(summary) = validated else {
        return;
    };
    assert_eq!(summary.nar_size, data.len() as u64);
    assert_eq!(summary.nar_hash, NarHash::of(data));

    let dir = tempfile::tempdir().expect("create a temporary directory");
    let dest = dir.path().join("nar");
    match nar::restore(data, &dest) {
        Ok(s) => assert_eq!(s, summary),
        // A valid NAR may nest names past PATH_MAX; the OS refusing that is not a bug.
        Err(NarError::Io { ref source, .. }) if source.raw_os_error() == Some(ENAMETOOLONG) => {
            return
        }
        Err(e) => panic!("restore failed on a NAR that validates: {e}"),
    }
    let mut out = Vec::new();
    let dumped = nar::dump(&dest, &mut out).expect("dump a restored NAR");
    assert!(out == data, "restore then dump does not give the NAR back");
    assert_eq!(dumped, summary);
}

/// `ENAMETOOLONG` on Linux.
const ENAMETOOLONG: i32 = 36;

/// NAR strings as the grammar writes them: `u64` LE length, bytes, zero padding to 8.
fn put_nar_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// Walks the NAR with [`NarParser`], checking each event against the grammar's caps, and
/// rebuilds the NAR's bytes from the events. Regular file contents are taken three ways (as
/// `Contents` events, with a small `read_contents` buffer, with a large one) by file offset.
fn nar_walk(data: &[u8]) -> Result<Vec<u8>, NarError> {
    let mut p = NarParser::new(data);
    let mut out = Vec::new();
    put_nar_str(&mut out, nar::NAR_MAGIC);
    // Open directories (depth of the walk).
    let mut dirs = 0usize;
    // Whether a node just ended, closing its entry if it is not the root.
    let close_node = |out: &mut Vec<u8>, dirs: usize| {
        put_nar_str(out, b")");
        if dirs > 0 {
            put_nar_str(out, b")");
        }
    };
    let result = loop {
        let event = match p.next() {
            Ok(Some(e)) => e,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match event {
            NarEvent::Directory => {
                assert!(dirs <= nar::MAX_DEPTH, "directory nested {dirs} deep");
                for t in [&b"("[..], b"type", b"directory"] {
                    put_nar_str(&mut out, t);
                }
                dirs += 1;
            }
            NarEvent::Entry { name } => {
                assert!(
                    !name.is_empty()
                        && name.len() <= nar::MAX_NAME_LEN
                        && name != b"."
                        && name != b".."
                        && !name.contains(&b'/')
                        && !name.contains(&0),
                    "parser accepted entry name {name:?}"
                );
                for t in [&b"entry"[..], b"(", b"name", name, b"node"] {
                    put_nar_str(&mut out, t);
                }
            }
            NarEvent::Symlink { target } => {
                assert!(target.len() <= nar::MAX_TARGET_LEN);
                for t in [&b"("[..], b"type", b"symlink", b"target", target] {
                    put_nar_str(&mut out, t);
                }
                close_node(&mut out, dirs);
            }
            NarEvent::EndDirectory => {
                assert!(dirs > 0, "EndDirectory outside a directory");
                dirs -= 1;
                close_node(&mut out, dirs);
            }
            NarEvent::Contents(_) => panic!("Contents event outside a regular file"),
            NarEvent::Regular {
                executable,
                size,
                offset,
            } => {
                for t in [&b"("[..], b"type", b"regular"] {
                    put_nar_str(&mut out, t);
                }
                if executable {
                    put_nar_str(&mut out, b"executable");
                    put_nar_str(&mut out, b"");
                }
                put_nar_str(&mut out, b"contents");
                out.extend_from_slice(&size.to_le_bytes());
                assert_eq!(offset, out.len() as u64, "file contents offset");
                let start = out.len();
                match read_file(&mut p, size, offset % 3, &mut out) {
                    Ok(()) => {}
                    Err(e) => break Err(e),
                }
                assert_eq!((out.len() - start) as u64, size, "contents length");
                out.resize(out.len().next_multiple_of(8), 0);
                close_node(&mut out, dirs);
            }
        }
        assert!(p.depth() <= nar::MAX_DEPTH);
    };
    // A finished or failed parser stays finished or failed.
    if result.is_ok() {
        assert!(matches!(p.next(), Ok(None) | Err(_)));
    } else {
        let _ = p.next();
    }
    result.map(|()| out)
}

fn read_file(
    p: &mut NarParser<&[u8]>,
    size: u64,
    how: u64,
    out: &mut Vec<u8>,
) -> Result<(), NarError> {
    let mut left = size;
    match how {
        0 => {
            while left > 0 {
                match p.next()? {
                    Some(NarEvent::Contents(piece)) => {
                        assert!(!piece.is_empty() && piece.len() as u64 <= left);
                        out.extend_from_slice(piece);
                        left -= piece.len() as u64;
                    }
                    other => panic!("expected file contents, got {other:?}"),
                }
            }
        }
        _ => {
            let mut buf = vec![0u8; if how == 1 { 7 } else { 1 << 19 }];
            loop {
                let n = p.read_contents(&mut buf)?;
                if n == 0 {
                    break;
                }
                assert!(n as u64 <= left);
                out.extend_from_slice(&buf[..n]);
                left -= n as u64;
            }
            assert_eq!(left, 0, "read_contents stopped early");
            p.skip_contents()?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// group_decode

/// The caps the FEC and receiver checks put on link parameters: small enough that one run
/// stays fast, large enough for every code path (groups of up to 256 KiB).
pub const FUZZ_LIMITS: Limits = Limits {
    max_bundle_len: 1 << 24,
    max_shard_size: 1024,
    max_group_bytes: 256 << 10,
    max_code_bytes: 8 << 20,
    max_tracked_shards: 1 << 14,
};

/// Most shard bytes a group_decode run hands to the decoder.
const MAX_SHARD_BYTES: usize = 8 << 20;

/// Whether decoding a `k + P` code of `S`-byte shards stays cheap enough to fuzz. The GF(2^16)
/// decoder works on `(k + P)` rounded up to a power of two (up to 65536) shards of `S` rounded
/// up to 64 bytes, whatever `k`; keep that under 8 MiB so one run takes milliseconds.
fn cheap_to_decode(shape: GroupShape) -> bool {
    let n = u64::from(shape.total()).next_power_of_two();
    let s = u64::from(shape.shard_size).next_multiple_of(64);
    n * 2 * s <= 8 << 20
}

/// Input: `flags: u8`, then either
/// - `flags & 2 == 0`: `S: u16, K: u16, P: u16, L: u32, group: u32` — link parameters (kept
///   only if they pass [`LinkParams::validate_within`] [`FUZZ_LIMITS`]) and a group, decoded
///   with `fec::decode_group` as the device does;
/// - `flags & 2 != 0`: `k: u16, P: u16, S: u16` — a raw [`GroupShape`] (S at most 1024) for
///   [`fec::ErasureCode::decode`];
///
/// (shapes whose decoder work exceeds 8 MiB are skipped: see `cheap_to_decode`)
///
/// then shards until the input ends, each `index: u16, kind: u8` and its bytes: `kind % 4`
/// 0: the next S input bytes (fewer at the end), 1: one input byte repeated S times, 2: the
/// same with one byte too many or too few, 3: a copy of an earlier shard. `flags & 1` picks
/// the GF(2^8) codec. Indices are taken modulo `k + P + 1` unless `kind & 0x80`.
///
/// Decoding must give `Ok` or `Err`. On `Ok`, the data shards given come back unchanged, and
/// re-encoding the result reproduces the parity shards the decoder used (any `k` shards of an
/// MDS code determine the codeword).
pub fn group_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let codec_id = if flags & 1 == 0 {
        CodecId::RsSimd16
    } else {
        CodecId::RsErasure8
    };
    let code = fec::codec(codec_id);
    if flags & 2 == 0 {
        let params = LinkParams {
            codec: codec_id,
            shard_size: input.u16(),
            group_k: input.u16(),
            parity: input.u16(),
            bundle_len: u64::from(input.u32()),
        };
        let group = input.u32();
        let Ok(layout) = params.validate_within(&FUZZ_LIMITS) else {
            return;
        };
        // Mostly an existing group, sometimes one past the end.
        let group = group % (layout.group_count() + 1);
        let shape = fec::group_shape(&params, &layout, group).unwrap_or(GroupShape {
            k: params.group_k,
            parity: params.parity,
            shard_size: params.shard_size,
        });
        if !cheap_to_decode(shape) {
            return;
        }
        let shards = read_shards(&mut input, shape);
        let refs: Vec<(u16, &[u8])> = shards.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let result = fec::decode_group(&*code, &params, &layout, group, &refs);
        let Ok(bytes) = result else {
            return;
        };
        let range = layout
            .byte_range(group)
            .expect("decoded a group that exists");
        assert_eq!(bytes.len() as u64, range.end - range.start);
        let mut padded = bytes.clone();
        padded.resize(usize::from(shape.k) * usize::from(shape.shard_size), 0);
        check_decoded(shape, &refs, &padded, |j| {
            let mut v = fec::encode_group_shards(&*code, &params, &layout, group, &bytes, &[j])
                .expect("re-encode a decoded group");
            v.pop().expect("one shard")
        });
    } else {
        let shape = GroupShape {
            k: input.u16(),
            parity: input.u16(),
            shard_size: input.u16(),
        };
        if shape.shard_size > FUZZ_LIMITS.max_shard_size || !cheap_to_decode(shape) {
            return;
        }
        let shards = read_shards(&mut input, shape);
        let refs: Vec<(u16, &[u8])> = shards.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let result = code.decode(shape, &refs);
        let Ok(data_shards) = result else {
            return;
        };
        assert_eq!(data_shards.len(), usize::from(shape.k));
        assert!(data_shards
            .iter()
            .all(|d| d.len() == usize::from(shape.shard_size)));
        let flat = data_shards.concat();
        check_decoded(shape, &refs, &flat, |j| {
            let slices: Vec<&[u8]> = data_shards.iter().map(Vec::as_slice).collect();
            let mut v = code
                .encode(shape, &slices, j - shape.k..j - shape.k + 1)
                .expect("re-encode decoded shards");
            v.pop().expect("one shard")
        });
    }
}

fn read_shards(input: &mut Input<'_>, shape: GroupShape) -> Vec<(u16, Vec<u8>)> {
    let s = usize::from(shape.shard_size);
    let mut shards: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    while !input.is_empty() && total <= MAX_SHARD_BYTES {
        let raw_index = input.u16();
        let kind = input.u8();
        let index = if kind & 0x80 != 0 {
            raw_index
        } else {
            (u32::from(raw_index) % (shape.total() + 1)) as u16
        };
        let bytes = match kind % 4 {
            0 => input.take(s).to_vec(),
            1 => vec![input.u8(); s],
            2 => {
                let len = if kind & 4 == 0 {
                    s + 1
                } else {
                    s.saturating_sub(1)
                };
                vec![input.u8(); len]
            }
            _ => match shards.len() {
                0 => vec![0; s],
                n => shards[usize::from(input.u8()) % n].1.clone(),
            },
        };
        total += bytes.len();
        shards.push((index, bytes));
    }
    shards
}

/// After a successful decode into `data` (`k * S` bytes): the data shards given (first of
/// each index) come back unchanged, and the parity shards the decoder used (the lowest
/// indices, as many as data shards were missing) re-encode from `data` as given.
fn check_decoded(
    shape: GroupShape,
    shards: &[(u16, &[u8])],
    data: &[u8],
    parity_of: impl Fn(u16) -> Vec<u8>,
) {
    let s = usize::from(shape.shard_size);
    let k = usize::from(shape.k);
    assert_eq!(data.len(), k * s);
    let mut first: BTreeMap<u16, &[u8]> = BTreeMap::new();
    for &(i, bytes) in shards {
        first.entry(i).or_insert(bytes);
    }
    let have_data = first.range(..shape.k).count();
    for (&i, bytes) in first.range(..shape.k) {
        let i = usize::from(i);
        assert!(
            &data[i * s..(i + 1) * s] == *bytes,
            "data shard {i} changed by decoding"
        );
    }
    for (&j, bytes) in first.range(shape.k..).take(k - have_data) {
        assert!(
            parity_of(j) == *bytes,
            "decoded data does not re-encode to parity shard {j} the decoder used"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// receiver

/// Input: `codec: u8, S: u16, K: u16, P: u16, L: u32` (kept only within [`FUZZ_LIMITS`]), then
/// operations until the input ends, each an opcode byte and its operands. Group operands are a
/// byte (modulo groups + 1) or, with the high bit, a raw `u32`; shard operands likewise (modulo
/// `K + P + 2`, or a raw `u16`).
///
/// A [`GroupTracker`] runs the operations next to a model — per group, a `BTreeSet` of shards
/// held and whether it is decoded — and every answer must match the model's. Status reports
/// must list a prefix of the model's needs within the size budget, and `rebuild` from what was
/// persisted must give the same state back.
pub fn receiver(data: &[u8]) {
    let mut input = Input::new(data);
    let codec = if input.u8() & 1 == 0 {
        CodecId::RsSimd16
    } else {
        CodecId::RsErasure8
    };
    let params = LinkParams {
        codec,
        shard_size: input.u16(),
        group_k: input.u16(),
        parity: input.u16(),
        bundle_len: u64::from(input.u32()),
    };
    let bundle_id = [0x42; 16];
    let tracker = GroupTracker::new(bundle_id, params, &FUZZ_LIMITS);
    let mut t = match (tracker, params.validate_within(&FUZZ_LIMITS)) {
        (Ok(t), Ok(layout)) => {
            assert_eq!(*t.layout(), layout);
            t
        }
        (Err(e), Err(e2)) => {
            assert_eq!(e, e2);
            return;
        }
        (t, v) => panic!(
            "GroupTracker::new and validate_within disagree: {:?} {:?}",
            t.map(|_| ()),
            v.map(|_| ())
        ),
    };
    let layout = GroupLayout::new(params.bundle_len, params.shard_size, params.group_k)
        .expect("a layout the tracker accepted");
    let mut model = Model {
        layout,
        parity: params.parity,
        held: BTreeMap::new(),
        decoded: BTreeSet::new(),
    };
    // What a device would have persisted: every wanted shard, in order, plus junk that must be
    // ignored; and the groups it decoded.
    let mut persisted: Vec<(u32, u16)> = Vec::new();
    let groups = layout.group_count();
    let shard_span = u32::from(params.group_k) + u32::from(params.parity) + 2;
    while !input.is_empty() {
        let op = input.u8();
        let g = {
            let b = input.u8();
            if b & 0x80 != 0 {
                input.u32()
            } else {
                u32::from(b) % (groups + 1)
            }
        };
        let s = {
            let b = input.u8();
            if b & 0x80 != 0 {
                input.u16()
            } else {
                (u32::from(b) % shard_span) as u16
            }
        };
        match op % 8 {
            0..=2 => {
                let want = model.peek(g, s);
                assert_eq!(t.peek(g, s), want, "peek({g}, {s})");
                assert_eq!(t.handle_shard(g, s), want, "handle_shard({g}, {s})");
                model.handle(g, s, want, &mut persisted);
            }
            3 => {
                let mut header = FrameHeader {
                    bundle_id,
                    params,
                    group: g,
                    shard: s,
                };
                let want = if op & 0x10 != 0 {
                    header.bundle_id[0] ^= 1;
                    Outcome::OtherBundle
                } else if op & 0x20 != 0 {
                    header.params.bundle_len ^= 1;
                    Outcome::ParamsMismatch
                } else {
                    model.peek(g, s)
                };
                assert_eq!(t.peek_frame(&header), want, "peek_frame {header:?}");
                assert_eq!(t.handle_frame(&header), want, "handle_frame {header:?}");
                model.handle(g, s, want, &mut persisted);
            }
            4 => {
                let exists = g < groups;
                assert_eq!(t.mark_decoded(g), exists, "mark_decoded({g})");
                if exists {
                    model.decoded.insert(g);
                }
            }
            5 => model.check_group(&t, g),
            6 => {
                let digest = [op; 16];
                let phase = Phase::from_u8(s as u8);
                model.check_status(&t.status_report(digest, phase), bundle_id, digest, phase);
            }
            _ => {
                let rebuilt = GroupTracker::rebuild(
                    bundle_id,
                    params,
                    &FUZZ_LIMITS,
                    persisted.iter().copied(),
                    model.decoded.iter().copied(),
                )
                .expect("rebuild with parameters new accepted");
                model.check_all(&rebuilt);
            }
        }
    }
    model.check_all(&t);
}

/// What a [`GroupTracker`] should know.
struct Model {
    layout: GroupLayout,
    parity: u16,
    held: BTreeMap<u32, BTreeSet<u16>>,
    decoded: BTreeSet<u32>,
}

impl Model {
    fn peek(&self, g: u32, s: u16) -> Outcome {
        let Some(k) = self.layout.group_k(g) else {
            return Outcome::OutOfRange;
        };
        if u32::from(s) >= u32::from(k) + u32::from(self.parity) {
            return Outcome::OutOfRange;
        }
        if self.decoded.contains(&g) {
            return Outcome::GroupAlreadyDone;
        }
        let held = self.held.get(&g);
        if held.is_some_and(|h| h.contains(&s)) {
            return Outcome::Duplicate;
        }
        let n = held.map_or(0, BTreeSet::len);
        if n >= usize::from(k) {
            Outcome::Surplus
        } else if n + 1 == usize::from(k) {
            Outcome::Decodable
        } else {
            Outcome::New
        }
    }

    fn handle(&mut self, g: u32, s: u16, outcome: Outcome, persisted: &mut Vec<(u32, u16)>) {
        match outcome {
            Outcome::New | Outcome::Decodable => {
                self.held.entry(g).or_default().insert(s);
                persisted.push((g, s));
            }
            // Pairs outside the layout must be ignored by rebuild.
            Outcome::OutOfRange => persisted.push((g, s)),
            _ => {}
        }
    }

    fn k(&self, g: u32) -> Option<u16> {
        self.layout.group_k(g)
    }

    fn held(&self, g: u32) -> usize {
        self.held.get(&g).map_or(0, BTreeSet::len)
    }

    fn needed(&self, g: u32) -> u16 {
        match self.k(g) {
            Some(k) if !self.decoded.contains(&g) => {
                usize::from(k).saturating_sub(self.held(g)) as u16
            }
            _ => 0,
        }
    }

    fn check_group(&self, t: &GroupTracker, g: u32) {
        assert_eq!(t.needed(g), self.needed(g), "needed({g})");
        assert_eq!(t.held(g) as usize, self.held(g), "held({g})");
        assert_eq!(
            t.is_decoded(g),
            self.decoded.contains(&g),
            "is_decoded({g})"
        );
        let decodable = self
            .k(g)
            .is_some_and(|k| !self.decoded.contains(&g) && self.held(g) >= usize::from(k));
        assert_eq!(t.is_decodable(g), decodable, "is_decodable({g})");
        let shards: Vec<u16> = t.received_shards(g).collect();
        let want: Vec<u16> = self
            .held
            .get(&g)
            .map_or(Vec::new(), |h| h.iter().copied().collect());
        assert_eq!(shards, want, "received_shards({g})");
    }

    fn check_all(&self, t: &GroupTracker) {
        let groups = self.layout.group_count();
        for g in 0..groups {
            self.check_group(t, g);
        }
        self.check_group(t, groups);
        let unfinished: Vec<u32> = (0..groups).filter(|g| !self.decoded.contains(g)).collect();
        assert_eq!(t.unfinished_groups().collect::<Vec<_>>(), unfinished);
        assert_eq!(t.decoded_groups() as usize, self.decoded.len());
        assert_eq!(t.is_complete(), self.decoded.len() == groups as usize);
    }

    fn check_status(&self, r: &StatusReport, bundle_id: [u8; 16], digest: [u8; 16], phase: Phase) {
        assert_eq!(
            (r.bundle_id, r.state_digest, r.phase),
            (bundle_id, digest, phase)
        );
        let needs: Vec<(u32, u16)> = (0..self.layout.group_count())
            .map(|g| (g, self.needed(g)))
            .filter(|&(_, n)| n > 0)
            .collect();
        let listed: Vec<(u32, u16)> = r.needs().collect();
        assert!(
            listed.len() <= needs.len() && listed == needs[..listed.len()],
            "status report does not list a prefix of what is needed"
        );
        if !r.is_truncated() {
            assert_eq!(
                listed.len(),
                needs.len(),
                "untruncated report leaves groups out"
            );
        }
        assert!(r.encoded_len() <= StatusReport::budget(needs.len() as u64));
        let mut enc = Vec::new();
        r.encode(&mut enc);
        assert_eq!(StatusReport::decode(&enc).as_ref(), Ok(r));
    }
}

// ---------------------------------------------------------------------------------------------
// announce

/// The key the announcement seeds are signed with.
pub fn announce_key() -> narlink_protocol::signature::SecretKey {
    narlink_protocol::signature::SecretKey::from_seed("fuzz-seed-1", [11; 32])
}

/// The header of the announcement frame whose payload the `announce` input is (its shard
/// size is the input's length, capped).
pub fn announce_header(len: usize) -> FrameHeader {
    FrameHeader {
        bundle_id: [7; 16],
        params: LinkParams {
            codec: CodecId::RsSimd16,
            shard_size: len.min(usize::from(u16::MAX)) as u16,
            group_k: 4,
            parity: 4,
            bundle_len: 1000,
        },
        group: narlink_protocol::announce::ANNOUNCE_GROUP,
        shard: 0,
    }
}

/// `protocol::announce::{Announcement, Withdrawal}::from_frame` over the input as the
/// payload of an announcement frame: at most one of them decodes it, a decoded one
/// re-encodes to the input, and verifying it under the seeds' key ends in a value or an
/// error, never a panic. The same for `protocol::confirm::Confirmation` under its own
/// parameters, verified against the seal seeds' device key.
pub fn announce(data: &[u8]) {
    use narlink_protocol::announce::{is_withdrawal, Announcement, Withdrawal};
    let h = announce_header(data.len());
    let trusted = [announce_key().public()];
    let a = Announcement::from_frame(&h, data);
    let w = Withdrawal::from_frame(&h, data);
    assert!(a.is_err() || w.is_err(), "one frame read as both kinds");
    assert!(w.is_err() || is_withdrawal(data));
    if let Ok(a) = a {
        let (h2, p) = a.to_frame().expect("a decoded announcement re-encodes");
        assert_eq!(h2, h);
        assert_eq!(p, data, "announcement does not re-encode to its input");
        let _ = a.verify(&trusted);
    }
    if let Ok(w) = w {
        let (h2, p) = w.to_frame().expect("a decoded withdrawal re-encodes");
        assert_eq!(h2, h);
        assert_eq!(p, data, "withdrawal does not re-encode to its input");
        let _ = w.verify(&trusted);
    }
    // A confirmation carries parameters of its own.
    use narlink_protocol::confirm::{Confirmation, PARAMS};
    let ch = FrameHeader {
        params: PARAMS,
        ..h
    };
    if let Ok(c) = Confirmation::from_frame(&ch, data) {
        let (h2, p) = c.to_frame();
        assert_eq!(h2, ch);
        assert_eq!(p, data, "confirmation does not re-encode to its input");
        let _ = c.verify(&SEAL_KEY);
    }
}

// ---------------------------------------------------------------------------------------------
// link: the whole device receiver

/// A genuine signed bundle (three paths of one raw chunk each), its announcement and every
/// shard of it (data and all parity), made once.
pub struct LinkBundle {
    pub id: [u8; 16],
    /// Each payload's chunk id and bytes.
    pub chunks: Vec<([u8; 16], Vec<u8>)>,
    pub frames: Vec<Frame>,
    pub announcement: Frame,
}

/// The genuine bundle [`link`] delivers among its adversarial frames.
pub fn link_bundle() -> &'static LinkBundle {
    use narlink_protocol::manifest::{ChunkRef, Encoding, PathEntry, Payload, MANIFEST_VERSION};
    static B: std::sync::OnceLock<LinkBundle> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let mut paths = Vec::new();
        let mut payloads = Vec::new();
        let mut bytes = Vec::new();
        let mut chunks = Vec::new();
        let names = [
            "/nix/store/0c8f5dd1zxb7mrnr8hb0hpwxzfz1b4qa-libfoo-1.0",
            "/nix/store/9vv4bd0l5i8k8gd9hkqhhq1rhs0h2f60-app-2.0",
            "/nix/store/1ffrnk4sp5dpm3xxl0y02a3i5xm8zdzq-data-3.0",
        ];
        for (i, name) in names.iter().enumerate() {
            let chunk: Vec<u8> = (0..700u32)
                .map(|j| (j * 31 + i as u32 * 17) as u8)
                .collect();
            let mut id = [0u8; 16];
            id.copy_from_slice(&blake3::hash(&chunk).as_bytes()[..16]);
            paths.push(PathEntry {
                store_path: (*name).to_owned(),
                nar_hash: Some([i as u8; 32]),
                nar_size: chunk.len() as u64,
                references: vec![],
                deriver: None,
                chunks: vec![ChunkRef { id, len: 700 }],
                copies: vec![],
                rewrites: Default::default(),
            });
            payloads.push(Payload {
                chunk: id,
                raw_len: 700,
                encoded_len: 700,
                encoding: Encoding::Raw,
                reference: None,
            });
            bytes.extend_from_slice(&chunk);
            chunks.push((id, chunk));
        }
        let m = Manifest {
            version: MANIFEST_VERSION,
            chunking: narlink::chunking::PARAMS,
            base_digest: [0; 16],
            sequence: 5,
            roots: vec![names[1].to_owned()],
            paths,
            payloads,
            sources: vec![],
            // Pieces of 1 KiB over its 2,100 payload bytes: forged shards are found by them.
            pieces: {
                let mut h = narlink_protocol::pieces::PieceHasher::new(10);
                h.update(&bytes);
                h.finish()
            },
            nar_commitment: [0; 16],
        };
        let key = announce_key();
        let (header, mut bundle) =
            narlink::ground::pack::encode_head(&m, &names_of(&m), Some(&key)).expect("head");
        bundle.extend_from_slice(&bytes);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &bundle).expect("write bundle");
        let opts = narlink::ground::link::LinkOptions {
            frame_size: 128,
            group_k: 4,
            parity: 4,
            redundancy_percent: 100,
            ..Default::default()
        };
        let mut src =
            narlink::ground::link::FrameSource::open(file.path(), opts, None).expect("frames");
        let announcement = src.announce(&key, m.sequence).expect("announcement");
        let mut frames = Vec::new();
        let pass = src.sender.first_pass();
        src.emit(pass, None, &mut |b| {
            frames.push(Frame::decode(b).expect("frame").to_frame());
            Ok(())
        })
        .expect("emit");
        frames.retain(|f| !f.header().is_announcement());
        LinkBundle {
            id: header.id(),
            chunks,
            frames,
            announcement: Frame::decode(&announcement).expect("frame").to_frame(),
        }
    })
}

/// A device state on an in-memory medium that can lose power, trusting [`announce_key`].
pub struct MediumDevice {
    pub medium: narlink::state::medium::Medium,
    pub dir: tempfile::TempDir,
    pub state: narlink::state::device::DeviceState,
}

impl MediumDevice {
    pub fn new() -> MediumDevice {
        use narlink::state::device::DeviceState;
        let medium = narlink::state::medium::Medium::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let state = DeviceState::create_on(medium.clone(), dir.path(), None).expect("create");
        state
            .set_trust(&[announce_key().public()], &[], false)
            .expect("trust");
        MediumDevice { medium, dir, state }
    }

    /// Power comes back after a cut: the state reopened from what survived (the durable image
    /// and the first `torn` writes after it). It must open.
    pub fn restart(self, torn: usize) -> MediumDevice {
        let MediumDevice { medium, dir, state } = self;
        drop(state);
        let medium = medium.after_power_cut(torn % (medium.unsynced() + 1));
        let state = narlink::state::device::DeviceState::open_on(medium.clone(), dir.path())
            .expect("a state that lost power reopens");
        MediumDevice { medium, dir, state }
    }

    /// The bundle the status report names, if any.
    pub fn named(&self) -> Option<[u8; 16]> {
        narlink::device::link::status_report(&self.state)
            .expect("status report")
            .map(|r| r.bundle_id)
    }

    /// Whether the genuine bundle is staged whole, each staged payload holding its chunk's
    /// bytes.
    pub fn complete(&self) -> bool {
        use narlink::state::device::Phase;
        let b = link_bundle();
        let Some(rec) = self.state.bundle(&b.id).expect("bundle record") else {
            return false;
        };
        if rec.phase != Phase::Complete {
            return false;
        }
        let staged = self.state.staged_reader().expect("staged");
        for (chunk, bytes) in &b.chunks {
            let (_, s) = staged
                .get(chunk)
                .expect("staged payload reads")
                .expect("a complete bundle has every payload staged");
            assert_eq!(&s.bytes, bytes, "a staged payload holds other bytes");
        }
        true
    }

    /// Up to `rounds` rounds of every genuine frame (what a status -> resend round brings):
    /// whether the bundle completed.
    pub fn deliver(&self, rounds: usize) -> bool {
        let b = link_bundle();
        for _ in 0..rounds {
            if self.complete() {
                return true;
            }
            let mut rx = narlink::device::link::LinkReceiver::open(&self.state).expect("open");
            rx.handle_frame(b.announcement.as_ref())
                .expect("announcement");
            for f in &b.frames {
                rx.handle_frame(f.as_ref()).expect("frame");
            }
            rx.flush().expect("flush");
        }
        self.complete()
    }
}

impl Default for MediumDevice {
    fn default() -> Self {
        MediumDevice::new()
    }
}

/// The whole device receiver (`narlink::device::link::LinkReceiver` over a real state
/// database on an in-memory medium that can lose power) fed a sequence of operations read
/// from the input, each one byte of opcode and its operands:
///
/// ```text
/// 0 i        genuine frame i (mod the frame count)
/// 1 i p x    genuine frame i with payload byte p xor x (x = 0 taken as 1): forged, checksum made anew
/// 2 id g s   junk frame: id byte, group, shard (random bundle of the genuine's parameters)
/// 3 p        the genuine announcement with byte p flipped (forged)
/// 4          the genuine announcement
/// 5          flush
/// 6 t        power cut now; t: how many writes since the last sync survive (torn); restart
/// 7 i        genuine frame i under the genuine id with another bundle length (a stripped head)
/// 8 n        power cut during the n-th sync from now (n mod 4, plus 1)
/// 9 p        a forged withdrawal of the genuine bundle: signed by an untrusted key (p even)
///            or by the trusted one with byte p of its payload flipped (p odd)
/// ```
///
/// The receiver may fail only when the power is off (then the device restarts from what
/// survived). Checked against the model "nothing unverified can block, evict or be mistaken
/// for the genuine bundle, and no power cut loses what was durable or leaves what does not
/// reopen": the status report never names any bundle but the genuine one; after the sequence,
/// at most three rounds of every genuine frame complete the bundle, every staged payload
/// holding its chunk's bytes.
pub fn link(data: &[u8]) {
    use narlink::device::link::LinkReceiver;
    let b = link_bundle();
    let mut dev = MediumDevice::new();
    let n = b.frames.len();
    let params = b.frames[0].header().params;
    let mut input = Input::new(data);
    let mut rx = Some(LinkReceiver::open(&dev.state).expect("open receiver"));
    let mut ops = 0;
    while !input.is_empty() && ops < 400 {
        ops += 1;
        let op = input.u8() % 10;
        if op == 6 || op == 8 || rx.is_none() {
            let torn = usize::from(input.u8());
            if op == 8 && rx.is_some() {
                dev.medium.cut_power_at_sync((torn % 4) as u64 + 1);
                continue;
            }
            drop(rx.take());
            dev = dev.restart(torn);
            rx = Some(LinkReceiver::open(&dev.state).expect("reopen receiver"));
            continue;
        }
        let Some(r) = rx.as_mut() else { continue };
        let result = match op {
            0 => r.handle_frame(b.frames[usize::from(input.u8()) % n].as_ref()),
            1 => {
                let f = &b.frames[usize::from(input.u8()) % n];
                let (at, x) = (usize::from(input.u8()), input.u8().max(1));
                let mut p = f.payload().to_vec();
                let len = p.len();
                p[at % len] ^= x;
                r.handle_frame(Frame::new(*f.header(), p).expect("frame").as_ref())
            }
            2 => {
                let mut id = [input.u8(); 16];
                id[0] ^= 0x80;
                let params = LinkParams {
                    bundle_len: 1 + u64::from(input.u8()) * 64,
                    ..params
                };
                let layout = params.validate().expect("params");
                let group = u32::from(input.u8()) % layout.group_count();
                let k = layout.group_k(group).expect("group");
                let shard = input.u8() as u16 % (k + params.parity);
                let h = FrameHeader {
                    bundle_id: id,
                    params,
                    group,
                    shard,
                };
                let p = vec![id[1]; usize::from(params.shard_size)];
                r.handle_frame(Frame::new(h, p).expect("frame").as_ref())
            }
            3 => {
                let mut p = b.announcement.payload().to_vec();
                let len = p.len();
                p[usize::from(input.u8()) % len] ^= 1;
                let f = Frame::new(*b.announcement.header(), p).expect("frame");
                r.handle_frame(f.as_ref())
            }
            4 => r.handle_frame(b.announcement.as_ref()),
            5 => r.flush(),
            9 => {
                use narlink_protocol::announce::Withdrawal;
                let p = usize::from(input.u8());
                let forger = narlink_protocol::signature::SecretKey::from_seed("forger", [9; 32]);
                let signer = if p % 2 == 0 { forger } else { announce_key() };
                let w = Withdrawal::sign(&signer, b.id, params);
                let (h, mut payload) = w.to_frame().expect("frames carry a withdrawal");
                if p % 2 == 1 {
                    let len = payload.len();
                    payload[p % len] ^= 1;
                }
                r.handle_frame(Frame::new(h, payload).expect("frame").as_ref())
            }
            _ => {
                let f = &b.frames[usize::from(input.u8()) % n];
                let h = FrameHeader {
                    params: LinkParams {
                        bundle_len: params.bundle_len - 64,
                        ..params
                    },
                    ..*f.header()
                };
                match Frame::new(h, f.payload().to_vec()) {
                    Ok(f) => r.handle_frame(f.as_ref()),
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            assert!(
                dev.medium.is_off(),
                "the receiver failed with the power on: {e}"
            );
            // The device dies; the next operation restarts it.
            rx = None;
        }
    }
    if let Some(mut r) = rx.take() {
        if r.flush().is_err() {
            assert!(dev.medium.is_off(), "flush failed with the power on");
        }
    }
    // The power goes at the end too (a cut scheduled with op 8 that no sync met is void).
    dev = dev.restart(input.0.len());
    if let Some(id) = dev.named() {
        assert_eq!(
            id, b.id,
            "the status report names a bundle that is not the genuine one"
        );
    }
    assert!(
        dev.deliver(3),
        "the genuine bundle did not complete in three rounds"
    );
}

/// The power cut during the `cut`-th sync of a genuine delivery (the announcement, frames in
/// a shuffled order with junk frames among them, and with `forged` frames under the genuine
/// id too, a flush every three frames), with the first `torn` writes after the last sync
/// surviving: the state reopens, the status report names the genuine bundle or nothing, and
/// one more round completes it with every payload's bytes intact. Forged frames cost their
/// groups rounds of their own: one for a forged head (its payloads cannot be checked before
/// it verifies), one for every forged payload group found once it has, so three rounds with
/// them. Returns whether the cut happened (false: the delivery needs fewer syncs).
pub fn link_power_cut(cut: u64, torn: usize, forged: bool) -> bool {
    use narlink::device::link::LinkReceiver;
    let b = link_bundle();
    let dev = MediumDevice::new();
    dev.medium.cut_power_at_sync(cut);
    let mut rng = narlink_protocol::sim::Rng::new(cut);
    let mut order: Vec<usize> = (0..b.frames.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let run = || -> Result<(), Box<narlink::device::link::LinkError>> {
        let mut rx = LinkReceiver::open(&dev.state)?;
        rx.handle_frame(b.announcement.as_ref())?;
        for (n, &i) in order.iter().enumerate() {
            let f = &b.frames[i];
            if forged && rng_pick(n, 5) {
                let mut p = f.payload().to_vec();
                let at = n % p.len();
                p[at] ^= 0x5a;
                rx.handle_frame(Frame::new(*f.header(), p).expect("frame").as_ref())?;
            }
            if rng_pick(n, 3) {
                let h = FrameHeader {
                    bundle_id: [n as u8 | 0x80; 16],
                    ..*f.header()
                };
                rx.handle_frame(Frame::new(h, f.payload().to_vec()).expect("frame").as_ref())?;
            }
            rx.handle_frame(f.as_ref())?;
            if n % 3 == 2 {
                rx.flush()?;
            }
        }
        Ok(rx.flush()?)
    };
    if let Err(e) = run() {
        assert!(dev.medium.is_off(), "failed with the power on: {e}");
    }
    if !dev.medium.is_off() {
        return false;
    }
    let dev = dev.restart(torn);
    if let Some(id) = dev.named() {
        assert_eq!(
            id, b.id,
            "after a power cut the report names another bundle"
        );
    }
    let rounds = 1 + 2 * usize::from(forged);
    assert!(
        dev.deliver(rounds),
        "{rounds} rounds after a power cut at sync {cut} ({torn} writes torn) did not complete the bundle"
    );
    true
}

/// Every `every`-th step.
fn rng_pick(n: usize, every: usize) -> bool {
    n % every == every - 1
}

// ---------------------------------------------------------------------------------------------
// seal

/// The device secret the `seal` seeds are sealed with.
pub const SEAL_KEY: narlink_protocol::seal::DeviceSecret = [0x5e; 32];

/// `protocol::seal::Sealed::parse` and `verify` over the input as a downlink message: never a
/// panic; a message that parses and verifies under [`SEAL_KEY`] seals again to the input; and
/// the input's bytes sealed as a payload open to exactly them.
pub fn seal(data: &[u8]) {
    use narlink_protocol::seal::{seal, Sealed};
    if let Ok(s) = Sealed::parse(data) {
        if s.verify(&SEAL_KEY).is_ok() {
            assert_eq!(seal(&SEAL_KEY, s.counter, s.payload), data);
        }
    }
    let counter = data.len() as u32;
    let m = seal(&SEAL_KEY, counter, data);
    let s = Sealed::parse(&m).expect("a sealed message parses");
    assert_eq!((s.payload, s.counter), (data, counter));
    s.verify(&SEAL_KEY).expect("a sealed message verifies");
}
