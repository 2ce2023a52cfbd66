//! The store's behaviour, run against both back-ends: every scenario here runs once on a
//! real PostgreSQL (a fresh database from the testkit) and once on a real SQLite file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cronfleet_core::apply::{ApplyRequest, DesiredJob, JobChange};
use cronfleet_core::duration::Interval;
use cronfleet_core::job::{JobSpec, MAX_ARGS_BYTES};
use cronfleet_core::lease::LeaseSettings;
use cronfleet_core::policy::{AUTO_PAUSE_NOTE_PREFIX, CatchUpPolicy, OverlapPolicy};
use cronfleet_core::run::{MAX_OUTPUT_BYTES, RunState, Trigger};
use cronfleet_core::schedule::Schedule;
use cronfleet_store::{
    Changes, FinishOrder, InFlightRun, JobQuery, JobSort, JobStatus, JobStore, LastRun,
    LeaderStore, Lost, PostgresStore, RequestedCancel, RunBacklog, RunFilter, RunOrder,
    RunTransition, SqliteStore, Store, StoreError,
};

const EPOCH: i64 = 7;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn ms(millis: i64) -> TimeDelta {
    TimeDelta::milliseconds(millis)
}

fn every_second(name: &str) -> JobSpec {
    JobSpec::new(
        name,
        "noop",
        Schedule::every(
            Interval::Elapsed(TimeDelta::seconds(1)),
            t(0),
            chrono_tz::UTC,
        ),
    )
}

fn settings() -> LeaseSettings {
    LeaseSettings::default()
}

async fn leader(store: &dyn Store) {
    assert_eq!(store.raise_epoch(EPOCH).await.unwrap(), EPOCH);
}

async fn runs_of(store: &dyn Store, job: &str) -> Vec<cronfleet_core::run::Run> {
    store
        .list_runs(&RunFilter {
            job: Some(job.to_owned()),
            order: RunOrder::OldestFirst,
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap()
}

async fn create_get_list_delete(store: Arc<dyn Store>) {
    let mut spec = every_second("report");
    spec.args = serde_json::json!({"script": "echo hi", "n": [1, 2]});
    spec.priority = -3;
    spec.max_runs = Some(4);
    spec.timeout = Some(Duration::from_secs(90));
    spec.retries = 2;
    spec.overlap = OverlapPolicy::Queue;
    spec.catch_up.policy = CatchUpPolicy::All;
    spec.catch_up.window = Some(Duration::from_secs(3600));
    spec.labels = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
    spec.alerts_enabled = false;
    spec.alert_if_no_success = Some(Duration::from_secs(26 * 3600));
    spec.expected_duration = Some(Duration::from_millis(1500));
    let created = store.create_job(&spec, t(0)).await.unwrap();
    assert_eq!(created.version, 1);
    assert!(created.active);
    assert_eq!(
        created.next_run_at,
        Some(t(0)),
        "slot 0 of an every schedule is its start"
    );
    assert_eq!(created.remaining_runs, Some(4));

    let got = store.get_job("report").await.unwrap();
    assert_eq!(got.id, created.id);
    assert_eq!(got.spec.args, spec.args);
    assert_eq!(got.spec.schedule.to_parts(), spec.schedule.to_parts());
    assert_eq!(got.spec.priority, -3);
    assert_eq!(got.spec.timeout, Some(Duration::from_secs(90)));
    assert_eq!(got.spec.retries, 2);
    assert_eq!(got.spec.overlap, OverlapPolicy::Queue);
    assert_eq!(got.spec.catch_up, spec.catch_up);
    assert_eq!(got.spec.labels, spec.labels);
    assert!(!got.spec.alerts_enabled);
    assert_eq!(
        got.spec.alert_if_no_success,
        Some(Duration::from_secs(26 * 3600))
    );
    assert_eq!(
        got.spec.expected_duration,
        Some(Duration::from_millis(1500))
    );
    assert_eq!(got.created_at, t(0));
    let plain = store
        .create_job(&every_second("defaults"), t(0))
        .await
        .unwrap();
    assert!(plain.spec.alerts_enabled, "alerts are on by default");
    assert_eq!(
        (plain.spec.alert_if_no_success, plain.spec.expected_duration),
        (None, None)
    );
    store.delete_job("defaults").await.unwrap();

    store
        .create_job(&every_second("alpha"), t(0))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.spec.name)
        .collect();
    assert_eq!(names, ["alpha", "report"]);

    store.delete_job("report").await.unwrap();
    assert!(
        matches!(store.get_job("report").await, Err(StoreError::JobNotFound(name)) if name == "report")
    );
    assert!(matches!(
        store.delete_job("report").await,
        Err(StoreError::JobNotFound(_))
    ));
}

async fn bad_jobs_are_rejected_and_write_nothing(store: Arc<dyn Store>) {
    store
        .create_job(&every_second("taken"), t(0))
        .await
        .unwrap();
    let duplicate = store
        .create_job(&every_second("taken"), t(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&duplicate, StoreError::DuplicateJob(name) if name == "taken"),
        "{duplicate}"
    );
    assert_eq!(
        duplicate.to_string(),
        "a job named \"taken\" already exists"
    );

    let mut big = every_second("big");
    big.args = serde_json::Value::String("x".repeat(MAX_ARGS_BYTES + 1));
    let error = store.create_job(&big, t(0)).await.unwrap_err();
    assert!(error.to_string().contains("invalid args"), "{error}");

    let bad_name = every_second("Bad Name");
    assert!(matches!(
        store.create_job(&bad_name, t(0)).await,
        Err(StoreError::InvalidJob(_))
    ));

    let past = JobSpec::new("past", "noop", Schedule::at(t(-10), chrono_tz::UTC));
    let error = store.create_job(&past, t(0)).await.unwrap_err();
    assert!(
        error.to_string().contains("a time in the future"),
        "{error}"
    );

    let names: Vec<String> = store
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.spec.name)
        .collect();
    assert_eq!(names, ["taken"]);
}

async fn updates_check_the_version_and_reschedule(store: Arc<dyn Store>) {
    let job = store.create_job(&every_second("sync"), t(0)).await.unwrap();

    let mut spec = job.spec.clone();
    spec.priority = 9;
    spec.alerts_enabled = false;
    spec.alert_if_no_success = Some(Duration::from_secs(3600));
    spec.expected_duration = Some(Duration::from_secs(60));
    let updated = store
        .update_job("sync", job.version, &spec, t(5))
        .await
        .unwrap();
    assert_eq!(updated.version, job.version + 1);
    assert_eq!(updated.spec.priority, 9);
    let got = store.get_job("sync").await.unwrap();
    assert!(!got.spec.alerts_enabled);
    assert_eq!(
        got.spec.alert_if_no_success,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(got.spec.expected_duration, Some(Duration::from_secs(60)));
    assert_eq!(
        updated.next_run_at,
        Some(t(0)),
        "a policy change keeps the schedule position"
    );

    let stale = store
        .update_job("sync", job.version, &spec, t(5))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::VersionConflict { expected, actual, .. } if expected == job.version && actual == job.version + 1),
        "{stale}"
    );

    spec.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::minutes(1)),
        t(30),
        chrono_tz::UTC,
    );
    let rescheduled = store
        .update_job("sync", updated.version, &spec, t(100))
        .await
        .unwrap();
    assert_eq!(
        rescheduled.next_run_at,
        Some(t(150)),
        "first slot at or after now"
    );

    // Back to the defaults: alerts on, no dead-man's switch, no expected duration.
    spec.alerts_enabled = true;
    spec.alert_if_no_success = None;
    spec.expected_duration = None;
    store
        .update_job("sync", rescheduled.version, &spec, t(100))
        .await
        .unwrap();
    let got = store.get_job("sync").await.unwrap();
    assert!(got.spec.alerts_enabled);
    assert_eq!(
        (got.spec.alert_if_no_success, got.spec.expected_duration),
        (None, None)
    );

    let missing = store
        .update_job("nope", 1, &spec, t(100))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::JobNotFound(_)));
}

fn desired(spec: JobSpec) -> DesiredJob {
    DesiredJob {
        spec,
        start_given: true,
        paused_given: false,
    }
}

fn apply_list(manager: &str, jobs: Vec<JobSpec>, prune: bool) -> ApplyRequest {
    ApplyRequest {
        manager: manager.to_owned(),
        jobs: jobs.into_iter().map(desired).collect(),
        prune,
    }
}

/// Applies every-second jobs of these names as `manager` (writing them).
async fn apply_names(
    store: &dyn Store,
    manager: &str,
    names: &[&str],
    prune: bool,
    now: DateTime<Utc>,
) -> Vec<JobChange> {
    let jobs = names.iter().map(|name| every_second(name)).collect();
    store
        .apply_jobs(&apply_list(manager, jobs, prune), false, now)
        .await
        .unwrap()
}

fn actions(changes: &[JobChange]) -> Vec<(String, &'static str)> {
    changes
        .iter()
        .map(|change| (change.name.clone(), change.action.as_str()))
        .collect()
}

/// Each job's name, owner and version: what a refused or dry-run apply must leave as it was.
async fn owners(store: &dyn Store) -> Vec<(String, Option<String>, i64)> {
    store
        .list_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|job| (job.spec.name, job.managed_by, job.version))
        .collect()
}

