//! How client commands print what the server answered: aligned tables and `key: value`
//! details for people, JSON for programs (`-o json`). (`-o yaml`, the job file format, is
//! for jobs only: `crate::jobfile` writes it.)
//!
//! JSON objects use the snake_case names of DESIGN §3 (`next_run_at`, `started_at`, …);
//! times are RFC 3339 in UTC and absent values are `null`, never empty strings, so that
//! `jq` filters need no special cases. Lists are arrays, single objects are objects.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};

use anyhow::Context;
use chrono::SecondsFormat;
use clap::ValueEnum;
pub use cronfleet_coordinator::rest::model::time;
use cronfleet_coordinator::rest::model::{AlertView, JobView, RunView, StatusView, WorkerView};
use cronfleet_proto::v1 as pb;
use serde::Serialize;

/// The `-o` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns (lists) or `key: value` lines (single objects).
    Table,
    /// Pretty-printed JSON: arrays for lists, objects for single items.
    Json,
    /// Jobs as a job file, the format `cronfleet apply` reads (`job get`, `job list` only).
    Yaml,
}

/// How a command prints what it shows: `-o table` or `-o json` (see
/// `ClientArgs::format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Writes `text` to stdout. A closed pipe (`cronfleet runs | head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to stdout"),
    }
}

/// Prints a value as pretty JSON with a final newline.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    print(&text)
}

/// A table cell for a time: seconds precision, `-` when absent.
fn time_cell(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp.and_then(cronfleet_proto::datetime).map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ------------------------------------------------------------------------------ jobs

/// What tables say of a job.
trait JobViewText {
    fn status(&self) -> &'static str;
    fn short_schedule(&self) -> String;
}

impl JobViewText for JobView {
    /// `paused`, `inactive` or `active`.
    fn status(&self) -> &'static str {
        if self.paused {
            "paused"
        } else if !self.active {
            "inactive"
        } else {
            "active"
        }
    }

    /// The schedule in a few words for a table: its zone only when it is not UTC.
    fn short_schedule(&self) -> String {
        let kind = match (&self.every, &self.cron, &self.at) {
            (Some(every), _, _) => format!("every {every}"),
            (_, Some(cron), _) => format!("cron {cron}"),
            (_, _, Some(at)) => format!("at {at}"),
            _ => self.schedule.clone(),
        };
        if self.tz.is_empty() || self.tz == "UTC" {
            kind
        } else {
            format!("{kind} ({})", self.tz)
        }
    }
}

/// One job, in the chosen format.
pub fn print_job(job: &pb::Job, format: Format) -> anyhow::Result<()> {
    let view = JobView::new(job);
    match format {
        Format::Json => print_json(&view),
        Format::Table => {
            let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
            let max_runs = match (view.max_runs, view.remaining_runs) {
                (Some(max), Some(remaining)) => format!("{max} ({remaining} remaining)"),
                (Some(max), None) => max.to_string(),
                (None, _) => "unlimited".to_owned(),
            };
            let catch_up = match &view.catch_up_window {
                Some(window) => format!("{} (window {window})", view.catch_up),
                None => view.catch_up.clone(),
            };
            let status = match &view.pause_note {
                Some(note) if view.paused => format!("paused: {note}"),
                _ => view.status().to_owned(),
            };
            let failures = match &view.first_failure_at {
                Some(since) => format!("{} since {since}", view.failure_count),
                None => view.failure_count.to_string(),
            };
            print_details(&[
                ("name", view.name.clone()),
                ("handler", view.handler.clone()),
                ("schedule", view.schedule.clone()),
                ("status", status),
                ("next run", or_dash(view.next_run_at.clone())),
                ("last run", or_dash(view.last_run_at.clone())),
                ("args", view.args.to_string()),
                ("priority", view.priority.to_string()),
                ("max runs", max_runs),
                (
                    "timeout",
                    view.timeout
                        .clone()
                        .unwrap_or_else(|| "the coordinator's default".to_owned()),
                ),
                ("retries", view.retries.to_string()),
                ("overlap", view.overlap.clone()),
                ("catch-up", catch_up),
                ("labels", labels_text(&view.labels)),
                (
                    "alerts",
                    if view.alerts_enabled { "on" } else { "off" }.to_owned(),
                ),
                (
                    "alert if no success",
                    view.alert_if_no_success
                        .clone()
                        .unwrap_or_else(|| "off".to_owned()),
                ),
                ("expected duration", or_dash(view.expected_duration.clone())),
                ("failures", failures),
                ("missed slots", view.missed_count.to_string()),
                ("skipped slots", view.overlap_skipped_count.to_string()),
                ("managed by", or_dash(view.managed_by.clone())),
                ("version", view.version.to_string()),
                ("created", or_dash(view.created_at.clone())),
                ("updated", or_dash(view.updated_at.clone())),
            ])
        }
    }
}

