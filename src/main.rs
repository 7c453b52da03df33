//! The `narlink` command: a thin shell over the library. Flags are parsed once into plain
//! structs (`cli::*::Args`), each subcommand's `run` does the work and prints the result.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    narlink::panic::install();
    let Ok(result) = std::panic::catch_unwind(|| cli::run(args)) else {
        let _ = writeln!(
            std::io::stderr(),
            "narlink: error: {}",
            narlink::panic::describe()
        );
        return ExitCode::FAILURE;
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed standard output (`narlink inspect x | head`) is not a failure.
            if err.downcast_ref::<cli::StdoutClosed>().is_some() {
                return ExitCode::SUCCESS;
            }
            let mut msg = format!("narlink: error: {err}");
            for cause in err.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            let _ = writeln!(std::io::stderr(), "{msg}");
            ExitCode::FAILURE
        }
    }
}
