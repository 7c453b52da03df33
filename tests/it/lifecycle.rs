//! Each bundle from pack to settled, as the ground sees it (issue 12, items 3 and 5): packing
//! while one is in flight, superseding, cancelling, sequences a mirror made again never
//! reuses, `ground show`, and reports routed among the mirrors of many devices.

use crate::common::{demo, Rig};
use crate::hostile::{frames_of, write_frames, SMALL_FRAMES};

fn show(rig: &Rig, mirror: &str) -> serde_json::Value {
    rig.json(&["ground", "show", "--mirror", rig.p(mirror)])
}

/// The ground's record of each bundle, newest first: (id, standing).
fn standings(show: &serde_json::Value) -> Vec<(String, String)> {
    crate::operator_loop::standings(show)
        .into_iter()
        .map(|(id, standing, _)| (id, standing))
        .collect()
}

#[test]
fn in_flight_supersede_cancel_and_show() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    let b2 = rig.pack(&["--out", rig.p("b2"), &v2])["bundle"]
        .as_str()
        .unwrap()
        .to_owned();

    // A second pack while b2 is in flight is refused, and says what to do.
    let out = rig.pack_output(&["--out", rig.p("b3"), &v3]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("bundle {b2} is still in flight")),
        "{err}"
    );
    assert!(
        err.contains("--supersede") && err.contains("ground cancel"),
        "{err}"
    );
    assert_eq!(
        standings(&show(&rig, "mirror")),
        [(b2.clone(), "in flight".into())]
    );

    // --supersede replaces it on the ground; on the device, the newer one supersedes it when
    // it arrives.
    let b3 = rig.pack(&["--supersede", "--out", rig.p("b3"), &v3]);
    let (b3, seq3) = (
        b3["bundle"].as_str().unwrap().to_owned(),
        b3["sequence"].clone(),
    );
    assert_eq!(
        standings(&show(&rig, "mirror")),
        [
            (b3.clone(), "in flight".into()),
            (b2.clone(), "superseded".into())
        ]
    );
    rig.receive(rig.p("b2"));
    rig.receive_import(rig.p("b3"));
    rig.assert_holds(&v3);

    // The report names both: the ground folds b3 in and knows b2 never will be.
    rig.ack();
    let s = show(&rig, "mirror");
    assert_eq!(
        standings(&s),
        [
            (b3.clone(), "imported".into()),
            (b2.clone(), "superseded".into())
        ]
    );
    let last = &s["last_report"];
    assert_eq!(last["sequence"], seq3, "{s}");
    assert_eq!(last["report"]["bundle"], b3.as_str(), "{s}");
    assert_eq!(last["report"]["others"][0]["phase"], "superseded", "{s}");
    assert_eq!(s["stale"], false);
    assert_eq!(s["next_pass_bytes"], 0);

    // Cancel: the device got a few frames of a bundle in flight when the ground withdraws it.
    let frames = rig.p("b2again.frames");
    let mut a = vec!["--out", rig.p("b2again"), "--frames", frames];
    a.extend_from_slice(&SMALL_FRAMES);
    a.push(&v2);
    let b2again = rig.pack(&a)["bundle"].as_str().unwrap().to_owned();
    let all = frames_of(frames);
    assert!(all.len() > 4, "{} frames", all.len());
    write_frames(rig.p("half"), &all[..1]);
    rig.receive(rig.p("half"));
    let st = rig.status(&[]);
    assert_eq!(st["bundle"], b2again.as_str(), "{st}");
    assert_eq!(st["phase"], "receiving", "{st}");
    let c = rig.json(&[
        "ground",
        "cancel",
        "--mirror",
        rig.p("mirror"),
        &b2again[..8],
    ]);
    assert_eq!(c["bundle"], b2again.as_str());
    let s = show(&rig, "mirror");
    assert_eq!(standings(&s)[0], (b2again.clone(), "cancelled".into()));
    // Nothing of it is sent again, and it cannot be cancelled twice.
    let resend = [
        "ground",
        "resend",
        "--mirror",
        rig.p("mirror"),
        "--status",
        rig.p("status"),
        "--frames",
        rig.p("pass2"),
    ];
    rig.fails_with(&resend, "is cancelled");
    rig.fails_with(
        &[
            "ground",
            "cancel",
            "--mirror",
            rig.p("mirror"),
            &b2again[..8],
        ],
        "only a bundle in flight",
    );
    // Packing is no longer held back; the next bundle supersedes it on the device.
    let again = rig.p("b2third");
    rig.pack(&["--out", again, &v2]);
    rig.receive_import(again);
    rig.ack();
    let s = show(&rig, "mirror");
    assert_eq!(standings(&s)[1], (b2again, "superseded".into()), "{s}");
    assert_eq!(standings(&s)[0].1, "imported", "{s}");
    rig.assert_holds(&v2);
}

