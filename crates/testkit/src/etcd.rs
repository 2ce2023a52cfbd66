//! Throw-away etcd: single nodes and multi-member clusters on free loopback ports, each member
//! in its own temp dir, with fault controls per member.
//!
//! A member started again reuses its data dir and ports. etcd then ignores the
//! `--initial-cluster*` flags and rejoins from its write-ahead log, so restarting needs no
//! `--initial-cluster-state existing`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Result, TestkitError};
use crate::http::{self, base64_decode, base64_encode};
use crate::ports::{free_ports, random_u64};
use crate::process::{self, SIGKILL, SIGTERM, Supervised, Teardown};

/// Environment variable with the path of the etcd binary to use instead of `etcd` on PATH.
pub const ETCD_BIN_ENV: &str = "CRONFLEET_ETCD_BIN";

/// Generous: a cluster member waits for an election, 1 s by default, and CI is slow.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// One etcd member (a single-node cluster from [`EtcdServer::start`], or a member of an
/// [`EtcdCluster`]).
///
/// Dropping it kills the process and deletes its data dir; should the test process die
/// without dropping it, its watchdog does the same.
#[derive(Debug)]
pub struct EtcdServer {
    bin: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    cluster_token: String,
    process: Option<Supervised>,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts a single-node cluster and returns once it reports healthy.
    pub async fn start() -> Result<Self> {
        let mut members = start_members(1).await?;
        Ok(members.remove(0))
    }

