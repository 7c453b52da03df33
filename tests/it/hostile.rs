//! A hostile uplink: forged, stripped, junk, replayed and superseded frames mixed with a
//! genuine stream. Whatever comes first, the genuine update completes and verifies, with at
//! most one extra status -> resend round (design invariant 6).

use std::path::Path;

use narlink_protocol::bundle::{BundleHeader, HEADER_LEN};
use narlink_protocol::frame::{Frame, FrameSplitter};

use crate::common::*;

/// Small frames, so a demo bundle's head spans many groups.
pub const SMALL_FRAMES: [&str; 6] = ["--frame-size", "64", "--group-k", "4", "--redundancy", "25"];

/// The frames of a frames file.
pub fn frames_of(file: &str) -> Vec<Frame> {
    let mut s = FrameSplitter::new();
    s.push(&std::fs::read(file).unwrap());
    s.finish();
    std::iter::from_fn(|| s.next_frame()).collect()
}

pub fn write_frames(file: &str, frames: &[Frame]) {
    let mut out = Vec::new();
    for f in frames {
        f.as_ref().encode(&mut out);
    }
    std::fs::write(file, out).unwrap();
}

/// `f` with its payload changed by `edit`, checksum made anew: a frame that passes every
/// check a frame can pass.
pub fn forge(f: &Frame, edit: impl FnOnce(&mut Vec<u8>)) -> Frame {
    let mut p = f.payload().to_vec();
    edit(&mut p);
    Frame::new(*f.header(), p).unwrap()
}

/// The frames of bundle file `bundle` cut with the rig's small-frame options, named `id`.
fn cut(bundle: &Path, id: [u8; 16]) -> Vec<Frame> {
    use narlink::ground::link::{FrameSource, LinkOptions};
    let opts = LinkOptions {
        frame_size: 64,
        group_k: 4,
        redundancy_percent: 25,
        ..LinkOptions::default()
    };
    let mut src = FrameSource::open_raw(bundle, id, opts, None).unwrap();
    let pass = src.sender.first_pass();
    let mut frames = Vec::new();
    src.emit(pass, None, &mut |b| {
        frames.push(Frame::decode(b).unwrap().to_frame());
        Ok(())
    })
    .unwrap();
    frames
}

/// Where a bundle's signature block lies.
fn signature_block(bundle: &[u8]) -> std::ops::Range<u64> {
    let h = BundleHeader::decode(bundle).unwrap();
    h.signatures_offset()..h.payload_offset()
}

/// The shards (as frames) whose group's bytes overlap `range` of the bundle.
fn frames_over(frames: &[Frame], range: std::ops::Range<u64>) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| {
            let h = f.header();
            let layout = h.params.validate().unwrap();
            let r = layout.byte_range(h.group).unwrap();
            r.start < range.end && range.start < r.end
        })
        .collect()
}

/// Forged frames under the genuine bundle's id arrive before the genuine pass: its signature
/// block flipped (every shard of those groups), or stripped (a bundle without it, cut into
/// frames under the genuine id). The genuine bundle still completes and verifies, within one
/// extra status -> resend round, and the device reports the genuine bundle, not a refusal.
#[test]
fn forged_signature_frames_under_the_genuine_id_cost_at_most_one_round() {
    let (v1, v2) = (demo(1), demo(2));
    for variant in ["flipped", "flipped-one", "stripped"] {
        let rig = Rig::new(&v1);
        let mut args = vec!["--out", rig.p("b"), "--frames", rig.p("pass1")];
        args.extend_from_slice(&SMALL_FRAMES);
        args.push(&v2);
        rig.pack(&args);
        let bundle = std::fs::read(rig.p("b")).unwrap();
        let id: [u8; 16] = bundle[22..HEADER_LEN].try_into().unwrap();
        let genuine = frames_of(rig.p("pass1"));
        let sig = signature_block(&bundle);
        let forged: Vec<Frame> = match variant {
            "flipped" => frames_over(&genuine, sig.clone())
                .into_iter()
                .map(|f| forge(f, |p| p.iter_mut().for_each(|b| *b ^= 0x5a)))
                .collect(),
            "flipped-one" => vec![forge(frames_over(&genuine, sig.clone())[0], |p| p[0] ^= 1)],
            _ => {
                let mut b = bundle.clone();
                b.drain(sig.start as usize..sig.end as usize);
                b[6..8].copy_from_slice(&0u16.to_le_bytes());
                let f = rig.dir.join("stripped.bundle");
                std::fs::write(&f, b).unwrap();
                cut(&f, id)
            }
        };
        assert!(!forged.is_empty());
        write_frames(rig.p("forged"), &forged);
        rig.receive(rig.p("forged"));
        let passes = rig.receive_with_resend(rig.p("pass1"));
        assert!(passes <= 2, "{variant}: {passes} passes");
        rig.ok(&["device", "import", "--state", rig.p("state")]);
        rig.assert_holds(&v2);
    }
}

/// Peak RSS (GNU time's %M, KiB) of `narlink args`, and its output.
pub fn peak_rss(rig: &Rig, args: &[&str]) -> (std::process::Output, u64) {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "needs GNU time (/usr/bin/time): run scripts/setup.sh"
    );
    let out = nix_env(
        std::process::Command::new("/usr/bin/time").args(
            ["-f", "%M", "-o", rig.p("rss"), NARLINK, "--quiet"]
                .iter()
                .chain(args),
        ),
    )
    .output()
    .unwrap();
    let kib = std::fs::read_to_string(rig.p("rss"))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, kib)
}

/// An unsigned 8 kB bundle whose manifest claims the 256 MiB cap (zstd of zeros), on a device
/// that trusts only signed bundles, as a file and as frames: refused for its signature before
/// anything is decompressed, in under 64 MiB of peak RSS.
#[test]
fn unsigned_bundle_with_huge_manifest_is_refused_in_bounded_memory() {
    use narlink_protocol::bundle::MANIFEST_ZSTD;
    use narlink_protocol::manifest::MAX_MANIFEST_BYTES;
    let rig = Rig::new(&demo(1));
    let stored = zstd::bulk::compress(&vec![0u8; MAX_MANIFEST_BYTES as usize], 19).unwrap();
    let h = BundleHeader::for_head(&stored, MANIFEST_ZSTD, MAX_MANIFEST_BYTES, 0, &[]);
    let mut b = h.encode().to_vec();
    b.extend_from_slice(&stored);
    std::fs::write(rig.p("zeros"), &b).unwrap();
    let frames = cut(Path::new(rig.p("zeros")), h.id());
    write_frames(rig.p("zeros.frames"), &frames);
    eprintln!("bundle {} B, {} frames", b.len(), frames.len());

    let (out, kib) = peak_rss(
        &rig,
        &[
            "device",
            "receive",
            "--state",
            rig.p("state"),
            rig.p("zeros"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the bundle is not signed"), "{err}");
    eprintln!("refused bundle file: peak RSS {kib} KiB");
    assert!(kib < 64 * 1024, "refused bundle file peaked at {kib} KiB");

    let (out, kib) = peak_rss(
        &rig,
        &[
            "device",
            "receive",
            "--state",
            rig.p("state"),
            "--json",
            rig.p("zeros.frames"),
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = r["link"]["refused_bundles"].to_string();
    assert!(refused.contains("the bundle is not signed"), "{r}");
    eprintln!("refused bundle as frames: peak RSS {kib} KiB");
    assert!(
        kib < 64 * 1024,
        "refused bundle as frames peaked at {kib} KiB"
    );
}
