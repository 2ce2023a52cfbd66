//! The worker side of the wire protocol (`proto/cronfleet/v1/worker.proto`): every
//! conversion between `cronfleet_proto::v1` messages and the worker's own types lives
//! here — reading `Assign` into a [`RunAssignment`] and `Registered` into
//! [`SessionSettings`], and building `Register`, `Heartbeat`, `RunStarted`, `RunLog`,
//! `RunProgress` and `RunFinished` (with the `StopReason` → `RunOutcome` mapping).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_proto::v1::worker_message::Kind as Outgoing;
use cronfleet_proto::v1::{
    Assign, Heartbeat, HeldRun, Register, Registered, RunFinished, RunLog, RunOutcome, RunProgress,
    RunStarted, RunStatus, WorkerMessage,
};
use tracing::warn;

use crate::config::{Config, DEFAULT_HEARTBEAT, DEFAULT_LEASE_TTL};
use crate::output::DEFAULT_OUTPUT_BYTES;
use crate::run_entry::{FinishedRun, RunAssignment, RunEnding, StopReason};
use crate::status::Registration;

/// What a registered session learns from a (repeated) `Registered`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings {
    pub(crate) heartbeat: Duration,
    pub(crate) lease_ttl: Duration,
    /// How much of each run's log to keep.
    pub(crate) log_limit: usize,
}

/// The settings a `Registered` gives, with the defaults for those it leaves unset (0).
pub(crate) fn session_settings(registered: &Registered) -> SessionSettings {
    SessionSettings {
        heartbeat: millis_or(registered.heartbeat_interval_ms, DEFAULT_HEARTBEAT),
        lease_ttl: millis_or(registered.lease_ttl_ms, DEFAULT_LEASE_TTL),
        log_limit: match registered.log_limit_bytes {
            0 => DEFAULT_OUTPUT_BYTES,
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        },
    }
}

/// The leader a `Registered` on the stream to `url` names.
pub(crate) fn registration(url: &str, registered: &Registered) -> Registration {
    Registration {
        url: url.to_owned(),
        coordinator_id: registered.coordinator_id.clone(),
        epoch: registered.epoch,
    }
}

fn millis_or(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(u64::from(ms))
    }
}

/// What `Register` says of the worker's state, taken in one critical section.
#[derive(Debug)]
pub(crate) struct RegisterSnapshot {
    /// Executing, or finished with their `RunFinished` not yet delivered.
    pub(crate) held_runs: Vec<HeldRun>,
    pub(crate) highest_epoch: i64,
    pub(crate) draining: bool,
}

/// A run this worker holds, assigned by the leader of `epoch`, as `Register` lists it.
pub(crate) fn held_run(run_id: i64, epoch: i64) -> HeldRun {
    HeldRun { run_id, epoch }
}

/// The first message of a stream: who this worker is and which runs it still holds.
pub(crate) fn register(
    config: &Config,
    handler_names: &[String],
    snapshot: RegisterSnapshot,
) -> WorkerMessage {
    let mut held_runs = snapshot.held_runs;
    held_runs.sort_by_key(|held| held.run_id);
    message(Outgoing::Register(Register {
        node_id: config.node_id.clone(),
        handlers: handler_names.to_vec(),
        labels: config
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        capacity: config.capacity,
        held_runs,
        highest_epoch: snapshot.highest_epoch,
        version: config.version.clone(),
        draining: snapshot.draining,
        stop_grace_ms: u32::try_from(config.stop_grace().as_millis()).unwrap_or(u32::MAX),
    }))
}

/// A run executing now and its progress, as a heartbeat lists it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunningRun {
    pub(crate) run_id: i64,
    pub(crate) done: u64,
    pub(crate) remaining: u64,
}

/// A heartbeat: every run executing now (by run id) with its progress, whether the
/// worker drains, and the `seq` its `LeaseRenewed` must echo.
pub(crate) fn heartbeat(running: Vec<RunningRun>, draining: bool, seq: u64) -> WorkerMessage {
    let mut running: Vec<RunStatus> = running
        .into_iter()
        .map(|run| RunStatus {
            run_id: run.run_id,
            done: run.done,
            remaining: run.remaining,
        })
        .collect();
    running.sort_by_key(|run| run.run_id);
    message(Outgoing::Heartbeat(Heartbeat {
        running,
        draining,
        seq,
    }))
}

