//! `cronfleet schedule …`: schedules computed locally, with no server involved.
//!
//! `schedule next` prints the slots a job with the given schedule would have, exactly as
//! the scheduler computes them (the same `cronfleet_core::schedule` code), which makes it
//! the tool for checking a cron expression or a DST edge before creating a job.

use std::io::{self, BufWriter, Write};

use anyhow::Context;
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand};
use cronfleet_core::duration::Interval;
use cronfleet_core::schedule::Schedule;
use cronfleet_core::time::{format_in_zone, parse_time, parse_tz};

/// The most slots `schedule next` prints: enough for any inspection, small enough that a
/// typo (`--count 1000000000`) does not flood the terminal.
pub const MAX_COUNT: u64 = 10_000;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cronfleet schedule next --cron '0 9 * * MON-FRI' --tz Europe/Berlin\n  cronfleet schedule next --every 1mo --start 2026-01-31T10:00:00Z --count 4"
)]
pub struct ScheduleCommand {
    #[command(subcommand)]
    command: ScheduleSubcommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleSubcommand {
    /// Print the next slots of a schedule, one RFC 3339 time per line in its time zone.
    #[command(after_help = NEXT_EXAMPLES)]
    Next(NextArgs),
}

const NEXT_EXAMPLES: &str = "\
Examples:
  cronfleet schedule next --cron '0 9 * * MON-FRI' --tz Europe/Berlin
  cronfleet schedule next --cron '30 2 * * *' --tz Europe/Berlin --from 2026-03-28T00:00:00Z --count 3
  cronfleet schedule next --every 1mo --start 2026-01-31T10:00:00Z --count 4
  cronfleet schedule next --every 90s --from '2026-03-29 01:58' --tz Europe/Berlin

Slots are printed strictly after --from, in the schedule's zone with its UTC offset:
  2026-03-29T03:00:00+02:00";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("schedule").required(true).args(["every", "cron"])))]
struct NextArgs {
    /// An interval schedule: s, m, h are elapsed time (90s, 5m, 2h); d, w, mo are calendar
    /// steps in --tz that keep the local time of --start across DST (1d, 2w, 1mo).
    // Hyphen values are allowed so that `--every -5m` gets the interval's own "negative"
    // message rather than clap's "unexpected argument '-5'".
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    every: Option<String>,

    /// First slot of an --every schedule (slot k is START + k × DUR). Defaults to --from.
    /// Accepts the same forms as --from.
    #[arg(long, value_name = "TIME", conflicts_with = "cron")]
    start: Option<String>,

    /// A cron schedule: 5 fields (minute hour day-of-month month day-of-week), 6 with a
    /// leading seconds field, or @hourly, @daily, @midnight, @weekly, @monthly, @yearly.
    /// Supports ranges, lists, steps, names (JAN, MON), L, W and # (e.g. MON#2).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,

    /// IANA time zone the schedule runs in and in which local times are read and slots
    /// are printed (e.g. Europe/Berlin, America/New_York).
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    tz: String,

    /// List slots strictly after this time (default: now). RFC 3339
    /// (2026-03-29T01:30:00Z, 2026-03-29T02:30:00+01:00) or a local time in --tz
    /// (2026-03-29 02:30, 2026-03-29T02:30:00).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,

    /// How many slots to print (1 to 10000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT)
    )]
    count: u64,
}

impl ScheduleCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            ScheduleSubcommand::Next(args) => args.run(),
        }
    }
}

impl NextArgs {
    /// Validates every argument before printing anything, so an error leaves stdout empty.
    fn schedule_and_from(&self) -> anyhow::Result<(Schedule, chrono::DateTime<Utc>)> {
        let tz = parse_tz(&self.tz).context("--tz")?;
        let from = match &self.from {
            Some(text) => parse_time(text, tz).context("--from")?,
            None => Utc::now(),
        };
        let schedule = match (&self.every, &self.cron) {
            (Some(every), None) => {
                let interval = Interval::parse(every).context("--every")?;
                let start = match &self.start {
                    Some(text) => parse_time(text, tz).context("--start")?,
                    None => from,
                };
                Schedule::every(interval, start, tz)
            }
            (None, Some(cron)) => Schedule::cron(cron, tz).context("--cron")?,
            // clap's argument group guarantees exactly one of the two.
            _ => anyhow::bail!("give exactly one of --every and --cron"),
        };
        Ok((schedule, from))
    }

    fn run(self) -> anyhow::Result<()> {
        let (schedule, from) = self.schedule_and_from()?;
        let mut out = BufWriter::new(io::stdout().lock());
        let mut printed = 0;
        for slot in schedule
            .slots_after(from)
            .take(usize::try_from(self.count)?)
        {
            writeln!(out, "{}", format_in_zone(slot, schedule.tz()))
                .and_then(|()| {
                    if printed % 64 == 0 {
                        out.flush()
                    } else {
                        Ok(())
                    }
                })
                .or_else(ignore_broken_pipe)?;
            printed += 1;
        }
        out.flush().or_else(ignore_broken_pipe)?;
        if printed < self.count {
            eprintln!("note: {schedule} has no more slots after the {printed} shown");
        }
        Ok(())
    }
}

/// A reader that stops early (`| head -1`) is not an error.
fn ignore_broken_pipe(error: io::Error) -> io::Result<()> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    Err(error)
}
