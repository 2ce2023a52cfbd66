//! A cluster sandbox of real processes on loopback: `cronfleet coordinator` and
//! `cronfleet worker` processes started from the built binary, the CLI run against them,
//! and a ledger that shell jobs write to, so tests can prove from outside that no job
//! ever ran twice at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use cronfleet_testkit::http_get;

use crate::cronfleet_binary;

/// A child process that is killed when dropped; its output goes to a log file.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts the `cronfleet` binary with `args`; its output is appended to
    /// `log_dir/<name>.log` (a process started again under the same name continues the
    /// same log).
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> Process {
        Process::spawn_with_env(name, args, log_dir, &[])
    }

    /// [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        args: &[String],
        log_dir: &Path,
        env: &[(String, String)],
    ) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the process log");
        let child = Command::new(cronfleet_binary())
            .args(args)
            .env("RUST_LOG", "info,cronfleet=debug")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful stop.
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// SIGSTOP: the process freezes (as in a long GC pause or a VM stall) without knowing.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: a frozen process goes on where it stopped.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status();
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a client command against the coordinator at `server`.
pub fn cli_at(server: &str, args: &[&str]) -> CliOutput {
    let output = Command::new(cronfleet_binary())
        .args(args)
        .args(["--server", server])
        .output()
        .expect("run the cli");
    CliOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    let port = cronfleet_testkit::free_port().expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `condition` until it holds or `timeout` passes; says what was awaited if not.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// What a CLI call printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A coordinator process and where it listens.
#[derive(Debug)]
pub struct CoordinatorNode {
    pub process: Process,
    pub node_id: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Its command line, to start it again ([`Cluster::restart_coordinator`]).
    args: Vec<String>,
}

impl CoordinatorNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

/// A worker process.
#[derive(Debug)]
pub struct WorkerNode {
    pub process: Process,
    pub node_id: String,
    pub http: SocketAddr,
}

/// Coordinators and workers over one database, plus a scratch directory for logs and
/// ledgers.
#[derive(Debug)]
pub struct Cluster {
    pub database_url: String,
    pub dir: tempfile::TempDir,
    pub coordinators: Vec<CoordinatorNode>,
    pub workers: Vec<WorkerNode>,
    /// Environment variables for every process started from now on.
    pub env: Vec<(String, String)>,
    /// Extra flags for every worker started from now on.
    pub worker_args: Vec<String>,
}

impl Cluster {
    pub fn new(database_url: &str) -> Cluster {
        Cluster {
            database_url: database_url.to_owned(),
            dir: tempfile::Builder::new()
                .prefix("cronfleet-e2e-")
                .tempdir()
                .expect("temp dir"),
            coordinators: Vec::new(),
            workers: Vec::new(),
            env: Vec::new(),
            worker_args: Vec::new(),
        }
    }

    /// Starts a coordinator and waits until it serves.
    pub fn start_coordinator(&mut self, node_id: &str, extra: &[&str]) -> &CoordinatorNode {
        let (grpc, http) = (free_addr(), free_addr());
        let mut args: Vec<String> = [
            "coordinator",
            "--database-url",
            &self.database_url,
            "--grpc",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
            "--node-id",
            node_id,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let process = Process::spawn_with_env(node_id, &args, self.dir.path(), &self.env);
        wait_until_coordinator_ready(node_id, http);
        self.coordinators.push(CoordinatorNode {
            process,
            node_id: node_id.to_owned(),
            grpc,
            http,
            args,
        });
        self.coordinators.last().expect("just pushed")
    }

    /// Starts coordinators `node_ids` electing their leader through etcd at `etcd`
    /// (`URL,…`) with a 2 s election TTL, plus flags `extra`.
    pub fn start_elected_coordinators(&mut self, node_ids: &[&str], etcd: &str, extra: &[&str]) {
        let mut args = vec!["--election-ttl", "2s", "--etcd", etcd];
        args.extend_from_slice(extra);
        for node_id in node_ids {
            self.start_coordinator(node_id, &args);
        }
    }

    /// Stops coordinator `index` gracefully (SIGTERM) and waits for it to exit; returns
    /// its exit status, `None` if it was still running after 20 s.
    pub fn stop_coordinator(&mut self, index: usize) -> Option<ExitStatus> {
        let process = &mut self.coordinators[index].process;
        process.terminate();
        process.wait_exit(Duration::from_secs(20))
    }

    /// Starts coordinator `index` again, after a stop or a kill, exactly as it was
    /// started: same node id, ports, database and flags (its log continues); waits until
    /// it serves.
    pub fn restart_coordinator(&mut self, index: usize) -> &CoordinatorNode {
        let log_dir = self.dir.path().to_owned();
        let node = &mut self.coordinators[index];
        // Whatever is left of the old process goes first, so the ports are free.
        node.process.kill();
        node.process = Process::spawn_with_env(&node.node_id, &node.args, &log_dir, &self.env);
        wait_until_coordinator_ready(&node.node_id, node.http);
        &self.coordinators[index]
    }

    /// Starts a worker against every coordinator and waits until it is registered.
    pub fn start_worker(&mut self, node_id: &str, handlers: &str, capacity: u32) -> &WorkerNode {
        let coordinators: Vec<String> =
            self.coordinators.iter().map(CoordinatorNode::url).collect();
        self.start_worker_with(node_id, handlers, capacity, &coordinators)
    }

    /// Starts a worker that knows the coordinators at `coordinators` (e.g. through a
    /// proxy) and waits until it is registered.
    pub fn start_worker_with(
        &mut self,
        node_id: &str,
        handlers: &str,
        capacity: u32,
        coordinators: &[String],
    ) -> &WorkerNode {
        let http = free_addr();
        let args: Vec<String> = [
            "worker",
            "--coordinator",
            &coordinators.join(","),
            "--handlers",
            handlers,
            "--capacity",
            &capacity.to_string(),
            "--node-id",
            node_id,
            "--http",
            &http.to_string(),
            "--drain-timeout",
            "5s",
            "--kill-grace",
            "1s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(self.worker_args.iter().cloned())
        .collect();
        let process = Process::spawn_with_env(node_id, &args, self.dir.path(), &self.env);
        wait_for(
            &format!("worker {node_id} to register"),
            Duration::from_secs(20),
            || http_get(http, "/readyz").is_some_and(|(status, _)| status == 200),
        );
        self.workers.push(WorkerNode {
            process,
            node_id: node_id.to_owned(),
            http,
        });
        self.workers.last().expect("just pushed")
    }

    /// Runs a client command against the first coordinator.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_on(0, args)
    }

    /// Runs a client command against coordinator `index`.
    pub fn cli_on(&self, index: usize, args: &[&str]) -> CliOutput {
        cli_at(&self.coordinators[index].url(), args)
    }

    /// Runs a client command with `-o json` and returns its output; panics on failure.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        self.cli_json_on(0, args)
    }

    /// [`Cluster::cli_json`] against coordinator `index`.
    pub fn cli_json_on(&self, index: usize, args: &[&str]) -> serde_json::Value {
        let mut with_json = args.to_vec();
        with_json.extend(["-o", "json"]);
        let output = self.cli_on(index, &with_json);
        assert!(
            output.success,
            "cronfleet {args:?} failed: {}",
            output.stderr
        );
        serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "cronfleet {args:?} printed no JSON ({error}): {}",
                output.stdout
            )
        })
    }

    /// `cronfleet status -o json` from coordinator `index`; `None` if it does not answer.
    pub fn status_from(&self, index: usize) -> Option<serde_json::Value> {
        let output = self.cli_on(index, &["status", "-o", "json"]);
        if !output.success {
            return None;
        }
        serde_json::from_str(&output.stdout).ok()
    }

    /// The index of the coordinator that the cluster's status names as the leader (asked
    /// of each coordinator in turn until one answers), if there is one.
    pub fn leader_index(&self) -> Option<usize> {
        let status = (0..self.coordinators.len()).find_map(|index| self.status_from(index))?;
        let leader = status["leader"]["node_id"].as_str()?;
        self.coordinators
            .iter()
            .position(|node| node.node_id == leader)
    }

    /// The runs of a job, oldest first.
    pub fn runs_of(&self, job: &str) -> Vec<serde_json::Value> {
        self.runs_on(0, job)
    }

    /// [`Cluster::runs_of`], asked of coordinator `index`.
    pub fn runs_on(&self, index: usize, job: &str) -> Vec<serde_json::Value> {
        let runs = self.cli_json_on(index, &["runs", "--job", job, "--limit", "10000"]);
        let mut runs = runs.as_array().expect("a JSON array").clone();
        runs.sort_by_key(|run| run["id"].as_i64());
        runs
    }

    /// A ledger file for shell jobs to write to.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    /// Every process's log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.coordinators
            .iter()
            .map(|c| &c.process)
            .chain(self.workers.iter().map(|w| &w.process))
            .map(|p| format!("----- {} -----\n{}", p.name, p.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn wait_until_coordinator_ready(node_id: &str, http: SocketAddr) {
    wait_for(
        &format!("coordinator {node_id} to be ready"),
        Duration::from_secs(20),
        || http_get(http, "/readyz").is_some_and(|(status, _)| status == 200),
    );
}

/// A shell script for a job that records when each run starts and ends in `ledger`, and
/// sleeps `seconds` in between.
pub fn ledger_script(ledger: &Path, seconds: f64) -> String {
    format!(
        "{}; sleep {seconds}; {}",
        ledger_mark(ledger, "start"),
        ledger_mark(ledger, "end")
    )
}

/// A shell script for a job that records its start in `ledger`, then runs until it is
/// stopped (a minute at most), recording its end when it gets SIGTERM: when it really
/// stopped is known from outside.
pub fn ledger_script_until_stopped(ledger: &Path) -> String {
    format!(
        "trap '{}; exit 143' TERM; {}; sleep 60 & wait $!",
        ledger_mark(ledger, "end"),
        ledger_mark(ledger, "start")
    )
}

/// One shell command that appends a `start` or `end` line for the current run to
/// `ledger`, for scripts that mark their start and end themselves (e.g. `end` in a
/// `trap … TERM`, so a stopped run records when it really stopped). It contains no
/// single quotes, so it can go inside a `trap '…'`.
pub fn ledger_mark(ledger: &Path, kind: &str) -> String {
    format!(
        "echo \"{kind} $CRONFLEET_JOB $CRONFLEET_RUN_ID $(date +%s.%N)\" >> {}",
        ledger.display()
    )
}

/// Appends a `start` or `end` line for `run` of `job` to `ledger` now: what
/// [`ledger_mark`] does, for handlers written in Rust.
pub fn write_ledger(ledger: &Path, kind: &str, job: &str, run: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .expect("open the ledger");
    writeln!(file, "{kind} {job} {run} {now:.9}").expect("write the ledger");
}

/// One run's interval in the ledger; `end` is `None` for a run that never finished (its
/// process was killed). `last_alive` is the latest line the run wrote (its start, a
/// `tick`, its end): a killed run died after it. `found_previous_alive`: the run's script
/// found its job's lock held when it started (an `overlap` line) — an earlier attempt's
/// processes were still alive.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    pub job: String,
    pub run: i64,
    pub start: f64,
    pub end: Option<f64>,
    pub last_alive: f64,
    pub found_previous_alive: bool,
}

/// Reads a ledger written by [`ledger_script`].
pub fn read_ledger(ledger: &Path) -> Vec<LedgerEntry> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut entries: BTreeMap<i64, LedgerEntry> = BTreeMap::new();
    let mut overlapped = std::collections::BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, job, run, at] = fields[..] else {
            continue;
        };
        let (Ok(run), Ok(at)) = (run.parse::<i64>(), at.parse::<f64>()) else {
            continue;
        };
        match kind {
            "start" => {
                entries.insert(
                    run,
                    LedgerEntry {
                        job: job.to_owned(),
                        run,
                        start: at,
                        end: None,
                        last_alive: at,
                        found_previous_alive: false,
                    },
                );
            }
            "end" => {
                if let Some(entry) = entries.get_mut(&run) {
                    entry.end = Some(at);
                    entry.last_alive = entry.last_alive.max(at);
                }
            }
            "tick" => {
                if let Some(entry) = entries.get_mut(&run) {
                    entry.last_alive = entry.last_alive.max(at);
                }
            }
            "overlap" => {
                overlapped.insert(run);
            }
            _ => {}
        }
    }
    for run in overlapped {
        if let Some(entry) = entries.get_mut(&run) {
            entry.found_previous_alive = true;
        }
    }
    entries.into_values().collect()
}

