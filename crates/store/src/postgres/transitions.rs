//! Run transitions: state moves one by one or in `UNNEST` batches, run ends with what
//! core's finish plan calls for, lost runs and their reruns, progress and output. Fenced
//! moves take the share lock on the fencing row first (see [`check_epoch`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cronfleet_core::finish::{FinishPlan, FinishRules, FollowUp, StreakChange};
use cronfleet_core::job::Job;
use cronfleet_core::run::{Progress, Run, RunState, bounded_output};
use sqlx::postgres::PgConnection;

use super::{PostgresStore, check_epoch, fetch_run};
use crate::error::unique_violation;
use crate::lease_writes::{RunUpdate, attempt_column, plan_finish, plan_transition};
use crate::rows::{JobRow, RunRow, jobs_from_rows, runs_from_rows};
use crate::{FinishOrder, Finished, Lost, RunTransition, StoreError};

/// A run as it was before a transition, and what the transition writes.
type Planned = (Run, RunUpdate);

/// Moves a run to another state inside a transaction, with what goes with the move (times,
/// worker, output, the job's failure streak). Returns the run as it was before.
pub(super) async fn apply_transition(
    conn: &mut PgConnection,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let run = fetch_run(conn, id, true).await?;
    let update = plan_transition(&run, transition, now)?;
    write_transition(conn, &run, &update, now).await?;
    Ok(run)
}

/// Writes a planned move of `run` (locked by this transaction): its new columns, and its
/// job's last run and failure streak.
async fn write_transition(
    conn: &mut PgConnection,
    run: &Run,
    update: &RunUpdate,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET state = $2, worker = $3, epoch = $4, dispatched_at = $5, started_at = $6, \
         finished_at = $7, deadline = $8, error = $9, output = $10, trace_id = $11 WHERE id = $1",
    )
    .bind(run.id)
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
            run: run.id,
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
    Ok(())
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

/// [`apply_transition`]'s read and plan for many distinct runs: one read under lock, then
/// each run's move planned (or why it cannot move), in batch order.
async fn plan_transitions(
    conn: &mut PgConnection,
    batch: &[(i64, &RunTransition)],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Planned, StoreError>>, StoreError> {
    let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
    let mut before = lock_runs(conn, &ids).await?;
    let mut planned = Vec::with_capacity(batch.len());
    for (id, transition) in batch {
        planned.push(match before.remove(id) {
            None => Err(StoreError::RunNotFound(*id)),
            Some(run) => plan_transition(&run, transition, now).map(|update| (run, update)),
        });
    }
    Ok(planned)
}

/// [`write_transition`] for many distinct runs with a handful of statements: one `UNNEST`
/// update of the runs, one of their jobs. Returns the runs as they are now, by id. A
/// unique violation (a second active run of a job) fails the whole statement: the caller
/// runs the batch one by one instead.
async fn write_transitions(
    conn: &mut PgConnection,
    updates: &[&Planned],
    now: DateTime<Utc>,
) -> Result<HashMap<i64, Run>, StoreError> {
    if updates.is_empty() {
        return Ok(HashMap::new());
    }
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
    let after = runs_from_rows(rows)?
        .into_iter()
        .map(|run| (run.id, run))
        .collect();
    let job_updates: Vec<&Planned> = updates
        .iter()
        .copied()
        .filter(|(_, u)| u.job_last_run_at.is_some() || u.streak != StreakChange::Unchanged)
        .collect();
    let mut job_ids: Vec<i64> = job_updates.iter().map(|(run, _)| run.job_id).collect();
    job_ids.sort_unstable();
    job_ids.dedup();
    // One statement when every job appears once (an UPDATE … FROM applies one source
    // row per target row); one per run otherwise, in batch order.
    let groups: Vec<Vec<&Planned>> = if job_ids.len() == job_updates.len() {
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
    Ok(after)
}

/// The jobs `ids` as they stand in this transaction, by id: what a run's end is planned
/// from. Locked when `lock` (their failure streak is about to change), so that nobody
/// pauses or resumes them between the plan and its writes.
async fn jobs_by_id(
    conn: &mut PgConnection,
    ids: &[i64],
    lock: bool,
) -> Result<HashMap<i64, Job>, StoreError> {
    let query = if lock {
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        )
    } else {
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ANY($1)")
    };
    let rows: Vec<JobRow> = sqlx::query_as(query)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    Ok(jobs_from_rows(rows)?
        .into_iter()
        .map(|job| (job.id, job))
        .collect())
}

fn job_of<'a>(jobs: &'a mut HashMap<i64, Job>, run: &Run) -> Result<&'a mut Job, StoreError> {
    jobs.get_mut(&run.job_id)
        .ok_or_else(|| StoreError::Corrupt(format!("run {} has no job", run.id)))
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
    .bind(attempt_column(follow_up))
    .bind(follow_up.trigger.as_str())
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

