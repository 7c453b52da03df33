//! `narlink completions` and `narlink man`: shell completion scripts and man pages, generated
//! from the same clap definition the parser uses, so they cannot drift from the real flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use serde::Serialize;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write one page per command and subcommand (narlink.1, narlink-device.1,
    /// narlink-device-listen.1, ...) into this directory, created if missing. Without it, the
    /// page of the top-level command goes to standard output.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// With --out: list the pages written as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Print the completion script for `a.shell` on standard output.
pub fn completions(a: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, name, &mut out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ManOut {
    dir: PathBuf,
    pages: Vec<PathBuf>,
}

/// Render the man page(s): the top-level page on standard output, or every page into a
/// directory.
pub fn man(a: ManArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = a.out else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(super::Cli::command()).render(&mut out)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Building the command fills in every subcommand's display name (`narlink-device-listen`),
    // which is the page's title and file name.
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    write_pages(&cmd, &dir, &mut pages)?;
    super::output(
        a.json,
        &ManOut {
            dir: dir.clone(),
            pages: pages.clone(),
        },
        || {
            pages
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn write_pages(
    cmd: &clap::Command,
    dir: &std::path::Path,
    pages: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    pages.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, pages)?;
    }
    Ok(())
}
