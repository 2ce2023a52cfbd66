//! Time zones and points in time as users write them, and the rules for local wall-clock
//! times that a DST change makes missing or repeated.
//!
//! Every instant in cronfleet is a `DateTime<Utc>`; a zone only matters when a user writes a
//! local time or reads one. Local times are resolved by one rule everywhere (schedules,
//! `--from`, `--start`, `at` jobs):
//!
//! - a local time inside a spring-forward gap does not exist; it resolves to the end of the
//!   gap (02:30 on the day Europe/Berlin jumps from 02:00 to 03:00 becomes 03:00 CEST);
//! - a local time inside a fall-back fold happens twice; it resolves to its first
//!   occurrence (02:30 on the day Europe/Berlin goes back from 03:00 to 02:00 is 02:30 CEST).

use chrono::format::ParseErrorKind;
use chrono::{
    DateTime, LocalResult, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// Why a time zone or a time was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// A name that is not in the IANA time zone database.
    #[error(
        "unknown time zone {name:?}{}; expected an IANA zone name such as UTC, Europe/Berlin, America/New_York",
        suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
    )]
    UnknownZone {
        name: String,
        /// The closest known zone name, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },
    /// A time that is neither RFC 3339 nor a local `YYYY-MM-DD HH:MM[:SS]` time.
    #[error(
        "invalid time {text:?}: {reason}; expected RFC 3339 such as 2026-03-29T02:30:00+01:00 or 2026-03-29T01:30:00Z, or a local time YYYY-MM-DD HH:MM[:SS] (read in {zone})"
    )]
    InvalidTime {
        text: String,
        reason: String,
        /// The zone a local time would have been read in.
        zone: String,
    },
}

/// Looks up an IANA time zone such as `UTC`, `Europe/Berlin` or `America/New_York`.
///
/// Surrounding whitespace is ignored and, when there is no exact match, so is letter case
/// (`europe/berlin`); an unknown name gets a "did you mean" suggestion when one is close.
pub fn parse_tz(name: &str) -> Result<Tz, TimeError> {
    let trimmed = name.trim();
    if let Ok(tz) = trimmed.parse::<Tz>() {
        return Ok(tz);
    }
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
    {
        return Ok(*tz);
    }
    Err(TimeError::UnknownZone {
        name: name.to_owned(),
        suggestion: closest_zone_name(trimmed),
    })
}

/// The known zone name nearest to `name` by edit distance, if it is near enough (at most a
/// third of the name's length, and at most 3 edits) to be a plausible typo.
fn closest_zone_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let lowered = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).clamp(1, 3);
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| (edit_distance(&lowered, &tz.name().to_ascii_lowercase()), tz))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, tz)| tz.name().to_owned())
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The local-time layouts accepted after RFC 3339, most specific first. chrono's `%.f`
/// also accepts no fraction at all.
const LOCAL_FORMATS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// Parses a point in time: RFC 3339 (`2026-03-29T02:30:00+01:00`, `...Z`) or a local time
/// `YYYY-MM-DD[T| ]HH:MM[:SS[.fff]]` interpreted in `tz`.
///
/// A local time inside a DST gap resolves to the end of the gap; one in a fold resolves to
/// its first occurrence (see [`resolve_local`]).
pub fn parse_time(text: &str, tz: Tz) -> Result<DateTime<Utc>, TimeError> {
    let trimmed = text.trim();
    let mut errors = Vec::with_capacity(LOCAL_FORMATS.len() + 1);
    match DateTime::parse_from_rfc3339(trimmed) {
        Ok(t) => return Ok(t.with_timezone(&Utc)),
        Err(e) => errors.push(e.kind()),
    }
    for format in LOCAL_FORMATS {
        match NaiveDateTime::parse_from_str(trimmed, format) {
            Ok(naive) => return Ok(resolve_local(naive, tz)),
            Err(e) => errors.push(e.kind()),
        }
    }
    // When some layout matched the shape but a value was wrong (month 13, February 30,
    // hour 25), say so; otherwise the text is in no accepted layout at all.
    let reason = if trimmed.is_empty() {
        "it is empty"
    } else if errors.contains(&ParseErrorKind::OutOfRange) {
        "a field is out of range (such as month 13, February 30 or hour 25)"
    } else if errors.contains(&ParseErrorKind::Impossible) {
        "its fields contradict each other"
    } else {
        "it is not in a recognised format"
    }
    .to_owned();
    Err(TimeError::InvalidTime {
        text: text.to_owned(),
        reason,
        zone: tz.name().to_owned(),
    })
}

