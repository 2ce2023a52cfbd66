//! `throughput` and `memory`: 100,000 one-off `noop` jobs all due now, run by W workers of
//! capacity C. The rate is runs recorded as succeeded per second, from the first run's
//! creation (lease) to the last one's recorded end; the sustained rate leaves out the
//! ramp-up and the tail (10 % → 90 % of the runs). Meanwhile the coordinator's and workers'
//! resident memory and CPU time are sampled.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use cronfleet_core::schedule::Schedule;
use serde_json::json;

use super::{Cluster, Context};
use crate::nodes::machine_cpu_ticks;
use crate::report::{Report, Target};
use crate::services::spec;

/// DESIGN §6.
pub const TARGET_RUNS_PER_SECOND: f64 = 10_000.0;
const COORDINATOR_MEMORY_MIB: f64 = 100.0;
const WORKER_MEMORY_MIB: f64 = 30.0;

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let jobs: u64 = settings.pick(100_000, 2_000);
    let database = context.services.database().await?;
    let now = Utc::now();
    let oneoff = spec("noop", json!({}), Schedule::at(now, chrono_tz::UTC));
    database
        .seed("oneoff", jobs, &oneoff, now - TimeDelta::seconds(1))
        .await?;
    eprintln!("seeded {jobs} one-off jobs");

    let profiled = database.reset_statement_profile().await;
    let started = Instant::now();
    let cluster = Cluster::start(
        context,
        "throughput",
        &database,
        1,
        settings.workers,
        "noop,sleep",
        settings.capacity,
    )
    .await?;
    let machine_before = machine_cpu_ticks();
    let cpu_before: Vec<Option<f64>> = cluster
        .coordinators
        .iter()
        .chain(&cluster.workers)
        .map(|node| node.cpu_seconds())
        .collect();
    let mut samples: Vec<(f64, i64)> = Vec::new();
    let (mut coordinator_peak, mut worker_peak) = (0.0f64, 0.0f64);
    let mut last_progress = Instant::now();
    let mut last_ended = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ended = database.ended_runs().await?;
        samples.push((started.elapsed().as_secs_f64(), ended));
        for node in &cluster.coordinators {
            if let Some((_, peak)) = node.memory_mib() {
                coordinator_peak = coordinator_peak.max(peak);
            }
        }
        for node in &cluster.workers {
            if let Some((_, peak)) = node.memory_mib() {
                worker_peak = worker_peak.max(peak);
            }
        }
        if ended > last_ended {
            last_ended = ended;
            last_progress = Instant::now();
        }
        if ended >= i64::try_from(jobs)? {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(30)
            || started.elapsed() > Duration::from_secs(900)
        {
            eprintln!("throughput: stopped waiting at {ended} of {jobs} runs");
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = cluster
        .coordinators
        .iter()
        .chain(&cluster.workers)
        .zip(&cpu_before)
        .map(|(node, before)| match (node.cpu_seconds(), before) {
            (Some(after), Some(before)) => after - before,
            _ => 0.0,
        })
        .collect();
    let machine_busy = match (machine_before, machine_cpu_ticks()) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            (busy1 - busy0) / (total1 - total0)
        }
        _ => 0.0,
    };
    let coordinator_cpu = cpu.first().copied().unwrap_or(0.0);
    let worker_cpu: f64 = cpu.iter().skip(1).sum();
    cluster.stop().await;

    let (count, first_created, last_finished): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM min(created_at))::float8, \
         extract(epoch FROM max(finished_at))::float8 FROM runs WHERE state = 'succeeded'",
    )
    .fetch_one(&database.pool)
    .await?;
    let span = match (first_created, last_finished) {
        (Some(first), Some(last)) if last > first => last - first,
        _ => f64::NAN,
    };
    let rate = count as f64 / span;
    let statements = if profiled {
        database.statement_profile(12).await?
    } else {
        json!(null)
    };
    if let Some(top) = statements.as_array() {
        eprintln!("throughput: database time by statement (pg_stat_statements):");
        for statement in top.iter().take(8) {
            eprintln!(
                "  {:>9.0} ms {:>8} calls {:>9} rows  {}",
                statement["total_ms"].as_f64().unwrap_or(0.0),
                statement["calls"],
                statement["rows"],
                statement["query"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(110)
                    .collect::<String>()
            );
        }
    }
    let sustained = sustained_rate(&samples, jobs as f64);
    // The machine's busy share is of all cores; the processes' CPU is in cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    report.row(
        "throughput",
        &format!(
            "{} one-off jobs: runs/s, lease to recorded result",
            thousands(jobs)
        ),
        rate,
        "runs/s",
        Target::AtLeast(TARGET_RUNS_PER_SECOND),
    );
    if let Some(sustained) = sustained {
        report.row(
            "throughput",
            "runs/s sustained (10% to 90% of the runs)",
            sustained,
            "runs/s",
            Target::AtLeast(TARGET_RUNS_PER_SECOND),
        );
    }
    report.row(
        "throughput",
        "seconds from first lease to last result",
        span,
        "s",
        Target::None,
    );
    report.row(
        "throughput",
        "coordinator CPU (cores busy)",
        coordinator_cpu / wall,
        "cores",
        Target::None,
    );
    report.row(
        "throughput",
        "PostgreSQL + rest of machine CPU (cores busy)",
        (machine_busy * cores - (coordinator_cpu + worker_cpu) / wall).max(0.0),
        "cores",
        Target::None,
    );
    report.row(
        "memory",
        &format!("coordinator peak RSS, {} jobs", thousands(jobs)),
        coordinator_peak,
        "MiB",
        Target::AtMost(COORDINATOR_MEMORY_MIB),
    );
    report.row(
        "memory",
        "worker peak RSS (largest worker)",
        worker_peak,
        "MiB",
        Target::AtMost(WORKER_MEMORY_MIB),
    );
    report.detail(
        "throughput",
        json!({
            "jobs": jobs,
            "succeeded": count,
            "workers": settings.workers,
            "capacity": settings.capacity,
            "runs_per_s": rate,
            "sustained_runs_per_s": sustained,
            "span_s": span,
            "wall_s": wall,
            "coordinator_cpu_s": coordinator_cpu,
            "workers_cpu_s": worker_cpu,
            "machine_busy_share": machine_busy,
            "coordinator_peak_rss_mib": coordinator_peak,
            "worker_peak_rss_mib": worker_peak,
            "ended_runs_over_time": samples,
            "database_time_by_statement": statements,
        }),
    );
    database.close().await;
    Ok(())
}

/// Runs per second between the samples where 10 % and 90 % of `total` had ended.
fn sustained_rate(samples: &[(f64, i64)], total: f64) -> Option<f64> {
    let from = samples.iter().find(|(_, n)| *n as f64 >= 0.1 * total)?;
    let to = samples.iter().find(|(_, n)| *n as f64 >= 0.9 * total)?;
    (to.0 > from.0).then(|| (to.1 - from.1) as f64 / (to.0 - from.0))
}

/// 100000 → `100k`.
fn thousands(n: u64) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}
