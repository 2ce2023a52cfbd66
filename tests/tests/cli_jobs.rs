//! The client commands end to end: the real `cronfleet` binary against the admin API
//! served in-process on a loopback port over a real PostgreSQL. Checks the JSON a script
//! would read, the tables a person would, and that bad input of every kind fails with a
//! clear message on stderr, nothing on stdout, a non-zero status and no change.

mod admin_api;

use admin_api::{json, refused, snapshot, start_admin, succeeds};
use chrono::{TimeDelta, Utc};
use cronfleet_e2e::cronfleet_binary;
use cronfleet_store::{JobStore, LeaderStore, RunFilter, RunTransition};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_runs_are_managed_through_the_cli() {
    let (server, store) = start_admin().await;

    let created = json(
        &server,
        &[
            "job",
            "create",
            "report",
            "--handler",
            "shell",
            "--every",
            "5m",
            "--tz",
            "Europe/Berlin",
            "--args",
            r#"{"script": "echo hi"}"#,
            "--priority",
            "-3",
            "--max-runs",
            "10",
            "--timeout",
            "30s",
            "--retries",
            "2",
            "--overlap",
            "queue",
            "--catch-up",
            "all",
            "--catch-up-window",
            "1h",
            "--labels",
            "region=eu,tier=gpu",
            "--alert-if-no-success",
            "26h",
            "--expected-duration",
            "90s",
        ],
    )
    .await;
    let expected = json!({
        "name": "report",
        "handler": "shell",
        "args": {"script": "echo hi"},
        "every": "5m",
        "cron": null,
        "at": null,
        "tz": "Europe/Berlin",
        "last_run_at": null,
        "priority": -3,
        "max_runs": 10,
        "remaining_runs": 10,
        "timeout": "30s",
        "retries": 2,
        "overlap": "queue",
        "catch_up": "all",
        "catch_up_window": "1h",
        "labels": {"region": "eu", "tier": "gpu"},
        "paused": false,
        "pause_note": null,
        "alerts_enabled": true,
        "alert_if_no_success": "1d2h",
        "expected_duration": "1m30s",
        "active": true,
        "failure_count": 0,
        "first_failure_at": null,
        "missed_count": 0,
        "overlap_skipped_count": 0,
        "managed_by": null,
        "version": 1,
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&created[field], value, "{field} in {created:#}");
    }
    let schedule = created["schedule"].as_str().unwrap();
    assert!(schedule.starts_with("every 5m starting "), "{schedule}");
    assert!(schedule.ends_with(" (Europe/Berlin)"), "{schedule}");
    for field in ["next_run_at", "created_at", "updated_at", "start"] {
        assert!(created[field].is_string(), "{field} in {created:#}");
    }
    // RFC 3339 in UTC.
    assert!(
        created["next_run_at"].as_str().unwrap().ends_with('Z'),
        "{created:#}"
    );

    let shown = succeeds(
        &server,
        &[
            "job",
            "create",
            "backup",
            "--handler",
            "noop",
            "--cron",
            "0 3 * * *",
            "--paused",
        ],
    )
    .await;
    assert!(
        shown.contains("name:") && shown.contains("backup"),
        "{shown}"
    );
    assert!(shown.contains("cron 0 3 * * * (UTC)"), "{shown}");
    assert!(shown.contains("paused"), "{shown}");

    let listed = json(&server, &["job", "list"]).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backup", "report"]);
    let table = succeeds(&server, &["job", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("backup ") && lines[1].contains("paused"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("report ") && lines[2].contains("every 5m (Europe/Berlin)"),
        "{table}"
    );

    assert_eq!(json(&server, &["job", "get", "report"]).await, created);

    // Only what is given changes; the schedule keeps its start and next run.
    let updated = json(&server, &["job", "update", "report", "--priority", "5"]).await;
    assert_eq!(updated["priority"], 5);
    assert_eq!(updated["version"], 2);
    for field in [
        "every",
        "start",
        "tz",
        "next_run_at",
        "labels",
        "args",
        "timeout",
        "alerts_enabled",
        "alert_if_no_success",
        "expected_duration",
    ] {
        assert_eq!(updated[field], created[field], "{field}");
    }
    let silenced = json(&server, &["job", "update", "report", "--alerts", "off"]).await;
    assert_eq!(silenced["alerts_enabled"], false);
    assert_eq!(silenced["alert_if_no_success"], "1d2h", "kept");
    let details = succeeds(&server, &["job", "get", "report"]).await;
    assert!(
        details.contains("alerts:") && details.contains(" off\n"),
        "{details}"
    );
    assert!(
        details.contains("1d2h") && details.contains("1m30s"),
        "{details}"
    );
    let again = json(&server, &["job", "update", "report", "--alerts", "on"]).await;
    assert_eq!(again["alerts_enabled"], true);

    let paused = json(
        &server,
        &["job", "pause", "report", "--note", "db migration"],
    )
    .await;
    assert_eq!(
        (&paused["paused"], &paused["pause_note"]),
        (&json!(true), &json!("db migration"))
    );
    let resumed = json(&server, &["job", "resume", "report"]).await;
    assert_eq!(resumed["paused"], false);

    let manual = json(&server, &["job", "run", "report"]).await;
    for (field, value) in [
        ("job", json!("report")),
        ("state", json!("pending")),
        ("trigger", json!("manual")),
        ("attempt", json!(1)),
        ("worker", Value::Null),
        ("started_at", Value::Null),
        ("finished_at", Value::Null),
        ("error", Value::Null),
        ("queued", json!(false)),
    ] {
        assert_eq!(manual[field], value, "{field} in {manual:#}");
    }
    assert!(manual["slot"].is_string(), "{manual:#}");
    let first = manual["id"].as_i64().unwrap();

    // A worker takes it: the job is busy, and the next manual run waits.
    store.raise_epoch(1).await.unwrap();
    let now = Utc::now();
    store
        .transition_run(
            first,
            &RunTransition::dispatch("worker-1", 1, now + TimeDelta::hours(1)),
            now,
        )
        .await
        .unwrap();
    let said = succeeds(&server, &["job", "run", "report"]).await;
    let newest = store
        .list_runs(&RunFilter {
            job: Some("report".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let second = newest[0].id;
    assert_ne!(second, first);
    assert_eq!(
        said,
        format!(
            "created run {second} of job report\n\
             job report is busy: run {second} is queued and starts when the current run ends\n"
        )
    );

    let ids = |runs: Value| -> Vec<i64> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|run| run["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(json(&server, &["runs", "--job", "report"]).await),
        [second, first]
    );
    assert_eq!(
        ids(json(&server, &["runs", "--state", "dispatched"]).await),
        [first]
    );
    assert_eq!(
        ids(json(&server, &["runs", "--limit", "1"]).await),
        [second]
    );
    assert_eq!(
        ids(json(&server, &["runs", "--job", "backup"]).await),
        Vec::<i64>::new()
    );
    let since = (now + TimeDelta::hours(1)).to_rfc3339();
    assert_eq!(
        ids(json(&server, &["runs", "--since", &since]).await),
        Vec::<i64>::new()
    );
    let table = succeeds(&server, &["runs"]).await;
    assert!(table.starts_with("ID  "), "{table}");
    assert!(
        table.contains("dispatched") && table.contains("worker-1"),
        "{table}"
    );

    let run = json(&server, &["run", "get", &first.to_string()]).await;
    assert_eq!(
        (&run["state"], &run["worker"]),
        (&json!("dispatched"), &json!("worker-1"))
    );
    assert!(
        run["deadline"].is_string() && run["started_at"].is_null(),
        "{run:#}"
    );
    let details = succeeds(&server, &["run", "get", &second.to_string()]).await;
    assert!(
        details.contains("state:") && details.contains("pending"),
        "{details}"
    );

    let workers = json(&server, &["workers"]).await;
    assert_eq!(workers[0]["node_id"], "worker-1");
    assert_eq!(workers[0]["handlers"], json!(["shell", "noop"]));
    assert_eq!(
        (&workers[0]["busy"], &workers[0]["capacity"]),
        (&json!(1), &json!(4))
    );
    let table = succeeds(&server, &["workers"]).await;
    assert!(
        table.contains("worker-1") && table.contains("1/4"),
        "{table}"
    );

    // --server wins over the environment, before or after the subcommand.
    let output = tokio::process::Command::new(cronfleet_binary())
        .args(["job", "--server", &server, "delete", "backup"])
        .env("CRONFLEET_SERVER", "http://127.0.0.1:1")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "deleted job backup\n"
    );
    let names: Vec<Value> = json(&server, &["job", "list"])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].clone())
        .collect();
    assert_eq!(names, [json!("report")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_changes_nothing() {
    let (server, store) = start_admin().await;
    succeeds(
        &server,
        &[
            "job",
            "create",
            "taken",
            "--handler",
            "shell",
            "--every",
            "5m",
        ],
    )
    .await;
    let before = snapshot(&store).await;
    let closed_port = cronfleet_testkit::free_port().unwrap();
    let unreachable = format!("http://127.0.0.1:{closed_port}");

    const USAGE: i32 = 2;
    const FAILED: i32 = 1;
    let create = |extra: &[&'static str]| -> Vec<String> {
        ["job", "create", "fresh", "--handler", "shell"]
            .iter()
            .chain(extra)
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    let args = |all: &[&str]| -> Vec<String> { all.iter().map(|arg| (*arg).to_owned()).collect() };
    let cases: Vec<(Vec<String>, i32, Vec<&str>)> = vec![
        // Refused by the server.
        (
            args(&[
                "job",
                "create",
                "taken",
                "--handler",
                "shell",
                "--every",
                "5m",
            ]),
            FAILED,
            vec!["a job named \"taken\" already exists"],
        ),
        (
            args(&["job", "get", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "update", "nope", "--priority", "1"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "pause", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "resume", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "delete", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "run", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        (
            args(&["job", "run", "taken", "--at", "2000-01-01T00:00:00Z"]),
            FAILED,
            vec!["at: 2000-01-01T00:00:00+00:00 is in the past"],
        ),
        (
            args(&["job", "run", "taken", "--at", "tomorrow"]),
            FAILED,
            vec!["at: invalid time \"tomorrow\""],
        ),
        (
            args(&["run", "get", "999999"]),
            FAILED,
            vec!["run 999999 not found"],
        ),
        (
            args(&["runs", "--job", "nope"]),
            FAILED,
            vec!["job \"nope\" not found"],
        ),
        // Checked before sending, in the server's words.
        (
            create(&["--cron", "61 * * * *"]),
            FAILED,
            vec!["cron: invalid cron expression \"61 * * * *\""],
        ),
        (
            create(&["--every", "5m", "--tz", "Mars/Olympus"]),
            FAILED,
            vec!["tz: unknown time zone \"Mars/Olympus\"", "IANA"],
        ),
        (
            create(&["--every", "0s"]),
            FAILED,
            vec!["every: invalid interval \"0s\"", "greater than zero"],
        ),
        (
            create(&["--every", "-5m"]),
            FAILED,
            vec!["every: invalid interval \"-5m\"", "negative"],
        ),
        (
            create(&["--every", "5x"]),
            FAILED,
            vec!["unknown unit \"x\"", "valid units are s, m, h, d, w, mo"],
        ),
        (
            create(&["--every", "5m", "--start", "soon"]),
            FAILED,
            vec!["start: invalid time \"soon\""],
        ),
        (
            create(&["--cron", "@daily", "--start", "2030-01-01T00:00:00Z"]),
            FAILED,
            vec!["start:", "only valid with an every schedule"],
        ),
        (
            create(&["--at", "2000-01-01T00:00:00Z"]),
            FAILED,
            vec!["invalid at", "a time in the future"],
        ),
        (
            create(&["--every", "5m", "--max-runs", "0"]),
            USAGE,
            vec!["invalid value '0' for '--max-runs <N>'", "at least 1"],
        ),
        (
            create(&["--every", "5m", "--args", "{nope"]),
            FAILED,
            vec!["args: invalid JSON \"{nope\""],
        ),
        (
            create(&["--every", "5m", "--overlap", "sometimes"]),
            FAILED,
            vec![
                "overlap: unknown overlap policy \"sometimes\"",
                "skip, queue, replace",
            ],
        ),
        (
            create(&["--every", "5m", "--catch-up", "most"]),
            FAILED,
            vec![
                "catch_up: unknown catch-up policy \"most\"",
                "one, all, none",
            ],
        ),
        (
            create(&["--every", "5m", "--timeout", "0s"]),
            FAILED,
            vec!["timeout: invalid duration \"0s\""],
        ),
        (
            create(&["--every", "5m", "--catch-up-window", "1x"]),
            FAILED,
            vec!["catch_up_window: invalid duration \"1x\""],
        ),
        (
            create(&["--every", "5m", "--expected-duration", "500ms"]),
            FAILED,
            vec![
                "invalid expected_duration \"500ms\"",
                "a duration of at least 1s",
            ],
        ),
        (
            create(&["--every", "5m", "--alerts", "maybe"]),
            USAGE,
            vec!["invalid value 'maybe' for '--alerts <on|off>'", "on or off"],
        ),
        (
            create(&["--every", "5m", "--labels", "bad key=v"]),
            FAILED,
            vec!["invalid labels \"bad key\""],
        ),
        (
            create(&["--every", "5m", "--retries", "101"]),
            USAGE,
            vec!["invalid value '101' for '--retries <N>'", "0 to 100"],
        ),
        (
            args(&[
                "job",
                "create",
                "Bad_Name",
                "--handler",
                "shell",
                "--every",
                "5m",
            ]),
            FAILED,
            vec!["invalid name \"Bad_Name\"", "lowercase letters"],
        ),
        (
            args(&["job", "update", "taken"]),
            FAILED,
            vec!["nothing to change in job \"taken\""],
        ),
        (
            args(&["job", "update", "taken", "--every", "0s"]),
            FAILED,
            vec!["every: invalid interval \"0s\""],
        ),
        (
            args(&["runs", "--state", "done"]),
            FAILED,
            vec!["state: unknown run state \"done\"; valid values are pending"],
        ),
        (
            args(&["runs", "--since", "yesterday"]),
            FAILED,
            vec!["since: invalid time \"yesterday\""],
        ),
        (
            args(&["job", "list", "--server", "not a url"]),
            FAILED,
            vec!["invalid --server URL \"not a url\""],
        ),
        (
            args(&["job", "list", "--server", &unreachable]),
            FAILED,
            vec!["cannot reach the coordinator at", &unreachable, "refused"],
        ),
        // Refused by the command line parser.
        (
            create(&["--every", "5m", "--labels", "region"]),
            USAGE,
            vec!["--labels", "label \"region\" has no '='"],
        ),
        (
            create(&[]),
            USAGE,
            vec![
                "the following required arguments were not provided",
                "--every",
            ],
        ),
        (
            create(&["--every", "5m", "--cron", "@daily"]),
            USAGE,
            vec!["'--every <DUR>' cannot be used with '--cron <EXPR>'"],
        ),
        (
            create(&["--every", "5m", "--colour", "red"]),
            USAGE,
            vec!["unexpected argument '--colour'"],
        ),
        (
            args(&["job", "list", "--bogus"]),
            USAGE,
            vec!["unexpected argument '--bogus'"],
        ),
        (args(&["job", "get"]), USAGE, vec!["<NAME>"]),
        (
            args(&[
                "job", "update", "taken", "--every", "5m", "--cron", "@daily",
            ]),
            USAGE,
            vec!["cannot be used with"],
        ),
        (
            args(&["job", "list", "-o", "xml"]),
            USAGE,
            vec!["invalid value 'xml'", "table, json, yaml"],
        ),
        (
            args(&["runs", "-o", "yaml"]),
            FAILED,
            vec![
                "-o yaml prints jobs as a job file, only for `cronfleet job get` and `cronfleet job list`",
            ],
        ),
        (
            args(&["job", "pause", "taken", "-o", "yaml"]),
            FAILED,
            vec!["use -o table or -o json here"],
        ),
        (
            args(&["runs", "--limit", "0"]),
            USAGE,
            vec!["--limit", "0 is not in 1..=10000"],
        ),
        (
            args(&["run", "get", "abc"]),
            USAGE,
            vec!["invalid value 'abc'"],
        ),
        (
            args(&["job", "explode", "taken"]),
            USAGE,
            vec!["unrecognized subcommand 'explode'"],
        ),
    ];
    for (args, status, expected) in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&server, &store, &argv, *status, expected, &before).await;
    }
}
