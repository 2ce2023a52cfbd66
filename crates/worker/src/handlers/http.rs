//! `http`: one HTTP request per run, `{"url", "method", "headers", "body",
//! "expect_status"}`. The run fails on a status other than the expected one (any 2xx by
//! default); its output is the status line and the start of the body.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value;

use super::args::Args;
use crate::{Handler, HandlerError, Outcome, RunContext};

const EXAMPLE: &str = r#"{"url": "https://example.com/hooks/nightly", "method": "POST"}"#;
const FIELDS: [&str; 5] = ["url", "method", "headers", "body", "expect_status"];
/// The most of a response body kept in the output: enough to see an error message,
/// without downloading whatever a URL returns.
const BODY_PREVIEW_BYTES: usize = 8 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends an HTTP request; the run's deadline bounds it.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
}

impl HttpHandler {
    /// A handler with its own connection pool.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("cronfleet-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpHandler { client }
    }
}

impl Default for HttpHandler {
    fn default() -> Self {
        HttpHandler::new()
    }
}

/// A validated request.
#[derive(Debug)]
struct Request {
    url: Url,
    method: Method,
    headers: HeaderMap,
    body: Option<String>,
    expect_status: Option<u16>,
}

#[async_trait]
impl Handler for HttpHandler {
    async fn run(&self, ctx: RunContext) -> Result<Outcome, HandlerError> {
        let mut request = parse(ctx.args())?;
        // The called service can join the run's trace (unless the job sets the header).
        for (name, value) in cronfleet_telemetry::inject_span(&tracing::Span::current()) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) && !request.headers.contains_key(&name)
            {
                request.headers.insert(name, value);
            }
        }
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let exchange = async {
            let mut response = builder.send().await?;
            let status = response.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            ctx.log(format!("{:?} {status}\n", response.version()));
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await? {
                let room = BODY_PREVIEW_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&body);
            ctx.log(&text);
            if truncated {
                ctx.log(format!(
                    "\n[body truncated after {BODY_PREVIEW_BYTES} bytes]\n"
                ));
            }
            Ok::<_, reqwest::Error>(status)
        };
        let status = tokio::select! {
            status = exchange => status.map_err(|error| {
                // The URL is said once, up front.
                let cause = HandlerError::from(error.without_url());
                HandlerError::new(format!("{} {}: {cause}", request.method, request.url))
            })?,
            () = ctx.cancelled() => return Err(HandlerError::new("request interrupted")),
        };
        let expected = match request.expect_status {
            Some(expected) => status.as_u16() == expected,
            None => status.is_success(),
        };
        if expected {
            Ok(Outcome::success())
        } else {
            let wanted = request
                .expect_status
                .map_or_else(|| "any 2xx".to_owned(), |code| code.to_string());
            Err(HandlerError::new(format!(
                "{} {} answered {status}, expected {wanted}",
                request.method, request.url
            )))
        }
    }
}

fn parse(args: &Value) -> Result<Request, HandlerError> {
    let args = Args::new("http", args, &FIELDS, EXAMPLE)?;

    let url_value = args
        .get("url")
        .ok_or_else(|| args.missing("url", EXAMPLE))?;
    let url_text = args
        .string("url")?
        .ok_or_else(|| args.invalid("url", "a string", url_value))?;
    let url = Url::parse(url_text).map_err(|error| {
        args.invalid(
            "url",
            &format!("an absolute http(s) URL ({error})"),
            url_value,
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(args.invalid("url", "an http:// or https:// URL", url_value));
    }

    let method = match args.string("method")? {
        None => Method::GET,
        Some(text) => Method::from_bytes(text.to_ascii_uppercase().as_bytes()).map_err(|_| {
            args.invalid(
                "method",
                "an HTTP method such as GET, POST, PUT, PATCH, DELETE or HEAD",
                &Value::String(text.to_owned()),
            )
        })?,
    };

    let mut headers = HeaderMap::new();
    match args.get("headers") {
        None => {}
        Some(Value::Object(fields)) => {
            for (name, value) in fields {
                let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    args.invalid(
                        "headers",
                        &format!("an object of valid header names ({name:?} is not one)"),
                        &Value::String(name.clone()),
                    )
                })?;
                let text = value
                    .as_str()
                    .ok_or_else(|| args.invalid(&format!("headers.{name}"), "a string", value))?;
                let header_value = HeaderValue::from_str(text).map_err(|_| {
                    args.invalid(
                        &format!("headers.{name}"),
                        "a valid header value (visible ASCII, no line breaks)",
                        value,
                    )
                })?;
                headers.append(header_name, header_value);
            }
        }
        Some(other) => {
            return Err(args.invalid(
                "headers",
                r#"an object of strings, e.g. {"Authorization": "Bearer …"}"#,
                other,
            ));
        }
    }

    let body = args.string("body")?.map(str::to_owned);

    let expect_status = match args.get("expect_status") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|code| (100..=599).contains(code))
                .and_then(|code| u16::try_from(code).ok())
                .ok_or_else(|| {
                    args.invalid(
                        "expect_status",
                        "an HTTP status code from 100 to 599",
                        value,
                    )
                })?,
        ),
    };

    Ok(Request {
        url,
        method,
        headers,
        body,
        expect_status,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_are_get_and_any_2xx() {
        let request = parse(&json!({"url": "http://127.0.0.1:9/health"})).unwrap();
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.expect_status, None);
        assert!(request.body.is_none());
    }

    #[test]
    fn every_field_is_validated_by_name() {
        let error = |args| parse(&args).unwrap_err().to_string();
        assert!(error(json!({})).contains("args.url is required"));
        assert!(error(json!({"url": 5})).contains("args.url must be a string, got 5"));
        assert!(error(json!({"url": "not a url"})).contains("args.url must be an absolute"));
        assert!(error(json!({"url": "ftp://h/x"})).contains("http:// or https://"));
        assert!(
            error(json!({"url": "http://h", "method": "GE T"}))
                .contains("args.method must be an HTTP method")
        );
        assert!(
            error(json!({"url": "http://h", "headers": ["x"]}))
                .contains("args.headers must be an object of strings")
        );
        assert!(
            error(json!({"url": "http://h", "headers": {"X-N": 1}}))
                .contains("args.headers.X-N must be a string, got 1")
        );
        assert!(
            error(json!({"url": "http://h", "expect_status": 700})).contains(
                "args.expect_status must be an HTTP status code from 100 to 599, got 700"
            )
        );
        assert!(
            error(json!({"url": "http://h", "body": {}})).contains("args.body must be a string")
        );
        assert!(error(json!({"url": "http://h", "timeout": 5})).contains(
            "unknown field \"timeout\" (valid fields: url, method, headers, body, expect_status)"
        ));
    }

    #[test]
    fn methods_are_case_insensitive() {
        let request = parse(&json!({"url": "https://h/x", "method": "post"})).unwrap();
        assert_eq!(request.method, Method::POST);
    }
}
