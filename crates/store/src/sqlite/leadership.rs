//! The leadership: raising the fencing epoch, and the sole leadership, which is the lock
//! on the database file taken at open (one process per file).

use std::path::Path;

use async_trait::async_trait;

use super::SqliteStore;
use crate::{SoleLeadership, StoreError};

/// Locks `PATH.lock` (created if missing) exclusively, or says who has the database. The
/// kernel releases the lock when the process ends, however it ends.
pub(super) fn lock_exclusively(path: &Path) -> Result<std::fs::File, StoreError> {
    let lock_path = path.with_extension("db.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| {
            StoreError::Corrupt(format!(
                "cannot open the lock file {}: {error}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::InUse(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(StoreError::Corrupt(format!(
            "cannot lock {}: {error}",
            lock_path.display()
        ))),
    }
}

/// SQLite's sole leadership: the file lock taken at open, which cannot be lost.
#[derive(Debug)]
struct FileLockLeadership;

#[async_trait]
impl SoleLeadership for FileLockLeadership {
    async fn lost(&mut self) {
        std::future::pending::<()>().await;
    }
}

pub(super) async fn claim_sole_leadership(
    _store: &SqliteStore,
) -> Result<Option<Box<dyn SoleLeadership>>, StoreError> {
    // The file lock taken at open already makes this process the only one.
    Ok(Some(Box::new(FileLockLeadership)))
}

pub(super) async fn raise_epoch(store: &SqliteStore, epoch: i64) -> Result<i64, StoreError> {
    let mut tx = store.write_transaction().await?;
    sqlx::query("UPDATE fencing SET epoch = ?1 WHERE id = 1 AND epoch < ?1")
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT epoch FROM fencing WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(current)
}
