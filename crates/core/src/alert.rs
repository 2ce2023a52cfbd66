//! Alerts: which conditions hold now, and what that changes in the stored alerts.
//!
//! An alert is *level-triggered*: each pass of the leader's evaluator observes which
//! conditions hold (from the store and the leader's worker registry), and
//! [`plan_alerts`] compares them with the alerts firing in the store: a condition with no
//! firing alert raises one, a firing alert whose condition is known to be over is resolved.
//! Nothing depends on having seen the moment a condition started, so a new leader after a
//! failover picks up exactly where the old one stopped, and one condition is one alert
//! however many passes see it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::duration::format_fixed_duration as format_duration;
use crate::run::UnknownName;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// A run ended failed, timed out or lost, and no retry follows.
    Failed,
    /// The failure-streak rule paused the job.
    AutoPaused,
    /// No run of the job succeeded within its `alert_if_no_success` window.
    MissedDeadline,
    /// A run is past its job's expected duration, or silent (no output, no progress).
    Stalled,
    /// Runs wait for a handler (and labels) that no live worker offers.
    NoWorker,
    /// A worker went away without saying it stops, and has not come back.
    WorkerLost,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::Failed,
        AlertKind::AutoPaused,
        AlertKind::MissedDeadline,
        AlertKind::Stalled,
        AlertKind::NoWorker,
        AlertKind::WorkerLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failed => "failed",
            AlertKind::AutoPaused => "auto_paused",
            AlertKind::MissedDeadline => "missed_deadline",
            AlertKind::Stalled => "stalled",
            AlertKind::NoWorker => "no_worker",
            AlertKind::WorkerLost => "worker_lost",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<AlertKind, UnknownName> {
        AlertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                UnknownName::new("alert kind", s, &AlertKind::ALL.map(AlertKind::as_str))
            })
    }
}

/// An alert is firing until its condition is over, then resolved for good (a new
/// occurrence is a new alert).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlertState {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<AlertState, UnknownName> {
        match s {
            "firing" => Ok(AlertState::Firing),
            "resolved" => Ok(AlertState::Resolved),
            _ => Err(UnknownName::new("alert state", s, &["firing", "resolved"])),
        }
    }
}

/// A condition that holds now. `subject` tells occurrences of one kind apart (`job:7`,
/// `run:42`, `handler:report`, `worker:w-1`): at most one alert per kind and subject fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: AlertKind,
    pub subject: String,
    pub job_id: Option<i64>,
    pub job_name: Option<String>,
    pub run_id: Option<i64>,
    /// The job's labels (routing), or the labels the waiting runs need (`no_worker`).
    pub labels: BTreeMap<String, String>,
    pub message: String,
}

/// What one pass of the evaluator observed.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The conditions that hold.
    pub holding: Vec<Condition>,
    /// The kinds whose every holding condition is in `holding` — at least for every
    /// subject that fires: for these, a firing alert without a condition is over. A kind
    /// read only in part (a capped read, a failed read) is absent, and its alerts stay as
    /// they are.
    pub complete: BTreeSet<AlertKind>,
    /// Subjects known to be over even though their kind is not complete (a lost worker
    /// that connected again).
    pub over: HashSet<(AlertKind, String)>,
    /// Subjects not decided yet (a failed job whose retry is still to come): their alert,
    /// firing or not, stays as it is.
    pub undecided: HashSet<(AlertKind, String)>,
}

/// An alert firing in the store, as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiringAlert {
    pub id: i64,
    pub kind: AlertKind,
    pub subject: String,
}

/// What to change in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertPlan {
    /// Conditions to raise an alert for.
    pub raise: Vec<Condition>,
    /// Ids of the firing alerts to resolve.
    pub resolve: Vec<i64>,
}

impl AlertPlan {
    pub fn is_empty(&self) -> bool {
        self.raise.is_empty() && self.resolve.is_empty()
    }
}

