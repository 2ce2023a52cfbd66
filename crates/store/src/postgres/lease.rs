//! Leasing: when the scheduler must wake up, and taking the due jobs (`FOR UPDATE SKIP
//! LOCKED`, fenced by a share lock on the fencing row) with their runs and advances
//! written in a handful of `UNNEST` statements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::OpenRuns;

use super::{PostgresStore, check_epoch};
use crate::lease_writes::plan_writes;
use crate::rows::{JobRow, RunRow, readable_jobs, runs_from_rows};
use crate::{Lease, RequestedCancel, StoreError};

pub(super) async fn earliest_next_run_at(
    store: &PostgresStore,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT min(next_run_at) FROM jobs WHERE active AND NOT paused")
            .fetch_one(&store.pool)
            .await?,
    )
}

pub(super) async fn lease_due(
    store: &PostgresStore,
    now: DateTime<Utc>,
    epoch: i64,
    limit: u32,
    settings: &LeaseSettings,
) -> Result<Lease, StoreError> {
    let mut tx = store.pool.begin().await?;
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
    let cancel_requested: Vec<RequestedCancel> = if writes.cancel_active_of.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as::<_, (i64, Option<String>)>(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $2) \
             WHERE job_id = ANY($1) AND state IN ('dispatched', 'running') RETURNING id, worker",
        )
        .bind(&writes.cancel_active_of)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(run_id, worker)| RequestedCancel { run_id, worker })
        .collect()
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
    .bind(
        new.iter()
            .map(|run| priorities[&run.job_id])
            .collect::<Vec<i32>>(),
    )
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
    .bind(
        advances
            .iter()
            .map(|a| a.remaining_runs)
            .collect::<Vec<_>>(),
    )
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
