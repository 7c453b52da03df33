//! The operator's loop (issue 12, item 7): three updates through lossy passes, one superseded
//! mid-flight, one whose activation fails, a garbage collection between them, status reports
//! lost at random. The ground uses nothing but pack, resend, ack and show; the device
//! receives, reports, imports with its activation and collects garbage on its own (what its
//! daemon does on orbit). Every report that gets down leaves the mirror in step, and after
//! every step `ground show` states exactly what Nix on the device shows: the live generation,
//! the path it holds, and the state digest of every valid path.
//!
//! `NARLINK_LOOP_SEEDS=N` runs N seeds per test (4 tests, 5 each by default: 20 seeds);
//! `NARLINK_LOOP_SHOW=1` prints `ground show --json` after each step.

use std::collections::BTreeSet;

use narlink_protocol::digest::{hex, short, state_digest};
use narlink_protocol::sim::{Prob, Rng};

use crate::common::{demo, sh, Rig};
use crate::hostile::{frames_of, write_frames};

/// Frames of 512 bytes, groups of 8, 25 % parity in the first pass.
const LINK: [&str; 6] = [
    "--frame-size",
    "512",
    "--group-k",
    "8",
    "--redundancy",
    "25",
];
/// Frames lost per pass, and status reports lost on the downlink.
const FRAME_LOSS: f64 = 0.3;
const REPORT_LOSS: f64 = 0.4;

struct Loop {
    rig: Rig,
    rng: Rng,
    seed: u64,
    /// Whether the ground holds a report (the last one that got down is `down`).
    heard: bool,
    rounds: u32,
}

impl Loop {
    fn profile(&self) -> String {
        self.rig.profile()
    }

    fn show(&self, step: &str) -> serde_json::Value {
        let s = self
            .rig
            .json(&["ground", "show", "--mirror", self.rig.p("mirror")]);
        if std::env::var_os("NARLINK_LOOP_SHOW").is_some() {
            eprintln!("== seed {}: {step}\n{s:#}", self.seed);
        }
        assert_eq!(s["stale"], false, "seed {}, {step}: {s:#}", self.seed);
        // The ground's view is what Nix on the device shows.
        let (generation, root, digest) = self.nix_truth();
        let last = &s["last_report"];
        let seed = self.seed;
        assert_eq!(
            last["live_generation"], generation,
            "seed {seed}, {step}: {s:#}"
        );
        assert_eq!(
            last["live_root"],
            root.as_str(),
            "seed {seed}, {step}: {s:#}"
        );
        assert_eq!(
            s["state"],
            digest.as_str(),
            "seed {seed}, {step}: the mirror's paths"
        );
        s
    }

    /// One pass over the link: each frame of `file` lost with [`FRAME_LOSS`].
    fn pass(&mut self, file: &str) {
        let kept: Vec<_> = frames_of(file)
            .into_iter()
            .filter(|_| !self.rng.chance(Prob::new(FRAME_LOSS)))
            .collect();
        if kept.is_empty() {
            return; // nothing came through
        }
        write_frames(self.rig.p("air"), &kept);
        self.rig.receive(self.rig.p("air"));
    }

