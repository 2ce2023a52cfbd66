//! Faults of the parts around the coordinators (DESIGN §2, §5): etcd going away and
//! coming back, a three-member etcd losing a member, a leader cut off from etcd while it
//! still reaches PostgreSQL, a leader that does not know it was deposed, and a worker cut
//! off from its coordinator. Real etcd, PostgreSQL and processes; partitions are made
//! with a proxy that silently drops traffic ([`PartitionProxy`]). Through all of it, no
//! job runs twice at once (the shell jobs' ledger shows it from outside).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cronfleet_coordinator::clock::SystemClock;
use cronfleet_coordinator::election::ElectionError;
use cronfleet_coordinator::{CoordinatorConfig, Election, LeaderInfo, Leadership, LocalElection};
use cronfleet_e2e::cluster::{
    Cluster, FAST_FAILURE_DETECTION, assert_no_overlap, cli_at, create, ledger_script,
    ledger_script_until_stopped, read_ledger, seconds_now, wait_for,
};
use cronfleet_e2e::history::{first_dispatch_after_epoch, history, seconds};
use cronfleet_e2e::proxy::PartitionProxy;
use cronfleet_store::{PostgresStore, Store};
use serde_json::{Value, json};

/// Dispatch times (seconds since the epoch) of a job's runs.
fn dispatch_times(runs: &[Value]) -> Vec<f64> {
    runs.iter()
        .filter(|run| !run["dispatched_at"].is_null())
        .map(|run| seconds(&run["dispatched_at"]))
        .collect()
}

/// A 1-second shell job of 0.2 s runs that writes the ledger.
fn create_ticking_job(cluster: &Cluster, name: &str) {
    let script = json!({ "script": ledger_script(&cluster.ledger_path(), 0.2) }).to_string();
    create(
        cluster,
        name,
        &["--handler", "shell", "--every", "1s", "--args", &script],
    );
}

