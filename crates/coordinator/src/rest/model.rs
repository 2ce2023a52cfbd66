//! The REST API's JSON: what it answers (views of the admin API's messages) and what it
//! reads (a job as a job file writes it, and the few parameters of the other calls).
//!
//! The same types are the CLI's `-o json` output and job files (`cronfleet apply`), so a
//! job looks the same wherever it is read or written. Objects use the snake_case names of
//! DESIGN §3 (`next_run_at`, `started_at`, …); times are RFC 3339 in UTC and absent values
//! are `null`, never empty strings. Each type's schema in the OpenAPI document is derived
//! from it ([`ToSchema`]), doc comments included.

use std::collections::{BTreeMap, HashMap};

use chrono::SecondsFormat;
use cronfleet_core::policy::{CatchUpPolicy, OverlapPolicy};
use cronfleet_proto::v1 as pb;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::admin::AdminError;

/// An RFC 3339 UTC time, or `None` for an absent (or unrepresentable) timestamp.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    timestamp
        .and_then(cronfleet_proto::datetime)
        .map(|time| time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn sorted(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A serde error about a request body or job file in an operator's words (serde names
/// Rust types: `expected u32`).
pub fn plain_serde_message(message: &str) -> String {
    message
        .replace("expected u32", "expected a whole number of 0 or more")
        .replace("expected i32", "expected a whole number")
        .replace("expected i64", "expected a whole number")
}

// ------------------------------------------------------------------------------ jobs

/// A job, as the REST API answers it and `-o json` prints it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    pub handler: String,
    pub args: serde_json::Value,
    /// The schedule in words: `every 5m starting … (UTC)`, `cron 0 9 * * 1-5 (Europe/Berlin)`.
    pub schedule: String,
    /// The schedule's parts: exactly one of `every`, `cron`, `at` is set.
    pub every: Option<String>,
    pub cron: Option<String>,
    pub at: Option<String>,
    /// Slot 0 of an `every` schedule.
    pub start: Option<String>,
    pub tz: String,
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    pub priority: i32,
    pub max_runs: Option<u32>,
    pub remaining_runs: Option<u32>,
    /// `null`: the coordinator's default.
    pub timeout: Option<String>,
    pub retries: u32,
    pub overlap: String,
    pub catch_up: String,
    pub catch_up_window: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub paused: bool,
    pub pause_note: Option<String>,
    /// False: the job opts out of alerts.
    pub alerts_enabled: bool,
    /// The dead-man's switch: an alert when no run succeeded within this long (`26h`);
    /// `null`: off.
    pub alert_if_no_success: Option<String>,
    /// A run running longer than this is stalled (`30m`); `null`: no expectation.
    pub expected_duration: Option<String>,
    /// The `cronfleet apply --manager` that owns the job; `null` for a job defined with
    /// `job create`.
    pub managed_by: Option<String>,
    /// False once the schedule has no slots left or max runs is reached.
    pub active: bool,
    pub failure_count: u32,
    pub first_failure_at: Option<String>,
    pub missed_count: u64,
    pub overlap_skipped_count: u64,
    pub id: i64,
    pub version: i64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl JobView {
    pub fn new(job: &pb::Job) -> JobView {
        let spec = job.spec.clone().unwrap_or_default();
        let schedule = spec.schedule.clone().unwrap_or_default();
        let (mut every, mut cron, mut at) = (None, None, None);
        match schedule.kind {
            Some(pb::schedule::Kind::Every(text)) => every = Some(text),
            Some(pb::schedule::Kind::Cron(text)) => cron = Some(text),
            Some(pb::schedule::Kind::At(text)) => at = Some(text),
            None => {}
        }
        JobView {
            // The server checked the args; should they ever not parse, show them as text.
            args: serde_json::from_str(&spec.args_json)
                .unwrap_or(serde_json::Value::String(spec.args_json.clone())),
            name: spec.name,
            handler: spec.handler,
            schedule: job.schedule_text.clone(),
            every,
            cron,
            at,
            start: non_empty(&schedule.start),
            tz: schedule.tz,
            next_run_at: time(job.next_run_at.as_ref()),
            last_run_at: time(job.last_run_at.as_ref()),
            priority: spec.priority,
            max_runs: spec.max_runs,
            remaining_runs: job.remaining_runs,
            timeout: spec.timeout,
            retries: spec.retries,
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            catch_up_window: spec.catch_up_window,
            labels: sorted(&spec.labels),
            paused: spec.paused.unwrap_or(false),
            pause_note: non_empty(&spec.pause_note),
            alerts_enabled: spec.alerts_enabled.unwrap_or(true),
            alert_if_no_success: spec.alert_if_no_success,
            expected_duration: spec.expected_duration,
            managed_by: non_empty(&job.managed_by),
            active: job.active,
            failure_count: job.failure_count,
            first_failure_at: time(job.first_failure_at.as_ref()),
            missed_count: job.missed_count,
            overlap_skipped_count: job.overlap_skipped_count,
            id: job.id,
            version: job.version,
            created_at: time(job.created_at.as_ref()),
            updated_at: time(job.updated_at.as_ref()),
        }
    }
}

/// One job as a job file and the REST API write it: the fields of `cronfleet job create`,
/// with exactly one of `every`, `cron` and `at`. Fields left out take their defaults,
/// except, in an apply, `start` (an existing `every` job keeps its start) and `paused` (an
/// existing job stays paused or not).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDefinition {
    pub name: String,
    pub handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Any JSON value; `args: null` is the value null, not "no args".
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_window: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// False: the job opts out of alerts. Left out: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub alerts_enabled: Option<bool>,
    /// The dead-man's switch: an alert when no run succeeded within this long, a
    /// duration of at least 1s (`26h`). Left out: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_if_no_success: Option<String>,
    /// A run running longer than this is stalled: a duration of at least 1s (`30m`). Left
    /// out: no expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<String>,
}

/// A field that is there, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl JobDefinition {
    /// At most one schedule: a spec can carry only one, so several are refused here,
    /// where it is known which were given (none is the server's to refuse).
    pub fn check_one_schedule(&self) -> Result<(), AdminError> {
        let given: Vec<&str> = [
            ("every", &self.every),
            ("cron", &self.cron),
            ("at", &self.at),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_ref().map(|_| field))
        .collect();
        match given.as_slice() {
            [first, second] => Err(AdminError::field(
                "schedule",
                format!(
                    "{first} and {second} are both given; expected exactly one of every, cron or at"
                ),
            )),
            [_, _, _] => Err(AdminError::field(
                "schedule",
                "every, cron and at are all given; expected exactly one of them",
            )),
            _ => Ok(()),
        }
    }

    /// The admin API's form; the server validates every field.
    pub fn to_spec(&self) -> pb::JobSpec {
        let kind = match (&self.every, &self.cron, &self.at) {
            (Some(every), None, None) => Some(pb::schedule::Kind::Every(every.clone())),
            (None, Some(cron), None) => Some(pb::schedule::Kind::Cron(cron.clone())),
            (None, None, Some(at)) => Some(pb::schedule::Kind::At(at.clone())),
            // None or several: the server says which one is wrong.
            _ => None,
        };
        pb::JobSpec {
            name: self.name.clone(),
            handler: self.handler.clone(),
            args_json: self
                .args
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            schedule: Some(pb::Schedule {
                kind,
                tz: self.tz.clone().unwrap_or_default(),
                start: self.start.clone().unwrap_or_default(),
            }),
            priority: self.priority.unwrap_or(0),
            max_runs: self.max_runs,
            timeout: self.timeout.clone(),
            retries: self.retries.unwrap_or(0),
            overlap: self.overlap.clone().unwrap_or_default(),
            catch_up: self.catch_up.clone().unwrap_or_default(),
            catch_up_window: self.catch_up_window.clone(),
            labels: self.labels.clone().into_iter().collect::<HashMap<_, _>>(),
            paused: self.paused,
            pause_note: String::new(),
            alerts_enabled: self.alerts_enabled,
            alert_if_no_success: self.alert_if_no_success.clone(),
            expected_duration: self.expected_duration.clone(),
        }
    }

    /// A stored job as a file defines it: every field that differs from its default, and
    /// the start of an `every` schedule (so the job is the same wherever it is applied).
    pub fn of(job: &pb::Job) -> JobDefinition {
        let spec = job.spec.clone().unwrap_or_default();
        let schedule = spec.schedule.unwrap_or_default();
        let mut definition = JobDefinition {
            name: spec.name,
            handler: spec.handler,
            ..JobDefinition::default()
        };
        match schedule.kind {
            Some(pb::schedule::Kind::Every(every)) => definition.every = Some(every),
            Some(pb::schedule::Kind::Cron(cron)) => definition.cron = Some(cron),
            Some(pb::schedule::Kind::At(at)) => definition.at = Some(at),
            None => {}
        }
        let unless = |value: String, default: &str| (value != default).then_some(value);
        definition.tz = unless(schedule.tz, "UTC").filter(|tz| !tz.is_empty());
        definition.start = unless(schedule.start, "");
        definition.args = match serde_json::from_str::<serde_json::Value>(&spec.args_json) {
            Ok(serde_json::Value::Object(map)) if map.is_empty() => None,
            Ok(args) => Some(args),
            // The server checked them; should they ever not parse, keep them as text.
            Err(_) => Some(serde_json::Value::String(spec.args_json)),
        };
        definition.priority = (spec.priority != 0).then_some(spec.priority);
        definition.max_runs = spec.max_runs;
        definition.timeout = spec.timeout;
        definition.retries = (spec.retries != 0).then_some(spec.retries);
        definition.overlap =
            unless(spec.overlap, OverlapPolicy::default().as_str()).filter(|o| !o.is_empty());
        definition.catch_up =
            unless(spec.catch_up, CatchUpPolicy::default().as_str()).filter(|c| !c.is_empty());
        definition.catch_up_window = spec.catch_up_window;
        definition.labels = spec.labels.into_iter().collect();
        definition.paused = (spec.paused == Some(true)).then_some(true);
        definition.alerts_enabled = (spec.alerts_enabled == Some(false)).then_some(false);
        definition.alert_if_no_success = spec.alert_if_no_success;
        definition.expected_duration = spec.expected_duration;
        definition
    }
}

