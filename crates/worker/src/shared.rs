//! The worker's state, shared by the connection, the lease guard and the runs: which runs
//! execute, the link to the coordinator they report on, the lease, the highest epoch.
//!
//! Everything sits behind one mutex that is never held across an `.await`, which keeps
//! the protocol's ordering rules simple to uphold: a `RunFinished` is either sent on the
//! current link or queued for the next one in the same critical section in which a new
//! link is installed and the queue flushed, and a `Register` snapshot of the held runs
//! cannot miss a run that finishes meanwhile.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use cronfleet_proto::v1::worker_message::Kind as Outgoing;
use cronfleet_proto::v1::{
    Assign, Heartbeat, HeldRun, Register, Registered, RunFinished, RunLog, RunOutcome, RunProgress,
    RunStarted, RunStatus, WorkerMessage,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::context::RunContext;
use crate::handler::Handler;
use crate::lease_deadline::LeaseDeadlineFile;
use crate::metrics::WorkerMetrics;
use crate::output::{DEFAULT_OUTPUT_BYTES, LogTail};
use crate::status::{Registration, Status};

/// Used when `Registered.heartbeat_interval_ms` is 0 (unset): DESIGN §1's one second.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Used when `Registered.lease_ttl_ms` is 0 (unset).
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Log text queued for a slow stream beyond which new chunks are not streamed (they stay
/// in the run's output tail): keeps a chatty run from filling memory while the network
/// stalls.
const MAX_QUEUED_LOG_BYTES: usize = 4 * 1024 * 1024;
/// The largest `RunLog` text; bigger writes are split (gRPC's default message limit is
/// 4 MiB, and small chunks keep a live log view smooth).
const MAX_LOG_CHUNK: usize = 32 * 1024;

/// How long, beyond the kill grace, every run may take to be gone once it is told to
/// stop: the shell handler's SIGKILL and reaping, the watchdog's 200 ms poll, an
/// abandoned handler's future being dropped. Sent as part of `Register.stop_grace_ms`.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(1);
/// Sent heartbeats remembered for their `LeaseRenewed`: a few lease ttls' worth.
const MAX_HEARTBEATS_IN_FLIGHT: usize = 64;

/// Settings of a worker, validated by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) coordinators: Vec<String>,
    pub(crate) node_id: String,
    pub(crate) capacity: u32,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) drain_timeout: Duration,
    pub(crate) kill_grace: Duration,
    pub(crate) version: String,
    pub(crate) token: Option<BearerToken>,
}

impl Config {
    /// How long after its lease ends every run of this worker is certainly gone: what the
    /// coordinator must wait before running them elsewhere (`Register.stop_grace_ms`).
    pub(crate) fn stop_grace(&self) -> Duration {
        self.kill_grace + STOP_MARGIN
    }
}

/// A worker token: shown as `***` in `Debug`, so never in a log.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(pub(crate) String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Why a run was told to stop. The first reason wins.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    DeadlinePassed(DateTime<Utc>),
    CancelledByCoordinator(String),
    LeaseLost(Duration),
    ShuttingDown(Duration),
}

impl StopReason {
    fn outcome(&self) -> RunOutcome {
        match self {
            StopReason::DeadlinePassed(_) => RunOutcome::TimedOut,
            StopReason::CancelledByCoordinator(_) => RunOutcome::Cancelled,
            // Stopped by the worker on its own: the run did not complete, and the
            // coordinator runs it again.
            StopReason::LeaseLost(_) | StopReason::ShuttingDown(_) => RunOutcome::Aborted,
        }
    }

    fn message(&self) -> String {
        match self {
            StopReason::DeadlinePassed(deadline) => format!(
                "deadline {} passed: the handler was stopped",
                deadline.to_rfc3339_opts(SecondsFormat::Millis, true)
            ),
            StopReason::CancelledByCoordinator(reason) if reason.is_empty() => {
                "cancelled by the coordinator".to_owned()
            }
            StopReason::CancelledByCoordinator(reason) => {
                format!("cancelled by the coordinator: {reason}")
            }
            StopReason::LeaseLost(ttl) => format!(
                "lease lost: no lease renewal from the coordinator for {} ms (the lease ttl)",
                ttl.as_millis()
            ),
            StopReason::ShuttingDown(drain_timeout) => format!(
                "worker shutting down: the run did not finish within the drain timeout of {} ms",
                drain_timeout.as_millis()
            ),
        }
    }
}

