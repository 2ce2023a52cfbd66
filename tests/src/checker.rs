//! The history checker: proves, from the jobs' own ledgers and the store's run history
//! (as `cronfleet runs -o json` prints it), that a run of the cluster kept DESIGN §2's
//! promises — whatever faults it went through:
//!
//! 1. **no overlap**: no two attempts of one job were alive at once (the ledger, written
//!    by the jobs' scripts from outside cronfleet): an attempt that began before the
//!    previous one's recorded end, or whose script found the job's lock still held by the
//!    previous attempt's processes (the kernel releases it when the last of them dies — the
//!    proof for an attempt that was killed and wrote no end); without such a lock, a killed
//!    attempt counts as alive until its last line plus `alive_margin`;
//! 2. **no lost slot**: every slot of every `every` job, from its first to its last, is
//!    run, skipped or missed exactly once, and the job's counters add up
//!    ([`crate::history::every_slot_accounted_once`]);
//! 3. **nothing stuck**: every run created before `settled_before` is in a terminal state;
//! 4. **no deposed write**: dispatches happen in epoch order — a run dispatched under an
//!    older epoch never after one dispatched under a newer epoch (runs that a later leader
//!    resolved, `timed_out` and `lost`, carry that leader's epoch and are left out).
//!
//! It is pure (data in, violations out), so its own tests feed it hand-made bad histories.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::LedgerEntry;
use crate::history::{every_slot_accounted_once, seconds};

/// Everything observed of one run of the cluster.
#[derive(Debug)]
pub struct Observed<'a> {
    /// `cronfleet job list -o json`.
    pub jobs: &'a [Value],
    /// Each job's runs, oldest first (`cronfleet runs --job NAME -o json`).
    pub runs: &'a BTreeMap<String, Vec<Value>>,
    /// The jobs' interval in seconds, for the `every` jobs whose slots are checked.
    pub every: &'a BTreeMap<String, f64>,
    /// The scripts' ledger.
    pub ledger: &'a [LedgerEntry],
    /// How long after its last ledger line a killed attempt may still have been alive
    /// (the scripts' tick, and a margin); `None` when the scripts hold a lock per job, so
    /// that a killed attempt still alive shows as `found_previous_alive` instead.
    pub alive_margin: Option<f64>,
    /// Runs created before this time (seconds since the epoch) must have ended.
    pub settled_before: f64,
}

/// What the checker found.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub runs: usize,
    pub slots: usize,
    pub attempts: usize,
    pub overlaps: usize,
    pub lost_slots: usize,
    pub stuck: usize,
    pub deposed_writes: usize,
}

const TERMINAL: &[&str] = &[
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "lost",
    "skipped",
    "missed",
];

pub fn check(observed: &Observed) -> Verdict {
    let mut verdict = Verdict {
        runs: observed.runs.values().map(Vec::len).sum(),
        attempts: observed.ledger.len(),
        ..Verdict::default()
    };
    check_overlaps(observed, &mut verdict);
    check_slots(observed, &mut verdict);
    check_settled(observed, &mut verdict);
    check_epoch_order(observed, &mut verdict);
    verdict
}

fn check_overlaps(observed: &Observed, verdict: &mut Verdict) {
    let mut by_job: BTreeMap<&str, Vec<&LedgerEntry>> = BTreeMap::new();
    for entry in observed.ledger {
        by_job.entry(entry.job.as_str()).or_default().push(entry);
    }
    for (job, mut attempts) in by_job {
        attempts.sort_by(|a, b| a.start.total_cmp(&b.start));
        for attempt in attempts
            .iter()
            .filter(|attempt| attempt.found_previous_alive)
        {
            verdict.overlaps += 1;
            verdict.violations.push(format!(
                "overlap: job {job}: run {} began (at {:.3}) while the previous attempt's processes still held the job's lock",
                attempt.run, attempt.start
            ));
        }
        for pair in attempts.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            let alive_until = match (old.end, observed.alive_margin) {
                (Some(end), _) => end,
                (None, Some(margin)) => old.last_alive + margin,
                (None, None) => continue,
            };
            if alive_until > new.start {
                verdict.overlaps += 1;
                verdict.violations.push(format!(
                    "overlap: job {job}: run {} (started {:.3}, alive until {alive_until:.3}{}) and run {} (started {:.3})",
                    old.run,
                    old.start,
                    if old.end.is_none() { ", killed" } else { "" },
                    new.run,
                    new.start
                ));
            }
        }
    }
}

