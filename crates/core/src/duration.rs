//! Lengths of time as users write them.
//!
//! Two different things look alike on a command line and must not be confused:
//!
//! - an [`Interval`] is the step of an `every` schedule (`90s`, `5m`, `1d`, `1mo`). Its
//!   calendar units (`d`, `w`, `mo`) are not fixed lengths: a day across a DST change lasts
//!   23 or 25 hours and a month 28 to 31 days, so they are kept as calendar steps and only
//!   turned into instants by [`crate::schedule`] in the schedule's time zone;
//! - a fixed duration ([`parse_fixed_duration`]) is an exact amount of elapsed time, for
//!   timeouts, windows and grace periods (`30s`, `1h30m`, `250ms`); there a day is 24 hours.
//!
//! Both reject zero, negative and overflowing values with a message that names the bad
//! value and says what would be valid.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::TimeDelta;

/// A schedule interval as written by a user: `90s`, `5m`, `2h` (elapsed time) or `1d`, `2w`,
/// `1mo` (calendar steps in the schedule's zone).
///
/// Values produced by [`Interval::parse`] are always positive, whole seconds for
/// [`Interval::Elapsed`], and at most [`MAX_INTERVAL_DAYS`] days long (or
/// [`MAX_INTERVAL_MONTHS`] months).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    /// A fixed amount of elapsed time (`s`, `m`, `h`), independent of any time zone.
    Elapsed(TimeDelta),
    /// Calendar days in the schedule's zone, keeping the local wall-clock time.
    Days(u32),
    /// Calendar weeks (7 calendar days) in the schedule's zone.
    Weeks(u32),
    /// Calendar months in the schedule's zone, clamped to the month's last day.
    Months(u32),
}

/// The longest interval accepted, in days (100 years of 365 days): longer "schedules" are
/// almost certainly typos, and the cap keeps every slot computation far from overflow.
pub const MAX_INTERVAL_DAYS: u32 = 36_500;
/// The longest interval accepted in months (100 years).
pub const MAX_INTERVAL_MONTHS: u32 = 1_200;

/// The units an interval may use, as listed in error messages.
const INTERVAL_UNITS_HELP: &str = "valid units are s, m, h, d, w, mo (e.g. 90s, 5m, 1d, 1mo)";
/// The units a fixed duration may use, as listed in error messages.
const FIXED_UNITS_HELP: &str = "valid units are ms, s, m, h, d (e.g. 250ms, 30s, 1h30m)";

/// Why an interval or a fixed duration was rejected.
///
/// `what` is `"interval"` or `"duration"` and `text` is the value exactly as given, so every
/// message names the offending input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing (or only whitespace) was given.
    #[error("invalid {what} {text:?}: it is empty; {help}")]
    Empty {
        what: &'static str,
        text: String,
        help: &'static str,
    },
    /// A unit without a number in front of it, such as `m` or `h30m`.
    #[error("invalid {what} {text:?}: missing number before the unit; {help}")]
    MissingNumber {
        what: &'static str,
        text: String,
        help: &'static str,
    },
    /// A number without a unit, such as `90`.
    #[error("invalid {what} {text:?}: missing unit after {number}; {help}")]
    MissingUnit {
        what: &'static str,
        text: String,
        number: String,
        help: &'static str,
    },
    /// A unit that is not one of the valid ones.
    #[error("invalid {what} {text:?}: unknown unit {unit:?}; {help}")]
    UnknownUnit {
        what: &'static str,
        text: String,
        unit: String,
        help: &'static str,
    },
    /// A number with a fractional part, such as `1.5h`.
    #[error(
        "invalid {what} {text:?}: the number must be a whole number; use a smaller unit instead (e.g. 90m rather than 1.5h)"
    )]
    Fractional { what: &'static str, text: String },
    /// A negative value such as `-5m`.
    #[error("invalid {what} {text:?}: it is negative; it must be greater than zero")]
    Negative { what: &'static str, text: String },
    /// Zero, such as `0s` or `0h0m`.
    #[error("invalid {what} {text:?}: it is zero; it must be greater than zero")]
    Zero { what: &'static str, text: String },
    /// A value too large to be meaningful or representable.
    #[error("invalid {what} {text:?}: too large; the maximum is {max}")]
    TooLarge {
        what: &'static str,
        text: String,
        max: String,
    },
    /// An interval written as a combination such as `1h30m`.
    #[error(
        "invalid interval {text:?}: an interval takes a single number and unit; write it in one unit (e.g. 90m rather than 1h30m)"
    )]
    Combined { text: String },
    /// A fixed duration whose units are not in decreasing order or repeat (`30m1h`, `1m1m`).
    #[error(
        "invalid duration {text:?}: unit {unit:?} is out of order; write units from largest to smallest, each at most once (e.g. 1h30m)"
    )]
    UnitOrder { text: String, unit: String },
}

