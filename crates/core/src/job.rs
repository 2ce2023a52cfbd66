//! Jobs: what a user defines ([`JobSpec`]), how it is validated, and what the system keeps
//! about it as it runs ([`Job`]).
//!
//! Validation lives here, once, so that the CLI, both APIs and `apply` files reject the
//! same input with the same message: the field, the bad value, and what would be valid.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::duration::format_fixed_duration;
use crate::policy::{CatchUp, FailureStreak, OverlapPolicy};
use crate::schedule::{Schedule, ScheduleKind};

/// The longest job name: a DNS label, so names fit in Kubernetes labels and URLs.
pub const MAX_NAME_LEN: usize = 63;
/// The largest `args`, serialised as JSON.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;
/// The most retries a job may ask for.
pub const MAX_RETRIES: u32 = 100;
/// The most labels a job may carry.
pub const MAX_LABELS: usize = 64;
/// The shortest alert setting (`alert_if_no_success`, `expected_duration`): alerts are
/// evaluated in seconds, so anything shorter is a typo.
pub const MIN_ALERT_DURATION: Duration = Duration::from_secs(1);

/// A job as its owner defines it.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Unique, DNS-label-like: lowercase letters, digits and `-`.
    pub name: String,
    /// The handler a worker registers, e.g. `shell`.
    pub handler: String,
    pub args: serde_json::Value,
    pub schedule: Schedule,
    /// Lower runs first when more is due than can be dispatched at once.
    pub priority: i32,
    /// Scheduled runs before the job becomes inactive; `None` is unlimited.
    pub max_runs: Option<u32>,
    /// `None`: the coordinator's default.
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUp,
    /// Workers must carry all of these to run the job.
    pub labels: BTreeMap<String, String>,
    pub paused: bool,
    pub pause_note: Option<String>,
    /// False: the job opts out of alerts (none is raised for it).
    pub alerts_enabled: bool,
    /// The dead-man's switch: alert when no run succeeded within this long. `None`: off.
    pub alert_if_no_success: Option<Duration>,
    /// A run running longer than this is stalled. `None`: no expectation.
    pub expected_duration: Option<Duration>,
}