fn check_slots(observed: &Observed, verdict: &mut Verdict) {
    for job in observed.jobs {
        let Some(name) = job["name"].as_str() else {
            continue;
        };
        let Some(&every) = observed.every.get(name) else {
            continue;
        };
        let runs = observed.runs.get(name).map(Vec::as_slice).unwrap_or(&[]);
        match every_slot_accounted_once(job, runs, every) {
            Ok(slots) => verdict.slots += slots,
            Err(violation) => {
                verdict.lost_slots += 1;
                verdict.violations.push(format!("slots: {violation}"));
            }
        }
    }
}

fn check_settled(observed: &Observed, verdict: &mut Verdict) {
    for (job, runs) in observed.runs {
        for run in runs {
            let state = run["state"].as_str().unwrap_or("?");
            if TERMINAL.contains(&state) || seconds(&run["created_at"]) >= observed.settled_before {
                continue;
            }
            verdict.stuck += 1;
            verdict.violations.push(format!(
                "stuck: job {job}: run {} is still {state} (created {})",
                run["id"], run["created_at"]
            ));
        }
    }
}

/// The dispatches made under one epoch: the earliest and the latest, with their runs.
#[derive(Clone, Copy, Debug)]
struct EpochSpan {
    first: f64,
    first_run: i64,
    last: f64,
    last_run: i64,
}