/// What an apply did (or, dry, would do) to one job.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    pub name: String,
    /// created | updated | unchanged | deleted (with --dry-run: what would be done).
    pub action: String,
    /// For `updated`: each changed field, with its values as a file writes them (`null`:
    /// unset).
    pub fields: Vec<FieldView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldView {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl ChangeView {
    pub fn new(change: &pb::JobChange) -> ChangeView {
        ChangeView {
            name: change.name.clone(),
            action: change.action.clone(),
            fields: change
                .fields
                .iter()
                .map(|field| FieldView {
                    field: field.field.clone(),
                    from: field.from.clone(),
                    to: field.to.clone(),
                })
                .collect(),
        }
    }
}

// ------------------------------------------------------------------------------ runs

/// A run, as the REST API answers it and `-o json` prints it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    pub job: String,
    pub state: String,
    /// The scheduled time this run is for (the requested time of a manual run).
    pub slot: Option<String>,
    pub attempt: u32,
    pub trigger: String,
    pub worker: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// Why a pending run is not dispatched yet.
    pub pending_reason: Option<String>,
    /// For `skipped` / `missed` records: how many slots, and the last one.
    pub slot_count: u64,
    pub last_slot: Option<String>,
    pub created_at: Option<String>,
    pub dispatched_at: Option<String>,
    pub deadline: Option<String>,
    pub progress_done: u64,
    pub progress_remaining: u64,
    pub output: Option<String>,
    pub trace_id: Option<String>,
    pub epoch: i64,
}

