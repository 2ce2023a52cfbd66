//! Declarative jobs (`cronfleet apply`): the plan that makes the jobs of one *manager*
//! match a list of definitions — which jobs to create, which to change (and which of their
//! fields), which to leave alone and, when pruning, which of the manager's jobs to delete
//! because the list no longer has them.
//!
//! Ownership: a job belongs to the manager whose apply created it, or that adopted it (an
//! apply that lists a job defined one by one, with `job create`, takes it over: the change
//! shows as the field `managed_by`). A job another manager owns is refused, so two files
//! never fight over one job; pruning deletes only the manager's own jobs, so a job defined
//! one by one is never pruned.
//!
//! Two fields keep their current value when a definition leaves them out, because the
//! system or an operator sets them rather than the file: the `start` of an `every` schedule
//! (a new job starts when it is created) and whether the job is paused (an operator's
//! pause, with its note, survives the next apply). Any other field left out takes its
//! default, so deleting a line from the file resets that field.
//!
//! Pure: the store reads the jobs concerned, calls [`plan_apply`] and carries out the
//! plan's writes in the same transaction, so what is reported is exactly what is written.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::duration::{Interval, format_fixed_duration};
use crate::job::{
    InvalidJob, Job, JobSpec, check_schedule_has_a_future, reschedules, validate_name,
};
use crate::schedule::{Schedule, ScheduleKind};
use crate::time::format_in_zone;

/// The manager of an apply that names none.
pub const DEFAULT_MANAGER: &str = "apply";

/// One job as a file defines it.
#[derive(Clone, Debug)]
pub struct DesiredJob {
    /// The definition, validated; an `every` schedule without a given start starts now.
    pub spec: JobSpec,
    /// The definition names the start of its `every` schedule. Otherwise a job that already
    /// runs `every` keeps its start.
    pub start_given: bool,
    /// The definition says whether the job is paused. Otherwise the job stays paused or
    /// not, as it is (with its pause note).
    pub paused_given: bool,
}

/// An apply: the jobs one manager should have.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    /// Who owns the jobs this apply creates (DNS-label-like, e.g. `apply`, `team-billing`).
    pub manager: String,
    /// In the order of the file; a job's index is its position there (`jobs[i]`).
    pub jobs: Vec<DesiredJob>,
    /// Delete the manager's jobs that `jobs` no longer has.
    pub prune: bool,
}

impl ApplyRequest {
    /// The names of the listed jobs, in order.
    pub fn names(&self) -> Vec<&str> {
        self.jobs.iter().map(|job| job.spec.name.as_str()).collect()
    }
}

/// What an apply does to one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Updated => "updated",
            ApplyAction::Unchanged => "unchanged",
            ApplyAction::Deleted => "deleted",
        }
    }
}

/// One changed field of an updated job, with its values as a file writes them (`None`:
/// unset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// The file's name for it (`cron`, `retries`, `catch_up_window`, …), or `managed_by`
    /// when the apply adopts the job.
    pub field: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What an apply does (or, for a dry run, would do) to one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobChange {
    pub name: String,
    pub action: ApplyAction,
    /// For an update: the fields that change, in the order of the file format.
    pub fields: Vec<FieldChange>,
}

/// A write the store makes to carry out a plan.
#[derive(Clone, Debug)]
pub enum JobWrite {
    Create(JobSpec),
    /// Replace `current`'s spec by `spec` (and make the manager its owner).
    Update {
        current: Box<Job>,
        spec: JobSpec,
    },
    Delete {
        id: i64,
        name: String,
    },
}

/// The outcome of [`plan_apply`]: the report, and the writes that make it true.
#[derive(Clone, Debug, Default)]
pub struct ApplyPlan {
    /// One per listed job, in the list's order, then the deleted jobs by name.
    pub changes: Vec<JobChange>,
    pub writes: Vec<JobWrite>,
}

/// Why an apply cannot be carried out; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "invalid manager \"{0}\": expected 1 to 63 lowercase letters, digits and '-', starting \
         and ending with a letter or digit (e.g. apply, team-billing)"
    )]
    InvalidManager(String),
    #[error(
        "jobs[{second}]: the name \"{name}\" is also the name of jobs[{first}]; each job may \
         appear only once"
    )]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
    #[error(
        "{}: the job belongs to manager \"{owner}\", not \"{manager}\"; apply it as \"{owner}\", \
         or delete it first",
        position(*.index, .name)
    )]
    OwnedByAnother {
        index: usize,
        name: String,
        owner: String,
        manager: String,
    },
    #[error("{}: {error}", position(*.index, .name))]
    InvalidJob {
        index: usize,
        name: String,
        error: InvalidJob,
    },
}

