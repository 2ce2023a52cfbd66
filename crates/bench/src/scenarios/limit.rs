//! `limit`: the raw PostgreSQL cost of cronfleet's work, done by a tight SQL loop on one
//! connection over the same schema: lease up to N due jobs (`FOR UPDATE SKIP LOCKED`),
//! insert their runs, mark them done, advance the jobs — one transaction per batch. The
//! batch size with the best short probe is then run for a sustained period; cronfleet's
//! throughput is reported as a share of it (DESIGN §6: within 2×).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::Context;
use crate::report::{Report, Target};
use crate::services::{every, spec};

const BATCHES: [i64; 4] = [100, 500, 1000, 2000];

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let jobs: u64 = settings.pick(100_000, 5_000);
    let probe = Duration::from_secs(settings.pick(4, 1));
    let sustained = Duration::from_secs(settings.pick(20, 2));
    let database = context.services.database().await?;
    // Slots from an hour ago: every job is due 3,600 times over, so the loop never runs
    // out of due work (it would then measure the clock, not PostgreSQL).
    let start = Utc::now() - TimeDelta::hours(1);
    let recurring = spec("noop", json!({}), every("1s", start)?);
    database.seed("raw", jobs, &recurring, start).await?;

    let mut probes = Vec::new();
    for batch in BATCHES {
        let rate = lease_and_complete(&database.pool, batch, probe).await?;
        eprintln!("limit: batch {batch}: {rate:.0} runs/s");
        probes.push((batch, rate));
    }
    let (best, _) = probes
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((500, 0.0));
    let limit = lease_and_complete(&database.pool, best, sustained).await?;
    report.row(
        "limit",
        &format!("raw SQL lease+complete, batch {best}, sustained"),
        limit,
        "runs/s",
        Target::None,
    );
    let cronfleet = report
        .details
        .get("throughput")
        .and_then(|details| details["runs_per_s"].as_f64());
    if let Some(cronfleet) = cronfleet {
        report.row(
            "limit",
            "cronfleet throughput / raw limit",
            cronfleet / limit,
            "ratio",
            Target::AtLeast(0.5),
        );
    }
    report.detail(
        "limit",
        json!({
            "jobs": jobs,
            "probes": probes.iter().map(|(batch, rate)| json!({"batch": batch, "runs_per_s": rate})).collect::<Vec<_>>(),
            "best_batch": best,
            "sustained_s": sustained.as_secs(),
            "runs_per_s": limit,
            "cronfleet_share": cronfleet.map(|c| c / limit),
        }),
    );
    database.close().await;
    Ok(())
}

/// Leases, runs and completes batches of `batch` due jobs for `period`; runs per second.
/// The statements are planned afresh each time: a plan cached while `runs` was empty (a
/// sequential scan) made the run update take 500 ms once the table had 100,000 rows.
async fn lease_and_complete(pool: &PgPool, batch: i64, period: Duration) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < period {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let due: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, next_run_at FROM jobs WHERE active AND NOT paused AND next_run_at <= now() \
             ORDER BY priority, next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .persistent(false)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            tx.commit().await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let (ids, slots): (Vec<i64>, Vec<DateTime<Utc>>) = due.into_iter().unzip();
        let runs: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO runs (job_id, slot, attempt, trigger, state, epoch, created_at) \
             SELECT u.job_id, u.slot, 1, 'schedule', 'pending', 1, now() \
             FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(job_id, slot) RETURNING id",
        )
        .persistent(false)
        .bind(&ids)
        .bind(&slots)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE runs SET state = 'succeeded', worker = 'raw', dispatched_at = now(), \
             started_at = now(), finished_at = now() WHERE id = ANY($1)",
        )
        .persistent(false)
        .bind(&runs)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET next_run_at = next_run_at + interval '1 second', last_run_at = now() \
             WHERE id = ANY($1)",
        )
        .persistent(false)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += runs.len();
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}