/// Units of an interval and how each maps to an [`Interval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IntervalUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

impl IntervalUnit {
    fn from_suffix(unit: &str) -> Option<IntervalUnit> {
        Some(match unit {
            "s" => IntervalUnit::Seconds,
            "m" => IntervalUnit::Minutes,
            "h" => IntervalUnit::Hours,
            "d" => IntervalUnit::Days,
            "w" => IntervalUnit::Weeks,
            "mo" => IntervalUnit::Months,
            _ => return None,
        })
    }

    /// The largest count accepted for this unit, all equal to 100 years.
    fn max_count(self) -> u64 {
        let days = u64::from(MAX_INTERVAL_DAYS);
        match self {
            IntervalUnit::Seconds => days * 86_400,
            IntervalUnit::Minutes => days * 1_440,
            IntervalUnit::Hours => days * 24,
            IntervalUnit::Days => days,
            IntervalUnit::Weeks => days / 7,
            IntervalUnit::Months => u64::from(MAX_INTERVAL_MONTHS),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            IntervalUnit::Seconds => "s",
            IntervalUnit::Minutes => "m",
            IntervalUnit::Hours => "h",
            IntervalUnit::Days => "d",
            IntervalUnit::Weeks => "w",
            IntervalUnit::Months => "mo",
        }
    }
}

/// One `<number><unit>` piece of a duration text, before its unit is interpreted.
#[derive(Debug)]
struct Component<'a> {
    digits: &'a str,
    unit: &'a str,
}

/// Splits `text` (already trimmed, non-empty) into `<digits><unit>` components, reporting
/// the shape errors that both kinds of durations share.
fn split_components<'a>(
    text: &'a str,
    what: &'static str,
    help: &'static str,
) -> Result<Vec<Component<'a>>, DurationError> {
    if text.starts_with('-') {
        return Err(DurationError::Negative {
            what,
            text: text.to_owned(),
        });
    }
    let mut components = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, after) = rest.split_at(digits_len);
        if after.starts_with('.') || after.starts_with(',') {
            return Err(DurationError::Fractional {
                what,
                text: text.to_owned(),
            });
        }
        // Whitespace between a number and its unit is harmless (`5 m`), so it is allowed.
        let after = after.trim_start();
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || c.is_whitespace())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after_unit) = after.split_at(unit_len);
        if digits.is_empty() {
            return Err(DurationError::MissingNumber {
                what,
                text: text.to_owned(),
                help,
            });
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                what,
                text: text.to_owned(),
                number: digits.to_owned(),
                help,
            });
        }
        components.push(Component { digits, unit });
        rest = after_unit.trim_start();
    }
    Ok(components)
}

/// Parses the digits of a component; anything that does not fit a `u64` is too large.
fn parse_count(
    digits: &str,
    what: &'static str,
    text: &str,
    max: impl FnOnce() -> String,
) -> Result<u64, DurationError> {
    digits.parse::<u64>().map_err(|_| DurationError::TooLarge {
        what,
        text: text.to_owned(),
        max: max(),
    })
}

