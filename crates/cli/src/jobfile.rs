//! Job files: `jobs:` and a list of job definitions with the fields of `cronfleet job
//! create`, in YAML or JSON. `cronfleet apply -f FILE` and `cronfleet dev --jobs FILE` read
//! them; `cronfleet job get NAME -o yaml` (and `job list -o yaml`) write them, so that what
//! is written applies again unchanged.
//!
//! Reading checks the file's shape here: an unknown or mistyped field is an error naming
//! the file, the job's position and name, the line, and the valid fields. A definition then
//! becomes the admin API's `JobSpec`, checked by the server's own code
//! ([`checked_specs`]), so a file is validated exactly like the command line is.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow};
use chrono::Utc;
use cronfleet_coordinator::admin::AdminError;
use cronfleet_coordinator::admin::convert::job_spec_from_proto;
pub use cronfleet_coordinator::rest::model::JobDefinition;
use cronfleet_coordinator::rest::model::plain_serde_message;
use cronfleet_core::apply::{check_unique_names, position};
use cronfleet_proto::v1;
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

/// What a job file holds.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    jobs: Vec<JobDefinition>,
}

/// What every error about a file's shape ends with, when it is not about one job.
const SHAPE: &str = "a job file is `jobs:` and a list of jobs with the fields of \
                     `cronfleet job create` (see examples/jobs.yaml)";

/// Reads a job file (`-` is standard input): JSON when it ends in `.json` or starts with
/// `{`, YAML otherwise. Errors name the file, the job's position and name, and the line.
pub fn load(path: &Path) -> anyhow::Result<Vec<JobDefinition>> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the job file from standard input")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the job file {}", path.display()))?
    };
    let json =
        path.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
    parse(&text, json).map_err(|error| anyhow!("{}: {error}", label(path)))
}

/// How errors name a file.
pub fn label(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

fn parse(text: &str, json: bool) -> Result<Vec<JobDefinition>, String> {
    let parsed = if json {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, JobFile>(&mut deserializer)
            .map_err(|error| (error.path().clone(), error.into_inner().to_string()))
    } else {
        serde_path_to_error::deserialize::<_, JobFile>(serde_yaml::Deserializer::from_str(text))
            .map_err(|error| (error.path().clone(), error.into_inner().to_string()))
    };
    let (path, message) = match parsed {
        Ok(file) => return Ok(file.jobs),
        Err(error) => error,
    };
    // serde_yaml starts its messages with (part of) the path; it is said once, in our words.
    let full_path = path.to_string();
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("jobs") && full_path.starts_with(head) => rest,
        _ => &message,
    };
    let message = plain_serde_message(message);
    let mut segments = path.iter();
    match (segments.next(), segments.next()) {
        (Some(Segment::Map { key }), Some(Segment::Seq { index })) if key == "jobs" => {
            let job = position(*index, &name_at(text, *index).unwrap_or_default());
            let field = field_path(segments);
            // An unknown field names itself.
            if field.is_empty() || message.starts_with("unknown field") {
                Err(format!("{job}: {message}"))
            } else {
                Err(format!("{job}: {field}: {message}"))
            }
        }
        _ => Err(format!("{message}; {SHAPE}")),
    }
}

/// Where in a job an error is: `retries`, `labels.region`.
fn field_path<'a>(segments: impl Iterator<Item = &'a Segment>) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    path
}

