//! `EtcdElection` against real etcd 3.4 processes from the testkit: one winner at a time,
//! prompt hand-over on resign, and stepping down as soon as the lease cannot be kept —
//! etcd killed, lease revoked, key deleted — while surviving the loss of one cluster member.
//!
//! Timings are printed (`--nocapture`) and bounded generously: the bounds tell a working
//! mechanism from a missing one, not a fast machine from a slow one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cronfleet_coordinator::etcd_election::ELECTION_NAME;
use cronfleet_coordinator::{Election, EtcdElection, LeaderInfo, Leadership};
use cronfleet_testkit::{EtcdCluster, EtcdServer};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// etcd's shortest lease; every test's timing is relative to it.
const TTL: Duration = Duration::from_secs(2);

fn node(id: &str) -> LeaderInfo {
    LeaderInfo {
        node_id: id.to_owned(),
        url: format!("http://{id}.cronfleet.invalid:50051"),
    }
}

async fn election(endpoints: Vec<String>, id: &str) -> Arc<EtcdElection> {
    Arc::new(
        EtcdElection::connect(endpoints, node(id), TTL)
            .await
            .expect("connect"),
    )
}

fn campaign(election: &Arc<EtcdElection>) -> JoinHandle<Leadership> {
    let election = Arc::clone(election);
    tokio::spawn(async move { election.campaign().await.expect("campaign") })
}

/// A client of our own, to act on etcd behind the elections' backs.
async fn admin(endpoints: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(endpoints, None)
        .await
        .expect("admin client")
}

