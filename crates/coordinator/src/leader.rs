//! What the leader does, in three loops that run for as long as its term lasts:
//!
//! - **scheduler**: sleeps until the earliest `next_run_at` (or a wake-up), then leases
//!   every due job in fenced batches — its cost follows the due jobs, not all jobs;
//! - **dispatcher**: gives dispatchable runs to the least-loaded suitable worker, or
//!   records why a run waits; woken by new runs, connecting workers and finished runs;
//! - **monitor**: resolves what nobody will report: runs past deadline + grace become
//!   `timed_out`, runs of workers silent past the worker timeout become `lost` (and run
//!   again, a bounded number of times).
//!
//! Every lease and dispatch is fenced by the term's epoch: when the store answers
//! `Fenced`, the term ends at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use cronfleet_core::run::RunState;
use cronfleet_proto::v1::{Assign, Cancel, CoordinatorMessage, coordinator_message};
use cronfleet_proto::{timestamp, timestamp_opt};
use cronfleet_store::{DispatchableRun, RunTransition, Store, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::config::{CoordinatorConfig, LOSS_MARGIN};
use crate::election::Election;
use crate::gateway::record_finished;
use crate::metrics::CoordinatorMetrics;
use crate::registry::{Registry, Reservation};
use crate::run_trace::{RunTraces, dispatch_span};
use crate::wake::Wakeup;

/// The longest the scheduler or dispatcher sleeps without a reason: a safety net for a
/// change announcement from another coordinator that got lost (see `relay_changes`).
const MAX_IDLE: Duration = Duration::from_secs(60);
/// The pause after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// What this node is right now.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    Follower,
    Leader(Term),
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
pub(crate) struct Shared {
    pub config: CoordinatorConfig,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub election: Arc<dyn Election>,
    pub registry: Arc<Registry>,
    pub scheduler_wake: Wakeup,
    pub dispatcher_wake: Wakeup,
    pub role: watch::Sender<Role>,
    /// Roots of the traces of runs leased in this term, for their dispatch.
    pub traces: RunTraces,
    pub metrics: Arc<CoordinatorMetrics>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Tells `worker`, holding `run_id` (if it is connected), to stop it; `None`: the run
    /// has no worker to tell.
    pub(crate) async fn send_cancel(&self, run_id: i64, worker: Option<&str>, reason: &str) {
        let Some(worker) = worker else {
            return;
        };
        if let Some(sender) = self.registry.sender_of(worker) {
            let cancel = Cancel {
                run_id,
                reason: reason.to_owned(),
            };
            let message = CoordinatorMessage {
                kind: Some(coordinator_message::Kind::Cancel(cancel)),
            };
            if sender.try_send(Ok(message)).is_err() {
                warn!(
                    run_id,
                    worker, "could not send cancel: the worker's stream is gone or full"
                );
            }
        }
    }

    /// Declares a run lost and wakes the dispatcher if it is to run again. Returns false
    /// if the term is over.
    pub(crate) async fn lose_run(&self, term: &Term, run_id: i64, reason: &str) -> bool {
        let now = self.clock.now();
        match self
            .store
            .mark_lost(
                run_id,
                term.epoch,
                reason,
                self.config.max_losses_per_slot,
                now,
            )
            .await
        {
            Ok(lost) => {
                info!(
                    run_id,
                    reason,
                    epoch = term.epoch,
                    rerun = lost.rerun.as_ref().map(|run| run.id),
                    "run lost"
                );
                self.metrics.run_finished(&lost.run);
                if let Some(rerun) = &lost.rerun {
                    self.metrics.run_created(rerun.trigger);
                    self.dispatcher_wake.wake();
                }
                true
            }
            Err(StoreError::Fenced { .. }) => {
                term.ended.cancel();
                false
            }
            Err(StoreError::IllegalTransition { .. }) => true,
            Err(error) => {
                self.metrics.store_error("mark_lost", &error);
                warn!(run_id, %error, "cannot mark the run lost; will try again");
                true
            }
        }
    }
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

/// The scheduler loop of one term.
pub(crate) async fn run_scheduler(shared: Arc<Shared>, term: Term) {
    let batch = shared.config.lease_batch;
    loop {
        let now = shared.clock.now();
        let mut failed = false;
        loop {
            let started = SystemTime::now();
            let timer = Instant::now();
            match shared
                .store
                .lease_due(now, term.epoch, batch, &shared.config.lease)
                .await
            {
                Ok(lease) => {
                    shared.metrics.leased(lease.jobs_leased, timer.elapsed());
                    for job in &lease.unreadable {
                        error!(job = %job.name, error = %job.error, "a due job cannot be read: paused so that the others keep their schedule");
                        shared
                            .metrics
                            .store_error("lease_due", &StoreError::Corrupt(job.error.clone()));
                    }
                    for run in &lease.runs {
                        shared.metrics.run_created(run.trigger);
                    }
                    shared.traces.leased(
                        &lease.runs,
                        term.epoch,
                        lease.jobs_leased,
                        started,
                        SystemTime::now(),
                    );
                    if !lease.runs.is_empty() {
                        debug!(runs = lease.runs.len(), epoch = term.epoch, "leased");
                        shared.dispatcher_wake.wake();
                    }
                    // Marked as sent, so the monitor's cancel delivery does not repeat it.
                    for cancel in lease.cancel_requested {
                        if !shared.registry.first_cancel(cancel.run_id) {
                            continue;
                        }
                        shared
                            .send_cancel(
                                cancel.run_id,
                                cancel.worker.as_deref(),
                                "replaced by a newer run (overlap policy replace)",
                            )
                            .await;
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
                    shared.metrics.store_error("lease_due", &error);
                    warn!(%error, "leasing failed; will try again");
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            STORE_RETRY
        } else {
            match shared.store.earliest_next_run_at().await {
                Ok(Some(next)) => until(shared.clock.now(), next).min(MAX_IDLE),
                Ok(None) => MAX_IDLE,
                Err(error) => {
                    warn!(%error, "cannot read the next due time; will try again");
                    STORE_RETRY
                }
            }
        };
        if !idle(&term, &shared.scheduler_wake, wait).await {
            return;
        }
    }
}

/// The dispatcher loop of one term.
pub(crate) async fn run_dispatcher(shared: Arc<Shared>, term: Term) {
    let batch = shared.config.dispatch_batch;
    // Where the next page starts: a full page is followed by the next one while workers
    // have room, so runs nobody can take (a handler no worker offers, labels no worker
    // has) never hide the runnable ones behind them. Back to the top once the order is
    // read to its end or the workers are full, so priority holds.
    let mut after = None;
    loop {
        if term.ended.is_cancelled() {
            return;
        }
        let now = shared.clock.now();
        let wait = match shared.store.dispatchable_runs(now, after, batch).await {
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
                    match shared
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
                let Some(dispatched) = dispatch_batch(&shared, &term, reserved).await else {
                    return;
                };
                shared.metrics.set_waiting_for_worker(shortages.iter());
                for (reason, ids) in waiting {
                    debug!(runs = ids.len(), reason, "runs wait");
                    if let Err(error) = shared.store.set_pending_reason(&ids, Some(&reason)).await {
                        shared.metrics.store_error("set_pending_reason", &error);
                        warn!(%error, "cannot record why runs wait");
                    }
                }
                if full && (dispatched > 0 || shared.registry.has_free_capacity()) {
                    continue;
                }
                after = None;
                match shared.store.earliest_not_before(now).await {
                    Ok(Some(next)) => until(shared.clock.now(), next).min(MAX_IDLE),
                    Ok(None) => MAX_IDLE,
                    Err(_) => STORE_RETRY,
                }
            }
            Err(error) => {
                shared.metrics.store_error("dispatchable_runs", &error);
                warn!(%error, "cannot read dispatchable runs; will try again");
                STORE_RETRY
            }
        };
        if !idle(&term, &shared.dispatcher_wake, wait).await {
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
    shared: &Shared,
    term: &Term,
    reserved: Vec<(DispatchableRun, Reservation)>,
) -> Option<usize> {
    if reserved.is_empty() {
        return Some(0);
    }
    let now = shared.clock.now();
    let mut spans = Vec::with_capacity(reserved.len());
    let mut orders = Vec::with_capacity(reserved.len());
    for (candidate, reservation) in &reserved {
        let timeout = candidate.timeout.unwrap_or(shared.config.default_timeout);
        let deadline = now + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let root = shared.traces.root_for_dispatch(&candidate.run);
        let span = dispatch_span(root, &candidate.run, &reservation.node_id, term.epoch);
        let transition = RunTransition::dispatch(&reservation.node_id, term.epoch, deadline)
            .with_trace_id(cronfleet_telemetry::trace_id_of(&span));
        orders.push((candidate.run.id, transition));
        spans.push(span);
    }
    let results = match shared.store.transition_runs(&orders, now).await {
        Ok(results) => results,
        Err(error) => {
            for ((candidate, reservation), span) in reserved.iter().zip(&spans) {
                span.record("otel.status_description", error.to_string());
                shared
                    .registry
                    .release(&reservation.node_id, candidate.run.id);
            }
            if let StoreError::Fenced { .. } = error {
                term.ended.cancel();
                return None;
            }
            shared.metrics.store_error("transition_run", &error);
            warn!(runs = orders.len(), %error, "dispatch failed; will try again");
            return Some(0);
        }
    };
    let mut sent = 0;
    for (((candidate, reservation), span), result) in reserved.into_iter().zip(spans).zip(results) {
        match result {
            Ok(run) => match deliver(shared, term, candidate, reservation, run, &span).await {
                Dispatch::Sent => sent += 1,
                Dispatch::Skipped => {}
                Dispatch::TermEnded => return None,
            },
            Err(error) => {
                span.record("otel.status_description", error.to_string());
                shared
                    .registry
                    .release(&reservation.node_id, candidate.run.id);
                match error {
                    StoreError::JobBusy { .. } | StoreError::IllegalTransition { .. } => {}
                    error => {
                        shared.metrics.store_error("transition_run", &error);
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
    shared: &Shared,
    term: &Term,
    candidate: DispatchableRun,
    reservation: Reservation,
    run: cronfleet_core::run::Run,
    span: &tracing::Span,
) -> Dispatch {
    let run_id = run.id;
    let node = reservation.node_id;
    let assign = Assign {
        run_id,
        job: run.job_name.clone(),
        slot: Some(timestamp(run.slot)),
        attempt: run.attempt,
        handler: candidate.handler,
        args_json: candidate.args.to_string(),
        deadline: timestamp_opt(run.deadline),
        timeout_ms: u64::try_from(
            candidate
                .timeout
                .unwrap_or(shared.config.default_timeout)
                .as_millis(),
        )
        .unwrap_or(u64::MAX),
        epoch: term.epoch,
        trigger: run.trigger.as_str().to_owned(),
        trace_context: cronfleet_telemetry::inject_span(span),
    };
    let message = CoordinatorMessage {
        kind: Some(coordinator_message::Kind::Assign(assign)),
    };
    if reservation.sender.try_send(Ok(message)).is_err() {
        // The worker went away (or stopped reading) before it got the run, so it never
        // started it: run it elsewhere now rather than after the worker timeout.
        span.record("otel.status_description", "the worker disconnected");
        shared.registry.release(&node, run_id);
        if !shared
            .lose_run(
                term,
                run_id,
                &format!("worker {node} disconnected before the run was delivered"),
            )
            .await
        {
            return Dispatch::TermEnded;
        }
        return Dispatch::Skipped;
    }
    span.in_scope(|| info!("dispatched"));
    Dispatch::Sent
}

/// How often the leader prunes the run history, and how much per statement.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
const PRUNE_BATCH: u32 = 500;
/// The pause between two prune statements, so pruning never hogs the database.
const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// History retention for one term: every minute, deletes ended runs older than the
/// retention or beyond the runs kept per job, in small batches.
pub(crate) async fn run_pruner(shared: Arc<Shared>, term: Term) {
    let retention = TimeDelta::from_std(shared.config.run_retention).unwrap_or(TimeDelta::MAX);
    loop {
        let mut pruned = 0u64;
        loop {
            let cutoff = shared.clock.now() - retention;
            match shared
                .store
                .prune_runs(cutoff, shared.config.runs_per_job, PRUNE_BATCH)
                .await
            {
                Ok(batch) => {
                    pruned += batch;
                    if batch < u64::from(PRUNE_BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    shared.metrics.store_error("prune_runs", &error);
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
        if !idle(&term, &Wakeup::default(), PRUNE_INTERVAL).await {
            return;
        }
    }
}

/// Whether an active run is past its timeout plus `grace`. The timeout is a duration (the
/// dispatching leader's deadline minus its dispatch time, both on its clock); it counts
/// from the dispatch when this leader dispatched the run, and from the start of this term
/// for a run an earlier leader dispatched — never by comparing this machine's clock with
/// another's. The worker stops the run by the same duration from the Assign's arrival.
fn timed_out(
    run: &cronfleet_core::run::Run,
    term: &Term,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> bool {
    let (Some(dispatched), Some(deadline)) = (run.dispatched_at, run.deadline) else {
        return false;
    };
    let timeout = deadline - dispatched;
    let counted_from = if run.epoch == term.epoch {
        dispatched
    } else {
        dispatched.max(term.since)
    };
    now > counted_from + timeout + grace
}

/// The monitor loop of one term.
pub(crate) async fn run_monitor(shared: Arc<Shared>, term: Term) {
    let period = shared.config.heartbeat_interval / 2;
    let worker_timeout =
        TimeDelta::from_std(shared.config.worker_timeout).unwrap_or(TimeDelta::MAX);
    let grace = TimeDelta::from_std(shared.config.timeout_grace).unwrap_or(TimeDelta::MAX);
    // Active runs of connected workers that their session does not hold, since when. An
    // orphan is lost only after the longest stop grace any admitted worker may have, plus
    // the margin: a session is admitted only once the previous one under its id had not
    // renewed its lease for the lease ttl, so by then whatever that one ran is gone.
    let mut orphans: HashMap<i64, DateTime<Utc>> = HashMap::new();
    let orphan_after = TimeDelta::from_std(
        (shared.config.max_stop_grace() + LOSS_MARGIN).max(shared.config.heartbeat_interval * 4),
    )
    .unwrap_or(TimeDelta::MAX);
    loop {
        tokio::select! {
            () = term.ended.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        // Live logs go to the store, so that every replica shows them (`run logs`).
        for (run_id, output) in shared.registry.unsaved_outputs(shared.config.run_log_limit) {
            if let Err(error) = shared.store.record_output(run_id, &output).await {
                shared.metrics.store_error("record_output", &error);
                debug!(run_id, %error, "cannot record the run's log yet");
            }
        }
        let now = shared.clock.now();
        for (node, connection) in shared.registry.silent_since(now - worker_timeout) {
            warn!(worker = %node, "worker silent past the worker timeout: closing its stream");
            shared.registry.disconnect(&node, connection);
        }
        let active = match shared.store.active_runs().await {
            Ok(active) => active,
            Err(error) => {
                shared.metrics.store_error("active_runs", &error);
                warn!(%error, "cannot read active runs");
                continue;
            }
        };
        let mut seen_orphans = std::collections::HashSet::new();
        for run in &active {
            let Some(worker) = run.worker.as_deref() else {
                continue;
            };
            if timed_out(run, &term, now, grace) {
                let error = format!(
                    "no result from worker {worker} by the deadline (plus {}s grace)",
                    grace.num_seconds()
                );
                let transition = RunTransition::to(RunState::TimedOut)
                    .with_error(error.clone())
                    .fenced(term.epoch);
                let rules = shared.config.finish_rules(0);
                match shared
                    .store
                    .finish_run(run.id, &transition, &rules, now)
                    .await
                {
                    Ok(finished) => {
                        warn!(run_id = run.id, job = %run.job_name, worker, slot = %run.slot, epoch = term.epoch, "run timed out");
                        record_finished(&shared, &finished, worker);
                        shared.registry.release(worker, run.id);
                        shared.send_cancel(run.id, Some(worker), &error).await;
                        shared.dispatcher_wake.wake();
                    }
                    Err(StoreError::Fenced { .. }) => {
                        term.ended.cancel();
                        return;
                    }
                    Err(error) => warn!(run_id = run.id, %error, "cannot time the run out"),
                }
                continue;
            }
            if shared.registry.is_connected(worker) {
                // Active on a connected worker whose session does not hold it: its Assign
                // went to a connection that was gone (a dispatch racing a reconnect), or the
                // worker reconnected without it (it restarted, or the run ended and its
                // report is on its way). Once that has lasted past any stop grace, it is
                // lost and runs again.
                if shared.registry.session_holds(worker, run.id) {
                    orphans.remove(&run.id);
                } else {
                    seen_orphans.insert(run.id);
                    let since = *orphans.entry(run.id).or_insert(now);
                    if now - since > orphan_after {
                        orphans.remove(&run.id);
                        let reason = format!(
                            "dispatched to worker {worker} over a connection that is gone: its session does not hold the run"
                        );
                        if !shared.lose_run(&term, run.id, &reason).await {
                            return;
                        }
                        continue;
                    }
                }
                // An operator's cancel (from any replica) reaches the worker once.
                if run.cancel_requested_at.is_some() && shared.registry.first_cancel(run.id) {
                    shared
                        .send_cancel(run.id, Some(worker), "cancelled by an operator")
                        .await;
                }
                continue;
            }
            let last_seen = shared
                .registry
                .last_seen(worker)
                .map_or(term.since, |seen| seen.max(term.since));
            if now - last_seen > worker_timeout {
                let reason = format!(
                    "worker {worker} silent for {}s (worker timeout {}s)",
                    (now - last_seen).num_seconds(),
                    worker_timeout.num_seconds()
                );
                if !shared.lose_run(&term, run.id, &reason).await {
                    return;
                }
            }
        }
        orphans.retain(|run_id, _| seen_orphans.contains(run_id));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cronfleet_core::run::{Run, RunState, Trigger};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn running(epoch: i64, dispatched: i64, timeout: i64) -> Run {
        Run {
            id: 1,
            job_id: 1,
            job_name: "job".to_owned(),
            slot: at(dispatched),
            attempt: 1,
            trigger: Trigger::Schedule,
            state: RunState::Running,
            slot_count: 1,
            last_slot: None,
            worker: Some("w".to_owned()),
            epoch,
            created_at: at(dispatched),
            dispatched_at: Some(at(dispatched)),
            started_at: Some(at(dispatched)),
            finished_at: None,
            deadline: Some(at(dispatched + timeout)),
            cancel_requested_at: None,
            error: None,
            output: None,
            progress: None,
            trace_id: None,
            not_before: None,
            pending_reason: None,
        }
    }

    fn term(epoch: i64, since: i64) -> Term {
        Term {
            epoch,
            since: at(since),
            ended: CancellationToken::new(),
        }
    }

    #[test]
    fn a_timeout_counts_from_this_leaders_dispatch_or_from_its_term() {
        let grace = TimeDelta::seconds(10);
        // Dispatched by this leader at 0 with a 60 s timeout: out after 70 s.
        let ours = running(2, 0, 60);
        assert!(!timed_out(&ours, &term(2, 0), at(70), grace));
        assert!(timed_out(&ours, &term(2, 0), at(71), grace));
        // Dispatched by an earlier leader, whose clock may differ: the whole timeout and
        // grace count again from this term's start (100), not from the old deadline.
        let inherited = running(1, 0, 60);
        assert!(!timed_out(&inherited, &term(2, 100), at(170), grace));
        assert!(timed_out(&inherited, &term(2, 100), at(171), grace));
        let undispatched = Run {
            dispatched_at: None,
            ..running(2, 0, 60)
        };
        assert!(!timed_out(&undispatched, &term(2, 0), at(1_000), grace));
    }
}
