//! [`JobStore`], what the admin API (gRPC and REST, on every replica) needs of the store:
//! jobs, their runs as history, manual runs and cancels, and the epoch for status.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::apply::{ApplyRequest, JobChange};
use cronfleet_core::job::{Job, JobSpec};
use cronfleet_core::run::{Run, RunState, Trigger};

use crate::{JobPage, JobQuery, StoreError};

/// The admin API's store. Every method is one transaction.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// The fencing epoch in force.
    async fn epoch(&self) -> Result<i64, StoreError>;

    /// Creates a job. Its first slot is its first one at or after `now`.
    async fn create_job(&self, spec: &JobSpec, now: DateTime<Utc>) -> Result<Job, StoreError>;

    async fn get_job(&self, name: &str) -> Result<Job, StoreError>;

    /// All jobs, by name.
    async fn list_jobs(&self) -> Result<Vec<Job>, StoreError>;

    /// One page of the jobs `query` selects, each with its latest run, and how many it
    /// selects in all — searched, filtered, sorted and paged by the database.
    async fn list_jobs_page(&self, query: &JobQuery) -> Result<JobPage, StoreError>;

    /// How many jobs `query` selects (its sort and page aside).
    async fn count_jobs(&self, query: &JobQuery) -> Result<u64, StoreError>;

    /// What the console's attention banner counts, without reading a run: active runs
    /// past their deadline at `now`, pending runs due before `waiting_since` and still
    /// waiting, and the runs due now per handler.
    async fn run_backlog(
        &self,
        now: DateTime<Utc>,
        waiting_since: DateTime<Utc>,
    ) -> Result<RunBacklog, StoreError>;

    /// The dispatched and running runs (at most `limit`, oldest first): which worker holds
    /// which run, without their logs.
    async fn in_flight_runs(&self, limit: u32) -> Result<Vec<InFlightRun>, StoreError>;

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

    /// Adds a manual run of job `name` for `at` (not dispatched before then), leaving the
    /// schedule as it is. On a busy job the run waits for the current one (`queued`); a
    /// job that already has a waiting run refuses another.
    async fn create_manual_run(
        &self,
        name: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ManualRun, StoreError>;

    async fn get_run(&self, id: i64) -> Result<Run, StoreError>;

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;

    /// An operator's cancel: a pending run is cancelled at once; an active one is marked
    /// `cancel_requested_at` for the leader to stop on its worker. A finished run cannot be
    /// cancelled.
    async fn request_cancel(
        &self,
        id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError>;
}

/// What [`JobStore::run_backlog`] counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunBacklog {
    /// Dispatched or running past their deadline.
    pub overdue: u64,
    /// Pending, due (created, and not held back) before the `waiting_since` asked about.
    pub waiting_long: u64,
    /// Pending and due now, per handler of their job, by handler.
    pub due_by_handler: Vec<(String, u64)>,
}

/// A run a worker holds, from [`JobStore::in_flight_runs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlightRun {
    pub id: i64,
    pub job: String,
    pub worker: String,
}

/// The outcome of [`JobStore::create_manual_run`].
#[derive(Clone, Debug, PartialEq)]
pub struct ManualRun {
    pub run: Run,
    /// The job was busy: the run starts when the current one ends.
    pub queued: bool,
}

/// Which runs to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    pub job: Option<String>,
    pub state: Option<RunState>,
    pub trigger: Option<Trigger>,
    /// Only runs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only runs created before this time.
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    pub order: RunOrder,
}

impl Default for RunFilter {
    fn default() -> Self {
        RunFilter {
            job: None,
            state: None,
            trigger: None,
            since: None,
            until: None,
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

/// A [`RunBacklog`] from the counts both back-ends select.
pub(crate) fn backlog(overdue: i64, waiting_long: i64, due: Vec<(String, i64)>) -> RunBacklog {
    let count = |n: i64| u64::try_from(n).unwrap_or_default();
    RunBacklog {
        overdue: count(overdue),
        waiting_long: count(waiting_long),
        due_by_handler: due
            .into_iter()
            .map(|(handler, n)| (handler, count(n)))
            .collect(),
    }
}

/// [`InFlightRun`]s from `(id, job, worker)` rows.
pub(crate) fn in_flight(rows: Vec<(i64, String, Option<String>)>) -> Vec<InFlightRun> {
    rows.into_iter()
        .map(|(id, job, worker)| InFlightRun {
            id,
            job,
            worker: worker.unwrap_or_default(),
        })
        .collect()
}
