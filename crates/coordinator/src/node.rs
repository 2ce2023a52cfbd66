//! What one coordinator node is and has, as plain data: its role (follower, or leader for
//! one term), and the handles every task of the node shares — configuration, store, clock,
//! election, the registry of connected workers, the loops' wake-ups, traces and metrics.
//!
//! Nothing here decides or does anything: the leader's loops (`leader/`), the worker
//! protocol (`gateway/`) and the changes of runs (`runs.rs`) all read this, and this
//! imports none of them.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cronfleet_store::{AlertStore, LeaderStore};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertSender;
use crate::clock::Clock;
use crate::config::CoordinatorConfig;
use crate::election::Election;
use crate::metrics::CoordinatorMetrics;
use crate::registry::Registry;
use crate::run_trace::RunTraces;
use crate::wake::Wakeup;

/// What this node is right now.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    Follower,
    Leader(Term),
}

impl Role {
    pub(crate) fn term(&self) -> Option<&Term> {
        match self {
            Role::Leader(term) => Some(term),
            Role::Follower => None,
        }
    }
}

/// One leadership term.
#[derive(Clone, Debug)]
pub(crate) struct Term {
    pub epoch: i64,
    /// When this term began: a worker not heard from in this term counts as silent since.
    pub since: DateTime<Utc>,
    /// Cancelled when the term ends, for whatever reason.
    pub ended: CancellationToken,
}

/// Everything the coordinator's tasks share.
pub(crate) struct Node {
    pub config: CoordinatorConfig,
    /// What the leader needs of the store, its failures counted (`store_wrappers.rs`).
    pub store: Arc<dyn LeaderStore>,
    pub clock: Arc<dyn Clock>,
    pub election: Arc<dyn Election>,
    pub registry: Arc<Registry>,
    pub scheduler_wake: Wakeup,
    pub dispatcher_wake: Wakeup,
    pub role: watch::Sender<Role>,
    /// Roots of the traces of runs leased in this term, for their dispatch.
    pub traces: RunTraces,
    pub metrics: Arc<CoordinatorMetrics>,
    /// Alert state and its outbox.
    pub alerts: Arc<dyn AlertStore>,
    pub alert_sender: AlertSender,
    /// Wakes the alert delivery loop when the evaluator wrote outbox rows.
    pub delivery_wake: Wakeup,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}
