//! The ground's dedupe path and the device's reassembly, per NAR byte, over a real store path.
//!
//! Input: the store path `NARLINK_BENCH_PATH` (must be valid in the default store; build one
//! with `benches/scripts/dedupe_reassemble.sh`, which uses `benches/nix/dedupe-input.nix`: about
//! 270 MiB of real host files, 45 references). Without it the bench prints how to get one and
//! does nothing. Setup, not timed: a mirror made by `narlink::ground::init::init` over the
//! closure of the path (what `ground init` does), so the path's chunks are all known to it, and a
//! device state made like `device init` does (`DeviceState::create` + `index::index_into` with
//! verification) over the same closure, read from the default store (the page cache holds it
//! after setup).
//!
//! Groups (all `Throughput::Bytes` of the path's NAR):
//!
//! - `ground_dedupe`: what `ground pack` does per NAR byte when every chunk is known (the loop of
//!   `src/ground/pack.rs` without its new-chunk branch): `NarLayout::scan` +
//!   `reader()`, `normalize::Normalizer` with `hash_list(path, references)`,
//!   `chunking::chunk_stream` at `PARAMS` and `ChunkLookup::contains` on the mirror's
//!   `chunk_reader()` for every chunk (`dedupe`, the goal: ≥ 1 GB/s). Cumulative stages before
//!   it: `fs_read` (the reader alone), `fs_normalize` (+ normalizer), `fs_normalize_chunk_hash`
//!   (+ chunking, no lookup). Parts alone: `mem_normalize` (normalizer over the NAR in memory),
//!   `mem_chunk_hash` (chunk_stream over the normalized NAR in memory), `mem_lookup` (the
//!   lookups of the NAR's chunk ids alone); for comparison, `mem_aho_corasick_every_byte` (the
//!   hash automaton over every byte of the NAR in memory, as the normalizer searched before it
//!   searched runs of hash characters only).
//! - `device_reassemble`: `device::reassemble::ChunkSource` (a fresh one per iteration, as per
//!   import) over the device state: `verify_entry` (import's pass 1: every chunk located in the
//!   index, read from the on-board NAR normalized, BLAKE3-checked, hashes restored, SHA-256 of the
//!   NAR compared; the goal: ≥ 300 MB/s), `stream_to_sink` (import's pass 2 into a sink that
//!   drops the bytes, i.e. without `nix-store --import`), `import_both_passes` (the two, per NAR
//!   byte: what `device import` costs before Nix). Parts: `onboard_read` (`ChunkLookup::locate`
//!   and `OnBoard::read` for every chunk), `mem_blake3_chunks`, `mem_sha256` (the `sha2`
//!   SHA-256 narlink uses, over the NAR in memory), `mem_restore` (`normalize::apply` with the
//!   real hashes, over the normalized NAR in memory).
//! - `dedupe_reassemble_thread_cpu`: `dedupe`, `verify_entry` and `import_both_passes` timed by
//!   the bench thread's CPU time.
//!
//! Run: `benches/scripts/dedupe_reassemble.sh` (builds the input, waits for an idle machine,
//! prints the medians). Results: `docs/measurements.md` ("Ground dedupe path and device
//! reassembly").

use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use narlink::chunking::{chunk_id, chunk_stream, PARAMS};
use narlink::device::reassemble::ChunkSource;
use narlink::nar::NarLayout;
use narlink::nixstore::{NixStore, PathInfo};
use narlink::normalize::{self, hash_list, Normalizer};
use narlink::onboard::OnBoard;
use narlink::state::device::DeviceState;
use narlink::state::mirror::Mirror;
use narlink::state::ChunkLookup;
use narlink_protocol::manifest::{ChunkRef, PathEntry};
use sha2::{Digest, Sha256};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::ThreadCpu;

/// Read everything from `r` in 4 MiB reads (as `chunk_stream` does); returns the byte count.
fn drain(mut r: impl Read, buf: &mut [u8]) -> u64 {
    let mut n = 0u64;
    loop {
        match r.read(buf).expect("read") {
            0 => return n,
            k => n += k as u64,
        }
    }
}

/// The dedupe loop of `ground pack` for a path whose chunks the mirror all knows: returns the
/// NAR size and the number of known chunks.
fn dedupe(store: &NixStore, info: &PathInfo, index: &ChunkLookup) -> (u64, usize) {
    let layout = NarLayout::scan(&store.real_path(&info.path)).expect("scan");
    let mut normalized = Normalizer::new(layout.reader(), &hash_list(&info.path, &info.references));
    let mut chunks = Vec::new();
    let mut known = 0usize;
    let size = chunk_stream::<_, io::Error>(&mut normalized, &PARAMS, |_, _, c| {
        chunks.push(c);
        if index.contains(&c.id).map_err(io::Error::other)? {
            known += 1;
        }
        Ok(())
    })
    .expect("chunk_stream");
    (size, known)
}

