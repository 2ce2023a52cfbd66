//! The coordinator's side of the worker protocol (`WorkerService.Connect`,
//! proto/cronfleet/v1/worker.proto): registration, redirects from non-leaders, adoption of
//! the runs a reconnecting worker still holds, and the worker's reports, written to the
//! store in the order they arrive.
//!
//! Each stream has two tasks: a **reader** that answers heartbeats at once (the lease
//! never waits for the store: a slow or restarting database does not stop the runs) and
//! keeps log tails in memory, and a **writer** that records run starts, progress and ends
//! in arrival order, retrying while the store is unreachable. A worker id is one session
//! at a time — a second registration while the first still renews its lease is refused —
//! and a session may only report on the runs it holds.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use cronfleet_core::run::{Progress, RunState, output_tail};
use cronfleet_proto::v1::worker_service_server::WorkerService;
use cronfleet_proto::v1::{
    CoordinatorMessage, LeaseRenewed, NotLeader, Register, Registered, RunFinished, RunOutcome,
    WorkerMessage, coordinator_message, worker_message,
};
use cronfleet_store::{FinishOrder, Finished, RunTransition, StoreError};
use tokio::sync::mpsc;
use tokio_stream::Stream as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::config::UNANNOUNCED_STOP_GRACE;
use crate::leader::{Role, Shared, Term};
use crate::registry::WorkerSender;
use crate::workers::{WorkerInfo, WorkerState};

/// At most this many reports already received from one worker are handled together.
const REPORT_BATCH: usize = 512;
/// Messages queued per worker stream before the coordinator stops waiting for it.
const STREAM_BUFFER: usize = 1024;
/// How long a worker's report is retried while the store is unreachable (it is restarting,
/// say) before the report is given up and the monitor's deadline rule takes over.
const REPORT_RETRY_FOR: Duration = Duration::from_secs(120);
/// Batches of reports one stream's reader may queue for its writer while the store is
/// slow, before it waits (and stops answering heartbeats).
const REPORT_QUEUE: usize = 256;

/// The `WorkerService` implementation.
#[derive(Clone, Debug)]
pub struct WorkerGateway {
    shared: Arc<Shared>,
}

impl WorkerGateway {
    pub(crate) fn new(shared: Arc<Shared>) -> WorkerGateway {
        WorkerGateway { shared }
    }
}

