//! The REST API against the gRPC admin API it mirrors, over one real PostgreSQL: the same
//! calls give the same answers (as the CLI's JSON views) and the same errors; bad input
//! is refused the same way by the CLI, REST and gRPC and changes nothing; bearer tokens
//! guard REST as they guard gRPC; the OpenAPI document covers every route.

mod admin_api;

use std::collections::BTreeSet;

use admin_api::{Admin, Snapshot, cronfleet, snapshot, start_admin_with_rest};
use cronfleet_coordinator::Tokens;
use cronfleet_coordinator::admin::error::code_name;
use cronfleet_coordinator::rest::model::{
    ChangeView, JobDefinition, JobView, RunView, StatusView, WorkerView,
};
use cronfleet_core::run::RunState;
use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::cluster_service_client::ClusterServiceClient;
use cronfleet_proto::v1::job_service_client::JobServiceClient;
use cronfleet_proto::v1::run_service_client::RunServiceClient;
use cronfleet_store::{JobStore, LeaderStore, RunTransition};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

/// A REST client for one coordinator, presenting `token` when given.
struct Rest {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

/// An answer: its status and its body (JSON when it parses, else the text as a string).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The `{"error": …}` of a refusal: its code, message and field.
    fn error(&self) -> (&str, &str, Option<&str>) {
        let error = &self.body["error"];
        (
            error["code"]
                .as_str()
                .unwrap_or_else(|| panic!("no error code: {self:?}")),
            error["message"].as_str().expect("an error message"),
            error["field"].as_str(),
        )
    }
}