/// Compares what holds with what fires.
pub fn plan_alerts(observation: &Observation, firing: &[FiringAlert]) -> AlertPlan {
    let holding: HashSet<(AlertKind, &str)> = observation
        .holding
        .iter()
        .map(|c| (c.kind, c.subject.as_str()))
        .collect();
    let fired: HashSet<(AlertKind, &str)> = firing
        .iter()
        .map(|a| (a.kind, a.subject.as_str()))
        .collect();
    let mut raised = HashSet::new();
    let raise = observation
        .holding
        .iter()
        .filter(|c| !fired.contains(&(c.kind, c.subject.as_str())))
        .filter(|c| !observation.undecided.contains(&(c.kind, c.subject.clone())))
        .filter(|c| raised.insert((c.kind, c.subject.clone())))
        .cloned()
        .collect();
    let resolve = firing
        .iter()
        .filter(|alert| {
            !observation
                .undecided
                .contains(&(alert.kind, alert.subject.clone()))
        })
        .filter(|alert| {
            let over_by_absence = observation.complete.contains(&alert.kind)
                && !holding.contains(&(alert.kind, alert.subject.as_str()));
            over_by_absence
                || observation
                    .over
                    .contains(&(alert.kind, alert.subject.clone()))
        })
        .map(|alert| alert.id)
        .collect();
    AlertPlan { raise, resolve }
}

/// The subject of a job's alerts of one kind.
pub fn job_subject(job_id: i64) -> String {
    format!("job:{job_id}")
}

/// A job whose failure streak is on, or whose last slot was given up lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailingJob {
    pub job_id: i64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub failures: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
    /// The last run that ended failed, timed out or lost, and its error.
    pub last_run_id: Option<i64>,
    pub last_state: Option<String>,
    pub last_error: Option<String>,
    /// A retry (or the rerun of a lost run) is still to come: the failure is not final,
    /// and the job's alert is left as it is until that attempt ends.
    pub retry_in_flight: bool,
}

impl FailingJob {
    /// The condition, once the failure is final; without a retry to come, the job is
    /// only undecided (see [`Observation::undecided`]).
    pub fn condition(&self) -> Condition {
        let mut message = match (self.last_state.as_deref(), self.last_run_id) {
            (Some(state), Some(run)) => format!("run {run} of job {} ended {state}", self.name),
            _ => format!("job {} failed", self.name),
        };
        if self.failures > 1 {
            message.push_str(&format!(" ({} failures in a row", self.failures));
            if let Some(since) = self.first_failure_at {
                message.push_str(&format!(" since {}", since.format("%Y-%m-%d %H:%M:%SZ")));
            }
            message.push(')');
        }
        if let Some(error) = self.last_error.as_deref().filter(|e| !e.is_empty()) {
            message.push_str(": ");
            message.push_str(&first_line(error, 300));
        }
        Condition {
            kind: AlertKind::Failed,
            subject: job_subject(self.job_id),
            job_id: Some(self.job_id),
            job_name: Some(self.name.clone()),
            run_id: self.last_run_id,
            labels: self.labels.clone(),
            message,
        }
    }
}

/// A job the failure-streak rule paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoPausedJob {
    pub job_id: i64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub note: String,
}

impl AutoPausedJob {
    pub fn condition(&self) -> Condition {
        Condition {
            kind: AlertKind::AutoPaused,
            subject: job_subject(self.job_id),
            job_id: Some(self.job_id),
            job_name: Some(self.name.clone()),
            run_id: None,
            labels: self.labels.clone(),
            message: format!("job {} {}", self.name, self.note),
        }
    }
}

/// A job with a dead-man's switch, and its last success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineJob {
    pub job_id: i64,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `alert_if_no_success`.
    pub window: Duration,
    /// When its last successful run finished, if one is on record.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the window started counting at the earliest: the job's last change — its
    /// definition, an edit, a pause or a resume — so a job resumed after a long pause, or
    /// whose window was just set, gets a whole window.
    pub defined_at: DateTime<Utc>,
}

