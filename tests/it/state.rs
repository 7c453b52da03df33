//! State databases across narlink versions.

use std::process::Command;

use crate::common::{nix_env, NARLINK};

/// A device state and a mirror written by narlink on redb 2.6 (file format 2, which redb 4
/// cannot read) are refused with the command to run, and their bytes are left as they were.
#[test]
fn states_from_redb2_are_refused_and_left_alone() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, file, args, init) in [
        (
            "device-state-redb2.redb.zst",
            "device.redb",
            vec!["device", "status", "--out", "status", "--state"],
            "narlink device init",
        ),
        (
            "mirror-redb2.redb.zst",
            "mirror.redb",
            vec!["ground", "ack", "status", "--mirror"],
            "narlink ground init",
        ),
    ] {
        let dir = tmp.path().join(fixture);
        std::fs::create_dir(&dir).unwrap();
        let packed = std::fs::read(format!("{fixtures}/{fixture}")).unwrap();
        let bytes = zstd::decode_all(packed.as_slice()).unwrap();
        std::fs::write(dir.join(file), &bytes).unwrap();
        let out = nix_env(
            Command::new(NARLINK)
                .current_dir(tmp.path())
                .args(&args)
                .arg(&dir),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted a redb 2 state");
        assert!(
            err.contains("written by an older narlink (redb file format 2)") && err.contains(init),
            "{args:?}: unclear error: {err}"
        );
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            bytes,
            "{args:?} changed the file"
        );
    }
}
