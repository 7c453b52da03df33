//! Honest failures: whatever goes wrong on the device (a full disk under Nix, a damaged state
//! database), the command says so in one line and exits non-zero; nothing panics, nothing
//! claims success.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A tmpfs mounted over a directory for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Move what `dir` holds onto a fresh tmpfs of `bytes` mounted over it.
    fn over(dir: &Path, bytes: u64) -> Tmpfs {
        let d = dir.display();
        sh(&format!(
            "mv {d} {d}.disk && mkdir {d} && mount -t tmpfs -o size={bytes} tmpfs {d} && \
             cp -a {d}.disk/. {d}/ && rm -rf {d}.disk"
        ));
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `device import` into a store whose disk fills up part way: Nix's own error, a non-zero
/// exit (with and without --json), and the store as it was.
#[test]
fn full_disk_under_nix_is_a_failure_with_nix_error() {
    let big = blob(7);
    let rig = Rig::new(&demo(1));
    let used: u64 = sh(&format!("du -sb {}", rig.dir.join("device").display()))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _disk = Tmpfs::over(&rig.dir.join("device"), used + (3 << 20));
    let before = rig.device_db();
    rig.pack(&["--level", "1", "--out", rig.p("b"), &big]);
    rig.receive(rig.p("b"));
    for json in [false, true] {
        let mut args = vec!["device", "import", "--state", rig.p("state")];
        if json {
            args.push("--json");
        }
        let out = rig.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "json {json}: import claimed success: {err}"
        );
        assert!(
            err.contains("No space left on device"),
            "json {json}: Nix's error is not reported: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(rig.device_db(), before, "device store changed");
}
