//! Life on orbit: profiles and activation with rollback, garbage collection in step with the
//! ground (through the reports, no inventory), bundles planned against an old state refused
//! with a reason the ground learns, and the daemon surviving a kill.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn update(rig: &Rig, to: &str, name: &str, activate: &str) -> serde_json::Value {
    rig.pack(&["--out", rig.p(name), to]);
    rig.receive(rig.p(name));
    rig.json(&[
        "device",
        "import",
        "--state",
        rig.p("state"),
        "--profile",
        &rig.profile(),
        "--activate",
        activate,
    ])
}

/// `device status` (and its inventory, with `extra` = `["--inventory", FILE]`), then `ground
/// ack` of them: what the ack says.
fn ack_with(rig: &Rig, extra: &[&str]) -> serde_json::Value {
    rig.status(extra);
    let mut a = vec![
        "ground",
        "ack",
        "--json",
        "--mirror",
        rig.p("mirror"),
        rig.p("status"),
    ];
    a.extend_from_slice(extra);
    serde_json::from_slice(&rig.run(&a).stdout).unwrap()
}

fn report(rig: &Rig) -> serde_json::Value {
    ack_with(rig, &["--inventory", rig.p("inventory")])
}

/// `device status`, then `ground ack` of that report alone.
fn ack_without_inventory(rig: &Rig) -> serde_json::Value {
    ack_with(rig, &[])
}

#[test]
fn update_gc_ack_update_again() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::running(&v1);
    let imp = update(&rig, &v2, "b2", "test -x \"$NARLINK_ROOT/bin/demo\"");
    assert_eq!(imp["activation"]["activated"], true, "{imp}");
    assert_eq!(rig.live().unwrap().1, v2);
    rig.assert_holds(&v2);

    // GC on the device keeps one generation: v1's own paths go.
    let v1_only: Vec<String> = sh(&format!("nix-store -qR {v1}"))
        .lines()
        .filter(|p| !sh(&format!("nix-store -qR {v2}")).contains(*p))
        .map(str::to_owned)
        .collect();
    assert!(!v1_only.is_empty());
    // Nix counts store paths on any process's command line as live (runtime roots); tests
    // running beside this one name v1's paths for a moment, so try a few times.
    let mut removed = 0;
    for _ in 0..10 {
        let gc = rig.json(&[
            "device",
            "gc",
            "--state",
            rig.p("state"),
            "--profile",
            &rig.profile(),
            "--keep-generations",
            "1",
        ]);
        removed += gc["removed_from_index"].as_array().unwrap().len();
        if removed == v1_only.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(removed, v1_only.len());
    let invalid = sh(&format!(
        "nix-store --store '{}' --check-validity --print-invalid {} || true",
        rig.store(),
        v1_only.join(" ")
    ));
    assert_eq!(
        invalid.lines().count(),
        v1_only.len(),
        "v1's paths survived the GC"
    );

    // The next report names what left (a few bytes a path), and the ground's mirror follows
    // the import and the GC with no inventory.
    let ack = ack_without_inventory(&rig);
    assert_eq!(ack["in_step"], true, "{ack}");
    assert!(ack["resync"].is_null(), "{ack}");
    assert_eq!(ack["removed"], v1_only.len(), "{ack}");
    let sent = std::fs::metadata(rig.p("status")).unwrap().len() as usize;
    // Budget: 64 bytes, the 24-byte seal, 5 bytes per removed path.
    assert!(sent <= 64 + 24 + 5 * v1_only.len(), "{sent} bytes");
    eprintln!(
        "report after a GC of {} paths: {sent} bytes on the downlink",
        v1_only.len()
    );

    // v3 reuses what is on board (v2's paths) and nothing collected: it imports and verifies.
    let r = rig.pack(&["--out", rig.p("b3"), &v3]);
    assert!(r["bytes_reused"].as_u64().unwrap() > 0, "{r}");
    let m = rig.json(&["inspect", rig.p("b3")]);
    assert!(m["paths"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| !v1_only.contains(&p["path"].as_str().unwrap().to_owned())));
    rig.receive(rig.p("b3"));
    let imp = rig.json(&[
        "device",
        "import",
        "--state",
        rig.p("state"),
        "--profile",
        &rig.profile(),
    ]);
    assert_eq!(imp["bundles"][0]["complete"], true, "{imp}");
    rig.assert_holds(&v3);
    assert_eq!(rig.live().unwrap().1, v3);
    assert_eq!(report(&rig)["in_step"], true);
}

