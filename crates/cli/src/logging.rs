//! Logs and traces for the long-running commands (`coordinator`, `worker`, `dev`): the
//! `--log-format` flag, and the runtime they run on, set up so that traces are exported
//! while they run and flushed when they stop (see `cronfleet-telemetry`).

use std::future::Future;

use anyhow::Context;
use clap::{Args, ValueEnum};
use cronfleet_telemetry::{LogFormat, Telemetry};

/// `--log-format`, for the server commands.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log lines as text (for people) or JSON (for log collectors, e.g. on Kubernetes).
    /// Filter with RUST_LOG (default `info`); traces go to OTEL_EXPORTER_OTLP_ENDPOINT
    /// when it is set.
    #[arg(
        long,
        env = "CRONFLEET_LOG_FORMAT",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormatArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Runs `work` to completion on a multi-threaded runtime, with logs and traces set up for
/// `service` (the default `service.name`), and exports the last spans before returning.
pub fn run_server<T>(
    logs: &LogArgs,
    service: &'static str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let format = match logs.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The trace exporter connects through the runtime: set it up inside.
    let telemetry = {
        let _inside = runtime.enter();
        Telemetry::init(format, service)
    };
    let result = runtime.block_on(work);
    // Blocking, and it needs the runtime's threads: after block_on, before the drop.
    telemetry.shutdown();
    result
}
