//! History retention end to end: the leader prunes ended runs beyond `--runs-per-job`
//! (and older than `--run-retention`) when its term starts and every minute after.

use std::time::Duration;

use cronfleet_e2e::cluster::{Cluster, create, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_keeps_only_the_newest_runs_of_each_job() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &["--runs-per-job", "2"]);
    cluster.start_worker("w1", "noop", 2);
    create(&cluster, "chatty", &["--handler", "noop", "--every", "1s"]);
    wait_for("five runs", Duration::from_secs(20), || {
        cluster.runs_of("chatty").len() >= 5
    });
    assert!(cluster.cli(&["job", "pause", "chatty"]).success);
    let before = cluster.runs_of("chatty");
    let newest: Vec<i64> = before
        .iter()
        .rev()
        .take(2)
        .filter_map(|run| run["id"].as_i64())
        .collect();

    // A new term prunes at once.
    cluster.restart_coordinator(0);
    wait_for("the history to be pruned", Duration::from_secs(20), || {
        cluster.runs_of("chatty").len() <= 2
    });
    let mut kept: Vec<i64> = cluster
        .runs_of("chatty")
        .iter()
        .filter_map(|run| run["id"].as_i64())
        .collect();
    kept.reverse();
    assert_eq!(kept, newest, "the newest two are kept: {before:?}");
}