async fn apply_creates_updates_and_leaves_alone(store: Arc<dyn Store>) {
    let mut report = every_second("report");
    report.retries = 2;
    let list = apply_list("apply", vec![every_second("tick"), report.clone()], false);
    let changes = store.apply_jobs(&list, false, t(0)).await.unwrap();
    assert_eq!(
        actions(&changes),
        [("tick".into(), "created"), ("report".into(), "created")]
    );
    let created = store.get_job("report").await.unwrap();
    assert_eq!(created.managed_by.as_deref(), Some("apply"));
    assert_eq!((created.version, created.spec.retries), (1, 2));
    assert_eq!(created.next_run_at, Some(t(0)));

    // The same list again: nothing to do, nothing written.
    let changes = store.apply_jobs(&list, false, t(5)).await.unwrap();
    assert_eq!(
        actions(&changes),
        [("tick".into(), "unchanged"), ("report".into(), "unchanged")]
    );
    assert_eq!(store.get_job("report").await.unwrap().version, 1);

    // A policy change keeps the schedule's place; a schedule change starts it again.
    report.retries = 5;
    let mut tick = every_second("tick");
    tick.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::minutes(1)),
        t(30),
        chrono_tz::UTC,
    );
    let changes = store
        .apply_jobs(
            &apply_list("apply", vec![tick, report], false),
            false,
            t(100),
        )
        .await
        .unwrap();
    assert_eq!(
        actions(&changes),
        [("tick".into(), "updated"), ("report".into(), "updated")]
    );
    let fields: Vec<&str> = changes[0].fields.iter().map(|f| f.field).collect();
    assert_eq!(fields, ["every", "start"]);
    assert_eq!(
        (
            changes[1].fields[0].field,
            changes[1].fields[0].to.as_deref()
        ),
        ("retries", Some("5"))
    );
    let report = store.get_job("report").await.unwrap();
    assert_eq!((report.version, report.spec.retries), (2, 5));
    assert_eq!(
        report.next_run_at,
        Some(t(0)),
        "the schedule keeps its place"
    );
    let tick = store.get_job("tick").await.unwrap();
    assert_eq!(tick.next_run_at, Some(t(150)), "first slot at or after now");

    // An update by hand keeps the owner, and a stale one loses to the apply.
    let mut by_hand = report.spec.clone();
    by_hand.priority = 4;
    let updated = store
        .update_job("report", report.version, &by_hand, t(110))
        .await
        .unwrap();
    assert_eq!(updated.managed_by.as_deref(), Some("apply"));
    let stale = store
        .update_job("report", report.version, &by_hand, t(110))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::VersionConflict { .. }),
        "{stale}"
    );
}

async fn apply_adopts_but_prunes_only_its_own_jobs(store: Arc<dyn Store>) {
    store
        .create_job(&every_second("by-hand"), t(0))
        .await
        .unwrap();
    store
        .create_job(&every_second("untouched"), t(0))
        .await
        .unwrap();
    apply_names(store.as_ref(), "team-b", &["theirs"], false, t(0)).await;
    apply_names(
        store.as_ref(),
        "apply",
        &["old-a", "old-b", "kept"],
        false,
        t(0),
    )
    .await;

    // Listing a job defined by hand adopts it.
    let changes = apply_names(store.as_ref(), "apply", &["kept", "by-hand"], true, t(10)).await;
    assert_eq!(
        actions(&changes),
        [
            ("kept".into(), "unchanged"),
            ("by-hand".into(), "updated"),
            ("old-a".into(), "deleted"),
            ("old-b".into(), "deleted"),
        ]
    );
    assert_eq!(changes[1].fields[0].field, "managed_by");
    assert_eq!(
        owners(store.as_ref()).await,
        [
            ("by-hand".into(), Some("apply".into()), 2),
            ("kept".into(), Some("apply".into()), 1),
            ("theirs".into(), Some("team-b".into()), 1),
            ("untouched".into(), None, 1),
        ]
    );

    // An empty list with pruning removes every job of the manager, and only those.
    let changes = apply_names(store.as_ref(), "apply", &[], true, t(20)).await;
    assert_eq!(
        actions(&changes),
        [("by-hand".into(), "deleted"), ("kept".into(), "deleted")]
    );
    let names: Vec<String> = owners(store.as_ref())
        .await
        .into_iter()
        .map(|(name, ..)| name)
        .collect();
    assert_eq!(names, ["theirs", "untouched"]);
}

async fn a_refused_or_dry_run_apply_writes_nothing(store: Arc<dyn Store>) {
    apply_names(store.as_ref(), "team-b", &["theirs"], false, t(0)).await;
    apply_names(store.as_ref(), "apply", &["mine", "gone"], false, t(0)).await;
    let before = owners(store.as_ref()).await;
    let mut changed = every_second("mine");
    changed.priority = 3;

    // A plan: what would change, with nothing written.
    let plan = store
        .apply_jobs(
            &apply_list("apply", vec![changed.clone(), every_second("new")], true),
            true,
            t(10),
        )
        .await
        .unwrap();
    assert_eq!(
        actions(&plan),
        [
            ("mine".into(), "updated"),
            ("new".into(), "created"),
            ("gone".into(), "deleted"),
        ]
    );
    assert_eq!(owners(store.as_ref()).await, before);

    // Good changes next to a bad one: none of them is written.
    let past = JobSpec::new("past", "noop", Schedule::at(t(-10), chrono_tz::UTC));
    let refusals: Vec<(ApplyRequest, &str)> = vec![
        (
            apply_list("apply", vec![changed.clone(), every_second("theirs")], true),
            "jobs[1] (theirs): the job belongs to manager \"team-b\", not \"apply\"",
        ),
        (
            apply_list(
                "apply",
                vec![changed.clone(), every_second("new"), past],
                true,
            ),
            "jobs[2] (past): invalid at",
        ),
        (
            apply_list("apply", vec![changed.clone(), every_second("mine")], true),
            "jobs[1]: the name \"mine\" is also the name of jobs[0]",
        ),
        (
            apply_list("Not A Manager", vec![every_second("new")], false),
            "invalid manager \"Not A Manager\"",
        ),
    ];
    for (request, expected) in refusals {
        for dry_run in [true, false] {
            let error = store
                .apply_jobs(&request, dry_run, t(10))
                .await
                .unwrap_err();
            assert!(matches!(error, StoreError::Apply(_)), "{error:?}");
            assert!(error.to_string().starts_with(expected), "{error}");
            assert_eq!(owners(store.as_ref()).await, before, "{expected}");
        }
    }
}

async fn leasing_creates_runs_and_advances_the_schedule(store: Arc<dyn Store>) {
    leader(&*store).await;
    for name in ["a", "b", "c"] {
        store.create_job(&every_second(name), t(0)).await.unwrap();
    }
    assert_eq!(store.earliest_next_run_at().await.unwrap(), Some(t(0)));

    let lease = store
        .lease_due(t(0) + ms(3), EPOCH, 100, &settings())
        .await
        .unwrap();
    assert_eq!(lease.jobs_leased, 3);
    assert_eq!(lease.runs.len(), 3);
    for run in &lease.runs {
        assert_eq!(run.state, RunState::Pending);
        assert_eq!(run.slot, t(0));
        assert_eq!(run.attempt, 1);
        assert_eq!(run.trigger, Trigger::Schedule);
        assert_eq!(run.epoch, EPOCH);
    }
    assert_eq!(store.earliest_next_run_at().await.unwrap(), Some(t(1)));

    let again = store
        .lease_due(t(0) + ms(500), EPOCH, 100, &settings())
        .await
        .unwrap();
    assert_eq!(again.jobs_leased, 0, "nothing is due twice");

    // Next slot while the first runs are still pending: overlap `skip` records it.
    let busy = store
        .lease_due(t(1), EPOCH, 100, &settings())
        .await
        .unwrap();
    assert!(busy.runs.is_empty());
    let job = store.get_job("a").await.unwrap();
    assert_eq!(job.overlap_skipped_count, 1);
    assert_eq!(job.next_run_at, Some(t(2)));
    let states: Vec<RunState> = runs_of(&*store, "a")
        .await
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [RunState::Pending, RunState::Skipped]);
}

async fn leasing_follows_priority_and_the_limit(store: Arc<dyn Store>) {
    leader(&*store).await;
    for (name, priority) in [("low", 5), ("high", -1), ("mid", 3)] {
        let mut spec = every_second(name);
        spec.priority = priority;
        store.create_job(&spec, t(0)).await.unwrap();
    }
    let lease = store.lease_due(t(0), EPOCH, 2, &settings()).await.unwrap();
    let names: Vec<&str> = lease.runs.iter().map(|r| r.job_name.as_str()).collect();
    assert_eq!(names, ["high", "mid"]);
    let rest = store.lease_due(t(0), EPOCH, 2, &settings()).await.unwrap();
    let names: Vec<&str> = rest.runs.iter().map(|r| r.job_name.as_str()).collect();
    assert_eq!(names, ["low"]);
}

async fn dispatchable_runs_come_in_pages_in_dispatch_order(store: Arc<dyn Store>) {
    leader(&*store).await;
    for (name, priority) in [
        ("low", 5),
        ("high", -1),
        ("mid", 3),
        ("mid-too", 3),
        ("top", -9),
    ] {
        let mut spec = every_second(name);
        spec.priority = priority;
        store.create_job(&spec, t(0)).await.unwrap();
    }
    store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    let everything: Vec<String> = store
        .dispatchable_runs(t(0), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|ready| ready.run.job_name.clone())
        .collect();
    assert_eq!(everything, ["top", "high", "mid", "mid-too", "low"]);
    // Page by page, each after the last run of the one before: the same order, nothing
    // twice, nothing left out — a page nobody can take never hides what follows it.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.dispatchable_runs(t(0), after, 2).await.unwrap();
        paged.extend(page.iter().map(|ready| ready.run.job_name.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.cursor()),
            _ => break,
        }
    }
    assert_eq!(paged, everything);
}

async fn a_job_with_a_run_in_progress_is_not_deleted(store: Arc<dyn Store>) {
    leader(&*store).await;
    store.create_job(&every_second("busy"), t(0)).await.unwrap();
    let run = store
        .lease_due(t(0), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs[0]
        .id;
    store
        .transition_run(run, &RunTransition::dispatch("w1", EPOCH, t(60)), t(0))
        .await
        .unwrap();
    let refused = store.delete_job("busy").await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::JobActive { run: r, worker: Some(w), .. } if *r == run && w == "w1"),
        "{refused}"
    );
    assert!(store.get_job("busy").await.is_ok(), "nothing deleted");
    store
        .transition_run(run, &RunTransition::to(RunState::Cancelled), t(1))
        .await
        .unwrap();
    store.delete_job("busy").await.unwrap();
    assert!(matches!(
        store.get_job("busy").await,
        Err(StoreError::JobNotFound(_))
    ));
}

