//! Schedules: when a job's slots are (DESIGN §3 "Schedules").
//!
//! A [`Schedule`] is one of `every INTERVAL` (from a start time), `cron EXPR` or `at TIME`,
//! with an IANA time zone. It answers which instants are slots: the next one after a time,
//! the previous one before it, the ones in a range. Every answer is computed from the
//! schedule alone, never from when a job last ran, so nothing drifts and a restarted
//! scheduler finds exactly the same slots.
//!
//! DST rules, the contract the rest of cronfleet relies on:
//!
//! - `every` with `s`/`m`/`h` is elapsed time and ignores DST. With `d`/`w`/`mo`, slot k is
//!   the local wall-clock time of `start` k calendar steps later, resolved by
//!   [`crate::time::resolve_local`] (a gap moves it to the end of the gap, a fold picks the
//!   first occurrence); `mo` keeps the day of month of `start`, clamped to the month's length.
//! - `cron` matches local wall-clock times. When the hour field names fixed hours (no `*` and
//!   no `/`), each matching local time is a "fixed local time": inside a spring-forward gap it
//!   runs once, at the end of the gap; inside a fall-back fold it runs once, at its first
//!   occurrence. When the hour field is a wildcard or a step (`*`, `*/2`, `1-23/2`), the job
//!   follows the clock: matching times in a gap do not exist and are skipped, matching times
//!   in a fold run on both passes, in real-time order.
//!
//! croner supplies the cron syntax and the wall-clock matching (`L`, `W`, `#`, names,
//! day-of-month/day-of-week rules). The zone handling is done here rather than by croner
//! because croner classifies a job as fixed-time only when seconds, minute and hour are all
//! single values: `0 2,14 * * *` or `*/15 2 * * *` would then run twice in a fold and not at
//! all on a spring-forward day, which is not what §3 promises for fixed local times. Doing it
//! here also covers gaps longer than two hours (Samoa skipped 2011-12-30), where croner 4.0.3
//! gives up with `TimeSearchLimitExceeded` and its iterator would end the schedule for good.

use std::fmt;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike,
    Utc,
};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

use crate::duration::{DurationError, Interval};
use crate::time::{TimeError, format_in_zone, offset_seconds, parse_time, parse_tz, resolve_local};

/// When a job's slots are: a kind of schedule and the time zone it is read in.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: ScheduleKind,
    tz: Tz,
}

/// The three kinds of schedule.
#[derive(Clone, Debug)]
pub enum ScheduleKind {
    /// Slot k is `start + k × interval`, for k ≥ 0.
    Every {
        interval: Interval,
        start: DateTime<Utc>,
    },
    /// The local wall-clock times matching a cron expression.
    Cron {
        /// The expression as the user wrote it, trimmed.
        expr: String,
        /// The parsed expression.
        pattern: CronPattern,
    },
    /// One slot.
    At(DateTime<Utc>),
}

/// The storable form of a schedule.
///
/// `kind` is `"every"`, `"cron"` or `"at"`; `expr` is the interval (`"5m"`), the cron text or
/// the RFC 3339 UTC time; `start` is set only for `every`; `tz` is the IANA zone name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleParts {
    pub kind: String,
    pub expr: String,
    pub start: Option<DateTime<Utc>>,
    pub tz: String,
}

/// Why a schedule could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// A cron expression that does not parse, or can never match.
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron { expr: String, reason: String },
    /// A bad `every` interval.
    #[error(transparent)]
    Interval(#[from] DurationError),
    /// A bad time zone or `at` time.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// A stored kind that is not `every`, `cron` or `at`.
    #[error("unknown schedule kind {kind:?}; expected every, cron or at")]
    UnknownKind { kind: String },
    /// An `every` schedule stored without its start time.
    #[error("an every schedule needs a start time; none was given for every {expr}")]
    MissingStart { expr: String },
    /// A start time stored with a schedule kind that has none.
    #[error("a start time is only valid for every schedules, not for {kind}")]
    UnexpectedStart { kind: String },
}

/// The fields of a cron expression, in order (the seconds field is optional when written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CronField {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The macros accepted in place of fields, and what each stands for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const FIELD_COUNT_HELP: &str = "expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or a macro (@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually)";

impl CronField {
    const ALL: [CronField; 6] = [
        CronField::Second,
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// The smallest and largest number the field accepts.
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// The values the field accepts, for error messages.
    fn valid_values(self) -> &'static str {
        match self {
            CronField::Second | CronField::Minute => "0-59",
            CronField::Hour => "0-23",
            CronField::DayOfMonth => "1-31",
            CronField::Month => "1-12 or JAN-DEC",
            CronField::DayOfWeek => "0-7 or SUN-SAT (0 and 7 are Sunday)",
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &MONTH_NAMES,
            CronField::DayOfWeek => &WEEKDAY_NAMES,
            _ => &[],
        }
    }

    /// Where names start counting: JAN is 1, SUN is 0.
    fn first_name_value(self) -> u32 {
        match self {
            CronField::Month => 1,
            _ => 0,
        }
    }
}

/// Checks one field of a cron expression and explains the first problem found.
///
/// croner's own errors do not say which field or value is wrong ("Number out of bounds."),
/// and croner accepts month and weekday names in any field; checking the syntax here first
/// gives precise messages and keeps names where they belong.
fn check_field(field: CronField, text: &str) -> Result<(), String> {
    for item in text.split(',') {
        check_item(field, item)?;
    }
    Ok(())
}

fn check_item(field: CronField, item: &str) -> Result<(), String> {
    if item.is_empty() {
        return Err(
            "empty entry in the list; separate values with single commas (e.g. 1,15)".to_owned(),
        );
    }
    let (_, max) = field.bounds();
    if let Some((base, step)) = item.split_once('/') {
        let step_value = match step.parse::<u32>() {
            Ok(n) if step.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "step {step:?} in {item:?} is not a whole number; write */N or A-B/N"
                ));
            }
        };
        if step_value == 0 {
            return Err(format!("step 0 in {item:?} must be at least 1"));
        }
        if step_value > max {
            return Err(format!(
                "step {step_value} in {item:?} is larger than the {} field's largest value {max}",
                field.name()
            ));
        }
        return match base {
            "*" => Ok(()),
            "" => Err(format!(
                "{item:?} needs a start; write */{step} or A-B/{step}"
            )),
            _ if base.contains('-') => check_range(field, base).map(|_| ()),
            _ => {
                check_value(field, base)?;
                Err(format!(
                    "a step needs a range: write {base}-{max}/{step} or */{step} instead of {item:?}"
                ))
            }
        };
    }
    if item == "*" {
        return Ok(());
    }
    if item == "?" {
        return if matches!(field, CronField::DayOfMonth | CronField::DayOfWeek) {
            Ok(())
        } else {
            Err("\"?\" is only allowed in the day-of-month and day-of-week fields".to_owned())
        };
    }
    let upper = item.to_ascii_uppercase();
    match field {
        CronField::DayOfMonth => {
            if upper == "L" || upper == "LW" {
                return Ok(());
            }
            if let Some(day) = upper.strip_suffix('W')
                && !day.is_empty()
                && day.bytes().all(|b| b.is_ascii_digit())
            {
                return check_value(field, day).map(|_| ());
            }
        }
        CronField::DayOfWeek => {
            if let Some((day, nth)) = upper.split_once('#') {
                check_value(field, day)?;
                return match nth.parse::<u32>() {
                    Ok(1..=5) if nth.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
                    _ => Err(format!(
                        "occurrence {nth:?} in {item:?} must be 1-5 (e.g. MON#2 is the second Monday of the month)"
                    )),
                };
            }
            if upper == "L" {
                return Err(
                    "\"L\" alone is ambiguous in the day-of-week field; write nL for the last given weekday of the month (e.g. 5L or FRIL is the last Friday)"
                        .to_owned(),
                );
            }
            if let Some(day) = upper.strip_suffix('L') {
                return check_value(field, day).map(|_| ());
            }
        }
        _ => {}
    }
    if item.contains('-') {
        return check_range(field, item).map(|_| ());
    }
    check_value(field, item).map(|_| ())
}

/// Checks an `A-B` range and returns its bounds.
fn check_range(field: CronField, text: &str) -> Result<(u32, u32), String> {
    let Some((from, to)) = text.split_once('-') else {
        return Err(format!("{text:?} is not a range; write A-B"));
    };
    if from.is_empty() || to.is_empty() || to.contains('-') {
        return Err(format!("{text:?} is not a range; write A-B (e.g. 1-5)"));
    }
    let (from_value, to_value) = (check_value(field, from)?, check_value(field, to)?);
    if from_value > to_value {
        return Err(format!(
            "range {text:?} goes backwards; write the smaller value first (ranges do not wrap around)"
        ));
    }
    Ok((from_value, to_value))
}

/// Checks a single number or name and returns its value.
fn check_value(field: CronField, text: &str) -> Result<u32, String> {
    let (min, max) = field.bounds();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // A number too long for u32 is out of range as well.
        let value = text.parse::<u32>().unwrap_or(u32::MAX);
        if value < min || value > max {
            return Err(format!("value {text} is out of range {min}-{max}"));
        }
        return Ok(value);
    }
    if let Some(index) = field
        .names()
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        // The arrays hold at most 12 names, so the index always fits.
        return Ok(field.first_name_value() + u32::try_from(index).unwrap_or(0));
    }
    let hint = if (text.contains(['L', 'W', 'l', 'w']) && field != CronField::DayOfMonth)
        || text.contains('#')
    {
        " (L, W and # are only allowed in the day-of-month and day-of-week fields: L, LW and nW in day-of-month, nL and n#k in day-of-week)"
    } else {
        ""
    };
    Err(format!(
        "{text:?} is not a valid {} value; use {}{hint}",
        field.name(),
        field.valid_values()
    ))
}

/// A parsed, validated cron expression.
#[derive(Clone, Debug)]
pub struct CronPattern {
    /// Boxed: croner's parsed form is a few hundred bytes, and schedules are moved around.
    cron: Box<croner::Cron>,
    /// Whether the hour field names fixed hours (no `*`, no `/`), which decides how the
    /// expression behaves across DST changes (see the module documentation).
    fixed_hours: bool,
}

