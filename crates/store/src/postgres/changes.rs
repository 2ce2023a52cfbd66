//! The change feed: `NOTIFY` on a channel, `LISTEN` on a connection of its own.

use async_trait::async_trait;
use sqlx::postgres::PgListener;

use super::PostgresStore;
use crate::{ChangeFeed, Changes, StoreError};

/// The `LISTEN`/`NOTIFY` channel of [`Changes::announce_change`].
const CHANGES_CHANNEL: &str = "cronfleet_changes";

/// A `LISTEN` on [`CHANGES_CHANNEL`], on a connection of its own.
struct PgChangeFeed {
    listener: PgListener,
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn changed(&mut self) -> Result<(), StoreError> {
        // `None`: the connection was lost and has been re-made (and `LISTEN` re-issued).
        self.listener.try_recv().await?;
        Ok(())
    }
}

#[async_trait]
impl Changes for PostgresStore {
    async fn announce_change(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANGES_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(Some(Box::new(PgChangeFeed { listener })))
    }
}
