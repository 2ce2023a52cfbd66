//! Leasing: when the scheduler must wake up, and taking the due jobs in one write
//! transaction (the only leaser, so no row-level skipping) with their runs and advances.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::OpenRuns;

use super::{SqliteStore, check_epoch, id_list, ts, ts_opt};
use crate::lease_writes::plan_writes;
use crate::rows::{JobRow, RunRow, readable_jobs, runs_from_rows};
use crate::{Lease, RequestedCancel, StoreError};

pub(super) async fn earliest_next_run_at(
    store: &SqliteStore,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT min(next_run_at) FROM jobs WHERE active = 1 AND paused = 0")
            .fetch_one(&store.pool)
            .await?,
    )
}

pub(super) async fn lease_due(
    store: &SqliteStore,
    now: DateTime<Utc>,
    epoch: i64,
    limit: u32,
    settings: &LeaseSettings,
) -> Result<Lease, StoreError> {
    let mut tx = store.write_transaction().await?;
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
    let cancel_requested: Vec<RequestedCancel> = if writes.cancel_active_of.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as::<_, (i64, Option<String>)>(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?2) \
             WHERE job_id IN (SELECT value FROM json_each(?1)) \
             AND state IN ('dispatched', 'running') RETURNING id, worker",
        )
        .bind(id_list(&writes.cancel_active_of))
        .bind(ts(now))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(run_id, worker)| RequestedCancel { run_id, worker })
        .collect()
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