fn message(kind: coordinator_message::Kind) -> Result<CoordinatorMessage, Status> {
    Ok(CoordinatorMessage { kind: Some(kind) })
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl WorkerService for WorkerGateway {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(WorkerMessage {
                kind: Some(worker_message::Kind::Register(register)),
            }) => register,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a worker stream must be register",
                ));
            }
        };
        if register.node_id.is_empty() || register.capacity == 0 {
            return Err(Status::invalid_argument(format!(
                "invalid register from \"{}\": node_id must be set and capacity at least 1 (got {})",
                register.node_id, register.capacity
            )));
        }
        let stop_grace = match register.stop_grace_ms {
            0 => UNANNOUNCED_STOP_GRACE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        if let Err(why) = self
            .shared
            .config
            .admit_stop_grace(&register.node_id, stop_grace)
        {
            warn!(worker = %register.node_id, %why, "refusing a worker whose runs could outlive its lease");
            return Err(Status::failed_precondition(why));
        }
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let role = self.shared.role.borrow().clone();
        match role {
            Role::Follower => {
                let leader = self.shared.election.leader().await.ok().flatten();
                // The election may already name this node while its term is still being
                // set up (the epoch raised, the loops started): that is "no leader yet"
                // for the worker, which asks again shortly, never a redirect to itself.
                let leader = leader.filter(|leader| leader.node_id != self.shared.config.node_id);
                let not_leader = NotLeader {
                    leader_url: leader.as_ref().map(|l| l.url.clone()).unwrap_or_default(),
                    leader_node_id: leader.map(|l| l.node_id).unwrap_or_default(),
                };
                if not_leader.leader_url.is_empty() {
                    debug!(worker = %register.node_id, "not leading yet: the worker asks again");
                } else {
                    info!(worker = %register.node_id, leader = %not_leader.leader_url, "not the leader: redirecting worker");
                }
                let _ = sender
                    .send(message(coordinator_message::Kind::NotLeader(not_leader)))
                    .await;
            }
            Role::Leader(term) => {
                let node = register.node_id.clone();
                let connection = self.admit(&term, register, sender.clone()).await?;
                let session = Session {
                    shared: Arc::clone(&self.shared),
                    term,
                    node,
                    connection,
                    sender,
                };
                tokio::spawn(session.read_reports(inbound));
            }
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl WorkerGateway {
    /// Registers a worker with the leader: adopts the runs it still holds that the store
    /// also gives to it and cancels the ones the store does not know; the ones the store
    /// gives to it but it no longer holds (it restarted) become orphans for the monitor.
    async fn admit(
        &self,
        term: &Term,
        register: Register,
        sender: WorkerSender,
    ) -> Result<u64, Status> {
        let shared = &self.shared;
        let node = register.node_id.clone();
        // One live session per worker id: a second process under the same id would have
        // the first one's runs declared lost and run again beside it.
        let live_since = shared.clock.now()
            - TimeDelta::from_std(shared.config.lease_ttl).unwrap_or(TimeDelta::MAX);
        if let Some(renewed) = shared.registry.live_session_renewed(&node, live_since) {
            let age = (shared.clock.now() - renewed).num_milliseconds();
            warn!(worker = %node, renewed_ms_ago = age, "refusing a second session for a worker id in use");
            return Err(Status::already_exists(format!(
                "worker id {node:?} is in use: its session renewed its lease {age} ms ago; \
                 give every worker its own --node-id (a restarted worker is admitted once the \
                 old session's lease has run out, {} ms after its last renewal)",
                shared.config.lease_ttl.as_millis()
            )));
        }
        let active = shared
            .store
            .active_runs()
            .await
            .map_err(|error| Status::unavailable(format!("store unavailable: {error}")))?;
        let given: HashSet<i64> = active
            .iter()
            .filter(|run| run.worker.as_deref() == Some(node.as_str()))
            .map(|run| run.id)
            .collect();
        let held: HashSet<i64> = register.held_runs.iter().map(|run| run.run_id).collect();
        // The runs the store gives to this worker that it does not hold are left to the
        // monitor's orphan rule (`leader.rs`): lost once this session has not held them for
        // longer than any admitted worker's lease and stop grace. Not at once: the end of
        // such a run may still be on its way through the previous session's writer, and a
        // previous process under this id (a restart) may still be stopping it.
        let adopted: HashSet<i64> = held.intersection(&given).copied().collect();
        let now = shared.clock.now();
        let info = WorkerInfo {
            node_id: node.clone(),
            handlers: register.handlers,
            labels: register.labels.into_iter().collect(),
            capacity: register.capacity,
            busy: u32::try_from(adopted.len()).unwrap_or(u32::MAX),
            connected_at: now,
            last_heartbeat_at: now,
            state: if register.draining {
                WorkerState::Draining
            } else {
                WorkerState::Connected
            },
            version: register.version,
        };
        info!(worker = %node, adopted = adopted.len(), handlers = ?info.handlers, capacity = info.capacity, "worker registered");
        let connection = shared.registry.connect(info, adopted, sender.clone());
        let registered = Registered {
            coordinator_id: shared.config.node_id.clone(),
            epoch: term.epoch,
            lease_ttl_ms: millis(shared.config.lease_ttl),
            heartbeat_interval_ms: millis(shared.config.heartbeat_interval),
            log_limit_bytes: u32::try_from(shared.config.run_log_limit).unwrap_or(u32::MAX),
        };
        let _ = sender.try_send(message(coordinator_message::Kind::Registered(registered)));
        // After Registered, which must come first on the stream: the runs the worker holds
        // that the store does not give to it are to stop.
        for unknown in held.difference(&given) {
            let cancel = cronfleet_proto::v1::Cancel {
                run_id: *unknown,
                reason: "the coordinator does not know this run as yours".to_owned(),
            };
            let _ = sender.try_send(message(coordinator_message::Kind::Cancel(cancel)));
        }
        shared.dispatcher_wake.wake();
        Ok(connection)
    }
}

/// One registered worker stream of this term.
#[derive(Debug)]
struct Session {
    shared: Arc<Shared>,
    term: Term,
    node: String,
    connection: u64,
    sender: WorkerSender,
}

impl Session {
    /// The reader: reads the worker's messages until its stream ends, the term ends or a
    /// newer session replaces it; answers heartbeats and keeps log tails itself and hands
    /// the rest, in order, to the writer — whose queue is written out before the worker
    /// counts as disconnected.
    async fn read_reports(self, mut inbound: Streaming<WorkerMessage>) {
        let session = Arc::new(self);
        let (queue, queued) = mpsc::channel(REPORT_QUEUE);
        let writer = tokio::spawn(Arc::clone(&session).write_reports(queued));
        loop {
            let next = tokio::select! {
                () = session.term.ended.cancelled() => break,
                next = inbound.message() => next,
            };
            let kind = match next {
                Ok(Some(WorkerMessage { kind: Some(kind) })) => kind,
                Ok(Some(WorkerMessage { kind: None })) => continue,
                Ok(None) => break,
                Err(status) => {
                    info!(worker = %session.node, %status, "worker stream broke");
                    break;
                }
            };
            // Whatever else the worker has sent already is handled with it, so that its
            // run starts and ends are written in batches (one transaction each).
            let mut received = vec![kind];
            let mut ended = false;
            while received.len() < REPORT_BATCH {
                match ready_message(&mut inbound) {
                    Some(Some(Ok(WorkerMessage { kind: Some(kind) }))) => received.push(kind),
                    Some(Some(Ok(WorkerMessage { kind: None }))) => {}
                    Some(Some(Err(status))) => {
                        info!(worker = %session.node, %status, "worker stream broke");
                        ended = true;
                        break;
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let Some(reports) = session.answer_at_once(received) else {
                warn!(worker = %session.node, "a newer session of this worker replaced this one: closing it");
                break;
            };
            if !reports.is_empty() && queue.send(reports).await.is_err() {
                break;
            }
            if ended {
                break;
            }
        }
        drop(queue);
        let _ = writer.await;
        session
            .shared
            .registry
            .disconnect(&session.node, session.connection);
        info!(worker = %session.node, "worker disconnected");
    }

    /// Handles what needs no store: heartbeats (the lease renewal, answered with the
    /// heartbeat's seq), the draining flag, log chunks (kept in memory before the run's end
    /// that follows them is written). Returns the reports for the writer, or `None` when
    /// this connection is no longer the worker's session.
    fn answer_at_once(
        &self,
        received: Vec<worker_message::Kind>,
    ) -> Option<Vec<worker_message::Kind>> {
        let shared = &self.shared;
        let mut reports = Vec::with_capacity(received.len());
        for kind in received {
            match kind {
                worker_message::Kind::Heartbeat(heartbeat) => {
                    if !shared.registry.lease_renewed(
                        &self.node,
                        self.connection,
                        shared.clock.now(),
                    ) {
                        return None;
                    }
                    if heartbeat.draining {
                        shared.registry.set_draining(&self.node);
                    }
                    let renewed = LeaseRenewed {
                        epoch: self.term.epoch,
                        seq: heartbeat.seq,
                    };
                    let _ = self
                        .sender
                        .try_send(message(coordinator_message::Kind::LeaseRenewed(renewed)));
                }
                worker_message::Kind::RunLog(log) if self.holds(log.run_id, "log") => shared
                    .registry
                    .append_output(log.run_id, &log.text, shared.config.run_log_limit),
                worker_message::Kind::RunLog(_) => {}
                worker_message::Kind::Register(_) => {
                    warn!(worker = %self.node, "ignoring a second register on one stream");
                }
                report => reports.push(report),
            }
        }
        shared
            .registry
            .is_session(&self.node, self.connection)
            .then_some(reports)
    }

    /// Whether this session holds `run_id`; a report on a run it does not hold (another
    /// worker's, or one given up) is refused and logged.
    fn holds(&self, run_id: i64, report: &str) -> bool {
        let holds = self
            .shared
            .registry
            .holds(&self.node, self.connection, run_id);
        if !holds {
            warn!(worker = %self.node, run_id, report, "refusing a report on a run this worker does not hold");
        }
        holds
    }

    /// The writer: records the reports the reader queued, in arrival order.
    async fn write_reports(self: Arc<Self>, mut queued: mpsc::Receiver<Vec<worker_message::Kind>>) {
        while let Some(reports) = queued.recv().await {
            if self.term.ended.is_cancelled() {
                return;
            }
            self.handle_reports(reports).await;
        }
    }

    /// Handles a worker's reports in arrival order, except that consecutive run starts
    /// and run ends are written together: starts first (a run's start always arrives
    /// before its end), then ends. Progress first writes what is pending.
    async fn handle_reports(&self, reports: Vec<worker_message::Kind>) {
        let mut started: Vec<i64> = Vec::new();
        let mut finished: Vec<RunFinished> = Vec::new();
        for report in reports {
            match report {
                worker_message::Kind::RunStarted(report) if self.holds(report.run_id, "start") => {
                    started.push(report.run_id);
                }
                worker_message::Kind::RunStarted(report) => {
                    // Not this worker's run: it must not go on with it.
                    self.shared
                        .send_cancel(
                            report.run_id,
                            Some(&self.node),
                            "this run is not assigned to this worker",
                        )
                        .await;
                }
                worker_message::Kind::RunFinished(report) if self.holds(report.run_id, "end") => {
                    finished.push(report);
                }
                worker_message::Kind::RunProgress(progress)
                    if self.holds(progress.run_id, "progress") =>
                {
                    self.record_starts(std::mem::take(&mut started)).await;
                    finish_runs(
                        &self.shared,
                        &self.term,
                        &self.node,
                        std::mem::take(&mut finished),
                    )
                    .await;
                    let report = Progress {
                        done: progress.done,
                        remaining: progress.remaining,
                    };
                    if let Err(error) = self
                        .shared
                        .store
                        .record_progress(progress.run_id, report)
                        .await
                    {
                        warn!(run_id = progress.run_id, %error, "cannot record progress");
                    }
                }
                _ => {}
            }
        }
        self.record_starts(started).await;
        finish_runs(&self.shared, &self.term, &self.node, finished).await;
    }

    /// Records that the worker started runs `run_ids`; a run the coordinator has already
    /// given up is cancelled on the worker.
    async fn record_starts(&self, run_ids: Vec<i64>) {
        if run_ids.is_empty() {
            return;
        }
        let shared = &self.shared;
        let node = self.node.as_str();
        let running = RunTransition::to(RunState::Running);
        let batch: Vec<(i64, RunTransition)> =
            run_ids.iter().map(|id| (*id, running.clone())).collect();
        let results = match retry_transient(&self.term, || {
            shared.store.transition_runs(&batch, shared.clock.now())
        })
        .await
        {
            Some(Ok(results)) => results,
            Some(Err(error)) => {
                warn!(runs = run_ids.len(), worker = %node, %error, "cannot record run starts");
                return;
            }
            None => return,
        };
        let now = shared.clock.now();
        for (run_id, result) in run_ids.into_iter().zip(results) {
            match result {
                Ok(run) => shared.metrics.run_started(&run, now),
                Err(StoreError::IllegalTransition { source, .. }) => {
                    // The coordinator has already given this run up (timed out, lost,
                    // cancelled): the worker must not go on with it.
                    warn!(run_id, worker = %node, %source, "worker started a run that is over");
                    shared
                        .send_cancel(run_id, Some(node), "the run is already over")
                        .await;
                }
                Err(_) => {}
            }
        }
    }
}

/// The next message if the worker has already sent it: `None` when none is ready,
/// `Some(None)` when the stream has ended.
fn ready_message(
    inbound: &mut Streaming<WorkerMessage>,
) -> Option<Option<Result<WorkerMessage, Status>>> {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(inbound).poll_next(&mut context) {
        std::task::Poll::Ready(next) => Some(next),
        std::task::Poll::Pending => None,
    }
}

/// Records the ends the worker reported, in one transaction; a rejected run (never
/// started) is declared lost at once so that another worker takes it.
async fn finish_runs(shared: &Shared, term: &Term, node: &str, reports: Vec<RunFinished>) {
    if reports.is_empty() {
        return;
    }
    let mut orders = Vec::with_capacity(reports.len());
    for finished in reports {
        let run_id = finished.run_id;
        let logged = shared
            .registry
            .take_output(run_id, shared.config.run_log_limit);
        let outcome = RunOutcome::try_from(finished.outcome).unwrap_or(RunOutcome::Unspecified);
        let state = match outcome {
            RunOutcome::Succeeded => RunState::Succeeded,
            RunOutcome::Failed | RunOutcome::Unspecified => RunState::Failed,
            RunOutcome::TimedOut => RunState::TimedOut,
            RunOutcome::Cancelled => RunState::Cancelled,
            RunOutcome::Aborted => {
                shared.registry.release(node, run_id);
                // The worker stopped it on its own (its lease ran out, it shut down): the
                // run did not complete, and it has stopped — run the slot again.
                let reason = format!(
                    "stopped by worker {node} before it completed: {}",
                    finished.error
                );
                shared.lose_run(term, run_id, &reason).await;
                continue;
            }
            RunOutcome::Rejected => {
                shared.registry.release(node, run_id);
                // Never started: another worker may run it at once. A worker that refuses
                // work (it is draining, or out of step with us) gets no more on this
                // connection, so the run does not bounce back to it.
                shared.registry.set_draining(node);
                let reason = format!("rejected by worker {node}: {}", finished.error);
                shared.lose_run(term, run_id, &reason).await;
                continue;
            }
        };
        let mut transition = RunTransition::to(state);
        if !finished.error.is_empty() {
            transition = transition.with_error(finished.error);
        }
        let output = if finished.output.is_empty() {
            logged
        } else {
            Some(output_tail(&finished.output, shared.config.run_log_limit).to_owned())
        };
        if let Some(output) = output {
            transition = transition.with_output(output);
        }
        orders.push(FinishOrder {
            id: run_id,
            transition,
            rules: shared.config.finish_rules(finished.remaining),
        });
    }
    if !orders.is_empty() {
        let result = retry_transient(term, || {
            shared.store.finish_runs(&orders, shared.clock.now())
        })
        .await;
        match result {
            Some(Ok(results)) => {
                for (order, result) in orders.iter().zip(results) {
                    match result {
                        Ok(finished) => record_finished(shared, &finished, node),
                        Err(error) => {
                            warn!(run_id = order.id, worker = %node, %error, "cannot record the run's result")
                        }
                    }
                }
            }
            Some(Err(error)) => {
                warn!(runs = orders.len(), worker = %node, %error, "cannot record the runs' results")
            }
            None => {}
        }
        // Only now: until its end is recorded, the run is still this session's (the
        // monitor would take an active run its session does not hold for an orphan).
        for order in &orders {
            shared.registry.release(node, order.id);
        }
    }
    shared.dispatcher_wake.wake();
}

/// Runs a store call, retrying while the store is unreachable (for at most
/// [`REPORT_RETRY_FOR`], and not past the term). `None` when it gave up.
async fn retry_transient<T, F, Fut>(term: &Term, mut call: F) -> Option<Result<T, StoreError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let result = call().await;
        match &result {
            Err(error) if error.is_transient() && started.elapsed() < REPORT_RETRY_FOR => {
                warn!(%error, "store unavailable; retrying a worker report");
            }
            _ => return Some(result),
        }
        tokio::select! {
            () = term.ended.cancelled() => return None,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Logs and counts what a run's end brought: the end itself, a retry, a continuation,
/// the job paused.
pub(crate) fn record_finished(shared: &Shared, finished: &Finished, node: &str) {
    let run = &finished.run;
    shared.metrics.run_finished(run);
    for next in [&finished.retry, &finished.continuation]
        .into_iter()
        .flatten()
    {
        shared.metrics.run_created(next.trigger);
    }
    info!(run_id = run.id, job = %run.job_name, worker = %node, state = %run.state, slot = %run.slot, attempt = run.attempt, epoch = run.epoch, "run finished");
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
