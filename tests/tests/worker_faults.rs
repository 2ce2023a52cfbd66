//! The no-overlap promise against faults of workers and their links (DESIGN §2, invariant
//! 1; issue "Never twice at once, never lost"): a run is started again only once its old
//! attempt is provably dead — a cut-off worker whose script ignores SIGTERM, a frozen
//! worker, links that fail one way only — and a worker id is one session that reports on
//! its own runs only. Real coordinator and worker processes over a real PostgreSQL; the
//! scripts' own ticks, written from outside cronfleet, show when each attempt was alive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, Process, create, free_addr, http_get, seconds_now, wait_for,
};
use cronfleet_e2e::history::history;
use cronfleet_e2e::proxy::PartitionProxy;
use cronfleet_proto::v1::worker_message::Kind as FromWorker;
use cronfleet_proto::v1::worker_service_client::WorkerServiceClient;
use cronfleet_proto::v1::{
    Register, RunFinished, RunOutcome, RunStarted, WorkerMessage, coordinator_message,
};
use serde_json::json;

/// How often the stubborn script ticks; it may live this long (and a little) after its
/// last tick.
const TICK: f64 = 0.1;

/// A script that ignores SIGTERM (only SIGKILL stops it) and writes `RUN_ID TIME` to
/// `ticks` every 0.1 s for about 15 s: when it was last seen alive is known from outside.
fn stubborn_script(ticks: &Path) -> String {
    format!(
        "trap '' TERM; i=0; while [ $i -lt 150 ]; do echo \"$CRONFLEET_RUN_ID $(date +%s.%N)\" >> {}; sleep {TICK}; i=$((i+1)); done",
        ticks.display()
    )
}

/// Each run's first and last tick.
fn read_ticks(ticks: &Path) -> BTreeMap<i64, (f64, f64)> {
    let text = std::fs::read_to_string(ticks).unwrap_or_default();
    let mut runs: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(Ok(run)), Some(Ok(at))) = (
            fields.next().map(str::parse::<i64>),
            fields.next().map(str::parse::<f64>),
        ) else {
            continue;
        };
        let entry = runs.entry(run).or_insert((at, at));
        entry.0 = entry.0.min(at);
        entry.1 = entry.1.max(at);
    }
    runs
}

/// Panics if an attempt ticked (or could still have been alive, one tick and a margin
/// after its last tick) once the next one had begun. Returns the gaps between them.
fn assert_attempts_apart(ticks: &BTreeMap<i64, (f64, f64)>) -> Vec<f64> {
    let mut attempts: Vec<(i64, (f64, f64))> = ticks.iter().map(|(r, t)| (*r, *t)).collect();
    attempts.sort_by(|a, b| a.1.0.total_cmp(&b.1.0));
    attempts
        .windows(2)
        .map(|pair| {
            let ((old, (_, old_last)), (new, (new_first, _))) = (pair[0], pair[1]);
            let gap = new_first - old_last;
            assert!(
                gap > 2.0 * TICK,
                "run {old} was alive at {old_last:.3} and run {new} of the same job began at {new_first:.3}: {ticks:?}"
            );
            gap
        })
        .collect()
}

/// A one-off job `name` of the stubborn script, due in a second.
fn create_stubborn_job(cluster: &Cluster, name: &str, ticks: &Path) {
    let args = json!({ "script": stubborn_script(ticks) }).to_string();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    create(
        cluster,
        name,
        &["--handler", "shell", "--at", &soon, "--args", &args],
    );
}

/// Waits until `count` attempts have ticked.
fn wait_for_attempts(ticks: &Path, count: usize, what: &str) {
    wait_for(what, Duration::from_secs(40), || {
        read_ticks(ticks).len() >= count
    });
}

/// A coordinator with fast failure detection and worker w1 — reaching it through a
/// partition proxy when `through_proxy` — running the first attempt of the stubborn job.
struct StubbornRun {
    cluster: Cluster,
    link: Option<PartitionProxy>,
    ticks: PathBuf,
    _database: cronfleet_testkit::TestDatabase,
}

async fn stubborn_run_on_w1(through_proxy: bool) -> StubbornRun {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    let link = through_proxy.then(|| PartitionProxy::start(cluster.coordinators[0].grpc));
    match &link {
        Some(link) => cluster.start_worker_with("w1", "shell", 1, &[link.url()]),
        None => cluster.start_worker("w1", "shell", 1),
    };
    let ticks = cluster.dir.path().join("ticks");
    create_stubborn_job(&cluster, "stubborn", &ticks);
    wait_for_attempts(&ticks, 1, "the run to start on w1");
    StubbornRun {
        cluster,
        link,
        ticks,
        _database: database,
    }
}

