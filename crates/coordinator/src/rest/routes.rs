//! The REST API's handlers, one per admin call. Each reads its path, query and body into
//! the admin API's request message, calls the [`AdminServices`] method of the same name,
//! and answers the [`super::model`] view of what it returns.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cronfleet_proto::v1 as pb;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RestError;
use super::model::{
    AckBody, AlertList, AlertView, ApplyBody, ApplyResult, CancelBody, ChangeView, DrainBody,
    ErrorBody, JobDefinition, JobList, JobView, ManualRunView, PauseBody, RunBody, RunList,
    RunView, StatusView, WorkerList, WorkerView, plain_serde_message,
};
use crate::admin::{AdminError, AdminServices, LogEvent, ended};

/// Every route, relative to [`super::PREFIX`]; one `routes!` per path.
pub(super) fn routes() -> OpenApiRouter<AdminServices> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, create_job))
        .routes(routes!(get_job, update_job, delete_job))
        .routes(routes!(pause_job))
        .routes(routes!(resume_job))
        .routes(routes!(run_job))
        .routes(routes!(apply_jobs))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_logs))
        .routes(routes!(cancel_run))
        .routes(routes!(list_workers))
        .routes(routes!(drain_worker))
        .routes(routes!(get_status))
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
}

type Answer<T> = Result<T, RestError>;

/// A JSON body; an empty one is `T::default()` when `optional`.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes, optional: bool) -> Answer<T> {
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required_body(bytes)
}

