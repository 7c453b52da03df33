//! Landing an update: import, profile switch and activation as one journaled sequence. Killed
//! at any instant, the next `device import` finishes the step it was in: the new generation is
//! live and its activation ran, or the previous one is live and the report says the activation
//! failed; the report never says "imported" while the profile points elsewhere.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn import_args<'a>(rig: &'a Rig, activate: &'a str, timeout: &'a str) -> Vec<&'a str> {
    let p: &'a str = Box::leak(rig.profile().into_boxed_str());
    vec![
        "device",
        "import",
        "--state",
        rig.p("state"),
        "--profile",
        p,
        "--activate",
        activate,
        "--activate-timeout",
        timeout,
    ]
}

/// A device running `v1` from its profile (generation 1) that has received the bundle to `v2`.
fn running_with_received(v1: &str, v2: &str) -> Rig {
    let rig = Rig::running(v1);
    rig.pack(&["--out", rig.p("b"), v2]);
    rig.receive(rig.p("b"));
    rig
}

fn phase(rig: &Rig) -> String {
    rig.status(&[])["phase"].as_str().unwrap().to_owned()
}

/// `--activate-timeout`: the activation command and everything it started are killed.
#[test]
fn activation_timeout_kills_the_whole_process_group() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = running_with_received(&v1, &v2);
    let cmd = format!("sleep 300 & echo $! > {}; sleep 300", rig.p("pid"));
    let start = Instant::now();
    let out = rig.run(&import_args(&rig, &cmd, "1"));
    assert!(start.elapsed() < Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a timed-out activation is a failure");
    assert!(err.contains("timed out"), "{err}");
    let pid = std::fs::read_to_string(rig.p("pid")).unwrap();
    // Gone, or a zombie nobody reaps (killed all the same).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the activation's child lives on: {stat}"
    );
    assert_eq!(
        rig.live().map(|(_, root)| root).as_deref(),
        Some(v1.as_str()),
        "not rolled back"
    );
    assert_eq!(phase(&rig), "failed");
}

/// A first update into a profile that has no generation yet, whose activation fails: the
/// profile is left as it was, that is absent, and the report says the activation failed.
#[test]
fn failed_first_activation_leaves_no_profile() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    rig.pack(&["--out", rig.p("b"), &v2]);
    rig.receive(rig.p("b"));
    let out = rig.run(&import_args(&rig, "exit 3", "30"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("generation none is live"), "{err}");
    assert!(
        rig.live().map(|(_, root)| root).is_none(),
        "the failed generation stayed live"
    );
    assert!(
        std::fs::symlink_metadata(rig.profile()).is_err(),
        "profile left behind"
    );
    assert_eq!(phase(&rig), "failed");
    rig.assert_holds(&v2);
}

/// SIGKILL of `device import --profile P --activate CMD` (the whole process group: narlink,
/// Nix, the activation) at random instants, then the same command again until it finishes.
/// After every round: with an activation that succeeds, v2 is live and its activation ran for
/// the live generation, and the report says "imported"; with one that fails, v1 is live and
/// the report says "import failed". `NARLINK_LANDING_KILLS` sets the number of kills
/// (default 40; `scripts/sigkill_soak.sh landing` runs thousands).
#[test]
fn sigkill_during_import_switch_and_activation() {
    let kills_wanted: u32 = std::env::var("NARLINK_LANDING_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let (v1, v2) = (demo(1), demo(2));
    let mut rng = narlink_protocol::sim::Rng::new(7);
    let (mut kills, mut rounds) = (0u32, 0u32);
    while kills < kills_wanted {
        rounds += 1;
        let fails = rounds % 3 == 0;
        let rig = running_with_received(&v1, &v2);
        let ran = rig.p("ran");
        let cmd = format!(
            "echo \"$NARLINK_GENERATION $NARLINK_ROOT\" >> {ran}; sleep 0.05{}",
            if fails { "; exit 3" } else { "" }
        );
        let args = import_args(&rig, &cmd, "30");
        let mut cap_ms = 5u64;
        for attempt in 0.. {
            let mut cmd = Command::new(NARLINK);
            nix_env(cmd.arg("--quiet").args(&args))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = {
                use std::os::unix::process::CommandExt;
                cmd.process_group(0).spawn().unwrap()
            };
            std::thread::sleep(Duration::from_millis(rng.below(cap_ms)));
            if child.try_wait().unwrap().is_none() && attempt < 12 {
                sh(&format!(
                    "kill -KILL -- -{} 2>/dev/null || true",
                    child.id()
                ));
                child.wait().unwrap();
                kills += 1;
                cap_ms += cap_ms / 2 + 1;
                continue;
            }
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), !fails, "round {rounds}: {err}");
            break;
        }
        rig.assert_holds(&v2);
        let gen = std::fs::read_link(rig.profile()).unwrap();
        let gen = gen.to_string_lossy();
        let gen: u32 = gen.rsplit('-').nth(1).unwrap().parse().unwrap();
        if fails {
            assert_eq!(
                rig.live().map(|(_, root)| root).as_deref(),
                Some(v1.as_str()),
                "round {rounds}: v1 is not live"
            );
            assert_eq!(phase(&rig), "failed", "round {rounds}");
        } else {
            assert_eq!(
                rig.live().map(|(_, root)| root).as_deref(),
                Some(v2.as_str()),
                "round {rounds}: v2 is not live"
            );
            let ran = std::fs::read_to_string(ran).unwrap_or_default();
            assert_eq!(
                ran.lines().last(),
                Some(format!("{gen} {v2}").as_str()),
                "round {rounds}: the live generation's activation did not run last: {ran}"
            );
            assert_eq!(phase(&rig), "imported", "round {rounds}");
        }
    }
    eprintln!("{kills} SIGKILLs over {rounds} rounds; every round landed or rolled back");
}

/// A `nix-env` killed between making a generation's link under a temporary name and renaming
/// it (Nix 2.8's `makeSymlink`) leaves `PROFILE-N-link.tmp-PID-RANDOM` behind. Nix takes it for
/// generation N, and the next `--set` of the same path pointed the profile at that stray link
/// (seen once in `sigkill_during_import_switch_and_activation`). The landing removes such
/// leftovers first: the profile then points at a generation link of Nix's own name.
#[test]
fn a_killed_nix_env_leaves_no_stray_generation_link() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = running_with_received(&v1, &v2);
    let stray = format!("{}-2-link.tmp-4242-1", rig.profile());
    std::os::unix::fs::symlink(&v2, &stray).unwrap();
    let out = rig.run(&import_args(&rig, "true", "30"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let link = std::fs::read_link(rig.profile()).unwrap();
    assert_eq!(link.file_name().unwrap(), "narlink-2-link", "{err}");
    assert!(
        std::fs::symlink_metadata(&stray).is_err(),
        "the stray link is still there"
    );
    assert_eq!(rig.live().map(|(_, root)| root), Some(v2));
    assert_eq!(phase(&rig), "imported");
}
