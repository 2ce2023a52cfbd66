//! The stock `shell` and `http` handlers, run by a real worker for the in-test
//! coordinator: real `/bin/sh` process groups and signals, a real HTTP server.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{any, get};
use cronfleet_proto::v1::RunOutcome;
use cronfleet_proto::v1::worker_message::Kind as FromWorker;
use cronfleet_worker::Worker;
use cronfleet_worker::handlers::StockHandler;
use serde_json::json;
use support::{
    Background, Event, Harness, Role, WAIT, alive, assign, gone_soon, outcome, read_pid,
};

/// A registered worker with the shell and http handlers and a short kill grace.
async fn setup(kill_grace: Duration) -> (Harness, Background) {
    let mut harness = Harness::start(Role::leader(1)).await;
    let worker = Worker::builder()
        .coordinators([harness.url()])
        .stock_handler(StockHandler::Shell)
        .stock_handler(StockHandler::Http)
        .kill_grace(kill_grace)
        .build()
        .unwrap();
    let running = Background::spawn(move |shutdown| worker.run(shutdown));
    harness.expect_register().await;
    (harness, running)
}

#[tokio::test]
async fn shell_output_is_streamed_and_kept_with_the_run_environment() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    let mut run = assign(
        1,
        "shell",
        json!({"script": "echo \"job=$CRONFLEET_JOB run=$CRONFLEET_RUN_ID slot=$CRONFLEET_SLOT attempt=$CRONFLEET_ATTEMPT\"; echo 'to stderr' >&2; printf 'no newline'"}),
    );
    run.attempt = 2;
    let slot = chrono::DateTime::parse_from_rfc3339("2026-03-29T01:30:00Z")
        .unwrap()
        .to_utc();
    run.slot = Some(cronfleet_proto::timestamp(slot));
    harness.assign(run);
    harness.expect_started(1).await;
    let mut streamed = String::new();
    let finished = harness
        .wait_for("RunFinished", WAIT, |event| match event {
            Event::Message {
                kind: FromWorker::RunLog(log),
                ..
            } => {
                streamed.push_str(&log.text);
                None
            }
            Event::Message {
                kind: FromWorker::RunFinished(finished),
                ..
            } => Some(finished.clone()),
            _ => None,
        })
        .await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(
        finished.output,
        "job=job-1 run=1 slot=2026-03-29T01:30:00Z attempt=2\nto stderr\nno newline"
    );
    assert_eq!(
        streamed, finished.output,
        "RunLog chunks carry the same output"
    );
}

#[tokio::test]
async fn shell_failures_report_the_exit_status_or_signal() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    harness.assign(assign(
        2,
        "shell",
        json!({"script": "echo failing; exit 3"}),
    ));
    let finished = harness.expect_finished(2).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(finished.error, "exit status 3");
    assert_eq!(finished.output, "failing\n");

    harness.assign(assign(3, "shell", json!({"script": "kill -KILL $$"})));
    let finished = harness.expect_finished(3).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(finished.error, "killed by signal 9 (SIGKILL)");

    harness.assign(assign(4, "shell", json!({"script": ""})));
    let finished = harness.expect_finished(4).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert!(
        finished
            .error
            .contains("args.script must be a non-empty string"),
        "{}",
        finished.error
    );
}

/// A run over its memory limit fails and says why; the worker goes on serving, and the
/// same limit leaves a modest script alone.
#[tokio::test]
async fn a_shell_run_over_its_memory_limit_fails_and_the_worker_serves_on() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    // Builds a 100 MB string in the shell's memory: far over a 32 MiB limit.
    let hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
    harness.assign(assign(
        8,
        "shell",
        json!({"script": hog, "memory_limit": "32MiB"}),
    ));
    let finished = harness.expect_finished(8).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed, "{finished:?}");
    assert!(!finished.output.contains("survived"), "{}", finished.output);
    assert!(
        finished
            .error
            .contains("each of the run's processes was limited to 32 MiB of memory"),
        "{}",
        finished.error
    );
    // The same hog without a limit runs to its end: the limit is what stopped it.
    harness.assign(assign(10, "shell", json!({ "script": hog })));
    let finished = harness.expect_finished(10).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(finished.output, "survived 100000000\n");
    // A modest script under the limit runs as usual: the worker is fine.
    harness.assign(assign(
        9,
        "shell",
        json!({"script": "echo fine; ulimit -v", "memory_limit": "32MiB"}),
    ));
    let finished = harness.expect_finished(9).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(
        finished.output, "fine\n32768\n",
        "the limit is the script's"
    );
}

