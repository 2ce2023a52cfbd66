//! The run policies end to end (DESIGN §3): timeouts, retries, overlap, catch-up, max
//! runs, continuation, failure tracking and auto-pause, manual and timed runs, cancel,
//! pause / resume, graceful drain, rescheduling and bad policy values. Each test shows the
//! policy's effect where a user sees it — the run history and the job's counters — through
//! real `cronfleet coordinator` and `cronfleet worker` processes over a real PostgreSQL.
//! Shell jobs write a ledger of when each run started and ended, which proves from outside
//! that no job ever had two runs at once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, assert_no_overlap, create, http_get, ledger_mark,
    ledger_script, read_ledger, seconds_now, states, wait_for, write_ledger,
};
use cronfleet_e2e::history::{assert_every_slot_accounted_once, history, seconds};
use cronfleet_worker::{HandlerError, Outcome, Worker};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------ helpers

/// A time `delay` from now, as RFC 3339 (what `job run --at` takes).
fn rfc3339_in(delay: Duration) -> String {
    let at = chrono::Utc::now() + chrono::TimeDelta::from_std(delay).unwrap();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `--args` for a shell job.
fn shell(script: &str) -> String {
    json!({ "script": script }).to_string()
}

fn job(cluster: &Cluster, name: &str) -> Value {
    cluster.cli_json(&["job", "get", name])
}

fn run(cluster: &Cluster, id: &Value) -> Value {
    cluster.cli_json(&["run", "get", &id.to_string()])
}

fn with_state<'a>(runs: &'a [Value], state: &str) -> Vec<&'a Value> {
    runs.iter().filter(|run| run["state"] == state).collect()
}

fn with_trigger<'a>(runs: &'a [Value], trigger: &str) -> Vec<&'a Value> {
    runs.iter()
        .filter(|run| run["trigger"] == trigger)
        .collect()
}

fn is_open(run: &Value) -> bool {
    matches!(
        run["state"].as_str(),
        Some("pending" | "dispatched" | "running")
    )
}

/// Polls the runs of `job` until `condition` holds; returns them.
fn wait_for_runs(
    cluster: &Cluster,
    job: &str,
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut runs = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        runs = cluster.runs_of(job);
        if condition(&runs) {
            return runs;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}; runs of {job}:\n{}\n{}",
        history(&runs),
        cluster.logs()
    );
}

/// Waits until no run of `job` is pending, dispatched or running; returns its runs.
fn wait_until_settled(cluster: &Cluster, job: &str, timeout: Duration) -> Vec<Value> {
    wait_for_runs(cluster, job, "every run to finish", timeout, |runs| {
        !runs.is_empty() && !runs.iter().any(is_open)
    })
}

