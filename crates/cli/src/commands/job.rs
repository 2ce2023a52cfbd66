//! `cronfleet job …`: define, inspect, change, pause, trigger and delete jobs through a
//! coordinator's admin API.
//!
//! A spec is checked here with the server's own code
//! (`cronfleet_coordinator::admin::convert`) before it is sent, so a typo is reported
//! without a round trip and in the server's words; the server checks again, and only its
//! answer counts (a duplicate name, a version conflict).

use std::collections::BTreeMap;

use anyhow::bail;
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand};
use cronfleet_coordinator::admin::convert::job_spec_from_proto;
use cronfleet_core::job::check_schedule_has_a_future;
use cronfleet_proto::v1 as pb;

use super::client::{Client, ClientArgs};
use cronfleet_coordinator::rest::model::{ManualRunView, RunView};

use super::output::{self, Format, OutputFormat};
use crate::jobfile;

/// Define and manage jobs.
#[derive(Debug, Args)]
#[command(after_help = JOB_EXAMPLES)]
pub struct JobCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: JobSubcommand,
}

const JOB_EXAMPLES: &str = "\
Examples:
  cronfleet job create nightly-report --handler shell --cron '0 2 * * *' --tz Europe/Berlin \\
      --args '{\"script\": \"./report.sh\"}'
  cronfleet job list
  cronfleet job get nightly-report -o yaml
  cronfleet job run nightly-report";

#[derive(Debug, Subcommand)]
enum JobSubcommand {
    /// Define a job: a handler, a schedule (exactly one of --every, --cron, --at) and
    /// its policies.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// List all jobs, by name.
    #[command(
        after_help = "Examples:\n  cronfleet job list\n  cronfleet job list -o json | jq '.[] | select(.paused)'\n  cronfleet job list -o yaml > jobs.yaml    # every job as a job file for `cronfleet apply`"
    )]
    List,
    /// Show one job: its spec and its scheduling state.
    #[command(
        after_help = "Examples:\n  cronfleet job get nightly-report\n  cronfleet job get nightly-report -o json | jq .next_run_at\n  cronfleet job get nightly-report -o yaml > job.yaml    # a job file: edit, then cronfleet apply -f job.yaml"
    )]
    Get(NameArgs),
    /// Change a job: only the flags given change; the rest stays as it is.
    #[command(after_help = UPDATE_EXAMPLES)]
    Update(UpdateArgs),
    /// Pause a job: its slots are not run until it is resumed.
    #[command(
        after_help = "Examples:\n  cronfleet job pause nightly-report\n  cronfleet job pause nightly-report --note 'database migration, ask ops'"
    )]
    Pause(PauseArgs),
    /// Resume a paused job; its catch-up policy decides what happens to missed slots.
    #[command(
        after_help = "Examples:\n  cronfleet job resume nightly-report\n  cronfleet job list -o json | jq -r '.[] | select(.paused) | .name' | xargs -n1 cronfleet job resume"
    )]
    Resume(NameArgs),
    /// Run a job now (or at --at) without touching its schedule; a busy job queues it.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Delete a job and its run history (refused while a run of it is in progress, unless
    /// --force).
    #[command(
        after_help = "Examples:\n  cronfleet job delete nightly-report\n  cronfleet job delete nightly-report --force\n  cronfleet job delete nightly-report -o json"
    )]
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The job's name.
    name: String,
    /// Cancel the job's run in progress and delete the job once that run has stopped
    /// (without it, a job with a run in progress is not deleted).
    #[arg(long)]
    force: bool,
}

const CREATE_EXAMPLES: &str = "\
Examples:
  cronfleet job create cleanup --handler shell --every 15m --args '{\"script\": \"rm -f /tmp/*.part\"}'
  cronfleet job create nightly-report --handler shell --cron '0 2 * * *' --tz Europe/Berlin \\
      --timeout 30m --retries 2 --overlap queue --labels region=eu
  cronfleet job create invoices --handler billing.send --every 1mo --start '2026-01-31 09:00' \\
      --tz Europe/Berlin --catch-up all --catch-up-window 2d
  cronfleet job create backup --handler shell --cron '0 3 * * *' \
      --alert-if-no-success 26h --expected-duration 30m
  cronfleet job create migrate-once --handler shell --at 2026-03-29T03:00:00Z";

