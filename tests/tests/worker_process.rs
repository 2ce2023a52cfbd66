//! `cronfleet worker` as a real process, driven by the in-test coordinator of
//! `crates/worker/tests/support`: a SIGKILLed worker takes its shell scripts with it,
//! SIGTERM drains, the health probes follow the registration, bad flags are named.

#[path = "../../crates/worker/tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cronfleet_e2e::cronfleet_binary;
use cronfleet_proto::v1::RunOutcome;
use rustix::process::{Pid, Signal};
use serde_json::json;
use support::{Harness, Role, WAIT, alive, assign, outcome, read_pid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `cronfleet worker` process, killed (and reaped) on drop if still running.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    fn start(coordinator: &str, http_port: u16, extra: &[&str]) -> WorkerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let child = Command::new(cronfleet_binary())
            .arg("worker")
            .args(["--coordinator", coordinator])
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--node-id", "e2e-worker"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start cronfleet worker");
        WorkerProcess {
            child,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap()
    }

    fn signal(&self, signal: Signal) {
        rustix::process::kill_process(self.pid(), signal).expect("signal the worker");
    }

    /// Waits (up to `within`) for the process to exit.
    async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_port() -> u16 {
    cronfleet_testkit::free_port().expect("a free port")
}

/// `GET path` on 127.0.0.1:`port`: the status code, or `None` if nothing answers.
async fn get_status(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response);
        response.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
}

/// Polls `GET path` until it answers `status`, for at most `within`.
async fn wait_for_status(port: u16, path: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = get_status(port, path).await;
        if last == Some(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} did not answer {status} within {within:?} (last: {last:?})");
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_takes_its_shell_scripts_with_it() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let mut worker = WorkerProcess::start(&harness.url(), http_port(), &["--handlers", "shell"]);
    harness.expect_register().await;

    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (pid_file(dir.path(), "shell"), pid_file(dir.path(), "child"));
    let script = format!(
        "echo $$ > {}; sleep 60 & echo $! > {}; wait",
        shell.display(),
        child.display()
    );
    harness.assign(assign(1, "shell", json!({ "script": script })));
    harness.expect_started(1).await;
    let pids = [read_pid(&shell).await, read_pid(&child).await];
    assert!(pids.iter().all(|&pid| alive(pid)), "the script runs");

    // SIGKILL, and leave the worker unreaped for now: a dead worker nobody has waited for
    // yet still answers `kill -0`, which must not fool its watchdogs.
    worker.signal(Signal::KILL);
    let killed = Instant::now();
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the script's processes {pids:?} outlived the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after = killed.elapsed();
    eprintln!("the script's processes were gone {gone_after:?} after the worker's SIGKILL");
    assert!(
        gone_after <= Duration::from_millis(1_200),
        "the script's processes should be gone within ~1s of the worker, took {gone_after:?}"
    );
    let status = worker.exit_within(WAIT).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// Whether process `pid` is stopped (SIGSTOP): state `T` in /proc.
fn stopped(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            rest.chars().next()
        })
        == Some('T')
}

