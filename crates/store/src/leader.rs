//! [`LeaderStore`], what the leader's loops (scheduler, dispatcher, monitor, pruner) and
//! the worker gateway need of the store: leasing, dispatching, run transitions and ends,
//! and the leadership itself (the fencing epoch, the sole-leadership claim).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::finish::FinishRules;
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::run::{Progress, Run, RunState, Trigger};

use crate::StoreError;

/// The leader's store. Every method is one transaction.
#[async_trait]
pub trait LeaderStore: Send + Sync + std::fmt::Debug {
    /// Raises the fencing epoch to `epoch` unless it is already at least that high;
    /// returns the epoch in force afterwards. A leader that gets back a higher epoch than
    /// its own has been deposed.
    async fn raise_epoch(&self, epoch: i64) -> Result<i64, StoreError>;

    /// The right to lead without an election service (a coordinator without `--etcd`,
    /// `cronfleet dev`), held by one process per database at a time, so two such
    /// coordinators never take turns fencing each other and re-running each other's runs.
    /// `None`: another process holds it.
    async fn claim_sole_leadership(&self) -> Result<Option<Box<dyn SoleLeadership>>, StoreError>;

    /// When the scheduler must next wake up: the earliest `next_run_at` of an active,
    /// unpaused job.
    async fn earliest_next_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// In one transaction fenced by `epoch`: takes up to `limit` due jobs (by priority,
    /// then `next_run_at`; jobs another leaser holds are skipped), plans each with
    /// `cronfleet_core::lease::plan_lease`, creates their runs and skipped / missed
    /// records, advances their schedules, and returns what was created.
    async fn lease_due(
        &self,
        now: DateTime<Utc>,
        epoch: i64,
        limit: u32,
        settings: &LeaseSettings,
    ) -> Result<Lease, StoreError>;

    /// Pending runs that may be dispatched at `now`: past their `not_before`, and only the
    /// earliest waiting run of each job that has no active run; by job priority, then age;
    /// the page that follows `after` (the last run of the previous page), from the first
    /// when `None`.
    async fn dispatchable_runs(
        &self,
        now: DateTime<Utc>,
        after: Option<DispatchCursor>,
        limit: u32,
    ) -> Result<Vec<DispatchableRun>, StoreError>;