/// A list of jobs, in the chosen format.
pub fn print_jobs(jobs: &[pb::Job], format: Format) -> anyhow::Result<()> {
    let views: Vec<JobView> = jobs.iter().map(JobView::new).collect();
    match format {
        Format::Json => print_json(&views),
        Format::Table => {
            let mut table = Table::new(&[
                "NAME", "HANDLER", "SCHEDULE", "STATUS", "NEXT RUN", "LAST RUN", "FAILURES",
            ]);
            for (view, job) in views.iter().zip(jobs) {
                table.row(vec![
                    view.name.clone(),
                    view.handler.clone(),
                    view.short_schedule(),
                    view.status().to_owned(),
                    time_cell(job.next_run_at.as_ref()),
                    time_cell(job.last_run_at.as_ref()),
                    view.failure_count.to_string(),
                ]);
            }
            print(&table.render(terminal_width()))
        }
    }
}

// ------------------------------------------------------------------------------ runs

/// What a table's last column says about a run: its error, why it waits, or how many
/// slots a skipped / missed record stands for.
fn run_note(view: &RunView) -> String {
    if let Some(error) = &view.error {
        error.clone()
    } else if let Some(reason) = &view.pending_reason {
        reason.clone()
    } else if view.slot_count > 1 {
        format!("{} slots", view.slot_count)
    } else {
        String::new()
    }
}

pub fn print_run(run: &pb::Run, format: Format) -> anyhow::Result<()> {
    let view = RunView::new(run);
    match format {
        Format::Json => print_json(&view),
        Format::Table => {
            let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
            let mut lines = vec![
                ("id", view.id.to_string()),
                ("job", view.job.clone()),
                ("state", view.state.clone()),
                ("trigger", view.trigger.clone()),
                ("slot", or_dash(&view.slot)),
                ("attempt", view.attempt.to_string()),
                ("worker", or_dash(&view.worker)),
                ("created", or_dash(&view.created_at)),
                ("dispatched", or_dash(&view.dispatched_at)),
                ("started", or_dash(&view.started_at)),
                ("finished", or_dash(&view.finished_at)),
                ("deadline", or_dash(&view.deadline)),
                ("error", or_dash(&view.error)),
            ];
            if let Some(reason) = &view.pending_reason {
                lines.push(("waiting because", reason.clone()));
            }
            if view.slot_count > 1 {
                lines.push((
                    "slots",
                    format!("{} (last {})", view.slot_count, or_dash(&view.last_slot)),
                ));
            }
            if view.progress_done > 0 || view.progress_remaining > 0 {
                lines.push((
                    "progress",
                    format!(
                        "{} done, {} remaining",
                        view.progress_done, view.progress_remaining
                    ),
                ));
            }
            lines.push(("trace id", or_dash(&view.trace_id)));
            print_details(&lines)?;
            match &view.output {
                // The output is the end of the handler's log: shown as it is, below.
                Some(output) => print(&format!(
                    "output:\n{}{}",
                    output,
                    if output.ends_with('\n') { "" } else { "\n" }
                )),
                None => print("output: -\n"),
            }
        }
    }
}

