//! The chaos suite: a randomized, seeded run of faults against a whole cluster of real
//! processes — three coordinators electing their leader through a three-member etcd, a
//! PostgreSQL of its own (so it can be restarted), three workers, and a mix of shell jobs
//! (short, long, overlap skip / queue / replace, SIGTERM-ignoring, retries, catch-up) —
//! followed by the history checker ([`crate::checker`]) on what the jobs wrote and what
//! the store recorded.
//!
//! Faults, drawn from the seed: `kill -9`, SIGTERM and SIGSTOP/SIGCONT of the leader and
//! of workers; the leader cut off from every worker (both ways, and each way alone) and
//! from PostgreSQL, through TCP proxies (workers reach each coordinator through the proxy
//! its `--advertise-url` names, so redirects go through it too); PostgreSQL restarted;
//! an etcd member lost; a worker restarted with its wall clock up to a minute off
//! (libfaketime). The jobs' ledger is written on the kernel's boot clock, which no skew
//! moves, so attempts on skewed and unskewed workers compare.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cronfleet_testkit::{EtcdCluster, PostgresServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::checker::{self, Observed, Verdict};
use crate::cluster::{
    FAST_FAILURE_DETECTION, Process, cli_at, free_addr, http_get, read_ledger, seconds_now,
    skewed_clock,
};
use crate::proxy::PartitionProxy;

/// How often the jobs' scripts write a tick.
const TICK: &str = "0.1";

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillLeader,
    TerminateLeader,
    FreezeLeader,
    KillWorker,
    TerminateWorker,
    FreezeWorker,
    PartitionLeaderFromWorkers,
    LeaderUnheardByWorkers,
    WorkersUnheardByLeader,
    PartitionLeaderFromDatabase,
    RestartPostgres,
    LoseEtcdMember,
    SkewWorkerClock,
}

const FAULTS: &[Fault] = &[
    Fault::KillLeader,
    Fault::TerminateLeader,
    Fault::FreezeLeader,
    Fault::KillWorker,
    Fault::TerminateWorker,
    Fault::FreezeWorker,
    Fault::PartitionLeaderFromWorkers,
    Fault::LeaderUnheardByWorkers,
    Fault::WorkersUnheardByLeader,
    Fault::PartitionLeaderFromDatabase,
    Fault::RestartPostgres,
    Fault::LoseEtcdMember,
    Fault::SkewWorkerClock,
];

/// One job of the mix: its name, interval, extra `job create` flags, how long a run
/// takes (tenths of a second), whether it ignores SIGTERM, whether it fails now and then.
struct JobMix {
    name: &'static str,
    every_seconds: u32,
    flags: &'static [&'static str],
    tenths: u32,
    ignores_sigterm: bool,
    flaky: bool,
}

const JOBS: &[JobMix] = &[
    JobMix {
        name: "short",
        every_seconds: 1,
        flags: &[],
        tenths: 3,
        ignores_sigterm: false,
        flaky: false,
    },
    JobMix {
        name: "long",
        every_seconds: 2,
        flags: &[],
        tenths: 30,
        ignores_sigterm: false,
        flaky: false,
    },
    JobMix {
        name: "queue",
        every_seconds: 1,
        flags: &["--overlap", "queue"],
        tenths: 15,
        ignores_sigterm: false,
        flaky: false,
    },
    JobMix {
        name: "replace",
        every_seconds: 3,
        flags: &["--overlap", "replace"],
        tenths: 50,
        ignores_sigterm: false,
        flaky: false,
    },
    JobMix {
        name: "stubborn",
        every_seconds: 4,
        flags: &[],
        tenths: 20,
        ignores_sigterm: true,
        flaky: false,
    },
    JobMix {
        name: "retry",
        every_seconds: 2,
        flags: &["--retries", "2"],
        tenths: 2,
        ignores_sigterm: false,
        flaky: true,
    },
    JobMix {
        name: "catchup",
        every_seconds: 1,
        flags: &["--catch-up", "all"],
        tenths: 1,
        ignores_sigterm: false,
        flaky: false,
    },
];