/// Sequences never repeat for a device: a mirror made again takes the newest one from the
/// device's report, and before any report its numbers start at the clock (seconds since
/// 2026), above any earlier mirror's.
#[test]
fn a_mirror_made_again_never_reuses_a_sequence() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    // The device takes the second of two bundles. (This test cannot tell the report from the
    // clock floor apart: the unit test `sequences_follow_the_device_and_never_repeat` raises
    // a mirror's counter past the clock from a report.)
    rig.pack(&["--out", rig.p("b2"), &v2]);
    let taken = rig.pack(&["--supersede", "--out", rig.p("b2"), &v2])["sequence"]
        .as_u64()
        .unwrap();
    rig.receive_import(rig.p("b2"));
    // The mirror is lost and made again (the runbook's upgrade path).
    std::fs::remove_dir_all(rig.p("mirror")).unwrap();
    rig.ok(&[
        "ground",
        "init",
        "--mirror",
        rig.p("mirror"),
        "--device-key",
        rig.p("devkey"),
        &v1,
        &v2,
    ]);
    rig.ack();
    let s = show(&rig, "mirror");
    assert_eq!(s["last_report"]["sequence"], taken, "{s}");
    let next = rig.pack(&["--out", rig.p("b3"), &v3])["sequence"]
        .as_u64()
        .unwrap();
    assert!(next > taken, "{next} after {taken}");
    rig.receive_import(rig.p("b3"));
    rig.assert_holds(&v3);
}

