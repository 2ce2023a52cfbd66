//! `cronfleet apply -f FILE`: declarative jobs. The file's jobs are created or updated to
//! match it, in one transaction on the server (`JobService.ApplyJobs`); with `--prune`, the
//! jobs an earlier apply created that the file no longer has are deleted. What changed is
//! printed per job.
//!
//! The file is read and every job checked here first (unknown fields, duplicate names, bad
//! values: the server's own checks), so a bad file is reported without a round trip and
//! nothing is sent; the server checks again, and only its answer counts.

use std::path::PathBuf;

use clap::Args;
use cronfleet_coordinator::rest::model::ChangeView;
use cronfleet_core::apply::DEFAULT_MANAGER;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use super::output::{self, Format};
use crate::jobfile;

/// Create and update jobs to match a job file (YAML or JSON); idempotent.
#[derive(Debug, Args)]
#[command(after_help = APPLY_EXAMPLES)]
pub struct ApplyCommand {
    #[command(flatten)]
    client: ClientArgs,
    /// The job file, YAML or JSON (`-` reads standard input): `jobs:` and a list of jobs
    /// with the fields of `cronfleet job create` in snake_case (see examples/jobs.yaml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Also delete the jobs that earlier applies (of the same --manager) created and the
    /// file no longer has. Jobs defined with `cronfleet job create` are never deleted.
    #[arg(long)]
    prune: bool,
    /// Show what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who owns the jobs this apply creates: applies of different files under different
    /// managers leave each other's jobs alone (and refuse to take them over).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_MANAGER)]
    manager: String,
}

const APPLY_EXAMPLES: &str = "\
Examples:
  cronfleet apply -f examples/jobs.yaml
  cronfleet apply -f jobs.yaml --dry-run                  # the plan only
  cronfleet apply -f jobs.yaml --prune                    # also delete jobs dropped from the file
  cronfleet apply -f billing.yaml --manager team-billing --prune
  cronfleet job get nightly-report -o yaml > job.yaml     # a job as a file, to edit and apply
  cronfleet apply -f jobs.yaml --dry-run -o json | jq -e 'all(.action == \"unchanged\")'

A job listed in the file that was defined with `job create` is taken over by the apply.
Fields left out take their defaults, except `start` (an every job keeps its start) and
`paused` (a job paused by an operator stays paused unless the file says paused: false).";

impl ApplyCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.client.format()?;
        let label = jobfile::label(&self.file);
        let definitions = jobfile::load(&self.file)?;
        let jobs = jobfile::checked_specs(&label, &definitions)?;
        let server = Client::connect(&self.client)?;
        let answer = server
            .call(server.jobs().apply_jobs(pb::ApplyJobsRequest {
                jobs,
                manager: self.manager,
                prune: self.prune,
                dry_run: self.dry_run,
            }))
            .map_err(|error| anyhow::anyhow!("{label}: {error}"))?;
        match format {
            Format::Json => output::print_json(
                &answer
                    .changes
                    .iter()
                    .map(ChangeView::new)
                    .collect::<Vec<_>>(),
            ),
            Format::Table => output::print(&changes_text(&answer.changes, self.dry_run)),
        }
    }
}

/// The longest a value is shown in the table before it is cut (the JSON has it whole).
const MAX_VALUE_CHARS: usize = 60;

/// One line per job (`updated` ones followed by their changed fields), then a summary:
///
/// ```text
/// created    heartbeat
/// updated    nightly-report
///              cron: 30 2 * * * -> 0 3 * * *
/// unchanged  sync-inventory
/// 1 created, 1 updated, 1 unchanged, 0 deleted
/// ```
fn changes_text(changes: &[pb::JobChange], dry_run: bool) -> String {
    let label = |action: &str| -> String {
        match (dry_run, action) {
            (true, "created") => "would create".to_owned(),
            (true, "updated") => "would update".to_owned(),
            (true, "deleted") => "would delete".to_owned(),
            _ => action.to_owned(),
        }
    };
    let width = changes
        .iter()
        .map(|change| label(&change.action).len())
        .max()
        .unwrap_or(0);
    let value = |value: &Option<String>| match value {
        Some(value) => output::fit(&output::one_line(value), MAX_VALUE_CHARS),
        None => "(unset)".to_owned(),
    };
    let mut text = String::new();
    for change in changes {
        text.push_str(&format!(
            "{:<width$}  {}\n",
            label(&change.action),
            change.name
        ));
        for field in &change.fields {
            text.push_str(&format!(
                "{:<width$}    {}: {} -> {}\n",
                "",
                field.field,
                value(&field.from),
                value(&field.to)
            ));
        }
    }
    let count = |action: &str| {
        changes
            .iter()
            .filter(|change| change.action == action)
            .count()
    };
    let (created, updated, unchanged, deleted) = (
        count("created"),
        count("updated"),
        count("unchanged"),
        count("deleted"),
    );
    if dry_run {
        text.push_str(&format!(
            "dry run, nothing changed: {created} to create, {updated} to update, {unchanged} unchanged, {deleted} to delete\n"
        ));
    } else {
        text.push_str(&format!(
            "{created} created, {updated} updated, {unchanged} unchanged, {deleted} deleted\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        name: &str,
        action: &str,
        fields: &[(&str, Option<&str>, Option<&str>)],
    ) -> pb::JobChange {
        pb::JobChange {
            name: name.into(),
            action: action.into(),
            fields: fields
                .iter()
                .map(|(field, from, to)| pb::FieldChange {
                    field: (*field).into(),
                    from: from.map(Into::into),
                    to: to.map(Into::into),
                })
                .collect(),
        }
    }

    #[test]
    fn each_job_gets_a_line_and_each_changed_field_one_more() {
        let changes = [
            change("heartbeat", "created", &[]),
            change(
                "report",
                "updated",
                &[
                    ("cron", Some("30 2 * * *"), Some("0 3 * * *")),
                    ("timeout", None, Some("10m")),
                ],
            ),
            change("sync", "unchanged", &[]),
            change("old", "deleted", &[]),
        ];
        assert_eq!(
            changes_text(&changes, false),
            "\
created    heartbeat
updated    report
             cron: 30 2 * * * -> 0 3 * * *
             timeout: (unset) -> 10m
unchanged  sync
deleted    old
1 created, 1 updated, 1 unchanged, 1 deleted
"
        );
        let plan = changes_text(&changes, true);
        assert!(
            plan.starts_with("would create  heartbeat\nwould update  report\n"),
            "{plan}"
        );
        assert!(
            plan.ends_with(
                "dry run, nothing changed: 1 to create, 1 to update, 1 unchanged, 1 to delete\n"
            ),
            "{plan}"
        );
    }

    #[test]
    fn long_values_are_cut_on_one_line() {
        let long = format!("{{\"script\": \"{}\\n\"}}", "x".repeat(100));
        let text = changes_text(
            &[change("a", "updated", &[("args", Some("{}"), Some(&long))])],
            false,
        );
        let line = text.lines().nth(1).unwrap();
        assert!(line.ends_with('…'), "{line}");
        assert!(line.chars().count() < 100, "{line}");
    }
}
