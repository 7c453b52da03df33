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

/// 512 random bytes at a sweep of offsets of a device's state database (one with link
/// sessions, staged data and bundle records): every command ends with one clear line or
/// succeeds, never a panic, never a hang.
#[test]
fn damaged_state_database_is_one_clear_line_never_a_panic() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let mut a = vec!["--out", rig.p("b"), "--frames", rig.p("frames")];
    a.extend_from_slice(&crate::hostile::SMALL_FRAMES);
    a.push(&v2);
    rig.pack(&a);
    // Most of the frames: sessions, shards, staged payloads and a bundle record exist.
    let frames = crate::hostile::frames_of(rig.p("frames"));
    crate::hostile::write_frames(rig.p("most"), &frames[..frames.len() * 3 / 4]);
    rig.receive(rig.p("most"));
    let db = rig.dir.join("state/device.redb");
    let clean = std::fs::read(&db).unwrap();
    let step = (clean.len() / 96).next_multiple_of(512).max(512);
    let mut rng = narlink_protocol::sim::Rng::new(11);
    let (mut runs, mut failed) = (0, 0);
    for off in (0..clean.len()).step_by(step) {
        let mut b = clean.clone();
        let end = (off + 512).min(b.len());
        b[off..end]
            .iter_mut()
            .for_each(|x| *x = rng.next_u32() as u8);
        for cmd in [
            vec![
                "device",
                "status",
                "--state",
                rig.p("state"),
                "--out",
                rig.p("st"),
            ],
            vec![
                "device",
                "receive",
                "--state",
                rig.p("state"),
                rig.p("frames"),
            ],
            vec!["device", "import", "--state", rig.p("state")],
        ] {
            std::fs::write(&db, &b).unwrap();
            let mut c = vec!["30", NARLINK, "--quiet"];
            c.extend(&cmd);
            let out = nix_env(std::process::Command::new("timeout").args(&c))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            assert_ne!(code, Some(124), "offset {off}: {cmd:?} hung");
            assert_ne!(code, Some(101), "offset {off}: {cmd:?} panicked: {err}");
            assert!(!err.contains("panicked"), "offset {off}: {cmd:?}: {err}");
            if !out.status.success() {
                assert_eq!(
                    err.trim().lines().count(),
                    1,
                    "offset {off}: {cmd:?}: {err}"
                );
                assert!(err.starts_with("narlink: error: "), "offset {off}: {err}");
                failed += 1;
            }
            runs += 1;
        }
    }
    eprintln!("{runs} runs over a damaged state, {failed} refused with one line");
    assert!(failed > 0, "no damage was noticed: the sweep tests nothing");
}

/// The replay mark survives a restored database: a bundle planned earlier but never
/// delivered is refused after the device imported the next one and its database was
/// restored from a backup taken before that import, and after the database was made anew
/// (the runbook's recovery from damage).
#[test]
fn restored_state_database_cannot_replay_an_older_bundle() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    rig.pack(&["--out", rig.p("old"), &v2]);
    let new = rig.pack(&["--supersede", "--out", rig.p("new"), &v3]);
    let last = format!(
        "not newer than the last imported bundle ({})",
        new["sequence"]
    );
    let db = rig.dir.join("state/device.redb");
    let backup = std::fs::read(&db).unwrap();
    rig.receive_import(rig.p("new"));
    rig.assert_holds(&v3);
    let refused = |what: &str| {
        let before = rig.device_db();
        let out = rig.run(&[
            "device",
            "receive",
            "--state",
            rig.p("state"),
            "--import",
            rig.p("old"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: the old bundle was taken");
        assert!(err.contains(&last), "{what}: {err}");
        assert_eq!(rig.device_db(), before, "{what}: the store changed");
    };
    std::fs::write(&db, &backup).unwrap();
    refused("database restored from a backup");
    std::fs::rename(&db, rig.dir.join("state/device.redb.damaged")).unwrap();
    rig.init_device();
    refused("database made anew");
}

/// `device listen --import`: a signed bundle whose import is refused (planned against another
/// state) is logged and left; the daemon goes on and imports the next one, logging one line
/// per event.
#[test]
fn listen_goes_on_after_a_refused_import() {
    let (v1, v3) = (demo(1), demo(3));
    let rig = Rig::new(&v1);
    // A mirror that wrongly believes the device holds only v1's first dependency: its bundle
    // decodes on the device (every path it names is on board) but was planned against
    // another state, so its import is refused.
    let dep = sh(&format!("nix-store -qR {v1} | head -1"))
        .trim()
        .to_owned();
    rig.ground_init("wrong", &dep);
    let cut = |mirror: &str, name: &str, target: &str| {
        let frames = format!("{}.frames", rig.p(name));
        rig.json(&[
            "ground",
            "pack",
            "--mirror",
            mirror,
            "--sign-key",
            rig.p("sk"),
            "--out",
            rig.p(name),
            "--frames",
            &frames,
            target,
        ]);
        crate::hostile::frames_of(&frames)
    };
    let stale = cut(rig.p("wrong"), "stale", &v3);
    let genuine = cut(rig.p("mirror"), "genuine", &v3);
    let log = crate::hostile::listen_tcp_bursts(&rig, &[stale, genuine]);
    eprintln!("{log}");
    rig.assert_holds(&v3);
    for event in [
        "announced",
        "verified",
        "ready to import",
        "import refused",
        "imported (",
    ] {
        assert!(log.contains(event), "no '{event}' line in the log:\n{log}");
    }
    assert!(
        log.contains("planned against another device state"),
        "{log}"
    );
}