/// A JSON body that must be there. Errors name the field (`jobs[2].retries`) and say what
/// was expected, as a job file's errors do.
fn required_body<T: DeserializeOwned>(bytes: &Bytes) -> Answer<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = plain_serde_message(&error.inner().to_string());
        let message = match &field {
            Some(field) => format!("invalid request body: {field}: {inner}"),
            None => format!("invalid request body: {inner}"),
        };
        RestError::invalid(field, message)
    })
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Answer<T> {
    path.map(|Path(value)| value).map_err(|rejection| {
        RestError::invalid(None, format!("invalid path: {}", rejection.body_text()))
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Answer<T> {
    query.map(|Query(value)| value).map_err(|rejection| {
        RestError::invalid(None, format!("invalid query: {}", rejection.body_text()))
    })
}

/// A job definition as an admin API spec; several schedules are refused here, where it
/// is known which were given (the server refuses none).
fn job_spec(definition: &JobDefinition) -> Answer<pb::JobSpec> {
    definition.check_one_schedule()?;
    Ok(definition.to_spec())
}

// ------------------------------------------------------------------------------ jobs

/// Every job, by name.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "every job", body = JobList), (status = "default", description = "an error", body = ErrorBody)))]
async fn list_jobs(State(admin): State<AdminServices>) -> Answer<Json<JobList>> {
    let answer = admin.list_jobs(pb::ListJobsRequest {}).await?;
    Ok(Json(JobList {
        jobs: answer.jobs.iter().map(JobView::new).collect(),
    }))
}

/// Defines a job, with the fields of a job file.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobDefinition,
    responses((status = 201, description = "the job", body = JobView), (status = "default", description = "an error", body = ErrorBody)))]
async fn create_job(State(admin): State<AdminServices>, bytes: Bytes) -> Answer<Response> {
    let definition: JobDefinition = required_body(&bytes)?;
    let spec = job_spec(&definition)?;
    let job = admin
        .create_job(pb::CreateJobRequest { spec: Some(spec) })
        .await?;
    Ok((StatusCode::CREATED, Json(JobView::new(&job))).into_response())
}

/// One job.
#[utoipa::path(get, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, description = "the job", body = JobView), (status = "default", description = "an error", body = ErrorBody)))]
async fn get_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
) -> Answer<Json<JobView>> {
    let job = admin
        .get_job(pb::GetJobRequest { name: path(name)? })
        .await?;
    Ok(Json(JobView::new(&job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UpdateQuery {
    /// The version the change is based on (a job's `version`); refused with 409 when the
    /// job has changed since. Without it the job's current version is taken.
    expected_version: Option<i64>,
}

/// Replaces a job's definition (fields left out take their defaults, as in a job file).
#[utoipa::path(put, path = "/jobs/{name}", tag = "jobs", request_body = JobDefinition,
    params(("name" = String, Path, description = "the job's name"), UpdateQuery),
    responses((status = 200, description = "the job", body = JobView), (status = "default", description = "an error", body = ErrorBody)))]
async fn update_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
    update: Result<Query<UpdateQuery>, QueryRejection>,
    bytes: Bytes,
) -> Answer<Json<JobView>> {
    let name = path(name)?;
    let update = query(update)?;
    let definition: JobDefinition = required_body(&bytes)?;
    let spec = job_spec(&definition)?;
    let expected_version = match update.expected_version {
        Some(version) => version,
        None => {
            let current = admin.get_job(pb::GetJobRequest { name: name.clone() });
            current.await?.version
        }
    };
    let job = admin
        .update_job(pb::UpdateJobRequest {
            name,
            expected_version,
            spec: Some(spec),
        })
        .await?;
    Ok(Json(JobView::new(&job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// A run in progress makes the delete fail with 409; with `force=true` it is
    /// cancelled, the job paused, and the job deleted once the run has stopped.
    #[serde(default)]
    force: bool,
}

/// Deletes a job and its run history (refused while a run of it is in progress, unless
/// `force`).
#[utoipa::path(delete, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "the job's name"), DeleteQuery),
    responses((status = 204, description = "deleted"), (status = "default", description = "an error", body = ErrorBody)))]
async fn delete_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
    delete: Result<Query<DeleteQuery>, QueryRejection>,
) -> Answer<StatusCode> {
    let force = query(delete)?.force;
    admin
        .delete_job(pb::DeleteJobRequest {
            name: path(name)?,
            force,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a job: no new runs until it is resumed (a running one goes on).
#[utoipa::path(post, path = "/jobs/{name}/pause", tag = "jobs", request_body(content = Option<PauseBody>),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, description = "the job", body = JobView), (status = "default", description = "an error", body = ErrorBody)))]
async fn pause_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Answer<Json<JobView>> {
    let name = path(name)?;
    let pause: PauseBody = body(&bytes, true)?;
    let job = admin
        .pause_job(pb::PauseJobRequest {
            name,
            note: pause.note.unwrap_or_default(),
        })
        .await?;
    Ok(Json(JobView::new(&job)))
}

/// Resumes a paused job from its next slot.
#[utoipa::path(post, path = "/jobs/{name}/resume", tag = "jobs",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, description = "the job", body = JobView), (status = "default", description = "an error", body = ErrorBody)))]
async fn resume_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
) -> Answer<Json<JobView>> {
    let job = admin
        .resume_job(pb::ResumeJobRequest { name: path(name)? })
        .await?;
    Ok(Json(JobView::new(&job)))
}

/// Adds a manual run, now or at a given time, without touching the schedule.
#[utoipa::path(post, path = "/jobs/{name}/run", tag = "jobs", request_body(content = Option<RunBody>),
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 201, description = "the run added", body = ManualRunView), (status = "default", description = "an error", body = ErrorBody)))]
async fn run_job(
    State(admin): State<AdminServices>,
    name: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Answer<Response> {
    let name = path(name)?;
    let run: RunBody = body(&bytes, true)?;
    let answer = admin
        .run_job(pb::RunJobRequest {
            name,
            at: run.at.unwrap_or_default(),
        })
        .await?;
    let view = ManualRunView {
        run: RunView::new(&answer.run.unwrap_or_default()),
        queued: answer.queued,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Makes one manager's jobs match a list (`cronfleet apply`), in one transaction: nothing
/// is written if any job is refused.
#[utoipa::path(post, path = "/apply", tag = "jobs", request_body = ApplyBody,
    responses((status = 200, description = "what changed (or would change)", body = ApplyResult), (status = "default", description = "an error", body = ErrorBody)))]
async fn apply_jobs(State(admin): State<AdminServices>, bytes: Bytes) -> Answer<Json<ApplyResult>> {
    let apply: ApplyBody = required_body(&bytes)?;
    let jobs = apply
        .jobs
        .iter()
        .enumerate()
        .map(|(index, definition)| {
            definition
                .check_one_schedule()
                .map(|()| definition.to_spec())
                .map_err(|error| AdminError::in_job(index, &definition.name, error))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answer = admin
        .apply_jobs(pb::ApplyJobsRequest {
            jobs,
            manager: apply.manager.unwrap_or_default(),
            prune: apply.prune,
            dry_run: apply.dry_run,
        })
        .await?;
    Ok(Json(ApplyResult {
        changes: answer.changes.iter().map(ChangeView::new).collect(),
    }))
}

// ------------------------------------------------------------------------------ runs

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// Only runs in this state: pending, dispatched, running, succeeded, failed,
    /// timed_out, cancelled, lost, skipped, missed.
    state: Option<String>,
    /// Only runs created since this time (RFC 3339).
    since: Option<String>,
    /// Only runs created before this time (RFC 3339).
    until: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<u32>,
    /// Only runs started by this trigger: schedule, manual, retry, continuation, catch_up.
    /// (Without `job`, the history is read newest first until `limit` runs match: a rare
    /// trigger over a long history is a long read.)
    trigger: Option<String>,
}

/// The run history, newest first.
#[utoipa::path(get, path = "/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, description = "the runs, newest first", body = RunList), (status = "default", description = "an error", body = ErrorBody)))]
async fn list_runs(
    State(admin): State<AdminServices>,
    filter: Result<Query<RunsQuery>, QueryRejection>,
) -> Answer<Json<RunList>> {
    let filter = query(filter)?;
    let answer = admin
        .list_runs(pb::ListRunsRequest {
            job: filter.job.unwrap_or_default(),
            state: filter.state.unwrap_or_default(),
            since: filter.since.unwrap_or_default(),
            limit: filter.limit.unwrap_or(0),
            trigger: filter.trigger.unwrap_or_default(),
            until: filter.until.unwrap_or_default(),
        })
        .await?;
    Ok(Json(RunList {
        runs: answer.runs.iter().map(RunView::new).collect(),
    }))
}

/// One run.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "the run's id")),
    responses((status = 200, description = "the run", body = RunView), (status = "default", description = "an error", body = ErrorBody)))]
