//! The SQLite store, for the embedded single-node mode (`cronfleet dev`): one file, no
//! server. Writers take the database lock up front (`BEGIN IMMEDIATE`), so a lease is as
//! atomic as on PostgreSQL; there is one leaser, so no row-level skipping is needed.
//!
//! Times are stored as fixed-width UTC text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`): text order is
//! then time order, which the due-job index and every comparison rely on.
//!
//! One file per concern, the same files as the PostgreSQL store's: `jobs` (the admin API's
//! [`crate::JobStore`]), `lease`, `dispatch`, `transitions`, `prune` and `leadership` (the
//! [`crate::LeaderStore`], put together from them by [`crate::leader::leader_store_by_concern`]),
//! `changes` (nothing to announce: one process owns the file).

mod alerts;
mod changes;
mod dispatch;
mod jobs;
mod leadership;
mod lease;
mod prune;
mod transitions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_core::run::Run;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::StoreError;
use crate::rows::RunRow;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`crate::Store`].
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
        let lock = leadership::lock_exclusively(path)?;
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

    pub(super) async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

crate::leader::leader_store_by_concern!(SqliteStore);

async fn check_epoch(conn: &mut SqliteConnection, ours: i64) -> Result<(), StoreError> {
    let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    StoreError::check_epoch(ours, current)
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
