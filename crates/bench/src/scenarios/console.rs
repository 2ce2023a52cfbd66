//! `console`: the web console's Jobs page with 100,000 jobs defined (90,000 active,
//! 9,000 paused, 1,000 failing): the time from request to the whole HTML page, on
//! loopback, for the first page and for the views that make the database work hardest
//! (a search, a filter, a sort on another column, a deep page). Each page includes the
//! attention banner's counts, as a user gets it.

use std::time::{Duration, Instant};

use chrono::Utc;
use cronfleet_testkit::http_get;
use serde_json::json;

use super::{Cluster, Context};
use crate::report::{Report, Target};
use crate::services::{after, every, spec};

/// The Jobs page's target for its first page (issue 18).
const FIRST_PAGE_TARGET_MS: f64 = 100.0;

pub async fn run(context: &Context<'_>, report: &mut Report) -> anyhow::Result<()> {
    let settings = context.settings;
    let total: u64 = settings.pick(100_000, 5_000);
    let requests = settings.pick(30, 5);
    let database = context.services.database().await?;
    let now = Utc::now();
    let schedule = every("1h", after(Duration::from_secs(1800)))?;
    let active = spec("shell", json!({"script": "echo report"}), schedule.clone());
    database
        .seed("report", total * 9 / 10, &active, now)
        .await?;
    let mut paused = spec(
        "http",
        json!({"url": "http://example.invalid/"}),
        schedule.clone(),
    );
    paused.paused = true;
    paused.pause_note = Some("maintenance".to_owned());
    database.seed("sync", total * 9 / 100, &paused, now).await?;
    let failing = spec("shell", json!({"script": "exit 1"}), schedule);
    database.seed("broken", total / 100, &failing, now).await?;
    database
        .execute("UPDATE jobs SET failure_count = 3, first_failure_at = now() WHERE name LIKE 'broken-%'")
        .await?;
    eprintln!("console: seeded {total} jobs");
    let cluster = Cluster::start(context, "console", &database, 1, 0, "noop", 1).await?;
    let http = cluster.coordinators[0].http;
    let deep_page = (total * 9 / 10) / 50 / 2;
    let views: Vec<(String, String, Target)> = vec![
        (
            "first page, by name".into(),
            "/jobs".into(),
            Target::AtMost(FIRST_PAGE_TARGET_MS),
        ),
        (
            "search by name".into(),
            "/jobs?q=sync-4242".into(),
            Target::None,
        ),
        (
            "paused only".into(),
            "/jobs?status=paused".into(),
            Target::None,
        ),
        (
            "failing, by failures".into(),
            "/jobs?failing=on&sort=failures&order=desc".into(),
            Target::None,
        ),
        (
            "sorted by next run, descending".into(),
            "/jobs?sort=next_run&order=desc".into(),
            Target::None,
        ),
        (
            format!("page {deep_page}"),
            format!("/jobs?page={deep_page}"),
            Target::None,
        ),
    ];
    let label = if total >= 1_000 {
        format!("{}k", total / 1_000)
    } else {
        total.to_string()
    };
    let mut details = Vec::new();
    for (name, path, target) in views {
        let timed_path = path.clone();
        let times = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
            // Warm-up: the first requests fill PostgreSQL's and the OS's caches.
            for _ in 0..3 {
                http_get(http, &timed_path);
            }
            let mut times = Vec::new();
            for _ in 0..requests {
                let started = Instant::now();
                match http_get(http, &timed_path) {
                    Some((200, body)) if body.contains("</html>") => {}
                    other => anyhow::bail!("{timed_path} answered {:?}", other.map(|o| o.0)),
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            Ok(times)
        })
        .await??;
        let p50 = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        report.row(
            "console",
            &format!("{label} jobs, {name}: p50"),
            p50,
            "ms",
            target,
        );
        report.row(
            "console",
            &format!("{label} jobs, {name}: p95"),
            p95,
            "ms",
            Target::None,
        );
        details.push(
            json!({"view": name, "path": path, "p50_ms": p50, "p95_ms": p95, "requests": requests}),
        );
    }
    cluster.stop().await;
    database.close().await;
    report.detail("console", json!({"jobs": total, "views": details}));
    Ok(())
}
