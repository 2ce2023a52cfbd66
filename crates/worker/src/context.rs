//! [`RunContext`]: everything a handler gets for one run — what to do (job, args, slot,
//! attempt), until when (deadline, cancellation) and how to report (log, progress).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::run_entry::RunEntry;
use crate::shared::Shared;

/// One run, as its handler sees it. Cheap to clone (for tasks a handler spawns).
#[derive(Clone)]
pub struct RunContext {
    run: Arc<RunEntry>,
    shared: Arc<Shared>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run.assignment.run_id)
            .field("job", &self.run.assignment.job)
            .field("attempt", &self.run.assignment.attempt)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    pub(crate) fn new(run: Arc<RunEntry>, shared: Arc<Shared>) -> Self {
        RunContext { run, shared }
    }

    pub(crate) fn entry(&self) -> &RunEntry {
        &self.run
    }

    /// The run's id (unique in the cluster).
    pub fn run_id(&self) -> i64 {
        self.run.assignment.run_id
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.run.assignment.job
    }

    /// The scheduled time this run is for.
    pub fn slot(&self) -> DateTime<Utc> {
        self.run.assignment.slot
    }

    /// 1 for the first attempt at a slot, 2 for its first retry, …
    pub fn attempt(&self) -> u32 {
        self.run.assignment.attempt
    }

    /// Why the run exists: `schedule`, `manual`, `retry`, `catch_up` or `continuation`.
    pub fn trigger(&self) -> &str {
        &self.run.assignment.trigger
    }

    /// The job's args (`{}` when it has none).
    pub fn args(&self) -> &serde_json::Value {
        &self.run.assignment.args
    }

    /// When the run is stopped and reported `timed_out`, if it has a deadline.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.run.assignment.deadline
    }

    /// W3C trace context (`traceparent`, `tracestate`) of the run's trace.
    pub fn trace_context(&self) -> &BTreeMap<String, String> {
        &self.run.assignment.trace_context
    }

    /// Cancelled when the run must stop: deadline, `Cancel`, lost lease or shutdown.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.run.token
    }

    /// Completes when the run must stop (see [`RunContext::cancellation_token`]).
    pub async fn cancelled(&self) {
        self.run.token.cancelled().await;
    }

    /// Whether the run has been told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.run.token.is_cancelled()
    }

    /// How long a handler that was told to stop may take to clean up: a shell handler's
    /// processes get SIGTERM, then SIGKILL after this long. The worker abandons a handler
    /// that has not returned a little after it.
    pub fn kill_grace(&self) -> Duration {
        self.shared.config.kill_grace
    }

    /// The file with the lease's kill-by time (see `lease_deadline.rs`), for watchdogs
    /// that stop a run's processes from outside the worker.
    pub(crate) fn lease_deadline_file(&self) -> &std::path::Path {
        self.shared.lease_guard.kill_by_file()
    }

    /// Reports how far the run has come (`RunProgress`, repeated in heartbeats). The last
    /// `remaining` is the run's `RunFinished.remaining` unless the handler returns
    /// [`crate::Outcome::with_remaining`].
    pub fn progress(&self, done: u64, remaining: u64) {
        self.shared.progress(&self.run, done, remaining);
    }

    /// Appends to the run's output: streamed to the coordinator as `RunLog` chunks, and
    /// its last 64 KiB are the run's `output`. Add your own line breaks.
    pub fn log(&self, text: impl AsRef<str>) {
        self.shared.log(&self.run, text.as_ref());
    }
}
