//! `cronfleet apply` end to end: the real binary against the admin API served in-process
//! over a real PostgreSQL. A file's jobs are created, updated and left alone as the file
//! says, and the output says which and how; applying twice changes nothing; `--prune`
//! deletes only what an apply of the same manager created; `--dry-run` and every kind of
//! bad file change nothing; `job get -o yaml` writes a file that applies back unchanged.

mod admin_api;

use std::path::{Path, PathBuf};

use admin_api::{json, refused, snapshot, start_admin, succeeds};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

/// Writes a job file into `dir`; returns its path as an argument.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The names of the jobs, and who manages each.
async fn owners(server: &str) -> Vec<(String, Value)> {
    json(server, &["job", "list"])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["name"].as_str().unwrap().to_owned(),
                job["managed_by"].clone(),
            )
        })
        .collect()
}

const FIRST: &str = r#"
jobs:
  - name: heartbeat
    handler: noop
    every: 10s
  - name: nightly-report
    handler: shell
    cron: "30 2 * * *"
    tz: Europe/Berlin
    args:
      script: echo report
  - name: sync
    handler: http
    every: 5m
    args: {url: "http://127.0.0.1:8080/healthz", expect_status: 200}
"#;

const SECOND: &str = r#"
jobs:
  - name: nightly-report
    handler: shell
    cron: "0 3 * * *"
    tz: Europe/Berlin
    args:
      script: echo report
    retries: 3
    timeout: 10m
  - name: sync
    handler: http
    every: 5m
    args: {url: "http://127.0.0.1:8080/healthz", expect_status: 200}
"#;

