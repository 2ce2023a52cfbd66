//! The admin API's [`JobStore`]: jobs with optimistic versions, declarative applies under
//! row locks, manual runs, cancels and the run history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cronfleet_core::apply::{ApplyRequest, JobChange, JobWrite, plan_apply};
use cronfleet_core::job::{
    Job, JobSpec, check_schedule_has_a_future, first_slot, schedule_after_update,
};
use cronfleet_core::run::{IllegalTransition, Run, RunState, Trigger};
use sqlx::postgres::PgConnection;

use super::transitions::apply_transition;
use super::{PostgresStore, fetch_run};
use crate::error::duplicate_name;
use crate::job_query::{self, Dialect};
use crate::jobs::{backlog, in_flight};
use crate::rows::{JobRow, JobValues, RunRow, jobs_from_rows, runs_from_rows};
use crate::{
    InFlightRun, JobPage, JobQuery, JobStore, ManualRun, RunBacklog, RunFilter, RunOrder,
    RunTransition, StoreError,
};

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
         managed_by, alerts_enabled, alert_if_no_success_ms, expected_duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $20, $21, $22, $23, $24) RETURNING ",
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
    .bind(values.alerts_enabled)
    .bind(values.alert_if_no_success_ms)
    .bind(values.expected_duration_ms)
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
         version = version + 1, updated_at = $22, managed_by = $23, alerts_enabled = $24, \
         alert_if_no_success_ms = $25, expected_duration_ms = $26 WHERE id = $1 RETURNING ",
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
    .bind(values.alerts_enabled)
    .bind(values.alert_if_no_success_ms)
    .bind(values.expected_duration_ms)
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

#[async_trait]
impl JobStore for PostgresStore {
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

    async fn list_jobs_page(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        job_query::list_jobs_page(&self.pool, query, Dialect::Postgres).await
    }

    async fn count_jobs(&self, query: &JobQuery) -> Result<u64, StoreError> {
        job_query::count_jobs(&self.pool, query, Dialect::Postgres).await
    }

    async fn run_backlog(
        &self,
        now: DateTime<Utc>,
        waiting_since: DateTime<Utc>,
    ) -> Result<RunBacklog, StoreError> {
        let (overdue, waiting_long): (i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM runs WHERE state IN ('dispatched', 'running') AND deadline < $1), \
               (SELECT COUNT(*) FROM runs WHERE state = 'pending' AND created_at < $2 \
                  AND (not_before IS NULL OR not_before < $2))",
        )
        .bind(now)
        .bind(waiting_since)
        .fetch_one(&self.pool)
        .await?;
        let due: Vec<(String, i64)> = sqlx::query_as(
            "SELECT jobs.handler, COUNT(*) FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE runs.state = 'pending' AND (runs.not_before IS NULL OR runs.not_before <= $1) \
             GROUP BY jobs.handler ORDER BY jobs.handler",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(backlog(overdue, waiting_long, due))
    }

    async fn in_flight_runs(&self, limit: u32) -> Result<Vec<InFlightRun>, StoreError> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT runs.id, jobs.name, runs.worker FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE runs.state IN ('dispatched', 'running') ORDER BY runs.id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(in_flight(rows))
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
                 AND ($5::text IS NULL OR runs.trigger = $5) \
                 AND ($6::timestamptz IS NULL OR runs.created_at < $6) ORDER BY runs.id DESC LIMIT $4"
            ),
            RunOrder::OldestFirst => concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE ($1::text IS NULL OR jobs.name = $1) \
                 AND ($2::text IS NULL OR runs.state = $2) AND ($3::timestamptz IS NULL OR runs.created_at >= $3) \
                 AND ($5::text IS NULL OR runs.trigger = $5) \
                 AND ($6::timestamptz IS NULL OR runs.created_at < $6) ORDER BY runs.id LIMIT $4"
            ),
        };
        let rows: Vec<RunRow> = sqlx::query_as(query)
            .bind(filter.job.as_deref())
            .bind(filter.state.map(|state| state.as_str()))
            .bind(filter.since)
            .bind(i64::from(filter.limit))
            .bind(filter.trigger.map(|trigger| trigger.as_str()))
            .bind(filter.until)
            .fetch_all(&self.pool)
            .await?;
        runs_from_rows(rows)
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
