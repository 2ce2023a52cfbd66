//! Observability end to end: real coordinator and worker processes export their spans
//! over OTLP to an in-test collector (`cronfleet_testkit::otlp`), and a run is one trace
//! across both, with the trace id on the run record; without an endpoint nothing is
//! exported, and an unreachable one changes nothing for the runs. Their `/metrics` parse
//! as Prometheus text and count what the runs did.

use std::collections::BTreeMap;
use std::time::Duration;

use cronfleet_e2e::cluster::{Cluster, create, http_get, wait_for};
use cronfleet_testkit::otlp::{CollectedSpan, Collector};
use serde_json::{Value, json};

/// Creates a shell job that runs now (its first slot) and waits until that run ended.
fn run_once(cluster: &Cluster, name: &str, script: &str) -> Value {
    let args = json!({ "script": script }).to_string();
    create(
        cluster,
        name,
        &["--handler", "shell", "--every", "1h", "--args", &args],
    );
    let mut ended = None;
    wait_for("the run to end", Duration::from_secs(30), || {
        ended = cluster
            .runs_of(name)
            .into_iter()
            .find(|run| matches!(run["state"].as_str(), Some("succeeded" | "failed")));
        ended.is_some()
    });
    ended.expect("an ended run")
}

fn one<'a>(spans: &'a [CollectedSpan], name: &str) -> &'a CollectedSpan {
    let found: Vec<&CollectedSpan> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in the trace: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_across_coordinator_and_worker() {
    let collector = Collector::start().expect("collector");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
        // Export every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);

    let run = run_once(&cluster, "failing", "echo about to fail; exit 3");
    assert_eq!(run["state"], "failed", "{run}");
    let trace_id = run["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the run record has its trace id: {run}\n{}", cluster.logs()))
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    let names = ["run", "lease", "dispatch", "execute", "handler"];
    let spans = collector.wait_for(Duration::from_secs(20), |spans| {
        names.iter().all(|name| {
            spans
                .iter()
                .any(|span| span.trace_id == trace_id && span.name == *name)
        })
    });
    let trace: Vec<CollectedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .cloned()
        .collect();
    let (root, lease, dispatch, execute, handler) = (
        one(&trace, "run"),
        one(&trace, "lease"),
        one(&trace, "dispatch"),
        one(&trace, "execute"),
        one(&trace, "handler"),
    );
    assert!(
        root.parent_span_id.is_empty(),
        "the run span is the root: {root:?}"
    );
    assert_eq!(lease.parent_span_id, root.span_id, "lease under run");
    assert_eq!(dispatch.parent_span_id, root.span_id, "dispatch under run");
    assert_eq!(
        execute.parent_span_id, dispatch.span_id,
        "execute under dispatch"
    );
    assert_eq!(
        handler.parent_span_id, execute.span_id,
        "handler under execute"
    );
    for span in [root, lease, dispatch] {
        assert_eq!(span.service, "cronfleet-coordinator", "{span:?}");
    }
    for span in [execute, handler] {
        assert_eq!(span.service, "cronfleet-worker", "{span:?}");
    }
    assert_eq!(root.attribute("cronfleet.job"), Some("failing"));
    assert_eq!(root.attribute("cronfleet.trigger"), Some("schedule"));
    assert_eq!(dispatch.attribute("worker"), Some("w1"));
    assert_eq!(handler.attribute("exit_code"), Some("3"));
    assert_eq!(
        handler.status_code, 2,
        "a failed handler is an error: {handler:?}"
    );
    assert_eq!(
        execute.status_code, 2,
        "a failed run is an error: {execute:?}"
    );
    assert_eq!(execute.status_message, "exit status 3");

    // Admin calls are traced too, as server spans of the coordinator.
    assert!(
        spans
            .iter()
            .any(|span| span.name == "cronfleet.v1.JobService/CreateJob"
                && span.service == "cronfleet-coordinator"),
        "the CreateJob call has a span: {spans:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_nothing_is_exported() {
    // The OTLP exporter's own default endpoint: a process that exported without being
    // asked to would send its spans here.
    let collector = match Collector::start_on("127.0.0.1:4317") {
        Ok(collector) => Some(collector),
        Err(error) => {
            println!("port 4317 is taken ({error}): only the run record is checked");
            None
        }
    };
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);

    let run = run_once(&cluster, "quiet", "true");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run["trace_id"].is_null(), "no trace, no id: {run}");
    if let Some(collector) = collector {
        // Stopping flushes whatever a process would have queued for export.
        assert!(cluster.stop_coordinator(0).is_some());
        cluster.workers[0].process.terminate();
        cluster.workers[0]
            .process
            .wait_exit(Duration::from_secs(20));
        assert!(
            collector.spans().is_empty(),
            "nothing was sent to the default endpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_collector_changes_nothing_for_the_runs() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    // A port nothing listens on.
    let closed = format!(
        "http://127.0.0.1:{}",
        cronfleet_testkit::free_port().expect("port")
    );
    cluster.env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), closed)];
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);

    let run = run_once(&cluster, "unseen", "echo fine");
    assert_eq!(run["state"], "succeeded", "{run}");
    let status = cluster.stop_coordinator(0);
    assert!(
        status.is_some_and(|status| status.success()),
        "the coordinator still stops cleanly: {status:?}\n{}",
        cluster.logs()
    );
}

