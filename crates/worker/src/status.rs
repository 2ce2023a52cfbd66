//! What a running worker looks like from outside: registered or not, with whom, how busy.
//! Readiness probes (`/readyz`) and tests read it through a [`WorkerStatus`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{GaugeValues, WorkerMetrics};

/// The coordinator (leader) a worker is registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The URL the worker connected to.
    pub url: String,
    /// `Registered.coordinator_id`.
    pub coordinator_id: String,
    /// The leader's fencing epoch.
    pub epoch: i64,
}

/// A snapshot of a worker's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Set while registered with a leader.
    pub registration: Option<Registration>,
    /// Runs executing now.
    pub running: usize,
    /// Finished runs whose `RunFinished` waits for a connection.
    pub unreported: usize,
    /// False once the worker is shutting down (it takes no new runs).
    pub accepting: bool,
    /// The highest fencing epoch seen.
    pub highest_epoch: i64,
}

/// A live view of a worker's [`Status`] and metrics; cheap to clone, usable after the
/// worker ended.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    receiver: watch::Receiver<Status>,
    metrics: Arc<WorkerMetrics>,
}

impl WorkerStatus {
    pub(crate) fn new(receiver: watch::Receiver<Status>, metrics: Arc<WorkerMetrics>) -> Self {
        WorkerStatus { receiver, metrics }
    }

    /// The worker's metrics as Prometheus text (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        let status = self.current();
        self.metrics.render(GaugeValues {
            busy_slots: status.running,
            connected: status.registration.is_some(),
        })
    }

    /// The current state.
    pub fn current(&self) -> Status {
        self.receiver.borrow().clone()
    }

    /// Whether the worker is registered with a leader now (what `/readyz` reports).
    pub fn is_registered(&self) -> bool {
        self.receiver.borrow().registration.is_some()
    }

    /// Waits until `condition` holds, for at most `timeout`; the state it held in, or
    /// `None` on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Status) -> bool,
    ) -> Option<Status> {
        let mut receiver = self.receiver.clone();
        let waited = tokio::time::timeout(timeout, async {
            receiver
                .wait_for(|status| condition(status))
                .await
                .map(|status| status.clone())
                .ok()
        })
        .await;
        match waited {
            Ok(Some(status)) => Some(status),
            // The worker is gone: its last state is final.
            Ok(None) => {
                let status = self.receiver.borrow().clone();
                condition(&status).then_some(status)
            }
            Err(_) => None,
        }
    }
}
