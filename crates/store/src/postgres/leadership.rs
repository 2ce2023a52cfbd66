//! The leadership: raising the fencing epoch, and the sole leadership of a coordinator
//! without an election service (a session advisory lock).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::PostgresStore;
use crate::{SoleLeadership, StoreError};

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

pub(super) async fn claim_sole_leadership(
    store: &PostgresStore,
) -> Result<Option<Box<dyn SoleLeadership>>, StoreError> {
    let mut connection = PgConnection::connect_with(&store.pool.connect_options()).await?;
    let claimed: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SOLE_LEADERSHIP_LOCK)
        .fetch_one(&mut connection)
        .await?;
    Ok(claimed.then(|| Box::new(AdvisoryLockLeadership { connection }) as Box<dyn SoleLeadership>))
}

pub(super) async fn raise_epoch(store: &PostgresStore, epoch: i64) -> Result<i64, StoreError> {
    let current: i64 = sqlx::query_scalar(
        "WITH raised AS (UPDATE fencing SET epoch = $1 WHERE id = 1 AND epoch < $1 RETURNING epoch) \
         SELECT COALESCE((SELECT epoch FROM raised), (SELECT epoch FROM fencing WHERE id = 1))",
    )
    .bind(epoch)
    .fetch_one(&store.pool)
    .await?;
    Ok(current)
}