fn normalize_chunk_hash(store: &NixStore, info: &PathInfo) -> Vec<ChunkRef> {
    let layout = NarLayout::scan(&store.real_path(&info.path)).expect("scan");
    let mut normalized = Normalizer::new(layout.reader(), &hash_list(&info.path, &info.references));
    let mut chunks = Vec::new();
    chunk_stream::<_, io::Error>(&mut normalized, &PARAMS, |_, _, c| {
        chunks.push(c);
        Ok(())
    })
    .expect("chunk_stream");
    chunks
}

fn verify(device: &DeviceState, store: &NixStore, entry: &PathEntry) {
    let mut source = ChunkSource::new(device, store).expect("chunk source");
    source.verify_entry(entry).expect("verify_entry");
}

fn stream(device: &DeviceState, store: &NixStore, entry: &PathEntry) -> u64 {
    let mut source = ChunkSource::new(device, store).expect("chunk source");
    let mut n = 0u64;
    let (hash, size) = source
        .stream(entry, |b| {
            n += b.len() as u64;
            Ok(())
        })
        .expect("stream");
    assert_eq!(
        (hash, size),
        (entry.nar_hash.unwrap_or_default(), entry.nar_size)
    );
    n
}

fn main() {
    let Ok(path) = std::env::var("NARLINK_BENCH_PATH") else {
        eprintln!(
            "dedupe_reassemble: set NARLINK_BENCH_PATH to a store path (benches/scripts/dedupe_reassemble.sh builds one); skipping"
        );
        return;
    };
    let store = NixStore::new(None);
    let path = store
        .resolve_roots(std::slice::from_ref(&path))
        .expect("resolve")
        .remove(0);
    let closure = store.closure(std::slice::from_ref(&path)).expect("closure");
    let infos = store.path_infos(Some(&closure)).expect("path-info");
    let info = infos
        .iter()
        .find(|i| i.path == path)
        .expect("path info")
        .clone();
    let closure_bytes: u64 = infos.iter().map(|i| i.nar_size).sum();
    let tmp = tempfile::tempdir().expect("tempdir");

    let t = Instant::now();
    let mirror_dir = tmp.path().join("mirror");
    narlink::ground::init::init(
        &mirror_dir,
        &store,
        std::slice::from_ref(&path),
        false,
        None,
    )
    .expect("ground init");
    let mirror = Mirror::open(&mirror_dir).expect("mirror");
    let device_dir = tmp.path().join("device");
    let device = DeviceState::create(&device_dir, None).expect("device state");
    let indexed =
        narlink::index::index_into(&device.db, &store, &infos, true, false).expect("device index");
    assert!(indexed.damaged.is_empty(), "damaged: {:?}", indexed.damaged);
    let file_bytes = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    eprintln!(
        "input: {path}: NAR {} bytes, {} references; closure {} paths, {closure_bytes} NAR bytes, \
         {} chunks; mirror {} bytes, device state {} bytes; set up in {:.1?}",
        info.nar_size,
        info.references.len(),
        infos.len(),
        indexed.chunks,
        file_bytes(mirror.db.file()),
        file_bytes(device.db.file()),
        t.elapsed()
    );

    // The path's bytes in memory, raw and normalized, for the parts measured alone.
    let layout = NarLayout::scan(&store.real_path(&path)).expect("scan");
    let mut raw = Vec::with_capacity(info.nar_size as usize);
    layout.reader().read_to_end(&mut raw).expect("read");
    assert_eq!(raw.len() as u64, info.nar_size);
    let hashes = hash_list(&path, &info.references);
    let mut norm = Normalizer::new(&raw[..], &hashes);
    let mut normalized = Vec::with_capacity(raw.len());
    norm.read_to_end(&mut normalized).expect("normalize");
    let rewrites = std::mem::take(&mut norm.rewrites);
    let record = device.db.record(&path).expect("record").expect("indexed");
    assert_eq!(record.rewrites, rewrites);
    let entry = record.to_entry(&path);
    let mut cuts = Vec::with_capacity(entry.chunks.len());
    let mut at = 0usize;
    for c in &entry.chunks {
        cuts.push((at, c.len as usize));
        at += c.len as usize;
    }
    eprintln!(
        "{} chunks (mean {} bytes), {} store hashes rewritten",
        entry.chunks.len(),
        raw.len() / entry.chunks.len().max(1),
        rewrites.len()
    );

    // Everything is known, and every stage agrees with what the index recorded.
    let index = mirror.db.chunk_reader().expect("chunk reader");
    assert_eq!(
        dedupe(&store, &info, &index),
        (info.nar_size, entry.chunks.len())
    );
    assert_eq!(normalize_chunk_hash(&store, &info), record.chunks);
    assert_eq!(stream(&device, &store, &entry), info.nar_size);
    verify(&device, &store, &entry);

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let bytes = Throughput::Bytes(info.nar_size);
    let mut buf = vec![0u8; 4 << 20];
    {
        let mut g = c.benchmark_group("ground_dedupe");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        g.bench_function("dedupe", |b| {
            b.iter(|| dedupe(&store, black_box(&info), &index))
        });
        g.bench_function("fs_read", |b| {
            b.iter(|| {
                let layout = NarLayout::scan(&store.real_path(&info.path)).expect("scan");
                drain(layout.reader(), &mut buf)
            })
        });
        g.bench_function("fs_normalize", |b| {
            b.iter(|| {
                let layout = NarLayout::scan(&store.real_path(&info.path)).expect("scan");
                let hashes = hash_list(&info.path, &info.references);
                drain(Normalizer::new(layout.reader(), &hashes), &mut buf)
            })
        });
        g.bench_function("fs_normalize_chunk_hash", |b| {
            b.iter(|| normalize_chunk_hash(&store, black_box(&info)).len())
        });
        g.bench_function("mem_normalize", |b| {
            b.iter(|| drain(Normalizer::new(black_box(&raw[..]), &hashes), &mut buf))
        });
        // For comparison: what the normalizer searched before it looked at runs of hash
        // characters only (the automaton over every byte, aho-corasick's prefilter included).
        let whole = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(&hashes)
            .expect("automaton");
        assert_eq!(whole.find_iter(&raw[..]).count(), rewrites.len());
        g.bench_function("mem_aho_corasick_every_byte", |b| {
            b.iter(|| whole.find_iter(black_box(&raw[..])).count())
        });
        g.bench_function("mem_chunk_hash", |b| {
            b.iter(|| {
                chunk_stream::<_, io::Error>(black_box(&normalized[..]), &PARAMS, |_, _, _| Ok(()))
                    .expect("chunk_stream")
            })
        });
        g.bench_function("mem_lookup", |b| {
            b.iter(|| {
                entry
                    .chunks
                    .iter()
                    .filter(|c| index.contains(black_box(&c.id)).expect("lookup"))
                    .count()
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("device_reassemble");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        g.bench_function("verify_entry", |b| {
            b.iter(|| verify(&device, &store, black_box(&entry)))
        });
        g.bench_function("stream_to_sink", |b| {
            b.iter(|| stream(&device, &store, black_box(&entry)))
        });
        g.bench_function("import_both_passes", |b| {
            b.iter(|| {
                verify(&device, &store, black_box(&entry));
                stream(&device, &store, &entry)
            })
        });
        let dev_index = device.db.chunk_reader().expect("chunk reader");
        g.bench_function("onboard_read", |b| {
            b.iter(|| {
                let mut onboard = OnBoard::new(store.clone(), device.db.record_reader().unwrap());
                for c in &entry.chunks {
                    let loc = dev_index.locate(&c.id).expect("locate").expect("on board");
                    let dst = &mut buf[..loc.len as usize];
                    onboard.read(&loc.path, loc.offset, dst).expect("read");
                }
            })
        });
        g.bench_function("mem_blake3_chunks", |b| {
            b.iter(|| {
                cuts.iter()
                    .fold(0u8, |acc, &(o, l)| acc ^ chunk_id(&normalized[o..o + l])[0])
            })
        });
        g.bench_function("mem_sha256", |b| {
            b.iter(|| Sha256::digest(black_box(&raw[..])))
        });
        g.bench_function("mem_restore", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(PARAMS.max_size as usize);
                for &(o, l) in &cuts {
                    out.clear();
                    out.extend_from_slice(&normalized[o..o + l]);
                    normalize::apply(&mut out, o as u64, &rewrites, |i| {
                        hashes.get(usize::from(i)).copied()
                    });
                    black_box(&out);
                }
            })
        });
        g.finish();
    }
    let mut c = c.with_measurement(ThreadCpu(WallTime));
    {
        let mut g = c.benchmark_group("dedupe_reassemble_thread_cpu");
        g.sampling_mode(SamplingMode::Flat).throughput(bytes);
        g.bench_function("ground_dedupe", |b| {
            b.iter(|| dedupe(&store, black_box(&info), &index))
        });
        g.bench_function("device_verify_entry", |b| {
            b.iter(|| verify(&device, &store, black_box(&entry)))
        });
        g.bench_function("device_import_both_passes", |b| {
            b.iter(|| {
                verify(&device, &store, black_box(&entry));
                stream(&device, &store, &entry)
            })
        });
        g.finish();
    }
    c.final_summary();
}