/// A frozen worker (SIGSTOP: a long pause, a VM stall of the worker alone) renews no
/// lease and cannot stop its runs — its shell scripts die all the same, killed by their
/// watchdogs outside the worker at the end of its lease plus the kill grace, before any
/// coordinator may run them elsewhere. A script that ignores SIGTERM gets no say. Once
/// thawed, the worker reports the run as aborted by the lease, to be run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_shell_scripts_die_at_the_end_of_its_lease() {
    // Heartbeats every 200 ms, a 1 s lease; a 1 s kill grace.
    let mut harness = Harness::start(Role::leader_with(1, 200, 1_000)).await;
    let worker = WorkerProcess::start(
        &harness.url(),
        http_port(),
        &["--handlers", "shell", "--kill-grace", "1s"],
    );
    harness.expect_register().await;

    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (pid_file(dir.path(), "shell"), pid_file(dir.path(), "child"));
    let script = format!(
        "trap '' TERM; echo $$ > {}; sleep 60 & echo $! > {}; wait",
        shell.display(),
        child.display()
    );
    harness.assign(assign(1, "shell", json!({ "script": script })));
    harness.expect_started(1).await;
    let pids = [read_pid(&shell).await, read_pid(&child).await];
    // A few renewals, so the lease is fresh when the worker freezes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(pids.iter().all(|&pid| alive(pid)), "the script runs");

    worker.signal(Signal::STOP);
    let frozen = Instant::now();
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            frozen.elapsed() < Duration::from_secs(6),
            "the script's processes {pids:?} outlived the frozen worker's lease by far"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after = frozen.elapsed();
    assert!(
        stopped(worker.pid()),
        "the worker was still frozen when its scripts died"
    );
    eprintln!("the frozen worker's script was gone {gone_after:?} after the freeze");
    // Last renewal ≤ 200 ms before the freeze: kill-by = renewal + 1 s lease + 1 s grace;
    // the watchdog looks every 200 ms. Never before the lease and grace are over.
    assert!(
        gone_after >= Duration::from_millis(1_700) && gone_after <= Duration::from_millis(2_700),
        "killed {gone_after:?} after the freeze; expected at the lease's end plus the grace (~2 s)"
    );

    worker.signal(Signal::CONT);
    let (_, finished) = harness.expect_finished_within(1, WAIT).await;
    assert_eq!(outcome(&finished), RunOutcome::Aborted, "{finished:?}");
    assert!(
        finished.error.starts_with("lease lost"),
        "{}",
        finished.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_run_finish_then_exits_0() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let mut worker = WorkerProcess::start(
        &harness.url(),
        http_port(),
        &["--handlers", "sleep", "--drain-timeout", "10s"],
    );
    let (conn, _) = harness.expect_register().await;
    harness.assign(assign(1, "sleep", json!({"ms": 1_000})));
    harness.expect_started(1).await;
    let assigned = Instant::now();

    worker.signal(Signal::TERM);
    let (_, finished) = harness.expect_finished_within(1, WAIT).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert!(
        assigned.elapsed() >= Duration::from_millis(900),
        "the run was not cut short"
    );
    harness.expect_disconnected(conn).await;
    let status = worker.exit_within(WAIT).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", worker.log());
    let log = worker.log();
    assert!(log.contains("draining"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_registration_and_healthz_the_process() {
    let harness = Harness::start(Role::NotLeader {
        leader_url: String::new(),
    })
    .await;
    let port = http_port();
    let mut worker = WorkerProcess::start(&harness.url(), port, &[]);

    wait_for_status(port, "/healthz", 200, WAIT).await;
    assert_eq!(
        get_status(port, "/readyz").await,
        Some(503),
        "no leader yet"
    );

    harness.set_role(Role::leader(1));
    wait_for_status(port, "/readyz", 200, WAIT).await;

    harness.stop();
    wait_for_status(port, "/readyz", 503, WAIT).await;
    assert_eq!(
        get_status(port, "/healthz").await,
        Some(200),
        "alive all the same"
    );

    worker.signal(Signal::TERM);
    assert_eq!(worker.exit_within(WAIT).await.code(), Some(0));
}

#[test]
fn bad_flags_are_named_with_what_would_be_valid() {
    let fails = |args: &[&str], expected: &[&str]| {
        let output = Command::new(cronfleet_binary())
            .arg("worker")
            .args(args)
            .env_remove("CRONFLEET_COORDINATOR")
            .env_remove("CRONFLEET_HANDLERS")
            .env_remove("CRONFLEET_LABELS")
            .output()
            .expect("run cronfleet worker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: {text:?} not in {stderr}");
        }
    };
    let url = "http://127.0.0.1:1";
    fails(&[], &["--coordinator"]);
    fails(
        &["--coordinator", url, "--handlers", "shell,bash"],
        &[
            "unknown stock handler \"bash\"",
            "valid handlers are shell, http, noop, sleep",
        ],
    );
    fails(
        &["--coordinator", url, "--labels", "zone=eu,gpu"],
        &["--labels", "\"gpu\" is not a key=value pair"],
    );
    fails(
        &["--coordinator", url, "--capacity", "0"],
        &["--capacity", "at least 1"],
    );
    fails(
        &["--coordinator", url, "--drain-timeout", "soon"],
        &["--drain-timeout", "soon"],
    );
    fails(
        &["--coordinator", "127.0.0.1:50051"],
        &["--coordinator", "\"127.0.0.1:50051\"", "http://"],
    );
}
