//! How the console writes times, durations and states: the pieces every page shares.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

/// A moment as a page shows it: when (UTC, to the second), how far from now, and the
/// exact RFC 3339 time for `<time datetime>`.
#[derive(Clone, Debug, Default)]
pub struct When {
    pub text: String,
    pub relative: String,
    pub exact: String,
}

impl When {
    pub fn new(time: DateTime<Utc>, now: DateTime<Utc>) -> When {
        When {
            text: time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            relative: relative(time, now),
            exact: time.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    pub fn of(timestamp: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> Option<When> {
        timestamp
            .and_then(cronfleet_proto::datetime)
            .map(|time| When::new(time, now))
    }
}

/// `in 5 s`, `3 min ago`, `2 d ago`.
pub fn relative(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (time - now).num_seconds();
    let span = duration_words(seconds.unsigned_abs());
    if seconds.abs() < 1 {
        "now".to_owned()
    } else if seconds > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A length of time in its largest sensible unit: `45 s`, `12 min`, `5 h`, `3 d`.
pub fn duration_words(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7_200 => format!("{} min", seconds / 60),
        7_200..172_800 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// How long a run took (or has taken): `1.234 s`, `2 min 5 s`.
pub fn run_duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let millis = (to - from).num_milliseconds().max(0);
    if millis < 60_000 {
        format!("{}.{:03} s", millis / 1000, millis % 1000)
    } else {
        let seconds = millis / 1000;
        format!("{} min {} s", seconds / 60, seconds % 60)
    }
}

/// A fire time in the job's zone with its UTC offset, as `schedule next` prints it.
pub fn in_zone(time: DateTime<Utc>, tz: Tz) -> String {
    time.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z (%a)")
        .to_string()
}

/// The CSS class of a run state's badge.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "ok",
        "failed" | "timed_out" | "lost" => "bad",
        "running" | "dispatched" => "busy",
        "pending" => "wait",
        _ => "muted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_read_in_words() {
        let now = Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        assert_eq!(relative(now + chrono::TimeDelta::seconds(5), now), "in 5 s");
        assert_eq!(
            relative(now - chrono::TimeDelta::minutes(3), now),
            "3 min ago"
        );
        assert_eq!(relative(now - chrono::TimeDelta::days(3), now), "3 d ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            run_duration(now, now + chrono::TimeDelta::milliseconds(1234)),
            "1.234 s"
        );
        assert_eq!(
            run_duration(now, now + chrono::TimeDelta::seconds(125)),
            "2 min 5 s"
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let after_dst = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap();
        assert_eq!(
            in_zone(after_dst, berlin),
            "2026-03-29 03:30:00 +02:00 (Sun)"
        );
    }
}
