//! The coordinator's part of a run's trace: a root `run` span when the run is created,
//! with a `lease` child, then a `dispatch` child naming the worker, whose context travels
//! in the assign message so that the worker's `execute` and `handler` spans join the
//! same trace.
//!
//! Spans whose times are known only afterwards (the batch lease) are made with the
//! OpenTelemetry API directly, with explicit timestamps and an explicit parent — never
//! `Context::current()`, which inside an entered tracing span is that span. The SDK picks
//! span ids itself, so a root cannot be re-created later under a known id: it is a short
//! span at creation, and what follows are its children.
//!
//! Nothing here runs when traces are not exported ([`cronfleet_telemetry::enabled`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use cronfleet_core::run::Run;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};

/// How long the root of a leased run waits here for its dispatch; a run still pending
/// after that (no worker, cancelled, the job deleted) gets a new root when dispatched.
const ROOT_KEPT: Duration = Duration::from_secs(600);

fn run_attributes(run: &Run) -> Vec<KeyValue> {
    vec![
        KeyValue::new("cronfleet.run_id", run.id),
        KeyValue::new("cronfleet.job", run.job_name.clone()),
        KeyValue::new("cronfleet.slot", run.slot.to_rfc3339()),
        KeyValue::new("cronfleet.attempt", i64::from(run.attempt)),
        KeyValue::new("cronfleet.trigger", run.trigger.as_str()),
    ]
}

/// The roots of the runs this leader's scheduler created, waiting for their dispatch
/// (run id → root). In memory only: a run created elsewhere (another leader, a manual
/// run, a retry or continuation) gets its root at dispatch instead.
#[derive(Debug, Default)]
pub(crate) struct RunTraces {
    roots: Mutex<HashMap<i64, (SpanContext, Instant)>>,
}

impl RunTraces {
    fn roots(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (SpanContext, Instant)>> {
        self.roots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After one `lease_due` that took `jobs` jobs from `started` to `ended`: a root `run`
    /// span per created run, each with a `lease` child.
    pub(crate) fn leased(
        &self,
        runs: &[Run],
        epoch: i64,
        jobs: usize,
        started: SystemTime,
        ended: SystemTime,
    ) {
        if !cronfleet_telemetry::enabled() {
            return;
        }
        let tracer = global::tracer("cronfleet");
        let mut roots = self.roots();
        roots.retain(|_, (_, kept)| kept.elapsed() < ROOT_KEPT);
        for run in runs {
            let root = tracer
                .span_builder("run")
                .with_kind(SpanKind::Internal)
                .with_start_time(started)
                .with_attributes(run_attributes(run))
                .start_with_context(&tracer, &Context::new());
            let root_context = root.span_context().clone();
            let root = Context::new().with_span(root);
            let mut lease = tracer
                .span_builder("lease")
                .with_start_time(started)
                .with_attributes([
                    KeyValue::new("cronfleet.epoch", epoch),
                    KeyValue::new(
                        "cronfleet.lease.jobs",
                        i64::try_from(jobs).unwrap_or(i64::MAX),
                    ),
                ])
                .start_with_context(&tracer, &root);
            lease.end_with_timestamp(ended);
            root.span().end_with_timestamp(ended);
            if root_context.is_valid() {
                roots.insert(run.id, (root_context, Instant::now()));
            }
        }
    }

    /// The root of a run about to be dispatched: the scheduler's, or a new one stamped with
    /// the run's creation time. An empty context when traces are not exported.
    pub(crate) fn root_for_dispatch(&self, run: &Run) -> Context {
        if !cronfleet_telemetry::enabled() {
            return Context::new();
        }
        if let Some((root, _)) = self.roots().remove(&run.id) {
            return Context::new().with_remote_span_context(root);
        }
        let tracer = global::tracer("cronfleet");
        let created = SystemTime::from(run.created_at);
        let mut root = tracer
            .span_builder("run")
            .with_start_time(created)
            .with_attributes(run_attributes(run))
            .start_with_context(&tracer, &Context::new());
        let root_context = root.span_context().clone();
        root.end_with_timestamp(created);
        Context::new().with_remote_span_context(root_context)
    }

    /// Forgets the roots of a term that ended (their runs get new roots if dispatched).
    pub(crate) fn clear(&self) {
        self.roots().clear();
    }
}

/// The `dispatch` span of `run` going to `worker`: a tracing span (so the "dispatched" log
/// line carries its fields), child of the run's root.
pub(crate) fn dispatch_span(root: Context, run: &Run, worker: &str, epoch: i64) -> tracing::Span {
    let span = tracing::info_span!(
        "dispatch",
        otel.kind = "producer",
        run_id = run.id,
        job = %run.job_name,
        slot = %run.slot,
        attempt = run.attempt,
        worker,
        epoch,
        otel.status_description = tracing::field::Empty,
    );
    cronfleet_telemetry::follow(&span, root);
    span
}
