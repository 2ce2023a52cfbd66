//! The dispatcher: reads dispatchable runs page by page (priority, then age), reserves a
//! place for each on the least-loaded suitable worker, records the dispatches in one
//! fenced transaction and sends each worker its assigns; a run nobody can take has its
//! reason recorded.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use cronfleet_core::run::Run;
use cronfleet_store::{DispatchableRun, RunTransition, StoreError};
use tracing::{debug, info, warn};

use super::{MAX_IDLE, STORE_RETRY, idle, until};
use crate::node::{Node, Term};
use crate::protocol;
use crate::registry::Reservation;
use crate::run_trace::dispatch_span;
use crate::runs::RunChanges;

/// The dispatcher loop of one term.
pub(super) async fn run_dispatcher(node: Arc<Node>, term: Term) {
    let batch = node.config.dispatch_batch;
    // Where the next page starts: a full page is followed by the next one while workers
    // have room, so runs nobody can take (a handler no worker offers, labels no worker
    // has) never hide the runnable ones behind them. Back to the top once the order is
    // read to its end or the workers are full, so priority holds.
    let mut after = None;
    loop {
        if term.ended.is_cancelled() {
            return;
        }
        let now = node.clock.now();
        let wait = match node.store.dispatchable_runs(now, after, batch).await {
            Ok(candidates) => {
                let full = u32::try_from(candidates.len()).unwrap_or(u32::MAX) >= batch;
                after = candidates
                    .last()
                    .filter(|_| full)
                    .map(DispatchableRun::cursor);
                let mut waiting: HashMap<String, Vec<i64>> = HashMap::new();
                let mut shortages = Vec::new();
                let mut reserved = Vec::with_capacity(candidates.len());
                for candidate in candidates {
                    let run_id = candidate.run.id;
                    match node
                        .registry
                        .reserve(run_id, &candidate.handler, &candidate.labels)
                    {
                        Err(reason) => {
                            waiting.entry(reason.to_string()).or_default().push(run_id);
                            shortages.push(reason);
                        }
                        Ok(reservation) => reserved.push((candidate, reservation)),
                    }
                }
                let Some(dispatched) = dispatch_batch(&node, &term, reserved).await else {
                    return;
                };
                node.metrics.set_waiting_for_worker(shortages.iter());
                for (reason, ids) in waiting {
                    debug!(runs = ids.len(), reason, "runs wait");
                    if let Err(error) = node.store.set_pending_reason(&ids, Some(&reason)).await {
                        warn!(%error, "cannot record why runs wait");
                    }
                }
                if full && (dispatched > 0 || node.registry.has_free_capacity()) {
                    continue;
                }
                after = None;
                match node.store.earliest_not_before(now).await {
                    Ok(Some(next)) => until(node.clock.now(), next).min(MAX_IDLE),
                    Ok(None) => MAX_IDLE,
                    Err(_) => STORE_RETRY,
                }
            }
            Err(error) => {
                warn!(%error, "cannot read dispatchable runs; will try again");
                STORE_RETRY
            }
        };
        if !idle(&term, &node.dispatcher_wake, wait).await {
            return;
        }
    }
}

enum Dispatch {
    Sent,
    Skipped,
    TermEnded,
}

/// Dispatches reserved runs in one fenced store transaction, then sends each worker its
/// assigns. Returns how many were sent, or `None` when the term is over.
async fn dispatch_batch(
    node: &Node,
    term: &Term,
    reserved: Vec<(DispatchableRun, Reservation)>,
) -> Option<usize> {
    if reserved.is_empty() {
        return Some(0);
    }
    let now = node.clock.now();
    let mut spans = Vec::with_capacity(reserved.len());
    let mut orders = Vec::with_capacity(reserved.len());
    for (candidate, reservation) in &reserved {
        let timeout = candidate.timeout.unwrap_or(node.config.default_timeout);
        let deadline = now + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let root = node.traces.root_for_dispatch(&candidate.run);
        let span = dispatch_span(root, &candidate.run, &reservation.node_id, term.epoch);
        let transition = RunTransition::dispatch(&reservation.node_id, term.epoch, deadline)
            .with_trace_id(cronfleet_telemetry::trace_id_of(&span));
        orders.push((candidate.run.id, transition));
        spans.push(span);
    }
    let results = match node.store.transition_runs(&orders, now).await {
        Ok(results) => results,
        Err(error) => {
            for ((candidate, reservation), span) in reserved.iter().zip(&spans) {
                span.record("otel.status_description", error.to_string());
                node.registry
                    .release(&reservation.node_id, candidate.run.id);
            }
            if let StoreError::Fenced { .. } = error {
                term.ended.cancel();
                return None;
            }
            warn!(runs = orders.len(), %error, "dispatch failed; will try again");
            return Some(0);
        }
    };
    let mut sent = 0;
    for (((candidate, reservation), span), result) in reserved.into_iter().zip(spans).zip(results) {
        match result {
            Ok(run) => match deliver(node, term, candidate, reservation, run, &span).await {
                Dispatch::Sent => sent += 1,
                Dispatch::Skipped => {}
                Dispatch::TermEnded => return None,
            },
            Err(error) => {
                span.record("otel.status_description", error.to_string());
                node.registry
                    .release(&reservation.node_id, candidate.run.id);
                match error {
                    StoreError::JobBusy { .. } | StoreError::IllegalTransition { .. } => {}
                    error => {
                        warn!(run_id = candidate.run.id, %error, "dispatch failed; will try again");
                    }
                }
            }
        }
    }
    Some(sent)
}

/// Sends the assign of a run the store has just recorded as dispatched to its worker.
async fn deliver(
    node: &Node,
    term: &Term,
    candidate: DispatchableRun,
    reservation: Reservation,
    run: Run,
    span: &tracing::Span,
) -> Dispatch {
    let run_id = run.id;
    let worker = reservation.node_id;
    let timeout = candidate.timeout.unwrap_or(node.config.default_timeout);
    let assign = protocol::assign(
        &run,
        &candidate,
        timeout,
        term.epoch,
        cronfleet_telemetry::inject_span(span),
    );
    if reservation.sender.try_send(assign).is_err() {
        // The worker went away (or stopped reading) before it got the run, so it never
        // started it: run it elsewhere now rather than after the worker timeout.
        span.record("otel.status_description", "the worker disconnected");
        node.registry.release(&worker, run_id);
        let reason = format!("worker {worker} disconnected before the run was delivered");
        if !RunChanges::new(node, term).lose(run_id, &reason).await {
            return Dispatch::TermEnded;
        }
        return Dispatch::Skipped;
    }
    span.in_scope(|| info!("dispatched"));
    Dispatch::Sent
}