const UPDATE_EXAMPLES: &str = "\
Examples:
  cronfleet job update nightly-report --cron '30 2 * * *'
  cronfleet job update nightly-report --priority -5 --retries 3 --labels region=eu,tier=gpu
  cronfleet job update nightly-report --tz America/New_York
  cronfleet job update nightly-report --alerts off

A new --every schedule starts now unless --start is given. --labels replaces all labels
(--labels '' removes them). Use `cronfleet job resume` to resume a paused job.";

const RUN_EXAMPLES: &str = "\
Examples:
  cronfleet job run nightly-report
  cronfleet job run nightly-report --at '2026-03-29 18:00'    # in the job's time zone
  cronfleet job run nightly-report -o json | jq .id";

#[derive(Debug, Args)]
struct NameArgs {
    /// The job's name.
    name: String,
}

#[derive(Debug, Args)]
struct PauseArgs {
    /// The job's name.
    name: String,
    /// Why it is paused, for whoever looks next.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The job's name.
    name: String,
    /// When to run it (default: now): RFC 3339, or a local time YYYY-MM-DD HH:MM[:SS] in
    /// the job's time zone.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("schedule").required(true).args(["every", "cron", "at"])))]
struct CreateArgs {
    /// The job's name: lowercase letters, digits and '-' (e.g. nightly-report).
    name: String,
    /// The handler a worker runs it with (e.g. shell, http, or a custom one).
    #[arg(long, value_name = "H")]
    handler: String,
    #[command(flatten)]
    schedule: ScheduleFlags,
    #[command(flatten)]
    flags: JobFlags,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("schedule").args(["every", "cron", "at"])))]
struct UpdateArgs {
    /// The job's name.
    name: String,
    /// The handler a worker runs it with.
    #[arg(long, value_name = "H")]
    handler: Option<String>,
    #[command(flatten)]
    schedule: ScheduleFlags,
    #[command(flatten)]
    flags: JobFlags,
}

#[derive(Debug, Args)]
struct ScheduleFlags {
    /// Run every DUR: s, m, h are elapsed time (90s, 5m, 2h); d, w, mo are calendar steps
    /// in --tz that keep the local time across DST (1d, 2w, 1mo).
    // Hyphen values are allowed so that `--every -5m` gets the interval's own "negative"
    // message rather than clap's "unexpected argument".
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    every: Option<String>,
    /// Slot 0 of an --every schedule (default: now): RFC 3339 or a local time in --tz.
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Run at the local times in --tz that match a cron expression: 5 fields, 6 with
    /// seconds first, or @hourly, @daily, @weekly, @monthly, @yearly; L, W, # supported.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Run once, at TIME: RFC 3339 or a local time YYYY-MM-DD HH:MM[:SS] in --tz.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The IANA time zone of the schedule (e.g. Europe/Berlin) [default: UTC].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
}

#[derive(Debug, Args)]
struct JobFlags {
    /// The handler's arguments as JSON, at most 1 MiB (e.g. '{"script": "echo hi"}')
    /// [default: {}].
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Lower runs first when more is due than can be dispatched at once [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Stop after this many scheduled runs [default: unlimited].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_max_runs)]
    max_runs: Option<u32>,
    /// Cancel a run after this long (e.g. 30s, 5m, 1h30m) [default: the coordinator's].
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    timeout: Option<String>,
    /// Extra attempts after a failure, with exponential backoff (0 to 100) [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_retries)]
    retries: Option<u32>,
    /// When a slot comes while the job still runs: skip, queue (one waiting run) or
    /// replace (cancel the current run) [default: skip].
    #[arg(long, value_name = "POLICY")]
    overlap: Option<String>,
    /// Slots missed during downtime: one (run once), all (run each, in order) or none
    /// [default: one].
    #[arg(long, value_name = "POLICY")]
    catch_up: Option<String>,
    /// Missed slots older than this are only counted, never run (e.g. 1h, 2d).
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    catch_up_window: Option<String>,
    /// Workers must carry all of these labels to run the job (e.g. region=eu,tier=gpu).
    #[arg(long, value_name = "K=V,…", value_parser = parse_labels)]
    labels: Option<Labels>,
    /// Pause the job (create it paused).
    #[arg(long)]
    paused: bool,
    /// Alerts for the job: on, or off to raise none for it [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    alerts: Option<bool>,
    /// Alert when no run succeeded within this long, a dead-man's switch (e.g. 26h; at
    /// least 1s) [default: off].
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    alert_if_no_success: Option<String>,
    /// A run running longer than this is stalled, and alerted on (e.g. 30m; at least 1s)
    /// [default: no expectation].
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    expected_duration: Option<String>,
}

