//! The subcommands of `cronfleet`, one module each.
//!
//! To add one (job, runs, dev, coordinator, worker…): write `commands/<name>.rs` with a
//! clap `Args` struct and a `run` method, add a variant to [`Command`] and a line to
//! [`Command::run`].

pub mod schedule;

use clap::Subcommand;

/// Every top-level subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with schedules offline, without a server (e.g. list the next slots).
    Schedule(schedule::ScheduleCommand),
}

impl Command {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Schedule(command) => command.run(),
        }
    }
}