/// A worker's shell script that ignores SIGTERM, on a worker cut off from its coordinator
/// (both directions): SIGKILLed at the end of the lease plus the kill grace, before the
/// coordinator — after the longer worker timeout — runs it elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_workers_script_that_ignores_sigterm_is_dead_before_it_runs_elsewhere() {
    let mut run = stubborn_run_on_w1(true).await;
    let link = run.link.take().expect("a proxy");
    let (cluster, ticks) = (&mut run.cluster, run.ticks.clone());
    cluster.start_worker("w2", "shell", 1);

    let cut_at = seconds_now();
    link.cut();
    wait_for_attempts(&ticks, 2, "the run to start again on w2");
    let gaps = assert_attempts_apart(&read_ticks(&ticks));
    let (first_last, second_first) = {
        let ticks = read_ticks(&ticks);
        let mut values: Vec<(f64, f64)> = ticks.values().copied().collect();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        (values[0].1, values[1].0)
    };
    println!(
        "cut at {cut_at:.3}: w1's script last ticked {:.3} s later, w2's began {:.3} s later (gap {:.3} s)",
        first_last - cut_at,
        second_first - cut_at,
        gaps[0]
    );
    let runs = cluster.runs_of("stubborn");
    assert!(
        runs.iter().any(|run| run["state"] == "lost"),
        "the first attempt is lost:\n{}",
        history(&runs)
    );
}

/// A frozen worker (SIGSTOP) renews nothing and cannot stop its script; the watchdog
/// outside it kills the script at the lease's end plus the kill grace, while it is still
/// frozen, before the coordinator runs the job elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_workers_script_is_dead_before_it_runs_elsewhere() {
    let mut run = stubborn_run_on_w1(false).await;
    let (cluster, ticks) = (&mut run.cluster, run.ticks.clone());
    cluster.start_worker("w2", "shell", 1);

    let frozen_at = seconds_now();
    cluster.workers[0].process.freeze();
    wait_for_attempts(&ticks, 2, "the run to start again on w2");
    let gaps = assert_attempts_apart(&read_ticks(&ticks));
    println!(
        "w1 frozen at {frozen_at:.3}; the next attempt began {:.3} s after w1's script last ticked",
        gaps[0]
    );
    cluster.workers[0].process.thaw();
    wait_for(
        "the thawed w1 to report its run aborted",
        Duration::from_secs(20),
        || cluster.workers[0].process.log_text().contains("lease lost"),
    );
    // Alive again, w1 runs nothing of the job beside w2.
    std::thread::sleep(Duration::from_secs(2));
    assert_attempts_apart(&read_ticks(&ticks));
}

/// The coordinator stops hearing a worker (its messages are lost on the way) while the
/// worker still hears the coordinator: no renewal is answered, so the worker's lease runs
/// out and its script dies before the coordinator, at the worker timeout, runs it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_the_coordinator_no_longer_hears_stops_before_its_run_runs_elsewhere() {
    let mut run = stubborn_run_on_w1(true).await;
    let link = run.link.take().expect("a proxy");
    let (cluster, ticks) = (&mut run.cluster, run.ticks.clone());
    cluster.start_worker("w2", "shell", 1);

    link.cut_to_target();
    wait_for_attempts(&ticks, 2, "the run to start again on w2");
    let gaps = assert_attempts_apart(&read_ticks(&ticks));
    println!(
        "worker → coordinator cut: the next attempt began {:.3} s after w1's script last ticked",
        gaps[0]
    );
}