/// What a chaos run did and what the checker found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub faults: BTreeMap<Fault, usize>,
    pub verdict: Verdict,
    pub took: Duration,
    /// Every process's log, for a failure message.
    pub logs: String,
}

impl Report {
    /// The summary table (Markdown).
    pub fn table(&self) -> String {
        let mut table = format!(
            "chaos run, seed {}, {} faults in {:.0} s\n\n| fault | count |\n| --- | --- |\n",
            self.seed,
            self.faults.values().sum::<usize>(),
            self.took.as_secs_f64()
        );
        for (fault, count) in &self.faults {
            table.push_str(&format!("| {fault:?} | {count} |\n"));
        }
        let verdict = &self.verdict;
        table.push_str(&format!(
            "\n| runs | attempts (ledger) | slots | overlaps | lost slots | stuck runs | deposed writes |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {} | {} | {} | {} | {} | {} |\n",
            verdict.runs,
            verdict.attempts,
            verdict.slots,
            verdict.overlaps,
            verdict.lost_slots,
            verdict.stuck,
            verdict.deposed_writes
        ));
        table
    }
}

struct CoordinatorProcess {
    node_id: String,
    args: Vec<String>,
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
    /// Workers' way in (its advertise URL) and its way to PostgreSQL.
    to_workers: PartitionProxy,
    to_database: PartitionProxy,
}

struct WorkerProcess {
    args: Vec<String>,
    process: Process,
    node_id: String,
}

struct Chaos {
    dir: PathBuf,
    postgres: PostgresServer,
    etcd: EtcdCluster,
    coordinators: Vec<CoordinatorProcess>,
    workers: Vec<WorkerProcess>,
    rng: StdRng,
}

/// Runs `faults` faults drawn from `seed` and checks the history.
pub async fn run(seed: u64, faults: usize) -> Report {
    let started = Instant::now();
    let mut chaos = Chaos::start(seed).await;
    chaos.create_jobs();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    for index in 0..faults {
        let fault = FAULTS[chaos.rng.random_range(0..FAULTS.len())];
        println!("chaos: fault {} of {faults}: {fault:?}", index + 1);
        chaos.inflict(fault).await;
        *counts.entry(fault).or_default() += 1;
        let settle = chaos.rng.random_range(1_000..3_000);
        tokio::time::sleep(Duration::from_millis(settle)).await;
    }
    let verdict = chaos.finish().await;
    let logs = chaos.logs();
    let dir = chaos.dir.clone();
    // Every process stops here; a clean run's logs and ledger go with them.
    drop(chaos);
    if verdict.violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Report {
        seed,
        faults: counts,
        verdict,
        took: started.elapsed(),
        logs,
    }
}

