//! `cronfleet coordinator`: a coordinator of a cluster, over PostgreSQL (or a SQLite file
//! for a single node).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cronfleet_coordinator::clock::SystemClock;
use cronfleet_coordinator::{CoordinatorConfig, Election, EtcdElection, LocalElection, Tokens};
use cronfleet_core::duration::parse_fixed_duration;
use cronfleet_core::policy::AutoPausePolicy;
use cronfleet_core::run::MAX_OUTPUT_BYTES;

use super::server_args::{AlertArgs, ConsoleArgs, ListenArgs, read_secret_file, read_token_file};
use crate::logging::{self, LogArgs};

/// Run a coordinator: it leases due jobs and dispatches them to workers while it leads,
/// and serves the admin API (`--grpc`) and health checks (`--http`) in any case.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet coordinator --database-url postgres://cronfleet@db:5432/cronfleet \\\n      --grpc 0.0.0.0:50051 --http 0.0.0.0:8080 --advertise-url http://10.0.0.7:50051\n  CRONFLEET_DATABASE_URL=postgres://cronfleet@db:5432/cronfleet cronfleet coordinator \\\n      --etcd http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379 --node-id c1"
)]
pub struct CoordinatorCommand {
    /// The store: postgres://USER[:PASSWORD]@HOST:PORT/DB, or sqlite:PATH for one node.
    #[arg(
        long,
        env = "CRONFLEET_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        required_unless_present = "database_url_file",
        conflicts_with = "database_url_file"
    )]
    database_url: Option<String>,
    /// The store's URL from a file (its first line), so a password stays out of `ps` and
    /// the environment (a Kubernetes Secret mounted as a file).
    #[arg(long, env = "CRONFLEET_DATABASE_URL_FILE", value_name = "FILE")]
    database_url_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    logs: LogArgs,
    /// etcd endpoints for leader election (several for an etcd cluster). Without them the
    /// coordinator is the only one and always leads: run one coordinator per database.
    #[arg(
        long,
        env = "CRONFLEET_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL,…"
    )]
    etcd: Vec<String>,
    /// The election lease: a leader that cannot renew it within this long steps down, and
    /// a crashed leader is replaced after about this long (etcd grants at least 2s).
    #[arg(long, env = "CRONFLEET_ELECTION_TTL", default_value = "2s", value_parser = parse_fixed_duration, value_name = "DUR")]
    election_ttl: Duration,
    /// Bearer tokens of the admin API (several, comma-separated, to rotate one without
    /// downtime). Without one the admin API is open, and only served on a loopback
    /// address unless --insecure-open-api.
    #[arg(
        long = "api-token",
        env = "CRONFLEET_API_TOKEN",
        value_delimiter = ',',
        value_name = "TOKEN,…",
        hide_env_values = true
    )]
    api_tokens: Vec<String>,
    /// Bearer tokens workers must present to connect (several, comma-separated).
    #[arg(
        long = "worker-token",
        env = "CRONFLEET_WORKER_TOKEN",
        value_delimiter = ',',
        value_name = "TOKEN,…",
        hide_env_values = true
    )]
    worker_tokens: Vec<String>,
    /// More admin API tokens from a file (one per line), kept out of `ps`.
    #[arg(long, env = "CRONFLEET_API_TOKEN_FILE", value_name = "FILE")]
    api_token_file: Option<std::path::PathBuf>,
    /// More worker tokens from a file (one per line), kept out of `ps`.
    #[arg(long, env = "CRONFLEET_WORKER_TOKEN_FILE", value_name = "FILE")]
    worker_token_file: Option<std::path::PathBuf>,
    /// Serve the admin API without a token on a non-loopback address (anyone who can reach
    /// the port can change jobs).
    #[arg(long, env = "CRONFLEET_INSECURE_OPEN_API")]
    insecure_open_api: bool,
    /// Take workers without a worker token on a non-loopback address (anyone who can reach
    /// the port can register as a worker and receive every job's arguments).
    #[arg(long, env = "CRONFLEET_INSECURE_OPEN_WORKERS")]
    insecure_open_workers: bool,
    /// How workers and clients reach this node [default: http://<--grpc>].
    #[arg(long, env = "CRONFLEET_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, env = "CRONFLEET_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// A worker whose lease was not renewed for this long is dead; its runs become lost and
    /// run again. Workers whose lease ttl plus stop grace (kill grace + 1s) plus 500ms do
    /// not fit in it are refused, so a run's old attempt is gone before it runs again.
    #[arg(long, env = "CRONFLEET_WORKER_TIMEOUT", default_value = "6s", value_parser = parse_fixed_duration, value_name = "DUR")]
    worker_timeout: Duration,
    /// Workers stop their runs after this long without a lease renewal (the answer to a
    /// heartbeat).
    #[arg(long, env = "CRONFLEET_LEASE_TTL", default_value = "2s", value_parser = parse_fixed_duration, value_name = "DUR")]
    lease_ttl: Duration,
    /// How often workers send heartbeats (each renews the lease).
    #[arg(long, env = "CRONFLEET_HEARTBEAT_INTERVAL", default_value = "500ms", value_parser = parse_fixed_duration, value_name = "DUR")]
    heartbeat_interval: Duration,
    /// The timeout of jobs that set none.
    #[arg(long, env = "CRONFLEET_DEFAULT_TIMEOUT", default_value = "1h", value_parser = parse_fixed_duration, value_name = "DUR")]
    default_timeout: Duration,
    /// How many waiting runs the dispatcher reads at a time (it reads on while workers have
    /// room).
    #[arg(long, env = "CRONFLEET_DISPATCH_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
    dispatch_batch: u32,
    /// How long past its deadline a silent run is declared timed out.
    #[arg(long, env = "CRONFLEET_TIMEOUT_GRACE", default_value = "10s", value_parser = parse_fixed_duration, value_name = "DUR")]
    timeout_grace: Duration,
    /// A slot leased later than this after its time is late: the job's catch-up policy
    /// decides whether it runs.
    #[arg(long, env = "CRONFLEET_MISFIRE_THRESHOLD", default_value = "1s", value_parser = parse_fixed_duration, value_name = "DUR")]
    misfire_threshold: Duration,
    /// The delay before the first retry of a failed run (`--retries`); it doubles, with
    /// jitter, up to --retry-max-delay.
    #[arg(long, env = "CRONFLEET_RETRY_BASE_DELAY", default_value = "1s", value_parser = parse_fixed_duration, value_name = "DUR")]
    retry_base_delay: Duration,
    /// The longest delay between retries.
    #[arg(long, env = "CRONFLEET_RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_fixed_duration, value_name = "DUR")]
    retry_max_delay: Duration,
    /// Pause a job after this many consecutive failures (spanning --auto-pause-after).
    #[arg(long, env = "CRONFLEET_AUTO_PAUSE_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    auto_pause_failures: u32,
    /// … that span at least this long (Odoo pauses a cron failing 5 times over 7 days).
    #[arg(long, env = "CRONFLEET_AUTO_PAUSE_AFTER", default_value = "7d", value_parser = parse_fixed_duration, value_name = "DUR")]
    auto_pause_after: Duration,
    /// How much of each run's log is kept (its end): bytes, or with KiB / MiB, up to 1MiB.
    #[arg(long, env = "CRONFLEET_RUN_LOG_LIMIT", default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
    run_log_limit: usize,
    /// Ended runs older than this are deleted from the history (by the leader, in small
    /// batches, every minute), and so are alerts resolved longer ago.
    #[arg(long, env = "CRONFLEET_RUN_RETENTION", default_value = "30d", value_parser = parse_fixed_duration, value_name = "DUR")]
    run_retention: Duration,
    /// Each job keeps at most this many runs in its history (the newest).
    #[arg(long, env = "CRONFLEET_RUNS_PER_JOB", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    runs_per_job: u32,
}

