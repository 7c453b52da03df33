//! The spine: pack, receive, import, status and ack with real Nix; refusal of damaged bundles.

use std::path::Path;

use crate::common::*;

#[test]
fn update_v1_to_v2_imports_verifies_and_acks() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let r = rig.pack(&["--out", bundle, &v2]);
    for key in [
        "paths_new",
        "paths_in_closure",
        "nar_bytes_new",
        "bytes_reused",
        "bytes_compressed",
        "bundle_bytes",
    ] {
        assert!(r.get(key).is_some(), "pack --json lacks {key}: {r}");
    }
    let closure_len = sh(&format!("nix-store -qR {v2}")).lines().count() as u64;
    assert_eq!(r["paths_in_closure"], closure_len);
    assert_eq!(
        r["paths_new"], 3,
        "zlib, tools and app change; pylib is shared: {r}"
    );
    assert!(
        r["bytes_reused"].as_u64().unwrap() > 0,
        "nothing reused: {r}"
    );
    assert_eq!(
        r["bundle_bytes"].as_u64().unwrap(),
        std::fs::metadata(bundle).unwrap().len()
    );

    rig.receive(bundle);
    let imp = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(imp["bundles"][0]["paths_imported"], 3, "{imp}");
    rig.assert_holds(&v2);

    // Importing again is a no-op.
    let again = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(again["bundles"].as_array().unwrap().len(), 0);

    rig.status(&[]);
    let ack = rig.json(&[
        "ground",
        "ack",
        "--mirror",
        rig.p("mirror"),
        rig.p("status"),
    ]);
    assert_eq!(ack["in_step"], true, "{ack}");
    let r = rig.pack(&["--out", rig.p("again.bundle"), &v2]);
    assert_eq!(r["paths_new"], 0, "{r}");
    let inspect = rig.json(&["inspect", rig.p("again.bundle")]);
    assert_eq!(inspect["paths"].as_array().unwrap().len(), 0);
}

#[test]
fn flipped_payload_byte_is_refused_and_store_unchanged() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let r = rig.pack(&["--out", bundle, &v2]);
    let len = r["bundle_bytes"].as_u64().unwrap();
    flip(Path::new(bundle), len - 100);
    let before = rig.device_db();

    let out = rig.run(&["device", "receive", "--state", rig.p("state"), bundle]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("incomplete"), "{err}");
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is incomplete: 1 of"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(rig.device_db(), before, "device store changed");

    // The intact bundle still completes the same update: nothing verified was lost.
    flip(Path::new(bundle), len - 100);
    let r = rig.json(&["device", "receive", "--state", rig.p("state"), bundle]);
    assert_eq!(
        r["bundles"][0]["staged"], 1,
        "only the dropped payload is staged again: {r}"
    );
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&v2);
}

#[test]
fn flipped_manifest_or_header_byte_is_refused_and_store_unchanged() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    rig.pack(&["--out", bundle, &v2]);
    let before = rig.device_db();
    for (offset, expect) in [
        (70u64, "bundle head does not match the bundle id"),
        (3, "neither a narlink bundle nor a stream of narlink frames"),
        (30, "bundle head does not match the bundle id"),
    ] {
        flip(Path::new(bundle), offset);
        let out = rig.run(&["device", "receive", "--state", rig.p("state"), bundle]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "flip at {offset}: {err}");
        flip(Path::new(bundle), offset);
    }
    let imp = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(imp["bundles"].as_array().unwrap().len(), 0);
    assert_eq!(rig.device_db(), before, "device store changed");
}