/// The worker stops hearing the coordinator (its answers are lost) while the coordinator
/// still hears the worker: the worker's lease runs out and it kills its run, which is
/// declared lost and run again on another worker — never silently consumed as
/// "cancelled".
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_no_longer_hears_the_coordinator_stops_and_its_run_runs_again() {
    let mut run = stubborn_run_on_w1(true).await;
    let link = run.link.take().expect("a proxy");
    let (cluster, ticks) = (&mut run.cluster, run.ticks.clone());

    let cut_at = seconds_now();
    link.cut_to_client();
    wait_for(
        "w1 to stop its run for its lost lease",
        Duration::from_secs(20),
        || cluster.workers[0].process.log_text().contains("lease lost"),
    );
    wait_for(
        "the run to be declared lost",
        Duration::from_secs(20),
        || {
            cluster
                .runs_of("stubborn")
                .iter()
                .any(|run| run["state"] == "lost")
        },
    );
    let (_, last_tick) = read_ticks(&ticks)
        .values()
        .copied()
        .next()
        .expect("w1's attempt");
    // Lease 1.5 s from the last answered heartbeat, then SIGTERM (ignored) and SIGKILL
    // after the 1 s kill grace.
    assert!(
        last_tick - cut_at < 3.5,
        "w1's script lived {:.3} s past the cut",
        last_tick - cut_at
    );
    // w1 can only half-register again through this link: take it away, and let w2 run
    // the job's next attempt.
    cluster.workers[0].process.kill();
    cluster.start_worker("w2", "shell", 1);
    wait_for_attempts(&ticks, 2, "the run to start again on w2");
    let gaps = assert_attempts_apart(&read_ticks(&ticks));
    println!(
        "coordinator → worker cut: the next attempt began {:.3} s after w1's script last ticked",
        gaps[0]
    );
    let runs = cluster.runs_of("stubborn");
    assert!(
        !runs.iter().any(|run| run["state"] == "cancelled"),
        "nothing was cancelled:\n{}",
        history(&runs)
    );
}

/// A worker whose kill grace does not fit the coordinator's timing rule (lease ttl + kill
/// grace + 1.5 s ≤ worker timeout) is refused, with what to change: admitted, its scripts
/// could still run when their runs start elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_kill_grace_outlasts_the_worker_timeout_is_refused() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    let http = free_addr();
    let args: Vec<String> = [
        "worker",
        "--coordinator",
        &cluster.coordinators[0].url(),
        "--handlers",
        "shell",
        "--node-id",
        "slow-to-stop",
        "--http",
        &http.to_string(),
        "--kill-grace",
        "5s",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let worker = Process::spawn("slow-to-stop", &args, cluster.dir.path());
    wait_for(
        "the refusal in the worker's log",
        Duration::from_secs(20),
        || worker.log_text().contains("--kill-grace"),
    );
    let log = worker.log_text();
    for expected in [
        "\"slow-to-stop\" needs 6s after its lease ends to stop its runs",
        "lower the worker's --kill-grace to at most 1s",
        "raise the coordinators' --worker-timeout (and --timeout-grace) to at least 8s",
    ] {
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    }
    assert_ne!(
        http_get(http, "/readyz").map(|(status, _)| status),
        Some(200),
        "a refused worker is not ready"
    );
    let workers = cluster.cli_json(&["workers"]);
    assert_eq!(workers, json!([]), "nobody registered");
}

/// Opens a worker stream to `url` as `node_id`, sends its `Register`, and returns the
/// stream's sender and the coordinator's answers (or its refusal).
async fn raw_session(
    url: &str,
    node_id: &str,
    held_runs: Vec<cronfleet_proto::v1::HeldRun>,
) -> (
    tokio::sync::mpsc::UnboundedSender<WorkerMessage>,
    Result<tonic::Streaming<cronfleet_proto::v1::CoordinatorMessage>, tonic::Status>,
) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connect to the coordinator");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(WorkerMessage {
        kind: Some(FromWorker::Register(Register {
            node_id: node_id.to_owned(),
            // A handler no job uses: nothing is assigned to it.
            handlers: vec!["nothing".to_owned()],
            capacity: 1,
            stop_grace_ms: 1_000,
            held_runs,
            ..Register::default()
        })),
    })
    .unwrap();
    let response = WorkerServiceClient::new(channel)
        .connect(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (tx, response)
}

