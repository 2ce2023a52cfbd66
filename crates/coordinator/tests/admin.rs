//! The admin API over real gRPC and a real PostgreSQL: every call driven through the
//! generated clients, as the CLI and the web UI drive it, including the answers to bad
//! input (the right code, a message naming the field and value, and nothing written).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cronfleet_coordinator::admin::AdminServices;
use cronfleet_coordinator::clock::Clock;
use cronfleet_coordinator::wake::Wakeup;
use cronfleet_coordinator::workers::{WorkerDirectory, WorkerInfo, WorkerState};
use cronfleet_core::run::RunState;
use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::cluster_service_client::ClusterServiceClient;
use cronfleet_proto::v1::job_service_client::JobServiceClient;
use cronfleet_proto::v1::run_service_client::RunServiceClient;
use cronfleet_proto::{datetime, timestamp};
use cronfleet_store::{JobStore, LeaderStore, PostgresStore, RunTransition};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

/// The test's "now": a clock that only moves when the test moves it.
#[derive(Debug)]
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Workers as a coordinator's registry would report them.
#[derive(Debug)]
struct TestWorkers(Vec<WorkerInfo>);

impl WorkerDirectory for TestWorkers {
    fn workers(&self) -> Vec<WorkerInfo> {
        self.0.clone()
    }
}

/// 2030-01-01T12:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

struct Admin {
    store: Arc<PostgresStore>,
    clock: Arc<TestClock>,
    wakeup: Wakeup,
    /// The dispatcher's own wake-up, as a coordinator with separate loops passes it.
    dispatcher: Wakeup,
    jobs: JobServiceClient<Channel>,
    runs: RunServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
}

/// The admin services on a real tonic server on a free loopback port, over a fresh
/// PostgreSQL database, and clients connected to it.
async fn start(workers: Vec<WorkerInfo>) -> Admin {
    let database = cronfleet_testkit::test_database()
        .await
        .expect("test database");
    let store = Arc::new(
        PostgresStore::connect(database.url())
            .await
            .expect("connect"),
    );
    let clock = Arc::new(TestClock(Mutex::new(t(0))));
    let wakeup = Wakeup::default();
    let dispatcher = Wakeup::default();
    let admin = AdminServices::new(
        store.clone(),
        clock.clone(),
        wakeup.clone(),
        Arc::new(TestWorkers(workers)),
    )
    .with_dispatch_wakeup(dispatcher.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_routes(admin.into_routes())
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the admin API");
    Admin {
        store,
        clock,
        wakeup,
        dispatcher,
        jobs: JobServiceClient::new(channel.clone()),
        runs: RunServiceClient::new(channel.clone()),
        cluster: ClusterServiceClient::new(channel),
    }
}

fn schedule(kind: pb::schedule::Kind) -> Option<pb::Schedule> {
    Some(pb::Schedule {
        kind: Some(kind),
        tz: String::new(),
        start: String::new(),
    })
}

fn every(name: &str, interval: &str) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        handler: "shell".into(),
        schedule: schedule(pb::schedule::Kind::Every(interval.into())),
        ..pb::JobSpec::default()
    }
}