/// `--labels k=v,…` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Labels(BTreeMap<String, String>);

/// Reads `k=v,k2=v2`; an empty text is no labels. The keys and values themselves are
/// checked with the rest of the spec.
fn parse_labels(text: &str) -> Result<Labels, String> {
    const EXPECTED: &str = "expected key=value pairs separated by commas (e.g. region=eu,tier=gpu)";
    let mut labels = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(Labels(labels));
    }
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("label {:?} has no '='; {EXPECTED}", pair.trim()));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("label {:?} has no key; {EXPECTED}", pair.trim()));
        }
        if labels
            .insert(key.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(format!("label key {key:?} is given twice; {EXPECTED}"));
        }
    }
    Ok(Labels(labels))
}

impl JobCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let JobCommand { client, command } = self;
        // Jobs may also be shown as a job file (`-o yaml`); any other output is checked
        // before the server is asked to change anything.
        let as_file = client.output == OutputFormat::Yaml
            && matches!(command, JobSubcommand::Get(_) | JobSubcommand::List);
        let format = if as_file {
            Format::Table
        } else {
            client.format()?
        };
        match command {
            JobSubcommand::Create(args) => create(&client, args, format),
            JobSubcommand::List => {
                let server = Client::connect(&client)?;
                let jobs = server.call(server.jobs().list_jobs(pb::ListJobsRequest {}))?;
                if as_file {
                    output::print(&jobfile::to_yaml(&jobs.jobs)?)
                } else {
                    output::print_jobs(&jobs.jobs, format)
                }
            }
            JobSubcommand::Get(NameArgs { name }) => {
                let server = Client::connect(&client)?;
                let job = server.call(server.jobs().get_job(pb::GetJobRequest { name }))?;
                if as_file {
                    output::print(&jobfile::to_yaml(std::slice::from_ref(&job))?)
                } else {
                    output::print_job(&job, format)
                }
            }
            JobSubcommand::Update(args) => update(&client, args, format),
            JobSubcommand::Pause(PauseArgs { name, note }) => {
                let server = Client::connect(&client)?;
                let job = server.call(server.jobs().pause_job(pb::PauseJobRequest {
                    name,
                    note: note.unwrap_or_default(),
                }))?;
                output::print_job(&job, format)
            }
            JobSubcommand::Resume(NameArgs { name }) => {
                let server = Client::connect(&client)?;
                let job = server.call(server.jobs().resume_job(pb::ResumeJobRequest { name }))?;
                output::print_job(&job, format)
            }
            JobSubcommand::Run(args) => run_now(&client, args, format),
            JobSubcommand::Delete(DeleteArgs { name, force }) => {
                let server = Client::connect(&client)?;
                server.call(server.jobs().delete_job(pb::DeleteJobRequest {
                    name: name.clone(),
                    force,
                }))?;
                match format {
                    Format::Json => {
                        output::print_json(&serde_json::json!({ "name": name, "deleted": true }))
                    }
                    Format::Table => output::print(&format!("deleted job {name}\n")),
                }
            }
        }
    }
}

fn create(client: &ClientArgs, args: CreateArgs, format: Format) -> anyhow::Result<()> {
    let CreateArgs {
        name,
        handler,
        schedule,
        flags,
    } = args;
    let mut spec = pb::JobSpec {
        name,
        handler,
        schedule: Some(pb::Schedule::default()),
        ..pb::JobSpec::default()
    };
    apply_schedule(&mut spec, schedule);
    apply_flags(&mut spec, flags);
    check(&spec, true)?;
    let server = Client::connect(client)?;
    let job = server.call(
        server
            .jobs()
            .create_job(pb::CreateJobRequest { spec: Some(spec) }),
    )?;
    output::print_job(&job, format)
}

