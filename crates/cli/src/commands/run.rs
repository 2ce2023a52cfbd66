//! `cronfleet run …`: one run in detail, or cancelling it.

use clap::{Args, Subcommand};
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// Inspect or cancel one run.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cronfleet run get 42\n  cronfleet run cancel 42")]
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
    /// Cancel a run: a pending one at once; a running one is stopped on its worker (a shell
    /// job's processes get SIGTERM, then SIGKILL) and ends `cancelled`.
    #[command(
        after_help = "Examples:\n  cronfleet run cancel 42\n  cronfleet run cancel 42 --reason 'wrong input file'"
    )]
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// The run's id (as `cronfleet runs` lists it).
    id: i64,
    /// Why, recorded as the run's error [default: cancelled by an operator].
    #[arg(long)]
    reason: Option<String>,
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
                let server = Client::connect(&self.client)?;
                let run = server.call(server.runs().get_run(pb::GetRunRequest { id }))?;
                output::print_run(&run, self.client.output)
            }
            RunSubcommand::Cancel(CancelArgs { id, reason }) => {
                let server = Client::connect(&self.client)?;
                let request = pb::CancelRunRequest {
                    id,
                    reason: reason.unwrap_or_default(),
                };
                let run = server.call(server.runs().cancel_run(request))?;
                output::print_run(&run, self.client.output)
            }
        }
    }
}
