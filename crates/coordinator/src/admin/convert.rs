//! Between the wire and the domain: proto job specs into validated
//! [`cronfleet_core::job::JobSpec`]s, and domain jobs, runs and workers into proto answers.
//!
//! Reading a spec uses the same `cronfleet-core` parsers as every other entry point, and
//! each failure names the proto field it came from (`tz: unknown time zone …`), so a
//! client can show the server's message as it is. The functions are public so that the
//! CLI can check a spec before sending it and get exactly the server's message.
//!
//! Writing is lossless where the proto allows it: the spec of an answer, sent back
//! unchanged in an `UpdateJob`, describes the same job (an `every` schedule carries its
//! start, times carry their offset).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use cronfleet_core::apply::{DesiredJob, JobChange};
use cronfleet_core::duration::{Interval, format_fixed_duration, parse_fixed_duration};
use cronfleet_core::job::{Job, JobSpec};
use cronfleet_core::policy::{CatchUp, CatchUpPolicy, OverlapPolicy};
use cronfleet_core::run::{Run, RunState, Trigger};
use cronfleet_core::schedule::{Schedule, ScheduleKind};
use cronfleet_core::time::{format_in_zone, parse_time, parse_tz};
use cronfleet_proto::v1 as pb;
use cronfleet_proto::{timestamp, timestamp_opt};
use cronfleet_store::RunFilter;

use super::error::AdminError;
use crate::workers::WorkerInfo;

/// Runs listed when a request does not say how many.
pub const DEFAULT_RUN_LIMIT: u32 = 100;
/// The most runs one `ListRuns` answers with; larger limits are lowered to it (as
/// Google's API guidelines advise for page sizes) rather than refused.
pub const MAX_RUN_LIMIT: u32 = 10_000;

/// Reads and validates a proto job spec. `now` is the start of an `every` schedule that
/// names none. Checks that depend on the store (a unique name, an `at` still in the
/// future) are the store's.
pub fn job_spec_from_proto(spec: &pb::JobSpec, now: DateTime<Utc>) -> Result<JobSpec, AdminError> {
    let schedule = schedule_from_proto(spec.schedule.as_ref(), now)?;
    let mut job = JobSpec::new(spec.name.clone(), spec.handler.clone(), schedule);
    job.args = args_from_json(&spec.args_json)?;
    job.priority = spec.priority;
    job.max_runs = spec.max_runs;
    job.timeout = spec
        .timeout
        .as_deref()
        .map(|text| parse_fixed_duration(text).map_err(|e| AdminError::field("timeout", e)))
        .transpose()?;
    job.retries = spec.retries;
    job.overlap = name_or_default::<OverlapPolicy>("overlap", &spec.overlap)?;
    job.catch_up = CatchUp {
        policy: name_or_default::<CatchUpPolicy>("catch_up", &spec.catch_up)?,
        window: spec
            .catch_up_window
            .as_deref()
            .map(|text| {
                parse_fixed_duration(text).map_err(|e| AdminError::field("catch_up_window", e))
            })
            .transpose()?,
    };
    job.labels = spec
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    job.paused = spec.paused.unwrap_or(false);
    job.pause_note = non_empty(&spec.pause_note);
    job.alerts_enabled = spec.alerts_enabled.unwrap_or(true);
    job.alert_if_no_success = spec
        .alert_if_no_success
        .as_deref()
        .map(|text| {
            parse_fixed_duration(text).map_err(|e| AdminError::field("alert_if_no_success", e))
        })
        .transpose()?;
    job.expected_duration = spec
        .expected_duration
        .as_deref()
        .map(|text| {
            parse_fixed_duration(text).map_err(|e| AdminError::field("expected_duration", e))
        })
        .transpose()?;
    job.validate()?;
    Ok(job)
}

