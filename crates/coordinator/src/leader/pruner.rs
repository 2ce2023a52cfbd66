//! History retention: every minute, deletes ended runs older than `--run-retention` or
//! beyond `--runs-per-job`, in small batches with pauses between them, and alerts resolved
//! longer than `--run-retention` ago (a batch a minute).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tracing::{info, warn};

use super::idle;
use crate::node::{Node, Term};
use crate::wake::Wakeup;

/// How often the leader prunes the run history, and how much per statement.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
const PRUNE_BATCH: u32 = 500;
/// The pause between two prune statements, so pruning never hogs the database.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// History retention for one term: every minute, deletes ended runs older than the
/// retention or beyond the runs kept per job, in small batches.
pub(super) async fn run_pruner(node: Arc<Node>, term: Term) {
    let retention = TimeDelta::from_std(node.config.run_retention).unwrap_or(TimeDelta::MAX);
    loop {
        let mut pruned = 0u64;
        loop {
            let cutoff = node.clock.now() - retention;
            match node
                .store
                .prune_runs(cutoff, node.config.runs_per_job, PRUNE_BATCH)
                .await
            {
                Ok(batch) => {
                    pruned += batch;
                    if batch < u64::from(PRUNE_BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    warn!(%error, "cannot prune the run history; will try again");
                    break;
                }
            }
            if !idle(&term, &Wakeup::default(), PRUNE_PAUSE).await {
                return;
            }
        }
        if pruned > 0 {
            info!(runs = pruned, "pruned the run history");
        }
        // Resolved alerts follow the runs' retention (firing ones stay, however old).
        let cutoff = node.clock.now() - retention;
        match node.alerts.prune_alerts(cutoff, PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(alerts) => info!(alerts, "pruned resolved alerts"),
            Err(error) => warn!(%error, "cannot prune resolved alerts; will try again"),
        }
        if !idle(&term, &Wakeup::default(), PRUNE_INTERVAL).await {
            return;
        }
    }
}
