//! What the CLI tests share: the admin API served in-process on a loopback port over a
//! fresh PostgreSQL database, and the real `cronfleet` binary run against it.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use cronfleet_coordinator::Tokens;
use cronfleet_coordinator::admin::AdminServices;
use cronfleet_coordinator::clock::SystemClock;
use cronfleet_coordinator::wake::Wakeup;
use cronfleet_coordinator::workers::{WorkerDirectory, WorkerInfo, WorkerState};
use cronfleet_e2e::cronfleet_binary;
use cronfleet_store::{JobStore, PostgresStore, RunFilter};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

#[derive(Debug)]
pub struct OneWorker;

impl WorkerDirectory for OneWorker {
    fn workers(&self) -> Vec<WorkerInfo> {
        // The same worker on every call (two calls must answer the same).
        static STARTED: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
        let started = *STARTED.get_or_init(Utc::now);
        vec![WorkerInfo {
            node_id: "worker-1".into(),
            handlers: vec!["shell".into(), "noop".into()],
            labels: BTreeMap::from([("region".into(), "eu".into())]),
            capacity: 4,
            busy: 1,
            connected_at: started - TimeDelta::minutes(5),
            last_heartbeat_at: started,
            state: WorkerState::Connected,
            version: "0.1.0".into(),
        }]
    }
}

/// The admin API on a free loopback port over a fresh database; returns its URL and the
/// store (to set up what only a worker could do, and to check that nothing changed).
pub async fn start_admin() -> (String, Arc<PostgresStore>) {
    let admin = start_admin_with_rest(Tokens::default()).await;
    (admin.grpc, admin.store)
}

/// The admin API over gRPC and REST, each on a free loopback port, over one fresh database.
pub struct Admin {
    /// `http://127.0.0.1:PORT` of the gRPC services.
    pub grpc: String,
    /// `http://127.0.0.1:PORT` of the HTTP server (the REST API under /api/v1).
    pub http: String,
    pub store: Arc<PostgresStore>,
}

/// [`start_admin`], with the REST API too, both asking for `tokens`.
pub async fn start_admin_with_rest(tokens: Tokens) -> Admin {
    let database = cronfleet_testkit::test_database()
        .await
        .expect("test database");
    let store = Arc::new(
        PostgresStore::connect(database.url())
            .await
            .expect("connect"),
    );
    let admin = AdminServices::new(
        store.clone(),
        Arc::new(SystemClock),
        Wakeup::default(),
        Arc::new(OneWorker),
    );
    let rest = cronfleet_coordinator::rest::router(admin.clone(), tokens.clone());
    let (jobs, runs, cluster, alerts) = admin.routes();
    let auth = tokens.interceptor("--api-token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(jobs, auth.clone()))
            .add_service(InterceptedService::new(runs, auth.clone()))
            .add_service(InterceptedService::new(cluster, auth.clone()))
            .add_service(InterceptedService::new(alerts, auth))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, rest).await });
    Admin { grpc, http, store }
}

/// Runs `cronfleet ARGS` against `server` (through `CRONFLEET_SERVER`, as a user's shell
/// would set it).
pub async fn cronfleet(server: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(cronfleet_binary())
        .args(args)
        .env("CRONFLEET_SERVER", server)
        .env("COLUMNS", "200")
        .output()
        .await
        .expect("run cronfleet")
}

/// Runs a command that must succeed quietly; returns its stdout.
pub async fn succeeds(server: &str, args: &[&str]) -> String {
    let output = cronfleet(server, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Runs a command with `-o json` that must succeed; returns the parsed JSON.
pub async fn json(server: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let stdout = succeeds(server, &args).await;
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: {error}: {stdout}"))
}

/// The jobs (name and version) and the number of runs: what a refused command must leave
/// as it was.
pub async fn snapshot(store: &PostgresStore) -> Snapshot {
    let jobs = store
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|job| (job.spec.name, job.version))
        .collect();
    let runs = store
        .list_runs(&RunFilter {
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .len();
    (jobs, runs)
}

/// What [`snapshot`] gives: each job's name and version, and the number of runs.
pub type Snapshot = (Vec<(String, i64)>, usize);

/// Runs a command that must be refused: exit `status`, nothing on stdout, `error: …` on
/// stderr with each of `expected` in it (the server's own message, never the Debug form of
/// a gRPC status), and the store left as `before`.
pub async fn refused(
    server: &str,
    store: &PostgresStore,
    args: &[&str],
    status: i32,
    expected: &[&str],
    before: &Snapshot,
) {
    let output = cronfleet(server, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{args:?} printed to stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{args:?}: {stderr:?} lacks {part:?}");
    }
    assert!(
        !stderr.contains("Status {") && !stderr.contains("code:"),
        "{args:?}: {stderr}"
    );
    assert_eq!(&snapshot(store).await, before, "{args:?} changed something");
}
