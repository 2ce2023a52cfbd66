//! `cronfleet run …`: one run in detail.

use clap::{Args, Subcommand};
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// Inspect one run.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cronfleet run get 42")]
pub struct RunCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: RunSubcommand,
}

#[derive(Debug, Subcommand)]
enum RunSubcommand {
    /// Show a run: its state, times, worker, error and captured output.
    #[command(
        after_help = "Examples:\n  cronfleet run get 42\n  cronfleet run get 42 -o json | jq -r .output"
    )]
    Get(GetArgs),
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The run's id (as `cronfleet runs` lists it).
    id: i64,
}

impl RunCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            RunSubcommand::Get(GetArgs { id }) => {
                let server = Client::connect(&self.client.server)?;
                let run = server.call(server.runs().get_run(pb::GetRunRequest { id }))?;
                output::print_run(&run, self.client.output)
            }
        }
    }
}
