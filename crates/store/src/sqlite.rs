//! The SQLite store, for the embedded single-node mode (`cronfleet dev`): one file, no
//! server. Writers take the database lock up front (`BEGIN IMMEDIATE`), so a lease is as
//! atomic as on PostgreSQL; there is one leaser, so no row-level skipping is needed.
//!
//! Times are stored as fixed-width UTC text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`): text order is
//! then time order, which the due-job index and every comparison rely on.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::apply::{ApplyRequest, JobChange, JobWrite, plan_apply};
use cronfleet_core::job::{
    Job, JobSpec, check_schedule_has_a_future, first_slot, schedule_after_update,
};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::OpenRuns;
use cronfleet_core::run::{IllegalTransition, Progress, Run, RunState, Trigger, bounded_output};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::error::{duplicate_name, unique_violation};
use crate::lease_writes::{FollowUp, StreakChange, plan_finish, plan_transition, plan_writes};
use crate::rows::{
    DispatchRow, JobRow, JobValues, RunRow, dispatchable_from_rows, jobs_from_rows, readable_jobs,
    runs_from_rows,
};
use crate::{
    DispatchCursor, DispatchableRun, FinishRules, Finished, Lease, ManualRun, RunFilter, RunOrder,
    RunTransition, SoleLeadership, Store, StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `PATH.lock`, locked exclusively for as long as the store is open: one process per
    /// database file.
    _lock: Arc<std::fs::File>,
}

/// A time as stored: fixed-width, so that comparing the text compares the times.
fn ts(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn ts_opt(time: Option<DateTime<Utc>>) -> Option<String> {
    time.map(ts)
}

/// A list of ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[i64]) -> String {
    serde_json::Value::from(ids).to_string()
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings the schema up to
    /// date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let lock = lock_exclusively(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteStore {
            pool,
            _lock: Arc::new(lock),
        })
    }

    async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Locks `PATH.lock` (created if missing) exclusively, or says who has the database. The
/// kernel releases the lock when the process ends, however it ends.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, StoreError> {
    let lock_path = path.with_extension("db.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| {
            StoreError::Corrupt(format!(
                "cannot open the lock file {}: {error}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::InUse(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(StoreError::Corrupt(format!(
            "cannot lock {}: {error}",
            lock_path.display()
        ))),
    }
}

/// SQLite's sole leadership: the file lock taken at open, which cannot be lost.
#[derive(Debug)]
struct FileLockLeadership;

#[async_trait]
impl SoleLeadership for FileLockLeadership {
    async fn lost(&mut self) {
        std::future::pending::<()>().await;
    }
}

async fn check_epoch(conn: &mut SqliteConnection, ours: i64) -> Result<(), StoreError> {
    let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    StoreError::check_epoch(ours, current)
}

async fn fetch_job(conn: &mut SqliteConnection, name: &str) -> Result<Job, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE name = ?1"
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
    conn: &mut SqliteConnection,
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20, ?20, ?21) RETURNING ",
        job_columns!()
    ))
    .bind(&spec.name)
    .bind(&spec.handler)
    .bind(&values.args)
    .bind(&values.schedule.kind)
    .bind(&values.schedule.expr)
    .bind(ts_opt(values.schedule.start))
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
    .bind(ts_opt(next_run_at))
    .bind(ts(now))
    .bind(managed_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| duplicate_name(error, &spec.name))?;
    row.try_into()
}

