//! What the dispatcher and the monitor read: dispatchable runs in dispatch order, why runs
//! wait, when the next one becomes dispatchable, the backlog, the active runs.

use chrono::{DateTime, Utc};
use cronfleet_core::run::Run;

use super::{SqliteStore, id_list, ts};
use crate::rows::{DispatchRow, RunRow, dispatchable_from_rows, runs_from_rows};
use crate::{DispatchCursor, DispatchableRun, StoreError};

pub(super) async fn dispatchable_runs(
    store: &SqliteStore,
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
    let rows: Vec<DispatchRow> = query.fetch_all(&store.pool).await?;
    dispatchable_from_rows(rows)
}

pub(super) async fn set_pending_reason(
    store: &SqliteStore,
    run_ids: &[i64],
    reason: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET pending_reason = ?2 WHERE id IN (SELECT value FROM json_each(?1)) \
         AND state = 'pending' AND pending_reason IS NOT ?2",
    )
    .bind(id_list(run_ids))
    .bind(reason)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn earliest_not_before(
    store: &SqliteStore,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT min(not_before) FROM runs WHERE state = 'pending' AND not_before > ?1",
    )
    .bind(ts(now))
    .fetch_one(&store.pool)
    .await?)
}

pub(super) async fn count_backlog(
    store: &SqliteStore,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE state = 'pending' \
         AND (not_before IS NULL OR not_before <= ?1)",
    )
    .bind(ts(now))
    .fetch_one(&store.pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(super) async fn active_runs(store: &SqliteStore) -> Result<Vec<Run>, StoreError> {
    let rows: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs JOIN jobs ON jobs.id = runs.job_id \
         WHERE runs.state IN ('dispatched', 'running') ORDER BY runs.id"
    ))
    .fetch_all(&store.pool)
    .await?;
    runs_from_rows(rows)
}
