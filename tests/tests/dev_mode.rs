//! `cronfleet dev` end to end: one process with SQLite, the local leader and in-process
//! workers runs shell jobs, loads a job file, and carries on after a restart.

use std::time::Duration;

use cronfleet_e2e::cluster::{
    Process, assert_no_overlap, free_addr, http_get, ledger_script, read_ledger, wait_for,
};
use cronfleet_e2e::cronfleet_binary;
use serde_json::{Value, json};

struct Dev {
    process: Process,
    server: String,
    /// The HTTP port: the REST API, the probes and the web console.
    http: std::net::SocketAddr,
}

fn start_dev(
    data_dir: &std::path::Path,
    jobs: Option<&std::path::Path>,
    log_dir: &std::path::Path,
    name: &str,
) -> Dev {
    let (grpc, http) = (free_addr(), free_addr());
    let mut args = vec![
        "dev".to_owned(),
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--grpc".to_owned(),
        grpc.to_string(),
        "--http".to_owned(),
        http.to_string(),
        "--workers".to_owned(),
        "2".to_owned(),
    ];
    if let Some(jobs) = jobs {
        args.extend(["--jobs".to_owned(), jobs.display().to_string()]);
    }
    let process = Process::spawn(name, &args, log_dir);
    wait_for("cronfleet dev to be ready", Duration::from_secs(20), || {
        http_get(http, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    Dev {
        process,
        server: format!("http://{grpc}"),
        http,
    }
}

fn cli_json(server: &str, args: &[&str]) -> Value {
    let output = std::process::Command::new(cronfleet_binary())
        .args(args)
        .args(["--server", server, "-o", "json"])
        .output()
        .expect("run the cli");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

#[test]
fn dev_mode_runs_jobs_from_a_file_without_overlap_and_survives_a_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let ledger = scratch.path().join("ledger");
    let jobs = scratch.path().join("jobs.yaml");
    let script = ledger_script(&ledger, 1.5);
    std::fs::write(
        &jobs,
        format!(
            "jobs:\n  - name: chunk\n    handler: shell\n    every: 1s\n    args:\n      script: {}\n  - name: tick\n    handler: noop\n    every: 1s\n",
            json!(script)
        ),
    )
    .unwrap();

    let mut dev = start_dev(&data_dir, Some(&jobs), scratch.path(), "dev-1");
    std::thread::sleep(Duration::from_secs(5));
    let names: Vec<String> = cli_json(&dev.server, &["job", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["chunk", "tick"]);
    let ticks = cli_json(
        &dev.server,
        &["runs", "--job", "tick", "--state", "succeeded"],
    );
    assert!(
        ticks.as_array().unwrap().len() >= 3,
        "{ticks}\n{}",
        dev.process.log_text()
    );

    // A graceful stop, then a restart on the same data: the jobs are still there and run.
    dev.process.terminate();
    assert!(
        dev.process
            .wait_exit(Duration::from_secs(15))
            .is_some_and(|status| status.success())
    );
    let before = ledger_runs(&ledger);
    let dev = start_dev(&data_dir, Some(&jobs), scratch.path(), "dev-2");
    wait_for(
        "chunk runs after the restart",
        Duration::from_secs(10),
        || ledger_runs(&ledger) > before,
    );
    let chunk = cli_json(&dev.server, &["job", "get", "chunk"]);
    assert_eq!(
        chunk["version"], 1,
        "loading the file again left the job as it was"
    );
    assert!(dev.process.log_text().contains("job chunk exists"));
    std::thread::sleep(Duration::from_secs(2));
    assert_no_overlap(&read_ledger(&ledger), None);
}

/// A single-node start is quiet and correct: the workers register with the leader at the
/// first attempt — no redirect to the node itself, no "no leader yet" — and nothing is
/// logged as a warning or an error.
#[test]
fn dev_mode_starts_as_its_own_leader_without_redirecting_its_workers() {
    let scratch = tempfile::tempdir().unwrap();
    let dev = start_dev(&scratch.path().join("data"), None, scratch.path(), "dev");
    wait_for("both workers to register", Duration::from_secs(10), || {
        dev.process
            .log_text()
            .matches("registered with the leader")
            .count()
            == 2
    });
    // The web console is served at / as by any coordinator, and lists the workers.
    let (status, _) = http_get(dev.http, "/").expect("an answer at /");
    assert_eq!(status, 303, "/ leads to the Jobs page");
    let (status, jobs) = http_get(dev.http, "/jobs").expect("the Jobs page");
    assert_eq!(status, 200, "{jobs}");
    assert!(jobs.contains("<h1>Jobs</h1>"), "{jobs}");
    let (_, cluster) = http_get(dev.http, "/cluster").expect("the Cluster page");
    assert!(
        cluster.contains("dev-worker-1") && cluster.contains("dev-worker-2"),
        "{cluster}"
    );
    let log = dev.process.log_text();
    for unwanted in [
        "not the leader",
        "redirect",
        "not leading yet",
        "no leader",
        " WARN ",
        " ERROR ",
    ] {
        assert!(
            !log.contains(unwanted),
            "the start logged {unwanted:?}:\n{log}"
        );
    }
}

fn ledger_runs(ledger: &std::path::Path) -> usize {
    read_ledger(ledger).len()
}

/// A second `cronfleet dev` on the data directory of a running one refuses to start, and
/// says why, instead of sharing the SQLite file with it.
#[test]
fn a_second_dev_on_the_same_data_dir_refuses_to_start() {
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let _first = start_dev(&data_dir, None, scratch.path(), "dev-1");
    let second = std::process::Command::new(cronfleet_binary())
        .args(["dev", "--data-dir", &data_dir.display().to_string()])
        .args([
            "--grpc",
            &free_addr().to_string(),
            "--http",
            &free_addr().to_string(),
        ])
        .output()
        .expect("run cronfleet dev");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is in use by another cronfleet process")
            && stderr.contains("give this one its own --data-dir"),
        "{stderr}"
    );
}