/// The run an `Assign` asks for. Called only for an assign that is taken: a missing slot
/// is logged and replaced by now.
pub(crate) fn run_assignment(assign: Assign) -> RunAssignment {
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
    RunAssignment {
        run_id: assign.run_id,
        job: assign.job,
        slot,
        attempt: assign.attempt,
        trigger: assign.trigger,
        handler: assign.handler,
        args,
        args_error,
        deadline: assign.deadline.as_ref().and_then(cronfleet_proto::datetime),
        timeout: (assign.timeout_ms > 0).then(|| Duration::from_millis(assign.timeout_ms)),
        trace_context: assign.trace_context.into_iter().collect(),
        epoch: assign.epoch,
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

pub(crate) fn run_started(run_id: i64, started_at: DateTime<Utc>) -> WorkerMessage {
    message(Outgoing::RunStarted(RunStarted {
        run_id,
        started_at: Some(cronfleet_proto::timestamp(started_at)),
    }))
}

pub(crate) fn run_log(run_id: i64, text: String) -> WorkerMessage {
    message(Outgoing::RunLog(RunLog { run_id, text }))
}

pub(crate) fn run_progress(run_id: i64, done: u64, remaining: u64) -> WorkerMessage {
    message(Outgoing::RunProgress(RunProgress {
        run_id,
        done,
        remaining,
    }))
}

/// The outcome the coordinator is told.
pub(crate) fn run_outcome(ending: &RunEnding) -> RunOutcome {
    match ending {
        RunEnding::Succeeded => RunOutcome::Succeeded,
        RunEnding::Failed(_) => RunOutcome::Failed,
        RunEnding::Stopped(reason) => stop_outcome(reason),
    }
}

fn stop_outcome(reason: &StopReason) -> RunOutcome {
    match reason {
        StopReason::DeadlinePassed(_) => RunOutcome::TimedOut,
        StopReason::CancelledByCoordinator(_) => RunOutcome::Cancelled,
        // Stopped by the worker on its own: the run did not complete, and the
        // coordinator runs it again.
        StopReason::LeaseLost(_) | StopReason::ShuttingDown(_) => RunOutcome::Aborted,
    }
}

/// The `RunFinished` of a sealed run.
pub(crate) fn run_finished(run_id: i64, finished: FinishedRun) -> RunFinished {
    RunFinished {
        run_id,
        outcome: run_outcome(&finished.ending) as i32,
        error: finished.ending.error(),
        output: finished.output,
        finished_at: Some(cronfleet_proto::timestamp(finished.finished_at)),
        remaining: finished.remaining,
    }
}

/// The `RunFinished` (REJECTED) that refuses an `Assign`.
pub(crate) fn rejection(run_id: i64, error: String) -> WorkerMessage {
    finished_message(RunFinished {
        run_id,
        outcome: RunOutcome::Rejected as i32,
        error,
        output: String::new(),
        finished_at: Some(cronfleet_proto::timestamp(Utc::now())),
        remaining: 0,
    })
}

pub(crate) fn finished_message(finished: RunFinished) -> WorkerMessage {
    message(Outgoing::RunFinished(finished))
}

/// The `RunFinished` a message carries, if it is one: the one kept for the next link
/// when it could not be sent.
pub(crate) fn into_finished(message: WorkerMessage) -> Option<RunFinished> {
    match message.kind {
        Some(Outgoing::RunFinished(finished)) => Some(finished),
        _ => None,
    }
}

/// The bytes of log text a message carries (0 unless it is a `RunLog`).
pub(crate) fn log_bytes(message: &WorkerMessage) -> usize {
    match &message.kind {
        Some(Outgoing::RunLog(log)) => log.text.len(),
        _ => 0,
    }
}

/// A run outcome as a metric label.
pub(crate) fn outcome_label(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed | RunOutcome::Unspecified => "failed",
        RunOutcome::TimedOut => "timed_out",
        RunOutcome::Cancelled => "cancelled",
        RunOutcome::Rejected => "rejected",
        RunOutcome::Aborted => "aborted",
    }
}

fn message(kind: Outgoing) -> WorkerMessage {
    WorkerMessage { kind: Some(kind) }
}
