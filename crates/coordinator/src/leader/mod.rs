//! What the leader does, in six loops that run for as long as its term lasts, one file
//! each:
//!
//! - **scheduler** (`scheduler.rs`): sleeps until the earliest `next_run_at` (or a
//!   wake-up), then leases every due job in fenced batches — its cost follows the due
//!   jobs, not all jobs;
//! - **dispatcher** (`dispatcher.rs`): gives dispatchable runs to the least-loaded
//!   suitable worker, or records why a run waits; woken by new runs, connecting workers
//!   and finished runs;
//! - **monitor** (`monitor.rs`): resolves what nobody will report: runs past deadline +
//!   grace become `timed_out`, runs of workers silent past the worker timeout become `lost`
//!   (and run again, a bounded number of times), orphaned runs of a reconnected worker
//!   likewise; delivers operators' cancels and saves live logs;
//! - **pruner** (`pruner.rs`): history retention;
//! - **alerting** (`alerting.rs`): the alert evaluator and the outbox's delivery.
//!
//! Every lease and dispatch is fenced by the term's epoch: when the store answers
//! `Fenced`, the term ends at once. What happens to a run after its dispatch goes through
//! `crate::runs`.

mod alerting;
mod dispatcher;
mod monitor;
mod pruner;
mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use crate::node::{Node, Term};
use crate::wake::Wakeup;

/// The longest the scheduler or dispatcher sleeps without a reason: a safety net for a
/// change announcement from another coordinator that got lost (see `relay_changes`).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// The pause after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// Starts the leader's loops for `term` in `loops`; they end with the term.
pub(crate) fn spawn_loops(node: &Arc<Node>, term: &Term, loops: &mut JoinSet<()>) {
    loops.spawn(scheduler::run_scheduler(Arc::clone(node), term.clone()));
    loops.spawn(dispatcher::run_dispatcher(Arc::clone(node), term.clone()));
    loops.spawn(monitor::run_monitor(Arc::clone(node), term.clone()));
    loops.spawn(pruner::run_pruner(Arc::clone(node), term.clone()));
    loops.spawn(alerting::run_alert_evaluator(
        Arc::clone(node),
        term.clone(),
    ));
    loops.spawn(alerting::run_alert_delivery(Arc::clone(node), term.clone()));
}

fn until(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (then - now).to_std().unwrap_or(Duration::ZERO)
}

/// Sleeps for `wait`, or until woken or the term ends. Returns false when the term ended.
async fn idle(term: &Term, wakeup: &Wakeup, wait: Duration) -> bool {
    tokio::select! {
        () = term.ended.cancelled() => false,
        () = wakeup.woken() => true,
        () = tokio::time::sleep(wait) => true,
    }
}
