//! `cronfleet worker`: the stock worker — the SDK's `Worker` with the stock handlers named
//! in `--handlers`, health probes over HTTP, and a graceful drain on SIGTERM / SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cronfleet_core::duration::parse_fixed_duration;
use cronfleet_worker::handlers::StockHandler;
use cronfleet_worker::{DEFAULT_CAPACITY, ExecutorWatchdog, Worker, WorkerError, serve_probes};

use crate::logging::{self, LogArgs};
use crate::signals;

const EXAMPLES: &str = "\
Examples:
  cronfleet worker --coordinator http://10.0.0.1:50051,http://10.0.0.2:50051 \\
      --handlers shell,http --capacity 8 --labels zone=eu-1,gpu=true

On SIGTERM or SIGINT the worker takes no new runs, lets running ones finish within
--drain-timeout (then cancels them), reports them and exits with status 0.
/healthz answers 200 while the process runs; /readyz 200 only while it is registered
with the leader.";

/// Run a worker: execute the runs the coordinator assigns with the stock handlers.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct WorkerCommand {
    /// Coordinators to dial, tried in turn; any replica will do (a non-leader sends the
    /// worker to the leader).
    #[arg(
        long = "coordinator",
        env = "CRONFLEET_COORDINATOR",
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        required = true
    )]
    coordinators: Vec<String>,

    /// How many runs execute at once.
    #[arg(
        long,
        env = "CRONFLEET_CAPACITY",
        value_name = "N",
        default_value_t = DEFAULT_CAPACITY,
        value_parser = parse_capacity
    )]
    capacity: u32,

    /// Stock handlers to enable, comma-separated: shell, http, noop, sleep.
    #[arg(
        long,
        env = "CRONFLEET_HANDLERS",
        value_name = "LIST",
        default_value = "noop,sleep",
        value_parser = parse_handlers
    )]
    handlers: HandlerList,

    /// Labels of this worker; a job runs only on workers with all of its labels.
    #[arg(long, env = "CRONFLEET_LABELS", value_name = "k=v,…", value_parser = parse_labels)]
    labels: Option<Labels>,

    /// This worker's name in the cluster, unique and stable [default: <host name>-<pid>].
    #[arg(long, env = "CRONFLEET_NODE_ID", value_name = "ID")]
    node_id: Option<String>,

    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "CRONFLEET_WORKER_HTTP",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    http: SocketAddr,

    /// The bearer token to present to coordinators started with --worker-token.
    #[arg(
        long = "worker-token",
        env = "CRONFLEET_WORKER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The token from a file (its first line), so it stays out of `ps` and the
    /// environment its scripts could read.
    #[arg(
        long = "worker-token-file",
        env = "CRONFLEET_WORKER_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    logs: LogArgs,

    /// On shutdown, how long running runs may take to finish before they are cancelled.
    #[arg(
        long,
        env = "CRONFLEET_DRAIN_TIMEOUT",
        value_name = "DUR",
        default_value = "30s",
        value_parser = parse_fixed_duration
    )]
    drain_timeout: Duration,

    /// How long a stopped shell run's processes get between SIGTERM and SIGKILL. With the
    /// 1s stop margin it is announced to the coordinator, which refuses a worker whose
    /// grace does not fit its --worker-timeout.
    #[arg(
        long,
        env = "CRONFLEET_KILL_GRACE",
        value_name = "DUR",
        default_value = "2s",
        value_parser = parse_fixed_duration
    )]
    kill_grace: Duration,

    /// /healthz fails (503) once the worker's async runtime has made no progress for this
    /// long — a handler blocking it, a deadlock — so Kubernetes restarts the worker.
    #[arg(
        long,
        env = "CRONFLEET_STALL_TIMEOUT",
        value_name = "DUR",
        default_value = "10s",
        value_parser = parse_fixed_duration
    )]
    stall_timeout: Duration,
}

/// The parsed `--handlers` (a newtype, so clap takes the list as one value).
#[derive(Debug, Clone)]
struct HandlerList(Vec<StockHandler>);

/// The parsed `--labels`.
#[derive(Debug, Clone)]
struct Labels(BTreeMap<String, String>);

fn parse_capacity(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 (how many runs execute at once)".to_owned()),
        Ok(capacity) => Ok(capacity),
        Err(_) => Err(format!(
            "{text:?} is not a whole number from 1 to {}",
            u32::MAX
        )),
    }
}

fn parse_handlers(text: &str) -> Result<HandlerList, WorkerError> {
    StockHandler::parse_list(text).map(HandlerList)
}

fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "{pair:?} is not a key=value pair (e.g. --labels zone=eu-1,gpu=true)"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key (e.g. zone=eu-1)"));
        }
        if labels
            .insert(key.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    Ok(Labels(labels))
}

/// The flag a configuration error is about, so the message names it.
fn flag_of(error: &WorkerError) -> &'static str {
    match error {
        WorkerError::NoCoordinators | WorkerError::InvalidCoordinatorUrl { .. } => "--coordinator",
        WorkerError::ZeroCapacity => "--capacity",
        WorkerError::EmptyNodeId => "--node-id",
        WorkerError::InvalidLabel { .. } => "--labels",
        _ => "--handlers",
    }
}

impl WorkerCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let mut builder = Worker::builder()
            .coordinators(self.coordinators)
            .capacity(self.capacity)
            .drain_timeout(self.drain_timeout)
            .kill_grace(self.kill_grace)
            .version(env!("CARGO_PKG_VERSION"));
        if let Some(node_id) = self.node_id {
            builder = builder.node_id(node_id);
        }
        let token = match (self.token, &self.token_file) {
            (Some(token), _) => Some(token),
            (None, Some(file)) => Some(super::server_args::read_secret_file(
                "--worker-token-file",
                file,
            )?),
            (None, None) => None,
        };
        if let Some(token) = token {
            builder = builder.token(token);
        }
        if let Some(Labels(labels)) = self.labels {
            builder = builder.labels(labels);
        }
        for handler in self.handlers.0 {
            builder = builder.stock_handler(handler);
        }
        let worker = builder.build().map_err(|error| {
            let flag = flag_of(&error);
            anyhow::Error::new(error).context(flag)
        })?;

        let http = self.http;
        let stall_timeout = self.stall_timeout;
        logging::run_server(&self.logs, "cronfleet-worker", async move {
            let listener = std::net::TcpListener::bind(http)
                .with_context(|| format!("--http {http}: cannot listen"))?;
            // The probes answer from a thread of their own, even when this runtime cannot.
            let watchdog = ExecutorWatchdog::start(stall_timeout);
            serve_probes(listener, worker.status(), watchdog)
                .with_context(|| format!("--http {http}: cannot serve the probes"))?;
            tracing::info!(worker = %worker.node_id(), %http, "serving /healthz, /readyz and /metrics");
            // Runs until SIGTERM / SIGINT, then drains.
            worker.run(signals::until_terminated()).await;
            Ok(())
        })
    }
}
