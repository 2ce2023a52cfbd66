//! `failover`: two coordinators elected through etcd (2 s TTL), two workers, and a load
//! of 1,000 `noop` jobs every second. The leader is killed (`kill -9`) five times and
//! stopped (SIGTERM, it resigns) three times. The load's slots are spread 10 ms apart over
//! each second, so work is always due within 10 ms; each time the measure is from the signal to
//! the first dispatch recorded under a newer epoch (`runs.dispatched_at`, stamped by the
//! new leader). The stopped coordinator is started again before the next round. Then a
//! worker holding long `sleep` runs is killed: the time until its runs are declared lost,
//! and until their next attempts are dispatched to the other worker.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use cronfleet_core::schedule::Schedule;
use serde_json::json;

use super::{Cluster, Context, median, seconds};
use crate::nodes::wait_for_leader;
use crate::report::{Report, Target};
use crate::services::{Database, after, every, spec};

/// etcd's lease (the coordinators' `--election-ttl`), the floor of a kill -9 failover.
const ELECTION_TTL_S: f64 = 2.0;
/// Groups of load jobs with slots at different offsets within the second.
const LOAD_PHASES: u32 = 100;

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let jobs: u64 = settings.pick(1_000, 100);
    let kills = settings.pick(5, 1);
    let resigns = settings.pick(3, 1);
    let database = context.services.database().await?;
    // Slots spread over each second (10 ms apart), so a new leader always finds work due
    // at once: the measure is the hand-over, not the wait for the next slot.
    let first_slot = after(Duration::from_secs(2));
    for phase in 0..LOAD_PHASES {
        let start =
            first_slot + TimeDelta::milliseconds(i64::from(phase) * 1000 / i64::from(LOAD_PHASES));
        let load = spec("noop", json!({}), every("1s", start)?);
        let group = jobs / u64::from(LOAD_PHASES);
        database
            .seed(&format!("load{phase}"), group, &load, Utc::now())
            .await?;
    }
    let mut cluster =
        Cluster::start(context, "failover", &database, 2, 2, "noop,sleep", 64).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut killed = Vec::new();
    for round in 0..kills {
        let seconds = take_over(context, &mut cluster, &database, Stop::Kill).await?;
        eprintln!("failover: kill -9 round {}: {seconds:.3} s", round + 1);
        killed.push(seconds);
    }
    let mut resigned = Vec::new();
    for round in 0..resigns {
        let seconds = take_over(context, &mut cluster, &database, Stop::Terminate).await?;
        eprintln!("failover: SIGTERM round {}: {seconds:.3} s", round + 1);
        resigned.push(seconds);
    }
    let lost = lose_a_worker(&cluster, &database).await?;
    cluster.stop().await;

    let killed_median = median(&mut killed.clone());
    let resigned_median = median(&mut resigned.clone());
    if let Some(value) = killed_median {
        report.row(
            "failover",
            &format!("leader kill -9 -> new leader dispatches (median of {kills})"),
            value,
            "s",
            Target::AtMost(ELECTION_TTL_S + 0.3),
        );
    }
    if let Some(value) = resigned_median {
        report.row(
            "failover",
            &format!("leader SIGTERM -> new leader dispatches (median of {resigns})"),
            value * 1000.0,
            "ms",
            Target::AtMost(50.0),
        );
    }
    report.row(
        "failover",
        "worker kill -9 -> its runs declared lost",
        lost.detected,
        "s",
        Target::AtMost(6.0),
    );
    report.row(
        "failover",
        "worker kill -9 -> its runs re-dispatched",
        lost.redispatched,
        "s",
        Target::AtMost(6.0),
    );
    report.detail(
        "failover",
        json!({
            "load_jobs_every_second": jobs,
            "kill9_s": killed,
            "sigterm_s": resigned,
            "lost_runs": lost.runs,
            "lost_detected_s": lost.detected,
            "lost_redispatched_s": lost.redispatched,
        }),
    );
    database.close().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Kill,
    Terminate,
}

