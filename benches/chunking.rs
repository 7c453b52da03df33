//! Chunk + hash throughput: the ground's dedupe path (FastCDC v2020 cut points + BLAKE3 chunk ids)
//! minus the index lookup, over a NAR of real files.
//!
//! The input is the concatenated NARs of real trees (the entries of `/usr/lib/x86_64-linux-gnu`,
//! `/usr/lib/python3.11` and `/usr/share`, taken in turn) until it holds at least 256 MiB; it is
//! read into memory once. Environment knobs:
//!
//! - `NARLINK_BENCH_ROOTS`: colon-separated directories whose entries make the input
//!   (default `/usr/lib/x86_64-linux-gnu:/usr/lib/python3.11:/usr/share`);
//! - `NARLINK_BENCH_MIB`: minimum input size in MiB (default 256).
//!
//! Groups (all `Throughput::Bytes` of the NAR):
//!
//! - `chunk_hash/mem`: `narlink::chunking::chunk_stream` over a `&[u8]` at the shipped
//!   [`PARAMS`] and two alternatives;
//! - `cut_only/mem`: FastCDC v2020 cut points alone; `blake3_only/mem`: BLAKE3 alone, over the
//!   chunks of the shipped cut points and over the whole buffer in one call;
//! - `fs`: the same input read through `NarLayout::reader()` from the page cache: read alone, and
//!   `chunk_stream` over it;
//! - `two_threads/mem`: measurement only (not what `src/` does): cut points on one thread, BLAKE3
//!   on a second, in a pipeline; cut points per window, then the window's chunks hashed by two
//!   threads; and each of two threads cutting and hashing half of the input, re-synchronising at the
//!   middle (`split2`). All are checked to give the same chunk ids as `chunk_stream`;
//! - `two_threads_cpu_critical_path`: `pipeline` and `split2` timed by their critical path in
//!   per-thread CPU time, an estimate of their wall time with a free core per thread;
//! - `thread_cpu_time`: the single-threaded cases again, timed by the bench thread's CPU time
//!   instead of wall time (robust to other processes competing for the cores).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench chunking`.
//! Results: `docs/measurements.md` ("Chunk+hash throughput").

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{black_box, Criterion, SamplingMode, Throughput};
use narlink::chunking::{chunk_id, chunk_stream, PARAMS};
use narlink::nar::{NarLayout, NarReader};
use narlink_protocol::manifest::{ChunkId, ChunkParams};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::{thread_cpu_ns, ThreadCpu};

const KIB: u32 = 1024;

fn params(min: u32, avg: u32, max: u32) -> ChunkParams {
    ChunkParams {
        algorithm: PARAMS.algorithm,
        min_size: min * KIB,
        avg_size: avg * KIB,
        max_size: max * KIB,
    }
}

fn label(p: &ChunkParams) -> String {
    let shipped = if *p == PARAMS { "_shipped" } else { "" };
    format!(
        "{}-{}-{}KiB{shipped}",
        p.min_size / KIB,
        p.avg_size / KIB,
        p.max_size / KIB
    )
}

/// The layouts of real trees whose NARs add up to at least `min_bytes`, and those NARs' bytes.
fn build_input(roots: &[PathBuf], min_bytes: u64) -> (Vec<NarLayout>, Vec<u8>) {
    let mut entries: Vec<Vec<PathBuf>> = roots
        .iter()
        .map(|r| {
            let mut v: Vec<PathBuf> = match std::fs::read_dir(r) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    eprintln!("skipping {}: {e}", r.display());
                    Vec::new()
                }
            };
            v.sort();
            v.reverse(); // pop() from the front
            v
        })
        .collect();
    let mut layouts = Vec::new();
    let mut data = Vec::new();
    'fill: while (data.len() as u64) < min_bytes {
        let mut any = false;
        for list in &mut entries {
            let Some(path) = list.pop() else { continue };
            any = true;
            let Ok(layout) = NarLayout::scan(&path) else {
                continue;
            };
            let before = data.len();
            if layout.reader().read_to_end(&mut data).is_err() {
                data.truncate(before); // changed or unreadable while we read it
                continue;
            }
            layouts.push(layout);
            if data.len() as u64 >= min_bytes {
                break 'fill;
            }
        }
        if !any {
            break;
        }
    }
    assert!(
        data.len() as u64 >= min_bytes,
        "only {} bytes of NAR under {roots:?}; set NARLINK_BENCH_ROOTS",
        data.len()
    );
    (layouts, data)
}