impl Rest {
    fn new(admin: &Admin, token: Option<&str>) -> Rest {
        Rest {
            base: admin.http.clone(),
            client: reqwest::Client::new(),
            token: token.map(str::to_owned),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("REST call");
        let status = response.status().as_u16();
        let text = response.text().await.expect("REST body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn send(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.call(method, path, Some(body.to_string())).await
    }

    /// A call that must answer `status`; returns its body.
    async fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let answer = self.call(method, path, body.map(ToString::to_string)).await;
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        answer.body
    }
}

/// The three gRPC clients of one coordinator.
struct Grpc {
    jobs: JobServiceClient<Channel>,
    runs: RunServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
}

async fn grpc(admin: &Admin) -> Grpc {
    let channel = Endpoint::from_shared(admin.grpc.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect over gRPC");
    Grpc {
        jobs: JobServiceClient::new(channel.clone()),
        runs: RunServiceClient::new(channel.clone()),
        cluster: ClusterServiceClient::new(channel),
    }
}

fn json_of(view: impl serde::Serialize) -> Value {
    serde_json::to_value(view).unwrap()
}

fn spec_of(definition: &Value) -> pb::JobSpec {
    serde_json::from_value::<JobDefinition>(definition.clone())
        .expect("a job definition")
        .to_spec()
}

/// A gRPC refusal and a REST one say the same: the same code and message.
fn assert_same_error(status: &tonic::Status, answer: &Answer) {
    let (code, message, _) = answer.error();
    assert_eq!(code, code_name(status.code()), "{answer:?} vs {status:?}");
    assert_eq!(message, status.message(), "{answer:?} vs {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_give_the_same_results() {
    let admin = start_admin_with_rest(Tokens::default()).await;
    let rest = Rest::new(&admin, None);
    let mut grpc = grpc(&admin).await;

    // A job created over REST reads the same over gRPC, and the other way round.
    let report = json!({
        "name": "report", "handler": "shell", "cron": "30 2 * * *", "tz": "Europe/Berlin",
        "args": {"script": "echo hi"}, "retries": 2, "labels": {"region": "eu"},
        "overlap": "queue", "timeout": "5m", "max_runs": 10,
        "alerts_enabled": false, "alert_if_no_success": "26h", "expected_duration": "10m",
    });
    let created = rest
        .expect("POST", "/api/v1/jobs", Some(&report), 201)
        .await;
    let read = grpc
        .jobs
        .get_job(pb::GetJobRequest {
            name: "report".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created, json_of(JobView::new(&read)));
    assert_eq!(created["cron"], "30 2 * * *");
    assert_eq!(created["args"], json!({"script": "echo hi"}));
    assert_eq!(
        (
            &created["alerts_enabled"],
            &created["alert_if_no_success"],
            &created["expected_duration"]
        ),
        (&json!(false), &json!("1d2h"), &json!("10m"))
    );

    let sync = json!({"name": "sync", "handler": "noop", "every": "5m"});
    let created = grpc
        .jobs
        .create_job(pb::CreateJobRequest {
            spec: Some(spec_of(&sync)),
        })
        .await
        .unwrap()
        .into_inner();
    let read = rest.expect("GET", "/api/v1/jobs/sync", None, 200).await;
    assert_eq!(read, json_of(JobView::new(&created)));

    let listed = grpc
        .jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    let views: Vec<JobView> = listed.jobs.iter().map(JobView::new).collect();
    assert_eq!(
        rest.expect("GET", "/api/v1/jobs", None, 200).await,
        json!({ "jobs": views })
    );

    // Pause over REST, resume over gRPC: each side sees the other's change.
    let paused = rest
        .expect(
            "POST",
            "/api/v1/jobs/sync/pause",
            Some(&json!({"note": "maintenance"})),
            200,
        )
        .await;
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["pause_note"], "maintenance");
    let read = grpc
        .jobs
        .get_job(pb::GetJobRequest {
            name: "sync".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused, json_of(JobView::new(&read)));
    let resumed = grpc
        .jobs
        .resume_job(pb::ResumeJobRequest {
            name: "sync".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.expect("GET", "/api/v1/jobs/sync", None, 200).await,
        json_of(JobView::new(&resumed))
    );
    // A pause without a body (no note) works too.
    let paused = rest
        .expect("POST", "/api/v1/jobs/sync/pause", None, 200)
        .await;
    assert_eq!(paused["paused"], true);
    rest.expect("POST", "/api/v1/jobs/sync/resume", None, 200)
        .await;

    // Update over REST, guarded by the version; a stale version is refused the same way.
    let version = rest.expect("GET", "/api/v1/jobs/sync", None, 200).await["version"]
        .as_i64()
        .unwrap();
    let changed = json!({"name": "sync", "handler": "noop", "every": "10m", "priority": -5});
    let updated = rest
        .expect(
            "PUT",
            &format!("/api/v1/jobs/sync?expected_version={version}"),
            Some(&changed),
            200,
        )
        .await;
    assert_eq!(updated["every"], "10m");
    assert_eq!(updated["priority"], -5);
    assert_eq!(updated["version"], version + 1);
    let stale = rest
        .send(
            "PUT",
            &format!("/api/v1/jobs/sync?expected_version={version}"),
            &changed,
        )
        .await;
    assert_eq!(stale.status, 409);
    let refused = grpc
        .jobs
        .update_job(pb::UpdateJobRequest {
            name: "sync".into(),
            expected_version: version,
            spec: Some(spec_of(&changed)),
        })
        .await
        .unwrap_err();
    assert_same_error(&refused, &stale);
    // Without a version the current one is taken.
    let unguarded = rest
        .expect("PUT", "/api/v1/jobs/sync", Some(&sync), 200)
        .await;
    assert_eq!(unguarded["every"], "5m");

    // A manual run over REST is the run gRPC reads, lists and cancels.
    let manual = rest
        .expect("POST", "/api/v1/jobs/report/run", None, 201)
        .await;
    assert_eq!(manual["queued"], false);
    assert_eq!(manual["trigger"], "manual");
    let id = manual["id"].as_i64().expect("a run id");
    let run = grpc
        .runs
        .get_run(pb::GetRunRequest { id })
        .await
        .unwrap()
        .into_inner();
    let mut expected = json_of(RunView::new(&run));
    expected["queued"] = json!(false);
    assert_eq!(manual, expected);
    let filters = [
        ("", pb::ListRunsRequest::default()),
        (
            "?job=report&state=pending&limit=5",
            pb::ListRunsRequest {
                job: "report".into(),
                state: "pending".into(),
                limit: 5,
                ..pb::ListRunsRequest::default()
            },
        ),
        (
            "?since=2000-01-01T00:00:00Z",
            pb::ListRunsRequest {
                since: "2000-01-01T00:00:00Z".into(),
                ..pb::ListRunsRequest::default()
            },
        ),
    ];
    for (query, request) in filters {
        let listed = grpc.runs.list_runs(request).await.unwrap().into_inner();
        assert_eq!(listed.runs.len(), 1, "{query}");
        let views: Vec<RunView> = listed.runs.iter().map(RunView::new).collect();
        assert_eq!(
            rest.expect("GET", &format!("/api/v1/runs{query}"), None, 200)
                .await,
            json!({ "runs": views }),
            "{query}"
        );
    }

    let run = grpc
        .runs
        .get_run(pb::GetRunRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.expect("GET", &format!("/api/v1/runs/{id}"), None, 200)
            .await,
        json_of(RunView::new(&run))
    );

    // A run's log, as text, over REST as over gRPC; followed until the run ends.
    let sync_run = grpc
        .jobs
        .run_job(pb::RunJobRequest {
            name: "sync".into(),
            at: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    let store = admin.store.clone();
    let epoch = store.epoch().await.unwrap();
    let deadline = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
    let dispatch = RunTransition::dispatch("worker-1", epoch, deadline);
    store
        .transition_run(sync_run, &dispatch, chrono::Utc::now())
        .await
        .unwrap();
    store
        .record_output(sync_run, "line one\nline two\n")
        .await
        .unwrap();
    let logs = rest
        .expect("GET", &format!("/api/v1/runs/{sync_run}/logs"), None, 200)
        .await;
    assert_eq!(logs, "line one\nline two\n");
    let read = grpc
        .runs
        .get_run(pb::GetRunRequest { id: sync_run })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logs, read.output);
    let follow = tokio::spawn({
        let rest = Rest::new(&admin, None);
        async move {
            rest.expect(
                "GET",
                &format!("/api/v1/runs/{sync_run}/logs?follow=true"),
                None,
                200,
            )
            .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(!follow.is_finished(), "follow waits while the run runs");
    let finished =
        RunTransition::to(RunState::Succeeded).with_output("line one\nline two\nline three\n");
    store
        .transition_run(
            sync_run,
            &RunTransition::to(RunState::Running),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    store
        .transition_run(sync_run, &finished, chrono::Utc::now())
        .await
        .unwrap();
    let followed = tokio::time::timeout(std::time::Duration::from_secs(10), follow)
        .await
        .expect("follow ends with the run")
        .unwrap();
    assert_eq!(followed, "line one\nline two\nline three\n");

    // Cancelled over REST; cancelling again is refused the same way over both.
    let cancelled = rest
        .expect(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&json!({"reason": "not today"})),
            200,
        )
        .await;
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["error"], "not today");
    let again = rest
        .call("POST", &format!("/api/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(again.status, 409, "{again:?}");
    let refused = grpc
        .runs
        .cancel_run(pb::CancelRunRequest {
            id,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_same_error(&refused, &again);

    // Workers and status.
    let workers = grpc
        .cluster
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    let views: Vec<WorkerView> = workers.workers.iter().map(WorkerView::new).collect();
    assert_eq!(views.len(), 1);
    assert_eq!(
        rest.expect("GET", "/api/v1/workers", None, 200).await,
        json!({ "workers": views })
    );
    let status = grpc
        .cluster
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.expect("GET", "/api/v1/status", None, 200).await,
        json_of(StatusView::new(&status))
    );

    // Apply, dry: the same plan both ways; then for real over REST, then unchanged.
    let file = json!([
        {"name": "report", "handler": "shell", "cron": "0 3 * * *", "tz": "Europe/Berlin",
         "args": {"script": "echo hi"}, "retries": 2, "labels": {"region": "eu"},
         "overlap": "queue", "timeout": "5m", "max_runs": 10,
         "alerts_enabled": false, "alert_if_no_success": "26h", "expected_duration": "10m"},
        {"name": "fresh", "handler": "noop", "every": "1h"},
    ]);
    let apply = |dry_run: bool| json!({"jobs": file, "manager": "ci", "dry_run": dry_run});
    let planned = rest
        .expect("POST", "/api/v1/apply", Some(&apply(true)), 200)
        .await;
    let specs: Vec<pb::JobSpec> = file.as_array().unwrap().iter().map(spec_of).collect();
    let grpc_plan = grpc
        .jobs
        .apply_jobs(pb::ApplyJobsRequest {
            jobs: specs,
            manager: "ci".into(),
            prune: false,
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    let views: Vec<ChangeView> = grpc_plan.changes.iter().map(ChangeView::new).collect();
    assert_eq!(planned, json!({ "changes": views }));
    let actions: Vec<&str> = planned["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["updated", "created"]);
    rest.expect("POST", "/api/v1/apply", Some(&apply(false)), 200)
        .await;
    let again = rest
        .expect("POST", "/api/v1/apply", Some(&apply(false)), 200)
        .await;
    assert!(
        again["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|change| change["action"] == "unchanged"),
        "{again}"
    );

    // Delete over REST; both sides then say it is gone, in the same words.
    rest.expect("DELETE", "/api/v1/jobs/fresh", None, 204).await;
    let gone = rest.get("/api/v1/jobs/fresh").await;
    assert_eq!(gone.status, 404);
    let refused = grpc
        .jobs
        .get_job(pb::GetJobRequest {
            name: "fresh".into(),
        })
        .await
        .unwrap_err();
    assert_same_error(&refused, &gone);

    // Other refusals, side by side.
    let duplicate = rest.send("POST", "/api/v1/jobs", &sync).await;
    assert_eq!(duplicate.status, 409);
    let refused = grpc
        .jobs
        .create_job(pb::CreateJobRequest {
            spec: Some(spec_of(&sync)),
        })
        .await
        .unwrap_err();
    assert_same_error(&refused, &duplicate);
    let missing_run = rest.get("/api/v1/runs/999999").await;
    assert_eq!(missing_run.status, 404);
    let refused = grpc
        .runs
        .get_run(pb::GetRunRequest { id: 999_999 })
        .await
        .unwrap_err();
    assert_same_error(&refused, &missing_run);
    let bad_state = rest.get("/api/v1/runs?state=done").await;
    assert_eq!(bad_state.status, 400);
    assert_eq!(bad_state.error().2, Some("state"));
    let refused = grpc
        .runs
        .list_runs(pb::ListRunsRequest {
            state: "done".into(),
            ..pb::ListRunsRequest::default()
        })
        .await
        .unwrap_err();
    assert_same_error(&refused, &bad_state);
}

/// One kind of bad input: a job definition (as REST and job files write it; gRPC gets its
/// spec when it can express it), the `job create` flags saying the same (when the CLI can),
/// the field the REST error names, and what every error must say.
struct BadInput {
    what: &'static str,
    definition: Value,
    cli: Option<Vec<String>>,
    field: &'static str,
    says: Vec<&'static str>,
    /// What the CLI says instead, when its own parser refuses the flag before the server
    /// is asked.
    cli_says: Option<Vec<&'static str>>,
}

fn bad(
    what: &'static str,
    definition: Value,
    cli: Option<Vec<String>>,
    field: &'static str,
    says: &[&'static str],
) -> BadInput {
    BadInput {
        what,
        definition,
        cli,
        field,
        says: says.to_vec(),
        cli_says: None,
    }
}

/// A valid definition of job `bad-input` with `change` on top.
fn job_with(change: Value) -> Value {
    let mut job = json!({"name": "bad-input", "handler": "shell", "every": "5m"});
    for (key, value) in change.as_object().unwrap() {
        job[key] = value.clone();
    }
    job
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// `job create bad-input --handler shell` with `flags` (and `--every 5m` unless a schedule
/// flag is among them).
fn create_flags(flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["job", "create", "bad-input", "--handler", "shell"]
        .map(str::to_owned)
        .to_vec();
    if !flags
        .iter()
        .any(|flag| ["--every", "--cron", "--at"].contains(flag))
    {
        args.extend(["--every".to_owned(), "5m".to_owned()]);
    }
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_alike_by_the_cli_rest_and_grpc_and_changes_nothing() {
    let admin = start_admin_with_rest(Tokens::default()).await;
    let rest = Rest::new(&admin, None);
    let mut grpc = grpc(&admin).await;
    rest.expect(
        "POST",
        "/api/v1/jobs",
        Some(&job_with(json!({"name": "taken"}))),
        201,
    )
    .await;
    let before: Snapshot = snapshot(&admin.store).await;

    let long_name = "n".repeat(64);
    let huge_args = "x".repeat(1024 * 1024 + 1);
    let mut cases = vec![
        bad(
            "a name with capitals",
            job_with(json!({"name": "Nightly"})),
            Some(argv(&[
                "job",
                "create",
                "Nightly",
                "--handler",
                "shell",
                "--every",
                "5m",
            ])),
            "name",
            &["invalid name \"Nightly\"", "lowercase letters"],
        ),
        bad(
            "a name of 64 characters",
            job_with(json!({"name": long_name})),
            None,
            "name",
            &["invalid name", "1 to 63"],
        ),
        bad(
            "an empty name",
            job_with(json!({"name": ""})),
            Some(argv(&[
                "job",
                "create",
                "",
                "--handler",
                "shell",
                "--every",
                "5m",
            ])),
            "name",
            &["invalid name \"\""],
        ),
        bad(
            "a cron expression out of range",
            job_with(json!({"every": null, "cron": "61 * * * *"})),
            Some(create_flags(&["--cron", "61 * * * *"])),
            "cron",
            &["invalid cron expression \"61 * * * *\""],
        ),
        bad(
            "an unknown zone",
            job_with(json!({"tz": "Mars/Olympus"})),
            Some(create_flags(&["--tz", "Mars/Olympus"])),
            "tz",
            &["unknown time zone \"Mars/Olympus\"", "IANA"],
        ),
        bad(
            "a zero interval",
            job_with(json!({"every": "0s"})),
            Some(create_flags(&["--every", "0s"])),
            "every",
            &["invalid interval \"0s\"", "greater than zero"],
        ),
        bad(
            "a negative interval",
            job_with(json!({"every": "-5m"})),
            Some(create_flags(&["--every", "-5m"])),
            "every",
            &["invalid interval \"-5m\"", "negative"],
        ),
        bad(
            "a duration with an unknown unit",
            job_with(json!({"timeout": "5x"})),
            Some(create_flags(&["--timeout", "5x"])),
            "timeout",
            &["unknown unit \"x\"", "valid units are"],
        ),
        bad(
            "a zero timeout",
            job_with(json!({"timeout": "0s"})),
            Some(create_flags(&["--timeout", "0s"])),
            "timeout",
            &["timeout: invalid duration \"0s\"", "greater than zero"],
        ),
        bad(
            "a zero catch-up window",
            job_with(json!({"catch_up_window": "0s"})),
            Some(create_flags(&["--catch-up-window", "0s"])),
            "catch_up_window",
            &[
                "catch_up_window: invalid duration \"0s\"",
                "greater than zero",
            ],
        ),
        bad(
            "an expected duration under a second",
            job_with(json!({"expected_duration": "500ms"})),
            Some(create_flags(&["--expected-duration", "500ms"])),
            "expected_duration",
            &[
                "invalid expected_duration \"500ms\"",
                "a duration of at least 1s",
            ],
        ),
        bad(
            "args over 1 MiB",
            job_with(json!({"args": {"blob": huge_args}})),
            None,
            "args",
            &["invalid args", "at most 1 MiB"],
        ),
        bad(
            "a label key with a space",
            job_with(json!({"labels": {"my region": "eu"}})),
            Some(create_flags(&["--labels", "my region=eu"])),
            "labels",
            &["invalid labels \"my region\"", "label keys of 1 to 63"],
        ),
        bad(
            "a label value with a comma",
            job_with(json!({"labels": {"region": "eu,us"}})),
            None,
            "labels",
            &["invalid labels \"region=eu,us\"", "label values"],
        ),
        bad(
            "retries over the limit",
            job_with(json!({"retries": 101})),
            Some(create_flags(&["--retries", "101"])),
            "retries",
            &["invalid retries \"101\"", "0 to 100"],
        ),
        bad(
            "an unknown overlap policy",
            job_with(json!({"overlap": "sometimes"})),
            Some(create_flags(&["--overlap", "sometimes"])),
            "overlap",
            &[
                "unknown overlap policy \"sometimes\"",
                "skip, queue, replace",
            ],
        ),
        bad(
            "two schedules",
            job_with(json!({"cron": "@daily"})),
            None,
            "schedule",
            &["every and cron are both given", "exactly one"],
        ),
        bad(
            "no schedule",
            json!({"name": "bad-input", "handler": "shell"}),
            None,
            "schedule",
            &["schedule", "missing"],
        ),
        // Not even JSON of the right shape: REST and job files refuse it before any call.
        bad(
            "an unknown field",
            job_with(json!({"evry": "5m"})),
            None,
            "",
            &["unknown field `evry`", "expected one of"],
        ),
        bad(
            "a negative number of retries",
            job_with(json!({"retries": -1})),
            None,
            "retries",
            &["retries", "invalid value: integer `-1`"],
        ),
        bad(
            "zero max runs",
            job_with(json!({"max_runs": 0})),
            None,
            "max_runs",
            &["invalid max_runs \"0\"", "at least 1"],
        ),
    ];
    // The CLI's own parser refuses these flags first, in its words.
    for (what, flags, says) in [
        (
            "zero max runs",
            vec!["--max-runs", "0"],
            vec!["'--max-runs <N>'", "at least 1"],
        ),
        (
            "a negative number of retries",
            vec!["--retries", "-1"],
            vec!["'--retries <N>'", "-1"],
        ),
        (
            "retries over the limit",
            vec!["--retries", "101"],
            vec!["'--retries <N>'", "101", "0 to 100"],
        ),
    ] {
        let case = cases.iter_mut().find(|case| case.what == what).unwrap();
        case.cli = Some(create_flags(&flags));
        case.cli_says = Some(says);
    }

    for case in &cases {
        let what = case.what;
        // REST: 400, invalid_argument, the field, the words.
        let answer = rest.send("POST", "/api/v1/jobs", &case.definition).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        let (code, message, field) = answer.error();
        assert_eq!(code, "invalid_argument", "{what}: {answer:?}");
        if !case.field.is_empty() {
            assert_eq!(field, Some(case.field), "{what}: {answer:?}");
        }
        for part in &case.says {
            assert!(
                message.contains(part),
                "{what}: REST says {message:?}, not {part:?}"
            );
        }

        // gRPC, whenever the definition can be written as a spec.
        if let Ok(definition) = serde_json::from_value::<JobDefinition>(case.definition.clone())
            && definition.check_one_schedule().is_ok()
        {
            let status = grpc
                .jobs
                .create_job(pb::CreateJobRequest {
                    spec: Some(definition.to_spec()),
                })
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{what}: {status:?}"
            );
            assert_eq!(
                status.message(),
                message,
                "{what}: gRPC and REST say the same"
            );
        }

        // The CLI, by its flags or through a job file.
        let output = match &case.cli {
            Some(args) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cronfleet(&admin.grpc, &args).await
            }
            None => {
                let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
                let text = json!({ "jobs": [case.definition] }).to_string();
                std::fs::write(file.path(), text).unwrap();
                cronfleet(&admin.grpc, &["apply", "-f", file.path().to_str().unwrap()]).await
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: the CLI accepted it");
        for part in case.cli_says.as_ref().unwrap_or(&case.says) {
            assert!(
                stderr.contains(part),
                "{what}: the CLI says {stderr:?}, not {part:?}"
            );
        }
    }

    // Other calls' bad input: a malformed body, path and query.
    for (method, path, body, says) in [
        ("POST", "/api/v1/jobs", "{not json", "invalid request body"),
        ("POST", "/api/v1/jobs", "", "invalid request body"),
        (
            "POST",
            "/api/v1/jobs/taken/pause",
            "{\"reason\": \"x\"}",
            "unknown field `reason`",
        ),
        ("GET", "/api/v1/runs/abc", "", "invalid path"),
        ("GET", "/api/v1/runs?limit=-1", "", "invalid query"),
        (
            "GET",
            "/api/v1/runs?stat=failed",
            "",
            "unknown field `stat`",
        ),
        (
            "PUT",
            "/api/v1/jobs/taken?expected_version=x",
            "{}",
            "invalid query",
        ),
        (
            "POST",
            "/api/v1/apply",
            "{\"jobs\": [{\"name\": \"a\", \"handler\": \"noop\", \"every\": \"1m\"}, {\"name\": \"a\", \"handler\": \"noop\", \"every\": \"1m\"}]}",
            "is also the name of jobs[0]",
        ),
        (
            "POST",
            "/api/v1/apply",
            "{\"jobs\": [{\"name\": \"b\", \"handler\": \"noop\", \"every\": \"1m\", \"tz\": \"Nowhere\"}]}",
            "jobs[0] (b): tz: unknown time zone",
        ),
    ] {
        let answer = rest.call(method, path, Some(body.to_owned())).await;
        assert_eq!(answer.status, 400, "{method} {path}: {answer:?}");
        let (code, message, _) = answer.error();
        assert_eq!(code, "invalid_argument");
        assert!(
            message.contains(says),
            "{method} {path}: {message:?} lacks {says:?}"
        );
    }
    let answer = rest.call("POST", "/api/v1/apply", Some("{\"jobs\": [{\"name\": \"b\", \"handler\": \"noop\", \"every\": \"1m\", \"tz\": \"Nowhere\"}]}".into())).await;
    assert_eq!(answer.error().2, Some("jobs[0].tz"));
    let unknown = rest.get("/api/v1/nothing-here").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().1.contains("openapi.json"), "{unknown:?}");

    assert_eq!(snapshot(&admin.store).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_rest_as_they_guard_grpc() {
    const OLD: &str = "old-rest-token-51c3";
    const NEW: &str = "new-rest-token-0e7a";
    let admin = start_admin_with_rest(Tokens::new([OLD, NEW])).await;

    let missing = Rest::new(&admin, None).get("/api/v1/jobs").await;
    assert_eq!(missing.status, 401, "{missing:?}");
    let (code, message, _) = missing.error();
    assert_eq!(code, "unauthenticated");
    assert!(message.contains("requires a bearer token"), "{message}");
    let wrong = Rest::new(&admin, Some("guess")).get("/api/v1/jobs").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.error().1.contains("not one of"), "{wrong:?}");
    assert!(!wrong.error().1.contains(OLD) && !wrong.error().1.contains("guess"));
    // Both tokens of a rotation work, for reading and for changing.
    for (token, name) in [(OLD, "made-with-old"), (NEW, "made-with-new")] {
        let rest = Rest::new(&admin, Some(token));
        rest.expect("GET", "/api/v1/status", None, 200).await;
        rest.expect(
            "POST",
            "/api/v1/jobs",
            Some(&json!({"name": name, "handler": "noop", "every": "1m"})),
            201,
        )
        .await;
    }
    // A refused call changes nothing, whatever it asks.
    let refused = Rest::new(&admin, None)
        .send("DELETE", "/api/v1/jobs/made-with-old", &json!({}))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(snapshot(&admin.store).await.0.len(), 2);
    // gRPC refuses the same way, under the same tokens.
    let mut grpc = grpc(&admin).await;
    let status = grpc
        .jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap_err();
    assert_eq!(code_name(status.code()), "unauthenticated");
    assert_eq!(status.message(), message);
    // The API's description is public: it holds no data.
    Rest::new(&admin, None)
        .expect("GET", "/api/v1/openapi.json", None, 200)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let admin = start_admin_with_rest(Tokens::default()).await;
    let rest = Rest::new(&admin, None);
    let document = rest.expect("GET", "/api/v1/openapi.json", None, 200).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        document,
        serde_json::to_value(cronfleet_coordinator::rest::openapi()).unwrap()
    );

    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.insert(format!("{} {path}", method.to_uppercase()));
            assert!(
                operation["responses"].get("default").is_some(),
                "{method} {path} documents its errors"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status} has a description (OpenAPI requires one)"
                );
                let described = response["content"].is_object() || status == "204";
                assert!(described, "{method} {path} {status} describes its body");
            }
        }
    }
    let expected: BTreeSet<String> = [
        "GET /api/v1/jobs",
        "POST /api/v1/jobs",
        "GET /api/v1/jobs/{name}",
        "PUT /api/v1/jobs/{name}",
        "DELETE /api/v1/jobs/{name}",
        "POST /api/v1/jobs/{name}/pause",
        "POST /api/v1/jobs/{name}/resume",
        "POST /api/v1/jobs/{name}/run",
        "POST /api/v1/apply",
        "GET /api/v1/runs",
        "GET /api/v1/runs/{id}",
        "GET /api/v1/runs/{id}/logs",
        "POST /api/v1/runs/{id}/cancel",
        "GET /api/v1/workers",
        "POST /api/v1/workers/{id}/drain",
        "GET /api/v1/status",
        "GET /api/v1/alerts",
        "POST /api/v1/alerts/{id}/ack",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(
        operations, expected,
        "the admin API's calls, each documented"
    );

    // Every documented operation is served: none is an unknown route or method.
    for operation in &operations {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "no-such-job")
            .replace("{id}", "424242");
        let answer = rest.call(method, &path, Some("{}".to_owned())).await;
        assert_ne!(answer.status, 405, "{operation}: {answer:?}");
        if answer.status == 404 {
            assert!(
                !answer.error().1.starts_with("no route"),
                "{operation} is documented but not served: {answer:?}"
            );
        }
    }
    // Schemas are there for the bodies.
    for schema in [
        "JobView",
        "JobDefinition",
        "RunView",
        "ErrorBody",
        "StatusView",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
}
