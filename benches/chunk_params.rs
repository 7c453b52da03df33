//! Chunk-size study: what an update would cost on the uplink under several FastCDC parameter
//! sets, for real pairs of package versions. Not a timing benchmark (`harness = false`); driven
//! by `benches/scripts/chunk_params.sh`, which downloads and unpacks the pairs.
//!
//! For each pair (old tree, new tree) and each parameter set it chunks the NAR of both trees
//! (`NarLayout::scan(dir).reader()` through `narlink::chunking::chunk_stream`) and counts:
//!
//! - `chunks`: chunks of the new NAR (each costs ~36 bytes of manifest: 32-byte id + length);
//! - `new`: distinct chunks of the new NAR whose id is not among the old NAR's chunks, and their
//!   bytes raw and after zstd per chunk (no dictionary, no delta; a chunk that does not shrink
//!   counts raw);
//! - `total` = per-chunk zstd'd new bytes + 36 × chunks.
//!
//! For context it also compresses the new chunks concatenated as one zstd stream, and optionally
//! (`NARLINK_DELTA=1`) as one stream with the whole old NAR as zstd reference prefix (like
//! `zstd --patch-from`): a bound on what "delta against on-board data" could reach.
//!
//! Environment:
//!
//! - `NARLINK_PAIRS` (required): a file of lines `name<TAB>old_dir<TAB>new_dir`;
//! - `NARLINK_PARAMS`: comma-separated `min/avg/max` in KiB (default
//!   `4/16/64,8/32/128,16/64/256,32/128/512`);
//! - `NARLINK_ZSTD_LEVEL`: default 19;
//! - `NARLINK_DELTA=1`: also the delta column (slow: level 19 over the old NAR each time);
//! - `NARLINK_BASELINE=1`: also zstd the whole new NAR in one stream, for scale;
//! - `NARLINK_TSV`: also write the rows as TSV to this file.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::Path;

use narlink::chunking::{chunk_stream, PARAMS};
use narlink::nar::NarLayout;
use narlink_protocol::manifest::{ChunkId, ChunkParams};

/// Manifest bytes per chunk: a 32-byte id and a 4-byte length.
const PER_CHUNK: u64 = 36;

#[derive(Default, Clone, Copy)]
struct Row {
    nar: u64,
    chunks: u64,
    new_chunks: u64,
    new_raw: u64,
    /// New chunks, zstd each on its own.
    new_zstd: u64,
    /// New chunks concatenated, one zstd stream.
    new_stream: u64,
    /// New chunks concatenated, one zstd stream with the old NAR as reference prefix.
    new_delta: Option<u64>,
}

impl Row {
    fn manifest(&self) -> u64 {
        PER_CHUNK * self.chunks
    }
    fn total(&self) -> u64 {
        self.new_zstd + self.manifest()
    }
    fn add(&mut self, o: &Row) {
        self.nar += o.nar;
        self.chunks += o.chunks;
        self.new_chunks += o.new_chunks;
        self.new_raw += o.new_raw;
        self.new_zstd += o.new_zstd;
        self.new_stream += o.new_stream;
        self.new_delta = o.new_delta.map(|b| self.new_delta.unwrap_or(0) + b);
    }
}

fn parse_params(s: &str) -> ChunkParams {
    let v: Vec<u32> = s
        .split('/')
        .map(|x| x.trim().parse().expect("min/avg/max in KiB"))
        .collect();
    assert_eq!(v.len(), 3, "min/avg/max in KiB: {s}");
    ChunkParams {
        algorithm: PARAMS.algorithm,
        min_size: v[0] * 1024,
        avg_size: v[1] * 1024,
        max_size: v[2] * 1024,
    }
}

fn label(p: &ChunkParams) -> String {
    let shipped = if *p == PARAMS { " (shipped)" } else { "" };
    format!(
        "{}/{}/{}{shipped}",
        p.min_size / 1024,
        p.avg_size / 1024,
        p.max_size / 1024
    )
}

fn nar_bytes(dir: &Path) -> Vec<u8> {
    let layout = NarLayout::scan(dir).unwrap_or_else(|e| panic!("scan {}: {e}", dir.display()));
    let mut nar = Vec::with_capacity(layout.size() as usize);
    layout
        .reader()
        .read_to_end(&mut nar)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    nar
}

fn ids_of(nar: &[u8], p: &ChunkParams) -> HashSet<ChunkId> {
    let mut ids = HashSet::new();
    chunk_stream::<_, io::Error>(nar, p, |_, _, c| {
        ids.insert(c.id);
        Ok(())
    })
    .expect("chunk");
    ids
}

/// Length of `data` compressed at `level` with `reference` as zstd reference prefix, with a
/// window covering both and long-distance matching (what `zstd --patch-from` does).
fn delta_len(reference: &[u8], data: &[u8], level: i32) -> u64 {
    let span = (reference.len() + data.len()).max(1 << 20) as u64;
    let window_log = (64 - (span - 1).leading_zeros()).clamp(20, 31);
    let mut out = Vec::new();
    let mut enc =
        zstd::stream::write::Encoder::with_ref_prefix(&mut out, level, reference).expect("zstd");
    enc.window_log(window_log).expect("window_log");
    enc.long_distance_matching(true).expect("ldm");
    enc.write_all(data).expect("zstd");
    enc.finish().expect("zstd");
    out.len() as u64
}

