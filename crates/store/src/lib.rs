//! Persistent state of cronfleet: jobs, their runs and the fencing epoch, behind one
//! [`Store`] trait with two implementations — [`PostgresStore`] for clusters and
//! [`SqliteStore`] for the embedded single-node mode. Migrations are embedded and run when
//! a store is opened.
//!
//! Architecture invariant: the decisions (which slots run, which are missed, which state
//! moves are legal) are made by `cronfleet-core`; this crate only reads and writes them,
//! atomically. Both back-ends pass the same behaviour tests (`tests/behaviour.rs`).

#[macro_use]
mod rows;
mod error;
mod lease_writes;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::apply::{ApplyRequest, JobChange};
use cronfleet_core::job::{Job, JobSpec};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::run::{Progress, Run, RunState};

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store a URL names: `postgres://…` (or `postgresql://…`) for PostgreSQL,
/// `sqlite:PATH` (or `sqlite://PATH`) for a SQLite file, created if missing.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else {
        Err(StoreError::InvalidUrl(url.to_owned()))
    }
}

/// The storage contract of the scheduler. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Raises the fencing epoch to `epoch` unless it is already at least that high;
    /// returns the epoch in force afterwards. A leader that gets back a higher epoch than
    /// its own has been deposed.
    async fn raise_epoch(&self, epoch: i64) -> Result<i64, StoreError>;

    /// The fencing epoch in force.
    async fn epoch(&self) -> Result<i64, StoreError>;

    /// Creates a job. Its first slot is its first one at or after `now`.
    async fn create_job(&self, spec: &JobSpec, now: DateTime<Utc>) -> Result<Job, StoreError>;

    async fn get_job(&self, name: &str) -> Result<Job, StoreError>;

    /// All jobs, by name.
    async fn list_jobs(&self) -> Result<Vec<Job>, StoreError>;

    /// Replaces a job's spec if its version is still `expected_version`. A changed schedule
    /// restarts from its first slot at or after `now`; a changed max runs resets the count.
    /// The job keeps its owner (`managed_by`).
    async fn update_job(
        &self,
        name: &str,
        expected_version: i64,
        spec: &JobSpec,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError>;

    /// Makes the jobs of `request.manager` match `request.jobs` in one transaction, as
    /// `cronfleet_core::apply::plan_apply` plans it against the stored jobs: creates, updates
    /// and (when pruning) deletes, making the manager the owner of what it creates or
    /// updates. Returns what it did to each job; on any error it writes nothing, and with
    /// `dry_run` it never writes, returning what it would do.
    async fn apply_jobs(
        &self,
        request: &ApplyRequest,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobChange>, StoreError>;

    /// Pauses a job with an optional operator note. Its slots are not leased while paused;
    /// on resume the catch-up policy decides what happens to the ones it missed.
    async fn pause_job(
        &self,
        name: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError>;

    async fn resume_job(&self, name: &str, now: DateTime<Utc>) -> Result<Job, StoreError>;

    /// Deletes a job and its run history — refused with [`StoreError::JobActive`] while a
    /// run of it is dispatched or running: that run would go on unseen, and a job created
    /// again under the name could run beside it. Waiting runs go with the job.
    async fn delete_job(&self, name: &str) -> Result<(), StoreError>;

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

    async fn get_run(&self, id: i64) -> Result<Run, StoreError>;

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;

    /// Moves a run to another state if the state machine allows it, recording the times,
    /// worker, error and output that go with the move; a finished run updates its job's
    /// failure streak. When the transition is fenced, it happens only under that epoch.
    async fn transition_run(
        &self,
        id: i64,
        transition: &RunTransition,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

    /// [`Store::transition_run`] for many runs in one transaction, for the leader's hot
    /// path (dispatching a batch, recording a batch of starts). Each run gets its own answer
    /// in `batch` order: a run that is gone, or whose move is illegal or busy, is reported
    /// and the others go on. A fenced batch (any transition's epoch no longer in force)
    /// changes nothing and is an error as a whole. The default calls `transition_run` for
    /// each run.
    async fn transition_runs(
        &self,
        batch: &[(i64, RunTransition)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
        transition_each(self, batch, now).await
    }

    /// [`Store::finish_run`] for many runs in one transaction, each with its own answer in
    /// `batch` order (see [`Store::transition_runs`]). The default calls `finish_run` for
    /// each run.
    async fn finish_runs(
        &self,
        batch: &[FinishOrder],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
        finish_each(self, batch, now).await
    }

    /// Adds a manual run of job `name` for `at` (not dispatched before then), leaving the
    /// schedule as it is. On a busy job the run waits for the current one (`queued`); a
    /// job that already has a waiting run refuses another.
    async fn create_manual_run(
        &self,
        name: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ManualRun, StoreError>;

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

    /// How many pending runs are due at `now` (past their `not_before`) and wait for
    /// dispatch: the backlog.
    async fn count_backlog(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The earliest time after `now` at which a pending run becomes dispatchable.
    async fn earliest_not_before(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Dispatched and running runs: what the leader watches for deadlines and lost workers.
    async fn active_runs(&self) -> Result<Vec<Run>, StoreError>;

    /// Declares an active run `lost` under `epoch` and, unless its slot has now been lost
    /// more than `max_losses` times, creates the next attempt at the same slot as a pending
    /// run, which it returns.
    async fn mark_lost(
        &self,
        id: i64,
        epoch: i64,
        reason: &str,
        max_losses: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Run>, StoreError>;

    /// Records a run's latest progress report.
    async fn record_progress(&self, id: i64, progress: Progress) -> Result<(), StoreError>;

    /// Records the log of a run while it is active (its last `MAX_OUTPUT_BYTES`), so that
    /// any replica can show it; an ended run keeps the output its end recorded.
    async fn record_output(&self, id: i64, output: &str) -> Result<(), StoreError>;

    /// Ends a run (a final `transition`) and, in the same transaction, applies what its
    /// end calls for under the job's policies: a retry of a failed or timed-out run
    /// (same slot, next attempt, after a backoff), a continuation of a success with work
    /// left, or an automatic pause of a job that keeps failing.
    async fn finish_run(
        &self,
        id: i64,
        transition: &RunTransition,
        rules: &FinishRules,
        now: DateTime<Utc>,
    ) -> Result<Finished, StoreError>;

    /// An operator's cancel: a pending run is cancelled at once; an active one is marked
    /// `cancel_requested_at` for the leader to stop on its worker. A finished run cannot be
    /// cancelled.
    async fn request_cancel(
        &self,
        id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;

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

    /// Tells every process on this store that jobs or runs changed outside the leader's
    /// own loops (an admin call on any coordinator), so that the leader looks again now
    /// rather than at its next deadline. Nothing to do where one process owns the store.
    async fn announce_change(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The announcements of [`Store::announce_change`] made by any process, this one
    /// included; `None` where one process owns the store and there is nobody to hear.
    async fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(None)
    }

    /// The right to lead without an election service (a coordinator without `--etcd`,
    /// `cronfleet dev`), held by one process per database at a time, so two such
    /// coordinators never take turns fencing each other and re-running each other's runs.
    /// `None`: another process holds it.
    async fn claim_sole_leadership(&self) -> Result<Option<Box<dyn SoleLeadership>>, StoreError>;
}

/// A claim of [`Store::claim_sole_leadership`]; dropping it gives the claim up.
#[async_trait]
pub trait SoleLeadership: Send + Sync + std::fmt::Debug {
    /// Resolves when the claim is lost (the connection that holds it broke): the holder
    /// must stop leading at once.
    async fn lost(&mut self);
}

/// [`Store::transition_runs`] one run (and one transaction) at a time.
pub(crate) async fn transition_each<S: Store + ?Sized>(
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

/// [`Store::finish_runs`] one run (and one transaction) at a time.
pub(crate) async fn finish_each<S: Store + ?Sized>(
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

/// A subscription to [`Store::announce_change`].
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits until something may have changed: an announcement, or a lost and re-made
    /// connection (announcements made meanwhile are gone, so look again either way). An
    /// error means the feed is broken: open a new one.
    async fn changed(&mut self) -> Result<(), StoreError>;
}

/// The coordinator's settings that decide what follows a run's end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinishRules {
    /// Retry backoff: the delay before the first retry, doubling, capped.
    pub retry_base_delay: std::time::Duration,
    pub retry_max_delay: std::time::Duration,
    /// In [0, 1): spreads the retries of jobs that failed together.
    pub jitter: f64,
    pub auto_pause: cronfleet_core::policy::AutoPausePolicy,
    /// Work the handler reported as left; a success with work left continues at once.
    pub remaining: u64,
}

/// One run's end for [`Store::finish_runs`].
#[derive(Clone, Debug, PartialEq)]
pub struct FinishOrder {
    pub id: i64,
    pub transition: RunTransition,
    pub rules: FinishRules,
}

/// What [`Store::finish_run`] did.
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

/// The outcome of [`Store::create_manual_run`].
#[derive(Clone, Debug, PartialEq)]
pub struct ManualRun {
    pub run: Run,
    /// The job was busy: the run starts when the current one ends.
    pub queued: bool,
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

/// Where a page of [`Store::dispatchable_runs`] ended: the dispatch order's key of its
/// last run.
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

/// What one [`Store::lease_due`] call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lease {
    /// The pending runs it created, oldest slot first per job.
    pub runs: Vec<Run>,
    /// Active runs asked to stop (overlap `replace`): the dispatcher sends their cancels.
    pub cancel_requested: Vec<i64>,
    /// How many jobs it took; fewer than the limit means nothing else is due.
    pub jobs_leased: usize,
    /// Due jobs whose stored row cannot be read (a time zone this build does not know, a
    /// value edited by hand): paused with the reason as their note, so the others keep
    /// their schedule (DESIGN §2, invariant 5). Counted in `jobs_leased`.
    pub unreadable: Vec<UnreadableJob>,
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

/// Which runs to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<RunState>,
    /// Only runs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
    pub order: RunOrder,
}

impl Default for RunFilter {
    fn default() -> Self {
        RunFilter {
            job: None,
            state: None,
            since: None,
            limit: 100,
            order: RunOrder::NewestFirst,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunOrder {
    /// History views.
    #[default]
    NewestFirst,
    /// Work queues (the dispatcher takes pending runs in creation order).
    OldestFirst,
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
