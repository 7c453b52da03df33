//! `narlink simulate`: an update over a modeled link, pass by pass.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args as ClapArgs;
use narlink::ground::link::{FrameSource, LinkOptions};
use narlink::nixstore::NixStore;
use narlink::sim::{self, MemoryDevice, SimOptions};

use super::output;

#[derive(ClapArgs)]
pub struct Args {
    /// Long-run frame loss rate (0..1).
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// Mean length of loss bursts in frames (Gilbert–Elliott); without it loss is i.i.d.
    #[arg(long)]
    burst: Option<f64>,
    /// Probability that a frame arrives corrupted.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Probability that a frame arrives twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Reordering window in frames.
    #[arg(long, default_value_t = 0)]
    reorder: usize,
    /// Frame bytes per pass (default: no limit).
    #[arg(long)]
    pass_bytes: Option<u64>,
    /// Pass budget as a fraction of the bundle size (alternative to --pass-bytes).
    #[arg(long, conflicts_with = "pass_bytes")]
    pass_fraction: Option<f64>,
    /// Probability per pass that the device reboots mid-pass.
    #[arg(long, default_value_t = 0.0)]
    reboot: f64,
    /// After the import, model the probation trial: the device lands the update and reverts
    /// it unless a confirmation arrives within this many reports (one a pass). 0: not
    /// modeled. With v1/v2 only.
    #[arg(long, default_value_t = 0)]
    probation_reports: u32,
    /// Probability that a status report is lost on the downlink (during the trial).
    #[arg(long, default_value_t = 0.0)]
    report_loss: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    max_passes: u32,
    /// Frame payload size in bytes.
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_SHARD_SIZE)]
    frame_size: u16,
    /// First-pass parity in percent.
    #[arg(long, default_value_t = narlink_protocol::params::DEFAULT_REDUNDANCY_PERCENT)]
    redundancy: u16,
    /// Study the link alone with this many bytes of synthetic payload (no Nix).
    #[arg(long, conflicts_with_all = ["v1", "v2"])]
    synthetic: Option<u64>,
    /// Working directory for the device store and states (default: a temporary one).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Write an SVG chart of progress per pass.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// The closure the device holds.
    #[arg(required_unless_present = "synthetic")]
    v1: Option<String>,
    /// The closure the ground sends.
    #[arg(required_unless_present = "synthetic")]
    v2: Option<String>,
}

pub fn run(a: Args, progress: bool) -> anyhow::Result<ExitCode> {
    let link = LinkOptions {
        frame_size: a.frame_size,
        redundancy_percent: a.redundancy,
        ..LinkOptions::default()
    };
    let mut opts = SimOptions {
        loss: a.loss,
        burst: a.burst,
        corrupt: a.corrupt,
        duplicate: a.duplicate,
        reorder: a.reorder,
        pass_bytes: a.pass_bytes,
        reboot: a.reboot,
        seed: a.seed,
        max_passes: a.max_passes,
        report_loss: a.report_loss,
        probation_reports: a.probation_reports,
    };
    let tmp = tempfile::tempdir()?;
    let work = a.workdir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&work)?;
    let completed;
    if let Some(len) = a.synthetic {
        let mut rng = narlink_protocol::sim::Rng::new(a.seed);
        let data: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        let path = work.join("synthetic.bin");
        std::fs::write(&path, &data)?;
        if let Some(f) = a.pass_fraction {
            opts.pass_bytes = Some((len as f64 * f) as u64);
        }
        let mut ground = FrameSource::open_raw(&path, [7; 16], link, None)?;
        let mut device = MemoryDevice::new([7; 16], ground.params(), data)?;
        let r = sim::run(&mut ground, &mut device, &opts)?;
        completed = r.completed;
        output(a.json, &r, || r.render())?;
        plot(&a.plot, &r)?;
    } else {
        let (v1, v2) = (
            a.v1.clone().unwrap_or_default(),
            a.v2.clone().unwrap_or_default(),
        );
        let store = NixStore::new(None);
        if let Some(f) = a.pass_fraction {
            // The budget is relative to the bundle, known only after packing: pack once to learn it.
            opts.pass_bytes = None;
            let probe = sim::simulate_update(
                &store,
                &v1,
                &v2,
                &work.join("probe"),
                link,
                &SimOptions {
                    max_passes: 0,
                    ..opts.clone()
                },
                progress,
            )?;
            opts.pass_bytes = Some((probe.pack.bundle_bytes as f64 * f) as u64);
        }
        let r = sim::simulate_update(&store, &v1, &v2, &work.join("run"), link, &opts, progress)
            .context("simulated update")?;
        completed = r.link.completed && r.verified;
        output(a.json, &r, || {
            let mut s = format!(
                "{}\nimported {} paths; device reboots: {}; verify-path and closure check: {}",
                r.link.render(),
                r.imported_paths,
                r.device_reboots,
                if r.verified { "ok" } else { "FAILED" }
            );
            if let Some(t) = &r.trial {
                s.push('\n');
                s.push_str(&t.render());
            }
            s
        })?;
        plot(&a.plot, &r.link)?;
    }
    Ok(if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

fn plot(dest: &Option<PathBuf>, r: &sim::SimReport) -> anyhow::Result<()> {
    if let Some(p) = dest {
        std::fs::write(p, r.svg()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
