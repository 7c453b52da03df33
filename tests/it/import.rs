//! Putting NARs into Nix: `NixStore::add_nars` (Nix checks our narHash before it registers a
//! path) and the device import's memory on a large NAR.

use std::process::Command;

use narlink::nar::NarHash;
use narlink::nixstore::{NarMeta, NixStore};

use crate::common::*;

/// Nix itself refuses a NAR that does not hash to the narHash narlink announces, and one that
/// ends early; neither leaves the path valid, and a correct NAR afterwards is accepted.
#[test]
fn add_nars_is_checked_by_nix() {
    let app = demo(1);
    let ground = NixStore::new(None);
    let path = ground
        .closure(std::slice::from_ref(&app))
        .unwrap()
        .into_iter()
        .find(|p| p.contains("-zlib-"))
        .unwrap();
    let info = ground
        .path_infos(Some(std::slice::from_ref(&path)))
        .unwrap()
        .remove(0);
    assert!(info.references.is_empty());
    let nar = Command::new("nix-store")
        .env("NIX_REMOTE", "local")
        .args(["--dump", &path])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(nar.len() as u64, info.nar_size);
    let tmp = tempfile::tempdir().unwrap();
    let device = NixStore::new(Some(&format!("local?root={}", tmp.path().display())));
    let meta = NarMeta {
        path: &path,
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: &[],
        deriver: info.deriver.as_deref(),
    };
    let valid = || device.valid_paths(std::slice::from_ref(&path)).unwrap();

    // One byte of file content flipped: same size, other hash.
    let mut bad = nar.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    let err = device
        .add_nars(|nix| nix.add(&meta, |w| w.write_all(&bad)))
        .unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    assert!(valid().is_empty());

    // The announced hash is not the NAR's.
    let wrong = NarMeta {
        nar_hash: NarHash::of(b"something else"),
        ..meta
    };
    let err = device
        .add_nars(|nix| nix.add(&wrong, |w| w.write_all(&nar)))
        .unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    assert!(valid().is_empty());

    // The NAR stops halfway (narlink's stream failed): Nix sees EOF within the NAR.
    let half = nar.len() / 2;
    assert!(device
        .add_nars(|nix| nix.add(&meta, |w| {
            w.write_all(&nar[..half])?;
            Err(std::io::Error::other("chunk missing"))
        }))
        .is_err());
    assert!(valid().is_empty());
    // What Nix had restored of it is on disk, invalid; `delete` removes it (the device import
    // does so when it fails).
    assert!(device.real_path(&path).exists());
    device.delete(std::slice::from_ref(&path)).unwrap();
    assert!(!device.real_path(&path).exists());

    // More bytes than narSize never reach Nix.
    let mut long = nar.clone();
    long.extend_from_slice(&[0u8; 8]);
    assert!(device
        .add_nars(|nix| nix.add(&meta, |w| w.write_all(&long)))
        .is_err());
    assert!(valid().is_empty());

    // The real NAR: valid, and Nix's own check of the contents passes.
    device
        .add_nars(|nix| nix.add(&meta, |w| w.write_all(&nar)))
        .unwrap();
    assert_eq!(valid().len(), 1);
    device.verify_paths(std::slice::from_ref(&path)).unwrap();
    let back = device
        .path_infos(Some(std::slice::from_ref(&path)))
        .unwrap();
    assert_eq!(back[0].nar_hash, info.nar_hash);
    assert_eq!(back[0].deriver, info.deriver);
}

/// A path of 64 MiB of incompressible bytes is imported with the whole process tree (narlink
/// and the Nix it runs) under 48 MiB: nothing holds the NAR whole (Nix 2.8's
/// `nix-store --import` did, at about twice the NAR). Measured like the scenario benchmark,
/// with GNU time's %M (largest RSS of narlink and of every process it waited for).
#[test]
fn device_import_memory_does_not_grow_with_the_nar() {
    const MIB: u64 = 64;
    let big = blob(MIB);
    let rig = Rig::new(&demo(1));
    rig.pack(&["--level", "1", "--out", rig.p("b"), &big]);
    rig.receive(rig.p("b"));
    let (out, kib) = rig.peak_rss(&["device", "import", "--state", rig.p("state")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.assert_holds(&big);
    eprintln!("device import of a {MIB} MiB NAR: peak RSS {kib} KiB");
    assert!(
        kib < 48 * 1024,
        "device import of a {MIB} MiB NAR peaked at {kib} KiB"
    );
}
