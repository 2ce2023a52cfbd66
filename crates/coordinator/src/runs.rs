//! Every change of a run after its dispatch, made by the leader of one term: its start,
//! its end and what follows it (a retry, a continuation, an automatic pause), its
//! progress, its loss (and the rerun of its slot), its timeout, and the cancels sent to its
//! worker. The gateway turns worker reports into calls here, the monitor its verdicts, the
//! dispatcher an undeliverable assign; each change is written to the store (fenced where it
//! is the leader's own decision), counted, logged, and wakes the dispatcher when it frees
//! a run's place.
//!
//! Nothing here reads a run back from the store: what a change needs (the run's worker,
//! its job and times for the metrics) comes with the change. The store it writes through
//! is the node's (counted), or for worker reports one that also retries while the store
//! is unreachable (`store_wrappers.rs`), so that a report is not dropped while
//! PostgreSQL restarts.

use cronfleet_core::run::{Progress, Run, RunState, output_tail};
use cronfleet_store::{FinishOrder, Finished, LeaderStore, RunTransition, StoreError};
use tracing::{info, warn};

use crate::node::{Node, Term};
use crate::protocol::{self, ReportedEnd, RunEnd};

/// The changes of runs one leader makes in one term.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunChanges<'a> {
    node: &'a Node,
    term: &'a Term,
    store: &'a dyn LeaderStore,
}