/// Replaces the spec and owner of `current`, read in this write transaction; its schedule
/// goes on or starts again as [`schedule_after_update`] says.
async fn replace_job(
    conn: &mut SqliteConnection,
    current: &Job,
    spec: &JobSpec,
    managed_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Job, StoreError> {
    spec.validate()?;
    let schedule = schedule_after_update(current, spec, now)?;
    let values = JobValues::of(spec);
    let row: JobRow = sqlx::query_as(concat!(
        "UPDATE jobs SET name = ?2, handler = ?3, args = ?4, schedule_kind = ?5, schedule_expr = ?6, \
         schedule_start = ?7, tz = ?8, priority = ?9, max_runs = ?10, remaining_runs = ?11, \
         timeout_ms = ?12, retries = ?13, overlap = ?14, catch_up = ?15, catch_up_window_ms = ?16, \
         labels = ?17, paused = ?18, pause_note = ?19, active = ?20, next_run_at = ?21, \
         version = version + 1, updated_at = ?22, managed_by = ?23 WHERE id = ?1 RETURNING ",
        job_columns!()
    ))
    .bind(current.id)
    .bind(&spec.name)
    .bind(&spec.handler)
    .bind(&values.args)
    .bind(&values.schedule.kind)
    .bind(&values.schedule.expr)
    .bind(ts_opt(values.schedule.start))
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
    .bind(ts_opt(schedule.next_run_at))
    .bind(ts(now))
    .bind(managed_by)
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| duplicate_name(error, &spec.name))?;
    row.try_into()
}

async fn fetch_run(conn: &mut SqliteConnection, id: i64) -> Result<Run, StoreError> {
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE runs.id = ?1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(StoreError::RunNotFound(id))?.try_into()
}

