//! The device's receive path at the default link parameters (1 KiB frames, k = 1000,
//! P = 1000, 15 % first-pass parity, reed-solomon-simd GF(2^16)).
//!
//! `CARGO_TARGET_DIR=/work/target-bench2 cargo bench --bench receive`   (~2 min)
//!
//! * `fec_decode`: one group of `k` 1 KiB shards recovered from what survives 10 % loss of
//!   its first pass (`k` data + 15 % parity, each shard lost independently with probability
//!   0.1; the first `k` survivors in shard order, as the device holds when the group becomes
//!   decodable). A different loss pattern each iteration. `decode_group` is what the device
//!   calls (codec decode + concatenation + padding check); `codec_decode` is the codec
//!   alone. Throughput: group data bytes (`k * 1024`).
//! * `intake`: the device intake end to end, `LinkReceiver::open(..).handle_stream(frames)`
//!   into a fresh `DeviceState` (redb in a temporary directory, durable commits) per
//!   iteration: frames persisted, groups decoded, payloads verified (BLAKE3) and staged. The
//!   bundle is built in memory like `ground pack` builds one: `NARLINK_BENCH_RECEIVE_MIB`
//!   (default 64) MiB of random chunks of 16-256 KiB (`Encoding::Raw`, ids BLAKE3), no paths,
//!   a zstd manifest signed with a test key the device trusts. It is cut into its first-pass
//!   frames by `FrameSource::emit`, and 10 % of them are dropped: shard `s` of group `g` when
//!   `(919 s + 7 g) mod 1000 < 100`, so every group loses exactly 10 % of its first 1000
//!   shards (all groups need decoding, none more parity than the first pass carries), as
//!   `benches/scripts/receive_2gib.sh` does. `lossless` keeps every frame (groups
//!   decodable from their data shards). Throughput: bundle bytes. Setup (state creation) and
//!   teardown are not timed.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use narlink::chunking::{chunk_id, PARAMS};
use narlink::device::link::LinkReceiver;
use narlink::ground::link::{FrameSource, LinkOptions};
use narlink::ground::pack::encode_head;
use narlink::state::device::DeviceState;
use narlink_protocol::digest::{short, state_digest};
use narlink_protocol::fec;
use narlink_protocol::layout::GroupLayout;
use narlink_protocol::manifest::{Encoding, Manifest, Payload, MANIFEST_VERSION};
use narlink_protocol::params::{
    LinkParams, DEFAULT_GROUP_K, DEFAULT_REDUNDANCY_PERCENT, DEFAULT_SHARD_SIZE,
};
use narlink_protocol::signature::SecretKey;
use narlink_protocol::sim::Rng;
use narlink_protocol::storepath::PathSet;

const PATTERNS: usize = 256;
/// Which frames a case drops, by (group, shard).
type DropRule = fn(u32, u16) -> bool;
/// Loss, per mille.
const LOSS: u32 = 100;

fn fec_decode(c: &mut Criterion) {
    let s = usize::from(DEFAULT_SHARD_SIZE);
    let k = usize::from(DEFAULT_GROUP_K);
    // One full group: the bundle is exactly `k` shards long.
    let params = LinkParams::with_defaults((k * s) as u64);
    let layout: GroupLayout = params.validate().expect("default parameters");
    assert_eq!(layout.group_count(), 1);
    let code = fec::codec(params.codec);
    let mut rng = Rng::new(0x5eed);
    let bytes: Vec<u8> = (0..k * s).map(|_| rng.next_u32() as u8).collect();
    let sent = k + (k * usize::from(DEFAULT_REDUNDANCY_PERCENT)).div_ceil(100);
    let all: Vec<u16> = (0..sent as u16).collect();
    let shards =
        fec::encode_group_shards(code.as_ref(), &params, &layout, 0, &bytes, &all).unwrap();

    let patterns: Vec<Vec<(u16, &[u8])>> = (0..PATTERNS)
        .map(|_| loop {
            let survivors: Vec<(u16, &[u8])> = all
                .iter()
                .filter(|_| rng.below(1000) >= u64::from(LOSS))
                .map(|&i| (i, shards[usize::from(i)].as_slice()))
                .collect();
            if survivors.len() >= k {
                break survivors[..k].to_vec();
            }
        })
        .collect();
    let lost: usize = patterns
        .iter()
        .map(|p| p.iter().filter(|(i, _)| usize::from(*i) >= k).count())
        .sum();
    eprintln!(
        "fec_decode: k={k}, S={s}, P={}, {sent} shards sent; on average {:.1} data shards recovered from parity",
        params.parity,
        lost as f64 / PATTERNS as f64
    );
    // Every pattern decodes to the group's bytes.
    for p in patterns.iter().take(8) {
        assert_eq!(
            fec::decode_group(code.as_ref(), &params, &layout, 0, p).unwrap(),
            bytes
        );
    }

    let shape = fec::group_shape(&params, &layout, 0).unwrap();
    let mut g = c.benchmark_group("fec_decode");
    g.throughput(Throughput::Bytes((k * s) as u64));
    let mut next = 0;
    g.bench_function("decode_group/k1000/S1024/loss10", |b| {
        b.iter(|| {
            next = (next + 1) % PATTERNS;
            black_box(
                fec::decode_group(code.as_ref(), &params, &layout, 0, &patterns[next]).unwrap(),
            )
        })
    });
    g.bench_function("codec_decode/k1000/S1024/loss10", |b| {
        b.iter(|| {
            next = (next + 1) % PATTERNS;
            black_box(code.decode(shape, &patterns[next]).unwrap())
        })
    });
    g.finish();
}