async fn paused_jobs_wait_and_catch_up_on_resume(store: Arc<dyn Store>) {
    leader(&*store).await;
    store.create_job(&every_second("p"), t(0)).await.unwrap();
    let paused = store
        .pause_job("p", Some("waiting for the vendor"), t(0))
        .await
        .unwrap();
    assert!(paused.spec.paused);
    assert_eq!(
        paused.spec.pause_note.as_deref(),
        Some("waiting for the vendor")
    );
    assert_eq!(store.earliest_next_run_at().await.unwrap(), None);
    assert_eq!(
        store
            .lease_due(t(5), EPOCH, 10, &settings())
            .await
            .unwrap()
            .jobs_leased,
        0
    );

    let resumed = store.resume_job("p", t(10)).await.unwrap();
    assert!(!resumed.spec.paused);
    assert_eq!(resumed.spec.pause_note, None);
    // Catch-up `one` (the default): one run for slots 0..=10, ten of them missed.
    let lease = store
        .lease_due(t(10) + ms(200), EPOCH, 10, &settings())
        .await
        .unwrap();
    assert_eq!(lease.runs.len(), 1);
    assert_eq!(lease.runs[0].slot, t(10));
    let job = store.get_job("p").await.unwrap();
    assert_eq!(job.missed_count, 10);
    let missed: Vec<_> = runs_of(&*store, "p")
        .await
        .into_iter()
        .filter(|r| r.state == RunState::Missed)
        .collect();
    assert_eq!(missed.len(), 1, "one record for the whole missed range");
    assert_eq!(
        (missed[0].slot, missed[0].last_slot, missed[0].slot_count),
        (t(0), Some(t(9)), 10)
    );

    assert!(matches!(
        store.pause_job("nope", None, t(0)).await,
        Err(StoreError::JobNotFound(_))
    ));
}

async fn catch_up_all_runs_one_after_another(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("all");
    spec.catch_up.policy = CatchUpPolicy::All;
    store.create_job(&spec, t(0)).await.unwrap();
    let lease = store.lease_due(t(3), EPOCH, 10, &settings()).await.unwrap();
    let slots: Vec<_> = lease.runs.iter().map(|r| r.slot).collect();
    assert_eq!(slots, [t(0), t(1), t(2), t(3)]);

    // The database allows one active run per job: the second dispatch must wait.
    let first = lease.runs[0].id;
    let second = lease.runs[1].id;
    store
        .transition_run(first, &RunTransition::dispatch("w1", EPOCH, t(60)), t(3))
        .await
        .unwrap();
    let busy = store
        .transition_run(second, &RunTransition::dispatch("w2", EPOCH, t(60)), t(3))
        .await
        .unwrap_err();
    assert!(
        matches!(busy, StoreError::JobBusy { run, .. } if run == second),
        "{busy}"
    );
    assert_eq!(
        store.get_run(second).await.unwrap().state,
        RunState::Pending,
        "nothing changed"
    );

    store
        .transition_run(first, &RunTransition::to(RunState::Succeeded), t(4))
        .await
        .unwrap();
    let dispatched = store
        .transition_run(second, &RunTransition::dispatch("w2", EPOCH, t(60)), t(4))
        .await
        .unwrap();
    assert_eq!(dispatched.state, RunState::Dispatched);
}

async fn max_runs_ends_the_job(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("twice");
    spec.max_runs = Some(2);
    store.create_job(&spec, t(0)).await.unwrap();
    for second in 0..2 {
        let lease = store
            .lease_due(t(second), EPOCH, 10, &settings())
            .await
            .unwrap();
        let run = &lease.runs[0];
        store
            .transition_run(
                run.id,
                &RunTransition::dispatch("w", EPOCH, t(60)),
                t(second),
            )
            .await
            .unwrap();
        store
            .transition_run(run.id, &RunTransition::to(RunState::Succeeded), t(second))
            .await
            .unwrap();
    }
    let job = store.get_job("twice").await.unwrap();
    assert_eq!(job.remaining_runs, Some(0));
    assert!(!job.active);
    assert_eq!(job.next_run_at, None);
    assert_eq!(
        store
            .lease_due(t(10), EPOCH, 10, &settings())
            .await
            .unwrap()
            .jobs_leased,
        0
    );

    let once = JobSpec::new("once", "noop", Schedule::at(t(20), chrono_tz::UTC));
    store.create_job(&once, t(0)).await.unwrap();
    assert_eq!(
        store
            .lease_due(t(20), EPOCH, 10, &settings())
            .await
            .unwrap()
            .runs
            .len(),
        1
    );
    assert!(!store.get_job("once").await.unwrap().active);
}

async fn transitions_follow_the_state_machine(store: Arc<dyn Store>) {
    leader(&*store).await;
    store
        .create_job(&every_second("flaky"), t(0))
        .await
        .unwrap();
    let finish = |state: RunState, at: i64| {
        let store = Arc::clone(&store);
        async move {
            let lease = store
                .lease_due(t(at), EPOCH, 10, &settings())
                .await
                .unwrap();
            let id = lease.runs[0].id;
            let dispatched = store
                .transition_run(id, &RunTransition::dispatch("w1", EPOCH, t(at + 60)), t(at))
                .await
                .unwrap();
            assert_eq!(dispatched.worker.as_deref(), Some("w1"));
            assert_eq!(dispatched.dispatched_at, Some(t(at)));
            assert_eq!(dispatched.deadline, Some(t(at + 60)));
            let running = store
                .transition_run(id, &RunTransition::to(RunState::Running), t(at) + ms(10))
                .await
                .unwrap();
            assert_eq!(running.started_at, Some(t(at) + ms(10)));
            let transition = RunTransition::to(state)
                .with_error("exit status 3")
                .with_output("x".repeat(100_000) + "tail");
            let done = store
                .transition_run(id, &transition, t(at) + ms(20))
                .await
                .unwrap();
            assert_eq!(done.finished_at, Some(t(at) + ms(20)));
            done
        }
    };
    let failed = finish(RunState::Failed, 0).await;
    assert_eq!(failed.error.as_deref(), Some("exit status 3"));
    let output = failed.output.unwrap();
    assert!(output.len() <= MAX_OUTPUT_BYTES && output.ends_with("tail"));

    let job = store.get_job("flaky").await.unwrap();
    assert_eq!(job.failures.failure_count, 1);
    assert_eq!(job.failures.first_failure_at, Some(t(0) + ms(20)));
    assert_eq!(job.last_run_at, Some(t(0) + ms(10)));
    finish(RunState::TimedOut, 1).await;
    let job = store.get_job("flaky").await.unwrap();
    assert_eq!(job.failures.failure_count, 2);
    assert_eq!(
        job.failures.first_failure_at,
        Some(t(0) + ms(20)),
        "the streak keeps its start"
    );
    let succeeded = finish(RunState::Succeeded, 2).await;
    assert_eq!(
        store.get_job("flaky").await.unwrap().failures.failure_count,
        0
    );

    let illegal = store
        .transition_run(succeeded.id, &RunTransition::to(RunState::Running), t(3))
        .await
        .unwrap_err();
    assert_eq!(
        illegal.to_string(),
        format!(
            "run {}: a succeeded run cannot become running",
            succeeded.id
        )
    );
    assert_eq!(
        store.get_run(succeeded.id).await.unwrap().state,
        RunState::Succeeded
    );
    assert!(matches!(
        store.get_run(999_999).await,
        Err(StoreError::RunNotFound(999_999))
    ));
}

async fn a_stale_epoch_can_neither_lease_nor_dispatch(store: Arc<dyn Store>) {
    assert_eq!(store.raise_epoch(5).await.unwrap(), 5);
    assert_eq!(
        store.raise_epoch(3).await.unwrap(),
        5,
        "the epoch never goes down"
    );
    assert_eq!(store.epoch().await.unwrap(), 5);
    store
        .create_job(&every_second("fenced"), t(0))
        .await
        .unwrap();

    let stale = store.lease_due(t(0), 3, 10, &settings()).await.unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Fenced {
                ours: 3,
                current: 5
            }
        ),
        "{stale}"
    );
    assert!(
        runs_of(&*store, "fenced").await.is_empty(),
        "a fenced lease writes nothing"
    );
    assert_eq!(
        store.get_job("fenced").await.unwrap().next_run_at,
        Some(t(0))
    );

    let lease = store.lease_due(t(0), 5, 10, &settings()).await.unwrap();
    let id = lease.runs[0].id;
    assert_eq!(store.raise_epoch(6).await.unwrap(), 6);
    let deposed = store
        .transition_run(id, &RunTransition::dispatch("w", 5, t(60)), t(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            deposed,
            StoreError::Fenced {
                ours: 5,
                current: 6
            }
        ),
        "{deposed}"
    );
    assert_eq!(store.get_run(id).await.unwrap().state, RunState::Pending);
    let run = store
        .transition_run(id, &RunTransition::dispatch("w", 6, t(60)), t(0))
        .await
        .unwrap();
    assert_eq!(run.epoch, 6);
}

