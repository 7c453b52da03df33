//! What an operator and their scripts meet (issue 12, item 6): stdout carries only data when it
//! carries data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use narlink_protocol::frame::FrameSplitter;

use crate::common::{demo, nix_env, Rig, NARLINK};

/// `ground pack --frames - --json`: stdout is frames and nothing else (every byte belongs to a
/// frame), the JSON summary is on stderr.
#[test]
fn frames_on_stdout_carry_no_summary() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let out = rig.pack_output(&["--out", rig.p("b"), "--frames", "-", "--json", &v2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = FrameSplitter::new();
    s.push(&out.stdout);
    s.finish();
    let frames = std::iter::from_fn(|| s.next_frame()).count();
    assert!(frames > 0);
    assert_eq!(s.stats().rejected, 0, "bytes on stdout that are not frames");
    let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(summary["frames"].as_u64(), Some(frames as u64));
}

/// `device listen --json`: every line on stdout is a JSON object, the address first.
#[test]
fn listen_json_prints_only_json() {
    let rig = Rig::new(&demo(1));
    let mut child = nix_env(Command::new(NARLINK).args([
        "--quiet",
        "device",
        "listen",
        "--state",
        rig.p("state"),
        "--tcp",
        "127.0.0.1:0",
        "--json",
    ]))
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let addr = v["listening"].as_str().unwrap();
    assert!(addr.starts_with("tcp 127.0.0.1:"), "{addr}");
}

/// `device gc` refuses options that name nothing: a profile that does not exist (its
/// generations would not be kept) and keeping 0 generations; the store is not touched.
#[test]
fn gc_options_that_name_nothing_are_errors() {
    let v1 = demo(1);
    let rig = Rig::new(&v1);
    let paths_before = crate::common::sh(&format!("nix-store --store '{}' -qR {v1}", rig.store()));
    for (args, why) in [
        (
            vec!["--profile", "/nonexistent/profile"],
            "there is no profile",
        ),
        (vec!["--keep-generations", "0"], "keep-generations"),
    ] {
        let mut a = vec!["device", "gc", "--state", rig.p("state")];
        a.extend_from_slice(&args);
        rig.fails_with(&a, why);
    }
    let paths_after = crate::common::sh(&format!("nix-store --store '{}' -qR {v1}", rig.store()));
    assert_eq!(paths_before, paths_after);
}

/// `ground pack` without --sign-key is refused unless --unsigned says it is meant.
#[test]
fn unsigned_packs_need_the_flag() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let out = rig.run(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror"),
        "--out",
        rig.p("b"),
        &v2,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--sign-key"), "{err}");
    assert!(!std::path::Path::new(rig.p("b")).exists());
    rig.ok(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror"),
        "--unsigned",
        "--out",
        rig.p("b"),
        &v2,
    ]);
}

/// `device import` while a bundle is still arriving over the link says what it lacks and
/// fails; with nothing at all under way it says so and succeeds.
#[test]
fn an_incomplete_import_says_what_is_missing() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nothing to import"
    );
    let frames = rig.p("b.frames");
    let mut a = vec!["--out", rig.p("b"), "--frames", frames];
    a.extend_from_slice(&crate::hostile::SMALL_FRAMES);
    a.push(&v2);
    rig.pack(&a);
    let all = crate::hostile::frames_of(frames);
    crate::hostile::write_frames(rig.p("few"), &all[..3]);
    rig.receive(rig.p("few"));
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is still being received") && err.contains("groups lack"),
        "{err}"
    );
}

/// `device init` with a store URI that names no store (a mistyped root, an unknown
/// parameter) is an error, and leaves no state and no store behind.
#[test]
fn store_uris_that_name_nothing_are_errors() {
    let rig = Rig::new(&demo(1));
    let typo = rig.dir.join("devcie");
    for (uri, why) in [
        (format!("local?root={}", typo.display()), "does not exist"),
        (
            format!("local?roo={}", rig.dir.join("device").display()),
            "no root=DIR",
        ),
    ] {
        let out = rig.run(&[
            "device",
            "init",
            "--state",
            rig.p("state-typo"),
            "--store",
            &uri,
            "--trust",
            rig.p("pk"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{uri}: {err}");
        assert!(!typo.exists(), "{uri}: a store was made");
        assert!(
            !rig.dir.join("state-typo/device.redb").exists(),
            "{uri}: a state was made"
        );
    }
}

/// Signing keys are rotated and revoked: a new key and the old one's removal in one
/// command; bundles signed by the old key are refused after; the last key cannot go.
#[test]
fn signing_keys_rotate_and_the_last_one_stays() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    crate::common::sh(&format!(
        "nix-store --generate-binary-cache-key ground-2 {} {}",
        rig.p("sk2"),
        rig.p("pk2")
    ));
    let keys = rig.json(&[
        "device",
        "trust",
        "--state",
        rig.p("state"),
        rig.p("pk2"),
        "--remove",
        "ground-1",
    ]);
    assert_eq!(keys, serde_json::json!(["ground-2"]));
    // The old key's bundle is refused; the new key's is taken.
    rig.pack(&["--out", rig.p("old"), &v2]);
    let out = rig.run(&["device", "receive", "--state", rig.p("state"), rig.p("old")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("none of which this device trusts"),
        "{err}"
    );
    rig.ok(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror"),
        "--sign-key",
        rig.p("sk2"),
        "--supersede",
        "--out",
        rig.p("new"),
        &v2,
    ]);
    rig.receive_import(rig.p("new"));
    rig.assert_holds(&v2);
    // The last key cannot go, and a name no key has changes nothing.
    for (args, why) in [
        (vec!["--remove", "ground-2"], "the last trusted key"),
        (vec!["--remove", "nobody"], "no trusted key is named nobody"),
    ] {
        let mut a = vec!["device", "trust", "--state", rig.p("state")];
        a.extend_from_slice(&args);
        rig.fails_with(&a, why);
    }
    let keys = rig.json(&["device", "trust", "--state", rig.p("state")]);
    assert_eq!(keys, serde_json::json!(["ground-2"]));
}

/// A pack against a mirror that has taken no report yet warns that its plan is unconfirmed;
/// once a report is acked, it does not.
#[test]
fn a_pack_before_any_report_warns() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let unconfirmed = "has taken no report from the device yet";
    let out = rig.pack_output(&["--out", rig.p("b"), &v2]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(unconfirmed));
    rig.ack();
    let out = rig.pack_output(&["--supersede", "--out", rig.p("b"), &v2]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(unconfirmed), "{err}");
}
