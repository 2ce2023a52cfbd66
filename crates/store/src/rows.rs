//! Rows as both back-ends read and write them, and their mapping to the domain types.
//!
//! Both schemas have the same columns, and every field type here decodes from PostgreSQL
//! and from SQLite alike, so the mapping is written once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_core::job::{Job, JobSpec};
use cronfleet_core::policy::{CatchUp, FailureStreak};
use cronfleet_core::run::{Progress, Run};
use cronfleet_core::schedule::{Schedule, ScheduleParts};
use sqlx::types::Json;

use crate::StoreError;

/// The job columns, in the order of [`JobRow`] (a macro, so queries stay `&'static str`).
macro_rules! job_columns {
    () => {
        "id, name, handler, args, schedule_kind, schedule_expr, schedule_start, tz, priority, \
         max_runs, remaining_runs, timeout_ms, retries, overlap, catch_up, catch_up_window_ms, \
         labels, paused, pause_note, active, next_run_at, last_run_at, failure_count, \
         first_failure_at, missed_count, overlap_skipped_count, version, created_at, updated_at, \
         managed_by, alerts_enabled, alert_if_no_success_ms, expected_duration_ms"
    };
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    name: String,
    handler: String,
    args: Json<serde_json::Value>,
    schedule_kind: String,
    schedule_expr: String,
    schedule_start: Option<DateTime<Utc>>,
    tz: String,
    priority: i32,
    max_runs: Option<i32>,
    remaining_runs: Option<i32>,
    timeout_ms: Option<i64>,
    retries: i32,
    overlap: String,
    catch_up: String,
    catch_up_window_ms: Option<i64>,
    labels: Json<BTreeMap<String, String>>,
    paused: bool,
    pause_note: Option<String>,
    active: bool,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    failure_count: i32,
    first_failure_at: Option<DateTime<Utc>>,
    missed_count: i64,
    overlap_skipped_count: i64,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    managed_by: Option<String>,
    alerts_enabled: bool,
    alert_if_no_success_ms: Option<i64>,
    expected_duration_ms: Option<i64>,
}

fn corrupt(what: &str, id: i64, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} of row {id}: {error}"))
}

fn to_u32(value: i32, what: &str, id: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|error| corrupt(what, id, error))
}

fn to_u64(value: i64, what: &str, id: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|error| corrupt(what, id, error))
}

fn millis(value: Option<i64>, what: &str, id: i64) -> Result<Option<Duration>, StoreError> {
    value
        .map(|ms| to_u64(ms, what, id).map(Duration::from_millis))
        .transpose()
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Job, StoreError> {
        let id = row.id;
        let schedule = Schedule::from_parts(&ScheduleParts {
            kind: row.schedule_kind,
            expr: row.schedule_expr,
            start: row.schedule_start,
            tz: row.tz,
        })
        .map_err(|error| corrupt("schedule", id, error))?;
        let spec = JobSpec {
            name: row.name,
            handler: row.handler,
            args: row.args.0,
            schedule,
            priority: row.priority,
            max_runs: row
                .max_runs
                .map(|n| to_u32(n, "max_runs", id))
                .transpose()?,
            timeout: millis(row.timeout_ms, "timeout_ms", id)?,
            retries: to_u32(row.retries, "retries", id)?,
            overlap: row
                .overlap
                .parse()
                .map_err(|error| corrupt("overlap", id, error))?,
            catch_up: CatchUp {
                policy: row
                    .catch_up
                    .parse()
                    .map_err(|error| corrupt("catch_up", id, error))?,
                window: millis(row.catch_up_window_ms, "catch_up_window_ms", id)?,
            },
            labels: row.labels.0,
            paused: row.paused,
            pause_note: row.pause_note,
            alerts_enabled: row.alerts_enabled,
            alert_if_no_success: millis(row.alert_if_no_success_ms, "alert_if_no_success_ms", id)?,
            expected_duration: millis(row.expected_duration_ms, "expected_duration_ms", id)?,
        };
        Ok(Job {
            id,
            spec,
            version: row.version,
            active: row.active,
            next_run_at: row.next_run_at,
            last_run_at: row.last_run_at,
            remaining_runs: row
                .remaining_runs
                .map(|n| to_u32(n, "remaining_runs", id))
                .transpose()?,
            failures: FailureStreak {
                failure_count: to_u32(row.failure_count, "failure_count", id)?,
                first_failure_at: row.first_failure_at,
            },
            missed_count: to_u64(row.missed_count, "missed_count", id)?,
            overlap_skipped_count: to_u64(row.overlap_skipped_count, "overlap_skipped_count", id)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            managed_by: row.managed_by,
        })
    }
}

