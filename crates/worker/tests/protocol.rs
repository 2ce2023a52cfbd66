//! The worker SDK against the in-test coordinator (`support`): every behaviour
//! worker.proto asks of a worker, over real gRPC — registration, heartbeats, the life of a
//! run, rejections, redirects, self-fencing, reconnects, drains and shutdown.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cronfleet_proto::v1::coordinator_message::Kind as ToWorker;
use cronfleet_proto::v1::worker_message::Kind as FromWorker;
use cronfleet_proto::v1::{Drain, HeldRun, RunOutcome, RunStatus};
use cronfleet_worker::handlers::StockHandler;
use cronfleet_worker::{HandlerError, Outcome, Worker, WorkerBuilder};
use serde_json::json;
use support::{Background, Event, Harness, Role, WAIT, assign, outcome};
use tokio::sync::mpsc;

/// A worker for `harness` with the noop and sleep stock handlers.
fn worker_for(harness: &Harness) -> WorkerBuilder {
    Worker::builder()
        .coordinators([harness.url()])
        .node_id("test-worker")
        .stock_handler(StockHandler::Noop)
        .stock_handler(StockHandler::Sleep)
}

/// Starts `builder`'s worker in the background.
fn start(builder: WorkerBuilder) -> Background {
    let worker = builder.build().expect("a valid worker");
    Background::spawn(move |shutdown| worker.run(shutdown))
}

#[tokio::test]
async fn register_lists_handlers_labels_capacity_and_version() {
    let mut harness = Harness::start(Role::leader(7)).await;
    let labels = BTreeMap::from([
        ("zone".to_owned(), "eu-1".to_owned()),
        ("gpu".to_owned(), "true".to_owned()),
    ]);
    let worker = worker_for(&harness)
        .capacity(3)
        .labels(labels)
        .handler_fn("billing.remind", |_ctx| async { Ok(()) })
        .build()
        .unwrap();
    let status = worker.status();
    let _running = Background::spawn(move |shutdown| worker.run(shutdown));

    let (_, register) = harness.expect_register().await;
    assert_eq!(register.node_id, "test-worker");
    assert_eq!(register.handlers, ["billing.remind", "noop", "sleep"]);
    assert_eq!(register.labels.len(), 2);
    assert_eq!(register.labels["zone"], "eu-1");
    assert_eq!(register.labels["gpu"], "true");
    assert_eq!(register.capacity, 3);
    assert!(register.held_runs.is_empty());
    assert_eq!(register.highest_epoch, 0);
    assert_eq!(register.version, env!("CARGO_PKG_VERSION"));
    // The default kill grace (2 s) and the stop margin (1 s): what the coordinator waits
    // for beyond the lease before it may run this worker's runs elsewhere.
    assert_eq!(register.stop_grace_ms, 3_000);

    let registered = status
        .wait_for(WAIT, |status| status.registration.is_some())
        .await
        .expect("registered");
    let registration = registered.registration.unwrap();
    assert_eq!(registration.coordinator_id, "harness-7");
    assert_eq!(registration.epoch, 7);
    assert_eq!(registration.url, harness.url());
}

#[tokio::test]
async fn heartbeats_arrive_at_the_interval_and_list_running_runs_with_progress() {
    let mut harness = Harness::start(Role::leader_with(1, 100, 5_000)).await;
    let _worker = start(worker_for(&harness).handler_fn("crunch", |ctx| async move {
        ctx.progress(3, 7);
        ctx.cancelled().await;
        Ok(())
    }));
    harness.expect_register().await;

    let mut beats = Vec::new();
    while beats.len() < 6 {
        let at = harness
            .wait_for("Heartbeat", WAIT, |event| match event {
                Event::Message {
                    at,
                    kind: FromWorker::Heartbeat(beat),
                    ..
                } => {
                    assert!(beat.running.is_empty(), "no runs yet: {beat:?}");
                    Some(*at)
                }
                _ => None,
            })
            .await;
        beats.push(at);
    }
    let gaps: Vec<Duration> = beats.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(60) && *gap <= Duration::from_millis(400),
            "heartbeat gaps {gaps:?} should be about 100ms"
        );
    }
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(85) && mean <= Duration::from_millis(200),
        "mean heartbeat gap {mean:?} for a 100ms interval"
    );

    harness.assign(assign(1, "crunch", json!({})));
    harness.expect_started(1).await;
    let progress = harness
        .wait_for("RunProgress", WAIT, |event| match event {
            Event::Message {
                kind: FromWorker::RunProgress(progress),
                ..
            } => Some(*progress),
            _ => None,
        })
        .await;
    assert_eq!(
        (progress.run_id, progress.done, progress.remaining),
        (1, 3, 7)
    );
    let running = harness
        .wait_for("Heartbeat with the run", WAIT, |event| match event {
            Event::Message {
                kind: FromWorker::Heartbeat(beat),
                ..
            } if !beat.running.is_empty() => Some(beat.running.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        running,
        [RunStatus {
            run_id: 1,
            done: 3,
            remaining: 7
        }]
    );
    harness.cancel(1, "test over");
    let finished = harness.expect_finished(1).await;
    assert_eq!(outcome(&finished), RunOutcome::Cancelled);
    assert_eq!(finished.remaining, 7, "the last reported remaining work");
}

#[tokio::test]
async fn a_noop_run_is_started_then_succeeds() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    harness.assign(assign(11, "noop", json!({})));
    let started = harness.expect_started(11).await;
    assert!(started.started_at.is_some());
    let finished = harness.expect_finished(11).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert_eq!(finished.error, "");
    assert_eq!(finished.remaining, 0);
    let started_at = cronfleet_proto::datetime(&started.started_at.unwrap()).unwrap();
    let finished_at = cronfleet_proto::datetime(&finished.finished_at.unwrap()).unwrap();
    assert!(finished_at >= started_at);
}

