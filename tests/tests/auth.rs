//! API and worker tokens end to end: a coordinator started with `--api-token` (two, as
//! during a rotation) and `--worker-token` answers only callers that present one, tells
//! the others what is missing, and never writes a token to its log; without tokens it
//! refuses to serve its admin API (gRPC, or REST on the HTTP port) or to take workers on a
//! non-loopback address unless told to; secrets can come from files.

use std::time::Duration;

use cronfleet_e2e::cluster::{Cluster, Process, free_addr, http_get, wait_for};

const OLD: &str = "old-api-token-6d1f";
const NEW: &str = "new-api-token-93ab";
const WORKER: &str = "worker-token-5c27";

#[tokio::test(flavor = "multi_thread")]
async fn tokens_guard_the_admin_api_and_the_worker_stream() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    let api_tokens = format!("{OLD},{NEW}");
    cluster.start_coordinator(
        "c1",
        &["--api-token", &api_tokens, "--worker-token", WORKER],
    );

    // The admin API: no token, a wrong one, then each of the two in force.
    let missing = cluster.cli(&["status"]);
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("requires a bearer token") && missing.stderr.contains("--token"),
        "{}",
        missing.stderr
    );
    let wrong = cluster.cli(&["status", "--token", "guess"]);
    assert!(!wrong.success);
    assert!(wrong.stderr.contains("not one of"), "{}", wrong.stderr);
    for token in [OLD, NEW] {
        let answered = cluster.cli(&["job", "list", "--token", token]);
        assert!(answered.success, "token {token}: {}", answered.stderr);
    }
    // The REST API on the HTTP port asks for the same tokens (its probes do not).
    let http = cluster.coordinators[0].http;
    let client = reqwest::Client::new();
    let jobs = format!("http://{http}/api/v1/jobs");
    let status_with = |token: Option<&str>| {
        let mut request = client.get(&jobs);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("REST call").status().as_u16() }
    };
    assert_eq!(status_with(None).await, 401);
    assert_eq!(status_with(Some("guess")).await, 401);
    assert_eq!(status_with(Some(OLD)).await, 200);
    assert_eq!(status_with(Some(NEW)).await, 200);
    assert!(http_get(http, "/healthz").is_some_and(|(status, _)| status == 200));

    let created = cluster.cli(&[
        "job",
        "create",
        "guarded",
        "--handler",
        "noop",
        "--every",
        "1s",
        "--token",
        NEW,
    ]);
    assert!(created.success, "{}", created.stderr);

    // A worker without the token is turned away; with it, it registers and runs the job.
    let log_dir = cluster.dir.path().to_owned();
    let http = free_addr();
    let coordinator = cluster.coordinators[0].url();
    let stranger = Process::spawn(
        "stranger",
        &[
            "worker",
            "--coordinator",
            &coordinator,
            "--handlers",
            "noop",
            "--node-id",
            "stranger",
            "--http",
            &http.to_string(),
        ]
        .map(str::to_owned),
        &log_dir,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        http_get(http, "/readyz").is_some_and(|(status, _)| status == 503),
        "a worker without the token is not registered"
    );
    assert!(
        stranger.log_text().contains("bearer token"),
        "it says why: {}",
        stranger.log_text()
    );
    cluster.worker_args = vec!["--worker-token".into(), WORKER.into()];
    cluster.start_worker("w1", "noop", 2);
    wait_for(
        "a run on the admitted worker",
        Duration::from_secs(20),
        || {
            let runs = cluster.cli(&["runs", "--job", "guarded", "-o", "json", "--token", OLD]);
            runs.success && runs.stdout.contains("\"succeeded\"")
        },
    );

    let logs = format!("{}\n{}", cluster.logs(), stranger.log_text());
    for token in [OLD, NEW, WORKER] {
        assert!(!logs.contains(token), "a token is in a log:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_admin_api_is_refused_off_loopback() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let cluster = Cluster::new(database.url());
    let port = free_addr().port();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "coordinator",
            "--database-url",
            database.url(),
            "--grpc",
            &format!("0.0.0.0:{port}"),
            "--http",
            &free_addr().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let mut refused = Process::spawn("refused", &args(&[]), cluster.dir.path());
    let status = refused.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|status| !status.success()),
        "an open API on 0.0.0.0 does not start: {status:?}"
    );
    let log = refused.log_text();
    assert!(
        log.contains("refusing to serve the admin API without a token")
            && log.contains("--insecure-open-api"),
        "{log}"
    );

    // The REST API is served on the HTTP port: an open one there is refused the same way.
    let mut refused_http = Process::spawn(
        "refused-http",
        &[
            "coordinator",
            "--database-url",
            database.url(),
            "--grpc",
            &free_addr().to_string(),
            "--http",
            &format!("0.0.0.0:{}", free_addr().port()),
        ]
        .map(str::to_owned),
        cluster.dir.path(),
    );
    let status = refused_http.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|status| !status.success()),
        "an open REST API on 0.0.0.0 does not start: {status:?}"
    );
    assert!(
        refused_http
            .log_text()
            .contains("refusing to serve the admin API without a token on 0.0.0.0"),
        "{}",
        refused_http.log_text()
    );

    // Closed by default for workers too: without a worker token on 0.0.0.0 it does not
    // start, API token or not.
    let mut open_workers = Process::spawn(
        "open-workers",
        &args(&["--api-token", OLD]),
        cluster.dir.path(),
    );
    let status = open_workers.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|status| !status.success()),
        "an open worker stream on 0.0.0.0 does not start: {status:?}"
    );
    assert!(
        open_workers
            .log_text()
            .contains("refusing to take workers without a token on 0.0.0.0"),
        "{}",
        open_workers.log_text()
    );

    for (name, flags) in [
        (
            "accepted",
            &["--insecure-open-api", "--worker-token", WORKER][..],
        ),
        (
            "open",
            &["--insecure-open-api", "--insecure-open-workers"][..],
        ),
    ] {
        let mut accepted = Process::spawn(name, &args(flags), cluster.dir.path());
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            accepted.wait_exit(Duration::ZERO).is_none(),
            "with {flags:?} it serves: {}",
            accepted.log_text()
        );
        accepted.kill();
    }
}