async fn replace_cancels_the_old_runs(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("latest");
    spec.overlap = OverlapPolicy::Replace;
    store.create_job(&spec, t(0)).await.unwrap();
    let first = store
        .lease_due(t(0), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs[0]
        .id;
    store
        .transition_run(first, &RunTransition::dispatch("w", EPOCH, t(60)), t(0))
        .await
        .unwrap();
    let second_lease = store.lease_due(t(1), EPOCH, 10, &settings()).await.unwrap();
    assert_eq!(
        second_lease.cancel_requested,
        [RequestedCancel {
            run_id: first,
            worker: Some("w".to_owned())
        }]
    );
    let second = second_lease.runs[0].id;
    assert!(
        store
            .get_run(first)
            .await
            .unwrap()
            .cancel_requested_at
            .is_some()
    );

    // A third slot before the first has stopped: the waiting second run is replaced.
    let third = store
        .lease_due(t(2), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs[0]
        .id;
    let second_run = store.get_run(second).await.unwrap();
    assert_eq!(second_run.state, RunState::Cancelled);
    assert!(second_run.error.unwrap().contains("replaced"));
    assert_eq!(store.get_run(third).await.unwrap().state, RunState::Pending);
}

async fn runs_can_be_filtered(store: Arc<dyn Store>) {
    leader(&*store).await;
    for name in ["x", "y"] {
        store.create_job(&every_second(name), t(0)).await.unwrap();
    }
    let lease = store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    let x_run = lease.runs.iter().find(|r| r.job_name == "x").unwrap().id;
    store
        .transition_run(x_run, &RunTransition::dispatch("w", EPOCH, t(60)), t(0))
        .await
        .unwrap();

    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].id > all[1].id, "newest first by default");
    let pending = store
        .list_runs(&RunFilter {
            state: Some(RunState::Pending),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|r| r.job_name.as_str())
            .collect::<Vec<_>>(),
        ["y"]
    );
    let of_x = store
        .list_runs(&RunFilter {
            job: Some("x".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(of_x.iter().map(|r| r.id).collect::<Vec<_>>(), [x_run]);
    let limited = store
        .list_runs(&RunFilter {
            limit: 1,
            order: RunOrder::OldestFirst,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].id, all[1].id);
    store.create_job(&every_second("z"), t(0)).await.unwrap();
    let manual = store.create_manual_run("z", t(0), t(0)).await.unwrap().run;
    for (trigger, expected) in [(Trigger::Manual, vec![manual.id]), (Trigger::Retry, vec![])] {
        let runs = store
            .list_runs(&RunFilter {
                trigger: Some(trigger),
                ..RunFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            expected,
            "{trigger:?}"
        );
    }
    let earlier = store
        .list_runs(&RunFilter {
            until: Some(t(0)),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(earlier.is_empty(), "created at t(0), not before");
    let until_later = store
        .list_runs(&RunFilter {
            until: Some(t(1)),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(until_later.len(), 3, "x's, y's and z's runs");
    let later = store
        .list_runs(&RunFilter {
            since: Some(t(1)),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(later.is_empty());
}

async fn cron_jobs_lease_on_their_slots(store: Arc<dyn Store>) {
    leader(&*store).await;
    // 09:00 Berlin on weekdays; 2027-01-11 is a Monday.
    let berlin = chrono_tz::Europe::Berlin;
    let schedule = Schedule::cron("0 9 * * 1-5", berlin).unwrap();
    let monday_0800_utc = Utc.with_ymd_and_hms(2027, 1, 11, 8, 0, 0).unwrap();
    let job = store
        .create_job(
            &JobSpec::new("standup", "noop", schedule),
            monday_0800_utc - TimeDelta::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(job.next_run_at, Some(monday_0800_utc));
    let lease = store
        .lease_due(monday_0800_utc, EPOCH, 10, &settings())
        .await
        .unwrap();
    assert_eq!(lease.runs[0].slot, monday_0800_utc);
    let job = store.get_job("standup").await.unwrap();
    assert_eq!(job.next_run_at, Some(monday_0800_utc + TimeDelta::days(1)));
}

async fn manual_runs_queue_behind_the_current_one(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("manual");
    spec.schedule = Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
    store.create_job(&spec, t(0)).await.unwrap();
    let scheduled = store
        .lease_due(t(0), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs[0]
        .id;

    // Busy (a scheduled run waits): a manual run is refused, not stacked.
    let refused = store
        .create_manual_run("manual", t(1), t(1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::AlreadyQueued { run, .. } if run == scheduled),
        "{refused}"
    );

    store
        .transition_run(scheduled, &RunTransition::dispatch("w", EPOCH, t(60)), t(1))
        .await
        .unwrap();
    let queued = store.create_manual_run("manual", t(2), t(2)).await.unwrap();
    assert!(queued.queued, "the job is running: the manual run waits");
    assert_eq!(queued.run.trigger, Trigger::Manual);
    assert_eq!(queued.run.state, RunState::Pending);
    assert!(
        store
            .dispatchable_runs(t(2), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "one active run at a time"
    );
    store
        .transition_run(scheduled, &RunTransition::to(RunState::Succeeded), t(3))
        .await
        .unwrap();
    let ready = store.dispatchable_runs(t(3), None, 10).await.unwrap();
    assert_eq!(
        ready.iter().map(|d| d.run.id).collect::<Vec<_>>(),
        [queued.run.id]
    );
    assert_eq!(ready[0].handler, "noop");
    assert_eq!(
        store.get_job("manual").await.unwrap().next_run_at,
        Some(t(3600)),
        "schedule untouched"
    );

    assert!(matches!(
        store.create_manual_run("nope", t(3), t(3)).await,
        Err(StoreError::JobNotFound(_))
    ));
}

async fn a_run_at_a_later_time_waits_for_it(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("later");
    spec.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::hours(1)),
        t(3600),
        chrono_tz::UTC,
    );
    store.create_job(&spec, t(0)).await.unwrap();
    let manual = store
        .create_manual_run("later", t(100), t(0))
        .await
        .unwrap();
    assert!(!manual.queued);
    assert_eq!(manual.run.not_before, Some(t(100)));
    assert!(
        store
            .dispatchable_runs(t(99), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count_backlog(t(99)).await.unwrap(), 0, "not due yet");
    assert_eq!(store.earliest_not_before(t(0)).await.unwrap(), Some(t(100)));
    assert_eq!(
        store
            .dispatchable_runs(t(100), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.count_backlog(t(100)).await.unwrap(),
        1,
        "due and waiting"
    );
}

async fn a_later_manual_run_does_not_block_the_schedule(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("later-manual");
    spec.overlap = OverlapPolicy::Replace;
    store.create_job(&spec, t(0)).await.unwrap();
    let manual = store
        .create_manual_run("later-manual", t(100), t(0))
        .await
        .unwrap()
        .run;
    // The slot at t(0) runs: the manual run for t(100) neither makes the job busy nor is
    // replaced by it.
    let lease = store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    assert_eq!(lease.runs.len(), 1, "the regular slot is not skipped");
    assert_eq!(
        store.get_run(manual.id).await.unwrap().state,
        RunState::Pending
    );
    assert_eq!(
        store
            .get_job("later-manual")
            .await
            .unwrap()
            .overlap_skipped_count,
        0
    );
    // Nor does it stop an immediate manual run.
    store
        .transition_run(
            lease.runs[0].id,
            &RunTransition::dispatch("w", EPOCH, t(60)),
            t(0),
        )
        .await
        .unwrap();
    assert!(
        store
            .create_manual_run("later-manual", t(1), t(1))
            .await
            .unwrap()
            .queued
    );
}

async fn only_the_earliest_waiting_run_of_a_job_is_dispatchable(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("ordered");
    spec.catch_up.policy = CatchUpPolicy::All;
    store.create_job(&spec, t(0)).await.unwrap();
    let mut other = every_second("urgent");
    other.priority = -5;
    store.create_job(&other, t(2)).await.unwrap();
    store.lease_due(t(2), EPOCH, 10, &settings()).await.unwrap();

    let ready = store.dispatchable_runs(t(2), None, 10).await.unwrap();
    let order: Vec<(&str, DateTime<Utc>)> = ready
        .iter()
        .map(|d| (d.run.job_name.as_str(), d.run.slot))
        .collect();
    assert_eq!(
        order,
        [("urgent", t(2)), ("ordered", t(0))],
        "priority first, then the earliest slot"
    );

    let ids: Vec<i64> = ready.iter().map(|d| d.run.id).collect();
    store
        .set_pending_reason(&ids, Some("no connected worker offers handler noop"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_run(ids[0])
            .await
            .unwrap()
            .pending_reason
            .as_deref(),
        Some("no connected worker offers handler noop")
    );
    store.set_pending_reason(&ids, None).await.unwrap();
    assert_eq!(store.get_run(ids[0]).await.unwrap().pending_reason, None);

    // A waiting run follows its job's new priority.
    let ordered = store.get_job("ordered").await.unwrap();
    let mut raised = ordered.spec.clone();
    raised.priority = -10;
    store
        .update_job("ordered", ordered.version, &raised, t(2))
        .await
        .unwrap();
    let ready = store.dispatchable_runs(t(2), None, 10).await.unwrap();
    let order: Vec<&str> = ready.iter().map(|d| d.run.job_name.as_str()).collect();
    assert_eq!(order, ["ordered", "urgent"], "after the priority change");
}

async fn lost_runs_are_retried_a_bounded_number_of_times(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("fragile");
    spec.schedule = Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
    store.create_job(&spec, t(0)).await.unwrap();
    let mut id = store
        .lease_due(t(0), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs[0]
        .id;
    for attempt in 1..=4u32 {
        store
            .transition_run(id, &RunTransition::dispatch("w", EPOCH, t(60)), t(1))
            .await
            .unwrap();
        store
            .record_progress(
                id,
                cronfleet_core::run::Progress {
                    done: 3,
                    remaining: 7,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .active_runs()
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [id]
        );
        let stale = store
            .mark_lost(id, EPOCH - 1, "worker w silent", 3, t(2))
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::Fenced { .. }));
        let Lost {
            run: lost,
            rerun: next,
        } = store
            .mark_lost(id, EPOCH, "worker w silent for 6s", 3, t(2))
            .await
            .unwrap();
        assert_eq!(
            lost,
            store.get_run(id).await.unwrap(),
            "the lost run as stored"
        );
        assert_eq!(lost.state, RunState::Lost);
        assert_eq!(lost.error.as_deref(), Some("worker w silent for 6s"));
        assert_eq!(
            lost.progress,
            Some(cronfleet_core::run::Progress {
                done: 3,
                remaining: 7
            })
        );
        match next {
            Some(next) => {
                assert!(attempt <= 3, "attempt {attempt} must not be retried");
                assert_eq!(
                    (next.slot, next.attempt, next.state),
                    (t(0), attempt + 1, RunState::Pending)
                );
                id = next.id;
            }
            None => assert_eq!(attempt, 4, "three re-dispatches, then the slot is given up"),
        }
    }
    assert!(store.active_runs().await.unwrap().is_empty());
}

fn rules(remaining: u64) -> cronfleet_store::FinishRules {
    cronfleet_store::FinishRules {
        retry_base_delay: Duration::from_secs(2),
        retry_max_delay: Duration::from_secs(60),
        jitter: 1.0,
        auto_pause: cronfleet_core::policy::AutoPausePolicy {
            min_failures: 3,
            min_span: Duration::from_secs(10),
        },
        remaining,
    }
}

/// The batched hot path (`transition_runs`, `finish_runs`) does what the one-run calls do,
/// run by run: each run moves or is told why not, and a fenced batch changes nothing.
async fn batches_move_each_run_or_say_why(store: Arc<dyn Store>) {
    leader(&*store).await;
    for name in ["batch-a", "batch-b", "batch-c"] {
        let mut spec = every_second(name);
        spec.schedule =
            Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
        spec.retries = u32::from(name == "batch-b");
        store.create_job(&spec, t(0)).await.unwrap();
    }
    let lease = store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    let ids: Vec<i64> = lease.runs.iter().map(|run| run.id).collect();
    assert_eq!(ids.len(), 3);
    let dispatch = |worker: &str, epoch: i64| RunTransition::dispatch(worker, epoch, t(60));

    let fenced = store
        .transition_runs(&[(ids[0], dispatch("w1", EPOCH - 1))], t(0))
        .await;
    assert!(
        matches!(fenced, Err(StoreError::Fenced { .. })),
        "{fenced:?}"
    );
    assert_eq!(
        store.get_run(ids[0]).await.unwrap().state,
        RunState::Pending
    );

    let mut batch: Vec<(i64, RunTransition)> =
        ids.iter().map(|id| (*id, dispatch("w1", EPOCH))).collect();
    batch.push((999_999, dispatch("w1", EPOCH)));
    let dispatched = store.transition_runs(&batch, t(0)).await.unwrap();
    assert_eq!(dispatched.len(), 4);
    for (run, id) in dispatched.iter().zip(&ids) {
        let run = run.as_ref().unwrap();
        assert_eq!(run.id, *id);
        assert_eq!(run.state, RunState::Dispatched);
        assert_eq!(run.worker.as_deref(), Some("w1"));
        assert_eq!(run.dispatched_at, Some(t(0)));
        assert_eq!(run.deadline, Some(t(60)));
    }
    assert!(matches!(
        dispatched[3],
        Err(StoreError::RunNotFound(999_999))
    ));

    let running = RunTransition::to(RunState::Running);
    let started = store
        .transition_runs(
            &[
                (ids[0], running.clone()),
                (ids[1], running.clone()),
                (ids[2], dispatch("w2", EPOCH)),
            ],
            t(0) + ms(10),
        )
        .await
        .unwrap();
    assert_eq!(started[0].as_ref().unwrap().started_at, Some(t(0) + ms(10)));
    assert_eq!(started[1].as_ref().unwrap().state, RunState::Running);
    assert!(
        matches!(started[2], Err(StoreError::IllegalTransition { .. })),
        "a dispatched run cannot be dispatched again: {:?}",
        started[2]
    );
    assert_eq!(
        store.get_job("batch-a").await.unwrap().last_run_at,
        Some(t(0) + ms(10))
    );

    let ends = [
        FinishOrder {
            id: ids[0],
            transition: RunTransition::to(RunState::Succeeded).with_output("done"),
            rules: rules(0),
        },
        FinishOrder {
            id: ids[1],
            transition: RunTransition::to(RunState::Failed).with_error("exit status 1"),
            rules: rules(0),
        },
    ];
    let finished = store.finish_runs(&ends, t(1)).await.unwrap();
    let succeeded = finished[0].as_ref().unwrap();
    assert_eq!(succeeded.run.state, RunState::Succeeded);
    assert_eq!(succeeded.run.output.as_deref(), Some("done"));
    assert_eq!(succeeded.run.finished_at, Some(t(1)));
    assert!(succeeded.retry.is_none());
    let failed = finished[1].as_ref().unwrap();
    assert_eq!(failed.run.error.as_deref(), Some("exit status 1"));
    let retry = failed.retry.as_ref().expect("batch-b has a retry left");
    assert_eq!((retry.slot, retry.attempt), (t(0), 2));
    assert_eq!(
        store
            .get_job("batch-b")
            .await
            .unwrap()
            .failures
            .failure_count,
        1
    );
    assert_eq!(
        store
            .get_job("batch-a")
            .await
            .unwrap()
            .failures
            .failure_count,
        0
    );
    let again = store.finish_runs(&ends[..1], t(2)).await.unwrap();
    assert!(matches!(
        again[0],
        Err(StoreError::IllegalTransition { .. })
    ));
}

/// Leases the job's due slot at `at`, dispatches and starts it; returns the run id.
async fn start_run(store: &dyn Store, at: DateTime<Utc>) -> i64 {
    let run = store
        .lease_due(at, EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs
        .remove(0);
    store
        .transition_run(
            run.id,
            &RunTransition::dispatch("w", EPOCH, at + TimeDelta::hours(1)),
            at,
        )
        .await
        .unwrap();
    store
        .transition_run(run.id, &RunTransition::to(RunState::Running), at)
        .await
        .unwrap();
    run.id
}

async fn failed_runs_are_retried_after_a_backoff(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("flaky-retry");
    spec.schedule = Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
    spec.retries = 1;
    store.create_job(&spec, t(0)).await.unwrap();
    let first = start_run(&*store, t(0)).await;
    let failed = RunTransition::to(RunState::Failed).with_error("exit status 1");
    let finished = store
        .finish_run(first, &failed, &rules(0), t(1))
        .await
        .unwrap();
    assert_eq!(finished.run.state, RunState::Failed);
    let retry = finished.retry.expect("one retry left");
    assert_eq!(
        (retry.slot, retry.attempt, retry.trigger),
        (t(0), 2, Trigger::Retry)
    );
    assert_eq!(
        retry.not_before,
        Some(t(3)),
        "backoff of the first retry: base 2s, full jitter"
    );
    assert!(
        store
            .dispatchable_runs(t(2), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "not before its backoff"
    );
    assert_eq!(
        store.dispatchable_runs(t(3), None, 10).await.unwrap()[0]
            .run
            .id,
        retry.id
    );
    assert!(
        store
            .lease_due(t(3), EPOCH, 10, &settings())
            .await
            .unwrap()
            .runs
            .is_empty(),
        "busy while a retry waits"
    );

    store
        .transition_run(retry.id, &RunTransition::dispatch("w", EPOCH, t(60)), t(3))
        .await
        .unwrap();
    let finished = store
        .finish_run(retry.id, &failed, &rules(0), t(4))
        .await
        .unwrap();
    assert_eq!(finished.retry, None, "retries exhausted");
    assert_eq!(
        store
            .get_job("flaky-retry")
            .await
            .unwrap()
            .failures
            .failure_count,
        2
    );
}

/// Each consumer can hold just its part of the store (trait upcasting), and the parts are
/// one store.
async fn each_consumer_takes_its_part(store: Arc<dyn Store>) {
    let jobs: Arc<dyn JobStore> = store.clone();
    let leader_part: Arc<dyn LeaderStore> = store.clone();
    let changes: Arc<dyn Changes> = store;
    assert_eq!(leader_part.raise_epoch(EPOCH).await.unwrap(), EPOCH);
    assert_eq!(jobs.epoch().await.unwrap(), EPOCH);
    jobs.create_job(&every_second("parts"), t(0)).await.unwrap();
    let lease = leader_part
        .lease_due(t(0), EPOCH, 10, &settings())
        .await
        .unwrap();
    assert_eq!(lease.runs.len(), 1);
    changes.announce_change().await.unwrap();
}

async fn a_job_that_keeps_failing_is_paused(store: Arc<dyn Store>) {
    keeps_failing_until_paused(store, false).await;
}

/// The batched end (`finish_runs`) plans from the same streak as `finish_run`.
async fn a_job_that_keeps_failing_is_paused_by_batched_ends_too(store: Arc<dyn Store>) {
    keeps_failing_until_paused(store, true).await;
}

/// Failures at 0, 11 and 22 s against a rule of 3 failures over 10 s: the third pauses the
/// job; the second, already past the span, does not — the rule is judged on the streak
/// after each end, which must count each failure once.
async fn keeps_failing_until_paused(store: Arc<dyn Store>, batched: bool) {
    leader(&*store).await;
    store
        .create_job(&every_second("broken"), t(0))
        .await
        .unwrap();
    let failed = RunTransition::to(RunState::Failed).with_error("exit status 1");
    let mut paused = Vec::new();
    for second in [0, 11, 22] {
        let id = start_run(&*store, t(second)).await;
        let finished = if batched {
            let order = FinishOrder {
                id,
                transition: failed.clone(),
                rules: rules(0),
            };
            let mut batch = store.finish_runs(&[order], t(second)).await.unwrap();
            batch.remove(0).unwrap()
        } else {
            store
                .finish_run(id, &failed, &rules(0), t(second))
                .await
                .unwrap()
        };
        paused.push(finished.paused);
    }
    assert_eq!(paused[..2], [None, None]);
    let paused = paused.pop().flatten();
    let reason = paused.expect("3 failures over 22 s pause the job");
    assert!(
        reason.starts_with("paused automatically: 3 consecutive failures"),
        "{reason}"
    );
    let job = store.get_job("broken").await.unwrap();
    assert!(job.spec.paused);
    assert_eq!(job.spec.pause_note.as_deref(), Some(reason.as_str()));
    assert_eq!(
        (job.failures.failure_count, job.failures.first_failure_at),
        (3, Some(t(0)))
    );
    assert!(
        store
            .lease_due(t(30), EPOCH, 10, &settings())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
}

async fn work_left_continues_at_once(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("batch");
    spec.schedule = Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
    store.create_job(&spec, t(0)).await.unwrap();
    let id = start_run(&*store, t(0)).await;
    let done = RunTransition::to(RunState::Succeeded);
    let next = store
        .finish_run(id, &done, &rules(40), t(1))
        .await
        .unwrap()
        .continuation
        .expect("work remains");
    assert_eq!(
        (next.trigger, next.slot, next.not_before),
        (Trigger::Continuation, t(1), None)
    );
    store
        .transition_run(next.id, &RunTransition::dispatch("w", EPOCH, t(60)), t(1))
        .await
        .unwrap();
    let last = store
        .finish_run(next.id, &done, &rules(0), t(2))
        .await
        .unwrap();
    assert_eq!(last.continuation, None);
}

async fn cancels_stop_pending_runs_and_flag_running_ones(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut spec = every_second("cancel-me");
    spec.catch_up.policy = CatchUpPolicy::All;
    store.create_job(&spec, t(0)).await.unwrap();
    let runs = store
        .lease_due(t(1), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs;
    let (running, pending) = (runs[0].id, runs[1].id);
    store
        .transition_run(running, &RunTransition::dispatch("w", EPOCH, t(60)), t(1))
        .await
        .unwrap();

    let cancelled = store
        .request_cancel(pending, "wrong input", t(2))
        .await
        .unwrap();
    assert_eq!(
        (cancelled.state, cancelled.error.as_deref()),
        (RunState::Cancelled, Some("wrong input"))
    );
    let flagged = store
        .request_cancel(running, "wrong input", t(2))
        .await
        .unwrap();
    assert_eq!(
        flagged.state,
        RunState::Dispatched,
        "the worker stops it, then it ends"
    );
    assert_eq!(flagged.cancel_requested_at, Some(t(2)));
    let again = store
        .request_cancel(pending, "again", t(3))
        .await
        .unwrap_err();
    assert_eq!(
        again.to_string(),
        format!("run {pending}: a cancelled run cannot become cancelled")
    );
}

async fn old_and_surplus_runs_are_pruned_in_small_batches(store: Arc<dyn Store>) {
    leader(&*store).await;
    store.create_job(&every_second("busy"), t(0)).await.unwrap();
    let cancel = RunTransition::to(RunState::Cancelled);
    for k in 0..6 {
        let lease = store.lease_due(t(k), EPOCH, 10, &settings()).await.unwrap();
        for run in lease.runs {
            store.transition_run(run.id, &cancel, t(k)).await.unwrap();
        }
    }
    // One run still pending: it is never pruned, whatever its age or rank.
    store.lease_due(t(6), EPOCH, 10, &settings()).await.unwrap();
    let ids = |runs: Vec<cronfleet_core::run::Run>| runs.iter().map(|r| r.id).collect::<Vec<_>>();
    let before = ids(runs_of(&*store, "busy").await);
    assert_eq!(before.len(), 7);

    // Keep the newest 3 of the job, and nothing created before t(2): the 4 oldest go, at
    // most 3 per call.
    assert_eq!(store.prune_runs(t(2), 3, 3).await.unwrap(), 3);
    assert_eq!(store.prune_runs(t(2), 3, 3).await.unwrap(), 1);
    assert_eq!(store.prune_runs(t(2), 3, 3).await.unwrap(), 0);
    assert_eq!(ids(runs_of(&*store, "busy").await), before[4..]);

    // Everything is old now, but the pending run stays.
    assert_eq!(store.prune_runs(t(100), 1000, 100).await.unwrap(), 2);
    let left = runs_of(&*store, "busy").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, RunState::Pending);
}

/// The Jobs page's query: search (without regard to case, `_` literal), each filter, each
/// sort with the name as tie-break and jobs without a value last, and pages that neither
/// overlap nor leave a job out.
async fn job_pages_search_filter_sort_and_page(store: Arc<dyn Store>) {
    leader(&*store).await;
    let mut failing = every_second("gamma-report");
    failing.handler = "shell".into();
    store.create_job(&failing, t(0)).await.unwrap();
    let failed_run = start_run(&*store, t(0)).await;
    let failed = RunTransition::to(RunState::Failed).with_error("exit status 1");
    store
        .finish_run(failed_run, &failed, &rules(0), t(0))
        .await
        .unwrap();
    let mut alpha = every_second("alpha-report");
    alpha.handler = "shell".into();
    alpha.priority = 5;
    alpha.labels = BTreeMap::from([("team".to_owned(), "ops".to_owned())]);
    let mut beta = every_second("beta-sync");
    beta.handler = "http".into();
    beta.priority = 1;
    beta.labels = BTreeMap::from([("team".to_owned(), "data".to_owned())]);
    for spec in [alpha, beta, every_second("delta-a-b")] {
        store.create_job(&spec, t(0)).await.unwrap();
    }
    // An operator's note that merely looks like the rule's is an operator's pause.
    store
        .pause_job("beta-sync", Some("Paused automatically: no, by hand"), t(1))
        .await
        .unwrap();
    let auto = format!("{AUTO_PAUSE_NOTE_PREFIX} 3 consecutive failures");
    store
        .pause_job("gamma-report", Some(&auto), t(1))
        .await
        .unwrap();

    let names = |query: JobQuery| {
        let store = store.clone();
        async move {
            let page = store.list_jobs_page(&query).await.unwrap();
            let names: Vec<String> = page.jobs.iter().map(|j| j.job.spec.name.clone()).collect();
            (names, page.total)
        }
    };
    let all = ["alpha-report", "beta-sync", "delta-a-b", "gamma-report"];
    assert_eq!(
        names(JobQuery::default()).await,
        (all.map(String::from).to_vec(), 4)
    );
    let only = |search: &str| JobQuery {
        search: Some(search.to_owned()),
        ..JobQuery::default()
    };
    assert_eq!(
        names(only("REPORT")).await.0,
        ["alpha-report", "gamma-report"]
    );
    assert_eq!(names(only("a-b")).await.0, ["delta-a-b"]);
    assert_eq!(names(only("a_b")).await, (Vec::new(), 0), "`_` is literal");
    assert_eq!(names(only("%")).await, (Vec::new(), 0), "`%` is literal");

    for (status, expected) in [
        (JobStatus::Active, &["alpha-report", "delta-a-b"][..]),
        (JobStatus::Paused, &["beta-sync"]),
        (JobStatus::AutoPaused, &["gamma-report"]),
        (JobStatus::Finished, &[]),
    ] {
        let query = JobQuery {
            status: Some(status),
            ..JobQuery::default()
        };
        assert_eq!(names(query).await.0, expected, "{status}");
    }
    let by_handler = JobQuery {
        handler: Some("shell".into()),
        ..JobQuery::default()
    };
    assert_eq!(names(by_handler).await.0, ["alpha-report", "gamma-report"]);
    for (label, expected) in [
        ("team", &["alpha-report", "beta-sync"][..]),
        ("team=ops", &["alpha-report"]),
        ("team=nobody", &[]),
        ("region", &[]),
    ] {
        let query = JobQuery {
            label: Some(label.parse().unwrap()),
            ..JobQuery::default()
        };
        assert_eq!(names(query).await.0, expected, "{label}");
    }
    let failing_only = JobQuery {
        failing: true,
        ..JobQuery::default()
    };
    assert_eq!(store.count_jobs(&failing_only).await.unwrap(), 1);
    assert_eq!(store.count_jobs(&JobQuery::default()).await.unwrap(), 4);
    let page = store.list_jobs_page(&failing_only).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.jobs[0].job.spec.name, "gamma-report");
    assert_eq!(
        page.jobs[0].last_run,
        Some(LastRun {
            id: failed_run,
            state: RunState::Failed
        })
    );
    let alpha = store.list_jobs_page(&only("alpha")).await.unwrap();
    assert_eq!(alpha.jobs[0].last_run, None, "never run");

    let sorted = |sort: JobSort, descending: bool| JobQuery {
        sort,
        descending,
        ..JobQuery::default()
    };
    assert_eq!(
        names(sorted(JobSort::Priority, true)).await.0,
        ["alpha-report", "beta-sync", "gamma-report", "delta-a-b"]
    );
    assert_eq!(
        names(sorted(JobSort::LastRun, false)).await.0,
        ["gamma-report", "alpha-report", "beta-sync", "delta-a-b"],
        "the one run first, the never-run last by name"
    );
    assert_eq!(
        names(sorted(JobSort::LastRun, true)).await.0,
        ["gamma-report", "delta-a-b", "beta-sync", "alpha-report"],
        "never-run jobs last in either direction"
    );
    assert_eq!(
        names(sorted(JobSort::Name, true)).await.0,
        ["gamma-report", "delta-a-b", "beta-sync", "alpha-report"]
    );
    assert_eq!(
        names(sorted(JobSort::Handler, false)).await.0,
        ["beta-sync", "delta-a-b", "alpha-report", "gamma-report"]
    );

    let mut paged = Vec::new();
    for offset in [0, 3] {
        let query = JobQuery {
            limit: 3,
            offset,
            sort: JobSort::Failures,
            ..JobQuery::default()
        };
        let (page, total) = names(query).await;
        assert_eq!(total, 4);
        paged.extend(page);
    }
    assert_eq!(paged.len(), 4);
    paged.sort();
    assert_eq!(paged, all, "pages neither overlap nor leave a job out");
}

/// The console's banner counts: overdue active runs, runs waiting long, runs due per
/// handler; and who holds which run — all without reading a run's log.
async fn backlog_counts_and_in_flight_runs(store: Arc<dyn Store>) {
    leader(&*store).await;
    store.create_job(&every_second("a"), t(0)).await.unwrap();
    let mut shell = every_second("b");
    shell.handler = "shell".into();
    store.create_job(&shell, t(0)).await.unwrap();
    let lease = store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    let a_run = lease.runs.iter().find(|r| r.job_name == "a").unwrap().id;
    store
        .transition_run(a_run, &RunTransition::dispatch("w", EPOCH, t(60)), t(0))
        .await
        .unwrap();

    let early = store.run_backlog(t(30), t(-30)).await.unwrap();
    assert_eq!(
        early,
        RunBacklog {
            overdue: 0,
            waiting_long: 0,
            due_by_handler: vec![("shell".to_owned(), 1)],
        }
    );
    let late = store.run_backlog(t(120), t(60)).await.unwrap();
    assert_eq!(
        (late.overdue, late.waiting_long),
        (1, 1),
        "a past its deadline, b waiting since t(0)"
    );
    assert_eq!(
        store.in_flight_runs(10).await.unwrap(),
        [InFlightRun {
            id: a_run,
            job: "a".to_owned(),
            worker: "w".to_owned(),
        }]
    );
    assert!(store.in_flight_runs(0).await.unwrap().is_empty(), "bounded");
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let database = cronfleet_testkit::test_database().await.expect("test database");
                    let store = super::PostgresStore::connect(database.url()).await.expect("connect");
                    super::$scenario(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = super::SqliteStore::open(&dir.path().join("cronfleet.db")).await.expect("open");
                    super::$scenario(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

on_both_backends!(
    create_get_list_delete,
    bad_jobs_are_rejected_and_write_nothing,
    updates_check_the_version_and_reschedule,
    leasing_creates_runs_and_advances_the_schedule,
    leasing_follows_priority_and_the_limit,
    dispatchable_runs_come_in_pages_in_dispatch_order,
    a_job_with_a_run_in_progress_is_not_deleted,
    paused_jobs_wait_and_catch_up_on_resume,
    catch_up_all_runs_one_after_another,
    max_runs_ends_the_job,
    transitions_follow_the_state_machine,
    batches_move_each_run_or_say_why,
    a_stale_epoch_can_neither_lease_nor_dispatch,
    replace_cancels_the_old_runs,
    runs_can_be_filtered,
    cron_jobs_lease_on_their_slots,
    manual_runs_queue_behind_the_current_one,
    a_run_at_a_later_time_waits_for_it,
    a_later_manual_run_does_not_block_the_schedule,
    only_the_earliest_waiting_run_of_a_job_is_dispatchable,
    lost_runs_are_retried_a_bounded_number_of_times,
    failed_runs_are_retried_after_a_backoff,
    a_job_that_keeps_failing_is_paused,
    a_job_that_keeps_failing_is_paused_by_batched_ends_too,
    each_consumer_takes_its_part,
    work_left_continues_at_once,
    cancels_stop_pending_runs_and_flag_running_ones,
    old_and_surplus_runs_are_pruned_in_small_batches,
    apply_creates_updates_and_leaves_alone,
    apply_adopts_but_prunes_only_its_own_jobs,
    a_refused_or_dry_run_apply_writes_nothing,
    job_pages_search_filter_sort_and_page,
    backlog_counts_and_in_flight_runs,
    alerts_are_raised_once_delivered_through_the_outbox_and_fenced,
);

/// One due job whose stored row cannot be read back (here a time zone this build does not
/// know, as a newer version might write) is paused with the reason, and every other due
/// job is leased as usual: one bad row never halts the schedule (DESIGN §2, invariant 5).
/// `raw` runs SQL on the store's database, returning `(paused, pause_note)` rows.
async fn an_unreadable_job_is_paused_and_the_others_are_leased<F, Fut>(
    store: Arc<dyn Store>,
    raw: F,
) where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Vec<(bool, String)>>,
{
    leader(&*store).await;
    for name in ["before", "bad", "after"] {
        store.create_job(&every_second(name), t(0)).await.unwrap();
    }
    raw(
        "UPDATE jobs SET tz = 'Mars/Olympus_Mons' WHERE name = 'bad' \
         RETURNING paused, COALESCE(pause_note, '')",
    )
    .await;

    let lease = store.lease_due(t(0), EPOCH, 10, &settings()).await.unwrap();
    let mut leased: Vec<&str> = lease.runs.iter().map(|r| r.job_name.as_str()).collect();
    leased.sort_unstable();
    assert_eq!(leased, ["after", "before"]);
    assert_eq!(lease.jobs_leased, 3, "the bad job counts as taken");
    assert_eq!(lease.unreadable.len(), 1);
    assert_eq!(lease.unreadable[0].name, "bad");
    assert!(
        lease.unreadable[0].error.contains("Mars/Olympus_Mons"),
        "{}",
        lease.unreadable[0].error
    );
    let pause = raw("UPDATE jobs SET name = name WHERE name = 'bad' \
                     RETURNING paused, COALESCE(pause_note, '')")
    .await;
    assert!(pause[0].0, "paused");
    assert!(
        pause[0]
            .1
            .starts_with("paused by the scheduler: its stored definition cannot be read"),
        "{}",
        pause[0].1
    );
    // Paused: the next lease takes the others' next slots and leaves it alone.
    let next = store.lease_due(t(1), EPOCH, 10, &settings()).await.unwrap();
    assert!(next.unreadable.is_empty(), "{:?}", next.unreadable);
    assert_eq!(next.jobs_leased, 2);
}

#[tokio::test]
async fn postgres_an_unreadable_job_is_paused_and_the_others_are_leased() {
    let database = cronfleet_testkit::test_database()
        .await
        .expect("test database");
    let store = PostgresStore::connect(database.url())
        .await
        .expect("connect");
    let pool = store.pool().clone();
    an_unreadable_job_is_paused_and_the_others_are_leased(Arc::new(store), |sql| {
        let pool = pool.clone();
        async move { sqlx::query_as(sql).fetch_all(&pool).await.expect("raw SQL") }
    })
    .await;
}

#[tokio::test]
async fn sqlite_an_unreadable_job_is_paused_and_the_others_are_leased() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cronfleet.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("connect");
    an_unreadable_job_is_paused_and_the_others_are_leased(Arc::new(store), |sql| {
        let pool = pool.clone();
        async move { sqlx::query_as(sql).fetch_all(&pool).await.expect("raw SQL") }
    })
    .await;
}

/// The facts each alert kind is judged on, alerts raised once per kind and subject with
/// an outbox row per channel (in the same fenced transaction), resolved once, claimed and
/// delivered or retried, listed with their deliveries, acknowledged and counted.
async fn alerts_are_raised_once_delivered_through_the_outbox_and_fenced(store: Arc<dyn Store>) {
    use cronfleet_core::alert::{AlertKind, AlertState, Condition};
    use cronfleet_store::{AlertFilter, DeliveryOutcome, RaiseAlert, ResolveAlert};

    leader(&*store).await;
    // A job whose final attempt failed, one whose failure is retried (not final yet),
    // one with alerts off, and a dead-man's switch that never succeeded.
    let mut failing = every_second("invoices");
    failing.labels = BTreeMap::from([("team".to_owned(), "billing".to_owned())]);
    failing.expected_duration = Some(Duration::from_secs(5));
    store.create_job(&failing, t(0)).await.unwrap();
    let run = start_run(&*store, t(0)).await;
    let failed = RunTransition::to(RunState::Failed).with_error("exit status 2\nstack");
    store
        .finish_run(run, &failed, &rules(0), t(1))
        .await
        .unwrap();
    let mut retried = every_second("retried");
    retried.retries = 3;
    retried.schedule =
        Schedule::every(Interval::Elapsed(TimeDelta::hours(1)), t(0), chrono_tz::UTC);
    let mut quiet = every_second("quiet");
    quiet.alerts_enabled = false;
    quiet.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::hours(1)),
        t(3600),
        chrono_tz::UTC,
    );
    let mut nightly = every_second("nightly");
    nightly.alert_if_no_success = Some(Duration::from_secs(60));
    nightly.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::hours(1)),
        t(3600),
        chrono_tz::UTC,
    );
    for spec in [retried, quiet, nightly] {
        store.create_job(&spec, t(0)).await.unwrap();
    }
    let retried_run = store
        .lease_due(t(2), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs
        .into_iter()
        .find(|r| r.job_name == "retried")
        .expect("the retried job's run");
    store
        .transition_run(
            retried_run.id,
            &RunTransition::dispatch("w", EPOCH, t(3600)),
            t(2),
        )
        .await
        .unwrap();
    store
        .transition_run(retried_run.id, &RunTransition::to(RunState::Running), t(2))
        .await
        .unwrap();
    store
        .finish_run(retried_run.id, &failed, &rules(0), t(3))
        .await
        .unwrap();

    let facts = store.alert_candidates(t(40), 100).await.unwrap();
    let failing: Vec<(&str, bool)> = facts
        .failing
        .iter()
        .map(|f| (f.name.as_str(), f.retry_in_flight))
        .collect();
    assert_eq!(
        failing,
        [("invoices", false), ("retried", true)],
        "a failure with a retry to come is not final"
    );
    let invoices = &facts.failing[0];
    let invoices_job = invoices.job_id;
    assert_eq!(
        (
            invoices.failures,
            invoices.last_run_id,
            invoices.last_state.as_deref()
        ),
        (1, Some(run), Some("failed"))
    );
    assert_eq!(invoices.labels["team"], "billing");
    assert!(facts.auto_paused.is_empty());
    assert_eq!(facts.deadlines.len(), 1);
    assert_eq!(facts.deadlines[0].name, "nightly");
    assert_eq!(facts.deadlines[0].window, Duration::from_secs(60));
    assert_eq!(facts.deadlines[0].last_success_at, None);
    assert!(facts.deadlines[0].condition(t(100)).is_some());
    // Pending runs due before t(40), per handler and labels: the retry (due after its
    // backoff, at t(5)) and the failing job's next slot (t(2)).
    let mut unserved: Vec<(usize, u64, DateTime<Utc>)> = facts
        .unserved
        .iter()
        .map(|u| (u.labels.len(), u.runs, u.oldest_due_at))
        .collect();
    unserved.sort_unstable();
    assert_eq!(
        unserved,
        [(0, 1, t(5)), (1, 1, t(2))],
        "{:?}",
        facts.unserved
    );
    assert!(facts.unserved.iter().all(|u| u.handler == "noop"));
    let later = store.alert_candidates(t(3), 100).await.unwrap();
    assert_eq!(
        later.unserved.len(),
        1,
        "only runs due before the time asked about"
    );

    let condition = invoices.condition();
    let raise = RaiseAlert {
        condition: condition.clone(),
        channels: vec!["webhook:aa".to_owned(), "email:bb".to_owned()],
    };
    let raised = store
        .change_alerts(EPOCH, t(100), &[raise.clone(), raise.clone()], &[])
        .await
        .unwrap();
    assert_eq!(raised.len(), 1, "one alert per kind and subject");
    let alert = raised[0].clone();
    assert_eq!(
        (
            alert.kind,
            alert.state,
            alert.job_name.as_deref(),
            alert.run_id
        ),
        (
            AlertKind::Failed,
            AlertState::Firing,
            Some("invoices"),
            Some(run)
        )
    );
    assert!(
        alert.message.ends_with(": exit status 2"),
        "{}",
        alert.message
    );
    // Raising it again while it fires changes nothing and sends nothing.
    let again = store
        .change_alerts(EPOCH, t(105), std::slice::from_ref(&raise), &[])
        .await
        .unwrap();
    assert!(again.is_empty());
    // A deposed leader can do nothing.
    let stale = store
        .change_alerts(
            EPOCH - 1,
            t(105),
            &[],
            &[ResolveAlert {
                id: alert.id,
                channels: vec![],
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::Fenced { .. }), "{stale}");
    assert!(matches!(
        store.claim_deliveries(EPOCH - 1, t(105), t(120), 10).await,
        Err(StoreError::Fenced { .. })
    ));

    // The outbox: both channels due; a claim holds them until the hold ends.
    let claimed = store
        .claim_deliveries(EPOCH, t(101), t(116), 10)
        .await
        .unwrap();
    let mut channels: Vec<&str> = claimed.iter().map(|d| d.channel.as_str()).collect();
    channels.sort_unstable();
    assert_eq!(channels, ["email:bb", "webhook:aa"]);
    assert!(
        claimed
            .iter()
            .all(|d| d.attempts == 1 && d.event == AlertState::Firing)
    );
    assert_eq!(claimed[0].alert.id, alert.id);
    assert!(
        store
            .claim_deliveries(EPOCH, t(110), t(125), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let webhook = claimed.iter().find(|d| d.channel == "webhook:aa").unwrap();
    let email = claimed.iter().find(|d| d.channel == "email:bb").unwrap();
    store
        .finish_delivery(EPOCH, webhook.id, 1, t(102), &DeliveryOutcome::Delivered)
        .await
        .unwrap();
    store
        .finish_delivery(
            EPOCH,
            email.id,
            1,
            t(102),
            &DeliveryOutcome::RetryAt(t(104), "the mail server answered 451".to_owned()),
        )
        .await
        .unwrap();
    let retry = store
        .claim_deliveries(EPOCH, t(104), t(119), 10)
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(
        (retry[0].channel.as_str(), retry[0].attempts),
        ("email:bb", 2)
    );
    // Unclaimed after the hold (the claimer died): due again.
    let reclaimed = store
        .claim_deliveries(EPOCH, t(120), t(135), 10)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].attempts, 3);
    // The late answer to attempt 2, whose claim ran out: it changes nothing.
    store
        .finish_delivery(EPOCH, email.id, 2, t(121), &DeliveryOutcome::Delivered)
        .await
        .unwrap();
    assert!(matches!(
        store
            .finish_delivery(EPOCH - 1, email.id, 3, t(121), &DeliveryOutcome::Delivered)
            .await,
        Err(StoreError::Fenced { .. })
    ));

    // Counted, acknowledged, listed with deliveries.
    let counts = store.count_alerts().await.unwrap();
    let failed_count = counts.iter().find(|c| c.kind == AlertKind::Failed).unwrap();
    assert_eq!((failed_count.firing, failed_count.unacked), (1, 1));
    assert_eq!(counts.len(), AlertKind::ALL.len());
    let acked = store.ack_alert(alert.id, "alice", t(130)).await.unwrap();
    assert_eq!(acked.acked_by.as_deref(), Some("alice"));
    let counts = store.count_alerts().await.unwrap();
    let failed_count = counts.iter().find(|c| c.kind == AlertKind::Failed).unwrap();
    assert_eq!((failed_count.firing, failed_count.unacked), (1, 0));
    assert!(matches!(
        store.ack_alert(9999, "bob", t(130)).await,
        Err(StoreError::AlertNotFound(9999))
    ));
    let listed = store.list_alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let mut deliveries: Vec<(&str, bool, Option<&str>)> = listed[0]
        .deliveries
        .iter()
        .map(|d| {
            (
                d.channel.as_str(),
                d.delivered_at.is_some(),
                d.last_error.as_deref(),
            )
        })
        .collect();
    deliveries.sort_unstable();
    assert_eq!(
        deliveries,
        [
            ("email:bb", false, Some("the mail server answered 451")),
            ("webhook:aa", true, None)
        ]
    );

    // Resolving: once, with its own outbox rows; a new occurrence is a new alert.
    let resolve = ResolveAlert {
        id: alert.id,
        channels: vec!["webhook:aa".to_owned(), "email:bb".to_owned()],
    };
    let resolved = store
        .change_alerts(EPOCH, t(140), &[], &[resolve.clone(), resolve.clone()])
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, AlertState::Resolved);
    assert_eq!(resolved[0].resolved_at, Some(t(140)));
    let sent = store
        .claim_deliveries(EPOCH, t(141), t(156), 10)
        .await
        .unwrap();
    let mut events: Vec<(&str, AlertState)> =
        sent.iter().map(|d| (d.channel.as_str(), d.event)).collect();
    events.sort_unstable_by_key(|(channel, _)| *channel);
    assert_eq!(
        events,
        [
            ("email:bb", AlertState::Firing),
            ("webhook:aa", AlertState::Resolved)
        ],
        "a channel gets an alert's resolution only after its firing: {sent:?}"
    );
    assert!(sent.iter().all(|d| d.alert.state == AlertState::Resolved));
    let other = Condition {
        message: "again".to_owned(),
        ..condition
    };
    let new = store
        .change_alerts(
            EPOCH,
            t(150),
            &[RaiseAlert {
                condition: other,
                channels: vec![],
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].id, alert.id);
    let firing = store.firing_alerts(100).await.unwrap();
    assert_eq!(firing.iter().map(|a| a.id).collect::<Vec<_>>(), [new[0].id]);
    let only_resolved = store
        .list_alerts(&AlertFilter {
            state: Some(AlertState::Resolved),
            job: Some("invoices".to_owned()),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        only_resolved.iter().map(|a| a.id).collect::<Vec<_>>(),
        [alert.id]
    );
    let older = store
        .list_alerts(&AlertFilter {
            before: Some(new[0].id),
            kind: Some(AlertKind::Failed),
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(older.iter().map(|a| a.id).collect::<Vec<_>>(), [alert.id]);

    // A slot given up after its last loss is a failure to tell, though a loss does not
    // extend the streak.
    let mut fragile = every_second("fragile");
    fragile.schedule = Schedule::every(
        Interval::Elapsed(TimeDelta::hours(1)),
        t(200),
        chrono_tz::UTC,
    );
    store.create_job(&fragile, t(150)).await.unwrap();
    let lost_run = store
        .lease_due(t(200), EPOCH, 10, &settings())
        .await
        .unwrap()
        .runs
        .into_iter()
        .find(|r| r.job_name == "fragile")
        .expect("the fragile job's run");
    store
        .transition_run(
            lost_run.id,
            &RunTransition::dispatch("w", EPOCH, t(260)),
            t(200),
        )
        .await
        .unwrap();
    let lost = store
        .mark_lost(lost_run.id, EPOCH, "worker w silent", 0, t(201))
        .await
        .unwrap();
    assert!(lost.rerun.is_none(), "no attempt left");
    let facts = store.alert_candidates(t(100), 100).await.unwrap();
    assert!(
        facts.failing.iter().all(|f| f.name != "invoices"),
        "a job whose alert fires is no candidate: {:?}",
        facts.failing
    );
    let fragile = facts
        .failing
        .iter()
        .find(|f| f.name == "fragile")
        .expect("the job whose slot was lost");
    assert_eq!(
        (
            fragile.failures,
            fragile.last_run_id,
            fragile.last_state.as_deref()
        ),
        (0, Some(lost_run.id), Some("lost"))
    );
    assert_eq!(
        fragile.condition().message,
        format!(
            "run {} of job fragile ended lost: worker w silent",
            lost_run.id
        )
    );

    // The facts of given jobs and runs, firing or not, whatever the candidates' limit.
    let of = store
        .alert_facts_of(&[invoices_job, fragile.job_id, 9999], &[run, 9999])
        .await
        .unwrap();
    let mut names: Vec<&str> = of.failing.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["fragile", "invoices"]);
    assert!(of.running.is_empty(), "run {run} ended");
    assert!(of.unserved.is_empty());
    let cut = store.alert_candidates(t(100), 1).await.unwrap();
    assert_eq!(cut.deadlines.len(), 1, "at most the limit");

    // Retention: resolved alerts older than the cutoff go, with their deliveries; firing
    // ones stay however old.
    assert_eq!(store.prune_alerts(t(140), 100).await.unwrap(), 0);
    assert_eq!(store.prune_alerts(t(141), 100).await.unwrap(), 1);
    let left = store.list_alerts(&AlertFilter::default()).await.unwrap();
    assert_eq!(left.iter().map(|a| a.id).collect::<Vec<_>>(), [new[0].id]);
}