/// The name of the job at `index`, if the file has one there (read leniently: the
/// strict reading failed).
fn name_at(text: &str, index: usize) -> Option<String> {
    let file: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    file.get("jobs")?
        .get(index)?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

/// The definitions as admin API specs, every one checked with the server's own code
/// before anything is sent, and their names unique. Errors name the job's position and
/// name in the server's words, after the file's `label`.
pub fn checked_specs(label: &str, jobs: &[JobDefinition]) -> anyhow::Result<Vec<v1::JobSpec>> {
    check_unique_names(jobs.iter().map(|job| job.name.as_str()))
        .map_err(|error| anyhow!("{label}: {error}"))?;
    let now = Utc::now();
    jobs.iter()
        .enumerate()
        .map(|(index, job)| {
            let spec = job.to_spec();
            job.check_one_schedule()
                .and_then(|()| job_spec_from_proto(&spec, now).map(drop))
                .map_err(|error| AdminError::in_job(index, &job.name, error))
                .map_err(|error| anyhow!("{label}: {error}"))?;
            Ok(spec)
        })
        .collect()
}

/// Jobs as a YAML job file: what `cronfleet apply -f` reads back unchanged.
pub fn to_yaml(jobs: &[v1::Job]) -> anyhow::Result<String> {
    let file = JobFile {
        jobs: jobs.iter().map(JobDefinition::of).collect(),
    };
    serde_yaml::to_string(&file).context("cannot write the jobs as YAML")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_example_file_loads_and_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs.yaml");
        let jobs = load(&path).unwrap();
        assert_eq!(jobs.len(), 5);
        let specs = checked_specs("jobs.yaml", &jobs).unwrap();
        let report = specs
            .iter()
            .find(|spec| spec.name == "nightly-report")
            .unwrap();
        assert_eq!(
            report.schedule.clone().unwrap().kind,
            Some(v1::schedule::Kind::Cron("30 2 * * *".to_owned()))
        );
        assert_eq!(report.paused, None, "left out: as it is");
        assert_eq!(report.alerts_enabled, None, "left out: on");
        assert_eq!(report.alert_if_no_success.as_deref(), Some("26h"));
        assert_eq!(report.expected_duration.as_deref(), Some("10m"));
    }

    fn parse_error(text: &str, json: bool) -> String {
        match parse(text, json) {
            Ok(jobs) => panic!("{text} parsed: {jobs:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn an_unknown_field_names_the_job_its_line_and_the_valid_fields() {
        let yaml = "jobs:\n  - name: a\n    handler: noop\n    every: 5m\n  - name: b\n    handler: noop\n    evry: 5m\n";
        let error = parse_error(yaml, false);
        assert!(
            error.starts_with("jobs[1] (b): unknown field `evry`"),
            "{error}"
        );
        assert!(
            error.contains("expected one of `name`, `handler`, `every`"),
            "{error}"
        );
        assert!(error.contains("line 7"), "{error}");

        let json = r#"{"jobs": [{"name": "a", "handler": "noop", "evry": "5m"}]}"#;
        let error = parse_error(json, true);
        assert!(
            error.starts_with("jobs[0] (a): unknown field `evry`"),
            "{error}"
        );
        assert!(error.contains("expected one of `name`"), "{error}");
        assert!(error.contains("line 1 column"), "{error}");
    }

    #[test]
    fn a_mistyped_value_names_the_job_and_what_was_expected() {
        let error = parse_error(
            "jobs:\n  - name: a\n    handler: noop\n    every: 5m\n    retries: -1\n",
            false,
        );
        assert!(
            error.starts_with("jobs[0] (a): retries: invalid type: integer `-1`, expected a whole number of 0 or more"),
            "{error}"
        );
        assert!(error.contains("line 5"), "{error}");
        let error = parse_error(
            r#"{"jobs": [{"name": "a", "handler": "noop", "labels": {"region": 1}}]}"#,
            true,
        );
        assert!(
            error.starts_with(
                "jobs[0] (a): labels.region: invalid type: integer `1`, expected a string"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_file_of_the_wrong_shape_says_what_a_job_file_is() {
        for (text, expected) in [
            (
                "job:\n  - name: a\n",
                "unknown field `job`, expected `jobs`",
            ),
            ("- name: a\n", "invalid type: sequence"),
            ("", "missing field `jobs`"),
        ] {
            let error = parse_error(text, false);
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.ends_with(SHAPE), "{text:?}: {error}");
        }
    }

    #[test]
    fn duplicate_names_and_bad_values_are_found_before_anything_is_sent() {
        let jobs = parse(
            "jobs:\n  - {name: a, handler: noop, every: 5m}\n  - {name: a, handler: noop, every: 1m}\n",
            false,
        )
        .unwrap();
        let error = checked_specs("f.yaml", &jobs).unwrap_err().to_string();
        assert_eq!(
            error,
            "f.yaml: jobs[1]: the name \"a\" is also the name of jobs[0]; each job may appear only once"
        );
        let jobs = parse(
            "jobs:\n  - {name: a, handler: noop, every: 5m}\n  - {name: b, handler: noop, cron: '61 * * * *'}\n",
            false,
        )
        .unwrap();
        let error = checked_specs("f.yaml", &jobs).unwrap_err().to_string();
        assert!(
            error.starts_with("f.yaml: jobs[1] (b): cron: invalid cron expression \"61 * * * *\""),
            "{error}"
        );
    }

    #[test]
    fn a_job_is_written_with_only_what_differs_from_the_defaults() {
        let job = v1::Job {
            spec: Some(v1::JobSpec {
                name: "report".into(),
                handler: "shell".into(),
                args_json: r#"{"script":"echo one\necho two"}"#.into(),
                schedule: Some(v1::Schedule {
                    kind: Some(v1::schedule::Kind::Every("1d".into())),
                    tz: "Europe/Berlin".into(),
                    start: "2030-01-02T09:00:00+01:00".into(),
                }),
                retries: 2,
                overlap: "skip".into(),
                catch_up: "all".into(),
                labels: HashMap::from([("region".into(), "eu".into())]),
                paused: Some(false),
                alerts_enabled: Some(true),
                ..v1::JobSpec::default()
            }),
            ..v1::Job::default()
        };
        let yaml = to_yaml(std::slice::from_ref(&job)).unwrap();
        let expected = "\
jobs:
- name: report
  handler: shell
  every: 1d
  tz: Europe/Berlin
  start: 2030-01-02T09:00:00+01:00
  args:
    script: |-
      echo one
      echo two
  retries: 2
  catch_up: all
  labels:
    region: eu
";
        assert_eq!(yaml, expected);
        let back = parse(&yaml, false).unwrap();
        let spec = back[0].to_spec();
        let original = job.spec.unwrap();
        assert_eq!(spec.schedule, original.schedule);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&spec.args_json).unwrap(),
            serde_json::from_str::<serde_json::Value>(&original.args_json).unwrap()
        );
        assert_eq!(spec.labels, original.labels);
    }

    #[test]
    fn alert_settings_are_written_and_read_back() {
        let job = v1::Job {
            spec: Some(v1::JobSpec {
                name: "backup".into(),
                handler: "shell".into(),
                schedule: Some(v1::Schedule {
                    kind: Some(v1::schedule::Kind::Cron("0 3 * * *".into())),
                    tz: "UTC".into(),
                    start: String::new(),
                }),
                alerts_enabled: Some(false),
                alert_if_no_success: Some("1d2h".into()),
                expected_duration: Some("30m".into()),
                ..v1::JobSpec::default()
            }),
            ..v1::Job::default()
        };
        let yaml = to_yaml(std::slice::from_ref(&job)).unwrap();
        assert!(
            yaml.ends_with(
                "alerts_enabled: false\n  alert_if_no_success: 1d2h\n  expected_duration: 30m\n"
            ),
            "{yaml}"
        );
        let back = checked_specs("f.yaml", &parse(&yaml, false).unwrap()).unwrap();
        assert_eq!(back[0].alerts_enabled, Some(false));
        assert_eq!(back[0].alert_if_no_success.as_deref(), Some("1d2h"));
        assert_eq!(back[0].expected_duration.as_deref(), Some("30m"));

        let error = parse_error(
            "jobs:\n  - {name: a, handler: noop, every: 5m, alerts_enabled: maybe}\n",
            false,
        );
        assert!(
            error.starts_with("jobs[0] (a): alerts_enabled: invalid type"),
            "{error}"
        );
    }
}
