//! A worker's Prometheus metrics, served on `/metrics` next to its probes: capacity, busy
//! slots, whether it is registered, and what its handlers did. One registry per worker;
//! the scrape-time gauges are rendered from plain [`GaugeValues`], so this module knows
//! nothing of where they come from.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use cronfleet_telemetry::metrics::CONTENT_TYPE;
use cronfleet_telemetry::metrics::{duration_histogram, render};

/// Schedule lag as this worker sees it (the assign's slot to the moment it starts the
/// run): fine-grained where DESIGN §6's targets are (p50 ≤ 5 ms, p99 ≤ 50 ms), so a
/// benchmark can read percentiles from the buckets, coarse up to catch-up delays.
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// A registered handler's name (bounded by the worker's handlers).
    handler: String,
    /// succeeded | failed | timed_out | cancelled | rejected
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
}

/// The values of the scrape-time gauges, read from the worker's state at render time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeValues {
    /// Runs executing now.
    pub busy_slots: usize,
    /// Whether the worker is registered with a leader.
    pub connected: bool,
}

#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    capacity: Gauge,
    busy_slots: Gauge,
    connected: Gauge,
    handler_runs: Family<OutcomeLabels, Counter>,
    handler_duration: Family<HandlerLabels, Histogram, fn() -> Histogram>,
    schedule_lag: Histogram,
}

impl WorkerMetrics {
    pub(crate) fn new(capacity: u32) -> Arc<WorkerMetrics> {
        let mut registry = Registry::with_prefix("cronfleet_worker");
        let metrics = WorkerMetrics {
            capacity: Gauge::default(),
            busy_slots: Gauge::default(),
            connected: Gauge::default(),
            handler_runs: Family::default(),
            handler_duration: Family::new_with_constructor(duration_histogram),
            schedule_lag: Histogram::new(LAG_BUCKETS.iter().copied()),
            registry: Registry::default(),
        };
        metrics.capacity.set(i64::from(capacity));
        registry.register(
            "capacity",
            "Runs this worker executes at once",
            metrics.capacity.clone(),
        );
        registry.register(
            "busy_slots",
            "Runs executing now",
            metrics.busy_slots.clone(),
        );
        registry.register(
            "connected",
            "1 while registered with the leader",
            metrics.connected.clone(),
        );
        registry.register(
            "handler_runs",
            "Runs ended on this worker, by handler and outcome",
            metrics.handler_runs.clone(),
        );
        registry.register_with_unit(
            "handler_duration",
            "Time from assign to the end of the run, by handler",
            Unit::Seconds,
            metrics.handler_duration.clone(),
        );
        registry.register_with_unit(
            "schedule_lag",
            "Time from a run's slot to its start on this worker (0 when started early)",
            Unit::Seconds,
            metrics.schedule_lag.clone(),
        );
        Arc::new(WorkerMetrics {
            registry,
            ..metrics
        })
    }

    /// A run ended here (`outcome` as in `RunOutcome`, lowercase), after `took`.
    pub(crate) fn run_ended(&self, handler: &str, outcome: &'static str, took: Option<Duration>) {
        self.handler_runs
            .get_or_create(&OutcomeLabels {
                handler: handler.to_owned(),
                outcome,
            })
            .inc();
        if let Some(took) = took {
            self.handler_duration
                .get_or_create(&HandlerLabels {
                    handler: handler.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// A run started here `lag` after its slot.
    pub(crate) fn run_started(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }

    /// The metrics as Prometheus (OpenMetrics) text, with the gauges set to `gauges`.
    pub fn render(&self, gauges: GaugeValues) -> String {
        self.busy_slots
            .set(i64::try_from(gauges.busy_slots).unwrap_or(i64::MAX));
        self.connected.set(i64::from(gauges.connected));
        render(&self.registry)
    }
}
