//! The monitor: every half heartbeat, resolves what nobody will report. It saves live log
//! tails to the store (so `run logs` works on any replica), closes the streams of workers
//! silent past the worker timeout, times out runs past their timeout and grace, declares
//! lost the runs of silent workers and the orphans of reconnected ones, and delivers an
//! operator's cancel to the worker once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cronfleet_core::run::Run;
use tracing::{debug, warn};

use crate::config::LOSS_MARGIN;
use crate::node::{Node, Term};
use crate::runs::RunChanges;

/// Whether an active run is past its timeout plus `grace`. The timeout is a duration (the
/// dispatching leader's deadline minus its dispatch time, both on its clock); it counts
/// from the dispatch when this leader dispatched the run, and from the start of this term
/// for a run an earlier leader dispatched — never by comparing this machine's clock with
/// another's. The worker stops the run by the same duration from the Assign's arrival.
fn timed_out(run: &Run, term: &Term, now: DateTime<Utc>, grace: TimeDelta) -> bool {
    let (Some(dispatched), Some(deadline)) = (run.dispatched_at, run.deadline) else {
        return false;
    };
    let timeout = deadline - dispatched;
    let counted_from = if run.epoch == term.epoch {
        dispatched
    } else {
        dispatched.max(term.since)
    };
    now > counted_from + timeout + grace
}

/// The monitor loop of one term.
pub(super) async fn run_monitor(node: Arc<Node>, term: Term) {
    let period = node.config.heartbeat_interval / 2;
    let worker_timeout = TimeDelta::from_std(node.config.worker_timeout).unwrap_or(TimeDelta::MAX);
    let grace = TimeDelta::from_std(node.config.timeout_grace).unwrap_or(TimeDelta::MAX);
    // Active runs of connected workers that their session does not hold, since when. An
    // orphan is lost only after the longest stop grace any admitted worker may have, plus
    // the margin: a session is admitted only once the previous one under its id had not
    // renewed its lease for the lease ttl, so by then whatever that one ran is gone.
    let mut orphans: HashMap<i64, DateTime<Utc>> = HashMap::new();
    let orphan_after = TimeDelta::from_std(
        (node.config.max_stop_grace() + LOSS_MARGIN).max(node.config.heartbeat_interval * 4),
    )
    .unwrap_or(TimeDelta::MAX);
    loop {
        tokio::select! {
            () = term.ended.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        // Live logs go to the store, so that every replica shows them (`run logs`).
        for (run_id, output) in node.registry.unsaved_outputs(node.config.run_log_limit) {
            if let Err(error) = node.store.record_output(run_id, &output).await {
                debug!(run_id, %error, "cannot record the run's log yet");
            }
        }
        let now = node.clock.now();
        // Workers gone for a hundred worker timeouts (at least an hour) are forgotten.
        let forget_after = worker_timeout
            .checked_mul(100)
            .unwrap_or(TimeDelta::MAX)
            .max(TimeDelta::hours(1));
        if let Some(before) = now.checked_sub_signed(forget_after) {
            node.registry.forget_silent_before(before);
        }
        for (worker, connection) in node.registry.silent_since(now - worker_timeout) {
            warn!(
                worker,
                "worker silent past the worker timeout: closing its stream"
            );
            node.registry.disconnect(&worker, connection);
        }
        let active = match node.store.active_runs().await {
            Ok(active) => active,
            Err(error) => {
                warn!(%error, "cannot read active runs");
                continue;
            }
        };
        let changes = RunChanges::new(&node, &term);
        let mut seen_orphans = HashSet::new();
        for run in &active {
            let Some(worker) = run.worker.as_deref() else {
                continue;
            };
            if timed_out(run, &term, now, grace) {
                let error = format!(
                    "no result from worker {worker} by the deadline (plus {}s grace)",
                    grace.num_seconds()
                );
                if !changes.time_out(run, worker, error).await {
                    return;
                }
                continue;
            }
            if node.registry.is_connected(worker) {
                // Active on a connected worker whose session does not hold it: its Assign
                // went to a connection that was gone (a dispatch racing a reconnect), or the
                // worker reconnected without it (it restarted, or the run ended and its
                // report is on its way). Once that has lasted past any stop grace, it is
                // lost and runs again.
                if node.registry.session_holds(worker, run.id) {
                    orphans.remove(&run.id);
                } else {
                    seen_orphans.insert(run.id);
                    let since = *orphans.entry(run.id).or_insert(now);
                    if now - since > orphan_after {
                        orphans.remove(&run.id);
                        let reason = format!(
                            "dispatched to worker {worker} over a connection that is gone: its session does not hold the run"
                        );
                        if !changes.lose(run.id, &reason).await {
                            return;
                        }
                        continue;
                    }
                }
                // An operator's cancel (from any replica) reaches the worker once.
                if run.cancel_requested_at.is_some() && node.registry.first_cancel(run.id) {
                    changes.cancel(run.id, worker, "cancelled by an operator");
                }
                continue;
            }
            let last_seen = node
                .registry
                .last_seen(worker)
                .map_or(term.since, |seen| seen.max(term.since));
            if now - last_seen > worker_timeout {
                let reason = format!(
                    "worker {worker} silent for {}s (worker timeout {}s)",
                    (now - last_seen).num_seconds(),
                    worker_timeout.num_seconds()
                );
                if !changes.lose(run.id, &reason).await {
                    return;
                }
            }
        }
        orphans.retain(|run_id, _| seen_orphans.contains(run_id));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cronfleet_core::run::{RunState, Trigger};
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn running(epoch: i64, dispatched: i64, timeout: i64) -> Run {
        Run {
            id: 1,
            job_id: 1,
            job_name: "job".to_owned(),
            slot: at(dispatched),
            attempt: 1,
            trigger: Trigger::Schedule,
            state: RunState::Running,
            slot_count: 1,
            last_slot: None,
            worker: Some("w".to_owned()),
            epoch,
            created_at: at(dispatched),
            dispatched_at: Some(at(dispatched)),
            started_at: Some(at(dispatched)),
            finished_at: None,
            deadline: Some(at(dispatched + timeout)),
            cancel_requested_at: None,
            error: None,
            output: None,
            progress: None,
            trace_id: None,
            not_before: None,
            pending_reason: None,
        }
    }

    fn term(epoch: i64, since: i64) -> Term {
        Term {
            epoch,
            since: at(since),
            ended: CancellationToken::new(),
        }
    }

    #[test]
    fn a_timeout_counts_from_this_leaders_dispatch_or_from_its_term() {
        let grace = TimeDelta::seconds(10);
        // Dispatched by this leader at 0 with a 60 s timeout: out after 70 s.
        let ours = running(2, 0, 60);
        assert!(!timed_out(&ours, &term(2, 0), at(70), grace));
        assert!(timed_out(&ours, &term(2, 0), at(71), grace));
        // Dispatched by an earlier leader, whose clock may differ: the whole timeout and
        // grace count again from this term's start (100), not from the old deadline.
        let inherited = running(1, 0, 60);
        assert!(!timed_out(&inherited, &term(2, 100), at(170), grace));
        assert!(timed_out(&inherited, &term(2, 100), at(171), grace));
        let undispatched = Run {
            dispatched_at: None,
            ..running(2, 0, 60)
        };
        assert!(!timed_out(&undispatched, &term(2, 0), at(1_000), grace));
    }
}