/// One run this worker executes, from its `Assign` until its `RunFinished` is handed over.
#[derive(Debug)]
pub(crate) struct RunEntry {
    pub(crate) run_id: i64,
    pub(crate) job: String,
    pub(crate) slot: DateTime<Utc>,
    pub(crate) attempt: u32,
    pub(crate) trigger: String,
    /// The handler's name, as the assign gave it.
    pub(crate) handler: String,
    /// When the assign arrived.
    pub(crate) assigned: std::time::Instant,
    pub(crate) args: serde_json::Value,
    pub(crate) deadline: Option<DateTime<Utc>>,
    /// The run's timeout, counted from `assigned` on this machine's monotonic clock.
    pub(crate) timeout: Option<Duration>,
    pub(crate) trace_context: BTreeMap<String, String>,
    pub(crate) epoch: i64,
    pub(crate) token: CancellationToken,
    /// `(stop reason, sealed)`: once the handler's result is in, the entry is sealed and
    /// a late stop request no longer changes how the run ended.
    stop: Mutex<(Option<StopReason>, bool)>,
    progress: Mutex<(u64, u64)>,
    tail: Mutex<LogTail>,
}

impl RunEntry {
    /// Asks the run to stop, unless it has already been asked or has ended.
    pub(crate) fn stop(&self, reason: StopReason) {
        {
            let mut stop = lock(&self.stop);
            if stop.0.is_some() || stop.1 {
                return;
            }
            stop.0 = Some(reason);
        }
        self.token.cancel();
    }

    /// The `RunFinished` for the handler's `result`; seals the entry.
    pub(crate) fn finished(
        &self,
        result: Result<crate::Outcome, crate::HandlerError>,
    ) -> RunFinished {
        let stop = {
            let mut stop = lock(&self.stop);
            stop.1 = true;
            stop.0.clone()
        };
        let (_, last_remaining) = *lock(&self.progress);
        let (outcome, error) = match (&stop, &result) {
            (Some(reason), _) => (reason.outcome(), reason.message()),
            (None, Ok(_)) => (RunOutcome::Succeeded, String::new()),
            (None, Err(error)) => (RunOutcome::Failed, error.message().to_owned()),
        };
        let remaining = match &result {
            Ok(outcome) => outcome.remaining().unwrap_or(last_remaining),
            Err(_) => last_remaining,
        };
        RunFinished {
            run_id: self.run_id,
            outcome: outcome as i32,
            error,
            output: lock(&self.tail).text(),
            finished_at: Some(cronfleet_proto::timestamp(Utc::now())),
            remaining,
        }
    }

    fn status(&self) -> RunStatus {
        let (done, remaining) = *lock(&self.progress);
        RunStatus {
            run_id: self.run_id,
            done,
            remaining,
        }
    }
}

/// The stream to the coordinator the worker is registered with.
#[derive(Debug)]
struct Link {
    session: u64,
    tx: mpsc::UnboundedSender<WorkerMessage>,
    /// Ended when the lease is lost, so the session drops the stream.
    lease_lost: CancellationToken,
    queued_log_bytes: Arc<AtomicUsize>,
}

/// The lease the coordinator grants: valid for `ttl` from `renewed_from`, the time the
/// worker sent the message whose answer renewed it last (a Heartbeat, or the Register).
#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Duration,
    renewed_from: Instant,
}

impl Lease {
    fn expires(&self) -> Instant {
        self.renewed_from + self.ttl
    }
}

/// A finished run whose `RunFinished` waits for the next link.
#[derive(Debug)]
struct Unreported {
    epoch: i64,
    finished: RunFinished,
}

#[derive(Debug)]
struct State {
    accepting: bool,
    highest_epoch: i64,
    link: Option<Link>,
    registration: Option<Registration>,
    lease: Option<Lease>,
    /// The seq of the last heartbeat sent, and when recent ones were sent.
    heartbeat_seq: u64,
    heartbeats_sent: VecDeque<(u64, Instant)>,
    runs: HashMap<i64, Arc<RunEntry>>,
    unreported: Vec<Unreported>,
    /// How much of each run's log to keep, as the leader said at registration.
    log_limit: usize,
}

