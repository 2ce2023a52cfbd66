//! The writes that leasing, run transitions and run ends make, computed once from core's
//! decisions and executed by each back-end in its own SQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cronfleet_core::finish::{
    FinishPlan, FinishRules, FollowUp, JobStanding, RunEnd, StreakChange,
};
use cronfleet_core::job::Job;
use cronfleet_core::lease::{DueJob, LeaseSettings, SlotRange, plan_lease};
use cronfleet_core::policy::OpenRuns;
use cronfleet_core::run::{Run, RunState, Trigger, bounded_output};

use crate::{RunTransition, StoreError};

/// A row to insert into `runs`.
#[derive(Debug)]
pub(crate) struct NewRun {
    pub job_id: i64,
    pub slot: DateTime<Utc>,
    pub trigger: &'static str,
    pub state: &'static str,
    pub slot_count: i64,
    pub last_slot: Option<DateTime<Utc>>,
}

/// How one leased job's row changes.
#[derive(Debug)]
pub(crate) struct JobAdvance {
    pub job_id: i64,
    pub next_run_at: Option<DateTime<Utc>>,
    pub remaining_runs: Option<i32>,
    pub active: bool,
    pub missed: i64,
    pub skipped: i64,
}

/// Everything one lease writes.
#[derive(Debug, Default)]
pub(crate) struct LeaseWrites {
    pub new_runs: Vec<NewRun>,
    pub advances: Vec<JobAdvance>,
    /// Jobs whose waiting runs are cancelled (overlap `replace`).
    pub cancel_pending_of: Vec<i64>,
    /// Jobs whose active run is asked to stop (overlap `replace`).
    pub cancel_active_of: Vec<i64>,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn range_record(job_id: i64, range: SlotRange, state: RunState) -> NewRun {
    NewRun {
        job_id,
        slot: range.first,
        trigger: Trigger::Schedule.as_str(),
        state: state.as_str(),
        slot_count: count(range.count),
        last_slot: Some(range.last),
    }
}

/// Plans the lease of `jobs` (locked, due) whose open runs are `open`.
pub(crate) fn plan_writes(
    jobs: &[Job],
    open: &HashMap<i64, OpenRuns>,
    now: DateTime<Utc>,
    settings: &LeaseSettings,
) -> LeaseWrites {
    let mut writes = LeaseWrites::default();
    for job in jobs {
        let Some(next_run_at) = job.next_run_at else {
            continue;
        };
        let plan = plan_lease(
            &DueJob {
                schedule: &job.spec.schedule,
                next_run_at,
                remaining_runs: job.remaining_runs,
                catch_up: job.spec.catch_up,
                overlap: job.spec.overlap,
                open_runs: open.get(&job.id).copied().unwrap_or_default(),
            },
            now,
            settings,
        );
        // Records first: a missed range precedes the runs, a skipped range too.
        if let Some(missed) = plan.missed {
            writes
                .new_runs
                .push(range_record(job.id, missed, RunState::Missed));
        }
        if let Some(skipped) = plan.skipped {
            writes
                .new_runs
                .push(range_record(job.id, skipped, RunState::Skipped));
        }
        writes.new_runs.extend(plan.runs.iter().map(|run| NewRun {
            job_id: job.id,
            slot: run.slot,
            trigger: run.trigger.as_str(),
            state: RunState::Pending.as_str(),
            slot_count: 1,
            last_slot: None,
        }));
        if plan.cancel_pending {
            writes.cancel_pending_of.push(job.id);
        }
        if plan.cancel_active {
            writes.cancel_active_of.push(job.id);
        }
        writes.advances.push(JobAdvance {
            job_id: job.id,
            next_run_at: plan.next_run_at,
            remaining_runs: plan
                .remaining_runs
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            active: plan.next_run_at.is_some(),
            missed: plan.missed.map_or(0, |range| count(range.count)),
            skipped: plan.skipped.map_or(0, |range| count(range.count)),
        });
    }
    writes
}

/// The new column values of a run after a transition, and its effect on the job.
#[derive(Debug)]
pub(crate) struct RunUpdate {
    pub state: &'static str,
    pub worker: Option<String>,
    pub epoch: i64,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub output: Option<String>,
    pub trace_id: Option<String>,
    /// The job's `last_run_at` becomes this (when the run starts).
    pub job_last_run_at: Option<DateTime<Utc>>,
    pub streak: StreakChange,
}

/// Checks a transition against the state machine and computes what it writes.
pub(crate) fn plan_transition(
    run: &Run,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<RunUpdate, StoreError> {
    let to = run
        .state
        .become_(transition.to)
        .map_err(|source| StoreError::IllegalTransition { id: run.id, source })?;
    let stamp = |current: Option<DateTime<Utc>>, when: bool| if when { Some(now) } else { current };
    Ok(RunUpdate {
        state: to.as_str(),
        worker: transition.worker.clone().or_else(|| run.worker.clone()),
        epoch: transition.epoch.unwrap_or(run.epoch),
        dispatched_at: stamp(run.dispatched_at, to == RunState::Dispatched),
        started_at: stamp(run.started_at, to == RunState::Running),
        finished_at: stamp(run.finished_at, to.is_final()),
        deadline: transition.deadline.or(run.deadline),
        error: transition.error.clone().or_else(|| run.error.clone()),
        output: transition
            .output
            .as_deref()
            .map(|output| bounded_output(output).to_owned())
            .or_else(|| run.output.clone()),
        trace_id: transition.trace_id.clone().or_else(|| run.trace_id.clone()),
        job_last_run_at: (to == RunState::Running).then_some(now),
        streak: StreakChange::of(to),
    })
}

/// What follows `run`'s end in `state`, for its job as it stood before that end: core's
/// [`cronfleet_core::finish::plan_finish`] with what it needs of the rows.
pub(crate) fn plan_finish(
    run: &Run,
    state: RunState,
    job: &Job,
    rules: &FinishRules,
    now: DateTime<Utc>,
) -> FinishPlan {
    cronfleet_core::finish::plan_finish(
        RunEnd {
            slot: run.slot,
            attempt: run.attempt,
            state,
        },
        JobStanding {
            retries: job.spec.retries,
            paused: job.spec.paused,
            failures: job.failures,
        },
        rules,
        now,
    )
}

/// The `attempt` column of a follow-up run.
pub(crate) fn attempt_column(follow_up: &FollowUp) -> i32 {
    i32::try_from(follow_up.attempt).unwrap_or(i32::MAX)
}
