//! End-to-end tests with real Nix: the ground is this machine's store, the device a second
//! store under a chroot directory (`local?root=DIR`). They fail, not skip, without Nix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const NARLINK: &str = env!("CARGO_BIN_EXE_narlink");

fn nix_env(c: &mut Command) -> &mut Command {
    c.env("NIX_REMOTE", "local")
}

fn sh(cmd: &str) -> String {
    let out = nix_env(Command::new("bash").arg("-c").arg(format!("set -euo pipefail; {cmd}")))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Build version `v` of examples/demo.nix (once per test process).
fn demo(v: u32) -> String {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<u32, String>>> = OnceLock::new();
    let m = BUILT.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    m.entry(v)
        .or_insert_with(|| {
            assert!(
                Command::new("nix-build").arg("--version").output().is_ok(),
                "nix-build is not on PATH: run scripts/setup.sh (Debian's nix-bin) first"
            );
            let root = env!("CARGO_MANIFEST_DIR");
            sh(&format!(
                "nix-build {root}/examples/demo.nix --arg version {v} --no-out-link \
                 --option sandbox false --option substituters '' 2>/dev/null"
            ))
            .trim()
            .to_owned()
        })
        .clone()
}

/// A device: a chroot Nix store holding the closure of `holds`, plus its narlink state, and
/// a ground mirror that knows it.
struct Rig {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Rig {
    fn new(holds: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let rig = Rig { _tmp: tmp, dir };
        sh(&format!(
            "nix-store --export $(nix-store -qR {holds}) | nix-store --store '{}' --import >/dev/null",
            rig.store()
        ));
        rig.ok(&["device", "init", "--state", rig.p("state"), "--store", &rig.store()]);
        rig.ok(&["ground", "init", "--mirror", rig.p("mirror"), holds]);
        rig
    }

    fn store(&self) -> String {
        format!("local?root={}", self.dir.join("device").display())
    }

    fn p(&self, name: &str) -> &str {
        Box::leak(self.dir.join(name).to_string_lossy().into_owned().into_boxed_str())
    }

    fn run(&self, args: &[&str]) -> Output {
        nix_env(Command::new(NARLINK).arg("--quiet").args(args)).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "narlink {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// What the device store holds: its whole registration database.
    fn device_db(&self) -> String {
        sh(&format!("nix-store --store '{}' --dump-db", self.store()))
    }

    fn assert_holds(&self, root: &str) {
        let closure = sh(&format!("nix-store -qR {root}"));
        let paths: Vec<&str> = closure.lines().collect();
        sh(&format!("nix-store --store '{}' --verify-path {}", self.store(), paths.join(" ")));
        let on_device = sh(&format!("nix-store --store '{}' -qR {root}", self.store()));
        assert_eq!(on_device, closure, "device closure differs from the ground's");
    }
}

fn flip(file: &Path, offset: u64) {
    let mut b = std::fs::read(file).unwrap();
    b[offset as usize] ^= 0x01;
    std::fs::write(file, b).unwrap();
}

#[test]
fn update_v1_to_v2_imports_verifies_and_acks() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let r = rig.json(&["ground", "pack", "--mirror", rig.p("mirror"), "--out", bundle, &v2]);
    for key in ["paths_new", "paths_in_closure", "nar_bytes_new", "bytes_reused", "bytes_compressed", "bundle_bytes"] {
        assert!(r.get(key).is_some(), "pack --json lacks {key}: {r}");
    }
    let closure_len = sh(&format!("nix-store -qR {v2}")).lines().count() as u64;
    assert_eq!(r["paths_in_closure"], closure_len);
    assert_eq!(r["paths_new"], 3, "zlib, tools and app change; pylib is shared: {r}");
    assert!(r["bytes_reused"].as_u64().unwrap() > 0, "nothing reused: {r}");
    assert_eq!(r["bundle_bytes"].as_u64().unwrap(), std::fs::metadata(bundle).unwrap().len());

    rig.ok(&["device", "receive", "--state", rig.p("state"), bundle]);
    let imp = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(imp["bundles"][0]["paths_imported"], 3, "{imp}");
    rig.assert_holds(&v2);

    // Importing again is a no-op.
    let again = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(again["bundles"].as_array().unwrap().len(), 0);

    rig.ok(&["device", "status", "--state", rig.p("state"), "--out", rig.p("status")]);
    let ack = rig.json(&["ground", "ack", "--mirror", rig.p("mirror"), rig.p("status")]);
    assert_eq!(ack["in_step"], true, "{ack}");
    let r = rig.json(&["ground", "pack", "--mirror", rig.p("mirror"), "--out", rig.p("again.bundle"), &v2]);
    assert_eq!(r["paths_new"], 0, "{r}");
    let inspect = rig.json(&["inspect", rig.p("again.bundle")]);
    assert_eq!(inspect["paths"].as_array().unwrap().len(), 0);
}

#[test]
fn flipped_payload_byte_is_refused_and_store_unchanged() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    let r = rig.json(&["ground", "pack", "--mirror", rig.p("mirror"), "--out", bundle, &v2]);
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
    assert_eq!(r["staged"], 1, "only the dropped payload is staged again: {r}");
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&v2);
}

#[test]
fn flipped_manifest_or_header_byte_is_refused_and_store_unchanged() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let bundle = rig.p("update.bundle");
    rig.ok(&["ground", "pack", "--mirror", rig.p("mirror"), "--out", bundle, &v2]);
    let before = rig.device_db();
    for (offset, expect) in [(70u64, "manifest checksum mismatch"), (3, "not a narlink bundle"), (30, "manifest checksum mismatch")] {
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
