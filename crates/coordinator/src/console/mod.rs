//! The web console at `/` on every coordinator's `--http` port (and `cronfleet dev`'s):
//! Odoo's *Scheduled Actions* in a browser — the job list, a form per job, run history with
//! live output, the cluster, the alerts, and a banner for the alerts firing.
//!
//! Pages are rendered on the server from [askama] templates (`templates/console/`, checked
//! when the crate compiles) over the same [`AdminServices`] calls as the gRPC and REST
//! APIs, so the console has no rules of its own: a form is read into the REST API's
//! [`JobDefinition`](crate::rest::model::JobDefinition) and refused with the API's message
//! on the API's field. Every page reads without JavaScript; one small vendored script
//! (`assets/console.js`) adds the live schedule preview and the live run output (server-sent
//! events, the same stream as `run logs --follow`). Both assets are compiled into the binary.
//!
//! Security ([`guard`]): the API's bearer tokens, exchanged on a login page for a signed
//! 12-hour session in an `HttpOnly`, `SameSite=Strict` cookie; every form carries a per-browser CSRF token that
//! must match its cookie, and a cross-origin `Origin` is refused; an open console and API
//! (no tokens) answer only requests whose `Host` is a loopback name, and take changes from
//! no page of another origin, so a web page elsewhere cannot drive a local `cronfleet
//! dev` (DNS rebinding, cross-origin "simple" requests).

mod alerts;
mod attention;
mod cluster;
mod guard;
mod jobs;
mod runs;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::admin::AdminServices;
use crate::admin::error::http_status;
use crate::auth::Tokens;
use guard::CsrfToken;
pub use guard::only_local_requests;

/// What the console shows beyond the admin API.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSettings {
    /// Where a run's trace id links to: a Jaeger UI's base URL (`http://jaeger:16686`), the
    /// link being `{base}/trace/{trace id}`. Without it the trace id is shown as text.
    pub trace_url: Option<String>,
}

/// The state every console handler shares.
#[derive(Clone, Debug)]
struct Console {
    admin: AdminServices,
    tokens: Arc<Tokens>,
    settings: Arc<ConsoleSettings>,
}

/// The console's routes, to merge into the coordinator's HTTP router.
pub fn router(admin: AdminServices, tokens: Tokens, settings: ConsoleSettings) -> Router {
    let console = Console {
        admin,
        tokens: Arc::new(tokens),
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/jobs") }))
        .route("/jobs", get(jobs::list))
        .route("/jobs/bulk", post(jobs::bulk))
        .route("/jobs/new", get(jobs::new_form).post(jobs::create))
        .route("/jobs/preview", get(jobs::preview))
        .route("/jobs/{name}", get(jobs::show))
        .route("/jobs/{name}/edit", get(jobs::edit_form).post(jobs::update))
        .route("/jobs/{name}/run", post(jobs::run_now))
        .route("/jobs/{name}/pause", post(jobs::pause))
        .route("/jobs/{name}/resume", post(jobs::resume))
        .route("/jobs/{name}/cancel", post(jobs::cancel_active_run))
        .route(
            "/jobs/{name}/delete",
            get(jobs::confirm_delete).post(jobs::delete),
        )
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/events", get(runs::events))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/cluster", get(cluster::show))
        .route("/cluster/workers/{node_id}/drain", post(cluster::drain))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}/ack", post(alerts::ack))
        .route_layer(from_fn_with_state(console.clone(), guard::signed_in))
        .route("/login", get(guard::login_form).post(guard::login))
        .route("/logout", post(guard::logout))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .layer(from_fn(guard::csrf))
        .with_state(console)
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// What every page shows around its content: the navigation, the attention banner, the
/// CSRF token its forms carry, and whether there is a session to sign out of.
#[derive(Clone, Debug)]
struct Chrome {
    title: String,
    nav: &'static str,
    csrf: String,
    attention: Vec<attention::Item>,
    signed_in: bool,
}

impl Console {
    async fn chrome(
        &self,
        title: impl Into<String>,
        nav: &'static str,
        csrf: &CsrfToken,
    ) -> Chrome {
        Chrome {
            title: title.into(),
            nav,
            csrf: csrf.0.clone(),
            attention: attention::gather(&self.admin).await,
            signed_in: !self.tokens.is_empty(),
        }
    }
}

/// The HTTP status of an admin call's error: the REST API's for the same error.
fn status_of(error: &crate::admin::AdminError) -> StatusCode {
    StatusCode::from_u16(http_status(error.code())).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A page as a response with `status`.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render a console page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot render the page: {error}"),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    message: String,
}

impl Console {
    /// An admin call's error as a page with its HTTP status.
    async fn error_page(
        &self,
        csrf: &CsrfToken,
        error: impl Into<crate::admin::AdminError>,
    ) -> Response {
        let error = error.into();
        let status = status_of(&error);
        let chrome = self.chrome("Error", "", csrf).await;
        page(
            status,
            &ErrorPage {
                chrome,
                status: status.as_u16(),
                message: error.to_string(),
            },
        )
    }
}

/// Back to `to` after a form (303: the browser follows with a GET).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

impl Console {
    /// After a form's admin call: on to `to`, or the call's error as a page.
    async fn then_to<T>(
        &self,
        csrf: &CsrfToken,
        result: Result<T, crate::admin::AdminError>,
        to: &str,
    ) -> Response {
        match result {
            Ok(_) => see_other(to),
            Err(error) => self.error_page(csrf, error).await,
        }
    }
}
