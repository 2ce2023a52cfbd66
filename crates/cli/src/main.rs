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
#[command(
    name = "cronfleet",
    version,
    about,
    propagate_version = true,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

const EXAMPLES: &str = "\
Examples:
  cronfleet dev --jobs examples/jobs.yaml          # everything in one process
  cronfleet job create hello --handler shell --every 10s --args '{\"script\": \"echo hi\"}'
  cronfleet apply -f jobs.yaml --prune             # jobs from a file
  cronfleet runs --job hello
  cronfleet help job                               # any command's options and examples";

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command a user can type, with its path (`cronfleet job create`).
    fn every_command(command: &clap::Command, path: &str, all: &mut Vec<(String, clap::Command)>) {
        let path = if path.is_empty() {
            command.get_name().to_owned()
        } else {
            format!("{path} {}", command.get_name())
        };
        all.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            // clap's own `help` subcommand explains the others; it has no examples of its own.
            if sub.get_name() != "help" {
                every_command(sub, &path, all);
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        let mut cli = Cli::command();
        cli.build();
        let mut all = Vec::new();
        every_command(&cli, "", &mut all);
        assert!(all.len() > 20, "{} commands", all.len());
        for (path, mut command) in all {
            let help = command.render_long_help().to_string();
            let examples = help
                .split_once("Examples:\n")
                .map(|(_, examples)| examples)
                .unwrap_or_else(|| panic!("`{path} --help` has no Examples: section:\n{help}"));
            assert!(
                examples.contains(&path),
                "`{path} --help`: no example shows `{path}`:\n{examples}"
            );
        }
    }
}
