//! The scenarios of issue 8, each on a fresh database with its own processes:
//!
//! - `throughput` (with `memory`): 100,000 one-off `noop` jobs all due now;
//! - `limit`: the same lease + complete work as a tight SQL loop, the raw PostgreSQL rate;
//! - `lag`: 10,000 jobs due every second for 60 s — throughput and schedule lag;
//! - `failover`: leader `kill -9` and SIGTERM under load, a lost worker;
//! - `scale`: wake-up cost and lease latency with 1,000 / 100,000 / 1,000,000 jobs;
//! - `workers`: `sleep` jobs on 1, 2 and 4 worker processes;
//! - `console`: the web console's Jobs page with 100,000 jobs.

mod console;
mod failover;
mod lag;
mod limit;
mod scale;
mod throughput;
mod workers;

use std::time::Duration;

use crate::nodes::{Launcher, Node, wait_for_leader};
use crate::report::Report;
use crate::services::{Database, Services};

/// A scenario of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 100,000 one-off jobs due now; also the processes' memory.
    Throughput,
    /// The raw PostgreSQL rate of the same work, and cronfleet's share of it.
    Limit,
    /// 10,000 jobs every second: throughput and schedule lag.
    Lag,
    /// Leader kill -9 and SIGTERM, lost-worker re-dispatch.
    Failover,
    /// Wake-up cost and lease latency against the number of jobs.
    Scale,
    /// Horizontal scaling on capacity-bound `sleep` jobs.
    Workers,
    /// The web console's Jobs page with 100,000 jobs.
    Console,
}

impl Scenario {
    /// In the order they run: `limit` after `throughput`, to compare them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Throughput,
        Scenario::Limit,
        Scenario::Lag,
        Scenario::Failover,
        Scenario::Scale,
        Scenario::Workers,
        Scenario::Console,
    ];
}

/// What the command line chose for every scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    pub smoke: bool,
    /// Worker processes of `throughput` and `lag`.
    pub workers: u32,
    /// Their capacity.
    pub capacity: u32,
}

impl Settings {
    /// `full` normally, `smoke` in a smoke run.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }
}

/// Everything a scenario needs.
#[derive(Debug)]
pub struct Context<'a> {
    pub services: &'a Services,
    pub launcher: &'a Launcher,
    pub settings: &'a Settings,
}

pub async fn run(
    scenario: Scenario,
    services: &Services,
    launcher: &Launcher,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let context = Context {
        services,
        launcher,
        settings,
    };
    match scenario {
        Scenario::Throughput => throughput::run(&context, report).await,
        Scenario::Limit => limit::run(&context, report).await,
        Scenario::Lag => lag::run(&context, report).await,
        Scenario::Failover => failover::run(&context, report).await,
        Scenario::Scale => scale::run(&context, report).await,
        Scenario::Workers => workers::run(&context, report).await,
        Scenario::Console => console::run(&context, report).await,
    }
}

/// Coordinators and workers on one scenario's database.
#[derive(Debug)]
pub struct Cluster {
    pub coordinators: Vec<Node>,
    pub workers: Vec<Node>,
}

impl Cluster {
    /// Starts `coordinators` elected coordinators, waits for a leader, then `workers`
    /// workers with `handlers` and `capacity`, registered.
    pub async fn start(
        context: &Context<'_>,
        name: &str,
        database: &Database,
        coordinators: usize,
        workers: u32,
        handlers: &str,
        capacity: u32,
    ) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            coordinators: Vec::new(),
            workers: Vec::new(),
        };
        for index in 1..=coordinators {
            let node = context
                .launcher
                .coordinator(
                    &format!("{name}-c{index}"),
                    &database.url,
                    &context.services.etcd_url,
                )
                .await?;
            cluster.coordinators.push(node);
        }
        wait_for_leader(&cluster.coordinator_refs(), Duration::from_secs(30)).await?;
        for index in 1..=workers {
            let node = context
                .launcher
                .worker(
                    &format!("{name}-w{index}"),
                    &cluster.coordinator_refs(),
                    handlers,
                    capacity,
                )
                .await?;
            cluster.workers.push(node);
        }
        Ok(cluster)
    }

    pub fn coordinator_refs(&self) -> Vec<&Node> {
        self.coordinators.iter().collect()
    }

    /// Stops the workers, then the coordinators (SIGTERM: a leader resigns, so the next
    /// scenario's coordinator is elected at once).
    pub async fn stop(self) {
        for worker in self.workers {
            worker.stop(Duration::from_secs(5)).await;
        }
        for coordinator in self.coordinators {
            coordinator.stop(Duration::from_secs(10)).await;
        }
    }
}

/// Median of `values` (sorted in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// Seconds since the epoch of a time, for arithmetic.
pub fn seconds(time: chrono::DateTime<chrono::Utc>) -> f64 {
    time.timestamp_micros() as f64 / 1e6
}
