//! The Alerts page: the alerts the leader raised (firing first by default), filtered by
//! state and kind, each with where its deliveries stand; acknowledging one.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use cronfleet_core::alert::AlertKind;
use cronfleet_proto::v1 as pb;
use serde::Deserialize;

use super::guard::CsrfToken;
use super::view::When;
use super::{Chrome, Console, page};
use crate::alerts::console_path;

/// The Alerts page's query string.
#[derive(Clone, Debug, Deserialize)]
pub struct AlertParams {
    /// firing (the default), resolved, or all.
    #[serde(default = "firing")]
    state: String,
    #[serde(default)]
    kind: String,
}

fn firing() -> String {
    "firing".to_owned()
}

impl Default for AlertParams {
    fn default() -> AlertParams {
        AlertParams {
            state: firing(),
            kind: String::new(),
        }
    }
}

#[derive(Debug)]
struct AlertRow {
    id: i64,
    kind: String,
    state: String,
    /// Where the console shows what it is about, and its name.
    href: String,
    about: String,
    message: String,
    fired: Option<When>,
    resolved: Option<When>,
    acked: Option<String>,
    deliveries: Vec<String>,
}

impl AlertRow {
    fn new(alert: &pb::Alert, now: chrono::DateTime<chrono::Utc>) -> AlertRow {
        let kind = alert.kind.parse::<AlertKind>().ok();
        let job = (!alert.job.is_empty()).then_some(alert.job.as_str());
        let href = kind.map_or_else(
            || "/cluster".to_owned(),
            |kind| console_path(kind, job, alert.run_id),
        );
        let about = match (kind, job, alert.run_id) {
            (Some(AlertKind::Stalled), _, Some(run)) => format!("run {run}"),
            (_, Some(job), _) => job.to_owned(),
            _ => alert.subject.clone(),
        };
        let acked = alert
            .acked_at
            .as_ref()
            .and_then(cronfleet_proto::datetime)
            .map(|at| {
                format!(
                    "{} by {}",
                    super::view::relative(at, now),
                    if alert.acked_by.is_empty() {
                        "someone"
                    } else {
                        &alert.acked_by
                    }
                )
            });
        let deliveries = alert
            .deliveries
            .iter()
            .map(|d| {
                let how = if d.delivered_at.is_some() {
                    "delivered".to_owned()
                } else if d.abandoned_at.is_some() {
                    format!("gave up: {}", d.last_error)
                } else if d.last_error.is_empty() {
                    "sending".to_owned()
                } else {
                    format!("retrying (attempt {}): {}", d.attempts, d.last_error)
                };
                format!("{} to {}: {how}", d.event, d.channel)
            })
            .collect();
        AlertRow {
            id: alert.id,
            kind: alert.kind.clone(),
            state: alert.state.clone(),
            href,
            about,
            message: alert.message.clone(),
            fired: When::of(alert.fired_at.as_ref(), now),
            resolved: When::of(alert.resolved_at.as_ref(), now),
            acked,
            deliveries,
        }
    }
}

/// The most alerts the page lists (the newest; `cronfleet alerts --before` pages on).
const SHOWN: u32 = 200;

#[derive(Template)]
#[template(path = "console/alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    params: AlertParams,
    kinds: Vec<&'static str>,
    alerts: Vec<AlertRow>,
    /// The list was cut at [`SHOWN`].
    cut: bool,
    error: Option<String>,
}

pub async fn list(
    State(console): State<Console>,
    csrf: CsrfToken,
    params: Result<Query<AlertParams>, QueryRejection>,
) -> Response {
    let chrome = console.chrome("Alerts", "alerts", &csrf).await;
    let mut view = AlertsPage {
        chrome,
        params: AlertParams::default(),
        kinds: AlertKind::ALL.iter().map(|kind| kind.as_str()).collect(),
        alerts: Vec::new(),
        cut: false,
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
    let request = pb::ListAlertsRequest {
        state: match params.state.trim() {
            "all" => String::new(),
            state => state.to_owned(),
        },
        kind: params.kind.trim().to_owned(),
        limit: SHOWN,
        ..pb::ListAlertsRequest::default()
    };
    let now = console.admin.now();
    match console.admin.list_alerts(request).await {
        Ok(answer) => {
            view.alerts = answer
                .alerts
                .iter()
                .map(|a| AlertRow::new(a, now))
                .collect();
            view.cut = view.alerts.len() >= SHOWN as usize;
            page(StatusCode::OK, &view)
        }
        Err(error) => {
            let status = super::status_of(&error);
            view.error = Some(error.to_string());
            page(status, &view)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AckForm {
    #[serde(default)]
    by: String,
}

/// Acknowledges an alert (someone is on it).
pub async fn ack(
    State(console): State<Console>,
    csrf: CsrfToken,
    Path(id): Path<i64>,
    Form(form): Form<AckForm>,
) -> Response {
    let request = pb::AckAlertRequest { id, by: form.by };
    let result = console.admin.ack_alert(request).await;
    console.then_to(&csrf, result, "/alerts").await
}
