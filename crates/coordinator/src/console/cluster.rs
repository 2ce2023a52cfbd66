//! The Cluster page: the leader and its epoch, the coordinators, and every worker with
//! its heartbeat age, capacity, runs in flight, handlers and labels; draining a worker.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use cronfleet_proto::v1 as pb;

use super::guard::CsrfToken;
use super::view::{When, duration_words};
use super::{Chrome, Console, page};

/// The most runs in flight the page lists (their workers' counts are exact anyway).
const IN_FLIGHT_SHOWN: u32 = 1000;

#[derive(Debug)]
struct WorkerRow {
    id: String,
    state: String,
    version: String,
    heartbeat_age: String,
    connected: Option<When>,
    capacity: u32,
    busy: u32,
    runs: Vec<i64>,
    handlers: String,
    labels: String,
}

#[derive(Template)]
#[template(path = "console/cluster.html")]
struct ClusterPage {
    chrome: Chrome,
    status: pb::ClusterStatus,
    leader: String,
    workers: Vec<WorkerRow>,
}

pub async fn show(State(console): State<Console>, csrf: CsrfToken) -> Response {
    let admin = &console.admin;
    let status = match admin.get_status(pb::GetStatusRequest {}).await {
        Ok(status) => status,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let now = admin.now();
    // Runs in flight per worker, from the store (the registry's view is the leader's).
    let mut in_flight: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for run in admin
        .in_flight_runs(IN_FLIGHT_SHOWN)
        .await
        .unwrap_or_default()
    {
        in_flight.entry(run.worker).or_default().push(run.id);
    }
    let workers = status
        .workers
        .iter()
        .map(|worker| {
            let heartbeat = worker
                .last_heartbeat_at
                .as_ref()
                .and_then(cronfleet_proto::datetime);
            let mut labels: Vec<String> = worker
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            labels.sort();
            WorkerRow {
                id: worker.node_id.clone(),
                state: worker.state.clone(),
                version: worker.version.clone(),
                heartbeat_age: heartbeat.map_or_else(
                    || "never".to_owned(),
                    |at| duration_words((now - at).num_seconds().max(0).unsigned_abs()),
                ),
                connected: When::of(worker.connected_at.as_ref(), now),
                capacity: worker.capacity,
                busy: worker.busy,
                runs: in_flight.remove(&worker.node_id).unwrap_or_default(),
                handlers: worker.handlers.join(", "),
                labels: labels.join(", "),
            }
        })
        .collect();
    let leader = status.leader.as_ref().map_or_else(
        || "none known".to_owned(),
        |leader| format!("{} ({})", leader.node_id, leader.url),
    );
    let chrome = console.chrome("Cluster", "cluster", &csrf).await;
    page(
        StatusCode::OK,
        &ClusterPage {
            chrome,
            leader,
            workers,
            status,
        },
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct DrainForm {
    /// Present to give the worker new runs again.
    #[serde(default)]
    undo: Option<String>,
}

/// Drains a worker (no new runs; its runs in progress go on), or undoes it.
pub async fn drain(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(node_id): Path<String>,
    Form(form): Form<DrainForm>,
) -> Response {
    let request = pb::DrainWorkerRequest {
        node_id,
        undo: form.undo.is_some(),
    };
    let result = console.admin.drain_worker(request, false).await;
    console.then_to(&csrf, result, "/cluster").await
}