/// A worker id is one live session: a second process registering as `w1` while w1 renews
/// its lease is refused (it would have had w1's run declared lost and run again beside it),
/// and a session may only report on runs it holds — another's start or end is refused and
/// the run goes on, on its worker, to its own end.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_id_is_one_session_that_reports_on_its_own_runs_only() {
    let mut run = stubborn_run_on_w1(false).await;
    let (cluster, ticks) = (&mut run.cluster, run.ticks.clone());
    let run_id = *read_ticks(&ticks).keys().next().expect("one run");

    // A second w1.
    let (_twin, answers) = raw_session(&cluster.coordinators[0].url(), "w1", Vec::new()).await;
    let refusal = answers.expect_err("the twin is refused");
    assert_eq!(refusal.code(), tonic::Code::AlreadyExists, "{refusal:?}");
    assert!(
        refusal.message().contains("worker id \"w1\" is in use"),
        "{}",
        refusal.message()
    );

    // Another worker reporting on w1's run.
    let (mallory, answers) =
        raw_session(&cluster.coordinators[0].url(), "mallory", Vec::new()).await;
    let mut answers = answers.expect("mallory registers");
    let registered = answers.message().await.unwrap().unwrap();
    assert!(matches!(
        registered.kind,
        Some(coordinator_message::Kind::Registered(_))
    ));
    mallory
        .send(WorkerMessage {
            kind: Some(FromWorker::RunStarted(RunStarted {
                run_id,
                started_at: None,
            })),
        })
        .unwrap();
    mallory
        .send(WorkerMessage {
            kind: Some(FromWorker::RunFinished(RunFinished {
                run_id,
                outcome: RunOutcome::Succeeded as i32,
                ..RunFinished::default()
            })),
        })
        .unwrap();
    // Its start of a run it does not hold gets a Cancel, for that run.
    let cancel = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match answers.message().await {
                Ok(Some(message)) => {
                    if let Some(coordinator_message::Kind::Cancel(cancel)) = message.kind {
                        return cancel;
                    }
                }
                other => panic!("mallory's stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a cancel for mallory");
    assert_eq!(cancel.run_id, run_id);

    std::thread::sleep(Duration::from_secs(2));
    let runs = cluster.runs_of("stubborn");
    assert_eq!(runs.len(), 1, "nothing was run again:\n{}", history(&runs));
    assert_eq!(
        runs[0]["state"],
        "running",
        "w1's run goes on:\n{}",
        history(&runs)
    );
    assert_eq!(runs[0]["worker"], "w1");
    let log = cluster.coordinators[0].process.log_text();
    assert!(
        log.contains("refusing a report on a run this worker does not hold"),
        "{log}"
    );
}

/// A dispatch that races a worker's reconnect sends its Assign down the connection that is
/// gone: the run is `dispatched` to a connected worker that never had it. Made here
/// directly in the store; the leader notices within a few heartbeats that the worker's
/// session does not hold the run and runs it again, instead of leaving the job blocked
/// until the deadline plus the grace (an hour by default).
#[tokio::test(flavor = "multi_thread")]
async fn a_run_dispatched_to_a_connection_that_is_gone_is_run_again() {
    use cronfleet_store::{JobStore, LeaderStore, PostgresStore, RunTransition};

    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    cluster.start_worker("w1", "shell", 1);
    // A handler nobody offers, so only this test dispatches it.
    create(&cluster, "raced", &["--handler", "ghost", "--every", "1h"]);
    let mut run_id = None;
    wait_for("the run to be leased", Duration::from_secs(10), || {
        run_id = cluster
            .runs_of("raced")
            .first()
            .and_then(|run| run["id"].as_i64());
        run_id.is_some()
    });
    let run_id = run_id.expect("a run");
    let store = PostgresStore::connect(database.url()).await.expect("store");
    let epoch = store.epoch().await.expect("epoch");
    let now = chrono::Utc::now();
    store
        .transition_run(
            run_id,
            &RunTransition::dispatch("w1", epoch, now + chrono::TimeDelta::hours(1)),
            now,
        )
        .await
        .expect("dispatched to w1, whose session never hears of it");

    wait_for(
        "the orphaned run to be lost",
        Duration::from_secs(15),
        || {
            cluster.runs_of("raced").iter().any(|run| {
                run["id"] == run_id
                    && run["state"] == "lost"
                    && run["error"]
                        .as_str()
                        .is_some_and(|error| error.contains("its session does not hold the run"))
            })
        },
    );
    let runs = cluster.runs_of("raced");
    assert_eq!(
        runs.iter().filter(|run| run["state"] == "pending").count(),
        1,
        "its next attempt waits for a worker:\n{}",
        history(&runs)
    );
}

