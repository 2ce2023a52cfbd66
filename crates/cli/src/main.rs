//! The `cronfleet` binary: one executable for the server, the worker and every client
//! command (DESIGN §4).
//!
//! Each top-level subcommand lives in its own module under [`commands`]; this file only
//! parses the command line and turns an error into `error: …` on stderr with a non-zero
//! exit status. Errors are `anyhow` here and nowhere else: the libraries return typed
//! errors whose messages already name the bad value and what would be valid.

mod commands;
mod jobfile;
mod logging;
mod signals;

use std::process::ExitCode;

use clap::Parser;

/// cronfleet: a distributed scheduler for recurring and one-off jobs.
#[derive(Debug, Parser)]
#[command(name = "cronfleet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    // clap prints its own usage errors (unknown flags, missing values) as `error: …` on
    // stderr and exits with status 2.
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line: "--tz: unknown time zone …".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
