//! The REST/JSON API under `/api/v1` on every coordinator's `--http` port: the admin
//! API's calls (jobs, runs, run logs, workers, status, apply) over HTTP, for programs that
//! do not speak gRPC.
//!
//! Each route is a thin shell over the [`AdminServices`] method its gRPC call uses: the
//! request becomes the same message, the answer the same JSON the CLI prints with `-o
//! json` ([`model`]), and an error the status of the one mapping in
//! [`crate::admin::error`], as `{"error": {"code", "message", "field"?}}`. So REST and
//! gRPC give the same results, refuse the same input with the same words, and need the
//! same bearer tokens (`--api-token`).
//!
//! The OpenAPI 3 document at `/api/v1/openapi.json` is generated from the handlers below
//! (their `#[utoipa::path]` and the [`model`] types): a route is added to the router and
//! to the document by the same `routes!` call, so the two cannot drift apart.

pub mod model;
mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tonic::Code;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::admin::error::{code_name, http_status};
use crate::admin::{AdminError, AdminServices};
use crate::auth::Tokens;
use model::{ErrorBody, ErrorDetail};

/// Where the API is served.
pub const PREFIX: &str = "/api/v1";

/// The largest request body: an apply of many jobs, each with JSON args of up to 1 MiB.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cronfleet",
        description = "The admin API of cronfleet, a distributed scheduler: jobs, runs, run \
                       logs, workers, alerts and the cluster's status. Every call needs \
                       `Authorization: Bearer <token>` when the coordinator has API tokens \
                       (--api-token). Errors are `{\"error\": {\"code\", \"message\", \
                       \"field\"?}}` with the code of the same call over gRPC.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Define, change, pause, trigger and delete jobs"),
        (name = "runs", description = "Run history, run logs, cancelling a run"),
        (name = "cluster", description = "The leader, the coordinators and the workers"),
        (name = "alerts", description = "Alerts raised and resolved by the leader, and acknowledging them"),
    )
)]
struct ApiDoc;

/// Declares the bearer token scheme and asks for it on every operation.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The API's routes and its OpenAPI document, from the same declarations.
fn api() -> (Router<AdminServices>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(PREFIX, routes::routes())
        .split_for_parts()
}

/// The OpenAPI document of the REST API (what `/api/v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The REST API over `admin`, every call checked against `tokens`, to merge into the
/// coordinator's HTTP router. The OpenAPI document is served without a token.
pub fn router(admin: AdminServices, tokens: Tokens) -> Router {
    let (routes, document) = api();
    let document = Arc::new(document);
    let authenticated = routes
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            Arc::new(tokens),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin);
    Router::new()
        .route(
            &format!("{PREFIX}/openapi.json"),
            axum::routing::get(move || {
                let document = Arc::clone(&document);
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .merge(authenticated)
}

/// Refuses a call without one of the API tokens, as the gRPC services do.
async fn authenticate(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match tokens.check_authorization(authorization, "--api-token") {
        Ok(()) => next.run(request).await,
        Err(status) => {
            let mut response =
                RestError::new(status.code(), status.message().to_owned(), None).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn unknown_route(request: Request) -> RestError {
    RestError::new(
        Code::NotFound,
        format!(
            "no route {} {}; the routes are listed in {PREFIX}/openapi.json",
            request.method(),
            request.uri().path()
        ),
        None,
    )
}

/// An error as the REST API answers it: the status and body of its gRPC code.
#[derive(Debug)]
pub struct RestError {
    code: Code,
    message: String,
    field: Option<String>,
}

impl RestError {
    fn new(code: Code, message: String, field: Option<String>) -> RestError {
        RestError {
            code,
            message,
            field,
        }
    }

    /// A request part that cannot be read (its body, query or path), refused before any
    /// admin call is made.
    fn invalid(field: Option<String>, message: String) -> RestError {
        RestError::new(Code::InvalidArgument, message, field)
    }
}

impl From<AdminError> for RestError {
    fn from(error: AdminError) -> RestError {
        RestError::new(error.code(), error.to_string(), error.field_name())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(http_status(self.code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: code_name(self.code).to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        (status, Json(body)).into_response()
    }
}
