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
