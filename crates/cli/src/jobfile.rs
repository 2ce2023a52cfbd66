//! Job files: a YAML (or JSON) list of job definitions with the fields of
//! `cronfleet job create`, as `cronfleet dev --jobs FILE` loads them.
//!
//! A definition becomes the admin API's `JobSpec`, so a file is validated by the server
//! exactly like the command line is.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use cronfleet_proto::v1;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    jobs: Vec<JobDefinition>,
}

/// One job as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDefinition {
    pub name: String,
    pub handler: String,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub at: Option<String>,
    pub tz: Option<String>,
    pub start: Option<String>,
    pub args: Option<serde_json::Value>,
    pub priority: Option<i32>,
    pub max_runs: Option<u32>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub overlap: Option<String>,
    pub catch_up: Option<String>,
    pub catch_up_window: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub paused: bool,
}

/// Reads a job file; errors name the file and, for YAML, the line.
pub fn load(path: &Path) -> anyhow::Result<Vec<JobDefinition>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the job file {}", path.display()))?;
    let file: JobFile = serde_yaml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "{}: {error}; expected `jobs:` with a list of jobs (fields as in `cronfleet job create`)",
            path.display()
        )
    })?;
    Ok(file.jobs)
}

impl JobDefinition {
    /// The admin API's form; the server validates every field.
    pub fn to_spec(&self) -> v1::JobSpec {
        let kind = match (&self.every, &self.cron, &self.at) {
            (Some(every), None, None) => Some(v1::schedule::Kind::Every(every.clone())),
            (None, Some(cron), None) => Some(v1::schedule::Kind::Cron(cron.clone())),
            (None, None, Some(at)) => Some(v1::schedule::Kind::At(at.clone())),
            // None or several: the server says which one is wrong.
            _ => None,
        };
        v1::JobSpec {
            name: self.name.clone(),
            handler: self.handler.clone(),
            args_json: self
                .args
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            schedule: Some(v1::Schedule {
                kind,
                tz: self.tz.clone().unwrap_or_default(),
                start: self.start.clone().unwrap_or_default(),
            }),
            priority: self.priority.unwrap_or(0),
            max_runs: self.max_runs,
            timeout: self.timeout.clone(),
            retries: self.retries.unwrap_or(0),
            overlap: self.overlap.clone().unwrap_or_default(),
            catch_up: self.catch_up.clone().unwrap_or_default(),
            catch_up_window: self.catch_up_window.clone(),
            labels: self.labels.clone().into_iter().collect::<HashMap<_, _>>(),
            paused: self.paused,
            pause_note: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs.yaml");
        let jobs = load(&path).unwrap();
        assert_eq!(jobs.len(), 5);
        let report = jobs
            .iter()
            .find(|job| job.name == "nightly-report")
            .unwrap()
            .to_spec();
        assert_eq!(
            report.schedule.unwrap().kind,
            Some(v1::schedule::Kind::Cron("30 2 * * *".to_owned()))
        );
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.yaml");
        std::fs::write(
            &path,
            "jobs:\n  - name: a\n    handler: noop\n    evry: 5m\n",
        )
        .unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field `evry`"), "{error}");
        assert!(error.contains("line 4"), "{error}");
    }
}
