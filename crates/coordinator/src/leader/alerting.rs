//! The leader's two alert loops.
//!
//! - **evaluator**: every `--alert-interval`, reads the facts (bounded reads of the store)
//!   and the registry, has `cronfleet_core::alert::plan_alerts` compare what holds with
//!   what fires, and raises / resolves alerts in one fenced transaction that also writes
//!   their outbox rows. A new leader starts from the stored alerts: nothing fires twice.
//! - **delivery**: claims due outbox rows (fenced; a claim holds a row for
//!   [`CLAIM_HOLD`], so a leader dying mid-send leaves it to the next), sends them in
//!   parallel, and records each outcome; a failure is retried with backoff until
//!   `give_up_after`. Neither loop is on the scheduler's or dispatcher's path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cronfleet_core::alert::{AlertKind, FiringAlert, Observation, plan_alerts, worker_lost};
use cronfleet_store::{
    Alert, AlertFacts, Delivery, DeliveryOutcome, RaiseAlert, ResolveAlert, StoreError,
};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{STORE_RETRY, idle};
use crate::alerts::AlertChannel;
use crate::node::{Node, Term};

/// The most candidates of one kind read per pass (more are raised in later passes, as
/// alerts resolve); whether a firing alert still holds is read for it alone.
const FACT_LIMIT: u32 = 5000;
/// The most firing alerts read per pass.
const FIRING_LIMIT: u32 = 20_000;
/// The outbox rows claimed at once.
const DELIVERY_BATCH: u32 = 32;
/// How long a claimed row is left to its claimer before another leader may send it.
pub(crate) const CLAIM_HOLD: Duration = Duration::from_secs(15);
/// Poll interval of the outbox when nothing woke the loop.
const DELIVERY_POLL: Duration = Duration::from_secs(1);
/// Retry backoff of a failed delivery: doubling from 1 s, at most 5 minutes.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