/// The UTC offset `tz` has at instant `t`, in seconds east of UTC.
pub(crate) fn offset_seconds(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// Resolves a naive local wall-clock time in `tz`: a time inside a DST gap resolves to the
/// end of the gap (the first instant after it), one inside a fold to its first occurrence.
pub fn resolve_local(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => gap_end(naive, tz),
    }
}

/// The transition instant that ends the DST gap containing the missing local time `naive`.
///
/// The local clock jumps from before `naive` to after it between two consecutive seconds,
/// and that jump is the end of the gap. Every real UTC offset is under 26 hours, so the
/// instants 26 hours either side of `naive` read as UTC show local times before and after
/// it; a bisection on whole seconds keeps that invariant and ends on the jump.
fn gap_end(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    let local_at = |seconds: i64| -> Option<NaiveDateTime> {
        let t = DateTime::<Utc>::from_timestamp(seconds, 0)?;
        Some(t.naive_utc() + TimeDelta::seconds(offset_seconds(tz, t)))
    };
    let anchor = naive.and_utc().timestamp();
    let margin = 26 * 3600;
    let (mut before, mut after) = (anchor - margin, anchor + margin);
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        match local_at(middle) {
            Some(local) if local < naive => before = middle,
            _ => after = middle,
        }
    }
    // Falls back to reading the local time as UTC only at the very edge of chrono's range,
    // where no zone has gaps.
    DateTime::<Utc>::from_timestamp(after, 0).unwrap_or_else(|| naive.and_utc())
}

