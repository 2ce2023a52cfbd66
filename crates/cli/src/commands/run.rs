//! `cronfleet run …`: one run in detail, its log (also while it runs), or cancelling it.

use clap::{Args, Subcommand};
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
        output::print(&new_output(&shown, &run.output))?;
        shown = run.output;
        let ended = !matches!(run.state.as_str(), "pending" | "dispatched" | "running");
        if !follow || ended {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

/// What `now` (the log's kept tail) adds to `shown` (the tail printed before). The kept
/// tail is a window that slides once the log outgrows it: the new part starts after the
/// end of what was shown, found by its last line-or-so.
fn new_output(shown: &str, now: &str) -> String {
    if let Some(added) = now.strip_prefix(shown) {
        return added.to_owned();
    }
    // The longest end of `shown` that `now` still holds: up to 256 bytes, at least the
    // last line.
    let last_line = shown
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |at| at + 1);
    let mut start = shown.len().saturating_sub(256).min(last_line);
    while start <= last_line {
        if shown.is_char_boundary(start)
            && let Some(at) = now.rfind(&shown[start..])
        {
            return now[at + shown.len() - start..].to_owned();
        }
        start += 1;
    }
    format!("[… output dropped: only the last part of a log is kept …]\n{now}")
}

#[cfg(test)]
mod tests {
    use super::new_output;

    #[test]
    fn follow_prints_each_piece_of_a_log_once() {
        assert_eq!(new_output("", "a\nb\n"), "a\nb\n");
        assert_eq!(new_output("a\nb\n", "a\nb\nc\n"), "c\n");
        assert_eq!(new_output("a\nb\n", "a\nb\n"), "");
        // The window slid: the first line fell out, the new one came in.
        assert_eq!(
            new_output("line 1\nline 2\n", "line 2\nline 3\n"),
            "line 3\n"
        );
        // Nothing in common any more: say so and print the whole tail.
        assert!(new_output("old\n", "new\n").ends_with("]\nnew\n"));
    }
}
