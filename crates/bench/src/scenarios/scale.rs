//! `scale`: 1,000 / 100,000 / 1,000,000 jobs defined, of which only 10 are due (every
//! second); the rest every hour, not due during the run. The scheduler's cost per wake-up
//! must not grow with the total: measured as the coordinator's lease transaction latency
//! (`cronfleet_lease_duration_seconds`, mean over the window) and its CPU time per lease
//! transaction, plus its resident memory with that many jobs defined.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::{Cluster, Context};
use crate::metrics::value;
use crate::report::{Report, Target};
use crate::services::{after, every, spec};

const DUE_JOBS: u64 = 10;

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let totals: Vec<u64> = settings.pick(vec![1_000, 100_000, 1_000_000], vec![1_000, 20_000]);
    let warmup = Duration::from_secs(settings.pick(5, 2));
    let window = Duration::from_secs(settings.pick(20, 4));
    let mut results = Vec::new();
    for total in totals {
        let database = context.services.database().await?;
        let now = Utc::now();
        let idle = spec(
            "noop",
            json!({}),
            every("1h", after(Duration::from_secs(1800)))?,
        );
        database.seed("idle", total - DUE_JOBS, &idle, now).await?;
        let due = spec(
            "noop",
            json!({}),
            every("1s", after(Duration::from_secs(1)))?,
        );
        database.seed("due", DUE_JOBS, &due, now).await?;
        eprintln!("scale: seeded {total} jobs");
        let cluster = Cluster::start(context, "scale", &database, 1, 1, "noop", 16).await?;
        tokio::time::sleep(warmup).await;
        let coordinator = &cluster.coordinators[0];
        let sample = || -> anyhow::Result<(f64, f64, f64)> {
            let text = coordinator.metrics()?;
            Ok((
                value(&text, "cronfleet_lease_duration_seconds_sum").unwrap_or(0.0),
                value(&text, "cronfleet_lease_duration_seconds_count").unwrap_or(0.0),
                coordinator.cpu_seconds().unwrap_or(0.0),
            ))
        };
        let (sum0, count0, cpu0) = sample()?;
        tokio::time::sleep(window).await;
        let (sum1, count1, cpu1) = sample()?;
        let rss = coordinator.memory_mib().map_or(0.0, |(rss, _)| rss);
        cluster.stop().await;
        let leases = count1 - count0;
        let lease_ms = if leases > 0.0 {
            (sum1 - sum0) / leases * 1000.0
        } else {
            f64::NAN
        };
        let cpu_ms = if leases > 0.0 {
            (cpu1 - cpu0) / leases * 1000.0
        } else {
            f64::NAN
        };
        let label = human(total);
        report.row(
            "scale",
            &format!("{label} jobs: lease transaction, mean"),
            lease_ms,
            "ms",
            Target::None,
        );
        report.row(
            "scale",
            &format!("{label} jobs: coordinator CPU per lease"),
            cpu_ms,
            "ms",
            Target::None,
        );
        report.row(
            "scale",
            &format!("{label} jobs: coordinator RSS"),
            rss,
            "MiB",
            Target::None,
        );
        results.push(json!({
            "jobs": total,
            "due_every_second": DUE_JOBS,
            "leases": leases,
            "lease_mean_ms": lease_ms,
            "coordinator_cpu_ms_per_lease": cpu_ms,
            "coordinator_rss_mib": rss,
        }));
        database.close().await;
    }
    let first = results.first().and_then(|r| r["lease_mean_ms"].as_f64());
    let last = results.last().and_then(|r| r["lease_mean_ms"].as_f64());
    if let (Some(first), Some(last)) = (first, last)
        && results.len() > 1
    {
        report.row(
            "scale",
            "lease latency, most jobs / fewest jobs",
            last / first,
            "ratio",
            Target::AtMost(2.0),
        );
    }
    report.detail("scale", json!(results));
    Ok(())
}

/// 1000 → `1k`, 1000000 → `1M`.
fn human(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}