/// Reads one job of an `ApplyJobs` list: its spec (as [`job_spec_from_proto`]), and
/// whether it gives the fields an apply otherwise keeps from the stored job (an `every`
/// start, the paused state).
pub fn desired_job_from_proto(
    spec: &pb::JobSpec,
    now: DateTime<Utc>,
) -> Result<DesiredJob, AdminError> {
    Ok(DesiredJob {
        spec: job_spec_from_proto(spec, now)?,
        start_given: spec
            .schedule
            .as_ref()
            .is_some_and(|schedule| !schedule.start.is_empty()),
        paused_given: spec.paused.is_some(),
    })
}

/// What an apply did (or would do) to one job.
pub fn job_change_to_proto(change: &JobChange) -> pb::JobChange {
    pb::JobChange {
        name: change.name.clone(),
        action: change.action.as_str().to_owned(),
        fields: change
            .fields
            .iter()
            .map(|field| pb::FieldChange {
                field: field.field.to_owned(),
                from: field.from.clone(),
                to: field.to.clone(),
            })
            .collect(),
    }
}

/// Reads a schedule: exactly one of `every`, `cron`, `at`, in `tz` (empty: UTC).
pub fn schedule_from_proto(
    schedule: Option<&pb::Schedule>,
    now: DateTime<Utc>,
) -> Result<Schedule, AdminError> {
    const EXPECTED: &str = "exactly one of every, cron or at";
    let schedule = schedule
        .ok_or_else(|| AdminError::field("schedule", "missing; expected ".to_owned() + EXPECTED))?;
    let tz = zone_or_utc(&schedule.tz)?;
    let kind = schedule
        .kind
        .as_ref()
        .ok_or_else(|| AdminError::field("schedule", "missing; expected ".to_owned() + EXPECTED))?;
    if !schedule.start.is_empty() && !matches!(kind, pb::schedule::Kind::Every(_)) {
        return Err(AdminError::field(
            "start",
            format!(
                "{:?} is only valid with an every schedule; leave it empty for cron and at",
                schedule.start
            ),
        ));
    }
    match kind {
        pb::schedule::Kind::Every(every) => {
            let interval = Interval::parse(every).map_err(|e| AdminError::field("every", e))?;
            let start = if schedule.start.is_empty() {
                default_start(now)
            } else {
                parse_time(&schedule.start, tz).map_err(|e| AdminError::field("start", e))?
            };
            Ok(Schedule::every(interval, start, tz))
        }
        pb::schedule::Kind::Cron(cron) => {
            Schedule::cron(cron, tz).map_err(|e| AdminError::field("cron", e))
        }
        pb::schedule::Kind::At(at) => {
            let at = parse_time(at, tz).map_err(|e| AdminError::field("at", e))?;
            Ok(Schedule::at(at, tz))
        }
    }
}

/// The start of an `every` schedule that names none: `now` rounded up to a whole second,
/// so that its slots read as people write times (12:00:05, not 12:00:04.441483) and a job
/// defined now still runs at once, within the second.
pub fn default_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let whole = now.with_nanosecond(0).unwrap_or(now);
    if whole == now {
        now
    } else {
        whole + TimeDelta::seconds(1)
    }
}

/// A time zone by IANA name; empty means UTC.
pub fn zone_or_utc(name: &str) -> Result<Tz, AdminError> {
    if name.is_empty() {
        Ok(Tz::UTC)
    } else {
        parse_tz(name).map_err(|e| AdminError::field("tz", e))
    }
}

/// Job args from their JSON text; empty means `{}`.
pub fn args_from_json(text: &str) -> Result<serde_json::Value, AdminError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(text).map_err(|error| {
        AdminError::field(
            "args",
            format!(
                "invalid JSON {}: {error}; expected a JSON value such as {{\"script\": \"echo hi\"}}",
                excerpt(text)
            ),
        )
    })
}

/// The start of a long value, enough to recognise it in an error message.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}… ({} bytes)", text.len())
    }
}