pub fn print_runs(runs: &[pb::Run], format: Format) -> anyhow::Result<()> {
    let views: Vec<RunView> = runs.iter().map(RunView::new).collect();
    match format {
        Format::Json => print_json(&views),
        Format::Table => {
            let mut table = Table::new(&[
                "ID", "JOB", "STATE", "TRIGGER", "SLOT", "ATTEMPT", "WORKER", "STARTED",
                "FINISHED", "NOTE",
            ]);
            for (view, run) in views.iter().zip(runs) {
                table.row(vec![
                    view.id.to_string(),
                    view.job.clone(),
                    view.state.clone(),
                    view.trigger.clone(),
                    time_cell(run.slot.as_ref()),
                    view.attempt.to_string(),
                    view.worker.clone().unwrap_or_else(|| "-".to_owned()),
                    time_cell(run.started_at.as_ref()),
                    time_cell(run.finished_at.as_ref()),
                    run_note(view),
                ]);
            }
            print(&table.render(terminal_width()))
        }
    }
}

// ------------------------------------------------------------------------------ workers

pub fn print_workers(workers: &[pb::Worker], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&workers.iter().map(WorkerView::new).collect::<Vec<_>>()),
        Format::Table => print(&workers_table(workers)),
    }
}

fn workers_table(workers: &[pb::Worker]) -> String {
    let mut table = Table::new(&[
        "NODE",
        "STATE",
        "BUSY",
        "HANDLERS",
        "LABELS",
        "LAST HEARTBEAT",
        "VERSION",
    ]);
    for worker in workers {
        table.row(vec![
            worker.node_id.clone(),
            worker.state.clone(),
            format!("{}/{}", worker.busy, worker.capacity),
            worker.handlers.join(","),
            labels_text(
                &worker
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            time_cell(worker.last_heartbeat_at.as_ref()),
            worker.version.clone(),
        ]);
    }
    table.render(terminal_width())
}

pub fn print_alerts(alerts: &[pb::Alert], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&alerts.iter().map(AlertView::new).collect::<Vec<_>>()),
        Format::Table => print(&alerts_table(alerts)),
    }
}

fn alerts_table(alerts: &[pb::Alert]) -> String {
    let mut table = Table::new(&[
        "ID", "KIND", "STATE", "ABOUT", "FIRED", "ACKED", "SENT", "MESSAGE",
    ]);
    for alert in alerts {
        let about = if alert.job.is_empty() {
            alert.subject.clone()
        } else {
            alert.job.clone()
        };
        let acked = if alert.acked_by.is_empty() {
            time_cell(alert.acked_at.as_ref())
        } else {
            format!(
                "{} ({})",
                time_cell(alert.acked_at.as_ref()),
                alert.acked_by
            )
        };
        let sent = alert
            .deliveries
            .iter()
            .map(|d| {
                let how = if d.delivered_at.is_some() {
                    "ok".to_owned()
                } else if d.abandoned_at.is_some() {
                    "gave up".to_owned()
                } else {
                    format!("retrying ({})", d.attempts)
                };
                format!("{} {}: {how}", d.event, d.channel)
            })
            .collect::<Vec<_>>()
            .join("; ");
        table.row(vec![
            alert.id.to_string(),
            alert.kind.clone(),
            alert.state.clone(),
            about,
            time_cell(alert.fired_at.as_ref()),
            acked,
            if sent.is_empty() {
                "-".to_owned()
            } else {
                sent
            },
            alert.message.clone(),
        ]);
    }
    table.render(terminal_width())
}