fn wait_for_succeeded(cluster: &Cluster, index: usize, job: &str, count: usize, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        cluster
            .runs_on(index, job)
            .iter()
            .filter(|run| run["state"] == "succeeded")
            .count()
            >= count
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn without_etcd_nobody_leads_and_work_resumes_when_etcd_returns() {
    let mut etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_elected_coordinators(&["c1", "c2"], &etcd.client_url(), &[]);
    cluster.start_worker("w1", "shell", 2);
    create_ticking_job(&cluster, "tick");
    wait_for_succeeded(&cluster, 0, "tick", 3, "runs while etcd is up");
    let leader = cluster.leader_index().expect("a leader");

    etcd.kill().await.expect("stop etcd");
    wait_for("the leader to step down", Duration::from_secs(15), || {
        cluster.coordinators[leader]
            .process
            .log_text()
            .contains("stopped leading")
    });
    let stepped_down = seconds_now();
    let status = cluster
        .status_from(0)
        .expect("a coordinator answers without etcd");
    assert!(
        status["leader"].is_null(),
        "no leader without etcd: {status}"
    );
    assert!(
        status["election_unavailable"].is_string(),
        "the status says why: {status}"
    );
    // Long enough for several slots to come due.
    std::thread::sleep(Duration::from_secs(4));
    let restarted = seconds_now();
    etcd.start_again().await.expect("start etcd again");

    wait_for(
        "a run dispatched once etcd is back",
        Duration::from_secs(30),
        || {
            dispatch_times(&cluster.runs_of("tick"))
                .iter()
                .any(|&at| at > restarted)
        },
    );
    let runs = cluster.runs_of("tick");
    let during_outage: Vec<f64> = dispatch_times(&runs)
        .into_iter()
        .filter(|&at| at > stepped_down && at < restarted)
        .collect();
    assert!(
        during_outage.is_empty(),
        "nothing is dispatched while there is no leader: {during_outage:?}\n{}",
        history(&runs)
    );
    assert!(cluster.leader_index().is_some(), "a leader again");
    assert_no_overlap(&read_ledger(&cluster.ledger_path()), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_etcd_losing_its_raft_leader_keeps_the_cluster_working() {
    let mut etcd = cronfleet_testkit::EtcdCluster::start(3)
        .await
        .expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_elected_coordinators(&["c1", "c2"], &etcd.endpoints().join(","), &[]);
    cluster.start_worker("w1", "shell", 2);
    create_ticking_job(&cluster, "tick");
    wait_for_succeeded(&cluster, 0, "tick", 3, "runs with three etcd members");

    let member = etcd.wait_for_leader().await.expect("an etcd leader");
    etcd.kill(member).await.expect("kill a member");
    let killed = seconds_now();
    wait_for(
        "five runs after the member was lost",
        Duration::from_secs(30),
        || {
            cluster
                .runs_of("tick")
                .iter()
                .filter(|run| run["state"] == "succeeded")
                .filter(|run| seconds(&run["dispatched_at"]) > killed)
                .count()
                >= 5
        },
    );
    let status = cluster.status_from(0).expect("status");
    assert!(
        status["leader"]["node_id"].is_string(),
        "two members of three still elect: {status}"
    );
    assert_no_overlap(&read_ledger(&cluster.ledger_path()), None);
}

/// The leader loses etcd (its traffic silently dropped) and freezes for a while, as a
/// paused VM would; meanwhile the other coordinator is elected and works. When the old
/// leader wakes up it still reaches PostgreSQL — and leases and dispatches nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_etcd_leases_and_dispatches_nothing_once_another_leads() {
    let etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    let etcd_addr = etcd
        .client_url()
        .trim_start_matches("http://")
        .parse()
        .expect("etcd's address");
    let link = PartitionProxy::start(etcd_addr);
    let through_link = link.url();
    cluster.start_elected_coordinators(&["c1"], &through_link, &[]);
    wait_for("c1 to lead", Duration::from_secs(20), || {
        cluster.leader_index() == Some(0)
    });
    cluster.start_elected_coordinators(&["c2"], &etcd.client_url(), &[]);
    cluster.start_worker("w1", "shell", 2);
    create_ticking_job(&cluster, "tick");
    wait_for_succeeded(&cluster, 1, "tick", 3, "runs under c1");
    let old_epoch = cluster.status_from(1).expect("status")["epoch"]
        .as_i64()
        .expect("epoch");

    link.cut();
    cluster.coordinators[0].process.freeze();
    let mut new_leader_dispatched = None;
    wait_for("c2 to lead and dispatch", Duration::from_secs(30), || {
        new_leader_dispatched = first_dispatch_after_epoch(&cluster.runs_on(1, "tick"), old_epoch);
        new_leader_dispatched.is_some()
    });
    let new_leader_dispatched = new_leader_dispatched.expect("a dispatch");
    // c1 wakes up believing it leads, with every timer it had long overdue.
    cluster.coordinators[0].process.thaw();
    wait_for("c1 to step down", Duration::from_secs(15), || {
        cluster.coordinators[0]
            .process
            .log_text()
            .contains("stopped leading")
    });
    std::thread::sleep(Duration::from_secs(2));
    let why: Vec<String> = cluster.coordinators[0]
        .process
        .log_text()
        .lines()
        .filter(|line| line.contains("fenced") || line.contains("stopped leading"))
        .map(str::to_owned)
        .collect();
    println!("c1 after waking up:\n{}", why.join("\n"));

    let runs = cluster.runs_on(1, "tick");
    let late: Vec<&Value> = runs
        .iter()
        .filter(|run| run["epoch"].as_i64() <= Some(old_epoch))
        .filter(|run| {
            let created = seconds(&run["created_at"]);
            let dispatched = run["dispatched_at"]
                .as_str()
                .map(|_| seconds(&run["dispatched_at"]));
            created >= new_leader_dispatched
                || dispatched.is_some_and(|at| at >= new_leader_dispatched)
        })
        .collect();
    assert!(
        late.is_empty(),
        "the deposed leader leased or dispatched after the new one took over: {late:?}\n{}",
        cluster.logs()
    );
    let status = cluster.status_from(1).expect("status");
    assert_eq!(status["leader"]["node_id"], "c2", "{status}");
    assert_no_overlap(&read_ledger(&cluster.ledger_path()), None);
}

/// An election that never tells its leader that the term is over: the worst case of a
/// leader cut off from etcd (its keep-alive check late, or broken). It leads once, as the
/// local election does; asked again, it waits forever, as a node that cannot reach etcd
/// would.
#[derive(Debug)]
struct DeafElection {
    local: LocalElection,
    campaigned: AtomicBool,
}

#[async_trait]
impl Election for DeafElection {
    async fn campaign(&self) -> Result<Leadership, ElectionError> {
        if self.campaigned.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.local.campaign().await
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>, ElectionError> {
        self.local.leader().await
    }

    async fn coordinators(&self) -> Result<Vec<LeaderInfo>, ElectionError> {
        self.local.coordinators().await
    }

    async fn resign(&self, leadership: &Leadership) -> Result<(), ElectionError> {
        self.local.resign(leadership).await
    }
}

/// The fencing epoch alone stops a deposed leader: its election never says the term
/// ended, yet once a newer epoch is raised in the store (as a new leader does first), its
/// next lease is refused, it steps down, and no run is created under its epoch any more.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_does_not_know_it_was_deposed_is_fenced_by_the_store() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(database.url())
            .await
            .expect("connect"),
    );
    let mut config = CoordinatorConfig::new("deaf");
    config.grpc_addr = "127.0.0.1:0".parse().expect("address");
    config.http_addr = "127.0.0.1:0".parse().expect("address");
    let election = Arc::new(DeafElection {
        local: LocalElection::new(Arc::clone(&store), config.me()),
        campaigned: AtomicBool::new(false),
    });
    let coordinator =
        cronfleet_coordinator::start(config, Arc::clone(&store), election, Arc::new(SystemClock))
            .await
            .expect("start");
    let server = format!("http://{}", coordinator.grpc_addr);
    let created = cli_at(
        &server,
        &[
            "job",
            "create",
            "tick",
            "--handler",
            "noop",
            "--every",
            "1s",
        ],
    );
    assert!(created.success, "{}", created.stderr);
    let runs = || -> Vec<Value> {
        let listed = cli_at(&server, &["runs", "--job", "tick", "-o", "json"]);
        serde_json::from_str(&listed.stdout).expect("runs as JSON")
    };
    // No worker: the runs stay pending, which is enough to see what gets leased.
    wait_for("runs to be leased", Duration::from_secs(20), || {
        runs().len() >= 3
    });
    let deposed = coordinator.leader_epoch().expect("leading");

    // A new leader, elsewhere, raises the epoch.
    let raised_at = seconds_now();
    store
        .raise_epoch(deposed + 1)
        .await
        .expect("raise the epoch");
    wait_for(
        "the deposed leader to step down",
        Duration::from_secs(20),
        || coordinator.leader_epoch().is_none(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let runs = runs();
    let after: Vec<&Value> = runs
        .iter()
        .filter(|run| seconds(&run["created_at"]) > raised_at)
        .collect();
    assert!(
        after.is_empty(),
        "runs created under the deposed epoch {deposed} after {raised_at}: {after:?}"
    );
    coordinator.shutdown();
    coordinator.wait().await.expect("stops");
}

/// A worker that loses its coordinator stops its runs within the lease TTL — before the
/// coordinator, after the longer worker timeout, declares them lost and runs them again
/// on another worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_stops_its_runs_before_they_run_elsewhere() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    let link = PartitionProxy::start(cluster.coordinators[0].grpc);
    cluster.start_worker_with("w1", "shell", 1, &[link.url()]);
    let ledger = cluster.ledger_path();
    // Marks its end when stopped (SIGTERM), so the ledger shows when it really stopped.
    let script = ledger_script_until_stopped(&ledger);
    let args = json!({ "script": script }).to_string();
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    create(
        &cluster,
        "long",
        &["--handler", "shell", "--at", &soon, "--args", &args],
    );
    wait_for("the run to start on w1", Duration::from_secs(20), || {
        !read_ledger(&ledger).is_empty()
    });
    cluster.start_worker("w2", "shell", 1);

    let cut_at = seconds_now();
    link.cut();
    wait_for(
        "the run to start again on w2",
        Duration::from_secs(30),
        || read_ledger(&ledger).len() >= 2,
    );
    let entries = read_ledger(&ledger);
    let (first, second) = (&entries[0], &entries[1]);
    let stopped = first.end.unwrap_or_else(|| {
        panic!(
            "the cut-off worker never stopped its run: {entries:?}\n{}",
            cluster.logs()
        )
    });
    println!(
        "cut off at {cut_at:.3}: w1 stopped its run after {:.3} s, w2 started it after {:.3} s",
        stopped - cut_at,
        second.start - cut_at
    );
    assert!(
        stopped <= second.start,
        "the run was stopped on w1 before it started on w2: {entries:?}"
    );
    let runs = cluster.runs_of("long");
    let lost = runs.iter().filter(|run| run["state"] == "lost").count();
    assert!(lost >= 1, "the first run is lost:\n{}", history(&runs));
    assert_no_overlap(&entries, None);
}

/// Two coordinators without etcd on one database: the second waits as a follower, saying
/// why, instead of taking turns with the first — each would raise the epoch, fence the
/// other and run its runs again. Once the first is gone (`kill -9`), the second leads.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_coordinator_without_etcd_on_one_database_stays_follower() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", FAST_FAILURE_DETECTION);
    cluster.start_coordinator("c2", FAST_FAILURE_DETECTION);
    cluster.start_worker("w1", "shell", 2);
    create_ticking_job(&cluster, "tick");
    wait_for_succeeded(&cluster, 0, "tick", 4, "c1 to run the job");
    wait_for("c2 to say why it waits", Duration::from_secs(10), || {
        cluster.coordinators[1]
            .process
            .log_text()
            .contains("another coordinator without --etcd leads this database")
    });
    let epochs = |cluster: &Cluster| -> std::collections::BTreeSet<i64> {
        cluster
            .runs_of("tick")
            .iter()
            .filter_map(|run| run["epoch"].as_i64())
            .collect()
    };
    assert_eq!(epochs(&cluster).len(), 1, "one leader, one epoch");
    assert!(
        !cluster.coordinators[1]
            .process
            .log_text()
            .contains("leading epoch"),
        "c2 never led"
    );

    cluster.coordinators[0].process.kill();
    wait_for("c2 to take over", Duration::from_secs(20), || {
        cluster.coordinators[1]
            .process
            .log_text()
            .contains("leading epoch=")
    });
    let before = cluster.runs_on(1, "tick").len();
    wait_for("runs under c2", Duration::from_secs(20), || {
        cluster.runs_on(1, "tick").len() >= before + 3
    });
    assert_no_overlap(&read_ledger(&cluster.ledger_path()), None);
}