    /// The device writes a report; it reaches the ground with probability 1 - REPORT_LOSS,
    /// and the ground acks it (the mirror must stay in step). Returns whether it got down.
    fn report(&mut self) -> bool {
        let mine = self.rig.status(&[]);
        if self.rng.chance(Prob::new(REPORT_LOSS)) {
            return false;
        }
        std::fs::copy(self.rig.p("status"), self.rig.p("down")).unwrap();
        let out = self.rig.run(&[
            "ground",
            "ack",
            "--json",
            "--mirror",
            self.rig.p("mirror"),
            self.rig.p("down"),
        ]);
        let ack: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            out.status.success() && ack["in_step"] == true,
            "seed {}: the mirror fell out of step: {ack:#}\ndevice said {mine:#}",
            self.seed
        );
        self.heard = true;
        true
    }

    /// Report until one gets down.
    fn report_until_heard(&mut self) {
        while !self.report() {}
    }

    /// Passes until the device holds `bundle` whole: report (maybe lost), resend from the
    /// last report the ground holds, receive what survives the link.
    fn deliver(&mut self, bundle: &str) {
        loop {
            self.rounds += 1;
            assert!(self.rounds < 200, "seed {}: no end in sight", self.seed);
            let st = self.rig.status(&[]);
            if st["bundle"] == bundle && st["phase"] != "receiving" {
                assert_eq!(st["phase"], "ready to import", "seed {}: {st:#}", self.seed);
                return;
            }
            if self.report() {
                self.check_needs(bundle);
            }
            if !self.heard {
                continue;
            }
            let frames = self.rig.p("resend").to_owned();
            let _ = std::fs::remove_file(&frames);
            self.rig.ok(&[
                "ground",
                "resend",
                "--mirror",
                self.rig.p("mirror"),
                "--status",
                self.rig.p("down"),
                "--frames",
                &frames,
            ]);
            self.pass(&frames);
        }
    }

    /// If the report just taken says `bundle` is being received, `ground show` gives exactly
    /// the shards it lists, and their frame bytes, as what the next pass needs.
    fn check_needs(&self, bundle: &str) {
        let down = self.rig.json(&["inspect", self.rig.p("down")]);
        if down["bundle"] != bundle || down["phase"] != "receiving" {
            return;
        }
        let shards: u64 = down["needs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n[1].as_u64().unwrap())
            .sum();
        let s = self.show("receiving");
        let b = &s["bundles"][0];
        assert_eq!(b["bundle"], bundle, "seed {}: {s:#}", self.seed);
        assert_eq!(b["shards_needed"], shards, "seed {}: {s:#}", self.seed);
        // 512-byte frames and 44 bytes of frame header and checksum each.
        assert_eq!(b["bytes_needed"], shards * (512 + 44), "seed {}", self.seed);
        assert_eq!(
            s["next_pass_bytes"],
            shards * (512 + 44),
            "seed {}",
            self.seed
        );
    }

    /// `ground pack --frames` of `target`; the bundle id. The first pass goes on air.
    fn pack(&mut self, name: &str, target: &str, extra: &[&str]) -> String {
        let frames = format!("{}.frames", self.rig.p(name));
        let mut a = vec!["--out", self.rig.p(name), "--frames", &frames];
        a.extend_from_slice(&LINK);
        a.extend_from_slice(extra);
        a.push(target);
        let id = self.rig.pack(&a)["bundle"].as_str().unwrap().to_owned();
        self.pass(&frames);
        id
    }

    /// The device imports what it holds and lands it with `activate`; whether that passed.
    fn import(&self, activate: &str) -> bool {
        let profile = self.profile();
        let out = self.rig.run(&[
            "device",
            "import",
            "--state",
            self.rig.p("state"),
            "--profile",
            &profile,
            "--activate",
            activate,
        ]);
        out.status.success()
    }

    /// What Nix on the device shows: the live generation, the path it holds, and the state
    /// digest of every valid path.
    fn nix_truth(&self) -> (u64, String, String) {
        let store = self.rig.store();
        let profile = self.profile();
        let generations = sh(&format!(
            "nix-env --store '{store}' -p {profile} --list-generations"
        ));
        let current = generations
            .lines()
            .find(|l| l.contains("(current)"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .expect("a current generation");
        let link = std::fs::read_link(&profile).unwrap();
        let root = std::fs::read_link(std::path::Path::new(&profile).parent().unwrap().join(link))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let valid: BTreeSet<String> = sh(&format!(
            "nix-store --store '{store}' --gc --print-live 2>/dev/null; \
             nix-store --store '{store}' --gc --print-dead 2>/dev/null"
        ))
        .lines()
        .filter(|l| l.starts_with("/nix/store/"))
        .map(str::to_owned)
        .collect();
        let digest = hex(&short(&state_digest(valid.iter().map(String::as_str))));
        (current, root, digest)
    }
}

/// The ground's record of each bundle, newest first: (id, standing, reason).
pub fn standings(show: &serde_json::Value) -> Vec<(String, String, String)> {
    show["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap().to_owned();
            (s("bundle"), s("standing"), s("reason"))
        })
        .collect()
}

fn operator_loop(seed: u64) -> u32 {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);
    sh(&format!(
        "nix-env --store '{}' -p {} --set {v1}",
        rig.store(),
        rig.dir
            .join("device/nix/var/nix/profiles/narlink")
            .display()
    ));
    let mut l = Loop {
        rig,
        rng: Rng::new(seed),
        seed,
        heard: false,
        rounds: 0,
    };
    l.report_until_heard();
    l.show("first contact");

    // Update A: v2, its activation passes.
    let a = l.pack("a", &v2, &[]);
    l.deliver(&a);
    assert!(
        l.import("test -x \"$NARLINK_ROOT/bin/demo\""),
        "seed {seed}"
    );
    l.report_until_heard();
    let s = l.show("A landed");
    assert_eq!(s["last_report"]["live_generation"], 2);
    assert_eq!(s["last_report"]["activation"], "passed");

    // The device collects garbage: v1's own paths leave; the reports say which.
    l.rig.ok(&[
        "device",
        "gc",
        "--state",
        l.rig.p("state"),
        "--profile",
        &l.profile(),
        "--keep-generations",
        "1",
    ]);
    l.report_until_heard();
    l.show("after the device's GC");

    // Update B: back to v1 (whose own paths the GC removed), superseded mid-flight by C: v3.
    let b = l.pack("b", &v1, &[]);
    if l.report() {
        l.show("B in flight");
    }
    let c = l.pack("c", &v3, &["--supersede"]);
    l.show("C packed, superseding B");
    l.deliver(&c);
    // C's activation fails: the device rolls back to A's generation.
    assert!(
        !l.import("echo self-test failed >&2; exit 3"),
        "seed {seed}"
    );
    l.report_until_heard();
    let s = l.show("C landed, activation failed, rolled back");

    // `show` checked the live generation, its path and the mirror's paths against Nix.
    let last = &s["last_report"];
    assert_eq!(
        last["live_root"],
        v2.as_str(),
        "seed {seed}: A's generation is live again"
    );
    assert_eq!(last["activation"], "failed, rolled back", "seed {seed}");
    assert_eq!(s["next_pass_bytes"], 0);
    let mut st = standings(&s);
    // B's reason is "superseded" if the device had taken its head before C came, else the
    // ground's own record (none) stands.
    assert!(
        ["none", "superseded"].contains(&st[1].2.as_str()),
        "seed {seed}: {s:#}"
    );
    st[1].2 = "none".into();
    assert_eq!(
        st,
        [
            (c, "failed".into(), "activation failed, rolled back".into()),
            (b, "superseded".into(), "none".into()),
            (a, "imported".into(), "none".into()),
        ],
        "seed {seed}: {s:#}"
    );
    l.rounds
}

fn seeds(first: u64) {
    let n: u64 = std::env::var("NARLINK_LOOP_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for seed in first..first + n {
        let rounds = operator_loop(seed);
        eprintln!("operator loop seed {seed}: {rounds} delivery rounds");
    }
}

#[test]
fn operator_loop_seeds_1_to_5() {
    seeds(1);
}

#[test]
fn operator_loop_seeds_101_to_105() {
    seeds(101);
}

#[test]
fn operator_loop_seeds_201_to_205() {
    seeds(201);
}

#[test]
fn operator_loop_seeds_301_to_305() {
    seeds(301);
}