/// One sample of a Prometheus text exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus / OpenMetrics text strictly enough to catch a broken exposition:
/// every line is a `# HELP|TYPE|UNIT` comment or a sample, every sample belongs to a
/// declared family, and the text ends with `# EOF`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "nothing after # EOF");
            return samples;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            let kind = words.next().unwrap_or("");
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "bad comment: {line}"
            );
            if kind == "TYPE" {
                families.push(words.next().expect("a family name").to_owned());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unterminated labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        assert!(
            families
                .iter()
                .any(|family| name.starts_with(family.as_str())),
            "sample of an undeclared family: {line}"
        );
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    panic!("the exposition does not end with # EOF:\n{text}");
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

fn scrape(addr: std::net::SocketAddr) -> Vec<Sample> {
    let (status, body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_runs_of_coordinator_and_worker() {
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "noop", 4);
    let (coordinator, worker) = (cluster.coordinators[0].http, cluster.workers[0].http);
    let before = (scrape(coordinator), scrape(worker));
    let finished = [("job_name", "tick"), ("state", "succeeded")];
    assert_eq!(
        value(&before.0, "cronfleet_runs_finished_total", &finished),
        0.0
    );

    create(&cluster, "tick", &["--handler", "noop", "--every", "1s"]);
    wait_for("three runs", Duration::from_secs(20), || {
        cluster
            .runs_of("tick")
            .iter()
            .filter(|run| run["state"] == "succeeded")
            .count()
            >= 3
    });
    assert!(cluster.cli(&["job", "pause", "tick"]).success);
    std::thread::sleep(Duration::from_millis(500));
    let succeeded = cluster
        .runs_of("tick")
        .iter()
        .filter(|run| run["state"] == "succeeded")
        .count() as f64;

    let after = scrape(coordinator);
    assert_eq!(
        value(&after, "cronfleet_runs_finished_total", &finished),
        succeeded
    );
    let schedule = [("trigger", "schedule")];
    assert_eq!(
        value(&after, "cronfleet_runs_created_total", &schedule),
        succeeded
    );
    assert_eq!(
        value(
            &after,
            "cronfleet_run_schedule_lag_seconds_count",
            &schedule
        ),
        succeeded
    );
    assert_eq!(
        value(
            &after,
            "cronfleet_run_duration_seconds_count",
            &[("state", "succeeded")]
        ),
        succeeded
    );
    assert!(value(&after, "cronfleet_lease_duration_seconds_count", &[]) >= succeeded);
    assert!(value(&after, "cronfleet_lease_batch_jobs_sum", &[]) >= succeeded);
    assert_eq!(value(&after, "cronfleet_leader", &[]), 1.0);
    assert!(value(&after, "cronfleet_leader_epoch", &[]) >= 1.0);
    assert_eq!(
        value(
            &after,
            "cronfleet_leadership_changes_total",
            &[("change", "acquired")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "cronfleet_workers", &[("state", "connected")]),
        1.0
    );
    assert!(
        value(
            &after,
            "cronfleet_worker_heartbeat_age_seconds",
            &[("worker", "w1")]
        ) < 10.0
    );
    assert_eq!(value(&after, "cronfleet_runs_backlog", &[]), 0.0);
    assert_eq!(value(&after, "cronfleet_store_errors_total", &[]), 0.0);

    let worker_after = scrape(worker);
    let noop = [("handler", "noop"), ("outcome", "succeeded")];
    assert_eq!(
        value(&before.1, "cronfleet_worker_handler_runs_total", &noop),
        0.0
    );
    assert_eq!(
        value(&worker_after, "cronfleet_worker_handler_runs_total", &noop),
        succeeded
    );
    assert_eq!(
        value(
            &worker_after,
            "cronfleet_worker_handler_duration_seconds_count",
            &[("handler", "noop")]
        ),
        succeeded
    );
    assert_eq!(value(&worker_after, "cronfleet_worker_capacity", &[]), 4.0);
    assert_eq!(value(&worker_after, "cronfleet_worker_connected", &[]), 1.0);
    assert_eq!(
        value(&worker_after, "cronfleet_worker_busy_slots", &[]),
        0.0
    );
}