fn update(client: &ClientArgs, args: UpdateArgs, format: Format) -> anyhow::Result<()> {
    let UpdateArgs {
        name,
        handler,
        schedule,
        flags,
    } = args;
    let reschedules = schedule.every.is_some()
        || schedule.cron.is_some()
        || schedule.at.is_some()
        || schedule.start.is_some()
        || schedule.tz.is_some();
    let changes_flags = flags.args.is_some()
        || flags.priority.is_some()
        || flags.max_runs.is_some()
        || flags.timeout.is_some()
        || flags.retries.is_some()
        || flags.overlap.is_some()
        || flags.catch_up.is_some()
        || flags.catch_up_window.is_some()
        || flags.labels.is_some()
        || flags.paused
        || flags.alerts.is_some()
        || flags.alert_if_no_success.is_some()
        || flags.expected_duration.is_some();
    if handler.is_none() && !reschedules && !changes_flags {
        bail!(
            "nothing to change in job {name:?}: give at least one flag to change (e.g. --priority 5); see cronfleet job update --help"
        );
    }
    let server = Client::connect(client)?;
    let job = server.call(
        server
            .jobs()
            .get_job(pb::GetJobRequest { name: name.clone() }),
    )?;
    let mut spec = job.spec.unwrap_or_default();
    if let Some(handler) = handler {
        spec.handler = handler;
    }
    apply_schedule(&mut spec, schedule);
    apply_flags(&mut spec, flags);
    // An unchanged one-off job whose time has passed may still change its other fields.
    check(&spec, reschedules)?;
    let job = server.call(server.jobs().update_job(pb::UpdateJobRequest {
        name,
        expected_version: job.version,
        spec: Some(spec),
    }))?;
    output::print_job(&job, format)
}

fn run_now(client: &ClientArgs, args: RunArgs, format: Format) -> anyhow::Result<()> {
    let RunArgs { name, at } = args;
    let server = Client::connect(client)?;
    let answer = server.call(server.jobs().run_job(pb::RunJobRequest {
        name: name.clone(),
        at: at.clone().unwrap_or_default(),
    }))?;
    let run = answer.run.unwrap_or_default();
    match format {
        Format::Json => output::print_json(&ManualRunView {
            run: RunView::new(&run),
            queued: answer.queued,
        }),
        Format::Table => {
            let mut text = format!("created run {} of job {name}", run.id);
            if at.is_some()
                && let Some(slot) = output::time(run.slot.as_ref())
            {
                text.push_str(&format!(", not before {slot}"));
            }
            text.push('\n');
            if answer.queued {
                text.push_str(&format!(
                    "job {name} is busy: run {} is queued and starts when the current run ends\n",
                    run.id
                ));
            }
            output::print(&text)
        }
    }
}

/// Applies the schedule flags to a spec. A new kind replaces the old one (and an every
/// schedule without --start starts now); --start or --tz alone change only themselves.
fn apply_schedule(spec: &mut pb::JobSpec, flags: ScheduleFlags) {
    let schedule = spec.schedule.get_or_insert_with(pb::Schedule::default);
    let new_kind = flags
        .every
        .map(pb::schedule::Kind::Every)
        .or(flags.cron.map(pb::schedule::Kind::Cron))
        .or(flags.at.map(pb::schedule::Kind::At));
    if let Some(kind) = new_kind {
        schedule.kind = Some(kind);
        schedule.start = String::new();
    }
    if let Some(start) = flags.start {
        schedule.start = start;
    }
    if let Some(tz) = flags.tz {
        schedule.tz = tz;
    }
}