#[tokio::test]
async fn a_sleep_run_takes_its_time_and_succeeds() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    harness.assign(assign(12, "sleep", json!({"ms": 300})));
    harness.expect_started(12).await;
    let started = Instant::now();
    let finished = harness.expect_finished(12).await;
    let took = started.elapsed();
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "a 300ms sleep took {took:?}"
    );

    harness.assign(assign(13, "sleep", json!({"ms": -1})));
    harness.expect_started(13).await;
    let finished = harness.expect_finished(13).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(
        finished.error,
        "invalid args for the sleep handler: args.ms must be a non-negative integer (milliseconds), got -1"
    );
}

#[tokio::test]
async fn logs_progress_remaining_failures_and_panics_are_reported() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(
        worker_for(&harness)
            .handler_fn("batch", |ctx| async move {
                ctx.log("line 1\n");
                ctx.progress(5, 10);
                ctx.log(format!("job {} attempt {}\n", ctx.job(), ctx.attempt()));
                Ok(())
            })
            .handler_fn("explicit", |_ctx| async { Ok(Outcome::with_remaining(42)) })
            .handler_fn("broken", |ctx| async move {
                ctx.log("trying\n");
                Err::<(), _>(HandlerError::new("the ledger is locked"))
            })
            .handler_fn("bad-json", |_ctx| async { Ok(()) })
            .handler_fn("panics", |_ctx| async {
                if true {
                    panic!("boom");
                }
                Ok(())
            }),
    );
    harness.expect_register().await;

    harness.assign(assign(21, "batch", json!({})));
    harness.expect_started(21).await;
    let mut logged = String::new();
    let finished = harness
        .wait_for("RunFinished", WAIT, |event| match event {
            Event::Message {
                kind: FromWorker::RunLog(log),
                ..
            } => {
                logged.push_str(&log.text);
                None
            }
            Event::Message {
                kind: FromWorker::RunFinished(finished),
                ..
            } => Some(finished.clone()),
            _ => None,
        })
        .await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded);
    assert_eq!(
        logged, "line 1\njob job-21 attempt 1\n",
        "RunLog chunks, in order, before RunFinished"
    );
    assert_eq!(finished.output, logged);
    assert_eq!(
        finished.remaining, 10,
        "the last progress report's remaining work"
    );

    harness.assign(assign(22, "explicit", json!({})));
    assert_eq!(harness.expect_finished(22).await.remaining, 42);

    harness.assign(assign(23, "broken", json!({})));
    let finished = harness.expect_finished(23).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(finished.error, "the ledger is locked");
    assert_eq!(finished.output, "trying\n");

    let mut bad = assign(24, "bad-json", json!({}));
    bad.args_json = "{not json".to_owned();
    harness.assign(bad);
    harness.expect_started(24).await;
    let finished = harness.expect_finished(24).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert!(
        finished.error.starts_with("args are not valid JSON"),
        "{}",
        finished.error
    );

    harness.assign(assign(25, "panics", json!({})));
    let finished = harness.expect_finished(25).await;
    assert_eq!(outcome(&finished), RunOutcome::Failed);
    assert_eq!(finished.error, "handler panicked: boom");
}

