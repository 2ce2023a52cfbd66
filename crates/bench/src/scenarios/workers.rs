//! `workers`: horizontal scaling on capacity-bound work. One-off `sleep` jobs of 200 ms,
//! more than the workers can take, on 1, 2 and 4 worker processes of capacity 16: each
//! worker can finish at most 16 / 0.2 s = 80 runs/s, so the ideal is 80 × W. Measured as
//! runs recorded as succeeded per second over a window after a warm-up.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use cronfleet_core::schedule::Schedule;
use serde_json::json;

use super::{Cluster, Context, seconds};
use crate::report::{Report, Target};
use crate::services::spec;

const SLEEP_MS: u64 = 200;
const CAPACITY: u32 = 16;

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let counts: Vec<u32> = settings.pick(vec![1, 2, 4], vec![1, 2]);
    let warmup = Duration::from_secs(settings.pick(3, 2));
    let window = Duration::from_secs(settings.pick(10, 3));
    let mut results = Vec::new();
    for workers in counts {
        let ideal = f64::from(workers * CAPACITY) * 1000.0 / SLEEP_MS as f64;
        // Enough for the warm-up, the window and a margin at the ideal rate.
        let jobs = (ideal * (warmup + window).as_secs_f64() * 1.5) as u64 + 100;
        let database = context.services.database().await?;
        let now = Utc::now();
        let sleeper = spec(
            "sleep",
            json!({"ms": SLEEP_MS}),
            Schedule::at(now, chrono_tz::UTC),
        );
        database
            .seed("sleeper", jobs, &sleeper, now - TimeDelta::seconds(1))
            .await?;
        let cluster =
            Cluster::start(context, "workers", &database, 1, workers, "sleep", CAPACITY).await?;
        tokio::time::sleep(warmup).await;
        let from = Utc::now();
        tokio::time::sleep(window).await;
        let to = Utc::now();
        cluster.stop().await;
        let rate =
            database.succeeded_between(from, to).await? as f64 / (seconds(to) - seconds(from));
        report.row(
            "workers",
            &format!(
                "{workers} worker(s) x {CAPACITY}, sleep {SLEEP_MS}ms: runs/s (ideal {ideal:.0})"
            ),
            rate,
            "runs/s",
            Target::None,
        );
        results.push(json!({"workers": workers, "capacity": CAPACITY, "sleep_ms": SLEEP_MS, "runs_per_s": rate, "ideal_runs_per_s": ideal}));
        database.close().await;
    }
    let rate = |i: usize| results.get(i).and_then(|r| r["runs_per_s"].as_f64());
    if let (Some(one), Some(most)) = (rate(0), rate(results.len().saturating_sub(1)))
        && results.len() > 1
    {
        let workers = results
            .last()
            .and_then(|r| r["workers"].as_f64())
            .unwrap_or(1.0);
        report.row(
            "workers",
            &format!("scaling {workers:.0} workers / 1 worker"),
            most / one,
            "x",
            Target::None,
        );
    }
    report.detail("workers", json!(results));
    Ok(())
}
