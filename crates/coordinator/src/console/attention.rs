//! The attention banner on every page: the alerts firing that nobody acknowledged, as the
//! leader's evaluator stored them (`leader/alerting.rs`) — the same state `cronfleet
//! alerts`, `/api/v1/alerts` and `/metrics` show, so the banner and a page to on-call never
//! disagree.
//!
//! One count per kind by the store (a partial index holds only the firing alerts), plus
//! the few firing `no_worker` alerts themselves, whose messages say which handler waits.

use cronfleet_core::alert::AlertKind;
use cronfleet_proto::v1 as pb;

use crate::admin::AdminServices;

/// The most `no_worker` alerts spelled out.
const NO_WORKER_SHOWN: u32 = 5;

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

/// The words and the link for `count` unacknowledged alerts of `kind`.
fn line(kind: AlertKind, count: u64) -> Item {
    let (one, many, href) = match kind {
        AlertKind::Failed => ("job is failing", "jobs are failing", "/alerts?kind=failed"),
        AlertKind::AutoPaused => (
            "job was paused automatically after repeated failures",
            "jobs were paused automatically after repeated failures",
            "/jobs?status=auto_paused",
        ),
        AlertKind::MissedDeadline => (
            "job has not succeeded within its deadline",
            "jobs have not succeeded within their deadline",
            "/alerts?kind=missed_deadline",
        ),
        AlertKind::Stalled => ("run is stalled", "runs are stalled", "/alerts?kind=stalled"),
        AlertKind::NoWorker => (
            "handler has waiting runs no live worker offers",
            "handlers have waiting runs no live worker offers",
            "/alerts?kind=no_worker",
        ),
        AlertKind::WorkerLost => (
            "worker was lost",
            "workers were lost",
            "/alerts?kind=worker_lost",
        ),
    };
    Item::new(plural(count, one, many), href)
}

pub async fn gather(admin: &AdminServices) -> Vec<Item> {
    let counts = match admin.count_alerts().await {
        Ok(counts) => counts,
        Err(error) => {
            return vec![Item::new(
                format!("cannot read the alerts: {error}"),
                "/alerts",
            )];
        }
    };
    let mut items = Vec::new();
    for count in counts.iter().filter(|c| c.unacked > 0) {
        if count.kind != AlertKind::NoWorker {
            items.push(line(count.kind, count.unacked));
            continue;
        }
        let request = pb::ListAlertsRequest {
            state: "firing".to_owned(),
            kind: AlertKind::NoWorker.as_str().to_owned(),
            limit: NO_WORKER_SHOWN,
            ..pb::ListAlertsRequest::default()
        };
        let unacked: Vec<pb::Alert> = match admin.list_alerts(request).await {
            Ok(answer) => answer
                .alerts
                .into_iter()
                .filter(|alert| alert.acked_at.is_none())
                .collect(),
            Err(_) => Vec::new(),
        };
        // Each spelled out when all of them are at hand, else the count.
        if unacked.len() as u64 == count.unacked {
            items.extend(
                unacked
                    .into_iter()
                    .map(|alert| Item::new(alert.message, "/cluster")),
            );
        } else {
            items.push(line(count.kind, count.unacked));
        }
    }
    items
}