#[test]
fn a_plan_against_an_old_state_is_refused_and_the_ground_learns_why() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::running(&v1);
    update(&rig, &v2, "b2", "true");
    assert_eq!(report(&rig)["in_step"], true);
    // The operator collects garbage by hand; the ground does not know.
    sh(&format!(
        "nix-env --store '{}' -p {} --delete-generations old",
        rig.store(),
        rig.profile()
    ));
    let v1_only: Vec<String> = sh(&format!("nix-store -qR {v1}"))
        .lines()
        .filter(|p| !sh(&format!("nix-store -qR {v2}")).contains(*p))
        .map(str::to_owned)
        .collect();
    for _ in 0..10 {
        // Retried: paths on a concurrent process's command line are runtime roots.
        sh(&format!("nix-store --store '{}' --gc", rig.store()));
        let invalid = sh(&format!(
            "nix-store --store '{}' --check-validity --print-invalid {} || true",
            rig.store(),
            v1_only.join(" ")
        ));
        if invalid.lines().count() == v1_only.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The device follows it; the ground packs against its stale mirror.
    rig.ok(&["device", "gc", "--no-collect", "--state", rig.p("state")]);
    rig.pack(&["--out", rig.p("stale"), &v3]);
    let before = rig.device_db();
    rig.receive(rig.p("stale"));
    let out = rig.run(&["device", "import", "--state", rig.p("state")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("planned against another device state"),
        "{err}"
    );
    assert_eq!(
        rig.device_db(),
        before,
        "something was imported from a stale plan"
    );

    // The next report names the paths that left and why the bundle was refused: the mirror
    // follows with no inventory, and the ground knows what happened to its bundle.
    let ack = ack_without_inventory(&rig);
    assert_eq!(ack["in_step"], true, "{ack}");
    assert_eq!(ack["removed"], v1_only.len(), "{ack}");
    assert_eq!(ack["report"]["phase"], "failed", "{ack}");
    assert_eq!(
        ack["report"]["reason"], "planned against another state",
        "{ack}"
    );
    update(&rig, &v3, "b3", "true");
    rig.assert_holds(&v3);
}

#[test]
fn failed_activation_leaves_the_previous_generation_live() {
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::running(&v1);
    rig.pack(&["--out", rig.p("b2"), &v2]);
    rig.receive(rig.p("b2"));
    let out = rig.run(&[
        "device",
        "import",
        "--json",
        "--state",
        rig.p("state"),
        "--profile",
        &rig.profile(),
        "--activate",
        "echo self-test failed >&2; exit 3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("activation of generation 2 failed; generation 1 is live"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["activation"]["rolled_back"], true);
    assert!(j["activation"]["failure"]
        .as_str()
        .unwrap()
        .contains("self-test failed"));
    assert_eq!(rig.live().unwrap().1, v1);
}

fn start_daemon(rig: &Rig) -> (std::process::Child, String) {
    let mut child = nix_env(Command::new(NARLINK).args([
        "--quiet",
        "device",
        "listen",
        "--state",
        rig.p("state"),
        "--udp",
        "127.0.0.1:0",
        "--import",
        "--exit-when-done",
        "--activate",
        "test -x \"$NARLINK_ROOT/bin/demo\"",
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    (child, addr)
}

#[test]
fn daemon_killed_mid_transfer_finishes_after_restart() {
    let (v1, v3) = (demo(1), demo(3));
    let rig = Rig::new(&v1);
    rig.pack(&[
        "--out",
        rig.p("b"),
        "--frames",
        rig.p("frames"),
        "--frame-size",
        "512",
        "--group-k",
        "32",
        &v3,
    ]);
    let frames: Vec<Vec<u8>> = std::fs::read(rig.p("frames"))
        .unwrap()
        .chunks(512 + 44)
        .map(<[u8]>::to_vec)
        .collect();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut daemon, addr) = start_daemon(&rig);
    let half = frames.len() / 2;
    for f in &frames[..half] {
        sock.send_to(f, &addr).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill().unwrap(); // SIGKILL mid-transfer
    daemon.wait().unwrap();
    let (mut daemon, addr) = start_daemon(&rig);
    for f in &frames[half..] {
        sock.send_to(f, &addr).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let start = Instant::now();
    while daemon.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "daemon did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.wait().unwrap().success());
    rig.assert_holds(&v3);
    assert_eq!(
        rig.live().unwrap().1,
        v3,
        "the daemon activated the new root"
    );
}

/// Landing without hands (issue 19, item 1): the daemon, given the profile and the
/// activation, verifies, imports, switches and activates a bundle that came over the link by
/// itself, or rolls it back; its report says which, and the ground folds it in.
#[test]
fn the_daemon_lands_an_update_by_itself() {
    use crate::hostile::{frames_of, listen_tcp_bursts_with};
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::running(&v1);
    let profile = rig.profile();
    let marker = rig.p("activated");
    for (target, name, activate, expect_live, activation) in [
        (
            &v2,
            "b2",
            format!("echo \"$NARLINK_GENERATION\" > {marker}"),
            &v2,
            "passed",
        ),
        (&v3, "b3", "exit 3".to_owned(), &v2, "failed, rolled back"),
    ] {
        let frames = format!("{}.frames", rig.p(name));
        rig.pack(&["--out", rig.p(name), "--frames", &frames, target]);
        // Landing only: probation (tests/it/probation.rs) would hold b3 back until b2 is
        // confirmed.
        let extra = [
            "--profile",
            profile.as_str(),
            "--activate",
            activate.as_str(),
            "--no-probation",
        ];
        listen_tcp_bursts_with(&rig, &[frames_of(&frames)], &extra);
        assert_eq!(&rig.live().unwrap().1, expect_live, "{name}");
        // The report the daemon left says how the landing went; the ground takes it.
        let st = rig.json(&["inspect", rig.p("status")]);
        assert_eq!(st["activation"], activation, "{name}: {st}");
        let ack = rig.json(&[
            "ground",
            "ack",
            "--mirror",
            rig.p("mirror"),
            rig.p("status"),
        ]);
        assert_eq!(ack["in_step"], true, "{name}: {ack}");
    }
    // The first activation ran, in generation 2; the second's switch was undone.
    assert_eq!(std::fs::read_to_string(marker).unwrap().trim(), "2");
    let s = rig.json(&["ground", "show", "--mirror", rig.p("mirror")]);
    assert_eq!(s["last_report"]["live_generation"], 2, "{s}");
    assert_eq!(
        s["bundles"][0]["reason"], "activation failed, rolled back",
        "{s}"
    );
}
