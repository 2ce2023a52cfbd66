//! The runtime end to end: a real `cronfleet coordinator` and real `cronfleet worker`
//! processes over a real PostgreSQL, driven through the CLI. Shell jobs write a ledger of
//! when each run started and ended, which proves from outside that no job ever ran twice
//! at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, assert_no_overlap, create, http_get, ledger_script,
    ledger_script_until_stopped, read_ledger, seconds_now, states, wait_for,
};
use serde_json::{Value, json};

fn process_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_one_second_job_and_every_run_is_recorded() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "noop,sleep", 2);
    cluster.start_worker("w2", "noop,sleep", 2);

    create(
        &cluster,
        "tick",
        &[
            "--handler",
            "sleep",
            "--every",
            "1s",
            "--args",
            r#"{"ms": 200}"#,
        ],
    );
    std::thread::sleep(Duration::from_millis(10_500));
    assert!(cluster.cli(&["job", "pause", "tick"]).success);
    std::thread::sleep(Duration::from_millis(800));

    let runs = cluster.runs_of("tick");
    let succeeded: Vec<&Value> = runs
        .iter()
        .filter(|run| run["state"] == "succeeded")
        .collect();
    assert!(
        (9..=12).contains(&succeeded.len()),
        "about ten runs in ten seconds, got {:?}\n{}",
        states(&runs),
        cluster.logs()
    );
    let mut slots = BTreeSet::new();
    for run in &succeeded {
        for field in ["slot", "worker", "started_at", "finished_at"] {
            assert!(
                !run[field].is_null(),
                "run {} has no {field}: {run}",
                run["id"]
            );
        }
        assert!(
            slots.insert(run["slot"].as_str().unwrap().to_owned()),
            "slot run twice: {run}"
        );
    }
    let workers: BTreeSet<&str> = succeeded
        .iter()
        .filter_map(|run| run["worker"].as_str())
        .collect();
    assert_eq!(
        workers,
        BTreeSet::from(["w1", "w2"]),
        "the load spreads over both workers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_slower_than_its_interval_never_overlaps_itself() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 4);
    cluster.start_worker("w2", "shell", 4);
    let ledger = cluster.ledger_path();
    let args = json!({ "script": ledger_script(&ledger, 2.5) }).to_string();
    create(
        &cluster,
        "slow-skip",
        &["--handler", "shell", "--every", "1s", "--args", &args],
    );
    create(
        &cluster,
        "slow-queue",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--overlap",
            "queue",
            "--args",
            &args,
        ],
    );
    std::thread::sleep(Duration::from_secs(9));
    for job in ["slow-skip", "slow-queue"] {
        assert!(cluster.cli(&["job", "pause", job]).success);
    }
    std::thread::sleep(Duration::from_secs(6));

    let entries = read_ledger(&ledger);
    assert!(
        entries.len() >= 4,
        "the jobs ran: {entries:?}\n{}",
        cluster.logs()
    );
    assert!(
        entries.iter().all(|entry| entry.end.is_some()),
        "every run finished: {entries:?}"
    );
    assert_no_overlap(&entries, None);
    let skip_runs = cluster.runs_of("slow-skip");
    assert!(
        states(&skip_runs).contains(&"skipped"),
        "busy slots are recorded as skipped: {:?}",
        states(&skip_runs)
    );
    let job = cluster.cli_json(&["job", "get", "slow-skip"]);
    assert!(
        job["overlap_skipped_count"].as_u64().unwrap_or(0) > 0,
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_loses_its_run_which_runs_again_elsewhere_without_overlap() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    cluster.start_worker("w1", "shell", 1);
    cluster.start_worker("w2", "shell", 1);
    let ledger = cluster.ledger_path();
    let pids = cluster.dir.path().join("pids");
    let script = format!(
        "echo $$ >> {}; {}",
        pids.display(),
        ledger_script(&ledger, 30.0)
    );
    create(
        &cluster,
        "long",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &json!({ "script": script }).to_string(),
        ],
    );

    let mut first = Value::Null;
    wait_for("the run to start", Duration::from_secs(15), || {
        first = cluster
            .runs_of("long")
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        first["state"] == "running"
    });
    wait_for(
        "the script to write its pid",
        Duration::from_secs(5),
        || pids.exists(),
    );
    let victim = first["worker"].as_str().unwrap().to_owned();
    let script_pid = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
    let index = cluster
        .workers
        .iter()
        .position(|w| w.node_id == victim)
        .unwrap();
    cluster.workers[index].process.kill();
    let killed_at = seconds_now();

    wait_for(
        "the killed worker's script to die",
        Duration::from_secs(5),
        || !process_alive(&script_pid),
    );
    let mut runs = Vec::new();
    wait_for(
        "the run to be lost and run again",
        Duration::from_secs(20),
        || {
            runs = cluster.runs_of("long");
            runs.len() == 2 && runs[0]["state"] == "lost" && runs[1]["state"] == "running"
        },
    );
    assert_eq!(runs[0]["slot"], runs[1]["slot"], "the same slot runs again");
    assert_eq!(runs[1]["attempt"], 2);
    assert_ne!(
        runs[1]["worker"].as_str(),
        Some(victim.as_str()),
        "on the other worker"
    );
    assert!(
        runs[0]["error"].as_str().unwrap_or("").contains(&victim),
        "{}",
        runs[0]
    );
    wait_for(
        "the second run to write the ledger",
        Duration::from_secs(5),
        || read_ledger(&ledger).len() == 2,
    );
    // The killed run's script died within a second of its worker.
    assert_no_overlap(&read_ledger(&ledger), Some(killed_at + 1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_waits_visibly_for_a_worker_with_its_handler() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w-noop", "noop", 2);
    let health = format!("http://{}/healthz", cluster.coordinators[0].http);
    create(
        &cluster,
        "ping",
        &[
            "--handler",
            "http",
            "--every",
            "1h",
            "--args",
            &json!({ "url": health }).to_string(),
        ],
    );

    let mut run = Value::Null;
    wait_for(
        "the run to wait with a reason",
        Duration::from_secs(10),
        || {
            run = cluster
                .runs_of("ping")
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            run["state"] == "pending" && !run["pending_reason"].is_null()
        },
    );
    assert_eq!(
        run["pending_reason"],
        "no connected worker offers handler \"http\""
    );

    cluster.start_worker("w-http", "http", 2);
    wait_for(
        "the run to succeed once a worker offers http",
        Duration::from_secs(10),
        || {
            cluster
                .runs_of("ping")
                .first()
                .is_some_and(|run| run["state"] == "succeeded")
        },
    );
    let run = &cluster.runs_of("ping")[0];
    assert_eq!(run["worker"], "w-http");
    assert!(http_get(cluster.workers[1].http, "/healthz").is_some_and(|(status, _)| status == 200));
}

/// A full batch of runs nobody can take — a handler no worker offers, labels no worker
/// has — at the head of the dispatch order does not stall the runnable runs behind it:
/// the dispatcher reads on while workers have room.
#[tokio::test(flavor = "multi_thread")]
async fn runs_nobody_can_take_do_not_block_the_runs_behind_them() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &["--dispatch-batch", "4"]);
    cluster.start_worker("w1", "noop", 2);
    let mut file = String::from("jobs:\n");
    for index in 0..6 {
        // Two batches' worth, first in the order (priority -10).
        file.push_str(&format!(
            "  - name: typo-{index}\n    handler: nop\n    every: 1h\n    priority: -10\n"
        ));
        file.push_str(&format!(
            "  - name: no-pool-{index}\n    handler: noop\n    every: 1h\n    priority: -10\n    labels: {{pool: gpu}}\n"
        ));
    }
    file.push_str("  - name: runnable\n    handler: noop\n    every: 1s\n");
    let path = cluster.dir.path().join("jobs.yaml");
    std::fs::write(&path, file).unwrap();
    let applied = cluster.cli(&["apply", "-f", &path.display().to_string()]);
    assert!(applied.success, "{}", applied.stderr);

    wait_for(
        "the runnable job to run behind 12 runs nobody takes",
        Duration::from_secs(15),
        || {
            cluster
                .runs_of("runnable")
                .iter()
                .filter(|run| run["state"] == "succeeded")
                .count()
                >= 3
        },
    );
    let stuck = cluster.runs_of("typo-0");
    assert_eq!(states(&stuck), ["pending"], "{stuck:?}");
    assert_eq!(
        stuck[0]["pending_reason"],
        "no connected worker offers handler \"nop\""
    );
    let stuck = cluster.runs_of("no-pool-5");
    assert_eq!(
        stuck[0]["pending_reason"],
        "no connected worker offering handler \"noop\" has the labels pool=gpu"
    );
}

