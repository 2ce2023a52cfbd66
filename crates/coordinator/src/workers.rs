//! What the coordinator knows about connected workers, as the admin API shows it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A connected worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub node_id: String,
    pub handlers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Runs it is executing now.
    pub busy: u32,
    pub connected_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub state: WorkerState,
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Connected,
    /// Takes no new runs (it asked to drain, or was told to).
    Draining,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Connected => "connected",
            WorkerState::Draining => "draining",
        }
    }
}

/// The workers connected to this coordinator (none on a coordinator that is not the
/// leader: workers connect to the leader).
pub trait WorkerDirectory: Send + Sync + Debug + 'static {
    fn workers(&self) -> Vec<WorkerInfo>;

    /// An operator's drain of connected worker `node_id` (`draining`: it gets no new runs;
    /// `false`: it gets them again), answering the worker as it is now; `None` when no
    /// such worker is connected (or this directory cannot drain).
    fn drain(&self, node_id: &str, draining: bool) -> Option<WorkerInfo> {
        let _ = (node_id, draining);
        None
    }
}