async fn get_run(
    State(admin): State<AdminServices>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer<Json<RunView>> {
    let run = admin.get_run(pb::GetRunRequest { id: path(id)? }).await?;
    Ok(Json(RunView::new(&run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Keep the response open and send what the log adds until the run ends.
    follow: Option<bool>,
}

/// A run's log as plain text: the kept tail of its output (the last 64 KiB by default,
/// `--run-log-limit`), live while it runs.
#[utoipa::path(get, path = "/runs/{id}/logs", tag = "runs",
    params(("id" = i64, Path, description = "the run's id"), LogsQuery),
    responses((status = 200, description = "the kept tail of the run's log", body = String, content_type = "text/plain"), (status = "default", description = "an error", body = ErrorBody)))]
async fn run_logs(
    State(admin): State<AdminServices>,
    id: Result<Path<i64>, PathRejection>,
    follow: Result<Query<LogsQuery>, QueryRejection>,
) -> Answer<Response> {
    let id = path(id)?;
    let follow = query(follow)?.follow.unwrap_or(false);
    // The first read answers errors (an unknown run) with a status, before streaming.
    let run = admin.get_run(pb::GetRunRequest { id }).await?;
    let text =
        |body: Body| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    if !follow || ended(&run.state) {
        return Ok(text(Body::from(run.output)));
    }
    let mut events = admin.follow_run_log(id).await?;
    let (chunks, stream) = mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let chunk = match event {
                LogEvent::Output(text) => text,
                LogEvent::Ended(_) => return,
                LogEvent::Failed(error) => {
                    format!("\n[cannot read the run's log any more: {error}]\n")
                }
            };
            if chunks.send(Ok(chunk)).await.is_err() {
                return; // the client went away
            }
        }
    });
    Ok(text(Body::from_stream(ReceiverStream::new(stream))))
}

/// Cancels a run: a pending one at once, a running one is stopped on its worker.
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs", request_body(content = Option<CancelBody>),
    params(("id" = i64, Path, description = "the run's id")),
    responses((status = 200, description = "the run", body = RunView), (status = "default", description = "an error", body = ErrorBody)))]
async fn cancel_run(
    State(admin): State<AdminServices>,
    id: Result<Path<i64>, PathRejection>,
    bytes: Bytes,
) -> Answer<Json<RunView>> {
    let id = path(id)?;
    let cancel: CancelBody = body(&bytes, true)?;
    let run = admin
        .cancel_run(pb::CancelRunRequest {
            id,
            reason: cancel.reason.unwrap_or_default(),
        })
        .await?;
    Ok(Json(RunView::new(&run)))
}