/// A database that stops answering for a few seconds (paused, partitioned, failing over)
/// does not stop the runs: heartbeats are answered by the stream's reader, never behind the
/// run reports that wait for the store, so the worker keeps its lease; the reports are
/// written once the database is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_stops_answering_for_a_while_stops_no_run() {
    use cronfleet_e2e::cluster::{ledger_script, read_ledger};

    let database = cronfleet_testkit::test_database().await.expect("database");
    let address = database
        .url()
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the database URL")
        .to_owned();
    let database_link = PartitionProxy::start(address.parse().expect("a socket address"));
    let url = database
        .url()
        .replace(&address, &database_link.addr().to_string());
    let mut cluster = Cluster::new(&url);
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    cluster.start_worker("w1", "shell", 2);
    let ledger = cluster.ledger_path();
    let soon = || {
        (chrono::Utc::now() + chrono::TimeDelta::milliseconds(500))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    for (name, seconds) in [("long", 8.0), ("quick", 1.0)] {
        let args = json!({ "script": ledger_script(&ledger, seconds) }).to_string();
        create(
            &cluster,
            name,
            &["--handler", "shell", "--at", &soon(), "--args", &args],
        );
        wait_for(&format!("{name} to start"), Duration::from_secs(20), || {
            read_ledger(&ledger).iter().any(|entry| entry.job == name)
        });
    }
    // `quick` ends while the database is away: its report waits, heartbeats go on.
    database_link.cut();
    std::thread::sleep(Duration::from_secs(4));
    database_link.heal();

    wait_for("both runs to succeed", Duration::from_secs(30), || {
        ["long", "quick"].iter().all(|job| {
            cluster
                .runs_of(job)
                .first()
                .is_some_and(|run| run["state"] == "succeeded")
        })
    });
    let log = cluster.workers[0].process.log_text();
    assert!(!log.contains("lease lost"), "w1 lost its lease:\n{log}");
    let long = read_ledger(&ledger)
        .into_iter()
        .find(|entry| entry.job == "long")
        .expect("long ran");
    let took = long.end.expect("long ended") - long.start;
    assert!(took >= 7.9, "long was cut short after {took:.3} s");
}

/// A worker whose clock is 30 s behind the coordinator's (libfaketime) still times a run
/// out on time: the timeout travels as a duration and is timed on the worker's monotonic
/// clock from the Assign's arrival. By the wall-clock deadline it would have run 30 s
/// longer — past the coordinator's own timeout, when a retry may start beside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_clock_is_behind_still_times_runs_out_on_time() {
    use cronfleet_e2e::cluster::{ledger_script_until_stopped, read_ledger};

    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    let http = free_addr();
    let args: Vec<String> = [
        "worker",
        "--coordinator",
        &cluster.coordinators[0].url(),
        "--handlers",
        "shell",
        "--node-id",
        "skewed",
        "--kill-grace",
        "1s",
        "--http",
        &http.to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let _worker = Process::spawn_with_env(
        "skewed",
        &args,
        cluster.dir.path(),
        &cronfleet_e2e::cluster::skewed_clock("-30s"),
    );
    wait_for(
        "the skewed worker to register",
        Duration::from_secs(20),
        || http_get(http, "/readyz").is_some_and(|(status, _)| status == 200),
    );
    let ledger = cluster.ledger_path();
    let script = ledger_script_until_stopped(&ledger);
    let soon = (chrono::Utc::now() + chrono::TimeDelta::milliseconds(500))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    create(
        &cluster,
        "bounded",
        &[
            "--handler",
            "shell",
            "--at",
            &soon,
            "--timeout",
            "2s",
            "--args",
            &json!({ "script": script }).to_string(),
        ],
    );
    wait_for("the run to be stopped", Duration::from_secs(30), || {
        read_ledger(&ledger)
            .first()
            .is_some_and(|entry| entry.end.is_some())
    });
    let entry = read_ledger(&ledger)[0].clone();
    assert!(
        entry.start < seconds_now() - 20.0,
        "the script ran on the worker's skewed clock: started at {} by it",
        entry.start
    );
    let ran = entry.end.expect("stopped") - entry.start;
    assert!(ran < 4.0, "a 2 s timeout let the script run {ran:.3} s");
    wait_for(
        "the run to be recorded timed out",
        Duration::from_secs(10),
        || {
            cluster
                .runs_of("bounded")
                .first()
                .is_some_and(|run| run["state"] == "timed_out")
        },
    );
    let run = &cluster.runs_of("bounded")[0];
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("deadline ")),
        "timed out by the worker, not by the coordinator's grace: {run}"
    );
}

/// A worker that comes back holding a run the store does not give to it (already resolved
/// while it was away) is registered first — `Registered` is the first answer the protocol
/// allows — and then told to stop that run. The chaos suite found workers locked out for
/// good by a `Cancel` sent ahead of `Registered`.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_holding_an_unknown_run_is_registered_then_told_to_stop_it() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    let held = cronfleet_proto::v1::HeldRun {
        run_id: 4242,
        epoch: 1,
    };
    let (_worker, answers) =
        raw_session(&cluster.coordinators[0].url(), "returning", vec![held]).await;
    let mut answers = answers.expect("registered");
    let first = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(first.kind, Some(coordinator_message::Kind::Registered(_))),
        "{first:?}"
    );
    let second = answers.message().await.unwrap().unwrap();
    match second.kind {
        Some(coordinator_message::Kind::Cancel(cancel)) => assert_eq!(cancel.run_id, 4242),
        other => panic!("expected a Cancel of run 4242, got {other:?}"),
    }
}
