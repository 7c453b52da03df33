//! Replays the fuzz inputs through the fuzz targets' checks, on stable Rust, so `cargo test`
//! keeps fixed bugs fixed.
//!
//! Each target's check is one function in `fuzz/src/checks.rs`, included here with `#[path]`
//! (the fuzz targets call the same file through the `narlink_fuzz_checks` crate). For every
//! target this runs each file of `fuzz/seeds/<target>/` (committed), and of
//! `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` when they exist (local fuzzing
//! output, not committed), and fails naming every input whose check panicked.
//!
//! The generated seeds are made here too, from the real encoders: `seeds_match_generator`
//! fails when the code's encodings drift from the committed files, and
//!
//! ```text
//! cargo test --test fuzz_corpus -- --ignored regenerate_seeds
//! ```
//!
//! rewrites them. Seeds not named by the generator (from real Nix or a real `ground pack`,
//! see `fuzz/README.md`) are left alone.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use narlink::ground::pack::encode_head;
use narlink_protocol::fec;
use narlink_protocol::frame::{Frame, FrameHeader, FrameRef};
use narlink_protocol::manifest::{
    nar_commitment, ChunkParams, ChunkRef, Encoding, Manifest, PathEntry, Payload, Reference,
    Rewrites, MANIFEST_VERSION,
};
use narlink_protocol::params::{CodecId, LinkParams};
use narlink_protocol::receiver::GroupTracker;
use narlink_protocol::signature::SecretKey;
use narlink_protocol::status::device::{Activation, BundleNote, Live, Reason};
use narlink_protocol::status::{self, DeviceSection, Phase, StatusReport};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `fuzz/{seeds,corpus,artifacts}/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["seeds", "corpus", "artifacts"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn check_of(target: &str) -> checks::Check {
    checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, check)| check)
        .unwrap_or_else(|| panic!("no fuzz check named {target}"))
}

fn replay(target: &str) {
    let check = check_of(target);
    let files = inputs(target);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(fuzz_dir().join("seeds"))),
        "no seeds in fuzz/seeds/{target}/"
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz check `{target}` failed on {} of {} inputs (messages above); reproduce one with \
         `cargo +nightly fuzz run {target} FILE` in fuzz/:\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    println!("{target}: {} inputs replayed", files.len());
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_check_has_a_replay_test() {
            let tested = [$(stringify!($target)),*];
            let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, tested);
        }
    };
}

replay_tests!(
    frame,
    frame_stream,
    status,
    manifest,
    bundle,
    nar,
    group_decode,
    receiver,
    patch,
    payload,
    solid,
    announce,
    link,
    seal,
);

// ---------------------------------------------------------------------------------------------
// Seeds

/// Generated seeds: (target, file name, bytes). Each is a handful of valid inputs made with the
/// real encoders, plus a few near misses.
fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        assert!(
            bytes.len() < 64 << 10,
            "seed {target}/{name} is over 64 KiB"
        );
        seeds.push((target, name.to_string(), bytes));
    };
    for (name, bytes) in frame_seeds() {
        add("frame", &name, bytes);
    }
    for (name, bytes) in frame_stream_seeds() {
        add("frame_stream", &name, bytes);
    }
    for (name, bytes) in status_seeds() {
        add("status", &name, bytes);
    }
    for (name, m) in manifests() {
        let wire = m.to_wire(&checks::names_of(&m)).expect("encode manifest");
        add("manifest", &name, wire);
    }
    for (name, bytes) in bundle_seeds() {
        add("bundle", &name, bytes);
    }
    for (name, bytes) in nar_seeds() {
        add("nar", &name, bytes);
    }
    for (name, bytes) in group_decode_seeds() {
        add("group_decode", &name, bytes);
    }
    for (name, bytes) in receiver_seeds() {
        add("receiver", &name, bytes);
    }
    for (name, bytes) in patch_seeds() {
        add("patch", &name, bytes);
    }
    for (name, bytes) in payload_seeds() {
        add("payload", &name, bytes);
    }
    for (name, bytes) in solid_seeds() {
        add("solid", &name, bytes);
    }
    for (name, bytes) in announce_seeds() {
        add("announce", &name, bytes);
    }
    for (name, bytes) in link_seeds() {
        add("link", &name, bytes);
    }
    for (name, bytes) in seal_seeds() {
        add("seal", &name, bytes);
    }
    seeds
}

/// Operation sequences for the whole receiver: the genuine frames in order; junk and forged
/// frames first, then the genuine ones with a crash in the middle; forged announcements and
/// stripped-head frames interleaved; forged withdrawals around the genuine frames.
fn link_seeds() -> Vec<(String, Vec<u8>)> {
    let n = checks::link_bundle().frames.len() as u8;
    let genuine: Vec<u8> = [4].into_iter().chain((0..n).flat_map(|i| [0, i])).collect();
    let mut junk_first = Vec::new();
    for i in 0..40u8 {
        junk_first.extend([2, i, i % 8, i % 5]);
        junk_first.extend([1, i % n, i, 0x55]);
    }
    for (j, i) in (0..n).enumerate() {
        junk_first.extend([0, i]);
        if j == usize::from(n / 2) {
            junk_first.push(6);
        }
    }
    let mut mixed = vec![3, 10, 3, 40];
    for i in 0..n {
        mixed.extend([7, i, 0, i, 3, i]);
    }
    // Forged withdrawals before, amid and after the genuine frames.
    let mut withdrawals = vec![9, 0, 9, 1, 4];
    for i in 0..n {
        withdrawals.extend([0, i, 9, i.wrapping_mul(7)]);
    }
    withdrawals.extend([5, 9, 2, 9, 71]);
    vec![
        ("genuine".into(), genuine),
        ("junk-forged-crash".into(), junk_first),
        ("forged-announcements-stripped".into(), mixed),
        ("forged-withdrawals".into(), withdrawals),
    ]
}

/// A real status report sealed under the seeds' key, and the same sealed by another device.
fn seal_seeds() -> Vec<(String, Vec<u8>)> {
    use narlink_protocol::seal::seal;
    let mut report = Vec::new();
    StatusReport::new([3; 16], [4; 16], Phase::Receiving, vec![(0, 5), (7, 2)])
        .expect("report")
        .encode(&mut report);
    vec![
        ("status-report".into(), seal(&checks::SEAL_KEY, 9, &report)),
        ("foreign-device".into(), seal(&[1; 32], 9, &report)),
    ]
}

/// Signed announcements with the smallest shard that carries one and a usual one, and one
/// whose padding is not zero.
fn announce_seeds() -> Vec<(String, Vec<u8>)> {
    use narlink_protocol::announce::{Announcement, Withdrawal, ANNOUNCE_LEN, WITHDRAW_LEN};
    let mut seeds = Vec::new();
    for len in [ANNOUNCE_LEN, 1024] {
        let h = checks::announce_header(len);
        let a = Announcement::sign(&checks::announce_key(), h.bundle_id, h.params, 42);
        let (_, payload) = a.to_frame().expect("long enough");
        seeds.push((format!("signed-{len}"), payload));
    }
    let mut bad = seeds[1].1.clone();
    bad[500] = 1;
    seeds.push(("nonzero-padding".into(), bad));
    for len in [WITHDRAW_LEN, 1024] {
        let h = checks::announce_header(len);
        let w = Withdrawal::sign(&checks::announce_key(), h.bundle_id, h.params);
        let (_, payload) = w.to_frame().expect("long enough");
        seeds.push((format!("withdrawal-{len}"), payload));
    }
    let c = narlink_protocol::confirm::Confirmation::new(&checks::SEAL_KEY, [7; 16], 2, 9);
    seeds.push(("confirmation".into(), c.to_frame().1));
    seeds
}

#[test]
fn seeds_match_generator() {
    let mut stale = Vec::new();
    for (target, name, bytes) in generated_seeds() {
        let path = fuzz_dir().join("seeds").join(target).join(&name);
        if fs::read(&path).ok().as_ref() != Some(&bytes) {
            stale.push(format!("{target}/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated fuzz seeds differ from the encoders' output (a format changed?): {stale:?}; \
         run `cargo test --test fuzz_corpus -- --ignored regenerate_seeds` and commit fuzz/seeds"
    );
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand after a format change"]
fn regenerate_seeds() {
    for (target, name, bytes) in generated_seeds() {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).expect("create seeds directory");
        fs::write(dir.join(&name), bytes).expect("write seed");
    }
}

fn encode_frame(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameRef::new(header, payload)
        .expect("a valid seed frame")
        .encode(&mut out);
    out
}

/// Bundle bytes for the FEC seeds: deterministic, not all one value.
fn bundle_bytes(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// The real frames of shards `shards` of `group` of a bundle of `bundle_bytes(L)`.
fn real_frames(params: LinkParams, id: [u8; 16], group: u32, shards: &[u16]) -> Vec<Vec<u8>> {
    let layout = params.validate().expect("valid seed parameters");
    let bundle = bundle_bytes(params.bundle_len as usize);
    let range = layout.byte_range(group).expect("seed group exists");
    let code = fec::codec(params.codec);
    let payloads = fec::encode_group_shards(
        &*code,
        &params,
        &layout,
        group,
        &bundle[range.start as usize..range.end as usize],
        shards,
    )
    .expect("encode seed shards");
    shards
        .iter()
        .zip(payloads)
        .map(|(&shard, payload)| {
            let header = FrameHeader {
                bundle_id: id,
                params,
                group,
                shard,
            };
            encode_frame(header, &payload)
        })
        .collect()
}

fn small_simd() -> LinkParams {
    // 50 bytes in shards of 8: 7 shards, K = 4: groups of 4 and 3; P = 4.
    LinkParams {
        codec: CodecId::RsSimd16,
        shard_size: 8,
        group_k: 4,
        parity: 4,
        bundle_len: 50,
    }
}

fn small_erasure8() -> LinkParams {
    // 20 bytes in shards of 3: 7 shards, K = 5: groups of 4 and 3; P = 3.
    LinkParams {
        codec: CodecId::RsErasure8,
        shard_size: 3,
        group_k: 5,
        parity: 3,
        bundle_len: 20,
    }
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let id = *b"0123456789abcdef";
    let mut seeds = Vec::new();
    let simd = real_frames(small_simd(), id, 1, &[0, 2, 5]);
    seeds.push(("simd-data-g1s0".into(), simd[0].clone()));
    seeds.push(("simd-last-data-padded-g1s2".into(), simd[1].clone()));
    seeds.push(("simd-parity-g1s5".into(), simd[2].clone()));
    let e8 = real_frames(small_erasure8(), [7; 16], 0, &[3, 6]);
    seeds.push(("erasure8-data-g0s3".into(), e8[0].clone()));
    seeds.push(("erasure8-parity-g0s6".into(), e8[1].clone()));
    let big = LinkParams {
        codec: CodecId::RsSimd16,
        shard_size: 256,
        group_k: 1000,
        parity: 1000,
        bundle_len: 3000,
    };
    seeds.push((
        "simd-s256-parity".into(),
        real_frames(big, [9; 16], 0, &[12 + 500])[0].clone(),
    ));
    for (_, f) in &seeds {
        assert!(Frame::decode(f).is_ok());
    }
    seeds
}

fn frame_stream_seeds() -> Vec<(String, Vec<u8>)> {
    let stream_input = |split: u16, max_shard: u16, stream: &[u8]| {
        let mut v = Vec::new();
        v.extend_from_slice(&split.to_le_bytes());
        v.extend_from_slice(&max_shard.to_le_bytes());
        v.extend_from_slice(stream);
        v
    };
    let frames = real_frames(small_simd(), [1; 16], 0, &[0, 1, 2, 3, 4, 5]);
    let e8 = real_frames(small_erasure8(), [2; 16], 1, &[0, 1, 2, 3]);
    let mut seeds = Vec::new();

    let clean = frames.concat();
    seeds.push(("clean-split0".into(), stream_input(0, 0, &clean)));
    // Cut in the middle of the second frame's header.
    let cut = (frames[0].len() + 17) as u16;
    seeds.push((
        "clean-split-mid-header".into(),
        stream_input(cut, 8, &clean),
    ));

    // Garbage, a false magic, a frame with a flipped payload bit, a frame of another bundle,
    // and a truncated frame at the end.
    let mut dirty = b"garbage nL\x01 more".to_vec();
    dirty.extend_from_slice(&frames[0]);
    let mut flipped = frames[1].clone();
    flipped[45] ^= 0x10;
    dirty.extend_from_slice(&flipped);
    dirty.extend_from_slice(&e8[0]);
    dirty.extend_from_slice(b"nLnL");
    dirty.extend_from_slice(&frames[2]);
    dirty.extend_from_slice(&e8[3][..30]);
    seeds.push(("dirty-split-mid".into(), stream_input(60, 0, &dirty)));
    // A length cap that rejects the larger frames.
    seeds.push(("dirty-capped".into(), stream_input(7, 4, &dirty)));
    seeds
}

fn status_seeds() -> Vec<(String, Vec<u8>)> {
    let enc = |r: &StatusReport| {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(StatusReport::decode(&out).as_ref(), Ok(r));
        out
    };
    let id = [3; 16];
    let digest = [4; 16];
    let mut seeds = Vec::new();
    seeds.push((
        "idle-empty".into(),
        enc(&StatusReport::empty(id, digest, Phase::Idle)),
    ));
    let r = StatusReport::new(
        id,
        digest,
        Phase::Receiving,
        [(0, 4), (1, 4), (2, 3), (10, 100), (11, 0), (12, 1)],
    )
    .expect("sorted needs");
    seeds.push(("receiving-runs".into(), enc(&r)));
    let sparse = StatusReport::new(
        id,
        digest,
        Phase::Unknown(9),
        [(5, 65535), (70_000, 1), (4_000_000_000, 300), (u32::MAX, 2)],
    )
    .expect("sorted needs");
    seeds.push(("unknown-phase-sparse".into(), enc(&sparse)));
    let mut long = StatusReport::new(
        id,
        digest,
        Phase::Receiving,
        (0..400u32).map(|g| (g * 3, (g % 7 + 1) as u16 * 90)),
    )
    .expect("sorted needs");
    assert!(long.truncate_to(StatusReport::budget(40)));
    assert!(long.is_truncated());
    seeds.push(("truncated".into(), enc(&long)));
    // What a device tracker reports midway.
    let params = LinkParams {
        codec: CodecId::RsSimd16,
        shard_size: 4,
        group_k: 4,
        parity: 2,
        bundle_len: 40,
    };
    let mut t = GroupTracker::new(id, params, &Default::default()).expect("tracker");
    for (g, s) in [(0, 0), (0, 4), (1, 0), (1, 1), (1, 2), (2, 1)] {
        t.handle_shard(g, s);
    }
    t.mark_decoded(1);
    seeds.push((
        "tracker-report".into(),
        enc(&t.status_report(digest, Phase::Receiving)),
    ));
    // Everything the device section can say.
    let mut full = StatusReport::new(id, digest, Phase::ImportFailed, [(7, 2)]).expect("sorted");
    full.device = DeviceSection {
        live: Some(Live {
            generation: 300,
            root: [9, 8, 7, 6, 5],
        }),
        activation: Activation::RolledBack,
        sequence: 1 << 40,
        reason: Reason::Activation,
        others: vec![
            BundleNote {
                id_prefix: [1, 2, 3, 4],
                phase: Phase::Superseded,
                reason: Reason::Superseded,
            },
            BundleNote {
                id_prefix: [5, 6, 7, 8],
                phase: Phase::ImportFailed,
                reason: Reason::Unknown(99),
            },
        ],
        removed: vec![[1; 5], [2; 5], [3; 5]],
        probation: None,
    };
    full.lists_cut = true;
    full.removals_lost = true;
    seeds.push(("device-section".into(), enc(&full)));
    // A generation reverted after its health check failed.
    full.device.activation = Activation::Reverted;
    full.device.probation = Some(narlink_protocol::status::device::Probation {
        bundle_prefix: [1, 2, 3, 4],
        reason: Reason::HealthCheck,
        reports: 300,
        minutes: 1 << 20,
        starts: 3,
        check: b"20-uplink".to_vec(),
    });
    seeds.push(("device-probation".into(), enc(&full)));
    // A version 1 report (no device section), as older devices send.
    let mut v1 = enc(&r)[..37].to_vec();
    v1[2] = 1;
    v1.extend_from_slice(&enc(&r)[status::FIXED_LEN - 4..enc(&r).len() - 4]);
    let crc = narlink_protocol::frame::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    seeds.push(("version-1".into(), v1));
    seeds
}

fn chunk(id: u8, len: u32) -> ChunkRef {
    ChunkRef { id: [id; 16], len }
}

fn manifests() -> Vec<(String, Manifest)> {
    let chunking = narlink::chunking::PARAMS;
    let empty = Manifest {
        version: MANIFEST_VERSION,
        chunking,
        base_digest: [0; 16],
        sequence: 1,
        roots: vec![],
        paths: vec![],
        payloads: vec![],
        sources: vec![],
        pieces: Default::default(),
        nar_commitment: nar_commitment([]),
    };
    let lib = "/nix/store/0c8f5dd1zxb7mrnr8hb0hpwxzfz1b4qa-libfoo-1.0".to_string();
    let app = "/nix/store/9vv4bd0l5i8k8gd9hkqhhq1rhs0h2f60-app-2.0".to_string();
    let two = Manifest {
        version: MANIFEST_VERSION,
        chunking,
        base_digest: [2; 16],
        sequence: 7,
        roots: vec![app.clone()],
        paths: vec![
            PathEntry {
                store_path: lib.clone(),
                nar_hash: Some([4; 32]),
                nar_size: 70_000,
                references: vec![lib.clone()],
                deriver: None,
                chunks: vec![chunk(5, 20_000), chunk(6, 50_000)],
                copies: Vec::new(),
                // Its own hash at bytes 1000 and 41000 of the NAR.
                rewrites: Rewrites::At(vec![(1000, 0), (40_000, 0)]),
            },
            PathEntry {
                store_path: app.clone(),
                nar_hash: Some([7; 32]),
                nar_size: 120,
                references: vec![lib, app.clone()],
                deriver: Some("/nix/store/n8i3c2w5zqi4x6pmm8lkfzxbj5wl3y5c-app-2.0.drv".into()),
                chunks: vec![chunk(8, 120)],
                copies: Vec::new(),
                // libfoo's hash at byte 16, its own at byte 56.
                rewrites: Rewrites::Scan(vec![1, 0]),
            },
        ],
        payloads: vec![
            Payload {
                chunk: [6; 16],
                raw_len: 50_000,
                encoded_len: 900,
                encoding: Encoding::Zstd,
                reference: None,
            },
            Payload {
                chunk: [8; 16],
                raw_len: 120,
                encoded_len: 120,
                encoding: Encoding::Raw,
                reference: None,
            },
            // A delta against 4 KiB of the previous libfoo's NAR, which the device holds.
            Payload {
                chunk: [5; 16],
                raw_len: 20_000,
                encoded_len: 300,
                encoding: Encoding::ZstdRef,
                reference: Some(Reference {
                    source: 0,
                    offset: 8192,
                    len: 4096,
                }),
            },
        ],
        sources: vec!["/nix/store/5q3x1yqzyrj0sfv7h9ld6cw3b6fjx9qm-libfoo-0.9".into()],
        // 1,320 payload bytes: two pieces of 1 KiB.
        pieces: narlink_protocol::pieces::Pieces {
            log2: 10,
            hashes: vec![[0x11; 8], [0x22; 8]],
        },
        nar_commitment: nar_commitment(&[[4; 32], [7; 32]]),
    };
    let other_chunking = Manifest {
        chunking: ChunkParams {
            algorithm: 1,
            min_size: 2048,
            avg_size: 8192,
            max_size: 65536,
        },
        ..empty.clone()
    };
    vec![
        ("empty".into(), empty),
        ("two-paths".into(), two),
        ("other-chunking".into(), other_chunking),
    ]
}

fn bundle_seeds() -> Vec<(String, Vec<u8>)> {
    let key = SecretKey::from_seed("fuzz-seed-1", [11; 32]);
    let mut seeds = Vec::new();
    for (name, m) in manifests() {
        let signed = name == "two-paths";
        let (_, mut bytes) = encode_head(&m, &checks::names_of(&m), signed.then_some(&key))
            .expect("encode manifest");
        // read_manifest stops before the payloads; a few bytes follow for realism.
        bytes.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
        let suffix = if signed { "signed" } else { "unsigned" };
        seeds.push((format!("{name}-{suffix}"), bytes));
    }
    seeds
}

fn nar_seeds() -> Vec<(String, Vec<u8>)> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::write(&p, bytes).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    write("hello", b"hello, world\n", 0o644);
    write("script", b"#!/bin/sh\necho hi\n", 0o755);
    write("empty", b"", 0o644);
    symlink("../lib/libfoo.so.1", root.join("link")).expect("symlink");
    fs::create_dir(root.join("emptydir")).expect("mkdir");
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("bin")).expect("mkdir");
    fs::create_dir_all(tree.join("share/doc/x")).expect("mkdir");
    fs::write(tree.join("bin/app"), bundle_bytes(300)).expect("write");
    fs::set_permissions(tree.join("bin/app"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(tree.join("share/doc/x/README"), b"read me\n").expect("write");
    fs::write(tree.join("share/doc/x/a"), b"12345678").expect("write");
    fs::write(tree.join("share/doc/x/B"), b"").expect("write");
    symlink("bin/app", tree.join("default")).expect("symlink");
    symlink(
        "/nix/store/0c8f5dd1zxb7mrnr8hb0hpwxzfz1b4qa-libfoo-1.0",
        tree.join("dep"),
    )
    .expect("symlink");

    ["hello", "script", "empty", "link", "emptydir", "tree"]
        .into_iter()
        .map(|name| {
            let mut out = Vec::new();
            narlink::nar::dump(&root.join(name), &mut out).expect("dump seed tree");
            narlink::nar::validate(&out[..]).expect("seed NAR validates");
            (format!("{name}.nar"), out)
        })
        .collect()
}

/// One shard of a group_decode input: `index: u16, kind: u8` and its bytes.
fn shard_op(out: &mut Vec<u8>, index: u16, kind: u8, bytes: &[u8]) {
    out.extend_from_slice(&index.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(bytes);
}

fn group_decode_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    // Link-parameter mode: real shards of a group, some data lost, parity in its place.
    for (name, params, group, shards) in [
        ("simd-g0-lost-data", small_simd(), 0u32, vec![1u16, 3, 4, 6]),
        ("simd-g1-last-padded", small_simd(), 1, vec![0, 4, 6]),
        (
            "erasure8-g1-parity-only",
            small_erasure8(),
            1,
            vec![3, 4, 5],
        ),
        (
            "erasure8-g0-all-data",
            small_erasure8(),
            0,
            vec![0, 1, 2, 3, 5],
        ),
    ] {
        let layout = params.validate().expect("valid");
        let bundle = bundle_bytes(params.bundle_len as usize);
        let range = layout.byte_range(group).expect("group");
        let code = fec::codec(params.codec);
        let payloads = fec::encode_group_shards(
            &*code,
            &params,
            &layout,
            group,
            &bundle[range.start as usize..range.end as usize],
            &shards,
        )
        .expect("encode");
        let mut v = vec![u8::from(params.codec == CodecId::RsErasure8)];
        v.extend_from_slice(&params.shard_size.to_le_bytes());
        v.extend_from_slice(&params.group_k.to_le_bytes());
        v.extend_from_slice(&params.parity.to_le_bytes());
        v.extend_from_slice(&(params.bundle_len as u32).to_le_bytes());
        v.extend_from_slice(&group.to_le_bytes());
        for (&i, p) in shards.iter().zip(&payloads) {
            shard_op(&mut v, i, 0, p);
        }
        seeds.push((name.to_string(), v));
    }
    // Raw-shape mode: k = 3, P = 2, S = 4, data shard 1 lost, both parity shards, a duplicate.
    let data = [*b"abcd", *b"efgh", *b"ijkl"];
    let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    for (codec, flags) in [(CodecId::RsSimd16, 2u8), (CodecId::RsErasure8, 3)] {
        let shape = fec::GroupShape {
            k: 3,
            parity: 2,
            shard_size: 4,
        };
        let parity = fec::codec(codec)
            .encode(shape, &refs, 0..2)
            .expect("encode");
        let mut v = vec![flags];
        for x in [3u16, 2, 4] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        shard_op(&mut v, 0, 0, &data[0]);
        shard_op(&mut v, 2, 0, &data[2]);
        shard_op(&mut v, 0, 1, &[0x55]);
        shard_op(&mut v, 4, 0, &parity[1]);
        shard_op(&mut v, 3, 0, &parity[0]);
        seeds.push((format!("raw-{codec:?}").to_lowercase(), v));
    }
    // Pattern, wrong-length and copied shards.
    let mut v = vec![0u8];
    for x in [16u16, 4, 4] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&100u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    shard_op(&mut v, 0, 1, &[7]);
    shard_op(&mut v, 5, 1, &[9]);
    shard_op(&mut v, 6, 3, &[0]);
    shard_op(&mut v, 7, 2, &[1]);
    shard_op(&mut v, 2, 1, &[0]);
    seeds.push(("patterns".into(), v));
    seeds
}

/// One receiver operation: opcode, group byte, shard byte (both below 0x80: small values).
fn op(out: &mut Vec<u8>, code: u8, group: u8, shard: u8) {
    out.extend_from_slice(&[code, group, shard]);
}

fn receiver_seeds() -> Vec<(String, Vec<u8>)> {
    let head = |codec: u8, s: u16, k: u16, p: u16, len: u32| {
        let mut v = vec![codec];
        for x in [s, k, p] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&len.to_le_bytes());
        v
    };
    let mut seeds = Vec::new();
    // 10 shards of 4 bytes, K = 4: groups of 4, 3, 3; P = 2.
    let mut v = head(0, 4, 4, 2, 40);
    for (g, s) in [
        (1, 0),
        (1, 0),
        (1, 4),
        (1, 5),
        (1, 2),
        (1, 3),
        (0, 0),
        (2, 1),
    ] {
        op(&mut v, 0, g, s);
    }
    op(&mut v, 5, 1, 0); // query group 1
    op(&mut v, 6, 0, 1); // status report
    op(&mut v, 4, 1, 0); // mark group 1 decoded
    op(&mut v, 1, 1, 1); // shard of a decoded group
    op(&mut v, 4, 3, 0); // mark a group that does not exist
    op(&mut v, 3, 0, 1); // as a frame
    op(&mut v, 0x13, 0, 2); // frame of another bundle
    op(&mut v, 0x23, 0, 2); // frame with other parameters
    op(&mut v, 7, 0, 0); // rebuild and compare
    op(&mut v, 6, 0, 9);
    seeds.push(("simd-three-groups".into(), v));

    // GF(2^8), groups of 10 and 9 shards, P = 5: finish every group.
    let mut v = head(1, 16, 10, 5, 19 * 16 - 3);
    for g in 0..2u8 {
        for s in 0..12u8 {
            op(&mut v, 2, g, s);
        }
        op(&mut v, 4, g, 0);
    }
    op(&mut v, 7, 0, 0);
    op(&mut v, 6, 0, 2);
    seeds.push(("erasure8-complete".into(), v));

    // Many small groups (status report truncation), out-of-range operands.
    let mut v = head(0, 2, 3, 1, 2 * 3 * 200);
    for g in (0..120u8).step_by(3) {
        op(&mut v, 0, g, 0);
    }
    op(&mut v, 0, 0x80, 0x80);
    v.extend_from_slice(&u32::MAX.to_le_bytes());
    v.extend_from_slice(&7u16.to_le_bytes());
    op(&mut v, 6, 0, 1);
    op(&mut v, 7, 0, 0);
    seeds.push(("many-groups".into(), v));

    // Parameters over the fuzz limits: the tracker refuses them.
    seeds.push(("refused-params".into(), head(0, 2, 1, 1, u32::MAX)));
    seeds
}

/// Patches made by the ground's bsdiff search, framed as the `patch` check reads them.
fn patch_seeds() -> Vec<(String, Vec<u8>)> {
    let framed = |reference: &[u8], new: &[u8]| {
        let p = narlink::ground::bsdiff::Reference::new(reference)
            .diff(new)
            .expect("small inputs stay within the work bound");
        let mut out = (reference.len() as u16).to_le_bytes().to_vec();
        out.extend_from_slice(&(new.len() as u32).to_le_bytes());
        out.extend_from_slice(reference);
        out.extend_from_slice(&p.to_bytes());
        out
    };
    let code: Vec<u8> = (0..2000u32).flat_map(|i| (i * 16).to_le_bytes()).collect();
    let shifted: Vec<u8> = (0..2000u32)
        .flat_map(|i| (i * 16 + 64).to_le_bytes())
        .collect();
    let mut inserted = code[..4000].to_vec();
    inserted.extend_from_slice(b"a few new bytes in the middle");
    inserted.extend_from_slice(&code[4000..]);
    vec![
        ("shifted-addresses".into(), framed(&code, &shifted)),
        ("insertion".into(), framed(&code, &inserted)),
        ("empty-reference".into(), framed(b"", b"all new")),
        ("empty-chunk".into(), framed(b"reference", b"")),
    ]
}

/// One payload of each encoding, made by the ground's encoders, framed as the `payload` check
/// reads them (the chunk ids will not match: the check's chunk id is zero).
fn payload_seeds() -> Vec<(String, Vec<u8>)> {
    use narlink::payload;
    let code: Vec<u8> = (0..3000u32).flat_map(|i| (i * 16).to_le_bytes()).collect();
    let shifted: Vec<u8> = (0..3000u32)
        .flat_map(|i| (i * 16 + 64).to_le_bytes())
        .collect();
    let framed = |encoding: u8, reference: &[u8], bytes: &[u8]| {
        let mut out = vec![encoding];
        out.extend_from_slice(&(shifted.len() as u32).to_le_bytes());
        out.extend_from_slice(&(reference.len() as u16).to_le_bytes());
        out.extend_from_slice(reference);
        out.extend_from_slice(bytes);
        out
    };
    let (_, plain) = payload::encode(&shifted, 19);
    let dictionary = zstd::dict::EncoderDictionary::copy(&code, 19);
    let delta = payload::encode_delta(&shifted, &dictionary, usize::MAX).expect("delta");
    let prepared = narlink::ground::bsdiff::Reference::new(&code);
    let patch =
        narlink::ground::bsdiff::encode_patch(&shifted, &prepared, usize::MAX).expect("patch");
    vec![
        ("raw".into(), framed(0, b"", &shifted)),
        ("zstd".into(), framed(1, b"", &plain)),
        ("zstd-delta".into(), framed(2, &code, &delta)),
        ("patch".into(), framed(3, &code, &patch)),
    ]
}

/// Solid groups made by the real encoder, in the check's input layout: a group of two
/// parts (a patch against a reference, then new bytes) with its differences in each form,
/// and the same with a byte flipped.
fn solid_seeds() -> Vec<(String, Vec<u8>)> {
    let code: Vec<u8> = (0..3000u32).flat_map(|i| (i * 16).to_le_bytes()).collect();
    let shifted: Vec<u8> = (0..3000u32)
        .flat_map(|i| (i * 16 + 64).to_le_bytes())
        .collect();
    let fresh: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    let a = narlink::ground::bsdiff::Reference::new(&code)
        .diff(&shifted)
        .expect("patch");
    let b = narlink::ground::bsdiff::Reference::new(&[])
        .diff(&fresh)
        .expect("patch");
    let mut seeds = Vec::new();
    for (name, form) in [
        ("two-parts", narlink::solid::DiffForm::Bytes),
        ("two-parts-runs", narlink::solid::DiffForm::Runs),
    ] {
        let bytes = narlink::solid::encode_with(&[&a, &b], &[form]).expect("encode");
        let mut out = vec![1u8];
        for (data, reference) in [(&shifted, &code[..]), (&fresh, &[][..])] {
            out.extend_from_slice(&(data.len() as u16 - 1).to_le_bytes());
            out.extend_from_slice(&narlink::chunking::chunk_id(data));
            // An odd length says "has a reference": pad the reference to one.
            let r: Vec<u8> = if reference.is_empty() {
                Vec::new()
            } else {
                let mut r = reference.to_vec();
                if r.len() % 2 == 0 {
                    r.push(0);
                }
                r
            };
            out.extend_from_slice(&(r.len() as u16).to_le_bytes());
            out.extend_from_slice(&r);
        }
        out.extend_from_slice(&bytes);
        let mut flipped = out.clone();
        let n = flipped.len();
        flipped[n - 5] ^= 0x10;
        seeds.push((name.to_string(), out));
        seeds.push((format!("{name}-flipped"), flipped));
    }
    seeds
}

/// The receiver's journal under power cuts (redb's `tests/crash_consistency.rs` pattern, on
/// `narlink::state::medium::Medium`, no Nix): the power fails during every sync of a
/// genuine delivery with junk frames among it, with none, some or all of the writes since the
/// last sync surviving; each time the state reopens, the report names nothing but the genuine
/// bundle, and one more round completes it with every payload intact (three when forged
/// frames under the genuine id came too: a forged head and then forged payload groups cost a
/// round each, see `checks::link_power_cut`).
#[test]
fn receiver_survives_a_power_cut_at_every_sync() {
    // Syncs a delivery met, and power cuts that happened (a delivery without forged frames
    // needs fewer syncs than one with them).
    let (mut syncs, mut cuts) = (0, 0);
    for cut in 1.. {
        let mut happened = 0;
        for torn in [0, 1, 2, 5, usize::MAX] {
            for forged in [false, true] {
                happened += u32::from(checks::link_power_cut(cut, torn, forged));
            }
        }
        if happened == 0 {
            break;
        }
        (syncs, cuts) = (cut, cuts + happened);
    }
    assert!(syncs >= 10, "a delivery needs only {syncs} syncs");
    eprintln!(
        "{cuts} power cuts, at each of {syncs} syncs, 5 torn variants, with and without forgeries"
    );
}
