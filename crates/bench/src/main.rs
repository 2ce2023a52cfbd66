//! `cronfleet-bench`: cronfleet's benchmark (DESIGN §6). It starts (or is given)
//! PostgreSQL and etcd, runs real `cronfleet coordinator` and `cronfleet worker` processes
//! from the same build, and measures throughput, the raw PostgreSQL limit of the same
//! work, schedule lag, failover, scale, memory and worker scaling; it prints one table row
//! per figure and writes every result to one JSON file. Run it with `scripts/bench`.
//!
//! Every scenario gets a fresh database; jobs are created through the store once and
//! copied in SQL (see `services.rs`). Nothing here is a test: no figure is asserted.

mod metrics;
mod nodes;
mod report;
mod scenarios;
mod services;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use crate::report::Report;
use crate::scenarios::{Scenario, Settings};

/// Measure cronfleet against DESIGN §6 on this machine.
#[derive(Debug, Parser)]
#[command(
    name = "cronfleet-bench",
    after_help = "Examples:\n  scripts/bench\n  scripts/bench --smoke\n  scripts/bench --only throughput,limit --json /tmp/bench.json"
)]
struct Args {
    /// A tiny, quick run of every scenario (seconds, not minutes): checks the benchmark
    /// works; its figures mean little.
    #[arg(long)]
    smoke: bool,
    /// Run only these scenarios (comma-separated): throughput, limit, lag, failover,
    /// scale, workers, console (memory is measured during throughput).
    #[arg(long, value_delimiter = ',', value_name = "SCENARIO,…")]
    only: Vec<Scenario>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json", value_name = "PATH")]
    json: PathBuf,
    /// An existing PostgreSQL (a role that may create databases) instead of a throw-away one.
    #[arg(long, value_name = "URL")]
    pg_url: Option<String>,
    /// An existing etcd endpoint instead of a throw-away one.
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
    /// Worker processes of the throughput and lag scenarios.
    #[arg(long, default_value_t = 2, value_name = "N")]
    workers: u32,
    /// Capacity of each of those workers.
    #[arg(long, default_value_t = 256, value_name = "N")]
    capacity: u32,
    /// Where the processes' logs go [default: a new temp dir, kept].
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// RUST_LOG of the coordinator and worker processes [default: theirs, info].
    #[arg(long, value_name = "FILTER")]
    rust_log: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_dir = nodes::log_dir(args.log_dir.as_deref())?;
    let launcher = nodes::Launcher::new(log_dir.clone(), args.rust_log.clone())?;
    eprintln!("process logs: {}", log_dir.display());
    let services = services::Services::start(args.pg_url.as_deref(), args.etcd.as_deref()).await?;
    let settings = Settings {
        smoke: args.smoke,
        workers: args.workers,
        capacity: args.capacity,
    };
    let mut report = Report {
        machine: machine_facts(),
        settings: json!({
            "smoke": args.smoke,
            "workers": args.workers,
            "capacity": args.capacity,
            "rust_log": args.rust_log,
            "postgres": services.postgres_facts().await?,
            "etcd": services.etcd_url,
        }),
        ..Report::default()
    };
    eprintln!(
        "machine: {}\npostgres: {}",
        report.machine, report.settings["postgres"]
    );
    println!("{}", report::header());
    let chosen: Vec<Scenario> = if args.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.only.clone()
    };
    for scenario in chosen {
        eprintln!("--- {scenario:?}");
        if let Err(error) =
            scenarios::run(scenario, &services, &launcher, &settings, &mut report).await
        {
            eprintln!("scenario {scenario:?} failed: {error:#}");
            report
                .errors
                .insert(format!("{scenario:?}"), json!(format!("{error:#}")));
        }
    }
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", args.json.display()))?;
    println!("\n{}\n\nresults: {}", report.table(), args.json.display());
    if !report.errors.is_empty() {
        anyhow::bail!("{} scenario(s) failed", report.errors.len());
    }
    Ok(())
}

/// Cores, memory, kernel and load: what a reader needs to judge the figures.
fn machine_facts() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "memory_gib": memory_gib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}
