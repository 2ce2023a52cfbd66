//! What every client command shares: the `--server` and `-o` flags, the connection to a
//! coordinator's admin API, and turning gRPC statuses into the server's own message.
//!
//! Client commands are synchronous (`Command::run`); each builds a small current-thread
//! runtime here and blocks on its calls, which is all a one-shot CLI needs.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use cronfleet_proto::v1::alert_service_client::AlertServiceClient;
use cronfleet_proto::v1::cluster_service_client::ClusterServiceClient;
use cronfleet_proto::v1::job_service_client::JobServiceClient;
use cronfleet_proto::v1::run_service_client::RunServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::output::{Format, OutputFormat};

/// Where a coordinator listens when nothing else is said (DESIGN §4).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// How long to try to open a connection: a coordinator that is up answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take before the CLI gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags of every client command. Global, so they may come before or after a
/// subcommand (`cronfleet job -o json list`, `cronfleet job list -o json`).
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// The coordinator's gRPC admin API (any replica).
    #[arg(
        long,
        env = "CRONFLEET_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL",
        global = true,
        help_heading = "Client options"
    )]
    pub server: String,

    /// Output format: aligned columns for people, JSON for programs, or (`job get`, `job
    /// list`) YAML job files for `cronfleet apply`.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t = OutputFormat::Table,
        value_name = "FORMAT",
        global = true,
        help_heading = "Client options"
    )]
    pub output: OutputFormat,

    /// The admin API's bearer token, for coordinators started with --api-token.
    #[arg(
        long,
        env = "CRONFLEET_API_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true,
        help_heading = "Client options"
    )]
    pub token: Option<String>,
}

impl ClientArgs {
    /// How to print: `-o table` or `-o json`. `-o yaml` (a job file) is only for the job
    /// commands that show jobs, which check for it first.
    pub fn format(&self) -> anyhow::Result<Format> {
        match self.output {
            OutputFormat::Table => Ok(Format::Table),
            OutputFormat::Json => Ok(Format::Json),
            OutputFormat::Yaml => Err(anyhow!(
                "-o yaml prints jobs as a job file, only for `cronfleet job get` and `cronfleet job list`; use -o table or -o json here"
            )),
        }
    }
}

/// A connection to a coordinator's admin API, with the runtime its calls run on.
#[derive(Debug)]
pub struct Client {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    server: String,
    bearer: BearerHeader,
}

/// `authorization: Bearer …` on every call when a token was given; its `Debug` hides it.
#[derive(Clone)]
pub struct BearerHeader(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerHeader(***)"
        } else {
            "BearerHeader(none)"
        })
    }
}

impl Interceptor for BearerHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What the admin clients go through: the channel, with the token when there is one.
pub type Authorized = InterceptedService<Channel, BearerHeader>;

impl Client {
    /// Connects to `args.server` (`http://` is assumed when the URL has no scheme).
    pub fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
        let server = args.server.as_str();
        let bearer = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(|token| {
                MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    anyhow!("--token: not a valid header value (printable ASCII only)")
                })
            })
            .transpose()?;
        let bearer = BearerHeader(bearer);
        let url = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| {
                anyhow!("invalid --server URL {server:?}: expected a URL such as {DEFAULT_SERVER}")
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let channel = runtime
            .block_on(endpoint.connect())
            .map_err(|error| anyhow!("cannot reach the coordinator at {url}: {}", chain(&error)))?;
        Ok(Client {
            runtime,
            channel,
            server: url,
            bearer,
        })
    }

    fn authorized(&self) -> Authorized {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    pub fn jobs(&self) -> JobServiceClient<Authorized> {
        JobServiceClient::new(self.authorized())
    }

    pub fn runs(&self) -> RunServiceClient<Authorized> {
        RunServiceClient::new(self.authorized())
    }

    pub fn cluster(&self) -> ClusterServiceClient<Authorized> {
        ClusterServiceClient::new(self.authorized())
    }

    pub fn alerts(&self) -> AlertServiceClient<Authorized> {
        AlertServiceClient::new(self.authorized())
    }

    /// Runs one call to completion; a failed call becomes the server's message.
    pub fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> anyhow::Result<T> {
        self.runtime
            .block_on(call)
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(&status))
    }

    /// The message a user should see for a failed call: the server's own (it names the
    /// field, the bad value and what is valid), not the Debug form of the status. Statuses
    /// made on this side from a broken connection say where the coordinator was expected.
    fn status_error(&self, status: &Status) -> anyhow::Error {
        let message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        match status.source() {
            Some(source)
                if status.code() == Code::Unavailable || status.code() == Code::Unknown =>
            {
                anyhow!(
                    "cannot reach the coordinator at {}: {message}: {}",
                    self.server,
                    chain(source)
                )
            }
            _ if status.code() == Code::Cancelled || status.code() == Code::DeadlineExceeded => {
                anyhow!(
                    "the coordinator at {} did not answer in time: {message}",
                    self.server
                )
            }
            _ if status.code() == Code::Unauthenticated => {
                anyhow!("{message} (give it with --token or CRONFLEET_API_TOKEN)")
            }
            _ => anyhow!("{message}"),
        }
    }
}

/// An error and its causes on one line, skipping causes that repeat their parent's text.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
