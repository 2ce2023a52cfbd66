//! The processes a scenario runs: real `cronfleet coordinator` and `cronfleet worker`
//! processes from the same build as the benchmark, on free loopback ports, each logging to
//! its own file; plus what the benchmark reads of them (Prometheus `/metrics`, resident
//! memory and CPU time from `/proc`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cronfleet_testkit::http_get;

/// Where the processes come from and how they are configured.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `cronfleet` binary next to the benchmark's own.
    pub binary: PathBuf,
    pub log_dir: PathBuf,
    /// `RUST_LOG` of every process (the default is the binary's own, `info`).
    pub rust_log: Option<String>,
}

/// A running `cronfleet` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    child: Child,
    args: Vec<String>,
    /// The gRPC address of a coordinator.
    pub grpc: Option<SocketAddr>,
    pub http: SocketAddr,
}

impl Launcher {
    /// The `cronfleet` binary in the benchmark's own directory (`target/release`).
    pub fn new(log_dir: PathBuf, rust_log: Option<String>) -> anyhow::Result<Launcher> {
        let me = std::env::current_exe().context("the benchmark's own path")?;
        let binary = me
            .parent()
            .context("the benchmark's directory")?
            .join("cronfleet");
        if !binary.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p cronfleet-cli` (scripts/bench does)",
                binary.display()
            );
        }
        Ok(Launcher {
            binary,
            log_dir,
            rust_log,
        })
    }

    /// Starts a coordinator on `database_url`, electing through `etcd`, and waits until it
    /// serves (`/readyz`). Leadership is not awaited: see [`wait_for_leader`].
    pub async fn coordinator(
        &self,
        name: &str,
        database_url: &str,
        etcd: &str,
    ) -> anyhow::Result<Node> {
        let (grpc, http) = (free_addr()?, free_addr()?);
        let args: Vec<String> = [
            "coordinator",
            "--database-url",
            database_url,
            "--etcd",
            etcd,
            "--election-ttl",
            "2s",
            "--grpc",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
            "--node-id",
            name,
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let node = self.spawn(name, args, Some(grpc), http)?;
        node.wait_ready(Duration::from_secs(30)).await?;
        Ok(node)
    }

    /// Starts a worker dialling `coordinators` and waits until it is registered with the
    /// leader (`/readyz`).
    pub async fn worker(
        &self,
        name: &str,
        coordinators: &[&Node],
        handlers: &str,
        capacity: u32,
    ) -> anyhow::Result<Node> {
        let http = free_addr()?;
        let urls: Vec<String> = coordinators
            .iter()
            .filter_map(|node| node.grpc.map(|grpc| format!("http://{grpc}")))
            .collect();
        let args: Vec<String> = [
            "worker",
            "--coordinator",
            &urls.join(","),
            "--handlers",
            handlers,
            "--capacity",
            &capacity.to_string(),
            "--node-id",
            name,
            "--http",
            &http.to_string(),
            "--drain-timeout",
            "2s",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let node = self.spawn(name, args, None, http)?;
        node.wait_ready(Duration::from_secs(30)).await?;
        Ok(node)
    }

    fn spawn(
        &self,
        name: &str,
        args: Vec<String>,
        grpc: Option<SocketAddr>,
        http: SocketAddr,
    ) -> anyhow::Result<Node> {
        let child = self.start(name, &args)?;
        Ok(Node {
            name: name.to_owned(),
            child,
            args,
            grpc,
            http,
        })
    }

    fn start(&self, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let log = self.log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Some(filter) = &self.rust_log {
            command.env("RUST_LOG", filter);
        }
        command
            .spawn()
            .with_context(|| format!("start {name} ({})", self.binary.display()))
    }

    /// Starts `node` again exactly as before (same ports, flags, log), after a kill.
    pub async fn restart(&self, node: &mut Node) -> anyhow::Result<()> {
        node.kill();
        node.child = self.start(&node.name, &node.args)?;
        node.wait_ready(Duration::from_secs(30)).await
    }
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    /// SIGTERM, then waits up to `timeout` for the exit (then SIGKILL).
    pub async fn stop(mut self, timeout: Duration) {
        self.terminate();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_get(self.http, "/readyz").is_some_and(|(status, _)| status == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} was not ready after {timeout:?} (see its log in the log directory)",
            self.name
        )
    }

    /// The process's Prometheus metrics text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.http, "/metrics") {
            Some((200, body)) => Ok(body),
            other => bail!("{}: /metrics answered {:?}", self.name, other.map(|o| o.0)),
        }
    }

    /// Whether this coordinator leads now (its `cronfleet_leader` gauge).
    pub fn is_leader(&self) -> bool {
        self.metrics()
            .map(|text| crate::metrics::value(&text, "cronfleet_leader") == Some(1.0))
            .unwrap_or(false)
    }

    /// Resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mib(&self) -> Option<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.pid())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until one of `coordinators` leads; returns its index.
pub async fn wait_for_leader(coordinators: &[&Node], timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(index) = coordinators.iter().position(|node| node.is_leader()) {
            return Ok(index);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no coordinator led after {timeout:?}")
}

/// User + system CPU seconds of process `pid` (`/proc/PID/stat`, fields 14 and 15).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it start past ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks_per_second())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux everywhere).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// Busy and total CPU time of the whole machine (`/proc/stat`), in ticks.
pub fn machine_cpu_ticks() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// A free loopback address.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = cronfleet_testkit::free_port()?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The log directory to use: `dir` if given (created), else a fresh temp dir kept after
/// the run.
pub fn log_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok(dir.to_owned())
        }
        None => Ok(tempfile::Builder::new()
            .prefix("cronfleet-bench-")
            .tempdir()?
            .keep()),
    }
}