/// Panics if two runs of one job overlap in time. A run with no end (killed) counts as
/// running until `killed_at` if given, else until the next run of its job starts.
pub fn assert_no_overlap(entries: &[LedgerEntry], killed_at: Option<f64>) {
    let mut by_job: BTreeMap<&str, Vec<&LedgerEntry>> = BTreeMap::new();
    for entry in entries {
        by_job.entry(entry.job.as_str()).or_default().push(entry);
    }
    for (job, mut runs) in by_job {
        runs.sort_by(|a, b| a.start.total_cmp(&b.start));
        for pair in runs.windows(2) {
            let end = pair[0].end.or(killed_at).unwrap_or(pair[1].start);
            assert!(
                end <= pair[1].start,
                "job {job}: run {} ({} → {end}) overlaps run {} (starts {})",
                pair[0].run,
                pair[0].start,
                pair[1].run,
                pair[1].start
            );
        }
    }
}

/// Environment that runs a process with its wall clock `offset` away from the machine's
/// (libfaketime, e.g. `-30s` or `+45s`), its monotonic clock left alone — a machine whose
/// clock is skewed. Its children (a worker's scripts) inherit it.
///
/// # Panics
///
/// When libfaketime (Debian package `libfaketime`, installed by scripts/test) is missing.
pub fn skewed_clock(offset: &str) -> Vec<(String, String)> {
    let library = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|dir| PathBuf::from(dir).join("faketime/libfaketime.so.1"))
    .find(|path| path.is_file())
    .expect("libfaketime.so.1 (Debian package libfaketime): scripts/test installs it");
    vec![
        ("LD_PRELOAD".to_owned(), library.display().to_string()),
        ("FAKETIME".to_owned(), offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ]
}

/// Coordinator flags that detect failures faster than the defaults (6 s / 2 s / 500 ms),
/// so fault tests finish sooner. The timing rule holds as with the defaults: lease 1.5 s +
/// the workers' stop grace (their 1 s kill grace + 1 s) + 0.5 s fits in the 4 s timeout.
pub const FAST_FAILURE_DETECTION: &[&str] = &[
    "--worker-timeout",
    "4s",
    "--lease-ttl",
    "1500ms",
    "--heartbeat-interval",
    "500ms",
];

/// Now, as seconds since the epoch (the ledger's clock).
pub fn seconds_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// `cronfleet job create NAME ARGS…`; panics with the cluster's logs if it fails.
pub fn create(cluster: &Cluster, name: &str, args: &[&str]) {
    let mut command = vec!["job", "create", name];
    command.extend_from_slice(args);
    let output = cluster.cli(&command);
    assert!(
        output.success,
        "job create {name} failed: {}\n{}",
        output.stderr,
        cluster.logs()
    );
}

/// The states of runs, for assertion messages.
pub fn states(runs: &[serde_json::Value]) -> Vec<&str> {
    runs.iter()
        .map(|run| run["state"].as_str().unwrap_or("?"))
        .collect()
}
