//! Alerts end to end, with real processes: `cronfleet coordinator` and `cronfleet worker`
//! on PostgreSQL, a webhook receiver started by the test (it records every request and
//! can refuse or hold them), and an SMTP server from PyPI (aiosmtpd, `tests/smtp/server.py`,
//! with authentication, and STARTTLS with a CA of its own). A failing job alerts once on
//! every channel its labels route it to and resolves on its next success; a stalled run,
//! runs no worker offers and a lost worker alert and resolve; a dead-man's-switch job
//! alerts when its slot was missed while the coordinator was down; a leader killed while
//! it waits for a webhook's answer leaves the delivery to the next leader once its claim
//! runs out — delivered once, raised once; and mail goes over STARTTLS only to a server
//! whose certificate verifies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cronfleet_e2e::cluster::{Cluster, FAST_FAILURE_DETECTION, create, wait_for};
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hook {
    /// `all`, `billing`, `slack`…: which channel it came through.
    path: String,
    idempotency_key: String,
    body: Value,
    /// What the receiver answered.
    status: u16,
}

/// A webhook receiver on loopback: every request recorded; the next `refuse` are answered
/// 503, and then the next `hold` are never answered (status 0 in the record).
#[derive(Clone, Default)]
struct Receiver {
    hooks: Arc<Mutex<Vec<Hook>>>,
    refuse: Arc<AtomicUsize>,
    hold: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route("/{channel}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, base)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// The accepted requests through `path` for alerts of `kind` in `state`.
    fn accepted(&self, path: &str, kind: &str, state: &str) -> Vec<Hook> {
        self.hooks()
            .into_iter()
            .filter(|h| h.path == path && h.status == 200)
            .filter(|h| kind_and_state(&h.body) == Some((kind.to_owned(), state.to_owned())))
            .collect()
    }
}

/// A hook body's kind and state: the generic body's fields, or a Slack text's words.
fn kind_and_state(body: &Value) -> Option<(String, String)> {
    if let (Some(kind), Some(state)) = (body["kind"].as_str(), body["state"].as_str()) {
        return Some((kind.to_owned(), state.to_owned()));
    }
    let text = body["text"].as_str()?;
    let state = if text.contains("*FIRING*") {
        "firing"
    } else {
        "resolved"
    };
    let kind = text.split("* ").nth(1)?.split(' ').next()?;
    Some((kind.to_owned(), state.to_owned()))
}

async fn receive(
    State(receiver): State<Receiver>,
    UrlPath(channel): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let take = |counter: &AtomicUsize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let (status, held) = if take(&receiver.refuse) {
        (StatusCode::SERVICE_UNAVAILABLE, false)
    } else if take(&receiver.hold) {
        (StatusCode::OK, true)
    } else {
        (StatusCode::OK, false)
    };
    receiver.hooks.lock().unwrap().push(Hook {
        path: channel,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        status: if held { 0 } else { status.as_u16() },
    });
    if held {
        // Longer than the sender waits: it gives up, or dies waiting.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    status
}

/// aiosmtpd with authentication (`tests/smtp/server.py`), run by the Python that
/// `./scripts/test` installs it into (`CRONFLEET_TEST_SMTPD`).
struct SmtpServer {
    child: Child,
    port: u16,
    messages: PathBuf,
}

const SMTP_USER: &str = "alerts";
const SMTP_PASSWORD: &str = "s3cret-smtp";

impl SmtpServer {
    /// A server taking AUTH over plain TCP.
    fn start(dir: &Path) -> SmtpServer {
        Self::start_with(dir, &[])
    }

    /// A server that requires STARTTLS, with a certificate from a CA of its own; returns
    /// the CA's PEM file too.
    fn start_with_starttls(dir: &Path) -> (SmtpServer, PathBuf) {
        let certificates = dir.join("mail-tls");
        let server = Self::start_with(dir, &["--starttls", certificates.to_str().unwrap()]);
        (server, certificates.join("ca.pem"))
    }

    fn start_with(dir: &Path, extra: &[&str]) -> SmtpServer {
        let python = std::env::var("CRONFLEET_TEST_SMTPD").unwrap_or_else(|_| {
            panic!(
                "CRONFLEET_TEST_SMTPD is not set: it names a Python with aiosmtpd installed \
                 (./scripts/test installs one into .tools/smtp/venv and sets it)"
            )
        });
        let port = cronfleet_testkit::free_port().unwrap();
        let messages = dir.join("mail.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("{SMTP_USER}:{SMTP_PASSWORD}"))
            .arg(&messages)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP server did not start");
        SmtpServer {
            child,
            port,
            messages,
        }
    }

    fn url(&self) -> String {
        format!("smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.messages)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alerts(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut command = vec!["alerts"];
    command.extend_from_slice(args);
    cluster
        .cli_json(&command)
        .as_array()
        .expect("a JSON array")
        .clone()
}

fn of_job<'a>(alerts: &'a [Value], job: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["job"] == job).collect()
}

/// How many runs of `job` ended in `state`.
fn ended(cluster: &Cluster, job: &str, state: &str) -> usize {
    cluster
        .runs_of(job)
        .iter()
        .filter(|r| r["state"] == state)
        .count()
}

/// A shell script that fails while `flag` exists.
fn fails_while(flag: &Path) -> String {
    json!({ "script": format!("if [ -e {} ]; then echo 'payment gateway refused' >&2; exit 3; fi; echo ok", flag.display()) })
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_alerts_once_on_its_channels_and_resolves_on_its_next_success() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let (receiver, hooks) = Receiver::start().await;
    let mut cluster = Cluster::new(database.url());
    let smtp = SmtpServer::start(cluster.dir.path());
    let (all, billing, slack) = (
        format!("{hooks}/all"),
        format!("team=billing:{hooks}/billing"),
        format!("{hooks}/slack"),
    );
    let smtp_url = smtp.url();
    cluster.start_coordinator(
        "c1",
        &[
            "--alert-interval",
            "500ms",
            "--alert-webhook",
            &all,
            "--alert-webhook",
            &billing,
            "--alert-slack",
            &slack,
            "--alert-email",
            "team=billing:billing-oncall@example.com",
            "--alert-smtp",
            &smtp_url,
            "--alert-email-from",
            "cronfleet@example.com",
            "--console-url",
            "https://cron.example.com",
        ],
    );
    cluster.worker_args = vec!["--labels".into(), "team=billing".into()];
    cluster.start_worker("w1", "shell", 4);
    let flag = cluster.dir.path().join("gateway-down");
    std::fs::write(&flag, "").unwrap();
    let script = fails_while(&flag);
    create(
        &cluster,
        "invoices",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--labels",
            "team=billing",
            "--args",
            &script,
        ],
    );
    // Another failing job, without the label (only the unrouted channels), and one that
    // opted out of alerts.
    let always = json!({ "script": "exit 1" }).to_string();
    create(
        &cluster,
        "reports",
        &["--handler", "shell", "--every", "1s", "--args", &always],
    );
    create(
        &cluster,
        "quiet",
        &[
            "--handler",
            "shell",
            "--every",
            "1s",
            "--alerts",
            "off",
            "--args",
            &always,
        ],
    );

    let http = cluster.coordinators[0].http;
    let delivered_mail =
        "cronfleet_alert_deliveries_total{channel=\"email\",outcome=\"delivered\"} 1";
    wait_for(
        "the failed alert on every channel",
        Duration::from_secs(30),
        || {
            receiver.accepted("billing", "failed", "firing").len() == 1
                && receiver.accepted("slack", "failed", "firing").len() == 2
                && receiver.accepted("all", "failed", "firing").len() == 2
                && smtp.messages().len() == 1
                && cronfleet_testkit::http_get(http, "/metrics")
                    .is_some_and(|(_, metrics)| metrics.contains(delivered_mail))
        },
    );
    // More failed runs go by: still one alert, delivered once per channel.
    wait_for("more failed runs", Duration::from_secs(20), || {
        ended(&cluster, "invoices", "failed") >= 4
    });
    let firing = alerts(&cluster, &[]);
    assert_eq!(of_job(&firing, "invoices").len(), 1, "{firing:#?}");
    assert_eq!(of_job(&firing, "reports").len(), 1, "{firing:#?}");
    assert!(
        of_job(&firing, "quiet").is_empty(),
        "opted out: {firing:#?}"
    );
    let invoices = of_job(&firing, "invoices")[0].clone();
    assert_eq!(invoices["kind"], "failed");
    let message = invoices["message"].as_str().unwrap();
    assert!(
        message.contains("of job invoices ended failed") && message.ends_with(": exit status 3"),
        "{invoices}"
    );

    let to_all = receiver.accepted("all", "failed", "firing");
    assert_eq!(to_all.len(), 2, "one per failing job: {to_all:#?}");
    let to_billing = receiver.accepted("billing", "failed", "firing");
    assert_eq!(to_billing.len(), 1, "only the job labelled team=billing");
    let hook = &to_billing[0];
    assert_eq!(hook.body["job"], "invoices");
    assert_eq!(hook.body["alert_id"], invoices["id"]);
    assert_eq!(hook.body["url"], "https://cron.example.com/jobs/invoices");
    assert_eq!(hook.body["labels"]["team"], "billing");
    assert!(hook.body["run_id"].is_i64() && hook.body["fired_at"].is_string());
    assert_eq!(hook.idempotency_key, hook.body["id"].as_str().unwrap());
    let mail = &smtp.messages()[0];
    assert_eq!(
        mail["user"], SMTP_USER,
        "the mail server authenticated cronfleet"
    );
    assert_eq!(mail["to"], json!(["billing-oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [cronfleet] FIRING failed: invoices"),
        "{data}"
    );
    assert!(
        data.contains("https://cron.example.com/jobs/invoices"),
        "{data}"
    );

    // The same state everywhere: the REST API, /metrics and the console's banner.
    let (status, body) =
        cronfleet_testkit::http_get(http, "/api/v1/alerts?state=firing&kind=failed").unwrap();
    assert_eq!(status, 200);
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["alerts"].as_array().unwrap().len(), 2, "{rest}");
    let (_, metrics) = cronfleet_testkit::http_get(http, "/metrics").unwrap();
    assert!(
        metrics.contains("cronfleet_alerts_firing{kind=\"failed\"} 2"),
        "{metrics}"
    );
    let (_, page) = cronfleet_testkit::http_get(http, "/jobs").unwrap();
    assert!(page.contains("2 jobs are failing"), "{page}");
    let (_, page) = cronfleet_testkit::http_get(http, "/alerts").unwrap();
    assert!(page.contains("of job invoices ended failed"), "{page}");

    // Acknowledged: out of the banner, still firing.
    let reports_id = of_job(&firing, "reports")[0]["id"].to_string();
    let acked = alerts(&cluster, &["--ack", &reports_id, "--by", "alice"]);
    assert_eq!(acked[0]["acked_by"], "alice");
    let (_, page) = cronfleet_testkit::http_get(http, "/jobs").unwrap();
    assert!(page.contains("1 job is failing"), "{page}");

    // The gateway is back: the next success resolves the alert, on every channel.
    std::fs::remove_file(&flag).unwrap();
    wait_for("the resolved alert", Duration::from_secs(30), || {
        receiver.accepted("billing", "failed", "resolved").len() == 1
            && receiver.accepted("all", "failed", "resolved").len() == 1
            && smtp.messages().len() == 2
    });
    let everything = alerts(&cluster, &["--all", "--job", "invoices"]);
    assert_eq!(
        everything.len(),
        1,
        "resolved, not raised again: {everything:#?}"
    );
    assert_eq!(everything[0]["state"], "resolved");
    let deliveries = everything[0]["deliveries"].as_array().unwrap();
    assert_eq!(
        deliveries.len(),
        8,
        "firing and resolved on four channels: {deliveries:#?}"
    );
    assert!(
        deliveries.iter().all(|d| d["delivered_at"].is_string()),
        "{deliveries:#?}"
    );
    assert!(
        smtp.messages()[1]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: [cronfleet] RESOLVED failed: invoices")
    );
    let bad = cluster.cli(&["alerts", "--kind", "broken"]);
    assert!(!bad.success);
    assert!(
        bad.stderr.contains("unknown alert kind \"broken\"; valid values are failed, auto_paused, missed_deadline, stalled, no_worker, worker_lost"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_run_runs_nobody_offers_and_a_lost_worker_alert_and_resolve() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let (receiver, hooks) = Receiver::start().await;
    let mut cluster = Cluster::new(database.url());
    let all = format!("{hooks}/all");
    let mut flags = FAST_FAILURE_DETECTION.to_vec();
    flags.extend([
        "--alert-interval",
        "500ms",
        "--alert-webhook",
        &all,
        "--alert-no-worker-after",
        "2s",
        "--alert-worker-lost-after",
        "1s",
        "--alert-silent-after",
        "3s",
    ]);
    cluster.start_coordinator("c1", &flags);
    cluster.start_worker("w1", "shell", 4);
    cluster.start_worker("w2", "shell", 4);

    // Past its expected duration, then done.
    let slow = json!({ "script": "echo started; sleep 9; echo done" }).to_string();
    create(
        &cluster,
        "slow-export",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--start",
            "2030-01-01T00:00:00Z",
            "--expected-duration",
            "2s",
            "--args",
            &slow,
        ],
    );
    assert!(cluster.cli(&["job", "run", "slow-export"]).success);
    // Silent: no output for longer than --alert-silent-after.
    let silent = json!({ "script": "sleep 10" }).to_string();
    create(
        &cluster,
        "silent-sync",
        &[
            "--handler",
            "shell",
            "--every",
            "1h",
            "--start",
            "2030-01-01T00:00:00Z",
            "--args",
            &silent,
        ],
    );
    assert!(cluster.cli(&["job", "run", "silent-sync"]).success);
    // A handler no worker offers.
    create(
        &cluster,
        "gpu-render",
        &["--handler", "gpu", "--every", "1s"],
    );
    // A job that fails with a retry each slot: one alert for all of it, never resolved in
    // between (while a retry waits, the failure is not decided either way).
    let fails = json!({ "script": "exit 1" }).to_string();
    create(
        &cluster,
        "flaky-sync",
        &[
            "--handler",
            "shell",
            "--every",
            "4s",
            "--retries",
            "1",
            "--args",
            &fails,
        ],
    );

    wait_for(
        "stalled and no_worker alerts",
        Duration::from_secs(30),
        || {
            receiver.accepted("all", "stalled", "firing").len() == 2
                && receiver.accepted("all", "no_worker", "firing").len() == 1
        },
    );
    let stalled = receiver.accepted("all", "stalled", "firing");
    let messages: BTreeSet<&str> = stalled
        .iter()
        .map(|h| h.body["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("longer than its expected 2s")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("has given no output or progress for")),
        "{messages:?}"
    );
    assert!(
        stalled
            .iter()
            .all(|h| h.body["url"].as_str().unwrap().contains("/runs/")),
        "a stalled run's alert links to the run"
    );
    let no_worker = &receiver.accepted("all", "no_worker", "firing")[0];
    assert!(
        no_worker.body["message"]
            .as_str()
            .unwrap()
            .starts_with("no live worker offers handler \"gpu\""),
        "{:?}",
        no_worker.body
    );
    // The runs end: resolved. The job nobody can run is deleted: resolved.
    assert!(cluster.cli(&["job", "delete", "gpu-render"]).success);
    wait_for(
        "stalled and no_worker resolved",
        Duration::from_secs(30),
        || {
            receiver.accepted("all", "stalled", "resolved").len() == 2
                && receiver.accepted("all", "no_worker", "resolved").len() == 1
        },
    );

    // The alert fires once a slot's last attempt failed; later slots fail and retry (the
    // failure undecided each time) without resolving it or raising another.
    wait_for("the flaky job's alert", Duration::from_secs(30), || {
        !alerts(&cluster, &["--all", "--job", "flaky-sync"]).is_empty()
    });
    let failed_then = ended(&cluster, "flaky-sync", "failed");
    wait_for("two more slots failing", Duration::from_secs(30), || {
        ended(&cluster, "flaky-sync", "failed") >= failed_then + 4
    });
    let flaky = alerts(&cluster, &["--all", "--job", "flaky-sync"]);
    assert_eq!(
        flaky.len(),
        1,
        "one alert however many slots fail: {flaky:#?}"
    );
    assert_eq!(flaky[0]["state"], "firing");
    assert!(receiver.accepted("all", "failed", "resolved").is_empty());

    // kill -9 of a worker: lost; back under the same id: resolved. A worker stopped
    // gracefully (SIGTERM: it says it drains) is not lost.
    cluster.workers[1].process.kill();
    wait_for("worker_lost", Duration::from_secs(30), || {
        receiver.accepted("all", "worker_lost", "firing").len() == 1
    });
    let lost = &receiver.accepted("all", "worker_lost", "firing")[0];
    assert_eq!(lost.body["subject"], "worker:w2");
    assert!(lost.body["job"].is_null());
    cluster.workers.pop();
    cluster.start_worker("w2", "shell", 4);
    wait_for("worker_lost resolved", Duration::from_secs(30), || {
        receiver.accepted("all", "worker_lost", "resolved").len() == 1
    });
    cluster.workers[0].process.terminate();
    cluster.workers[0]
        .process
        .wait_exit(Duration::from_secs(20));
    // Once the coordinator no longer lists it, a pass of the evaluator would have seen a
    // lost worker by --alert-worker-lost-after (1s) and the next pass (500ms).
    wait_for("w1 gone from the workers", Duration::from_secs(20), || {
        !cluster
            .cli_json(&["workers"])
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["node_id"] == "w1")
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.accepted("all", "worker_lost", "firing").len(),
        1,
        "a worker that stopped as asked is not lost: {:#?}",
        receiver.hooks()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_mans_switch_fires_for_a_slot_missed_while_the_coordinator_was_down() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let (receiver, hooks) = Receiver::start().await;
    let mut cluster = Cluster::new(database.url());
    let all = format!("{hooks}/all");
    cluster.start_coordinator(
        "c1",
        &["--alert-interval", "500ms", "--alert-webhook", &all],
    );
    cluster.start_worker("w1", "shell", 2);
    let ok = json!({ "script": "echo ok" }).to_string();
    create(
        &cluster,
        "nightly-backup",
        &[
            "--handler",
            "shell",
            "--every",
            "3s",
            "--catch-up",
            "none",
            "--alert-if-no-success",
            "5s",
            "--args",
            &ok,
        ],
    );
    wait_for("two successes", Duration::from_secs(20), || {
        ended(&cluster, "nightly-backup", "succeeded") >= 2
    });
    assert!(
        receiver
            .accepted("all", "missed_deadline", "firing")
            .is_empty()
    );

    // The coordinator is down for longer than the window: no run was even created, and
    // the alert fires as soon as a coordinator leads again.
    cluster.stop_coordinator(0);
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.restart_coordinator(0);
    wait_for("missed_deadline", Duration::from_secs(20), || {
        receiver.accepted("all", "missed_deadline", "firing").len() == 1
    });
    let fired = &receiver.accepted("all", "missed_deadline", "firing")[0];
    assert!(
        fired.body["message"]
            .as_str()
            .unwrap()
            .starts_with("job nightly-backup has not succeeded within 5s (last success "),
        "{:?}",
        fired.body
    );
    // The next slot runs and succeeds: resolved.
    wait_for("missed_deadline resolved", Duration::from_secs(20), || {
        receiver
            .accepted("all", "missed_deadline", "resolved")
            .len()
            == 1
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_while_sending_an_alert_leaves_it_to_the_next_delivered_once_raised_once() {
    let etcd = cronfleet_testkit::EtcdServer::start().await.expect("etcd");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let (receiver, hooks) = Receiver::start().await;
    let mut cluster = Cluster::new(database.url());
    let all = format!("{hooks}/all");
    let mut flags = FAST_FAILURE_DETECTION.to_vec();
    flags.extend(["--alert-interval", "500ms", "--alert-webhook", &all]);
    cluster.start_elected_coordinators(&["c1", "c2"], &etcd.client_url(), &flags);
    cluster.start_worker("w1", "shell", 2);
    // The first attempt is refused (retried after a backoff); the second is never
    // answered, and the leader is killed while it waits for the answer: its claim on the
    // delivery must run out before the next leader sends it.
    receiver.refuse.store(1, Ordering::SeqCst);
    receiver.hold.store(1, Ordering::SeqCst);
    let fails = json!({ "script": "exit 4" }).to_string();
    create(
        &cluster,
        "ledger-sync",
        &["--handler", "shell", "--every", "1s", "--args", &fails],
    );
    let first = cluster.leader_index().expect("a leader");
    let first_epoch = cluster.cli_json(&["status"])["epoch"].as_i64().unwrap();
    wait_for(
        "a refused then a held attempt",
        Duration::from_secs(30),
        || {
            let hooks = receiver.hooks();
            hooks.iter().any(|h| h.status == 503) && hooks.iter().any(|h| h.status == 0)
        },
    );
    cluster.coordinators[first].process.kill();
    wait_for(
        "the delivery by the next leader",
        Duration::from_secs(40),
        || !receiver.accepted("all", "failed", "firing").is_empty(),
    );
    let survivor = 1 - first;
    let epoch = cluster.cli_json_on(survivor, &["status"])["epoch"]
        .as_i64()
        .unwrap();
    assert!(epoch > first_epoch, "a new term delivered it");
    // Failures go on under the new leader: the alert is not raised again.
    wait_for(
        "more failed runs under the new leader",
        Duration::from_secs(20),
        || {
            cluster
                .runs_on(survivor, "ledger-sync")
                .iter()
                .filter(|r| r["state"] == "failed" && r["epoch"].as_i64() == Some(epoch))
                .count()
                >= 3
        },
    );
    let hooks = receiver.hooks();
    let keys: BTreeSet<&str> = hooks.iter().map(|h| h.idempotency_key.as_str()).collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt is of one alert's firing: {hooks:#?}"
    );
    assert_eq!(
        receiver.accepted("all", "failed", "firing").len(),
        1,
        "delivered once: {hooks:#?}"
    );
    let stored = cluster.cli_json_on(survivor, &["alerts", "--all", "--job", "ledger-sync"]);
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len(), 1, "raised once: {stored:#?}");
    let delivery = &stored[0]["deliveries"][0];
    assert!(delivery["delivered_at"].is_string(), "{delivery}");
    assert!(delivery["attempts"].as_u64().unwrap() >= 3, "{delivery}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alert_mail_goes_over_starttls_only_to_a_server_whose_certificate_verifies() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    let (smtp, ca) = SmtpServer::start_with_starttls(cluster.dir.path());
    let url = format!("{}?tls=required", smtp.url());
    let mail_flags = [
        "--alert-interval",
        "500ms",
        "--alert-email",
        "ops@example.com",
        "--alert-smtp",
        &url,
        "--alert-email-from",
        "cronfleet@example.com",
    ];
    // The server's certificate is signed by a CA the public roots do not hold: refused,
    // and retried.
    cluster.start_coordinator("c1", &mail_flags);
    cluster.start_worker("w1", "shell", 2);
    let fails = json!({ "script": "exit 1" }).to_string();
    create(
        &cluster,
        "exports",
        &["--handler", "shell", "--every", "1s", "--args", &fails],
    );
    let mut refused = String::new();
    wait_for("a refused mail delivery", Duration::from_secs(30), || {
        let alerts = alerts(&cluster, &["--job", "exports"]);
        refused = alerts
            .first()
            .and_then(|a| a["deliveries"][0]["last_error"].as_str())
            .unwrap_or_default()
            .to_owned();
        !refused.is_empty()
    });
    assert!(refused.contains("certificate"), "{refused}");
    assert!(
        smtp.messages().is_empty(),
        "nothing sent to an unverified server"
    );

    // With the CA to trust, the next coordinator delivers the same alert, encrypted.
    cluster.stop_coordinator(0);
    let ca = ca.to_str().unwrap().to_owned();
    let mut flags = mail_flags.to_vec();
    flags.extend(["--alert-smtp-ca", &ca]);
    cluster.start_coordinator("c2", &flags);
    wait_for("the mail over STARTTLS", Duration::from_secs(40), || {
        smtp.messages().len() == 1
    });
    let mail = &smtp.messages()[0];
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["user"], SMTP_USER);
    let stored = cluster.cli_json_on(1, &["alerts", "--job", "exports"]);
    assert_eq!(
        stored.as_array().unwrap().len(),
        1,
        "the same alert: {stored}"
    );
    assert!(stored[0]["deliveries"][0]["attempts"].as_u64().unwrap() >= 2);
}
