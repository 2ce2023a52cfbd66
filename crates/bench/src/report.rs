//! The benchmark's results: one table row per measured figure, printed as it is measured,
//! and one JSON file of everything (machine state, settings, rows, and each scenario's
//! details).

use serde::Serialize;
use serde_json::Value;

/// One measured figure and the DESIGN §6 target it is judged against.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The target as text (`≥ 10000`), empty when there is none.
    pub target: String,
    /// `met`, `missed` or `-` (no target).
    pub verdict: String,
}

/// How a value compares with its target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

/// Everything measured so far.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Value,
    pub settings: Value,
    pub rows: Vec<Row>,
    /// Per scenario: the raw figures behind its rows.
    pub details: serde_json::Map<String, Value>,
    /// Scenarios that failed, with their error.
    pub errors: serde_json::Map<String, Value>,
}

impl Report {
    /// Adds a row and prints it.
    pub fn row(&mut self, scenario: &str, metric: &str, value: f64, unit: &str, target: Target) {
        let (target, verdict) = match target {
            Target::None => (String::new(), "-".to_owned()),
            Target::AtLeast(goal) => (format!(">= {}", number(goal)), verdict(value >= goal)),
            Target::AtMost(goal) => (format!("<= {}", number(goal)), verdict(value <= goal)),
        };
        let row = Row {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            value,
            unit: unit.to_owned(),
            target,
            verdict,
        };
        println!("{}", format_row(&row));
        self.rows.push(row);
    }

    pub fn detail(&mut self, scenario: &str, details: Value) {
        self.details.insert(scenario.to_owned(), details);
    }

    /// The whole table.
    pub fn table(&self) -> String {
        let mut text = header();
        for row in &self.rows {
            text.push('\n');
            text.push_str(&format_row(row));
        }
        text
    }
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "MISSED" }.to_owned()
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<11} {:<58} {:>10} {:<7} {:<10} {}",
        "SCENARIO", "METRIC", "VALUE", "UNIT", "TARGET", "VERDICT"
    )
}

fn format_row(row: &Row) -> String {
    format!(
        "{:<11} {:<58} {:>10} {:<7} {:<10} {}",
        row.scenario,
        row.metric,
        number(row.value),
        row.unit,
        row.target,
        row.verdict
    )
}

/// A figure with as many decimals as it deserves.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}
