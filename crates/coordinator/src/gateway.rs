//! The coordinator's side of the worker protocol (`WorkerService.Connect`,
//! proto/cronfleet/v1/worker.proto): registration, redirects from non-leaders, adoption of
//! the runs a reconnecting worker still holds, and the worker's reports, written to the
//! store in the order they arrive.
//!
//! Each stream has two tasks: a **reader** that answers heartbeats at once (the lease
//! never waits for the store: a slow or restarting database does not stop the runs) and
//! keeps log tails in memory, and a **writer** that records run starts, progress and ends
//! in arrival order through `runs.rs` (which retries while the store is unreachable). A
//! worker id is one session at a time — a second registration while the first still
//! renews its lease is refused — and a session may only report on the runs it holds.
//!
//! The messages themselves are read and built by `protocol.rs`; this module is the
//! stream: who may connect, and in which order what they say is handled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use cronfleet_proto::v1::worker_service_server::WorkerService;
use cronfleet_proto::v1::{CoordinatorMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio_stream::Stream as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::node::{Node, Role, Term};
use crate::protocol::{self, Registration, SessionTerms, WorkerReport};
use crate::registry::WorkerSender;
use crate::runs::RunChanges;
use crate::store_wrappers::RetryingStore;
use crate::workers::{WorkerInfo, WorkerState};

/// At most this many reports already received from one worker are handled together.
const REPORT_BATCH: usize = 512;
/// Messages queued per worker stream before the coordinator stops waiting for it.
const STREAM_BUFFER: usize = 1024;
/// Batches of reports one stream's reader may queue for its writer while the store is
/// slow, before it waits (and stops answering heartbeats).
const REPORT_QUEUE: usize = 256;
/// How long a worker's report is retried while the store is unreachable (it is restarting,
/// say) before the report is given up and the monitor's deadline rule takes over.
const REPORT_RETRY_FOR: Duration = Duration::from_secs(120);

/// The `WorkerService` implementation.
#[derive(Clone, Debug)]
pub struct WorkerGateway {
    node: Arc<Node>,
}

impl WorkerGateway {
    pub(crate) fn new(node: Arc<Node>) -> WorkerGateway {
        WorkerGateway { node }
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerGateway {
    type ConnectStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.and_then(|message| message.kind);
        let registration = protocol::read_register(first)?;
        if let Err(why) = self
            .node
            .config
            .admit_stop_grace(&registration.node_id, registration.stop_grace)
        {
            warn!(worker = %registration.node_id, %why, "refusing a worker whose runs could outlive its lease");
            return Err(Status::failed_precondition(why));
        }
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let role = self.node.role.borrow().clone();
        match role {
            Role::Follower => {
                let leader = self.node.election.leader().await.ok().flatten();
                // The election may already name this node while its term is still being
                // set up (the epoch raised, the loops started): that is "no leader yet"
                // for the worker, which asks again shortly, never a redirect to itself.
                let leader = leader.filter(|leader| leader.node_id != self.node.config.node_id);
                match &leader {
                    None => {
                        debug!(worker = %registration.node_id, "not leading yet: the worker asks again");
                    }
                    Some(leader) => {
                        info!(worker = %registration.node_id, leader = %leader.url, "not the leader: redirecting worker");
                    }
                }
                let _ = sender.send(protocol::not_leader(leader)).await;
            }
            Role::Leader(term) => {
                let worker = registration.node_id.clone();
                let connection = self.admit(&term, registration, sender.clone()).await?;
                let reports_store = RetryingStore::new(
                    Arc::clone(&self.node.store),
                    REPORT_RETRY_FOR,
                    term.ended.clone(),
                );
                let session = Session {
                    node: Arc::clone(&self.node),
                    reports_store,
                    term,
                    worker,
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
        registration: Registration,
        sender: WorkerSender,
    ) -> Result<u64, Status> {
        let node = &self.node;
        let worker = registration.node_id.clone();
        // One live session per worker id: a second process under the same id would have
        // the first one's runs declared lost and run again beside it.
        let live_since =
            node.clock.now() - TimeDelta::from_std(node.config.lease_ttl).unwrap_or(TimeDelta::MAX);
        if let Some(renewed) = node.registry.live_session_renewed(&worker, live_since) {
            let age = (node.clock.now() - renewed).num_milliseconds();
            warn!(
                worker,
                renewed_ms_ago = age,
                "refusing a second session for a worker id in use"
            );
            return Err(Status::already_exists(format!(
                "worker id {worker:?} is in use: its session renewed its lease {age} ms ago; \
                 give every worker its own --node-id (a restarted worker is admitted once the \
                 old session's lease has run out, {} ms after its last renewal)",
                node.config.lease_ttl.as_millis()
            )));
        }
        let active = node
            .store
            .active_runs()
            .await
            .map_err(|error| Status::unavailable(format!("store unavailable: {error}")))?;
        let given: HashSet<i64> = active
            .iter()
            .filter(|run| run.worker.as_deref() == Some(worker.as_str()))
            .map(|run| run.id)
            .collect();
        let held = &registration.held_runs;
        // The runs the store gives to this worker that it does not hold are left to the
        // monitor's orphan rule (`leader/monitor.rs`): lost once this session has not held
        // them for longer than any admitted worker's lease and stop grace. Not at once: the
        // end of such a run may still be on its way through the previous session's writer,
        // and a previous process under this id (a restart) may still be stopping it.
        let adopted: HashSet<i64> = held.intersection(&given).copied().collect();
        let unknown: Vec<i64> = held.difference(&given).copied().collect();
        let now = node.clock.now();
        let info = WorkerInfo {
            node_id: worker.clone(),
            handlers: registration.handlers,
            labels: registration.labels,
            capacity: registration.capacity,
            busy: u32::try_from(adopted.len()).unwrap_or(u32::MAX),
            connected_at: now,
            last_heartbeat_at: now,
            state: if registration.draining {
                WorkerState::Draining
            } else {
                WorkerState::Connected
            },
            version: registration.version,
        };
        info!(worker, adopted = adopted.len(), handlers = ?info.handlers, capacity = info.capacity, "worker registered");
        let connection = node.registry.connect(info, adopted, sender.clone());
        let _ = sender.try_send(protocol::registered(SessionTerms {
            coordinator_id: node.config.node_id.clone(),
            epoch: term.epoch,
            lease_ttl: node.config.lease_ttl,
            heartbeat_interval: node.config.heartbeat_interval,
            log_limit_bytes: node.config.run_log_limit,
        }));
        // After Registered, which must come first on the stream: the runs the worker holds
        // that the store does not give to it are to stop.
        for run_id in unknown {
            let _ = sender.try_send(protocol::cancel(
                run_id,
                "the coordinator does not know this run as yours",
            ));
        }
        node.dispatcher_wake.wake();
        Ok(connection)
    }
}

/// One registered worker stream of this term.
#[derive(Debug)]
struct Session {
    node: Arc<Node>,
    /// Where its reports are written: the node's store, retried while unreachable.
    reports_store: RetryingStore,
    term: Term,
    worker: String,
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
                    info!(worker = %session.worker, %status, "worker stream broke");
                    break;
                }
            };
            // Whatever else the worker has sent already is handled with it, so that its
            // run starts and ends are written in batches (one transaction each).
            let mut received = vec![protocol::read_report(kind)];
            let mut ended = false;
            while received.len() < REPORT_BATCH {
                match ready_message(&mut inbound) {
                    Some(Some(Ok(WorkerMessage { kind: Some(kind) }))) => {
                        received.push(protocol::read_report(kind));
                    }
                    Some(Some(Ok(WorkerMessage { kind: None }))) => {}
                    Some(Some(Err(status))) => {
                        info!(worker = %session.worker, %status, "worker stream broke");
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
                warn!(worker = %session.worker, "a newer session of this worker replaced this one: closing it");
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
            .node
            .registry
            .disconnect(&session.worker, session.connection);
        info!(worker = %session.worker, "worker disconnected");
    }

    /// Handles what needs no store: heartbeats (the lease renewal, answered with the
    /// heartbeat's seq), the draining flag, log chunks (kept in memory before the run's end
    /// that follows them is written). Returns the reports for the writer — only those on
    /// runs this session holds — or `None` when this connection is no longer the worker's
    /// session.
    fn answer_at_once(&self, received: Vec<WorkerReport>) -> Option<Vec<WorkerReport>> {
        let node = &self.node;
        let mut reports = Vec::with_capacity(received.len());
        for report in received {
            match report {
                WorkerReport::Heartbeat { seq, draining } => {
                    if !node
                        .registry
                        .lease_renewed(&self.worker, self.connection, node.clock.now())
                    {
                        return None;
                    }
                    if draining {
                        node.registry.set_draining(&self.worker);
                    }
                    let _ = self
                        .sender
                        .try_send(protocol::lease_renewed(self.term.epoch, seq));
                }
                WorkerReport::Register => {
                    warn!(worker = %self.worker, "ignoring a second register on one stream");
                }
                WorkerReport::Log { run_id, text } => {
                    if self.holds(run_id, "log") {
                        node.registry.append_output(
                            run_id,
                            &text,
                            node.config.run_log_limit,
                            node.clock.now(),
                        );
                    }
                }
                report => reports.push(report),
            }
        }
        node.registry
            .is_session(&self.worker, self.connection)
            .then_some(reports)
    }

    /// Whether this session holds `run_id`; a report on a run it does not hold (another
    /// worker's, or one given up) is refused and logged.
    fn holds(&self, run_id: i64, report: &str) -> bool {
        let holds = self
            .node
            .registry
            .holds(&self.worker, self.connection, run_id);
        if !holds {
            warn!(worker = %self.worker, run_id, report, "refusing a report on a run this worker does not hold");
        }
        holds
    }

    /// The writer: records the reports the reader queued, in arrival order.
    async fn write_reports(self: Arc<Self>, mut queued: mpsc::Receiver<Vec<WorkerReport>>) {
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
    async fn handle_reports(&self, reports: Vec<WorkerReport>) {
        let changes = RunChanges::through(&self.node, &self.term, &self.reports_store);
        let worker = self.worker.as_str();
        let mut started = Vec::new();
        let mut finished = Vec::new();
        for report in reports {
            match report {
                WorkerReport::Started { run_id } if self.holds(run_id, "start") => {
                    started.push(run_id);
                }
                WorkerReport::Started { run_id } => {
                    // Not this worker's run: it must not go on with it.
                    changes.cancel(run_id, worker, "this run is not assigned to this worker");
                }
                WorkerReport::Finished(end) if self.holds(end.run_id, "end") => {
                    finished.push(end);
                }
                WorkerReport::Progress { run_id, progress } if self.holds(run_id, "progress") => {
                    self.node.registry.run_active(run_id, self.node.clock.now());
                    changes
                        .record_starts(worker, std::mem::take(&mut started))
                        .await;
                    changes
                        .record_ends(worker, std::mem::take(&mut finished))
                        .await;
                    changes.record_progress(run_id, progress).await;
                }
                _ => {}
            }
        }
        changes.record_starts(worker, started).await;
        changes.record_ends(worker, finished).await;
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
