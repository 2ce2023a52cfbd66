//! Leader failover end to end: coordinators elected through a real etcd over one
//! PostgreSQL, workers that know them all, and shell jobs writing the ledger. The leader is
//! killed (`kill -9`) — once, then five times in a row under a mixed load — and stopped
//! (SIGTERM → resign); the work goes on under each new epoch, no slot is silently lost,
//! and no job ever runs twice at once.

use std::time::Duration;

use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, assert_no_overlap, create, ledger_script, read_ledger,
    seconds_now, wait_for,
};
use cronfleet_e2e::history::{
    assert_every_slot_accounted_once, first_dispatch_after_epoch, history,
};
use serde_json::{Value, json};

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
    cluster.start_elected_coordinators(&["c1", "c2"], &etcd.client_url(), FAST_FAILURE_DETECTION);
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
    let first = cluster.leader_index().expect("a leader");
    let first_epoch = max_epoch(&cluster.runs_of("tick"));
    let killed = seconds_now();
    cluster.coordinators[first].process.kill();
    let survivor = 1 - first;
    // Client commands go to the first coordinator in the list: keep the live one first.
    cluster.coordinators.swap(0, survivor);
    let mut taken_over = None;
    wait_for(
        "a run dispatched by the new leader",
        Duration::from_secs(20),
        || {
            taken_over = first_dispatch_after_epoch(&cluster.runs_of("tick"), first_epoch);
            taken_over.is_some()
        },
    );
    let failover = taken_over.expect("a dispatch") - killed;
    println!("failover after kill -9 of the leader: {failover:.3} s");

    // The killed coordinator comes back (same ports) as a follower; then SIGTERM to the
    // leader: it resigns, and the follower takes over well within the election TTL.
    cluster.restart_coordinator(1);
    let second_epoch = max_epoch(&cluster.runs_of("tick"));
    let status = cluster.stop_coordinator(0);
    assert!(
        status.is_some_and(|s| s.success()),
        "a stopped coordinator exits 0: {status:?}"
    );
    let stopped = seconds_now();
    cluster.coordinators.swap(0, 1);
    let mut handed_over = None;
    wait_for(
        "a run dispatched after the resign",
        Duration::from_secs(20),
        || {
            handed_over = first_dispatch_after_epoch(&cluster.runs_of("tick"), second_epoch);
            handed_over.is_some()
        },
    );
    // Includes waiting for the next 1 s slot.
    let handover = handed_over.expect("a dispatch") - stopped;
    println!("hand-over after SIGTERM of the leader: {handover:.3} s");

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