impl RunView {
    pub fn new(run: &pb::Run) -> RunView {
        RunView {
            id: run.id,
            job: run.job.clone(),
            state: run.state.clone(),
            slot: time(run.slot.as_ref()),
            attempt: run.attempt,
            trigger: run.trigger.clone(),
            worker: non_empty(&run.worker),
            started_at: time(run.started_at.as_ref()),
            finished_at: time(run.finished_at.as_ref()),
            error: non_empty(&run.error),
            pending_reason: non_empty(&run.pending_reason),
            slot_count: run.slot_count,
            last_slot: time(run.last_slot.as_ref()),
            created_at: time(run.created_at.as_ref()),
            dispatched_at: time(run.dispatched_at.as_ref()),
            deadline: time(run.deadline.as_ref()),
            progress_done: run.progress_done,
            progress_remaining: run.progress_remaining,
            output: non_empty(&run.output),
            trace_id: non_empty(&run.trace_id),
            epoch: run.epoch,
        }
    }
}

/// A manual run: the run, and whether it waits for the job's current run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ManualRunView {
    #[serde(flatten)]
    pub run: RunView,
    pub queued: bool,
}

// ------------------------------------------------------------------------------ cluster

/// A worker connected to the leader.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    pub node_id: String,
    pub state: String,
    pub handlers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    pub busy: u32,
    pub version: String,
    pub connected_at: Option<String>,
    pub last_heartbeat_at: Option<String>,
}

impl WorkerView {
    pub fn new(worker: &pb::Worker) -> WorkerView {
        WorkerView {
            node_id: worker.node_id.clone(),
            state: worker.state.clone(),
            handlers: worker.handlers.clone(),
            labels: sorted(&worker.labels),
            capacity: worker.capacity,
            busy: worker.busy,
            version: worker.version.clone(),
            connected_at: time(worker.connected_at.as_ref()),
            last_heartbeat_at: time(worker.last_heartbeat_at.as_ref()),
        }
    }
}

/// A coordinator taking part in the election.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoordinatorView {
    pub node_id: String,
    pub url: String,
    pub leader: bool,
}