impl DeadlineJob {
    /// The condition, if no success came within the window before `now` — whether runs
    /// failed, or no run was even created (the coordinator was down, the job never came
    /// due).
    pub fn condition(&self, now: DateTime<Utc>) -> Option<Condition> {
        let window = TimeDelta::from_std(self.window).unwrap_or(TimeDelta::MAX);
        let since = self
            .last_success_at
            .map_or(self.defined_at, |at| at.max(self.defined_at));
        if now - since <= window {
            return None;
        }
        let last = match self.last_success_at {
            Some(at) => format!("last success {}", at.format("%Y-%m-%d %H:%M:%SZ")),
            None => "no success on record".to_owned(),
        };
        Some(Condition {
            kind: AlertKind::MissedDeadline,
            subject: job_subject(self.job_id),
            job_id: Some(self.job_id),
            job_name: Some(self.name.clone()),
            run_id: None,
            labels: self.labels.clone(),
            message: format!(
                "job {} has not succeeded within {} ({last})",
                self.name,
                format_duration(self.window)
            ),
        })
    }
}

/// A run in progress, for the stall check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningRun {
    pub run_id: i64,
    pub job_id: i64,
    pub job_name: String,
    pub labels: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    pub expected_duration: Option<Duration>,
}

impl RunningRun {
    /// The condition, if the run is past its job's expected duration, or has given no
    /// output and no progress since `last_activity` (its start if none) for `silent_after`.
    pub fn condition(
        &self,
        last_activity: Option<DateTime<Utc>>,
        silent_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Option<Condition> {
        let running_for = now - self.started_at;
        let over =
            |limit: Duration| running_for > TimeDelta::from_std(limit).unwrap_or(TimeDelta::MAX);
        let message = if let Some(expected) = self.expected_duration.filter(|d| over(*d)) {
            format!(
                "run {} of job {} has been running for {}, longer than its expected {}",
                self.run_id,
                self.job_name,
                format_delta(running_for),
                format_duration(expected)
            )
        } else {
            let silent_after = silent_after?;
            let quiet_since = last_activity
                .unwrap_or(self.started_at)
                .max(self.started_at);
            let quiet = now - quiet_since;
            if quiet <= TimeDelta::from_std(silent_after).unwrap_or(TimeDelta::MAX) {
                return None;
            }
            format!(
                "run {} of job {} has given no output or progress for {}",
                self.run_id,
                self.job_name,
                format_delta(quiet)
            )
        };
        Some(Condition {
            kind: AlertKind::Stalled,
            subject: format!("run:{}", self.run_id),
            job_id: Some(self.job_id),
            job_name: Some(self.job_name.clone()),
            run_id: Some(self.run_id),
            labels: self.labels.clone(),
            message,
        })
    }
}

/// Runs waiting for a handler with labels, since their oldest was due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnservedRuns {
    pub handler: String,
    pub labels: BTreeMap<String, String>,
    pub runs: u64,
    pub oldest_due_at: DateTime<Utc>,
}

impl UnservedRuns {
    /// The condition, when no live worker offers the handler with the labels
    /// (`offered`) and the oldest run has waited longer than `after`.
    pub fn condition(
        &self,
        offered: bool,
        after: Duration,
        now: DateTime<Utc>,
    ) -> Option<Condition> {
        let waited = now - self.oldest_due_at;
        if offered || waited <= TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX) {
            return None;
        }
        let mut subject = format!("handler:{}", self.handler);
        let mut needs = format!("handler {:?}", self.handler);
        if !self.labels.is_empty() {
            let labels = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            subject.push_str(&format!(" labels:{labels}"));
            needs.push_str(&format!(" with labels {labels}"));
        }
        Some(Condition {
            kind: AlertKind::NoWorker,
            subject,
            job_id: None,
            job_name: None,
            run_id: None,
            labels: self.labels.clone(),
            message: format!(
                "no live worker offers {needs}: {} waiting, the oldest for {}",
                if self.runs == 1 {
                    "1 run is".to_owned()
                } else {
                    format!("{} runs are", self.runs)
                },
                format_delta(waited)
            ),
        })
    }
}