/// A database password reaches neither `--help` (which shows the environment's values of
/// other flags) nor the error about a URL that cannot be used.
#[test]
fn a_database_password_is_never_printed() {
    let binary = cronfleet_e2e::cronfleet_binary();
    let url = "mysql://cronfleet:db-pass-41c9@db:5432/cronfleet";
    let help = std::process::Command::new(&binary)
        .args(["coordinator", "--help"])
        .env("CRONFLEET_DATABASE_URL", url)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--database-url"), "{help}");
    assert!(!help.contains("db-pass-41c9"), "{help}");
    let refused = std::process::Command::new(&binary)
        .args(["coordinator", "--database-url", url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("invalid database URL \"mysql://cronfleet:***@db:5432/cronfleet\""),
        "{stderr}"
    );
    assert!(!stderr.contains("db-pass-41c9"), "{stderr}");
}

/// Secrets from files (a Kubernetes Secret mounted as files): the database URL and the
/// tokens reach neither the command line (`ps`) nor the environment, and work as the
/// flags do.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_can_come_from_files_and_stay_out_of_ps() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let cluster = Cluster::new(database.url());
    let dir = cluster.dir.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let url_file = write("database-url", &format!("{}\n", database.url()));
    let api_file = write("api-tokens", &format!("{OLD}\n{NEW}\n"));
    let worker_file = write("worker-token", &format!("{WORKER}\n"));
    let (grpc, http) = (free_addr(), free_addr());
    let coordinator = Process::spawn(
        "c1",
        &[
            "coordinator",
            "--database-url-file",
            &url_file,
            "--api-token-file",
            &api_file,
            "--worker-token-file",
            &worker_file,
            "--grpc",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
        ]
        .map(str::to_owned),
        dir,
    );
    wait_for("the coordinator", Duration::from_secs(20), || {
        http_get(http, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    let worker_http = free_addr();
    let worker = Process::spawn(
        "w1",
        &[
            "worker",
            "--coordinator",
            &format!("http://{grpc}"),
            "--worker-token-file",
            &worker_file,
            "--http",
            &worker_http.to_string(),
        ]
        .map(str::to_owned),
        dir,
    );
    wait_for("the worker to register", Duration::from_secs(20), || {
        http_get(worker_http, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    let server = format!("http://{grpc}");
    for token in [OLD, NEW] {
        let status = cronfleet_e2e::cluster::cli_at(&server, &["status", "--token", token]);
        assert!(status.success, "{}", status.stderr);
    }
    assert!(!cronfleet_e2e::cluster::cli_at(&server, &["status"]).success);
    for process in [&coordinator, &worker] {
        let pid = process.pid();
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let environment = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for secret in [OLD, NEW, WORKER, database.url()] {
            let secret = secret.as_bytes();
            for (what, bytes) in [
                ("command line", &command_line),
                ("environment", &environment),
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "a secret in the {what} of pid {pid}"
                );
            }
        }
    }
    let empty = write("empty", "\n");
    let output = std::process::Command::new(cronfleet_e2e::cronfleet_binary())
        .args(["coordinator", "--database-url-file", &empty])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--database-url-file") && stderr.contains("is empty"),
        "{stderr}"
    );
}

/// A job's script does not inherit the worker's token (nor cronfleet's other secrets)
/// from the worker's environment.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_environment_is_free_of_the_workers_secrets() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.env = vec![
        ("CRONFLEET_WORKER_TOKEN".to_owned(), WORKER.to_owned()),
        (
            "CRONFLEET_ALERT_SMTP".to_owned(),
            "smtp://u:smtp-pass-7e1@mail:587".to_owned(),
        ),
        ("ORDINARY_SETTING".to_owned(), "kept".to_owned()),
    ];
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 1);
    let script = serde_json::json!({ "script": "env" }).to_string();
    cronfleet_e2e::cluster::create(
        &cluster,
        "env-dump",
        &["--handler", "shell", "--every", "1h", "--args", &script],
    );
    let mut output = String::new();
    wait_for("the run to succeed", Duration::from_secs(20), || {
        let runs = cluster.runs_of("env-dump");
        output = runs
            .first()
            .and_then(|run| run["output"].as_str())
            .unwrap_or_default()
            .to_owned();
        runs.first().is_some_and(|run| run["state"] == "succeeded")
    });
    assert!(output.contains("CRONFLEET_JOB=env-dump"), "{output}");
    assert!(output.contains("ORDINARY_SETTING=kept"), "{output}");
    assert!(
        !output.contains(WORKER),
        "the worker's token leaked: {output}"
    );
    assert!(!output.contains("smtp-pass-7e1"), "{output}");
}