/// A spec as column values, for inserts and updates.
pub(crate) struct JobValues {
    pub args: Json<serde_json::Value>,
    pub schedule: ScheduleParts,
    pub max_runs: Option<i32>,
    pub timeout_ms: Option<i64>,
    pub retries: i32,
    pub overlap: &'static str,
    pub catch_up: &'static str,
    pub catch_up_window_ms: Option<i64>,
    pub labels: Json<BTreeMap<String, String>>,
    pub alerts_enabled: bool,
    pub alert_if_no_success_ms: Option<i64>,
    pub expected_duration_ms: Option<i64>,
}

fn duration_ms(duration: Option<Duration>) -> Option<i64> {
    duration.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl JobValues {
    /// A run count as stored (counts beyond `i32::MAX` are unlimited in practice).
    pub(crate) fn count(runs: Option<u32>) -> Option<i32> {
        runs.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
    }

    pub(crate) fn of(spec: &JobSpec) -> JobValues {
        JobValues {
            args: Json(spec.args.clone()),
            schedule: spec.schedule.to_parts(),
            max_runs: JobValues::count(spec.max_runs),
            timeout_ms: duration_ms(spec.timeout),
            retries: i32::try_from(spec.retries).unwrap_or(i32::MAX),
            overlap: spec.overlap.as_str(),
            catch_up: spec.catch_up.policy.as_str(),
            catch_up_window_ms: duration_ms(spec.catch_up.window),
            labels: Json(spec.labels.clone()),
            alerts_enabled: spec.alerts_enabled,
            alert_if_no_success_ms: duration_ms(spec.alert_if_no_success),
            expected_duration_ms: duration_ms(spec.expected_duration),
        }
    }
}

/// The run columns, in the order of [`RunRow`], for a query that joins `jobs`.
macro_rules! run_columns {
    () => {
        "runs.id, runs.job_id, jobs.name AS job_name, runs.slot, runs.attempt, runs.trigger, \
         runs.state, runs.slot_count, runs.last_slot, runs.worker, runs.epoch, runs.created_at, \
         runs.dispatched_at, runs.started_at, runs.finished_at, runs.deadline, \
         runs.cancel_requested_at, runs.error, runs.output, runs.progress_done, \
         runs.progress_remaining, runs.trace_id, runs.not_before, runs.pending_reason"
    };
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    id: i64,
    job_id: i64,
    job_name: String,
    slot: DateTime<Utc>,
    attempt: i32,
    trigger: String,
    state: String,
    slot_count: i64,
    last_slot: Option<DateTime<Utc>>,
    worker: Option<String>,
    epoch: i64,
    created_at: DateTime<Utc>,
    dispatched_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    cancel_requested_at: Option<DateTime<Utc>>,
    error: Option<String>,
    output: Option<String>,
    progress_done: Option<i64>,
    progress_remaining: Option<i64>,
    trace_id: Option<String>,
    not_before: Option<DateTime<Utc>>,
    pending_reason: Option<String>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(row: RunRow) -> Result<Run, StoreError> {
        let id = row.id;
        let progress = match (row.progress_done, row.progress_remaining) {
            (Some(done), Some(remaining)) => Some(Progress {
                done: to_u64(done, "progress_done", id)?,
                remaining: to_u64(remaining, "progress_remaining", id)?,
            }),
            _ => None,
        };
        Ok(Run {
            id,
            job_id: row.job_id,
            job_name: row.job_name,
            slot: row.slot,
            attempt: to_u32(row.attempt, "attempt", id)?,
            trigger: row
                .trigger
                .parse()
                .map_err(|error| corrupt("trigger", id, error))?,
            state: row
                .state
                .parse()
                .map_err(|error| corrupt("state", id, error))?,
            slot_count: to_u64(row.slot_count, "slot_count", id)?,
            last_slot: row.last_slot,
            worker: row.worker,
            epoch: row.epoch,
            created_at: row.created_at,
            dispatched_at: row.dispatched_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            deadline: row.deadline,
            cancel_requested_at: row.cancel_requested_at,
            error: row.error,
            output: row.output,
            progress,
            trace_id: row.trace_id,
            not_before: row.not_before,
            pending_reason: row.pending_reason,
        })
    }
}

/// A job with its latest run, as [`crate::job_query`]'s page query selects it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ListedJobRow {
    #[sqlx(flatten)]
    job: JobRow,
    last_run_id: Option<i64>,
    last_run_state: Option<String>,
}