pub(super) async fn run_alert_evaluator(node: Arc<Node>, term: Term) {
    let every = node.config.alerts.evaluate_every;
    loop {
        match evaluate(&node, &term).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => {
                term.ended.cancel();
                return;
            }
            Err(error) => warn!(%error, "cannot evaluate alerts; will try again"),
        }
        tokio::select! {
            () = term.ended.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn evaluate(node: &Node, term: &Term) -> Result<(), StoreError> {
    let settings = &node.config.alerts;
    let now = node.clock.now();
    let candidates = node
        .alerts
        .alert_candidates(now - delta(settings.no_worker_after), FACT_LIMIT)
        .await?;
    let firing = node.alerts.firing_alerts(FIRING_LIMIT).await?;
    // The firing alerts' own jobs and runs, read whatever their number: whether each
    // still holds never depends on a capped read.
    let (jobs, runs) = subjects_of(&firing);
    let current = node.alerts.alert_facts_of(&jobs, &runs).await?;
    let observation = observe(node, term, &candidates, &current, &firing, now);
    let firing_now: Vec<FiringAlert> = firing.iter().map(Alert::firing).collect();
    let plan = plan_alerts(&observation, &firing_now);
    if !plan.is_empty() {
        let raise: Vec<RaiseAlert> = plan
            .raise
            .into_iter()
            .map(|condition| RaiseAlert {
                channels: settings.route(&condition.labels, condition.job_id.is_some()),
                condition,
            })
            .collect();
        let resolve: Vec<ResolveAlert> = plan
            .resolve
            .iter()
            .filter_map(|id| firing.iter().find(|a| a.id == *id))
            .map(|alert| ResolveAlert {
                id: alert.id,
                channels: settings.route(&alert.labels, alert.job_id.is_some()),
            })
            .collect();
        let changed = node
            .alerts
            .change_alerts(term.epoch, now, &raise, &resolve)
            .await?;
        for alert in &changed {
            info!(
                alert_id = alert.id,
                kind = %alert.kind,
                state = %alert.state,
                subject = alert.subject,
                "alert {}: {}",
                alert.state,
                alert.message
            );
        }
        if !changed.is_empty() {
            node.delivery_wake.wake();
        }
    }
    node.metrics.set_alerts(&node.alerts.count_alerts().await?);
    Ok(())
}

/// The jobs and runs the firing alerts are about (those whose facts the store reads
/// one by one).
fn subjects_of(firing: &[Alert]) -> (Vec<i64>, Vec<i64>) {
    let mut jobs = Vec::new();
    let mut runs = Vec::new();
    for alert in firing {
        match alert.kind {
            AlertKind::Failed | AlertKind::AutoPaused | AlertKind::MissedDeadline => {
                jobs.extend(alert.job_id);
            }
            AlertKind::Stalled => runs.extend(alert.run_id),
            AlertKind::NoWorker | AlertKind::WorkerLost => {}
        }
    }
    jobs.sort_unstable();
    jobs.dedup();
    runs.sort_unstable();
    runs.dedup();
    (jobs, runs)
}

/// What holds now, from the store's candidates, the facts of the firing alerts' own jobs
/// and runs, and this leader's registry.
fn observe(
    node: &Node,
    term: &Term,
    candidates: &AlertFacts,
    current: &AlertFacts,
    firing: &[Alert],
    now: DateTime<Utc>,
) -> Observation {
    let settings = &node.config.alerts;
    let mut observation = Observation::default();
    // Every firing alert of these kinds had its own job or run read: absence means over.
    observation.complete.extend([
        AlertKind::Failed,
        AlertKind::AutoPaused,
        AlertKind::MissedDeadline,
        AlertKind::Stalled,
    ]);
    // Until the workers have had a worker timeout to connect to this leader, its registry
    // does not know who offers what: no worker alert is judged before then. Unserved runs
    // are grouped by handler and labels, a read cut at the limit is not whole.
    let workers_known = now - term.since > delta(node.config.worker_timeout);
    if workers_known && candidates.unserved.len() < FACT_LIMIT as usize {
        observation.complete.insert(AlertKind::NoWorker);
    }
    for facts in [candidates, current] {
        observe_facts(node, term, facts, now, &mut observation);
    }
    if workers_known {
        observation
            .holding
            .extend(candidates.unserved.iter().filter_map(|runs| {
                let offered = node.registry.offers(&runs.handler, &runs.labels);
                runs.condition(offered, settings.no_worker_after, now)
            }));
    }
    for (worker, departure) in node.registry.departed() {
        if now - departure.last_heard > delta(settings.worker_lost_after) {
            observation
                .holding
                .push(worker_lost(&worker, departure.last_heard, departure.runs));
        }
    }
    for alert in firing.iter().filter(|a| a.kind == AlertKind::WorkerLost) {
        if let Some(worker) = alert.subject.strip_prefix("worker:")
            && node.registry.is_connected(worker)
        {
            observation
                .over
                .insert((AlertKind::WorkerLost, alert.subject.clone()));
        }
    }
    observation
}

/// The conditions of the job and run facts (a failure with a retry to come is undecided).
fn observe_facts(
    node: &Node,
    term: &Term,
    facts: &AlertFacts,
    now: DateTime<Utc>,
    observation: &mut Observation,
) {
    let settings = &node.config.alerts;
    for job in &facts.failing {
        let condition = job.condition();
        if job.retry_in_flight {
            observation
                .undecided
                .insert((condition.kind, condition.subject));
        } else {
            observation.holding.push(condition);
        }
    }
    let holding = &mut observation.holding;
    holding.extend(facts.auto_paused.iter().map(|job| job.condition()));
    holding.extend(facts.deadlines.iter().filter_map(|job| job.condition(now)));
    holding.extend(facts.running.iter().filter_map(|run| {
        // Output seen by an earlier leader is not known here: count from this term at the
        // earliest, so a failover does not make every quiet run look stalled.
        let seen = node
            .registry
            .last_activity(run.run_id)
            .into_iter()
            .chain([term.since])
            .max();
        run.condition(seen, settings.silent_after, now)
    }));
}

pub(super) async fn run_alert_delivery(node: Arc<Node>, term: Term) {
    let channels: Arc<HashMap<String, AlertChannel>> = Arc::new(
        node.config
            .alerts
            .channels
            .iter()
            .map(|channel| (channel.key(), channel.clone()))
            .collect(),
    );
    loop {
        if term.ended.is_cancelled() {
            return;
        }
        let now = node.clock.now();
        let claimed = node
            .alerts
            .claim_deliveries(term.epoch, now, now + delta(CLAIM_HOLD), DELIVERY_BATCH)
            .await;
        let wait = match claimed {
            Ok(batch) if batch.is_empty() => DELIVERY_POLL,
            Ok(batch) => {
                let full = batch.len() >= DELIVERY_BATCH as usize;
                if !deliver(&node, &term, &channels, batch).await {
                    return;
                }
                if full { Duration::ZERO } else { DELIVERY_POLL }
            }
            Err(StoreError::Fenced { .. }) => {
                term.ended.cancel();
                return;
            }
            Err(error) => {
                warn!(%error, "cannot read the alert outbox; will try again");
                STORE_RETRY
            }
        };
        if !idle(&term, &node.delivery_wake, wait).await {
            return;
        }
    }
}

/// Sends a claimed batch in parallel and records each outcome. False when the term ended.
async fn deliver(
    node: &Arc<Node>,
    term: &Term,
    channels: &Arc<HashMap<String, AlertChannel>>,
    batch: Vec<Delivery>,
) -> bool {
    let mut sends = JoinSet::new();
    let sent_at = node.clock.now();
    for delivery in batch {
        let sender = node.alert_sender.clone();
        let channel = channels.get(&delivery.channel).cloned();
        sends.spawn(async move {
            let result = match &channel {
                Some(channel) => sender.send(channel, &delivery, sent_at).await,
                // Another coordinator of the deployment may have it (a rolling change of
                // the channels): left to retry, not dropped, until it is given up.
                None => Err(format!(
                    "channel {} is not configured on this coordinator",
                    delivery.channel
                )),
            };
            (delivery, result)
        });
    }
    let give_up_after = delta(node.config.alerts.give_up_after);
    while let Some(sent) = sends.join_next().await {
        let Ok((delivery, result)) = sent else {
            continue;
        };
        let now = node.clock.now();
        let (outcome, word) = match result {
            Ok(()) => (DeliveryOutcome::Delivered, "delivered"),
            Err(error) if now - delivery.created_at > give_up_after => {
                (DeliveryOutcome::Abandoned(error), "abandoned")
            }
            Err(error) => (
                DeliveryOutcome::RetryAt(now + delta(backoff(delivery.attempts)), error),
                "retry",
            ),
        };
        match &outcome {
            DeliveryOutcome::Delivered => debug!(
                alert_id = delivery.alert.id,
                channel = delivery.channel,
                event = %delivery.event,
                "alert delivered"
            ),
            DeliveryOutcome::RetryAt(_, error) | DeliveryOutcome::Abandoned(error) => warn!(
                alert_id = delivery.alert.id,
                channel = delivery.channel,
                attempt = delivery.attempts,
                outcome = word,
                %error,
                "alert delivery failed"
            ),
        }
        node.metrics.alert_delivery(&delivery.channel, word);
        match node
            .alerts
            .finish_delivery(term.epoch, delivery.id, delivery.attempts, now, &outcome)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => {
                term.ended.cancel();
                return false;
            }
            Err(error) => {
                // The claim runs out and the row is sent again: a repeat, never a loss.
                warn!(%error, delivery = delivery.id, "cannot record an alert delivery");
            }
        }
    }
    true
}

/// The pause after the `attempts`-th failed attempt.
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (RETRY_BASE * 2u32.pow(doublings)).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deliveries_back_off_doubling_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