#[tokio::test]
async fn the_deadline_times_a_run_out() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    let mut run = assign(31, "sleep", json!({"ms": 30_000}));
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(400);
    run.deadline = Some(cronfleet_proto::timestamp(deadline));
    let assigned = Instant::now();
    harness.assign(run);
    harness.expect_started(31).await;
    let finished = harness.expect_finished(31).await;
    let took = assigned.elapsed();
    assert_eq!(outcome(&finished), RunOutcome::TimedOut, "{finished:?}");
    assert!(
        finished.error.starts_with("deadline "),
        "{}",
        finished.error
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(2),
        "a 400ms deadline took {took:?}"
    );

    // A run whose deadline passed before it arrived is not started at all.
    let mut late = assign(32, "sleep", json!({"ms": 30_000}));
    late.deadline = Some(cronfleet_proto::timestamp(
        chrono::Utc::now() - chrono::Duration::seconds(1),
    ));
    harness.assign(late);
    harness.expect_started(32).await;
    let finished = harness.expect_finished(32).await;
    assert_eq!(outcome(&finished), RunOutcome::TimedOut);
}

/// The timeout is a duration measured on the worker's own clock from the Assign's arrival:
/// a worker whose clock is far behind the coordinator's (the deadline looks an hour away)
/// still stops the run on time, and one whose clock is ahead (the deadline looks past)
/// does not cut it short.
#[tokio::test]
async fn the_timeout_is_timed_on_the_workers_clock_whatever_the_skew() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    let mut behind = assign(33, "sleep", json!({"ms": 30_000}));
    behind.deadline = Some(cronfleet_proto::timestamp(
        chrono::Utc::now() + chrono::Duration::hours(1),
    ));
    behind.timeout_ms = 400;
    let assigned = Instant::now();
    harness.assign(behind);
    let finished = harness.expect_finished(33).await;
    let took = assigned.elapsed();
    assert_eq!(outcome(&finished), RunOutcome::TimedOut, "{finished:?}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(2),
        "a 400ms timeout took {took:?}"
    );

    let mut ahead = assign(34, "sleep", json!({"ms": 300}));
    ahead.deadline = Some(cronfleet_proto::timestamp(
        chrono::Utc::now() - chrono::Duration::hours(1),
    ));
    ahead.timeout_ms = 30_000;
    harness.assign(ahead);
    let finished = harness.expect_finished(34).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
}

#[tokio::test]
async fn cancel_stops_a_run() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    harness.assign(assign(41, "sleep", json!({"ms": 30_000})));
    harness.expect_started(41).await;
    let cancelled = Instant::now();
    harness.cancel(41, "operator asked");
    let finished = harness.expect_finished(41).await;
    assert_eq!(outcome(&finished), RunOutcome::Cancelled);
    assert_eq!(
        finished.error,
        "cancelled by the coordinator: operator asked"
    );
    assert!(cancelled.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_handler_that_ignores_cancellation_is_abandoned_after_the_grace() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(
        worker_for(&harness)
            .kill_grace(Duration::from_millis(200))
            .handler_fn("stubborn", |_ctx| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }),
    );
    harness.expect_register().await;

    harness.assign(assign(45, "stubborn", json!({})));
    harness.expect_started(45).await;
    let cancelled = Instant::now();
    harness.cancel(45, "enough");
    let finished = harness.expect_finished(45).await;
    let took = cancelled.elapsed();
    assert_eq!(outcome(&finished), RunOutcome::Cancelled);
    assert_eq!(finished.error, "cancelled by the coordinator: enough");
    // The grace (200ms) plus the worker's 500ms margin for handlers that clean up.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2_500),
        "abandoned after {took:?}"
    );
    harness.assign(assign(46, "noop", json!({})));
    assert_eq!(
        outcome(&harness.expect_finished(46).await),
        RunOutcome::Succeeded,
        "the abandoned run's slot is free again"
    );
}

