//! Who may use the console, and that a form was sent by the console itself.
//!
//! - **Sign-in**: with `--api-token`, a page needs a session cookie from the login page
//!   (an expiry and its HMAC keyed with the token: no token in the cookie, 12 h, void
//!   once its token is removed) or a token as `Authorization: Bearer`; without one, a
//!   page redirects to `/login` and a form is refused.
//! - **CSRF**: every page sets a random per-browser token in a cookie and renders it into
//!   its forms; a `POST` whose form token differs from the cookie's, or whose `Origin` is
//!   another site, is refused before any handler runs. The cookies are `SameSite=Strict`
//!   too.
//! - **Open mode** ([`only_local_requests`]): a console and API without tokens answer only
//!   requests addressed to a loopback name (DNS rebinding), and take changes from no page
//!   of another origin.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
use crate::auth::Tokens;

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

fn unhex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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

/// How long a console session lasts after signing in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A session cookie: `EXPIRY.MAC`, the MAC an HMAC-SHA256 of the expiry (Unix seconds)
/// keyed with the API token signed in with. It holds no token, ends by itself, ends for
/// every browser when its token is removed (rotation), and any coordinator with the same
/// tokens accepts it (no session store).
fn session_mac(token: &str, expiry: u64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).ok()?;
    mac.update(format!("cronfleet console session until {expiry}").as_bytes());
    Some(mac)
}

fn session_cookie(token: &str, now: SystemTime) -> Option<String> {
    let expiry = now
        .checked_add(SESSION_LIFETIME)?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs();
    let mac = session_mac(token, expiry)?.finalize().into_bytes();
    Some(format!("{expiry}.{}", hex(&mac)))
}

/// Whether `cookie` is a live session of one of `tokens`.
fn valid_session(tokens: &Tokens, cookie: &str, now: SystemTime) -> bool {
    let Some((expiry, mac)) = cookie.split_once('.') else {
        return false;
    };
    let (Ok(expiry), Some(mac)) = (expiry.parse::<u64>(), unhex_bytes(mac)) else {
        return false;
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    expiry > now
        && tokens.iter().any(|token| {
            session_mac(token, expiry).is_some_and(|expected| expected.verify_slice(&mac).is_ok())
        })
}

/// Whether the request is signed in: a live session cookie, or one of the tokens as an
/// `Authorization: Bearer` header (scripts).
fn signed_in_request(console: &Console, headers: &HeaderMap) -> bool {
    if cookie(headers, SESSION_COOKIE)
        .is_some_and(|session| valid_session(&console.tokens, session, SystemTime::now()))
    {
        return true;
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    console
        .tokens
        .check_authorization(authorization, "--api-token")
        .is_ok()
}

/// Lets a request through when the console is open or it presents an API token; otherwise
/// a page redirects to the login page (coming back afterwards) and a form is refused.
pub async fn signed_in(State(console): State<Console>, request: Request, next: Next) -> Response {
    if console.tokens.is_empty() || signed_in_request(&console, request.headers()) {
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
        // Browsers drop tabs and newlines from a `Location` and read `\` as `/`, so
        // `/\t/evil.example` would leave the site: no control character, no space, no
        // backslash, and a second character that starts no host.
        Some(path)
            if path.starts_with('/')
                && !path[1..].starts_with('/')
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
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
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let token = form.token.trim();
    if !console.tokens.accepts(token) {
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
    let Some(session) = session_cookie(token, SystemTime::now()) else {
        return refused(StatusCode::INTERNAL_SERVER_ERROR, "cannot make a session");
    };
    // Behind a TLS-terminating proxy the cookie goes back over HTTPS only.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
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

/// For a console and API without tokens, answers only local requests:
/// - addressed to a loopback name (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`): a
///   page on another site that makes its own name resolve to 127.0.0.1 (DNS rebinding) is
///   refused, since its requests carry its own name as `Host`;
/// - and, for anything but `GET` and `HEAD`, not sent by a page of another origin (its
///   `Origin`, or the browser's `Sec-Fetch-Site`, says so): a page elsewhere cannot post
///   a job to `http://localhost:8080/api/v1/jobs` with a "simple" request, which browsers
///   send cross-origin without asking. Programs (the CLI, curl) send neither header.
pub fn only_local_requests(router: Router) -> Router {
    router.layer(from_fn(local_request))
}

async fn local_request(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads {
        let fetched_from = headers
            .get("sec-fetch-site")
            .and_then(|value| value.to_str().ok());
        if let Some(site @ ("cross-site" | "same-site")) = fetched_from {
            return refused(
                StatusCode::FORBIDDEN,
                &format!(
                    "a {site} request is refused: without an API token this coordinator \
                     takes changes only from its own pages and from programs"
                ),
            );
        }
        if let Err(refusal) = same_origin(headers) {
            return refused(StatusCode::FORBIDDEN, &refusal);
        }
    }
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
            Some("/\t/evil.example"),
            Some("/\n/evil.example"),
            Some("/ /evil.example"),
        ] {
            assert_eq!(local_path(bad), "/jobs", "{bad:?}");
        }
    }

    #[test]
    fn sessions_hold_no_token_and_end() {
        let tokens = Tokens::new(["s3cret", "other"]);
        let now = SystemTime::now();
        let session = session_cookie("s3cret", now).unwrap();
        assert!(!session.contains("s3cret") && !session.contains(&hex(b"s3cret")));
        assert!(valid_session(&tokens, &session, now));
        assert!(
            !valid_session(&tokens, &session, now + SESSION_LIFETIME),
            "it ends by itself"
        );
        assert!(
            !valid_session(&Tokens::new(["other"]), &session, now),
            "and with its token (rotation)"
        );
        let (expiry, mac) = session.split_once('.').unwrap();
        let later: u64 = expiry.parse::<u64>().unwrap() + 3600;
        assert!(
            !valid_session(&tokens, &format!("{later}.{mac}"), now),
            "a forged expiry"
        );
        for bad in ["", "x", "1.zz", "99999999999.00"] {
            assert!(!valid_session(&tokens, bad, now), "{bad:?}");
        }
        assert_eq!(unhex_bytes("zz"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cronfleet_csrf=abc"),
        );
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
