//! etcd fixtures against real processes: a single node and a three-member cluster, with
//! kills and restarts of members.

use std::collections::BTreeSet;

use cronfleet_testkit::{EtcdCluster, EtcdServer};

#[tokio::test]
async fn single_node_keeps_its_data_across_kill_and_stop() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let url = etcd.client_url();
    assert!(etcd.is_healthy().await);

    etcd.put("/cronfleet/test/key", "value one").await.unwrap();
    assert_eq!(
        etcd.get("/cronfleet/test/key").await.unwrap().as_deref(),
        Some("value one")
    );
    assert_eq!(etcd.get("/cronfleet/test/missing").await.unwrap(), None);

    etcd.kill().await.unwrap();
    assert!(!etcd.is_running());
    assert!(!etcd.is_healthy().await);
    assert!(etcd.put("/cronfleet/test/key", "lost").await.is_err());

    etcd.start_again().await.unwrap();
    assert_eq!(etcd.client_url(), url);
    assert_eq!(
        etcd.get("/cronfleet/test/key").await.unwrap().as_deref(),
        Some("value one")
    );

    etcd.put("/cronfleet/test/key", "value two").await.unwrap();
    etcd.stop().await.unwrap();
    assert!(!etcd.is_running());
    etcd.start_again().await.unwrap();
    assert_eq!(
        etcd.get("/cronfleet/test/key").await.unwrap().as_deref(),
        Some("value two")
    );

    let dir = etcd.data_dir();
    drop(etcd);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn three_member_cluster_serves_through_leader_loss_and_full_restart() {
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(endpoints.iter().collect::<BTreeSet<_>>().len(), 3);

    // Kill the leader, the harder case: the others must elect a new one.
    let leader = cluster.wait_for_leader().await.unwrap();
    assert!(cluster.member(leader).is_leader().await.unwrap());
    let writer = (leader + 1) % 3;
    let reader = (leader + 2) % 3;

    // One cluster: a write through one member is read through another.
    cluster
        .member(writer)
        .put("/cronfleet/k", "v0")
        .await
        .unwrap();
    assert_eq!(
        cluster
            .member(reader)
            .get("/cronfleet/k")
            .await
            .unwrap()
            .as_deref(),
        Some("v0")
    );

    cluster.kill(leader).await.unwrap();
    assert!(!cluster.member_mut(leader).is_running());
    assert!(!cluster.member(leader).is_healthy().await);
    let new_leader = cluster.wait_for_leader().await.unwrap();
    assert_ne!(new_leader, leader);
    cluster
        .member(writer)
        .put("/cronfleet/k", "v1")
        .await
        .unwrap();
    assert_eq!(
        cluster
            .member(reader)
            .get("/cronfleet/k")
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );

    cluster.start_again(leader).await.unwrap();
    assert!(cluster.member(leader).is_healthy().await);
    assert_eq!(
        cluster
            .member(leader)
            .get("/cronfleet/k")
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );

    // The whole cluster crashes, then comes back one member at a time: the first alone has
    // no quorum. (Killed rather than stopped: a leader left without quorum spends etcd's
    // request timeout, ~7 s, trying to hand over leadership before it stops.)
    for member in 0..3 {
        cluster.kill(member).await.unwrap();
    }
    for member in 0..3 {
        cluster.start_again(member).await.unwrap();
    }
    cluster.wait_healthy().await.unwrap();
    for member in 0..3 {
        assert!(cluster.member(member).is_healthy().await, "member {member}");
    }
    cluster.wait_for_leader().await.unwrap();
    assert_eq!(
        cluster
            .member(0)
            .get("/cronfleet/k")
            .await
            .unwrap()
            .as_deref(),
        Some("v1")
    );
}
