//! Leadership: which coordinator schedules and dispatches, and under which fencing epoch.
//!
//! The [`Election`] trait has a local implementation for a single coordinator (and
//! `cronfleet dev`); the etcd implementation plugs in behind the same trait. Whoever wins
//! raises the epoch in the store before doing anything else, so the store itself refuses
//! the statements of a deposed leader.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use cronfleet_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Won leadership.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// The fencing epoch: greater than that of every earlier leader.
    pub epoch: i64,
    /// Cancelled when leadership is lost (a missed keep-alive, a lost etcd): the leader
    /// must stop leasing and dispatching at once.
    pub lost: CancellationToken,
}

/// The leader, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node_id: String,
    /// Where workers and clients reach it (its `--advertise-url`).
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("election store error: {0}")]
    Store(#[from] StoreError),
    #[error("election backend error: {0}")]
    Backend(String),
}

#[async_trait]
pub trait Election: Send + Sync + Debug + 'static {
    /// Waits until this node is the leader.
    async fn campaign(&self) -> Result<Leadership, ElectionError>;

    /// The current leader, if there is one (no leader is a normal state, not an error).
    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError>;

    /// The coordinators taking part in the election now, the leader first.
    async fn coordinators(&self) -> Result<Vec<LeaderInfo>, ElectionError>;

    /// Gives leadership up (on shutdown), so that another node takes over at once.
    async fn resign(&self, leadership: &Leadership) -> Result<(), ElectionError>;
}

/// A single coordinator that is always the leader. Its epoch is one above the store's, so
/// a restarted coordinator fences whatever its previous incarnation may still be doing.
#[derive(Debug)]
pub struct LocalElection {
    store: Arc<dyn Store>,
    me: LeaderInfo,
}

impl LocalElection {
    pub fn new(store: Arc<dyn Store>, me: LeaderInfo) -> LocalElection {
        LocalElection { store, me }
    }
}

#[async_trait]
impl Election for LocalElection {
    async fn campaign(&self) -> Result<Leadership, ElectionError> {
        let epoch = self.store.epoch().await? + 1;
        Ok(Leadership {
            epoch,
            lost: CancellationToken::new(),
        })
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        Ok(Some(self.me.clone()))
    }

    async fn coordinators(&self) -> Result<Vec<LeaderInfo>, ElectionError> {
        Ok(vec![self.me.clone()])
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), ElectionError> {
        leadership.lost.cancel();
        Ok(())
    }
}