/// A ground directory holding the mirrors of two devices: each report goes to its own
/// device's mirror, whichever directory the operator names; `ground show` lists both.
#[test]
fn reports_are_routed_to_their_devices_mirror() {
    let v1 = demo(1);
    let rig = Rig::new(&v1);
    // A second device on the same machine, with its own state and key.
    rig.init_device_as("state2");
    rig.ok(&[
        "device",
        "identity",
        "--state",
        rig.p("state2"),
        "--export",
        rig.p("devkey2"),
    ]);
    std::fs::create_dir(rig.p("ground")).unwrap();
    for (mirror, key) in [("ground/sat1", "devkey"), ("ground/sat2", "devkey2")] {
        rig.ok(&[
            "ground",
            "init",
            "--mirror",
            rig.p(mirror),
            "--device-key",
            rig.p(key),
            &v1,
        ]);
    }
    for (state, out) in [("state", "r1"), ("state2", "r2")] {
        rig.ok(&[
            "device",
            "status",
            "--state",
            rig.p(state),
            "--out",
            rig.p(out),
        ]);
    }
    let ack =
        |report: &str| rig.json(&["ground", "ack", "--mirror", rig.p("ground"), rig.p(report)]);
    let (a1, a2) = (ack("r1"), ack("r2"));
    assert_eq!(a1["in_step"], true);
    let all = rig.json(&["ground", "show", "--mirror", rig.p("ground")]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    for (shown, acked) in all.iter().zip([&a1, &a2]) {
        assert_eq!(shown["device"], acked["report"]["device"], "{shown}");
        assert_eq!(
            shown["last_report"]["counter"], acked["report"]["counter"],
            "{shown}"
        );
    }
    assert_ne!(all[0]["device"], all[1]["device"]);
    // A report of a device the ground has no mirror for is refused, naming the device.
    rig.init_device_as("state3");
    rig.ok(&[
        "device",
        "status",
        "--state",
        rig.p("state3"),
        "--out",
        rig.p("r3"),
    ]);
    rig.fails_with(
        &["ground", "ack", "--mirror", rig.p("ground"), rig.p("r3")],
        "no mirror in",
    );
}

/// `ground cancel --sign-key`: a bundle the device holds whole but has not imported is
/// withdrawn by one signed frame; a withdrawal signed by a key the device does not trust, or
/// altered, changes nothing; one that comes after the import changes nothing either.
#[test]
fn a_signed_withdrawal_stops_a_bundle_the_device_holds_whole() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    let pack = |name: &str, target: &str, extra: &[&'static str]| -> String {
        let frames = format!("{}.frames", rig.p(name));
        let mut a: Vec<&str> = extra.to_vec();
        a.extend_from_slice(&["--out", rig.p(name), "--frames", &frames]);
        a.push(target);
        rig.pack(&a)["bundle"].as_str().unwrap().to_owned()
    };
    let b = pack("b", &v2, &[]);
    rig.receive(&format!("{}.frames", rig.p("b")));
    assert_eq!(rig.status(&[])["phase"], "ready to import");
    let before = rig.device_db();

    // Forged: the same withdrawal signed by another key, and the genuine one altered.
    crate::common::sh(&format!(
        "nix-store --generate-binary-cache-key ground-1 {} {}",
        rig.p("evil.sk"),
        rig.p("evil.pk")
    ));
    std::fs::copy(rig.p("mirror/mirror.redb"), rig.p("mirror.bak")).unwrap();
    rig.ok(&[
        "ground",
        "cancel",
        "--mirror",
        rig.p("mirror"),
        &b,
        "--sign-key",
        rig.p("evil.sk"),
        "--frames",
        rig.p("forged"),
    ]);
    std::fs::copy(rig.p("mirror.bak"), rig.p("mirror/mirror.redb")).unwrap();
    let genuine = rig.p("genuine");
    let c = rig.json(&[
        "ground",
        "cancel",
        "--mirror",
        rig.p("mirror"),
        &b,
        "--sign-key",
        rig.p("sk"),
        "--frames",
        genuine,
    ]);
    assert_eq!(c["bundle"], b.as_str());
    // Altered: a byte of the signature flipped (frame header 40 B, then "nW", version, key
    // id, signature), the frame's checksum made right again.
    let mut altered = std::fs::read(genuine).unwrap();
    let body = altered.len() - 4;
    altered[40 + 7 + 10] ^= 1;
    let crc = narlink_protocol::frame::crc32c(&altered[..body]);
    altered[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(rig.p("altered"), &altered).unwrap();
    for bad in ["forged", "altered"] {
        let r = rig.json(&["device", "receive", "--state", rig.p("state"), rig.p(bad)]);
        assert_eq!(r["link"]["withdrawals"], 0, "{bad}: {r}");
        assert_eq!(
            r["link"]["corrupt"], 0,
            "{bad}: the frame itself must be intact: {r}"
        );
        assert_eq!(r["link"]["refused"], 1, "{bad}: {r}");
        assert_eq!(rig.status(&[])["phase"], "ready to import", "{bad}");
    }

    // The genuine withdrawal: the device drops the bundle and imports nothing of it.
    let r = rig.json(&["device", "receive", "--state", rig.p("state"), genuine]);
    assert_eq!(r["link"]["withdrawals"], 1, "{r}");
    let st = rig.status(&[]);
    assert_eq!(st["phase"], "superseded", "{st}");
    assert_eq!(st["reason"], "cancelled", "{st}");
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    assert!(out.status.success());
    assert_eq!(
        rig.device_db(),
        before,
        "a withdrawn bundle reached the store"
    );
    // Its frames are refused from now on; the ground keeps it cancelled after the report.
    let r = rig.json(&[
        "device",
        "receive",
        "--state",
        rig.p("state"),
        &format!("{}.frames", rig.p("b")),
    ]);
    assert_eq!(r["link"]["stored"], 0, "{r}");
    rig.ack();
    let s = show(&rig, "mirror");
    assert_eq!(standings(&s)[0], (b.clone(), "cancelled".into()), "{s}");

    // After an import, a withdrawal is too late and changes nothing.
    let d = pack("d", &v3, &[]);
    rig.receive_import(&format!("{}.frames", rig.p("d")));
    rig.assert_holds(&v3);
    let late = rig.run(&[
        "ground",
        "cancel",
        "--mirror",
        rig.p("mirror"),
        &d,
        "--sign-key",
        rig.p("sk"),
        "--frames",
        rig.p("late"),
    ]);
    assert!(late.status.success());
    let r = rig.json(&[
        "device",
        "receive",
        "--state",
        rig.p("state"),
        rig.p("late"),
    ]);
    assert_eq!(r["link"]["withdrawals"], 0, "{r}");
    rig.assert_holds(&v3);
    assert_eq!(rig.status(&[])["phase"], "imported");
}

/// A mirror made from other roots than the device runs: once a report says what is live,
/// `ground pack` refuses it and says why.
#[test]
fn a_mirror_of_the_wrong_roots_is_refused_at_pack() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    crate::common::sh(&format!(
        "nix-env --store '{}' -p {} --set {v1}",
        rig.store(),
        rig.dir
            .join("device/nix/var/nix/profiles/narlink")
            .display()
    ));
    // The operator gives v2 where the device runs v1.
    std::fs::remove_dir_all(rig.p("mirror")).unwrap();
    rig.ground_init("mirror", &v2);
    rig.status(&[]);
    let out = rig.run(&[
        "ground",
        "ack",
        "--mirror",
        rig.p("mirror"),
        rig.p("status"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let out = rig.pack_output(&["--out", rig.p("b"), &v3]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let tag = &v1["/nix/store/".len()..][..8];
    assert!(
        err.contains(&format!("generation 1 live, holding {tag}..."))
            && err.contains("other roots"),
        "{err}"
    );
    assert!(!std::path::Path::new(rig.p("b")).exists());
}

/// A bundle the device holds whole but has not imported is superseded as soon as a trusted
/// key announces a newer one, before the newer one's head arrives: the device never imports
/// what the ground has replaced.
#[test]
fn an_announced_newer_bundle_supersedes_one_held_whole() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    let b2 = rig.pack(&["--out", rig.p("b2"), "--frames", rig.p("b2.frames"), &v2])["bundle"]
        .as_str()
        .unwrap()
        .to_owned();
    rig.receive(rig.p("b2.frames"));
    assert_eq!(rig.status(&[])["phase"], "ready to import");
    let before = rig.device_db();
    rig.pack(&[
        "--supersede",
        "--out",
        rig.p("b3"),
        "--frames",
        rig.p("b3.frames"),
        &v3,
    ]);
    // Only the announcement of b3 comes through.
    let announcement: Vec<_> = frames_of(rig.p("b3.frames"))
        .into_iter()
        .filter(|f| f.header().is_announcement())
        .take(1)
        .collect();
    assert_eq!(announcement.len(), 1);
    write_frames(rig.p("announce"), &announcement);
    rig.receive(rig.p("announce"));
    let st = rig.status(&[]);
    let noted = st["others"].as_array().unwrap();
    assert!(
        noted
            .iter()
            .any(|o| b2.starts_with(o["bundle"].as_str().unwrap()) && o["phase"] == "superseded"),
        "{st}"
    );
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        rig.device_db(),
        before,
        "a superseded bundle was imported: {err}"
    );
}