/// A job's place in the list of an apply, as errors name it: `jobs[2] (nightly-report)`,
/// or `jobs[2]` for a job without a name.
pub fn position(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("jobs[{index}]")
    } else {
        format!("jobs[{index}] ({name})")
    }
}

/// Checks that no name appears twice in the list of one apply.
pub fn check_unique_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ApplyError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, name) in names.into_iter().enumerate() {
        if let Some(&first) = seen.get(name) {
            return Err(ApplyError::DuplicateName {
                name: name.to_owned(),
                first,
                second: index,
            });
        }
        seen.insert(name, index);
    }
    Ok(())
}

/// Plans an apply against `current`: the stored jobs that `request` names, and those its
/// manager owns (others are ignored). Checks everything before planning any write: the
/// manager, unique names, every spec, ownership, and that a new or rescheduled job has a
/// slot ahead of `now`.
pub fn plan_apply(
    current: &[Job],
    request: &ApplyRequest,
    now: DateTime<Utc>,
) -> Result<ApplyPlan, ApplyError> {
    let manager = request.manager.as_str();
    if validate_name(manager).is_err() {
        return Err(ApplyError::InvalidManager(manager.to_owned()));
    }
    let names = request.names();
    check_unique_names(names.iter().copied())?;
    let listed: HashSet<&str> = names.into_iter().collect();
    let stored: HashMap<&str, &Job> = current
        .iter()
        .map(|job| (job.spec.name.as_str(), job))
        .collect();

    let mut plan = ApplyPlan::default();
    for (index, desired) in request.jobs.iter().enumerate() {
        let name = &desired.spec.name;
        let in_job = |error: InvalidJob| ApplyError::InvalidJob {
            index,
            name: name.clone(),
            error,
        };
        desired.spec.validate().map_err(in_job)?;
        let Some(&job) = stored.get(name.as_str()) else {
            check_schedule_has_a_future(&desired.spec.schedule, now).map_err(in_job)?;
            plan.changes.push(JobChange {
                name: name.clone(),
                action: ApplyAction::Created,
                fields: Vec::new(),
            });
            plan.writes.push(JobWrite::Create(desired.spec.clone()));
            continue;
        };
        match &job.managed_by {
            Some(owner) if owner != manager => {
                return Err(ApplyError::OwnedByAnother {
                    index,
                    name: name.clone(),
                    owner: owner.clone(),
                    manager: manager.to_owned(),
                });
            }
            _ => {}
        }
        let spec = merge(job, desired);
        let mut fields = changed_fields(&job.spec, &spec);
        if job.managed_by.is_none() {
            fields.push(FieldChange {
                field: "managed_by",
                from: None,
                to: Some(manager.to_owned()),
            });
        }
        if fields.is_empty() {
            plan.changes.push(JobChange {
                name: name.clone(),
                action: ApplyAction::Unchanged,
                fields,
            });
            continue;
        }
        if reschedules(&job.spec, &spec) {
            check_schedule_has_a_future(&spec.schedule, now).map_err(in_job)?;
        }
        plan.changes.push(JobChange {
            name: name.clone(),
            action: ApplyAction::Updated,
            fields,
        });
        plan.writes.push(JobWrite::Update {
            current: Box::new(job.clone()),
            spec,
        });
    }

    if request.prune {
        let mut gone: Vec<&Job> = current
            .iter()
            .filter(|job| {
                job.managed_by.as_deref() == Some(manager)
                    && !listed.contains(job.spec.name.as_str())
            })
            .collect();
        gone.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        for job in gone {
            plan.changes.push(JobChange {
                name: job.spec.name.clone(),
                action: ApplyAction::Deleted,
                fields: Vec::new(),
            });
            plan.writes.push(JobWrite::Delete {
                id: job.id,
                name: job.spec.name.clone(),
            });
        }
    }
    Ok(plan)
}

/// The spec an existing job gets: the definition, with what it leaves out kept from the
/// job (the start of an `every` schedule, the paused state and its note).
fn merge(current: &Job, desired: &DesiredJob) -> JobSpec {
    let mut spec = desired.spec.clone();
    if !desired.start_given
        && let (ScheduleKind::Every { interval, .. }, ScheduleKind::Every { start, .. }) =
            (spec.schedule.kind(), current.spec.schedule.kind())
    {
        spec.schedule = Schedule::every(*interval, *start, spec.schedule.tz());
    }
    if !desired.paused_given || spec.paused == current.spec.paused {
        spec.paused = current.spec.paused;
        spec.pause_note.clone_from(&current.spec.pause_note);
    }
    spec
}

