//! The PostgreSQL store, for clusters: row locks with `SKIP LOCKED` let leasers work side
//! by side, the `fencing` row serialises leasing against a leadership change, and batched
//! `UNNEST` writes keep a lease to a handful of statements however many jobs it takes.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::apply::{ApplyRequest, JobChange, JobWrite, plan_apply};
use cronfleet_core::job::{
    Job, JobSpec, check_schedule_has_a_future, first_slot, schedule_after_update,
};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::OpenRuns;
use cronfleet_core::run::{IllegalTransition, Progress, Run, RunState, Trigger, bounded_output};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use crate::error::{duplicate_name, unique_violation};
use crate::lease_writes::{
    FinishPlan, FollowUp, StreakChange, plan_finish, plan_transition, plan_writes,
};
use crate::rows::{
    DispatchRow, JobRow, JobValues, RunRow, dispatchable_from_rows, jobs_from_rows, readable_jobs,
    runs_from_rows,
};
use crate::{
    ChangeFeed, DispatchCursor, DispatchableRun, FinishOrder, FinishRules, Finished, Lease,
    ManualRun, RunFilter, RunOrder, RunTransition, SoleLeadership, Store, StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The `LISTEN`/`NOTIFY` channel of [`Store::announce_change`].
const CHANGES_CHANNEL: &str = "cronfleet_changes";

/// A `LISTEN` on [`CHANGES_CHANNEL`], on a connection of its own.
struct PgChangeFeed {
    listener: PgListener,
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn changed(&mut self) -> Result<(), StoreError> {
        // `None`: the connection was lost and has been re-made (and `LISTEN` re-issued).
        self.listener.try_recv().await?;
        Ok(())
    }
}

/// The advisory lock that makes a coordinator without an election the only leader of its
/// database (advisory locks are per database): "cronfl" in ASCII.
const SOLE_LEADERSHIP_LOCK: i64 = 0x63_72_6f_6e_66_6c;
/// How often the connection holding the lock is checked.
const SOLE_LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// The sole leadership: a session advisory lock on a connection of its own, held until it
/// is dropped or the connection breaks (then the server releases the lock, and another
/// coordinator may take it; the epoch it raises fences this one). A slow database does not
/// end it.
#[derive(Debug)]
struct AdvisoryLockLeadership {
    connection: PgConnection,
}

#[async_trait]
impl SoleLeadership for AdvisoryLockLeadership {
    async fn lost(&mut self) {
        loop {
            tokio::time::sleep(SOLE_LEADERSHIP_CHECK).await;
            // No timeout on the check: slow is not lost. While the connection lives, the
            // server keeps the lock and nobody else can take it (and whoever might, once
            // the server drops the connection, raises the epoch, which fences this node).
            if let Err(error) = sqlx::query("SELECT 1").execute(&mut self.connection).await {
                tracing::warn!(%error, "lost the connection holding the sole leadership");
                return;
            }
        }
    }
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        // No JIT: the hot-path statements run in a millisecond, but a cost estimate above
        // the JIT threshold (a correlated subquery is enough) made PostgreSQL spend 270 ms
        // compiling the dispatcher's query on every pass (found by the benchmark).
        let options = url.parse::<PgConnectOptions>()?.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast and retry (visibly) rather than block a loop through an outage.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool, for callers that need raw SQL (benchmarks, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Locks the fencing row in share mode and checks that `ours` is the epoch in force. A
/// concurrent `raise_epoch` waits for this transaction, and every later one sees the new
/// epoch: no statement of a deposed leader commits after its successor took over.
async fn check_epoch(conn: &mut PgConnection, ours: i64) -> Result<(), StoreError> {
    let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1 FOR SHARE")
        .fetch_one(&mut *conn)
        .await?;
    StoreError::check_epoch(ours, current)
}

async fn fetch_job_for_update(conn: &mut PgConnection, name: &str) -> Result<Job, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
        .try_into()
}

/// Inserts a job owned by `managed_by` (`None`: defined one by one). Its first slot is its
/// first one at or after `now`.
async fn insert_job(
    conn: &mut PgConnection,
    spec: &JobSpec,
    managed_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Job, StoreError> {
    spec.validate()?;
    check_schedule_has_a_future(&spec.schedule, now)?;
    let values = JobValues::of(spec);
    let next_run_at = first_slot(&spec.schedule, now);
    let row: JobRow = sqlx::query_as(concat!(
        "INSERT INTO jobs (name, handler, args, schedule_kind, schedule_expr, schedule_start, tz, \
         priority, max_runs, remaining_runs, timeout_ms, retries, overlap, catch_up, \
         catch_up_window_ms, labels, paused, pause_note, active, next_run_at, created_at, updated_at, \
         managed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $20, $21) RETURNING ",
        job_columns!()
    ))
    .bind(&spec.name)
    .bind(&spec.handler)
    .bind(&values.args)
    .bind(&values.schedule.kind)
    .bind(&values.schedule.expr)
    .bind(values.schedule.start)
    .bind(&values.schedule.tz)
    .bind(spec.priority)
    .bind(values.max_runs)
    .bind(values.timeout_ms)
    .bind(values.retries)
    .bind(values.overlap)
    .bind(values.catch_up)
    .bind(values.catch_up_window_ms)
    .bind(&values.labels)
    .bind(spec.paused)
    .bind(&spec.pause_note)
    .bind(next_run_at.is_some())
    .bind(next_run_at)
    .bind(now)
    .bind(managed_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| duplicate_name(error, &spec.name))?;
    row.try_into()
}

/// Replaces the spec and owner of `current`, a row this transaction has locked; its
/// schedule goes on or starts again as [`schedule_after_update`] says.
async fn replace_job(
    conn: &mut PgConnection,
    current: &Job,
    spec: &JobSpec,
    managed_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Job, StoreError> {
    spec.validate()?;
    let schedule = schedule_after_update(current, spec, now)?;
    let values = JobValues::of(spec);
    let row: JobRow = sqlx::query_as(concat!(
        "UPDATE jobs SET name = $2, handler = $3, args = $4, schedule_kind = $5, schedule_expr = $6, \
         schedule_start = $7, tz = $8, priority = $9, max_runs = $10, remaining_runs = $11, \
         timeout_ms = $12, retries = $13, overlap = $14, catch_up = $15, catch_up_window_ms = $16, \
         labels = $17, paused = $18, pause_note = $19, active = $20, next_run_at = $21, \
         version = version + 1, updated_at = $22, managed_by = $23 WHERE id = $1 RETURNING ",
        job_columns!()
    ))
    .bind(current.id)
    .bind(&spec.name)
    .bind(&spec.handler)
    .bind(&values.args)
    .bind(&values.schedule.kind)
    .bind(&values.schedule.expr)
    .bind(values.schedule.start)
    .bind(&values.schedule.tz)
    .bind(spec.priority)
    .bind(values.max_runs)
    .bind(JobValues::count(schedule.remaining_runs))
    .bind(values.timeout_ms)
    .bind(values.retries)
    .bind(values.overlap)
    .bind(values.catch_up)
    .bind(values.catch_up_window_ms)
    .bind(&values.labels)
    .bind(spec.paused)
    .bind(&spec.pause_note)
    .bind(schedule.next_run_at.is_some())
    .bind(schedule.next_run_at)
    .bind(now)
    .bind(managed_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| duplicate_name(error, &spec.name))?;
    if spec.priority != current.spec.priority {
        sqlx::query("UPDATE runs SET priority = $2 WHERE job_id = $1 AND state = 'pending'")
            .bind(current.id)
            .bind(spec.priority)
            .execute(&mut *conn)
            .await?;
    }
    row.try_into()
}

async fn fetch_run(conn: &mut PgConnection, id: i64, lock: bool) -> Result<Run, StoreError> {
    let query = if lock {
        concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE runs.id = $1 FOR UPDATE OF runs"
        )
    } else {
        concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE runs.id = $1"
        )
    };
    let row: Option<RunRow> = sqlx::query_as(query)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.ok_or(StoreError::RunNotFound(id))?.try_into()
}

/// Moves a run to another state inside a transaction, with what goes with the move (times,
/// worker, output, the job's failure streak). Returns the run as it was before.
async fn apply_transition(
    conn: &mut PgConnection,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let run = fetch_run(conn, id, true).await?;
    let update = plan_transition(&run, transition, now)?;
    sqlx::query(
        "UPDATE runs SET state = $2, worker = $3, epoch = $4, dispatched_at = $5, started_at = $6, \
         finished_at = $7, deadline = $8, error = $9, output = $10, trace_id = $11 WHERE id = $1",
    )
    .bind(id)
    .bind(update.state)
    .bind(&update.worker)
    .bind(update.epoch)
    .bind(update.dispatched_at)
    .bind(update.started_at)
    .bind(update.finished_at)
    .bind(update.deadline)
    .bind(&update.error)
    .bind(&update.output)
    .bind(&update.trace_id)
    .execute(&mut *conn)
    .await
    .map_err(|error| match unique_violation(&error) {
        Some(_) => StoreError::JobBusy {
            job: run.job_name.clone(),
            run: id,
        },
        None => error.into(),
    })?;
    if update.job_last_run_at.is_some() || update.streak != StreakChange::Unchanged {
        sqlx::query(
            "UPDATE jobs SET last_run_at = COALESCE($2, last_run_at), \
             failure_count = CASE $3 WHEN 'reset' THEN 0 WHEN 'failure' THEN failure_count + 1 \
             ELSE failure_count END, \
             first_failure_at = CASE $3 WHEN 'reset' THEN NULL \
             WHEN 'failure' THEN COALESCE(first_failure_at, $4) ELSE first_failure_at END \
             WHERE id = $1",
        )
        .bind(run.job_id)
        .bind(update.job_last_run_at)
        .bind(update.streak.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(run)
}

/// Locks the fencing row once per distinct epoch among `transitions` (see [`check_epoch`]).
async fn check_epochs<'a>(
    conn: &mut PgConnection,
    transitions: impl Iterator<Item = &'a RunTransition>,
) -> Result<(), StoreError> {
    let mut epochs: Vec<i64> = transitions.filter_map(|t| t.epoch).collect();
    epochs.sort_unstable();
    epochs.dedup();
    for epoch in epochs {
        check_epoch(conn, epoch).await?;
    }
    Ok(())
}

/// Fetches runs by id and locks them, keyed by id.
async fn lock_runs(conn: &mut PgConnection, ids: &[i64]) -> Result<HashMap<i64, Run>, StoreError> {
    let rows: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE runs.id = ANY($1) \
         ORDER BY runs.id FOR UPDATE OF runs"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(runs_from_rows(rows)?
        .into_iter()
        .map(|run| (run.id, run))
        .collect())
}

/// The runs a batch moved: each as it was before (or why it could not move), in batch
/// order, and as it is now, by id.
type Moved = (Vec<Result<Run, StoreError>>, HashMap<i64, Run>);

/// [`apply_transition`] for many distinct runs with a handful of statements: one read
/// under lock, one `UNNEST` update of the runs (returning them as they are now), one of
/// their jobs. A unique violation (a second active run of a job) fails the whole
/// statement: the caller runs the batch one by one instead.
async fn apply_transitions(
    conn: &mut PgConnection,
    batch: &[(i64, &RunTransition)],
    now: DateTime<Utc>,
) -> Result<Moved, StoreError> {
    let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
    let mut before = lock_runs(conn, &ids).await?;
    let mut planned = Vec::with_capacity(batch.len());
    for (id, transition) in batch {
        planned.push(match before.remove(id) {
            None => Err(StoreError::RunNotFound(*id)),
            Some(run) => plan_transition(&run, transition, now).map(|update| (run, update)),
        });
    }
    let updates: Vec<&(Run, crate::lease_writes::RunUpdate)> =
        planned.iter().filter_map(|p| p.as_ref().ok()).collect();
    let mut after = HashMap::new();
    if !updates.is_empty() {
        let rows: Vec<RunRow> = sqlx::query_as(concat!(
            "UPDATE runs SET state = u.state, worker = u.worker, epoch = u.epoch, \
             dispatched_at = u.dispatched_at, started_at = u.started_at, finished_at = u.finished_at, \
             deadline = u.deadline, error = u.error, output = u.output, trace_id = u.trace_id \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], \
             $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[]) \
             AS u(id, state, worker, epoch, dispatched_at, started_at, finished_at, deadline, error, \
             output, trace_id), jobs WHERE runs.id = u.id AND jobs.id = runs.job_id RETURNING ",
            run_columns!()
        ))
        .bind(updates.iter().map(|(run, _)| run.id).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.state).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.worker.as_deref()).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.epoch).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.dispatched_at).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.started_at).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.finished_at).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.deadline).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.error.as_deref()).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.output.as_deref()).collect::<Vec<_>>())
        .bind(updates.iter().map(|(_, u)| u.trace_id.as_deref()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        after = runs_from_rows(rows)?
            .into_iter()
            .map(|run| (run.id, run))
            .collect();
        let job_updates: Vec<&(Run, crate::lease_writes::RunUpdate)> = updates
            .iter()
            .copied()
            .filter(|(_, u)| u.job_last_run_at.is_some() || u.streak != StreakChange::Unchanged)
            .collect();
        let mut job_ids: Vec<i64> = job_updates.iter().map(|(run, _)| run.job_id).collect();
        job_ids.sort_unstable();
        job_ids.dedup();
        // One statement when every job appears once (an UPDATE … FROM applies one source
        // row per target row); one per run otherwise, in batch order.
        let groups: Vec<Vec<&(Run, crate::lease_writes::RunUpdate)>> =
            if job_ids.len() == job_updates.len() {
                vec![job_updates]
            } else {
                job_updates.into_iter().map(|update| vec![update]).collect()
            };
        for group in groups.into_iter().filter(|group| !group.is_empty()) {
            sqlx::query(
                "UPDATE jobs SET last_run_at = COALESCE(u.last_run_at, jobs.last_run_at), \
                 failure_count = CASE u.streak WHEN 'reset' THEN 0 \
                 WHEN 'failure' THEN jobs.failure_count + 1 ELSE jobs.failure_count END, \
                 first_failure_at = CASE u.streak WHEN 'reset' THEN NULL \
                 WHEN 'failure' THEN COALESCE(jobs.first_failure_at, $4) ELSE jobs.first_failure_at END \
                 FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[]) AS u(id, last_run_at, streak) \
                 WHERE jobs.id = u.id",
            )
            .bind(group.iter().map(|(run, _)| run.job_id).collect::<Vec<_>>())
            .bind(group.iter().map(|(_, u)| u.job_last_run_at).collect::<Vec<_>>())
            .bind(group.iter().map(|(_, u)| u.streak.as_str()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    let before = planned
        .into_iter()
        .map(|planned| planned.map(|(run, _)| run))
        .collect();
    Ok((before, after))
}

/// Whether a batch must go one run at a time: it names a run twice.
fn has_repeats(ids: impl Iterator<Item = i64>) -> bool {
    let mut ids: Vec<i64> = ids.collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    ids.len() != count
}

/// Writes what a run's end calls for (`plan_finish`): its follow-up run (a retry or a
/// continuation), returned, and the job's automatic pause.
async fn write_finish_plan(
    conn: &mut PgConnection,
    job_id: i64,
    plan: &FinishPlan,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<Option<Run>, StoreError> {
    let follow_up = match &plan.follow_up {
        Some(follow_up) => insert_follow_up(conn, job_id, follow_up, epoch, now).await?,
        None => None,
    };
    if let Some(reason) = &plan.pause_reason {
        sqlx::query(
            "UPDATE jobs SET paused = TRUE, pause_note = $2, version = version + 1, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(follow_up)
}

async fn insert_follow_up(
    conn: &mut PgConnection,
    job_id: i64,
    follow_up: &FollowUp,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<Option<Run>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at, not_before, priority) \
         SELECT $1, $2, $3, $4, 'pending', $5, $6, $7, priority FROM jobs WHERE id = $1 \
         ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id",
    )
    .bind(job_id)
    .bind(follow_up.slot)
    .bind(follow_up.attempt)
    .bind(follow_up.trigger)
    .bind(epoch)
    .bind(now)
    .bind(follow_up.not_before)
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => Ok(Some(fetch_run(conn, id, false).await?)),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn claim_sole_leadership(&self) -> Result<Option<Box<dyn SoleLeadership>>, StoreError> {
        let mut connection = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let claimed: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SOLE_LEADERSHIP_LOCK)
            .fetch_one(&mut connection)
            .await?;
        Ok(claimed
            .then(|| Box::new(AdvisoryLockLeadership { connection }) as Box<dyn SoleLeadership>))
    }

    async fn raise_epoch(&self, epoch: i64) -> Result<i64, StoreError> {
        let current: i64 = sqlx::query_scalar(
            "WITH raised AS (UPDATE fencing SET epoch = $1 WHERE id = 1 AND epoch < $1 RETURNING epoch) \
             SELECT COALESCE((SELECT epoch FROM raised), (SELECT epoch FROM fencing WHERE id = 1))",
        )
        .bind(epoch)
        .fetch_one(&self.pool)
        .await?;
        Ok(current)
    }

    async fn announce_change(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANGES_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(Some(Box::new(PgChangeFeed { listener })))
    }

    async fn epoch(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_job(&self, spec: &JobSpec, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_job(&mut conn, spec, None, now).await
    }

    async fn get_job(&self, name: &str) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
            .try_into()
    }

    async fn list_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        jobs_from_rows(rows)
    }

    async fn update_job(
        &self,
        name: &str,
        expected_version: i64,
        spec: &JobSpec,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = fetch_job_for_update(&mut tx, name).await?;
        if current.version != expected_version {
            return Err(StoreError::VersionConflict {
                name: name.to_owned(),
                expected: expected_version,
                actual: current.version,
            });
        }
        let managed_by = current.managed_by.clone();
        let job = replace_job(&mut tx, &current, spec, managed_by.as_deref(), now).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn apply_jobs(
        &self,
        request: &ApplyRequest,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobChange>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let names = request.names();
        // Locked until the plan is written: nobody changes them between the plan and the
        // writes, and a concurrent update that read them before fails on their new version.
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE name = ANY($1) OR managed_by = $2 ORDER BY id FOR UPDATE"
        ))
        .bind(&names)
        .bind(&request.manager)
        .fetch_all(&mut *tx)
        .await?;
        let plan = plan_apply(&jobs_from_rows(rows)?, request, now)?;
        if dry_run {
            return Ok(plan.changes);
        }
        let manager = Some(request.manager.as_str());
        for write in &plan.writes {
            match write {
                JobWrite::Create(spec) => {
                    insert_job(&mut tx, spec, manager, now).await?;
                }
                JobWrite::Update { current, spec } => {
                    replace_job(&mut tx, current, spec, manager, now).await?;
                }
                JobWrite::Delete { id, .. } => {
                    sqlx::query("DELETE FROM jobs WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(plan.changes)
    }

    async fn pause_job(
        &self,
        name: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET paused = TRUE, pause_note = $2, version = version + 1, updated_at = $3 \
             WHERE name = $1 RETURNING ",
            job_columns!()
        ))
        .bind(name)
        .bind(note)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
            .try_into()
    }

    async fn resume_job(&self, name: &str, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET paused = FALSE, pause_note = NULL, version = version + 1, updated_at = $2 \
             WHERE name = $1 RETURNING ",
            job_columns!()
        ))
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
            .try_into()
    }

    async fn delete_job(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let job: Option<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let job = job.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?;
        // Its open runs locked too: a dispatch of a waiting run either committed before
        // (and is seen here) or waits for this transaction and finds the run gone.
        let active: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, state, worker FROM runs WHERE job_id = $1 \
             AND state IN ('pending', 'dispatched', 'running') ORDER BY (state = 'pending'), id FOR UPDATE",
        )
        .bind(job)
        .fetch_optional(&mut *tx)
        .await?
        .filter(|(_, state, _)| state != "pending");
        if let Some((run, state, worker)) = active {
            return Err(StoreError::JobActive {
                job: name.to_owned(),
                run,
                state,
                worker,
            });
        }
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn earliest_next_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT min(next_run_at) FROM jobs WHERE active AND NOT paused")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn lease_due(
        &self,
        now: DateTime<Utc>,
        epoch: i64,
        limit: u32,
        settings: &LeaseSettings,
    ) -> Result<Lease, StoreError> {
        let mut tx = self.pool.begin().await?;
        check_epoch(&mut tx, epoch).await?;
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE active AND NOT paused AND next_run_at <= $1 \
             ORDER BY priority, next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        // Planned with the actual `now` every time (an unnamed statement): how many jobs
        // are due decides between the due index (few) and the priority index (many); a
        // cached generic plan would guess, and a wrong guess scans every job.
        .persistent(false)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Lease::default());
        }
        let (jobs, unreadable) = readable_jobs(rows);
        for job in &unreadable {
            sqlx::query(
                "UPDATE jobs SET paused = TRUE, pause_note = $2, version = version + 1, updated_at = $3 \
                 WHERE id = $1",
            )
            .bind(job.id)
            .bind(job.pause_note())
            .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();

        let open: HashMap<i64, OpenRuns> = sqlx::query_as::<_, (i64, bool, i64)>(
            "SELECT job_id, bool_or(state <> 'pending'), count(*) FILTER (WHERE state = 'pending') \
             FROM runs WHERE job_id = ANY($1) AND state IN ('pending', 'dispatched', 'running') \
             AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > $2) \
             GROUP BY job_id",
        )
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(job_id, active, pending)| {
            let pending = u32::try_from(pending).unwrap_or(u32::MAX);
            (job_id, OpenRuns { active, pending })
        })
        .collect();

        let writes = plan_writes(&jobs, &open, now, settings);

        // Waiting runs are cancelled before the new ones exist, so only the old ones go.
        if !writes.cancel_pending_of.is_empty() {
            sqlx::query(
                "UPDATE runs SET state = 'cancelled', finished_at = $2, \
                 error = 'replaced by a newer run (overlap policy replace)' \
                 WHERE job_id = ANY($1) AND state = 'pending' \
                 AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > $2)",
            )
            .bind(&writes.cancel_pending_of)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let cancel_requested: Vec<i64> = if writes.cancel_active_of.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) \
                 WHERE job_id = ANY($1) AND state IN ('dispatched', 'running') RETURNING id",
            )
            .bind(&writes.cancel_active_of)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
        };

        let new = &writes.new_runs;
        let priorities: HashMap<i64, i32> =
            jobs.iter().map(|job| (job.id, job.spec.priority)).collect();
        let rows: Vec<RunRow> = sqlx::query_as(concat!(
            "WITH inserted AS (INSERT INTO runs (job_id, slot, attempt, trigger, state, slot_count, \
             last_slot, epoch, created_at, priority) \
             SELECT u.job_id, u.slot, 1, u.trigger, u.state, u.slot_count, u.last_slot, $7, $8, \
             u.priority \
             FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[], \
             $6::timestamptz[], $9::integer[]) AS u(job_id, slot, trigger, state, slot_count, \
             last_slot, priority) \
             ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING *) \
             SELECT ",
            run_columns!(),
            " FROM inserted AS runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE runs.state = 'pending' ORDER BY runs.id"
        ))
        .bind(new.iter().map(|run| run.job_id).collect::<Vec<_>>())
        .bind(new.iter().map(|run| run.slot).collect::<Vec<_>>())
        .bind(new.iter().map(|run| run.trigger).collect::<Vec<_>>())
        .bind(new.iter().map(|run| run.state).collect::<Vec<_>>())
        .bind(new.iter().map(|run| run.slot_count).collect::<Vec<_>>())
        .bind(new.iter().map(|run| run.last_slot).collect::<Vec<_>>())
        .bind(epoch)
        .bind(now)
        .bind(new.iter().map(|run| priorities[&run.job_id]).collect::<Vec<i32>>())
        .fetch_all(&mut *tx)
        .await?;

        let advances = &writes.advances;
        sqlx::query(
            "UPDATE jobs SET next_run_at = u.next_run_at, remaining_runs = u.remaining_runs, \
             active = u.active, missed_count = missed_count + u.missed, \
             overlap_skipped_count = overlap_skipped_count + u.skipped \
             FROM UNNEST($1::bigint[], $2::timestamptz[], $3::integer[], $4::boolean[], $5::bigint[], \
             $6::bigint[]) AS u(id, next_run_at, remaining_runs, active, missed, skipped) \
             WHERE jobs.id = u.id",
        )
        .bind(advances.iter().map(|a| a.job_id).collect::<Vec<_>>())
        .bind(advances.iter().map(|a| a.next_run_at).collect::<Vec<_>>())
        .bind(advances.iter().map(|a| a.remaining_runs).collect::<Vec<_>>())
        .bind(advances.iter().map(|a| a.active).collect::<Vec<_>>())
        .bind(advances.iter().map(|a| a.missed).collect::<Vec<_>>())
        .bind(advances.iter().map(|a| a.skipped).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        Ok(Lease {
            runs: runs_from_rows(rows)?,
            cancel_requested,
            jobs_leased: jobs.len() + unreadable.len(),
            unreadable,
        })
    }

    async fn get_run(&self, id: i64) -> Result<Run, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_run(&mut conn, id, false).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let query = match filter.order {
            RunOrder::NewestFirst => concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE ($1::text IS NULL OR jobs.name = $1) \
                 AND ($2::text IS NULL OR runs.state = $2) AND ($3::timestamptz IS NULL OR runs.created_at >= $3) \
                 ORDER BY runs.id DESC LIMIT $4"
            ),
            RunOrder::OldestFirst => concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE ($1::text IS NULL OR jobs.name = $1) \
                 AND ($2::text IS NULL OR runs.state = $2) AND ($3::timestamptz IS NULL OR runs.created_at >= $3) \
                 ORDER BY runs.id LIMIT $4"
            ),
        };
        let rows: Vec<RunRow> = sqlx::query_as(query)
            .bind(filter.job.as_deref())
            .bind(filter.state.map(|state| state.as_str()))
            .bind(filter.since)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        runs_from_rows(rows)
    }

    async fn transition_run(
        &self,
        id: i64,
        transition: &RunTransition,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(epoch) = transition.epoch {
            check_epoch(&mut tx, epoch).await?;
        }
        apply_transition(&mut tx, id, transition, now).await?;
        let run = fetch_run(&mut tx, id, false).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn transition_runs(
        &self,
        batch: &[(i64, RunTransition)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if has_repeats(batch.iter().map(|(id, _)| *id)) {
            return crate::transition_each(self, batch, now).await;
        }
        let mut tx = self.pool.begin().await?;
        check_epochs(&mut tx, batch.iter().map(|(_, t)| t)).await?;
        let refs: Vec<(i64, &RunTransition)> = batch.iter().map(|(id, t)| (*id, t)).collect();
        let (before, mut after) = match apply_transitions(&mut tx, &refs, now).await {
            Err(StoreError::Database(error)) if unique_violation(&error).is_some() => {
                drop(tx);
                return crate::transition_each(self, batch, now).await;
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(before
            .into_iter()
            .map(|run| {
                let id = run?.id;
                after.remove(&id).ok_or(StoreError::RunNotFound(id))
            })
            .collect())
    }

    async fn finish_runs(
        &self,
        batch: &[FinishOrder],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if has_repeats(batch.iter().map(|order| order.id)) {
            return crate::finish_each(self, batch, now).await;
        }
        let mut tx = self.pool.begin().await?;
        check_epochs(&mut tx, batch.iter().map(|order| &order.transition)).await?;
        let refs: Vec<(i64, &RunTransition)> = batch
            .iter()
            .map(|order| (order.id, &order.transition))
            .collect();
        let (before, mut after) = match apply_transitions(&mut tx, &refs, now).await {
            Err(StoreError::Database(error)) if unique_violation(&error).is_some() => {
                drop(tx);
                return crate::finish_each(self, batch, now).await;
            }
            other => other?,
        };
        let job_ids: Vec<i64> = before
            .iter()
            .filter_map(|run| run.as_ref().ok().map(|run| run.job_id))
            .collect();
        let jobs: HashMap<i64, Job> = jobs_from_rows(
            sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE id = ANY($1)"
            ))
            .bind(&job_ids)
            .fetch_all(&mut *tx)
            .await?,
        )?
        .into_iter()
        .map(|job| (job.id, job))
        .collect();
        let mut planned = Vec::with_capacity(batch.len());
        for (order, run) in batch.iter().zip(before) {
            let run = match run {
                Ok(run) => run,
                Err(error) => {
                    planned.push(Err(error));
                    continue;
                }
            };
            let job = jobs
                .get(&run.job_id)
                .ok_or_else(|| StoreError::Corrupt(format!("run {} has no job", run.id)))?;
            let plan = plan_finish(&run, order.transition.to, job, &order.rules, now);
            let follow_up = write_finish_plan(&mut tx, job.id, &plan, run.epoch, now).await?;
            planned.push(Ok((run.id, follow_up, plan.pause_reason)));
        }
        tx.commit().await?;
        Ok(planned
            .into_iter()
            .map(|planned| {
                let (id, follow_up, paused) = planned?;
                let run = after.remove(&id).ok_or(StoreError::RunNotFound(id))?;
                let (retry, continuation) = match follow_up {
                    Some(next) if next.trigger == Trigger::Continuation => (None, Some(next)),
                    other => (other, None),
                };
                Ok(Finished {
                    run,
                    retry,
                    continuation,
                    paused,
                })
            })
            .collect())
    }

    async fn create_manual_run(
        &self,
        name: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ManualRun, StoreError> {
        let mut tx = self.pool.begin().await?;
        let job = fetch_job_for_update(&mut tx, name).await?;
        let (active, waiting): (bool, Option<i64>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND state IN ('dispatched', 'running')), \
             (SELECT min(id) FROM runs WHERE job_id = $1 AND state = 'pending' \
                 AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > $2))",
        )
        .bind(job.id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(run) = waiting {
            return Err(StoreError::AlreadyQueued {
                job: name.to_owned(),
                run,
            });
        }
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at, not_before, \
             priority) VALUES ($1, $2, 1, $3, 'pending', $4, $5, $6, $7) \
             ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id",
        )
        .bind(job.id)
        .bind(at)
        .bind(Trigger::Manual.as_str())
        .bind(epoch)
        .bind(now)
        .bind((at > now).then_some(at))
        .bind(job.spec.priority)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::AlreadyQueued {
            job: name.to_owned(),
            run: 0,
        })?;
        let run = fetch_run(&mut tx, id, false).await?;
        tx.commit().await?;
        Ok(ManualRun {
            run,
            queued: active,
        })
    }

    async fn dispatchable_runs(
        &self,
        now: DateTime<Utc>,
        after: Option<DispatchCursor>,
        limit: u32,
    ) -> Result<Vec<DispatchableRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The batch must come from `runs_dispatch_order` in index order, the per-run checks
        // stopping after one batch. Statistics lag a burst of new runs (autovacuum analyses
        // at most once a minute), and with a stale estimate of the pending runs the planner
        // prefers checking every one of them and sorting: 100+ ms per pass with 10,000s
        // waiting. Without sorting, the index order is the only plan.
        sqlx::query("SET LOCAL enable_sort = off")
            .execute(&mut *tx)
            .await?;
        // Two statements, not one with an optional condition: each keeps its own plan.
        macro_rules! dispatchable_sql {
            ($after:literal) => {
                concat!(
                    "SELECT ",
                    run_columns!(),
                    dispatch_job_columns!(),
                    " FROM runs JOIN jobs ON jobs.id = runs.job_id \
                     WHERE runs.state = 'pending' AND (runs.not_before IS NULL OR runs.not_before <= $1) \
                     AND runs.id = (SELECT min(w.id) FROM runs w WHERE w.job_id = runs.job_id \
                         AND w.state = 'pending' AND (w.not_before IS NULL OR w.not_before <= $1)) \
                     AND NOT EXISTS (SELECT 1 FROM runs a WHERE a.job_id = runs.job_id \
                         AND a.state IN ('dispatched', 'running'))",
                    $after,
                    " ORDER BY runs.priority, runs.id LIMIT $2"
                )
            };
        }
        let sql = if after.is_some() {
            dispatchable_sql!(" AND (runs.priority, runs.id) > ($3, $4)")
        } else {
            dispatchable_sql!("")
        };
        let mut query = sqlx::query_as(sql).bind(now).bind(i64::from(limit));
        if let Some(after) = after {
            query = query.bind(after.priority).bind(after.run_id);
        }
        let rows: Vec<DispatchRow> = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        dispatchable_from_rows(rows)
    }

    async fn set_pending_reason(
        &self,
        run_ids: &[i64],
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET pending_reason = $2 WHERE id = ANY($1) AND state = 'pending' \
             AND pending_reason IS DISTINCT FROM $2",
        )
        .bind(run_ids)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_runs(
        &self,
        created_before: DateTime<Utc>,
        keep_per_job: u32,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let pruned = sqlx::query(
            "DELETE FROM runs WHERE id IN (\
               SELECT id FROM (\
                 SELECT id, state, created_at, \
                        row_number() OVER (PARTITION BY job_id ORDER BY id DESC) AS newest \
                 FROM runs) ranked \
               WHERE state IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost', \
                               'skipped', 'missed') \
                 AND (created_at < $1 OR newest > $2) \
               ORDER BY id LIMIT $3)",
        )
        .bind(created_before)
        .bind(i64::from(keep_per_job))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(pruned.rows_affected())
    }

    async fn count_backlog(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE state = 'pending' \
             AND (not_before IS NULL OR not_before <= $1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn earliest_not_before(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT min(not_before) FROM runs WHERE state = 'pending' AND not_before > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        let rows: Vec<RunRow> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE runs.state IN ('dispatched', 'running') ORDER BY runs.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        runs_from_rows(rows)
    }

    async fn mark_lost(
        &self,
        id: i64,
        epoch: i64,
        reason: &str,
        max_losses: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Run>, StoreError> {
        let mut tx = self.pool.begin().await?;
        check_epoch(&mut tx, epoch).await?;
        let lost = RunTransition::to(RunState::Lost).with_error(reason);
        let run = apply_transition(&mut tx, id, &lost, now).await?;
        let losses: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE job_id = $1 AND slot = $2 AND state = 'lost'",
        )
        .bind(run.job_id)
        .bind(run.slot)
        .fetch_one(&mut *tx)
        .await?;
        // A run someone asked to stop (an operator, a replacing run) is not run again.
        let next = if losses <= i64::from(max_losses) && run.cancel_requested_at.is_none() {
            let next_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at, priority) \
                 SELECT $1, $2, max(attempt) + 1, $3, 'pending', $4, $5, \
                 (SELECT priority FROM jobs WHERE id = $1) FROM runs \
                 WHERE job_id = $1 AND slot = $2 RETURNING id",
            )
            .bind(run.job_id)
            .bind(run.slot)
            .bind(run.trigger.as_str())
            .bind(epoch)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            Some(fetch_run(&mut tx, next_id, false).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(next)
    }

    async fn record_output(&self, id: i64, output: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET output = $2 WHERE id = $1 AND state IN ('dispatched', 'running')",
        )
        .bind(id)
        .bind(bounded_output(output))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_progress(&self, id: i64, progress: Progress) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET progress_done = $2, progress_remaining = $3 WHERE id = $1")
            .bind(id)
            .bind(i64::try_from(progress.done).unwrap_or(i64::MAX))
            .bind(i64::try_from(progress.remaining).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_run(
        &self,
        id: i64,
        transition: &RunTransition,
        rules: &FinishRules,
        now: DateTime<Utc>,
    ) -> Result<Finished, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(epoch) = transition.epoch {
            check_epoch(&mut tx, epoch).await?;
        }
        let before = apply_transition(&mut tx, id, transition, now).await?;
        let row: JobRow = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(before.job_id)
        .fetch_one(&mut *tx)
        .await?;
        let job = Job::try_from(row)?;
        let plan = plan_finish(&before, transition.to, &job, rules, now);
        let follow_up = write_finish_plan(&mut tx, job.id, &plan, before.epoch, now).await?;
        let run = fetch_run(&mut tx, id, false).await?;
        tx.commit().await?;
        let (retry, continuation) = match follow_up {
            Some(next) if next.trigger == Trigger::Continuation => (None, Some(next)),
            other => (other, None),
        };
        Ok(Finished {
            run,
            retry,
            continuation,
            paused: plan.pause_reason,
        })
    }

    async fn request_cancel(
        &self,
        id: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Run, StoreError> {
        let mut tx = self.pool.begin().await?;
        let run = fetch_run(&mut tx, id, true).await?;
        match run.state {
            RunState::Pending => {
                let cancel = RunTransition::to(RunState::Cancelled).with_error(reason);
                apply_transition(&mut tx, id, &cancel, now).await?;
            }
            state if state.is_active() => {
                sqlx::query(
                    "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            state => {
                return Err(StoreError::IllegalTransition {
                    id,
                    source: IllegalTransition {
                        from: state,
                        to: RunState::Cancelled,
                    },
                });
            }
        }
        let run = fetch_run(&mut tx, id, false).await?;
        tx.commit().await?;
        Ok(run)
    }
}