    /// Records why pending runs are waiting; `None` clears the reason.
    async fn set_pending_reason(
        &self,
        run_ids: &[i64],
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The earliest time after `now` at which a pending run becomes dispatchable.
    async fn earliest_not_before(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// How many pending runs are due at `now` (past their `not_before`) and wait for
    /// dispatch: the backlog.
    async fn count_backlog(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Dispatched and running runs: what the leader watches for deadlines and lost workers.
    async fn active_runs(&self) -> Result<Vec<Run>, StoreError>;

    /// Moves a run to another state if the state machine allows it, recording the times,
    /// worker, error and output that go with the move; a finished run updates its job's
    /// failure streak. When the transition is fenced, it happens only under that epoch.
    async fn transition_run(
        &self,
        id: i64,
        transition: &RunTransition,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

    /// [`LeaderStore::transition_run`] for many runs in one transaction, for the leader's
    /// hot path (dispatching a batch, recording a batch of starts). Each run gets its own
    /// answer in `batch` order: a run that is gone, or whose move is illegal or busy, is
    /// reported and the others go on. A fenced batch (any transition's epoch no longer in
    /// force) changes nothing and is an error as a whole.
    async fn transition_runs(
        &self,
        batch: &[(i64, RunTransition)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Run, StoreError>>, StoreError>;

    /// Ends a run (a final `transition`) and, in the same transaction, writes what
    /// `cronfleet_core::finish::plan_finish` decides its end calls for under the job's
    /// policies and `rules`: the failure streak, a retry of a failed or timed-out run
    /// (same slot, next attempt, after a backoff), a continuation of a success with work
    /// left, or an automatic pause of a job that keeps failing.
    async fn finish_run(
        &self,
        id: i64,
        transition: &RunTransition,
        rules: &FinishRules,
        now: DateTime<Utc>,
    ) -> Result<Finished, StoreError>;

    /// [`LeaderStore::finish_run`] for many runs in one transaction, each with its own
    /// answer in `batch` order (see [`LeaderStore::transition_runs`]).
    async fn finish_runs(
        &self,
        batch: &[FinishOrder],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Finished, StoreError>>, StoreError>;

    /// Declares an active run `lost` under `epoch` and, unless its slot has now been lost
    /// more than `max_losses` times, creates the next attempt at the same slot as a pending
    /// run. Returns both.
    async fn mark_lost(
        &self,
        id: i64,
        epoch: i64,
        reason: &str,
        max_losses: u32,
        now: DateTime<Utc>,
    ) -> Result<Lost, StoreError>;

    /// Records a run's latest progress report.
    async fn record_progress(&self, id: i64, progress: Progress) -> Result<(), StoreError>;

    /// Records the log of a run while it is active (its last `MAX_OUTPUT_BYTES`), so that
    /// any replica can show it; an ended run keeps the output its end recorded.
    async fn record_output(&self, id: i64, output: &str) -> Result<(), StoreError>;

    /// History retention: deletes at most `limit` ended runs (never a pending or active
    /// one) that were created before `created_before`, or that are not among the newest
    /// `keep_per_job` runs of their job. Returns how many went; call again until fewer
    /// than `limit` do.
    async fn prune_runs(
        &self,
        created_before: DateTime<Utc>,
        keep_per_job: u32,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// Implements [`LeaderStore`] for a back-end as a table of contents: each method is the
/// function of the same name in one of the back-end's concern modules — `leadership`,
/// `lease`, `dispatch`, `transitions`, `prune` — called with the store first. Both
/// back-ends have the same modules, so this is the one place that says which concern
/// serves which method.
macro_rules! leader_store_by_concern {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::LeaderStore for $store {
            async fn raise_epoch(&self, epoch: i64) -> Result<i64, $crate::StoreError> {
                leadership::raise_epoch(self, epoch).await
            }

            async fn claim_sole_leadership(
                &self,
            ) -> Result<Option<Box<dyn $crate::SoleLeadership>>, $crate::StoreError> {
                leadership::claim_sole_leadership(self).await
            }

            async fn earliest_next_run_at(
                &self,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, $crate::StoreError> {
                lease::earliest_next_run_at(self).await
            }

            async fn lease_due(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                epoch: i64,
                limit: u32,
                settings: &cronfleet_core::lease::LeaseSettings,
            ) -> Result<$crate::Lease, $crate::StoreError> {
                lease::lease_due(self, now, epoch, limit, settings).await
            }

            async fn dispatchable_runs(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                after: Option<$crate::DispatchCursor>,
                limit: u32,
            ) -> Result<Vec<$crate::DispatchableRun>, $crate::StoreError> {
                dispatch::dispatchable_runs(self, now, after, limit).await
            }

            async fn set_pending_reason(
                &self,
                run_ids: &[i64],
                reason: Option<&str>,
            ) -> Result<(), $crate::StoreError> {
                dispatch::set_pending_reason(self, run_ids, reason).await
            }

            async fn earliest_not_before(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<chrono::DateTime<chrono::Utc>>, $crate::StoreError> {
                dispatch::earliest_not_before(self, now).await
            }

            async fn count_backlog(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                dispatch::count_backlog(self, now).await
            }

            async fn active_runs(
                &self,
            ) -> Result<Vec<cronfleet_core::run::Run>, $crate::StoreError> {
                dispatch::active_runs(self).await
            }

            async fn transition_run(
                &self,
                id: i64,
                transition: &$crate::RunTransition,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<cronfleet_core::run::Run, $crate::StoreError> {
                transitions::transition_run(self, id, transition, now).await
            }

            async fn transition_runs(
                &self,
                batch: &[(i64, $crate::RunTransition)],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<
                Vec<Result<cronfleet_core::run::Run, $crate::StoreError>>,
                $crate::StoreError,
            > {
                transitions::transition_runs(self, batch, now).await
            }

            async fn finish_run(
                &self,
                id: i64,
                transition: &$crate::RunTransition,
                rules: &$crate::FinishRules,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::Finished, $crate::StoreError> {
                transitions::finish_run(self, id, transition, rules, now).await
            }

            async fn finish_runs(
                &self,
                batch: &[$crate::FinishOrder],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<Result<$crate::Finished, $crate::StoreError>>, $crate::StoreError>
            {
                transitions::finish_runs(self, batch, now).await
            }

            async fn mark_lost(
                &self,
                id: i64,
                epoch: i64,
                reason: &str,
                max_losses: u32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::Lost, $crate::StoreError> {
                transitions::mark_lost(self, id, epoch, reason, max_losses, now).await
            }

            async fn record_progress(
                &self,
                id: i64,
                progress: cronfleet_core::run::Progress,
            ) -> Result<(), $crate::StoreError> {
                transitions::record_progress(self, id, progress).await
            }

            async fn record_output(&self, id: i64, output: &str) -> Result<(), $crate::StoreError> {
                transitions::record_output(self, id, output).await
            }

            async fn prune_runs(
                &self,
                created_before: chrono::DateTime<chrono::Utc>,
                keep_per_job: u32,
                limit: u32,
            ) -> Result<u64, $crate::StoreError> {
                prune::prune_runs(self, created_before, keep_per_job, limit).await
            }
        }
    };
}
pub(crate) use leader_store_by_concern;

/// A claim of [`LeaderStore::claim_sole_leadership`]; dropping it gives the claim up.
#[async_trait]
pub trait SoleLeadership: Send + Sync + std::fmt::Debug {
    /// Resolves when the claim is lost (the connection that holds it broke): the holder
    /// must stop leading at once.
    async fn lost(&mut self);
}

/// [`LeaderStore::transition_runs`] one run (and one transaction) at a time.
pub(crate) async fn transition_each<S: LeaderStore + ?Sized>(
    store: &S,
    batch: &[(i64, RunTransition)],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    for (id, transition) in batch {
        match store.transition_run(*id, transition, now).await {
            Err(error @ StoreError::Fenced { .. }) => return Err(error),
            result => results.push(result),
        }
    }
    Ok(results)
}

/// [`LeaderStore::finish_runs`] one run (and one transaction) at a time.
pub(crate) async fn finish_each<S: LeaderStore + ?Sized>(
    store: &S,
    batch: &[FinishOrder],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(batch.len());
    for order in batch {
        match store
            .finish_run(order.id, &order.transition, &order.rules, now)
            .await
        {
            Err(error @ StoreError::Fenced { .. }) => return Err(error),
            result => results.push(result),
        }
    }
    Ok(results)
}

/// One run's end for [`LeaderStore::finish_runs`].
#[derive(Clone, Debug, PartialEq)]
pub struct FinishOrder {
    pub id: i64,
    pub transition: RunTransition,
    pub rules: FinishRules,
}

/// What [`LeaderStore::finish_run`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub run: Run,
    /// The next attempt at the slot, when the run failed and the job has retries left.
    pub retry: Option<Run>,
    /// The next run of a batch, when the run succeeded with work left.
    pub continuation: Option<Run>,
    /// Why the job was paused, when this failure paused it.
    pub paused: Option<String>,
}

impl Finished {
    /// The ended `run` with the run that follows it, if any (a retry or a continuation),
    /// and the reason its job was paused.
    pub(crate) fn new(run: Run, follow_up: Option<Run>, paused: Option<String>) -> Finished {
        let (retry, continuation) = match follow_up {
            Some(next) if next.trigger == Trigger::Continuation => (None, Some(next)),
            other => (other, None),
        };
        Finished {
            run,
            retry,
            continuation,
            paused,
        }
    }
}

/// What [`LeaderStore::mark_lost`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Lost {
    /// The run, now `lost`.
    pub run: Run,
    /// Its next attempt at the same slot, pending; `None` when the slot has been lost too
    /// often or the run was asked to stop.
    pub rerun: Option<Run>,
}

/// A pending run with what dispatching it needs to know of its job.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchableRun {
    pub run: Run,
    pub handler: String,
    pub args: serde_json::Value,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `None`: the coordinator's default.
    pub timeout: Option<std::time::Duration>,
    pub priority: i32,
}

/// Where a page of [`LeaderStore::dispatchable_runs`] ended: the dispatch order's key of
/// its last run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchCursor {
    pub priority: i32,
    pub run_id: i64,
}

impl DispatchableRun {
    /// This run's place in the dispatch order, to read on after it.
    pub fn cursor(&self) -> DispatchCursor {
        DispatchCursor {
            priority: self.priority,
            run_id: self.run.id,
        }
    }
}

/// What one [`LeaderStore::lease_due`] call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lease {
    /// The pending runs it created, oldest slot first per job.
    pub runs: Vec<Run>,
    /// Active runs asked to stop (overlap `replace`): the scheduler sends their cancels.
    pub cancel_requested: Vec<RequestedCancel>,
    /// How many jobs it took; fewer than the limit means nothing else is due.
    pub jobs_leased: usize,
    /// Due jobs whose stored row cannot be read (a time zone this build does not know, a
    /// value edited by hand): paused with the reason as their note, so the others keep
    /// their schedule (DESIGN §2, invariant 5). Counted in `jobs_leased`.
    pub unreadable: Vec<UnreadableJob>,
}

/// An active run a lease asked to stop, and the worker to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedCancel {
    pub run_id: i64,
    pub worker: Option<String>,
}

/// A job whose row cannot be read back, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableJob {
    pub id: i64,
    pub name: String,
    pub error: String,
}

impl UnreadableJob {
    /// The pause note it gets.
    pub fn pause_note(&self) -> String {
        format!(
            "paused by the scheduler: its stored definition cannot be read ({})",
            self.error
        )
    }
}

/// A state change of a run and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTransition {
    pub to: RunState,
    /// Fencing: when set, the change is made only while this epoch is in force (and the
    /// run records it).
    pub epoch: Option<i64>,
    pub worker: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Captured output; only its last `MAX_OUTPUT_BYTES` are kept.
    pub output: Option<String>,
    /// The id of the run's trace (32 hex digits), recorded when it is dispatched traced.
    pub trace_id: Option<String>,
}

impl RunTransition {
    pub fn to(state: RunState) -> RunTransition {
        RunTransition {
            to: state,
            epoch: None,
            worker: None,
            deadline: None,
            error: None,
            output: None,
            trace_id: None,
        }
    }

    /// Dispatching to `worker` under `epoch`, due to finish by `deadline`.
    pub fn dispatch(worker: &str, epoch: i64, deadline: DateTime<Utc>) -> RunTransition {
        RunTransition {
            epoch: Some(epoch),
            worker: Some(worker.to_owned()),
            deadline: Some(deadline),
            ..RunTransition::to(RunState::Dispatched)
        }
    }

    /// Made only while `epoch` is in force: a leader's own decision (a timeout), which a
    /// deposed leader must not make.
    pub fn fenced(mut self, epoch: i64) -> RunTransition {
        self.epoch = Some(epoch);
        self
    }

    pub fn with_error(mut self, error: impl Into<String>) -> RunTransition {
        self.error = Some(error.into());
        self
    }

    pub fn with_output(mut self, output: impl Into<String>) -> RunTransition {
        self.output = Some(output.into());
        self
    }

    /// Records the run's trace id (nothing when `None`: the run is not traced).
    pub fn with_trace_id(mut self, trace_id: Option<String>) -> RunTransition {
        self.trace_id = trace_id;
        self
    }
}