impl Interval {
    /// Parses an interval such as `90s`, `5m`, `2h`, `1d`, `2w` or `1mo`.
    ///
    /// Surrounding whitespace is ignored. The number must be a positive whole number and
    /// the interval at most 100 years; units are case-sensitive (`m` is minutes, `mo`
    /// months).
    pub fn parse(text: &str) -> Result<Interval, DurationError> {
        const WHAT: &str = "interval";
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DurationError::Empty {
                what: WHAT,
                text: text.to_owned(),
                help: INTERVAL_UNITS_HELP,
            });
        }
        let components = split_components(trimmed, WHAT, INTERVAL_UNITS_HELP)?;
        let [component] = components.as_slice() else {
            return Err(DurationError::Combined {
                text: trimmed.to_owned(),
            });
        };
        let unit = IntervalUnit::from_suffix(component.unit).ok_or_else(|| {
            DurationError::UnknownUnit {
                what: WHAT,
                text: trimmed.to_owned(),
                unit: component.unit.to_owned(),
                help: INTERVAL_UNITS_HELP,
            }
        })?;
        let max = unit.max_count();
        let too_large = || DurationError::TooLarge {
            what: WHAT,
            text: trimmed.to_owned(),
            max: format!("{max}{} (100 years)", unit.suffix()),
        };
        let count = parse_count(component.digits, WHAT, trimmed, || {
            format!("{max}{} (100 years)", unit.suffix())
        })?;
        if count == 0 {
            return Err(DurationError::Zero {
                what: WHAT,
                text: trimmed.to_owned(),
            });
        }
        if count > max {
            return Err(too_large());
        }
        // `count <= max_count()`, so every conversion below is in range.
        let as_u32 = |n: u64| u32::try_from(n).map_err(|_| too_large());
        let as_i64 = |n: u64| i64::try_from(n).map_err(|_| too_large());
        Ok(match unit {
            IntervalUnit::Seconds => Interval::Elapsed(TimeDelta::seconds(as_i64(count)?)),
            IntervalUnit::Minutes => Interval::Elapsed(TimeDelta::minutes(as_i64(count)?)),
            IntervalUnit::Hours => Interval::Elapsed(TimeDelta::hours(as_i64(count)?)),
            IntervalUnit::Days => Interval::Days(as_u32(count)?),
            IntervalUnit::Weeks => Interval::Weeks(as_u32(count)?),
            IntervalUnit::Months => Interval::Months(as_u32(count)?),
        })
    }

    /// Whether the interval moves time forward: a positive elapsed time or a non-zero
    /// number of calendar units. [`Interval::parse`] only produces positive intervals; one
    /// built by hand may not be, and a schedule treats it as having no step at all.
    pub fn is_positive(&self) -> bool {
        match *self {
            Interval::Elapsed(delta) => delta > TimeDelta::zero(),
            Interval::Days(n) | Interval::Weeks(n) | Interval::Months(n) => n > 0,
        }
    }

    /// Whether this interval is a calendar step (`d`, `w`, `mo`) rather than elapsed time.
    pub fn is_calendar(&self) -> bool {
        !matches!(self, Interval::Elapsed(_))
    }
}

impl fmt::Display for Interval {
    /// Writes the canonical text: the largest unit that expresses the value exactly
    /// (`90s`, `5m`, `2h`, `1d`, `2w`, `1mo`), which parses back to the same value.
    ///
    /// An elapsed interval with a sub-second part (only possible when built by hand) is
    /// written in milliseconds (`1500ms`), which [`Interval::parse`] does not accept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Interval::Elapsed(delta) => {
                if delta.subsec_nanos() != 0 {
                    return write!(f, "{}ms", delta.num_milliseconds());
                }
                let seconds = delta.num_seconds();
                if seconds != 0 && seconds % 3600 == 0 {
                    write!(f, "{}h", seconds / 3600)
                } else if seconds != 0 && seconds % 60 == 0 {
                    write!(f, "{}m", seconds / 60)
                } else {
                    write!(f, "{seconds}s")
                }
            }
            Interval::Days(n) => write!(f, "{n}d"),
            Interval::Weeks(n) => write!(f, "{n}w"),
            Interval::Months(n) => write!(f, "{n}mo"),
        }
    }
}

impl FromStr for Interval {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Interval, DurationError> {
        Interval::parse(text)
    }
}

/// The units of a fixed duration, largest first, with their length in milliseconds.
const FIXED_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The longest fixed duration accepted: 100 years of 365 days. Timeouts and windows beyond
/// that are typos, and the cap keeps additions to timestamps far from overflow.
pub const MAX_FIXED_DURATION: Duration = Duration::from_secs(MAX_INTERVAL_DAYS as u64 * 86_400);

