//! Trust: only bundles signed by a key the device trusts, and newer than the last one it
//! imported, get anywhere near the store.

use std::path::Path;

use crate::common::*;

fn refused(rig: &Rig, bundle: &str, expect: &str) {
    let before = rig.device_db();
    let out = rig.run(&["device", "receive", "--state", rig.p("state"), bundle]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted {bundle}");
    assert!(err.contains(expect), "expected {expect:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let imp = rig.json(&["device", "import", "--state", rig.p("state")]);
    assert_eq!(imp["bundles"].as_array().unwrap().len(), 0, "{imp}");
    assert_eq!(rig.device_db(), before, "device store changed");
}

#[test]
fn unsigned_untrusted_and_replayed_bundles_are_refused() {
    let (v1, v2, v3) = (demo(1), demo(2), demo(3));
    let rig = Rig::new(&v1);

    // Unsigned.
    rig.json(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror"),
        "--unsigned",
        "--out",
        rig.p("unsigned"),
        &v2,
    ]);
    refused(&rig, rig.p("unsigned"), "the bundle is not signed");

    // Signed by a key the device does not trust.
    sh(&format!(
        "nix-store --generate-binary-cache-key other-1 {} {}",
        rig.p("other.sk"),
        rig.p("other.pk")
    ));
    rig.json(&[
        "ground",
        "pack",
        "--mirror",
        rig.p("mirror"),
        "--sign-key",
        rig.p("other.sk"),
        "--supersede",
        "--out",
        rig.p("untrusted"),
        &v2,
    ]);
    refused(
        &rig,
        rig.p("untrusted"),
        "none of which this device trusts (it trusts ground-1 = ",
    );

    // A forged signature: the trusted key's id, bytes flipped. As it came, the head no longer
    // matches its bundle id (transit damage, asked for again); with the id made anew around
    // the forgery, the signature itself is what fails.
    let r = rig.pack(&["--supersede", "--out", rig.p("forged"), &v2]);
    let len = std::fs::metadata(rig.p("forged")).unwrap().len();
    let payload = r["bytes_compressed"].as_u64().unwrap();
    flip(Path::new(rig.p("forged")), len - payload - 10);
    refused(
        &rig,
        rig.p("forged"),
        "bundle head does not match the bundle id",
    );
    rehead(Path::new(rig.p("forged")));
    refused(&rig, rig.p("forged"), "does not match the manifest");

    // An older bundle (planned earlier, never delivered) after a newer one was imported.
    rig.pack(&["--supersede", "--out", rig.p("old"), &v2]);
    rig.pack(&["--supersede", "--out", rig.p("new"), &v3]);
    rig.receive_import(rig.p("new"));
    rig.assert_holds(&v3);
    refused(
        &rig,
        rig.p("old"),
        "not newer than the last imported bundle",
    );
    // The same newest bundle again is harmless.
    rig.receive(rig.p("new"));
}

#[test]
fn device_without_trust_is_refused_at_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = nix_env(std::process::Command::new(NARLINK).args([
        "device",
        "init",
        "--state",
        &tmp.path().join("s").to_string_lossy(),
        "--store",
        &format!("local?root={}", tmp.path().join("d").display()),
    ]))
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trust"));
}

/// Peak resident memory of a running process, from /proc, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// 1 GiB of random frames — garbage, and well-formed frames of random bundles — leave the
/// device within its configured memory and disk bounds, and a real bundle still imports.
#[test]
fn flood_of_random_frames_stays_within_bounds() {
    use narlink_protocol::frame::{FrameHeader, FrameRef};
    use narlink_protocol::params::{CodecId, LinkParams};
    use std::io::Write;

    let flood: u64 = std::env::var("NARLINK_FLOOD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    let quota = narlink::state::device::DeviceLimits {
        link_quota_bytes: 64 << 20,
        unverified_bytes: 1 << 20,
        ..Default::default()
    };
    narlink::state::device::DeviceState::open(std::path::Path::new(rig.p("state")))
        .unwrap()
        .set_limits(&quota)
        .unwrap();

    let mut child = nix_env(std::process::Command::new(NARLINK).args([
        "--quiet",
        "device",
        "receive",
        "--json",
        "--state",
        rig.p("state"),
        "-",
    ]))
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut rng = narlink_protocol::sim::Rng::new(99);
        let ids: Vec<[u8; 16]> = (0..8)
            .map(|i| *blake3::hash(&[i as u8]).as_bytes().first_chunk().unwrap())
            .collect();
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(1 << 20);
        while sent < flood {
            buf.clear();
            while buf.len() < (1 << 20) {
                if rng.below(4) == 0 {
                    let n = 1 + rng.below(4096) as usize;
                    buf.extend((0..n).map(|_| rng.next_u32() as u8));
                } else {
                    // Half the well-formed frames keep their bundle's parameters (so junk
                    // bundles grow until the quotas stop them), half contradict them.
                    let i = rng.below(ids.len() as u64) as usize;
                    let len = if rng.below(2) == 0 {
                        (1 << 20) + (i as u64) * (5 << 20)
                    } else {
                        (1 << 20) + rng.below(1 << 30)
                    };
                    let params = LinkParams {
                        codec: CodecId::RsSimd16,
                        shard_size: 1024,
                        group_k: 1000,
                        parity: 1000,
                        bundle_len: len,
                    };
                    let groups = params.validate().unwrap().group_count();
                    let header = FrameHeader {
                        bundle_id: ids[i],
                        params,
                        group: rng.below(u64::from(groups)) as u32,
                        shard: rng.below(1000) as u16,
                    };
                    let payload: Vec<u8> = (0..1024).map(|_| rng.next_u32() as u8).collect();
                    FrameRef::new(header, &payload).unwrap().encode(&mut buf);
                }
            }
            if stdin.write_all(&buf).is_err() {
                break;
            }
            sent += buf.len() as u64;
        }
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss(pid).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let disk = std::fs::metadata(rig.dir.join("state/device.redb"))
        .unwrap()
        .len();
    eprintln!(
        "flood of {flood} bytes: peak RSS {peak} bytes, state file {disk} bytes; {}",
        r["link"]
    );
    assert!(peak < 64 << 20, "peak RSS {peak}");
    assert!(
        disk < 2 * quota.link_quota_bytes + (32 << 20),
        "state file grew to {disk} bytes"
    );
    assert!(
        r["link"]["over_quota"].as_u64().unwrap() > 0,
        "the quota was never reached: {r}"
    );

    // A real bundle afterwards still imports.
    rig.pack(&["--out", rig.p("b"), "--frames", rig.p("frames"), &v2]);
    rig.receive_import(rig.p("frames"));
    rig.assert_holds(&v2);
}