#[tokio::test]
async fn an_assign_from_a_deposed_leader_is_rejected() {
    let mut harness = Harness::start(Role::leader(5)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    let mut stale = assign(51, "noop", json!({}));
    stale.epoch = 4;
    harness.assign(stale);
    let (_, report) = harness.next_report().await;
    let FromWorker::RunFinished(finished) = report else {
        panic!("expected RunFinished REJECTED without RunStarted, got {report:?}");
    };
    assert_eq!(finished.run_id, 51);
    assert_eq!(outcome(&finished), RunOutcome::Rejected);
    assert_eq!(
        finished.error,
        "stale epoch 4: this worker has seen epoch 5, so the assign comes from a deposed leader"
    );

    let mut current = assign(52, "noop", json!({}));
    current.epoch = 5;
    harness.assign(current);
    harness.expect_started(52).await;
    assert_eq!(
        outcome(&harness.expect_finished(52).await),
        RunOutcome::Succeeded
    );
}

#[tokio::test]
async fn an_unknown_handler_is_rejected() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    harness.assign(assign(61, "billing.remind", json!({})));
    let (_, report) = harness.next_report().await;
    let FromWorker::RunFinished(finished) = report else {
        panic!("expected RunFinished REJECTED, got {report:?}");
    };
    assert_eq!(outcome(&finished), RunOutcome::Rejected);
    assert_eq!(
        finished.error,
        "unknown handler \"billing.remind\": this worker runs noop, sleep"
    );
}

#[tokio::test]
async fn a_full_worker_rejects_more_runs() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness).capacity(1));
    harness.expect_register().await;

    harness.assign(assign(71, "sleep", json!({"ms": 30_000})));
    harness.expect_started(71).await;
    harness.assign(assign(72, "noop", json!({})));
    let (_, report) = harness.next_report().await;
    let FromWorker::RunFinished(finished) = report else {
        panic!("expected RunFinished REJECTED, got {report:?}");
    };
    assert_eq!(finished.run_id, 72);
    assert_eq!(outcome(&finished), RunOutcome::Rejected);
    assert_eq!(
        finished.error,
        "no free capacity: all 1 slots of this worker are busy"
    );

    harness.cancel(71, "");
    assert_eq!(
        outcome(&harness.expect_finished(71).await),
        RunOutcome::Cancelled
    );
    harness.assign(assign(73, "noop", json!({})));
    assert_eq!(
        outcome(&harness.expect_finished(73).await),
        RunOutcome::Succeeded
    );
}

#[tokio::test]
async fn a_non_leader_redirects_the_worker_to_the_leader() {
    let mut leader = Harness::start(Role::leader(3)).await;
    let mut follower = Harness::start(Role::NotLeader {
        leader_url: leader.url(),
    })
    .await;
    let worker = worker_for(&follower).build().unwrap();
    let status = worker.status();
    let _running = Background::spawn(move |shutdown| worker.run(shutdown));

    let (conn, _) = follower.expect_register().await;
    follower.expect_disconnected(conn).await;
    leader.expect_register().await;
    let registered = status
        .wait_for(WAIT, |status| status.registration.is_some())
        .await
        .expect("registered with the leader");
    assert_eq!(registered.registration.unwrap().url, leader.url());

    let mut run = assign(81, "noop", json!({}));
    run.epoch = 3;
    leader.assign(run);
    assert_eq!(
        outcome(&leader.expect_finished(81).await),
        RunOutcome::Succeeded
    );
}

#[tokio::test]
async fn without_a_known_leader_the_worker_backs_off_and_retries() {
    let mut harness = Harness::start(Role::NotLeader {
        leader_url: String::new(),
    })
    .await;
    let worker = worker_for(&harness).build().unwrap();
    let status = worker.status();
    let _running = Background::spawn(move |shutdown| worker.run(shutdown));

    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        harness.expect_register().await;
        attempts.push(Instant::now());
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // "No leader yet" is an election under way: the worker asks again every 250 ms with
    // jitter in [half, full] (ARCHITECTURE, workers during an election) — never a hot
    // loop, and back within a fraction of a second.
    assert!(
        gaps.iter()
            .all(|gap| *gap >= Duration::from_millis(100) && *gap < Duration::from_secs(1)),
        "{gaps:?}"
    );
    assert!(!status.is_registered());

    harness.set_role(Role::leader(1));
    status
        .wait_for(WAIT, |status| status.registration.is_some())
        .await
        .expect("registered once a leader answers");
}

#[tokio::test]
async fn coordinators_are_tried_in_turn() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut harness = Harness::start(Role::leader(1)).await;
    let worker = worker_for(&harness)
        .coordinators([closed, harness.url()])
        .build()
        .unwrap();
    let started = Instant::now();
    let _running = Background::spawn(move |shutdown| worker.run(shutdown));
    harness.expect_register().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second coordinator is tried at once: {:?}",
        started.elapsed()
    );
}

