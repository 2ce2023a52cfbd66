//! The attention banner on every page: what an operator should look at now — failing
//! jobs, jobs paused by the failure-streak rule, runs past their deadline or waiting long
//! for a worker, and handlers with waiting runs that no live worker offers.
//!
//! Each check is one bounded admin call (a count, or at most [`SCAN_LIMIT`] runs), so the
//! banner costs the same with 100,000 jobs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeDelta;
use cronfleet_proto::v1 as pb;
use cronfleet_store::{JobQuery, JobStatus};

use crate::admin::AdminServices;

/// The most runs of one state a check reads.
const SCAN_LIMIT: u32 = 500;
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

pub async fn gather(admin: &AdminServices) -> Vec<Item> {
    let mut items = Vec::new();
    let count = |query: JobQuery| async move { admin.count_jobs(&query).await };
    match count(JobQuery {
        failing: true,
        ..JobQuery::default()
    })
    .await
    {
        Ok(0) => {}
        Ok(n) => items.push(Item::new(
            plural(n, "job is failing", "jobs are failing"),
            "/jobs?failing=on&sort=failures&order=desc",
        )),
        Err(error) => items.push(Item::new(format!("cannot read the jobs: {error}"), "/jobs")),
    }
    if let Ok(n @ 1..) = count(JobQuery {
        status: Some(JobStatus::AutoPaused),
        ..JobQuery::default()
    })
    .await
    {
        items.push(Item::new(
            plural(
                n,
                "job was paused automatically after repeated failures",
                "jobs were paused automatically after repeated failures",
            ),
            "/jobs?status=auto_paused",
        ));
    }
    items.extend(stalled_runs(admin).await);
    items
}

async fn runs_in(admin: &AdminServices, state: &str) -> Vec<pb::Run> {
    admin
        .list_runs(pb::ListRunsRequest {
            state: state.to_owned(),
            limit: SCAN_LIMIT,
            ..Default::default()
        })
        .await
        .map(|answer| answer.runs)
        .unwrap_or_default()
}

/// Runs past their deadline, runs waiting long, and handlers nobody offers.
async fn stalled_runs(admin: &AdminServices) -> Vec<Item> {
    let now = admin.now();
    let mut items = Vec::new();
    let mut overdue = 0;
    for state in ["dispatched", "running"] {
        overdue += runs_in(admin, state)
            .await
            .iter()
            .filter(|run| {
                run.deadline
                    .as_ref()
                    .and_then(cronfleet_proto::datetime)
                    .is_some_and(|deadline| deadline < now)
            })
            .count();
    }
    if overdue > 0 {
        items.push(Item::new(
            plural(
                overdue as u64,
                "run is past its deadline",
                "runs are past their deadline",
            ),
            "/runs?state=running",
        ));
    }

    let pending = runs_in(admin, "pending").await;
    let waiting: Vec<&pb::Run> = pending
        .iter()
        .filter(|run| {
            let created = run.created_at.as_ref().and_then(cronfleet_proto::datetime);
            let slot = run.slot.as_ref().and_then(cronfleet_proto::datetime);
            // A retry or a later manual run waits for its time on purpose.
            let due = slot.max(created);
            due.is_some_and(|due| now - due > WAITING_TOO_LONG)
        })
        .collect();
    if !waiting.is_empty() {
        items.push(Item::new(
            plural(
                waiting.len() as u64,
                "run has waited more than a minute to start",
                "runs have waited more than a minute to start",
            ),
            "/runs?state=pending",
        ));
    }

    // Handlers of the waiting runs' jobs that no connected worker offers.
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
    let mut waiting_per_job: BTreeMap<&str, u64> = BTreeMap::new();
    for run in &pending {
        *waiting_per_job.entry(run.job.as_str()).or_default() += 1;
    }
    let mut missing: BTreeMap<String, u64> = BTreeMap::new();
    // A job lookup each: at most 50 jobs, the banner stays cheap with a long queue.
    for (name, runs) in waiting_per_job.into_iter().take(50) {
        let request = pb::GetJobRequest {
            name: name.to_owned(),
        };
        let Ok(job) = admin.get_job(request).await else {
            continue; // deleted meanwhile
        };
        let handler = job.spec.map(|spec| spec.handler).unwrap_or_default();
        if !offered.contains(&handler) {
            *missing.entry(handler).or_default() += runs;
        }
    }
    for (handler, runs) in missing {
        items.push(Item::new(
            format!(
                "no live worker offers handler {handler:?}, and {} waiting for one",
                plural(runs, "run is", "runs are")
            ),
            "/cluster",
        ));
    }
    items
}
