//! The coordinator's Prometheus metrics, served on `/metrics` of its HTTP port. One
//! registry per coordinator (several can share a process: tests, `cronfleet dev`). Names
//! are `cronfleet_*` with their unit; the `job_name` label is on
//! `cronfleet_runs_finished_total` only, and every other label has a small fixed set of
//! values.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronfleet_core::run::{Run, Trigger};
use cronfleet_store::StoreError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use cronfleet_telemetry::metrics::CONTENT_TYPE;
use cronfleet_telemetry::metrics::{duration_histogram, render};

use crate::registry::NoWorker;
use crate::workers::WorkerInfo;

/// Schedule lag: from 1 ms (on time) to 5 min (catch-up).
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// `job_name`, not `job`: Prometheus keeps `job` for the scrape job (and would rename
/// ours to `exported_job`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    job_name: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// no_handler | no_labels | all_busy
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    /// acquired | lost | resigned
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    /// webhook | slack | email | unknown
    channel: String,
    /// delivered | retry | abandoned
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    /// unavailable | fenced | other
    kind: &'static str,
}

type SecondsGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS.iter().copied())
}

/// How a term ended, for `cronfleet_leadership_changes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeadershipChange {
    Acquired,
    Lost,
    Resigned,
}

/// Every metric of one coordinator, and the registry they are in.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Registry,
    runs_finished: Family<JobStateLabels, Counter>,
    runs_created: Family<TriggerLabels, Counter>,
    schedule_lag: HistogramFamily<TriggerLabels>,
    run_duration: HistogramFamily<StateLabels>,
    runs_backlog: Gauge,
    runs_waiting_for_worker: Family<ReasonLabels, Gauge>,
    workers: Family<StateLabels, Gauge>,
    heartbeat_age: Family<WorkerLabels, SecondsGauge>,
    leader: Gauge,
    leader_epoch: Gauge,
    leadership_changes: Family<ChangeLabels, Counter>,
    lease_batch_jobs: Histogram,
    lease_duration: Histogram,
    store_errors: Family<OperationLabels, Counter>,
    alerts_firing: Family<AlertLabels, Gauge>,
    alerts_unacked: Family<AlertLabels, Gauge>,
    alert_deliveries: Family<DeliveryLabels, Counter>,
}

impl CoordinatorMetrics {
    pub fn new() -> Arc<CoordinatorMetrics> {
        let mut registry = Registry::with_prefix("cronfleet");
        let metrics = CoordinatorMetrics {
            runs_finished: Family::default(),
            runs_created: Family::default(),
            schedule_lag: Family::new_with_constructor(lag_histogram),
            run_duration: Family::new_with_constructor(duration_histogram),
            runs_backlog: Gauge::default(),
            runs_waiting_for_worker: Family::default(),
            workers: Family::default(),
            heartbeat_age: Family::default(),
            leader: Gauge::default(),
            leader_epoch: Gauge::default(),
            leadership_changes: Family::default(),
            lease_batch_jobs: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            lease_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            store_errors: Family::default(),
            alerts_firing: Family::default(),
            alerts_unacked: Family::default(),
            alert_deliveries: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "runs_finished",
            "Runs that ended, by job and final state",
            metrics.runs_finished.clone(),
        );
        r.register(
            "runs_created",
            "Runs created, by trigger",
            metrics.runs_created.clone(),
        );
        r.register_with_unit(
            "run_schedule_lag",
            "Run start minus its slot, by trigger",
            Unit::Seconds,
            metrics.schedule_lag.clone(),
        );
        r.register_with_unit(
            "run_duration",
            "Run start to end, by final state",
            Unit::Seconds,
            metrics.run_duration.clone(),
        );
        r.register(
            "runs_backlog",
            "Pending runs that are due and not dispatched",
            metrics.runs_backlog.clone(),
        );
        r.register(
            "runs_waiting_for_worker",
            "Pending runs no connected worker can take, by reason",
            metrics.runs_waiting_for_worker.clone(),
        );
        r.register(
            "workers",
            "Workers connected to this coordinator, by state",
            metrics.workers.clone(),
        );
        r.register_with_unit(
            "worker_heartbeat_age",
            "Time since each connected worker was last heard from",
            Unit::Seconds,
            metrics.heartbeat_age.clone(),
        );
        r.register(
            "leader",
            "1 while this coordinator leads",
            metrics.leader.clone(),
        );
        r.register(
            "leader_epoch",
            "Fencing epoch of this coordinator's term (0 while it follows)",
            metrics.leader_epoch.clone(),
        );
        r.register(
            "leadership_changes",
            "Terms won and ended, by change",
            metrics.leadership_changes.clone(),
        );
        r.register(
            "lease_batch_jobs",
            "Jobs taken per lease transaction",
            metrics.lease_batch_jobs.clone(),
        );
        r.register_with_unit(
            "lease_duration",
            "Duration of one lease transaction",
            Unit::Seconds,
            metrics.lease_duration.clone(),
        );
        r.register(
            "store_errors",
            "Failed store calls of the leader's loops and the worker gateway, by operation and kind",
            metrics.store_errors.clone(),
        );
        r.register(
            "alerts_firing",
            "Alerts firing, by kind (set by the leader's evaluator)",
            metrics.alerts_firing.clone(),
        );
        r.register(
            "alerts_unacknowledged",
            "Alerts firing that nobody acknowledged, by kind (set by the leader's evaluator)",
            metrics.alerts_unacked.clone(),
        );
        r.register(
            "alert_deliveries",
            "Alert delivery attempts, by channel kind and outcome",
            metrics.alert_deliveries.clone(),
        );
        Arc::new(CoordinatorMetrics {
            registry,
            ..metrics
        })
    }

