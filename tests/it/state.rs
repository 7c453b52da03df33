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

/// `init` never replaces a state, and a state only takes its name once init is complete: an
/// init that fails part way leaves nothing `open` accepts, and the next init starts afresh.
#[test]
fn init_replaces_nothing_and_publishes_only_whole_states() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        nix_env(Command::new(NARLINK).arg("--quiet").args(args))
            .output()
            .unwrap()
    };
    let dev = tmp.path().join("device");
    std::fs::create_dir(&dev).unwrap();
    let packed = std::fs::read(format!("{fixtures}/device-state-redb2.redb.zst")).unwrap();
    let bytes = zstd::decode_all(packed.as_slice()).unwrap();
    std::fs::write(dev.join("device.redb"), &bytes).unwrap();
    let out = run(&[
        "device",
        "init",
        "--allow-unsigned",
        "--state",
        dev.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(dev.join("device.redb")).unwrap(), bytes);

    // A ground init whose root does not resolve fails after the state was begun.
    let mirror = tmp.path().join("mirror");
    let m = mirror.to_str().unwrap();
    let out = run(&[
        "ground",
        "init",
        "--mirror",
        m,
        "/nix/store/not-a-store-path",
    ]);
    assert!(!out.status.success());
    assert!(
        !mirror.join("mirror.redb").exists(),
        "a failed init left a state"
    );
    let out = run(&["ground", "ack", "--mirror", m, "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no narlink state"), "{err}");
    let v1 = crate::common::demo(1);
    let out = run(&["ground", "init", "--mirror", m, &v1]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<_> = std::fs::read_dir(&mirror)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["mirror.redb"], "the partial file is gone");
}