/// A named policy (`skip`, `all`, …); empty means the default.
fn name_or_default<T>(field: &'static str, text: &str) -> Result<T, AdminError>
where
    T: FromStr + Default,
    T::Err: std::fmt::Display,
{
    if text.is_empty() {
        Ok(T::default())
    } else {
        text.parse().map_err(|e| AdminError::field(field, e))
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Reads a `ListRuns` request into a store filter (newest first).
pub fn run_filter_from_proto(request: &pb::ListRunsRequest) -> Result<RunFilter, AdminError> {
    let state = if request.state.is_empty() {
        None
    } else {
        Some(RunState::from_str(&request.state).map_err(|e| AdminError::field("state", e))?)
    };
    let trigger = if request.trigger.is_empty() {
        None
    } else {
        Some(Trigger::from_str(&request.trigger).map_err(|e| AdminError::field("trigger", e))?)
    };
    let since = if request.since.is_empty() {
        None
    } else {
        Some(parse_time(&request.since, Tz::UTC).map_err(|e| AdminError::field("since", e))?)
    };
    let until = if request.until.is_empty() {
        None
    } else {
        Some(parse_time(&request.until, Tz::UTC).map_err(|e| AdminError::field("until", e))?)
    };
    let limit = match request.limit {
        0 => DEFAULT_RUN_LIMIT,
        n => n.min(MAX_RUN_LIMIT),
    };
    Ok(RunFilter {
        job: non_empty(&request.job),
        state,
        trigger,
        since,
        until,
        limit,
        ..RunFilter::default()
    })
}

/// The proto form of a spec; [`job_spec_from_proto`] reads it back into the same spec.
pub fn job_spec_to_proto(spec: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: spec.name.clone(),
        handler: spec.handler.clone(),
        args_json: spec.args.to_string(),
        schedule: Some(schedule_to_proto(&spec.schedule)),
        priority: spec.priority,
        max_runs: spec.max_runs,
        timeout: spec.timeout.map(format_fixed_duration),
        retries: spec.retries,
        overlap: spec.overlap.as_str().to_owned(),
        catch_up: spec.catch_up.policy.as_str().to_owned(),
        catch_up_window: spec.catch_up.window.map(format_fixed_duration),
        labels: spec
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        paused: Some(spec.paused),
        pause_note: spec.pause_note.clone().unwrap_or_default(),
        alerts_enabled: Some(spec.alerts_enabled),
        alert_if_no_success: spec.alert_if_no_success.map(format_fixed_duration),
        expected_duration: spec.expected_duration.map(format_fixed_duration),
    }
}

/// The proto form of a schedule, with times in its zone (with their offset).
pub fn schedule_to_proto(schedule: &Schedule) -> pb::Schedule {
    let tz = schedule.tz();
    let (kind, start) = match schedule.kind() {
        ScheduleKind::Every { interval, start } => (
            pb::schedule::Kind::Every(interval.to_string()),
            format_in_zone(*start, tz),
        ),
        ScheduleKind::Cron { expr, .. } => (pb::schedule::Kind::Cron(expr.clone()), String::new()),
        ScheduleKind::At(at) => (
            pb::schedule::Kind::At(format_in_zone(*at, tz)),
            String::new(),
        ),
    };
    pb::Schedule {
        kind: Some(kind),
        tz: tz.name().to_owned(),
        start,
    }
}

pub fn job_to_proto(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id,
        spec: Some(job_spec_to_proto(&job.spec)),
        version: job.version,
        active: job.active,
        next_run_at: timestamp_opt(job.next_run_at),
        last_run_at: timestamp_opt(job.last_run_at),
        remaining_runs: job.remaining_runs,
        failure_count: job.failures.failure_count,
        first_failure_at: timestamp_opt(job.failures.first_failure_at),
        missed_count: job.missed_count,
        overlap_skipped_count: job.overlap_skipped_count,
        created_at: Some(timestamp(job.created_at)),
        updated_at: Some(timestamp(job.updated_at)),
        schedule_text: job.spec.schedule.to_string(),
        managed_by: job.managed_by.clone().unwrap_or_default(),
    }
}

pub fn run_to_proto(run: &Run) -> pb::Run {
    let progress = run.progress.unwrap_or_default();
    pb::Run {
        id: run.id,
        job: run.job_name.clone(),
        slot: Some(timestamp(run.slot)),
        attempt: run.attempt,
        trigger: run.trigger.as_str().to_owned(),
        state: run.state.as_str().to_owned(),
        slot_count: run.slot_count,
        last_slot: timestamp_opt(run.last_slot),
        worker: run.worker.clone().unwrap_or_default(),
        epoch: run.epoch,
        created_at: Some(timestamp(run.created_at)),
        dispatched_at: timestamp_opt(run.dispatched_at),
        started_at: timestamp_opt(run.started_at),
        finished_at: timestamp_opt(run.finished_at),
        deadline: timestamp_opt(run.deadline),
        error: run.error.clone().unwrap_or_default(),
        output: run.output.clone().unwrap_or_default(),
        progress_done: progress.done,
        progress_remaining: progress.remaining,
        trace_id: run.trace_id.clone().unwrap_or_default(),
        pending_reason: run.pending_reason.clone().unwrap_or_default(),
    }
}

pub fn worker_to_proto(worker: &WorkerInfo) -> pb::Worker {
    pb::Worker {
        node_id: worker.node_id.clone(),
        handlers: worker.handlers.clone(),
        labels: labels_to_proto(&worker.labels),
        capacity: worker.capacity,
        busy: worker.busy,
        connected_at: Some(timestamp(worker.connected_at)),
        last_heartbeat_at: Some(timestamp(worker.last_heartbeat_at)),
        state: worker.state.as_str().to_owned(),
        version: worker.version.clone(),
    }
}

fn labels_to_proto(labels: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
    }

    fn spec(kind: pb::schedule::Kind) -> pb::JobSpec {
        pb::JobSpec {
            name: "nightly".into(),
            handler: "shell".into(),
            schedule: Some(pb::Schedule {
                kind: Some(kind),
                tz: String::new(),
                start: String::new(),
            }),
            ..pb::JobSpec::default()
        }
    }

    #[test]
    fn a_full_spec_round_trips() {
        let mut wire = spec(pb::schedule::Kind::Every("1d".into()));
        wire.schedule.as_mut().unwrap().tz = "Europe/Berlin".into();
        wire.schedule.as_mut().unwrap().start = "2030-01-02 09:00".into();
        wire.args_json = r#"{"script": "echo hi"}"#.into();
        wire.priority = -3;
        wire.max_runs = Some(4);
        wire.timeout = Some("1h30m".into());
        wire.retries = 2;
        wire.overlap = "queue".into();
        wire.catch_up = "all".into();
        wire.catch_up_window = Some("2h".into());
        wire.labels.insert("region".into(), "eu".into());
        wire.paused = Some(true);
        wire.pause_note = "maintenance".into();
        wire.alerts_enabled = Some(false);
        wire.alert_if_no_success = Some("26h".into());
        wire.expected_duration = Some("90s".into());
        let domain = job_spec_from_proto(&wire, now()).unwrap();
        assert!(!domain.alerts_enabled);
        assert_eq!(
            domain.alert_if_no_success,
            Some(std::time::Duration::from_secs(26 * 3600))
        );
        assert_eq!(
            domain.schedule.to_string(),
            "every 1d starting 2030-01-02T09:00:00+01:00 (Europe/Berlin)"
        );
        let back = job_spec_to_proto(&domain);
        let again = job_spec_from_proto(&back, now()).unwrap();
        assert_eq!(job_spec_to_proto(&again), back);
        assert_eq!(back.timeout.as_deref(), Some("1h30m"));
        assert_eq!(back.alerts_enabled, Some(false));
        assert_eq!(back.alert_if_no_success.as_deref(), Some("1d2h"));
        assert_eq!(back.expected_duration.as_deref(), Some("1m30s"));
        assert_eq!(back.overlap, "queue");
        assert_eq!(back.args_json, r#"{"script":"echo hi"}"#);
    }

    #[test]
    fn defaults_fill_what_is_empty() {
        let domain =
            job_spec_from_proto(&spec(pb::schedule::Kind::Every("5m".into())), now()).unwrap();
        assert_eq!(domain.args, serde_json::json!({}));
        assert_eq!(domain.overlap, OverlapPolicy::Skip);
        assert_eq!(domain.catch_up.policy, CatchUpPolicy::One);
        assert!(domain.alerts_enabled, "alerts are on unless turned off");
        assert_eq!(
            (domain.alert_if_no_success, domain.expected_duration),
            (None, None)
        );
        assert_eq!(domain.schedule.tz(), Tz::UTC);
        assert!(matches!(
            domain.schedule.kind(),
            ScheduleKind::Every { start, .. } if *start == now()
        ));
        let later = job_spec_from_proto(
            &spec(pb::schedule::Kind::Every("5m".into())),
            now() + TimeDelta::milliseconds(1),
        )
        .unwrap();
        assert!(matches!(
            later.schedule.kind(),
            ScheduleKind::Every { start, .. } if *start == now() + TimeDelta::seconds(1)
        ));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(pb::JobSpec, &str)> = vec![
            (
                spec(pb::schedule::Kind::Every("0s".into())),
                "every: invalid interval \"0s\"",
            ),
            (
                spec(pb::schedule::Kind::Every("5x".into())),
                "unknown unit \"x\"",
            ),
            (
                spec(pb::schedule::Kind::Cron("61 * * * *".into())),
                "cron: invalid cron expression",
            ),
            (
                spec(pb::schedule::Kind::At("tomorrow".into())),
                "at: invalid time \"tomorrow\"",
            ),
            (
                pb::JobSpec {
                    overlap: "sometimes".into(),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "overlap: unknown overlap policy \"sometimes\"; valid values are skip, queue, replace",
            ),
            (
                pb::JobSpec {
                    catch_up: "most".into(),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "catch_up: unknown catch-up policy \"most\"",
            ),
            (
                pb::JobSpec {
                    args_json: "{nope".into(),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "args: invalid JSON \"{nope\"",
            ),
            (
                pb::JobSpec {
                    timeout: Some("5x".into()),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "timeout: invalid duration \"5x\"",
            ),
            (
                pb::JobSpec {
                    alert_if_no_success: Some("1day".into()),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "alert_if_no_success: invalid duration \"1day\"",
            ),
            (
                pb::JobSpec {
                    expected_duration: Some("500ms".into()),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "invalid expected_duration \"500ms\": expected a duration of at least 1s",
            ),
            (
                pb::JobSpec {
                    schedule: None,
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "schedule: missing; expected exactly one of every, cron or at",
            ),
            (
                pb::JobSpec {
                    schedule: Some(pb::Schedule {
                        kind: Some(pb::schedule::Kind::Cron("@daily".into())),
                        tz: String::new(),
                        start: "2030-01-01T00:00:00Z".into(),
                    }),
                    ..spec(pb::schedule::Kind::Every("5m".into()))
                },
                "start: \"2030-01-01T00:00:00Z\" is only valid with an every schedule",
            ),
        ];
        for (wire, expected) in cases {
            let message = job_spec_from_proto(&wire, now()).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_default_start_is_the_next_whole_second() {
        assert_eq!(default_start(now()), now());
        let fractional = now() + TimeDelta::microseconds(441_483);
        assert_eq!(default_start(fractional), now() + TimeDelta::seconds(1));
    }

    #[test]
    fn run_filters_default_and_cap_the_limit() {
        let filter = run_filter_from_proto(&pb::ListRunsRequest::default()).unwrap();
        assert_eq!(filter.limit, DEFAULT_RUN_LIMIT);
        assert_eq!(filter.job, None);
        let filter = run_filter_from_proto(&pb::ListRunsRequest {
            limit: 1_000_000,
            state: "timed_out".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(filter.limit, MAX_RUN_LIMIT);
        assert_eq!(filter.state, Some(RunState::TimedOut));
        let filter = run_filter_from_proto(&pb::ListRunsRequest {
            trigger: "manual".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(filter.trigger, Some(Trigger::Manual));
        let error = run_filter_from_proto(&pb::ListRunsRequest {
            trigger: "cron".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(error.field_name().as_deref(), Some("trigger"));
        let error = run_filter_from_proto(&pb::ListRunsRequest {
            state: "done".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("state: unknown run state \"done\"; valid values are pending")
        );
    }
}
