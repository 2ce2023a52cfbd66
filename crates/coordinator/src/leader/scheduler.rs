//! The scheduler: sleeps until the earliest `next_run_at` of an active job (or a wake-up:
//! a job changed), then leases every due job in fenced batches of `--lease-batch`, and
//! hands the runs it created to the dispatcher.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cronfleet_store::StoreError;
use tracing::{debug, error, warn};

use super::{MAX_IDLE, STORE_RETRY, idle, until};
use crate::node::{Node, Term};
use crate::runs::RunChanges;

/// The scheduler loop of one term.
pub(super) async fn run_scheduler(node: Arc<Node>, term: Term) {
    let batch = node.config.lease_batch;
    loop {
        let now = node.clock.now();
        let mut failed = false;
        loop {
            let started = SystemTime::now();
            let timer = Instant::now();
            match node
                .store
                .lease_due(now, term.epoch, batch, &node.config.lease)
                .await
            {
                Ok(lease) => {
                    node.metrics.leased(lease.jobs_leased, timer.elapsed());
                    for job in &lease.unreadable {
                        error!(job = %job.name, error = %job.error, "a due job cannot be read: paused so that the others keep their schedule");
                        node.metrics
                            .store_error("lease_due", &StoreError::Corrupt(job.error.clone()));
                    }
                    for run in &lease.runs {
                        node.metrics.run_created(run.trigger);
                    }
                    node.traces.leased(
                        &lease.runs,
                        term.epoch,
                        lease.jobs_leased,
                        started,
                        SystemTime::now(),
                    );
                    if !lease.runs.is_empty() {
                        debug!(runs = lease.runs.len(), epoch = term.epoch, "leased");
                        node.dispatcher_wake.wake();
                    }
                    // Marked as sent, so the monitor's cancel delivery does not repeat it.
                    let changes = RunChanges::new(&node, &term);
                    for cancel in lease.cancel_requested {
                        let Some(worker) = cancel.worker.as_deref() else {
                            continue;
                        };
                        if node.registry.first_cancel(cancel.run_id) {
                            changes.cancel(
                                cancel.run_id,
                                worker,
                                "replaced by a newer run (overlap policy replace)",
                            );
                        }
                    }
                    if u32::try_from(lease.jobs_leased).unwrap_or(u32::MAX) < batch {
                        break;
                    }
                }
                Err(StoreError::Fenced { ours, current }) => {
                    warn!(ours, current, "fenced by a newer leader: stepping down");
                    term.ended.cancel();
                    return;
                }
                Err(error) => {
                    warn!(%error, "leasing failed; will try again");
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            STORE_RETRY
        } else {
            match node.store.earliest_next_run_at().await {
                Ok(Some(next)) => until(node.clock.now(), next).min(MAX_IDLE),
                Ok(None) => MAX_IDLE,
                Err(error) => {
                    warn!(%error, "cannot read the next due time; will try again");
                    STORE_RETRY
                }
            }
        };
        if !idle(&term, &node.scheduler_wake, wait).await {
            return;
        }
    }
}
