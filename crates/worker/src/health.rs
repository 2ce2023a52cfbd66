//! Kubernetes probes for a worker: `/healthz` answers 200 while the process serves at all,
//! `/readyz` 200 only while the worker is registered with a leader (503 otherwise), so a
//! worker cut off from the coordinator shows up as not ready. `/metrics` serves the
//! worker's Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::CONTENT_TYPE;
use crate::status::WorkerStatus;

/// The probe routes, reading `status`.
pub fn health_router(status: WorkerStatus) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn metrics(State(status): State<WorkerStatus>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        status.metrics_text(),
    )
}

async fn readyz(State(status): State<WorkerStatus>) -> (StatusCode, String) {
    let current = status.current();
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