/// Whether an `Assign` is taken.
#[derive(Debug)]
pub(crate) enum AssignDecision {
    Started,
    Rejected,
    /// A second `Assign` for a run already executing here: starting it again would run
    /// it twice, and rejecting it would tell the coordinator it is not running.
    Duplicate,
}

/// What a registered session learns from a (repeated) `Registered`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings {
    pub(crate) heartbeat: Duration,
    pub(crate) lease_ttl: Duration,
}

/// Shared by every task of one worker.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) handlers: BTreeMap<String, Arc<dyn Handler>>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// The lease's kill-by time for the run watchdogs outside this process.
    pub(crate) lease_deadline: LeaseDeadlineFile,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    /// Wakes the lease guard when a lease starts.
    lease_started: Notify,
    next_session: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A run outcome as a metric label.
fn outcome_label(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed | RunOutcome::Unspecified => "failed",
        RunOutcome::TimedOut => "timed_out",
        RunOutcome::Cancelled => "cancelled",
        RunOutcome::Rejected => "rejected",
        RunOutcome::Aborted => "aborted",
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain values half-updated in a
    // way that matters more than stopping the worker would.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        handlers: BTreeMap<String, Arc<dyn Handler>>,
        lease_deadline: LeaseDeadlineFile,
    ) -> Self {
        Shared {
            metrics: WorkerMetrics::new(config.capacity),
            lease_deadline,
            config,
            handlers,
            state: Mutex::new(State {
                accepting: true,
                highest_epoch: 0,
                link: None,
                registration: None,
                lease: None,
                heartbeat_seq: 0,
                heartbeats_sent: VecDeque::new(),
                runs: HashMap::new(),
                unreported: Vec::new(),
                log_limit: DEFAULT_OUTPUT_BYTES,
            }),
            status: watch::Sender::new(Status {
                accepting: true,
                ..Status::default()
            }),
            lease_started: Notify::new(),
            next_session: AtomicU64::new(1),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub(crate) fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    fn publish(&self, state: &State) {
        let status = Status {
            registration: state.registration.clone(),
            running: state.runs.len(),
            unreported: state.unreported.len(),
            accepting: state.accepting,
            highest_epoch: state.highest_epoch,
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// The first message of a stream: who this worker is and which runs it still holds
    /// (executing, or finished with their `RunFinished` not yet delivered).
    pub(crate) fn register_message(&self) -> WorkerMessage {
        let state = lock(&self.state);
        let mut held_runs: Vec<HeldRun> = state
            .runs
            .values()
            .map(|run| HeldRun {
                run_id: run.run_id,
                epoch: run.epoch,
            })
            .chain(state.unreported.iter().map(|unreported| HeldRun {
                run_id: unreported.finished.run_id,
                epoch: unreported.epoch,
            }))
            .collect();
        held_runs.sort_by_key(|held| held.run_id);
        WorkerMessage {
            kind: Some(Outgoing::Register(Register {
                node_id: self.config.node_id.clone(),
                handlers: self.handlers.keys().cloned().collect(),
                labels: self
                    .config
                    .labels
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                capacity: self.config.capacity,
                held_runs,
                highest_epoch: state.highest_epoch,
                version: self.config.version.clone(),
                draining: !state.accepting,
                stop_grace_ms: u32::try_from(self.config.stop_grace().as_millis())
                    .unwrap_or(u32::MAX),
            })),
        }
    }

    /// Handles `Registered` on session `session`, whose `Register` was sent at
    /// `register_sent` (a repeat may bring new settings; only the first grants the
    /// lease). On the first it installs the link and sends the `RunFinished` messages
    /// that waited for it. `Err` carries the highest epoch seen when the coordinator's
    /// epoch is older: it is a deposed leader.
    pub(crate) fn on_registered(
        &self,
        session: u64,
        url: &str,
        tx: &mpsc::UnboundedSender<WorkerMessage>,
        queued_log_bytes: &Arc<AtomicUsize>,
        registered: &Registered,
        register_sent: Instant,
    ) -> Result<(SessionSettings, CancellationToken), i64> {
        let mut state = lock(&self.state);
        if registered.epoch < state.highest_epoch {
            return Err(state.highest_epoch);
        }
        state.highest_epoch = registered.epoch;
        state.log_limit = match registered.log_limit_bytes {
            0 => DEFAULT_OUTPUT_BYTES,
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        };
        let settings = SessionSettings {
            heartbeat: millis_or(registered.heartbeat_interval_ms, DEFAULT_HEARTBEAT),
            lease_ttl: millis_or(registered.lease_ttl_ms, DEFAULT_LEASE_TTL),
        };
        let same_session = state
            .link
            .as_ref()
            .is_some_and(|link| link.session == session);
        if same_session {
            if let Some(lease) = &mut state.lease {
                lease.ttl = settings.lease_ttl;
            }
        } else {
            state.lease = Some(Lease {
                ttl: settings.lease_ttl,
                renewed_from: register_sent,
            });
            state.heartbeats_sent.clear();
            state.link = Some(Link {
                session,
                tx: tx.clone(),
                lease_lost: CancellationToken::new(),
                queued_log_bytes: queued_log_bytes.clone(),
            });
            let unreported = std::mem::take(&mut state.unreported);
            if !unreported.is_empty() {
                info!(
                    worker = %self.config.node_id,
                    count = unreported.len(),
                    "reporting runs that finished while disconnected"
                );
            }
            for run in unreported {
                let _ = tx.send(WorkerMessage {
                    kind: Some(Outgoing::RunFinished(run.finished)),
                });
            }
        }
        let lease_lost = state
            .link
            .as_ref()
            .expect("installed above")
            .lease_lost
            .clone();
        state.registration = Some(Registration {
            url: url.to_owned(),
            coordinator_id: registered.coordinator_id.clone(),
            epoch: registered.epoch,
        });
        self.publish(&state);
        let lease = state.lease;
        drop(state);
        self.publish_kill_by(lease);
        self.lease_started.notify_one();
        Ok((settings, lease_lost))
    }

    /// Whether session `session` still holds the lease (fencing the worker first if it
    /// has just run out): `false` means the session must end rather than act on a
    /// message. Only [`Shared::renew_lease`] extends it.
    pub(crate) fn lease_held(&self, session: u64) -> bool {
        self.fence_if_expired();
        let state = lock(&self.state);
        state.lease.is_some()
            && state
                .link
                .as_ref()
                .is_some_and(|link| link.session == session)
    }

    /// `LeaseRenewed` for heartbeat `seq` on session `session`: the lease now runs from
    /// when that heartbeat was sent — never from when its answer arrived, so the lease
    /// ends on this side before the coordinator's view of it does. A seq this worker did
    /// not send (or has forgotten) renews nothing. `false` when the lease is gone.
    pub(crate) fn renew_lease(&self, session: u64, seq: u64) -> bool {
        if !self.lease_held(session) {
            return false;
        }
        let mut state = lock(&self.state);
        // Heartbeats are answered in order on the stream: the answer to `seq` also tells
        // that every earlier one was answered. An older coordinator echoes no seq (0): its
        // answer is to the oldest heartbeat not answered yet.
        let position = if seq == 0 {
            (!state.heartbeats_sent.is_empty()).then_some(0)
        } else {
            state
                .heartbeats_sent
                .iter()
                .position(|(sent_seq, _)| *sent_seq == seq)
        };
        let Some(position) = position else {
            debug!(worker = %self.config.node_id, seq, "lease renewal for a heartbeat not sent on this link: ignored");
            return true;
        };
        let (_, sent) = state.heartbeats_sent[position];
        state.heartbeats_sent.drain(..=position);
        let lease = state.lease.as_mut().expect("held above");
        lease.renewed_from = lease.renewed_from.max(sent);
        let lease = state.lease;
        drop(state);
        self.publish_kill_by(lease);
        true
    }

    /// Tells the run watchdogs when this lease's runs must be dead: at its end plus the
    /// kill grace (the worker itself sends SIGTERM at the end and SIGKILL after the
    /// grace; the watchdogs do the SIGKILL should the worker be frozen).
    fn publish_kill_by(&self, lease: Option<Lease>) {
        let Some(lease) = lease else { return };
        let left = lease.expires().saturating_duration_since(Instant::now());
        if let Err(error) = self.lease_deadline.kill_in(left + self.config.kill_grace) {
            // The watchdogs keep the previous, earlier time: they kill too soon, never late.
            warn!(worker = %self.config.node_id, %error, "cannot publish the lease deadline for the run watchdogs");
        }
    }

    /// Records an epoch the coordinator stated (`LeaseRenewed`); `Err` with the highest
    /// epoch seen when it is older: the coordinator is a deposed leader.
    pub(crate) fn observe_epoch(&self, epoch: i64) -> Result<(), i64> {
        let mut state = lock(&self.state);
        if epoch < state.highest_epoch {
            return Err(state.highest_epoch);
        }
        if epoch > state.highest_epoch {
            state.highest_epoch = epoch;
            self.publish(&state);
        }
        Ok(())
    }

    /// Forgets session `session`'s link (the stream ended). Runs keep executing while the
    /// lease holds; their messages wait for the next link.
    pub(crate) fn unlink(&self, session: u64) {
        let mut state = lock(&self.state);
        if state
            .link
            .as_ref()
            .is_some_and(|link| link.session == session)
        {
            state.link = None;
            state.registration = None;
            self.publish(&state);
        }
    }

    /// The periodic heartbeat: every run executing now and its progress.
    pub(crate) fn heartbeat_message(&self) -> WorkerMessage {
        let mut state = lock(&self.state);
        heartbeat_of(&mut state)
    }

    /// Takes or refuses an `Assign`: refused (REJECTED) when the worker is draining, the
    /// epoch is older than one already seen, the handler is unknown or every slot is busy.
    /// A taken run gets its `RunStarted` on `tx` before its task can send anything.
    pub(crate) fn on_assign(
        self: &Arc<Self>,
        tx: &mpsc::UnboundedSender<WorkerMessage>,
        assign: Assign,
    ) -> AssignDecision {
        let mut state = lock(&self.state);
        if state.runs.contains_key(&assign.run_id) {
            return AssignDecision::Duplicate;
        }
        let rejection = if assign.epoch < state.highest_epoch {
            Some(format!(
                "stale epoch {}: this worker has seen epoch {}, so the assign comes from a deposed leader",
                assign.epoch, state.highest_epoch
            ))
        } else if !state.accepting {
            Some("worker is shutting down: it takes no new runs".to_owned())
        } else if !self.handlers.contains_key(&assign.handler) {
            Some(format!(
                "unknown handler {:?}: this worker runs {}",
                assign.handler,
                self.handlers
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else if state.runs.len() >= self.config.capacity as usize {
            Some(format!(
                "no free capacity: all {} slots of this worker are busy",
                self.config.capacity
            ))
        } else {
            None
        };
        if let Some(error) = rejection {
            warn!(
                run_id = assign.run_id,
                job = %assign.job,
                worker = %self.config.node_id,
                %error,
                "rejected assign"
            );
            self.metrics.run_ended(&assign.handler, "rejected", None);
            let _ = tx.send(WorkerMessage {
                kind: Some(Outgoing::RunFinished(RunFinished {
                    run_id: assign.run_id,
                    outcome: RunOutcome::Rejected as i32,
                    error,
                    output: String::new(),
                    finished_at: Some(cronfleet_proto::timestamp(Utc::now())),
                    remaining: 0,
                })),
            });
            return AssignDecision::Rejected;
        }
        state.highest_epoch = state.highest_epoch.max(assign.epoch);

        let (args, args_error) = parse_args(&assign.args_json);
        let slot = match assign.slot.as_ref().and_then(cronfleet_proto::datetime) {
            Some(slot) => slot,
            None => {
                warn!(
                    run_id = assign.run_id,
                    "assign without a valid slot: using now"
                );
                Utc::now()
            }
        };
        let run = Arc::new(RunEntry {
            run_id: assign.run_id,
            job: assign.job,
            slot,
            attempt: assign.attempt,
            trigger: assign.trigger,
            handler: assign.handler.clone(),
            assigned: std::time::Instant::now(),
            args,
            deadline: assign.deadline.as_ref().and_then(cronfleet_proto::datetime),
            timeout: (assign.timeout_ms > 0).then(|| Duration::from_millis(assign.timeout_ms)),
            trace_context: assign.trace_context.into_iter().collect(),
            epoch: assign.epoch,
            token: CancellationToken::new(),
            stop: Mutex::new((None, false)),
            progress: Mutex::new((0, 0)),
            tail: Mutex::new(LogTail::new(state.log_limit)),
        });
        let handler = self.handlers[&assign.handler].clone();
        state.runs.insert(run.run_id, run.clone());
        let started_at = Utc::now();
        self.metrics
            .run_started((started_at - slot).to_std().unwrap_or(Duration::ZERO));
        let _ = tx.send(WorkerMessage {
            kind: Some(Outgoing::RunStarted(RunStarted {
                run_id: run.run_id,
                started_at: Some(cronfleet_proto::timestamp(started_at)),
            })),
        });
        info!(
            run_id = run.run_id,
            job = %run.job,
            worker = %self.config.node_id,
            handler = %assign.handler,
            attempt = run.attempt,
            "run started"
        );
        self.publish(&state);
        drop(state);
        let ctx = RunContext::new(run, self.clone());
        tokio::spawn(crate::run::execute(self.clone(), ctx, handler, args_error));
        AssignDecision::Started
    }

    /// Handles `Cancel`: the run's handler is told to stop and it ends CANCELLED.
    pub(crate) fn on_cancel(&self, run_id: i64, reason: String) {
        let run = lock(&self.state).runs.get(&run_id).cloned();
        match run {
            Some(run) => {
                info!(run_id, job = %run.job, worker = %self.config.node_id, %reason, "cancelling run");
                run.stop(StopReason::CancelledByCoordinator(reason));
            }
            None => debug!(run_id, "cancel for a run this worker does not hold"),
        }
    }

    /// Hands over the `RunFinished` of a run whose handler returned: sent on the current
    /// link, or kept for the next one.
    pub(crate) fn finish_run(&self, run: &RunEntry, finished: RunFinished) {
        let mut state = lock(&self.state);
        state.runs.remove(&run.run_id);
        let outcome = RunOutcome::try_from(finished.outcome).unwrap_or(RunOutcome::Unspecified);
        self.metrics.run_ended(
            &run.handler,
            outcome_label(outcome),
            Some(run.assigned.elapsed()),
        );
        info!(
            run_id = run.run_id,
            job = %run.job,
            worker = %self.config.node_id,
            outcome = outcome.as_str_name(),
            error = %finished.error,
            "run finished"
        );
        let message = WorkerMessage {
            kind: Some(Outgoing::RunFinished(finished)),
        };
        let unsent = match &state.link {
            Some(link) => link.tx.send(message).err().map(|error| error.0),
            None => Some(message),
        };
        if let Some(WorkerMessage {
            kind: Some(Outgoing::RunFinished(finished)),
        }) = unsent
        {
            state.unreported.push(Unreported {
                epoch: run.epoch,
                finished,
            });
        }
        self.publish(&state);
    }

    /// Streams a chunk of a run's output, if connected; the text is also in the tail.
    pub(crate) fn log(&self, run: &RunEntry, text: &str) {
        if text.is_empty() {
            return;
        }
        lock(&run.tail).push(text);
        let state = lock(&self.state);
        let Some(link) = &state.link else { return };
        let mut rest = text;
        while !rest.is_empty() {
            let chunk = crate::output::head(rest, MAX_LOG_CHUNK);
            // A character longer than the chunk size cannot happen (chunks are 32 KiB), but
            // never loop forever on an empty head.
            let chunk = if chunk.is_empty() { rest } else { chunk };
            rest = &rest[chunk.len()..];
            if link.queued_log_bytes.load(Ordering::Relaxed) > MAX_QUEUED_LOG_BYTES {
                debug!(
                    run_id = run.run_id,
                    "log stream backed up: chunk kept in the output tail only"
                );
                continue;
            }
            link.queued_log_bytes
                .fetch_add(chunk.len(), Ordering::Relaxed);
            let _ = link.tx.send(WorkerMessage {
                kind: Some(Outgoing::RunLog(RunLog {
                    run_id: run.run_id,
                    text: chunk.to_owned(),
                })),
            });
        }
    }

    /// Records and streams a run's progress (the heartbeat repeats it).
    pub(crate) fn progress(&self, run: &RunEntry, done: u64, remaining: u64) {
        *lock(&run.progress) = (done, remaining);
        let state = lock(&self.state);
        if let Some(link) = &state.link {
            let _ = link.tx.send(WorkerMessage {
                kind: Some(Outgoing::RunProgress(RunProgress {
                    run_id: run.run_id,
                    done,
                    remaining,
                })),
            });
        }
    }

    /// Self-fencing: once nothing has come from the coordinator for the lease TTL, every
    /// run is cancelled (DESIGN §2 invariant 1: the coordinator will soon consider them
    /// lost and may start them elsewhere) and the stream, evidently dead, is dropped.
    /// Returns when the lease next needs checking, or `None` when there is no lease.
    fn fence_if_expired(&self) -> Option<Instant> {
        let mut state = lock(&self.state);
        let lease = state.lease?;
        let expires = lease.expires();
        if Instant::now() < expires {
            return Some(expires);
        }
        state.lease = None;
        if let Some(link) = state.link.take() {
            link.lease_lost.cancel();
        }
        state.registration = None;
        warn!(
            worker = %self.config.node_id,
            runs = state.runs.len(),
            lease_ttl_ms = lease.ttl.as_millis() as u64,
            "lease lost: no lease renewal from the coordinator; stopping every run"
        );
        for run in state.runs.values() {
            run.stop(StopReason::LeaseLost(lease.ttl));
        }
        self.publish(&state);
        None
    }

    /// Fences the worker now if its lease has run out: a handler whose result comes in
    /// after the lease ended (its processes killed by the watchdog while the worker was
    /// frozen, say) was stopped by the lease, whatever it returned.
    pub(crate) fn check_lease(&self) {
        self.fence_if_expired();
    }

    /// Runs forever: fences the worker when its lease expires.
    pub(crate) async fn guard_lease(&self) {
        loop {
            match self.fence_if_expired() {
                Some(check_at) => tokio::time::sleep_until(check_at).await,
                None => self.lease_started.notified().await,
            }
        }
    }

    /// Shutdown, step 1: take no new runs.
    pub(crate) fn stop_accepting(&self) {
        let mut state = lock(&self.state);
        state.accepting = false;
        // Say so at once (not at the next heartbeat), so the coordinator stops choosing
        // this worker before it has to refuse a run.
        if state.link.is_some() {
            let heartbeat = heartbeat_of(&mut state);
            if let Some(link) = &state.link {
                let _ = link.tx.send(heartbeat);
            }
        }
        self.publish(&state);
    }

    /// Shutdown, step 2 (after the drain timeout): stop every run still executing.
    pub(crate) fn stop_all(&self, reason: &StopReason) {
        let state = lock(&self.state);
        for run in state.runs.values() {
            run.stop(reason.clone());
        }
    }
}

/// The next heartbeat: every run executing now with its progress, whether the worker
/// drains, and a new seq, remembered with the time it is sent for its `LeaseRenewed`.
fn heartbeat_of(state: &mut State) -> WorkerMessage {
    let mut running: Vec<RunStatus> = state.runs.values().map(|run| run.status()).collect();
    running.sort_by_key(|run| run.run_id);
    state.heartbeat_seq += 1;
    let seq = state.heartbeat_seq;
    if state.heartbeats_sent.len() == MAX_HEARTBEATS_IN_FLIGHT {
        state.heartbeats_sent.pop_front();
    }
    state.heartbeats_sent.push_back((seq, Instant::now()));
    WorkerMessage {
        kind: Some(Outgoing::Heartbeat(Heartbeat {
            running,
            draining: !state.accepting,
            seq,
        })),
    }
}

fn millis_or(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(u64::from(ms))
    }
}

/// The job's args as JSON; empty text means no args (`{}`). Invalid JSON fails the run
/// (rather than rejecting it, which would only send it to another worker).
fn parse_args(args_json: &str) -> (serde_json::Value, Option<String>) {
    if args_json.trim().is_empty() {
        return (serde_json::Value::Object(serde_json::Map::new()), None);
    }
    match serde_json::from_str(args_json) {
        Ok(args) => (args, None),
        Err(error) => (
            serde_json::Value::Null,
            Some(format!("args are not valid JSON: {error}")),
        ),
    }
}
