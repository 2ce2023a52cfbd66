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

/// A single coordinator, the leader for as long as it holds the store's sole leadership
/// ([`Store::claim_sole_leadership`]: a PostgreSQL advisory lock, or the SQLite file's
/// lock). A second coordinator without an election on the same database waits as a
/// follower, saying why, instead of taking turns with the first. Its epoch is one above
/// the store's, so a restarted coordinator fences whatever its previous incarnation may
/// still be doing.
#[derive(Debug)]
pub struct LocalElection {
    store: Arc<dyn Store>,
    me: LeaderInfo,
    /// The task holding the claim while leading; it gives the claim up on resign.
    claim: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether this node holds the claim now.
    leading: Arc<std::sync::atomic::AtomicBool>,
}

/// How often a coordinator that found the claim taken asks again.
const CLAIM_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl LocalElection {
    pub fn new(store: Arc<dyn Store>, me: LeaderInfo) -> LocalElection {
        LocalElection {
            store,
            me,
            claim: tokio::sync::Mutex::new(None),
            leading: Arc::default(),
        }
    }
}

#[async_trait]
impl Election for LocalElection {
    async fn campaign(&self) -> Result<Leadership, ElectionError> {
        let mut waiting_since = None;
        let mut claim = loop {
            if let Some(claim) = self.store.claim_sole_leadership().await? {
                break claim;
            }
            if waiting_since.is_none() {
                waiting_since = Some(std::time::Instant::now());
                tracing::warn!(
                    node = %self.me.node_id,
                    "another coordinator without --etcd leads this database: waiting as a follower \
                     (run one coordinator per database without --etcd, or give every coordinator --etcd)"
                );
            }
            tokio::time::sleep(CLAIM_RETRY).await;
        };
        let epoch = self.store.epoch().await? + 1;
        let lost = CancellationToken::new();
        let lose = lost.clone();
        let leading = Arc::clone(&self.leading);
        leading.store(true, std::sync::atomic::Ordering::SeqCst);
        let holder = tokio::spawn(async move {
            tokio::select! {
                () = claim.lost() => lose.cancel(),
                () = lose.cancelled() => {}
            }
            leading.store(false, std::sync::atomic::Ordering::SeqCst);
            // Dropping the claim here gives it up.
        });
        if let Some(previous) = self.claim.lock().await.replace(holder) {
            previous.abort();
        }
        Ok(Leadership { epoch, lost })
    }

    /// This node while it holds the claim; who else does is unknown (no election).
    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        Ok(self
            .leading
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| self.me.clone()))
    }

    async fn coordinators(&self) -> Result<Vec<LeaderInfo>, ElectionError> {
        Ok(vec![self.me.clone()])
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), ElectionError> {
        leadership.lost.cancel();
        if let Some(holder) = self.claim.lock().await.take() {
            let _ = holder.await;
        }
        Ok(())
    }
}