/// A worker whose `long` handler runs until it is told to stop, and says when it was.
fn start_with_long_handler(harness: &Harness) -> (Background, mpsc::UnboundedReceiver<Instant>) {
    let (cancelled_tx, cancelled_rx) = mpsc::unbounded_channel();
    let worker = start(worker_for(harness).handler_fn("long", move |ctx| {
        let cancelled_tx = cancelled_tx.clone();
        async move {
            ctx.cancelled().await;
            let _ = cancelled_tx.send(Instant::now());
            Ok(())
        }
    }));
    (worker, cancelled_rx)
}

#[tokio::test]
async fn a_silent_coordinator_makes_the_worker_fence_its_runs() {
    let mut harness = Harness::start(Role::leader_with(1, 100, 600)).await;
    let (_worker, mut cancelled_rx) = start_with_long_handler(&harness);
    harness.expect_register().await;
    harness.assign(assign(91, "long", json!({})));
    harness.expect_started(91).await;
    // Heartbeats are answered while the coordinator speaks: no fencing.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        cancelled_rx.try_recv().is_err(),
        "cancelled while the lease was renewed"
    );

    harness.set_silent(true);
    let silent_since = Instant::now();
    let cancelled_at = tokio::time::timeout(WAIT, cancelled_rx.recv())
        .await
        .expect("the run is cancelled once the lease expires")
        .unwrap();
    let after = cancelled_at - silent_since;
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_millis(1_500),
        "fenced {after:?} after the coordinator went silent (lease ttl 600ms)"
    );

    // The worker dropped the dead stream; once a coordinator answers again it reports
    // the run, which it lists as held until then.
    let (conn, register) = harness
        .wait_for("a new Register", WAIT, |event| match event {
            Event::Message {
                conn,
                kind: FromWorker::Register(register),
                ..
            } => Some((*conn, register.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        register.held_runs,
        [HeldRun {
            run_id: 91,
            epoch: 1
        }]
    );
    harness.set_silent(false);
    let (finished_on, finished) = harness.expect_finished_within(91, WAIT).await;
    assert_eq!(finished_on, conn);
    assert_eq!(outcome(&finished), RunOutcome::Aborted);
    assert_eq!(
        finished.error,
        "lease lost: no lease renewal from the coordinator for 600 ms (the lease ttl)"
    );
}

/// Only `LeaseRenewed` answering a heartbeat renews the lease: a coordinator that keeps
/// talking (cancels, renewals for heartbeats never sent) but answers no heartbeat — its
/// answers lost on a one-way link, say — does not keep the worker's runs alive.
#[tokio::test]
async fn only_the_answer_to_a_sent_heartbeat_renews_the_lease() {
    let mut harness = Harness::start(Role::leader_with(1, 100, 600)).await;
    let (_worker, mut cancelled_rx) = start_with_long_handler(&harness);
    harness.expect_register().await;
    harness.assign(assign(92, "long", json!({})));
    harness.expect_started(92).await;

    harness.set_ignore_heartbeats(true);
    let unanswered_since = Instant::now();
    let chatter = async {
        loop {
            harness.send_if_open(ToWorker::Cancel(cronfleet_proto::v1::Cancel {
                run_id: 999,
                reason: "a run this worker does not hold".to_owned(),
            }));
            harness.send_if_open(ToWorker::LeaseRenewed(cronfleet_proto::v1::LeaseRenewed {
                epoch: 1,
                seq: u64::MAX,
            }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let cancelled_at = tokio::select! {
        cancelled = tokio::time::timeout(WAIT, cancelled_rx.recv()) => cancelled
            .expect("the run is stopped once the lease expires")
            .unwrap(),
        () = chatter => unreachable!(),
    };
    let after = cancelled_at - unanswered_since;
    assert!(
        after < Duration::from_millis(1_500),
        "stopped {after:?} after the heartbeats went unanswered (lease ttl 600ms)"
    );
    harness.set_ignore_heartbeats(false);
    let (_, finished) = harness.expect_finished_within(92, WAIT).await;
    assert_eq!(outcome(&finished), RunOutcome::Aborted);
}

/// A coordinator older than `LeaseRenewed.seq` answers every heartbeat, in order, without
/// it: each answer renews the lease from the oldest heartbeat not answered yet, so such a
/// coordinator keeps its workers' runs alive (workers can be upgraded first).
#[tokio::test]
async fn answers_without_a_seq_renew_from_the_oldest_unanswered_heartbeat() {
    let mut harness = Harness::start(Role::leader_with(1, 100, 600)).await;
    harness.set_without_seq(true);
    let (_worker, mut cancelled_rx) = start_with_long_handler(&harness);
    harness.expect_register().await;
    harness.assign(assign(93, "long", json!({})));
    harness.expect_started(93).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        cancelled_rx.try_recv().is_err(),
        "fenced although every heartbeat was answered"
    );
}

#[tokio::test]
async fn runs_survive_a_reconnect_and_report_on_the_new_stream() {
    let mut harness = Harness::start(Role::leader(7)).await;
    let _worker = start(worker_for(&harness));
    let (first, _) = harness.expect_register().await;

    let mut run = assign(101, "sleep", json!({"ms": 1_000}));
    run.epoch = 7;
    harness.assign(run);
    harness.expect_started(101).await;
    harness.drop_connection();

    let (second, register) = harness.expect_register().await;
    assert_ne!(second, first);
    assert_eq!(
        register.held_runs,
        [HeldRun {
            run_id: 101,
            epoch: 7
        }]
    );
    assert_eq!(register.highest_epoch, 7);
    let (finished_on, finished) = harness.expect_finished_within(101, WAIT).await;
    assert_eq!(finished_on, second, "reported on the new stream");
    assert_eq!(outcome(&finished), RunOutcome::Succeeded, "{finished:?}");
}

#[tokio::test]
async fn drain_makes_the_worker_reconnect_keeping_its_runs() {
    let mut harness = Harness::start(Role::leader(2)).await;
    let _worker = start(worker_for(&harness));
    let (first, _) = harness.expect_register().await;

    let mut run = assign(111, "sleep", json!({"ms": 800}));
    run.epoch = 2;
    harness.assign(run);
    harness.expect_started(111).await;
    harness.send(ToWorker::Drain(Drain {
        reason: "stepping down".to_owned(),
    }));
    harness.expect_disconnected(first).await;
    let (second, register) = harness.expect_register().await;
    assert_eq!(
        register.held_runs,
        [HeldRun {
            run_id: 111,
            epoch: 2
        }]
    );
    let (finished_on, finished) = harness.expect_finished_within(111, WAIT).await;
    assert_eq!(finished_on, second);
    assert_eq!(outcome(&finished), RunOutcome::Succeeded);
}

#[tokio::test]
async fn shutdown_lets_running_runs_finish_and_takes_nothing_new() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let worker = start(worker_for(&harness));
    let (conn, _) = harness.expect_register().await;

    harness.assign(assign(121, "sleep", json!({"ms": 700})));
    harness.expect_started(121).await;
    let stopping = tokio::spawn(worker.stop(WAIT));
    tokio::time::sleep(Duration::from_millis(100)).await;
    harness.assign(assign(122, "noop", json!({})));
    let rejected = harness.expect_finished(122).await;
    assert_eq!(outcome(&rejected), RunOutcome::Rejected);
    assert_eq!(
        rejected.error,
        "worker is shutting down: it takes no new runs"
    );

    let finished = harness.expect_finished(121).await;
    assert_eq!(outcome(&finished), RunOutcome::Succeeded);
    let took = stopping.await.unwrap();
    assert!(
        took >= Duration::from_millis(400),
        "waited for the run: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "and no longer: {took:?}");
    harness.expect_disconnected(conn).await;
}

#[tokio::test]
async fn shutdown_cancels_runs_still_running_at_the_drain_timeout() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let worker = start(worker_for(&harness).drain_timeout(Duration::from_millis(300)));
    harness.expect_register().await;

    harness.assign(assign(131, "sleep", json!({"ms": 30_000})));
    harness.expect_started(131).await;
    let stopping = tokio::spawn(worker.stop(WAIT));
    let finished = harness.expect_finished(131).await;
    assert_eq!(outcome(&finished), RunOutcome::Aborted);
    assert_eq!(
        finished.error,
        "worker shutting down: the run did not finish within the drain timeout of 300 ms"
    );
    let took = stopping.await.unwrap();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_repeated_assign_for_a_running_run_is_ignored() {
    let mut harness = Harness::start(Role::leader(1)).await;
    let _worker = start(worker_for(&harness));
    harness.expect_register().await;

    harness.assign(assign(141, "sleep", json!({"ms": 400})));
    harness.expect_started(141).await;
    harness.assign(assign(141, "sleep", json!({"ms": 400})));
    let (_, report) = harness.next_report().await;
    let FromWorker::RunFinished(finished) = report else {
        panic!("expected only the one RunFinished, got {report:?}");
    };
    assert_eq!(outcome(&finished), RunOutcome::Succeeded);
    harness.expect_quiet(Duration::from_millis(300)).await;
}
