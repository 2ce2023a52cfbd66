//! The Jobs pages: the list (searched, filtered, sorted and paged by the store), one job
//! with its recent runs and its buttons, the form that creates or edits a job, and the
//! live schedule preview.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use cronfleet_proto::v1 as pb;
use cronfleet_store::{JobQuery, JobSort, JobStatus, LabelFilter};
use serde::{Deserialize, Serialize};

use super::guard::CsrfToken;
use super::view::{When, in_zone, state_class};
use super::{Chrome, Console, page, see_other};
use crate::admin::{AdminError, AdminServices};
use crate::rest::model::{JobDefinition, JobView};

/// How many fire times the form previews.
const PREVIEW_COUNT: usize = 10;
/// How many runs a job's page lists.
const RECENT_RUNS: u32 = 20;

// ------------------------------------------------------------------------------ list

/// The Jobs page's query string: every filter is a parameter, so every view has a link.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u32>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

impl ListParams {
    /// The store query these parameters ask for, or what is wrong with them.
    fn query(&self) -> Result<JobQuery, String> {
        let status = given(&self.status)
            .map(str::parse::<JobStatus>)
            .transpose()
            .map_err(|error| format!("status: {error}"))?;
        let sort = given(&self.sort)
            .map(str::parse::<JobSort>)
            .transpose()
            .map_err(|error| format!("sort: {error}"))?
            .unwrap_or_default();
        let label = given(&self.label)
            .map(str::parse::<LabelFilter>)
            .transpose()
            .map_err(|error| format!("label: {error}"))?;
        let descending = match given(&self.order) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(format!(
                    "order: unknown order {other:?}; valid values are asc, desc"
                ));
            }
        };
        let mut query = JobQuery {
            search: given(&self.q).map(str::to_owned),
            status,
            handler: given(&self.handler).map(str::to_owned),
            label,
            failing: given(&self.failing).is_some(),
            sort,
            descending,
            limit: self.size.unwrap_or(0),
            offset: 0,
        };
        let page = self.page.unwrap_or(1).max(1);
        query.offset = (page - 1).saturating_mul(u64::from(query.page_size()));
        Ok(query)
    }

    fn link(&self) -> String {
        let query = serde_urlencoded::to_string(self).unwrap_or_default();
        if query.is_empty() {
            "/jobs".to_owned()
        } else {
            format!("/jobs?{query}")
        }
    }

    fn with_page(&self, page: u64) -> String {
        ListParams {
            page: Some(page),
            ..self.clone()
        }
        .link()
    }

    /// The link of a column header: sorted by it, flipping the order when it is already.
    fn sorted_by(&self, sort: JobSort) -> String {
        let current = given(&self.sort).unwrap_or("name");
        let descending = given(&self.order) == Some("desc");
        let order = (current == sort.as_str() && !descending).then(|| "desc".to_owned());
        ListParams {
            sort: Some(sort.as_str().to_owned()),
            order,
            page: None,
            ..self.clone()
        }
        .link()
    }
}

/// One row of the list.
#[derive(Debug)]
struct JobRow {
    name: String,
    handler: String,
    schedule: String,
    status: &'static str,
    pause_note: String,
    next_run: Option<When>,
    last_run: Option<(i64, String, &'static str)>,
    last_run_at: Option<When>,
    failures: u32,
}

#[derive(Debug)]
struct Column {
    label: &'static str,
    href: String,
    /// `ascending` / `descending` on the column sorted by, for `aria-sort`.
    sorted: &'static str,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    params: ListParams,
    error: Option<String>,
    jobs: Vec<JobRow>,
    columns: Vec<Column>,
    statuses: Vec<&'static str>,
    total: u64,
    first: u64,
    last: u64,
    previous: Option<String>,
    next: Option<String>,
    page_number: u64,
    page_count: u64,
    failing: bool,
}

fn status_label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Active => "active",
        JobStatus::Paused => "paused",
        JobStatus::AutoPaused => "auto-paused",
        JobStatus::Finished => "finished",
    }
}

