//! The subcommands of `cronfleet`, one module each.
//!
//! To add one (job, runs, dev, coordinator, worker…): write `commands/<name>.rs` with a
//! clap `Args` struct and a `run` method, add a variant to [`Command`] and a line to
//! [`Command::run`].

pub mod alerts;
pub mod apply;
pub mod client;
pub mod completions;
pub mod coordinator;
pub mod dev;
pub mod job;
pub mod openapi;
pub mod output;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod server_args;
pub mod status;
pub mod worker;
pub mod workers;

use clap::Subcommand;

/// Every top-level subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process with a SQLite store: the quickest way to try cronfleet.
    Dev(dev::DevCommand),
    /// Run a coordinator (leases due jobs and dispatches them while it leads).
    Coordinator(Box<coordinator::CoordinatorCommand>),
    /// Define, inspect, change, pause, trigger and delete jobs.
    Job(job::JobCommand),
    /// Create and update jobs to match a job file (declarative, idempotent).
    Apply(apply::ApplyCommand),
    /// List runs, newest first (filter by job, state, age).
    Runs(runs::RunsCommand),
    /// Inspect one run.
    Run(run::RunCommand),
    /// List the workers connected to the leader.
    Workers(workers::WorkersCommand),
    /// List the alerts (firing by default), or acknowledge one.
    Alerts(alerts::AlertsCommand),
    /// Show the leader, the fencing epoch, the coordinators and the workers.
    Status(status::StatusCommand),
    /// Run a worker: execute assigned runs with the stock handlers (shell, http, noop, sleep).
    Worker(worker::WorkerCommand),
    /// Work with schedules offline, without a server (e.g. list the next slots).
    Schedule(schedule::ScheduleCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsCommand),
    /// Print the REST API's OpenAPI document (what /api/v1/openapi.json serves).
    Openapi(openapi::OpenapiCommand),
}

impl Command {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Dev(command) => command.run(),
            Command::Coordinator(command) => command.run(),
            Command::Job(command) => command.run(),
            Command::Apply(command) => command.run(),
            Command::Runs(command) => command.run(),
            Command::Run(command) => command.run(),
            Command::Workers(command) => command.run(),
            Command::Alerts(command) => command.run(),
            Command::Status(command) => command.run(),
            Command::Worker(command) => command.run(),
            Command::Schedule(command) => command.run(),
            Command::Completions(command) => command.run(),
            Command::Openapi(command) => command.run(),
        }
    }
}