fn check_epoch_order(observed: &Observed, verdict: &mut Verdict) {
    let mut spans: BTreeMap<i64, EpochSpan> = BTreeMap::new();
    for run in observed.runs.values().flatten() {
        if matches!(run["state"].as_str(), Some("timed_out" | "lost")) {
            continue;
        }
        let (Some(epoch), false) = (run["epoch"].as_i64(), run["dispatched_at"].is_null()) else {
            continue;
        };
        let at = seconds(&run["dispatched_at"]);
        let id = run["id"].as_i64().unwrap_or(-1);
        let span = spans.entry(epoch).or_insert(EpochSpan {
            first: at,
            first_run: id,
            last: at,
            last_run: id,
        });
        if at < span.first {
            (span.first, span.first_run) = (at, id);
        }
        if at > span.last {
            (span.last, span.last_run) = (at, id);
        }
    }
    let epochs: Vec<(i64, EpochSpan)> = spans.into_iter().collect();
    for (index, (older, old)) in epochs.iter().enumerate() {
        for (newer, new) in &epochs[index + 1..] {
            if old.last > new.first {
                verdict.deposed_writes += 1;
                verdict.violations.push(format!(
                    "deposed write: run {} was dispatched under epoch {older} at {:.3}, \
                     after run {} under the newer epoch {newer} at {:.3}",
                    old.last_run, old.last, new.first_run, new.first
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const T0: f64 = 1_800_000_000.0;

    fn time(offset: f64) -> String {
        chrono::DateTime::from_timestamp_micros(((T0 + offset) * 1e6) as i64)
            .unwrap()
            .to_rfc3339()
    }

    fn run(id: i64, state: &str, slot: f64, epoch: i64, dispatched: Option<f64>) -> Value {
        json!({
            "id": id, "job": "tick", "state": state, "trigger": "schedule",
            "slot": time(slot), "attempt": 1, "slot_count": 1, "last_slot": null,
            "epoch": epoch, "created_at": time(slot),
            "dispatched_at": dispatched.map(time),
        })
    }

    fn attempt(run: i64, start: f64, end: Option<f64>, last_alive: f64) -> LedgerEntry {
        LedgerEntry {
            job: "tick".to_owned(),
            run,
            start: T0 + start,
            end: end.map(|end| T0 + end),
            last_alive: T0 + last_alive,
            found_previous_alive: false,
        }
    }

    fn verdict(runs: Vec<Value>, ledger: Vec<LedgerEntry>) -> Verdict {
        let jobs = [json!({"name": "tick", "missed_count": 0, "overlap_skipped_count": 0})];
        let runs = BTreeMap::from([("tick".to_owned(), runs)]);
        let every = BTreeMap::from([("tick".to_owned(), 1.0)]);
        check(&Observed {
            jobs: &jobs,
            runs: &runs,
            every: &every,
            ledger: &ledger,
            alive_margin: Some(0.3),
            settled_before: T0 + 100.0,
        })
    }

    fn good_runs() -> Vec<Value> {
        vec![
            run(1, "succeeded", 0.0, 1, Some(0.0)),
            run(2, "succeeded", 1.0, 1, Some(1.0)),
            run(3, "succeeded", 2.0, 2, Some(2.0)),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let ledger = vec![
            attempt(1, 0.0, Some(0.5), 0.5),
            attempt(2, 1.0, Some(1.5), 1.5),
            attempt(3, 2.0, None, 2.4),
        ];
        let verdict = verdict(good_runs(), ledger);
        assert_eq!(verdict.violations, Vec::<String>::new());
        assert_eq!((verdict.runs, verdict.slots, verdict.attempts), (3, 3, 3));
    }

    #[test]
    fn overlapping_attempts_are_caught_also_when_the_first_was_killed() {
        let ended_late = verdict(
            good_runs(),
            vec![
                attempt(1, 0.0, Some(1.2), 1.2),
                attempt(2, 1.0, Some(1.5), 1.5),
            ],
        );
        assert_eq!(ended_late.overlaps, 1, "{:?}", ended_late.violations);
        // Killed: last seen at 0.8, so maybe alive until 1.1 — past the next start.
        let killed = verdict(
            good_runs(),
            vec![attempt(1, 0.0, None, 0.8), attempt(2, 1.0, Some(1.5), 1.5)],
        );
        assert_eq!(killed.overlaps, 1, "{:?}", killed.violations);
        assert!(killed.violations[0].contains("killed"));
    }

    #[test]
    fn an_attempt_that_found_the_jobs_lock_held_overlapped() {
        let mut second = attempt(2, 1.0, Some(1.5), 1.5);
        second.found_previous_alive = true;
        let verdict = verdict(good_runs(), vec![attempt(1, 0.0, None, 0.5), second]);
        assert_eq!(verdict.overlaps, 1, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("still held the job's lock"));
    }

    #[test]
    fn a_slot_with_no_record_is_a_lost_slot() {
        let mut runs = good_runs();
        runs.remove(1);
        let verdict = verdict(runs, Vec::new());
        assert_eq!(verdict.lost_slots, 1, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("silently lost"));
    }

    #[test]
    fn a_slot_run_twice_is_caught() {
        let mut runs = good_runs();
        runs.push(run(4, "succeeded", 1.0, 2, Some(2.5)));
        let verdict = verdict(runs, Vec::new());
        assert_eq!(verdict.lost_slots, 1, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("accounted for by runs 2 and 4"));
    }

    #[test]
    fn a_run_left_active_is_stuck() {
        let mut runs = good_runs();
        runs[1] = run(2, "dispatched", 1.0, 1, Some(1.0));
        let verdict = verdict(runs, Vec::new());
        assert_eq!(verdict.stuck, 1, "{:?}", verdict.violations);
    }

    #[test]
    fn a_dispatch_under_a_deposed_epoch_is_caught() {
        let mut runs = good_runs();
        // Epoch 1 dispatches at 3.0, after epoch 2 began dispatching at 2.0.
        runs.push(run(4, "succeeded", 3.0, 1, Some(3.0)));
        let verdict = verdict(runs, Vec::new());
        assert_eq!(verdict.deposed_writes, 1, "{:?}", verdict.violations);
        // A run a newer leader timed out carries its epoch: not a deposed write.
        let mut runs = good_runs();
        runs.push(run(4, "timed_out", 3.0, 1, Some(3.0)));
        assert_eq!(self::verdict(runs, Vec::new()).deposed_writes, 0);
    }
}
