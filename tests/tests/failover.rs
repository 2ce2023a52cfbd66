//! Leader failover end to end: two coordinators elected through a real etcd over one
//! PostgreSQL, a worker that knows both, and shell jobs writing the ledger. The leader is
//! killed (`kill -9`), brought back as a follower, then the new leader is stopped (SIGTERM
//! → resign); the work goes on under each new epoch, and no job ever runs twice at once.

use std::time::{Duration, Instant};

use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, assert_no_overlap, ledger_script, read_ledger, wait_for,
};
use serde_json::{Value, json};

/// The index of the coordinator whose log says it leads now (the last "leading" or
/// "stopped leading" line decides).
fn leader_index(cluster: &Cluster) -> Option<usize> {
    cluster.coordinators.iter().position(|node| {
        let log = node.process.log_text();
        let leading = log.rfind("leading epoch=");
        let stopped = log.rfind("stopped leading");
        leading.is_some() && stopped.is_none_or(|stopped| leading > Some(stopped))
    })
}

fn max_epoch(runs: &[Value]) -> i64 {
    runs.iter()
        .filter_map(|run| run["epoch"].as_i64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_fails_over_on_kill_and_on_sigterm_without_overlap() {
    let etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    let endpoint = etcd.client_url();
    let mut args = FAST_FAILURE_DETECTION.to_vec();
    args.extend(["--election-ttl", "2s", "--etcd", endpoint.as_str()]);
    cluster.start_coordinator("c1", &args);
    cluster.start_coordinator("c2", &args);
    cluster.start_worker("w1", "shell", 4);
    let ledger = cluster.ledger_path();
    let script = json!({ "script": ledger_script(&ledger, 0.3) }).to_string();
    let created = cluster.cli(&[
        "job",
        "create",
        "tick",
        "--handler",
        "shell",
        "--every",
        "1s",
        "--args",
        &script,
    ]);
    assert!(created.success, "{}", created.stderr);
    wait_for(
        "runs under the first leader",
        Duration::from_secs(10),
        || {
            cluster
                .runs_of("tick")
                .iter()
                .filter(|run| run["state"] == "succeeded")
                .count()
                >= 3
        },
    );

    // kill -9 of the leader: the other coordinator takes over after the election TTL.
    let first = leader_index(&cluster).expect("a leader");
    let first_epoch = max_epoch(&cluster.runs_of("tick"));
    cluster.coordinators[first].process.kill();
    let killed = Instant::now();
    let survivor = 1 - first;
    // Client commands go to the first coordinator in the list: keep the live one first.
    cluster.coordinators.swap(0, survivor);
    let mut failover = Duration::ZERO;
    wait_for(
        "a run dispatched by the new leader",
        Duration::from_secs(20),
        || {
            let runs = cluster.runs_of("tick");
            let taken_over = runs.iter().any(|run| {
                run["epoch"].as_i64() > Some(first_epoch) && !run["dispatched_at"].is_null()
            });
            failover = killed.elapsed();
            taken_over
        },
    );
    println!("failover after kill -9 of the leader: {failover:?}");

    // The killed coordinator comes back (same ports) as a follower; then SIGTERM to the
    // leader: it resigns, and the follower takes over well within the election TTL.
    cluster.restart_coordinator(1);
    let second_epoch = max_epoch(&cluster.runs_of("tick"));
    let status = cluster.stop_coordinator(0);
    assert!(
        status.is_some_and(|s| s.success()),
        "a stopped coordinator exits 0: {status:?}"
    );
    let stopped = Instant::now();
    cluster.coordinators.swap(0, 1);
    let mut handover = Duration::ZERO;
    wait_for(
        "a run dispatched after the resign",
        Duration::from_secs(20),
        || {
            let runs = cluster.runs_of("tick");
            handover = stopped.elapsed();
            runs.iter().any(|run| {
                run["epoch"].as_i64() > Some(second_epoch) && !run["dispatched_at"].is_null()
            })
        },
    );
    println!("hand-over after SIGTERM of the leader: {handover:?}");

    std::thread::sleep(Duration::from_secs(2));
    assert!(cluster.cli(&["job", "pause", "tick"]).success);
    std::thread::sleep(Duration::from_secs(2));
    let runs = cluster.runs_of("tick");
    let epochs: std::collections::BTreeSet<i64> = runs
        .iter()
        .filter_map(|run| run["epoch"].as_i64())
        .collect();
    assert!(
        epochs.len() >= 3,
        "three leaders ran the job: epochs {epochs:?}"
    );
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
        "nothing stuck: {open:?}\n{}",
        cluster.logs()
    );
    assert_no_overlap(&read_ledger(&ledger), None);
}