/// The NARs of several layouts, one after the other.
struct Chain<'a> {
    readers: Vec<NarReader<'a>>,
    at: usize,
}

impl<'a> Chain<'a> {
    fn new(layouts: &'a [NarLayout]) -> Self {
        Chain {
            readers: layouts.iter().map(NarLayout::reader).collect(),
            at: 0,
        }
    }
}

impl Read for Chain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(r) = self.readers.get_mut(self.at) {
            let n = r.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.at += 1;
        }
        Ok(0)
    }
}

fn chunk_ids(r: impl Read, p: &ChunkParams) -> Vec<ChunkId> {
    let mut ids = Vec::new();
    chunk_stream::<_, io::Error>(r, p, |_, _, c| {
        ids.push(c.id);
        Ok(())
    })
    .expect("chunk_stream");
    ids
}

fn cuts(data: &[u8], p: &ChunkParams) -> Vec<(usize, usize)> {
    fastcdc::v2020::FastCDC::new(data, p.min_size, p.avg_size, p.max_size)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Cut points on this thread, BLAKE3 on a second one, batches of cuts handed over a channel.
///
/// Also returns the larger of the two threads' CPU times (ns): about the wall time the pipeline
/// would take with a free core for each thread.
fn pipeline(data: &[u8], p: &ChunkParams) -> (Vec<ChunkId>, u64) {
    const BATCH: usize = 64;
    let (tx, rx) = mpsc::sync_channel::<Vec<(usize, usize)>>(8);
    let t0 = thread_cpu_ns();
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let t0 = thread_cpu_ns();
            let mut ids = Vec::with_capacity(data.len() / 32768);
            for batch in rx {
                ids.extend(batch.into_iter().map(|(o, l)| chunk_id(&data[o..o + l])));
            }
            (ids, thread_cpu_ns() - t0)
        });
        let mut batch = Vec::with_capacity(BATCH);
        for c in fastcdc::v2020::FastCDC::new(data, p.min_size, p.avg_size, p.max_size) {
            batch.push((c.offset, c.length));
            if batch.len() == BATCH {
                tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .unwrap();
            }
        }
        if !batch.is_empty() {
            tx.send(batch).unwrap();
        }
        drop(tx);
        let cut_cpu = thread_cpu_ns() - t0;
        let (ids, hash_cpu) = hasher.join().unwrap();
        (ids, cut_cpu.max(hash_cpu))
    })
}

/// Per 4 MiB window (like `chunk_stream`): cut points on one thread, then the window's chunks
/// hashed by two threads, half each.
fn cut_then_hash2(data: &[u8], p: &ChunkParams) -> Vec<ChunkId> {
    const WINDOW: usize = 4 << 20;
    let mut ids = Vec::with_capacity(data.len() / 32768);
    let mut start = 0;
    while start < data.len() {
        let end = (start + WINDOW + p.max_size as usize).min(data.len());
        let last = end == data.len();
        let win = &data[start..end];
        let mut cs: Vec<(usize, usize)> = Vec::new();
        for c in fastcdc::v2020::FastCDC::new(win, p.min_size, p.avg_size, p.max_size) {
            if !last && c.offset + c.length == win.len() {
                break;
            }
            cs.push((c.offset, c.length));
            if !last && c.offset + c.length >= WINDOW {
                break;
            }
        }
        let (a, b) = cs.split_at(cs.len() / 2);
        let hash = |part: &[(usize, usize)]| -> Vec<ChunkId> {
            part.iter()
                .map(|&(o, l)| chunk_id(&win[o..o + l]))
                .collect()
        };
        let (first, second) = std::thread::scope(|s| {
            let other = s.spawn(|| hash(a));
            let mine = hash(b);
            (other.join().unwrap(), mine)
        });
        ids.extend(first);
        ids.extend(second);
        start += cs.last().map_or(win.len(), |&(o, l)| o + l);
    }
    ids
}