/// Stops the leader and measures the time until a run is dispatched under a newer epoch;
/// then starts the stopped coordinator again and lets the cluster settle.
async fn take_over(
    context: &Context<'_>,
    cluster: &mut Cluster,
    database: &Database,
    stop: Stop,
) -> anyhow::Result<f64> {
    let leader = wait_for_leader(&cluster.coordinator_refs(), Duration::from_secs(30)).await?;
    let epoch = database.epoch().await?;
    let stopped_at = Utc::now();
    match stop {
        Stop::Kill => cluster.coordinators[leader].kill(),
        Stop::Terminate => cluster.coordinators[leader].terminate(),
    }
    let polling = Instant::now();
    let first_dispatch = loop {
        let first: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM min(dispatched_at))::float8 FROM runs \
             WHERE epoch > $1 AND dispatched_at IS NOT NULL",
        )
        .bind(epoch)
        .fetch_one(&database.pool)
        .await?;
        if let Some(first) = first {
            break first;
        }
        if polling.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("no run dispatched by a new leader 30 s after stopping the old one");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    context
        .launcher
        .restart(&mut cluster.coordinators[leader])
        .await?;
    // The workers follow the new leader and the restarted node settles as a follower.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(first_dispatch - seconds(stopped_at))
}

#[derive(Debug)]
struct LostWorker {
    runs: usize,
    detected: f64,
    redispatched: f64,
}

/// Starts long `sleep` runs, kills the worker holding most of them, and measures when its
/// runs are declared lost and when their next attempts are dispatched.
async fn lose_a_worker(cluster: &Cluster, database: &Database) -> anyhow::Result<LostWorker> {
    let now = Utc::now();
    let sleeper = spec(
        "sleep",
        json!({"ms": 120_000}),
        Schedule::at(now, chrono_tz::UTC),
    );
    database
        .seed("sleeper", 8, &sleeper, now - TimeDelta::seconds(1))
        .await?;
    let started = Instant::now();
    let (worker, runs) = loop {
        let running: Vec<(String, i64)> = sqlx::query_as(
            "SELECT runs.worker, runs.id FROM runs JOIN jobs ON jobs.id = runs.job_id \
             WHERE jobs.handler = 'sleep' AND runs.state = 'running'",
        )
        .fetch_all(&database.pool)
        .await?;
        if running.len() == 8 {
            let mut by_worker: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for (worker, id) in running {
                by_worker.entry(worker).or_default().push(id);
            }
            let busiest = by_worker
                .into_iter()
                .max_by_key(|(_, ids)| ids.len())
                .expect("8 running runs have a worker");
            break busiest;
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("the sleep runs did not all start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = cluster
        .workers
        .iter()
        .find(|node| node.name == worker)
        .ok_or_else(|| anyhow::anyhow!("worker {worker} is not one of ours"))?;
    let killed_at = Utc::now();
    // The Node stays owned by the cluster; the signal is enough.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &victim.pid().to_string()])
        .status();
    let polling = Instant::now();
    loop {
        let (lost, lost_at, redispatched, redispatched_at): (i64, Option<f64>, i64, Option<f64>) =
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE old.state = 'lost'), \
                 extract(epoch FROM max(old.finished_at))::float8, \
                 count(next.id) FILTER (WHERE next.dispatched_at IS NOT NULL), \
                 extract(epoch FROM max(next.dispatched_at))::float8 \
                 FROM runs old LEFT JOIN runs next ON next.job_id = old.job_id \
                 AND next.slot = old.slot AND next.attempt = old.attempt + 1 \
                 WHERE old.id = ANY($1)",
            )
            .bind(&runs)
            .fetch_one(&database.pool)
            .await?;
        let all = i64::try_from(runs.len())?;
        if lost == all && redispatched == all {
            let since = |at: Option<f64>| at.map_or(f64::NAN, |at| at - seconds(killed_at));
            return Ok(LostWorker {
                runs: runs.len(),
                detected: since(lost_at),
                redispatched: since(redispatched_at),
            });
        }
        if polling.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the lost worker's runs were not re-dispatched within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
