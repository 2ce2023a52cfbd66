//! `lag`: 10,000 `noop` jobs due every second, all on the same slot, for 60 s (then the
//! same with 100 jobs, the unloaded path). Reports the
//! recurring throughput (runs recorded per second against a demand of 10,000/s), the slots
//! that were missed or skipped, and the schedule lag (run start − slot) two ways:
//!
//! - **worker side** (the targets): each worker's `cronfleet_worker_schedule_lag_seconds`
//!   histogram, observed when the worker starts the run; percentiles are interpolated in
//!   its buckets (1 ms wide up to 10 ms), the max is the highest non-empty bucket's bound;
//! - **store side**: `runs.started_at − slot`, where `started_at` is stamped by the
//!   coordinator when it processes the worker's `RunStarted` — later than the worker's start
//!   whenever the coordinator's report queue is behind; exact percentiles and max.

use std::time::Duration;

use chrono::{Timelike as _, Utc};
use serde_json::json;

use super::{Cluster, Context, seconds};
use crate::metrics::Histogram;
use crate::report::{Report, Target};
use crate::services::{after, every, spec};

const LAG_METRIC: &str = "cronfleet_worker_schedule_lag_seconds";

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    // The load of DESIGN §6, then a light one: the lag of the path itself, unloaded.
    let loads: Vec<u64> = context.settings.pick(vec![10_000, 100], vec![500]);
    let mut details = Vec::new();
    for jobs in loads {
        details.push(measure(context, report, jobs).await?);
    }
    report.detail("lag", json!(details));
    Ok(())
}

/// `jobs` jobs due every second on the same slots: one window's figures.
async fn measure(
    context: &Context<'_>,
    report: &mut Report,
    jobs: u64,
) -> anyhow::Result<serde_json::Value> {
    let settings = context.settings;
    let warmup = Duration::from_secs(settings.pick(5, 2));
    let window = Duration::from_secs(settings.pick(60, 5));
    let database = context.services.database().await?;
    // Every job's slots fall on the same whole seconds, starting once the processes run.
    let start = after(Duration::from_secs(4))
        .with_nanosecond(0)
        .unwrap_or_else(Utc::now);
    let tick = spec("noop", json!({}), every("1s", start)?);
    database.seed("tick", jobs, &tick, Utc::now()).await?;
    let cluster = Cluster::start(
        context,
        "lag",
        &database,
        1,
        settings.workers,
        "noop,sleep",
        settings.capacity,
    )
    .await?;
    let until_start = (start - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_start + warmup).await;

    let scrape = |cluster: &Cluster| -> anyhow::Result<Histogram> {
        let mut all = Vec::new();
        for worker in &cluster.workers {
            all.push(Histogram::parse(&worker.metrics()?, LAG_METRIC));
        }
        Ok(Histogram::sum(all))
    };
    let before = scrape(&cluster)?;
    let (missed_before, skipped_before) = missed_and_skipped(&database).await?;
    let from = Utc::now();
    tokio::time::sleep(window).await;
    let to = Utc::now();
    let lag = scrape(&cluster)?.since(&before);
    let (missed_after, skipped_after) = missed_and_skipped(&database).await?;
    cluster.stop().await;

    let succeeded = database.succeeded_between(from, to).await?;
    let window_s = seconds(to) - seconds(from);
    let rate = succeeded as f64 / window_s;
    // Store side: runs whose slot is in the window (the last second may still be running).
    let (store_p50, store_p99, store_max): (Option<f64>, Option<f64>, Option<f64>) =
        sqlx::query_as(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l) \
             FROM (SELECT extract(epoch FROM started_at - slot)::float8 AS l FROM runs \
                   WHERE slot >= $1 AND slot < $2 AND started_at IS NOT NULL) lags",
        )
        .bind(from)
        .bind(to - chrono::TimeDelta::seconds(1))
        .fetch_one(&database.pool)
        .await?;
    let ms = |seconds: Option<f64>| seconds.map(|s| s * 1000.0);
    let demand = jobs as f64;
    report.row(
        "lag",
        &format!("{jobs} jobs every 1s: recurring runs/s"),
        rate,
        "runs/s",
        Target::AtLeast(demand * 0.99),
    );
    report.row(
        "lag",
        &format!("{jobs} jobs: slots missed or skipped in the window"),
        (missed_after - missed_before + skipped_after - skipped_before) as f64,
        "slots",
        Target::AtMost(0.0),
    );
    let worker_p50 = ms(lag.quantile(0.5));
    let worker_p99 = ms(lag.quantile(0.99));
    let worker_max = ms(lag.max_bound());
    if let Some(p50) = worker_p50 {
        report.row(
            "lag",
            &format!("{jobs} jobs: worker-side lag p50"),
            p50,
            "ms",
            Target::AtMost(5.0),
        );
    }
    if let Some(p99) = worker_p99 {
        report.row(
            "lag",
            &format!("{jobs} jobs: worker-side lag p99"),
            p99,
            "ms",
            Target::AtMost(50.0),
        );
    }
    if let Some(max) = worker_max {
        report.row(
            "lag",
            &format!("{jobs} jobs: worker-side lag max (bucket bound)"),
            max,
            "ms",
            Target::None,
        );
    }
    for (name, value) in [
        ("store-side lag p50 (coordinator-stamped)", ms(store_p50)),
        ("store-side lag p99 (coordinator-stamped)", ms(store_p99)),
        ("store-side lag max (coordinator-stamped)", ms(store_max)),
    ] {
        if let Some(value) = value {
            report.row(
                "lag",
                &format!("{jobs} jobs: {name}"),
                value,
                "ms",
                Target::None,
            );
        }
    }
    let details = json!({
            "jobs": jobs,
            "window_s": window_s,
            "succeeded_in_window": succeeded,
            "runs_per_s": rate,
            "missed": missed_after - missed_before,
            "skipped": skipped_after - skipped_before,
            "worker_lag_ms": {"p50": worker_p50, "p99": worker_p99, "max_bound": worker_max, "count": lag.count()},
            "worker_lag_buckets": lag.buckets,
            "store_lag_ms": {"p50": ms(store_p50), "p99": ms(store_p99), "max": ms(store_max)},
    });
    database.close().await;
    Ok(details)
}

/// The jobs' counters of missed slots and of slots skipped because the job was busy.
async fn missed_and_skipped(database: &crate::services::Database) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(sum(missed_count), 0)::bigint, COALESCE(sum(overlap_skipped_count), 0)::bigint FROM jobs",
    )
    .fetch_one(&database.pool)
    .await?)
}