/// A schedule as the fields of a job file.
struct ScheduleFields {
    every: Option<Interval>,
    cron: Option<String>,
    at: Option<DateTime<Utc>>,
    start: Option<DateTime<Utc>>,
    tz: Tz,
}

impl ScheduleFields {
    fn of(schedule: &Schedule) -> ScheduleFields {
        let mut fields = ScheduleFields {
            every: None,
            cron: None,
            at: None,
            start: None,
            tz: schedule.tz(),
        };
        match schedule.kind() {
            ScheduleKind::Every { interval, start } => {
                fields.every = Some(*interval);
                fields.start = Some(*start);
            }
            ScheduleKind::Cron { expr, .. } => fields.cron = Some(expr.clone()),
            ScheduleKind::At(at) => fields.at = Some(*at),
        }
        fields
    }

    /// A time as the file writes it: in the schedule's zone, with its offset.
    fn time(&self, time: Option<DateTime<Utc>>) -> Option<String> {
        time.map(|time| format_in_zone(time, self.tz))
    }
}

/// The fields of a job file whose values differ between two specs, in the file's order.
/// Values are compared by meaning (`90m` is `1h30m`, an instant is the same in any zone)
/// and shown as the file writes them.
pub fn changed_fields(old: &JobSpec, new: &JobSpec) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let mut field = |field: &'static str, same: bool, from: Option<String>, to: Option<String>| {
        if !same {
            changes.push(FieldChange { field, from, to });
        }
    };
    let text = |value: &dyn ToString| Some(value.to_string());
    let duration = |value: Option<std::time::Duration>| value.map(format_fixed_duration);
    let (was, now) = (
        ScheduleFields::of(&old.schedule),
        ScheduleFields::of(&new.schedule),
    );

    field(
        "handler",
        old.handler == new.handler,
        text(&old.handler),
        text(&new.handler),
    );
    field(
        "every",
        was.every == now.every,
        was.every.map(|every| every.to_string()),
        now.every.map(|every| every.to_string()),
    );
    field(
        "cron",
        was.cron == now.cron,
        was.cron.clone(),
        now.cron.clone(),
    );
    field("at", was.at == now.at, was.time(was.at), now.time(now.at));
    field(
        "tz",
        was.tz == now.tz,
        text(&was.tz.name()),
        text(&now.tz.name()),
    );
    field(
        "start",
        was.start == now.start,
        was.time(was.start),
        now.time(now.start),
    );
    field(
        "args",
        old.args == new.args,
        text(&old.args),
        text(&new.args),
    );
    field(
        "priority",
        old.priority == new.priority,
        text(&old.priority),
        text(&new.priority),
    );
    field(
        "max_runs",
        old.max_runs == new.max_runs,
        old.max_runs.map(|n| n.to_string()),
        new.max_runs.map(|n| n.to_string()),
    );
    field(
        "timeout",
        old.timeout == new.timeout,
        duration(old.timeout),
        duration(new.timeout),
    );
    field(
        "retries",
        old.retries == new.retries,
        text(&old.retries),
        text(&new.retries),
    );
    field(
        "overlap",
        old.overlap == new.overlap,
        text(&old.overlap.as_str()),
        text(&new.overlap.as_str()),
    );
    field(
        "catch_up",
        old.catch_up.policy == new.catch_up.policy,
        text(&old.catch_up.policy.as_str()),
        text(&new.catch_up.policy.as_str()),
    );
    field(
        "catch_up_window",
        old.catch_up.window == new.catch_up.window,
        duration(old.catch_up.window),
        duration(new.catch_up.window),
    );
    let labels = |spec: &JobSpec| {
        (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    field("labels", old.labels == new.labels, labels(old), labels(new));
    field(
        "paused",
        old.paused == new.paused,
        text(&old.paused),
        text(&new.paused),
    );
    field(
        "alerts_enabled",
        old.alerts_enabled == new.alerts_enabled,
        text(&old.alerts_enabled),
        text(&new.alerts_enabled),
    );
    field(
        "alert_if_no_success",
        old.alert_if_no_success == new.alert_if_no_success,
        duration(old.alert_if_no_success),
        duration(new.alert_if_no_success),
    );
    field(
        "expected_duration",
        old.expected_duration == new.expected_duration,
        duration(old.expected_duration),
        duration(new.expected_duration),
    );
    changes
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::policy::{FailureStreak, OverlapPolicy};

    const BERLIN: Tz = Tz::Europe__Berlin;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn every(name: &str, minutes: i64, start: DateTime<Utc>) -> JobSpec {
        JobSpec::new(
            name,
            "shell",
            Schedule::every(
                Interval::Elapsed(TimeDelta::minutes(minutes)),
                start,
                Tz::UTC,
            ),
        )
    }

    fn desired(spec: JobSpec) -> DesiredJob {
        DesiredJob {
            spec,
            start_given: false,
            paused_given: false,
        }
    }

    fn request(jobs: Vec<DesiredJob>, prune: bool) -> ApplyRequest {
        ApplyRequest {
            manager: DEFAULT_MANAGER.to_owned(),
            jobs,
            prune,
        }
    }

    /// A stored job, as the store would give it back.
    fn stored(id: i64, spec: JobSpec, managed_by: Option<&str>) -> Job {
        Job {
            id,
            spec,
            version: 1,
            active: true,
            next_run_at: Some(t(0)),
            last_run_at: None,
            remaining_runs: None,
            failures: FailureStreak::default(),
            missed_count: 0,
            overlap_skipped_count: 0,
            created_at: t(0),
            updated_at: t(0),
            managed_by: managed_by.map(str::to_owned),
        }
    }

    /// Carries out a plan on an in-memory list of jobs, as the store would.
    fn carry_out(jobs: &mut Vec<Job>, plan: &ApplyPlan, manager: &str) {
        for write in &plan.writes {
            match write {
                JobWrite::Create(spec) => {
                    let id = jobs.iter().map(|job| job.id).max().unwrap_or(0) + 1;
                    jobs.push(stored(id, spec.clone(), Some(manager)));
                }
                JobWrite::Update { current, spec } => {
                    let job = jobs.iter_mut().find(|job| job.id == current.id).unwrap();
                    job.spec = spec.clone();
                    job.managed_by = Some(manager.to_owned());
                }
                JobWrite::Delete { id, .. } => jobs.retain(|job| job.id != *id),
            }
        }
    }

    fn actions(plan: &ApplyPlan) -> Vec<(&str, &str)> {
        plan.changes
            .iter()
            .map(|change| (change.name.as_str(), change.action.as_str()))
            .collect()
    }

    #[test]
    fn missing_jobs_are_created_and_equal_ones_left_alone() {
        let current = vec![stored(1, every("same", 5, t(0)), Some("apply"))];
        let plan = plan_apply(
            &current,
            &request(
                vec![
                    desired(every("new", 5, t(100))),
                    desired(every("same", 5, t(100))),
                ],
                false,
            ),
            t(100),
        )
        .unwrap();
        assert_eq!(actions(&plan), [("new", "created"), ("same", "unchanged")]);
        assert_eq!(plan.writes.len(), 1);
        assert!(matches!(&plan.writes[0], JobWrite::Create(spec) if spec.name == "new"));
    }

    #[test]
    fn an_update_names_each_changed_field_with_both_values() {
        let mut old = every("report", 5, t(0));
        old.timeout = Some(Duration::from_secs(5400));
        let current = vec![stored(1, old.clone(), Some("apply"))];
        let mut new = old.clone();
        new.schedule = Schedule::cron("0 9 * * 1-5", BERLIN).unwrap();
        new.retries = 3;
        new.overlap = OverlapPolicy::Queue;
        new.labels.insert("region".into(), "eu".into());
        new.args = serde_json::json!({"script": "echo hi"});
        new.alerts_enabled = false;
        new.alert_if_no_success = Some(Duration::from_secs(26 * 3600));
        new.expected_duration = Some(Duration::from_secs(90));
        let plan = plan_apply(&current, &request(vec![desired(new)], false), t(10)).unwrap();
        assert_eq!(actions(&plan), [("report", "updated")]);
        let change = |field: &'static str, from: Option<&str>, to: Option<&str>| FieldChange {
            field,
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        };
        assert_eq!(
            plan.changes[0].fields,
            [
                change("every", Some("5m"), None),
                change("cron", None, Some("0 9 * * 1-5")),
                change("tz", Some("UTC"), Some("Europe/Berlin")),
                change("start", Some("2027-01-15T08:00:00+00:00"), None),
                change("args", Some("{}"), Some(r#"{"script":"echo hi"}"#)),
                change("retries", Some("0"), Some("3")),
                change("overlap", Some("skip"), Some("queue")),
                change("labels", None, Some("region=eu")),
                change("alerts_enabled", Some("true"), Some("false")),
                change("alert_if_no_success", None, Some("1d2h")),
                change("expected_duration", None, Some("1m30s")),
            ]
        );
    }

    #[test]
    fn values_are_compared_by_meaning() {
        let mut old = every("report", 60, t(0));
        old.timeout = Some(Duration::from_secs(5400));
        let current = vec![stored(1, old.clone(), Some("apply"))];
        // The same interval, timeout and start, written another way (as a file might).
        let mut new = JobSpec::new(
            "report",
            "shell",
            Schedule::every(Interval::parse("60m").unwrap(), t(0), BERLIN),
        );
        new.timeout = Some(Duration::from_secs(90 * 60));
        let plan = plan_apply(&current, &request(vec![desired(new)], false), t(10)).unwrap();
        let fields: Vec<&str> = plan.changes[0].fields.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["tz"], "only the zone differs");
    }

    #[test]
    fn an_every_job_keeps_its_start_unless_the_file_gives_one() {
        let current = vec![stored(1, every("tick", 5, t(0)), Some("apply"))];
        // A file without a start: the conversion started the schedule "now".
        let unstarted = desired(every("tick", 10, t(500)));
        let plan = plan_apply(&current, &request(vec![unstarted], false), t(500)).unwrap();
        let fields: Vec<&str> = plan.changes[0].fields.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["every"]);
        let JobWrite::Update { spec, .. } = &plan.writes[0] else {
            panic!("{:?}", plan.writes)
        };
        assert!(
            matches!(spec.schedule.kind(), ScheduleKind::Every { start, .. } if *start == t(0))
        );

        let mut moved = desired(every("tick", 5, t(60)));
        moved.start_given = true;
        let plan = plan_apply(&current, &request(vec![moved], false), t(500)).unwrap();
        let fields: Vec<&str> = plan.changes[0].fields.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["start"]);
    }

    #[test]
    fn an_operator_pause_survives_unless_the_file_says_otherwise() {
        let mut paused = every("report", 5, t(0));
        paused.paused = true;
        paused.pause_note = Some("incident 42".into());
        let current = vec![stored(1, paused, Some("apply"))];

        let silent = desired(every("report", 5, t(0)));
        let plan = plan_apply(&current, &request(vec![silent], false), t(10)).unwrap();
        assert_eq!(actions(&plan), [("report", "unchanged")]);

        let mut still_paused = desired(every("report", 5, t(0)));
        still_paused.spec.paused = true;
        still_paused.paused_given = true;
        let plan = plan_apply(&current, &request(vec![still_paused], false), t(10)).unwrap();
        assert_eq!(actions(&plan), [("report", "unchanged")], "the note stays");

        let mut resumed = desired(every("report", 5, t(0)));
        resumed.paused_given = true;
        let plan = plan_apply(&current, &request(vec![resumed], false), t(10)).unwrap();
        assert_eq!(
            plan.changes[0].fields,
            [FieldChange {
                field: "paused",
                from: Some("true".into()),
                to: Some("false".into())
            }]
        );
        let JobWrite::Update { spec, .. } = &plan.writes[0] else {
            panic!("{:?}", plan.writes)
        };
        assert_eq!((spec.paused, spec.pause_note.as_deref()), (false, None));
    }

    #[test]
    fn a_job_defined_by_hand_is_adopted_and_another_managers_refused() {
        let current = vec![
            stored(1, every("by-hand", 5, t(0)), None),
            stored(2, every("theirs", 5, t(0)), Some("team-b")),
        ];
        let plan = plan_apply(
            &current,
            &request(vec![desired(every("by-hand", 5, t(0)))], false),
            t(10),
        )
        .unwrap();
        assert_eq!(actions(&plan), [("by-hand", "updated")]);
        assert_eq!(
            plan.changes[0].fields,
            [FieldChange {
                field: "managed_by",
                from: None,
                to: Some("apply".into())
            }]
        );

        let error = plan_apply(
            &current,
            &request(
                vec![
                    desired(every("by-hand", 5, t(0))),
                    desired(every("theirs", 5, t(0))),
                ],
                false,
            ),
            t(10),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "jobs[1] (theirs): the job belongs to manager \"team-b\", not \"apply\"; apply it \
             as \"team-b\", or delete it first"
        );
    }

    #[test]
    fn pruning_deletes_only_the_managers_own_jobs_that_are_gone() {
        let current = vec![
            stored(1, every("kept", 5, t(0)), Some("apply")),
            stored(2, every("gone-b", 5, t(0)), Some("apply")),
            stored(3, every("gone-a", 5, t(0)), Some("apply")),
            stored(4, every("by-hand", 5, t(0)), None),
            stored(5, every("theirs", 5, t(0)), Some("team-b")),
        ];
        let jobs = vec![desired(every("kept", 5, t(0)))];
        let plan = plan_apply(&current, &request(jobs.clone(), false), t(10)).unwrap();
        assert_eq!(
            actions(&plan),
            [("kept", "unchanged")],
            "no pruning unless asked"
        );
        let plan = plan_apply(&current, &request(jobs, true), t(10)).unwrap();
        assert_eq!(
            actions(&plan),
            [
                ("kept", "unchanged"),
                ("gone-a", "deleted"),
                ("gone-b", "deleted")
            ]
        );
        let deleted: Vec<i64> = plan
            .writes
            .iter()
            .map(|write| match write {
                JobWrite::Delete { id, .. } => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(deleted, [3, 2]);
    }

    #[test]
    fn a_second_apply_of_the_same_list_changes_nothing() {
        let mut jobs = vec![
            stored(1, every("old", 5, t(0)), Some("apply")),
            stored(2, every("by-hand", 5, t(0)), None),
        ];
        let mut paused = every("paused", 1, t(0));
        paused.paused = true;
        let list = vec![
            desired(every("by-hand", 7, t(30))),
            desired(JobSpec::new(
                "nightly",
                "shell",
                Schedule::cron("30 2 * * *", BERLIN).unwrap(),
            )),
            DesiredJob {
                spec: paused,
                start_given: true,
                paused_given: true,
            },
        ];
        let first = plan_apply(&jobs, &request(list.clone(), true), t(30)).unwrap();
        assert_eq!(
            actions(&first),
            [
                ("by-hand", "updated"),
                ("nightly", "created"),
                ("paused", "created"),
                ("old", "deleted")
            ]
        );
        carry_out(&mut jobs, &first, "apply");
        let second = plan_apply(&jobs, &request(list, true), t(90)).unwrap();
        assert!(
            second
                .changes
                .iter()
                .all(|change| change.action == ApplyAction::Unchanged),
            "{:?}",
            second.changes
        );
        assert!(second.writes.is_empty());
    }

    #[test]
    fn bad_lists_are_refused_before_any_write() {
        let duplicate = request(
            vec![
                desired(every("a", 5, t(0))),
                desired(every("b", 5, t(0))),
                desired(every("a", 5, t(0))),
            ],
            false,
        );
        assert_eq!(
            plan_apply(&[], &duplicate, t(0)).unwrap_err().to_string(),
            "jobs[2]: the name \"a\" is also the name of jobs[0]; each job may appear only once"
        );

        let mut bad_manager = request(vec![], true);
        bad_manager.manager = "Team B".into();
        assert!(matches!(
            plan_apply(&[], &bad_manager, t(0)),
            Err(ApplyError::InvalidManager(manager)) if manager == "Team B"
        ));

        let mut invalid = every("b", 5, t(0));
        invalid.retries = 1000;
        let error = plan_apply(
            &[],
            &request(vec![desired(every("a", 5, t(0))), desired(invalid)], false),
            t(0),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("jobs[1] (b): invalid retries \"1000\""),
            "{error}"
        );
    }

    #[test]
    fn a_one_off_time_must_be_ahead_only_when_it_is_new() {
        let once = JobSpec::new("once", "shell", Schedule::at(t(50), Tz::UTC));
        let error = plan_apply(&[], &request(vec![desired(once.clone())], false), t(60))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("jobs[0] (once): invalid at")
                && error.contains("a time in the future"),
            "{error}"
        );
        // A job that has already run its one slot may be applied again as it is.
        let current = vec![stored(1, once.clone(), Some("apply"))];
        let plan = plan_apply(&current, &request(vec![desired(once)], false), t(60)).unwrap();
        assert_eq!(actions(&plan), [("once", "unchanged")]);
        let later = JobSpec::new("once", "shell", Schedule::at(t(55), Tz::UTC));
        assert!(plan_apply(&current, &request(vec![desired(later)], false), t(60)).is_err());
    }
}
