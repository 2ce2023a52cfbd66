//! Kubernetes probes for a worker: `/healthz` answers 200 while the worker's async runtime
//! makes progress, `/readyz` 200 only while the worker is registered with a leader (503
//! otherwise), so a worker cut off from the coordinator shows up as not ready. `/metrics`
//! serves the worker's Prometheus metrics.
//!
//! Liveness is judged by an [`ExecutorWatchdog`]: a task on the worker's runtime ticks a
//! clock every [`TICK`]; a runtime that stops making progress (a handler blocking its
//! threads, a deadlock) stops ticking, and once the last tick is older than the stall
//! timeout `/healthz` answers 503, so Kubernetes restarts the worker. The probes run on a
//! thread and runtime of their own ([`serve_probes`]): they answer even when the worker's
//! runtime cannot. A restarted worker's runs are declared lost by the coordinator once its
//! lease has surely ended (and the run watchdogs have killed its scripts), as for any
//! worker that dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::CONTENT_TYPE;
use crate::status::WorkerStatus;

/// How often the watched runtime ticks.
pub const TICK: Duration = Duration::from_millis(250);
/// How long without a tick makes the worker not live, by default.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the runtime it was started on still makes progress. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ExecutorWatchdog {
    started: Instant,
    /// Milliseconds after `started` of the last tick.
    last_tick: Arc<AtomicU64>,
    stall_timeout: Duration,
}

impl ExecutorWatchdog {
    /// Starts ticking on the current tokio runtime (call it inside the worker's runtime).
    pub fn start(stall_timeout: Duration) -> ExecutorWatchdog {
        let watchdog = ExecutorWatchdog {
            started: Instant::now(),
            last_tick: Arc::new(AtomicU64::new(0)),
            stall_timeout,
        };
        let ticking = watchdog.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                ticking.tick();
            }
        });
        watchdog
    }

    fn tick(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_tick.store(now, Ordering::Relaxed);
    }

    /// How long the runtime has not ticked, when that is longer than the stall timeout.
    pub fn stalled_for(&self) -> Option<Duration> {
        let last = Duration::from_millis(self.last_tick.load(Ordering::Relaxed));
        let silent = self.started.elapsed().saturating_sub(last);
        (silent > self.stall_timeout).then_some(silent)
    }
}

#[derive(Clone, Debug)]
struct Probes {
    status: WorkerStatus,
    watchdog: ExecutorWatchdog,
}

/// The probe routes, reading `status` (and `watchdog`, for `/healthz`).
pub fn health_router(status: WorkerStatus, watchdog: ExecutorWatchdog) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Probes { status, watchdog })
}

/// Serves the probes on `listener` from a thread with a runtime of its own, logging each
/// stall of the watched runtime once; the thread ends with the process.
pub fn serve_probes(
    listener: std::net::TcpListener,
    status: WorkerStatus,
    watchdog: ExecutorWatchdog,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cronfleet-probes".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!("cannot serve the probes");
                    return;
                };
                tokio::spawn(report_stalls(watchdog.clone()));
                let router = health_router(status, watchdog);
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the probes stopped");
                }
            });
        })
}

/// Logs when the watched runtime stalls, and when it moves again.
async fn report_stalls(watchdog: ExecutorWatchdog) {
    let mut stalled = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match (watchdog.stalled_for(), stalled) {
            (Some(silent), false) => {
                stalled = true;
                tracing::error!(
                    silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                    "the worker's runtime makes no progress (a handler blocking it?): /healthz fails until it does"
                );
            }
            (None, true) => {
                stalled = false;
                tracing::warn!("the worker's runtime makes progress again");
            }
            _ => {}
        }
    }
}

async fn healthz(State(probes): State<Probes>) -> (StatusCode, String) {
    match probes.watchdog.stalled_for() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(silent) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not live: the worker's runtime has made no progress for {:.1} s (more than {} s: a handler blocking it, or a deadlock)\n",
                silent.as_secs_f64(),
                probes.watchdog.stall_timeout.as_secs()
            ),
        ),
    }
}

async fn metrics(State(probes): State<Probes>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        probes.status.metrics_text(),
    )
}

async fn readyz(State(probes): State<Probes>) -> (StatusCode, String) {
    let current = probes.status.current();
    match (&current.registration, current.accepting) {
        (Some(registration), true) => (
            StatusCode::OK,
            format!(
                "ready: registered with {} ({}), epoch {}\n",
                registration.coordinator_id, registration.url, registration.epoch
            ),
        ),
        (Some(_), false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_owned(),
        ),
        (None, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not registered with a leader\n".to_owned(),
        ),
    }
}