impl JobSpec {
    /// A spec with the defaults of DESIGN §3 for everything but the essentials.
    pub fn new(name: impl Into<String>, handler: impl Into<String>, schedule: Schedule) -> JobSpec {
        JobSpec {
            name: name.into(),
            handler: handler.into(),
            args: serde_json::Value::Object(serde_json::Map::new()),
            schedule,
            priority: 0,
            max_runs: None,
            timeout: None,
            retries: 0,
            overlap: OverlapPolicy::default(),
            catch_up: CatchUp::default(),
            labels: BTreeMap::new(),
            paused: false,
            pause_note: None,
            alerts_enabled: true,
            alert_if_no_success: None,
            expected_duration: None,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        validate_name(&self.name)?;
        validate_handler(&self.handler)?;
        validate_args(&self.args)?;
        if self.max_runs == Some(0) {
            return Err(InvalidJob::new(
                "max_runs",
                "0",
                "a whole number of at least 1, or unset for unlimited",
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(InvalidJob::new(
                "timeout",
                "0",
                "a positive duration such as 30s, 5m, 1h",
            ));
        }
        if self.catch_up.window == Some(Duration::ZERO) {
            return Err(InvalidJob::new(
                "catch_up_window",
                "0",
                "a positive duration such as 10m, 1h, 1d",
            ));
        }
        validate_alert_duration("alert_if_no_success", self.alert_if_no_success)?;
        validate_alert_duration("expected_duration", self.expected_duration)?;
        if self.retries > MAX_RETRIES {
            return Err(InvalidJob::new(
                "retries",
                &self.retries.to_string(),
                &format!("a whole number from 0 to {MAX_RETRIES}"),
            ));
        }
        validate_labels(&self.labels)
    }
}

/// Checks a job name: 1 to 63 lowercase letters, digits and `-`, starting with a letter or
/// digit and ending with one.
pub fn validate_name(name: &str) -> Result<(), InvalidJob> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(InvalidJob::new(
            "name",
            name,
            "1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. nightly-report)",
        ))
    }
}

fn validate_handler(handler: &str) -> Result<(), InvalidJob> {
    let valid = !handler.is_empty()
        && handler.len() <= 128
        && handler
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if valid {
        Ok(())
    } else {
        Err(InvalidJob::new(
            "handler",
            handler,
            "1 to 128 letters, digits and '_', '-', '.', ':', '/' (e.g. shell, billing.send_reminders)",
        ))
    }
}

fn validate_args(args: &serde_json::Value) -> Result<(), InvalidJob> {
    let size = serde_json::to_vec(args).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_ARGS_BYTES {
        return Err(InvalidJob::new(
            "args",
            &format!("{size} bytes of JSON"),
            "at most 1 MiB (1048576 bytes) of JSON",
        ));
    }
    Ok(())
}

fn validate_alert_duration(field: &'static str, value: Option<Duration>) -> Result<(), InvalidJob> {
    match value {
        Some(d) if d < MIN_ALERT_DURATION => Err(InvalidJob::new(
            field,
            &format_fixed_duration(d),
            "a duration of at least 1s such as 30m, 26h, 1d, or unset",
        )),
        _ => Ok(()),
    }
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), InvalidJob> {
    if labels.len() > MAX_LABELS {
        return Err(InvalidJob::new(
            "labels",
            &format!("{} labels", labels.len()),
            &format!("at most {MAX_LABELS} labels"),
        ));
    }
    let label_text = |text: &str| {
        text.len() <= 63
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    };
    for (key, value) in labels {
        if key.is_empty() || !label_text(key) {
            return Err(InvalidJob::new(
                "labels",
                key,
                "label keys of 1 to 63 letters, digits and '-', '_', '.', '/' (e.g. region=eu)",
            ));
        }
        if !label_text(value) {
            return Err(InvalidJob::new(
                "labels",
                &format!("{key}={value}"),
                "label values of at most 63 letters, digits and '-', '_', '.', '/'",
            ));
        }
    }
    Ok(())
}

/// A job field with a value that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} \"{value}\": expected {expected}")]
pub struct InvalidJob {
    pub field: &'static str,
    pub value: String,
    pub expected: String,
}

impl InvalidJob {
    pub fn new(field: &'static str, value: &str, expected: &str) -> InvalidJob {
        InvalidJob {
            field,
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

/// A job as the system keeps it: the spec plus its scheduling and run-time state.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub spec: JobSpec,
    /// Raised by every change; updates name the version they expect.
    pub version: i64,
    /// False once the schedule has no slots left or max runs is reached.
    pub active: bool,
    /// The earliest slot not yet leased.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub remaining_runs: Option<u32>,
    pub failures: FailureStreak,
    pub missed_count: u64,
    pub overlap_skipped_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The `apply` manager that created or adopted the job (see [`crate::apply`]); `None`
    /// for a job defined one by one (`job create`), which no apply ever deletes.
    pub managed_by: Option<String>,
}

/// The first slot of a job defined (or rescheduled) at `now`: its first slot at or after
/// `now`, so that defining a job never triggers a catch-up. An `every` schedule's slot 0 is
/// its start, so a job whose start is now runs now.
pub fn first_slot(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_slot_after(now - TimeDelta::nanoseconds(1))
}

/// Where a job's schedule stands once its spec is replaced by `new` at `now`: the next slot
/// to lease and the runs left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleState {
    pub next_run_at: Option<DateTime<Utc>>,
    pub remaining_runs: Option<u32>,
}

/// Whether replacing `current`'s spec by `new` reschedules the job: a changed schedule or
/// max runs does; any other change leaves its slots alone.
pub fn reschedules(current: &JobSpec, new: &JobSpec) -> bool {
    current.schedule.to_parts() != new.schedule.to_parts() || current.max_runs != new.max_runs
}

/// The schedule state after `current`'s spec is replaced by `new` at `now`. A rescheduled
/// job (see [`reschedules`]) starts again at its first slot at or after `now` with a fresh
/// run count, and must still have a slot ahead; otherwise it carries on where it is.
pub fn schedule_after_update(
    current: &Job,
    new: &JobSpec,
    now: DateTime<Utc>,
) -> Result<ScheduleState, InvalidJob> {
    if reschedules(&current.spec, new) {
        check_schedule_has_a_future(&new.schedule, now)?;
        Ok(ScheduleState {
            next_run_at: first_slot(&new.schedule, now),
            remaining_runs: new.max_runs,
        })
    } else {
        Ok(ScheduleState {
            next_run_at: current.next_run_at,
            remaining_runs: current.remaining_runs,
        })
    }
}

/// Rejects a one-off job whose time has passed: it would never run.
pub fn check_schedule_has_a_future(
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<(), InvalidJob> {
    if let ScheduleKind::At(at) = schedule.kind()
        && first_slot(schedule, now).is_none()
    {
        return Err(InvalidJob::new(
            "at",
            &at.to_rfc3339(),
            "a time in the future",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Interval;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec::new(
            "nightly-report",
            "shell",
            Schedule::every(
                Interval::Elapsed(TimeDelta::minutes(5)),
                t(0),
                chrono_tz::UTC,
            ),
        )
    }

    #[test]
    fn a_sensible_job_is_valid() {
        let mut job = spec();
        job.labels.insert("region".into(), "eu-west".into());
        job.args = serde_json::json!({"script": "echo hi"});
        assert_eq!(job.validate(), Ok(()));
    }

    #[test]
    fn bad_names_say_what_is_valid() {
        for bad in [
            "",
            "Upper",
            "-lead",
            "trail-",
            "under_score",
            "dot.ted",
            &"a".repeat(64),
        ] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(err.field, "name");
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains("lowercase letters"), "{err}");
        }
        for good in ["a", "x1", "payment-reminders", &"a".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()));
        }
    }

