//! Logs and traces of the long-running commands (coordinator, worker, dev).
//!
//! - Logs: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`). The
//!   filter applies to the log output only: `RUST_LOG=warn` does not switch spans off for
//!   tracing (a disabled span has no trace context, so the worker would start a trace of
//!   its own).
//! - Traces: exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`;
//!   resource from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, sampler from
//!   `OTEL_TRACES_SAMPLER`, batching from `OTEL_BSP_*`. Off, the global tracer is a no-op
//!   and [`enabled`] is false, so callers can skip building span data at all.
//!
//! Every INFO span of a `cronfleet*` target becomes an exported span: give it the run's or
//! the request's parent ([`propagation`]), or make it a `debug_span!`, and never wrap a
//! long-lived loop or stream in one.

pub mod metrics;
pub mod propagation;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use propagation::{
    extract_btree, extract_headers, extract_map, follow, grpc_request_span, inject_context,
    inject_span, trace_id_of,
};

/// Whether traces are exported by this process (set once by [`Telemetry::init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: when false, span data need not be built.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How long shutting down may wait for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// The export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset (the SDK's is 10 s): an
/// unreachable collector must not hold a stopping process for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of the current span (for Kubernetes).
    Json,
}

/// Keeps the tracer provider; call [`Telemetry::shutdown`] before the tokio runtime is
/// dropped, so the last spans are exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the OTLP exporter needs a tokio runtime (build it inside `Runtime::enter`)")]
    NoRuntime,
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Whether the standard variables ask for trace export. The exporter itself would fall back
/// to `localhost:4317` without an endpoint: this check is what makes "off when unset" true.
pub fn otlp_requested() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// `service.name`: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
/// else `default_service`.
fn resource(default_service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if unnamed {
        builder = builder.with_service_name(default_service);
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The exporter and provider; must run inside a tokio runtime (tonic connects lazily on it).
fn tracer_provider(default_service: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    // Endpoint, headers, timeout and compression come from OTEL_EXPORTER_OTLP_* by
    // themselves; a value set here beats the environment, so only when it says nothing.
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if !env_set("OTEL_EXPORTER_OTLP_TIMEOUT") && !env_set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
        builder = builder.with_timeout(EXPORT_TIMEOUT);
    }
    let exporter = builder.build()?;
    Ok(SdkTracerProvider::builder()
        // A thread of its own; a full queue drops spans and never blocks a run.
        .with_batch_exporter(exporter)
        .with_resource(resource(default_service))
        .build())
}

impl Telemetry {
    /// Installs the global subscriber (logs, and the OpenTelemetry layer when export is
    /// asked for), the W3C propagator and the global tracer provider. Call once per
    /// process, inside the tokio runtime; later calls keep the first subscriber.
    pub fn init(format: LogFormat, default_service: &'static str) -> Telemetry {
        // W3C trace context even when export is off: a worker with tracing on still
        // continues the coordinator's trace.
        global::set_text_map_propagator(TraceContextPropagator::new());

        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
        }
        .with_filter(filter);

        let (provider, startup_error) = if otlp_requested() {
            match tracer_provider(default_service) {
                Ok(provider) => (Some(provider), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        let traces = provider.as_ref().map(|provider| {
            global::set_tracer_provider(provider.clone());
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("cronfleet"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                // Our spans only: no sqlx, h2 or hyper internals in the traces.
                .with_filter(Targets::new().with_target("cronfleet", tracing::Level::INFO))
        });
        // Not `try_init`: that also routes the `log` crate's records into tracing, and
        // those records are checked against the per-layer filters without always being
        // emitted, which left stale filter state behind and silently dropped later events
        // (and spans: no trace ids) whenever RUST_LOG named a target.
        let subscriber = tracing_subscriber::registry().with(logs).with(traces);
        let installed = tracing::subscriber::set_global_default(subscriber).is_ok();
        if installed && provider.is_some() {
            ENABLED.store(true, Ordering::Relaxed);
        }
        if let Some(error) = startup_error {
            tracing::warn!(%error, "traces are not exported");
        }
        Telemetry { provider }
    }

    /// Exports what is queued and stops the exporter. Blocking: call it after `block_on`
    /// returned and before the runtime is dropped (its threads carry the export), never
    /// from a current-thread runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(%error, "shutting the trace exporter down failed");
            }
        }
    }
}
