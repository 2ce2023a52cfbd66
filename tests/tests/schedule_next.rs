//! `cronfleet schedule next` end to end: the real binary, its exact output, and its errors.

use std::process::{Command, Output};

use cronfleet_e2e::cronfleet_binary;

/// Runs `cronfleet schedule next` with `(flag, value)` pairs; an empty value is left out.
fn schedule_next(args: &[(&str, &str)]) -> Output {
    let args = args
        .iter()
        .flat_map(|&(flag, value)| [flag, value])
        .filter(|arg| !arg.is_empty());
    Command::new(cronfleet_binary())
        .args(["schedule", "next"])
        .args(args)
        .output()
        .expect("run cronfleet")
}

/// Runs a command that must succeed and returns its stdout lines.
fn lines(args: &[(&str, &str)]) -> Vec<String> {
    let output = schedule_next(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    String::from_utf8(output.stdout)
        .expect("utf-8 output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs a command that must fail: non-zero exit, nothing on stdout, and an `error: …`
/// message on stderr that contains every one of `expected`. Returns the message.
fn fails(args: &[(&str, &str)], expected: &[&str]) -> String {
    let output = schedule_next(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(
        output.stdout.is_empty(),
        "{args:?} printed to stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{args:?}: {stderr:?} lacks {part:?}");
    }
    stderr
}

#[test]
fn berlin_spring_forward_gap() {
    // 02:30 does not exist on 2026-03-29: the fixed-time job runs once, at 03:00 CEST.
    assert_eq!(
        lines(&[
            ("--cron", "30 2 * * *"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-03-28T12:00:00Z"),
            ("--count", "3")
        ]),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00",
        ]
    );
    // An hourly job has no 02:30 that day.
    assert_eq!(
        lines(&[
            ("--cron", "30 * * * *"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-03-29 00:00"),
            ("--count", "3")
        ]),
        [
            "2026-03-29T00:30:00+01:00",
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:30:00+02:00",
        ]
    );
}

#[test]
fn berlin_fall_back_fold() {
    // 02:30 happens twice on 2026-10-25: the fixed-time job runs at the first one only.
    assert_eq!(
        lines(&[
            ("--cron", "30 2 * * *"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-10-24T12:00:00Z"),
            ("--count", "2")
        ]),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    // The hourly job runs on both passes, in real-time order.
    assert_eq!(
        lines(&[
            ("--cron", "30 * * * *"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-10-25 01:00"),
            ("--count", "4")
        ]),
        [
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:30:00+01:00",
        ]
    );
}

#[test]
fn new_york_gap_and_fold() {
    assert_eq!(
        lines(&[
            ("--cron", "30 2 * * *"),
            ("--tz", "America/New_York"),
            ("--from", "2026-03-07T12:00:00Z"),
            ("--count", "2")
        ]),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    assert_eq!(
        lines(&[
            ("--cron", "30 1 * * *"),
            ("--tz", "America/New_York"),
            ("--from", "2026-10-31T12:00:00Z"),
            ("--count", "2")
        ]),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(
        lines(&[
            ("--cron", "0 * * * *"),
            ("--tz", "America/New_York"),
            ("--from", "2026-11-01T00:30:00-04:00"),
            ("--count", "3")
        ]),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ]
    );
    // A daily interval keeps 02:30 local, moved to the end of the gap on the change day.
    assert_eq!(
        lines(&[
            ("--every", "1d"),
            ("--start", "2026-03-07 02:30"),
            ("--tz", "America/New_York"),
            ("--from", "2026-03-07 02:30"),
            ("--count", "2")
        ]),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
}

#[test]
fn every_month_clamps_to_the_last_day() {
    assert_eq!(
        lines(&[
            ("--every", "1mo"),
            ("--start", "2026-01-31T10:00:00Z"),
            ("--from", "2026-01-31T10:00:00Z"),
            ("--count", "4")
        ]),
        [
            "2026-02-28T10:00:00+00:00",
            "2026-03-31T10:00:00+00:00",
            "2026-04-30T10:00:00+00:00",
            "2026-05-31T10:00:00+00:00",
        ]
    );
}

#[test]
fn every_90s_is_elapsed_time_and_start_defaults_to_from() {
    // Across Berlin's spring-forward: 90 s of real time between slots.
    assert_eq!(
        lines(&[
            ("--every", "90s"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-03-29T01:58:00+01:00"),
            ("--count", "3")
        ]),
        [
            "2026-03-29T01:59:30+01:00",
            "2026-03-29T03:01:00+02:00",
            "2026-03-29T03:02:30+02:00",
        ]
    );
}

#[test]
fn default_count_is_five_and_from_defaults_to_now() {
    let slots = lines(&[("--every", "1h")]);
    assert_eq!(slots.len(), 5, "{slots:?}");
    assert!(slots.iter().all(|s| s.ends_with("+00:00")), "{slots:?}");
}

#[test]
fn cron_with_seconds_last_day_nth_weekday_and_macros() {
    assert_eq!(
        lines(&[
            ("--cron", "*/20 * * * * *"),
            ("--from", "2026-01-01T00:00:00Z"),
            ("--count", "3")
        ]),
        [
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00",
        ]
    );
    assert_eq!(
        lines(&[
            ("--cron", "0 18 L * *"),
            ("--from", "2026-01-01T00:00:00Z"),
            ("--count", "3")
        ]),
        [
            "2026-01-31T18:00:00+00:00",
            "2026-02-28T18:00:00+00:00",
            "2026-03-31T18:00:00+00:00",
        ]
    );
    // The second Tuesday of each month, 10:00 in Berlin.
    assert_eq!(
        lines(&[
            ("--cron", "0 10 * * TUE#2"),
            ("--tz", "Europe/Berlin"),
            ("--from", "2026-01-01T00:00:00Z"),
            ("--count", "3")
        ]),
        [
            "2026-01-13T10:00:00+01:00",
            "2026-02-10T10:00:00+01:00",
            "2026-03-10T10:00:00+01:00",
        ]
    );
    // Sundays at midnight.
    assert_eq!(
        lines(&[
            ("--cron", "@weekly"),
            ("--from", "2026-01-01T00:00:00Z"),
            ("--count", "2")
        ]),
        ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]
    );
}

#[test]
fn invalid_cron_expression() {
    fails(
        &[("--cron", "61 * * * *")],
        &[
            r#"invalid cron expression "61 * * * *""#,
            "minute",
            "out of range 0-59",
        ],
    );
    fails(
        &[("--cron", "* * *")],
        &[
            r#"invalid cron expression "* * *""#,
            "found 3 fields",
            "expected 5 fields",
        ],
    );
    fails(&[("--cron", "0 0 30 2 *")], &["never matches"]);
}

#[test]
fn unknown_time_zone() {
    fails(
        &[("--every", "5m"), ("--tz", "Europe/Berln")],
        &[
            r#"unknown time zone "Europe/Berln""#,
            "Europe/Berlin",
            "IANA",
        ],
    );
}

#[test]
fn zero_and_badly_written_intervals() {
    fails(
        &[("--every", "0s")],
        &[r#"invalid interval "0s""#, "greater than zero"],
    );
    fails(
        &[("--every", "5x")],
        &[
            r#"invalid interval "5x""#,
            r#"unknown unit "x""#,
            "s, m, h, d, w, mo",
        ],
    );
    fails(&[("--every", "-5m")], &[r#""-5m""#, "negative"]);
}

#[test]
fn count_must_be_in_range() {
    fails(
        &[("--every", "5m"), ("--count", "0")],
        &["'0'", "--count", "1..=10000"],
    );
    fails(
        &[("--every", "5m"), ("--count", "10001")],
        &["'10001'", "--count"],
    );
}

#[test]
fn exactly_one_schedule_is_required() {
    fails(
        &[("--every", "5m"), ("--cron", "* * * * *")],
        &["--every", "--cron", "cannot be used with"],
    );
    fails(&[], &["--every", "--cron", "required"]);
    fails(
        &[("--cron", "* * * * *"), ("--start", "2026-01-01T00:00:00Z")],
        &["--start", "cannot be used with", "--cron"],
    );
}

#[test]
fn unknown_flags_and_bad_times() {
    fails(
        &[("--every", "5m"), ("--frobnicate", "")],
        &["'--frobnicate'"],
    );
    fails(
        &[("--every", "5m"), ("--from", "tomorrow")],
        &["--from", r#"invalid time "tomorrow""#, "RFC 3339"],
    );
}