/// Formats an instant as RFC 3339 in `tz` with its UTC offset, with fractional seconds only
/// when they are non-zero: `2026-03-29T03:00:00+02:00`, `2026-01-31T10:00:00.250+00:00`.
pub fn format_in_zone(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn naive(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("test date")
    }

    #[test]
    fn parses_zones() {
        assert_eq!(parse_tz("UTC"), Ok(Tz::UTC));
        assert_eq!(parse_tz("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_tz(" America/New_York "), Ok(Tz::America__New_York));
        assert_eq!(parse_tz("europe/berlin"), Ok(Tz::Europe__Berlin));
    }

    #[test]
    fn unknown_zone_names_the_value_and_suggests() {
        let message = parse_tz("Europe/Berln").expect_err("typo").to_string();
        assert_eq!(
            message,
            r#"unknown time zone "Europe/Berln" (did you mean "Europe/Berlin"?); expected an IANA zone name such as UTC, Europe/Berlin, America/New_York"#
        );
        let message = parse_tz("Mars/Olympus").expect_err("unknown").to_string();
        assert_eq!(
            message,
            r#"unknown time zone "Mars/Olympus"; expected an IANA zone name such as UTC, Europe/Berlin, America/New_York"#
        );
        assert!(parse_tz("").is_err());
    }

    #[test]
    fn parses_rfc3339_and_local_times() {
        let berlin = Tz::Europe__Berlin;
        assert_eq!(
            parse_time("2026-03-29T02:30:00+01:00", berlin),
            Ok(utc("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            parse_time("2026-03-29T01:30:00Z", Tz::America__New_York),
            Ok(utc("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            parse_time("2026-01-15T10:00", berlin),
            Ok(utc("2026-01-15T09:00:00Z"))
        );
        assert_eq!(
            parse_time("2026-01-15 10:00:30", berlin),
            Ok(utc("2026-01-15T09:00:30Z"))
        );
        assert_eq!(
            parse_time("2026-07-15T10:00:30.250", berlin),
            Ok(utc("2026-07-15T08:00:30.250Z"))
        );
        assert_eq!(
            parse_time("2026-07-15 10:00", Tz::UTC),
            Ok(utc("2026-07-15T10:00:00Z"))
        );
    }

    #[test]
    fn local_times_in_gaps_and_folds() {
        let berlin = Tz::Europe__Berlin;
        // Spring forward: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            parse_time("2026-03-29 02:30", berlin),
            Ok(utc("2026-03-29T01:00:00Z"))
        );
        // Fall back: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            parse_time("2026-10-25 02:30", berlin),
            Ok(utc("2026-10-25T00:30:00Z"))
        );
        let new_york = Tz::America__New_York;
        assert_eq!(
            resolve_local(naive(2026, 3, 8, 2, 15, 0), new_york),
            utc("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            resolve_local(naive(2026, 11, 1, 1, 30, 0), new_york),
            utc("2026-11-01T05:30:00Z")
        );
        // Lord Howe moves by 30 minutes: 02:00 → 02:30 in October.
        assert_eq!(
            format_in_zone(
                resolve_local(naive(2026, 10, 4, 2, 10, 0), Tz::Australia__Lord_Howe),
                Tz::Australia__Lord_Howe
            ),
            "2026-10-04T02:30:00+11:00"
        );
        // Samoa skipped all of 2011-12-30.
        assert_eq!(
            format_in_zone(
                resolve_local(naive(2011, 12, 30, 9, 0, 0), Tz::Pacific__Apia),
                Tz::Pacific__Apia
            ),
            "2011-12-31T00:00:00+14:00"
        );
    }

    #[test]
    fn invalid_times_name_the_value() {
        let message = parse_time("tomorrow", Tz::Europe__Berlin)
            .expect_err("not a time")
            .to_string();
        assert_eq!(
            message,
            r#"invalid time "tomorrow": it is not in a recognised format; expected RFC 3339 such as 2026-03-29T02:30:00+01:00 or 2026-03-29T01:30:00Z, or a local time YYYY-MM-DD HH:MM[:SS] (read in Europe/Berlin)"#
        );
        assert!(message.contains("RFC 3339"), "{message}");
        assert!(message.contains("Europe/Berlin"), "{message}");
        let message = parse_time("2026-13-01T00:00:00Z", Tz::UTC)
            .expect_err("month 13")
            .to_string();
        assert!(message.contains("out of range"), "{message}");
        let message = parse_time("2026-02-30 10:00", Tz::UTC)
            .expect_err("February 30")
            .to_string();
        assert!(message.contains(r#""2026-02-30 10:00""#), "{message}");
        assert!(message.contains("out of range"), "{message}");
        let message = parse_time("2026-01-01 25:00", Tz::UTC)
            .expect_err("hour 25")
            .to_string();
        assert!(message.contains("out of range"), "{message}");
        assert!(
            parse_time(" ", Tz::UTC)
                .expect_err("empty")
                .to_string()
                .contains("it is empty")
        );
        assert!(parse_time("2026-01-01", Tz::UTC).is_err());
    }

    #[test]
    fn formats_in_zone_with_offset() {
        let t = utc("2026-03-29T01:00:00Z");
        assert_eq!(
            format_in_zone(t, Tz::Europe__Berlin),
            "2026-03-29T03:00:00+02:00"
        );
        assert_eq!(format_in_zone(t, Tz::UTC), "2026-03-29T01:00:00+00:00");
        assert_eq!(
            format_in_zone(utc("2026-01-31T10:00:00.25Z"), Tz::UTC),
            "2026-01-31T10:00:00.250+00:00"
        );
        assert_eq!(
            format_in_zone(t, Tz::Asia__Kolkata),
            "2026-03-29T06:30:00+05:30"
        );
    }

    #[test]
    fn formatted_times_parse_back() {
        for tz in [Tz::UTC, Tz::Europe__Berlin, Tz::Australia__Lord_Howe] {
            let t = utc("2026-10-25T00:30:00.5Z");
            assert_eq!(parse_time(&format_in_zone(t, tz), tz), Ok(t));
        }
    }
}