fn study(old: &[u8], new: &[u8], p: &ChunkParams, level: i32, delta: bool) -> Row {
    let old_ids = ids_of(old, p);
    let mut z = zstd::bulk::Compressor::new(level).expect("zstd");
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut fresh = Vec::new();
    let mut row = Row {
        nar: new.len() as u64,
        ..Row::default()
    };
    chunk_stream::<_, io::Error>(new, p, |_, bytes, c| {
        row.chunks += 1;
        if !old_ids.contains(&c.id) && sent.insert(c.id) {
            row.new_chunks += 1;
            row.new_raw += u64::from(c.len);
            row.new_zstd += (z.compress(bytes)?.len() as u64).min(u64::from(c.len));
            fresh.extend_from_slice(bytes);
        }
        Ok(())
    })
    .expect("chunk");
    row.new_stream = zstd::bulk::compress(&fresh, level).expect("zstd").len() as u64;
    if delta {
        row.new_delta = Some(delta_len(old, &fresh, level));
    }
    row
}

fn kb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1000.0)
}

fn main() {
    let pairs_file = std::env::var("NARLINK_PAIRS")
        .expect("set NARLINK_PAIRS (see benches/scripts/chunk_params.sh)");
    let params: Vec<ChunkParams> = std::env::var("NARLINK_PARAMS")
        .unwrap_or_else(|_| "4/16/64,8/32/128,16/64/256,32/128/512".into())
        .split(',')
        .map(parse_params)
        .collect();
    let level: i32 = std::env::var("NARLINK_ZSTD_LEVEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let flag = |k: &str| std::env::var(k).is_ok_and(|v| v == "1");
    let (delta, baseline) = (flag("NARLINK_DELTA"), flag("NARLINK_BASELINE"));
    let pairs: Vec<(String, String, String)> = std::fs::read_to_string(&pairs_file)
        .expect("read NARLINK_PAIRS")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "name<TAB>old<TAB>new: {l}");
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();

    let mut md = String::new();
    let mut tsv = String::from(
        "pair\tparams\tnew_nar\tchunks\tnew_chunks\tnew_raw\tnew_zstd_per_chunk\tnew_zstd_stream\t\
         new_zstd_delta\tmanifest\ttotal\n",
    );
    let opt = |v: Option<u64>| v.map_or("–".to_string(), kb);
    let line = |md: &mut String, tsv: &mut String, name: &str, p: &ChunkParams, r: &Row| {
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} |",
            label(p),
            kb(r.nar),
            r.chunks,
            r.new_chunks,
            kb(r.new_raw),
            kb(r.new_zstd),
            kb(r.manifest()),
            kb(r.total()),
            kb(r.new_stream),
            opt(r.new_delta),
        )
        .unwrap();
        writeln!(
            tsv,
            "{name}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            label(p),
            r.nar,
            r.chunks,
            r.new_chunks,
            r.new_raw,
            r.new_zstd,
            r.new_stream,
            r.new_delta.map_or(String::new(), |v| v.to_string()),
            r.manifest(),
            r.total()
        )
        .unwrap();
    };
    writeln!(
        md,
        "zstd level {level}; manifest = {PER_CHUNK} B × chunks of the new NAR; total = new zstd (per chunk) + \
         manifest; sizes in kB (1000 B).\n"
    )
    .unwrap();
    writeln!(
        md,
        "| pair | params (KiB) | new NAR | chunks | new chunks | new raw | new zstd (per chunk) | manifest | \
         total | new zstd (one stream) | new zstd (delta vs old NAR) |"
    )
    .unwrap();
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    let mut sums = vec![Row::default(); params.len()];
    let mut base = Vec::new();
    for (name, old, new) in &pairs {
        let t = std::time::Instant::now();
        let (old_nar, new_nar) = (nar_bytes(Path::new(old)), nar_bytes(Path::new(new)));
        for (i, p) in params.iter().enumerate() {
            let r = study(&old_nar, &new_nar, p, level, delta);
            sums[i].add(&r);
            line(&mut md, &mut tsv, name, p, &r);
        }
        if baseline {
            base.push((
                name.clone(),
                new_nar.len() as u64,
                zstd::bulk::compress(&new_nar, level).expect("zstd").len(),
            ));
        }
        eprintln!("{name}: done in {:.1?}", t.elapsed());
    }
    for (i, p) in params.iter().enumerate() {
        line(
            &mut md,
            &mut tsv,
            &format!("**all {} pairs**", pairs.len()),
            p,
            &sums[i],
        );
    }
    if baseline {
        writeln!(
            md,
            "\nFor scale, the whole new NAR in one zstd -{level} stream (no dedupe):\n"
        )
        .unwrap();
        writeln!(md, "| pair | new NAR | zstd whole NAR |").unwrap();
        writeln!(md, "|---|---:|---:|").unwrap();
        for (name, n, z) in &base {
            writeln!(md, "| {name} | {} | {} |", kb(*n), kb(*z as u64)).unwrap();
        }
    }
    print!("{md}");
    if let Ok(path) = std::env::var("NARLINK_TSV") {
        std::fs::write(&path, tsv).expect("write NARLINK_TSV");
    }
}
