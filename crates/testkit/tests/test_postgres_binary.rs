//! The `cronfleet-test-postgres` binary that test scripts run for a whole test run, and
//! through it the watchdog: killed outright, the process that owns a server must not leave
//! the server (or its files) behind; closing its stdin or a SIGTERM must shut it down
//! cleanly; a bad setup must say what is wrong.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Started {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

/// Starts `cronfleet-test-postgres` and reads the URL it prints and the data dir it reports.
async fn start_test_postgres(stdin: Stdio, extra_args: &[&str]) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cronfleet-test-postgres"))
        .args(extra_args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stdout
        .next_line()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("cronfleet-test-postgres printed nothing"));
    let url = line
        .strip_prefix("CRONFLEET_TEST_PG_URL=")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port = url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url:?}"));
    let report = stderr.next_line().await.unwrap().unwrap();
    let data_dir = report
        .split_once("(data ")
        .and_then(|(_, rest)| rest.split_once(", log "))
        .map(|(dir, _)| PathBuf::from(dir))
        .unwrap_or_else(|| panic!("no data dir in {report:?}"));
    assert!(data_dir.exists());
    Started {
        child,
        port,
        data_dir,
    }
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Polls until `done` holds, failing after `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn server_of_a_killed_process_is_stopped_and_removed_by_its_watchdog() {
    let mut started = start_test_postgres(Stdio::null(), &[]).await;
    assert!(listening(started.port).await);

    started.child.start_kill().unwrap();
    started.child.wait().await.unwrap();

    let port = started.port;
    eventually(Duration::from_secs(15), "server stops", async || {
        !listening(port).await
    })
    .await;
    let cluster_dir = started.data_dir.parent().unwrap().to_owned();
    eventually(Duration::from_secs(15), "temp dir removed", async || {
        !cluster_dir.exists()
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_shared_server_and_cleans_up() {
    let env_dir = tempfile::tempdir().unwrap();
    let env_file = env_dir.path().join("pg.env");
    // stdin is /dev/null, as for a background job in a script: it must not stop the server.
    let mut started =
        start_test_postgres(Stdio::null(), &["--env-file", env_file.to_str().unwrap()]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        listening(started.port).await,
        "stopped although nobody asked"
    );
    let written = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        written.starts_with("CRONFLEET_TEST_PG_URL=postgres://"),
        "{written}"
    );

    let pid = started.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), started.child.wait())
        .await
        .expect("cronfleet-test-postgres exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!listening(started.port).await);
    assert!(!started.data_dir.exists());
    assert!(!env_file.exists());
}

#[tokio::test]
async fn closing_stdin_stops_the_server_as_for_a_coprocess() {
    let mut started = start_test_postgres(Stdio::piped(), &[]).await;
    assert!(listening(started.port).await);
    drop(started.child.stdin.take());
    let exit = tokio::time::timeout(Duration::from_secs(30), started.child.wait())
        .await
        .expect("cronfleet-test-postgres exits when stdin closes")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!listening(started.port).await);
    assert!(!started.data_dir.exists());
}

#[tokio::test]
async fn missing_postgres_binaries_are_reported_with_the_place_searched() {
    let output = Command::new(env!("CARGO_BIN_EXE_cronfleet-test-postgres"))
        .env("CRONFLEET_PG_BINDIR", "/nonexistent/pg/bin")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("/nonexistent/pg/bin"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
