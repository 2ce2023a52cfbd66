//! [`Changes`], the change feed: admin calls on any coordinator announce that jobs or runs
//! changed, and the leader's loops, told through a [`ChangeFeed`], look again at once.

use async_trait::async_trait;

use crate::StoreError;

/// Announcements that jobs or runs changed outside the leader's own loops.
#[async_trait]
pub trait Changes: Send + Sync + std::fmt::Debug {
    /// Tells every process on this store that jobs or runs changed outside the leader's
    /// own loops (an admin call on any coordinator), so that the leader looks again now
    /// rather than at its next deadline. Nothing to do where one process owns the store.
    async fn announce_change(&self) -> Result<(), StoreError>;

    /// The announcements of [`Changes::announce_change`] made by any process, this one
    /// included; `None` where one process owns the store and there is nobody to hear.
    async fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError>;
}

/// A subscription to [`Changes::announce_change`].
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits until something may have changed: an announcement, or a lost and re-made
    /// connection (announcements made meanwhile are gone, so look again either way). An
    /// error means the feed is broken: open a new one.
    async fn changed(&mut self) -> Result<(), StoreError>;
}