/// A size in bytes: `65536`, `64KiB`, `1MiB` (also `KB`/`MB`, as binary units), between
/// 1 byte and 1 MiB.
fn parse_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid =
        || format!("{text:?} is not a size: expected bytes (65536) or KiB / MiB (64KiB, 1MiB)");
    let number: usize = number.parse().map_err(|_| invalid())?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1024,
        "MiB" | "MB" | "M" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    let bytes = number.checked_mul(factor).ok_or_else(invalid)?;
    if bytes == 0 || bytes > MAX_OUTPUT_BYTES {
        return Err(format!("{text:?} is out of range: between 1 byte and 1MiB"));
    }
    Ok(bytes)
}

/// The host name, for default node ids.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cronfleet".to_owned())
}

impl CoordinatorCommand {
    fn config(&self) -> anyhow::Result<CoordinatorConfig> {
        let mut config = CoordinatorConfig::new(self.node_id.clone().unwrap_or_else(host_name));
        config.grpc_addr = self.listen.grpc;
        config.http_addr = self.listen.http;
        config.jaeger_url = self.console.jaeger_url.clone();
        config.alerts = self.alerts.settings()?;
        config.advertise_url = self.advertise_url.clone();
        let mut api_tokens = self.api_tokens.clone();
        if let Some(file) = &self.api_token_file {
            api_tokens.extend(read_token_file("--api-token-file", file)?);
        }
        let mut worker_tokens = self.worker_tokens.clone();
        if let Some(file) = &self.worker_token_file {
            worker_tokens.extend(read_token_file("--worker-token-file", file)?);
        }
        config.api_tokens = Tokens::new(api_tokens);
        config.worker_tokens = Tokens::new(worker_tokens);
        config.insecure_open_api = self.insecure_open_api;
        config.insecure_open_workers = self.insecure_open_workers;
        config.run_log_limit = self.run_log_limit;
        config.run_retention = self.run_retention;
        config.runs_per_job = self.runs_per_job;
        config.worker_timeout = self.worker_timeout;
        config.lease_ttl = self.lease_ttl;
        config.heartbeat_interval = self.heartbeat_interval;
        config.default_timeout = self.default_timeout;
        config.timeout_grace = self.timeout_grace;
        config.dispatch_batch = self.dispatch_batch;
        config.lease.misfire_threshold = self.misfire_threshold;
        config.retry_base_delay = self.retry_base_delay;
        config.retry_max_delay = self.retry_max_delay;
        config.auto_pause = AutoPausePolicy {
            min_failures: self.auto_pause_failures,
            min_span: self.auto_pause_after,
        };
        Ok(config)
    }

    pub fn run(self) -> anyhow::Result<()> {
        let config = self.config()?;
        let database_url = match (&self.database_url, &self.database_url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => read_secret_file("--database-url-file", file)?,
            (None, None) => anyhow::bail!("--database-url or --database-url-file is required"),
        };
        config.validate().map_err(anyhow::Error::msg)?;
        logging::run_server(&self.logs, "cronfleet-coordinator", async {
            let store = cronfleet_store::open(&database_url)
                .await
                .with_context(|| "cannot open the store")?;
            let me = config.me();
            let election: Arc<dyn Election> = if self.etcd.is_empty() {
                Arc::new(LocalElection::new(Arc::clone(&store), me))
            } else {
                Arc::new(EtcdElection::connect(self.etcd.clone(), me, self.election_ttl).await?)
            };
            let handle =
                cronfleet_coordinator::start(config, store, election, Arc::new(SystemClock))
                    .await?;
            crate::signals::until_terminated().await;
            handle.shutdown();
            handle.wait().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_bytes_and_binary_units_within_bounds() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2K"), Ok(2048));
        for bad in ["", "KiB", "64 GiB", "-1", "2MiB", "0", "1.5KiB"] {
            let error = parse_size(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }
}