fn apply_flags(spec: &mut pb::JobSpec, flags: JobFlags) {
    if let Some(args) = flags.args {
        spec.args_json = args;
    }
    if let Some(priority) = flags.priority {
        spec.priority = priority;
    }
    if let Some(max_runs) = flags.max_runs {
        spec.max_runs = Some(max_runs);
    }
    if let Some(timeout) = flags.timeout {
        spec.timeout = Some(timeout);
    }
    if let Some(retries) = flags.retries {
        spec.retries = retries;
    }
    if let Some(overlap) = flags.overlap {
        spec.overlap = overlap;
    }
    if let Some(catch_up) = flags.catch_up {
        spec.catch_up = catch_up;
    }
    if let Some(window) = flags.catch_up_window {
        spec.catch_up_window = Some(window);
    }
    if let Some(Labels(labels)) = flags.labels {
        spec.labels = labels.into_iter().collect();
    }
    if flags.paused {
        spec.paused = Some(true);
    }
    if let Some(alerts) = flags.alerts {
        spec.alerts_enabled = Some(alerts);
    }
    if let Some(window) = flags.alert_if_no_success {
        spec.alert_if_no_success = Some(window);
    }
    if let Some(expected) = flags.expected_duration {
        spec.expected_duration = Some(expected);
    }
}

/// Checks a spec as the server will, with the server's messages; `new_schedule` also
/// checks that a one-off time is still ahead.
fn check(spec: &pb::JobSpec, new_schedule: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let domain = job_spec_from_proto(spec, now)?;
    if new_schedule {
        check_schedule_has_a_future(&domain.schedule, now)?;
    }
    Ok(())
}

/// `--retries`: a whole number the server accepts, said up front (clap's own message for
/// `-1` would name neither the flag's range nor the value).
fn parse_retries(text: &str) -> Result<u32, String> {
    let max = cronfleet_core::job::MAX_RETRIES;
    text.parse::<u32>()
        .ok()
        .filter(|retries| *retries <= max)
        .ok_or_else(|| format!("expected a whole number from 0 to {max}"))
}

/// `--alerts on|off`.
fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

/// `--max-runs`: at least one run (leave it out for unlimited).
fn parse_max_runs(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|runs| *runs >= 1)
        .ok_or_else(|| {
            "expected a whole number of at least 1 (leave it out for unlimited)".to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_or_say_what_is_expected() {
        let labels = parse_labels("region=eu, tier = gpu").unwrap();
        assert_eq!(
            labels.0,
            BTreeMap::from([
                ("region".into(), "eu".into()),
                ("tier".into(), "gpu".into())
            ])
        );
        assert_eq!(parse_labels("").unwrap().0, BTreeMap::new());
        for (bad, expected) in [
            ("region", "label \"region\" has no '='"),
            ("=eu", "label \"=eu\" has no key"),
            ("a=1,a=2", "label key \"a\" is given twice"),
        ] {
            let message = parse_labels(bad).unwrap_err();
            assert!(message.starts_with(expected), "{message}");
            assert!(message.contains("expected key=value pairs"), "{message}");
        }
    }

    #[test]
    fn alerts_are_on_or_off() {
        assert_eq!(parse_on_off("on"), Ok(true));
        assert_eq!(parse_on_off("off"), Ok(false));
        assert_eq!(parse_on_off("yes"), Err("expected on or off".to_owned()));
    }

    #[test]
    fn a_new_every_schedule_starts_now_unless_told() {
        let mut spec = pb::JobSpec {
            schedule: Some(pb::Schedule {
                kind: Some(pb::schedule::Kind::Every("5m".into())),
                tz: "Europe/Berlin".into(),
                start: "2030-01-01T13:00:00+01:00".into(),
            }),
            ..pb::JobSpec::default()
        };
        let only_tz = ScheduleFlags {
            every: None,
            start: None,
            cron: None,
            at: None,
            tz: Some("UTC".into()),
        };
        apply_schedule(&mut spec, only_tz);
        let schedule = spec.schedule.clone().unwrap();
        assert_eq!(
            schedule.start, "2030-01-01T13:00:00+01:00",
            "the start stays"
        );
        assert_eq!(schedule.tz, "UTC");
        let new_every = ScheduleFlags {
            every: Some("1h".into()),
            start: None,
            cron: None,
            at: None,
            tz: None,
        };
        apply_schedule(&mut spec, new_every);
        let schedule = spec.schedule.unwrap();
        assert_eq!(schedule.kind, Some(pb::schedule::Kind::Every("1h".into())));
        assert_eq!(schedule.start, "", "a new interval starts now");
    }
}
