//! `cronfleet runs`: the run history, newest first, filtered by job, state and age.

use clap::Args;
use cronfleet_coordinator::admin::convert::{MAX_RUN_LIMIT, run_filter_from_proto};
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output;

/// List runs, newest first.
#[derive(Debug, Args)]
#[command(after_help = RUNS_EXAMPLES)]
pub struct RunsCommand {
    #[command(flatten)]
    client: ClientArgs,
    /// Only the runs of this job.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// Only runs in this state: pending, dispatched, running, succeeded, failed, timed_out,
    /// cancelled, lost, skipped or missed.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only runs created at or after this time: RFC 3339, or YYYY-MM-DD HH:MM[:SS] in UTC.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only runs created before this time (RFC 3339, or a local time read as UTC).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only runs started by this trigger: schedule, manual, retry, continuation, catch_up.
    #[arg(long, value_name = "TRIGGER")]
    trigger: Option<String>,
    /// How many runs to show at most (1 to 10000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUN_LIMIT))
    )]
    limit: u32,
}

const RUNS_EXAMPLES: &str = "\
Examples:
  cronfleet runs --job nightly-report --limit 10
  cronfleet runs --state failed --since 2026-03-29T00:00:00Z
  cronfleet runs --trigger manual --since 2026-03-29T00:00:00Z --until 2026-03-30T00:00:00Z
  cronfleet runs --state pending -o json | jq '.[] | {id, job, pending_reason}'";

impl RunsCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let request = pb::ListRunsRequest {
            job: self.job.unwrap_or_default(),
            state: self.state.unwrap_or_default(),
            since: self.since.unwrap_or_default(),
            limit: self.limit,
            trigger: self.trigger.unwrap_or_default(),
            until: self.until.unwrap_or_default(),
        };
        // The server's own reading of the filter: a bad state or time is reported in its
        // words without a round trip.
        run_filter_from_proto(&request)?;
        let format = self.client.format()?;
        let server = Client::connect(&self.client)?;
        let runs = server.call(server.runs().list_runs(request))?;
        output::print_runs(&runs.runs, format)
    }
}
