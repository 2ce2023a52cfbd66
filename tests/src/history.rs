//! Reading a job's run history as the CLI prints it (`-o json`): times, a printable
//! history for failure messages, and the slot-accounting invariant of DESIGN §2.

use std::collections::BTreeMap;

use serde_json::Value;

/// An RFC 3339 time as seconds since the epoch.
pub fn seconds(time: &Value) -> f64 {
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {time}"));
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("not an RFC 3339 time ({error}): {text}"));
    time.timestamp_micros() as f64 / 1e6
}

/// A job's run history, one line per run, for failure messages.
pub fn history(runs: &[Value]) -> String {
    runs.iter()
        .map(|run| {
            format!(
                "  #{} {} trigger={} slot={} attempt={} slots={} last_slot={} worker={} started={} finished={} progress={}/{} error={}",
                run["id"],
                run["state"].as_str().unwrap_or("?"),
                run["trigger"].as_str().unwrap_or("?"),
                run["slot"].as_str().unwrap_or("-"),
                run["attempt"],
                run["slot_count"],
                run["last_slot"].as_str().unwrap_or("-"),
                run["worker"].as_str().unwrap_or("-"),
                run["started_at"].as_str().unwrap_or("-"),
                run["finished_at"].as_str().unwrap_or("-"),
                run["progress_done"],
                run["progress_remaining"],
                run["error"].as_str().unwrap_or("-"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// DESIGN §2, invariants 2 and 3, on one job's history: every slot of its `every`
/// schedule from the first to the last one seen is run, skipped or missed exactly once (a
/// retry or a re-created lost run is a later attempt at a slot already counted; manual
/// runs and continuations are not slots), a missed or skipped record's `slot_count` is
/// the size of its range, and the job's `missed_count` and `overlap_skipped_count` are
/// what its records add up to. Returns the number of slots.
pub fn assert_every_slot_accounted_once(job: &Value, runs: &[Value], every: f64) -> usize {
    every_slot_accounted_once(job, runs, every).unwrap_or_else(|violation| panic!("{violation}"))
}

/// [`assert_every_slot_accounted_once`], saying what is wrong instead of panicking.
pub fn every_slot_accounted_once(job: &Value, runs: &[Value], every: f64) -> Result<usize, String> {
    let name = job["name"].as_str().unwrap_or("?");
    let slot_runs: Vec<&Value> = runs
        .iter()
        .filter(|run| run["attempt"] == 1)
        .filter(|run| !matches!(run["trigger"].as_str(), Some("manual" | "continuation")))
        .collect();
    let Some(first) = slot_runs
        .iter()
        .map(|run| seconds(&run["slot"]))
        .min_by(f64::total_cmp)
    else {
        return Err(format!("job {name} has no slots:\n{}", history(runs)));
    };
    let index = |time: f64| -> i64 { ((time - first) / every).round() as i64 };
    let mut covered: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut missed, mut skipped) = (0u64, 0u64);
    for run in &slot_runs {
        let start = index(seconds(&run["slot"]));
        let count = run["slot_count"].as_u64().unwrap_or(1).max(1);
        match run["state"].as_str() {
            Some("missed") => missed += count,
            Some("skipped") => skipped += count,
            _ => {}
        }
        if count > 1 || !run["last_slot"].is_null() {
            let last = index(seconds(&run["last_slot"]));
            if last - start + 1 != count as i64 {
                return Err(format!(
                    "job {name}: run {} says it stands for {count} slots, but its range has {}:\n{}",
                    run["id"],
                    last - start + 1,
                    history(runs)
                ));
            }
        }
        for k in start..start + count as i64 {
            if let Some(other) = covered.insert(k, run["id"].as_i64().unwrap_or(-1)) {
                return Err(format!(
                    "job {name}: slot {k} is accounted for by runs {other} and {}:\n{}",
                    run["id"],
                    history(runs)
                ));
            }
        }
    }
    let last = *covered.keys().next_back().expect("at least one slot");
    let holes: Vec<i64> = (0..=last).filter(|k| !covered.contains_key(k)).collect();
    if !holes.is_empty() {
        return Err(format!(
            "job {name}: slots {holes:?} (counted from its first) were silently lost:\n{}",
            history(runs)
        ));
    }
    if job["missed_count"].as_u64() != Some(missed) {
        return Err(format!(
            "job {name}: missed_count {} is not what its missed records add up to ({missed}):\n{}",
            job["missed_count"],
            history(runs)
        ));
    }
    if job["overlap_skipped_count"].as_u64() != Some(skipped) {
        return Err(format!(
            "job {name}: overlap_skipped_count {} is not what its skipped records add up to ({skipped}):\n{}",
            job["overlap_skipped_count"],
            history(runs)
        ));
    }
    Ok(covered.len())
}

/// The earliest dispatch under an epoch newer than `epoch`, as seconds since the epoch.
pub fn first_dispatch_after_epoch(runs: &[Value], epoch: i64) -> Option<f64> {
    runs.iter()
        .filter(|run| run["epoch"].as_i64() > Some(epoch))
        .filter(|run| !run["dispatched_at"].is_null())
        .map(|run| seconds(&run["dispatched_at"]))
        .min_by(f64::total_cmp)
}
