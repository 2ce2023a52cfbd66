//! The worker's state, shared by the connection, the lease guard and the runs: which runs
//! execute, the link to the coordinator they report on and the outbox of reports waiting
//! for the next link, the lease, the highest epoch; admission of assigns and streaming of
//! run logs and progress.
//!
//! Everything sits behind one mutex that is never held across an `.await`, which keeps
//! the protocol's ordering rules simple to uphold: a `RunFinished` is either sent on the
//! current link or queued for the next one in the same critical section in which a new
//! link is installed and the queue flushed, and a `Register` snapshot of the held runs
//! cannot miss a run that finishes meanwhile. The same lock makes self-fencing one step:
//! the lease found expired (`lease_guard.rs`), the link dropped and every run stopped.
//!
//! Knows nothing of handlers or of how a run executes: the launcher (`launcher.rs`) owns
//! the handlers and starts the run this state admits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cronfleet_proto::v1::{Assign, Registered, RunFinished, RunOutcome, WorkerMessage};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::lease_guard::{Expiry, LeaseGuard, LeaseState};
use crate::lock::lock;
use crate::metrics::WorkerMetrics;
use crate::output::DEFAULT_OUTPUT_BYTES;
use crate::protocol::{self, RegisterSnapshot, RunningRun, SessionSettings};
use crate::run_entry::{FinishedRun, RunEntry, StopReason};
use crate::status::{Registration, Status};

/// Log text queued for a slow stream beyond which new chunks are not streamed (they stay
/// in the run's output tail): keeps a chatty run from filling memory while the network
/// stalls.
const MAX_QUEUED_LOG_BYTES: usize = 4 * 1024 * 1024;
/// The largest `RunLog` text; bigger writes are split (gRPC's default message limit is
/// 4 MiB, and small chunks keep a live log view smooth).
const MAX_LOG_CHUNK: usize = 32 * 1024;

/// The stream to the coordinator the worker is registered with.
#[derive(Debug)]
struct Link {
    session: u64,
    tx: mpsc::UnboundedSender<WorkerMessage>,
    /// Ended when the lease is lost, so the session drops the stream.
    lease_lost: CancellationToken,
    queued_log_bytes: Arc<AtomicUsize>,
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
    lease: LeaseState,
    runs: HashMap<i64, Arc<RunEntry>>,
    unreported: Vec<Unreported>,
    /// How much of each run's log to keep, as the leader said at registration.
    log_limit: usize,
}

impl State {
    /// Whether session `session` is the current link and holds the lease.
    fn lease_held_by(&self, session: u64) -> bool {
        self.lease.is_held()
            && self
                .link
                .as_ref()
                .is_some_and(|link| link.session == session)
    }
}

/// What became of an `Assign`.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Taken: its `RunStarted` is sent; the run is to be started.
    Admitted(Arc<RunEntry>),
    /// Refused with a REJECTED `RunFinished`.
    Rejected,
    /// A second `Assign` for a run already executing here: starting it again would run
    /// it twice, and rejecting it would tell the coordinator it is not running.
    Duplicate,
}