/// Whether a process is gone: no `/proc` entry, or a zombie (dead, not reaped yet).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "PID (COMM) STATE …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Reads the whitespace-separated pids a script wrote to `file`.
fn read_pids(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// No two missed records of a job are adjacent: a contiguous range of missed slots is ONE
/// record.
fn assert_one_missed_record_per_range(name: &str, runs: &[Value], every: f64) {
    let mut ranges: Vec<(f64, f64)> = with_state(runs, "missed")
        .iter()
        .map(|run| {
            let first = seconds(&run["slot"]);
            let last = if run["last_slot"].is_null() {
                first
            } else {
                seconds(&run["last_slot"])
            };
            (first, last)
        })
        .collect();
    ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in ranges.windows(2) {
        assert!(
            pair[1].0 - pair[0].1 > every * 1.5,
            "job {name}: one contiguous range of missed slots is split over several records:\n{}",
            history(runs)
        );
    }
}

// -------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_timeout_is_killed_and_the_next_slot_runs() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    // The sandbox's workers stop shell runs with SIGTERM, then SIGKILL after 1 s.
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    let pids = cluster.dir.path().join("pids");
    let marker = cluster.dir.path().join("hung-once");
    // The first run ignores SIGTERM — and so does its child, which inherits that — and
    // would take a minute: only SIGKILL stops it. Later runs are quick.
    let script = format!(
        "if [ -e {marker} ]; then {quick}; exit 0; fi; touch {marker}; {start}; \
         trap '' TERM; sleep 60 & echo \"$$ $!\" > {pids}; wait",
        marker = marker.display(),
        quick = ledger_script(&ledger, 0.1),
        start = ledger_mark(&ledger, "start"),
        pids = pids.display(),
    );
    create(
        &cluster,
        "hangs",
        &[
            "--handler",
            "shell",
            "--every",
            "8s",
            "--timeout",
            "2s",
            "--args",
            &shell(&script),
        ],
    );

    wait_for(
        "the script to write its pids",
        Duration::from_secs(15),
        || read_pids(&pids).len() == 2,
    );
    let script_pids = read_pids(&pids);
    let runs = wait_for_runs(
        &cluster,
        "hangs",
        "the first run to time out",
        Duration::from_secs(15),
        |runs| runs.first().is_some_and(|run| !is_open(run)),
    );
    let stopped_by = seconds_now();
    let first = &runs[0];
    assert_eq!(
        (&first["state"], &first["trigger"], &first["attempt"]),
        (&json!("timed_out"), &json!("schedule"), &json!(1)),
        "{}",
        history(&runs)
    );
    assert!(
        first["error"].as_str().unwrap_or("").contains("deadline"),
        "the error says why: {first}"
    );
    let lasted = seconds(&first["finished_at"]) - seconds(&first["started_at"]);
    assert!(
        (2.0..30.0).contains(&lasted),
        "stopped at its 2 s timeout, not before and not after the script's minute: {lasted} s\n{first}"
    );
    // The script and its child ignored SIGTERM: they are gone because the process group got
    // SIGKILL, and that happened before the run was reported over.
    for pid in &script_pids {
        assert!(
            process_gone(pid),
            "process {pid} of the timed-out run outlived it\n{}",
            cluster.logs()
        );
    }
    let streak = job(&cluster, "hangs");
    assert_eq!(
        streak["failure_count"], 1,
        "a timeout counts as a failure: {streak:#}"
    );
    assert!(streak["first_failure_at"].is_string(), "{streak:#}");

    let runs = wait_for_runs(
        &cluster,
        "hangs",
        "the next slot to run",
        Duration::from_secs(20),
        |runs| runs.len() >= 2 && !runs.iter().any(is_open),
    );
    assert_eq!(
        states(&runs),
        ["timed_out", "succeeded"],
        "{}",
        history(&runs)
    );
    let gap = seconds(&runs[1]["slot"]) - seconds(&runs[0]["slot"]);
    assert!(
        (gap - 8.0).abs() < 0.01,
        "the job's very next slot ran: {}",
        history(&runs)
    );
    assert_eq!(runs[1]["trigger"], "schedule");
    let healed = job(&cluster, "hangs");
    assert_eq!(
        (&healed["failure_count"], &healed["first_failure_at"]),
        (&json!(0), &Value::Null),
        "a success ends the failure streak: {healed:#}"
    );
    let entries = read_ledger(&ledger);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries[0].end.is_none(),
        "the hung run was killed: {entries:?}"
    );
    assert_no_overlap(&entries, Some(stopped_by));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_is_retried_as_the_same_slot_until_its_retries_are_used_up() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &["--retry-base-delay", "200ms"]);
    cluster.start_worker("w1", "shell", 4);
    let ledger = cluster.ledger_path();
    let marker = cluster.dir.path().join("failed-once");
    create(
        &cluster,
        "always-fails",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--retries",
            "2",
            "--args",
            &shell(&format!("{}; exit 1", ledger_script(&ledger, 0.1))),
        ],
    );
    create(
        &cluster,
        "fails-once",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--retries",
            "2",
            "--args",
            &shell(&format!(
                "{}; if [ -e {marker} ]; then exit 0; fi; touch {marker}; exit 1",
                ledger_script(&ledger, 0.1),
                marker = marker.display()
            )),
        ],
    );
    // Every second, five retries: the backoff grows past the interval (100–200 ms, …,
    // 1.6–3.2 s), so slots come while a retry waits — and find the job busy.
    let busy_ledger = cluster.dir.path().join("busy-ledger");
    create(
        &cluster,
        "retry-busy",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--retries",
            "5",
            "--args",
            &shell(&format!("{}; exit 1", ledger_script(&busy_ledger, 0.05))),
        ],
    );

    wait_for_runs(
        &cluster,
        "always-fails",
        "three failed attempts",
        Duration::from_secs(20),
        |runs| runs.len() >= 3 && !runs.iter().any(is_open),
    );
    wait_until_settled(&cluster, "fails-once", Duration::from_secs(20));
    // A fourth attempt would come at most 800 ms (200 ms · 2²) later.
    std::thread::sleep(Duration::from_millis(2500));

    let runs = cluster.runs_of("always-fails");
    let described = history(&runs);
    assert_eq!(states(&runs), ["failed"; 3], "{described}");
    let attempts: Vec<&Value> = runs.iter().map(|run| &run["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)], "{described}");
    let triggers: Vec<&Value> = runs.iter().map(|run| &run["trigger"]).collect();
    assert_eq!(
        triggers,
        [&json!("schedule"), &json!("retry"), &json!("retry")],
        "{described}"
    );
    assert!(
        runs.iter().all(|run| run["slot"] == runs[0]["slot"]),
        "every attempt is at the same slot:\n{described}"
    );
    let failing = job(&cluster, "always-fails");
    assert_eq!(failing["failure_count"], 3, "{failing:#}");
    assert!(failing["first_failure_at"].is_string(), "{failing:#}");
    assert_eq!(
        failing["paused"], false,
        "5 failures over 7 days pause a job, 3 in a second do not"
    );

    let runs = cluster.runs_of("fails-once");
    let described = history(&runs);
    assert_eq!(states(&runs), ["failed", "succeeded"], "{described}");
    assert_eq!(
        (&runs[1]["trigger"], &runs[1]["attempt"], &runs[1]["slot"]),
        (&json!("retry"), &json!(2), &runs[0]["slot"]),
        "{described}"
    );
    let healed = job(&cluster, "fails-once");
    assert_eq!(
        (&healed["failure_count"], &healed["first_failure_at"]),
        (&json!(0), &Value::Null),
        "a successful retry ends the failure streak: {healed:#}"
    );

    // While its first slot still had attempts to come, the job was busy: the slots that
    // came meanwhile were skipped, and none ran.
    let runs = wait_for_runs(
        &cluster,
        "retry-busy",
        "six attempts at the first slot",
        Duration::from_secs(20),
        |runs| {
            runs.iter()
                .filter(|run| run["attempt"] == 6 && !is_open(run))
                .count()
                == 1
        },
    );
    assert!(cluster.cli(&["job", "pause", "retry-busy"]).success);
    let busy = wait_until_settled(&cluster, "retry-busy", Duration::from_secs(10));
    let described = history(&busy);
    let first_slot = &runs[0]["slot"];
    let chain: Vec<&Value> = busy
        .iter()
        .filter(|run| &run["slot"] == first_slot && run["state"] != "skipped")
        .collect();
    let attempts: Vec<u64> = chain
        .iter()
        .filter_map(|run| run["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5, 6], "{described}");
    assert!(
        chain.iter().all(|run| run["state"] == "failed"),
        "{described}"
    );
    let (chain_start, chain_end) = (
        seconds(&chain[0]["started_at"]),
        seconds(&chain[5]["finished_at"]),
    );
    for run in &busy {
        if &run["slot"] != first_slot && !run["started_at"].is_null() {
            assert!(
                seconds(&run["started_at"]) >= chain_end,
                "run {} started while the first slot still had a retry to come:\n{described}",
                run["id"]
            );
        }
    }
    assert!(
        with_state(&busy, "skipped").iter().any(|run| {
            let slot = seconds(&run["slot"]);
            slot > chain_start && slot < chain_end
        }),
        "slots that came while a retry waited were skipped:\n{described}"
    );
    assert_every_slot_accounted_once(&job(&cluster, "retry-busy"), &busy, 1.0);
    assert_no_overlap(&read_ledger(&busy_ledger), None);

    // The attempts ran one after another, each after a backoff of at least half the base
    // delay ("equal jitter": 100 ms, then 200 ms).
    let entries = read_ledger(&ledger);
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_no_overlap(&entries, None);
    for job in ["always-fails", "fails-once"] {
        let mine: Vec<_> = entries.iter().filter(|entry| entry.job == job).collect();
        for pair in mine.windows(2) {
            let waited = pair[1].start - pair[0].end.expect("every attempt ended");
            assert!(
                waited >= 0.09,
                "{job}: the retry waited only {waited} s: {entries:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overlap_skip_queue_and_replace_never_run_a_job_twice_at_once() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 4);
    let ledger = cluster.ledger_path();
    // skip: a 2.5 s run every second.
    create(
        &cluster,
        "ov-skip",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--args",
            &shell(&ledger_script(&ledger, 2.5)),
        ],
    );
    // queue: a 4.5 s run every 2 s — the slot at 2 s waits, the one at 4 s finds a run
    // already waiting and is skipped, and the waiting run starts at 4.5 s, before the next
    // slot at 6 s.
    create(
        &cluster,
        "ov-queue",
        &[
            "--handler",
            "shell",
            "--every",
            "2s",
            "--overlap",
            "queue",
            "--args",
            &shell(&ledger_script(&ledger, 4.5)),
        ],
    );
    // replace: a 5 s run every 2 s, which writes its end when SIGTERM stops it.
    let replaced = format!(
        "trap '{end}; exit 143' TERM; {start}; sleep 5 & wait; {end}",
        start = ledger_mark(&ledger, "start"),
        end = ledger_mark(&ledger, "end"),
    );
    create(
        &cluster,
        "ov-replace",
        &[
            "--handler",
            "shell",
            "--every",
            "2s",
            "--overlap",
            "replace",
            "--args",
            &shell(&replaced),
        ],
    );

    // While they run: the queue job never has more than one waiting run.
    let started = std::time::Instant::now();
    let mut queue_paused = false;
    while started.elapsed() < Duration::from_secs(7) {
        let runs = cluster.runs_of("ov-queue");
        let waiting = with_state(&runs, "pending").len();
        assert!(
            waiting <= 1,
            "ov-queue has {waiting} waiting runs:\n{}",
            history(&runs)
        );
        // Once the queued run has started, the queue job has shown what it does.
        if !queue_paused && with_state(&runs, "succeeded").len() == 1 && runs.iter().any(is_open) {
            assert!(cluster.cli(&["job", "pause", "ov-queue"]).success);
            queue_paused = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for job in ["ov-skip", "ov-replace", "ov-queue"] {
        assert!(cluster.cli(&["job", "pause", job]).success);
    }
    let skip = wait_until_settled(&cluster, "ov-skip", Duration::from_secs(15));
    let queue = wait_until_settled(&cluster, "ov-queue", Duration::from_secs(20));
    let replace = wait_until_settled(&cluster, "ov-replace", Duration::from_secs(15));
    let entries = read_ledger(&ledger);
    assert!(
        entries.iter().all(|entry| entry.end.is_some()),
        "every run recorded its end, the replaced ones in their TERM trap: {entries:?}"
    );
    assert_no_overlap(&entries, None);

    // skip: busy slots become `skipped` records and count on the job.
    let described = history(&skip);
    let skip_job = job(&cluster, "ov-skip");
    assert!(
        with_state(&skip, "succeeded").len() >= 2 && !with_state(&skip, "skipped").is_empty(),
        "{described}"
    );
    assert!(
        skip.iter()
            .all(|run| matches!(run["state"].as_str(), Some("succeeded" | "skipped"))),
        "{described}"
    );
    assert!(
        skip_job["overlap_skipped_count"].as_u64().unwrap_or(0) >= 2,
        "{skip_job:#}\n{described}"
    );
    assert_every_slot_accounted_once(&skip_job, &skip, 1.0);

    // queue: the second slot waited and started the moment the first run ended; the third
    // found a run waiting and was skipped.
    let described = history(&queue);
    let queue_job = job(&cluster, "ov-queue");
    let ran = with_state(&queue, "succeeded");
    assert!(ran.len() >= 2, "{described}");
    assert!(!with_state(&queue, "skipped").is_empty(), "{described}");
    assert!(
        (seconds(&ran[1]["slot"]) - seconds(&ran[0]["slot"]) - 2.0).abs() < 0.01,
        "the very next slot was queued, not skipped:\n{described}"
    );
    let mine: Vec<_> = entries.iter().filter(|e| e.job == "ov-queue").collect();
    let waited = mine[1].start - mine[0].end.unwrap();
    assert!(
        (0.0..1.0).contains(&waited),
        "the queued run started {waited} s after the first ended (the next slot was 1.5 s away): {mine:?}"
    );
    assert_every_slot_accounted_once(&queue_job, &queue, 2.0);

    // replace: each new slot stopped the run before it; only the last one, after the pause,
    // ran to its end.
    let described = history(&replace);
    let cancelled = with_state(&replace, "cancelled");
    assert!(cancelled.len() >= 2, "{described}");
    for run in &cancelled {
        assert!(
            run["error"].as_str().unwrap_or("").contains("replace"),
            "the error says it was replaced: {run}"
        );
    }
    assert_eq!(replace.last().unwrap()["state"], "succeeded", "{described}");
    let mine: Vec<_> = entries.iter().filter(|e| e.job == "ov-replace").collect();
    assert!(mine.len() >= 3, "{mine:?}");
    for pair in mine.windows(2) {
        let lasted = pair[0].end.unwrap() - pair[0].start;
        assert!(
            lasted < 4.5,
            "run {} was stopped by the next slot, not left to finish its 5 s: {mine:?}",
            pair[0].run
        );
    }
    assert_every_slot_accounted_once(&job(&cluster, "ov-replace"), &replace, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_missed_while_the_coordinator_was_down_follow_the_catch_up_policy() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 8);
    let ledger = cluster.ledger_path();
    let script = shell(&ledger_script(&ledger, 0.05));
    let jobs: [(&str, &[&str]); 4] = [
        ("cu-one", &[]),
        ("cu-all", &["--catch-up", "all"]),
        ("cu-none", &["--catch-up", "none"]),
        (
            "cu-window",
            &["--catch-up", "all", "--catch-up-window", "3s"],
        ),
    ];
    for (name, policy) in jobs {
        let mut args = vec!["--handler", "shell", "--every", "1s", "--args", &script];
        args.extend_from_slice(policy);
        create(&cluster, name, &args);
    }
    std::thread::sleep(Duration::from_secs(3));

    let stopped_at = seconds_now();
    let status = cluster.stop_coordinator(0);
    assert!(
        status.is_some_and(|status| status.success()),
        "SIGTERM stops the coordinator with status 0: {status:?}\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_secs(10));
    let restarted_at = seconds_now();
    cluster.restart_coordinator(0);
    let worker_http = cluster.workers[0].http;
    wait_for("the worker to reconnect", Duration::from_secs(15), || {
        http_get(worker_http, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    wait_for_runs(
        &cluster,
        "cu-all",
        "the catch-up runs to finish",
        Duration::from_secs(30),
        |runs| !with_trigger(runs, "catch_up").is_empty() && !runs.iter().any(is_open),
    );
    std::thread::sleep(Duration::from_secs(2));
    for (name, _) in jobs {
        assert!(cluster.cli(&["job", "pause", name]).success);
    }

    let entries = read_ledger(&ledger);
    assert_no_overlap(&entries, None);
    for (name, _) in jobs {
        let runs = wait_until_settled(&cluster, name, Duration::from_secs(15));
        let job = job(&cluster, name);
        let described = format!("{job:#}\n{}", history(&runs));
        assert_every_slot_accounted_once(&job, &runs, 1.0);
        assert_one_missed_record_per_range(name, &runs, 1.0);
        // A run caught in flight by the stop may be declared lost and run again.
        assert!(
            runs.iter().all(|run| matches!(
                run["state"].as_str(),
                Some("succeeded" | "missed" | "skipped" | "lost")
            )),
            "{name}:\n{described}"
        );
        // The slots of the outage: after the stop, up to the restart. Leasing them was
        // impossible, so each policy decided them after the restart.
        let first_slot = runs
            .iter()
            .map(|run| seconds(&run["slot"]))
            .min_by(f64::total_cmp)
            .unwrap();
        let outage =
            ((restarted_at - first_slot).floor() - (stopped_at - first_slot).floor()) as i64;
        let in_outage = |run: &&Value| {
            let slot = seconds(&run["slot"]);
            slot > stopped_at - 1.0 && slot <= restarted_at + 1.0
        };
        let catch_up = with_trigger(&runs, "catch_up");
        let missed = with_state(&runs, "missed");
        let missed_slots = |record: &Value| record["slot_count"].as_i64().unwrap_or(1);
        match name {
            "cu-one" => {
                assert_eq!(missed.len(), 1, "{name}: one missed record:\n{described}");
                let count = missed_slots(missed[0]);
                assert!(
                    (outage - 2..=outage + 2).contains(&count),
                    "{name}: all but one of the {outage} slots of the outage are missed:\n{described}"
                );
                assert!(catch_up.len() <= 1, "{name}:\n{described}");
                // The slot right after the missed range ran once, for all of them.
                let after = seconds(&missed[0]["last_slot"]) + 1.0;
                let covering: Vec<&Value> = runs
                    .iter()
                    .filter(|run| (seconds(&run["slot"]) - after).abs() < 0.01)
                    .collect();
                assert!(
                    covering.len() == 1
                        && covering[0]["state"] == "succeeded"
                        && matches!(
                            covering[0]["trigger"].as_str(),
                            Some("catch_up" | "schedule")
                        )
                        && seconds(&covering[0]["started_at"]) > restarted_at,
                    "{name}: one run covers the outage:\n{described}"
                );
            }
            "cu-all" => {
                assert!(missed.is_empty(), "{name}: nothing missed:\n{described}");
                let ran: Vec<&Value> = runs
                    .iter()
                    .filter(in_outage)
                    .filter(|run| run["state"] == "succeeded")
                    .collect();
                assert!(
                    (outage - 1..=outage + 2).contains(&(ran.len() as i64)),
                    "{name}: every one of the {outage} slots of the outage ran:\n{described}"
                );
                assert!(
                    (outage - 3..=outage + 2).contains(&(catch_up.len() as i64)),
                    "{name}: the late ones as catch-up runs:\n{described}"
                );
                // One after another, oldest slot first.
                let mut order: Vec<&Value> = catch_up.clone();
                order.sort_by(|a, b| {
                    seconds(&a["started_at"]).total_cmp(&seconds(&b["started_at"]))
                });
                assert!(
                    order
                        .windows(2)
                        .all(|pair| seconds(&pair[0]["slot"]) < seconds(&pair[1]["slot"])
                            && seconds(&pair[0]["finished_at"]) <= seconds(&pair[1]["started_at"])),
                    "{name}: the catch-up runs ran in slot order, one at a time:\n{described}"
                );
            }
            "cu-none" => {
                assert!(catch_up.is_empty(), "{name}: no catch-up run:\n{described}");
                assert_eq!(missed.len(), 1, "{name}: one missed record:\n{described}");
                let count = missed_slots(missed[0]);
                assert!(
                    (outage - 2..=outage + 2).contains(&count),
                    "{name}: the {outage} slots of the outage are missed:\n{described}"
                );
            }
            "cu-window" => {
                assert_eq!(missed.len(), 1, "{name}: one missed record:\n{described}");
                let count = missed_slots(missed[0]);
                assert!(
                    (1..=4).contains(&catch_up.len()),
                    "{name}: only the slots of the last 3 s catch up:\n{described}"
                );
                assert!(
                    (outage - 6..=outage - 1).contains(&count),
                    "{name}: the older slots of the outage are missed:\n{described}"
                );
                // The window's runs are the latest slots, after the missed range.
                let last_missed = seconds(&missed[0]["last_slot"]);
                assert!(
                    catch_up
                        .iter()
                        .all(|run| seconds(&run["slot"]) > last_missed),
                    "{name}:\n{described}"
                );
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_runs_stops_a_job_after_that_many_scheduled_runs() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    create(
        &cluster,
        "three-times",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--max-runs",
            "3",
            "--args",
            &shell(&ledger_script(&ledger, 0.1)),
        ],
    );
    wait_for_runs(
        &cluster,
        "three-times",
        "the first run",
        Duration::from_secs(10),
        |runs| runs.iter().any(|run| run["state"] == "succeeded"),
    );
    let manual = cluster.cli(&["job", "run", "three-times"]);
    assert!(manual.success, "{}", manual.stderr);

    let mut done = Value::Null;
    wait_for("the job to end", Duration::from_secs(15), || {
        done = job(&cluster, "three-times");
        done["active"] == false
    });
    std::thread::sleep(Duration::from_secs(3));
    let runs = wait_until_settled(&cluster, "three-times", Duration::from_secs(10));
    let described = format!("{done:#}\n{}", history(&runs));
    let scheduled: Vec<&Value> = with_trigger(&runs, "schedule")
        .into_iter()
        .filter(|run| run["state"] == "succeeded")
        .collect();
    assert_eq!(scheduled.len(), 3, "{described}");
    assert_eq!(
        with_trigger(&runs, "manual").len(),
        1,
        "the manual run ran, and did not count:\n{described}"
    );
    assert!(
        runs.iter()
            .all(|run| matches!(run["trigger"].as_str(), Some("schedule" | "manual"))),
        "{described}"
    );
    let after = job(&cluster, "three-times");
    assert_eq!(
        (
            &after["active"],
            &after["remaining_runs"],
            &after["max_runs"],
            &after["next_run_at"]
        ),
        (&json!(false), &json!(0), &json!(3), &Value::Null),
        "{after:#}"
    );
    assert_eq!(
        cluster.runs_of("three-times").len(),
        runs.len(),
        "nothing ran after the end"
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}

#[test]
fn a_handler_with_work_left_continues_at_once_until_the_batch_is_done() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the SDK worker");
    let database = runtime
        .block_on(cronfleet_testkit::test_database())
        .expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    let ledger = cluster.ledger_path();

    // A batch of 5 chunks, one per run: each run reports its progress and what is left.
    let left = Arc::new(AtomicU64::new(5));
    let worker = Worker::builder()
        .coordinators([cluster.coordinators[0].url()])
        .node_id("sdk")
        .capacity(4)
        .handler_fn("batch", {
            let left = left.clone();
            let ledger = ledger.clone();
            move |ctx| {
                let left = left.clone();
                let ledger = ledger.clone();
                async move {
                    write_ledger(&ledger, "start", ctx.job(), ctx.run_id());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let remaining = left
                        .fetch_sub(1, Ordering::SeqCst)
                        .checked_sub(1)
                        .ok_or_else(|| HandlerError::new("the batch was already done"))?;
                    ctx.progress(5 - remaining, remaining);
                    write_ledger(&ledger, "end", ctx.job(), ctx.run_id());
                    Ok::<_, HandlerError>(Outcome::with_remaining(remaining))
                }
            }
        })
        .build()
        .expect("a valid worker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    wait_for(
        "the SDK worker to register",
        Duration::from_secs(15),
        || {
            cluster
                .cli_json(&["workers"])
                .as_array()
                .is_some_and(|workers| workers.iter().any(|w| w["node_id"] == "sdk"))
        },
    );

    create(&cluster, "batch", &["--handler", "batch", "--every", "1h"]);
    wait_for_runs(
        &cluster,
        "batch",
        "the batch to be done",
        Duration::from_secs(20),
        |runs| runs.len() >= 5 && !runs.iter().any(is_open),
    );
    std::thread::sleep(Duration::from_secs(2));
    let runs = cluster.runs_of("batch");
    let described = history(&runs);
    assert_eq!(states(&runs), ["succeeded"; 5], "{described}");
    let triggers: Vec<&str> = runs
        .iter()
        .map(|run| run["trigger"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        triggers,
        [
            "schedule",
            "continuation",
            "continuation",
            "continuation",
            "continuation"
        ],
        "{described}"
    );
    let progress: Vec<(u64, u64)> = runs
        .iter()
        .map(|run| {
            (
                run["progress_done"].as_u64().unwrap_or(0),
                run["progress_remaining"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [(1, 4), (2, 3), (3, 2), (4, 1), (5, 0)],
        "{described}"
    );
    assert_eq!(left.load(Ordering::SeqCst), 0, "no chunk was run twice");
    let batch = job(&cluster, "batch");
    let next = seconds(&batch["next_run_at"]);
    assert!(
        next > seconds_now() + 3000.0,
        "the schedule is untouched: the next run is the next hourly slot: {batch:#}"
    );
    assert_no_overlap(&read_ledger(&ledger), None);

    let _ = stop.send(());
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), running).await })
        .expect("the SDK worker stops")
        .expect("the SDK worker did not panic");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_failing_is_paused_automatically_until_resumed() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator(
        "c1",
        &["--auto-pause-failures", "3", "--auto-pause-after", "1s"],
    );
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    create(
        &cluster,
        "broken",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--args",
            &shell(&format!("{}; exit 3", ledger_script(&ledger, 0.05))),
        ],
    );

    let mut paused = Value::Null;
    wait_for("the job to be paused", Duration::from_secs(20), || {
        paused = job(&cluster, "broken");
        paused["paused"] == true
    });
    let runs = wait_until_settled(&cluster, "broken", Duration::from_secs(10));
    let described = format!("{paused:#}\n{}", history(&runs));
    assert!(
        paused["pause_note"]
            .as_str()
            .unwrap_or("")
            .starts_with("paused automatically"),
        "{described}"
    );
    assert_eq!(
        with_state(&runs, "failed").len(),
        3,
        "paused by the third failure, which came more than a second after the first:\n{described}"
    );
    assert_eq!(paused["failure_count"], 3, "{described}");
    let first_failure = seconds(&paused["first_failure_at"]);
    let failed = with_state(&runs, "failed");
    assert!(
        (first_failure - seconds(&failed[0]["finished_at"])).abs() < 1.0,
        "the streak started with the first failure:\n{described}"
    );

    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cluster.runs_of("broken").len(),
        runs.len(),
        "nothing runs while the job is paused"
    );
    let resumed = cluster.cli_json(&["job", "resume", "broken"]);
    assert_eq!(
        (&resumed["paused"], &resumed["pause_note"]),
        (&json!(false), &Value::Null),
        "{resumed:#}"
    );
    wait_for_runs(
        &cluster,
        "broken",
        "the resumed job to run again",
        Duration::from_secs(10),
        |now| now.len() > runs.len(),
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_and_timed_runs_leave_the_schedule_alone_and_wait_for_a_busy_job() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 4);
    let ledger = cluster.ledger_path();
    create(
        &cluster,
        "slow",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &shell(&ledger_script(&ledger, 3.0)),
        ],
    );
    create(
        &cluster,
        "ticking",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--args",
            &shell(&ledger_script(&ledger, 0.1)),
        ],
    );
    wait_for_runs(
        &cluster,
        "slow",
        "the scheduled run to start",
        Duration::from_secs(10),
        |runs| runs.first().is_some_and(|run| run["state"] == "running"),
    );
    // Leasing the first slot moved the schedule on to the next one, an hour away.
    let next_run_at = job(&cluster, "slow")["next_run_at"].clone();

    // Run now, while the job is busy: queued, and the caller is told.
    let said = cluster.cli(&["job", "run", "slow"]);
    assert!(said.success, "{}", said.stderr);
    assert!(
        said.stdout.contains("queued"),
        "the caller is told the run waits: {}",
        said.stdout
    );
    // Trigger at a time a few seconds ahead, on an idle job that runs every second.
    let at = rfc3339_in(Duration::from_secs(5));
    let timed = cluster.cli_json(&["job", "run", "ticking", "--at", &at]);
    assert_eq!(
        (&timed["trigger"], &timed["state"]),
        (&json!("manual"), &json!("pending")),
        "{timed:#}"
    );
    assert!(
        (seconds(&timed["slot"]) - seconds(&json!(at))).abs() < 0.01,
        "{timed:#}"
    );
    let asked_at = seconds_now();

    let slow = wait_until_settled(&cluster, "slow", Duration::from_secs(15));
    let described = history(&slow);
    assert_eq!(states(&slow), ["succeeded", "succeeded"], "{described}");
    assert_eq!(
        (&slow[0]["trigger"], &slow[1]["trigger"]),
        (&json!("schedule"), &json!("manual")),
        "{described}"
    );
    let mine: Vec<_> = read_ledger(&ledger)
        .into_iter()
        .filter(|e| e.job == "slow")
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let waited = mine[1].start - mine[0].end.unwrap();
    assert!(
        (0.0..2.0).contains(&waited),
        "the queued run started when the first ended: {mine:?}"
    );

    let timed_id = timed["id"].clone();
    wait_for("the timed run to finish", Duration::from_secs(15), || {
        run(&cluster, &timed_id)["state"] == "succeeded"
    });
    let timed = run(&cluster, &timed_id);
    let at = seconds(&json!(at));
    assert!(
        seconds(&timed["started_at"]) >= at,
        "not started before its time: {timed:#}"
    );
    let ticking = cluster.runs_of("ticking");
    let described = history(&ticking);
    // While the timed run waited for its time, the regular schedule went on as before.
    let regular_meanwhile = ticking
        .iter()
        .filter(|run| run["trigger"] == "schedule" && run["state"] == "succeeded")
        .filter(|run| {
            let slot = seconds(&run["slot"]);
            slot > asked_at && slot < at - 0.5
        })
        .count();
    assert!(
        regular_meanwhile >= 2,
        "a run waiting for its time does not hold up the schedule:\n{described}"
    );
    assert!(
        with_state(&ticking, "skipped")
            .iter()
            .all(|run| seconds(&run["slot"]) > at - 1.5),
        "no slot was skipped because of a run waiting for its time:\n{described}"
    );
    for job_name in ["slow", "ticking"] {
        assert_eq!(
            with_trigger(&cluster.runs_of(job_name), "manual").len(),
            1,
            "{job_name}"
        );
    }
    assert_eq!(
        job(&cluster, "slow")["next_run_at"],
        next_run_at,
        "manual runs leave the schedule alone"
    );
    assert!(cluster.cli(&["job", "pause", "ticking"]).success);
    std::thread::sleep(Duration::from_millis(500));
    assert_no_overlap(&read_ledger(&ledger), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_stops_it_whether_it_waits_or_runs() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    let pids = cluster.dir.path().join("pids");

    // Pending: no worker offers its handler.
    create(
        &cluster,
        "unserved",
        &["--handler", "nobody-offers-this", "--every", "1h"],
    );
    let waiting = wait_for_runs(
        &cluster,
        "unserved",
        "the run to wait for a worker",
        Duration::from_secs(10),
        |runs| runs.first().is_some_and(|run| run["state"] == "pending"),
    );
    let cancel = cluster.cli(&["run", "cancel", &waiting[0]["id"].to_string()]);
    assert!(cancel.success, "{}\n{}", cancel.stderr, cluster.logs());
    let runs = wait_for_runs(
        &cluster,
        "unserved",
        "the waiting run to be cancelled",
        Duration::from_secs(5),
        |runs| runs[0]["state"] == "cancelled",
    );
    assert_eq!(runs.len(), 1, "{}", history(&runs));

    // Running: a shell script whose process group gets SIGTERM.
    let script = format!(
        "trap '{end}; exit 143' TERM; {start}; sleep 60 & echo \"$$ $!\" > {pids}; wait; {end}",
        start = ledger_mark(&ledger, "start"),
        end = ledger_mark(&ledger, "end"),
        pids = pids.display(),
    );
    create(
        &cluster,
        "sleeper",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &shell(&script),
        ],
    );
    wait_for(
        "the script to write its pids",
        Duration::from_secs(15),
        || read_pids(&pids).len() == 2,
    );
    let running = wait_for_runs(
        &cluster,
        "sleeper",
        "the run to be running",
        Duration::from_secs(5),
        |runs| runs.first().is_some_and(|run| run["state"] == "running"),
    );
    let id = running[0]["id"].to_string();
    let asked = seconds_now();
    let cancel = cluster.cli(&["run", "cancel", &id]);
    assert!(cancel.success, "{}", cancel.stderr);
    let runs = wait_for_runs(
        &cluster,
        "sleeper",
        "the running run to be cancelled",
        Duration::from_secs(10),
        |runs| !is_open(&runs[0]),
    );
    let described = history(&runs);
    assert_eq!(states(&runs), ["cancelled"], "{described}");
    assert!(
        runs[0]["error"].as_str().unwrap_or("").contains("cancel"),
        "{described}"
    );
    for pid in read_pids(&pids) {
        assert!(
            process_gone(&pid),
            "process {pid} of the cancelled run is still running"
        );
    }
    let entries = read_ledger(&ledger);
    let end = entries[0]
        .end
        .expect("the script's TERM trap recorded its end");
    assert!(
        end >= asked && end - asked < 10.0,
        "the script was stopped by the cancel: {entries:?}"
    );
    for name in ["unserved", "sleeper"] {
        assert_eq!(
            job(&cluster, name)["failure_count"],
            0,
            "a cancel says nothing about the job's health"
        );
    }
    // A finished run cannot be cancelled.
    let again = cluster.cli(&["run", "cancel", &id]);
    assert!(
        !again.success && again.stderr.starts_with("error: "),
        "{again:?}"
    );
    assert_eq!(run(&cluster, &running[0]["id"])["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_job_runs_nothing_and_catches_up_once_when_resumed() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    create(
        &cluster,
        "nap",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--args",
            &shell(&ledger_script(&ledger, 0.1)),
        ],
    );
    wait_for_runs(
        &cluster,
        "nap",
        "two runs",
        Duration::from_secs(10),
        |runs| with_state(runs, "succeeded").len() >= 2,
    );
    let paused = cluster.cli_json(&["job", "pause", "nap", "--note", "db maintenance"]);
    assert_eq!(
        (&paused["paused"], &paused["pause_note"]),
        (&json!(true), &json!("db maintenance")),
        "{paused:#}"
    );
    let before = wait_until_settled(&cluster, "nap", Duration::from_secs(5));
    let paused_at = seconds_now();
    std::thread::sleep(Duration::from_secs(4));
    let during = cluster.runs_of("nap");
    assert_eq!(
        during.len(),
        before.len(),
        "nothing runs while paused:\n{}",
        history(&during)
    );
    let resumed = cluster.cli_json(&["job", "resume", "nap"]);
    let resumed_at = seconds_now();
    assert_eq!(
        (&resumed["paused"], &resumed["pause_note"]),
        (&json!(false), &Value::Null),
        "{resumed:#}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(cluster.cli(&["job", "pause", "nap"]).success);
    let runs = wait_until_settled(&cluster, "nap", Duration::from_secs(5));
    let job = job(&cluster, "nap");
    let described = format!("{job:#}\n{}", history(&runs));

    assert_every_slot_accounted_once(&job, &runs, 1.0);
    let new: Vec<&Value> = runs.iter().skip(before.len()).collect();
    let missed: Vec<&&Value> = new.iter().filter(|run| run["state"] == "missed").collect();
    assert_eq!(
        missed.len(),
        1,
        "the slots of the pause are one missed record:\n{described}"
    );
    let count = missed[0]["slot_count"].as_i64().unwrap();
    let paused_for = (resumed_at - paused_at).floor() as i64;
    assert!(
        (paused_for - 2..=paused_for + 1).contains(&count),
        "about {paused_for} slots missed while paused:\n{described}"
    );
    let after = seconds(&missed[0]["last_slot"]) + 1.0;
    let covering: Vec<&&Value> = new
        .iter()
        .filter(|run| (seconds(&run["slot"]) - after).abs() < 0.01)
        .collect();
    assert!(
        covering.len() == 1
            && covering[0]["state"] == "succeeded"
            && seconds(&covering[0]["started_at"]) >= resumed_at - 0.5,
        "one run for the slots of the pause, once resumed:\n{described}"
    );
    assert!(with_trigger(&runs, "catch_up").len() <= 1, "{described}");
    assert_no_overlap(&read_ledger(&ledger), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_worker_finishes_its_run_and_a_restarted_coordinator_gets_its_workers_back() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    cluster.start_worker("w-shell", "shell", 2);
    cluster.start_worker("w-noop", "noop", 1);
    let ledger = cluster.ledger_path();
    let script = shell(&ledger_script(&ledger, 3.0));
    create(
        &cluster,
        "long",
        &["--handler", "shell", "--every", "1h", "--args", &script],
    );
    wait_for("the run to start", Duration::from_secs(10), || {
        !read_ledger(&ledger).is_empty()
    });

    // SIGTERM: the worker drains — the running run finishes, nothing new is taken.
    cluster.workers[0].process.terminate();
    std::thread::sleep(Duration::from_millis(300));
    create(
        &cluster,
        "later",
        &["--handler", "shell", "--every", "1h", "--args", &script],
    );
    let status = cluster.workers[0]
        .process
        .wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|status| status.success()),
        "the drained worker exits with status 0: {status:?}\n{}",
        cluster.logs()
    );
    let long = cluster.runs_of("long");
    assert_eq!(
        (states(&long), &long[0]["worker"]),
        (vec!["succeeded"], &json!("w-shell")),
        "{}",
        history(&long)
    );
    let entries = read_ledger(&ledger);
    assert!(
        entries.len() == 1 && entries[0].end.is_some(),
        "the run ran to its end and nothing else started: {entries:?}"
    );
    let later = cluster.runs_of("later");
    assert!(
        later.iter().all(|run| run["state"] == "pending"),
        "the draining worker was given nothing new (no run refused and lost):\n{}",
        history(&later)
    );

    // SIGTERM to the coordinator: it exits 0; started again, its workers come back.
    let status = cluster.stop_coordinator(0);
    assert!(
        status.is_some_and(|status| status.success()),
        "{status:?}\n{}",
        cluster.logs()
    );
    cluster.restart_coordinator(0);
    wait_for(
        "w-noop to reconnect to the restarted coordinator",
        Duration::from_secs(15),
        || {
            cluster
                .cli_json(&["workers"])
                .as_array()
                .is_some_and(|workers| {
                    workers
                        .iter()
                        .any(|w| w["node_id"] == "w-noop" && w["state"] == "connected")
                })
        },
    );
    // The run that waited through all this runs once a worker offers its handler.
    cluster.start_worker("w-shell-2", "shell", 2);
    let later = wait_for_runs(
        &cluster,
        "later",
        "the waiting run to run",
        Duration::from_secs(15),
        |runs| runs.iter().any(|run| run["state"] == "succeeded"),
    );
    let ran = with_state(&later, "succeeded");
    assert_eq!(
        (ran.len(), &ran[0]["worker"]),
        (1, &json!("w-shell-2")),
        "{}",
        history(&later)
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_interval_reschedules_the_job() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    create(
        &cluster,
        "hourly",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &shell(&ledger_script(&ledger, 0.05)),
        ],
    );
    wait_for_runs(
        &cluster,
        "hourly",
        "the first run",
        Duration::from_secs(10),
        |runs| runs.len() == 1 && runs[0]["state"] == "succeeded",
    );
    let before = job(&cluster, "hourly");
    assert!(
        seconds(&before["next_run_at"]) > seconds_now() + 3000.0,
        "{before:#}"
    );

    let updated = cluster.cli_json(&["job", "update", "hourly", "--every", "1s"]);
    let now = seconds_now();
    assert_eq!(
        (&updated["every"], &updated["version"]),
        (
            &json!("1s"),
            &json!(before["version"].as_i64().unwrap() + 1)
        ),
        "{updated:#}"
    );
    let next = seconds(&updated["next_run_at"]);
    assert!(
        (now - 2.0..=now + 1.5).contains(&next),
        "the next run is recomputed for the new interval: {updated:#}"
    );
    let runs = wait_for_runs(
        &cluster,
        "hourly",
        "runs every second",
        Duration::from_secs(10),
        |runs| with_state(runs, "succeeded").len() >= 4,
    );
    let new = &runs[1..];
    assert!(
        new.iter()
            .all(|run| run["trigger"] == "schedule" && seconds(&run["slot"]) >= now - 2.0),
        "{}",
        history(&runs)
    );

    // Back to hourly: the new schedule starts now (its slot 0 runs at once), and the
    // next slot is an hour away.
    let back = cluster.cli_json(&["job", "update", "hourly", "--every", "1h"]);
    let now = seconds_now();
    assert_eq!(back["version"], before["version"].as_i64().unwrap() + 2);
    let next = seconds(&back["next_run_at"]);
    assert!((now - 2.0..=now + 1.5).contains(&next), "{back:#}");
    wait_for(
        "the hourly schedule to take over",
        Duration::from_secs(10),
        || seconds(&job(&cluster, "hourly")["next_run_at"]) > seconds_now() + 3000.0,
    );
    let settled = wait_until_settled(&cluster, "hourly", Duration::from_secs(5)).len();
    std::thread::sleep(Duration::from_secs(2));
    let runs = cluster.runs_of("hourly");
    assert_eq!(
        runs.len(),
        settled,
        "back to hourly: nothing more runs now:\n{}",
        history(&runs)
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}

/// What `tests/tests/cli_jobs.rs` does not already cover: the update path for every bad
/// policy value, and the values it lacks for create.
#[tokio::test(flavor = "multi_thread")]
async fn bad_policy_values_are_refused_clearly_and_change_nothing() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    create(
        &cluster,
        "steady",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--retries",
            "2",
            "--timeout",
            "30s",
            "--paused",
        ],
    );
    let jobs_before = cluster.cli_json(&["job", "list"]);
    let runs_before = cluster.cli_json(&["runs"]);

    // (flag, value, what stderr must name besides the value: the field, and what is valid)
    let bad: &[(&str, &str, &[&str])] = &[
        ("--retries", "-1", &["retries", "100"]),
        ("--retries", "1000", &["retries", "0 to 100"]),
        (
            "--overlap",
            "sometimes",
            &["overlap", "skip, queue, replace"],
        ),
        ("--catch-up", "many", &["catch_up", "one, all, none"]),
        ("--catch-up-window", "0s", &["catch_up_window"]),
        ("--timeout", "0s", &["timeout"]),
        ("--max-runs", "0", &["max-runs", "at least 1"]),
        ("--timeout", "5x", &["timeout", "unknown unit"]),
    ];
    // cli_jobs.rs covers create with --overlap sometimes, --catch-up most, --timeout 0s and
    // --max-runs 0.
    let create_too = ["-1", "1000", "0s", "5x"];
    let mut commands: Vec<(Vec<String>, &str, &[&str])> = Vec::new();
    for (flag, value, named) in bad {
        let update = ["job", "update", "steady", flag, value];
        commands.push((
            update.iter().map(|s| (*s).to_owned()).collect(),
            value,
            named,
        ));
        if create_too.contains(value) && !(*flag == "--timeout" && *value == "0s") {
            let create = [
                "job",
                "create",
                "fresh",
                "--handler",
                "shell",
                "--every",
                "5m",
                flag,
                value,
            ];
            commands.push((
                create.iter().map(|s| (*s).to_owned()).collect(),
                value,
                named,
            ));
        }
    }
    // `--retries=-1` reaches the parser as a value either way.
    commands.push((
        ["job", "update", "steady", "--retries=-1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        "-1",
        &["retries", "100"],
    ));
    for (command, value, named) in &commands {
        let argv: Vec<&str> = command.iter().map(String::as_str).collect();
        let output = cluster.cli(&argv);
        assert!(!output.success, "{argv:?} was accepted: {}", output.stdout);
        assert!(
            output.stdout.is_empty(),
            "{argv:?} printed {}",
            output.stdout
        );
        assert!(
            output.stderr.starts_with("error: "),
            "{argv:?}: {}",
            output.stderr
        );
        assert!(
            output.stderr.contains(&format!("\"{value}\""))
                || output.stderr.contains(&format!("'{value}'")),
            "{argv:?}: the error names the bad value: {}",
            output.stderr
        );
        for part in *named {
            assert!(
                output.stderr.contains(part)
                    || output
                        .stderr
                        .replace('-', "_")
                        .contains(&part.replace('-', "_")),
                "{argv:?}: {:?} lacks {part:?}",
                output.stderr
            );
        }
        // Not a range the flag does not have (a retries count is 0 to 100).
        assert!(
            !output.stderr.contains("4294967295"),
            "{argv:?}: {}",
            output.stderr
        );
        assert!(
            !output.stderr.contains("Status {") && !output.stderr.contains("code:"),
            "{argv:?}: {}",
            output.stderr
        );
    }
    assert_eq!(
        cluster.cli_json(&["job", "list"]),
        jobs_before,
        "a refused command changed a job"
    );
    assert_eq!(
        cluster.cli_json(&["runs"]),
        runs_before,
        "a refused command changed a run"
    );
}
