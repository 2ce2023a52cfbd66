//! Kubernetes probes for a worker: `/healthz` answers 200 while the process serves at all,
//! `/readyz` 200 only while the worker is registered with a leader (503 otherwise), so a
//! worker cut off from the coordinator shows up as not ready.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::status::WorkerStatus;

/// The probe routes, reading `status`.
pub fn health_router(status: WorkerStatus) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .with_state(status)
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
