//! Who may use the console, and that a form was sent by the console itself.
//!
//! - **Sign-in**: with `--api-token`, a page needs one of the tokens, from the session
//!   cookie the login page sets or an `Authorization: Bearer` header; without one, a page
//!   redirects to `/login` and a form is refused.
//! - **CSRF**: every page sets a random per-browser token in a cookie and renders it into
//!   its forms; a `POST` whose form token differs from the cookie's, or whose `Origin` is
//!   another site, is refused before any handler runs. The cookies are `SameSite=Strict`
//!   too.
//! - **DNS rebinding** ([`only_loopback_hosts`]): an open console (and API) answers only
//!   requests addressed to a loopback name.

use std::fmt::Write as _;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Console, page, see_other};

const SESSION_COOKIE: &str = "cronfleet_session";
const CSRF_COOKIE: &str = "cronfleet_csrf";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form the console reads (a job's args are at most 1 MiB).
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// This browser's CSRF token, for the forms of the page being rendered.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<CsrfToken, StatusCode> {
        parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Gives every request its CSRF token (the cookie's, or a new one the response sets), and
/// refuses a `POST` whose form does not carry it or that comes from another origin.
pub async fn csrf(request: Request, next: Next) -> Response {
    let known = cookie(request.headers(), CSRF_COOKIE)
        .filter(|token| token.len() == 32)
        .map(str::to_owned);
    let token = known
        .clone()
        .unwrap_or_else(|| hex(&rand::random::<[u8; 16]>()));
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(CsrfToken(token.clone()));
    let request = if parts.method == Method::POST {
        if let Err(refusal) = same_origin(&parts.headers) {
            return refused(StatusCode::FORBIDDEN, &refusal);
        }
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the form cannot be read: {error}"),
                );
            }
        };
        let sent = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(key, _)| key == CSRF_FIELD))
            .map(|(_, value)| value);
        if known.is_none() || sent.as_deref() != known.as_deref() {
            return refused(
                StatusCode::FORBIDDEN,
                "this form was not sent by this console page (its CSRF token is missing or \
                 stale): reload the page and send it again",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    let mut response = next.run(request).await;
    if known.is_none() {
        let cookie = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A form sent from a page of another origin (its `Origin` names another host) is
/// refused; browsers send `Origin` with every cross-origin `POST`.
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if origin_host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(format!(
            "a form from {origin} is refused: the console takes forms from its own pages only"
        ))
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response()
}

/// The token this request presents: the session cookie's or the `Authorization` header's.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(token) = cookie(headers, SESSION_COOKIE).and_then(unhex) {
        return Some(token);
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
}

fn token_is_valid(console: &Console, token: Option<&str>) -> bool {
    let authorization = token.map(|token| format!("Bearer {token}"));
    console
        .tokens
        .check_authorization(authorization.as_deref(), "--api-token")
        .is_ok()
}

/// Lets a request through when the console is open or it presents an API token; otherwise
/// a page redirects to the login page (coming back afterwards) and a form is refused.
pub async fn signed_in(State(console): State<Console>, request: Request, next: Next) -> Response {
    if console.tokens.is_empty()
        || token_is_valid(&console, presented_token(request.headers()).as_deref())
    {
        return next.run(request).await;
    }
    if request.method() == Method::GET {
        let back = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str());
        let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
        Redirect::to(&format!("/login?{query}")).into_response()
    } else {
        refused(
            StatusCode::UNAUTHORIZED,
            "sign in first: this console needs one of the coordinator's API tokens (--api-token)",
        )
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this console, nothing else (no open redirect).
pub(super) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/jobs".to_owned(),
    }
}

pub async fn login_form(
    State(console): State<Console>,
    csrf: CsrfToken,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = local_path(query.next.as_deref());
    if console.tokens.is_empty() {
        return see_other(&next);
    }
    page(
        StatusCode::OK,
        &LoginPage {
            csrf: csrf.0,
            next,
            error: None,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(console): State<Console>,
    csrf: CsrfToken,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let token = form.token.trim();
    if !token_is_valid(&console, Some(token)) {
        return page(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                csrf: csrf.0,
                next,
                error: Some(
                    "that is not one of this coordinator's API tokens (--api-token)".to_owned(),
                ),
            },
        );
    }
    let mut response = see_other(&next);
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        hex(token.as_bytes())
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub async fn logout() -> Response {
    let mut response = see_other("/login");
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "cronfleet_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

/// Answers only requests addressed to a loopback name (`localhost`, `*.localhost`,
/// `127.0.0.0/8`, `[::1]`), for a console and API without tokens: a page on another site
/// that makes its own name resolve to 127.0.0.1 (DNS rebinding) is refused, since its
/// requests carry its own name as `Host`.
pub fn only_loopback_hosts(router: Router) -> Router {
    router.layer(from_fn(loopback_host))
}

async fn loopback_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if is_loopback_host(host) {
        next.run(request).await
    } else {
        refused(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this coordinator has no API token, so it answers only requests to a loopback \
                 address (localhost, 127.0.0.1, [::1]), not to {host:?}; give it --api-token to \
                 serve other names"
            ),
        )
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(name, _)| name)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "app.localhost",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[2001:db8::1]:80",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/runs?state=failed")), "/runs?state=failed");
        for bad in [
            None,
            Some("https://evil.example"),
            Some("//evil.example"),
            Some("/\\evil"),
        ] {
            assert_eq!(local_path(bad), "/jobs", "{bad:?}");
        }
    }

    #[test]
    fn session_tokens_survive_the_cookie() {
        assert_eq!(
            unhex(&hex("s3cret; =x".as_bytes())).as_deref(),
            Some("s3cret; =x")
        );
        assert_eq!(unhex("zz"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cronfleet_csrf=abc"),
        );
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