impl Admin {
    async fn create(&mut self, spec: pb::JobSpec) -> Result<pb::Job, tonic::Status> {
        self.jobs
            .create_job(pb::CreateJobRequest { spec: Some(spec) })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get(&mut self, name: &str) -> Result<pb::Job, tonic::Status> {
        self.jobs
            .get_job(pb::GetJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn list(&mut self) -> Vec<pb::Job> {
        self.jobs
            .list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap()
            .into_inner()
            .jobs
    }

    async fn run_now(&mut self, name: &str, at: &str) -> Result<pb::RunJobResponse, tonic::Status> {
        self.jobs
            .run_job(pb::RunJobRequest {
                name: name.into(),
                at: at.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn list_runs(&mut self, request: pb::ListRunsRequest) -> Result<Vec<i64>, tonic::Status> {
        let runs = self.runs.list_runs(request).await?.into_inner().runs;
        Ok(runs.iter().map(|run| run.id).collect())
    }

    /// Whether the scheduler would have been woken (consumes the wake-up).
    async fn was_woken(&self) -> bool {
        woken(&self.wakeup).await
    }

    /// Makes a pending run active, as the dispatcher would.
    async fn dispatch(&self, run: i64) {
        self.store.raise_epoch(1).await.unwrap();
        let now = self.clock.now();
        let run = self
            .store
            .transition_run(
                run,
                &RunTransition::dispatch("w1", 1, now + TimeDelta::hours(1)),
                now,
            )
            .await
            .unwrap();
        assert_eq!(run.state, RunState::Dispatched);
    }
}

/// Whether `wakeup` was signalled (consumes the signal).
async fn woken(wakeup: &Wakeup) -> bool {
    // A wake-up is kept as a permit, so one that happened is seen at once; the short wait
    // only bounds the "nothing happened" case.
    tokio::time::timeout(Duration::from_millis(50), wakeup.woken())
        .await
        .is_ok()
}

/// Asserts that `result` failed with `code` and a message containing every one of
/// `expected`, lowercase-first and without a trailing period.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    expected: &[&str],
) {
    let status = result.expect_err("the call should fail");
    let message = status.message();
    assert_eq!(status.code(), code, "{message}");
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert!(!message.ends_with('.'), "{message:?} ends with a period");
    assert!(
        !message.starts_with(|c: char| c.is_uppercase()),
        "{message:?} starts with a capital"
    );
}

#[tokio::test]
async fn jobs_are_created_read_updated_paused_resumed_and_deleted() {
    let mut admin = start(Vec::new()).await;
    assert!(!admin.was_woken().await, "nothing happened yet");

    let mut spec = every("report", "5m");
    spec.schedule.as_mut().unwrap().tz = "Europe/Berlin".into();
    spec.args_json = r#"{"script": "echo hi"}"#.into();
    spec.priority = -5;
    spec.max_runs = Some(3);
    spec.timeout = Some("30s".into());
    spec.retries = 2;
    spec.overlap = "queue".into();
    spec.catch_up = "all".into();
    spec.catch_up_window = Some("1h".into());
    spec.labels = HashMap::from([("region".into(), "eu".into())]);
    let created = admin.create(spec).await.unwrap();
    assert!(admin.was_woken().await, "a new job wakes the scheduler");

    assert_eq!(created.version, 1);
    assert!(created.active);
    // No start given: slot 0 is the creation time, so the job is due at once.
    assert_eq!(created.next_run_at, Some(timestamp(t(0))));
    assert_eq!(created.remaining_runs, Some(3));
    assert_eq!(
        created.schedule_text,
        "every 5m starting 2030-01-01T13:00:00+01:00 (Europe/Berlin)"
    );
    let answer = created.spec.clone().unwrap();
    assert_eq!(answer.args_json, r#"{"script":"echo hi"}"#);
    assert_eq!(answer.timeout.as_deref(), Some("30s"));
    assert_eq!(answer.catch_up_window.as_deref(), Some("1h"));
    assert_eq!(
        (answer.overlap.as_str(), answer.catch_up.as_str()),
        ("queue", "all")
    );
    assert_eq!(
        answer.schedule.as_ref().unwrap().start,
        "2030-01-01T13:00:00+01:00",
        "the start is carried back, so the spec can be sent again unchanged"
    );
    assert_eq!(admin.get("report").await.unwrap(), created);

    admin
        .create(pb::JobSpec {
            schedule: schedule(pb::schedule::Kind::Cron("0 9 * * 1-5".into())),
            ..every("billing", "1h")
        })
        .await
        .unwrap();
    let names: Vec<String> = admin
        .list()
        .await
        .into_iter()
        .map(|job| job.spec.unwrap().name)
        .collect();
    assert_eq!(names, ["billing", "report"]);

    // Sending the spec back with one change keeps the schedule: seven minutes later the
    // job is still due at its first slot rather than restarted from now.
    admin.clock.advance(TimeDelta::minutes(7));
    let mut changed = answer.clone();
    changed.priority = 10;
    let updated = admin
        .jobs
        .update_job(pb::UpdateJobRequest {
            name: "report".into(),
            expected_version: 1,
            spec: Some(changed),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(admin.was_woken().await, "an update wakes the scheduler");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.spec.as_ref().unwrap().priority, 10);
    assert_eq!(updated.next_run_at, Some(timestamp(t(0))));

    // A writer that read version 1 loses: nothing it sent is applied.
    let mut stale = answer.clone();
    stale.priority = 99;
    assert_status(
        admin
            .jobs
            .update_job(pb::UpdateJobRequest {
                name: "report".into(),
                expected_version: 1,
                spec: Some(stale),
            })
            .await,
        Code::FailedPrecondition,
        &["report", "expected version 1, found 2"],
    );
    assert_eq!(admin.get("report").await.unwrap(), updated);

    let paused = admin
        .jobs
        .pause_job(pb::PauseJobRequest {
            name: "report".into(),
            note: "database migration".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let paused_spec = paused.spec.unwrap();
    assert_eq!(paused_spec.paused, Some(true));
    assert_eq!(paused_spec.pause_note, "database migration");
    assert_eq!(paused.version, 3);
    let resumed = admin
        .jobs
        .resume_job(pb::ResumeJobRequest {
            name: "report".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.spec.unwrap().paused, Some(false));
    assert!(admin.was_woken().await, "a resumed job may be due at once");

    admin
        .jobs
        .delete_job(pb::DeleteJobRequest {
            name: "report".into(),
            force: false,
        })
        .await
        .unwrap();
    assert_status(
        admin.get("report").await,
        Code::NotFound,
        &["job \"report\" not found"],
    );
    assert_status(
        admin
            .jobs
            .delete_job(pb::DeleteJobRequest {
                name: "report".into(),
                force: false,
            })
            .await,
        Code::NotFound,
        &["\"report\""],
    );
    assert_eq!(admin.list().await.len(), 1);
}

#[tokio::test]
async fn a_manual_run_starts_now_or_queues_behind_the_busy_one() {
    let mut admin = start(Vec::new()).await;
    admin.create(every("report", "1h")).await.unwrap();
    assert!(admin.was_woken().await);
    assert!(
        !woken(&admin.dispatcher).await,
        "a new job is the scheduler's business"
    );

    let now = admin.run_now("report", "").await.unwrap();
    assert!(!now.queued);
    let run = now.run.unwrap();
    assert_eq!(
        (
            run.job.as_str(),
            run.state.as_str(),
            run.trigger.as_str(),
            run.attempt
        ),
        ("report", "pending", "manual", 1)
    );
    assert_eq!(run.slot, Some(timestamp(t(0))), "no time given: now");
    assert!(
        admin.was_woken().await,
        "a manual run wakes the leader's loops"
    );
    assert!(
        woken(&admin.dispatcher).await,
        "and the dispatcher, which has a run to dispatch now"
    );

    admin.dispatch(run.id).await;
    let in_ten_minutes = (t(0) + TimeDelta::minutes(10)).to_rfc3339();
    let queued = admin.run_now("report", &in_ten_minutes).await.unwrap();
    assert!(
        queued.queued,
        "the job is busy: the run waits for the current one"
    );
    let queued_run = queued.run.unwrap();
    assert_eq!(queued_run.state, "pending");
    assert_eq!(queued_run.slot, Some(timestamp(t(600))));

    // One waiting run at most.
    assert_status(
        admin.run_now("report", "").await,
        Code::FailedPrecondition,
        &["report", "already has a waiting run"],
    );
    assert_status(
        admin.run_now("report", "2029-12-31 23:00").await,
        Code::InvalidArgument,
        &["at", "2029-12-31T23:00:00+00:00", "in the past"],
    );
    assert_status(
        admin.run_now("report", "tomorrow").await,
        Code::InvalidArgument,
        &["at", "\"tomorrow\"", "RFC 3339"],
    );
    assert_status(
        admin.run_now("nope", "").await,
        Code::NotFound,
        &["\"nope\""],
    );
    assert_status(
        admin.run_now("", "").await,
        Code::InvalidArgument,
        &["name", "missing"],
    );

    let fetched = admin
        .runs
        .get_run(pb::GetRunRequest { id: queued_run.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, queued_run);
    let dispatched = admin
        .runs
        .get_run(pb::GetRunRequest { id: run.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (dispatched.state.as_str(), dispatched.worker.as_str()),
        ("dispatched", "w1")
    );
    assert_eq!(dispatched.deadline, Some(timestamp(t(3600))));
    assert_status(
        admin.runs.get_run(pb::GetRunRequest { id: 999_999 }).await,
        Code::NotFound,
        &["run 999999 not found"],
    );
}

#[tokio::test]
async fn runs_are_listed_by_job_state_age_and_limit() {
    let mut admin = start(Vec::new()).await;
    admin.create(every("alpha", "1h")).await.unwrap();
    admin.create(every("beta", "1h")).await.unwrap();

    // alpha: one finished run at t0, one waiting at t1; beta: one waiting at t2.
    let first = admin.run_now("alpha", "").await.unwrap().run.unwrap().id;
    admin.dispatch(first).await;
    admin
        .store
        .transition_run(first, &RunTransition::to(RunState::Succeeded), t(0))
        .await
        .unwrap();
    admin.clock.advance(TimeDelta::seconds(1));
    let second = admin.run_now("alpha", "").await.unwrap().run.unwrap().id;
    admin.clock.advance(TimeDelta::seconds(1));
    let third = admin.run_now("beta", "").await.unwrap().run.unwrap().id;

    let cases: Vec<(pb::ListRunsRequest, Vec<i64>)> = vec![
        (pb::ListRunsRequest::default(), vec![third, second, first]),
        (
            pb::ListRunsRequest {
                job: "alpha".into(),
                ..Default::default()
            },
            vec![second, first],
        ),
        (
            pb::ListRunsRequest {
                state: "succeeded".into(),
                ..Default::default()
            },
            vec![first],
        ),
        (
            pb::ListRunsRequest {
                job: "beta".into(),
                state: "pending".into(),
                ..Default::default()
            },
            vec![third],
        ),
        (
            pb::ListRunsRequest {
                since: t(1).to_rfc3339(),
                ..Default::default()
            },
            vec![third, second],
        ),
        (
            pb::ListRunsRequest {
                limit: 1,
                ..Default::default()
            },
            vec![third],
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(
            admin.list_runs(request.clone()).await.unwrap(),
            expected,
            "{request:?}"
        );
    }

    assert_status(
        admin
            .list_runs(pb::ListRunsRequest {
                state: "done".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &[
            "state",
            "\"done\"",
            "pending, dispatched, running, succeeded",
        ],
    );
    assert_status(
        admin
            .list_runs(pb::ListRunsRequest {
                since: "yesterday".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["since", "\"yesterday\""],
    );
    assert_status(
        admin
            .list_runs(pb::ListRunsRequest {
                job: "gamma".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["job \"gamma\" not found"],
    );
}

#[tokio::test]
async fn workers_are_listed_from_the_directory() {
    let worker = |node_id: &str, state| WorkerInfo {
        node_id: node_id.into(),
        handlers: vec!["shell".into(), "noop".into()],
        labels: BTreeMap::from([("region".into(), "eu".into())]),
        capacity: 8,
        busy: 3,
        connected_at: t(-60),
        last_heartbeat_at: t(-1),
        state,
        version: "0.1.0".into(),
    };
    let mut admin = start(vec![
        worker("w2", WorkerState::Draining),
        worker("w1", WorkerState::Connected),
    ])
    .await;
    let workers = admin
        .cluster
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let summary: Vec<(&str, &str)> = workers
        .iter()
        .map(|w| (w.node_id.as_str(), w.state.as_str()))
        .collect();
    assert_eq!(summary, [("w1", "connected"), ("w2", "draining")]);
    let first = &workers[0];
    assert_eq!(first.handlers, ["shell", "noop"]);
    assert_eq!(first.labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!((first.capacity, first.busy), (8, 3));
    assert_eq!(first.connected_at.as_ref().and_then(datetime), Some(t(-60)));
    assert_eq!(
        first.last_heartbeat_at.as_ref().and_then(datetime),
        Some(t(-1))
    );
    assert_eq!(first.version, "0.1.0");

    // Standing alone (no election), the status knows the epoch and its own workers.
    let status = admin
        .cluster
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.epoch, admin.store.epoch().await.unwrap());
    assert_eq!(status.leader, None);
    assert_eq!(status.workers, workers);
    assert!(status.workers_unavailable.is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_with_its_field_and_changes_nothing() {
    let mut admin = start(Vec::new()).await;
    // A negative priority is valid (it runs first).
    admin
        .create(pb::JobSpec {
            priority: -10,
            ..every("taken", "5m")
        })
        .await
        .unwrap();
    admin.create(every("other", "5m")).await.unwrap();
    assert!(admin.was_woken().await);
    let before = admin.list().await;

    type Mutation = fn(&mut pb::JobSpec);
    let cases: Vec<(&str, Mutation, Code, &[&str])> = vec![
        (
            "invalid cron",
            |s| s.schedule = schedule(pb::schedule::Kind::Cron("61 * * * *".into())),
            Code::InvalidArgument,
            &["cron", "\"61 * * * *\""],
        ),
        (
            "unknown zone",
            |s| s.schedule.as_mut().unwrap().tz = "Mars/Olympus".into(),
            Code::InvalidArgument,
            &["tz", "\"Mars/Olympus\"", "IANA zone name"],
        ),
        (
            "zero interval",
            |s| s.schedule = schedule(pb::schedule::Kind::Every("0s".into())),
            Code::InvalidArgument,
            &["every", "\"0s\"", "greater than zero"],
        ),
        (
            "negative interval",
            |s| s.schedule = schedule(pb::schedule::Kind::Every("-5m".into())),
            Code::InvalidArgument,
            &["every", "\"-5m\"", "negative"],
        ),
        (
            "bad unit",
            |s| s.schedule = schedule(pb::schedule::Kind::Every("5x".into())),
            Code::InvalidArgument,
            &["every", "\"5x\"", "valid units are s, m, h, d, w, mo"],
        ),
        (
            "bad start",
            |s| s.schedule.as_mut().unwrap().start = "soon".into(),
            Code::InvalidArgument,
            &["start", "\"soon\""],
        ),
        (
            "start with cron",
            |s| {
                s.schedule = Some(pb::Schedule {
                    kind: Some(pb::schedule::Kind::Cron("@daily".into())),
                    tz: String::new(),
                    start: "2030-01-01T00:00:00Z".into(),
                })
            },
            Code::InvalidArgument,
            &["start", "only valid with an every schedule"],
        ),
        (
            "at in the past",
            |s| s.schedule = schedule(pb::schedule::Kind::At("2029-06-01T00:00:00Z".into())),
            Code::InvalidArgument,
            &["at", "2029-06-01T00:00:00", "a time in the future"],
        ),
        (
            "max runs 0",
            |s| s.max_runs = Some(0),
            Code::InvalidArgument,
            &["max_runs", "\"0\"", "at least 1"],
        ),
        (
            "duplicate name",
            |s| s.name = "taken".into(),
            Code::AlreadyExists,
            &["a job named \"taken\" already exists"],
        ),
        (
            "bad name",
            |s| s.name = "Bad_Name".into(),
            Code::InvalidArgument,
            &["name", "\"Bad_Name\"", "lowercase letters"],
        ),
        (
            "empty handler",
            |s| s.handler = String::new(),
            Code::InvalidArgument,
            &["handler", "e.g. shell"],
        ),
        (
            "args not JSON",
            |s| s.args_json = "{script: echo}".into(),
            Code::InvalidArgument,
            &["args", "invalid JSON", "{script: echo}"],
        ),
        (
            "args over 1 MiB",
            |s| s.args_json = serde_json::json!({ "blob": "x".repeat(1024 * 1024) }).to_string(),
            Code::InvalidArgument,
            &["args", "1048587 bytes", "at most 1 MiB"],
        ),
        (
            "bad overlap",
            |s| s.overlap = "sometimes".into(),
            Code::InvalidArgument,
            &["overlap", "\"sometimes\"", "skip, queue, replace"],
        ),
        (
            "bad catch-up",
            |s| s.catch_up = "most".into(),
            Code::InvalidArgument,
            &["catch_up", "\"most\"", "one, all, none"],
        ),
        (
            "bad timeout",
            |s| s.timeout = Some("0s".into()),
            Code::InvalidArgument,
            &["timeout", "\"0s\""],
        ),
        (
            "bad catch-up window",
            |s| s.catch_up_window = Some("5x".into()),
            Code::InvalidArgument,
            &[
                "catch_up_window",
                "\"5x\"",
                "valid units are ms, s, m, h, d",
            ],
        ),
        (
            "too many retries",
            |s| s.retries = 101,
            Code::InvalidArgument,
            &["retries", "\"101\"", "0 to 100"],
        ),
        (
            "no schedule kind",
            |s| s.schedule.as_mut().unwrap().kind = None,
            Code::InvalidArgument,
            &["schedule", "exactly one of every, cron or at"],
        ),
        (
            "no schedule",
            |s| s.schedule = None,
            Code::InvalidArgument,
            &["schedule", "exactly one of every, cron or at"],
        ),
        (
            "bad label key",
            |s| s.labels = HashMap::from([("bad key".into(), "eu".into())]),
            Code::InvalidArgument,
            &["labels", "\"bad key\""],
        ),
        (
            "bad label value",
            |s| s.labels = HashMap::from([("region".into(), "eu west".into())]),
            Code::InvalidArgument,
            &["labels", "region=eu west"],
        ),
    ];
    for (case, mutate, code, expected) in cases {
        let mut spec = every("fresh", "5m");
        mutate(&mut spec);
        let result = admin.create(spec.clone()).await;
        assert!(result.is_err(), "{case}: created {result:?}");
        assert_status(result, code, expected);
        assert_eq!(admin.list().await, before, "{case}: something changed");

        // The same spec as an update of an existing job is refused the same way; the
        // duplicate becomes a rename onto another job's name.
        let (update, code, expected): (pb::JobSpec, Code, &[&str]) =
            match spec.name.clone().as_str() {
                "fresh" => (
                    pb::JobSpec {
                        name: "taken".into(),
                        ..spec
                    },
                    code,
                    expected,
                ),
                "taken" => (
                    pb::JobSpec {
                        name: "other".into(),
                        ..spec
                    },
                    Code::AlreadyExists,
                    &["a job named \"other\" already exists"],
                ),
                _ => (spec, code, expected),
            };
        let result = admin
            .jobs
            .update_job(pb::UpdateJobRequest {
                name: "taken".into(),
                expected_version: 1,
                spec: Some(update),
            })
            .await;
        assert_status(result, code, expected);
        assert_eq!(
            admin.list().await,
            before,
            "{case} (update): something changed"
        );
    }
    assert!(!admin.was_woken().await, "refused calls wake nobody");

    assert_status(
        admin
            .jobs
            .create_job(pb::CreateJobRequest { spec: None })
            .await,
        Code::InvalidArgument,
        &["spec", "missing"],
    );
    assert_status(
        admin
            .jobs
            .update_job(pb::UpdateJobRequest {
                name: "nope".into(),
                expected_version: 1,
                spec: Some(every("nope", "5m")),
            })
            .await,
        Code::NotFound,
        &["job \"nope\" not found"],
    );
    assert_status(
        admin
            .jobs
            .pause_job(pb::PauseJobRequest {
                name: "nope".into(),
                note: String::new(),
            })
            .await,
        Code::NotFound,
        &["\"nope\""],
    );
    assert_status(
        admin
            .jobs
            .resume_job(pb::ResumeJobRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        &["\"nope\""],
    );
    assert_status(
        admin.get("").await,
        Code::InvalidArgument,
        &["name", "missing"],
    );
    assert_eq!(admin.list().await, before);
}

impl Admin {
    async fn apply(
        &mut self,
        jobs: Vec<pb::JobSpec>,
        manager: &str,
        prune: bool,
        dry_run: bool,
    ) -> Result<Vec<(String, String)>, tonic::Status> {
        let changes = self
            .jobs
            .apply_jobs(pb::ApplyJobsRequest {
                jobs,
                manager: manager.into(),
                prune,
                dry_run,
            })
            .await?
            .into_inner()
            .changes;
        Ok(changes
            .into_iter()
            .map(|change| (change.name, change.action))
            .collect())
    }
}

fn changes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, action)| ((*name).to_owned(), (*action).to_owned()))
        .collect()
}

#[tokio::test]
async fn apply_jobs_checks_every_spec_and_wakes_the_scheduler_only_for_changes() {
    let mut admin = start(vec![]).await;
    let applied = admin
        .apply(vec![every("a", "5m"), every("b", "1m")], "", false, false)
        .await
        .unwrap();
    assert_eq!(applied, changes(&[("a", "created"), ("b", "created")]));
    assert!(admin.was_woken().await, "new jobs wake the scheduler");
    let a = admin.get("a").await.unwrap();
    assert_eq!(a.managed_by, "apply", "an empty manager is the default one");
    assert_eq!(a.spec.unwrap().paused, Some(false));

    // Nothing changed, or a dry run: the scheduler sleeps on.
    let again = admin
        .apply(
            vec![every("a", "5m"), every("b", "1m")],
            "apply",
            false,
            false,
        )
        .await
        .unwrap();
    assert_eq!(again, changes(&[("a", "unchanged"), ("b", "unchanged")]));
    assert!(!admin.was_woken().await);
    let plan = admin
        .apply(vec![every("a", "10m")], "apply", true, true)
        .await
        .unwrap();
    assert_eq!(plan, changes(&[("a", "updated"), ("b", "deleted")]));
    assert!(!admin.was_woken().await);
    assert_eq!(admin.list().await.len(), 2);

    // An unset `paused` leaves an operator's pause; a set one decides.
    admin
        .jobs
        .pause_job(pb::PauseJobRequest {
            name: "a".into(),
            note: "incident".into(),
        })
        .await
        .unwrap();
    admin.clock.advance(TimeDelta::minutes(1));
    let kept = admin
        .apply(vec![every("a", "5m")], "apply", false, false)
        .await
        .unwrap();
    assert_eq!(kept, changes(&[("a", "unchanged")]));
    let resumed = pb::JobSpec {
        paused: Some(false),
        ..every("a", "5m")
    };
    let applied = admin
        .apply(vec![resumed], "apply", false, false)
        .await
        .unwrap();
    assert_eq!(applied, changes(&[("a", "updated")]));
    assert_eq!(
        admin.get("a").await.unwrap().spec.unwrap().paused,
        Some(false)
    );

    // Checked on the server too, each error naming the job; nothing is written.
    let before: Vec<(String, i64)> = admin
        .list()
        .await
        .into_iter()
        .map(|job| (job.spec.unwrap().name, job.version))
        .collect();
    let bad_cron = pb::JobSpec {
        schedule: schedule(pb::schedule::Kind::Cron("61 * * * *".into())),
        ..every("c", "1m")
    };
    assert_status(
        admin
            .apply(vec![every("a", "7m"), bad_cron], "apply", false, false)
            .await,
        Code::InvalidArgument,
        &["jobs[1] (c): cron: invalid cron expression \"61 * * * *\""],
    );
    assert_status(
        admin
            .apply(
                vec![every("a", "7m"), every("a", "8m")],
                "apply",
                false,
                false,
            )
            .await,
        Code::InvalidArgument,
        &["jobs[1]: the name \"a\" is also the name of jobs[0]"],
    );
    assert_status(
        admin
            .apply(vec![every("a", "7m")], "team-b", false, false)
            .await,
        Code::FailedPrecondition,
        &["jobs[0] (a): the job belongs to manager \"apply\", not \"team-b\""],
    );
    assert_status(
        admin
            .apply(vec![every("", "7m")], "apply", false, false)
            .await,
        Code::InvalidArgument,
        &["jobs[0]: invalid name \"\""],
    );
    let after: Vec<(String, i64)> = admin
        .list()
        .await
        .into_iter()
        .map(|job| (job.spec.unwrap().name, job.version))
        .collect();
    assert_eq!(after, before);
}