impl TryFrom<ListedJobRow> for crate::ListedJob {
    type Error = StoreError;

    fn try_from(row: ListedJobRow) -> Result<crate::ListedJob, StoreError> {
        let last_run = match (row.last_run_id, row.last_run_state) {
            (Some(id), Some(state)) => Some(crate::LastRun {
                id,
                state: state.parse().map_err(|error| corrupt("state", id, error))?,
            }),
            _ => None,
        };
        Ok(crate::ListedJob {
            job: row.job.try_into()?,
            last_run,
        })
    }
}

pub(crate) fn listed_jobs_from_rows(
    rows: Vec<ListedJobRow>,
) -> Result<Vec<crate::ListedJob>, StoreError> {
    rows.into_iter().map(crate::ListedJob::try_from).collect()
}

pub(crate) fn jobs_from_rows(rows: Vec<JobRow>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(Job::try_from).collect()
}

/// The jobs of `rows` that can be read, and the ones that cannot, with why: one bad row
/// must not stop the others from being leased.
pub(crate) fn readable_jobs(rows: Vec<JobRow>) -> (Vec<Job>, Vec<crate::UnreadableJob>) {
    let mut jobs = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        let (id, name) = (row.id, row.name.clone());
        match Job::try_from(row) {
            Ok(job) => jobs.push(job),
            Err(error) => unreadable.push(crate::UnreadableJob {
                id,
                name,
                error: error.to_string(),
            }),
        }
    }
    (jobs, unreadable)
}

pub(crate) fn runs_from_rows(rows: Vec<RunRow>) -> Result<Vec<Run>, StoreError> {
    rows.into_iter().map(Run::try_from).collect()
}

/// A pending run with what the dispatcher needs of its job.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DispatchRow {
    #[sqlx(flatten)]
    run: RunRow,
    handler: String,
    args: Json<serde_json::Value>,
    labels: Json<BTreeMap<String, String>>,
    timeout_ms: Option<i64>,
    priority: i32,
}

/// The extra job columns of a [`DispatchRow`], after [`run_columns!`].
macro_rules! dispatch_job_columns {
    () => {
        ", jobs.handler, jobs.args, jobs.labels, jobs.timeout_ms, jobs.priority"
    };
}

impl TryFrom<DispatchRow> for crate::DispatchableRun {
    type Error = StoreError;

    fn try_from(row: DispatchRow) -> Result<crate::DispatchableRun, StoreError> {
        let id = row.run.id;
        Ok(crate::DispatchableRun {
            run: row.run.try_into()?,
            handler: row.handler,
            args: row.args.0,
            labels: row.labels.0,
            timeout: millis(row.timeout_ms, "timeout_ms", id)?,
            priority: row.priority,
        })
    }
}

pub(crate) fn dispatchable_from_rows(
    rows: Vec<DispatchRow>,
) -> Result<Vec<crate::DispatchableRun>, StoreError> {
    rows.into_iter()
        .map(crate::DispatchableRun::try_from)
        .collect()
}
