//! The `stagehost` command: argument parsing and printing over the `stagehost` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`stagehost plugins list | head`). SIGPIPE stays ignored (Rust's default): a
    // worker or a server that hangs up on a socket is an error for that connection,
    // never the end of the run. A print to a closed stdout or stderr ends the process
    // quietly instead, with the status a shell shows for a SIGPIPE death.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
    let args = cli::Args::parse();
    cli::init_logging(args.verbose, args.log_format);
    cli::progress::set_stats_interval(args.stats);
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // A message may hold a server's or a plugin's text: escaped, one line.
            eprintln!(
                "stagehost: error: {}",
                stagehost_plugin_api::display::escape(&e.to_string())
            );
            ExitCode::from(e.exit_code())
        }
    };
    // A command a signal cancelled ends as shells expect of it (130 after Ctrl-C).
    cli::cancelled_by_signal().map_or(code, ExitCode::from)
}