    #[test]
    fn every_field_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut JobSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|j| j.handler = "has space".into()), "handler"),
            (Box::new(|j| j.handler = String::new()), "handler"),
            (Box::new(|j| j.max_runs = Some(0)), "max_runs"),
            (Box::new(|j| j.timeout = Some(Duration::ZERO)), "timeout"),
            (
                Box::new(|j| j.catch_up.window = Some(Duration::ZERO)),
                "catch_up_window",
            ),
            (
                Box::new(|j| j.alert_if_no_success = Some(Duration::from_millis(500))),
                "alert_if_no_success",
            ),
            (
                Box::new(|j| j.expected_duration = Some(Duration::ZERO)),
                "expected_duration",
            ),
            (Box::new(|j| j.retries = MAX_RETRIES + 1), "retries"),
            (
                Box::new(|j| {
                    j.labels.insert("bad key".into(), "v".into());
                }),
                "labels",
            ),
            (
                Box::new(|j| {
                    j.labels.insert("k".into(), "bad value".into());
                }),
                "labels",
            ),
            (
                Box::new(|j| j.args = serde_json::json!({"blob": "x".repeat(MAX_ARGS_BYTES)})),
                "args",
            ),
        ];
        for (mutate, field) in cases {
            let mut job = spec();
            mutate(&mut job);
            let err = job.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn alert_durations_are_at_least_a_second() {
        let mut job = spec();
        job.alert_if_no_success = Some(Duration::from_millis(999));
        assert_eq!(
            job.validate().unwrap_err().to_string(),
            "invalid alert_if_no_success \"999ms\": expected a duration of at least 1s such as 30m, 26h, 1d, or unset"
        );
        job.alert_if_no_success = Some(Duration::from_secs(26 * 3600));
        job.expected_duration = Some(Duration::from_millis(250));
        assert_eq!(
            job.validate().unwrap_err().to_string(),
            "invalid expected_duration \"250ms\": expected a duration of at least 1s such as 30m, 26h, 1d, or unset"
        );
        job.expected_duration = Some(Duration::from_secs(1));
        assert_eq!(job.validate(), Ok(()));
        assert!(spec().alerts_enabled, "alerts are on by default");
    }

    #[test]
    fn oversized_args_report_their_size_and_the_limit() {
        let mut job = spec();
        job.args = serde_json::Value::String("x".repeat(MAX_ARGS_BYTES));
        let message = job.validate().unwrap_err().to_string();
        assert!(message.contains("1048578 bytes"), "{message}");
        assert!(message.contains("at most 1 MiB"), "{message}");
    }

    #[test]
    fn the_first_slot_is_at_or_after_now() {
        let every = Schedule::every(
            Interval::Elapsed(TimeDelta::seconds(10)),
            t(0),
            chrono_tz::UTC,
        );
        assert_eq!(first_slot(&every, t(0)), Some(t(0)), "start = now runs now");
        assert_eq!(first_slot(&every, t(1)), Some(t(10)));
        assert_eq!(first_slot(&every, t(10)), Some(t(10)));
        let at = Schedule::at(t(5), chrono_tz::UTC);
        assert_eq!(first_slot(&at, t(6)), None);
        assert!(check_schedule_has_a_future(&at, t(6)).is_err());
        assert_eq!(check_schedule_has_a_future(&at, t(4)), Ok(()));
    }
}
