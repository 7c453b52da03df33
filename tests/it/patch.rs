//! Patches: a rebuilt library whose addresses moved travels as bsdiff-style patches against
//! its previous version on board, and imports byte-exact.

use crate::common::*;

fn relocated(v: u32) -> String {
    nix_fixture("tests/nix/relocated.nix", v)
}

#[test]
fn relinked_library_travels_as_patches_and_imports() {
    let (v1, v2) = (relocated(1), relocated(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let plain = rig.p("plain.bundle");
    // The same update without deltas, from a second mirror, for comparison.
    rig.ground_init("mirror-plain", &v1);
    let without = rig.json(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror-plain"),
        "--unsigned",
        "--no-deltas",
        "--out",
        plain,
        &v2,
    ]);
    let r = rig.pack(&["--out", bundle, &v2]);
    let inspect = rig.json(&["inspect", bundle]);
    assert!(
        inspect["payloads_patch"].as_u64().unwrap() > 0,
        "no patch payloads: {inspect}"
    );
    assert_eq!(
        r["chunks_delta"], inspect["payloads_delta"],
        "pack and inspect count deltas alike: {r}"
    );
    let (with_b, without_b) = (
        r["bundle_bytes"].as_u64().unwrap(),
        without["bundle_bytes"].as_u64().unwrap(),
    );
    assert!(
        with_b * 10 < without_b,
        "patches should make the bundle far smaller: {with_b} B vs {without_b} B without deltas"
    );
    rig.receive(bundle);
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&v2);
    let lib = "lib/libcrypto.so.3";
    let on_device = sh(&format!(
        "cat {}/device{}/{lib} | sha256sum",
        rig.dir.display(),
        v2
    ));
    assert_eq!(on_device, sh(&format!("cat {v2}/{lib} | sha256sum")));

    // On one thread, the same payloads byte for byte (only the time differs).
    rig.ground_init("mirror-1", &v1);
    let one = rig.p("one.bundle");
    rig.json(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror-1"),
        "--unsigned",
        "--threads",
        "1",
        "--out",
        one,
        &v2,
    ]);
    let payloads = |f: &str| {
        let b = std::fs::read(f).unwrap();
        let h = narlink_protocol::bundle::BundleHeader::decode(&b).unwrap();
        b[h.payload_offset() as usize..].to_vec()
    };
    assert!(
        payloads(one) == payloads(bundle),
        "--threads 1 coded other payloads"
    );
}

/// The same update through lossy frames: spans (chunks coded together) are staged from the
/// link as they complete, resent when lost, and import byte-exact.
#[test]
fn relinked_library_in_spans_through_lossy_frames() {
    let (v1, v2) = (relocated(1), relocated(2));
    let rig = Rig::new(&v1);
    let r = rig.pack(&[
        "--out",
        rig.p("b"),
        "--frames",
        rig.p("pass1"),
        "--frame-size",
        "512",
        "--group-k",
        "8",
        "--redundancy",
        "0",
        &v2,
    ]);
    assert!(r["chunks_joined"].as_u64().unwrap() > 0, "no spans: {r}");
    // Lose every fourth frame of the first pass.
    let fl = 512 + 44;
    let all = std::fs::read(rig.p("pass1")).unwrap();
    let kept: Vec<u8> = all
        .chunks(fl)
        .enumerate()
        .filter(|(i, _)| i % 4 != 1)
        .flat_map(|(_, f)| f.to_vec())
        .collect();
    std::fs::write(rig.p("pass1"), &kept).unwrap();
    assert!(rig.receive_with_resend(rig.p("pass1")) > 1);
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&v2);
}

/// A solid group (the relinked library's patches coded as one group) with one byte changed
/// is refused whole: none of its parts is staged and import refuses; the genuine bytes then
/// stage and import byte-exact.
#[test]
fn a_damaged_solid_group_stages_nothing() {
    let (v1, v2) = (relocated(1), relocated(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let r = rig.pack(&["--out", bundle, &v2]);
    let solid = r["chunks_solid"].as_u64().unwrap();
    assert!(solid > 0, "no solid group: {r}");
    let inspect = rig.json(&["inspect", bundle]);
    assert_eq!(inspect["payloads_solid"].as_u64(), Some(solid), "{inspect}");
    let bad = rig.p("bad.bundle");
    std::fs::copy(bundle, bad).unwrap();
    let len = std::fs::metadata(bad).unwrap().len();
    for at in [len - 3, len - 2000] {
        flip(std::path::Path::new(bad), at);
        let out = rig.run(&["device", "receive", "--state", rig.p("state"), bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a damaged group was taken: {err}");
        rig.fails_with(
            &["device", "import", "--state", rig.p("state")],
            "payloads are not staged",
        );
        flip(std::path::Path::new(bad), at);
    }
    rig.receive(bundle);
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&v2);
}