    /// The metrics as Prometheus (OpenMetrics) text.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// A run ended (or was declared lost): counted by job and state, its duration observed.
    pub(crate) fn run_finished(&self, run: &Run) {
        let state = run.state.as_str();
        if let (Some(started), Some(finished)) = (run.started_at, run.finished_at) {
            self.run_duration
                .get_or_create(&StateLabels { state })
                .observe(seconds_between(started, finished));
        }
        self.runs_finished
            .get_or_create(&JobStateLabels {
                job_name: run.job_name.clone(),
                state,
            })
            .inc();
    }

    pub(crate) fn run_created(&self, trigger: Trigger) {
        self.runs_created
            .get_or_create(&TriggerLabels {
                trigger: trigger.as_str(),
            })
            .inc();
    }

    /// A run started on its worker `lag` after its slot.
    pub(crate) fn run_started(&self, run: &Run, started: DateTime<Utc>) {
        self.schedule_lag
            .get_or_create(&TriggerLabels {
                trigger: run.trigger.as_str(),
            })
            .observe(seconds_between(run.slot, started).max(0.0));
    }

    pub(crate) fn leased(&self, jobs: usize, took: Duration) {
        self.lease_batch_jobs.observe(jobs as f64);
        self.lease_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn set_backlog(&self, runs: u64) {
        self.runs_backlog
            .set(i64::try_from(runs).unwrap_or(i64::MAX));
    }

    /// After a dispatcher pass: how many runs wait for a worker, by reason (every reason
    /// set, zeros included, so a resolved shortage shows as 0).
    pub(crate) fn set_waiting_for_worker<'a>(&self, reasons: impl Iterator<Item = &'a NoWorker>) {
        let mut counts = [("no_handler", 0i64), ("no_labels", 0), ("all_busy", 0)];
        for reason in reasons {
            let index = match reason {
                NoWorker::NoHandler(_) => 0,
                NoWorker::NoLabels(..) => 1,
                NoWorker::AllBusy(..) => 2,
            };
            counts[index].1 += 1;
        }
        for (reason, count) in counts {
            self.runs_waiting_for_worker
                .get_or_create(&ReasonLabels { reason })
                .set(count);
        }
    }

    pub(crate) fn leadership(&self, change: LeadershipChange, epoch: Option<i64>) {
        let change = match change {
            LeadershipChange::Acquired => "acquired",
            LeadershipChange::Lost => "lost",
            LeadershipChange::Resigned => "resigned",
        };
        self.leadership_changes
            .get_or_create(&ChangeLabels { change })
            .inc();
        self.leader.set(i64::from(epoch.is_some()));
        self.leader_epoch.set(epoch.unwrap_or(0));
        if epoch.is_none() {
            // What only the leader measures says nothing once it follows.
            self.set_waiting_for_worker(std::iter::empty());
            self.set_backlog(0);
        }
    }

    /// The firing alerts per kind, as the store counts them.
    pub(crate) fn set_alerts(&self, counts: &[cronfleet_store::AlertCount]) {
        for count in counts {
            let labels = AlertLabels {
                kind: count.kind.as_str(),
            };
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.alerts_firing
                .get_or_create(&labels)
                .set(gauge(count.firing));
            self.alerts_unacked
                .get_or_create(&labels)
                .set(gauge(count.unacked));
        }
    }

    /// One delivery attempt on a channel of kind `channel` (the key's prefix).
    pub(crate) fn alert_delivery(&self, channel: &str, outcome: &'static str) {
        let channel = channel.split(':').next().unwrap_or("unknown").to_owned();
        self.alert_deliveries
            .get_or_create(&DeliveryLabels { channel, outcome })
            .inc();
    }

    pub(crate) fn store_error(&self, operation: &'static str, error: &StoreError) {
        let kind = match error {
            StoreError::Fenced { .. } => "fenced",
            error if error.is_transient() => "unavailable",
            _ => "other",
        };
        self.store_errors
            .get_or_create(&OperationLabels { operation, kind })
            .inc();
    }

    /// The connected workers as of now (called at each scrape, so gone workers vanish).
    pub(crate) fn set_workers(&self, workers: &[WorkerInfo], now: DateTime<Utc>) {
        self.workers.clear();
        self.heartbeat_age.clear();
        for state in ["connected", "draining"] {
            self.workers.get_or_create(&StateLabels { state }).set(0);
        }
        for worker in workers {
            self.workers
                .get_or_create(&StateLabels {
                    state: worker.state.as_str(),
                })
                .inc();
            self.heartbeat_age
                .get_or_create(&WorkerLabels {
                    worker: worker.node_id.clone(),
                })
                .set(seconds_between(worker.last_heartbeat_at, now).max(0.0));
        }
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}
