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
        let out = rig.run(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    }
    let paths_after = crate::common::sh(&format!("nix-store --store '{}' -qR {v1}", rig.store()));
    assert_eq!(paths_before, paths_after);
}
