//! The PostgreSQL store, for clusters: row locks with `SKIP LOCKED` let leasers work side
//! by side, the `fencing` row serialises leasing against a leadership change, and batched
//! `UNNEST` writes keep a lease to a handful of statements however many jobs it takes.
//!
//! One file per concern, the same files as the SQLite store's: `jobs` (the admin API's
//! [`crate::JobStore`]), `lease`, `dispatch`, `transitions`, `prune` and `leadership` (the
//! [`crate::LeaderStore`], put together from them by [`crate::leader::leader_store_by_concern`]),
//! `changes` (`LISTEN`/`NOTIFY`).

mod alerts;
mod changes;
mod dispatch;
mod jobs;
mod leadership;
mod lease;
mod prune;
mod transitions;

use std::time::Duration;

use cronfleet_core::run::Run;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::StoreError;
use crate::rows::RunRow;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL implementation of [`crate::Store`].
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

crate::leader::leader_store_by_concern!(PostgresStore);

/// Locks the fencing row in share mode and checks that `ours` is the epoch in force. A
/// concurrent `raise_epoch` waits for this transaction, and every later one sees the new
/// epoch: no statement of a deposed leader commits after its successor took over.
async fn check_epoch(conn: &mut PgConnection, ours: i64) -> Result<(), StoreError> {
    let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1 FOR SHARE")
        .fetch_one(&mut *conn)
        .await?;
    StoreError::check_epoch(ours, current)
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