/// `cronfleet status -o json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// `null` while there is no leader.
    pub leader: Option<LeaderView>,
    pub epoch: i64,
    pub coordinators: Vec<CoordinatorView>,
    pub workers: Vec<WorkerView>,
    pub answered_by: Option<String>,
    pub workers_unavailable: Option<String>,
    pub election_unavailable: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderView {
    pub node_id: String,
    pub url: String,
}

impl StatusView {
    pub fn new(status: &pb::ClusterStatus) -> StatusView {
        StatusView {
            leader: status.leader.as_ref().map(|leader| LeaderView {
                node_id: leader.node_id.clone(),
                url: leader.url.clone(),
            }),
            epoch: status.epoch,
            coordinators: status
                .coordinators
                .iter()
                .map(|node| CoordinatorView {
                    node_id: node.node_id.clone(),
                    url: node.url.clone(),
                    leader: node.leader,
                })
                .collect(),
            workers: status.workers.iter().map(WorkerView::new).collect(),
            answered_by: non_empty(&status.answered_by),
            workers_unavailable: non_empty(&status.workers_unavailable),
            election_unavailable: non_empty(&status.election_unavailable),
        }
    }
}

// ------------------------------------------------------------------------------ requests

/// `POST /jobs/{name}/pause`: why, shown with the job (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /jobs/{name}/run`: when (optional, default now): RFC 3339, or
/// `YYYY-MM-DD HH:MM[:SS]` in the job's zone.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    pub at: Option<String>,
}

/// `POST /runs/{id}/cancel`: recorded as the run's error (optional, default "cancelled by
/// an operator").
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /workers/{id}/drain`: `undo: true` gives the worker new runs again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    #[serde(default)]
    pub undo: bool,
}

// ------------------------------------------------------------------------------ alerts

/// Where one event of an alert stands on one channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDeliveryView {
    /// The channel's key (`webhook:3fa2…`).
    pub channel: String,
    /// firing | resolved
    pub event: String,
    pub attempts: u32,
    pub delivered_at: Option<String>,
    pub abandoned_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// An alert: raised when its condition started to hold, resolved when it stopped.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: i64,
    /// failed | auto_paused | missed_deadline | stalled | no_worker | worker_lost
    pub kind: String,
    /// firing | resolved
    pub state: String,
    /// What it is about within its kind: `job:7`, `run:42`, `handler:report`, `worker:w-1`.
    pub subject: String,
    pub job: Option<String>,
    pub run_id: Option<i64>,
    pub message: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub deliveries: Vec<AlertDeliveryView>,
}

impl AlertView {
    pub fn new(alert: &pb::Alert) -> AlertView {
        AlertView {
            id: alert.id,
            kind: alert.kind.clone(),
            state: alert.state.clone(),
            subject: alert.subject.clone(),
            job: non_empty(&alert.job),
            run_id: alert.run_id,
            message: alert.message.clone(),
            fired_at: time(alert.fired_at.as_ref()),
            resolved_at: time(alert.resolved_at.as_ref()),
            acked_at: time(alert.acked_at.as_ref()),
            acked_by: non_empty(&alert.acked_by),
            labels: sorted(&alert.labels),
            deliveries: alert
                .deliveries
                .iter()
                .map(|d| AlertDeliveryView {
                    channel: d.channel.clone(),
                    event: d.event.clone(),
                    attempts: d.attempts,
                    delivered_at: time(d.delivered_at.as_ref()),
                    abandoned_at: time(d.abandoned_at.as_ref()),
                    next_attempt_at: time(d.next_attempt_at.as_ref()),
                    last_error: non_empty(&d.last_error),
                })
                .collect(),
        }
    }
}

/// `GET /alerts`
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertView>,
}

/// `POST /alerts/{id}/ack`: who acknowledges.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /apply`: the jobs one manager should have, as a job file lists them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub jobs: Vec<JobDefinition>,
    /// Who owns the jobs (DNS-label-like); default "apply".
    #[serde(default)]
    pub manager: Option<String>,
    /// Delete the manager's jobs that `jobs` no longer has.
    #[serde(default)]
    pub prune: bool,
    /// Plan only: write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

// ------------------------------------------------------------------------------ answers

/// `GET /jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// `GET /runs`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
}

/// `GET /workers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// `POST /apply`: one change per listed job, in the request's order, then the deleted jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyResult {
    pub changes: Vec<ChangeView>,
}

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The gRPC code's name in snake_case, the same for the same error over gRPC:
    /// `invalid_argument`, `not_found`, `already_exists`, `failed_precondition`,
    /// `unauthenticated`, `unavailable`, `internal`.
    pub code: String,
    /// What is wrong: the field, the bad value and what would be valid.
    pub message: String,
    /// The request field that is wrong (`cron`, `jobs[2].tz`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