/// A signed bundle of `mib` MiB of random raw chunks, written to a temporary file.
fn build_bundle(mib: usize, key: &SecretKey) -> tempfile::NamedTempFile {
    let mut rng = Rng::new(0xb0_d1e5);
    let target = mib << 20;
    let mut payload_bytes = Vec::with_capacity(target);
    let mut payloads = Vec::new();
    while payload_bytes.len() < target {
        let len = (16 << 10) + rng.below(240 << 10) as usize;
        let len = len.min(target - payload_bytes.len()).max(1);
        let start = payload_bytes.len();
        payload_bytes.extend((0..len).map(|_| rng.next_u32() as u8));
        let chunk = &payload_bytes[start..];
        payloads.push(Payload {
            chunk: chunk_id(chunk),
            raw_len: len as u32,
            encoded_len: len as u32,
            encoding: Encoding::Raw,
            reference: None,
        });
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        chunking: PARAMS,
        base_digest: short(&state_digest(std::iter::empty())),
        sequence: 1,
        roots: Vec::new(),
        paths: Vec::new(),
        payloads,
        sources: Vec::new(),
        pieces: Default::default(),
        nar_commitment: narlink_protocol::manifest::nar_commitment([]),
    };
    let (header, head) = encode_head(&manifest, &PathSet::default(), Some(key)).unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&head).unwrap();
    f.write_all(&payload_bytes).unwrap();
    f.flush().unwrap();
    assert_eq!(f.as_file().metadata().unwrap().len(), header.total_len());
    f
}

/// The first-pass frames of `bundle`, concatenated, without those `drop(group, shard)` says.
fn frames(bundle: &std::path::Path, drop: impl Fn(u32, u16) -> bool) -> (Vec<u8>, u64, u64) {
    let mut src = FrameSource::open(bundle, LinkOptions::default(), None).unwrap();
    let pass = src.sender.first_pass();
    let mut out = Vec::new();
    let (mut kept, mut dropped) = (0u64, 0u64);
    src.emit(pass, None, &mut |f| {
        // Frame layout (protocol/src/frame.rs): group u32 LE at 10, shard u16 LE at 14.
        let group = u32::from_le_bytes([f[10], f[11], f[12], f[13]]);
        let shard = u16::from_le_bytes([f[14], f[15]]);
        if drop(group, shard) {
            dropped += 1;
        } else {
            kept += 1;
            out.extend_from_slice(f);
        }
        Ok(())
    })
    .unwrap();
    (out, kept, dropped)
}

fn intake(c: &mut Criterion) {
    let mib: usize = std::env::var("NARLINK_BENCH_RECEIVE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let key = SecretKey::from_seed("narlink-bench-1", [7; 32]);
    let bundle = build_bundle(mib, &key);
    let bundle_len = bundle.as_file().metadata().unwrap().len();
    let cases: [(&str, DropRule); 2] = [
        ("lossless", |_, _| false),
        ("loss10", |g, s| {
            (919 * u64::from(s) + 7 * u64::from(g)) % 1000 < u64::from(LOSS)
        }),
    ];
    let mut g = c.benchmark_group("intake");
    g.throughput(Throughput::Bytes(bundle_len))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(15));
    for (name, drop) in cases {
        let (stream, kept, dropped) = frames(bundle.path(), drop);
        eprintln!(
            "intake/{name}: bundle {bundle_len} B, {kept} frames kept ({} B), {dropped} dropped",
            stream.len()
        );
        let run = |stream: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            let state = DeviceState::create(dir.path(), None).unwrap();
            state.set_trust(&[key.public()], &[], false).unwrap();
            let t = Instant::now();
            let mut r = LinkReceiver::open(&state).unwrap();
            r.handle_stream(stream).unwrap();
            let elapsed = t.elapsed();
            assert_eq!(r.stats.bundles_completed.len(), 1, "{:?}", r.stats);
            (elapsed, r.stats.groups_decoded)
        };
        let (_, groups) = run(&stream);
        eprintln!("intake/{name}: {groups} groups decoded, bundle complete");
        g.bench_function(format!("{name}/{mib}MiB"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(&stream).0).sum())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fec_decode, intake
}
criterion_main!(benches);
