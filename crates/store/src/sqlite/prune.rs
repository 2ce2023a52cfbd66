//! History retention.

use chrono::{DateTime, Utc};

use super::{SqliteStore, ts};
use crate::StoreError;

pub(super) async fn prune_runs(
    store: &SqliteStore,
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
    .execute(&store.pool)
    .await?;
    Ok(pruned.rows_affected())
}
