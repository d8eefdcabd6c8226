//! The `stagehost` command: argument parsing and printing over the `stagehost` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_logging();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stagehost: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