/// Shared by every task of one worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) lease_guard: LeaseGuard,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    next_session: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: Config, lease_guard: LeaseGuard) -> Self {
        Shared {
            metrics: WorkerMetrics::new(config.capacity),
            lease_guard,
            config,
            state: Mutex::new(State {
                accepting: true,
                highest_epoch: 0,
                link: None,
                registration: None,
                lease: LeaseState::default(),
                runs: HashMap::new(),
                unreported: Vec::new(),
                log_limit: DEFAULT_OUTPUT_BYTES,
            }),
            status: watch::Sender::new(Status {
                accepting: true,
                ..Status::default()
            }),
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

    /// What the first message of a stream says of the state: which runs the worker still
    /// holds (executing, or finished with their `RunFinished` not yet delivered).
    pub(crate) fn register_snapshot(&self) -> RegisterSnapshot {
        let state = lock(&self.state);
        let held_runs =
            state
                .runs
                .values()
                .map(|run| protocol::held_run(run.run_id(), run.assignment.epoch))
                .chain(state.unreported.iter().map(|unreported| {
                    protocol::held_run(unreported.finished.run_id, unreported.epoch)
                }))
                .collect();
        RegisterSnapshot {
            held_runs,
            highest_epoch: state.highest_epoch,
            draining: !state.accepting,
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
        let settings = protocol::session_settings(registered);
        state.log_limit = settings.log_limit;
        let same_session = state
            .link
            .as_ref()
            .is_some_and(|link| link.session == session);
        if same_session {
            state.lease.set_ttl(settings.lease_ttl);
        } else {
            state.lease.grant(settings.lease_ttl, register_sent);
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
                let _ = tx.send(protocol::finished_message(run.finished));
            }
        }
        let lease_lost = state
            .link
            .as_ref()
            .expect("installed above")
            .lease_lost
            .clone();
        state.registration = Some(protocol::registration(url, registered));
        self.publish(&state);
        let lease = state.lease.current();
        drop(state);
        self.lease_guard.publish_kill_by(lease);
        self.lease_guard.lease_started();
        Ok((settings, lease_lost))
    }

    /// Whether session `session` still holds the lease (fencing the worker first if it
    /// has just run out): `false` means the session must end rather than act on a
    /// message. Only [`Shared::renew_lease`] extends it.
    pub(crate) fn lease_held(&self, session: u64) -> bool {
        self.fence_if_expired();
        lock(&self.state).lease_held_by(session)
    }

    /// `LeaseRenewed` for heartbeat `seq` on session `session` (see
    /// [`LeaseState::renew`]): publishes the new kill-by time. A seq this worker did not
    /// send (or has forgotten) renews nothing. `false` when the lease is gone.
    pub(crate) fn renew_lease(&self, session: u64, seq: u64) -> bool {
        self.fence_if_expired();
        let mut state = lock(&self.state);
        // Checked in the same critical section as the renewal, so a lease fenced in
        // between cannot be renewed.
        if !state.lease_held_by(session) {
            return false;
        }
        if !state.lease.renew(seq) {
            debug!(worker = %self.config.node_id, seq, "lease renewal for a heartbeat not sent on this link: ignored");
            return true;
        }
        let lease = state.lease.current();
        drop(state);
        self.lease_guard.publish_kill_by(lease);
        true
    }

    /// Self-fencing: once nothing has come from the coordinator for the lease TTL, every
    /// run is cancelled (DESIGN §2 invariant 1: the coordinator will soon consider them
    /// lost and may start them elsewhere) and the stream, evidently dead, is dropped.
    /// Returns when the lease next needs checking, or `None` when there is no lease.
    pub(crate) fn fence_if_expired(&self) -> Option<Instant> {
        let mut state = lock(&self.state);
        let lease = match state.lease.expire_if_past(Instant::now()) {
            Expiry::NoLease => return None,
            Expiry::HeldUntil(expires) => return Some(expires),
            Expiry::Expired(lease) => lease,
        };
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
        self.lease_guard.guard(|| self.fence_if_expired()).await;
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

    /// Takes or refuses an `Assign`: refused (REJECTED) when the epoch is older than one
    /// already seen, the worker is draining, the launcher has no such handler
    /// (`unknown_handler`, its reason) or every slot is busy — checked in that order. A
    /// taken run gets its `RunStarted` on `tx` before anything can start it.
    pub(crate) fn admit(
        &self,
        tx: &mpsc::UnboundedSender<WorkerMessage>,
        assign: Assign,
        unknown_handler: Option<String>,
    ) -> Admission {
        let mut state = lock(&self.state);
        if state.runs.contains_key(&assign.run_id) {
            return Admission::Duplicate;
        }
        let rejection = if assign.epoch < state.highest_epoch {
            Some(format!(
                "stale epoch {}: this worker has seen epoch {}, so the assign comes from a deposed leader",
                assign.epoch, state.highest_epoch
            ))
        } else if !state.accepting {
            Some("worker is shutting down: it takes no new runs".to_owned())
        } else if unknown_handler.is_some() {
            unknown_handler
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
            let _ = tx.send(protocol::rejection(assign.run_id, error));
            return Admission::Rejected;
        }
        state.highest_epoch = state.highest_epoch.max(assign.epoch);

        let run = Arc::new(RunEntry::new(
            protocol::run_assignment(assign),
            state.log_limit,
        ));
        state.runs.insert(run.run_id(), run.clone());
        let started_at = Utc::now();
        self.metrics.run_started(
            (started_at - run.assignment.slot)
                .to_std()
                .unwrap_or(Duration::ZERO),
        );
        let _ = tx.send(protocol::run_started(run.run_id(), started_at));
        info!(
            run_id = run.run_id(),
            job = %run.assignment.job,
            worker = %self.config.node_id,
            handler = %run.assignment.handler,
            attempt = run.assignment.attempt,
            "run started"
        );
        self.publish(&state);
        Admission::Admitted(run)
    }

    /// Handles `Cancel`: the run's handler is told to stop and it ends CANCELLED.
    pub(crate) fn on_cancel(&self, run_id: i64, reason: String) {
        let run = lock(&self.state).runs.get(&run_id).cloned();
        match run {
            Some(run) => {
                info!(run_id, job = %run.assignment.job, worker = %self.config.node_id, %reason, "cancelling run");
                run.stop(StopReason::CancelledByCoordinator(reason));
            }
            None => debug!(run_id, "cancel for a run this worker does not hold"),
        }
    }

    /// Hands over the `RunFinished` of a run whose handler returned: sent on the current
    /// link, or kept for the next one.
    pub(crate) fn finish_run(&self, run: &RunEntry, finished: FinishedRun) {
        let mut state = lock(&self.state);
        state.runs.remove(&run.run_id());
        let outcome: RunOutcome = protocol::run_outcome(&finished.ending);
        self.metrics.run_ended(
            &run.assignment.handler,
            protocol::outcome_label(outcome),
            Some(run.assigned.elapsed()),
        );
        let finished = protocol::run_finished(run.run_id(), finished);
        info!(
            run_id = run.run_id(),
            job = %run.assignment.job,
            worker = %self.config.node_id,
            outcome = outcome.as_str_name(),
            error = %finished.error,
            "run finished"
        );
        let message = protocol::finished_message(finished);
        let unsent = match &state.link {
            Some(link) => link.tx.send(message).err().map(|error| error.0),
            None => Some(message),
        };
        if let Some(finished) = unsent.and_then(protocol::into_finished) {
            state.unreported.push(Unreported {
                epoch: run.assignment.epoch,
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
        run.record_log(text);
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
                    run_id = run.run_id(),
                    "log stream backed up: chunk kept in the output tail only"
                );
                continue;
            }
            link.queued_log_bytes
                .fetch_add(chunk.len(), Ordering::Relaxed);
            let _ = link
                .tx
                .send(protocol::run_log(run.run_id(), chunk.to_owned()));
        }
    }

    /// Records and streams a run's progress (the heartbeat repeats it).
    pub(crate) fn progress(&self, run: &RunEntry, done: u64, remaining: u64) {
        run.record_progress(done, remaining);
        let state = lock(&self.state);
        if let Some(link) = &state.link {
            let _ = link
                .tx
                .send(protocol::run_progress(run.run_id(), done, remaining));
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
    let running = state
        .runs
        .values()
        .map(|run| {
            let (done, remaining) = run.progress();
            RunningRun {
                run_id: run.run_id(),
                done,
                remaining,
            }
        })
        .collect();
    let seq = state.lease.next_heartbeat_seq();
    protocol::heartbeat(running, !state.accepting, seq)
}