/// Two threads, each cutting and hashing half of the input. The second thread starts its cut
/// points at the middle, where no real cut need be; the first thread goes on past the middle until
/// one of its cuts lands on a cut of the second thread. From there on both agree (a FastCDC cut
/// depends only on the bytes since the previous cut), so the result equals the sequential one.
///
/// Also returns the critical path in thread CPU time (ns): the larger of the two halves, plus what
/// the first thread does after joining. About the wall time with a free core for each thread.
fn split2(data: &[u8], p: &ChunkParams) -> (Vec<ChunkId>, u64) {
    let mid = data.len() / 2;
    let t0 = thread_cpu_ns();
    let cdc = |from: usize| {
        fastcdc::v2020::FastCDC::new(&data[from..], p.min_size, p.avg_size, p.max_size)
            .map(move |c| (from + c.offset, c.length))
    };
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            let t0 = thread_cpu_ns();
            let v = cdc(mid)
                .map(|(o, l)| (o, chunk_id(&data[o..o + l])))
                .collect::<Vec<(usize, ChunkId)>>();
            (v, thread_cpu_ns() - t0)
        });
        let mut ids = Vec::with_capacity(data.len() / 32768);
        let mut it = cdc(0);
        let mut end = 0;
        while end < mid {
            let Some((o, l)) = it.next() else { break };
            ids.push(chunk_id(&data[o..o + l]));
            end = o + l;
        }
        let first_cpu = thread_cpu_ns() - t0;
        let (second, second_cpu) = second.join().unwrap();
        let t1 = thread_cpu_ns();
        let critical = |ids| (ids, first_cpu.max(second_cpu) + thread_cpu_ns() - t1);
        loop {
            if let Ok(i) = second.binary_search_by_key(&end, |&(o, _)| o) {
                ids.extend(second[i..].iter().map(|&(_, id)| id));
                return critical(ids);
            }
            let Some((o, l)) = it.next() else {
                return critical(ids);
            };
            ids.push(chunk_id(&data[o..o + l]));
            end = o + l;
        }
    })
}