    /// `http://127.0.0.1:CLIENT_PORT`, the endpoint for clients.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PEER_PORT`, where the other members reach this one.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The member name (`member-0`, `member-1` …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member's data dir, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The member's log (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The process id while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        let process = self.process.as_mut()?;
        process.is_running().then(|| process.pid())
    }

    /// Whether the process is running (healthy or not).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }

    /// Whether `/health` answers `"health":"true"` (the member has a leader and serves).
    pub async fn is_healthy(&self) -> bool {
        check_health(&self.client_url()).await.is_ok()
    }

    /// Graceful stop (SIGTERM); waits for the process to exit. Does nothing if not running.
    /// A leader that has lost its quorum first tries to hand over leadership and only stops
    /// after etcd's request timeout (~7 s); [`kill`](Self::kill) is immediate.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.stop(SIGTERM, STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Crash (SIGKILL). Does nothing if not running.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill_now();
        }
        Ok(())
    }

    /// Starts the member again with the same data dir and ports and waits until it is
    /// healthy (for a cluster member that needs a quorum of running members; see
    /// [`EtcdCluster::start_again`]).
    pub async fn start_again(&mut self) -> Result<()> {
        self.start_again_waiting(true).await
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Writes `key = value` through the v3 JSON gateway of this member.
    pub async fn put(&self, key: &str, value: &str) -> Result<()> {
        let body = serde_json::json!({
            "key": base64_encode(key.as_bytes()),
            "value": base64_encode(value.as_bytes()),
        });
        self.gateway("/v3/kv/put", &body).await?;
        Ok(())
    }

    /// Reads `key` (a linearizable read) through the v3 JSON gateway of this member.
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let path = "/v3/kv/range";
        let body = serde_json::json!({ "key": base64_encode(key.as_bytes()) });
        let answer = self.gateway(path, &body).await?;
        let Some(encoded) = answer
            .pointer("/kvs/0/value")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
        else {
            // A key that exists with an empty value has no `value` field either.
            return Ok(answer.pointer("/kvs/0").map(|_| String::new()));
        };
        base64_decode(&encoded)
            .map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
            .ok_or_else(|| self.request_error(path, format!("value {encoded:?} is not base64")))
    }

    /// Whether this member currently considers itself the raft leader.
    pub async fn is_leader(&self) -> Result<bool> {
        let (member, leader) = self.raft_status().await?;
        Ok(leader.as_deref() == Some(member.as_str()))
    }

    /// This member's id and the id of the leader it follows (`None` while it knows none).
    async fn raft_status(&self) -> Result<(String, Option<String>)> {
        let path = "/v3/maintenance/status";
        let answer = self.gateway(path, &serde_json::json!({})).await?;
        let member = answer
            .pointer("/header/member_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| self.request_error(path, format!("no member id in {answer}")))?
            .to_owned();
        let leader = answer
            .get("leader")
            .and_then(|v| v.as_str())
            .filter(|id| *id != "0")
            .map(str::to_owned);
        Ok((member, leader))
    }

    async fn gateway(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let response = http::request(&self.client_url(), "POST", path, Some(&body.to_string()))
            .await
            .map_err(|err| self.request_error(path, err.to_string()))?;
        if response.status != 200 {
            return Err(self.request_error(
                path,
                format!("HTTP {}: {}", response.status, response.body.trim()),
            ));
        }
        serde_json::from_str(&response.body).map_err(|err| {
            self.request_error(path, format!("invalid JSON ({err}): {}", response.body))
        })
    }

    fn request_error(&self, path: &str, detail: String) -> TestkitError {
        TestkitError::EtcdRequest {
            endpoint: self.client_url(),
            path: path.to_owned(),
            detail,
        }
    }

    fn label(&self) -> String {
        format!("etcd {} on {}", self.name, self.client_url())
    }

    /// Starts the process without waiting for it.
    fn spawn(&mut self) -> Result<()> {
        let client_url = self.client_url();
        let peer_url = self.peer_url();
        let mut command = Command::new(&self.bin);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            // Unique per cluster, so members of two tests' clusters never mistake each other
            // for peers when a port is reused.
            .arg("--initial-cluster-token")
            .arg(&self.cluster_token)
            // 3.4 defaults to the deprecated capnslog logger, which warns about itself.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .current_dir(self.dir.path());
        let process = Supervised::spawn(
            command,
            self.label(),
            &self.log_path(),
            // Nothing of an etcd member outlives it, so there is nothing to shut down gently.
            Teardown {
                signal: SIGKILL,
                grace: Duration::ZERO,
            },
            self.dir.path(),
        )?;
        self.process = Some(process);
        Ok(())
    }

    async fn start_again_waiting(&mut self, wait_for_health: bool) -> Result<()> {
        if self.is_running() {
            return Err(TestkitError::AlreadyRunning {
                server: self.label(),
            });
        }
        self.spawn()?;
        let ready = if wait_for_health {
            wait_all_healthy(std::slice::from_mut(self)).await
        } else {
            self.wait_listening().await
        };
        if ready.is_err() {
            self.process.take();
        }
        ready
    }

    /// Waits until the client port accepts TCP connections (used when the member cannot
    /// become healthy yet because too few members run).
    async fn wait_listening(&mut self) -> Result<()> {
        let started = Instant::now();
        let address = format!("127.0.0.1:{}", self.client_port);
        loop {
            let process = self.running_process()?;
            let connect = tokio::net::TcpStream::connect(&address);
            let last_error = match process.unless_exited(connect).await? {
                Ok(_) => return Ok(()),
                Err(err) => err.to_string(),
            };
            if started.elapsed() >= READY_TIMEOUT {
                return Err(process.not_ready_error(started.elapsed(), last_error));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    fn running_process(&mut self) -> Result<&mut Supervised> {
        let server = self.label();
        self.process
            .as_mut()
            .ok_or(TestkitError::NotRunning { server })
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Kill the process before `dir` is deleted underneath it.
        self.process.take();
    }
}

/// Several etcd members forming one cluster, with faults injected per member.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `size` members (at least 1; 3 is the usual choice) and returns once every
    /// member reports healthy.
    pub async fn start(size: usize) -> Result<Self> {
        assert!(size >= 1, "an etcd cluster needs at least one member");
        Ok(EtcdCluster {
            members: start_members(size).await?,
        })
    }

    /// Every member's client URL, in member order, whether running or not (a client given
    /// all of them fails over by itself).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::client_url).collect()
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Member `index`. Panics if there is no such member.
    pub fn member(&self, index: usize) -> &EtcdServer {
        &self.members[index]
    }

    /// Member `index`, mutably. Panics if there is no such member.
    pub fn member_mut(&mut self, index: usize) -> &mut EtcdServer {
        &mut self.members[index]
    }

    /// Gracefully stops member `index`.
    pub async fn stop(&mut self, index: usize) -> Result<()> {
        self.members[index].stop().await
    }

    /// Kills member `index` with SIGKILL.
    pub async fn kill(&mut self, index: usize) -> Result<()> {
        self.members[index].kill().await
    }

    /// Starts member `index` again on its data dir and ports. If a quorum of members is then
    /// running it waits until the member is healthy; otherwise (the cluster cannot elect a
    /// leader yet) only until it listens, and [`wait_healthy`](Self::wait_healthy) can be
    /// used once enough members run again.
    pub async fn start_again(&mut self, index: usize) -> Result<()> {
        let mut running = 1;
        for (i, member) in self.members.iter_mut().enumerate() {
            if i != index && member.is_running() {
                running += 1;
            }
        }
        let quorum = running * 2 > self.members.len();
        self.members[index].start_again_waiting(quorum).await
    }

    /// The index of the leader, if every running member follows the same running leader;
    /// `None` while an election is under way (or a member cannot be asked).
    pub async fn leader(&mut self) -> Option<usize> {
        let mut ids = vec![None; self.members.len()];
        let mut views = Vec::new();
        for (i, member) in self.members.iter_mut().enumerate() {
            if !member.is_running() {
                continue;
            }
            let (id, leader) = member.raft_status().await.ok()?;
            ids[i] = Some(id);
            views.push(leader);
        }
        let agreed = views.first()?.clone()?;
        if views.iter().any(|view| view.as_ref() != Some(&agreed)) {
            return None;
        }
        ids.iter().position(|id| id.as_ref() == Some(&agreed))
    }

    /// Waits until [`leader`](Self::leader) names one, e.g. after the leader was killed;
    /// requests sent before then may hang until etcd's own request timeout.
    pub async fn wait_for_leader(&mut self) -> Result<usize> {
        let started = Instant::now();
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(TestkitError::NoLeader {
                    endpoints: self.endpoints().join(","),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Waits until every running member is healthy.
    pub async fn wait_healthy(&mut self) -> Result<()> {
        let mut running: Vec<&mut EtcdServer> = self
            .members
            .iter_mut()
            .filter_map(|m| if m.is_running() { Some(m) } else { None })
            .collect();
        wait_all_healthy_refs(&mut running).await
    }
}

/// The etcd binary: `$CRONFLEET_ETCD_BIN`, else `etcd` on PATH.
pub fn find_etcd() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(ETCD_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if process::is_executable(&bin) {
            return Ok(bin);
        }
        return Err(TestkitError::BinaryNotFound {
            program: "etcd",
            searched: format!("${ETCD_BIN_ENV}={} (not an executable file)", bin.display()),
        });
    }
    process::find_on_path("etcd").ok_or_else(|| TestkitError::BinaryNotFound {
        program: "etcd (Debian package `etcd-server`)",
        searched: format!("${ETCD_BIN_ENV} (unset), PATH"),
    })
}

/// Starts `count` members that form one cluster, retrying with fresh ports when one was
/// taken between choosing and binding it.
async fn start_members(count: usize) -> Result<Vec<EtcdServer>> {
    let bin = find_etcd()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut members = new_members(&bin, count)?;
        let started = async {
            for member in &mut members {
                member.spawn()?;
            }
            wait_all_healthy(&mut members).await
        }
        .await;
        match started {
            Ok(()) => return Ok(members),
            Err(err) if err.is_port_conflict() && attempt < START_ATTEMPTS => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Members with fresh ports, names and data dirs, not started yet.
fn new_members(bin: &std::path::Path, count: usize) -> Result<Vec<EtcdServer>> {
    let ports = free_ports(2 * count)?;
    let token = format!(
        "cronfleet-test-{}-{:016x}",
        std::process::id(),
        random_u64()
    );
    let names: Vec<String> = (0..count).map(|i| format!("member-{i}")).collect();
    let initial_cluster = names
        .iter()
        .zip(ports.chunks(2))
        .map(|(name, pair)| format!("{name}=http://127.0.0.1:{}", pair[1]))
        .collect::<Vec<_>>()
        .join(",");
    names
        .into_iter()
        .zip(ports.chunks(2))
        .map(|(name, pair)| {
            let dir = tempfile::Builder::new()
                .prefix("cronfleet-etcd-")
                .tempdir()
                .map_err(|source| TestkitError::Io {
                    action: "create a temp dir in",
                    path: std::env::temp_dir(),
                    source,
                })?;
            Ok(EtcdServer {
                bin: bin.to_owned(),
                name,
                client_port: pair[0],
                peer_port: pair[1],
                initial_cluster: initial_cluster.clone(),
                cluster_token: token.clone(),
                process: None,
                dir,
            })
        })
        .collect()
}

async fn wait_all_healthy(members: &mut [EtcdServer]) -> Result<()> {
    let mut refs: Vec<&mut EtcdServer> = members.iter_mut().collect();
    wait_all_healthy_refs(&mut refs).await
}

/// Polls `/health` of every member until all are healthy. Fails as soon as one exits, or
/// after [`READY_TIMEOUT`] with the log of the first member that is still unhealthy.
async fn wait_all_healthy_refs(members: &mut [&mut EtcdServer]) -> Result<()> {
    let started = Instant::now();
    let mut healthy = vec![false; members.len()];
    let mut last_errors = vec![String::from("no attempt yet"); members.len()];
    loop {
        for (i, member) in members.iter_mut().enumerate() {
            let url = member.client_url();
            let process = member.running_process()?;
            if healthy[i] {
                if let Some(status) = process.exit_status() {
                    return Err(process.exited_error(status));
                }
                continue;
            }
            match process.unless_exited(check_health(&url)).await? {
                Ok(()) => healthy[i] = true,
                Err(err) => last_errors[i] = err,
            }
        }
        let Some(unhealthy) = healthy.iter().position(|h| !h) else {
            return Ok(());
        };
        if started.elapsed() >= READY_TIMEOUT {
            let last_error = last_errors[unhealthy].clone();
            let process = members[unhealthy].running_process()?;
            return Err(process.not_ready_error(started.elapsed(), last_error));
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

async fn check_health(endpoint: &str) -> Result<(), String> {
    let response = http::request(endpoint, "GET", "/health", None)
        .await
        .map_err(|err| format!("GET /health: {err}"))?;
    let compact: String = response.body.split_whitespace().collect();
    if response.status == 200 && compact.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(format!(
            "GET /health: HTTP {} {}",
            response.status,
            response.body.trim()
        ))
    }
}