/// `SECOND` as JSON, with the same values written differently (`600s` is `10m`).
const SECOND_AS_JSON: &str = r#"{"jobs": [
  {"name": "nightly-report", "handler": "shell", "cron": "0 3 * * *", "tz": "Europe/Berlin",
   "args": {"script": "echo report"}, "retries": 3, "timeout": "600s"},
  {"name": "sync", "handler": "http", "every": "5m",
   "args": {"expect_status": 200, "url": "http://127.0.0.1:8080/healthz"}}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_and_updates_jobs_and_says_what_changed() {
    let (server, store) = start_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "jobs.yaml", FIRST);

    let said = succeeds(&server, &["apply", "-f", &first]).await;
    assert_eq!(
        said,
        "created  heartbeat\ncreated  nightly-report\ncreated  sync\n\
         3 created, 0 updated, 0 unchanged, 0 deleted\n"
    );
    assert_eq!(
        owners(&server).await,
        [
            ("heartbeat".into(), json!("apply")),
            ("nightly-report".into(), json!("apply")),
            ("sync".into(), json!("apply")),
        ]
    );
    let report = json(&server, &["job", "get", "nightly-report"]).await;
    assert_eq!(
        (&report["cron"], &report["tz"], &report["args"]),
        (
            &json!("30 2 * * *"),
            &json!("Europe/Berlin"),
            &json!({"script": "echo report"})
        )
    );

    // Idempotent: the same file again writes nothing.
    let before = snapshot(&store).await;
    let said = succeeds(&server, &["apply", "-f", &first]).await;
    assert_eq!(
        said,
        "unchanged  heartbeat\nunchanged  nightly-report\nunchanged  sync\n\
         0 created, 0 updated, 3 unchanged, 0 deleted\n"
    );
    assert_eq!(snapshot(&store).await, before);

    // A changed file: each changed field, with both values. A job the file no longer has
    // stays (no --prune).
    let second = write(dir.path(), "jobs.yaml", SECOND);
    let changes = json(&server, &["apply", "-f", &second]).await;
    assert_eq!(
        changes,
        json!([
            {"name": "nightly-report", "action": "updated", "fields": [
                {"field": "cron", "from": "30 2 * * *", "to": "0 3 * * *"},
                {"field": "timeout", "from": null, "to": "10m"},
                {"field": "retries", "from": "0", "to": "3"},
            ]},
            {"name": "sync", "action": "unchanged", "fields": []},
        ])
    );
    let report = json(&server, &["job", "get", "nightly-report"]).await;
    assert_eq!(
        (&report["cron"], &report["retries"], &report["timeout"]),
        (&json!("0 3 * * *"), &json!(3), &json!("10m"))
    );
    assert_eq!(report["version"], 2);
    assert!(
        owners(&server)
            .await
            .contains(&("heartbeat".into(), json!("apply")))
    );

    // The same jobs as JSON, written differently: nothing to do.
    let as_json = write(dir.path(), "jobs.json", SECOND_AS_JSON);
    let said = succeeds(&server, &["apply", "-f", &as_json]).await;
    assert_eq!(
        said,
        "unchanged  nightly-report\nunchanged  sync\n0 created, 0 updated, 2 unchanged, 0 deleted\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_the_jobs_an_apply_created() {
    let (server, _store) = start_admin().await;
    let dir = tempfile::tempdir().unwrap();
    succeeds(
        &server,
        &[
            "job",
            "create",
            "by-hand",
            "--handler",
            "noop",
            "--every",
            "1m",
        ],
    )
    .await;
    let theirs = write(
        dir.path(),
        "theirs.yaml",
        "jobs:\n  - {name: theirs, handler: noop, every: 1m}\n",
    );
    succeeds(&server, &["apply", "-f", &theirs, "--manager", "team-b"]).await;
    let both = write(
        dir.path(),
        "both.yaml",
        "jobs:\n  - {name: a, handler: noop, every: 1m}\n  - {name: b, handler: noop, every: 1m}\n",
    );
    succeeds(&server, &["apply", "-f", &both]).await;

    let only_a = write(
        dir.path(),
        "a.yaml",
        "jobs:\n  - {name: a, handler: noop, every: 1m}\n",
    );
    let said = succeeds(&server, &["apply", "-f", &only_a]).await;
    assert_eq!(
        said, "unchanged  a\n0 created, 0 updated, 1 unchanged, 0 deleted\n",
        "without --prune nothing is deleted"
    );
    assert_eq!(owners(&server).await.len(), 4);

    let said = succeeds(&server, &["apply", "-f", &only_a, "--prune"]).await;
    assert_eq!(
        said,
        "unchanged  a\ndeleted    b\n0 created, 0 updated, 1 unchanged, 1 deleted\n"
    );
    assert_eq!(
        owners(&server).await,
        [
            ("a".into(), json!("apply")),
            ("by-hand".into(), Value::Null),
            ("theirs".into(), json!("team-b")),
        ]
    );

    // An empty file prunes every job of its manager, and nothing else.
    let empty = write(dir.path(), "empty.yaml", "jobs: []\n");
    let said = succeeds(&server, &["apply", "-f", &empty, "--prune"]).await;
    assert_eq!(
        said,
        "deleted  a\n0 created, 0 updated, 0 unchanged, 1 deleted\n"
    );
    assert_eq!(
        owners(&server).await,
        [
            ("by-hand".into(), Value::Null),
            ("theirs".into(), json!("team-b")),
        ]
    );

    // Listing a job defined by hand adopts it (a visible change); from then on it is the
    // apply's, and pruned like its other jobs.
    let adopt = write(
        dir.path(),
        "adopt.yaml",
        "jobs:\n  - {name: by-hand, handler: noop, every: 1m}\n",
    );
    let changes = json(&server, &["apply", "-f", &adopt]).await;
    assert_eq!(
        changes,
        json!([{"name": "by-hand", "action": "updated", "fields": [
            {"field": "managed_by", "from": null, "to": "apply"}
        ]}])
    );
    let said = succeeds(&server, &["apply", "-f", &empty, "--prune"]).await;
    assert_eq!(
        said,
        "deleted  by-hand\n0 created, 0 updated, 0 unchanged, 1 deleted\n"
    );
    assert_eq!(owners(&server).await, [("theirs".into(), json!("team-b"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_the_plan_and_writes_nothing() {
    let (server, store) = start_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "jobs.yaml", FIRST);

    let said = succeeds(&server, &["apply", "-f", &first, "--dry-run"]).await;
    assert_eq!(
        said,
        "would create  heartbeat\nwould create  nightly-report\nwould create  sync\n\
         dry run, nothing changed: 3 to create, 0 to update, 0 unchanged, 0 to delete\n"
    );
    assert_eq!(owners(&server).await, []);

    succeeds(&server, &["apply", "-f", &first]).await;
    let before = snapshot(&store).await;
    let second = write(dir.path(), "jobs.yaml", SECOND);
    let said = succeeds(&server, &["apply", "-f", &second, "--prune", "--dry-run"]).await;
    assert_eq!(
        said,
        "\
would update  nightly-report
                cron: 30 2 * * * -> 0 3 * * *
                timeout: (unset) -> 10m
                retries: 0 -> 3
unchanged     sync
would delete  heartbeat
dry run, nothing changed: 0 to create, 1 to update, 1 unchanged, 1 to delete
"
    );
    assert_eq!(snapshot(&store).await, before);

    // The plan is what the apply then does.
    let plan = json(&server, &["apply", "-f", &second, "--prune", "--dry-run"]).await;
    assert_eq!(snapshot(&store).await, before);
    let done = json(&server, &["apply", "-f", &second, "--prune"]).await;
    assert_eq!(plan, done);
    assert_ne!(snapshot(&store).await, before);
}

/// A bad file: its name, its contents, extra arguments, the exit status, and what stderr
/// must say.
type BadFile<'a> = (&'a str, String, Vec<&'a str>, i32, Vec<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_fail_clearly_and_change_nothing() {
    let (server, store) = start_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let good = "jobs:\n  - {name: taken, handler: noop, every: 1m}\n";
    succeeds(
        &server,
        &["apply", "-f", &write(dir.path(), "good.yaml", good)],
    )
    .await;
    let theirs = "jobs:\n  - {name: theirs, handler: noop, every: 1m}\n";
    succeeds(
        &server,
        &[
            "apply",
            "-f",
            &write(dir.path(), "theirs.yaml", theirs),
            "--manager",
            "team-b",
        ],
    )
    .await;
    let before = snapshot(&store).await;

    // Every bad file also changes a job and adds one, so a partial write would show.
    let with = |bad: &str| {
        format!(
            "jobs:\n  - {{name: taken, handler: noop, every: 1m, retries: 2}}\n  - {{name: fresh, handler: noop, every: 1m}}\n  - {bad}\n"
        )
    };
    let past = (Utc::now() - TimeDelta::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let huge = format!(
        "{{name: big, handler: noop, every: 1m, args: {{blob: \"{}\"}}}}",
        "x".repeat(1024 * 1024)
    );
    const USAGE: i32 = 2;
    const FAILED: i32 = 1;
    let cases: Vec<BadFile> = vec![
        (
            "unknown.yaml",
            "jobs:\n  - name: taken\n    handler: noop\n    every: 1m\n  - name: fresh\n    handler: noop\n    evry: 5m\n".into(),
            vec![],
            FAILED,
            vec![
                "unknown.yaml: jobs[1] (fresh): unknown field `evry`, expected one of `name`, `handler`, `every`",
                "`paused`",
                "line 7",
            ],
        ),
        (
            "cron.yaml",
            with("{name: b, handler: noop, cron: '61 * * * *'}"),
            vec![],
            FAILED,
            vec!["cron.yaml: jobs[2] (b): cron: invalid cron expression \"61 * * * *\""],
        ),
        (
            "duplicate.yaml",
            with("{name: fresh, handler: noop, every: 5m}"),
            vec![],
            FAILED,
            vec!["duplicate.yaml: jobs[2]: the name \"fresh\" is also the name of jobs[1]; each job may appear only once"],
        ),
        (
            "tz.yaml",
            with("{name: b, handler: noop, every: 1m, tz: Mars/Olympus}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): tz: unknown time zone \"Mars/Olympus\"", "IANA"],
        ),
        (
            "zero.yaml",
            with("{name: b, handler: noop, every: 0s}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): every: invalid interval \"0s\""],
        ),
        (
            "negative.yaml",
            with("{name: b, handler: noop, every: 1m, retries: -1}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): retries: invalid type: integer `-1`, expected a whole number of 0 or more"],
        ),
        (
            "retries.yaml",
            with("{name: b, handler: noop, every: 1m, retries: 101}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): invalid retries \"101\": expected a whole number from 0 to 100"],
        ),
        (
            "max-runs.yaml",
            with("{name: b, handler: noop, every: 1m, max_runs: 0}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): invalid max_runs \"0\""],
        ),
        (
            "overlap.yaml",
            with("{name: b, handler: noop, every: 1m, overlap: sometimes}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): overlap: unknown overlap policy \"sometimes\"", "skip, queue, replace"],
        ),
        (
            "timeout.yaml",
            with("{name: b, handler: noop, every: 1m, timeout: 5x}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): timeout: invalid duration \"5x\""],
        ),
        (
            "labels.yaml",
            with("{name: b, handler: noop, every: 1m, labels: {'bad key': v}}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): invalid labels \"bad key\""],
        ),
        (
            "paused.yaml",
            with("{name: b, handler: noop, every: 1m, paused: sometimes}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): paused: invalid type: string \"sometimes\", expected a boolean"],
        ),
        (
            "name.yaml",
            with("{name: Bad_Name, handler: noop, every: 1m}"),
            vec![],
            FAILED,
            vec!["jobs[2] (Bad_Name): invalid name \"Bad_Name\"", "lowercase letters"],
        ),
        (
            "unscheduled.yaml",
            with("{name: b, handler: noop}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): schedule: missing; expected exactly one of every, cron or at"],
        ),
        (
            "two-schedules.yaml",
            with("{name: b, handler: noop, every: 1m, cron: '@daily'}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): schedule: every and cron are both given; expected exactly one of every, cron or at"],
        ),
        (
            "start.yaml",
            with("{name: b, handler: noop, cron: '@daily', start: '2030-01-01T00:00:00Z'}"),
            vec![],
            FAILED,
            vec!["jobs[2] (b): start:", "only valid with an every schedule"],
        ),
        (
            "past.yaml",
            with(&format!("{{name: b, handler: noop, at: '{past}'}}")),
            vec![],
            FAILED,
            vec!["past.yaml: jobs[2] (b): invalid at", "a time in the future"],
        ),
        (
            "args.yaml",
            with(&huge),
            vec![],
            FAILED,
            vec!["jobs[2] (big): invalid args", "at most 1 MiB"],
        ),
        (
            "owned.yaml",
            with("{name: theirs, handler: noop, every: 1m}"),
            vec![],
            FAILED,
            vec!["owned.yaml: jobs[2] (theirs): the job belongs to manager \"team-b\", not \"apply\""],
        ),
        (
            "manager.yaml",
            with("{name: b, handler: noop, every: 1m}"),
            vec!["--manager", "Team B"],
            FAILED,
            vec!["invalid manager \"Team B\"", "lowercase letters"],
        ),
        (
            "syntax.yaml",
            "jobs:\n  - name: [unclosed\n".into(),
            vec![],
            FAILED,
            vec!["syntax.yaml: ", "line "],
        ),
        (
            "shape.yaml",
            "job:\n  - {name: b, handler: noop, every: 1m}\n".into(),
            vec![],
            FAILED,
            vec!["shape.yaml: unknown field `job`, expected `jobs`", "a job file is `jobs:` and a list of jobs"],
        ),
        (
            "syntax.json",
            r#"{"jobs": [{"name": "b", "handler": "noop", "every": "1m",}]}"#.into(),
            vec![],
            FAILED,
            vec!["syntax.json: ", "line 1 column"],
        ),
        (
            "output.yaml",
            with("{name: b, handler: noop, every: 1m}"),
            vec!["-o", "yaml"],
            FAILED,
            vec!["-o yaml prints jobs as a job file"],
        ),
    ];
    for (name, contents, extra, status, expected) in &cases {
        let file = write(dir.path(), name, contents);
        let mut args = vec!["apply", "-f", file.as_str()];
        args.extend(extra);
        refused(&server, &store, &args, *status, expected, &before).await;
        args.push("--dry-run");
        refused(&server, &store, &args, *status, expected, &before).await;
    }
    let missing = ["cannot read the job file /nonexistent/jobs.yaml"];
    refused(
        &server,
        &store,
        &["apply", "-f", "/nonexistent/jobs.yaml"],
        FAILED,
        &missing,
        &before,
    )
    .await;
    refused(
        &server,
        &store,
        &["apply"],
        USAGE,
        &["--file <FILE>"],
        &before,
    )
    .await;
    let unknown = ["unexpected argument '--force'"];
    refused(
        &server,
        &store,
        &["apply", "-f", "x.yaml", "--force"],
        USAGE,
        &unknown,
        &before,
    )
    .await;
}

/// Every kind of schedule and every policy field, each away from its default.
fn everything() -> String {
    let soon = (Utc::now() + TimeDelta::days(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    format!(
        r#"
jobs:
  - name: calendar
    handler: billing.send
    every: 1mo
    tz: Europe/Berlin
    start: "2026-01-31 09:00"
    args:
      invoice: {{batch: 50, dry: false, ratio: 0.5, tags: [a, b], none: null, code: "007"}}
      script: |
        echo one
        echo "two: $CRONFLEET_SLOT"
    priority: -5
    max_runs: 12
    timeout: 1h30m
    retries: 3
    overlap: queue
    catch_up: all
    catch_up_window: 2d
    labels: {{region: eu, tier: gpu}}
  - name: ticker
    handler: noop
    every: 90s
  - name: weekdays
    handler: shell
    cron: "0 30 9 * * MON-FRI"
    tz: America/New_York
    overlap: replace
    catch_up: none
    paused: true
  - name: once
    handler: shell
    at: "{soon}"
    tz: Asia/Tokyo
    args: null
  - name: daily
    handler: noop
    cron: "@daily"
    priority: 7
"#
    )
}

/// What a job is, apart from its identity and history.
fn definition(job: &Value) -> Value {
    let fields = [
        "name",
        "handler",
        "args",
        "every",
        "cron",
        "at",
        "start",
        "tz",
        "priority",
        "max_runs",
        "timeout",
        "retries",
        "overlap",
        "catch_up",
        "catch_up_window",
        "labels",
        "paused",
        "schedule",
    ];
    fields
        .iter()
        .map(|field| ((*field).to_owned(), job[field].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_get_as_yaml_applies_back_unchanged() {
    let (server, store) = start_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "everything.yaml", &everything());
    succeeds(&server, &["apply", "-f", &file]).await;
    let before = snapshot(&store).await;

    let calendar = succeeds(&server, &["job", "get", "calendar", "-o", "yaml"]).await;
    for line in [
        "jobs:\n- name: calendar\n  handler: billing.send\n  every: 1mo\n  tz: Europe/Berlin\n",
        "  start: 2026-01-31T09:00:00+01:00\n",
        "  priority: -5\n  max_runs: 12\n  timeout: 1h30m\n  retries: 3\n  overlap: queue\n  catch_up: all\n  catch_up_window: 2d\n",
        "  labels:\n    region: eu\n    tier: gpu\n",
    ] {
        assert!(calendar.contains(line), "{line:?} in\n{calendar}");
    }
    assert!(!calendar.contains("paused"), "{calendar}");

    for name in ["calendar", "ticker", "weekdays", "once", "daily"] {
        let yaml = succeeds(&server, &["job", "get", name, "-o", "yaml"]).await;
        let file = write(dir.path(), &format!("{name}.yaml"), &yaml);
        let said = succeeds(&server, &["apply", "-f", &file]).await;
        assert_eq!(
            said,
            format!("unchanged  {name}\n0 created, 0 updated, 1 unchanged, 0 deleted\n"),
            "{yaml}"
        );
    }
    let all = succeeds(&server, &["job", "list", "-o", "yaml"]).await;
    let all_file = write(dir.path(), "all.yaml", &all);
    let changes = json(&server, &["apply", "-f", &all_file, "--prune"]).await;
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|change| change["action"] == "unchanged"),
        "{changes:#}"
    );
    assert_eq!(changes.as_array().unwrap().len(), 5);
    assert_eq!(snapshot(&store).await, before, "nothing was written");

    // Applied elsewhere, the file makes the same jobs.
    let (elsewhere, _) = start_admin().await;
    succeeds(&elsewhere, &["apply", "-f", &all_file]).await;
    let here = json(&server, &["job", "list"]).await;
    let there = json(&elsewhere, &["job", "list"]).await;
    let definitions =
        |jobs: &Value| -> Vec<Value> { jobs.as_array().unwrap().iter().map(definition).collect() };
    assert_eq!(definitions(&there), definitions(&here));
    let once = here
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "once")
        .unwrap();
    assert_eq!(once["args"], Value::Null, "args: null is kept as null");
    let calendar = json(&elsewhere, &["job", "get", "calendar"]).await;
    assert_eq!(
        calendar["args"]["invoice"]["code"], "007",
        "a string stays a string"
    );

    // An operator's pause (and its note) survives an apply that does not mention it.
    succeeds(
        &server,
        &["job", "pause", "ticker", "--note", "incident 42"],
    )
    .await;
    let said = succeeds(&server, &["apply", "-f", &file]).await;
    assert!(said.contains("unchanged  ticker\n"), "{said}");
    let ticker = json(&server, &["job", "get", "ticker"]).await;
    assert_eq!(
        (&ticker["paused"], &ticker["pause_note"]),
        (&json!(true), &json!("incident 42"))
    );

    // A job defined by hand, with every flag: its file adopts it, and then it is stable.
    succeeds(
        &server,
        &[
            "job",
            "create",
            "by-hand",
            "--handler",
            "shell",
            "--every",
            "2h",
            "--start",
            "2026-03-29 01:30",
            "--tz",
            "Europe/Berlin",
            "--args",
            r#"{"script": "echo hi"}"#,
            "--priority",
            "2",
            "--max-runs",
            "5",
            "--timeout",
            "45s",
            "--retries",
            "1",
            "--overlap",
            "replace",
            "--catch-up",
            "none",
            "--catch-up-window",
            "30m",
            "--labels",
            "zone=a",
            "--paused",
        ],
    )
    .await;
    let yaml = succeeds(&server, &["job", "get", "by-hand", "-o", "yaml"]).await;
    let by_hand = write(dir.path(), "by-hand.yaml", &yaml);
    let changes = json(&server, &["apply", "-f", &by_hand]).await;
    assert_eq!(
        changes,
        json!([{"name": "by-hand", "action": "updated", "fields": [
            {"field": "managed_by", "from": null, "to": "apply"}
        ]}])
    );
    let said = succeeds(&server, &["apply", "-f", &by_hand]).await;
    assert_eq!(
        said,
        "unchanged  by-hand\n0 created, 0 updated, 1 unchanged, 0 deleted\n"
    );
}