fn main() {
    let roots: Vec<PathBuf> = std::env::var("NARLINK_BENCH_ROOTS")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu:/usr/lib/python3.11:/usr/share".into())
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let mib: u64 = std::env::var("NARLINK_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let t = std::time::Instant::now();
    let (layouts, data) = build_input(&roots, mib << 20);
    eprintln!(
        "input: {} NARs, {} bytes ({:.1} MiB) of NAR from {roots:?}, read in {:.1?}",
        layouts.len(),
        data.len(),
        data.len() as f64 / (1u64 << 20) as f64,
        t.elapsed()
    );
    let data = &data[..];

    let all = [PARAMS, params(8, 32, 128), params(32, 128, 512)];

    // The alternative implementations must agree with chunk_stream before they are timed.
    let reference = chunk_ids(data, &PARAMS);
    eprintln!(
        "shipped params: {} chunks, mean {} bytes",
        reference.len(),
        data.len() / reference.len().max(1)
    );
    assert_eq!(
        chunk_ids(Chain::new(&layouts), &PARAMS),
        reference,
        "fs reader differs from memory"
    );
    assert_eq!(pipeline(data, &PARAMS).0, reference, "pipeline differs");
    assert_eq!(
        cut_then_hash2(data, &PARAMS),
        reference,
        "cut_then_hash2 differs"
    );
    for p in &all {
        assert_eq!(
            split2(data, p).0,
            chunk_ids(data, p),
            "split2 differs at {}",
            label(p)
        );
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();

    let bytes = Throughput::Bytes(data.len() as u64);
    {
        let mut g = c.benchmark_group("chunk_hash/mem");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        for p in &all {
            g.bench_function(label(p), |b| b.iter(|| chunk_ids(black_box(data), p).len()));
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("cut_only/mem");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        for p in &all {
            g.bench_function(label(p), |b| {
                b.iter(|| {
                    fastcdc::v2020::FastCDC::new(
                        black_box(data),
                        p.min_size,
                        p.avg_size,
                        p.max_size,
                    )
                    .count()
                })
            });
        }
        g.finish();
    }
    {
        let shipped_cuts = cuts(data, &PARAMS);
        let mut g = c.benchmark_group("blake3_only/mem");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        g.bench_function(format!("chunks_{}", label(&PARAMS)), |b| {
            b.iter(|| {
                shipped_cuts.iter().fold(0u8, |acc, &(o, l)| {
                    acc ^ chunk_id(&black_box(data)[o..o + l])[0]
                })
            })
        });
        g.bench_function("whole_buffer_one_call", |b| {
            b.iter(|| blake3::hash(black_box(data)))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("fs");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(bytes.clone());
        g.bench_function("read_only_NarLayout_reader", |b| {
            let mut buf = vec![0u8; 4 << 20];
            b.iter(|| {
                let mut r = Chain::new(&layouts);
                let mut n = 0u64;
                loop {
                    let k = r.read(&mut buf).expect("read");
                    if k == 0 {
                        assert_eq!(n, data.len() as u64);
                        break n;
                    }
                    n += k as u64;
                }
            })
        });
        g.bench_function(format!("chunk_hash_{}", label(&PARAMS)), |b| {
            b.iter(|| chunk_ids(Chain::new(&layouts), &PARAMS).len())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("two_threads/mem");
        g.sampling_mode(SamplingMode::Flat).throughput(bytes);
        g.bench_function(
            format!("pipeline_cut_then_hash_thread_{}", label(&PARAMS)),
            |b| b.iter(|| pipeline(black_box(data), &PARAMS).0.len()),
        );
        g.bench_function(
            format!("window_cut_then_2_hashers_{}", label(&PARAMS)),
            |b| b.iter(|| cut_then_hash2(black_box(data), &PARAMS).len()),
        );
        g.bench_function(format!("split_in_2_halves_{}", label(&PARAMS)), |b| {
            b.iter(|| split2(black_box(data), &PARAMS).0.len())
        });
        g.finish();
    }
    {
        // The two-thread cases timed by their critical path in thread CPU time: what they would
        // take with a free core per thread, which this shared machine rarely has.
        let mut g = c.benchmark_group("two_threads_cpu_critical_path");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(
            format!("pipeline_cut_then_hash_thread_{}", label(&PARAMS)),
            |b| {
                b.iter_custom(|n| {
                    Duration::from_nanos((0..n).map(|_| pipeline(black_box(data), &PARAMS).1).sum())
                })
            },
        );
        g.bench_function(format!("split_in_2_halves_{}", label(&PARAMS)), |b| {
            b.iter_custom(|n| {
                Duration::from_nanos((0..n).map(|_| split2(black_box(data), &PARAMS).1).sum())
            })
        });
        g.finish();
    }
    // The single-threaded cases again, timed by the CPU time of the bench thread.
    let mut c = c.with_measurement(ThreadCpu(WallTime));
    {
        let shipped_cuts = cuts(data, &PARAMS);
        let mut g = c.benchmark_group("thread_cpu_time");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(data.len() as u64));
        for p in &all {
            g.bench_function(format!("chunk_hash_mem_{}", label(p)), |b| {
                b.iter(|| chunk_ids(black_box(data), p).len())
            });
        }
        g.bench_function(format!("cut_only_mem_{}", label(&PARAMS)), |b| {
            b.iter(|| {
                fastcdc::v2020::FastCDC::new(
                    black_box(data),
                    PARAMS.min_size,
                    PARAMS.avg_size,
                    PARAMS.max_size,
                )
                .count()
            })
        });
        g.bench_function(format!("blake3_only_mem_chunks_{}", label(&PARAMS)), |b| {
            b.iter(|| {
                shipped_cuts.iter().fold(0u8, |acc, &(o, l)| {
                    acc ^ chunk_id(&black_box(data)[o..o + l])[0]
                })
            })
        });
        g.bench_function(format!("fs_chunk_hash_{}", label(&PARAMS)), |b| {
            b.iter(|| chunk_ids(Chain::new(&layouts), &PARAMS).len())
        });
        g.finish();
    }
    c.final_summary();
}