pub fn print_status(status: &pb::ClusterStatus, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(&StatusView::new(status));
    }
    let leader = match (&status.leader, status.election_unavailable.as_str()) {
        (Some(leader), _) => format!("{} ({})", leader.node_id, leader.url),
        (None, "") => "none (an election is under way)".to_owned(),
        (None, why) => format!("unknown: {why}"),
    };
    let coordinators = status
        .coordinators
        .iter()
        .map(|node| {
            if node.leader {
                format!("{} (leader)", node.node_id)
            } else {
                node.node_id.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut by_state = BTreeMap::<&str, usize>::new();
    for worker in &status.workers {
        *by_state.entry(worker.state.as_str()).or_default() += 1;
    }
    let workers = if status.workers_unavailable.is_empty() {
        let counts: Vec<String> = by_state
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        if counts.is_empty() {
            "none connected".to_owned()
        } else {
            counts.join(", ")
        }
    } else {
        format!("unknown: {}", status.workers_unavailable)
    };
    print_details(&[
        ("leader", leader),
        ("epoch", status.epoch.to_string()),
        ("coordinators", coordinators),
        ("workers", workers),
        ("answered by", status.answered_by.clone()),
    ])?;
    if status.workers.is_empty() {
        return Ok(());
    }
    print(&format!("\n{}", workers_table(&status.workers)))
}

// ------------------------------------------------------------------------------ layout

/// `key: value` lines with the values aligned.
pub fn print_details(lines: &[(&str, String)]) -> anyhow::Result<()> {
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in lines {
        text.push_str(&format!(
            "{:<width$} {}\n",
            format!("{key}:"),
            one_line(value)
        ));
    }
    print(&text)
}

/// The widest a column grows before its cells are cut: wide enough for a timestamp or a
/// cron expression, narrow enough that one long error does not push the rest away.
const MAX_COLUMN_WIDTH: usize = 48;
/// The narrowest a column is squeezed to when the terminal is too narrow for the table.
const MIN_COLUMN_WIDTH: usize = 6;
const GAP: &str = "  ";

/// Rows under headers, rendered as aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| one_line(cell)).collect());
    }

    /// Columns as wide as their widest cell (at most [`MAX_COLUMN_WIDTH`]), squeezed,
    /// widest first, until the table fits in `width`; cut cells end in `…`.
    pub fn render(&self, width: usize) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = (0..columns)
            .map(|i| {
                std::iter::once(&self.headers[i])
                    .chain(self.rows.iter().filter_map(|row| row.get(i)))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
                    .min(MAX_COLUMN_WIDTH)
            })
            .collect();
        let total =
            |widths: &[usize]| widths.iter().sum::<usize>() + GAP.len() * columns.saturating_sub(1);
        while total(&widths) > width {
            let Some((widest, &current)) = widths.iter().enumerate().max_by_key(|(_, w)| **w)
            else {
                break;
            };
            if current <= MIN_COLUMN_WIDTH {
                break;
            }
            widths[widest] -= 1;
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| fit(row.get(i).map_or("", String::as_str), w))
                .collect();
            // The last column is not padded: no trailing spaces.
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<0$}{GAP}", widths[i]));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `cell` cut to `width` characters, ending in `…` when cut.
pub fn fit(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        cell.to_owned()
    } else {
        let mut cut: String = cell.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A value on one line: newlines and other control characters become spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The width tables are fitted to: `$COLUMNS`, else the terminal's width. Output that
/// goes to a pipe or a file is not squeezed (only very long cells are cut).
fn terminal_width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|&columns| columns > 0)
    {
        return columns;
    }
    let stdout = io::stdout();
    if stdout.is_terminal()
        && let Ok(size) = rustix::termios::tcgetwinsize(&stdout)
        && size.ws_col > 0
    {
        return usize::from(size.ws_col);
    }
    usize::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_long_cells_are_cut() {
        let mut table = Table::new(&["ID", "NOTE"]);
        table.row(vec!["1".into(), "short".into()]);
        table.row(vec!["22".into(), "x".repeat(100)]);
        let text = table.render(200);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID  NOTE");
        assert_eq!(lines[1], "1   short");
        assert_eq!(lines[2].chars().count(), 4 + MAX_COLUMN_WIDTH);
        assert!(lines[2].ends_with('…'));
    }

    #[test]
    fn a_narrow_terminal_squeezes_the_widest_column() {
        let mut table = Table::new(&["NAME", "SCHEDULE"]);
        table.row(vec![
            "nightly".into(),
            "cron 0 9 * * 1-5 (Europe/Berlin)".into(),
        ]);
        let text = table.render(30);
        assert!(
            text.lines().all(|line| line.chars().count() <= 30),
            "{text}"
        );
        assert!(text.contains("nightly  cron 0 9"), "{text}");
    }

    #[test]
    fn control_characters_do_not_break_rows() {
        let mut table = Table::new(&["ERROR"]);
        table.row(vec!["line one\nline two".into()]);
        assert_eq!(table.render(80), "ERROR\nline one line two\n");
    }
}