impl<'a> RunChanges<'a> {
    /// Changes written through the node's store.
    pub(crate) fn new(node: &'a Node, term: &'a Term) -> RunChanges<'a> {
        RunChanges {
            node,
            term,
            store: node.store.as_ref(),
        }
    }

    /// Changes written through `store` (the retrying store of a worker's reports).
    pub(crate) fn through(
        node: &'a Node,
        term: &'a Term,
        store: &'a dyn LeaderStore,
    ) -> RunChanges<'a> {
        RunChanges { node, term, store }
    }

    /// Tells `worker` (if it is connected) to stop run `run_id`.
    pub(crate) fn cancel(&self, run_id: i64, worker: &str, reason: &str) {
        if let Some(sender) = self.node.registry.sender_of(worker)
            && sender.try_send(protocol::cancel(run_id, reason)).is_err()
        {
            warn!(
                run_id,
                worker, "could not send cancel: the worker's stream is gone or full"
            );
        }
    }

    /// Declares a run lost and wakes the dispatcher if its slot is to run again. Returns
    /// false if the term is over.
    pub(crate) async fn lose(&self, run_id: i64, reason: &str) -> bool {
        let node = self.node;
        let now = node.clock.now();
        match self
            .store
            .mark_lost(
                run_id,
                self.term.epoch,
                reason,
                node.config.max_losses_per_slot,
                now,
            )
            .await
        {
            Ok(lost) => {
                node.registry.forget_run(run_id);
                info!(
                    run_id,
                    reason,
                    epoch = self.term.epoch,
                    rerun = lost.rerun.as_ref().map(|run| run.id),
                    "run lost"
                );
                node.metrics.run_finished(&lost.run);
                if let Some(rerun) = &lost.rerun {
                    node.metrics.run_created(rerun.trigger);
                    node.dispatcher_wake.wake();
                }
                true
            }
            Err(StoreError::Fenced { .. }) => {
                self.term.ended.cancel();
                false
            }
            Err(StoreError::IllegalTransition { .. }) => true,
            Err(error) => {
                warn!(run_id, %error, "cannot mark the run lost; will try again");
                true
            }
        }
    }

    /// Ends an active run that is past its timeout and grace as `timed_out` (fenced: a
    /// deposed leader must not), and tells its worker to stop it. Returns false if the term
    /// is over.
    pub(crate) async fn time_out(&self, run: &Run, worker: &str, error: String) -> bool {
        let node = self.node;
        let transition = RunTransition::to(RunState::TimedOut)
            .with_error(error.clone())
            .fenced(self.term.epoch);
        let rules = node.config.finish_rules(0);
        match self
            .store
            .finish_run(run.id, &transition, &rules, node.clock.now())
            .await
        {
            Ok(finished) => {
                warn!(run_id = run.id, job = %run.job_name, worker, slot = %run.slot, epoch = self.term.epoch, "run timed out");
                self.record_finished(&finished, worker);
                node.registry.release(worker, run.id);
                self.cancel(run.id, worker, &error);
                node.dispatcher_wake.wake();
                true
            }
            Err(StoreError::Fenced { .. }) => {
                self.term.ended.cancel();
                false
            }
            Err(error) => {
                warn!(run_id = run.id, %error, "cannot time the run out");
                true
            }
        }
    }

    /// Records that `worker` started runs `run_ids`, in one transaction; a run the
    /// coordinator has already given up is cancelled on the worker.
    pub(crate) async fn record_starts(&self, worker: &str, run_ids: Vec<i64>) {
        if run_ids.is_empty() {
            return;
        }
        let node = self.node;
        let running = RunTransition::to(RunState::Running);
        let batch: Vec<(i64, RunTransition)> =
            run_ids.iter().map(|id| (*id, running.clone())).collect();
        let results = match self.store.transition_runs(&batch, node.clock.now()).await {
            Ok(results) => results,
            Err(error) => {
                warn!(runs = run_ids.len(), worker, %error, "cannot record run starts");
                return;
            }
        };
        let now = node.clock.now();
        for (run_id, result) in run_ids.into_iter().zip(results) {
            match result {
                Ok(run) => node.metrics.run_started(&run, now),
                Err(StoreError::IllegalTransition { source, .. }) => {
                    // The coordinator has already given this run up (timed out, lost,
                    // cancelled): the worker must not go on with it.
                    warn!(run_id, worker, %source, "worker started a run that is over");
                    self.cancel(run_id, worker, "the run is already over");
                }
                Err(_) => {}
            }
        }
    }

    /// Records the ends `worker` reported, in one transaction; a run it stopped before
    /// it completed, or never started, is declared lost at once so that it runs again.
    pub(crate) async fn record_ends(&self, worker: &str, ends: Vec<ReportedEnd>) {
        if ends.is_empty() {
            return;
        }
        let node = self.node;
        let log_limit = node.config.run_log_limit;
        let mut orders = Vec::with_capacity(ends.len());
        for ReportedEnd { run_id, end } in ends {
            let logged = node.registry.take_output(run_id, log_limit);
            match end {
                RunEnd::Aborted { error } => {
                    node.registry.release(worker, run_id);
                    let reason = format!("stopped by worker {worker} before it completed: {error}");
                    self.lose(run_id, &reason).await;
                }
                RunEnd::Rejected { error } => {
                    node.registry.release(worker, run_id);
                    // Never started: another worker may run it at once. A worker that
                    // refuses work (it is draining, or out of step with us) gets no more on
                    // this connection, so the run does not bounce back to it.
                    node.registry.set_draining(worker);
                    let reason = format!("rejected by worker {worker}: {error}");
                    self.lose(run_id, &reason).await;
                }
                RunEnd::Completed {
                    state,
                    error,
                    output,
                    remaining,
                } => {
                    let mut transition = RunTransition::to(state);
                    if let Some(error) = error {
                        transition = transition.with_error(error);
                    }
                    let output = match output {
                        Some(output) => Some(output_tail(&output, log_limit).to_owned()),
                        None => logged,
                    };
                    if let Some(output) = output {
                        transition = transition.with_output(output);
                    }
                    orders.push(FinishOrder {
                        id: run_id,
                        transition,
                        rules: node.config.finish_rules(remaining),
                    });
                }
            }
        }
        if !orders.is_empty() {
            match self.store.finish_runs(&orders, node.clock.now()).await {
                Ok(results) => {
                    for (order, result) in orders.iter().zip(results) {
                        match result {
                            Ok(finished) => self.record_finished(&finished, worker),
                            Err(error) => {
                                warn!(run_id = order.id, worker, %error, "cannot record the run's result")
                            }
                        }
                    }
                }
                Err(error) => {
                    warn!(runs = orders.len(), worker, %error, "cannot record the runs' results")
                }
            }
            // Only now: until its end is recorded, the run is still this session's (the
            // monitor would take an active run its session does not hold for an orphan).
            for order in &orders {
                node.registry.release(worker, order.id);
            }
        }
        node.dispatcher_wake.wake();
    }

    /// Records a run's latest progress report.
    pub(crate) async fn record_progress(&self, run_id: i64, progress: Progress) {
        if let Err(error) = self.store.record_progress(run_id, progress).await {
            warn!(run_id, %error, "cannot record progress");
        }
    }

    /// Logs and counts what a run's end brought: the end itself, a retry, a continuation,
    /// the job paused.
    fn record_finished(&self, finished: &Finished, worker: &str) {
        let metrics = &self.node.metrics;
        let run = &finished.run;
        metrics.run_finished(run);
        for next in [&finished.retry, &finished.continuation]
            .into_iter()
            .flatten()
        {
            metrics.run_created(next.trigger);
        }
        info!(run_id = run.id, job = %run.job_name, worker, state = %run.state, slot = %run.slot, attempt = run.attempt, epoch = run.epoch, "run finished");
        if let Some(retry) = &finished.retry {
            info!(run_id = retry.id, job = %retry.job_name, slot = %retry.slot, attempt = retry.attempt, not_before = ?retry.not_before, "retry scheduled");
        }
        if let Some(next) = &finished.continuation {
            info!(run_id = next.id, job = %next.job_name, slot = %next.slot, "continuation scheduled: work remains");
        }
        if let Some(reason) = &finished.paused {
            warn!(job = %run.job_name, reason, "job paused automatically");
        }
    }
}