/// Flip bytes of a small signed bundle's frames — as line noise (the CRC catches it) and as a
/// forger who fixes the CRC — and feed the frames to a fresh device each time. Every outcome
/// is either the exact bundle (same signed manifest, same verified chunks) or an incomplete
/// one whose damaged groups are asked for again; never different content. A sample of the
/// forged cases then completes with clean frames and is imported into a real store.
#[test]
fn flipped_frame_bytes_never_yield_different_content() {
    use narlink::device::link::LinkReceiver;
    use narlink::state::device::{DeviceState, Phase};

    let (v1, v2) = (demo(1), demo(2));
    let rig = Rig::new(&v1);
    rig.pack(&["--out", rig.p("b"), "--frames", rig.p("frames"), &v2]);
    let frames: Vec<Vec<u8>> = std::fs::read(rig.p("frames"))
        .unwrap()
        .chunks(1024 + 44)
        .map(<[u8]>::to_vec)
        .collect();
    let template = rig.dir.join("state/device.redb");
    let expected_manifest = {
        // The clean run, for reference.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&template, dir.path().join("device.redb")).unwrap();
        let st = DeviceState::open(dir.path()).unwrap();
        let mut rx = LinkReceiver::open(&st).unwrap();
        for f in &frames {
            rx.handle_bytes(f).unwrap();
        }
        rx.flush().unwrap();
        let (_, rec) = st.bundles().unwrap().pop().unwrap();
        assert_eq!(rec.phase, Phase::Complete);
        rec.manifest
    };
    let total: usize = frames.iter().map(Vec::len).sum();
    let stride = std::env::var("NARLINK_FLIP_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(97);
    let (mut complete, mut incomplete, mut cases) = (0, 0, 0);
    let mut forged_incomplete = Vec::new();
    for forge in [false, true] {
        for pos in (0..total).step_by(stride) {
            let (fi, off) = (pos / (1024 + 44), pos % (1024 + 44));
            let mut damaged = frames.clone();
            damaged[fi][off] ^= 0x5a;
            if forge {
                if off < 40 {
                    continue; // a forger keeps the header valid; header flips are covered above
                }
                let n = damaged[fi].len();
                let crc = narlink_protocol::frame::crc32c(&damaged[fi][..n - 4]);
                damaged[fi][n - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(&template, dir.path().join("device.redb")).unwrap();
            let st = DeviceState::open(dir.path()).unwrap();
            let mut rx = LinkReceiver::open(&st).unwrap();
            for f in &damaged {
                rx.handle_bytes(f).unwrap();
            }
            rx.flush().unwrap();
            cases += 1;
            match st.bundles().unwrap().pop() {
                Some((_, rec)) if rec.phase == Phase::Complete => {
                    assert_eq!(
                        rec.manifest, expected_manifest,
                        "flip at {pos} (forged: {forge}) changed the manifest"
                    );
                    complete += 1;
                }
                _ => {
                    // Nothing staged from the damaged group; the status asks for it again.
                    incomplete += 1;
                    if forge && forged_incomplete.len() < 3 {
                        forged_incomplete.push((pos, dir));
                    }
                }
            }
        }
    }
    eprintln!(
        "{cases} flips: {complete} complete and identical, {incomplete} incomplete (asked again)"
    );
    assert!(!forged_incomplete.is_empty(), "no forged frame was caught");
    // The clean frames (a resend) complete the caught cases, and they import byte-exact.
    for (pos, dir) in forged_incomplete {
        let st = DeviceState::open(dir.path()).unwrap();
        let mut rx = LinkReceiver::open(&st).unwrap();
        for f in &frames {
            rx.handle_bytes(f).unwrap();
        }
        rx.flush().unwrap();
        let (_, rec) = st.bundles().unwrap().pop().unwrap();
        assert_eq!(
            rec.phase,
            Phase::Complete,
            "flip at {pos}: clean frames did not complete it"
        );
        assert_eq!(rec.manifest, expected_manifest);
        drop(rx);
        drop(st);
        let device = tempfile::tempdir().unwrap();
        sh(&format!(
            "cp -a {}/device {}/",
            rig.dir.display(),
            device.path().display()
        ));
        let uri = format!("local?root={}", device.path().join("device").display());
        let st = DeviceState::open(dir.path()).unwrap();
        narlink::device::import::import_all(
            &st,
            &narlink::nixstore::NixStore::new(Some(&uri)),
            false,
            false,
            None,
        )
        .unwrap();
        let closure = sh(&format!("nix-store -qR {v2}"));
        sh(&format!(
            "nix-store --store '{uri}' --verify-path {}",
            closure.lines().collect::<Vec<_>>().join(" ")
        ));
        assert_eq!(sh(&format!("nix-store --store '{uri}' -qR {v2}")), closure);
    }
}