// ------------------------------------------------------------------------------ cluster

/// The workers connected to the leader (asked from the leader by a coordinator that does
/// not lead).
#[utoipa::path(get, path = "/workers", tag = "cluster",
    responses((status = 200, description = "the workers", body = WorkerList), (status = "default", description = "an error", body = ErrorBody)))]
async fn list_workers(State(admin): State<AdminServices>) -> Answer<Json<WorkerList>> {
    let answer = admin.list_workers(pb::ListWorkersRequest {}, false).await?;
    Ok(Json(WorkerList {
        workers: answer.workers.iter().map(WorkerView::new).collect(),
    }))
}

/// Stops giving new runs to a worker (with `undo`, gives them again); its runs in
/// progress go on. Held by the leader across the worker's reconnects.
#[utoipa::path(post, path = "/workers/{id}/drain", tag = "cluster", request_body(content = Option<DrainBody>),
    params(("id" = String, Path, description = "the worker's node id")),
    responses((status = 200, description = "the worker", body = WorkerView), (status = "default", description = "an error", body = ErrorBody)))]
async fn drain_worker(
    State(admin): State<AdminServices>,
    id: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Answer<Json<WorkerView>> {
    let node_id = path(id)?;
    let drain: DrainBody = body(&bytes, true)?;
    let worker = admin
        .drain_worker(
            pb::DrainWorkerRequest {
                node_id,
                undo: drain.undo,
            },
            false,
        )
        .await?;
    Ok(Json(WorkerView::new(&worker)))
}

/// The leader, the fencing epoch, the coordinators and the workers.
#[utoipa::path(get, path = "/status", tag = "cluster",
    responses((status = 200, description = "the cluster's status", body = StatusView), (status = "default", description = "an error", body = ErrorBody)))]
async fn get_status(State(admin): State<AdminServices>) -> Answer<Json<StatusView>> {
    let status = admin.get_status(pb::GetStatusRequest {}).await?;
    Ok(Json(StatusView::new(&status)))
}

// ------------------------------------------------------------------------------ alerts

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// Only alerts in this state: firing, resolved.
    state: Option<String>,
    /// Only alerts of this kind: failed, auto_paused, missed_deadline, stalled, no_worker,
    /// worker_lost.
    kind: Option<String>,
    /// Only this job's alerts.
    job: Option<String>,
    /// Only alerts with a smaller id (the next page).
    before: Option<i64>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<u32>,
}

/// Alerts, newest first, with where their deliveries stand.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertsQuery),
    responses((status = 200, description = "the alerts, newest first", body = AlertList), (status = "default", description = "an error", body = ErrorBody)))]
async fn list_alerts(
    State(admin): State<AdminServices>,
    filter: Result<Query<AlertsQuery>, QueryRejection>,
) -> Answer<Json<AlertList>> {
    let filter = query(filter)?;
    let answer = admin
        .list_alerts(pb::ListAlertsRequest {
            state: filter.state.unwrap_or_default(),
            kind: filter.kind.unwrap_or_default(),
            job: filter.job.unwrap_or_default(),
            before: filter.before.unwrap_or(0),
            limit: filter.limit.unwrap_or(0),
        })
        .await?;
    Ok(Json(AlertList {
        alerts: answer.alerts.iter().map(AlertView::new).collect(),
    }))
}

/// Acknowledges an alert (someone is on it): the console's banner leaves it out. It still
/// resolves by itself.
#[utoipa::path(post, path = "/alerts/{id}/ack", tag = "alerts", request_body(content = Option<AckBody>),
    params(("id" = i64, Path, description = "the alert's id")),
    responses((status = 200, description = "the alert", body = AlertView), (status = "default", description = "an error", body = ErrorBody)))]
async fn ack_alert(
    State(admin): State<AdminServices>,
    id: Result<Path<i64>, PathRejection>,
    bytes: Bytes,
) -> Answer<Json<AlertView>> {
    let id = path(id)?;
    let ack: AckBody = body(&bytes, true)?;
    let alert = admin
        .ack_alert(pb::AckAlertRequest {
            id,
            by: ack.by.unwrap_or_default(),
        })
        .await?;
    Ok(Json(AlertView::new(&alert)))
}