impl Chaos {
    async fn start(seed: u64) -> Chaos {
        let dir = tempfile::Builder::new()
            .prefix("cronfleet-chaos-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let postgres = PostgresServer::start().await.expect("PostgreSQL");
        let database = postgres.create_database().await.expect("a database");
        let mut etcd = EtcdCluster::start(3).await.expect("etcd");
        etcd.wait_healthy().await.expect("etcd healthy");
        let endpoints = etcd.endpoints().join(",");
        let mut chaos = Chaos {
            dir,
            postgres,
            etcd,
            coordinators: Vec::new(),
            workers: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        };
        let database_addr = SocketAddr::from(([127, 0, 0, 1], chaos.postgres.port()));
        for index in 1..=3 {
            let (grpc, http) = (free_addr(), free_addr());
            let to_workers = PartitionProxy::start(grpc);
            let to_database = PartitionProxy::start(database_addr);
            let url = database.replace(
                &format!("127.0.0.1:{}/", chaos.postgres.port()),
                &format!("127.0.0.1:{}/", to_database.addr().port()),
            );
            let node_id = format!("c{index}");
            let mut args: Vec<String> = [
                "coordinator",
                "--database-url",
                &url,
                "--etcd",
                &endpoints,
                "--grpc",
                &grpc.to_string(),
                "--http",
                &http.to_string(),
                "--advertise-url",
                &to_workers.url(),
                "--node-id",
                &node_id,
                // The whole history stays, for the checker.
                "--runs-per-job",
                "1000000",
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
            // Failure detection as in the other fault tests, and a 2 s election TTL.
            args.extend(
                FAST_FAILURE_DETECTION
                    .iter()
                    .chain(&["--election-ttl", "2s"])
                    .map(|flag| (*flag).to_owned()),
            );
            let process = Process::spawn(&node_id, &args, &chaos.dir);
            wait_until_ready(http);
            chaos.coordinators.push(CoordinatorProcess {
                node_id,
                args,
                process,
                grpc,
                http,
                to_workers,
                to_database,
            });
        }
        let coordinators: Vec<String> = chaos
            .coordinators
            .iter()
            .map(|c| c.to_workers.url())
            .collect();
        for index in 1..=3 {
            let node_id = format!("w{index}");
            let args: Vec<String> = [
                "worker",
                "--coordinator",
                &coordinators.join(","),
                "--handlers",
                "shell",
                "--capacity",
                "4",
                "--node-id",
                &node_id,
                "--http",
                &free_addr().to_string(),
                "--drain-timeout",
                "3s",
                "--kill-grace",
                "1s",
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
            let process = Process::spawn(&node_id, &args, &chaos.dir);
            chaos.workers.push(WorkerProcess {
                args,
                process,
                node_id,
            });
        }
        chaos
    }

    fn ledger(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// A client command against any coordinator that answers.
    fn cli(&self, args: &[&str]) -> Option<String> {
        self.coordinators.iter().find_map(|coordinator| {
            let output = cli_at(&format!("http://{}", coordinator.grpc), args);
            output.success.then_some(output.stdout)
        })
    }

    fn create_jobs(&self) {
        for job in JOBS {
            let script = script(&self.ledger(), job);
            let args = serde_json::json!({ "script": script }).to_string();
            let every = format!("{}s", job.every_seconds);
            let mut command = vec![
                "job",
                "create",
                job.name,
                "--handler",
                "shell",
                "--every",
                &every,
                "--args",
                &args,
            ];
            command.extend_from_slice(job.flags);
            assert!(
                self.cli(&command).is_some(),
                "cannot create job {}",
                job.name
            );
        }
    }

    /// The leader's index, as any coordinator's status says.
    fn leader(&self) -> Option<usize> {
        let status = self.cli(&["status", "-o", "json"])?;
        let status: Value = serde_json::from_str(&status).ok()?;
        let leader = status["leader"]["node_id"].as_str()?;
        self.coordinators.iter().position(|c| c.node_id == leader)
    }

    /// The leader, or any coordinator while none leads.
    fn target_coordinator(&mut self) -> usize {
        match self.leader() {
            Some(leader) => leader,
            None => self.rng.random_range(0..self.coordinators.len()),
        }
    }

    fn hold(&mut self, min_ms: u64, max_ms: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(min_ms..max_ms))
    }

    async fn inflict(&mut self, fault: Fault) {
        match fault {
            Fault::KillLeader | Fault::TerminateLeader => {
                let index = self.target_coordinator();
                let down = self.hold(500, 3_000);
                let coordinator = &mut self.coordinators[index];
                if fault == Fault::KillLeader {
                    coordinator.process.kill();
                } else {
                    coordinator.process.terminate();
                    coordinator.process.wait_exit(Duration::from_secs(20));
                }
                tokio::time::sleep(down).await;
                self.restart_coordinator(index);
            }
            Fault::FreezeLeader => {
                let index = self.target_coordinator();
                let frozen = self.hold(1_000, 5_000);
                self.coordinators[index].process.freeze();
                tokio::time::sleep(frozen).await;
                self.coordinators[index].process.thaw();
            }
            Fault::KillWorker | Fault::TerminateWorker | Fault::FreezeWorker => {
                let index = self.rng.random_range(0..self.workers.len());
                let hold = self.hold(1_000, 6_000);
                let worker = &mut self.workers[index];
                match fault {
                    Fault::KillWorker => worker.process.kill(),
                    Fault::TerminateWorker => {
                        worker.process.terminate();
                        worker.process.wait_exit(Duration::from_secs(20));
                    }
                    _ => worker.process.freeze(),
                }
                tokio::time::sleep(hold).await;
                if fault == Fault::FreezeWorker {
                    self.workers[index].process.thaw();
                } else {
                    self.restart_worker(index);
                }
            }
            Fault::PartitionLeaderFromWorkers
            | Fault::LeaderUnheardByWorkers
            | Fault::WorkersUnheardByLeader => {
                let index = self.target_coordinator();
                let hold = self.hold(1_000, 6_000);
                let proxy = &self.coordinators[index].to_workers;
                match fault {
                    Fault::PartitionLeaderFromWorkers => proxy.cut(),
                    Fault::LeaderUnheardByWorkers => proxy.cut_to_client(),
                    _ => proxy.cut_to_target(),
                }
                tokio::time::sleep(hold).await;
                self.coordinators[index].to_workers.heal();
            }
            Fault::PartitionLeaderFromDatabase => {
                let index = self.target_coordinator();
                let hold = self.hold(1_000, 5_000);
                self.coordinators[index].to_database.cut();
                tokio::time::sleep(hold).await;
                self.coordinators[index].to_database.heal();
            }
            Fault::RestartPostgres => {
                self.postgres.restart().await.expect("restart PostgreSQL");
            }
            Fault::SkewWorkerClock => {
                let index = self.rng.random_range(0..self.workers.len());
                let seconds = self.rng.random_range(5..60);
                let offset = if self.rng.random_bool(0.5) {
                    format!("+{seconds}s")
                } else {
                    format!("-{seconds}s")
                };
                let hold = self.hold(3_000, 8_000);
                self.stop_worker(index);
                let worker = &mut self.workers[index];
                worker.process = Process::spawn_with_env(
                    &worker.node_id,
                    &worker.args,
                    &self.dir,
                    &skewed_clock(&offset),
                );
                tokio::time::sleep(hold).await;
                self.stop_worker(index);
                self.restart_worker(index);
            }
            Fault::LoseEtcdMember => {
                let member = self.rng.random_range(0..self.etcd.size());
                let down = self.hold(1_000, 5_000);
                self.etcd.kill(member).await.expect("kill an etcd member");
                tokio::time::sleep(down).await;
                self.etcd
                    .start_again(member)
                    .await
                    .expect("start the etcd member again");
            }
        }
    }

    fn restart_coordinator(&mut self, index: usize) {
        let coordinator = &mut self.coordinators[index];
        coordinator.process.kill();
        coordinator.process = Process::spawn(&coordinator.node_id, &coordinator.args, &self.dir);
        wait_until_ready(coordinator.http);
    }

    /// SIGTERM, and waits for the worker to drain and exit.
    fn stop_worker(&mut self, index: usize) {
        let process = &mut self.workers[index].process;
        process.terminate();
        process.wait_exit(Duration::from_secs(20));
    }

    fn restart_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.process.kill();
        worker.process = Process::spawn(&worker.node_id, &worker.args, &self.dir);
    }

    /// Heals everything, lets the cluster run a while, pauses every job, waits for the
    /// runs in progress to end and checks the history.
    async fn finish(&mut self) -> Verdict {
        for coordinator in &self.coordinators {
            coordinator.to_workers.heal();
            coordinator.to_database.heal();
            coordinator.process.thaw();
        }
        for worker in &self.workers {
            worker.process.thaw();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.leader().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let settled_before = seconds_now();
        for job in JOBS {
            let paused = self.cli(&["job", "pause", job.name, "--note", "chaos run over"]);
            assert!(paused.is_some(), "cannot pause {}", job.name);
        }
        // Runs in progress end (or are resolved: lost, timed out) within the worker
        // timeout and the longest script.
        let deadline = Instant::now() + Duration::from_secs(60);
        let runs = loop {
            let runs = self.all_runs();
            let active = runs
                .values()
                .flatten()
                .filter(|run| {
                    matches!(
                        run["state"].as_str(),
                        Some("pending" | "dispatched" | "running")
                    )
                })
                .count();
            if active == 0 || Instant::now() >= deadline {
                break runs;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let jobs: Value =
            serde_json::from_str(&self.cli(&["job", "list", "-o", "json"]).expect("job list"))
                .expect("jobs as JSON");
        let jobs = jobs.as_array().cloned().unwrap_or_default();
        let every: BTreeMap<String, f64> = JOBS
            .iter()
            .map(|job| (job.name.to_owned(), f64::from(job.every_seconds)))
            .collect();
        let ledger = read_ledger(&self.ledger());
        checker::check(&Observed {
            jobs: &jobs,
            runs: &runs,
            every: &every,
            ledger: &ledger,
            // Each job's scripts hold its lock: a killed attempt still alive is caught by
            // the next one finding the lock held, not guessed from its last tick.
            alive_margin: None,
            settled_before,
        })
    }

    fn all_runs(&self) -> BTreeMap<String, Vec<Value>> {
        JOBS.iter()
            .map(|job| {
                let text = self
                    .cli(&["runs", "--job", job.name, "--limit", "10000", "-o", "json"])
                    .unwrap_or_else(|| "[]".to_owned());
                let mut runs: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
                runs.sort_by_key(|run| run["id"].as_i64());
                (job.name.to_owned(), runs)
            })
            .collect()
    }

    fn logs(&self) -> String {
        self.coordinators
            .iter()
            .map(|c| (&c.node_id, &c.process))
            .chain(self.workers.iter().map(|w| (&w.node_id, &w.process)))
            .map(|(name, process)| format!("--- {name} ({})", process.log.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn wait_until_ready(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(http, "/readyz").is_some_and(|(status, _)| status == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a coordinator did not become ready on {http}");
}

/// The job's script: takes the job's lock (`flock` on fd 9, which its processes inherit, so
/// the kernel releases it when the last of them dies) — writing `overlap` first if it is
/// still held —, marks its start, ticks every 0.1 s for `tenths` ticks, marks its end
/// (also on SIGTERM, unless it ignores it), and fails now and then if `flaky`. Times are the
/// boot clock's (`/proc/uptime`, 10 ms steps): a worker's skewed wall clock does not move it.
fn script(ledger: &Path, job: &JobMix) -> String {
    let mark = |kind: &str| {
        format!(
            "read -r up _ < /proc/uptime; echo \"{kind} $CRONFLEET_JOB $CRONFLEET_RUN_ID $up\" >> {}",
            ledger.display()
        )
    };
    let trap = if job.ignores_sigterm {
        "trap '' TERM".to_owned()
    } else {
        format!("trap '{}; exit 143' TERM", mark("end"))
    };
    let fail = if job.flaky {
        "; [ $(( $(date +%N) % 3 )) -ne 0 ] || exit 1"
    } else {
        ""
    };
    let lock = ledger.with_file_name(format!("{}.lock", job.name));
    format!(
        "{trap}; exec 9>>{}; flock -n 9 || {{ {}; flock 9; }}; {}; i=0; while [ $i -lt {} ]; do sleep {TICK}; {}; i=$((i+1)); done; {}{fail}",
        lock.display(),
        mark("overlap"),
        mark("start"),
        job.tenths,
        mark("tick"),
        mark("end")
    )
}
