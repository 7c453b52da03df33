//! The authenticated downlink (issue 12): reports and inventories the mirror must not believe
//! are refused, each with its own error, and leave the mirror byte-for-byte as it was.

use crate::common::{demo, sh, Rig};

/// `ground ack` of `report` (with `extra`) must fail naming `why`, and change no byte of the
/// mirror.
fn refused(rig: &Rig, report: &str, extra: &[&str], why: &str) {
    let before = std::fs::read(rig.dir.join("mirror/mirror.redb")).unwrap();
    let mut a = vec!["ground", "ack", "--mirror", rig.p("mirror"), report];
    a.extend_from_slice(extra);
    let out = rig.run(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{report} was taken");
    assert!(
        err.contains(why),
        "{report}: expected \"{why}\", got: {err}"
    );
    let after = std::fs::read(rig.dir.join("mirror/mirror.redb")).unwrap();
    assert!(
        before == after,
        "{report}: the refused report changed the mirror"
    );
}

/// `ground ack` of `report` succeeds.
fn taken(rig: &Rig, report: &str) {
    rig.ok(&["ground", "ack", "--mirror", rig.p("mirror"), report]);
}

fn write<'a>(rig: &'a Rig, name: &str, bytes: &[u8]) -> &'a str {
    let p = rig.p(name);
    std::fs::write(p, bytes).unwrap();
    p
}

/// Flip one byte of `m` at `at` and make its CRC-32C (the last 4 bytes) match again.
fn forge(m: &[u8], at: usize) -> Vec<u8> {
    let mut m = m.to_vec();
    m[at] ^= 0x01;
    let n = m.len() - 4;
    let crc = narlink_protocol::frame::crc32c(&m[..n]).to_le_bytes();
    m[n..].copy_from_slice(&crc);
    m
}

#[test]
fn forged_foreign_unsealed_older_and_damaged_reports_change_nothing() {
    let v1 = demo(1);
    let rig = Rig::new(&v1);
    rig.status(&[]);
    let first = std::fs::read(rig.p("status")).unwrap();
    taken(&rig, rig.p("status"));

    // The same report again, or an older one: a replay.
    refused(&rig, rig.p("status"), &[], "not newer than message");

    rig.status(&[]);
    let fresh = std::fs::read(rig.p("status")).unwrap();
    let seal = narlink_protocol::seal::SEAL_LEN;
    // The report without its seal, as an older narlink wrote them.
    let bare = write(&rig, "bare", &fresh[..fresh.len() - seal]);
    refused(&rig, bare, &[], "is not sealed");
    // A flipped phase byte with the checksum made good: the tag does not match.
    let forged = write(&rig, "forged", &forge(&fresh, 3));
    refused(&rig, forged, &[], "forged");
    // A flipped bit in transit.
    let mut damaged = fresh.clone();
    damaged[10] ^= 0x40;
    let damaged = write(&rig, "damaged", &damaged);
    refused(&rig, damaged, &[], "is damaged");
    // Another device's report (another state directory, so another key).
    rig.ok(&[
        "device",
        "init",
        "--state",
        rig.p("other"),
        "--store",
        &rig.store(),
        "--trust",
        rig.p("pk"),
    ]);
    let other = rig.p("other-status");
    rig.ok(&[
        "device",
        "status",
        "--state",
        rig.p("other"),
        "--out",
        other,
    ]);
    refused(&rig, other, &[], "and this mirror is for device");
    assert_ne!(first, fresh);

    // The genuine fresh report still goes in after all that.
    taken(&rig, rig.p("status"));
}

#[test]
fn an_inventory_of_another_state_does_not_rebuild_the_mirror() {
    let v1 = demo(1);
    let rig = Rig::new(&v1);
    let store = rig.store();
    // State B: another closure arrives out of band (no report can explain that: only an
    // inventory can).
    let v2 = demo(2);
    sh(&format!(
        "nix-store --export $(nix-store -qR {v2}) | nix-store --store '{store}' --import >/dev/null"
    ));
    rig.ok(&["device", "gc", "--no-collect", "--state", rig.p("state")]);
    let (first_b, report_b) = (rig.p("status-b1"), rig.p("status-b"));
    for out in [first_b, report_b] {
        rig.ok(&["device", "status", "--state", rig.p("state"), "--out", out]);
    }
    // The mirror learns B: stale (exit 3).
    let out = rig.run(&["ground", "ack", "--mirror", rig.p("mirror"), first_b]);
    assert_eq!(out.status.code(), Some(3));
    // State C: the first closure's root leaves the store; its report and inventory are newer
    // than B's.
    sh(&format!(
        "nix-store --store '{store}' --delete {v1} >/dev/null 2>&1"
    ));
    rig.ok(&["device", "gc", "--no-collect", "--state", rig.p("state")]);
    let report_c = rig.p("status-c");
    let inv_c = rig.p("inventory-c");
    rig.ok(&[
        "device",
        "status",
        "--state",
        rig.p("state"),
        "--out",
        report_c,
        "--inventory",
        inv_c,
    ]);

    // A newer report of B with the inventory of C: refused whole, the mirror unchanged and
    // still stale.
    let mismatch = ["--inventory", inv_c];
    refused(&rig, report_b, &mismatch, "they were not written together");
    let pack = rig.pack_output(&["--out", rig.p("b"), &v2]);
    let err = String::from_utf8_lossy(&pack.stderr);
    assert!(!pack.status.success() && err.contains("stale"), "{err}");

    // The inventory with its own report rebuilds the mirror, in step.
    rig.ok(&[
        "ground",
        "ack",
        "--mirror",
        rig.p("mirror"),
        report_c,
        "--inventory",
        inv_c,
    ]);
    // An unsealed inventory is refused too, and with it its report.
    sh(&format!(
        "nix-store --store '{store}' --delete {v2} >/dev/null 2>&1"
    ));
    rig.ok(&["device", "gc", "--no-collect", "--state", rig.p("state")]);
    rig.status(&["--inventory", rig.p("inv-d")]);
    let inv = std::fs::read(rig.p("inv-d")).unwrap();
    let seal = narlink_protocol::seal::SEAL_LEN;
    let bare = write(&rig, "inv-bare", &inv[..inv.len() - seal]);
    refused(
        &rig,
        rig.p("status"),
        &["--inventory", bare],
        "inventory is not sealed",
    );
}

/// The device's identity and counter live beside its database: a `device.redb` restored from
/// a backup, or made afresh by `device init` after damage, still seals reports the mirror
/// takes (the same key, a counter never reused).
#[test]
fn identity_survives_a_restored_or_remade_state() {
    let v1 = demo(1);
    let rig = Rig::new(&v1);
    let db = rig.dir.join("state/device.redb");
    let backup = rig.dir.join("device.redb.backup");
    std::fs::copy(&db, &backup).unwrap();
    for _ in 0..2 {
        rig.status(&[]);
        taken(&rig, rig.p("status"));
    }
    // Restored from the backup, older than both reports.
    std::fs::copy(&backup, &db).unwrap();
    rig.status(&[]);
    taken(&rig, rig.p("status"));
    // Damaged beyond repair: moved aside, made afresh.
    std::fs::rename(&db, rig.dir.join("device.redb.damaged")).unwrap();
    rig.init_device();
    rig.status(&[]);
    taken(&rig, rig.p("status"));
}