/// The condition of a worker that went away without saying it stops, `lost_at`.
pub fn worker_lost(worker: &str, lost_at: DateTime<Utc>, runs: usize) -> Condition {
    Condition {
        kind: AlertKind::WorkerLost,
        subject: worker_subject(worker),
        job_id: None,
        job_name: None,
        run_id: None,
        labels: BTreeMap::new(),
        message: format!(
            "worker {worker} went away at {} without saying it stops ({runs} runs in flight) and has not come back",
            lost_at.format("%Y-%m-%d %H:%M:%SZ")
        ),
    }
}

pub fn worker_subject(worker: &str) -> String {
    format!("worker:{worker}")
}

fn format_delta(delta: TimeDelta) -> String {
    format_duration(Duration::from_secs(
        u64::try_from(delta.num_seconds()).unwrap_or(0),
    ))
}

/// The first line of `text`, at most `limit` characters.
fn first_line(text: &str, limit: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > limit {
        let cut: String = line.chars().take(limit).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn condition(kind: AlertKind, subject: &str) -> Condition {
        Condition {
            kind,
            subject: subject.to_owned(),
            job_id: None,
            job_name: None,
            run_id: None,
            labels: BTreeMap::new(),
            message: String::new(),
        }
    }

    fn firing(id: i64, kind: AlertKind, subject: &str) -> FiringAlert {
        FiringAlert {
            id,
            kind,
            subject: subject.to_owned(),
        }
    }

    #[test]
    fn a_new_condition_raises_one_alert_and_a_firing_one_is_not_raised_again() {
        let observation = Observation {
            holding: vec![
                condition(AlertKind::Failed, "job:1"),
                condition(AlertKind::Failed, "job:1"),
                condition(AlertKind::Failed, "job:2"),
            ],
            complete: [AlertKind::Failed].into(),
            ..Observation::default()
        };
        let plan = plan_alerts(&observation, &[firing(10, AlertKind::Failed, "job:2")]);
        assert_eq!(plan.raise, vec![condition(AlertKind::Failed, "job:1")]);
        assert!(plan.resolve.is_empty());
    }

    #[test]
    fn an_alert_resolves_when_its_kind_was_read_whole_and_its_condition_is_gone() {
        let firing_now = [
            firing(1, AlertKind::Failed, "job:1"),
            firing(2, AlertKind::Stalled, "run:9"),
            firing(3, AlertKind::WorkerLost, "worker:a"),
            firing(4, AlertKind::WorkerLost, "worker:b"),
        ];
        let observation = Observation {
            holding: vec![],
            // The stalled read was capped: its alerts stay.
            complete: [AlertKind::Failed].into(),
            over: [(AlertKind::WorkerLost, "worker:b".to_owned())].into(),
            ..Observation::default()
        };
        let plan = plan_alerts(&observation, &firing_now);
        assert_eq!(plan.resolve, vec![1, 4]);
        assert!(plan.raise.is_empty());
    }

    #[test]
    fn an_undecided_subject_is_neither_raised_nor_resolved() {
        // Job 1 fires and its next slot's retry is pending; job 2 failed with a retry to
        // come and fires not yet.
        let undecided: HashSet<(AlertKind, String)> = [
            (AlertKind::Failed, "job:1".to_owned()),
            (AlertKind::Failed, "job:2".to_owned()),
        ]
        .into();
        let observation = Observation {
            holding: vec![],
            complete: [AlertKind::Failed].into(),
            undecided,
            ..Observation::default()
        };
        let plan = plan_alerts(&observation, &[firing(1, AlertKind::Failed, "job:1")]);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_dead_mans_switch_counts_from_the_last_success_or_the_definition() {
        let job = DeadlineJob {
            job_id: 3,
            name: "nightly".to_owned(),
            labels: BTreeMap::new(),
            window: Duration::from_secs(26 * 3600),
            last_success_at: None,
            defined_at: at(0),
        };
        assert_eq!(job.condition(at(26 * 3600)), None);
        let fired = job.condition(at(26 * 3600 + 1)).unwrap();
        assert_eq!(fired.subject, "job:3");
        assert_eq!(
            fired.message,
            "job nightly has not succeeded within 1d2h (no success on record)"
        );
        let succeeded = DeadlineJob {
            last_success_at: Some(at(20 * 3600)),
            ..job
        };
        assert_eq!(succeeded.condition(at(46 * 3600)), None);
        assert!(succeeded.condition(at(46 * 3600 + 1)).is_some());
    }

    #[test]
    fn a_run_stalls_past_its_expected_duration_or_when_silent() {
        let run = RunningRun {
            run_id: 42,
            job_id: 7,
            job_name: "sync".to_owned(),
            labels: BTreeMap::new(),
            started_at: at(0),
            expected_duration: Some(Duration::from_secs(600)),
        };
        assert_eq!(run.condition(None, None, at(600)), None);
        let late = run.condition(Some(at(590)), None, at(601)).unwrap();
        assert_eq!(
            late.message,
            "run 42 of job sync has been running for 10m1s, longer than its expected 10m"
        );
        let unbounded = RunningRun {
            expected_duration: None,
            ..run
        };
        assert_eq!(unbounded.condition(None, None, at(100_000)), None);
        let silent = Some(Duration::from_secs(60));
        assert_eq!(unbounded.condition(Some(at(50)), silent, at(110)), None);
        let quiet = unbounded.condition(Some(at(50)), silent, at(111)).unwrap();
        assert_eq!(
            quiet.message,
            "run 42 of job sync has given no output or progress for 1m1s"
        );
        assert_eq!(quiet.subject, "run:42");
    }

    #[test]
    fn unserved_runs_alert_only_past_the_threshold_and_when_nobody_offers_them() {
        let waiting = UnservedRuns {
            handler: "report".to_owned(),
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            runs: 3,
            oldest_due_at: at(0),
        };
        let after = Duration::from_secs(60);
        assert_eq!(waiting.condition(false, after, at(60)), None);
        assert_eq!(waiting.condition(true, after, at(600)), None);
        let fired = waiting.condition(false, after, at(61)).unwrap();
        assert_eq!(fired.subject, "handler:report labels:region=eu");
        assert_eq!(
            fired.message,
            "no live worker offers handler \"report\" with labels region=eu: 3 runs are waiting, the oldest for 1m1s"
        );
    }

    #[test]
    fn a_failed_job_says_its_streak_and_its_last_error() {
        let job = FailingJob {
            job_id: 5,
            name: "invoices".to_owned(),
            labels: BTreeMap::new(),
            failures: 3,
            first_failure_at: Some(at(0)),
            last_run_id: Some(77),
            last_state: Some("failed".to_owned()),
            last_error: Some("exit status 2\nmore".to_owned()),
            retry_in_flight: false,
        };
        assert_eq!(
            job.condition().message,
            "run 77 of job invoices ended failed (3 failures in a row since 2027-01-15 08:00:00Z): exit status 2"
        );
    }

    #[test]
    fn kinds_and_states_parse_back_and_say_what_is_valid() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        assert_eq!(
            "broken".parse::<AlertKind>().unwrap_err().to_string(),
            "unknown alert kind \"broken\"; valid values are failed, auto_paused, missed_deadline, stalled, no_worker, worker_lost"
        );
        assert_eq!("resolved".parse(), Ok(AlertState::Resolved));
        assert!("open".parse::<AlertState>().is_err());
    }
}
