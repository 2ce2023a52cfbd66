//! The Runs pages: the history of one job or of all, filtered by state, trigger and time;
//! one run with everything known about it, its output streaming live while it runs.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cronfleet_core::run::{RunState, Trigger};
use cronfleet_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::guard::CsrfToken;
use super::jobs::RunRow;
use super::view::{When, run_duration, state_class};
use super::{Chrome, Console, page};
use crate::admin::{LogEvent, ended};

/// The Runs page's query string.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RunParams {
    #[serde(default)]
    job: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    trigger: String,
    /// RFC 3339, or a local time read as UTC.
    #[serde(default)]
    since: String,
    /// RFC 3339, or a local time read as UTC.
    #[serde(default)]
    until: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Template)]
#[template(path = "console/runs.html")]
struct RunsPage {
    chrome: Chrome,
    params: RunParams,
    states: Vec<&'static str>,
    triggers: Vec<&'static str>,
    runs: Vec<RunRow>,
    error: Option<String>,
}

pub async fn list(
    State(console): State<Console>,
    csrf: CsrfToken,
    params: Result<Query<RunParams>, QueryRejection>,
) -> Response {
    let chrome = console.chrome("Runs", "runs", &csrf).await;
    let mut view = RunsPage {
        chrome,
        params: RunParams::default(),
        states: RunState::ALL.iter().map(|state| state.as_str()).collect(),
        triggers: Trigger::ALL
            .iter()
            .map(|trigger| trigger.as_str())
            .collect(),
        runs: Vec::new(),
        error: None,
    };
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            view.error = Some(rejection.body_text());
            return page(StatusCode::BAD_REQUEST, &view);
        }
    };
    view.params = params.clone();
    let request = pb::ListRunsRequest {
        job: params.job.trim().to_owned(),
        state: params.state.trim().to_owned(),
        trigger: params.trigger.trim().to_owned(),
        since: params.since.trim().to_owned(),
        until: params.until.trim().to_owned(),
        limit: params.limit.unwrap_or(100),
    };
    let now = console.admin.now();
    match console.admin.list_runs(request).await {
        Ok(answer) => {
            view.runs = answer
                .runs
                .iter()
                .map(|run| RunRow::new(run, now))
                .collect();
            page(StatusCode::OK, &view)
        }
        Err(error) => {
            let status = super::status_of(&error);
            view.error = Some(error.to_string());
            page(status, &view)
        }
    }
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    chrome: Chrome,
    run: pb::Run,
    class: &'static str,
    live: bool,
    slot: Option<When>,
    created: Option<When>,
    dispatched: Option<When>,
    started: Option<When>,
    finished: Option<When>,
    deadline: Option<When>,
    duration: Option<String>,
    progress: Option<(u64, u64, u64)>,
    trace_link: Option<String>,
}

pub async fn show(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Response {
    let run = match console.admin.get_run(pb::GetRunRequest { id }).await {
        Ok(run) => run,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let now = console.admin.now();
    let time =
        |ts: &Option<prost_types::Timestamp>| ts.as_ref().and_then(cronfleet_proto::datetime);
    let duration = time(&run.started_at)
        .map(|started| run_duration(started, time(&run.finished_at).unwrap_or(now)));
    let progress = (run.progress_done + run.progress_remaining > 0).then(|| {
        let total = run.progress_done + run.progress_remaining;
        (run.progress_done, total, run.progress_done * 100 / total)
    });
    let trace_link = trace_link(console.settings.trace_url.as_deref(), &run.trace_id);
    let chrome = console.chrome(format!("Run {id}"), "runs", &csrf).await;
    page(
        StatusCode::OK,
        &RunPage {
            chrome,
            class: state_class(&run.state),
            live: !ended(&run.state),
            slot: When::of(run.slot.as_ref(), now),
            created: When::of(run.created_at.as_ref(), now),
            dispatched: When::of(run.dispatched_at.as_ref(), now),
            started: When::of(run.started_at.as_ref(), now),
            finished: When::of(run.finished_at.as_ref(), now),
            deadline: When::of(run.deadline.as_ref(), now),
            duration,
            progress,
            trace_link,
            run,
        },
    )
}

/// Where a run's trace is shown: the Jaeger UI's page of the trace, when there is one.
fn trace_link(jaeger: Option<&str>, trace_id: &str) -> Option<String> {
    let base = jaeger?.trim_end_matches('/');
    (!trace_id.is_empty()).then(|| format!("{base}/trace/{trace_id}"))
}

/// The run's output as server-sent events: `output` with each piece the log adds (the
/// first is the whole kept log), then `end` with the final state — the stream `run logs
/// --follow` reads.
pub async fn events(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Response {
    let events = match console.admin.follow_run_log(id).await {
        Ok(events) => events,
        Err(error) => return console.error_page(&csrf, error).await,
    };
    let stream = ReceiverStream::new(events).map(|event| {
        Ok::<_, Infallible>(match event {
            // An SSE field cannot hold a carriage return: a progress bar's `\r` ends a line.
            LogEvent::Output(text) => Event::default()
                .event("output")
                .data(text.replace("\r\n", "\n").replace('\r', "\n")),
            LogEvent::Ended(state) => Event::default().event("end").data(state),
            LogEvent::Failed(error) => Event::default().event("failure").data(error),
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn cancel(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(id): Path<i64>,
) -> Response {
    let request = pb::CancelRunRequest {
        id,
        reason: "cancelled from the console".to_owned(),
    };
    let result = console.admin.cancel_run(request).await;
    console.then_to(&csrf, result, &format!("/runs/{id}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_link_to_jaeger_when_it_is_configured() {
        assert_eq!(
            trace_link(
                Some("http://jaeger:16686/"),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            )
            .as_deref(),
            Some("http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_link(None, "4bf92f3577b34da6a3ce929d0e0e4736"), None);
        assert_eq!(trace_link(Some("http://jaeger:16686"), ""), None);
    }
}
