//! The change feed, which SQLite does without: one process owns the file, so the leader's
//! loops are woken in-process and there is nobody else to tell.

use async_trait::async_trait;

use super::SqliteStore;
use crate::{ChangeFeed, Changes, StoreError};

#[async_trait]
impl Changes for SqliteStore {
    async fn announce_change(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(None)
    }
}
