//! Command-line interface: one module per command group, each an `Args` struct and a `run`.

mod device;
mod ground;
mod inspect;
mod meta;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "narlink",
    version,
    about = "Ship Nix store updates to devices behind a lossy, intermittent uplink"
)]
pub struct Cli {
    /// No progress output on standard error.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ground side: keep the mirror of a device, pack updates, fold in its reports.
    #[command(subcommand)]
    Ground(ground::Command),
    /// Device side: stage bundles, import them into Nix, report status.
    #[command(subcommand)]
    Device(device::Command),
    /// Show any narlink file (bundle, status report) to a human.
    Inspect(inspect::Args),
    /// Simulate an update over a lossy link, pass by pass, with the real sender and device.
    Simulate(simulate::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(meta::CompletionsArgs),
    /// Write the man pages: the top-level page to standard output, or every page into --out.
    Man(meta::ManArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Ground(c) => ground::run(c, progress),
        Command::Device(c) => device::run(c, progress),
        Command::Inspect(a) => inspect::run(a),
        Command::Simulate(a) => simulate::run(a, progress),
        Command::Completions(a) => meta::completions(a),
        Command::Man(a) => meta::man(a),
    }
}

/// Print `value` as one JSON object, or `human` otherwise.
pub(crate) fn output<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        writeln!(out, "{}", human())
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => Ok(r?),
    }
}

/// Whoever read our standard output went away (`narlink inspect x | head`): not a failure.
/// Only this marks a broken pipe as harmless; a broken pipe to Nix or to a frame sink is an
/// error like any other.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;
