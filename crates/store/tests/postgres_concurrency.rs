//! What only a real PostgreSQL can show: leasers working at the same time never take the
//! same job, a leadership change fences the old leader between two of its statements, and
//! a change announced by one process reaches the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cronfleet_core::duration::Interval;
use cronfleet_core::job::JobSpec;
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::schedule::Schedule;
use cronfleet_store::{Changes, JobStore, LeaderStore, PostgresStore, StoreError};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

async fn store_with_jobs(count: usize) -> (cronfleet_testkit::TestDatabase, PostgresStore) {
    let database = cronfleet_testkit::test_database()
        .await
        .expect("test database");
    let store = PostgresStore::connect(database.url())
        .await
        .expect("connect");
    for i in 0..count {
        let spec = JobSpec::new(
            format!("job-{i}"),
            "noop",
            Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC),
        );
        store.create_job(&spec, t(0)).await.unwrap();
    }
    (database, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leasers_never_lease_the_same_job() {
    const JOBS: usize = 400;
    let (database, store) = store_with_jobs(JOBS).await;
    store.raise_epoch(1).await.unwrap();

    // Four leasers with their own connection pools, as separate processes would have.
    let mut leasers = Vec::new();
    for _ in 0..4 {
        let store = PostgresStore::connect(database.url()).await.unwrap();
        leasers.push(tokio::spawn(async move {
            let mut leased = Vec::new();
            loop {
                let lease = store
                    .lease_due(t(1), 1, 7, &LeaseSettings::default())
                    .await
                    .unwrap();
                if lease.jobs_leased == 0 {
                    break leased;
                }
                leased.extend(lease.runs.into_iter().map(|run| run.job_id));
            }
        }));
    }
    let mut all = Vec::new();
    let mut busy_leasers = 0;
    for leaser in leasers {
        let leased = leaser.await.unwrap();
        busy_leasers += usize::from(!leased.is_empty());
        all.extend(leased);
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        JOBS,
        "every due job leased exactly once in total"
    );
    assert_eq!(distinct.len(), JOBS, "no job leased twice");
    assert!(busy_leasers >= 2, "the leasers really ran side by side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_is_fenced_at_once() {
    let (database, old_leader) = store_with_jobs(300).await;
    old_leader.raise_epoch(1).await.unwrap();
    let new_leader = PostgresStore::connect(database.url()).await.unwrap();

    // The old leader leases in a tight loop, one job at a time, while the new one takes
    // over. Once `raise_epoch(2)` has returned, no lease of epoch 1 may succeed.
    let raised = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let old = {
        let raised = Arc::clone(&raised);
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut leased_after_raise = 0;
            let mut leased = 0;
            loop {
                let raised_before = raised.load(Ordering::SeqCst);
                match old_leader
                    .lease_due(t(1), 1, 1, &LeaseSettings::default())
                    .await
                {
                    Ok(lease) if lease.jobs_leased == 0 => {
                        break (leased, leased_after_raise, false);
                    }
                    Ok(_) => {
                        leased += 1;
                        progress.store(leased, Ordering::SeqCst);
                        leased_after_raise += usize::from(raised_before);
                    }
                    Err(StoreError::Fenced {
                        ours: 1,
                        current: 2,
                    }) => break (leased, leased_after_raise, true),
                    Err(error) => panic!("unexpected error: {error}"),
                }
            }
        })
    };
    while progress.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(new_leader.raise_epoch(2).await.unwrap(), 2);
    raised.store(true, Ordering::SeqCst);
    let (leased, leased_after_raise, fenced) = old.await.unwrap();
    assert!(
        fenced,
        "the old leader was stopped by the epoch, after {leased} leases"
    );
    assert_eq!(
        leased_after_raise, 0,
        "no lease of the old epoch after the raise"
    );

    // The new leader takes everything that is left, and only it.
    let lease = new_leader
        .lease_due(t(1), 2, 1000, &LeaseSettings::default())
        .await
        .unwrap();
    assert_eq!(lease.jobs_leased + leased, 300);
    assert!(lease.runs.iter().all(|run| run.epoch == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_announced_by_one_process_reaches_every_feed() {
    let (database, replica) = store_with_jobs(0).await;
    let leader = PostgresStore::connect(database.url())
        .await
        .expect("connect");
    let mut feed = leader
        .change_feed()
        .await
        .unwrap()
        .expect("PostgreSQL has announcements");
    let wait = std::time::Duration::from_secs(10);
    // Nothing announced: nothing heard.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), feed.changed())
            .await
            .is_err()
    );
    replica.announce_change().await.unwrap();
    tokio::time::timeout(wait, feed.changed())
        .await
        .expect("the announcement arrives")
        .unwrap();
    // Every announcement is heard, one after another.
    replica.announce_change().await.unwrap();
    replica.announce_change().await.unwrap();
    for _ in 0..2 {
        tokio::time::timeout(wait, feed.changed())
            .await
            .expect("the announcement arrives")
            .unwrap();
    }
}
