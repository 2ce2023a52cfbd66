//! Command-line pieces shared by the server commands (`coordinator`, `dev`).

use std::net::SocketAddr;

use clap::Args;

/// Where a coordinator listens.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where the gRPC services (worker protocol, admin API) listen.
    #[arg(
        long,
        env = "CRONFLEET_GRPC",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR"
    )]
    pub grpc: SocketAddr,
    /// Where the REST API (/api/v1, OpenAPI document at /api/v1/openapi.json), /healthz,
    /// /readyz and /metrics are served.
    #[arg(
        long,
        env = "CRONFLEET_HTTP",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub http: SocketAddr,
}

/// The web console (served at / on the --http port).
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// A Jaeger UI's base URL (e.g. http://jaeger:16686): the web console links each run's
    /// trace id to URL/trace/ID. Without it the trace id is shown as text.
    #[arg(long, env = "CRONFLEET_JAEGER_URL", value_name = "URL", value_parser = parse_http_url)]
    pub jaeger_url: Option<String>,
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "{text:?} is not an http:// or https:// URL; expected e.g. http://jaeger:16686"
        ))
    }
}