/// Fails if `task` finishes within `wait`: used to show a campaign is still waiting.
async fn assert_still_waiting<T: std::fmt::Debug>(task: &mut JoinHandle<T>, wait: Duration) {
    if let Ok(finished) = timeout(wait, task).await {
        panic!("the campaign should still be waiting, but finished: {finished:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_campaigners_leads_and_hands_over_on_resign() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let a = election(vec![etcd.client_url()], "a").await;
    let b = election(vec![etcd.client_url()], "b").await;

    let mut campaign_a = campaign(&a);
    let mut campaign_b = campaign(&b);
    let (a_won, first) = tokio::select! {
        won = &mut campaign_a => (true, won.expect("campaign a")),
        won = &mut campaign_b => (false, won.expect("campaign b")),
    };
    let (winner, winner_id, loser, loser_id, mut losing) = if a_won {
        (&a, "a", &b, "b", campaign_b)
    } else {
        (&b, "b", &a, "a", campaign_a)
    };
    assert_still_waiting(&mut losing, Duration::from_secs(1)).await;
    assert!(first.epoch > 0, "epoch {}", first.epoch);
    assert!(!first.lost.is_cancelled());
    assert_eq!(winner.leader().await.unwrap(), Some(node(winner_id)));
    assert_eq!(loser.leader().await.unwrap(), Some(node(winner_id)));
    // Both take part, the leader first, whoever is asked.
    for asked in [winner, loser] {
        assert_eq!(
            asked.coordinators().await.unwrap(),
            vec![node(winner_id), node(loser_id)]
        );
    }

    let resigned_at = Instant::now();
    winner.resign(&first).await.expect("resign");
    assert!(first.lost.is_cancelled(), "resigning ends the term");
    let second = timeout(Duration::from_secs(1), losing)
        .await
        .expect("the loser must lead within 1 s of the resignation")
        .expect("campaign");
    println!("hand-over after resign: {:?}", resigned_at.elapsed());
    assert!(
        second.epoch > first.epoch,
        "epochs {} then {}",
        first.epoch,
        second.epoch
    );
    assert!(!second.lost.is_cancelled());
    assert_eq!(winner.leader().await.unwrap(), Some(node(loser_id)));
    loser.resign(&second).await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_is_none_not_an_error() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let a = election(vec![etcd.client_url()], "a").await;
    assert_eq!(a.leader().await.expect("leader() without a leader"), None);
    assert_eq!(a.coordinators().await.expect("nobody campaigns"), vec![]);

    let leadership = a.campaign().await.expect("campaign");
    assert_eq!(a.leader().await.unwrap(), Some(node("a")));
    a.resign(&leadership).await.expect("resign");
    assert_eq!(a.leader().await.expect("leader() after resign"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rejects_no_endpoints_and_campaign_fails_fast_without_etcd() {
    let error = EtcdElection::connect(Vec::new(), node("a"), TTL)
        .await
        .expect_err("no endpoint");
    assert!(error.to_string().contains("no etcd endpoint"), "{error}");

    // A port nobody listens on: the campaign must give up, not hang.
    let port = cronfleet_testkit::free_port().expect("port");
    let a = election(vec![format!("http://127.0.0.1:{port}")], "a").await;
    let started = Instant::now();
    let result = timeout(Duration::from_secs(10), a.campaign())
        .await
        .expect("campaign must not hang while etcd is down");
    println!("campaign without etcd failed after {:?}", started.elapsed());
    let error = result.expect_err("campaign without etcd");
    assert!(error.to_string().contains("grant a lease"), "{error}");
    assert!(a.leader().await.is_err(), "no etcd is an error, not `None`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_etcd_is_killed_steps_down() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let a = election(vec![etcd.client_url()], "a").await;
    let leadership = a.campaign().await.expect("campaign");
    // Let keep-alives reach their steady state.
    tokio::time::sleep(TTL / 2).await;

    let killed_at = Instant::now();
    etcd.kill().await.expect("kill etcd");
    timeout(TTL + Duration::from_secs(2), leadership.lost.cancelled())
        .await
        .expect("the leader must step down within about the TTL of losing etcd");
    println!(
        "stepped down {:?} after etcd was killed",
        killed_at.elapsed()
    );

    let started = Instant::now();
    let again = timeout(Duration::from_secs(10), a.campaign())
        .await
        .expect("campaign must not hang while etcd is down");
    assert!(again.is_err(), "campaign without etcd: {again:?}");
    println!("campaign without etcd failed after {:?}", started.elapsed());
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_etcd_stops_answering_steps_down_within_the_ttl() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let pid = etcd.pid().expect("etcd pid");
    let a = election(vec![etcd.client_url()], "a").await;
    let leadership = a.campaign().await.expect("campaign");
    tokio::time::sleep(TTL / 2).await;

    // A frozen etcd keeps its connections open and answers nothing: only the leader's own
    // deadline (TTL after the last confirmed keep-alive was sent) can tell.
    let frozen_at = Instant::now();
    signal(pid, "STOP");
    let stepped_down = timeout(TTL + Duration::from_secs(1), leadership.lost.cancelled()).await;
    let took = frozen_at.elapsed();
    signal(pid, "CONT");
    stepped_down.expect("the leader must step down within the TTL of its last keep-alive");
    println!("stepped down {took:?} after etcd froze (TTL {TTL:?})");
    // Keep-alives go out every TTL/3, so the last confirmed one is at most that old.
    assert!(took >= TTL / 2, "stepped down after only {took:?}");
    assert!(took <= TTL + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_revoked_steps_down_at_once() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let a = election(vec![etcd.client_url()], "a").await;
    let leadership = a.campaign().await.expect("campaign");
    let mut admin = admin(&[etcd.client_url()]).await;
    let lease = admin
        .leader(ELECTION_NAME)
        .await
        .expect("leader")
        .kv()
        .expect("leader key")
        .lease();

    // A leader that has been leading for a moment: its watch of the key is in place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    admin.lease_revoke(lease).await.expect("revoke");
    timeout(Duration::from_millis(500), leadership.lost.cancelled())
        .await
        .expect("a revoked lease must end the term promptly");
    println!(
        "stepped down {:?} after the lease was revoked",
        revoked_at.elapsed()
    );
    // Stepping down is final for this term: giving it back is harmless.
    a.resign(&leadership).await.expect("resign after losing");
    assert_eq!(a.leader().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_steps_down_at_once() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let a = election(vec![etcd.client_url()], "a").await;
    let leadership = a.campaign().await.expect("campaign");
    let mut admin = admin(&[etcd.client_url()]).await;
    let answer = admin.leader(ELECTION_NAME).await.expect("leader");
    let key = answer.kv().expect("leader key");
    let lease = key.lease();

    // The lease stays alive, so only watching the key can tell.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deleted_at = Instant::now();
    admin.delete(key.key(), None).await.expect("delete");
    timeout(Duration::from_millis(500), leadership.lost.cancelled())
        .await
        .expect("a deleted leader key must end the term promptly");
    println!(
        "stepped down {:?} after the key was deleted",
        deleted_at.elapsed()
    );

    // The ended term's lease is revoked rather than left to expire.
    let revoked = async {
        loop {
            let ttl = admin.lease_time_to_live(lease, None).await.expect("ttl");
            if ttl.ttl() < 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(1), revoked)
        .await
        .expect("the lease of an ended term is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_survives_the_loss_of_the_cluster_member_it_talks_to() {
    let mut cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let raft_leader = cluster.wait_for_leader().await.expect("raft leader");
    // Put a member that is not the raft leader first: the elections talk to it first,
    // so killing it breaks their streams and connections, not just a spare endpoint.
    let victim = (raft_leader + 1) % cluster.size();
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, victim);
    let survivors = endpoints[1..].to_vec();

    let a = election(endpoints.clone(), "a").await;
    let leadership = a.campaign().await.expect("campaign");
    tokio::time::sleep(TTL / 2).await;

    let killed_at = Instant::now();
    cluster.kill(victim).await.expect("kill a member");

    // Another node, whose first endpoint is the dead member, still sees and campaigns.
    let b = election(endpoints.clone(), "b").await;
    assert_eq!(b.leader().await.expect("leader"), Some(node("a")));
    let mut losing = campaign(&b);

    // The leader keeps its lease alive through the surviving members.
    if timeout(
        2 * TTL + Duration::from_secs(1),
        leadership.lost.cancelled(),
    )
    .await
    .is_ok()
    {
        panic!(
            "the leader stepped down {:?} after one member of three died",
            killed_at.elapsed()
        );
    }
    let mut admin = admin(&survivors).await;
    let lease = admin
        .leader(ELECTION_NAME)
        .await
        .expect("leader")
        .kv()
        .expect("leader key")
        .lease();
    let remaining = admin.lease_time_to_live(lease, None).await.expect("ttl");
    assert!(remaining.ttl() > 0, "lease ttl {}", remaining.ttl());
    println!(
        "still leading {:?} after the member was killed (lease ttl {} s left)",
        killed_at.elapsed(),
        remaining.ttl()
    );
    assert_still_waiting(&mut losing, Duration::ZERO).await;

    let resigned_at = Instant::now();
    a.resign(&leadership).await.expect("resign");
    let second = timeout(Duration::from_secs(1), losing)
        .await
        .expect("the other node must lead within 1 s of the resignation")
        .expect("campaign");
    println!("hand-over with a member down: {:?}", resigned_at.elapsed());
    assert!(second.epoch > leadership.epoch);
    assert_eq!(a.leader().await.unwrap(), Some(node("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_after_about_the_ttl() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let a = EtcdElection::connect(vec![etcd.client_url()], node("a"), TTL)
        .await
        .expect("connect");
    let b = election(vec![etcd.client_url()], "b").await;
    let first = a.campaign().await.expect("campaign");
    let mut losing = campaign(&b);
    assert_still_waiting(&mut losing, Duration::from_millis(300)).await;

    // A crash: keep-alives stop, nothing is resigned or revoked.
    let crashed_at = Instant::now();
    drop(a);
    assert!(
        first.lost.is_cancelled(),
        "a dropped election leads no more"
    );
    let second = timeout(TTL + Duration::from_secs(2), losing)
        .await
        .expect("the other node must lead within about the TTL")
        .expect("campaign");
    let took = crashed_at.elapsed();
    println!("replaced {took:?} after the leader crashed (TTL {TTL:?})");
    // Sooner would mean the crash gave the lease back, which a real crash cannot.
    assert!(took >= TTL / 2, "replaced after only {took:?}");
    assert!(second.epoch > first.epoch);
    assert_eq!(b.leader().await.unwrap(), Some(node("b")));
}