pub async fn list(
    State(console): State<Console>,
    csrf: CsrfToken,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let (params, unreadable) = match params {
        Ok(Query(params)) => (params, None),
        Err(rejection) => (ListParams::default(), Some(rejection.body_text())),
    };
    let chrome = console.chrome("Jobs", "jobs", &csrf).await;
    let now = console.admin.now();
    let mut view = JobsPage {
        chrome,
        error: None,
        jobs: Vec::new(),
        columns: Vec::new(),
        statuses: JobStatus::ALL.iter().map(|s| s.as_str()).collect(),
        total: 0,
        first: 0,
        last: 0,
        previous: None,
        next: None,
        page_number: 1,
        page_count: 1,
        failing: given(&params.failing).is_some(),
        params: params.clone(),
    };
    let query = match unreadable.map_or_else(|| params.query(), Err) {
        Ok(query) => query,
        Err(error) => {
            view.error = Some(error);
            return page(StatusCode::BAD_REQUEST, &view);
        }
    };
    let sorted_desc = if query.descending {
        "descending"
    } else {
        "ascending"
    };
    view.columns = [
        ("Name", JobSort::Name),
        ("Handler", JobSort::Handler),
        ("Next run", JobSort::NextRun),
        ("Last run", JobSort::LastRun),
        ("Failures", JobSort::Failures),
    ]
    .into_iter()
    .map(|(label, sort)| Column {
        label,
        href: params.sorted_by(sort),
        sorted: if sort == query.sort { sorted_desc } else { "" },
    })
    .collect();
    let found = match console.admin.find_jobs(&query).await {
        Ok(found) => found,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let size = u64::from(query.page_size());
    view.page_number = query.offset / size + 1;
    view.page_count = found.total.div_ceil(size).max(1);
    view.total = found.total;
    view.first = if found.jobs.is_empty() {
        0
    } else {
        query.offset + 1
    };
    view.last = query.offset + found.jobs.len() as u64;
    view.previous = (view.page_number > 1).then(|| params.with_page(view.page_number - 1));
    view.next = (view.last < found.total).then(|| params.with_page(view.page_number + 1));
    view.jobs = found
        .jobs
        .into_iter()
        .map(|found| {
            let spec = found.job.spec.clone().unwrap_or_default();
            JobRow {
                name: spec.name,
                handler: spec.handler,
                schedule: found.job.schedule_text.clone(),
                status: status_label(JobStatus::of(
                    spec.paused.unwrap_or(false),
                    Some(spec.pause_note.as_str()).filter(|note| !note.is_empty()),
                    found.job.active,
                )),
                pause_note: spec.pause_note,
                next_run: When::of(found.job.next_run_at.as_ref(), now),
                last_run: found.last_run.map(|run| {
                    let state = run.state.as_str();
                    (run.id, state.to_owned(), state_class(state))
                }),
                last_run_at: When::of(found.job.last_run_at.as_ref(), now),
                failures: found.job.failure_count,
            }
        })
        .collect();
    page(StatusCode::OK, &view)
}

// ------------------------------------------------------------------------------ bulk

#[derive(Template)]
#[template(path = "console/bulk.html")]
struct BulkPage {
    chrome: Chrome,
    action: String,
    done: Vec<String>,
    refused: Vec<(String, String)>,
    back: String,
}

/// Pause, resume or run every job ticked in the list.
pub async fn bulk(State(console): State<Console>, csrf: CsrfToken, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let value = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let action = value("action");
    let back = super::guard::local_path(Some(&value("back")));
    let names: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key == "job")
        .map(|(_, name)| name.clone())
        .collect();
    if !matches!(action.as_str(), "pause" | "resume" | "run") {
        let error = AdminError::field(
            "action",
            format!("unknown bulk action {action:?}; valid values are pause, resume, run"),
        );
        return console.error_page(&csrf, error).await;
    }
    let mut done = Vec::new();
    let mut refused = Vec::new();
    for name in names {
        let admin = &console.admin;
        let result = match action.as_str() {
            "pause" => admin
                .pause_job(pb::PauseJobRequest {
                    name: name.clone(),
                    note: "paused from the console (bulk)".to_owned(),
                })
                .await
                .map(drop),
            "resume" => admin
                .resume_job(pb::ResumeJobRequest { name: name.clone() })
                .await
                .map(drop),
            _ => admin
                .run_job(pb::RunJobRequest {
                    name: name.clone(),
                    at: String::new(),
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => done.push(name),
            Err(error) => refused.push((name, error.to_string())),
        }
    }
    let chrome = console.chrome("Bulk action", "jobs", &csrf).await;
    let status = if refused.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    page(
        status,
        &BulkPage {
            chrome,
            action,
            done,
            refused,
            back,
        },
    )
}

// ------------------------------------------------------------------------------ one job

/// A run as the run lists show it.
#[derive(Debug)]
pub(super) struct RunRow {
    pub id: i64,
    pub job: String,
    pub state: String,
    pub class: &'static str,
    pub trigger: String,
    pub slot: Option<When>,
    pub attempt: u32,
    pub worker: String,
    pub error: String,
}

impl RunRow {
    pub(super) fn new(run: &pb::Run, now: chrono::DateTime<chrono::Utc>) -> RunRow {
        RunRow {
            id: run.id,
            job: run.job.clone(),
            class: state_class(&run.state),
            state: run.state.clone(),
            trigger: run.trigger.clone(),
            slot: When::of(run.slot.as_ref(), now),
            attempt: run.attempt,
            worker: run.worker.clone(),
            error: run.error.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    chrome: Chrome,
    job: JobView,
    status: &'static str,
    next_run: Option<When>,
    last_run: Option<When>,
    first_failure: Option<When>,
    args: String,
    runs: Vec<RunRow>,
    active_run: Option<i64>,
}

pub async fn show(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    let admin = &console.admin;
    let job = match admin
        .get_job(pb::GetJobRequest { name: name.clone() })
        .await
    {
        Ok(job) => job,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let runs = admin
        .list_runs(pb::ListRunsRequest {
            job: name.clone(),
            limit: RECENT_RUNS,
            ..Default::default()
        })
        .await
        .map(|answer| answer.runs)
        .unwrap_or_default();
    let now = admin.now();
    // The active run is among the recent ones, unless newer (skipped) runs pushed it out.
    let active_run = match runs.iter().find(|run| !crate::admin::ended(&run.state)) {
        Some(run) => Some(run.id),
        None if runs.len() < RECENT_RUNS as usize => None,
        None => active_run(admin, &name)
            .await
            .ok()
            .flatten()
            .map(|run| run.id),
    };
    let view = JobView::new(&job);
    let spec = job.spec.clone().unwrap_or_default();
    let status = status_label(JobStatus::of(
        view.paused,
        view.pause_note.as_deref(),
        view.active,
    ));
    let chrome = console.chrome(format!("Job {name}"), "jobs", &csrf).await;
    page(
        StatusCode::OK,
        &JobPage {
            chrome,
            status,
            next_run: When::of(job.next_run_at.as_ref(), now),
            last_run: When::of(job.last_run_at.as_ref(), now),
            first_failure: When::of(job.first_failure_at.as_ref(), now),
            args: serde_json::to_string_pretty(&view.args).unwrap_or(spec.args_json),
            runs: runs.iter().map(|run| RunRow::new(run, now)).collect(),
            active_run,
            job: view,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct PauseForm {
    #[serde(default)]
    note: String,
}

pub async fn run_now(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    let request = pb::RunJobRequest {
        name,
        at: String::new(),
    };
    match console.admin.run_job(request).await {
        Ok(answer) => {
            let id = answer.run.map_or(0, |run| run.id);
            see_other(&format!("/runs/{id}"))
        }
        Err(error) => console.error_page(&csrf, error).await,
    }
}

pub async fn pause(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
    Form(form): Form<PauseForm>,
) -> Response {
    let request = pb::PauseJobRequest {
        name: name.clone(),
        note: form.note.trim().to_owned(),
    };
    let result = console.admin.pause_job(request).await;
    console.then_to(&csrf, result, &job_path(&name)).await
}

pub async fn resume(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    let request = pb::ResumeJobRequest { name: name.clone() };
    let result = console.admin.resume_job(request).await;
    console.then_to(&csrf, result, &job_path(&name)).await
}

/// Cancels the job's run in progress (or waiting), whichever it is now.
pub async fn cancel_active_run(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    let admin = &console.admin;
    let active = match active_run(admin, &name).await {
        Ok(active) => active,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let Some(run) = active else {
        let error = AdminError::field(
            "run",
            format!("job {name} has no run in progress to cancel"),
        );
        return console.error_page(&csrf, error).await;
    };
    let request = pb::CancelRunRequest {
        id: run.id,
        reason: "cancelled from the console".to_owned(),
    };
    let result = admin.cancel_run(request).await;
    console.then_to(&csrf, result, &job_path(&name)).await
}

/// The job's run in progress or waiting, if any (a job has at most one running and one
/// waiting; newer skipped runs may hide it from the recent history).
async fn active_run(admin: &AdminServices, job: &str) -> Result<Option<pb::Run>, AdminError> {
    for state in ["running", "dispatched", "pending"] {
        let answer = admin
            .list_runs(pb::ListRunsRequest {
                job: job.to_owned(),
                state: state.to_owned(),
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(run) = answer.runs.into_iter().next() {
            return Ok(Some(run));
        }
    }
    Ok(None)
}

#[derive(Template)]
#[template(path = "console/delete.html")]
struct DeletePage {
    chrome: Chrome,
    name: String,
}

pub async fn confirm_delete(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    if let Err(error) = console
        .admin
        .get_job(pb::GetJobRequest { name: name.clone() })
        .await
    {
        return console.error_page(&csrf, error).await;
    }
    let chrome = console
        .chrome(format!("Delete {name}"), "jobs", &csrf)
        .await;
    page(StatusCode::OK, &DeletePage { chrome, name })
}

pub async fn delete(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    let request = pb::DeleteJobRequest { name, force: false };
    let result = console.admin.delete_job(request).await;
    console.then_to(&csrf, result, "/jobs").await
}

fn job_path(name: &str) -> String {
    format!("/jobs/{name}")
}

// ------------------------------------------------------------------------------ form

/// The job form's fields, as the browser sends them (all text).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    handler: String,
    /// `every`, `cron` or `at`: which schedule field counts.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    at: String,
    #[serde(default)]
    tz: String,
    #[serde(default)]
    max_runs: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    retries: String,
    #[serde(default)]
    overlap: String,
    #[serde(default)]
    catch_up: String,
    #[serde(default)]
    catch_up_window: String,
    /// One `key=value` per line.
    #[serde(default)]
    labels: String,
    /// JSON.
    #[serde(default)]
    args: String,
    #[serde(default)]
    paused: Option<String>,
    /// The "Send alerts" checkbox: absent when unticked (alerts off).
    #[serde(default)]
    alerts_enabled: Option<String>,
    #[serde(default)]
    alert_if_no_success: String,
    #[serde(default)]
    expected_duration: String,
    /// The version an edit is based on.
    #[serde(default)]
    version: Option<i64>,
}

/// Messages per form field; `""` holds those about no one field.
type FieldErrors = BTreeMap<String, String>;

fn text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn number<T: std::str::FromStr>(
    errors: &mut FieldErrors,
    field: &str,
    value: &str,
    expected: &str,
) -> Option<T> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match value.parse() {
        Ok(number) => Some(number),
        Err(_) => {
            errors.insert(
                field.to_owned(),
                format!("{field}: {value:?} is not {expected}"),
            );
            None
        }
    }
}

impl JobForm {
    /// The form as the REST API's job definition, or the fields it cannot even read.
    fn definition(&self) -> Result<JobDefinition, FieldErrors> {
        let mut errors = FieldErrors::new();
        let priority = number(&mut errors, "priority", &self.priority, "a whole number");
        let max_runs = number(
            &mut errors,
            "max_runs",
            &self.max_runs,
            "a whole number of 1 or more",
        );
        let retries = number(
            &mut errors,
            "retries",
            &self.retries,
            "a whole number of 0 or more",
        );
        let mut labels = BTreeMap::new();
        for line in self.labels.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    labels.insert(key.trim().to_owned(), value.trim().to_owned());
                }
                _ => {
                    errors.insert(
                        "labels".to_owned(),
                        format!(
                            "labels: {line:?} is not key=value; expected one key=value per line"
                        ),
                    );
                }
            }
        }
        let args = match text(&self.args) {
            None => None,
            Some(json) => match serde_json::from_str(&json) {
                Ok(value) => Some(value),
                Err(error) => {
                    errors.insert("args".to_owned(), format!("args: not JSON: {error}"));
                    None
                }
            },
        };
        let kind = self.kind.as_str();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JobDefinition {
            name: self.name.trim().to_owned(),
            handler: self.handler.trim().to_owned(),
            every: (kind == "every").then(|| self.every.trim().to_owned()),
            cron: (kind == "cron").then(|| self.cron.trim().to_owned()),
            at: (kind == "at").then(|| self.at.trim().to_owned()),
            tz: text(&self.tz),
            start: if kind == "every" {
                text(&self.start)
            } else {
                None
            },
            args,
            priority,
            max_runs,
            timeout: text(&self.timeout),
            retries,
            overlap: text(&self.overlap),
            catch_up: text(&self.catch_up),
            catch_up_window: text(&self.catch_up_window),
            labels,
            paused: self.paused.as_ref().map(|_| true),
            alerts_enabled: Some(self.alerts_enabled.is_some()),
            alert_if_no_success: text(&self.alert_if_no_success),
            expected_duration: text(&self.expected_duration),
        })
    }

    fn of(job: &JobView) -> JobForm {
        let kind = if job.cron.is_some() {
            "cron"
        } else if job.at.is_some() {
            "at"
        } else {
            "every"
        };
        JobForm {
            name: job.name.clone(),
            handler: job.handler.clone(),
            kind: kind.to_owned(),
            every: job.every.clone().unwrap_or_default(),
            start: job.start.clone().unwrap_or_default(),
            cron: job.cron.clone().unwrap_or_default(),
            at: job.at.clone().unwrap_or_default(),
            tz: job.tz.clone(),
            max_runs: job.max_runs.map(|n| n.to_string()).unwrap_or_default(),
            priority: job.priority.to_string(),
            timeout: job.timeout.clone().unwrap_or_default(),
            retries: job.retries.to_string(),
            overlap: job.overlap.clone(),
            catch_up: job.catch_up.clone(),
            catch_up_window: job.catch_up_window.clone().unwrap_or_default(),
            labels: job
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}\n"))
                .collect(),
            args: serde_json::to_string_pretty(&job.args).unwrap_or_default(),
            paused: job.paused.then(|| "on".to_owned()),
            alerts_enabled: job.alerts_enabled.then(|| "on".to_owned()),
            alert_if_no_success: job.alert_if_no_success.clone().unwrap_or_default(),
            expected_duration: job.expected_duration.clone().unwrap_or_default(),
            version: Some(job.version),
        }
    }

    fn schedule(&self) -> pb::Schedule {
        let kind = match self.kind.as_str() {
            "cron" => Some(pb::schedule::Kind::Cron(self.cron.trim().to_owned())),
            "at" => Some(pb::schedule::Kind::At(self.at.trim().to_owned())),
            "every" => Some(pb::schedule::Kind::Every(self.every.trim().to_owned())),
            _ => None,
        };
        let start = if self.kind == "every" {
            self.start.trim().to_owned()
        } else {
            String::new()
        };
        pb::Schedule {
            kind,
            tz: self.tz.trim().to_owned(),
            start,
        }
    }
}

/// Which form field an API error is about (`schedule` errors show at the schedule kind).
fn form_field(error: &AdminError) -> String {
    match error.field_name().as_deref() {
        Some("spec.name" | "name") => "name".to_owned(),
        Some(field) => field.trim_start_matches("spec.").to_owned(),
        None => String::new(),
    }
}

#[derive(Template)]
#[template(path = "console/form.html")]
struct FormPage {
    chrome: Chrome,
    form: JobForm,
    editing: bool,
    errors: FieldErrors,
    /// The rendered [`PreviewView`].
    preview: String,
    action: String,
}

impl FormPage {
    fn error(&self, field: &str) -> &str {
        self.errors.get(field).map_or("", String::as_str)
    }
}

async fn form_page(
    console: &Console,
    csrf: &CsrfToken,
    status: StatusCode,
    form: JobForm,
    editing: bool,
    errors: FieldErrors,
) -> Response {
    let title = if editing {
        format!("Edit {}", form.name)
    } else {
        "New job".to_owned()
    };
    let action = if editing {
        format!("/jobs/{}/edit", form.name)
    } else {
        "/jobs/new".to_owned()
    };
    let preview = preview_of(console, &form).render().unwrap_or_default();
    let chrome = console.chrome(title, "jobs", csrf).await;
    page(
        status,
        &FormPage {
            chrome,
            form,
            editing,
            errors,
            preview,
            action,
        },
    )
}

pub async fn new_form(State(console): State<Console>, csrf: CsrfToken) -> Response {
    let form = JobForm {
        kind: "every".to_owned(),
        tz: "UTC".to_owned(),
        alerts_enabled: Some("on".to_owned()),
        ..JobForm::default()
    };
    form_page(
        &console,
        &csrf,
        StatusCode::OK,
        form,
        false,
        FieldErrors::new(),
    )
    .await
}

pub async fn edit_form(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
) -> Response {
    match console.admin.get_job(pb::GetJobRequest { name }).await {
        Ok(job) => {
            let form = JobForm::of(&JobView::new(&job));
            form_page(
                &console,
                &csrf,
                StatusCode::OK,
                form,
                true,
                FieldErrors::new(),
            )
            .await
        }
        Err(error) => console.error_page(&csrf, error).await,
    }
}

/// Saves the form through `save`, or shows it again with each error next to its field
/// (nothing is saved then).
async fn save_form<F, Fut>(
    console: &Console,
    csrf: &CsrfToken,
    form: JobForm,
    editing: bool,
    save: F,
) -> Response
where
    F: FnOnce(pb::JobSpec) -> Fut,
    Fut: std::future::Future<Output = Result<pb::Job, AdminError>>,
{
    let definition = match form.definition() {
        Ok(definition) => definition,
        Err(errors) => {
            return form_page(
                console,
                csrf,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                editing,
                errors,
            )
            .await;
        }
    };
    let saved = match definition.check_one_schedule() {
        Ok(()) => save(definition.to_spec()).await,
        Err(error) => Err(error),
    };
    match saved {
        Ok(job) => {
            let name = job.spec.map(|spec| spec.name).unwrap_or_default();
            see_other(&job_path(&name))
        }
        Err(error) => {
            let status = super::status_of(&error);
            let errors = FieldErrors::from([(form_field(&error), error.to_string())]);
            form_page(console, csrf, status, form, editing, errors).await
        }
    }
}

pub async fn create(
    State(console): State<Console>,
    csrf: CsrfToken,
    Form(form): Form<JobForm>,
) -> Response {
    let admin = console.admin.clone();
    save_form(&console, &csrf, form, false, |spec| async move {
        admin
            .create_job(pb::CreateJobRequest { spec: Some(spec) })
            .await
    })
    .await
}

pub async fn update(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(name): Path<String>,
    Form(mut form): Form<JobForm>,
) -> Response {
    // The name is the job's; an edit cannot rename it.
    form.name = name.clone();
    let admin = console.admin.clone();
    let expected_version = form.version.unwrap_or_default();
    save_form(&console, &csrf, form, true, |mut spec| async move {
        // Pausing is the pause button's business: an edit keeps the job paused or not.
        spec.paused = None;
        admin
            .update_job(pb::UpdateJobRequest {
                name,
                expected_version,
                spec: Some(spec),
            })
            .await
    })
    .await
}

// ------------------------------------------------------------------------------ preview

/// The next fire times of the schedule being edited, in its zone.
#[derive(Debug, Default, Template)]
#[template(path = "console/preview.html")]
pub struct PreviewView {
    schedule: String,
    tz: String,
    slots: Vec<(String, bool)>,
    error: Option<(String, String)>,
    ends: bool,
}

fn preview_of(console: &Console, form: &JobForm) -> PreviewView {
    let schedule = form.schedule();
    let empty = match &schedule.kind {
        Some(
            pb::schedule::Kind::Every(text)
            | pb::schedule::Kind::Cron(text)
            | pb::schedule::Kind::At(text),
        ) => text.is_empty(),
        None => true,
    };
    if empty {
        return PreviewView::default();
    }
    match console.admin.preview_schedule(&schedule, PREVIEW_COUNT) {
        Ok(preview) => {
            let mut previous_offset = None;
            let slots = preview
                .slots
                .iter()
                .map(|slot| {
                    let local = slot.with_timezone(&preview.tz);
                    let offset = chrono::Offset::fix(local.offset()).local_minus_utc();
                    // The UTC offset changed since the slot before: a DST transition.
                    let changed = previous_offset.is_some_and(|before| before != offset);
                    previous_offset = Some(offset);
                    (in_zone(*slot, preview.tz), changed)
                })
                .collect::<Vec<_>>();
            PreviewView {
                ends: slots.len() < PREVIEW_COUNT,
                schedule: preview.text,
                tz: preview.tz.name().to_owned(),
                slots,
                error: None,
            }
        }
        Err(error) => PreviewView {
            error: Some((form_field(&error), error.to_string())),
            ..PreviewView::default()
        },
    }
}

/// The preview alone, for the form's script to swap in as the schedule is typed.
pub async fn preview(State(console): State<Console>, Query(form): Query<JobForm>) -> Response {
    page(StatusCode::OK, &preview_of(&console, &form))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: pb::JobSpec) -> JobView {
        JobView::new(&pb::Job {
            spec: Some(spec),
            version: 3,
            ..pb::Job::default()
        })
    }

    #[test]
    fn the_alert_settings_round_trip_through_the_form() {
        let view = job(pb::JobSpec {
            name: "backup".into(),
            handler: "shell".into(),
            schedule: Some(pb::Schedule {
                kind: Some(pb::schedule::Kind::Cron("0 3 * * *".into())),
                tz: "UTC".into(),
                start: String::new(),
            }),
            alerts_enabled: Some(true),
            alert_if_no_success: Some("1d2h".into()),
            expected_duration: Some("30m".into()),
            ..pb::JobSpec::default()
        });
        let form = JobForm::of(&view);
        assert_eq!(form.alerts_enabled.as_deref(), Some("on"));
        let spec = form.definition().unwrap().to_spec();
        assert_eq!(spec.alerts_enabled, Some(true));
        assert_eq!(spec.alert_if_no_success.as_deref(), Some("1d2h"));
        assert_eq!(spec.expected_duration.as_deref(), Some("30m"));

        // An unticked box is not sent: alerts off; empty inputs: unset.
        let unticked = JobForm {
            alerts_enabled: None,
            alert_if_no_success: " ".into(),
            expected_duration: String::new(),
            ..form
        };
        let spec = unticked.definition().unwrap().to_spec();
        assert_eq!(spec.alerts_enabled, Some(false));
        assert_eq!(
            (spec.alert_if_no_success, spec.expected_duration),
            (None, None)
        );
        let off = JobForm::of(&job(pb::JobSpec {
            alerts_enabled: Some(false),
            ..pb::JobSpec::default()
        }));
        assert_eq!(off.alerts_enabled, None, "an edit shows the box unticked");
    }
}