impl CronPattern {
    /// Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6
    /// with a leading seconds field, or a macro.
    pub fn parse(expr: &str) -> Result<CronPattern, ScheduleError> {
        let expr = expr.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        let expanded = if expr.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(expr))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    invalid(format!(
                        "unknown macro {expr:?}; valid macros are @hourly, @daily, @midnight, @weekly, @monthly, @yearly and @annually"
                    ))
                })?
        } else {
            expr
        };
        let mut fields: Vec<&str> = expanded.split_whitespace().collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            0 => return Err(invalid(format!("it is empty; {FIELD_COUNT_HELP}"))),
            n => return Err(invalid(format!("found {n} fields; {FIELD_COUNT_HELP}"))),
        }
        for (field, text) in CronField::ALL.into_iter().zip(&fields) {
            check_field(field, text)
                .map_err(|reason| invalid(format!("{} field {text:?}: {reason}", field.name())))?;
        }
        let normalized = fields.join(" ");
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&normalized)
            // The checks above are meant to catch everything croner rejects; if one slips
            // through, croner's own words are still better than nothing.
            .map_err(|e| invalid(e.to_string()))?;
        let fixed_hours = !fields[2].contains(['*', '/']);
        let pattern = CronPattern {
            cron: Box::new(cron),
            fixed_hours,
        };
        pattern.check_can_match().map_err(invalid)?;
        Ok(pattern)
    }

    /// Rejects expressions that name only dates that do not exist (`0 0 30 2 *`).
    ///
    /// The Gregorian calendar repeats exactly every 400 years, weekdays included, so an
    /// expression that matches no date in 400 consecutive years matches none ever.
    fn check_can_match(&self) -> Result<(), String> {
        let from = NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .ok_or_else(|| "internal error: bad reference date".to_owned())?;
        match self.cron.find_next_occurrence(&from, true) {
            Ok(found) if found.year() < 2400 => Ok(()),
            _ => Err(
                "it never matches: no month has the day of month it names (e.g. 30 or 31 in February)"
                    .to_owned(),
            ),
        }
    }

    /// Whether a local wall-clock time matches the expression (sub-seconds are ignored).
    pub fn matches_local(&self, local: NaiveDateTime) -> bool {
        self.cron
            .is_time_matching(&truncate_to_second(local))
            .unwrap_or(false)
    }

    /// Whether the hour field names fixed hours: such times run once across DST changes
    /// (end of a gap, first pass of a fold) rather than following the clock.
    pub fn has_fixed_hours(&self) -> bool {
        self.fixed_hours
    }

    /// The first matching local time strictly after `local` (a whole second).
    fn next_local(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&local, false).ok()
    }

    /// The last matching local time before `local` (a whole second), or at it if `inclusive`.
    fn previous_local(&self, local: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron.find_previous_occurrence(&local, inclusive).ok()
    }
}