pub(super) async fn transition_run(
    store: &PostgresStore,
    id: i64,
    transition: &RunTransition,
    now: DateTime<Utc>,
) -> Result<Run, StoreError> {
    let mut tx = store.pool.begin().await?;
    if let Some(epoch) = transition.epoch {
        check_epoch(&mut tx, epoch).await?;
    }
    apply_transition(&mut tx, id, transition, now).await?;
    let run = fetch_run(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(run)
}

pub(super) async fn transition_runs(
    store: &PostgresStore,
    batch: &[(i64, RunTransition)],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    if has_repeats(batch.iter().map(|(id, _)| *id)) {
        return crate::leader::transition_each(store, batch, now).await;
    }
    let mut tx = store.pool.begin().await?;
    check_epochs(&mut tx, batch.iter().map(|(_, t)| t)).await?;
    let refs: Vec<(i64, &RunTransition)> = batch.iter().map(|(id, t)| (*id, t)).collect();
    let planned = plan_transitions(&mut tx, &refs, now).await?;
    let updates: Vec<&Planned> = planned.iter().filter_map(|p| p.as_ref().ok()).collect();
    let mut after = match write_transitions(&mut tx, &updates, now).await {
        Err(StoreError::Database(error)) if unique_violation(&error).is_some() => {
            drop(tx);
            return crate::leader::transition_each(store, batch, now).await;
        }
        other => other?,
    };
    tx.commit().await?;
    Ok(planned
        .into_iter()
        .map(|planned| {
            let id = planned?.0.id;
            after.remove(&id).ok_or(StoreError::RunNotFound(id))
        })
        .collect())
}

pub(super) async fn finish_run(
    store: &PostgresStore,
    id: i64,
    transition: &RunTransition,
    rules: &FinishRules,
    now: DateTime<Utc>,
) -> Result<Finished, StoreError> {
    let mut tx = store.pool.begin().await?;
    if let Some(epoch) = transition.epoch {
        check_epoch(&mut tx, epoch).await?;
    }
    let before = fetch_run(&mut tx, id, true).await?;
    let update = plan_transition(&before, transition, now)?;
    let lock = update.streak != StreakChange::Unchanged;
    let mut jobs = jobs_by_id(&mut tx, &[before.job_id], lock).await?;
    let plan = plan_finish(
        &before,
        transition.to,
        job_of(&mut jobs, &before)?,
        rules,
        now,
    );
    write_transition(&mut tx, &before, &update, now).await?;
    let follow_up = write_finish_plan(&mut tx, before.job_id, &plan, before.epoch, now).await?;
    let run = fetch_run(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(Finished::new(run, follow_up, plan.pause_reason))
}

pub(super) async fn finish_runs(
    store: &PostgresStore,
    batch: &[FinishOrder],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Finished, StoreError>>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    if has_repeats(batch.iter().map(|order| order.id)) {
        return crate::leader::finish_each(store, batch, now).await;
    }
    let mut tx = store.pool.begin().await?;
    check_epochs(&mut tx, batch.iter().map(|order| &order.transition)).await?;
    let refs: Vec<(i64, &RunTransition)> = batch
        .iter()
        .map(|order| (order.id, &order.transition))
        .collect();
    let planned = plan_transitions(&mut tx, &refs, now).await?;
    let job_ids: Vec<i64> = planned
        .iter()
        .filter_map(|planned| planned.as_ref().ok().map(|(run, _)| run.job_id))
        .collect();
    let lock = planned
        .iter()
        .flatten()
        .any(|(_, update)| update.streak != StreakChange::Unchanged);
    let mut jobs = jobs_by_id(&mut tx, &job_ids, lock).await?;
    let mut ends: Vec<Result<(Planned, FinishPlan), StoreError>> = Vec::with_capacity(batch.len());
    for (order, planned) in batch.iter().zip(planned) {
        ends.push(match planned {
            Err(error) => Err(error),
            Ok((run, update)) => {
                let job = job_of(&mut jobs, &run)?;
                let plan = plan_finish(&run, order.transition.to, job, &order.rules, now);
                // A later end of the same job in this batch starts from this one's outcome.
                job.failures = plan.streak;
                job.spec.paused |= plan.pause_reason.is_some();
                Ok(((run, update), plan))
            }
        });
    }
    let updates: Vec<&Planned> = ends
        .iter()
        .filter_map(|end| end.as_ref().ok().map(|(planned, _)| planned))
        .collect();
    let mut after = match write_transitions(&mut tx, &updates, now).await {
        Err(StoreError::Database(error)) if unique_violation(&error).is_some() => {
            drop(tx);
            return crate::leader::finish_each(store, batch, now).await;
        }
        other => other?,
    };
    let mut written = Vec::with_capacity(ends.len());
    for end in ends {
        written.push(match end {
            Err(error) => Err(error),
            Ok(((run, _), plan)) => {
                let follow_up =
                    write_finish_plan(&mut tx, run.job_id, &plan, run.epoch, now).await?;
                Ok((run.id, follow_up, plan.pause_reason))
            }
        });
    }
    tx.commit().await?;
    Ok(written
        .into_iter()
        .map(|written| {
            let (id, follow_up, paused) = written?;
            let run = after.remove(&id).ok_or(StoreError::RunNotFound(id))?;
            Ok(Finished::new(run, follow_up, paused))
        })
        .collect())
}

pub(super) async fn mark_lost(
    store: &PostgresStore,
    id: i64,
    epoch: i64,
    reason: &str,
    max_losses: u32,
    now: DateTime<Utc>,
) -> Result<Lost, StoreError> {
    let mut tx = store.pool.begin().await?;
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
    let rerun = if losses <= i64::from(max_losses) && run.cancel_requested_at.is_none() {
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
    let run = fetch_run(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok(Lost { run, rerun })
}

pub(super) async fn record_output(
    store: &PostgresStore,
    id: i64,
    output: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET output = $2 WHERE id = $1 AND state IN ('dispatched', 'running')")
        .bind(id)
        .bind(bounded_output(output))
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn record_progress(
    store: &PostgresStore,
    id: i64,
    progress: Progress,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET progress_done = $2, progress_remaining = $3 WHERE id = $1")
        .bind(id)
        .bind(i64::try_from(progress.done).unwrap_or(i64::MAX))
        .bind(i64::try_from(progress.remaining).unwrap_or(i64::MAX))
        .execute(&store.pool)
        .await?;
    Ok(())
}