/// DESIGN §6's failover and §2's invariants under repeated crashes: three coordinators,
/// two workers, jobs of 1 s and jobs that run longer than their interval; the leader is
/// killed five times in a row (and comes back as a follower each time). Every time a new
/// leader takes over; afterwards the ledger shows no run of any job overlapping another,
/// every slot is run, skipped or missed exactly once, and every coordinator reports the
/// same cluster status.
#[tokio::test(flavor = "multi_thread")]
async fn five_leader_kills_in_a_row_lose_no_slot_and_never_overlap() {
    let etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    // Default worker timeout and lease TTL: a failover (≈ the 2 s election TTL) is shorter
    // than the workers' lease, so runs in flight survive it and are adopted.
    cluster.start_elected_coordinators(&["c1", "c2", "c3"], &etcd.client_url(), &[]);
    cluster.start_worker("w1", "shell", 4);
    cluster.start_worker("w2", "shell", 4);
    let ledger = cluster.ledger_path();
    let jobs = [("quick-a", 0.2), ("quick-b", 0.2), ("slow", 2.5)];
    for (name, seconds) in jobs {
        let script = json!({ "script": ledger_script(&ledger, seconds) }).to_string();
        create(
            &cluster,
            name,
            &["--handler", "shell", "--every", "1s", "--args", &script],
        );
    }
    wait_for(
        "runs under the first leader",
        Duration::from_secs(20),
        || {
            cluster
                .runs_of("quick-a")
                .iter()
                .filter(|run| run["state"] == "succeeded")
                .count()
                >= 3
        },
    );

    let mut failovers = Vec::new();
    for round in 1..=5 {
        let leader = cluster.leader_index().expect("a leader");
        let witness = (leader + 1) % cluster.coordinators.len();
        let epoch = cluster.status_from(witness).expect("status")["epoch"]
            .as_i64()
            .expect("an epoch");
        let killed_at = seconds_now();
        cluster.coordinators[leader].process.kill();
        let mut taken_over = None;
        wait_for(
            "a run dispatched by a new leader",
            Duration::from_secs(30),
            || {
                taken_over =
                    first_dispatch_after_epoch(&cluster.runs_on(witness, "quick-a"), epoch)
                        .into_iter()
                        .chain(first_dispatch_after_epoch(
                            &cluster.runs_on(witness, "quick-b"),
                            epoch,
                        ))
                        .min_by(f64::total_cmp);
                taken_over.is_some()
            },
        );
        let failover = taken_over.expect("a dispatch") - killed_at;
        println!(
            "round {round}: killed leader {}, first run dispatched by the new leader after {failover:.3} s",
            cluster.coordinators[leader].node_id
        );
        failovers.push(failover);
        cluster.restart_coordinator(leader);
        std::thread::sleep(Duration::from_secs(2));
    }
    failovers.sort_by(f64::total_cmp);
    println!(
        "failover after kill -9 (5 rounds): median {:.3} s, max {:.3} s",
        failovers[2], failovers[4]
    );

    for (name, _) in jobs {
        assert!(cluster.cli(&["job", "pause", name]).success);
    }
    wait_for("every run to end", Duration::from_secs(20), || {
        jobs.iter().all(|(name, _)| {
            cluster.runs_of(name).iter().all(|run| {
                !matches!(
                    run["state"].as_str(),
                    Some("pending" | "dispatched" | "running")
                )
            })
        })
    });
    assert_no_overlap(&read_ledger(&ledger), None);
    for (name, _) in jobs {
        let job = cluster.cli_json(&["job", "get", name]);
        let runs = cluster.runs_of(name);
        let slots = assert_every_slot_accounted_once(&job, &runs, 1.0);
        let ran = runs
            .iter()
            .filter(|run| run["state"] == "succeeded")
            .count();
        println!("job {name}: {slots} slots, {ran} runs succeeded");
        assert!(
            ran >= 5,
            "job {name} kept running through the failovers:\n{}",
            history(&runs)
        );
    }

    // Every coordinator, leader or not, tells the same story.
    let statuses: Vec<Value> = (0..3)
        .map(|index| {
            cluster
                .status_from(index)
                .expect("every coordinator answers")
        })
        .collect();
    let leader = &statuses[0]["leader"];
    assert!(leader["node_id"].is_string(), "a leader: {}", statuses[0]);
    for status in &statuses {
        assert_eq!(&status["leader"], leader, "one leader for all: {status}");
        assert_eq!(status["epoch"], statuses[0]["epoch"], "{status}");
        let coordinators = status["coordinators"].as_array().expect("coordinators");
        assert_eq!(
            coordinators.len(),
            3,
            "three coordinators campaign: {status}"
        );
        assert_eq!(
            coordinators
                .iter()
                .filter(|node| node["leader"] == true)
                .count(),
            1,
            "{status}"
        );
        let mut workers: Vec<&str> = status["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .filter_map(|worker| worker["node_id"].as_str())
            .collect();
        workers.sort_unstable();
        assert_eq!(
            workers,
            ["w1", "w2"],
            "the leader's workers, from any coordinator: {status}"
        );
    }

    // A follower has the leader drain a worker (the workers connect to the leader), and
    // undo it; an unknown worker is said to be unknown.
    let leader_index = cluster.leader_index().expect("a leader");
    let follower = (leader_index + 1) % 3;
    let drained = cluster.cli_json_on(follower, &["workers", "--drain", "w1"]);
    assert_eq!(drained[0]["state"], "draining", "{drained}");
    let seen = cluster.cli_json_on(leader_index, &["workers"]);
    let w1 = seen
        .as_array()
        .and_then(|workers| workers.iter().find(|w| w["node_id"] == "w1"))
        .expect("w1");
    assert_eq!(
        w1["state"], "draining",
        "the leader holds the drain: {seen}"
    );
    let undone = cluster.cli_json_on(follower, &["workers", "--undrain", "w1"]);
    assert_eq!(undone[0]["state"], "connected", "{undone}");
    let unknown = cluster.cli_on(follower, &["workers", "--drain", "nobody"]);
    assert!(!unknown.success);
    assert!(
        unknown
            .stderr
            .contains("no worker \"nobody\" is connected to the leader"),
        "{}",
        unknown.stderr
    );
}

/// Admin calls work against any coordinator: a job created and a run triggered on a
/// coordinator that does not lead reach the leader at once (the store announces the
/// change), not at the leader's next idle wake-up a minute later.
#[tokio::test(flavor = "multi_thread")]
async fn changes_made_on_a_follower_reach_the_leader_at_once() {
    let etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_elected_coordinators(&["c1", "c2"], &etcd.client_url(), &[]);
    cluster.start_worker("w1", "noop", 2);
    wait_for("a leader", Duration::from_secs(20), || {
        cluster.leader_index().is_some()
    });
    let follower = 1 - cluster.leader_index().expect("a leader");
    // Client commands go to the first coordinator: make it the follower.
    cluster.coordinators.swap(0, follower);

    // Every 10 minutes: the first slot is now, the next far away.
    create(&cluster, "rare", &["--handler", "noop", "--every", "10m"]);
    let created = seconds_now();
    wait_for("the first run", Duration::from_secs(20), || {
        cluster
            .runs_of("rare")
            .iter()
            .any(|run| run["state"] == "succeeded")
    });
    println!(
        "first run of a job created on the follower after {:.3} s",
        seconds_now() - created
    );

    assert!(cluster.cli(&["job", "run", "rare"]).success);
    let triggered = seconds_now();
    wait_for("the manual run", Duration::from_secs(20), || {
        cluster
            .runs_of("rare")
            .iter()
            .any(|run| run["trigger"] == "manual" && run["state"] == "succeeded")
    });
    println!(
        "manual run triggered on the follower done after {:.3} s",
        seconds_now() - triggered
    );
}
