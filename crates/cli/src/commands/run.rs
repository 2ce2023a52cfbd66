//! `cronfleet run …`: one run in detail, its log (also while it runs), or cancelling it.

use clap::{Args, Subcommand};
use cronfleet_core::run::output_added;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// Inspect one run, read its log, or cancel it.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet run get 42\n  cronfleet run logs 42 --follow\n  cronfleet run cancel 42"
)]
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
    /// Print a run's log (its last 64 KiB), from any coordinator, also while it runs;
    /// --follow keeps printing what it writes until it ends.
    #[command(
        after_help = "Examples:\n  cronfleet run logs 42\n  cronfleet run logs 42 --follow\n  cronfleet run logs \"$(cronfleet runs --job nightly --limit 1 -o json | jq '.[0].id')\" -f"
    )]
    Logs(LogsArgs),
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
struct LogsArgs {
    /// The run's id (as `cronfleet runs` lists it).
    id: i64,
    /// Keep printing new output until the run ends.
    #[arg(short, long)]
    follow: bool,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The run's id (as `cronfleet runs` lists it).
    id: i64,
}

impl RunCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        match self.command {
            RunSubcommand::Get(GetArgs { id }) => {
                let server = Client::connect(&self.client)?;
                let run = server.call(server.runs().get_run(pb::GetRunRequest { id }))?;
                output::print_run(&run, format)
            }
            RunSubcommand::Logs(LogsArgs { id, follow }) => {
                let server = Client::connect(&self.client)?;
                print_logs(&server, id, follow)
            }
            RunSubcommand::Cancel(CancelArgs { id, reason }) => {
                let server = Client::connect(&self.client)?;
                let request = pb::CancelRunRequest {
                    id,
                    reason: reason.unwrap_or_default(),
                };
                let run = server.call(server.runs().cancel_run(request))?;
                output::print_run(&run, format)
            }
        }
    }
}

/// How often `run logs --follow` asks for more (the leader saves live logs about twice a
/// second).
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Prints the log of run `id`; with `follow`, then what it adds until the run ends.
fn print_logs(server: &Client, id: i64, follow: bool) -> anyhow::Result<()> {
    let mut shown = String::new();
    loop {
        let run = server.call(server.runs().get_run(pb::GetRunRequest { id }))?;
        output::print(&output_added(&shown, &run.output))?;
        shown = run.output;
        let ended = !matches!(run.state.as_str(), "pending" | "dispatched" | "running");
        if !follow || ended {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}
