//! `narlink ground ...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use narlink::ground::{ack, init, pack};
use narlink::nixstore::NixStore;
use narlink::progress::bytes;
use narlink::state::mirror::Mirror;

use super::output;

#[derive(Subcommand)]
pub enum Command {
    /// Create a mirror saying the device holds the closure of ROOTs.
    Init(InitArgs),
    /// Pack the update to the closure of ROOTs into a bundle.
    Pack(PackArgs),
    /// Fold a device status report into the mirror.
    Ack(AckArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Mirror directory (created).
    #[arg(long)]
    mirror: PathBuf,
    /// The ground's Nix store (default: the environment's).
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    json: bool,
    /// Store paths (or symlinks to them, like ./result) whose closure the device holds.
    #[arg(required = true)]
    roots: Vec<String>,
}

#[derive(Args)]
pub struct PackArgs {
    #[arg(long)]
    mirror: PathBuf,
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    store: Option<String>,
    /// zstd level for new chunks (1-22).
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    #[arg(long)]
    json: bool,
    /// The target closure roots.
    #[arg(required = true)]
    roots: Vec<String>,
}

#[derive(Args)]
pub struct AckArgs {
    #[arg(long)]
    mirror: PathBuf,
    /// A status report written by `narlink device status`.
    report: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(c: Command, progress: bool) -> anyhow::Result<ExitCode> {
    match c {
        Command::Init(a) => {
            let store = NixStore::new(a.store.as_deref());
            let r = init::init(&a.mirror, &store, &a.roots, progress)
                .with_context(|| format!("ground init of mirror {}", a.mirror.display()))?;
            output(a.json, &r, || {
                format!("mirror {}: device holds {} paths ({}, {} chunks)", a.mirror.display(), r.paths, bytes(r.nar_bytes), r.chunks)
            })?;
        }
        Command::Pack(a) => {
            let store = NixStore::new(a.store.as_deref());
            let mirror = Mirror::open(&a.mirror)?;
            let opts = pack::PackOptions { zstd_level: a.level, progress, ..Default::default() };
            let r = pack::pack(&mirror, &store, &a.roots, &a.out, &opts)
                .with_context(|| format!("ground pack into {}", a.out.display()))?;
            output(a.json, &r, || r.render())?;
        }
        Command::Ack(a) => {
            let mirror = Mirror::open(&a.mirror)?;
            let bytes = std::fs::read(&a.report).with_context(|| format!("reading {}", a.report.display()))?;
            let r = ack::ack(&mirror, &bytes).with_context(|| format!("ground ack of {}", a.report.display()))?;
            output(a.json, &r, || r.render())?;
            if !r.in_step {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
