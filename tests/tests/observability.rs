//! Observability end to end: real coordinator and worker processes export their spans
//! over OTLP to an in-test collector (`cronfleet_testkit::otlp`), and a run is one trace
//! across both, with the trace id on the run record; without an endpoint nothing is
//! exported, and an unreachable one changes nothing for the runs.

use std::time::Duration;

use cronfleet_e2e::cluster::{Cluster, create, wait_for};
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
    let collector = Collector::start().expect("collector");
    let database = cronfleet_testkit::test_database().await.expect("database");
    let mut cluster = Cluster::new(database.url());
    cluster.start_coordinator("c1", &[]);
    cluster.start_worker("w1", "shell", 2);

    let run = run_once(&cluster, "quiet", "true");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(run["trace_id"].is_null(), "no trace, no id: {run}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(collector.spans().is_empty(), "nothing was sent anywhere");
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