fn truncate_to_second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The local wall-clock time of instant `t` in `tz`.
fn local_of(t: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The first instant in `(after, until]` whose UTC offset differs from the offset at
/// `after`: the DST transition between them. `until` must have a different offset.
fn transition_between(tz: Tz, after: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
    let offset_before = offset_seconds(tz, after);
    // Transitions happen on whole seconds; bisect on them.
    // Both ends may carry sub-seconds; their whole seconds are in the same offset spans.
    let (mut same, mut different) = (after.timestamp(), until.timestamp());
    while different - same > 1 {
        let middle = same + (different - same) / 2;
        match DateTime::<Utc>::from_timestamp(middle, 0) {
            Some(t) if offset_seconds(tz, t) == offset_before => same = middle,
            _ => different = middle,
        }
    }
    DateTime::<Utc>::from_timestamp(different, 0).unwrap_or(until)
}

/// Which pass of a fall-back fold an instant is on, if its local time is repeated.
enum FoldPass {
    NotInFold,
    /// On the first pass; the fold's transition (start of the second pass) is given.
    First {
        transition: DateTime<Utc>,
    },
    /// On the second pass; the fold's transition is given.
    Second {
        transition: DateTime<Utc>,
    },
}

fn fold_pass(t: DateTime<Utc>, tz: Tz) -> FoldPass {
    match tz.from_local_datetime(&local_of(t, tz)) {
        LocalResult::Ambiguous(earlier, later) => {
            let (earlier, later) = (earlier.with_timezone(&Utc), later.with_timezone(&Utc));
            if t == earlier {
                FoldPass::First {
                    transition: transition_between(tz, earlier, later),
                }
            } else {
                FoldPass::Second {
                    transition: transition_between(tz, earlier, later),
                }
            }
        }
        _ => FoldPass::NotInFold,
    }
}

impl CronPattern {
    /// The first slot strictly after `t`, scanning matching local times upwards from `from`
    /// (exclusive, a whole second). See [`Schedule::next_slot_after`] for why two scans may
    /// be needed.
    fn scan_forward(&self, tz: Tz, from: NaiveDateTime, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = from;
        loop {
            let local = self.next_local(cursor)?;
            match tz.from_local_datetime(&local) {
                LocalResult::Single(instant) => {
                    let instant = instant.with_timezone(&Utc);
                    if instant > t {
                        return Some(instant);
                    }
                }
                LocalResult::Ambiguous(earlier, later) => {
                    let (earlier, later) = (earlier.with_timezone(&Utc), later.with_timezone(&Utc));
                    if earlier > t {
                        return Some(earlier);
                    }
                    if !self.fixed_hours && later > t {
                        return Some(later);
                    }
                }
                LocalResult::None => {
                    let gap_end = resolve_local(local, tz);
                    if self.fixed_hours {
                        if gap_end > t {
                            return Some(gap_end);
                        }
                    } else {
                        // Nothing in the gap exists; resume just before its end.
                        let resume = local_of(gap_end, tz) - TimeDelta::seconds(1);
                        if resume > local {
                            cursor = resume;
                            continue;
                        }
                    }
                }
            }
            cursor = local;
        }
    }

    /// The last slot strictly before `t`, scanning matching local times downwards from
    /// `from` (a whole second; included when `inclusive`).
    fn scan_backward(
        &self,
        tz: Tz,
        from: NaiveDateTime,
        inclusive: bool,
        t: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut cursor = from;
        let mut inclusive = inclusive;
        loop {
            let local = self.previous_local(cursor, inclusive)?;
            inclusive = false;
            match tz.from_local_datetime(&local) {
                LocalResult::Single(instant) => {
                    let instant = instant.with_timezone(&Utc);
                    if instant < t {
                        return Some(instant);
                    }
                }
                LocalResult::Ambiguous(earlier, later) => {
                    let (earlier, later) = (earlier.with_timezone(&Utc), later.with_timezone(&Utc));
                    if !self.fixed_hours && later < t {
                        return Some(later);
                    }
                    if earlier < t {
                        return Some(earlier);
                    }
                }
                LocalResult::None => {
                    let gap_end = resolve_local(local, tz);
                    if self.fixed_hours {
                        if gap_end < t {
                            return Some(gap_end);
                        }
                    } else {
                        // Nothing in the gap exists; resume at its first missing local time
                        // (the search is exclusive, so that time itself is not revisited).
                        let gap_start =
                            local_of(gap_end - TimeDelta::seconds(1), tz) + TimeDelta::seconds(1);
                        if gap_start < local {
                            cursor = gap_start;
                            continue;
                        }
                    }
                }
            }
            cursor = local;
        }
    }

    fn next_slot_after(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Local wall-clock order is real-time order except inside a fold. Scanning matching
        // local times upwards from t's local time finds the next slot, unless t is on the
        // first pass of a fold: then the second pass (which starts at a local time before
        // t's) lies ahead as well, and its matches are found by a second scan from the
        // fold's first local time. Fixed-hour patterns never run on a second pass.
        let local = truncate_to_second(local_of(t, tz));
        let first = self.scan_forward(tz, local, t);
        match fold_pass(t, tz) {
            FoldPass::First { transition } if !self.fixed_hours => {
                let fold_start = local_of(transition, tz) - TimeDelta::seconds(1);
                let second = self.scan_forward(tz, fold_start, t);
                earliest(first, second)
            }
            _ => first,
        }
    }

    fn prev_slot_before(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The mirror image of `next_slot_after`: when t is on the second pass of a fold,
        // the first-pass instants of local times after t's local time are behind t too.
        let exact = local_of(t, tz);
        let local = truncate_to_second(exact);
        let first = self.scan_backward(tz, local, exact != local, t);
        match fold_pass(t, tz) {
            FoldPass::Second { transition } => {
                let fold_end =
                    local_of(transition - TimeDelta::seconds(1), tz) + TimeDelta::seconds(1);
                let second = self.scan_backward(tz, fold_end, false, t);
                latest(first, second)
            }
            _ => first,
        }
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Nanoseconds from `a` to `b` (negative when `b` is earlier).
fn nanos_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i128 {
    (i128::from(b.timestamp()) - i128::from(a.timestamp())) * 1_000_000_000
        + (i128::from(b.timestamp_subsec_nanos()) - i128::from(a.timestamp_subsec_nanos()))
}

fn add_nanos(t: DateTime<Utc>, nanos: i128) -> Option<DateTime<Utc>> {
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    t.checked_add_signed(TimeDelta::new(seconds, subsec)?)
}

fn delta_nanos(delta: TimeDelta) -> i128 {
    i128::from(delta.num_seconds()) * 1_000_000_000 + i128::from(delta.subsec_nanos())
}

/// The arithmetic of an `every` schedule: slot k for k ≥ 0, and the index of the first slot
/// after an instant, found by estimating k and correcting it, never by stepping from start.
#[derive(Clone, Copy, Debug)]
struct EverySlots {
    interval: Interval,
    start: DateTime<Utc>,
    tz: Tz,
}

impl EverySlots {
    /// Slot k, or `None` when it lies beyond the representable range of time.
    fn slot(&self, k: u64) -> Option<DateTime<Utc>> {
        if k == 0 {
            return Some(self.start);
        }
        let local_date_time = |date: NaiveDate| {
            let start_local = local_of(self.start, self.tz);
            resolve_local(date.and_time(start_local.time()), self.tz)
        };
        let start_date = local_of(self.start, self.tz).date();
        match self.interval {
            Interval::Elapsed(step) => {
                add_nanos(self.start, delta_nanos(step).checked_mul(i128::from(k))?)
            }
            Interval::Days(n) => start_date
                .checked_add_days(Days::new(k.checked_mul(u64::from(n))?))
                .map(local_date_time),
            Interval::Weeks(n) => start_date
                .checked_add_days(Days::new(k.checked_mul(u64::from(n))?.checked_mul(7)?))
                .map(local_date_time),
            Interval::Months(n) => {
                let months = i64::try_from(k.checked_mul(u64::from(n))?).ok()?;
                let month_index =
                    i64::from(start_date.year()) * 12 + i64::from(start_date.month0()) + months;
                let year = i32::try_from(month_index.div_euclid(12)).ok()?;
                let month = u32::try_from(month_index.rem_euclid(12)).ok()? + 1;
                // Clamp to the month's length: a Jan 31 start gives Feb 28/29, Mar 31, Apr 30.
                let day = start_date.day().min(days_in_month(year, month)?);
                NaiveDate::from_ymd_opt(year, month, day).map(local_date_time)
            }
        }
    }

    /// Whether slot k is strictly after `t`; slots past the end of time count as after.
    fn slot_after(&self, k: u64, t: DateTime<Utc>) -> bool {
        self.slot(k).is_none_or(|slot| slot > t)
    }

    /// A first guess of the index of the first slot after `t` (t ≥ start) for calendar
    /// intervals: the number of whole steps between the local dates, which is off by at
    /// most one because the time of day is ignored.
    fn estimate_calendar_index(&self, t: DateTime<Utc>) -> u64 {
        let start_local = local_of(self.start, self.tz);
        let local = local_of(t, self.tz);
        let per = |units: i64, n: u32| u64::try_from(units / i64::from(n).max(1)).unwrap_or(0);
        let days = (local.date() - start_local.date()).num_days();
        match self.interval {
            Interval::Elapsed(_) => 0,
            Interval::Days(n) => per(days, n),
            Interval::Weeks(n) => per(days / 7, n),
            Interval::Months(n) => {
                let months = |d: NaiveDateTime| i64::from(d.year()) * 12 + i64::from(d.month0());
                per(months(local) - months(start_local), n)
            }
        }
    }

    /// The index of the first slot strictly after `t`. Saturates at `u64::MAX` (a slot past
    /// the end of time) for absurd hand-built intervals.
    fn first_index_after(&self, t: DateTime<Utc>) -> u64 {
        if t < self.start {
            return 0;
        }
        if let Interval::Elapsed(step) = self.interval {
            // Exact: k = floor((t - start) / step) + 1.
            let step = delta_nanos(step).max(1);
            let elapsed = nanos_between(self.start, t);
            return u64::try_from(elapsed.div_euclid(step) + 1).unwrap_or(u64::MAX);
        }
        let mut k = self.estimate_calendar_index(t);
        // Slots strictly increase with k, so the estimate is corrected in both directions;
        // for calendar units the estimate is off by at most a step or two.
        while k > 0 && self.slot_after(k - 1, t) {
            k -= 1;
        }
        while !self.slot_after(k, t) {
            k += 1;
        }
        k
    }
}

/// The number of days in a month, or `None` for a year out of chrono's range.
fn days_in_month(year: i32, month: u32) -> Option<u32> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    u32::try_from((next - first).num_days()).ok()
}

impl Schedule {
    /// Slot k is `start + k × interval` for k ≥ 0 (calendar units in `tz`, see the module
    /// documentation). An interval that is not positive (only possible when built by hand)
    /// gives a schedule whose only slot is `start`.
    pub fn every(interval: Interval, start: DateTime<Utc>, tz: Tz) -> Schedule {
        Schedule {
            kind: ScheduleKind::Every { interval, start },
            tz,
        }
    }

    /// The local times in `tz` matching a cron expression (5 or 6 fields, or a macro).
    pub fn cron(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let pattern = CronPattern::parse(expr)?;
        Ok(Schedule {
            kind: ScheduleKind::Cron {
                expr: expr.trim().to_owned(),
                pattern,
            },
            tz,
        })
    }

    /// A one-off slot at `time`; `tz` is only used to show it.
    pub fn at(time: DateTime<Utc>, tz: Tz) -> Schedule {
        Schedule {
            kind: ScheduleKind::At(time),
            tz,
        }
    }

    pub fn kind(&self) -> &ScheduleKind {
        &self.kind
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The storable form; [`Schedule::from_parts`] turns it back into the same schedule.
    pub fn to_parts(&self) -> ScheduleParts {
        let (kind, expr, start) = match &self.kind {
            ScheduleKind::Every { interval, start } => {
                ("every", interval.to_string(), Some(*start))
            }
            ScheduleKind::Cron { expr, .. } => ("cron", expr.clone(), None),
            ScheduleKind::At(time) => (
                "at",
                time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                None,
            ),
        };
        ScheduleParts {
            kind: kind.to_owned(),
            expr,
            start,
            tz: self.tz.name().to_owned(),
        }
    }

    /// Rebuilds a schedule from its stored form, validating every part.
    pub fn from_parts(parts: &ScheduleParts) -> Result<Schedule, ScheduleError> {
        let tz = parse_tz(&parts.tz)?;
        match parts.kind.as_str() {
            "every" => {
                let interval = Interval::parse(&parts.expr)?;
                let start = parts.start.ok_or_else(|| ScheduleError::MissingStart {
                    expr: parts.expr.clone(),
                })?;
                Ok(Schedule::every(interval, start, tz))
            }
            "cron" | "at" if parts.start.is_some() => Err(ScheduleError::UnexpectedStart {
                kind: parts.kind.clone(),
            }),
            "cron" => Schedule::cron(&parts.expr, tz),
            "at" => Ok(Schedule::at(parse_time(&parts.expr, tz)?, tz)),
            _ => Err(ScheduleError::UnknownKind {
                kind: parts.kind.clone(),
            }),
        }
    }

    /// The `every` arithmetic, or `None` for other kinds and for intervals that are not
    /// positive (whose only slot is `start`).
    fn every_slots(&self) -> Option<EverySlots> {
        match self.kind {
            ScheduleKind::Every { interval, start } if interval.is_positive() => Some(EverySlots {
                interval,
                start,
                tz: self.tz,
            }),
            _ => None,
        }
    }

    /// The single slot of an `at` schedule or of an `every` with no step.
    fn single_slot(&self) -> Option<DateTime<Utc>> {
        match self.kind {
            ScheduleKind::At(time) => Some(time),
            ScheduleKind::Every { start, .. } if self.every_slots().is_none() => Some(start),
            _ => None,
        }
    }

    /// The first slot strictly after `t`; `None` when the schedule has no more slots (an `at`
    /// in the past, or a cron expression with no match before the year 5000).
    pub fn next_slot_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(every) = self.every_slots() {
            return every.slot(every.first_index_after(t));
        }
        match &self.kind {
            ScheduleKind::Cron { pattern, .. } => pattern.next_slot_after(self.tz, t),
            _ => self.single_slot().filter(|slot| *slot > t),
        }
    }

    /// The last slot strictly before `t`, if any (for `every`: never before `start`).
    pub fn prev_slot_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(every) = self.every_slots() {
            if t <= every.start {
                return None;
            }
            // The first slot at or after t is one past the last slot before t.
            let first_at_or_after = every.first_index_after(t - TimeDelta::nanoseconds(1));
            return every.slot(first_at_or_after.checked_sub(1)?);
        }
        match &self.kind {
            ScheduleKind::Cron { pattern, .. } => pattern.prev_slot_before(self.tz, t),
            _ => self.single_slot().filter(|slot| *slot < t),
        }
    }

    /// Slots strictly after `t`, in increasing order (lazy, possibly infinite).
    pub fn slots_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_slot_after(t), move |slot| {
            self.next_slot_after(*slot)
        })
    }

    /// How many slots s satisfy `from <= s <= to`, counting at most `cap` (returns `cap` when
    /// there are more). Exact and O(1) for `every` (calendar units included); cron iterates.
    pub fn count_slots_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u64) -> u64 {
        if from > to || cap == 0 {
            return 0;
        }
        let just_before_from = from - TimeDelta::nanoseconds(1);
        if let Some(every) = self.every_slots() {
            let first = every.first_index_after(just_before_from);
            let past_last = every.first_index_after(to);
            return past_last.saturating_sub(first).min(cap);
        }
        let mut count = 0;
        for slot in self.slots_after(just_before_from) {
            if slot > to || count == cap {
                break;
            }
            count += 1;
        }
        count
    }
}

