//! The NAR commitment and the rewrites a device finds itself (manifest version 7): a bundle
//! whose NARs would come out other than the ground's is refused before any byte reaches Nix.
//!
//! Each test plays a ground that restores store hashes differently from the device (a bug, or
//! version skew): it decodes a genuine bundle, changes what the device is told, and signs the
//! result with the rig's own key, so that only the checks after the signature can catch it.

use narlink::ground::pack::encode_head;
use narlink::head::read_manifest;
use narlink_protocol::manifest::{resolve_in, Manifest, Rewrites};
use narlink_protocol::signature::SecretKey;
use narlink_protocol::storepath::PathSet;

use crate::common::*;

/// What the rigs' devices hold: the closure of `demo(1)`.
fn on_board() -> Vec<String> {
    sh(&format!("nix-store -qR {}", demo(1)))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The manifest of the bundle `bytes`, decoded as the device does.
fn manifest_of(bytes: &[u8]) -> (Manifest, u64) {
    let on_board = on_board();
    let set = PathSet::new(on_board.iter().map(String::as_str));
    let head = read_manifest(&mut &bytes[..], resolve_in(&set)).unwrap();
    (head.manifest, head.header.payload_offset())
}

/// Decode the bundle at `from`, let `change` edit its manifest, and write it, signed with the
/// rig's key and with the same payload bytes, to `to`.
fn forge(rig: &Rig, from: &str, to: &str, change: impl FnOnce(&mut Manifest)) {
    let bytes = std::fs::read(from).unwrap();
    let (mut m, payload_offset) = manifest_of(&bytes);
    change(&mut m);
    let on_board = on_board();
    let device = PathSet::new(
        on_board
            .iter()
            .map(String::as_str)
            .chain(m.paths.iter().map(|p| p.store_path.as_str())),
    );
    let key = SecretKey::from_nix(std::fs::read_to_string(rig.p("sk")).unwrap().trim()).unwrap();
    let (_, mut out) = encode_head(&m, &device, Some(&key)).unwrap();
    out.extend_from_slice(&bytes[payload_offset as usize..]);
    std::fs::write(to, out).unwrap();
}

/// How many of `paths` are not valid in the device's store.
fn invalid(rig: &Rig, paths: &[String]) -> usize {
    sh(&format!(
        "nix-store --store '{}' --check-validity --print-invalid {} || true",
        rig.store(),
        paths.join(" ")
    ))
    .lines()
    .count()
}

/// `device import` fails saying `why`; nothing of the bundle is valid in the store.
fn import_refused(rig: &Rig, new_paths: &[String], why: &str) {
    let err = rig.fails_with(&["device", "import", "--state", rig.p("state")], why);
    assert_eq!(invalid(rig, new_paths), new_paths.len(), "{err}");
}

fn new_paths(bundle: &str) -> Vec<String> {
    let (m, _) = manifest_of(&std::fs::read(bundle).unwrap());
    m.paths.iter().map(|p| p.store_path.clone()).collect()
}

/// A path with a store hash of another entry of its hash list to put back: its first
/// rewrite's index moved to the next entry.
fn swap_one_index(m: &mut Manifest) -> String {
    for p in &mut m.paths {
        let entries = 1 + p.references.iter().filter(|r| **r != p.store_path).count();
        if entries < 2 {
            continue;
        }
        let first = match &mut p.rewrites {
            Rewrites::At(gaps) => gaps.first_mut().map(|g| &mut g.1),
            Rewrites::Scan(indices) => indices.first_mut(),
        };
        if let Some(i) = first {
            *i = (*i + 1) % entries as u16;
            return p.store_path.clone();
        }
    }
    panic!("no path with a rewrite and two hashes to choose from");
}

/// A small bundle carries no narHash: the commitment alone stops a NAR that comes out with
/// another store hash in it, before Nix sees a byte. The genuine bundle then imports.
#[test]
fn nars_that_miss_the_commitment_import_nothing() {
    let rig = Rig::new(&demo(1));
    rig.pack(&["--out", rig.p("b"), &demo(2)]);
    let (genuine, _) = manifest_of(&std::fs::read(rig.p("b")).unwrap());
    assert!(
        genuine.paths.iter().all(|p| p.nar_hash.is_none()),
        "a small bundle carries its narHashes"
    );
    // The demo's paths exercise the device's own scan for placeholders.
    assert!(genuine
        .paths
        .iter()
        .any(|p| matches!(p.rewrites, Rewrites::Scan(_))));
    let paths = new_paths(rig.p("b"));

    let mut changed = String::new();
    forge(&rig, rig.p("b"), rig.p("forged"), |m| {
        changed = swap_one_index(m)
    });
    rig.receive(rig.p("forged"));
    import_refused(&rig, &paths, "commitment");
    eprintln!("changed {changed}: refused");

    // The genuine bundle is not held back by the forged one's failure.
    rig.receive(rig.p("b"));
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&demo(2));
}

/// Where the device is to find the hashes itself, one index more or fewer than the scan finds
/// is refused, naming the path.
#[test]
fn a_scan_that_finds_other_places_is_refused() {
    let rig = Rig::new(&demo(1));
    rig.pack(&["--out", rig.p("b"), &demo(2)]);
    let paths = new_paths(rig.p("b"));
    for (name, extra) in [("more", true), ("fewer", false)] {
        let forged = rig.p(name).to_owned();
        let mut changed = String::new();
        forge(&rig, rig.p("b"), &forged, |m| {
            let p = m
                .paths
                .iter_mut()
                .find(|p| matches!(&p.rewrites, Rewrites::Scan(i) if !i.is_empty()))
                .expect("a path with scanned rewrites");
            if let Rewrites::Scan(indices) = &mut p.rewrites {
                if extra {
                    indices.push(0);
                } else {
                    indices.pop();
                }
            }
            changed = p.store_path.clone();
        });
        rig.receive(&forged);
        import_refused(&rig, &paths, "not where its placeholders are");
        eprintln!("{changed}: one index {name}: refused");
    }
}

/// A bundle of more than one FEC group carries a narHash per path, so that a path can be
/// imported before the rest is in; a path whose NAR comes out other than its narHash is
/// refused by that check, whatever the commitment says.
#[test]
fn a_large_bundle_checks_each_path_on_its_own() {
    let big = blob(1);
    let rig = Rig::new(&demo(1));
    rig.pack(&["--out", rig.p("b"), &big]);
    let paths = new_paths(rig.p("b"));
    forge(&rig, rig.p("b"), rig.p("forged"), |m| {
        assert!(m.paths.iter().all(|p| p.nar_hash.is_some()));
        let p = m.paths.last_mut().unwrap();
        p.nar_hash = Some([0x5a; 32]);
    });
    rig.receive(rig.p("forged"));
    import_refused(&rig, &paths, "rebuilt NAR has hash");
    rig.receive(rig.p("b"));
    rig.ok(&["device", "import", "--state", rig.p("state")]);
    rig.assert_holds(&big);
}
