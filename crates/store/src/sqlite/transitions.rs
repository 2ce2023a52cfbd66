//! Run transitions: state moves, run ends with what core's finish plan calls for, lost
//! runs and their reruns, progress and output. Each runs in one write transaction
//! (`BEGIN IMMEDIATE`); a batch is its runs one by one.

use chrono::{DateTime, Utc};
use cronfleet_core::finish::{FinishPlan, FinishRules, FollowUp, StreakChange};
use cronfleet_core::job::Job;
use cronfleet_core::run::{Progress, Run, RunState, bounded_output};
use sqlx::sqlite::SqliteConnection;

use super::{SqliteStore, check_epoch, fetch_run, ts, ts_opt};
use crate::error::unique_violation;
use crate::lease_writes::{RunUpdate, attempt_column, plan_finish, plan_transition};
use crate::rows::JobRow;
use crate::{FinishOrder, Finished, Lost, RunTransition, StoreError};

/// Moves a run to another state inside a transaction, with what goes with the move (times,
/// worker, output, the job's failure streak). Returns the run as it was before.
pub(super) async fn apply_transition(
    conn: &mut SqliteConnection,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let run = fetch_run(conn, id).await?;
    let update = plan_transition(&run, transition, now)?;
    write_transition(conn, &run, &update, now).await?;
    Ok(run)
}

/// Writes a planned move of `run`: its new columns, and its job's last run and failure
/// streak.
async fn write_transition(
    conn: &mut SqliteConnection,
    run: &Run,
    update: &RunUpdate,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET state = ?2, worker = ?3, epoch = ?4, dispatched_at = ?5, started_at = ?6, \
         finished_at = ?7, deadline = ?8, error = ?9, output = ?10, trace_id = ?11 WHERE id = ?1",
    )
    .bind(run.id)
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
            run: run.id,
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
    Ok(())
}

/// The job `id` as it stands in this write transaction: what a run's end is planned from.
async fn fetch_job_by_id(conn: &mut SqliteConnection, id: i64) -> Result<Job, StoreError> {
    let row: JobRow = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?1"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Job::try_from(row)
}

/// Writes what a run's end calls for (`plan_finish`): its follow-up run (a retry or a
/// continuation), returned, and the job's automatic pause.
async fn write_finish_plan(
    conn: &mut SqliteConnection,
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
            "UPDATE jobs SET paused = 1, pause_note = ?2, version = version + 1, updated_at = ?3 \
             WHERE id = ?1",
        )
        .bind(job_id)
        .bind(reason)
        .bind(ts(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(follow_up)
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
    .bind(attempt_column(follow_up))
    .bind(follow_up.trigger.as_str())
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

pub(super) async fn transition_run(
    store: &SqliteStore,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let mut tx = store.write_transaction().await?;
    if let Some(epoch) = transition.epoch {
        check_epoch(&mut tx, epoch).await?;
    }
    apply_transition(&mut tx, id, transition, now).await?;
    let run = fetch_run(&mut tx, id).await?;
    tx.commit().await?;
    Ok(run)
}

/// One run (and one write transaction) at a time: with one writer, a batch saves nothing.
pub(super) async fn transition_runs(
    store: &SqliteStore,
    batch: &[(i64, RunTransition)],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    crate::leader::transition_each(store, batch, now).await
}

pub(super) async fn finish_run(
    store: &SqliteStore,
    id: i64,
    transition: &RunTransition,
    rules: &FinishRules,
    now: DateTime<Utc>,
) -> Result<Finished, StoreError> {
    let mut tx = store.write_transaction().await?;
    if let Some(epoch) = transition.epoch {
        check_epoch(&mut tx, epoch).await?;
    }
    let before = fetch_run(&mut tx, id).await?;
    let update = plan_transition(&before, transition, now)?;
    let job = fetch_job_by_id(&mut tx, before.job_id).await?;
    let plan = plan_finish(&before, transition.to, &job, rules, now);
    write_transition(&mut tx, &before, &update, now).await?;
    let follow_up = write_finish_plan(&mut tx, job.id, &plan, before.epoch, now).await?;
    let run = fetch_run(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Finished::new(run, follow_up, plan.pause_reason))
}

/// One run (and one write transaction) at a time, as [`transition_runs`].
pub(super) async fn finish_runs(
    store: &SqliteStore,
    batch: &[FinishOrder],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
    crate::leader::finish_each(store, batch, now).await
}

pub(super) async fn mark_lost(
    store: &SqliteStore,
    id: i64,
    epoch: i64,
    reason: &str,
    max_losses: u32,
    now: DateTime<Utc>,
) -> Result<Lost, StoreError> {
    let mut tx = store.write_transaction().await?;
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
    let rerun = if losses <= i64::from(max_losses) && run.cancel_requested_at.is_none() {
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
    let run = fetch_run(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Lost { run, rerun })
}

pub(super) async fn record_output(
    store: &SqliteStore,
    id: i64,
    output: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET output = ?2 WHERE id = ?1 AND state IN ('dispatched', 'running')")
        .bind(id)
        .bind(bounded_output(output))
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn record_progress(
    store: &SqliteStore,
    id: i64,
    progress: Progress,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET progress_done = ?2, progress_remaining = ?3 WHERE id = ?1")
        .bind(id)
        .bind(i64::try_from(progress.done).unwrap_or(i64::MAX))
        .bind(i64::try_from(progress.remaining).unwrap_or(i64::MAX))
        .execute(&store.pool)
        .await?;
    Ok(())
}