/// Parses a fixed length of time (timeouts, windows, grace periods): `250ms`, `30s`, `5m`,
/// `2h`, `1d` (24 hours), or a combination from the largest unit to the smallest such as
/// `1h30m` or `1m30s500ms`. Zero is rejected, as is anything over 100 years.
pub fn parse_fixed_duration(text: &str) -> Result<Duration, DurationError> {
    const WHAT: &str = "duration";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty {
            what: WHAT,
            text: text.to_owned(),
            help: FIXED_UNITS_HELP,
        });
    }
    let max_ms = u64::try_from(MAX_FIXED_DURATION.as_millis()).unwrap_or(u64::MAX);
    let too_large = || DurationError::TooLarge {
        what: WHAT,
        text: trimmed.to_owned(),
        max: format!("{}d (100 years)", MAX_INTERVAL_DAYS),
    };
    let mut total_ms: u64 = 0;
    // Index into FIXED_UNITS of the previous component's unit: each next one must be smaller.
    let mut previous: Option<usize> = None;
    for component in split_components(trimmed, WHAT, FIXED_UNITS_HELP)? {
        let index = FIXED_UNITS
            .iter()
            .position(|(suffix, _)| *suffix == component.unit)
            .ok_or_else(|| DurationError::UnknownUnit {
                what: WHAT,
                text: trimmed.to_owned(),
                unit: component.unit.to_owned(),
                help: FIXED_UNITS_HELP,
            })?;
        if previous.is_some_and(|p| index <= p) {
            return Err(DurationError::UnitOrder {
                text: trimmed.to_owned(),
                unit: component.unit.to_owned(),
            });
        }
        previous = Some(index);
        let count = parse_count(component.digits, WHAT, trimmed, || {
            format!("{}d (100 years)", MAX_INTERVAL_DAYS)
        })?;
        total_ms = count
            .checked_mul(FIXED_UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_large)?;
    }
    if total_ms == 0 {
        return Err(DurationError::Zero {
            what: WHAT,
            text: trimmed.to_owned(),
        });
    }
    if total_ms > max_ms {
        return Err(too_large());
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a fixed duration in the form [`parse_fixed_duration`] reads back: the units from
/// largest to smallest, zero components left out (`1h30m`, `250ms`, `1d2h`, `1m30s`).
///
/// Precision below a millisecond is dropped, and a zero duration is written `0s` (which the
/// parser rejects, as zero is never a valid setting).
pub fn format_fixed_duration(d: Duration) -> String {
    let mut remaining_ms = d.as_millis();
    if remaining_ms == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (suffix, unit_ms) in FIXED_UNITS {
        let unit_ms = u128::from(unit_ms);
        let count = remaining_ms / unit_ms;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(suffix);
            remaining_ms -= count * unit_ms;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> String {
        Interval::parse(text)
            .expect_err("should be rejected")
            .to_string()
    }

    fn fixed_err(text: &str) -> String {
        parse_fixed_duration(text)
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn parses_every_interval_unit() {
        assert_eq!(
            Interval::parse("90s"),
            Ok(Interval::Elapsed(TimeDelta::seconds(90)))
        );
        assert_eq!(
            Interval::parse("5m"),
            Ok(Interval::Elapsed(TimeDelta::minutes(5)))
        );
        assert_eq!(
            Interval::parse("2h"),
            Ok(Interval::Elapsed(TimeDelta::hours(2)))
        );
        assert_eq!(Interval::parse("1d"), Ok(Interval::Days(1)));
        assert_eq!(Interval::parse("2w"), Ok(Interval::Weeks(2)));
        assert_eq!(Interval::parse("1mo"), Ok(Interval::Months(1)));
        assert_eq!(Interval::parse(" 3mo "), Ok(Interval::Months(3)));
        assert_eq!(Interval::parse("5 m"), "5m".parse());
    }

    #[test]
    fn interval_display_is_canonical_and_round_trips() {
        for (text, canonical) in [
            ("90s", "90s"),
            ("60s", "1m"),
            ("120m", "2h"),
            ("90m", "90m"),
            ("3600s", "1h"),
            ("48h", "48h"),
            ("1d", "1d"),
            ("14d", "14d"),
            ("2w", "2w"),
            ("1mo", "1mo"),
            ("12mo", "12mo"),
        ] {
            let interval = Interval::parse(text).expect(text);
            assert_eq!(interval.to_string(), canonical, "display of {text}");
            assert_eq!(
                Interval::parse(canonical),
                Ok(interval),
                "round trip {text}"
            );
        }
    }

    #[test]
    fn interval_errors_name_the_value_and_what_is_valid() {
        assert_eq!(
            err("5x"),
            r#"invalid interval "5x": unknown unit "x"; valid units are s, m, h, d, w, mo (e.g. 90s, 5m, 1d, 1mo)"#
        );
        assert_eq!(
            err("0s"),
            r#"invalid interval "0s": it is zero; it must be greater than zero"#
        );
        assert_eq!(
            err("-5m"),
            r#"invalid interval "-5m": it is negative; it must be greater than zero"#
        );
        assert_eq!(
            err("m"),
            r#"invalid interval "m": missing number before the unit; valid units are s, m, h, d, w, mo (e.g. 90s, 5m, 1d, 1mo)"#
        );
        assert_eq!(
            err("90"),
            r#"invalid interval "90": missing unit after 90; valid units are s, m, h, d, w, mo (e.g. 90s, 5m, 1d, 1mo)"#
        );
        assert_eq!(
            err(""),
            r#"invalid interval "": it is empty; valid units are s, m, h, d, w, mo (e.g. 90s, 5m, 1d, 1mo)"#
        );
        assert!(err("1.5h").contains("whole number"), "{}", err("1.5h"));
        assert!(err("1h30m").contains("single number and unit"));
        assert!(err("5M").contains(r#"unknown unit "M""#));
        assert!(err("5ms").contains(r#"unknown unit "ms""#));
        assert_eq!(
            err("99999999999999999999999s"),
            r#"invalid interval "99999999999999999999999s": too large; the maximum is 3153600000s (100 years)"#
        );
        assert!(err("1201mo").contains("the maximum is 1200mo"));
        assert!(err("36501d").contains("the maximum is 36500d"));
        assert_eq!(Interval::parse("36500d"), Ok(Interval::Days(36_500)));
        assert!(matches!(
            Interval::parse("0mo"),
            Err(DurationError::Zero { .. })
        ));
    }

    #[test]
    fn parses_fixed_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_fixed_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_fixed_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_fixed_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_fixed_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_fixed_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_fixed_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_fixed_duration("1m30s500ms"), Ok(ms(90_500)));
        assert_eq!(parse_fixed_duration("1h 30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_fixed_duration("0h5m"), Ok(ms(300_000)));
    }

    #[test]
    fn fixed_duration_errors() {
        assert!(fixed_err("0s").contains("it is zero"));
        assert!(fixed_err("0h0m").contains("it is zero"));
        assert!(fixed_err("-1s").contains("negative"));
        assert_eq!(
            fixed_err("5w"),
            r#"invalid duration "5w": unknown unit "w"; valid units are ms, s, m, h, d (e.g. 250ms, 30s, 1h30m)"#
        );
        assert!(fixed_err("30m1h").contains(r#"unit "h" is out of order"#));
        assert!(fixed_err("1m1m").contains("out of order"));
        assert!(fixed_err("10").contains("missing unit after 10"));
        assert!(fixed_err("h").contains("missing number"));
        assert!(fixed_err("1.5s").contains("whole number"));
        assert!(fixed_err("36501d").contains("too large"));
        assert!(fixed_err("18446744073709551616ms").contains("too large"));
        assert!(fixed_err("  ").contains("empty"));
    }

    #[test]
    fn formats_fixed_durations() {
        assert_eq!(format_fixed_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_fixed_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_fixed_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_fixed_duration(Duration::from_secs(93_600)), "1d2h");
        assert_eq!(format_fixed_duration(Duration::ZERO), "0s");
        assert_eq!(
            format_fixed_duration(Duration::from_micros(1_500)),
            "1ms",
            "sub-millisecond precision is dropped"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn fixed_durations_round_trip(ms in 1u64..=MAX_FIXED_DURATION.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            let text = format_fixed_duration(d);
            prop_assert_eq!(parse_fixed_duration(&text), Ok(d), "{}", text);
        }

        #[test]
        fn intervals_round_trip(count in 1u32..=1200, unit in 0usize..6) {
            let suffix = ["s", "m", "h", "d", "w", "mo"][unit];
            let interval = Interval::parse(&format!("{count}{suffix}")).expect("valid");
            prop_assert!(interval.is_positive());
            prop_assert_eq!(Interval::parse(&interval.to_string()), Ok(interval));
        }
    }
}