impl fmt::Display for Schedule {
    /// Human text: `every 1d starting 2026-01-31T10:00:00+01:00 (Europe/Berlin)`,
    /// `cron 0 9 * * 1-5 (Europe/Berlin)`, `at 2026-03-29T03:00:00+02:00 (Europe/Berlin)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ScheduleKind::Every { interval, start } => write!(
                f,
                "every {interval} starting {} ({})",
                format_in_zone(*start, self.tz),
                self.tz.name()
            ),
            ScheduleKind::Cron { expr, .. } => write!(f, "cron {expr} ({})", self.tz.name()),
            ScheduleKind::At(time) => {
                write!(
                    f,
                    "at {} ({})",
                    format_in_zone(*time, self.tz),
                    self.tz.name()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_in_zone;

    const BERLIN: Tz = Tz::Europe__Berlin;
    const NEW_YORK: Tz = Tz::America__New_York;
    const SYDNEY: Tz = Tz::Australia__Sydney;
    const LORD_HOWE: Tz = Tz::Australia__Lord_Howe;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: Tz) -> Schedule {
        Schedule::cron(expr, tz).expect("valid test expression")
    }

    fn every(interval: &str, start: &str, tz: Tz) -> Schedule {
        Schedule::every(
            Interval::parse(interval).expect("valid test interval"),
            utc(start),
            tz,
        )
    }

    /// The next `n` slots after `from`, formatted in the schedule's zone; also checks that
    /// walking back with `prev_slot_before` retraces them, and that counting agrees.
    fn next(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        let from = utc(from);
        let slots: Vec<DateTime<Utc>> = schedule.slots_after(from).take(n).collect();
        for pair in slots.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{schedule}: slots must increase: {pair:?}"
            );
            assert_eq!(
                schedule.prev_slot_before(pair[1]),
                Some(pair[0]),
                "{schedule}: prev_slot_before({}) must retrace",
                pair[1]
            );
        }
        if let (Some(first), Some(last)) = (slots.first(), slots.last()) {
            assert_eq!(
                schedule.count_slots_between(*first, *last, u64::MAX),
                slots.len() as u64,
                "{schedule}: count between {first} and {last}"
            );
            let before = schedule.prev_slot_before(*first);
            assert!(
                before.is_none_or(|b| b <= from),
                "{schedule}: a slot was skipped: {before:?}"
            );
        }
        slots
            .into_iter()
            .map(|slot| format_in_zone(slot, schedule.tz()))
            .collect()
    }

    fn cron_error(expr: &str) -> String {
        Schedule::cron(expr, Tz::UTC)
            .expect_err("should be rejected")
            .to_string()
    }

    // ---- every: elapsed units ----

    #[test]
    fn every_90s_is_elapsed_time_across_dst() {
        // Berlin springs forward at 01:00 UTC; 90 s stays 90 s.
        let schedule = every("90s", "2026-03-29T00:57:00Z", BERLIN);
        let slots: Vec<_> = schedule
            .slots_after(utc("2026-03-29T00:57:00Z"))
            .take(4)
            .collect();
        assert_eq!(
            slots,
            [
                utc("2026-03-29T00:58:30Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:01:30Z"),
                utc("2026-03-29T01:03:00Z"),
            ]
        );
        assert_eq!(
            next(&schedule, "2026-03-29T00:59:59Z", 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-29T03:01:30+02:00"]
        );
        // And across the fold (01:00 UTC): still 90 s apart while the local clock goes back.
        let schedule = every("90s", "2026-10-25T00:57:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-10-25T00:58:00Z", 3),
            [
                "2026-10-25T02:58:30+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:01:30+01:00"
            ]
        );
    }

    #[test]
    fn every_slot_k_is_start_plus_k_intervals() {
        let schedule = every("5m", "2026-01-01T00:00:00Z", Tz::UTC);
        // Before the start the first slot is the start itself; at a slot, the next one.
        assert_eq!(
            schedule.next_slot_after(utc("2025-12-31T00:00:00Z")),
            Some(utc("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            schedule.next_slot_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:05:00Z"))
        );
        assert_eq!(
            schedule.next_slot_after(utc("2026-01-01T00:04:59.999Z")),
            Some(utc("2026-01-01T00:05:00Z"))
        );
        // Far from the start, found arithmetically (not by stepping ~1e6 times).
        assert_eq!(
            schedule.next_slot_after(utc("2035-06-15T12:02:00Z")),
            Some(utc("2035-06-15T12:05:00Z"))
        );
        assert_eq!(schedule.prev_slot_before(utc("2026-01-01T00:00:00Z")), None);
        assert_eq!(
            schedule.prev_slot_before(utc("2026-01-01T00:00:00.001Z")),
            Some(utc("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            schedule.prev_slot_before(utc("2026-01-01T00:05:00Z")),
            Some(utc("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn every_keeps_the_sub_second_part_of_start() {
        let schedule = every("1m", "2026-01-01T00:00:00.250Z", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-01T00:00:00.250Z", 2),
            [
                "2026-01-01T00:01:00.250+00:00",
                "2026-01-01T00:02:00.250+00:00"
            ]
        );
        let schedule = every("1d", "2026-01-01T08:00:00.5Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-01-01T08:00:00.5Z", 1),
            ["2026-01-02T09:00:00.500+01:00"]
        );
    }

    // ---- every: calendar units ----

    #[test]
    fn every_1d_keeps_the_local_time_across_both_dst_changes() {
        // 09:00 Berlin: 08:00Z in winter, 07:00Z in summer.
        let schedule = every("1d", "2026-03-27T08:00:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-03-27T08:00:00Z", 3),
            [
                "2026-03-28T09:00:00+01:00",
                "2026-03-29T09:00:00+02:00",
                "2026-03-30T09:00:00+02:00"
            ]
        );
        let schedule = every("1d", "2026-10-23T07:00:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-10-23T07:00:00Z", 3),
            [
                "2026-10-24T09:00:00+02:00",
                "2026-10-25T09:00:00+01:00",
                "2026-10-26T09:00:00+01:00"
            ]
        );
    }

    #[test]
    fn every_1d_in_a_gap_runs_at_the_end_of_the_gap_and_in_a_fold_once() {
        // 02:30 local does not exist on 2026-03-29 in Berlin.
        let schedule = every("1d", "2026-03-27T01:30:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-03-27T01:30:00Z", 3),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
        // 02:30 local happens twice on 2026-10-25: the first one is the slot.
        let schedule = every("1d", "2026-10-24T00:30:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-10-24T00:30:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // New York: 02:30 is missing on 2026-03-08 and 01:30 repeated on 2026-11-01.
        let schedule = every("1d", "2026-03-07T07:30:00Z", NEW_YORK);
        assert_eq!(
            next(&schedule, "2026-03-07T07:30:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        let schedule = every("1d", "2026-10-31T05:30:00Z", NEW_YORK);
        assert_eq!(
            next(&schedule, "2026-10-31T05:30:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn every_1mo_clamps_to_the_end_of_shorter_months() {
        let schedule = every("1mo", "2026-01-31T10:00:00Z", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-31T10:00:00Z", 4),
            [
                "2026-02-28T10:00:00+00:00",
                "2026-03-31T10:00:00+00:00",
                "2026-04-30T10:00:00+00:00",
                "2026-05-31T10:00:00+00:00"
            ]
        );
        let leap = every("1mo", "2028-01-31T10:00:00Z", Tz::UTC);
        assert_eq!(
            next(&leap, "2028-01-31T10:00:00Z", 2),
            ["2028-02-29T10:00:00+00:00", "2028-03-31T10:00:00+00:00"]
        );
        // In a zone, across DST: 10:00 Berlin stays 10:00.
        let berlin = every("1mo", "2026-01-31T09:00:00Z", BERLIN);
        assert_eq!(
            next(&berlin, "2026-02-01T00:00:00Z", 3),
            [
                "2026-02-28T10:00:00+01:00",
                "2026-03-31T10:00:00+02:00",
                "2026-04-30T10:00:00+02:00"
            ]
        );
        let quarterly = every("3mo", "2026-01-31T10:00:00Z", Tz::UTC);
        assert_eq!(
            next(&quarterly, "2026-02-01T00:00:00Z", 3),
            [
                "2026-04-30T10:00:00+00:00",
                "2026-07-31T10:00:00+00:00",
                "2026-10-31T10:00:00+00:00"
            ]
        );
        // A year on, without iterating from the start.
        assert_eq!(
            schedule.next_slot_after(utc("2027-02-15T00:00:00Z")),
            Some(utc("2027-02-28T10:00:00Z"))
        );
        assert_eq!(
            schedule.prev_slot_before(utc("2027-02-28T10:00:00Z")),
            Some(utc("2027-01-31T10:00:00Z"))
        );
    }

    #[test]
    fn every_1w_and_2w() {
        // Monday 2026-03-23 09:00 Berlin, across the March change.
        let schedule = every("1w", "2026-03-23T08:00:00Z", BERLIN);
        assert_eq!(
            next(&schedule, "2026-03-23T08:00:00Z", 2),
            ["2026-03-30T09:00:00+02:00", "2026-04-06T09:00:00+02:00"]
        );
        let schedule = every("2w", "2026-01-05T09:00:00Z", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-10T00:00:00Z", 2),
            ["2026-01-19T09:00:00+00:00", "2026-02-02T09:00:00+00:00"]
        );
    }

    #[test]
    fn every_counts_slots_exactly() {
        let schedule = every("90s", "2026-01-01T00:00:00Z", Tz::UTC);
        // 00:00:00 .. 01:00:00 inclusive: k = 0..=40.
        assert_eq!(
            schedule.count_slots_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2026-01-01T01:00:00Z"),
                1000
            ),
            41
        );
        assert_eq!(
            schedule.count_slots_between(
                utc("2026-01-01T00:00:01Z"),
                utc("2026-01-01T01:00:00Z"),
                1000
            ),
            40
        );
        assert_eq!(
            schedule.count_slots_between(
                utc("2025-01-01T00:00:00Z"),
                utc("2036-01-01T00:00:00Z"),
                1000
            ),
            1000,
            "capped"
        );
        assert_eq!(
            schedule.count_slots_between(
                utc("2026-01-02T00:00:00Z"),
                utc("2026-01-01T00:00:00Z"),
                10
            ),
            0
        );
        let monthly = every("1mo", "2026-01-31T10:00:00Z", Tz::UTC);
        assert_eq!(
            monthly.count_slots_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2026-12-31T23:59:59Z"),
                100
            ),
            12
        );
    }

    #[test]
    fn every_with_a_hand_built_non_positive_interval_has_only_its_start() {
        let start = utc("2026-01-01T00:00:00Z");
        let schedule = Schedule::every(Interval::Days(0), start, Tz::UTC);
        assert_eq!(
            schedule.next_slot_after(utc("2025-01-01T00:00:00Z")),
            Some(start)
        );
        assert_eq!(schedule.next_slot_after(start), None);
        let schedule = Schedule::every(Interval::Elapsed(TimeDelta::seconds(-5)), start, Tz::UTC);
        assert_eq!(schedule.slots_after(utc("2025-01-01T00:00:00Z")).count(), 1);
    }

    // ---- cron: syntax ----

    #[test]
    fn cron_with_a_seconds_field() {
        let schedule = cron("*/15 * * * * *", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:15+00:00",
                "2026-01-01T00:00:30+00:00",
                "2026-01-01T00:00:45+00:00"
            ]
        );
        let schedule = cron("30 0 9 * * *", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T09:00:30+00:00"]
        );
        // Five fields: seconds are 0.
        let schedule = cron("*/20 * * * *", Tz::UTC);
        assert_eq!(
            next(&schedule, "2026-01-01T00:00:00.5Z", 2),
            ["2026-01-01T00:20:00+00:00", "2026-01-01T00:40:00+00:00"]
        );
    }

    #[test]
    fn cron_last_day_nearest_weekday_and_nth_weekday() {
        assert_eq!(
            next(&cron("0 0 L * *", Tz::UTC), "2026-01-15T00:00:00Z", 3),
            [
                "2026-01-31T00:00:00+00:00",
                "2026-02-28T00:00:00+00:00",
                "2026-03-31T00:00:00+00:00"
            ]
        );
        // 2026-08-15 is a Saturday: the nearest weekday is Friday the 14th; 2026-03-15 is a
        // Sunday: Monday the 16th.
        assert_eq!(
            next(&cron("0 9 15W * *", Tz::UTC), "2026-07-20T00:00:00Z", 1),
            ["2026-08-14T09:00:00+00:00"]
        );
        assert_eq!(
            next(&cron("0 9 15W * *", Tz::UTC), "2026-03-01T00:00:00Z", 1),
            ["2026-03-16T09:00:00+00:00"]
        );
        // Last weekday of the month: 2026-05-31 is a Sunday.
        assert_eq!(
            next(&cron("0 9 LW * *", Tz::UTC), "2026-05-01T00:00:00Z", 1),
            ["2026-05-29T09:00:00+00:00"]
        );
        // Second Monday of the month.
        assert_eq!(
            next(&cron("0 9 * * MON#2", Tz::UTC), "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-12T09:00:00+00:00",
                "2026-02-09T09:00:00+00:00",
                "2026-03-09T09:00:00+00:00"
            ]
        );
        // Last Friday of the month.
        assert_eq!(
            next(&cron("0 17 * * 5L", Tz::UTC), "2026-01-01T00:00:00Z", 2),
            ["2026-01-30T17:00:00+00:00", "2026-02-27T17:00:00+00:00"]
        );
    }

    #[test]
    fn cron_names_ranges_lists_and_day_rules() {
        assert_eq!(
            next(
                &cron("0 9 * JAN-MAR mon-fri", Tz::UTC),
                "2026-03-27T10:00:00Z",
                2
            ),
            ["2026-03-30T09:00:00+00:00", "2026-03-31T09:00:00+00:00"],
        );
        // Both day fields restricted: either matches (Vixie cron). 2026-06-01 is a Monday.
        assert_eq!(
            next(&cron("0 0 1 * MON", Tz::UTC), "2026-05-30T00:00:00Z", 3),
            [
                "2026-06-01T00:00:00+00:00",
                "2026-06-08T00:00:00+00:00",
                "2026-06-15T00:00:00+00:00"
            ]
        );
        // Day 7 is Sunday like 0.
        assert_eq!(
            next(&cron("0 0 * * 7", Tz::UTC), "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00+00:00"]
        );
        assert_eq!(
            next(&cron("0 0 ? * 1-5/2", Tz::UTC), "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-02T00:00:00+00:00",
                "2026-01-05T00:00:00+00:00",
                "2026-01-07T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn cron_macros() {
        let from = "2026-01-01T10:30:00Z";
        let cases = [
            ("@hourly", "2026-01-01T11:00:00+00:00"),
            ("@daily", "2026-01-02T00:00:00+00:00"),
            ("@midnight", "2026-01-02T00:00:00+00:00"),
            ("@weekly", "2026-01-04T00:00:00+00:00"),
            ("@monthly", "2026-02-01T00:00:00+00:00"),
            ("@yearly", "2027-01-01T00:00:00+00:00"),
            ("@annually", "2027-01-01T00:00:00+00:00"),
            ("@WEEKLY", "2026-01-04T00:00:00+00:00"),
        ];
        for (expr, expected) in cases {
            assert_eq!(next(&cron(expr, Tz::UTC), from, 1), [expected], "{expr}");
        }
        assert_eq!(
            next(&cron("@weekly", Tz::UTC), from, 2)[1],
            "2026-01-11T00:00:00+00:00"
        );
    }

    #[test]
    fn cron_errors_name_the_expression_the_field_and_what_is_valid() {
        assert_eq!(
            cron_error("61 * * * *"),
            r#"invalid cron expression "61 * * * *": minute field "61": value 61 is out of range 0-59"#
        );
        assert_eq!(
            cron_error("* * * *"),
            r#"invalid cron expression "* * * *": found 4 fields; expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or a macro (@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually)"#
        );
        assert!(cron_error("0 0 0 1 1 * 2026").contains("found 7 fields"));
        assert!(cron_error("").contains("it is empty"));
        assert!(cron_error("   ").contains("it is empty"));
        assert_eq!(
            cron_error("@every5m"),
            r#"invalid cron expression "@every5m": unknown macro "@every5m"; valid macros are @hourly, @daily, @midnight, @weekly, @monthly, @yearly and @annually"#
        );
        let cases = [
            (
                "60 * * * * *",
                r#"second field "60": value 60 is out of range 0-59"#,
            ),
            (
                "0 24 * * *",
                r#"hour field "24": value 24 is out of range 0-23"#,
            ),
            (
                "0 0 32 * *",
                r#"day-of-month field "32": value 32 is out of range 1-31"#,
            ),
            (
                "0 0 0 * *",
                r#"day-of-month field "0": value 0 is out of range 1-31"#,
            ),
            (
                "0 0 * 13 *",
                r#"month field "13": value 13 is out of range 1-12"#,
            ),
            (
                "0 0 * * 8",
                r#"day-of-week field "8": value 8 is out of range 0-7"#,
            ),
            (
                "0 0 * FOO *",
                r#"month field "FOO": "FOO" is not a valid month value; use 1-12 or JAN-DEC"#,
            ),
            (
                "MON * * * *",
                r#"minute field "MON": "MON" is not a valid minute value; use 0-59"#,
            ),
            (
                "0 0 * * MON#6",
                r#"day-of-week field "MON#6": occurrence "6" in "MON#6" must be 1-5"#,
            ),
            (
                "*/0 * * * *",
                r#"minute field "*/0": step 0 in "*/0" must be at least 1"#,
            ),
            (
                "*/61 * * * *",
                "step 61 in \"*/61\" is larger than the minute field's largest value 59",
            ),
            (
                "5/15 * * * *",
                r#"a step needs a range: write 5-59/15 or */15 instead of "5/15""#,
            ),
            ("/15 * * * *", r#"minute field "/15": "/15" needs a start"#),
            (
                "10-5 * * * *",
                r#"minute field "10-5": range "10-5" goes backwards"#,
            ),
            ("1,,2 * * * *", "empty entry in the list"),
            (
                "0 0 L * L",
                r#"day-of-week field "L": "L" alone is ambiguous"#,
            ),
            (
                "15W * * * *",
                "L, W and # are only allowed in the day-of-month and day-of-week fields",
            ),
            (
                "0 ? * * *",
                r#"hour field "?": "?" is only allowed in the day-of-month and day-of-week fields"#,
            ),
            (
                "0 0 32W * *",
                r#"day-of-month field "32W": value 32 is out of range 1-31"#,
            ),
            (
                "0 0 * * 1-2-3",
                r#"day-of-week field "1-2-3": "1-2-3" is not a range"#,
            ),
            (
                "0 0 99999999999 * *",
                "value 99999999999 is out of range 1-31",
            ),
            ("0 0 30 2 *", "it never matches"),
            ("0 0 31 4,6,9,11 *", "it never matches"),
        ];
        for (expr, expected) in cases {
            let message = cron_error(expr);
            assert!(
                message.starts_with(&format!("invalid cron expression {expr:?}: ")),
                "{message}"
            );
            assert!(message.contains(expected), "{expr}: {message}");
        }
        // Rarely matching is not never: a fifth Monday in February needs Feb 1 to be a
        // Monday in a leap year (2044).
        assert_eq!(
            next(&cron("0 0 * 2 MON#5", Tz::UTC), "2026-01-01T00:00:00Z", 1),
            ["2044-02-29T00:00:00+00:00"]
        );
    }

    // ---- cron: DST ----

    #[test]
    fn cron_fixed_time_in_a_spring_forward_gap_runs_once_at_the_end_of_the_gap() {
        // Berlin: 02:00 CET → 03:00 CEST on 2026-03-29.
        for expr in ["30 2 * * *", "0 2 * * *", "59 2 * * *"] {
            assert_eq!(
                next(&cron(expr, BERLIN), "2026-03-29T00:00:00Z", 2)[0],
                "2026-03-29T03:00:00+02:00",
                "{expr}"
            );
        }
        assert_eq!(
            next(&cron("30 2 * * *", BERLIN), "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00"
            ]
        );
        // A gap time and the gap's end both matching still run once.
        assert_eq!(
            next(&cron("0 2,3 * * *", BERLIN), "2026-03-29T00:00:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:00:00+02:00",
                "2026-03-30T03:00:00+02:00"
            ]
        );
        // Several fixed local times in one gap collapse into one run.
        assert_eq!(
            next(&cron("*/15 2 * * *", BERLIN), "2026-03-29T00:00:00Z", 3),
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:00:00+02:00",
                "2026-03-30T02:15:00+02:00"
            ]
        );
        assert_eq!(
            next(&cron("30 2,14 * * *", BERLIN), "2026-03-28T12:00:00Z", 4),
            [
                "2026-03-28T14:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T14:30:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
        // New York: 02:00 EST → 03:00 EDT on 2026-03-08.
        assert_eq!(
            next(&cron("30 2 * * *", NEW_YORK), "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // Sydney (southern hemisphere): 02:00 AEST → 03:00 AEDT on 2026-10-04.
        assert_eq!(
            next(&cron("30 2 * * *", SYDNEY), "2026-10-03T00:00:00Z", 2),
            ["2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"]
        );
        // Lord Howe moves by 30 minutes: 02:00 → 02:30 on 2026-10-04.
        assert_eq!(
            next(&cron("15 2 * * *", LORD_HOWE), "2026-10-03T00:00:00Z", 2),
            ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
        );
    }

    #[test]
    fn cron_fixed_time_in_a_fall_back_fold_runs_once_at_the_first_occurrence() {
        // Berlin: 03:00 CEST → 02:00 CET on 2026-10-25.
        assert_eq!(
            next(&cron("30 2 * * *", BERLIN), "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        assert_eq!(
            next(&cron("30 2,14 * * *", BERLIN), "2026-10-24T12:00:00Z", 4),
            [
                "2026-10-24T14:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T14:30:00+01:00",
                "2026-10-26T02:30:00+01:00"
            ]
        );
        assert_eq!(
            next(&cron("*/20 2 * * *", BERLIN), "2026-10-24T12:00:00Z", 4),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:20:00+02:00",
                "2026-10-25T02:40:00+02:00",
                "2026-10-26T02:00:00+01:00"
            ]
        );
        // New York: 02:00 EDT → 01:00 EST on 2026-11-01.
        assert_eq!(
            next(&cron("30 1 * * *", NEW_YORK), "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // Sydney: 03:00 AEDT → 02:00 AEST on 2026-04-05.
        assert_eq!(
            next(&cron("30 2 * * *", SYDNEY), "2026-04-04T00:00:00Z", 2),
            ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]
        );
        // Lord Howe: 02:00 → 01:30 on 2026-04-05; 01:45 happens twice.
        assert_eq!(
            next(&cron("45 1 * * *", LORD_HOWE), "2026-04-04T00:00:00Z", 2),
            ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
        );
        // Starting on the second pass: today's run already happened on the first.
        assert_eq!(
            next(&cron("30 2 * * *", BERLIN), "2026-10-25T01:10:00Z", 1),
            ["2026-10-26T02:30:00+01:00"]
        );
        // Starting on the second pass, after the slot's local time but before its instant...
        // there is none: the slot was on the first pass. And the previous slot from the second
        // pass is that first-pass run even when its local time is later than now's.
        let schedule = cron("45 2 * * *", BERLIN);
        assert_eq!(
            schedule.prev_slot_before(utc("2026-10-25T01:40:00Z")),
            Some(utc("2026-10-25T00:45:00Z")),
        );
    }

    #[test]
    fn cron_fixed_time_in_a_day_long_gap() {
        // Samoa skipped 2011-12-30 entirely (-10:00 → +14:00 at midnight). A daily job runs
        // once at the end of the gap, which is also the next midnight. croner 4.0.3 gives up
        // here (TimeSearchLimitExceeded: it searches at most two hours for a gap's end), and
        // its iterator would end the schedule for good.
        assert_eq!(
            next(
                &cron("0 0 * * *", Tz::Pacific__Apia),
                "2011-12-28T12:00:00Z",
                3
            ),
            [
                "2011-12-29T00:00:00-10:00",
                "2011-12-31T00:00:00+14:00",
                "2012-01-01T00:00:00+14:00"
            ]
        );
        assert_eq!(
            next(
                &cron("0 9 * * *", Tz::Pacific__Apia),
                "2011-12-29T12:00:00Z",
                3
            ),
            [
                "2011-12-29T09:00:00-10:00",
                "2011-12-31T00:00:00+14:00",
                "2011-12-31T09:00:00+14:00"
            ]
        );
        // Wildcard hours: the missing day's times simply do not happen.
        assert_eq!(
            next(
                &cron("0 */12 * * *", Tz::Pacific__Apia),
                "2011-12-29T12:00:00Z",
                2
            ),
            ["2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00"]
        );
    }

    #[test]
    fn cron_wildcard_hours_follow_the_clock_through_gaps_and_folds() {
        // Gap: 02:30 does not exist, nothing runs for it.
        assert_eq!(
            next(&cron("30 * * * *", BERLIN), "2026-03-28T23:00:00Z", 4),
            [
                "2026-03-29T00:30:00+01:00",
                "2026-03-29T01:30:00+01:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-29T04:30:00+02:00"
            ]
        );
        // Fold: 02:30 runs on both passes, in order.
        assert_eq!(
            next(&cron("30 * * * *", BERLIN), "2026-10-24T23:00:00Z", 5),
            [
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:30:00+01:00",
                "2026-10-25T04:30:00+01:00"
            ]
        );
        assert_eq!(
            next(&cron("0 * * * *", NEW_YORK), "2026-11-01T03:30:00Z", 5),
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00"
            ]
        );
        assert_eq!(
            next(&cron("0 */2 * * *", NEW_YORK), "2026-03-08T04:30:00Z", 3),
            [
                "2026-03-08T00:00:00-05:00",
                "2026-03-08T04:00:00-04:00",
                "2026-03-08T06:00:00-04:00"
            ]
        );
        assert_eq!(
            next(&cron("*/20 * * * *", LORD_HOWE), "2026-04-04T14:10:00Z", 6),
            [
                "2026-04-05T01:20:00+11:00",
                "2026-04-05T01:40:00+11:00",
                "2026-04-05T01:40:00+10:30",
                "2026-04-05T02:00:00+10:30",
                "2026-04-05T02:20:00+10:30",
                "2026-04-05T02:40:00+10:30"
            ]
        );
        assert_eq!(
            next(&cron("*/20 * * * *", LORD_HOWE), "2026-10-03T15:00:00Z", 3),
            [
                "2026-10-04T01:40:00+10:30",
                "2026-10-04T02:40:00+11:00",
                "2026-10-04T03:00:00+11:00"
            ]
        );
        assert_eq!(
            next(&cron("0 * * * *", SYDNEY), "2026-04-04T14:30:00Z", 4),
            [
                "2026-04-05T02:00:00+11:00",
                "2026-04-05T02:00:00+10:00",
                "2026-04-05T03:00:00+10:00",
                "2026-04-05T04:00:00+10:00"
            ]
        );
    }

    #[test]
    fn cron_wildcard_hours_starting_inside_a_fold() {
        let schedule = cron("30 * * * *", BERLIN);
        // On the first pass at 02:40 CEST: the next 02:30 is on the second pass.
        assert_eq!(
            schedule.next_slot_after(utc("2026-10-25T00:40:00Z")),
            Some(utc("2026-10-25T01:30:00Z"))
        );
        // A first-pass minute still ahead comes first.
        assert_eq!(
            cron("45 * * * *", BERLIN).next_slot_after(utc("2026-10-25T00:40:00Z")),
            Some(utc("2026-10-25T00:45:00Z"))
        );
        // On the second pass at 02:40 CET.
        assert_eq!(
            schedule.next_slot_after(utc("2026-10-25T01:40:00Z")),
            Some(utc("2026-10-25T02:30:00Z"))
        );
        // Previous from the first pass is not a second-pass time.
        assert_eq!(
            cron("50 * * * *", BERLIN).prev_slot_before(utc("2026-10-25T00:40:00Z")),
            Some(utc("2026-10-24T23:50:00Z"))
        );
        // Previous from the second pass at 02:40 CET: 02:30 CET.
        assert_eq!(
            schedule.prev_slot_before(utc("2026-10-25T01:40:00Z")),
            Some(utc("2026-10-25T01:30:00Z"))
        );
        // Previous from the second pass at 02:20 CET: 02:50 CEST, earlier in time.
        assert_eq!(
            cron("50 * * * *", BERLIN).prev_slot_before(utc("2026-10-25T01:20:00Z")),
            Some(utc("2026-10-25T00:50:00Z"))
        );
    }

    #[test]
    fn cron_counts_slots_across_a_fold() {
        // From 00:00 to 04:00 local on the fold day: 00..04 is 5 hours of wall clock but
        // 6 real hours, and an hourly job runs 6 times; a daily 02:30 job runs once.
        let from = utc("2026-10-24T22:00:00Z");
        let to = utc("2026-10-25T03:00:00Z");
        assert_eq!(
            cron("0 * * * *", BERLIN).count_slots_between(from, to, 100),
            6
        );
        assert_eq!(
            cron("30 2 * * *", BERLIN).count_slots_between(from, to, 100),
            1
        );
        assert_eq!(
            cron("* * * * * *", BERLIN).count_slots_between(from, to, 100),
            100
        );
    }

    // ---- at ----

    #[test]
    fn at_has_one_slot() {
        let time = utc("2026-03-29T01:00:00Z");
        let schedule = Schedule::at(time, BERLIN);
        assert_eq!(
            schedule.next_slot_after(utc("2026-03-29T00:59:59Z")),
            Some(time)
        );
        assert_eq!(schedule.next_slot_after(time), None);
        assert_eq!(schedule.prev_slot_before(time), None);
        assert_eq!(
            schedule.prev_slot_before(utc("2026-03-29T01:00:01Z")),
            Some(time)
        );
        assert_eq!(schedule.slots_after(utc("2020-01-01T00:00:00Z")).count(), 1);
        assert_eq!(schedule.count_slots_between(time, time, 10), 1);
        assert_eq!(schedule.count_slots_between(time, time, 0), 0);
        assert_eq!(
            schedule.to_string(),
            "at 2026-03-29T03:00:00+02:00 (Europe/Berlin)"
        );
    }

    // ---- storage and display ----

    #[test]
    fn parts_round_trip() {
        let schedules = [
            every("90s", "2026-01-01T00:00:00.250Z", Tz::UTC),
            every("1mo", "2026-01-31T10:00:00Z", BERLIN),
            cron("  0 9 * * 1-5 ", BERLIN),
            cron("@weekly", NEW_YORK),
            Schedule::at(utc("2026-03-29T01:00:00.5Z"), SYDNEY),
        ];
        for schedule in schedules {
            let parts = schedule.to_parts();
            let back = Schedule::from_parts(&parts).expect("round trip");
            assert_eq!(back.to_parts(), parts);
            assert_eq!(back.to_string(), schedule.to_string());
            let from = utc("2026-02-01T00:00:00Z");
            assert_eq!(
                back.slots_after(from).take(5).collect::<Vec<_>>(),
                schedule.slots_after(from).take(5).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            cron("  0 9 * * 1-5 ", BERLIN).to_parts(),
            ScheduleParts {
                kind: "cron".into(),
                expr: "0 9 * * 1-5".into(),
                start: None,
                tz: "Europe/Berlin".into()
            }
        );
        assert_eq!(
            Schedule::at(utc("2026-03-29T01:00:00Z"), BERLIN)
                .to_parts()
                .expr,
            "2026-03-29T01:00:00Z"
        );
    }

    #[test]
    fn from_parts_rejects_bad_parts() {
        let parts = |kind: &str, expr: &str, start: Option<&str>, tz: &str| ScheduleParts {
            kind: kind.into(),
            expr: expr.into(),
            start: start.map(utc),
            tz: tz.into(),
        };
        let error = |p: ScheduleParts| Schedule::from_parts(&p).expect_err("bad parts").to_string();
        assert_eq!(
            error(parts("hourly", "1h", None, "UTC")),
            r#"unknown schedule kind "hourly"; expected every, cron or at"#
        );
        assert!(error(parts("every", "5m", None, "UTC")).contains("needs a start time"));
        assert!(
            error(parts("every", "5x", Some("2026-01-01T00:00:00Z"), "UTC"))
                .contains(r#"unknown unit "x""#)
        );
        assert!(
            error(parts(
                "cron",
                "0 9 * * *",
                Some("2026-01-01T00:00:00Z"),
                "UTC"
            ))
            .contains("only valid for every")
        );
        assert!(error(parts("cron", "61 * * * *", None, "UTC")).contains("out of range 0-59"));
        assert!(
            error(parts("cron", "0 9 * * *", None, "Europe/Berln")).contains("unknown time zone")
        );
        assert!(error(parts("at", "soon", None, "UTC")).contains(r#"invalid time "soon""#));
    }

    #[test]
    fn display_is_human_text() {
        assert_eq!(
            every("5m", "2026-01-01T00:00:00Z", Tz::UTC).to_string(),
            "every 5m starting 2026-01-01T00:00:00+00:00 (UTC)"
        );
        assert_eq!(
            cron("0 9 * * 1-5", BERLIN).to_string(),
            "cron 0 9 * * 1-5 (Europe/Berlin)"
        );
    }

    #[test]
    fn cron_pattern_reports_its_dst_class() {
        for (expr, fixed) in [
            ("30 2 * * *", true),
            ("*/5 2,14 * * *", true),
            ("0 9-17 * * *", true),
            ("@daily", true),
            ("0 * * * *", false),
            ("0 */2 * * *", false),
            ("0 1-23/2 * * *", false),
            ("@hourly", false),
        ] {
            let pattern = CronPattern::parse(expr).expect(expr);
            assert_eq!(pattern.has_fixed_hours(), fixed, "{expr}");
        }
    }
}

/// Property tests against independent oracles: a brute-force walk over every minute (or
/// second) of real time for cron, calendar arithmetic for `every`, and croner's own
/// zone-aware search where croner's DST rules coincide with ours.
#[cfg(test)]
mod proptests {
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// Zones with every shape of transition: none, northern and southern hemisphere, 30
    /// minutes (Lord Howe), 45-minute offsets (Chatham), at midnight (Santiago, Havana),
    /// a skipped day (Apia 2011), Ramadan suspensions (Casablanca), abolished DST (Tehran).
    const ZONES: [Tz; 12] = [
        Tz::UTC,
        Tz::Europe__Berlin,
        Tz::America__New_York,
        Tz::Australia__Sydney,
        Tz::Australia__Lord_Howe,
        Tz::Pacific__Chatham,
        Tz::America__Santiago,
        Tz::America__Havana,
        Tz::Pacific__Apia,
        Tz::Africa__Casablanca,
        Tz::Asia__Tehran,
        Tz::Europe__London,
    ];

    const FROM_YEAR: i32 = 2000;
    const TO_YEAR: i32 = 2040;

    /// Every UTC-offset change of each zone between 2000 and 2040, found by comparing
    /// offsets a day apart and bisecting, so tests can aim at DST edges.
    fn transitions(zone: usize) -> &'static [DateTime<Utc>] {
        static ALL: OnceLock<Vec<Vec<DateTime<Utc>>>> = OnceLock::new();
        &ALL.get_or_init(|| {
            ZONES
                .iter()
                .map(|&tz| {
                    let mut found = Vec::new();
                    let mut day = year_start(FROM_YEAR);
                    let end = year_start(TO_YEAR);
                    while day < end {
                        let next = day + TimeDelta::days(1);
                        if offset_seconds(tz, day) != offset_seconds(tz, next) {
                            found.push(transition_between(tz, day, next));
                        }
                        day = next;
                    }
                    found
                })
                .collect()
        })[zone]
    }

    fn year_start(year: i32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(year, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("valid year")
            .and_utc()
    }

    /// An instant: half the time uniform over 2000-2040, half near one of the zone's
    /// transitions (within three hours or, less often, two days). Milliseconds are included
    /// so sub-second handling is exercised.
    fn instant(zone: usize, near_transition: bool, pick: Index, offset_ms: i64) -> DateTime<Utc> {
        let transitions = transitions(zone);
        if near_transition && !transitions.is_empty() {
            let window_ms = if offset_ms % 3 == 0 {
                2 * 86_400_000
            } else {
                3 * 3_600_000
            };
            transitions[pick.index(transitions.len())]
                + TimeDelta::milliseconds(offset_ms % window_ms)
        } else {
            let span = (year_start(TO_YEAR) - year_start(FROM_YEAR)).num_milliseconds();
            year_start(FROM_YEAR) + TimeDelta::milliseconds(offset_ms.rem_euclid(span))
        }
    }

    fn instant_strategy() -> impl Strategy<Value = (bool, Index, i64)> {
        (any::<bool>(), any::<Index>(), any::<i64>())
    }

    /// Whole-second instants only, to start `every` schedules and cron oracles on.
    fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
    }

    fn interval_strategy() -> impl Strategy<Value = Interval> {
        prop_oneof![
            (1i64..=100_000).prop_map(|n| Interval::Elapsed(TimeDelta::seconds(n))),
            (1i64..=3_000).prop_map(|n| Interval::Elapsed(TimeDelta::minutes(n))),
            (1i64..=100).prop_map(|n| Interval::Elapsed(TimeDelta::hours(n))),
            (1u32..=40).prop_map(Interval::Days),
            (1u32..=10).prop_map(Interval::Weeks),
            (1u32..=24).prop_map(Interval::Months),
        ]
    }

    /// The local hours at which the zones above change their clocks.
    fn dst_hour() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..=3, Just(23)]
    }

    /// A generator of valid fields for one cron position.
    fn list_or_range(min: u32, max: u32) -> BoxedStrategy<String> {
        prop_oneof![
            Just("*".to_owned()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max.max(1)).prop_map(|n| format!("*/{n}")),
            (min..=max, min..=max, 1..=max.max(1)).prop_map(|(a, b, n)| format!(
                "{}-{}/{n}",
                a.min(b),
                a.max(b)
            )),
        ]
        .boxed()
    }

    fn cron_strategy() -> impl Strategy<Value = String> {
        let seconds = prop_oneof![
            4 => Just(None),
            1 => list_or_range(0, 59).prop_map(Some),
        ];
        let minutes = list_or_range(0, 59);
        // Hours favour those of the zones' DST changes: 0-3 and 23.
        let hours = prop_oneof![
            list_or_range(0, 23),
            dst_hour().prop_map(|h| h.to_string()),
            (dst_hour(), 0u32..=23).prop_map(|(a, b)| format!("{a},{b}")),
        ];
        let days = cron_days();
        let months = prop_oneof![
            4 => Just("*".to_owned()),
            1 => (1u32..=12).prop_map(|m| m.to_string()),
            1 => (1u32..=12, 1u32..=12).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            1 => Just("MAR,APR,OCT,NOV".to_owned()),
        ];
        let weekdays = cron_weekdays();
        (seconds, minutes, hours, days, months, weekdays).prop_map(|(s, mi, h, d, mo, w)| {
            let five = format!("{mi} {h} {d} {mo} {w}");
            match s {
                Some(s) => format!("{s} {five}"),
                None => five,
            }
        })
    }

    /// Patterns on which croner's DST classification and ours coincide: single second,
    /// minute and hour (fixed time to both), or wildcard / stepped hours (interval to both).
    fn croner_comparable_strategy() -> impl Strategy<Value = String> {
        let fixed = (0u32..=59, 0u32..=59, 0u32..=23, dst_hour(), any::<bool>()).prop_map(
            |(s, m, h, dst_h, dst)| format!("{s} {m} {} * * *", if dst { dst_h } else { h }),
        );
        let wildcard_hour = prop_oneof![
            Just("*".to_owned()),
            (1u32..=12).prop_map(|n| format!("*/{n}")),
            (0u32..=3, 1u32..=5).prop_map(|(a, n)| format!("{a}-23/{n}")),
        ];
        let wildcard = (
            list_or_range(0, 59),
            wildcard_hour,
            cron_days(),
            cron_weekdays(),
        )
            .prop_map(|(m, h, d, w)| format!("{m} {h} {d} * {w}"));
        prop_oneof![fixed, wildcard]
    }

    fn cron_days() -> BoxedStrategy<String> {
        prop_oneof![
            4 => Just("*".to_owned()),
            1 => Just("?".to_owned()),
            1 => (1u32..=28).prop_map(|d| d.to_string()),
            1 => Just("L".to_owned()),
            1 => Just("LW".to_owned()),
            // Up to 28 so that every month has the day ("30W" never matches in February).
            1 => (1u32..=28).prop_map(|d| format!("{d}W")),
            1 => (1u32..=28, 1u32..=28).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        ]
        .boxed()
    }

    fn cron_weekdays() -> BoxedStrategy<String> {
        prop_oneof![
            4 => Just("*".to_owned()),
            1 => (0u32..=7).prop_map(|d| d.to_string()),
            1 => Just("MON-FRI".to_owned()),
            1 => (0u32..=6, 1u32..=5).prop_map(|(d, n)| format!("{d}#{n}")),
            1 => (0u32..=6).prop_map(|d| format!("{d}L")),
            1 => Just("SUN".to_owned()),
        ]
        .boxed()
    }

    /// All slots in `(from, to]` by brute force: every second (or minute, when the seconds
    /// field is always 0) of real time whose local time matches, keeping only the first pass
    /// of a fold for fixed-hour patterns, plus the end of each spring-forward gap that
    /// swallowed a matching fixed-hour local time.
    fn brute_force_cron(
        pattern: &CronPattern,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_seconds: i64,
    ) -> BTreeSet<DateTime<Utc>> {
        let mut slots = BTreeSet::new();
        let step = TimeDelta::seconds(step_seconds);
        // Align to the step so every candidate second is visited.
        let mut i =
            DateTime::from_timestamp(from.timestamp().div_euclid(step_seconds) * step_seconds, 0)
                .expect("in range");
        while i <= to {
            let local = local_of(i, tz);
            if i > from && pattern.matches_local(local) {
                let second_pass = matches!(
                    tz.from_local_datetime(&local),
                    LocalResult::Ambiguous(earlier, _) if earlier.with_timezone(&Utc) != i
                );
                if !(second_pass && pattern.has_fixed_hours()) {
                    slots.insert(i);
                }
            }
            // A gap between i - 1s and i: check the missing local times.
            let before = i - TimeDelta::seconds(1);
            let (gap_start, gap_end) = (
                local_of(before, tz) + TimeDelta::seconds(1),
                local_of(i, tz),
            );
            if pattern.has_fixed_hours() && i > from && gap_end > gap_start {
                let mut missing = gap_start;
                while missing < gap_end {
                    if pattern.matches_local(missing) {
                        slots.insert(i);
                        break;
                    }
                    missing += TimeDelta::seconds(1);
                }
            }
            i += step;
        }
        slots
    }

    /// The transition instants of `tz` in `(from, to]`, which are the only places a gap can
    /// end; brute_force_cron only looks for gaps at its step, so they are added here.
    fn transitions_between(
        zone: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        transitions(zone)
            .iter()
            .copied()
            .filter(|t| *t > from && *t <= to)
            .collect()
    }

    proptest! {
        // Failures print their minimal input; no regression files are written into the tree.
        #![proptest_config(ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Cron slots in a window are exactly what a brute-force walk finds, and
        /// next/prev/count agree with them.
        #[test]
        fn cron_slots_match_a_brute_force_walk(
            expr in cron_strategy(),
            zone in 0..ZONES.len(),
            (near, pick, offset) in instant_strategy(),
        ) {
            let tz = ZONES[zone];
            let schedule = Schedule::cron(&expr, tz).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ScheduleKind::Cron { pattern, .. } = schedule.kind() else { unreachable!() };
            let has_seconds = expr.split_whitespace().count() == 6;
            // Seconds patterns are walked second by second over a shorter window.
            let (step, window) = if has_seconds { (1, TimeDelta::hours(3)) } else { (60, TimeDelta::hours(36)) };
            let from = whole_seconds(instant(zone, near, pick, offset)) - window / 2;
            let to = from + window;
            let mut expected = brute_force_cron(pattern, tz, from, to, step);
            // Gap ends at a transition the minute walk stepped over are checked directly.
            if pattern.has_fixed_hours() {
                for transition in transitions_between(zone, from, to) {
                    let before = local_of(transition - TimeDelta::seconds(1), tz) + TimeDelta::seconds(1);
                    let after = local_of(transition, tz);
                    let mut missing = before;
                    while missing < after {
                        if pattern.matches_local(missing) {
                            expected.insert(transition);
                            break;
                        }
                        missing += TimeDelta::seconds(1);
                    }
                }
            }
            let actual: BTreeSet<_> = schedule.slots_after(from).take_while(|s| *s <= to).collect();
            prop_assert_eq!(&actual, &expected, "{} in {} from {}", expr, tz, from);

            // A fixed-hour pattern never runs a local time twice.
            if pattern.has_fixed_hours() {
                let locals: BTreeSet<_> = actual.iter().map(|s| local_of(*s, tz)).collect();
                prop_assert_eq!(locals.len(), actual.len(), "a local time ran twice");
            }
            prop_assert_eq!(
                schedule.count_slots_between(from + TimeDelta::nanoseconds(1), to, 100_000),
                expected.len() as u64
            );
        }

        /// next/prev consistency for cron at arbitrary (sub-second) instants.
        #[test]
        fn cron_next_and_prev_are_consistent(
            expr in cron_strategy(),
            zone in 0..ZONES.len(),
            (near, pick, offset) in instant_strategy(),
        ) {
            let tz = ZONES[zone];
            let schedule = Schedule::cron(&expr, tz).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_next_prev(&schedule, instant(zone, near, pick, offset))?;
        }

        /// Where croner classifies a pattern as we do (single fixed second, minute and hour
        /// are "fixed time" to both; wildcard or stepped hours are "interval" to both),
        /// croner's own zone-aware search gives the same slots: this is the check that its
        /// DST behaviour is what STACK.md claims.
        #[test]
        fn croner_agrees_where_its_dst_rules_are_ours(
            expr in croner_comparable_strategy(),
            zone in 0..ZONES.len(),
            (near, pick, offset) in instant_strategy(),
        ) {
            let tz = ZONES[zone];
            let schedule = Schedule::cron(&expr, tz).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ScheduleKind::Cron { pattern, .. } = schedule.kind() else { unreachable!() };
            let croner_fixed = pattern.cron.determine_job_type() == croner::JobType::FixedTime;
            prop_assert_eq!(croner_fixed, pattern.has_fixed_hours(), "the generator must only make comparable patterns");
            let t = instant(zone, near, pick, offset);
            let ours = schedule.next_slot_after(t);
            let theirs = pattern.cron.find_next_occurrence(&t.with_timezone(&tz), false);
            match (ours, theirs) {
                // croner gives up on a fixed time inside a gap longer than two hours (its
                // MAX_GAP_SEARCH_SECONDS), such as the day Samoa skipped; we do not.
                (Some(slot), Err(croner::errors::CronError::TimeSearchLimitExceeded)) => {
                    let long_gap = (local_of(slot, tz) - local_of(slot - TimeDelta::seconds(1), tz))
                        > TimeDelta::hours(2);
                    prop_assert!(long_gap, "croner found nothing after {} for {} in {}; we found {}", t, expr, tz, slot);
                }
                (ours, theirs) => {
                    let theirs = theirs.ok().map(|s| s.with_timezone(&Utc));
                    prop_assert_eq!(ours, theirs, "{} in {} after {}", expr, tz, t);
                }
            }
        }

        /// `every` slots are start + k steps: elapsed ones exactly, calendar ones at the
        /// start's local time on the right local date (or the end of a gap that swallowed it).
        #[test]
        fn every_slots_are_start_plus_k_steps(
            interval in interval_strategy(),
            zone in 0..ZONES.len(),
            (near, pick, offset) in instant_strategy(),
            (start_near, start_pick, start_offset) in instant_strategy(),
            span_ms in 0i64..(40 * 86_400_000),
        ) {
            let tz = ZONES[zone];
            let start = instant(zone, start_near, start_pick, start_offset);
            let schedule = Schedule::every(interval, start, tz);
            let t = instant(zone, near, pick, offset);
            check_next_prev(&schedule, t)?;

            let start_local = local_of(start, tz);
            let slots: Vec<_> = schedule.slots_after(t).take(12).collect();
            for slot in &slots {
                // k from counting, which is O(1) and checked against iteration below.
                let k = schedule.count_slots_between(start, *slot, u64::MAX) - 1;
                match interval {
                    Interval::Elapsed(step) => {
                        prop_assert_eq!(nanos_between(start, *slot), delta_nanos(step) * i128::from(k));
                    }
                    _ if k == 0 => prop_assert_eq!(*slot, start),
                    Interval::Days(_) | Interval::Weeks(_) | Interval::Months(_) => {
                        let expected_date = match interval {
                            Interval::Days(n) => start_local.date() + TimeDelta::days(i64::from(n) * k as i64),
                            Interval::Weeks(n) => start_local.date() + TimeDelta::days(7 * i64::from(n) * k as i64),
                            Interval::Months(n) => {
                                let total = start_local.month0() as i64 + i64::from(n) * k as i64;
                                let year = start_local.year() + (total / 12) as i32;
                                let month = (total % 12) as u32 + 1;
                                let mut day = start_local.day();
                                while NaiveDate::from_ymd_opt(year, month, day).is_none() {
                                    day -= 1;
                                }
                                NaiveDate::from_ymd_opt(year, month, day).expect("clamped")
                            }
                            Interval::Elapsed(_) => unreachable!(),
                        };
                        let wanted = expected_date.and_time(start_local.time());
                        let local = local_of(*slot, tz);
                        match tz.from_local_datetime(&wanted) {
                            LocalResult::Single(_) | LocalResult::Ambiguous(..) => {
                                prop_assert_eq!(local, wanted);
                                prop_assert_eq!(Some(*slot), tz.from_local_datetime(&wanted).earliest().map(|s| s.with_timezone(&Utc)));
                            }
                            LocalResult::None => {
                                // The end of the gap: the instant before it is local-before.
                                prop_assert!(local > wanted);
                                prop_assert!(local_of(*slot - TimeDelta::seconds(1), tz) < wanted);
                            }
                        }
                    }
                }
            }
            // Counting is exact and agrees with iterating.
            let to = t + TimeDelta::milliseconds(span_ms);
            let iterated = schedule
                .slots_after(t - TimeDelta::nanoseconds(1))
                .take_while(|s| *s <= to)
                .take(2_001)
                .count() as u64;
            prop_assert_eq!(schedule.count_slots_between(t, to, 2_000), iterated.min(2_000));
        }

        /// `at` has one slot.
        #[test]
        fn at_has_exactly_one_slot(
            zone in 0..ZONES.len(),
            (near, pick, offset) in instant_strategy(),
            (at_near, at_pick, at_offset) in instant_strategy(),
        ) {
            let tz = ZONES[zone];
            let at = instant(zone, at_near, at_pick, at_offset);
            let schedule = Schedule::at(at, tz);
            let t = instant(zone, near, pick, offset);
            check_next_prev(&schedule, t)?;
            prop_assert_eq!(schedule.next_slot_after(t), (at > t).then_some(at));
            prop_assert_eq!(schedule.prev_slot_before(t), (at < t).then_some(at));
        }
    }

    /// next_slot_after(t) > t with no slot in between; prev_slot_before(t) < t with no slot
    /// in between; a few successive slots strictly increase and walk back the same way.
    fn check_next_prev(schedule: &Schedule, t: DateTime<Utc>) -> Result<(), TestCaseError> {
        let next = schedule.next_slot_after(t);
        let prev = schedule.prev_slot_before(t);
        if let Some(next) = next {
            prop_assert!(next > t, "{schedule}: next {next} not after {t}");
            let before_next = schedule.prev_slot_before(next);
            prop_assert!(
                before_next.is_none_or(|b| b <= t),
                "{schedule}: slot {before_next:?} between {t} and {next}"
            );
            // The last slot before `next` is `t` itself (when t is a slot) or the last before t.
            prop_assert!(
                before_next == prev || before_next == Some(t),
                "{schedule}: prev({next}) = {before_next:?}, prev({t}) = {prev:?}"
            );
        }
        if let Some(prev) = prev {
            prop_assert!(prev < t, "{schedule}: prev {prev} not before {t}");
            let after_prev = schedule.next_slot_after(prev);
            prop_assert!(
                after_prev.is_none_or(|a| a >= t),
                "{schedule}: slot {after_prev:?} between {prev} and {t}"
            );
            prop_assert!(
                next.is_none() || after_prev.is_some(),
                "{schedule}: no slot after {prev}"
            );
        }
        let slots: Vec<_> = schedule.slots_after(t).take(6).collect();
        for pair in slots.windows(2) {
            prop_assert!(pair[0] < pair[1], "{schedule}: not increasing: {pair:?}");
            prop_assert_eq!(schedule.prev_slot_before(pair[1]), Some(pair[0]));
        }
        Ok(())
    }
}
