//! `cronfleet dev`: the whole system in one process with nothing else installed — a SQLite
//! store under `--data-dir`, an always-leader coordinator, and in-process workers with
//! every stock handler, on the default ports.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Args;
use cronfleet_coordinator::clock::SystemClock;
use cronfleet_coordinator::{CoordinatorConfig, LocalElection};
use cronfleet_proto::v1::CreateJobRequest;
use cronfleet_proto::v1::job_service_client::JobServiceClient;
use cronfleet_store::SqliteStore;
use cronfleet_worker::Worker;
use cronfleet_worker::handlers::StockHandler;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Endpoint;

use super::server_args::{AlertArgs, ConsoleArgs, ListenArgs};
use crate::logging::{self, LogArgs};
use crate::{jobfile, signals};

/// Run cronfleet on this machine alone: the scheduler, its API and workers in one process,
/// with its data in a SQLite file. Stop it with Ctrl-C; start it again and it carries on.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet dev\n  cronfleet dev --workers 4 --jobs examples/jobs.yaml\n\nThen, in another terminal:\n  cronfleet job create hello --handler shell --every 10s --args '{\"script\": \"echo hello\"}'\n  cronfleet runs --job hello"
)]
pub struct DevCommand {
    /// Where the SQLite database lives (created if missing).
    #[arg(
        long,
        env = "CRONFLEET_DATA_DIR",
        default_value = ".cronfleet",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    logs: LogArgs,
    /// How many in-process workers to run (each with capacity 4 and every stock handler).
    #[arg(long, env = "CRONFLEET_DEV_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64), value_name = "N")]
    workers: u32,
    /// A job file (YAML, see examples/jobs.yaml) to load at start; jobs that already
    /// exist are left as they are.
    #[arg(long, env = "CRONFLEET_JOBS", value_name = "FILE")]
    jobs: Option<PathBuf>,
}

/// Capacity of each in-process worker.
const DEV_WORKER_CAPACITY: u32 = 4;

impl DevCommand {
    pub fn run(self) -> anyhow::Result<()> {
        // A bad job file stops us before anything starts.
        let jobs = self.jobs.as_deref().map(jobfile::load).transpose()?;
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                self.data_dir.display()
            )
        })?;
        let database = self.data_dir.join("cronfleet.db");
        logging::run_server(&self.logs, "cronfleet", async {
            let store = Arc::new(
                SqliteStore::open(&database)
                    .await
                    .with_context(|| format!("cannot open {}", database.display()))?,
            );
            let mut config = CoordinatorConfig::new("dev");
            config.grpc_addr = self.listen.grpc;
            config.http_addr = self.listen.http;
            config.jaeger_url = self.console.jaeger_url.clone();
            config.alerts = self.alerts.settings()?;
            let me = config.me();
            let url = me.url.clone();
            let election = Arc::new(LocalElection::new(store.clone(), me));
            let coordinator =
                cronfleet_coordinator::start(config, store, election, Arc::new(SystemClock))
                    .await?;
            // The local election wins at once; the workers start once the term is set up,
            // so their first registration is accepted rather than asked to come back.
            const LEAD_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
            tokio::time::timeout(LEAD_WITHIN, coordinator.until_leading())
                .await
                .map_err(|_| {
                    anyhow!(
                        "the coordinator did not begin to lead within {LEAD_WITHIN:?} (is another cronfleet dev using {}?)",
                        database.display()
                    )
                })?
                .ok_or_else(|| anyhow!("the coordinator stopped before it began to lead"))?;

            let stop_workers = CancellationToken::new();
            let mut workers = tokio::task::JoinSet::new();
            for index in 1..=self.workers {
                let mut builder = Worker::builder()
                    .coordinators([url.clone()])
                    .node_id(format!("dev-worker-{index}"))
                    .capacity(DEV_WORKER_CAPACITY);
                for stock in StockHandler::ALL {
                    builder = builder.stock_handler(stock);
                }
                let worker = builder.build()?;
                workers.spawn(worker.run(stop_workers.clone().cancelled_owned()));
            }

            if let Some(jobs) = jobs {
                let path = self
                    .jobs
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if let Err(error) = load_jobs(&url, &path, jobs).await {
                    stop_workers.cancel();
                    coordinator.shutdown();
                    while workers.join_next().await.is_some() {}
                    let _ = coordinator.wait().await;
                    return Err(error);
                }
            }
            eprintln!(
                "cronfleet dev is running: web console http://{http}/, API {url} (gRPC) and http://{http}/api/v1 (REST), health http://{http}/healthz, {workers} workers, data in {data}",
                http = self.listen.http,
                workers = self.workers,
                data = self.data_dir.display()
            );
            eprintln!("try: cronfleet job list    (Ctrl-C stops)");

            signals::until_terminated().await;
            // Workers first, so their running runs finish and are recorded.
            stop_workers.cancel();
            while workers.join_next().await.is_some() {}
            coordinator.shutdown();
            coordinator.wait().await?;
            Ok(())
        })
    }
}

/// Creates the file's jobs through the API, so they are validated like any other input;
/// existing jobs are left alone.
async fn load_jobs(url: &str, path: &str, jobs: Vec<jobfile::JobDefinition>) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url.to_owned())?.connect().await?;
    let mut client = JobServiceClient::new(channel);
    for job in jobs {
        let request = CreateJobRequest {
            spec: Some(job.to_spec()),
        };
        match client.create_job(request).await {
            Ok(_) => eprintln!("{path}: created job {}", job.name),
            Err(status) if status.code() == Code::AlreadyExists => {
                eprintln!("{path}: job {} exists, left as it is", job.name);
            }
            Err(status) => return Err(anyhow!("{path}: job {}: {}", job.name, status.message())),
        }
    }
    Ok(())
}
