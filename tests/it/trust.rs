//! Trust: only bundles signed by a key the device trusts, and newer than the last one it
//! imported, get anywhere near the store.

use std::path::Path;

use crate::common::*;

fn refused(rig: &Rig, bundle: &str, expect: &str) {
    let before = rig.device_db();
    let out = rig.run(&["device", "receive", "--state", rig.p("state"), bundle]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted {bundle}");
    assert!(err.contains(expect), "expected {expect:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let imp = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(imp["bundles"].as_array().unwrap().len(), 0, "{imp}");
    assert_eq!(rig.device_db(), before, "device store changed");
}

#[test]
fn unsigned_untrusted_and_replayed_bundles_are_refused() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);

    // Unsigned.
    rig.json(&["ground", "pack", "--mirror", rig.p("mirror"), "--out", rig.p("unsigned"), &v2]);
    refused(&rig, rig.p("unsigned"), "the bundle is not signed");

    // Signed by a key the device does not trust.
    sh(&format!("nix-store --generate-binary-cache-key other-1 {} {}", rig.p("other.sk"), rig.p("other.pk")));
    rig.json(&["ground", "pack", "--mirror", rig.p("mirror"), "--sign-key", rig.p("other.sk"), "--out", rig.p("untrusted"), &v2]);
    refused(&rig, rig.p("untrusted"), "signed by other-1, none of which this device trusts");

    // A forged signature: the trusted key's name, bytes flipped.
    let r = rig.pack(&["--out", rig.p("forged"), &v2]);
    let len = std::fs::metadata(rig.p("forged")).unwrap().len();
    let payload = r["bytes_compressed"].as_u64().unwrap();
    flip(Path::new(rig.p("forged")), len - payload - 10);
    refused(&rig, rig.p("forged"), "does not match the manifest");

    // An older bundle (planned earlier, never delivered) after a newer one was imported.
    rig.pack(&["--out", rig.p("old"), &v2]);
    rig.pack(&["--out", rig.p("new"), &v3]);
    rig.ok(&["device", "receive", "--state", rig.p("state"), "--import", rig.p("new")]);
    rig.assert_holds(&v3);
    refused(&rig, rig.p("old"), "not newer than the last imported bundle");
    // The same newest bundle again is harmless.
    rig.ok(&["device", "receive", "--state", rig.p("state"), rig.p("new")]);
}

#[test]
fn device_without_trust_is_refused_at_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = nix_env(std::process::Command::new(NARLINK).args([
        "device", "init", "--state", &tmp.path().join("s").to_string_lossy(), "--store", &format!("local?root={}", tmp.path().join("d").display()),
    ]))
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trust"));
}
