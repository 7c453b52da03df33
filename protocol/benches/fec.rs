//! FEC throughput of both codecs with 1 KiB shards at 10% loss.
//!
//! `CARGO_TARGET_DIR=/work/target-proto cargo bench -p narlink-protocol --bench fec`
//!
//! * encode: the first-pass parity of one group (`ceil(k / 10)` parity shards) through
//!   [`ErasureCode::encode`], which for the GF(2^16) codec computes all `P` parity shards.
//! * decode: one group with `ceil(k / 10)` data shards lost (a different random pattern each
//!   iteration, so the GF(2^8) crate's cache of inverted matrices does not flatter it),
//!   recovered from the first parity shards.
//!
//! Throughput is group data bytes (`k * 1024`) per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use narlink_protocol::fec::{ErasureCode, GroupShape, RsErasure8, RsSimd16};
use narlink_protocol::sim::Rng;
use std::hint::black_box;
use std::time::Duration;

const S: u16 = 1024;
const PATTERNS: usize = 512;

fn bench_code(c: &mut Criterion, name: &str, code: &dyn ErasureCode, k: u16, parity: u16) {
    let shape = GroupShape {
        k,
        parity,
        shard_size: S,
    };
    let mut rng = Rng::new(u64::from(k) << 16 | u64::from(parity));
    let data: Vec<Vec<u8>> = (0..k)
        .map(|_| (0..S).map(|_| rng.next_u32() as u8).collect())
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let lost = k.div_ceil(10);
    let parity_shards = code.encode(shape, &refs, 0..lost).unwrap();

    // Loss patterns: `lost` distinct data shards each.
    let patterns: Vec<Vec<(u16, &[u8])>> = (0..PATTERNS)
        .map(|_| {
            let mut gone = vec![false; usize::from(k)];
            let mut n = 0;
            while n < lost {
                let i = rng.below(u64::from(k)) as usize;
                if !gone[i] {
                    gone[i] = true;
                    n += 1;
                }
            }
            let mut shards: Vec<(u16, &[u8])> = (0..k)
                .filter(|&i| !gone[usize::from(i)])
                .map(|i| (i, refs[usize::from(i)]))
                .collect();
            shards.extend((0..lost).map(|j| (k + j, parity_shards[usize::from(j)].as_slice())));
            shards
        })
        .collect();

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(u64::from(k) * u64::from(S)));
    group.bench_function(format!("encode/k{k}/p{parity}"), |b| {
        b.iter(|| black_box(code.encode(shape, &refs, 0..lost).unwrap()))
    });
    let mut next = 0;
    group.bench_function(format!("decode/k{k}/p{parity}"), |b| {
        b.iter(|| {
            next = (next + 1) % PATTERNS;
            black_box(code.decode(shape, &patterns[next]).unwrap())
        })
    });
    group.finish();
}

fn fec(c: &mut Criterion) {
    let e8 = RsErasure8::default();
    bench_code(c, "rs-erasure-gf8", &e8, 32, 32);
    bench_code(c, "rs-erasure-gf8", &e8, 200, 56);
    let simd = RsSimd16;
    for (k, p) in [
        (200, 200),
        (1000, 100),
        (1000, 250),
        (1000, 1000),
        (4000, 1000),
        (4000, 4000),
    ] {
        bench_code(c, "rs-simd-gf16", &simd, k, p);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fec
}
criterion_main!(benches);
