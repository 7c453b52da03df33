//! `narlink inspect FILE`: show any narlink file to a human (or as JSON).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args as ClapArgs;
use narlink::inspect::{inspect, Inspection};

use super::output;

#[derive(ClapArgs)]
pub struct Args {
    /// A bundle, frame stream or status report.
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let f =
        std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let i: Inspection = inspect(std::io::BufReader::new(f))
        .with_context(|| format!("inspecting {}", a.file.display()))?;
    output(a.json, &i, || i.render())?;
    Ok(ExitCode::SUCCESS)
}
