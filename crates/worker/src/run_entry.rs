//! One run's in-memory record on this worker, from its `Assign` until its `RunFinished` is
//! handed over: what the assign asked for ([`RunAssignment`]), why it was told to stop
//! ([`StopReason`], the first reason wins), its progress and output tail, and how it
//! ended ([`FinishedRun`]) once the handler's result seals it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::HandlerError;
use crate::lock::lock;
use crate::output::LogTail;

/// What an `Assign` asks this worker to run, read from the wire by `protocol.rs`.
#[derive(Debug)]
pub(crate) struct RunAssignment {
    pub(crate) run_id: i64,
    pub(crate) job: String,
    pub(crate) slot: DateTime<Utc>,
    pub(crate) attempt: u32,
    pub(crate) trigger: String,
    /// The handler's name, as the assign gave it.
    pub(crate) handler: String,
    pub(crate) args: serde_json::Value,
    /// Set when the args are not valid JSON: the run fails without calling the handler.
    pub(crate) args_error: Option<String>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    /// The run's timeout, counted from the assign's arrival on this machine's monotonic
    /// clock.
    pub(crate) timeout: Option<Duration>,
    pub(crate) trace_context: BTreeMap<String, String>,
    pub(crate) epoch: i64,
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
    /// What the run's `RunFinished.error` says.
    pub(crate) fn message(&self) -> String {
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

/// How a run ended: a stop reason, when there was one, decides it whatever the handler
/// returned.
#[derive(Debug, Clone)]
pub(crate) enum RunEnding {
    Succeeded,
    Failed(HandlerError),
    Stopped(StopReason),
}

impl RunEnding {
    /// The run's error text (empty for a success).
    pub(crate) fn error(&self) -> String {
        match self {
            RunEnding::Succeeded => String::new(),
            RunEnding::Failed(error) => error.message().to_owned(),
            RunEnding::Stopped(reason) => reason.message(),
        }
    }
}

/// A sealed run: everything its `RunFinished` reports.
#[derive(Debug)]
pub(crate) struct FinishedRun {
    pub(crate) ending: RunEnding,
    pub(crate) finished_at: DateTime<Utc>,
    /// The work left: what the handler stated, else its last progress report.
    pub(crate) remaining: u64,
    /// The output tail.
    pub(crate) output: String,
}

/// One run this worker executes, from its `Assign` until its `RunFinished` is handed over.
#[derive(Debug)]
pub(crate) struct RunEntry {
    pub(crate) assignment: RunAssignment,
    /// When the assign arrived.
    pub(crate) assigned: std::time::Instant,
    pub(crate) token: CancellationToken,
    /// `(stop reason, sealed)`: once the handler's result is in, the entry is sealed and
    /// a late stop request no longer changes how the run ended.
    stop: Mutex<(Option<StopReason>, bool)>,
    progress: Mutex<(u64, u64)>,
    tail: Mutex<LogTail>,
}

impl RunEntry {
    /// A run that has just arrived, keeping the last `log_limit` bytes of its output.
    pub(crate) fn new(assignment: RunAssignment, log_limit: usize) -> Self {
        RunEntry {
            assignment,
            assigned: std::time::Instant::now(),
            token: CancellationToken::new(),
            stop: Mutex::new((None, false)),
            progress: Mutex::new((0, 0)),
            tail: Mutex::new(LogTail::new(log_limit)),
        }
    }

    pub(crate) fn run_id(&self) -> i64 {
        self.assignment.run_id
    }

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

    /// How the run ended given the handler's `result` (the work left it stated, or its
    /// error); seals the entry.
    pub(crate) fn seal(&self, result: Result<Option<u64>, HandlerError>) -> FinishedRun {
        let stop = {
            let mut stop = lock(&self.stop);
            stop.1 = true;
            stop.0.clone()
        };
        let (_, last_remaining) = self.progress();
        let remaining = match &result {
            Ok(stated) => stated.unwrap_or(last_remaining),
            Err(_) => last_remaining,
        };
        let ending = match (stop, result) {
            (Some(reason), _) => RunEnding::Stopped(reason),
            (None, Ok(_)) => RunEnding::Succeeded,
            (None, Err(error)) => RunEnding::Failed(error),
        };
        FinishedRun {
            ending,
            output: lock(&self.tail).text(),
            finished_at: Utc::now(),
            remaining,
        }
    }

    /// The last reported `(done, remaining)`.
    pub(crate) fn progress(&self) -> (u64, u64) {
        *lock(&self.progress)
    }

    pub(crate) fn record_progress(&self, done: u64, remaining: u64) {
        *lock(&self.progress) = (done, remaining);
    }

    /// Appends to the output tail, what `RunFinished.output` reports.
    pub(crate) fn record_log(&self, text: &str) {
        lock(&self.tail).push(text);
    }
}
