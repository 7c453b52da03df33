//! Bytes on air and round trips for a choice of group size, parity capacity and first-pass
//! redundancy, over simulated links. Scheduling and bookkeeping only (no payload coding), so
//! it runs fast; FEC speed is measured by `benches/fec.rs`.
//!
//! `cargo test -p narlink-protocol --release --test efficiency -- --ignored --nocapture`
//! prints the table quoted in SPEC.md. The non-ignored test checks the default settings.

use narlink_protocol::params::{CodecId, Limits, LinkParams};
use narlink_protocol::receiver::{GroupTracker, Outcome};
use narlink_protocol::schedule::{Sender, ShardRef};
use narlink_protocol::sim::{LinkModel, Loss};
use narlink_protocol::status::Phase;

struct Run {
    /// Frame bytes on air (payload + 44-byte overhead) / bundle bytes.
    air_ratio: f64,
    /// Passes until every group decoded (1 = no resend needed).
    passes: u32,
}

fn run(params: LinkParams, redundancy: u16, margin: u16, loss: Loss, seed: u64) -> Run {
    let id = [0; 16];
    let mut sender = Sender::new(id, params, redundancy).unwrap();
    sender.set_resend_margin(margin);
    let mut tracker = GroupTracker::new(id, params, &Limits::default()).unwrap();
    let mut link = LinkModel::new(seed).with_loss(loss);
    let mut pass: Vec<ShardRef> = sender.first_pass().collect();
    let mut passes = 0;
    let mut frames_sent = 0u64;
    while !pass.is_empty() {
        passes += 1;
        assert!(passes < 100);
        frames_sent += pass.len() as u64;
        let tokens = pass.iter().map(|s| {
            let mut v = s.group.to_le_bytes().to_vec();
            v.extend_from_slice(&s.shard.to_le_bytes());
            v
        });
        for f in link.transmit(tokens) {
            let g = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
            let s = u16::from_le_bytes([f[4], f[5]]);
            if tracker.handle_shard(g, s) == Outcome::Decodable {
                tracker.mark_decoded(g);
            }
        }
        let report = tracker.status_report([0; 16], Phase::Receiving);
        pass = sender.resend(&report).unwrap().collect();
        // A round trip passes before the next pass; bursts do not wait for it.
        link.advance(10_000);
    }
    let frame = f64::from(params.shard_size) + 44.0;
    Run {
        air_ratio: frames_sent as f64 * frame / params.bundle_len as f64,
        passes,
    }
}

fn params(codec: CodecId, k: u16, parity: u16, len: u64) -> LinkParams {
    LinkParams {
        codec,
        shard_size: 1024,
        group_k: k,
        parity,
        bundle_len: len,
    }
}

/// Mean over seeds.
fn mean(params: LinkParams, redundancy: u16, margin: u16, loss: Loss) -> (f64, f64, u32) {
    let seeds = 5;
    let runs: Vec<Run> = (0..seeds)
        .map(|s| run(params, redundancy, margin, loss, s))
        .collect();
    let air = runs.iter().map(|r| r.air_ratio).sum::<f64>() / f64::from(seeds as u32);
    let passes = runs.iter().map(|r| f64::from(r.passes)).sum::<f64>() / f64::from(seeds as u32);
    let worst = runs.iter().map(|r| r.passes).max().unwrap_or(0);
    (air, passes, worst)
}

#[test]
#[ignore = "prints the table for SPEC.md; run with --release --ignored --nocapture"]
fn efficiency_table() {
    let len = 16 << 20;
    let configs = [
        (
            "gf8  K=32   P=32  ",
            params(CodecId::RsErasure8, 32, 32, len),
        ),
        (
            "gf8  K=200  P=56  ",
            params(CodecId::RsErasure8, 200, 56, len),
        ),
        (
            "gf16 K=200  P=200 ",
            params(CodecId::RsSimd16, 200, 200, len),
        ),
        (
            "gf16 K=1000 P=1000",
            params(CodecId::RsSimd16, 1000, 1000, len),
        ),
        (
            "gf16 K=4000 P=4000",
            params(CodecId::RsSimd16, 4000, 4000, len),
        ),
    ];
    let losses = [
        ("iid 10%", Loss::iid(0.10)),
        ("bursts 10%, mean 50", Loss::bursts(0.10, 50.0)),
        ("iid 30%", Loss::iid(0.30)),
    ];
    println!("16 MiB bundle, S = 1024; air = frame bytes on air / bundle bytes (mean of 5 seeds); passes mean (worst)");
    for (lname, loss) in losses {
        println!("\n{lname}: bound 1/(1-loss) x (1068/1024) = {:.3}", {
            let p = match lname {
                "iid 30%" => 0.3,
                _ => 0.1,
            };
            1.0 / (1.0 - p) * 1068.0 / 1024.0
        });
        for (cname, p) in configs {
            let mut line = format!("  {cname}");
            for r in [10u16, 15, 20, 45] {
                let (air, passes, worst) = mean(p, r, 0, loss);
                line.push_str(&format!(
                    "  r={r:2}%: air {air:.3} passes {passes:.1} ({worst})"
                ));
            }
            println!("{line}");
        }
        let p = params(CodecId::RsSimd16, 1000, 1000, len);
        let mut line = "  gf16 K=1000 r=15%, resend margin".to_string();
        for m in [0u16, 25, 50, 100] {
            let (air, passes, worst) = mean(p, 15, m, loss);
            line.push_str(&format!(
                "  {m:3}%: air {air:.3} passes {passes:.1} ({worst})"
            ));
        }
        println!("{line}");
    }
}

#[test]
fn defaults_are_efficient_at_ten_percent_loss() {
    // The defaults recorded in SPEC.md: S = 1024, K = 1000, P = 1000, 15% first pass.
    let p = params(CodecId::RsSimd16, 1000, 1000, 8 << 20);
    let r = run(p, 15, 0, Loss::iid(0.10), 1);
    assert!(r.air_ratio < 1.22, "{}", r.air_ratio);
    assert!(r.passes <= 2, "{}", r.passes);
}
