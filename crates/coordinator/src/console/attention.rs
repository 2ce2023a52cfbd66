//! The attention banner on every page: what an operator should look at now — failing
//! jobs, jobs paused by the failure-streak rule, runs past their deadline or waiting long
//! for a worker, and handlers with waiting runs that no live worker offers.
//!
//! Each check is a count by the store (partial indexes on failing and paused jobs; the
//! open runs only) plus the leader's worker list: no job or run is read, whatever their
//! number.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use cronfleet_proto::v1 as pb;
use cronfleet_store::{JobQuery, JobStatus};

use crate::admin::AdminServices;

/// A pending run older than this, with nothing it waits for, is stuck.
const WAITING_TOO_LONG: TimeDelta = TimeDelta::seconds(60);

/// One line of the banner, linking to the list that shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub text: String,
    pub href: String,
}

impl Item {
    fn new(text: String, href: &str) -> Item {
        Item {
            text,
            href: href.to_owned(),
        }
    }
}

fn plural(count: u64, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

/// The line for `count` things (`one` / `many` in words), none for zero.
fn counted(count: u64, one: &str, many: &str, href: &str) -> Option<Item> {
    (count > 0).then(|| Item::new(plural(count, one, many), href))
}

pub async fn gather(admin: &AdminServices) -> Vec<Item> {
    let mut items = Vec::new();
    let count = |query: JobQuery| async move { admin.count_jobs(&query).await };
    match count(JobQuery {
        failing: true,
        ..JobQuery::default()
    })
    .await
    {
        Ok(n) => items.extend(counted(
            n,
            "job is failing",
            "jobs are failing",
            "/jobs?failing=on&sort=failures&order=desc",
        )),
        Err(error) => items.push(Item::new(format!("cannot read the jobs: {error}"), "/jobs")),
    }
    let auto_paused = JobQuery {
        status: Some(JobStatus::AutoPaused),
        ..JobQuery::default()
    };
    items.extend(count(auto_paused).await.ok().and_then(|n| {
        counted(
            n,
            "job was paused automatically after repeated failures",
            "jobs were paused automatically after repeated failures",
            "/jobs?status=auto_paused",
        )
    }));
    items.extend(stalled_runs(admin).await);
    items
}

/// Runs past their deadline, runs waiting long, and handlers nobody offers.
async fn stalled_runs(admin: &AdminServices) -> Vec<Item> {
    let mut items = Vec::new();
    let backlog = match admin.run_backlog(WAITING_TOO_LONG).await {
        Ok(backlog) => backlog,
        Err(error) => {
            items.push(Item::new(
                format!("cannot count the runs: {error}"),
                "/runs",
            ));
            return items;
        }
    };
    items.extend(counted(
        backlog.overdue,
        "run is past its deadline",
        "runs are past their deadline",
        "/runs?state=running",
    ));
    items.extend(counted(
        backlog.waiting_long,
        "run has waited more than a minute to start",
        "runs have waited more than a minute to start",
        "/runs?state=pending",
    ));
    if backlog.due_by_handler.is_empty() {
        return items;
    }
    let offered: BTreeSet<String> = match admin.list_workers(pb::ListWorkersRequest {}, false).await
    {
        Ok(answer) => answer
            .workers
            .into_iter()
            .filter(|worker| worker.state == "connected")
            .flat_map(|worker| worker.handlers)
            .collect(),
        Err(error) => {
            items.push(Item::new(
                format!("cannot list the workers: {error}"),
                "/cluster",
            ));
            return items;
        }
    };
    for (handler, runs) in backlog.due_by_handler {
        if !offered.contains(&handler) {
            items.push(Item::new(
                format!(
                    "no live worker offers handler {handler:?}, and {} waiting for one",
                    plural(runs, "run is", "runs are")
                ),
                "/cluster",
            ));
        }
    }
    items
}