#[tokio::test]
async fn at_the_deadline_a_script_ignoring_sigterm_is_killed_after_the_grace() {
    let grace = Duration::from_millis(700);
    let (mut harness, _worker) = setup(grace).await;
    let dir = tempfile::tempdir().unwrap();
    let (shell_pid, child_pid) = (dir.path().join("shell.pid"), dir.path().join("child.pid"));
    let script = format!(
        "trap '' TERM; echo $$ > {}; sleep 60 & echo $! > {}; wait; echo survived",
        shell_pid.display(),
        child_pid.display()
    );
    let mut run = assign(5, "shell", json!({ "script": script }));
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    run.deadline = Some(cronfleet_proto::timestamp(deadline));
    let assigned = Instant::now();
    harness.assign(run);
    harness.expect_started(5).await;
    let pids = [read_pid(&shell_pid).await, read_pid(&child_pid).await];
    assert!(pids.iter().all(|&pid| alive(pid)), "the script runs");

    let finished = harness.expect_finished(5).await;
    let took = assigned.elapsed();
    assert_eq!(outcome(&finished), RunOutcome::TimedOut, "{finished:?}");
    assert!(
        took >= Duration::from_millis(500) + grace - Duration::from_millis(100),
        "SIGKILL only after the grace: finished after {took:?}"
    );
    // Well before the worker would abandon the handler (grace + 2s): the shell handler
    // itself sent SIGKILL.
    assert!(
        took < Duration::from_millis(2_500),
        "finished after {took:?}"
    );
    for pid in pids {
        assert!(
            gone_soon(pid).await,
            "process {pid} of the timed-out script is gone"
        );
    }
    assert!(!finished.output.contains("survived"));
}

#[tokio::test]
async fn cancel_stops_the_whole_process_group() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let script = format!("sleep 60 & echo $! > {}; sleep 60", child_pid.display());
    harness.assign(assign(6, "shell", json!({ "script": script })));
    harness.expect_started(6).await;
    let pid = read_pid(&child_pid).await;
    assert!(alive(pid));

    let cancelled = Instant::now();
    harness.cancel(6, "replaced");
    let finished = harness.expect_finished(6).await;
    assert_eq!(outcome(&finished), RunOutcome::Cancelled);
    assert!(
        cancelled.elapsed() < Duration::from_secs(2),
        "SIGTERM stops a script that does not ignore it at once: {:?}",
        cancelled.elapsed()
    );
    assert!(
        gone_soon(pid).await,
        "no process of the cancelled run is left"
    );
}

#[tokio::test]
async fn processes_a_script_leaves_behind_end_with_the_run() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    // The background sleep also holds the output pipe open: the run must not wait for it.
    let script = format!("sleep 60 & echo $! > {}; echo done", child_pid.display());
    let assigned = Instant::now();
    harness.assign(assign(7, "shell", json!({ "script": script })));
    let finished = harness.expect_finished(7).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(finished.output, "done\n");
    assert!(
        assigned.elapsed() < Duration::from_secs(2),
        "{:?}",
        assigned.elapsed()
    );
    assert!(
        gone_soon(read_pid(&child_pid).await).await,
        "the leftover background process is gone"
    );
}

/// An HTTP server for the http handler: `/ok`, `/echo` (201 with what it got), `/fail`,
/// `/big` (a 1 MiB body).
async fn http_server() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/echo",
            any(
                |method: Method, headers: HeaderMap, body: String| async move {
                    let token = headers
                        .get("x-token")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    (StatusCode::CREATED, format!("{method} {token} {body}"))
                },
            ),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database is down") }),
        )
        .route("/big", get(|| async { "x".repeat(1 << 20) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn http_requests_succeed_on_the_expected_status_and_keep_the_start_of_the_body() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;
    let server = http_server().await;

    harness.assign(assign(10, "http", json!({"url": format!("{server}/ok")})));
    let finished = harness.expect_finished(10).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(finished.output, "HTTP/1.1 200 OK\nfine");

    harness.assign(assign(
        11,
        "http",
        json!({
            "url": format!("{server}/echo"),
            "method": "POST",
            "headers": {"X-Token": "abc"},
            "body": "payload",
            "expect_status": 201
        }),
    ));
    let finished = harness.expect_finished(11).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(finished.output, "HTTP/1.1 201 Created\nPOST abc payload");

    harness.assign(assign(12, "http", json!({"url": format!("{server}/fail")})));
    let finished = harness.expect_finished(12).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(
        finished.error,
        format!("GET {server}/fail answered 500 Internal Server Error, expected any 2xx")
    );
    assert_eq!(
        finished.output,
        "HTTP/1.1 500 Internal Server Error\ndatabase is down"
    );

    harness.assign(assign(
        13,
        "http",
        json!({"url": format!("{server}/ok"), "expect_status": 204}),
    ));
    let finished = harness.expect_finished(13).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert!(
        finished.error.ends_with("answered 200 OK, expected 204"),
        "{}",
        finished.error
    );

    harness.assign(assign(14, "http", json!({"url": format!("{server}/big")})));
    let finished = harness.expect_finished(14).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded);
    assert!(
        finished.output.len() < 9 * 1024,
        "the body is cut: {} bytes",
        finished.output.len()
    );
    assert!(
        finished
            .output
            .ends_with("[body truncated after 8192 bytes]\n")
    );
}

#[tokio::test]
async fn http_errors_name_the_bad_field_or_the_failed_connection() {
    let (mut harness, _worker) = setup(Duration::from_secs(5)).await;

    harness.assign(assign(
        20,
        "http",
        json!({"url": "http://127.0.0.1:9/x", "expect_status": "200"}),
    ));
    let finished = harness.expect_finished(20).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(
        finished.error,
        "invalid args for the http handler: args.expect_status must be an HTTP status code from 100 to 599, got \"200\""
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/x", listener.local_addr().unwrap())
    };
    harness.assign(assign(21, "http", json!({ "url": closed })));
    let finished = harness.expect_finished(21).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert!(
        finished
            .error
            .starts_with(&format!("GET {closed}: error sending request: "))
            && finished
                .error
                .ends_with("Connection refused (os error 111)"),
        "{}",
        finished.error
    );
}
