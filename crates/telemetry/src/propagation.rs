//! W3C trace context in and out of the carriers we have: the Assign message's
//! `map<string,string> trace_context` (a HashMap in prost), the worker's BTreeMap copy, and
//! HTTP headers (tonic's `trace_fn` for incoming calls, outgoing HTTP requests).

use std::collections::{BTreeMap, HashMap};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context of a tracing span as W3C headers (`traceparent`, `tracestate`). Empty when
/// tracing is off or the span is disabled. Calling this *starts* the span's OTel span: set
/// its parent before.
pub fn inject_span(span: &tracing::Span) -> HashMap<String, String> {
    inject_context(&span.context())
}

/// The Assign map is W3C by protocol (worker.proto), so it uses the W3C propagator
/// directly rather than whatever global propagator an SDK user installed (or none).
pub fn inject_context(cx: &Context) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.retain(|_, value| !value.is_empty()); // an empty `tracestate` says nothing
    carrier
}

/// The remote context carried by `carrier` (an empty `Context` if there is none).
pub fn extract_map(carrier: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// BTreeMap has no `Extractor` impl in opentelemetry.
#[derive(Debug)]
struct BTreeCarrier<'a>(&'a BTreeMap<String, String>);

impl Extractor for BTreeCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

pub fn extract_btree(carrier: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&BTreeCarrier(carrier))
}

/// Makes `span` a child of the context in `carrier`. Must be called before the span is
/// entered or its `context()` read. Returns false when there was nothing valid to follow.
pub fn follow(span: &tracing::Span, parent: Context) -> bool {
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// The trace id of a tracing span, 32 lowercase hex digits; None when it is not traced.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    // Only a sampled trace is exported: do not store an id nobody can look up.
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// HTTP headers (axum requests, tonic `trace_fn`'s `http::Request<()>`, reqwest).
#[derive(Debug)]
pub struct HeaderCarrier<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderCarrier(headers)))
}

/// For `tonic::transport::Server::builder().trace_fn(grpc_request_span)`: one server span per
/// admin call, continuing the caller's trace. The worker stream is left out: a span open
/// for the life of a connection would parent everything the gateway does.
pub fn grpc_request_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if path.starts_with("/cronfleet.v1.WorkerService/") {
        return tracing::Span::none();
    }
    let method = path.trim_start_matches('/');
    let span = tracing::info_span!(
        target: "cronfleet::api",
        "grpc",
        otel.name = %method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %method,
        otel.status_code = tracing::field::Empty,
    );
    follow(&span, extract_headers(request.headers()));
    span
}