/// Deleting a job whose run is in progress is refused (the run would go on unseen, and a
/// job created again under the name could run beside it); `--force` cancels the run and
/// deletes the job only once the run has stopped.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_job_with_a_run_in_progress_is_refused_or_waits_for_it_to_stop() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    let script = ledger_script_until_stopped(&ledger);
    let args = json!({ "script": script }).to_string();
    let create_long = |cluster: &Cluster| {
        create(
            cluster,
            "long",
            &["--handler", "shell", "--every", "1h", "--args", &args],
        );
    };
    create_long(&cluster);
    wait_for("the run to start", Duration::from_secs(20), || {
        !read_ledger(&ledger).is_empty()
    });
    let run_id = read_ledger(&ledger)[0].run;

    let refused = cluster.cli(&["job", "delete", "long"]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains(&format!(
            "job \"long\" has a run in progress (run {run_id}, running on worker w1)"
        )) && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert!(cluster.cli(&["job", "get", "long"]).success, "still there");

    let forced = cluster.cli(&["job", "delete", "long", "--force"]);
    let returned_at = seconds_now();
    assert!(forced.success, "{}", forced.stderr);
    let entries = read_ledger(&ledger);
    let stopped = entries[0].end.expect("the run was stopped");
    assert!(
        stopped <= returned_at,
        "the job was deleted at {returned_at} before its run stopped at {stopped}"
    );
    assert!(!cluster.cli(&["job", "get", "long"]).success, "deleted");

    // Created again under the name: its run starts after the old one stopped.
    create_long(&cluster);
    wait_for(
        "the new job's run to start",
        Duration::from_secs(20),
        || read_ledger(&ledger).len() >= 2,
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}

/// One due job whose stored row this build cannot read (a time zone it does not know, as a
/// newer version might write) does not halt the schedule: the leader pauses it with the
/// reason, says so, and every other job keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_row_that_cannot_be_read_is_paused_and_the_others_keep_running() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "noop", 4);
    for name in ["before", "bad", "after"] {
        create(&cluster, name, &["--handler", "noop", "--every", "1s"]);
    }
    let psql = cronfleet_testkit::find_postgres_bindir()
        .await
        .expect("PostgreSQL's binaries")
        .join("psql");
    let sql = |statement: &str| -> String {
        let output = std::process::Command::new(&psql)
            .args([database.url(), "-tAc", statement])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    sql("UPDATE jobs SET tz = 'Mars/Olympus_Mons' WHERE name = 'bad'");
    let succeeded = |job: &str| {
        cluster
            .runs_of(job)
            .iter()
            .filter(|run| run["state"] == "succeeded")
            .count()
    };
    let (before, after) = (succeeded("before"), succeeded("after"));
    wait_for(
        "the other jobs to go on running",
        Duration::from_secs(15),
        || succeeded("before") >= before + 3 && succeeded("after") >= after + 3,
    );
    let pause = sql("SELECT paused || ' ' || pause_note FROM jobs WHERE name = 'bad'");
    assert!(
        pause.starts_with("true paused by the scheduler: its stored definition cannot be read")
            && pause.contains("unknown time zone \"Mars/Olympus_Mons\""),
        "{pause}"
    );
    assert!(
        cluster.coordinators[0]
            .process
            .log_text()
            .contains("a due job cannot be read"),
        "the leader says so"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_postgres_loses_no_run_and_leaves_none_stuck() {
    let mut postgres = cronfleet_testkit::PostgresServer::start()
        .await
        .expect("postgres");
    let url = postgres.create_database().await.expect("database");
    let mut cluster = Cluster::new(&url);
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "noop", 4);
    create(&cluster, "steady", &["--handler", "noop", "--every", "1s"]);
    std::thread::sleep(Duration::from_secs(3));

    postgres.stop().await.expect("stop postgres");
    // Long enough that slots come due while the store is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres.start_again().await.expect("start postgres again");
    std::thread::sleep(Duration::from_secs(4));
    let paused = cluster.cli(&["job", "pause", "steady"]);
    assert!(paused.success, "{}", paused.stderr);
    std::thread::sleep(Duration::from_secs(3));

    let runs = cluster.runs_of("steady");
    let open: Vec<&Value> = runs
        .iter()
        .filter(|run| {
            matches!(
                run["state"].as_str(),
                Some("pending" | "dispatched" | "running")
            )
        })
        .collect();
    assert!(
        open.is_empty(),
        "no run is stuck: {open:?}\n{}",
        cluster.logs()
    );
    // Every slot from the first to the last is accounted for: run, skipped or missed.
    let mut covered = 0u64;
    for run in &runs {
        covered += match run["state"].as_str() {
            Some("skipped" | "missed") => run["slot_count"].as_u64().unwrap_or(1),
            Some("lost") => 0,
            _ => 1,
        };
    }
    let first =
        chrono::DateTime::parse_from_rfc3339(runs.first().unwrap()["slot"].as_str().unwrap())
            .unwrap();
    let last_slot = runs
        .iter()
        .filter_map(|run| run["last_slot"].as_str().or(run["slot"].as_str()))
        .filter_map(|slot| chrono::DateTime::parse_from_rfc3339(slot).ok())
        .max()
        .unwrap();
    let slots = (last_slot - first).num_seconds() as u64 + 1;
    assert_eq!(
        covered,
        slots,
        "every slot is run or accounted for: {:?}",
        states(&runs)
    );
    // The outage was real: slots that came due while the store was down were late, and
    // the default catch-up (`one`) ran one run for them and recorded the rest as missed.
    assert!(
        runs.iter().any(|run| run["state"] == "missed"),
        "the outage left missed slots behind (else this test proves nothing): {:?}",
        states(&runs)
    );
    assert!(
        runs.iter()
            .filter(|run| run["state"] == "succeeded")
            .count()
            >= 6,
        "{:?}",
        states(&runs)
    );
}

/// A run's log is readable while it runs, from any coordinator (the leader saves live logs
/// to the store), and `run logs --follow` prints every line once, ending with the run.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_jobs_log_can_be_read_and_followed() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 1);
    let script = json!({ "script": "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done" });
    create(
        &cluster,
        "talker",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &script.to_string(),
        ],
    );
    let mut id = 0;
    wait_for("the run to start", Duration::from_secs(20), || {
        let runs = cluster.runs_of("talker");
        id = runs.first().and_then(|run| run["id"].as_i64()).unwrap_or(0);
        runs.first().is_some_and(|run| run["state"] == "running")
    });
    let id = id.to_string();
    let follower = std::process::Command::new(cronfleet_e2e::cronfleet_binary())
        .args([
            "run",
            "logs",
            &id,
            "--follow",
            "--server",
            &cluster.coordinators[0].url(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run logs --follow");
    wait_for(
        "part of the log while the run runs",
        Duration::from_secs(10),
        || {
            let partial = cluster.cli(&["run", "logs", &id]);
            partial.success
                && partial.stdout.contains("line 2")
                && !partial.stdout.contains("line 6")
        },
    );
    let followed = follower
        .wait_with_output()
        .expect("follow ends with the run");
    assert!(followed.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&followed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (1..=6).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");
    let run = cluster.cli_json(&["run", "get", &id]);
    assert_eq!(run["state"], "succeeded", "{run}");
}

/// `--run-log-limit` bounds what is kept of a log, end first, on the worker and in the
/// store alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_log_keeps_its_end_within_the_configured_limit() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &["--run-log-limit", "1KiB"]);
    cluster.start_worker("w1", "shell", 1);
    let script = json!({ "script": "for i in $(seq 1 300); do echo line $i; done" });
    create(
        &cluster,
        "verbose",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--args",
            &script.to_string(),
        ],
    );
    let mut output = String::new();
    wait_for("the run to succeed", Duration::from_secs(20), || {
        let runs = cluster.runs_of("verbose");
        output = runs
            .first()
            .and_then(|run| run["output"].as_str())
            .unwrap_or_default()
            .to_owned();
        runs.first().is_some_and(|run| run["state"] == "succeeded")
    });
    assert!(output.len() <= 1024, "{} bytes kept", output.len());
    assert!(
        output.len() > 900,
        "the limit is used: {} bytes",
        output.len()
    );
    assert!(output.ends_with("line 300\n"), "the end is kept: {output}");
    assert!(!output.contains("line 1\n"), "the start is dropped");
}