/// Moves a run to another state inside a transaction, with what goes with the move (times,
/// worker, output, the job's failure streak). Returns the run as it was before.
async fn apply_transition(
    conn: &mut SqliteConnection,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let run = fetch_run(conn, id).await?;
    let update = plan_transition(&run, transition, now)?;
    sqlx::query(
        "UPDATE runs SET state = ?2, worker = ?3, epoch = ?4, dispatched_at = ?5, started_at = ?6, \
         finished_at = ?7, deadline = ?8, error = ?9, output = ?10, trace_id = ?11 WHERE id = ?1",
    )
    .bind(id)
    .bind(update.state)
    .bind(&update.worker)
    .bind(update.epoch)
    .bind(ts_opt(update.dispatched_at))
    .bind(ts_opt(update.started_at))
    .bind(ts_opt(update.finished_at))
    .bind(ts_opt(update.deadline))
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
            "UPDATE jobs SET last_run_at = COALESCE(?2, last_run_at), \
             failure_count = CASE ?3 WHEN 'reset' THEN 0 WHEN 'failure' THEN failure_count + 1 \
             ELSE failure_count END, \
             first_failure_at = CASE ?3 WHEN 'reset' THEN NULL \
             WHEN 'failure' THEN COALESCE(first_failure_at, ?4) ELSE first_failure_at END \
             WHERE id = ?1",
        )
        .bind(run.job_id)
        .bind(ts_opt(update.job_last_run_at))
        .bind(update.streak.as_str())
        .bind(ts(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(run)
}

async fn insert_follow_up(
    conn: &mut SqliteConnection,
    job_id: i64,
    follow_up: &FollowUp,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<Option<Run>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at, not_before) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7) \
         ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id",
    )
    .bind(job_id)
    .bind(ts(follow_up.slot))
    .bind(follow_up.attempt)
    .bind(follow_up.trigger)
    .bind(epoch)
    .bind(ts(now))
    .bind(ts_opt(follow_up.not_before))
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => Ok(Some(fetch_run(conn, id).await?)),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn claim_sole_leadership(&self) -> Result<Option<Box<dyn SoleLeadership>>, StoreError> {
        // The file lock taken at open already makes this process the only one.
        Ok(Some(Box::new(FileLockLeadership)))
    }

    async fn raise_epoch(&self, epoch: i64) -> Result<i64, StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query("UPDATE fencing SET epoch = ?1 WHERE id = 1 AND epoch < ?1")
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(current)
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
        let mut conn = self.pool.acquire().await?;
        fetch_job(&mut conn, name).await
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
        let mut tx = self.write_transaction().await?;
        let current = fetch_job(&mut tx, name).await?;
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
        // The write lock is taken up front: nothing changes between the plan and its writes.
        let mut tx = self.write_transaction().await?;
        let names = request.names();
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE name IN (SELECT value FROM json_each(?1)) OR managed_by = ?2 ORDER BY id"
        ))
        .bind(serde_json::Value::from(names).to_string())
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
                    sqlx::query("DELETE FROM jobs WHERE id = ?1")
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
            "UPDATE jobs SET paused = 1, pause_note = ?2, version = version + 1, updated_at = ?3 \
             WHERE name = ?1 RETURNING ",
            job_columns!()
        ))
        .bind(name)
        .bind(note)
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
            .try_into()
    }

    async fn resume_job(&self, name: &str, now: DateTime<Utc>) -> Result<Job, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET paused = 0, pause_note = NULL, version = version + 1, updated_at = ?2 \
             WHERE name = ?1 RETURNING ",
            job_columns!()
        ))
        .bind(name)
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::JobNotFound(name.to_owned()))?
            .try_into()
    }

    async fn delete_job(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        let active: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT runs.id, runs.state, runs.worker FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE jobs.name = ?1 AND runs.state IN ('dispatched', 'running') ORDER BY runs.id LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((run, state, worker)) = active {
            return Err(StoreError::JobActive {
                job: name.to_owned(),
                run,
                state,
                worker,
            });
        }
        let deleted = sqlx::query("DELETE FROM jobs WHERE name = ?1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::JobNotFound(name.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn earliest_next_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT min(next_run_at) FROM jobs WHERE active = 1 AND paused = 0")
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
        let mut tx = self.write_transaction().await?;
        check_epoch(&mut tx, epoch).await?;
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE active = 1 AND paused = 0 AND next_run_at <= ?1 \
             ORDER BY priority, next_run_at LIMIT ?2"
        ))
        .bind(ts(now))
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
                "UPDATE jobs SET paused = 1, pause_note = ?2, version = version + 1, updated_at = ?3 \
                 WHERE id = ?1",
            )
            .bind(job.id)
            .bind(job.pause_note())
            .bind(ts(now))
                .execute(&mut *tx)
                .await?;
        }
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();

        let open: HashMap<i64, OpenRuns> = sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT job_id, max(state <> 'pending'), sum(state = 'pending') FROM runs \
             WHERE job_id IN (SELECT value FROM json_each(?1)) \
             AND state IN ('pending', 'dispatched', 'running') \
             AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > ?2) \
             GROUP BY job_id",
        )
        .bind(id_list(&ids))
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(job_id, active, pending)| {
            let pending = u32::try_from(pending).unwrap_or(u32::MAX);
            (
                job_id,
                OpenRuns {
                    active: active != 0,
                    pending,
                },
            )
        })
        .collect();

        let writes = plan_writes(&jobs, &open, now, settings);

        // Waiting runs are cancelled before the new ones exist, so only the old ones go.
        if !writes.cancel_pending_of.is_empty() {
            sqlx::query(
                "UPDATE runs SET state = 'cancelled', finished_at = ?2, \
                 error = 'replaced by a newer run (overlap policy replace)' \
                 WHERE job_id IN (SELECT value FROM json_each(?1)) AND state = 'pending' \
                 AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > ?2)",
            )
            .bind(id_list(&writes.cancel_pending_of))
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        }
        let cancel_requested: Vec<i64> = if writes.cancel_active_of.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2) \
                 WHERE job_id IN (SELECT value FROM json_each(?1)) \
                 AND state IN ('dispatched', 'running') RETURNING id",
            )
            .bind(id_list(&writes.cancel_active_of))
            .bind(ts(now))
            .fetch_all(&mut *tx)
            .await?
        };

        let mut created = Vec::with_capacity(writes.new_runs.len());
        for run in &writes.new_runs {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO runs (job_id, slot, attempt, trigger, state, slot_count, last_slot, epoch, \
                 created_at) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id",
            )
            .bind(run.job_id)
            .bind(ts(run.slot))
            .bind(run.trigger)
            .bind(run.state)
            .bind(run.slot_count)
            .bind(ts_opt(run.last_slot))
            .bind(epoch)
            .bind(ts(now))
            .fetch_optional(&mut *tx)
            .await?;
            created.extend(id);
        }
        for advance in &writes.advances {
            sqlx::query(
                "UPDATE jobs SET next_run_at = ?2, remaining_runs = ?3, active = ?4, \
                 missed_count = missed_count + ?5, overlap_skipped_count = overlap_skipped_count + ?6 \
                 WHERE id = ?1",
            )
            .bind(advance.job_id)
            .bind(ts_opt(advance.next_run_at))
            .bind(advance.remaining_runs)
            .bind(advance.active)
            .bind(advance.missed)
            .bind(advance.skipped)
            .execute(&mut *tx)
            .await?;
        }
        let rows: Vec<RunRow> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE runs.id IN (SELECT value FROM json_each(?1)) AND runs.state = 'pending' \
             ORDER BY runs.id"
        ))
        .bind(id_list(&created))
        .fetch_all(&mut *tx)
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
        fetch_run(&mut conn, id).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let query = match filter.order {
            RunOrder::NewestFirst => concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE (?1 IS NULL OR jobs.name = ?1) \
                 AND (?2 IS NULL OR runs.state = ?2) AND (?3 IS NULL OR runs.created_at >= ?3) \
                 ORDER BY runs.id DESC LIMIT ?4"
            ),
            RunOrder::OldestFirst => concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE (?1 IS NULL OR jobs.name = ?1) \
                 AND (?2 IS NULL OR runs.state = ?2) AND (?3 IS NULL OR runs.created_at >= ?3) \
                 ORDER BY runs.id LIMIT ?4"
            ),
        };
        let rows: Vec<RunRow> = sqlx::query_as(query)
            .bind(filter.job.as_deref())
            .bind(filter.state.map(|state| state.as_str()))
            .bind(ts_opt(filter.since))
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
        let mut tx = self.write_transaction().await?;
        if let Some(epoch) = transition.epoch {
            check_epoch(&mut tx, epoch).await?;
        }
        apply_transition(&mut tx, id, transition, now).await?;
        let run = fetch_run(&mut tx, id).await?;
        tx.commit().await?;
        Ok(run)
    }

    async fn create_manual_run(
        &self,
        name: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ManualRun, StoreError> {
        let mut tx = self.write_transaction().await?;
        let job = fetch_job(&mut tx, name).await?;
        let (active, waiting): (bool, Option<i64>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = ?1 AND state IN ('dispatched', 'running')), \
             (SELECT min(id) FROM runs WHERE job_id = ?1 AND state = 'pending' \
                 AND NOT (trigger = 'manual' AND not_before IS NOT NULL AND not_before > ?2))",
        )
        .bind(job.id)
        .bind(ts(now))
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
            "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at, not_before) \
             VALUES (?1, ?2, 1, ?3, 'pending', ?4, ?5, ?6) \
             ON CONFLICT (job_id, slot, attempt) DO NOTHING RETURNING id",
        )
        .bind(job.id)
        .bind(ts(at))
        .bind(Trigger::Manual.as_str())
        .bind(epoch)
        .bind(ts(now))
        .bind(ts_opt((at > now).then_some(at)))
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| StoreError::AlreadyQueued {
            job: name.to_owned(),
            run: 0,
        })?;
        let run = fetch_run(&mut tx, id).await?;
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
        // Two statements, not one with an optional condition: each keeps its own plan.
        macro_rules! dispatchable_sql {
            ($after:literal) => {
                concat!(
                    "SELECT ",
                    run_columns!(),
                    dispatch_job_columns!(),
                    " FROM runs JOIN jobs ON jobs.id = runs.job_id \
                     WHERE runs.state = 'pending' AND (runs.not_before IS NULL OR runs.not_before <= ?1) \
                     AND runs.id = (SELECT min(w.id) FROM runs w WHERE w.job_id = runs.job_id \
                         AND w.state = 'pending' AND (w.not_before IS NULL OR w.not_before <= ?1)) \
                     AND NOT EXISTS (SELECT 1 FROM runs a WHERE a.job_id = runs.job_id \
                         AND a.state IN ('dispatched', 'running'))",
                    $after,
                    " ORDER BY jobs.priority, runs.id LIMIT ?2"
                )
            };
        }
        let sql = if after.is_some() {
            dispatchable_sql!(" AND (jobs.priority, runs.id) > (?3, ?4)")
        } else {
            dispatchable_sql!("")
        };
        let mut query = sqlx::query_as(sql).bind(ts(now)).bind(i64::from(limit));
        if let Some(after) = after {
            query = query.bind(after.priority).bind(after.run_id);
        }
        let rows: Vec<DispatchRow> = query.fetch_all(&self.pool).await?;
        dispatchable_from_rows(rows)
    }

    async fn set_pending_reason(
        &self,
        run_ids: &[i64],
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET pending_reason = ?2 WHERE id IN (SELECT value FROM json_each(?1)) \
             AND state = 'pending' AND pending_reason IS NOT ?2",
        )
        .bind(id_list(run_ids))
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
                 AND (created_at < ?1 OR newest > ?2) \
               ORDER BY id LIMIT ?3)",
        )
        .bind(ts(created_before))
        .bind(i64::from(keep_per_job))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(pruned.rows_affected())
    }

    async fn count_backlog(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE state = 'pending' \
             AND (not_before IS NULL OR not_before <= ?1)",
        )
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn earliest_not_before(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT min(not_before) FROM runs WHERE state = 'pending' AND not_before > ?1",
        )
        .bind(ts(now))
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
        let mut tx = self.write_transaction().await?;
        check_epoch(&mut tx, epoch).await?;
        let lost = RunTransition::to(RunState::Lost).with_error(reason);
        let run = apply_transition(&mut tx, id, &lost, now).await?;
        let losses: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE job_id = ?1 AND slot = ?2 AND state = 'lost'",
        )
        .bind(run.job_id)
        .bind(ts(run.slot))
        .fetch_one(&mut *tx)
        .await?;
        // A run someone asked to stop (an operator, a replacing run) is not run again.
        let next = if losses <= i64::from(max_losses) && run.cancel_requested_at.is_none() {
            let next_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at) \
                 SELECT ?1, ?2, max(attempt) + 1, ?3, 'pending', ?4, ?5 FROM runs \
                 WHERE job_id = ?1 AND slot = ?2 RETURNING id",
            )
            .bind(run.job_id)
            .bind(ts(run.slot))
            .bind(run.trigger.as_str())
            .bind(epoch)
            .bind(ts(now))
            .fetch_one(&mut *tx)
            .await?;
            Some(fetch_run(&mut tx, next_id).await?)
        } else {
            None
        };
        tx.commit().await?;
        Ok(next)
    }

    async fn record_output(&self, id: i64, output: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET output = ?2 WHERE id = ?1 AND state IN ('dispatched', 'running')",
        )
        .bind(id)
        .bind(bounded_output(output))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_progress(&self, id: i64, progress: Progress) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET progress_done = ?2, progress_remaining = ?3 WHERE id = ?1")
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
        let mut tx = self.write_transaction().await?;
        if let Some(epoch) = transition.epoch {
            check_epoch(&mut tx, epoch).await?;
        }
        let before = apply_transition(&mut tx, id, transition, now).await?;
        let row: JobRow = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1"
        ))
        .bind(before.job_id)
        .fetch_one(&mut *tx)
        .await?;
        let job = Job::try_from(row)?;
        let plan = plan_finish(&before, transition.to, &job, rules, now);
        let follow_up = match &plan.follow_up {
            Some(follow_up) => {
                insert_follow_up(&mut tx, job.id, follow_up, before.epoch, now).await?
            }
            None => None,
        };
        if let Some(reason) = &plan.pause_reason {
            sqlx::query(
                "UPDATE jobs SET paused = 1, pause_note = ?2, version = version + 1, updated_at = ?3 \
                 WHERE id = ?1",
            )
            .bind(job.id)
            .bind(reason)
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        }
        let run = fetch_run(&mut tx, id).await?;
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
        let mut tx = self.write_transaction().await?;
        let run = fetch_run(&mut tx, id).await?;
        match run.state {
            RunState::Pending => {
                let cancel = RunTransition::to(RunState::Cancelled).with_error(reason);
                apply_transition(&mut tx, id, &cancel, now).await?;
            }
            state if state.is_active() => {
                sqlx::query(
                    "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2) WHERE id = ?1",
                )
                .bind(id)
                .bind(ts(now))
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
        let run = fetch_run(&mut tx, id).await?;
        tx.commit().await?;
        Ok(run)
    }
}
